"""The cache: a step's key, why it runs, and whether an earlier step run can stand in for it.

A step's **cache key** is the hash of its normalised source, the setup cells, the local modules the notebook
imports, its input artifacts, the content of its ``--reads`` files, the parameter values it uses, the versions of
the third-party packages it and the setup cells import, and a format version. :func:`decide` is the one place a step is decided, in every mode: the magic, the planner and the
``dag``/``dask`` driver all call it (DESIGN invariant 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.files import escapes
from ..core.hashing import canonical, hash_path, sha256
from ..core.records import ArtifactRef
from ..exceptions import MlopsError
from ..pipeline.notebook import FORMAT_VERSION, Pipeline, Step
from .libraries import versions


def key_parts(
    pipeline: Pipeline, step: Step, inputs: dict[str, str], params: dict[str, Any], libraries: bool = True
) -> dict[str, Any]:
    """The components of a step's cache key: normalised source, setup, local modules, input artifact hashes,
    ``--reads`` content hashes, the parameter values it uses, the format version and (unless ``libraries`` is
    false: the ``library_versions`` setting) the versions of the third-party packages the setup cells and the
    step import."""
    parts = {
        "format": FORMAT_VERSION,
        "source": sha256(step.normalized),
        "setup": pipeline.setup_hash,
        "modules": {**pipeline.setup_modules, **step.modules},
        "inputs": dict(sorted(inputs.items())),
        "reads": {p: hash_path(pipeline.folder / p) for p in step.reads},
        "params": {p: canonical(params.get(p, pipeline.params.get(p))) for p in step.params},
    }
    if libraries:
        parts["libraries"] = versions(sorted({*pipeline.setup_libraries, *step.libraries}))
    return parts


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical key parts."""
    return sha256(canonical(parts))


