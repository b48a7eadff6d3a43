"""A pool of warm kernels: started ahead of need, with the run's setup cells already executed.

Each :class:`Lane` is a thread that owns one kernel at a time: it starts the kernel, runs the preamble (setup
cells and parameters), waits for one step, runs it, and then discards the kernel and starts the next one (or,
with ``reuse``, resets the namespace and runs the preamble again). So a step's start costs a queue hand-off, not
a kernel boot, as long as kernels warm up faster than steps finish.
"""

from __future__ import annotations

import copy
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...core.clock import utcnow
from .worker import RESULT_MIME


def installed_kernels() -> list[str]:
    """The names of the Jupyter kernels installed here."""
    from jupyter_client.kernelspec import KernelSpecManager

    return sorted(KernelSpecManager().find_kernel_specs())


def require_kernel(pipeline, kernel_name: str | None, local: bool = True) -> str:
    """The kernel a headless run of ``pipeline`` starts: ``kernel_name`` (``--kernel``), else the one the notebook's
    kernelspec names; neither, or (when it starts here, ``local``) one that is not installed, is a
    :class:`~mlops_nb.exceptions.ConfigError` naming the notebook and ``--kernel`` (raised before the run is
    recorded). A remote Dask cluster's workers start their own kernels: theirs to have, not this machine's."""
    from ...exceptions import ConfigError

    if kernel_name or pipeline.kernel:
        name = kernel_name or pipeline.kernel
        problem = missing_kernel(pipeline.path.name, name) if local else None
        if problem is not None:
            raise ConfigError(problem)
        return name

    installed = ", ".join(installed_kernels()) or "none"
    raise ConfigError(
        f"{pipeline.path.name} names no Jupyter kernel (its metadata has no kernelspec); run it with --kernel NAME "
        f"(kernel_name= in Python; installed here: {installed}), or pick a kernel for it in Jupyter and save it"
    )


def missing_kernel(notebook: str, name: str) -> str | None:
    """The one-line error for a run of ``notebook`` when kernel ``name`` is not installed here, else None."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
        return None
    except NoSuchKernel:
        installed = ", ".join(installed_kernels()) or "none"
        return (
            f"{notebook} asks for Jupyter kernel {name!r}, which is not installed here (installed: {installed}); "
            "run it with --kernel NAME (kernel_name= in Python)"
        )


def code_cell(source: str):
    """A new code cell, as ``nbformat.v4.new_code_cell`` makes it but without validating it (~0.1 ms a cell, on
    every step's path): the cells made here are valid by construction."""
    from nbformat import NotebookNode
    from nbformat.corpus.words import generate_corpus_id

    return NotebookNode(
        id=generate_corpus_id(),
        cell_type="code",
        metadata=NotebookNode(),
        execution_count=None,
        source=source,
        outputs=[],
    )


def notebook(cells: list):
    """A new v4 notebook of ``cells``, as ``nbformat.v4.new_notebook`` makes it but without validating it."""
    from nbformat import NotebookNode
    from nbformat.v4 import nbformat, nbformat_minor

    return NotebookNode(nbformat=nbformat, nbformat_minor=nbformat_minor, metadata=NotebookNode(), cells=cells)


@dataclass
class Executed:
    """What happened when a lane ran one step's cells.

    Attributes:
        status: ``succeeded``, ``failed``, ``timeout`` or ``died`` (the kernel died).
        result: the worker's result display (outputs, inputs touched, metrics), when it succeeded.
        error: ``Type: message`` of a failure.
        ename: the exception's type name.
        cells: the executed preamble and step cells, with outputs (the per-step notebook).
        started_at, ended_at: UTC, around the step's own cells.
    """

    status: str
    result: dict | None = None
    error: str | None = None
    ename: str = ""
    cells: list[dict] = field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class KernelSetup:
    """How a run's step kernels are made (the same for a local pool and for each Dask worker's pool).

    Attributes:
        preamble: source of the cells every step needs first (setup cells, parameter assignments).
        cwd: the kernels' working folder (the notebook's).
        env: environment variables added for the kernels.
        kernel_name: the Jupyter kernel.
        reuse: keep a kernel after a step (``%reset -f`` and the preamble again) instead of discarding it.
        fork: fork kernels from a template that imported the preamble's modules (``template.py``), when the
            kernel spec allows it; else start each kernel from scratch.
    """

    preamble: tuple[str, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    kernel_name: str = "python3"
    reuse: bool = False
    fork: bool = True


def kernel_config(parent: str):
    """traitlets config for a kernel on local IPC sockets in a fresh private folder under ``parent``.

    IPC keeps kernels off TCP (and ipykernel's warning about unencrypted TCP off the terminal); a folder per
    kernel keeps the socket names of kernels started together apart. ``parent`` is a temporary folder that the
    caller removes when its kernels are done, so no empty socket folders pile up in the temp folder.
    """
    import tempfile

    from traitlets.config import Config

    folder = tempfile.mkdtemp(prefix="k", dir=parent)
    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "k")}})


