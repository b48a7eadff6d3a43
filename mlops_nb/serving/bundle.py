"""The app build pipeline: a registered model version → an app bundle, the second deployable artifact.

A bundle is a folder ``.mlops/builds/<hash>/`` that runs from itself alone::

    manifest.json      model name, version, MLflow URI, model hash, signature, input example and the predictions
                       MLflow gives for it, online feature refs, pinned requirements, build id, source run, created
    model/model.pkl    the model, exactly the bytes of its artifact in the project's store (hash-checked on load)
    app/serve.py       the entrypoint: ``python app/serve.py BUNDLE --port P``
    app/mlops_nb/...   the modules of mlops_nb the scoring app imports (mlops_nb is not on a package index)
    requirements.txt   the exact versions, here, of every third-party package the app and the model import
    Dockerfile         ``docker build`` of the folder gives an image that serves the model

Its hash covers the model's hash, the app's code and the pinned requirements only, so the same model, code and
requirements give the same bundle: a second build of them reuses the first. The build id, times and MLflow's
``utc_time_created``/``model_uuid`` are in the manifest and the build run, not in the hash. The folder is made
under a temporary name and renamed into place, and verified against its hash whenever it is opened.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.records import ArtifactRef
from ..exceptions import BundleError
from ..project import current_project
from ..store.registry import ModelVersion, check_alias, check_model_name
from .manifest import ENTRYPOINT, MODEL_FILE, bundle_hash, bundle_node, dumps, open_bundle, sha256_file

FORMAT = 1
APP_MODULE = "mlops_nb.serving.app"

_SERVE_PY = '''"""Serve this app bundle: python app/serve.py BUNDLE [--host 127.0.0.1] [--port 8080] [--workers N]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bundle's own copy of mlops_nb comes first

