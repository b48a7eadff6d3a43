"""The step runtime: the one code path that runs a step, in every mode (DESIGN invariant 1).

Given a step, the namespace it runs in and the run it belongs to, :func:`execute_step` computes the step's cache
key, says why it runs, loads the outputs of a cache hit into the namespace or runs the body and stores its
outputs, and records the step run with its input and output artifacts. The ``%%mlops step`` magic calls it for
manual and headless runs alike; the planner uses :func:`key_parts` to decide, without a kernel, what would run.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import ArtifactRef
from .exceptions import MlopsError
from .pipeline import FORMAT_VERSION, Pipeline, Step, canonical, sha256

RUN_ENV = "MLOPS_NB_RUN_ID"
NOTEBOOK_ENV = "MLOPS_NB_NOTEBOOK"
NO_CACHE_ENV = "MLOPS_NB_NO_CACHE"


class StepFailedError(MlopsError):
    """A step's body raised, or its outputs could not be stored.

    Attributes:
        step: the step's name.
        cell_index: the step's cell (0-based).
        ename, evalue: the exception's type and message.
    """

    def __init__(self, message: str, step: str = "", cell_index: int | None = None, ename: str = "", evalue: str = ""):
        super().__init__(message)
        self.step, self.cell_index, self.ename, self.evalue = step, cell_index, ename, evalue


@dataclass
class StepResult:
    """What happened to one step.

    Attributes:
        step: the step's name.
        status: ``succeeded``, ``cached`` or ``failed``.
        why: why it ran (or where its outputs came from).
        step_run_id: its record in the metadata store.
        cache_key: its cache key.
        outputs: name -> :class:`ArtifactRef`.
        duration: seconds.
        error: the error of a failed step.
    """

    step: str
    status: str
    why: str
    step_run_id: str | None
    cache_key: str
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    duration: float = 0.0
    error: str | None = None

    def line(self) -> str:
        """One line for people: step, ran/cached/failed, why, duration, outputs with shapes."""
        mark = {"succeeded": "✔", "cached": "↺", "failed": "✘"}.get(self.status, "·")
        verb = {"succeeded": "ran", "cached": "cached", "failed": "failed"}.get(self.status, self.status)
        outs = ", ".join(f"{k}: {r.summary or r.kind}" for k, r in self.outputs.items())
        text = f"{mark} {self.step} {verb} ({self.why}) in {self.duration:.2f}s"
        if outs:
            text += f" → {outs}"
        if self.error:
            text += f" — {self.error}"
        return text


# Hashing what a step reads -------------------------------------------------------------------------------------
_path_hashes: dict[tuple[str, int, int], str] = {}


def hash_path(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's sorted (relative path, file hash) list.

    Hashes are remembered per (path, size, mtime) for the life of the process.
    """
    if path.is_dir():
        entries = [(p.relative_to(path).as_posix(), hash_path(p)) for p in sorted(path.rglob("*")) if p.is_file()]
        return sha256(canonical(entries))
    stat = path.stat()
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _path_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _path_hashes[memo_key] = digest.hexdigest()
    return _path_hashes[memo_key]