def _first_error(cells) -> tuple[str, str] | None:
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return output.get("ename", "Error"), output.get("evalue", "")
    return None


class _Job:
    def __init__(self, cells: list[str], timeout: float | None, gate=None):
        self.cells, self.timeout, self.gate = cells, timeout, gate
        self.done = threading.Event()
        self.executed: Executed | None = None


class Lane(threading.Thread):
    """One warm kernel at a time, in its own thread (nbclient's clients are not shared across threads)."""

    def __init__(self, pool: KernelPool, number: int):
        super().__init__(name=f"mlops-nb-kernel-{number}", daemon=True)
        self.pool = pool
        self.inbox: queue.Queue[_Job | None] = queue.Queue()
        self.client = None
        self.job: _Job | None = None  # taken from the inbox and not finished yet

    def run(self) -> None:
        failures = 0
        while not self.pool.closing:
            try:
                self.job = self._one_kernel(self.job)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - a kernel that would not start or broke: try another
                failures += 1
                if failures < 3 and not self.pool.closing:
                    continue  # a kernel killed while it warmed up, say; the job (if any) goes to the next one
                self.pool.startup_error = f"{type(exc).__name__}: {exc}"
                if self.job is not None and not self.job.done.is_set():
                    error = f"a kernel could not start: {exc}"
                    self.job.executed = Executed("failed", error=error, ename="KernelError")
                    self.job.done.set()
                self.pool.ready.put(self)  # wake a waiting caller, who sees the error
                return

    def _one_kernel(self, job: _Job | None = None) -> _Job | None:
        """Start a kernel, run the preamble, then run ``job`` or the next job from the inbox (and more with
        ``reuse``). Returns a job taken but not run because the warm kernel had died meanwhile."""
        from jupyter_core.utils import run_sync
        from nbclient import NotebookClient

        pool = self.pool
        preamble = notebook([code_cell(src) for src in pool.setup.preamble])
        client = NotebookClient(
            preamble,
            km=pool.kernel_manager(),
            resources={"metadata": {"path": pool.setup.cwd}},
            timeout=None,
            allow_errors=True,
            # a step kernel needs no IPython history: it would write a sqlite file that every kernel shares
            extra_arguments=["--HistoryManager.enabled=False"],
        )
        self.client = client
        try:
            # the kernel's own log (not the cells' output) goes nowhere: its shutdown noise is not the user's
            with client.setup_kernel(env={**os.environ, **pool.setup.env}, stderr=subprocess.DEVNULL, cleanup_kc=True):
                while True:
                    for index, cell in enumerate(preamble.cells):
                        cell.outputs = []
                        client.execute_cell(cell, index)
                    failed = _first_error(preamble.cells)
                    if job is None and not pool.closing:
                        pool.ready.put(self)
                        job = self.job = self.inbox.get()
                    if job is None:  # the pool closes: a kernel that ran no step need not shut down gracefully
                        client.shutdown_kernel = "immediate"
                        return None
                    if not run_sync(client.km.is_alive)():  # died while idle (killed, out of memory): a new one
                        return job
                    executed = self._run_job(client, preamble, job, failed)
                    job.executed = executed
                    job.done.set()
                    job = self.job = None
                    if executed.status in ("timeout", "died") or not pool.setup.reuse:
                        return None  # discard this kernel; the loop starts a fresh one
                    self._reset(client, preamble)
        finally:
            self.client = None
            try:
                if client.km is not None and client.km.has_kernel:
                    run_sync(client.km._async_shutdown_kernel)(now=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    @staticmethod
    def _run_job(client, preamble, job: _Job, failed: tuple[str, str] | None) -> Executed:
        """Run one step's cells on the warm kernel after its preamble; the body waits for ``job.gate``."""
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        step_nb = notebook([copy.deepcopy(c) for c in preamble.cells] + [code_cell(src) for src in job.cells])
        executed = Executed("succeeded", started_at=utcnow())
        if failed:
            executed.status, executed.ename = "failed", failed[0]
            executed.error = f"a setup cell failed: {failed[0]}: {failed[1]}"
        else:
            client.nb, client.allow_errors, client.timeout = step_nb, False, job.timeout
            try:
                for index in range(len(preamble.cells), len(step_nb.cells)):
                    if index == len(preamble.cells) + 1 and job.gate is not None:
                        try:  # the step's body runs only once its start is recorded
                            job.gate.result()
                        except Exception as exc:  # noqa: BLE001 - reported as the step's failure
                            executed.status, executed.ename = "failed", type(exc).__name__
                            executed.error = f"its start could not be recorded: {exc}"
                            break
                    client.execute_cell(step_nb.cells[index], index)
            except CellTimeoutError:
                executed.status, executed.ename = "timeout", "TimeoutError"
                executed.error = f"timed out after {job.timeout:g} s"
            except DeadKernelError:
                executed.status, executed.ename = "died", "DeadKernelError"
                executed.error = "the kernel died (out of memory, os._exit or killed)"
            except CellExecutionError as exc:
                executed.status, executed.ename = "failed", exc.ename
                executed.error = f"{exc.ename}: {exc.evalue}"
                on_error = getattr(job.cells, "on_error", None)
                if on_error:  # what the body did before failing, reported by the kernel that still holds it
                    step_nb.cells.append(code_cell(on_error))
                    client.allow_errors = True
                    try:
                        client.execute_cell(step_nb.cells[-1], len(step_nb.cells) - 1)
                    except Exception:  # noqa: BLE001 - the step's own error is what gets reported
                        pass
            finally:
                client.nb, client.allow_errors, client.timeout = preamble, True, None
        executed.ended_at = utcnow()
        for output in step_nb.cells[-1].get("outputs", []):
            if RESULT_MIME in output.get("data", {}):
                executed.result = output["data"][RESULT_MIME]
        executed.cells = [dict(c) for c in step_nb.cells]
        return executed

    @staticmethod
    def _reset(client, preamble) -> None:
        """Empty the kernel's namespace (``--reuse-kernels``); the loop then runs the preamble again."""

        reset = notebook([code_cell("%reset -f")])
        client.nb = reset  # nbclient writes the executed cell into client.nb
        client.execute_cell(reset.cells[0], 0)
        client.nb = preamble


def start_template(
    kernel_name: str,
    cwd: str,
    sources: list[str],
    env: dict[str, str],
    extra: tuple[str, ...] = (),
    once: bool = False,
):
    """A :class:`~.template.Template` that forks kernels of ``kernel_name`` in ``cwd`` (``once``: becomes one),
    having imported what the cells ``sources`` import and the modules ``extra``; None when the kernel spec is not a
    forkable Python (or unknown: the kernel manager then reports it, with jupyter_client's message). It starts in
    the background."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    from .forking import forkable
    from .template import Template, imported_modules

    try:
        argv = list(KernelSpecManager().get_kernel_spec(kernel_name).argv)
    except NoSuchKernel:
        return None
    if not forkable(argv):
        return None
    if argv[0] in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}:
        argv[0] = sys.executable  # as jupyter_client's format_kernel_cmd does
    return Template(argv[0], cwd, [*imported_modules(sources, cwd), *extra], env, once=once)


class KernelPool:
    """Warm kernels for one run: ``size`` lanes, each keeping one kernel with the preamble executed.

    Args:
        setup: how the kernels are made.
        size: number of lanes (warm kernels).
    """

    def __init__(self, setup: KernelSetup, size: int):
        import tempfile

        self.setup = setup
        self.sockets = tempfile.mkdtemp(prefix="mlops-nb-kernels-")  # the kernels' IPC sockets; removed on close
        self.template = self._template() if setup.fork else None
        self.ready: queue.Queue[Lane] = queue.Queue()
        self.closing = False
        self.startup_error: str | None = None
        self.lanes = [Lane(self, i) for i in range(max(1, size))]
        for lane in self.lanes:
            lane.start()

    def _template(self):
        """A template process for this pool's kernels, or None when the kernel spec is not a forkable Python."""
        setup = self.setup
        return start_template(setup.kernel_name, setup.cwd, setup.preamble, {**os.environ, **setup.env})

    def kernel_manager(self):
        """A kernel manager for one kernel: forked from the template when there is one."""
        from .forking import ForkingKernelManager

        km = ForkingKernelManager(kernel_name=self.setup.kernel_name, config=kernel_config(self.sockets))
        km.template = self.template
        return km

    def run(self, cells: list[str], timeout: float | None = None, gate=None) -> Executed:
        """Run one step's cells on the next warm kernel; blocks until it is done.

        ``gate`` (a future) is waited for after the first cell (the input loading), before the rest run; if it
        failed, the step is reported failed without running its body.
        """
        lane = self.ready.get()
        if self.startup_error:
            self.ready.put(lane)
            return Executed("failed", error=f"a kernel could not start: {self.startup_error}", ename="KernelError")
        job = _Job(cells, timeout, gate)
        lane.inbox.put(job)
        job.done.wait()
        return job.executed

    def close(self, wait: float = 10.0) -> None:
        """Stop every lane and shut its kernel down."""
        self.closing = True
        for lane in self.lanes:
            lane.inbox.put(None)
        # a lane waiting for a step stops at once; one still starting its kernel or running the preamble gets a
        # moment to finish (stopping a kernel under nbclient costs its one-second dead-kernel poll)
        deadline = time.monotonic() + min(wait, 0.5)
        for lane in self.lanes:
            lane.join(max(0.0, deadline - time.monotonic()))
        if self.template is not None:  # it kills the kernels it forked that still run
            self.template.close()
        deadline = time.monotonic() + wait
        for lane in self.lanes:
            lane.join(max(0.0, deadline - time.monotonic()))
        for lane in self.lanes:  # lanes still busy (a step running): stop their kernels now
            client = lane.client
            if client is not None and client.km is not None:
                try:  # kill the process directly: the lane's thread owns the client's event loop
                    client.km.provisioner.process.kill()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
        shutil.rmtree(self.sockets, ignore_errors=True)

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
