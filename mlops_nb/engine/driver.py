"""Headless runs: ``mlops_nb.run(path)`` and ``mlops-nb run``, a drop-in for papermill with tracking.

The driver validates the notebook, plans the run from the records without a kernel (a step whose key is known
and cached needs no kernel; when every step is, none starts), creates the run, and lets papermill execute the
notebook with the run's id in the kernel's environment: the ``%%mlops step`` magic inside records each step into
that run. Afterwards it stores the executed notebook as an artifact of the run, records steps that never ran
as ``skipped``, and ends the run.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import MlopsError
from .pipeline import Pipeline, Step, parse_magic_line, split_magic
from .runtime import NO_CACHE_ENV, NOTEBOOK_ENV, RUN_ENV, StepFailedError, cache_key, key_parts, reusable

EXECUTORS = ("notebook", "dag", "dask")


@dataclass
class PlannedStep:
    """What the planner knows of a step before any kernel starts.

    Attributes:
        step: the step.
        key: its cache key, when every input's hash is known (None otherwise).
        parts: the key's parts.
        hit: the earlier step run whose outputs it would reuse, if any.
    """

    step: Step
    key: str | None
    parts: dict | None
    hit: Any


def plan(project, pipeline: Pipeline, params: dict[str, Any], no_cache: bool = False) -> list[PlannedStep]:
    """Each step's cache key and cache hit, computed from the records alone (no kernel).

    A step's input hashes are known when its upstream step is a hit (the hit's recorded outputs); otherwise the
    step must run and so must everything downstream of it.
    """
    store, artifacts = project.metadata, project.artifacts
    planned: dict[str, PlannedStep] = {}
    with store.batch():
        for step in pipeline.steps:
            hashes = {}
            for name, producer in step.upstream.items():
                upstream = planned.get(producer)
                if upstream is None or upstream.hit is None or name not in upstream.hit.outputs:
                    hashes = None
                    break
                hashes[name] = upstream.hit.outputs[name].hash
            if hashes is None:
                planned[step.name] = PlannedStep(step, None, None, None)
                continue
            parts = key_parts(pipeline, step, hashes, params)
            key = cache_key(parts)
            hit = None
            if not (no_cache or step.no_cache):
                found = store.find_cached(key)
                if reusable(artifacts, found, step, project):
                    hit = found
            planned[step.name] = PlannedStep(step, key, parts, hit)
    return [planned[s.name] for s in pipeline.steps]


@contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for the kernel papermill starts (it inherits ours), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _engine():
    """papermill's nbclient engine, reporting each finished cell to a callback."""
    from papermill.engines import NBClientEngine, papermill_engines

    class MlopsEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell_complete=None, **kwargs):
            if on_cell_complete is not None:
                original = nb_man.cell_complete

                def cell_complete(cell, cell_index=None, **kw):
                    original(cell, cell_index=cell_index, **kw)
                    on_cell_complete(cell)

                nb_man.cell_complete = cell_complete
            from .executors.forking import ForkingKernelManager  # with no template: a kernel that is ready sooner

            kwargs.setdefault("kernel_manager_class", ForkingKernelManager)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("mlops_nb", MlopsEngine)
    return "mlops_nb"


def _step_name(cell) -> str | None:
    if cell.get("cell_type") != "code":
        return None
    magic = split_magic(cell.get("source", ""))
    if magic is None:
        return None
    try:
        return parse_magic_line(magic[0]).name
    except ValueError:
        return None