def key_parts(pipeline: Pipeline, step: Step, inputs: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
    """The components of a step's cache key (DESIGN.md): normalised source, setup, local modules, input artifact
    hashes, ``--reads`` content hashes, the parameter values it uses, and the format version."""
    return {
        "format": FORMAT_VERSION,
        "source": sha256(step.normalized),
        "setup": pipeline.setup_hash,
        "modules": {**pipeline.setup_modules, **step.modules},
        "inputs": dict(sorted(inputs.items())),
        "reads": {p: hash_path(pipeline.folder / p) for p in step.reads},
        "params": {p: canonical(params.get(p, pipeline.params.get(p))) for p in step.params},
    }


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


# The run this process's steps belong to ---------------------------------------------------------------------------
class RunContext:
    """The run that steps executed in this process record into, and what they produced so far.

    Args:
        project: the project whose stores are used.
        run_id: the run (created by a driver, or by :meth:`interactive`).
        pipeline: the parsed notebook, when known.
        no_cache: run every step (``--no-cache``).
        owns_run: whether this process ends the run (an interactive session) or a driver does.
    """

    def __init__(self, project, run_id: str, pipeline: Pipeline | None, no_cache: bool = False, owns_run: bool = False):
        self.project = project
        self.run_id = run_id
        self.pipeline = pipeline
        self.no_cache = no_cache
        self.owns_run = owns_run
        self.results: list[StepResult] = []
        self._produced: dict[str, tuple[ArtifactRef, int]] = {}  # variable -> (ref, id of the object)

    @property
    def store(self):
        """The metadata store."""
        return self.project.metadata

    @property
    def artifacts(self):
        """The artifact store."""
        return self.project.artifacts

    def remember(self, name: str, ref: ArtifactRef, obj: Any) -> None:
        """Note that variable ``name`` holds artifact ``ref``."""
        self._produced[name] = (ref, id(obj))

    def ref_of(self, name: str, namespace: dict) -> ArtifactRef | None:
        """The artifact the variable holds: the one a step stored, if the variable still holds that object;
        else the variable's current value is stored. None when the variable does not exist."""
        if name not in namespace:
            return None
        known = self._produced.get(name)
        if known is not None and known[1] == id(namespace[name]):
            return known[0]
        ref = self.artifacts.put(namespace[name], name=name)
        self._produced[name] = (ref, id(namespace[name]))
        return ref

    def finish_at_exit(self) -> None:
        """:meth:`finish`, for ``atexit``: a store that is gone by then is not worth a traceback."""
        try:
            self.finish()
        except Exception:  # noqa: BLE001 - the interpreter is exiting
            pass

    def finish(self) -> None:
        """End a run this process owns: failed if any step's last result failed, else succeeded."""
        if not self.owns_run:
            return
        last: dict[str, str] = {}
        for result in self.results:
            last[result.step] = result.status
        failed = [s for s, status in last.items() if status == "failed"]
        error = f"step {failed[0]} failed" if failed else None
        self.store.finish_run(self.run_id, "failed" if failed else "succeeded", error=error)
        self.owns_run = False


def load_pipeline(path: str | os.PathLike | None) -> Pipeline | None:
    """The pipeline of the notebook at ``path``, validated leniently (problems are kept, not raised)."""
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    return Pipeline.from_notebook(path, strict=False)


# What a running step touches besides its variables ----------------------------------------------------------------
@dataclass
class ActiveStep:
    """Artifacts a running step read or wrote through other stores (a feature view, a registered model).

    Attributes:
        step: the step's name.
        inputs, outputs: name -> :class:`ArtifactRef`, recorded with the step run when it ends.
    """

    step: str
    inputs: dict[str, ArtifactRef] = field(default_factory=dict)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)


_active: ActiveStep | None = None


def active_step() -> ActiveStep | None:
    """The step running in this process right now, if any (for stores that record lineage)."""
    return _active


def record_input(name: str, ref: ArtifactRef) -> None:
    """Record ``ref`` as an input of the running step (no-op outside a step). For stores other than the
    artifact store: the feature store calls it for each view a step reads."""
    if _active is not None:
        _active.inputs[name] = ref


def record_output(name: str, ref: ArtifactRef) -> None:
    """Record ``ref`` as an output of the running step (no-op outside a step)."""
    if _active is not None:
        _active.outputs[name] = ref


# Inputs whose content lives in another store: a cache hit must check they did not change since.
# kind -> "module:function" taking the recorded ArtifactRef and returning its current hash (None: gone).
CURRENT_HASH = {"feature_view": "mlops_nb.features:current_view_hash"}


def _hook(hooks: dict[str, str], kind: str):
    """The function ``hooks`` names (``"module:function"``) for artifacts of ``kind``, or None."""
    from importlib import import_module

    target = hooks.get(kind)
    if target is None:
        return None
    module, function = target.split(":")
    return getattr(import_module(module), function)


def stale_inputs(step_run, project=None) -> list[str]:
    """Names of a step run's inputs from other stores (feature views) whose content changed since it ran."""
    stale = []
    for name, ref in step_run.inputs.items():
        current_hash = _hook(CURRENT_HASH, ref.kind)
        if current_hash is not None and current_hash(ref, project) != ref.hash:
            stale.append(name)
    return stale


# Outputs a step wrote to another store: a cache hit must check they are still there.
# kind -> "module:function" taking the recorded ArtifactRef and returning whether it is still stored.
STILL_STORED = {"feature_segment": "mlops_nb.features:segment_present"}


def unusable(ctx_artifacts, hit, step: Step, project=None) -> str | None:
    """Why a cached step run's outputs cannot stand in for running ``step``, or None when they can: every output
    must be recorded and still stored (what it wrote to other stores too, such as feature segments), and no input
    from another store may have changed."""
    if any(n not in hit.outputs or not ctx_artifacts.exists(hit.outputs[n]) for n in step.outputs):
        return "cached outputs missing"
    for name, ref in hit.outputs.items():
        still_stored = _hook(STILL_STORED, ref.kind)
        if still_stored is not None and not still_stored(ref, project):
            return f"output {name} is gone"
    stale = stale_inputs(hit, project)
    return ", ".join(f"{name} changed" for name in stale) if stale else None


