"""The step runtime: the one code path that runs a step in a kernel's namespace, in every mode (DESIGN invariant 1).

Given a step, the namespace it runs in and the run it belongs to, :func:`execute_step` decides the step
(``cache.decide``), loads the outputs of a cache hit into the namespace or runs the body and stores its outputs,
and records the step run with its input and output artifacts. The ``%%mlops step`` magic calls it for manual and
headless (``notebook`` executor) runs alike; the ``dag``/``dask`` driver shares :func:`record_hit`,
:func:`record_start` and :func:`store_outputs` with it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import hooks as tracking
from ..core.clock import utcnow
from ..core.hooks import hooks
from ..core.records import ArtifactRef
from ..exceptions import MlopsError, StepFailedError
from ..pipeline.notebook import Pipeline, Step
from ..store.dbfile import release_memory
from .cache import Decision, decide, keyed


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


# The run this process's steps belong to ---------------------------------------------------------------------------
class RunContext:
    """The run that steps executed in this process record into, and what they produced so far.

    Args:
        project: the project whose stores are used.
        run_id: the run (created by a driver, or by :func:`open_manual_run`).
        pipeline: the parsed notebook, when known.
        no_cache: run every step (``--no-cache``).
        owns_run: whether this process ends the run (a manual session) or a driver does.
        planned: step -> the cache hit its driver already recorded (step run ``id``, ``hit``, ``why``,
            ``outputs``, and the outputs to ``load`` because later cells read them): such a step is not decided again.
    """

    def __init__(
        self,
        project,
        run_id: str,
        pipeline: Pipeline | None,
        no_cache: bool = False,
        owns_run: bool = False,
        planned: dict[str, dict] | None = None,
    ):
        self.project = project
        self.run_id = run_id
        self.pipeline = pipeline
        self.no_cache = no_cache
        self.owns_run = owns_run
        self.planned = planned or {}
        self.results: list[StepResult] = []
        self._produced: dict[str, tuple[ArtifactRef, int, str | None]] = {}  # variable -> (ref, id(obj), producer)

    @property
    def store(self):
        """The metadata store."""
        return self.project.metadata

    @property
    def artifacts(self):
        """The artifact store."""
        return self.project.artifacts

    def remember(self, name: str, ref: ArtifactRef, obj: Any, source: str | None = None) -> None:
        """Note that variable ``name`` holds artifact ``ref``, an output of step run ``source`` (the producer)."""
        self._produced[name] = (ref, id(obj), source)

    def produced(self, name: str) -> ArtifactRef | None:
        """The artifact a step of this run last stored (or loaded) as variable ``name``, if any."""
        known = self._produced.get(name)
        return known[0] if known else None

    def sources(self, names, namespace: dict) -> dict[str, str]:
        """Variable -> the step run that produced the object it still holds, for those of ``names`` known."""
        found = {}
        for name in names:
            known = self._produced.get(name)
            if known is not None and known[2] is not None and name in namespace and known[1] == id(namespace[name]):
                found[name] = known[2]
        return found

    def produced_names(self) -> set[str]:
        """The variables steps of this run stored or loaded."""
        return set(self._produced)

    def ref_of(self, name: str, namespace: dict) -> ArtifactRef | None:
        """The artifact the variable holds: the one a step stored, if the variable still holds that object;
        else the variable's current value is stored. None when the variable does not exist."""
        if name not in namespace:
            return None
        known = self._produced.get(name)
        if known is not None and known[1] == id(namespace[name]):
            return known[0]
        ref = self.artifacts.put(namespace[name], name=name)
        self._produced[name] = (ref, id(namespace[name]), None)
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
        status = "failed" if failed else "succeeded"
        self.store.finish_run(self.run_id, status, error=error)
        self.owns_run = False
        emit_post_run(self.run_id, self.pipeline.name if self.pipeline else None, status, "manual", error)


def load_pipeline(path: str | os.PathLike | None) -> Pipeline | None:
    """The pipeline of the notebook at ``path``, validated leniently (problems are kept, not raised)."""
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    return Pipeline.from_notebook(path, strict=False)