def run(
    path: str | os.PathLike,
    params: dict[str, Any] | None = None,
    executor: str | None = None,
    *,
    no_cache: bool = False,
    project=None,
    trigger: str = "api",
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
    """Run a notebook headless and record it; return the :class:`~mlops_nb.metadata.Run`.

    Args:
        path: the notebook.
        params: parameter values (strings from a command line are converted to the defaults' types).
        executor: ``notebook`` (papermill runs the whole notebook in one kernel), ``dag`` (each step in a warm kernel
            of its own, independent steps in parallel) or ``dask`` (the dag plan on a Dask cluster); default: the
            project's ``executor`` setting.
        no_cache: run every step.
        project: the project (default: the one the notebook's folder belongs to).
        trigger: what started the run (``api``, ``cli``, ``manual``, ``schedule`` ...).
        progress: show a tqdm progress bar with one line per step.
        kernel_name: the Jupyter kernel (default: the notebook's).
        step_timeout: seconds any one cell (dag, dask: step) may run before its kernel is stopped.
        jobs: steps at once (dag, dask; default: the number of cores).
        from_step, to_step, only: a partial run (dag, dask): steps from one, up to one, or just these; what they
            need comes from the cache or the step's latest run.
        retries: re-run a failing step up to this many more times (dag, dask; a step's ``--retries`` also counts).
        reuse_kernels: keep a kernel for the next step (namespace reset) instead of a fresh one (dag, dask).
        scheduler: a Dask scheduler address (dask; default: a local cluster).

    Raises:
        PipelineError: the notebook is not a valid pipeline or a parameter is wrong (nothing is recorded).
        StepFailedError: a step or cell failed; the run is recorded as failed (``.run_id`` names it).
    """
    from .project import Project

    path = Path(path).resolve()
    pipeline = Pipeline.from_notebook(path)
    values = pipeline.resolve_params(params)
    project = project or Project.discover(path.parent)
    executor = executor or project.settings.executor
    if executor not in EXECUTORS:
        raise MlopsError(f"executor {executor!r} is not available; use one of: {', '.join(EXECUTORS)}")
    store = project.metadata
    run_params = {k: v for k, v in values.items()}
    partial = bool(from_step or to_step or only)
    if executor == "notebook" and (partial or retries or reuse_kernels or jobs or scheduler):
        raise MlopsError(
            "--from/--to/--only, --jobs, --retries, --reuse-kernels and --scheduler need --executor dag or dask"
        )

    if executor != "notebook":
        return _run_graph(
            project,
            pipeline,
            values,
            executor,
            trigger=trigger,
            no_cache=no_cache,
            progress=progress,
            kernel_name=kernel_name,
            step_timeout=step_timeout,
            jobs=jobs,
            from_step=from_step,
            to_step=to_step,
            only=only,
            retries=retries,
            reuse_kernels=reuse_kernels,
            scheduler=scheduler,
        )

    planned = plan(project, pipeline, values, no_cache)
    if pipeline.steps and all(p.hit is not None for p in planned):
        return _record_fully_cached(project, pipeline, planned, run_params, executor, trigger, progress)
    run_id = store.create_run(
        pipeline.name,
        notebook=path,
        notebook_hash=pipeline.notebook_hash,
        params=run_params,
        executor=executor,
        trigger=trigger,
    )
    given = {k: values[k] for k in (params or {})}
    failure: StepFailedError | None = None
    status, error = "succeeded", None
    bar = _progress_bar(len(pipeline.steps), pipeline.name, progress)

    def on_cell_complete(cell) -> None:
        name = _step_name(cell)
        if name is None or bar is None:
            return
        record = store.get_run(run_id)
        done = [s for s in record.step_runs if s.step == name]
        if done:
            s = done[-1]
            verb = {"succeeded": "ran", "cached": "cached"}.get(s.status, s.status)
            outs = ", ".join(f"{k}: {r.summary or r.kind}" for k, r in s.outputs.items())
            line = f"  {name}: {verb} ({s.why}) {s.duration or 0:.2f}s" + (f" → {outs}" if outs else "")
            bar.write(line, file=sys.stderr)
        bar.update(1)

    output = Path(tempfile.mkdtemp(prefix="mlops_nb-run-")) / path.name
    env = {
        RUN_ENV: run_id,
        NOTEBOOK_ENV: str(path),
        "MLOPS_NB_HOME": str(project.home),
        NO_CACHE_ENV: "1" if no_cache else "0",
    }
    executed_ref = None
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        from .executors.kernels import kernel_config

        config = kernel_config()
        with _environment(env):
            try:
                papermill.execute_notebook(
                    str(path),
                    str(output),
                    parameters=given,
                    engine_name=_engine(),
                    progress_bar=False,
                    cwd=str(path.parent),
                    kernel_name=kernel_name,
                    on_cell_complete=on_cell_complete,
                    execution_timeout=step_timeout,
                    config=config,
                )
            except PapermillExecutionError as exc:
                if _cell_raised(output):  # not only the traceback of an attempt that a retry then fixed
                    status = "failed"
                    failure = _failure(pipeline, store, run_id, exc)
                    error = failure.message
            except Exception as exc:  # noqa: BLE001 - the kernel died, a cell timed out: recorded, then raised
                status, failure = _abort(pipeline, store, run_id, exc, step_timeout)
                error = failure.message
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
        raise
    finally:
        if bar is not None:
            bar.close()
        if output.exists():
            import nbformat

            executed_ref = project.artifacts.put(nbformat.read(output, as_version=4), name=f"{path.stem} (executed)")
            output.unlink()
            output.parent.rmdir()
        _record_skipped(pipeline, store, run_id, failure)
        if failure is not None and executed_ref is not None:
            failure = StepFailedError(
                f"{failure.message}; executed notebook: {executed_ref.uri}",
                failure.step,
                failure.cell_index,
                failure.ename,
                failure.evalue,
            )
            error = failure.message
        store.finish_run(run_id, status, error=error, executed_notebook=executed_ref)
    if failure is not None:
        failure.run_id = run_id
        raise failure
    return store.get_run(run_id)


def preamble(pipeline: Pipeline, values: dict[str, Any]) -> list[str]:
    """What every step's kernel runs first: the setup cells and the parameters, in notebook order."""
    cells = []
    for index in sorted(
        [*pipeline.setup_cells, *([pipeline.parameters_cell] if pipeline.parameters_cell is not None else [])]
    ):
        if index == pipeline.parameters_cell:
            cells.append("\n".join(f"{name} = {value!r}" for name, value in values.items()))
        else:
            cells.append(pipeline.cells[index]["source"])
    return cells


def _run_graph(
    project,
    pipeline: Pipeline,
    values: dict,
    executor: str,
    *,
    trigger: str,
    no_cache: bool,
    progress: bool,
    kernel_name,
    step_timeout,
    jobs,
    from_step,
    to_step,
    only,
    retries,
    reuse_kernels,
    scheduler,
):
    """The dag and dask executors: prepare (no kernel), record the run, let the graph run, end the run."""
    import signal
    import threading

    from .executors.dag import GraphRun, LocalRunner, prepare, select_steps
    from .executors.kernels import KernelSetup

    store = project.metadata
    selected = select_steps(pipeline, from_step, to_step, only)
    prepared = prepare(project, pipeline, values, selected)  # raises before anything is recorded
    if not (from_step or to_step or only):
        planned = plan(project, pipeline, values, no_cache)
        if pipeline.steps and all(p.hit is not None for p in planned):
            return _record_fully_cached(project, pipeline, planned, values, executor, trigger, progress)
    run_id = store.create_run(
        pipeline.name,
        notebook=pipeline.path,
        notebook_hash=pipeline.notebook_hash,
        params=values,
        executor=executor,
        trigger=trigger,
    )
    jobs = jobs or os.cpu_count() or 1
    env = {"MLOPS_NB_HOME": str(project.home)}
    kernels = KernelSetup(
        tuple(preamble(pipeline, values)),
        str(pipeline.folder),
        env,
        kernel_name or "python3",
        reuse=reuse_kernels,
        fork=project.settings.fork_kernels,
    )
    previous_handler = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM ends the run as Ctrl-C does

        def on_term(signum, frame):
            raise KeyboardInterrupt

        previous_handler = signal.signal(signal.SIGTERM, on_term)
    status, error = "failed", None
    try:
        if executor == "dask":
            from .executors.dask import DaskRunner

            runner = DaskRunner(
                kernels, jobs, address=scheduler, processes=os.environ.get("MLOPS_NB_DASK_PROCESSES") == "1"
            )
        else:
            runner = LocalRunner(kernels, jobs)
            runner.start()
        try:
            status, error = GraphRun(
                project,
                pipeline,
                values,
                run_id,
                runner,
                jobs=jobs,
                prepared=prepared,
                retries=retries,
                no_cache=no_cache,
                step_timeout=step_timeout,
                progress=progress,
            ).execute()
        finally:
            runner.close()
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted (Ctrl-C or SIGTERM); re-run to resume from the cache"
        raise
    except MlopsError as exc:
        error = exc.message
        raise
    except Exception as exc:
        error = f"the {executor} executor failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        store.finish_run(run_id, status, error=error)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if status == "failed":
        failure = StepFailedError(error)
        failure.run_id = run_id
        raise failure
    return store.get_run(run_id)


def _progress_bar(total: int, name: str, enabled: bool):
    if not enabled or not total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="step", leave=False, file=sys.stderr)