def reusable(ctx_artifacts, hit, step: Step, project=None) -> bool:
    """Whether a cached step run (None: there is none) can stand in for running ``step`` (see :func:`unusable`)."""
    return hit is not None and unusable(ctx_artifacts, hit, step, project) is None


# Running one step ------------------------------------------------------------------------------------------------
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


def decide(
    store,
    artifacts,
    pipeline: Pipeline,
    step: Step,
    inputs: dict[str, ArtifactRef],
    params: dict,
    no_cache: bool,
    project=None,
) -> Decision:
    """Compute a step's cache key from its inputs and parameters, look for a reusable earlier run, and say why
    the step runs when there is none. Reads the metadata store; writes nothing."""
    parts = key_parts(pipeline, step, {k: v.hash for k, v in inputs.items()}, params)
    key = cache_key(parts)
    inputs = dict(inputs)
    for path in step.reads:  # external files enter lineage as artifacts that are not copied
        full = (pipeline.folder / path).resolve()
        inputs[path] = ArtifactRef(
            parts["reads"][path], "external", name=path, summary=f"file {path}", uri=full.as_uri()
        )
    no_cache = no_cache or step.no_cache
    rejected = None
    if not no_cache:
        hit = store.find_cached(key)
        if hit is not None:
            rejected = unusable(artifacts, hit, step, project)
            if rejected is None:
                return Decision(key, parts, inputs, hit, f"cached from run {hit.run_id}")
    previous = store.previous_step_run(pipeline.name, step.name)
    why = explain(parts, previous[1] if previous else None)
    stale = stale_inputs(previous[0], project) if previous and previous[0].cache_key == key else []
    if stale:
        why = ", ".join(f"{name} changed" for name in stale)
    if no_cache:
        why = "--no-cache"
    elif rejected:  # an earlier run with this very key: why it cannot be reused says it best
        why = rejected
    elif not why:
        why = "previous attempt failed" if previous and previous[0].status == "failed" else "cached outputs missing"
    return Decision(key, parts, inputs, None, why)


def record_hit(store, run_id: str, step: Step, decision: Decision) -> tuple[str, dict[str, ArtifactRef]]:
    """Record a cache hit as a ``cached`` step run; return its id and the outputs it reuses."""
    outputs = {n: decision.hit.outputs[n] for n in step.outputs}
    step_run_id = store.record_step(
        run_id,
        step.name,
        "cached",
        why=decision.why,
        cache_key=decision.key,
        cell_index=step.cell_index,
        inputs=decision.inputs,
        key_parts=decision.parts,
        outputs=outputs,
        cached_from=decision.hit.id,
    )
    return step_run_id, outputs


def record_start(store, run_id: str, step: Step, decision: Decision, attempt: int, retries: int) -> tuple[str, str]:
    """Record that attempt ``attempt`` of ``step`` starts; return the step run's id and its why line."""
    why = decision.why if attempt == 1 else f"retry {attempt - 1} of {retries}"
    step_run_id = store.start_step(
        run_id,
        step.name,
        why=why,
        cache_key=decision.key,
        cell_index=step.cell_index,
        inputs=decision.inputs,
        attempt=attempt,
        key_parts=decision.parts,
    )
    return step_run_id, why


class capture:  # noqa: N801 - used as a context manager, like contextlib's
    """Make ``step`` the running step while the block runs; ``.touched`` then holds what it recorded."""

    def __init__(self, step: str):
        self.touched = ActiveStep(step)

    def __enter__(self) -> ActiveStep:
        global _active
        _active = self.touched
        return self.touched

    def __exit__(self, *exc) -> None:
        global _active
        _active = None