def explain(parts: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """Why a step's key differs from its previous run's: ``source changed``, ``input raw changed``, ..."""
    if previous is None:
        return "no earlier run"
    reasons = []
    if previous.get("format") != parts["format"]:
        reasons.append("mlops_nb cache format changed")
    if previous.get("source") != parts["source"]:
        reasons.append("source changed")
    if previous.get("setup") != parts["setup"]:
        reasons.append("setup changed")
    if ("libraries" in previous) != ("libraries" in parts):
        reasons.append("library versions " + ("now" if "libraries" in parts else "no longer") + " in the cache key")
    else:
        old, new = previous.get("libraries", {}), parts.get("libraries", {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                reasons.append(f"{name} {old.get(name) or '(none)'} → {new.get(name) or '(none)'}")
    for group, label in (
        ("modules", "module {} changed"),
        ("params", "param {} changed"),
        ("inputs", "input {} changed"),
        ("reads", "{} changed"),
    ):
        old, new = previous.get(group, {}), parts[group]
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                reasons.append(label.format(name))
    return ", ".join(reasons)


# Artifacts in other stores ------------------------------------------------------------------------------------------
def _current_hash(project, ref: ArtifactRef) -> str | None:
    """What ``ref`` names now, asked of the store holding it (``ref.hash`` for what the artifact store holds)."""
    source = project.artifact_source(ref.kind)
    return ref.hash if source is None else source.current_hash(ref)


def stale_inputs(project, step_run) -> list[str]:
    """Names of a step run's inputs from other stores (feature views) whose content changed since it ran. A part
    (``NAME#PART``, a view's segment) read with its whole (``NAME``) is checked through the whole."""
    inputs = step_run.inputs
    return [
        name
        for name, ref in inputs.items()
        if project.artifact_source(ref.kind) is not None
        and not ("#" in name and name.partition("#")[0] in inputs)
        and _current_hash(project, ref) != ref.hash
    ]


def unusable(project, hit, step: Step) -> str | None:
    """Why a cached step run's outputs cannot stand in for running ``step``, or None when they can: every output
    must be recorded and still stored (what it wrote to other stores too, such as feature segments), and no input
    from another store may have changed."""
    if any(n not in hit.outputs for n in step.outputs):
        return "cached outputs missing"
    for name in step.outputs:  # a stat each: the full hash is checked when a later step loads it
        project.artifacts.touch(hit.outputs[name])  # first: a gc from now on keeps it (its grace period)
        damage = project.artifacts.damage(hit.outputs[name])
        if damage == "missing":
            return "cached outputs missing"
        if damage:
            return f"cached output {name} is {damage}"
    # written to another store: still there? (a view may have grown since); parts (a view's segment) first, the
    # most precise reason, and in a fixed order whatever order the records come in
    for name, ref in sorted(hit.outputs.items(), key=lambda item: ("#" not in item[0], item[0])):
        if project.artifact_source(ref.kind) is not None and _current_hash(project, ref) is None:
            return f"output {name} is gone"
    stale = stale_inputs(project, hit)
    return ", ".join(f"{name} changed" for name in stale) if stale else None


def reusable(project, hit, step: Step) -> bool:
    """Whether a cached step run (None: there is none) can stand in for running ``step`` (see :func:`unusable`)."""
    return hit is not None and unusable(project, hit, step) is None


# Deciding a step ----------------------------------------------------------------------------------------------------
@dataclass
class Decision:
    """What the cache says about a step about to run.

    Attributes:
        key: the cache key.
        parts: its components (recorded, to explain later runs).
        inputs: name -> artifact the step reads, ``--reads`` files included (kind ``external``).
        hit: the earlier step run whose outputs can be reused, or None.
        why: one line: ``cached from run R``, or why the step must run.
    """

    key: str
    parts: dict
    inputs: dict[str, ArtifactRef]
    hit: Any
    why: str


def check_reads(project, pipeline: Pipeline, steps: list[Step] | None = None) -> None:
    """Refuse a relative ``--reads`` path that climbs out of the project folder with ``..`` (``../../etc/passwd``):
    a relative path names the project's data. An absolute path is an explicit choice and is kept; a symlink inside
    the project may point anywhere."""
    home = Path(project.home).resolve()
    for step in pipeline.steps if steps is None else steps:
        for path in step.reads:
            if escapes(path, pipeline.folder, home):
                raise MlopsError(
                    f"{pipeline.path.name} step {step.name!r}: --reads {path} climbs out of the project folder "
                    f"{home}; name data inside the project, or give an absolute path if it truly lives elsewhere"
                )


def keyed(
    project, pipeline: Pipeline, step: Step, inputs: dict[str, ArtifactRef], params: dict
) -> tuple[dict, str, dict[str, ArtifactRef]]:
    """A step's key parts, cache key, and inputs with its ``--reads`` files: the part of :func:`decide` that reads
    no store (it hashes files, which may be large: do it before opening a store)."""
    check_reads(project, pipeline, [step])
    libraries = project.settings.library_versions
    parts = key_parts(pipeline, step, {k: v.hash for k, v in inputs.items()}, params, libraries)
    inputs = dict(inputs)
    for path in step.reads:
        inputs[path] = ArtifactRef.external(pipeline.folder / path, path, parts["reads"][path])
    return parts, cache_key(parts), inputs


def decide(
    project,
    pipeline: Pipeline,
    step: Step,
    inputs: dict[str, ArtifactRef],
    params: dict,
    no_cache: bool,
    key: tuple[dict, str, dict[str, ArtifactRef]] | None = None,
) -> Decision:
    """Compute a step's cache key from its inputs and parameters (or take ``key``, what :func:`keyed` gave), look
    for a reusable earlier run, and say why the step runs when there is none. Reads the metadata store; writes
    nothing."""
    store = project.metadata
    parts, key, inputs = key or keyed(project, pipeline, step, inputs, params)
    no_cache = no_cache or step.no_cache
    rejected = None
    if not no_cache:
        hit = store.find_cached(key)
        if hit is not None:
            rejected = unusable(project, hit, step)
            if rejected is None:
                return Decision(key, parts, inputs, hit, f"cached from run {hit.run_id}")
    previous = store.previous_step_run(pipeline.name, step.name, full=False)
    why = explain(parts, previous[1] if previous else None)
    same_key = previous is not None and previous[0].cache_key == key
    stale = stale_inputs(project, store.get_step_run(previous[0].id)) if same_key else []
    if stale:
        why = ", ".join(f"{name} changed" for name in stale)
    if no_cache:
        why = "--no-cache"
    elif rejected:  # an earlier run with this very key: why it cannot be reused says it best
        why = rejected
    elif not why:
        why = "previous attempt failed" if previous and previous[0].status == "failed" else "cached outputs missing"
    return Decision(key, parts, inputs, None, why)