from mlops_nb.serving.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
'''

_DOCKERFILE = """# Built by mlops_nb from {uri} ({model_hash:.12}); serves it with the bundle alone.
FROM python:{python}-slim
WORKDIR /bundle
COPY requirements.txt /bundle/requirements.txt
RUN pip install --no-cache-dir -r /bundle/requirements.txt
COPY . /bundle
ENV MLOPS_NB_PREDICTIONS=/data/predictions
VOLUME /data
EXPOSE 8080
# inside a container the server must listen on every interface; publish the port to the host's 127.0.0.1
CMD ["python", "/bundle/app/serve.py", "/bundle", "--host", "0.0.0.0", "--port", "8080"]
"""


@dataclass
class Build:
    """An app bundle built from a model version.

    Attributes:
        bundle: the bundle's hash (its id in lineage; a 12-character prefix names it on the command line).
        path: its folder.
        manifest: what ``manifest.json`` holds.
        run_id: the build run that recorded it (None when ``reused`` and not recorded again).
        reused: whether the same model, code and requirements were built before.
    """

    bundle: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    reused: bool = False

    @property
    def model(self) -> str:
        """The model's registered name."""
        return self.manifest["model"]["name"]

    @property
    def version(self) -> int:
        """The model version it serves."""
        return int(self.manifest["model"]["version"])

    @property
    def build_id(self) -> str:
        """The build run that first made the bundle."""
        return self.manifest["build_id"]

    @property
    def short(self) -> str:
        """The first 12 characters of the bundle hash."""
        return self.bundle[:12]

    def node(self) -> ArtifactRef:
        """The bundle as a lineage node."""
        return bundle_node(self.bundle, self.model, self.version, self.path, _folder_size(self.path))

    def line(self) -> str:
        """One line for people."""
        verb = "reused" if self.reused else "built"
        return f"{verb} bundle {self.short} for {self.model} v{self.version} at {self.path}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "bundle": self.bundle,
            "path": str(self.path),
            "model": self.model,
            "version": self.version,
            "build_id": self.build_id,
            "run_id": self.run_id,
            "reused": self.reused,
            "manifest": self.manifest,
        }


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def parse_model_spec(spec: str, default: str | None = "@champion") -> tuple[str, str | None]:
    """``NAME@ALIAS``, ``NAME/VERSION``, ``NAME:VERSION`` or ``models:/...`` as ``(name, version-or-@alias)``; a bare
    name means ``default`` (``@champion``; monitoring passes None: the version that served most)."""
    text = str(spec).strip()
    if text.startswith("models:/"):
        text = text[len("models:/") :]
    if "@" in text:
        name, _, alias = text.partition("@")
        return check_model_name(name), "@" + check_alias(alias)
    match = re.fullmatch(r"(.+?)[/:][vV]?(\d+)", text)
    if match:
        return check_model_name(match.group(1)), match.group(2)
    return check_model_name(text), default


# what the app imports ------------------------------------------------------------------------------------------
_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import {module}
for extra in ("uvicorn.loops.uvloop", "uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on"):
    try:
        __import__(extra)
    except ImportError:
        pass
files = sorted(m.__file__ for name, m in list(sys.modules.items())
               if (name == "mlops_nb" or name.startswith("mlops_nb.")) and getattr(m, "__file__", None))
top = sorted({{name.partition(".")[0] for name in sys.modules}} - set(sys.stdlib_module_names))
print(json.dumps({{"files": files, "modules": top}}))
"""


@functools.lru_cache(maxsize=4)
def app_closure(package_root: str | None = None) -> tuple[dict[str, str], tuple[str, ...]]:
    """The scoring app's code and imports: ``({path in the bundle: file on disk}, third-party top-level modules)``,
    found by importing it in a fresh interpreter (what it imports at start is what it needs)."""
    root = Path(package_root or Path(__file__).resolve().parents[2])
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=APP_MODULE), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise BundleError(f"the scoring app does not import in this environment: {last}")
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    files = {}
    for name in found["files"]:
        path = Path(name).resolve()
        files["app/" + path.relative_to(root).as_posix()] = str(path)
    modules = tuple(m for m in found["modules"] if m and not m.startswith("_") and m != "mlops_nb")
    return files, modules


def pinned_requirements(model: Any, app_modules: tuple[str, ...]) -> list[str]:
    """``name==version`` of every distribution the app and the model import, as installed here."""
    from ..promotion.register import requirements

    model_pins = requirements(model, flavor_modules=("cloudpickle", "numpy", "pandas"))
    from ..engine.libraries import versions

    pins = {f"{n}=={v}" for n, v in versions(list(app_modules)).items()}
    return sorted(pins | set(model_pins), key=str.lower)


# build ---------------------------------------------------------------------------------------------------------
def build(
    model: str,
    version: int | str | None = None,
    *,
    features: list[str] | None = None,
    project=None,
    trigger: str = "api",
    fired_by: str | None = None,
    progress: bool = True,
) -> Build:
    """Build the app bundle of a registered model version, or reuse the bundle of the same model, code and
    requirements; record a build run (its step reads the version and outputs the bundle, so ``mlops-nb lineage``
    links them).

    Args:
        model: ``NAME@ALIAS``, ``NAME/VERSION`` or a name (with ``version``; default ``@champion``).
        version: a version number or ``@alias`` when ``model`` is a bare name.
        features: online feature refs (``view:feature``, ``view:*``) a request may leave out and give entity keys
            for; the server looks them up in the online table.
        trigger, fired_by: what started the build (``cli``, ``watch`` ...), recorded with its run.

    Example::

        b = mlops_nb.build("churn@champion")
        print(b.path, b.bundle)
    """
    from ..core import progress as progress_bars
    from ..core.clock import utcnow
    from ..store.metadata import new_run_id

    project = current_project(project)
    name, spec = parse_model_spec(model) if version is None else (check_model_name(model), str(version))
    started = utcnow()
    found = project.registry.version(name, spec)  # an unknown model is one line, before any progress bar
    bar = progress_bars.start(3, f"build {name} v{found.version}", "stage", enabled=progress)
    try:
        model_bytes, model_hash = _model_bytes(project, found)
        app_files, app_modules = app_closure()
        import pickle

        pins = pinned_requirements(pickle.loads(model_bytes), app_modules)
        requirements_text = "\n".join(pins) + "\n"
        app_hashes = {rel: sha256_file(Path(src)) for rel, src in app_files.items()}
        app_hashes[ENTRYPOINT] = hashlib.sha256(_SERVE_PY.encode()).hexdigest()
        refs = sorted(set(features or []))
        _check_features(project, refs)
        digest = bundle_hash(model_hash, app_hashes, requirements_text, refs, found.uri)
        final = project.builds_dir / digest
        if final.is_dir():
            try:
                existing = open_bundle(final)
            except BundleError:  # changed since it was built: set aside (kept for a look), built again below
                final.rename(final.with_name(f".tampered-{digest[:12]}-{uuid.uuid4().hex[:8]}"))
            else:
                _advance(bar, 3)  # the bundle of the same version, code and requirements
                reused = Build(digest, final, existing, None, reused=True)
                if not _recorded(project, reused.build_id):  # its build run was lost (a crash after the rename)
                    reused.run_id = _record_build(project, reused, found, reused.build_id, started, trigger, fired_by)
                return reused
        described = project.registry.describe(name, found.version)
        _advance(bar)
        run_id = new_run_id()
        manifest = {
            "format": FORMAT,
            "bundle": digest,
            "model": {
                "name": name,
                "version": found.version,
                "uri": found.uri,
                "hash": model_hash,
                "mlflow_run_id": found.run_id,
                "model_uuid": described["model_uuid"],
                "utc_time_created": described["utc_time_created"],
                "flavors": described["flavors"],
            },
            "source_run": found.tags.get("mlops_nb.run_id"),
            "signature": described["signature"],
            "input_example": described["input_example"],
            "expected": described["expected"],
            "features": refs,
            "requirements": pins,
            "app": {"entrypoint": ENTRYPOINT, "files": app_hashes},
            "build_id": run_id,
            "created": started.isoformat() + "Z",
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "mlops_nb": _own_version(),
        }
        path = _write_bundle(project.builds_dir, digest, manifest, model_bytes, app_files, requirements_text)
        _advance(bar)
        result = Build(digest, path, open_bundle(path), run_id)
        _record_build(project, result, found, run_id, started, trigger, fired_by)
        _advance(bar)
        return result
    finally:
        bar.close()


def _recorded(project, run_id: str) -> bool:
    return bool(project.metadata.sql("SELECT count(*) AS n FROM runs WHERE id = ?", [run_id])["n"].iloc[0])


def _record_build(project, built: Build, found: ModelVersion, run_id: str, started, trigger: str, fired_by) -> str:
    """The build as a run of kind ``build`` whose step reads the model version and outputs the bundle."""
    return project.metadata.record_run(
        kind="build",
        status="succeeded",
        trigger=trigger,
        fired_by=fired_by,
        run_id=run_id,
        started_at=started,
        params={"model": found.name, "version": found.version, "bundle": built.bundle},
        steps=[
            {
                "step": "build",
                "status": "succeeded",
                "inputs": {found.uri: found.node()},
                "outputs": {"bundle": built.node()},
                "started_at": started,
            }
        ],
    )


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlops-nb")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _advance(bar, n: int = 1) -> None:
    bar.advance(n)


def _model_bytes(project, found: ModelVersion) -> tuple[bytes, str]:
    """The stored bytes of a version's model and their hash: its artifact when mlops_nb registered it, else the
    model MLflow loads, stored now."""
    if found.model_hash and project.artifacts.exists(found.model_hash):
        data = project.artifacts.read_bytes(found.model_hash)
        return data, found.model_hash
    loaded = project.registry.load(found.name, found.version)
    ref = project.artifacts.put(loaded, name=f"{found.name}-v{found.version}")
    return project.artifacts.read_bytes(ref.hash), ref.hash


def _check_features(project, refs: list[str]) -> None:
    """Every online feature ref names a view of the feature store."""
    if not refs:
        return
    from ..store.features.records import parse_feature_refs

    views = {view for view, _ in parse_feature_refs(refs)}
    known = set(project.features.list_views()["view"])
    missing = sorted(views - known)
    if missing:
        raise BundleError(
            f"feature view {missing[0]!r} is not in the feature store; `mlops-nb features list` shows the views"
        )


def _write_bundle(
    builds: Path, digest: str, manifest: dict, model_bytes: bytes, app_files: dict[str, str], requirements: str
) -> Path:
    """Write the bundle's folder under a temporary name and rename it into place (another build of the same hash
    that finished first wins)."""
    import compileall

    builds.mkdir(parents=True, exist_ok=True)
    tmp = builds / f".tmp-{digest[:12]}-{uuid.uuid4().hex[:8]}"
    final = builds / digest
    try:
        (tmp / "model").mkdir(parents=True)
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        for rel, src in app_files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        (tmp / ENTRYPOINT).write_text(_SERVE_PY, encoding="utf-8")
        (tmp / "requirements.txt").write_text(requirements, encoding="utf-8")
        (tmp / "Dockerfile").write_text(
            _DOCKERFILE.format(
                uri=manifest["model"]["uri"], model_hash=manifest["model"]["hash"], python=manifest["python"]
            ),
            encoding="utf-8",
        )
        (tmp / "manifest.json").write_text(dumps(manifest), encoding="utf-8")
        compileall.compile_dir(str(tmp / "app"), quiet=1)  # PYTHONDONTWRITEBYTECODE is set here: start fast
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # the same bundle was built meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# open ----------------------------------------------------------------------------------------------------------
def find_bundle(ref: str | os.PathLike, project=None) -> Path:
    """The folder of a bundle named by its path, its hash or a prefix of 6+ characters."""
    path = Path(ref)
    if (path / "manifest.json").is_file():
        return path.resolve()
    text = str(ref).strip().lower()
    if re.fullmatch(r"[0-9a-f]{6,64}", text):
        builds = current_project(project).builds_dir
        found = sorted(p for p in builds.glob(f"{text}*") if p.is_dir()) if builds.is_dir() else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise BundleError(f"bundle prefix {text!r} is ambiguous; give more characters")
    raise BundleError(
        f"no app bundle is named {str(ref)!r}; give a bundle folder, a bundle hash (`mlops-nb build NAME@ALIAS` "
        "prints it) or a model as NAME@ALIAS"
    )


def looks_like_bundle(spec: str, project=None) -> bool:
    """Whether ``spec`` names an existing bundle (its folder, or its hash or a 6+ character prefix of it)."""
    text = str(spec).strip()
    if Path(text).is_dir():
        return True
    if not re.fullmatch(r"[0-9a-fA-F]{6,64}", text):
        return False
    builds = current_project(project).builds_dir
    return builds.is_dir() and any(p.is_dir() for p in builds.glob(f"{text.lower()}*"))


def bundle_for(spec: str, project=None, trigger: str = "api", progress: bool = True) -> Build:
    """A bundle named by its folder or hash, else the bundle of a model spec (``NAME@ALIAS``, ``NAME/VERSION``, a
    bare name: ``@champion``), built or reused. A model whose name is all hex digits is a model unless a bundle
    has that prefix."""
    project = current_project(project)
    text = str(spec).strip()
    if looks_like_bundle(text, project):
        path = find_bundle(text, project)
        manifest = open_bundle(path)
        return Build(manifest["bundle"], path, manifest, None, reused=True)
    return build(text, project=project, trigger=trigger, progress=progress)


__all__ = ["Build", "build", "bundle_for", "find_bundle", "looks_like_bundle", "open_bundle", "parse_model_spec"]