# Records shared with the dag/dask driver ----------------------------------------------------------------------------
def record_hit(
    store, run_id: str, step: Step, decision: Decision, sources: dict[str, str] | None = None, **times
) -> tuple[str, dict[str, ArtifactRef]]:
    """Record a cache hit as a ``cached`` step run; return its id and the outputs it reuses.

    ``sources``: input -> the step run that produced the artifact the step loaded (see ``start_step``);
    ``started_at``/``ended_at``: when loading its outputs began and ended (default: now)."""
    outputs = {n: decision.hit.outputs[n] for n in step.outputs}
    step_run_id = store.record_step(
        run_id,
        step.name,
        "cached",
        why=decision.why,
        cache_key=decision.key,
        cell_index=step.cell_index,
        inputs=decision.inputs,
        sources=sources,
        key_parts=decision.parts,
        outputs=outputs,
        cached_from=decision.hit.id,
        **times,
    )
    return step_run_id, outputs


def attempt_why(decision: Decision, attempt: int, retries: int) -> str:
    """Why attempt ``attempt`` of a step runs: the decision's why, then ``retry N of M``."""
    return decision.why if attempt == 1 else f"retry {attempt - 1} of {retries}"


def record_start(
    store,
    run_id: str,
    step: Step,
    decision: Decision,
    attempt: int,
    retries: int,
    sources: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Record that attempt ``attempt`` of ``step`` starts; return the step run's id and its why line."""
    why = attempt_why(decision, attempt, retries)
    step_run_id = store.start_step(
        run_id,
        step.name,
        why=why,
        cache_key=decision.key,
        cell_index=step.cell_index,
        inputs=decision.inputs,
        attempt=attempt,
        key_parts=decision.parts,
        sources=sources,
    )
    return step_run_id, why


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


def emit_post_run(run_id: str, pipeline: str | None, status: str, trigger: str, error: str | None) -> None:
    """Tell the ``post_run`` subscribers that a pipeline run ended and is recorded."""
    hooks.emit(
        "post_run", run_id=run_id, kind="pipeline", pipeline=pipeline, status=status, trigger=trigger, error=error
    )


def record_and_tell(store, run_id: str, records: list[dict]) -> list[str]:
    """Record finished step runs in one transaction (:meth:`MetadataStore.record_steps`), then tell the
    ``post_step`` subscribers of each; return their ids."""
    ids = store.record_steps(run_id, records)
    for record, step_run_id in zip(records, ids, strict=True):
        outputs, error = record.get("outputs"), record.get("error")
        emit_post_step(run_id, record["step"], step_run_id, record["status"], record.get("why"), outputs, error)
    return ids


def emit_post_step(run_id: str, step: str, step_run_id: str | None, status: str, why, outputs, error) -> None:
    """Tell the ``post_step`` subscribers that a step run ended and is recorded."""
    hooks.emit(
        "post_step",
        run_id=run_id,
        step=step,
        step_run_id=step_run_id,
        status=status,
        why=why,
        outputs=dict(outputs or {}),
        error=error,
    )


# Running one step ------------------------------------------------------------------------------------------------
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
    started = time.perf_counter()
    if step.name in ctx.planned:
        result = _planned_hit(ctx, step, namespace, ctx.planned[step.name], started)
        echo(result.line())
        return result
    inputs = _inputs_of(ctx, step, namespace)
    params = {p: namespace.get(p, ctx.pipeline.params.get(p)) for p in step.params}
    sources = ctx.sources(step.inputs, namespace)
    # the key first (it hashes --reads files), then one short transaction decides the step and records its start:
    # a ran step costs two store operations
    key = keyed(ctx.project, ctx.pipeline, step, inputs, params)
    with ctx.store.batch(write=True):
        decision = decide(ctx.project, ctx.pipeline, step, inputs, params, ctx.no_cache, key)
        first = (
            None
            if decision.hit is not None
            else record_start(ctx.store, ctx.run_id, step, decision, 1, step.retries, sources)
        )
    if decision.hit is not None:
        result = _load_hit(ctx, step, namespace, decision, started, sources)
    else:
        result = _run(ctx, step, namespace, decision, run_body, echo, first)
    release_memory()  # what DuckDB's allocator kept from the step's reads goes back (a kernel lives on)
    echo(result.line())
    return result


def _planned_hit(ctx: RunContext, step: Step, namespace: dict, planned: dict, started: float) -> StepResult:
    """A cache hit the driver recorded before the kernel started: load only the outputs later cells read, and
    record how long that took."""
    outputs = {n: ArtifactRef.from_dict(r) for n, r in planned["outputs"].items()}
    if planned["load"]:
        begun = utcnow()
        for name in planned["load"]:
            value = ctx.artifacts.get(outputs[name])
            namespace[name] = value
            ctx.remember(name, outputs[name], value, planned["hit"])
        ctx.store.time_step(planned["id"], begun, utcnow())
    duration = time.perf_counter() - started
    result = StepResult(step.name, "cached", planned["why"], planned["id"], "", outputs, duration)
    ctx.results.append(result)
    return result


def _inputs_of(ctx: RunContext, step: Step, namespace: dict) -> dict[str, ArtifactRef]:
    """The artifacts the step's inputs hold; an input that is not defined fails the step with a hint."""
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
    return inputs


def _load_hit(
    ctx: RunContext, step: Step, namespace: dict, decision: Decision, started: float, sources: dict[str, str]
) -> StepResult:
    """Load a cache hit's outputs into the namespace, then record it with the time loading took."""
    begun = utcnow()
    outputs = {n: decision.hit.outputs[n] for n in step.outputs}
    for name, ref in outputs.items():
        value = ctx.artifacts.get(ref)
        namespace[name] = value
        ctx.remember(name, ref, value, decision.hit.id)
    step_run_id, _ = record_hit(ctx.store, ctx.run_id, step, decision, sources, started_at=begun, ended_at=utcnow())
    result = StepResult(
        step.name, "cached", decision.why, step_run_id, decision.key, outputs, time.perf_counter() - started
    )
    ctx.results.append(result)
    emit_post_step(ctx.run_id, step.name, step_run_id, "cached", decision.why, outputs, None)
    return result


def _run(
    ctx: RunContext, step: Step, namespace: dict, decision: Decision, run_body, echo, first: tuple[str, str] | None
) -> StepResult:
    """Run the body (with its retries), store the outputs and record each attempt; ``first`` is the recorded start
    of attempt 1 (step run id, why)."""
    attempts = step.retries + 1
    for attempt in range(1, attempts + 1):
        result = _attempt(ctx, step, namespace, decision, run_body, attempt, first if attempt == 1 else None)
        if result.status == "failed" and attempt < attempts:
            echo(result.line() + f"; retrying ({attempt} of {step.retries})")
            time.sleep(retry_delay(attempt))
            continue
        emit_post_step(
            ctx.run_id, step.name, result.step_run_id, result.status, result.why, result.outputs, result.error
        )
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _attempt(
    ctx: RunContext, step: Step, namespace: dict, decision: Decision, run_body, attempt: int, started=None
) -> StepResult:
    """One attempt: record its start (unless ``started`` holds it), run the body, store the outputs, record how it
    ended."""
    if started is None:
        sources = ctx.sources(step.inputs, namespace)
        started = record_start(ctx.store, ctx.run_id, step, decision, attempt, step.retries, sources)
    step_run_id, why = started
    t0 = time.perf_counter()
    # a declared output must be assigned by the body, not left over from an earlier execution
    stale = {n: namespace.pop(n) for n in step.outputs if n in namespace and n not in step.inputs}
    probe = tracking.track(
        step.name, ctx.run_id, decision.inputs, ctx.project, namespace, ctx.sources(step.inputs, namespace)
    )
    try:
        with probe:
            run_body(step.source)
            outputs = store_outputs(ctx.artifacts, step, namespace)
    except BaseException as exc:  # noqa: BLE001 - recorded, then reported by the caller
        for name, value in stale.items():
            namespace.setdefault(name, value)
        error = exc.message if isinstance(exc, StepFailedError) else f"{type(exc).__name__}: {exc}"
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        touched = probe.touched  # what it did to other stores before failing happened all the same
        ctx.store.finish_step(
            step_run_id,
            status,
            error=error,
            inputs=touched.inputs,
            outputs=touched.outputs,
            model_events=touched.events,
        )
        result = StepResult(step.name, "failed", why, step_run_id, decision.key, {}, time.perf_counter() - t0, error)
        ctx.results.append(result)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return result
    for name, ref in outputs.items():
        ctx.remember(name, ref, namespace[name], step_run_id)
    ctx.store.finish_step(
        step_run_id,
        "succeeded",
        outputs={**probe.touched.outputs, **outputs},
        inputs=probe.touched.inputs,
        metrics=metrics_of(namespace, step),
        model_events=probe.touched.events,
    )
    result = StepResult(step.name, "succeeded", why, step_run_id, decision.key, outputs, time.perf_counter() - t0)
    ctx.results.append(result)
    return result
