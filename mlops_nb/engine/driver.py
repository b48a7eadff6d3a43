"""Headless runs: ``mlops_nb.run(path)`` and ``mlops-nb run``, a drop-in for papermill with tracking.

One skeleton for every executor: resolve the notebook → validate it and its parameters → pick the runner (refusing
options it does not take) → plan without a kernel → when every step is a cache hit, record the run with no kernel →
else record the run → the runner executes the steps that must run → record the steps it never reached → end the
run and tell the ``post_run`` hook. Nothing is recorded when the notebook, a parameter or an option is wrong.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.records import TRIGGERS
from ..exceptions import ConfigError, MlopsError, StepFailedError
from ..pipeline.notebook import Pipeline
from ..store.dbfile import release_memory
from ..store.metadata import git_state
from .cache import check_reads
from .executors import INTERRUPTED, Interrupted, Job, Outcome, RunOptions, executors
from .plan import cached_records, fully_cached, plan, prepare, select_steps
from .step import emit_post_run, emit_post_step, record_and_tell


def run(
    path: str | os.PathLike,
    params: dict[str, Any] | None = None,
    executor: str | None = None,
    *,
    no_cache: bool = False,
    project=None,
    trigger: str = "api",
    fired_by: str | None = None,
    progress: bool = True,
    kernel_name: str | None = None,
    step_timeout: float | None = None,
    jobs: int | None = None,
    from_step: str | None = None,
    to_step: str | None = None,
    only: list[str] | None = None,
    retries: int = 0,
    reuse_kernels: bool = False,
    scheduler: str | None = None,
):
    """Run a notebook headless and record it; return the :class:`~mlops_nb.store.metadata.Run`.

    Args:
        path: the notebook.
        params: parameter values (strings from a command line are converted to the defaults' types).
        executor: ``notebook`` (papermill runs the whole notebook in one kernel), ``dag`` (each step in a warm kernel
            of its own, independent steps in parallel), ``dask`` (the dag plan on a Dask cluster) or one an
            installed package registers; default: the project's ``executor`` setting.
        no_cache: run every step.
        project: the project (default: the one the notebook's folder belongs to).
        trigger: what started the run (``api``, ``cli``, ``manual``, ``schedule`` ...).
        fired_by: what fired it, when a trigger did (a schedule's name, a changed file, an alert).
        progress: show a progress bar with one line per step.
        kernel_name: the Jupyter kernel (default: the one the notebook's kernelspec names; a notebook with none
            needs it).
        step_timeout: seconds any one cell (dag, dask: step) may run before its kernel is stopped.
        jobs: steps at once (dag, dask; default: the number of cores).
        from_step, to_step, only: a partial run (dag, dask): steps from one, up to one, or just these; what they
            need comes from the cache or the step's latest run.
        retries: re-run a failing step up to this many more times (dag, dask; a step's ``--retries`` also counts).
        reuse_kernels: keep a kernel for the next step (namespace reset) instead of a fresh one (dag, dask).
        scheduler: a Dask scheduler address (dask; default: a local cluster).

    Raises:
        PipelineError: the notebook is not a valid pipeline or a parameter is wrong (nothing is recorded).
        ConfigError: an unknown executor, an option it does not take, or no kernel to start (nothing is recorded).
        StepFailedError: a step or cell failed; the run is recorded as failed (``.run_id`` names it).
    """
    options = RunOptions(
        executor=executor,
        no_cache=no_cache,
        trigger=trigger,
        fired_by=fired_by,
        progress=progress,
        kernel_name=kernel_name,
        step_timeout=step_timeout,
        jobs=jobs,
        from_step=from_step,
        to_step=to_step,
        only=tuple(only) if only else None,
        retries=retries,
        reuse_kernels=reuse_kernels,
        scheduler=scheduler,
    )
    return run_notebook(path, params, options, project)


def run_notebook(path: str | os.PathLike, params: dict[str, Any] | None, options: RunOptions, project=None):
    """:func:`run` with its options as one :class:`RunOptions`. The run's recorded start is this call's: its
    duration includes parsing and planning."""
    from ..core.clock import utcnow
    from ..project import Project

    begun = utcnow()
    git = _background(git_state, Path(path).resolve().parent)  # git's two subprocesses while we parse and plan
    if options.trigger not in TRIGGERS:
        raise ConfigError(f"trigger {options.trigger!r} is not one of {', '.join(TRIGGERS)}; pass one of them")
    path = Path(path).resolve()
    pipeline = Pipeline.from_notebook(path)
    values = pipeline.resolve_params(params)
    project = project or Project.discover(path.parent)
    name = options.executor or project.settings.executor
    try:
        runner = executors.get(name)
    except ConfigError as exc:
        if options.executor:
            raise
        raise ConfigError(f"{project.settings.sources['executor']}: {exc.message}") from None
    executors.check(runner, options)
    selection = select_steps(pipeline, options.from_step, options.to_step, options.only)
    check_reads(project, pipeline)
    prepared = prepare(project, pipeline, values, selection)  # raises before anything is recorded
    planned = None
    if not options.partial:
        planned = plan(project, pipeline, values, options.no_cache)
        if fully_cached(pipeline, planned):
            return _record_fully_cached(project, pipeline, planned, values, name, options, begun, git.result())
    local = not (name == "dask" and options.scheduler)  # a remote cluster's workers start their own kernels
    from .executors.kernels import require_kernel  # a kernel will start

    options = replace(options, kernel_name=require_kernel(pipeline, options.kernel_name, local))
    store = project.metadata
    run_id = open_run(
        project,
        pipeline,
        values,
        name,
        options.trigger,
        started_at=begun,
        git=git.result(),
        fired_by=options.fired_by,
        run_id=options.run_id,
    )
    given = {k: values[k] for k in (params or {})}
    job = Job(project, pipeline, values, given, run_id, options, prepared, planned)
    outcome = Outcome("failed")
    try:
        with _sigterm_interrupts():
            outcome = runner().execute(job)
    except KeyboardInterrupt as exc:
        made = exc.outcome.executed_notebook if isinstance(exc, Interrupted) else None
        outcome = Outcome("interrupted", INTERRUPTED, executed_notebook=made)
        raise
    except MlopsError as exc:
        outcome = Outcome("failed", exc.message)
        raise
    except Exception as exc:
        outcome = Outcome("failed", f"the {name} executor failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        try:
            _record_skipped(pipeline, store, run_id, prepared.selected, outcome.failure)
        finally:
            store.finish_run(run_id, outcome.status, error=outcome.error, executed_notebook=outcome.executed_notebook)
            emit_post_run(run_id, pipeline.name, outcome.status, options.trigger, outcome.error)
            release_memory()  # what DuckDB's allocator kept from the run's records and reads goes back
    if outcome.failure is not None:
        outcome.failure.run_id = run_id
        raise outcome.failure
    return store.get_run(run_id)


def open_run(project, pipeline: Pipeline, values: dict, executor: str, trigger: str, **fields: Any) -> str:
    """Record a new ``running`` run of a notebook's pipeline; return its id (the one place a pipeline run is
    created, for headless and manual runs alike)."""
    return project.metadata.create_run(
        pipeline.name,
        kind="pipeline",
        notebook=pipeline.path if pipeline.path.is_file() else None,
        notebook_hash=pipeline.notebook_hash if pipeline.path.is_file() else None,
        params=values,
        executor=executor,
        trigger=trigger,
        **fields,
    )


def _background(function, *args) -> Future:
    """``function(*args)`` on a daemon thread of its own; its future holds the result."""
    future: Future = Future()

    def work() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=work, name="mlops-nb-background", daemon=True).start()
    return future


@contextmanager
def _sigterm_interrupts():
    """SIGTERM ends the run as Ctrl-C does (in the main thread, where a handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record_skipped(pipeline: Pipeline, store, run_id: str, selected: set[str], failure: StepFailedError | None):
    """Record ``skipped`` for every selected step that has no step run in this run."""
    done = {s.step for s in store.get_run(run_id).step_runs}
    missing = [s for s in pipeline.steps if s.name in selected and s.name not in done]
    if not missing:
        return
    failed = failure.step if failure is not None and failure.step else None
    downstream = set(pipeline.downstream(failed)) if failed else set()
    records = []
    for step in missing:
        if step.name in downstream:
            why = f"upstream step {failed} failed"
        elif failed:
            why = f"not reached: the run stopped at step {failed}"
        else:
            why = "not reached: the run stopped early"
        records.append({"step": step.name, "status": "skipped", "why": why, "cell_index": step.cell_index})
    record_and_tell(store, run_id, records)


def _record_fully_cached(
    project, pipeline: Pipeline, planned, values: dict, executor: str, options: RunOptions, begun, git
):
    """Every step is a cache hit: record the run in one transaction, without a kernel."""
    from ..core import progress
    from ..store.metadata import new_run_id

    store = project.metadata
    run_id = options.run_id or new_run_id()
    with store.batch(write=True):
        open_run(
            project, pipeline, values, executor, options.trigger, run_id=run_id, git=git, started_at=begun,
            fired_by=options.fired_by,
        )  # fmt: skip
        store.record_steps(run_id, cached_records(planned))
        store.finish_run(run_id, "succeeded")
    lines = progress.start(len(planned), pipeline.name, enabled=options.progress, bar=False)  # no bar: no tqdm import
    recorded = store.get_run(run_id)
    for p, step_run in zip(planned, recorded.step_runs, strict=True):
        lines.write(f"  {p.step.name}: cached (cached from run {p.hit.run_id})")
        emit_post_step(run_id, p.step.name, step_run.id, "cached", step_run.why, step_run.outputs, None)
    emit_post_run(run_id, pipeline.name, "succeeded", options.trigger, None)
    return recorded