def execute_step(
    ctx: RunContext,
    step: Step,
    namespace: dict,
    run_body: Callable[[str], None],
    echo: Callable[[str], None] = print,
) -> StepResult:
    """Run ``step`` in ``namespace`` as part of ``ctx``'s run and record it; the one code path for every mode.

    Args:
        ctx: the run.
        step: the step (its structure from the pipeline, its body as executed).
        namespace: the variables the step reads and writes (a kernel's ``user_ns``).
        run_body: runs the body's source in the namespace; raises what the body raises.
        echo: where the one-line status goes.

    Returns:
        the :class:`StepResult`; a failed step's result has status ``failed`` (the caller decides how to stop).
    """
    pipeline = ctx.pipeline
    started = time.perf_counter()
    inputs: dict[str, ArtifactRef] = {}
    for name in step.inputs:
        ref = ctx.ref_of(name, namespace)
        if ref is None:
            producer = step.upstream.get(name)
            hint = f"run step {producer!r} first" if producer else "run the step that assigns it first"
            raise StepFailedError(
                f"step {step.name!r} (cell {step.cell}) needs input {name!r}, which is not defined; {hint}",
                step.name,
                step.cell_index,
                "NameError",
                name,
            )
        inputs[name] = ref
    params = {p: namespace.get(p, pipeline.params.get(p)) for p in step.params}
    decision = decide(ctx.store, ctx.artifacts, pipeline, step, inputs, params, ctx.no_cache, ctx.project)

    if decision.hit is not None:
        step_run_id, outputs = record_hit(ctx.store, ctx.run_id, step, decision)
        for name, ref in outputs.items():
            value = ctx.artifacts.get(ref)
            namespace[name] = value
            ctx.remember(name, ref, value)
        result = StepResult(
            step.name, "cached", decision.why, step_run_id, decision.key, outputs, time.perf_counter() - started
        )
        ctx.results.append(result)
        echo(result.line())
        return result

    attempts = step.retries + 1
    for attempt in range(1, attempts + 1):
        step_run_id, why = record_start(ctx.store, ctx.run_id, step, decision, attempt, step.retries)
        t0 = time.perf_counter()
        # a declared output must be assigned by the body, not left over from an earlier execution
        stale = {n: namespace.pop(n) for n in step.outputs if n in namespace and n not in step.inputs}
        probe = capture(step.name)
        try:
            with probe:
                run_body(step.source)
                outputs = store_outputs(ctx.artifacts, step, namespace)
        except BaseException as exc:  # noqa: BLE001 - recorded, then reported by the caller
            for name, value in stale.items():
                namespace.setdefault(name, value)
            error = exc.message if isinstance(exc, StepFailedError) else f"{type(exc).__name__}: {exc}"
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            ctx.store.finish_step(step_run_id, status, error=error, inputs=probe.touched.inputs)
            result = StepResult(
                step.name, "failed", why, step_run_id, decision.key, {}, time.perf_counter() - t0, error
            )
            ctx.results.append(result)
            if isinstance(exc, KeyboardInterrupt):
                raise
            if attempt < attempts:
                echo(result.line() + f"; retrying ({attempt} of {step.retries})")
                time.sleep(retry_delay(attempt))
                continue
            echo(result.line())
            return result
        for name, ref in outputs.items():
            ctx.remember(name, ref, namespace[name])
        ctx.store.finish_step(
            step_run_id,
            "succeeded",
            outputs={**probe.touched.outputs, **outputs},
            inputs=probe.touched.inputs,
            metrics=metrics_of(namespace, step),
        )
        result = StepResult(step.name, "succeeded", why, step_run_id, decision.key, outputs, time.perf_counter() - t0)
        ctx.results.append(result)
        echo(result.line())
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def retry_delay(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` + 1: exponential backoff from 0.2 s, at most 5 s."""
    return min(0.2 * 2 ** (attempt - 1), 5.0)


def metrics_of(namespace: dict, step: Step) -> dict[str, float] | None:
    """An output named ``metrics`` holding a dict of numbers is also logged as the step run's metrics."""
    value = namespace.get("metrics") if "metrics" in step.outputs else None
    if (
        isinstance(value, dict)
        and value
        and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in value.items()
        )
    ):
        return {k: float(v) for k, v in value.items()}
    return None


def store_outputs(artifacts, step: Step, namespace: dict) -> dict[str, ArtifactRef]:
    """Store each of ``step``'s outputs from ``namespace``; a missing or unstorable one fails the step."""
    outputs = {}
    for name in step.outputs:
        if name not in namespace:
            raise StepFailedError(
                f"step {step.name!r} (cell {step.cell}) did not assign its declared output {name!r}; assign it in "
                "the step or remove it from --outputs",
                step.name,
                step.cell_index,
                "NameError",
                name,
            )
        try:
            outputs[name] = artifacts.put(namespace[name], name=name)
        except MlopsError as exc:
            raise StepFailedError(
                f"step {step.name!r} (cell {step.cell}) output {name!r}: {exc.message}",
                step.name,
                step.cell_index,
                type(exc).__name__,
                exc.message,
            ) from None
    return outputs
