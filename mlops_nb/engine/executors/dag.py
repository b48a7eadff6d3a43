"""The ``dag`` and ``dask`` executors: each step that must run executes in a kernel of its own, independent steps
in parallel, driven from one process that alone writes the metadata store.

The driver walks the DAG: a step whose upstream steps are done is *decided* (cache key, hit or why it runs,
``runtime.decide`` as in every mode); a hit is recorded as ``cached`` with no kernel; a miss is recorded as
``running`` and handed to a runner — a :class:`~mlops_nb.executors.kernels.KernelPool` of warm local kernels, or a
Dask cluster whose workers keep such pools — which runs the per-step notebook (load inputs, the body, store
outputs; ``worker.py``) and returns what happened. A failed step marks its downstream ``skipped`` while
independent branches finish.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..artifacts import ArtifactRef
from ..exceptions import MlopsError
from ..pipeline import Pipeline, Step
from ..runtime import Decision, decide, record_hit, record_start, retry_delay
from ..worker import step_cells


def ancestors(pipeline: Pipeline, names: set[str]) -> set[str]:
    """Every step that ``names`` depend on, directly or not."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        step = pipeline.step(todo.pop())
        for up in step.upstream.values():
            if up not in found:
                found.add(up)
                todo.append(up)
    return found


def select_steps(pipeline: Pipeline, from_: str | None = None, to: str | None = None, only=None) -> set[str]:
    """The steps a partial run runs: ``--only`` these, ``--from`` a step and everything after it, ``--to`` a step
    and everything it needs (both: the steps between). Unknown names raise with the list of steps."""
    names = [s.name for s in pipeline.steps]
    for name in [from_, to, *(only or [])]:
        if name is not None and name not in names:
            raise MlopsError(f"{pipeline.path.name} has no step {name!r}; its steps: {', '.join(names)}")
    selected = set(names)
    if only:
        selected = set(only)
    if from_:
        selected &= {from_, *pipeline.downstream(from_)}
    if to:
        selected &= {to} | ancestors(pipeline, {to})
    return selected


@dataclass
class Prepared:
    """What a partial run takes from earlier runs for the steps it does not run.

    Attributes:
        selected: the steps to run.
        outputs: step -> its outputs, for the unselected steps the selected ones need.
        records: ``cached`` step runs to record for those steps.
    """

    selected: set[str]
    outputs: dict[str, dict[str, ArtifactRef]] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)


def prepare(project, pipeline: Pipeline, values: dict, selected: set[str]) -> Prepared:
    """Find, before any kernel starts, the outputs of the unselected steps that the selected steps need: a cache
    hit if the planner finds one, else the step's latest successful run. Raises with one line naming the missing
    step and how to produce it."""
    from ..headless import plan

    prepared = Prepared(selected)
    needed = ancestors(pipeline, selected) - selected
    if not needed:
        return prepared
    planned = {p.step.name: p for p in plan(project, pipeline, values)}
    store = project.metadata
    for step in pipeline.steps:
        if step.name not in needed:
            continue
        hit = planned[step.name].hit
        why = f"not selected: cached from run {hit.run_id}" if hit else None
        if hit is None:
            hit = store.latest_succeeded(pipeline.name, step.name)
            why = f"not selected: outputs of its latest run {hit.run_id}" if hit else None
        if hit is None or not all(n in hit.outputs for n in step.outputs):
            consumer = next(
                s.name for s in pipeline.steps if s.name in selected and step.name in (ancestors(pipeline, {s.name}))
            )
            raise MlopsError(
                f"step {consumer!r} needs the outputs of step {step.name!r}, which has never run; produce them first: "
                f"mlops-nb run {pipeline.path.name} --to {step.name}"
            )
        prepared.outputs[step.name] = {n: hit.outputs[n] for n in step.outputs}
        prepared.records.append(
            {
                "step": step.name,
                "status": "cached",
                "why": why,
                "cache_key": hit.cache_key,
                "cell_index": step.cell_index,
                "inputs": {n: r for n, r in hit.inputs.items()},
                "outputs": prepared.outputs[step.name],
                "cached_from": hit.id,
            }
        )
    return prepared


