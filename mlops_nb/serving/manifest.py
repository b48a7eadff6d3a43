"""An app bundle's identity and its check: what the scoring app verifies before it unpickles a model.

The standard library and mlops_nb's core only: the scoring app imports this inside the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..core.records import ArtifactRef
from ..exceptions import BundleError

ENTRYPOINT = "app/serve.py"
TOKEN_HEADER = "x-mlops-token"  # a deployment's control port answers only requests with its token
PARENT_ENV = "MLOPS_NB_PARENT_PID"  # set by a deployment's supervisor: its servers stop when it dies
MODEL_FILE = "model/model.pkl"


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_hash(
    model_hash: str,
    app_files: dict[str, str],
    requirements: str,
    features: list[str] | None = None,
    model_uri: str | None = None,
) -> str:
    """The identity of a bundle: sha256 over its model (the version's URI and the hash of its bytes: two versions
    of equal bytes are two apps, each answering with its own version), its app files' hashes and its requirements,
    and the online feature refs it looks up, part of the app's wiring, when it has any."""
    parts: dict[str, Any] = {"model": model_hash, "app": dict(sorted(app_files.items())), "requirements": requirements}
    if model_uri:
        parts["uri"] = model_uri
    if features:
        parts["features"] = sorted(set(features))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def open_bundle(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the bundle at ``path``, after checking that its model, app files and requirements still
    hash to the bundle's hash."""
    folder = Path(path)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(
            f"{folder} is not an app bundle (no manifest.json); build one with `mlops-nb build`"
        ) from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"the manifest of bundle {folder} cannot be read ({exc}); build it again") from None
    problems = verify_files(folder, manifest)
    if problems:
        raise BundleError(f"bundle {folder} changed since it was built: {problems[0]}; build it again")
    return manifest


def verify_files(folder: Path, manifest: dict) -> list[str]:
    """What in a bundle's folder no longer matches its manifest (empty: nothing)."""
    problems = []
    try:
        model_hash = manifest["model"]["hash"]
        files = manifest["app"]["files"]
        digest = manifest["bundle"]
    except (KeyError, TypeError):
        return ["its manifest lacks the model hash, the app files or the bundle hash"]
    model = folder / MODEL_FILE
    if not model.is_file() or sha256_file(model) != model_hash:
        problems.append(f"{MODEL_FILE} does not hash to {model_hash[:12]}")
    for rel, expected in files.items():
        file = folder / rel
        if not file.is_file() or sha256_file(file) != expected:
            problems.append(f"{rel} is missing or altered")
    requirements = folder / "requirements.txt"
    text = requirements.read_text(encoding="utf-8") if requirements.is_file() else ""
    if bundle_hash(model_hash, files, text, manifest.get("features"), manifest["model"].get("uri")) != digest:
        problems.append("requirements.txt or the feature refs are altered" if text else "requirements.txt is missing")
    return problems


def bundle_node(digest: str, model: str, version: int, path: Path, size: int = 0) -> ArtifactRef:
    """A bundle as a lineage node (what a build outputs and a rollout or a batch score reads)."""
    return ArtifactRef(digest, "bundle", size=size, name=f"bundle {model} v{version}",
                       summary=f"app bundle {model} v{version}", uri=Path(path).as_uri())  # fmt: skip


def model_bytes(folder: str | os.PathLike, manifest: dict[str, Any]) -> bytes:
    """The bundle's model bytes, read once and checked against the manifest's model hash (what is unpickled is
    what was hashed)."""
    data = (Path(folder) / MODEL_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["model"]["hash"]:
        raise BundleError(f"{MODEL_FILE} of bundle {folder} changed since it was built; build it again")
    return data


def dumps(manifest: dict[str, Any]) -> str:
    """The manifest as written to ``manifest.json``."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