def _cell_raised(output: Path) -> bool:
    """Whether papermill recorded a cell that raised (a step retried to success shows an error output but did
    not raise)."""
    import json

    cells = json.loads(output.read_text(encoding="utf-8")).get("cells", [])
    return any(c.get("metadata", {}).get("papermill", {}).get("exception") for c in cells)


def _failure(pipeline: Pipeline, store, run_id: str, exc) -> StepFailedError:
    """The one-line error of a failed headless run, from the failed step's record (or the failing cell)."""
    record = store.get_run(run_id)
    failed = [s for s in record.step_runs if s.status == "failed"]
    if failed:
        s = failed[-1]
        step = pipeline.step(s.step)
        return StepFailedError(
            f"step {s.step!r} (cell {step.cell}) failed: {s.error}",
            s.step,
            step.cell_index,
            exc.ename,
            exc.evalue,
        )
    return StepFailedError(
        f"cell {exc.cell_index} of {pipeline.path.name} failed before any step could: {exc.ename}: {exc.evalue}",
        "",
        exc.cell_index,
        exc.ename,
        exc.evalue,
    )


def _abort(pipeline: Pipeline, store, run_id: str, exc: Exception, step_timeout: float | None):
    """Status and error when papermill stopped without a cell error: a dead kernel or a timeout."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    running = [s for s in store.get_run(run_id).step_runs if s.status == "running"]
    step = pipeline.step(running[-1].step) if running else None
    where = f"step {step.name!r} (cell {step.cell})" if step else f"a cell of {pipeline.path.name}"
    if isinstance(exc, DeadKernelError):
        status, message = "interrupted", f"the kernel died while running {where}; re-run to resume from the cache"
    elif isinstance(exc, (CellTimeoutError, TimeoutError)):
        status, message = (
            "failed",
            f"{where} timed out after {step_timeout:g} s (--step-timeout); the kernel was stopped",
        )
    else:
        status, message = "failed", f"running {pipeline.path.name} failed at {where}: {type(exc).__name__}: {exc}"
    if running:
        store.finish_step(running[-1].id, "failed" if status == "failed" else "interrupted", error=message)
    return status, StepFailedError(
        message, step.name if step else "", step.cell_index if step else None, type(exc).__name__, str(exc)
    )


def _record_skipped(pipeline: Pipeline, store, run_id: str, failure: StepFailedError | None) -> None:
    """Record ``skipped`` for every step that has no step run in this run."""
    record = store.get_run(run_id)
    done = {s.step for s in record.step_runs}
    downstream = set(pipeline.downstream(failure.step)) if failure is not None and failure.step else set()
    missing = [s for s in pipeline.steps if s.name not in done]
    if not missing:
        return
    records = []
    for step in missing:
        if step.name in downstream:
            why = f"upstream step {failure.step} failed"
        elif failure is not None and failure.step:
            why = f"not reached: the run stopped at step {failure.step}"
        else:
            why = "not reached: the run stopped early"
        records.append({"step": step.name, "status": "skipped", "why": why, "cell_index": step.cell_index})
    store.record_steps(run_id, records)


def _record_fully_cached(project, pipeline, planned, params, executor, trigger, progress):
    """Every step is a cache hit: record the run without starting a kernel."""
    store = project.metadata
    from .metadata import git_state, new_run_id

    commit, dirty = git_state(pipeline.folder)
    run_id = new_run_id()
    with store.batch(write=True):
        store.create_run(
            pipeline.name,
            notebook=pipeline.path,
            notebook_hash=pipeline.notebook_hash,
            params=params,
            executor=executor,
            trigger=trigger,
            run_id=run_id,
            git=(commit, dirty),
        )
        records = []
        for p in planned:
            inputs = {n: p.hit.inputs[n] for n in p.step.inputs if n in p.hit.inputs}
            inputs.update({path: p.hit.inputs[path] for path in p.step.reads if path in p.hit.inputs})
            records.append(
                {
                    "step": p.step.name,
                    "status": "cached",
                    "why": f"cached from run {p.hit.run_id}",
                    "cache_key": p.key,
                    "cell_index": p.step.cell_index,
                    "inputs": inputs,
                    "key_parts": p.parts,
                    "outputs": {n: p.hit.outputs[n] for n in p.step.outputs},
                    "cached_from": p.hit.id,
                }
            )
        store.record_steps(run_id, records)
        store.finish_run(run_id, "succeeded")
    if progress:  # plain lines: a bar (and importing tqdm, ~50 ms) is not worth it for a run without a kernel
        for p in planned:
            print(f"  {p.step.name}: cached (cached from run {p.hit.run_id})", file=sys.stderr)
    return store.get_run(run_id)