@dataclass
class _Running:
    step: Step
    step_run_id: Future  # of the step run's id, once the writer recorded its start
    attempt: int
    decision: Decision


class _Writer:
    """The driver's store writes on one thread of their own, each still its own short transaction: the driver hands
    the next step to a kernel while the previous one's records are written. A step's start (``urgent``) goes before
    writes already queued, since its kernel waits for it; otherwise writes keep their order. A write that fails is
    raised by the next :meth:`check` or :meth:`drain`."""

    def __init__(self):
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._futures: list[Future] = []
        self._thread = threading.Thread(target=self._loop, name="mlops-nb-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            _, _, future, function, args, kwargs = self._queue.get()
            if future is None:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                    future.set_exception(exc)

    def submit(self, function, *args, urgent: bool = False, **kwargs) -> Future:
        """Queue one write; its future holds the result."""
        future: Future = Future()
        self._queue.put((0 if urgent else 1, next(self._order), future, function, args, kwargs))
        self._futures.append(future)
        return future

    def check(self) -> None:
        """Raise the error of a write that failed."""
        for future in self._futures:
            if future.done() and future.exception() is not None:
                raise future.exception()
        self._futures = [f for f in self._futures if not f.done()]

    def drain(self) -> None:
        """Wait for every queued write; raise the first error."""
        for future in self._futures:
            future.exception()
        self.check()

    def close(self) -> None:
        """Finish the queued writes and stop the thread."""
        self._queue.put((2, next(self._order), None, None, None, None))
        self._thread.join()


def _run_step(runner, gate: Future, delay: float, cells: list[str], timeout: float | None):
    """Run one step's cells after ``delay`` seconds (a retry's backoff); its body never runs before ``gate`` (its
    records are committed)."""
    time.sleep(delay)
    return runner.run(cells, timeout, gate=gate)


class GraphRun:
    """One run of the DAG by a runner (local kernel pool or Dask).

    Args:
        project: the project.
        pipeline: the notebook's pipeline.
        values: resolved parameter values.
        run_id: the run (already created).
        runner: has ``run(cells, timeout) -> Executed`` and ``close()``.
        jobs: steps running at once.
        prepared: the selection and what unselected steps contribute.
        retries: retries of every failing step (a step's own ``--retries`` may ask for more).
        no_cache: run every selected step.
        step_timeout: seconds a step may run before its kernel is stopped.
        progress: a tqdm bar with one line per finished step.
    """

    def __init__(
        self,
        project,
        pipeline: Pipeline,
        values: dict,
        run_id: str,
        runner,
        *,
        jobs: int,
        prepared: Prepared,
        retries: int = 0,
        no_cache: bool = False,
        step_timeout: float | None = None,
        progress: bool = True,
    ):
        self.project, self.pipeline, self.values, self.run_id = project, pipeline, values, run_id
        self.runner, self.jobs, self.prepared = runner, max(1, jobs), prepared
        self.retries, self.no_cache, self.step_timeout, self.progress = retries, no_cache, step_timeout, progress
        self.store, self.artifacts = project.metadata, project.artifacts
        self.outputs: dict[str, dict[str, ArtifactRef]] = dict(prepared.outputs)
        self.done: set[str] = set(prepared.outputs)
        self.failed: dict[str, str] = {}
        self.skipped: set[str] = set()
        self.running: dict[Any, _Running] = {}
        self.bar = None
        self.writer = _Writer()
        self._ends: list[tuple] = []  # end records of finished steps, queued after the steps they unblock start
        self._launches: list[tuple] = []  # started steps (start record queued) not yet handed to the runner

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
            self.bar.update(1)

    def execute(self) -> tuple[str, str | None]:
        """Run the selected steps; return the run's status and error (None when it succeeded)."""
        if self.prepared.records:
            self.writer.submit(self.store.record_steps, self.run_id, self.prepared.records)
        pending = [s for s in self.pipeline.steps if s.name in self.prepared.selected]
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(pending), desc=self.pipeline.name, unit="step", leave=False, file=sys.stderr)
        threads = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="mlops-nb-step")
        try:
            while pending or self.running or self._launches:
                before = len(pending)
                for step in list(pending):
                    ups = set(step.upstream.values())
                    blocked = ups & (set(self.failed) | self.skipped)
                    if blocked:
                        pending.remove(step)
                        self._skip(step, f"upstream step {sorted(blocked)[0]} failed")
                    elif ups <= self.done:
                        pending.remove(step)
                        self._start(step, threads)
                self._dispatch(threads)
                if not self.running:
                    if len(pending) == before:  # nothing can start and nothing runs: a bug, not a hang
                        raise MlopsError(f"steps {[s.name for s in pending]} cannot start; please report this")
                    continue
                self.writer.check()
                finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                for future in finished:
                    self._finish(self.running.pop(future), future.result(), threads)
            self._flush_ends()
            self.writer.drain()
        except BaseException:
            self.runner.close()
            self._flush_ends()
            for item in [*self.running.values(), *(launch[0] for launch in self._launches)]:
                self.writer.submit(self._interrupted, item)
            threads.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self.writer.close()
            if self.bar is not None:
                self.bar.close()
        threads.shutdown(wait=True)
        if self.failed:
            name = next(s.name for s in self.pipeline.steps if s.name in self.failed)
            return "failed", self.failed[name]
        return "succeeded", None

    def _flush_ends(self) -> None:
        for args, kwargs in self._ends:
            self.writer.submit(self._record_end, *args, **kwargs)
        self._ends.clear()

    def _dispatch(self, threads) -> None:
        """Queue the end records, then hand the started steps to the runner. A step's body waits for a barrier
        queued after them: it runs only once its own start and every record before it (the end of the step that
        produced its inputs) are committed, so a killed driver leaves nothing that ran unrecorded."""
        self._flush_ends()
        for item, delay, cells in self._launches:
            barrier = self.writer.submit(item.step_run_id.result)  # after the (urgent) start and the ends
            future = threads.submit(_run_step, self.runner, barrier, delay, cells, self.step_timeout)
            self.running[future] = item
        self._launches.clear()

    def _interrupted(self, item: _Running) -> None:
        if item.step_run_id.exception() is None:
            self.store.finish_step(item.step_run_id.result(), "interrupted", error="the run was interrupted")

    def _skip(self, step: Step, why: str) -> None:
        self.skipped.add(step.name)
        self.writer.submit(
            self.store.record_step, self.run_id, step.name, "skipped", why=why, cell_index=step.cell_index
        )
        self._say(f"  {step.name}: skipped ({why})")

    def _start(self, step: Step, threads) -> None:
        inputs = {n: self.outputs[step.upstream[n]][n] for n in step.inputs}
        decision = decide(
            self.store, self.artifacts, self.pipeline, step, inputs, self.values, self.no_cache, self.project
        )
        if decision.hit is not None:
            self.writer.submit(record_hit, self.store, self.run_id, step, decision)
            self.outputs[step.name] = {n: decision.hit.outputs[n] for n in step.outputs}
            self.done.add(step.name)
            self._say(f"  {step.name}: cached ({decision.why})")
            return
        self._submit(step, decision, 1, threads, delay=0.0)

    def _submit(self, step: Step, decision: Decision, attempt: int, threads, delay: float) -> None:
        spec = {
            "step": step.name,
            "cell_index": step.cell_index,
            "outputs": step.outputs,
            "inputs": {n: decision.inputs[n].to_dict() for n in step.inputs},
            "artifact_root": self.artifacts.uri_root,
        }
        start = self.writer.submit(
            lambda: record_start(self.store, self.run_id, step, decision, attempt, self._retries(step))[0],
            urgent=True,
        )
        self._launches.append((_Running(step, start, attempt, decision), delay, step_cells(spec, step.source)))

    def _retries(self, step: Step) -> int:
        return max(step.retries, self.retries)

    def _record_end(self, item: _Running, executed, status: str, **fields) -> None:
        """In the writer: store the executed per-step notebook, then record how the step run ended."""
        import nbformat

        notebook = None
        if executed.cells:
            nb = nbformat.v4.new_notebook(cells=[nbformat.from_dict(c) for c in executed.cells])
            notebook = self.artifacts.put(nb, name=f"{item.step.name} (executed)")
        self.store.finish_step(
            item.step_run_id.result(),
            status,
            executed_notebook=notebook,
            started_at=executed.started_at,
            ended_at=executed.ended_at,
            **fields,
        )

    def _finish(self, item: _Running, executed, threads) -> None:
        step = item.step
        if executed.status == "succeeded" and executed.result is not None:
            result = executed.result
            outputs = {k: ArtifactRef.from_dict(v) for k, v in result["outputs"].items()}
            inputs = {k: ArtifactRef.from_dict(v) for k, v in result["inputs"].items()}
            self._ends.append(
                (
                    (item, executed, "succeeded"),
                    {"outputs": outputs, "inputs": inputs, "metrics": result.get("metrics")},
                )
            )
            self.outputs[step.name] = {n: outputs[n] for n in step.outputs}
            self.done.add(step.name)
            duration = (executed.ended_at - executed.started_at).total_seconds()
            self._say(f"  {step.name}: ran ({item.decision.why if item.attempt == 1 else 'retry'}) {duration:.2f}s")
            return
        if executed.status == "timeout":
            error = (
                f"step {step.name!r} timed out after {self.step_timeout:g} s (--step-timeout); its kernel was stopped"
            )
        elif executed.status == "died":
            error = f"step {step.name!r}: " + (executed.error or "the kernel died (out of memory or os._exit)")
        else:
            error = executed.error or "the step did not report a result"
        self._ends.append(((item, executed, "failed"), {"error": error}))
        if item.attempt <= self._retries(step):
            self._say(f"  {step.name}: failed ({error}); retrying")
            if self.bar is not None:
                self.bar.update(-1)
            self._submit(step, item.decision, item.attempt + 1, threads, delay=retry_delay(item.attempt))
            return
        self.failed[step.name] = f"step {step.name!r} (cell {step.cell}) failed: {error}"
        self._say(f"  {step.name}: failed ({error})")


class LocalRunner:
    """Runs steps on a pool of warm local kernels (created on first use, so a fully cached run starts none).

    Args:
        kernels: how the kernels are made (:class:`~mlops_nb.executors.kernels.KernelSetup`).
        jobs: steps at once; the pool keeps a spare warm kernel per job unless kernels are reused.
    """

    def __init__(self, kernels, jobs: int):
        self.kernels, self.jobs = kernels, jobs
        self._pool = None

    def start(self) -> None:
        """Start warming kernels now (the driver calls it when the plan says some step must run)."""
        from .kernels import KernelPool

        if self._pool is None:
            # a spare warm kernel per job: a fresh one warms up while the next step already runs on the spare
            self._pool = KernelPool(self.kernels, self.jobs if self.kernels.reuse else 2 * self.jobs)

    def run(self, cells: list[str], timeout: float | None, gate: Future | None = None):
        """Run one step's cells on a warm kernel; with ``gate``, the cells after the first (the input loading)
        wait for it."""
        self.start()
        return self._pool.run(cells, timeout, gate)

    def close(self) -> None:
        """Stop every kernel."""
        if self._pool is not None:
            self._pool.close()
