"""The ``notebook`` executor: papermill runs the whole notebook in one kernel, a drop-in for papermill with tracking.

The kernel gets the run's id in its environment; the ``%%mlops step`` magic inside attaches to that run and does
each step's work (``engine.step.execute_step``). This runner reports each finished step, stores the executed notebook
as an artifact and turns papermill's errors (a cell that raised, a dead kernel, a timeout) into one line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ...core import progress
from ...exceptions import NotFoundError, StepFailedError
from ...pipeline.notebook import parse_magic_line, split_magic
from ...settings import HOME_ENV, NO_CACHE_ENV, NOTEBOOK_ENV, PLAN_ENV, RUN_ENV
from ..step import emit_post_step, record_and_tell
from .base import INTERRUPTED, Interrupted, Job, Outcome, Runner


class NotebookRunner(Runner):
    """papermill executes the notebook in one kernel; the magic records each step into the run."""

    name = "notebook"

    def execute(self, job: Job) -> Outcome:
        """Execute the notebook with papermill; return how it ended, with the executed notebook.

        Its kernel is a template process (``template.py``, ``once``) started first, which imports the setup cells'
        modules, ipykernel and what a step needs on the other core while this process imports papermill and
        records the planned hits, then becomes the kernel; ``fork_kernels = false`` starts it the usual way.
        """
        path, options = job.pipeline.path, job.options
        output = Path(tempfile.mkdtemp(prefix="mlops_nb-run-")) / path.name
        env = {
            RUN_ENV: job.run_id,
            NOTEBOOK_ENV: str(path),
            HOME_ENV: str(job.project.home),
            NO_CACHE_ENV: "1" if options.no_cache else "0",
            PLAN_ENV: "",
        }
        template = _template(job, env)
        try:
            return self._execute(job, output, env, template)
        finally:
            if template is not None:
                template.close()

    def _execute(self, job: Job, output: Path, env: dict[str, str], template) -> Outcome:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        from .forking import ForkingKernelManager
        from .kernels import kernel_config

        pipeline, store, options = job.pipeline, job.project.metadata, job.options
        path = pipeline.path
        manager = type("TemplateKernelManager", (ForkingKernelManager,), {"template": template})
        outcome = Outcome("succeeded")
        bar = progress.start(len(pipeline.steps), pipeline.name, enabled=options.progress)
        planned: dict[str, dict] = {}
        interrupted = False
        try:
            planned = record_planned(job, output.parent / "plan.json")
            if planned:
                env[PLAN_ENV] = str(output.parent / "plan.json")
            with _environment(env):
                papermill.execute_notebook(
                    _literal(path),  # papermill formats paths with the parameters: `{x}.ipynb` must stay itself
                    _literal(output),
                    parameters=job.given,
                    engine_name=_engine(),
                    progress_bar=False,
                    cwd=str(path.parent),
                    kernel_name=options.kernel_name,
                    on_cell_complete=_StepReporter(job, bar, planned),
                    execution_timeout=options.step_timeout,
                    config=kernel_config(str(output.parent)),
                    kernel_manager_class=manager,
                )
        except PapermillExecutionError as exc:
            if _cell_raised(output):  # not only the traceback of an attempt that a retry then fixed
                outcome.failure = _failure(pipeline, store, job.run_id, exc, _saved_index(output, exc.cell_index))
        except KeyboardInterrupt:  # papermill stopped the kernel; keep what it executed
            interrupted = True
        except Exception as exc:  # noqa: BLE001 - the kernel died, a cell timed out: recorded, then raised
            outcome.status, outcome.failure = _abort(pipeline, store, job.run_id, exc, options.step_timeout)
        finally:
            bar.close()
            try:
                outcome.executed_notebook = _store_executed(job, output)
            finally:
                shutil.rmtree(output.parent, ignore_errors=True)
        if interrupted:
            outcome.status, outcome.error = "interrupted", INTERRUPTED
            raise Interrupted(outcome)
        if outcome.failure is not None:
            if outcome.status == "succeeded":
                outcome.status = "failed"
            if outcome.executed_notebook is not None:
                f = outcome.failure
                where = f"{f.message}; executed notebook: {outcome.executed_notebook.uri}"
                outcome.failure = StepFailedError(where, f.step, f.cell_index, f.ename, f.evalue)
            outcome.error = outcome.failure.message
        return outcome


# what a step's kernel imports besides the setup cells' modules: ``%load_ext mlops_nb`` and a step's first
# artifact write and metadata record
_PRELOAD = ("mlops_nb.ui.magics", "duckdb", "pyarrow.parquet")


def _template(job: Job, env: dict[str, str]):
    """The template that becomes the run's kernel (None with ``fork_kernels = false`` or a kernel spec that is not
    a forkable Python)."""
    if not job.project.settings.fork_kernels:
        return None
    from ..plan import preamble
    from .kernels import start_template

    sources = preamble(job.pipeline, {})
    folder = str(job.pipeline.path.parent)
    return start_template(job.options.kernel_name, folder, sources, {**os.environ, **env}, _PRELOAD, once=True)


def _literal(path: Path) -> str:
    """``path`` as papermill reads it literally: it fills ``{name}`` in paths from the parameters."""
    return str(path).replace("{", "{{").replace("}", "}}")


def record_planned(job: Job, path: Path) -> dict[str, dict]:
    """Record the planned cache hits in one transaction before the kernel starts, and write what the kernel
    needs to skip them to ``path`` (JSON): step -> its step run, the run it is cached from, its outputs and the
    ones later cells read (the kernel loads only those). Returns that dict (empty: nothing planned)."""
    import json

    from ..plan import cached_records

    hits = [p for p in (job.planned or []) if p.hit is not None]  # the planner found none under --no-cache
    if not hits:
        return {}
    records = cached_records(hits)
    ids = record_and_tell(job.project.metadata, job.run_id, records)
    needed = job.pipeline.needed_after({p.step.name for p in hits})
    planned = {}
    for p, record, step_run_id in zip(hits, records, ids, strict=True):
        planned[p.step.name] = {
            "id": step_run_id,
            "hit": p.hit.id,
            "why": record["why"],
            "outputs": {n: ref.to_dict() for n, ref in record["outputs"].items()},
            "load": needed.get(p.step.name, []),
        }
    path.write_text(json.dumps(planned), encoding="utf-8")
    return planned


class _StepReporter:
    """papermill's ``on_cell_complete``: after a step's cell, one progress line from its record, and the
    ``post_step`` hook in this (the driver's) process (for a planned cache hit: from the plan, already told)."""

    def __init__(self, job: Job, bar, planned: dict[str, dict]):
        self.job, self.bar, self.planned = job, bar, planned

    def __call__(self, cell) -> None:
        name = _step_name(cell)
        if name is None:
            return
        if name in self.planned:
            self.bar.write(f"  {name}: cached ({self.planned[name]['why']})")
            self.bar.advance()
            return
        try:  # the step's latest record (one short read, not the whole run)
            s = self.job.project.metadata.get_step_run(f"{self.job.run_id}/{name}")
        except NotFoundError:
            s = None
        if s is not None:
            verb = {"succeeded": "ran", "cached": "cached"}.get(s.status, s.status)
            outs = ", ".join(f"{k}: {r.summary or r.kind}" for k, r in s.outputs.items())
            self.bar.write(f"  {name}: {verb} ({s.why}) {s.duration or 0:.2f}s" + (f" → {outs}" if outs else ""))
            emit_post_step(self.job.run_id, name, s.id, s.status, s.why, s.outputs, s.error)
        self.bar.advance()


def _store_executed(job: Job, output: Path):
    """Store the executed notebook papermill wrote as an artifact (None when it wrote none)."""
    if not output.exists():
        return None
    import nbformat

    return job.project.artifacts.put(nbformat.read(output, as_version=4), name=f"{job.pipeline.path.stem} (executed)")


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


_ENGINE = "mlops_nb"
_registered = False


def _engine() -> str:
    """papermill's nbclient engine with a per-cell callback and a kernel that is ready sooner, registered once."""
    from papermill.engines import NBClientEngine, papermill_engines

    global _registered
    if _registered:
        return _ENGINE

    class MlopsEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell_complete=None, **kwargs):
            if on_cell_complete is not None:
                original = nb_man.cell_complete

                def cell_complete(cell, cell_index=None, **kw):
                    original(cell, cell_index=cell_index, **kw)
                    on_cell_complete(cell)

                nb_man.cell_complete = cell_complete
            from .forking import ForkingKernelManager  # with no template: a kernel that is ready sooner

            kwargs.setdefault("kernel_manager_class", ForkingKernelManager)
            # a headless kernel needs no IPython history (a sqlite file every kernel shares, whose lock a run can
            # wait on at exit); it still shuts down gracefully, so that the notebook's atexit hooks run
            kwargs.setdefault("extra_arguments", ["--HistoryManager.enabled=False"])
            # papermill writes the whole output notebook at every cell's start and end (validated, deep-copied):
            # quadratic in the cells, 2 x 200 writes of a 200-cell notebook. Ours is a temporary file read once the
            # run is over: written once, by notebook_complete (which papermill calls however execution ended)
            nb_man.save = lambda **kw: None
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            finally:
                del nb_man.save

    papermill_engines.register(_ENGINE, MlopsEngine)
    _registered = True
    return _ENGINE


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


def _cell_raised(output: Path) -> bool:
    """Whether papermill recorded a cell that raised (a step retried to success shows an error output but did
    not raise)."""
    import json

    cells = json.loads(output.read_text(encoding="utf-8")).get("cells", [])
    return any(c.get("metadata", {}).get("papermill", {}).get("exception") for c in cells)


def _saved_index(output: Path, index: int) -> int:
    """The position in the saved notebook of cell ``index`` of papermill's executed one (which has the injected
    parameters cell, not counted: cell numbers are the saved notebook's, as JupyterLab's status bar shows)."""
    import json

    cells = json.loads(output.read_text(encoding="utf-8")).get("cells", [])
    injected = [i for i, c in enumerate(cells) if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    return index - sum(1 for i in injected if i < index)


def _failure(pipeline, store, run_id: str, exc, cell_index: int) -> StepFailedError:
    """The one-line error of a failed headless run, from the failed step's record (or the failing cell, at
    ``cell_index`` of the saved notebook)."""
    failed = [s for s in store.get_run(run_id).step_runs if s.status == "failed"]
    if failed:
        s = failed[-1]
        cell = s.cell_index if s.cell_index is not None else cell_index
        return StepFailedError(
            f"step {s.step!r} (cell {cell + 1}) failed: {s.error}", s.step, cell, exc.ename, exc.evalue
        )
    step = next((st for st in pipeline.steps if st.cell_index == cell_index), None)
    if step is not None:  # a step cell failed before its magic ran: IPython does not know %%mlops
        return StepFailedError(
            f"step {step.name!r} (cell {cell_index + 1}) of {pipeline.path.name} did not start: the %%mlops magic "
            "is not loaded; run `%load_ext mlops_nb` in a cell above the first step",
            step.name,
            cell_index,
            exc.ename,
            exc.evalue,
        )
    return StepFailedError(
        f"cell {cell_index + 1} of {pipeline.path.name} (not a step) failed: {exc.ename}: {exc.evalue}",
        "",
        cell_index,
        exc.ename,
        exc.evalue,
    )


def _abort(pipeline, store, run_id: str, exc: Exception, step_timeout: float | None):
    """Status and error when papermill stopped without a cell error: a dead kernel or a timeout."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from .kernels import missing_kernel

    if isinstance(exc, NoSuchKernel):  # before any cell ran
        message = missing_kernel(pipeline.path.name, exc.name) or f"{type(exc).__name__}: {exc}"
        return "failed", StepFailedError(message, "", None, type(exc).__name__, str(exc))
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
