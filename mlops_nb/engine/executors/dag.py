"""The ``dag`` and ``dask`` executors: each step that must run executes in a kernel of its own, independent steps
in parallel, driven from one process that alone writes the metadata store.

The driver walks the DAG: a step whose upstream steps are done is *decided* (cache key, hit or why it runs,
``engine.cache.decide`` as in every mode); a hit is recorded as ``cached`` with no kernel; a miss is recorded as
``running`` and handed to a pool — a :class:`~mlops_nb.engine.executors.kernels.KernelPool` of warm local kernels,
or a Dask cluster whose workers keep such pools — which runs the per-step notebook (load inputs, the body, store
outputs; ``worker.py``) and returns what happened. A failed step marks its downstream ``skipped`` while
independent branches finish.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from abc import abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ...core import progress
from ...core.records import ArtifactRef
from ...exceptions import ConfigError, MlopsError, StepFailedError
from ...pipeline.notebook import Step
from ...settings import HOME_ENV
from ..cache import Decision, decide, keyed
from ..plan import preamble
from ..step import attempt_why, emit_post_step, record_and_tell, record_hit, record_start, retry_delay
from .base import Job, Outcome, Runner
from .worker import step_cells


@dataclass
class _Running:
    step: Step
    step_run_id: Future  # of the step run's id, once the writer recorded its start
    attempt: int
    decision: Decision


class _Writer:
    """The driver's store writes on one thread of their own, in order, each a short transaction: the driver hands
    the next step to a kernel while the previous one's records are written. A write that fails is raised by the
    next :meth:`check` or :meth:`drain`."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._futures: list[Future] = []
        self._thread = threading.Thread(target=self._loop, name="mlops-nb-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            future, function, args, kwargs = self._queue.get()
            if future is None:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                    future.set_exception(exc)

    def submit(self, function, *args, **kwargs) -> Future:
        """Queue one write; its future holds the result."""
        future: Future = Future()
        self._queue.put((future, function, args, kwargs))
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
        self._queue.put((None, None, None, None))
        self._thread.join()


def _run_step(runner, gate: Future, delay: float, cells: list[str], timeout: float | None):
    """Run one step's cells after ``delay`` seconds (a retry's backoff); its body never runs before ``gate`` (its
    records are committed)."""
    time.sleep(delay)
    return runner.run(cells, timeout, gate=gate)


class GraphRun:
    """One run of the DAG on a pool of step kernels (local warm kernels, or a Dask cluster's).

    Args:
        job: the run (its project, pipeline, parameter values, options and selection).
        pool: has ``run(cells, timeout, gate) -> Executed`` and ``close()``.
        jobs: steps running at once.
    """

    def __init__(self, job: Job, pool, jobs: int):
        options = job.options
        self.project, self.pipeline, self.values, self.run_id = job.project, job.pipeline, job.values, job.run_id
        self.runner, self.jobs, self.prepared = pool, max(1, jobs), job.prepared
        self.retries, self.no_cache, self.step_timeout = options.retries, options.no_cache, options.step_timeout
        self.progress = options.progress
        self.store, self.artifacts = job.project.metadata, job.project.artifacts
        self.outputs: dict[str, dict[str, ArtifactRef]] = dict(self.prepared.outputs)
        # step -> the step run that produced its outputs (a Future while its start record is queued)
        self.producers: dict[str, Any] = {r["step"]: r["cached_from"] for r in self.prepared.records}
        self.done: set[str] = set(self.prepared.outputs)
        self.failed: dict[str, str] = {}
        self.skipped: set[str] = set()
        self.running: dict[Any, _Running] = {}
        self.bar: progress.Progress = progress.Silent(0, "")  # until execute() starts the real one
        self.writer = _Writer()
        # records not yet handed to the writer: written together, in one transaction, by the next _commit
        self._ends: list[tuple] = []  # end records of finished steps
        self._hits: list[tuple] = []  # cache hits (step, decision)
        self._launches: list[tuple] = []  # steps to start (their start record) and hand to the runner
        self._told: list[tuple] | None = None  # post_step events held until the commit being written is done

    def _say(self, text: str) -> None:
        self.bar.write(text)
        self.bar.advance()

    def execute(self) -> tuple[str, str | None]:
        """Run the selected steps; return the run's status and error (None when it succeeded)."""
        if self.prepared.records:
            self.writer.submit(self._record_unselected)
        pending = [s for s in self.pipeline.steps if s.name in self.prepared.selected]
        self.bar = progress.start(len(pending), self.pipeline.name, enabled=self.progress)
        threads = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="mlops-nb-step")
        try:
            with self.store.held():  # no user code runs here: the driver's many small reads and writes share attaches
                self._loop(pending, threads)
        except BaseException:
            self.runner.close()
            for item, _, _ in self._launches:  # never started: nothing of theirs to record
                item.step_run_id.set_exception(MlopsError("the run stopped before this step started"))
            self._launches.clear()
            self._flush_ends()
            for item in self.running.values():
                self.writer.submit(self._interrupted, item)
            threads.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self.writer.close()
            self.bar.close()
        threads.shutdown(wait=True)
        if self.failed:
            name = next(s.name for s in self.pipeline.steps if s.name in self.failed)
            return "failed", self.failed[name]
        return "succeeded", None

    def _loop(self, pending: list[Step], threads) -> None:
        """Start each step whose upstream steps are done, until none is left; wait for the writes."""
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

    def _flush_ends(self) -> None:
        """Hand the end records and cache hits gathered so far to the writer."""
        if self._ends or self._hits:
            self.writer.submit(self._commit, self._ends, self._hits, [])
            self._ends, self._hits = [], []

    def _dispatch(self, threads) -> None:
        """Hand the records gathered so far (the ends of finished steps, cache hits, the starts of the steps that
        can start now) to the writer as one transaction, then the started steps to the runner. A step's body
        waits for that transaction: it runs only once its own start and every record before it (the end of the
        step that produced its inputs) are committed, so a killed driver leaves nothing that ran unrecorded."""
        launches = self._launches
        if not launches:
            self._flush_ends()
            return
        self.writer.submit(self._commit, self._ends, self._hits, launches)
        self._ends, self._hits, self._launches = [], [], []
        for item, delay, cells in launches:
            future = threads.submit(_run_step, self.runner, item.step_run_id, delay, cells, self.step_timeout)
            self.running[future] = item

    def _commit(self, ends: list[tuple], hits: list[tuple], launches: list[tuple]) -> None:
        """In the writer, one transaction: the ends, the cache hits, then the starts (whose futures, the gates of
        their bodies, are set once it is committed); the ``post_step`` hooks are told after the commit. An end whose
        start was never recorded is dropped. If the transaction fails, each record is written on its own, so one
        bad record loses no other."""
        ends = [(args, kwargs) for args, kwargs in ends if args[0].step_run_id.exception() is None]
        self._told = []  # post_step events of this commit, told once it is committed
        errors: list[Exception] = []
        started: dict[int, str] = {}  # launch index -> its step run, once committed
        try:
            try:
                with self.store.batch(write=True):
                    for args, kwargs in ends:
                        self._record_end(*args, **kwargs)
                    for step, decision in hits:
                        self._record_hit(step, decision)
                    ids = [self._record_start(item) for item, _, _ in launches]
                started = dict(enumerate(ids))
            except Exception:  # noqa: BLE001 - written one by one below; what fails again is raised
                self._told = []
                started, errors = self._one_by_one(ends, hits, launches)
        finally:
            told, self._told = self._told, None
            for event in told or []:
                emit_post_step(*event)
            for i, (item, _, _) in enumerate(launches):  # the gates of their bodies: open on a committed start
                if i in started:
                    item.step_run_id.set_result(started[i])
                else:
                    item.step_run_id.set_exception(errors[-1] if errors else MlopsError("its start was not recorded"))
        if errors:
            raise errors[0]

    def _one_by_one(
        self, ends: list[tuple], hits: list[tuple], launches: list[tuple]
    ) -> tuple[dict[int, str], list[Exception]]:
        """The records of a failed transaction, each in a transaction of its own: the starts recorded (launch
        index -> step run) and the errors of the records that failed again."""
        errors: list[Exception] = []
        started: dict[int, str] = {}
        writes = [
            *((lambda a=a: self._record_end(*a[0], **a[1])) for a in ends),
            *((lambda h=h: self._record_hit(*h)) for h in hits),
            *(
                (lambda i=i, item=item: started.__setitem__(i, self._record_start(item)))
                for i, (item, _, _) in enumerate(launches)
            ),
        ]
        for write in writes:
            try:
                write()
            except Exception as exc:  # noqa: BLE001 - raised after the others are written
                errors.append(exc)
        return started, errors

    def _record_start(self, item: _Running) -> str:
        retries = self._retries(item.step)
        sources = self._sources(item.step)
        return record_start(self.store, self.run_id, item.step, item.decision, item.attempt, retries, sources)[0]

    def _tell(self, *event) -> None:
        """``emit_post_step(*event)`` now, or after the commit being written (see :meth:`_commit`)."""
        if self._told is not None:
            self._told.append(event)
        else:
            emit_post_step(*event)

    def _interrupted(self, item: _Running) -> None:
        if item.step_run_id.exception() is None:
            self.store.finish_step(item.step_run_id.result(), "interrupted", error="the run was interrupted")

    def _skip(self, step: Step, why: str) -> None:
        self.skipped.add(step.name)
        self.writer.submit(self._record_skip, step, why)
        self._say(f"  {step.name}: skipped ({why})")

    def _record_unselected(self) -> None:
        record_and_tell(self.store, self.run_id, self.prepared.records)

    def _record_skip(self, step: Step, why: str) -> None:
        step_run_id = self.store.record_step(self.run_id, step.name, "skipped", why=why, cell_index=step.cell_index)
        emit_post_step(self.run_id, step.name, step_run_id, "skipped", why, {}, None)

    def _sources(self, step: Step) -> dict[str, str]:
        """Input -> the step run that produced it; in the writer, where every producer's id is known."""
        found = {n: self.producers.get(step.upstream[n]) for n in step.inputs}
        return {n: p.result() if isinstance(p, Future) else p for n, p in found.items() if p is not None}

    def _record_hit(self, step: Step, decision: Decision) -> None:
        step_run_id, outputs = record_hit(self.store, self.run_id, step, decision, self._sources(step))
        self._tell(self.run_id, step.name, step_run_id, "cached", decision.why, outputs, None)

    def _start(self, step: Step, threads) -> None:
        inputs = {n: self.outputs[step.upstream[n]][n] for n in step.inputs}
        key = keyed(self.project, self.pipeline, step, inputs, self.values)  # hashes --reads files: no store open
        with self.store.batch():  # the cache's reads on one connection
            decision = decide(self.project, self.pipeline, step, inputs, self.values, self.no_cache, key)
        if decision.hit is not None:
            self._hits.append((step, decision))
            self.outputs[step.name] = {n: decision.hit.outputs[n] for n in step.outputs}
            self.producers[step.name] = decision.hit.id
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
            "run_id": self.run_id,
            "sources": self._sources(step),
        }
        if "register_model" in step.source:  # what the registry tags a version with, read here: kernels read no store
            spec["run"] = self.store.step_context(self.run_id, dict(decision.inputs), spec["sources"])
        start: Future = Future()  # the step run's id, set once its start is committed (see _commit)
        self._launches.append((_Running(step, start, attempt, decision), delay, step_cells(spec, step.source)))

    def _sources(self, step: Step) -> dict[str, str]:
        """Input name -> the step run that produced it (a finished step's start is committed: its id is known)."""
        found = {}
        for name in step.inputs:
            producer = self.producers.get(step.upstream.get(name))
            if isinstance(producer, Future):
                producer = producer.result() if producer.done() and producer.exception() is None else None
            if producer is not None:
                found[name] = producer
        return found

    def _retries(self, step: Step) -> int:
        return max(step.retries, self.retries)

    def _record_end(self, item: _Running, executed, status: str, **fields) -> None:
        """In the writer: store the executed per-step notebook, then record how the step run ended."""
        import nbformat

        from .kernels import notebook as new_notebook

        notebook = None
        if executed.cells:
            nb = new_notebook([nbformat.from_dict(c) for c in executed.cells])
            notebook = self.artifacts.put(nb, name=f"{item.step.name} (executed)")
        step_run_id = item.step_run_id.result()
        self.store.finish_step(
            step_run_id,
            status,
            executed_notebook=notebook,
            started_at=executed.started_at,
            ended_at=executed.ended_at,
            **fields,
        )
        if status == "succeeded" or item.attempt > self._retries(item.step):  # the step's last attempt
            why = attempt_why(item.decision, item.attempt, self._retries(item.step))
            self._tell(
                self.run_id, item.step.name, step_run_id, status, why, fields.get("outputs"), fields.get("error")
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
                    {
                        "outputs": outputs,
                        "inputs": inputs,
                        "metrics": result.get("metrics"),
                        "model_events": result.get("model_events"),
                    },
                )
            )
            self.outputs[step.name] = {n: outputs[n] for n in step.outputs}
            self.producers[step.name] = item.step_run_id
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
        touched = {}
        if executed.result and executed.result.get("failed"):  # what the body did to other stores before failing
            result = executed.result
            touched = {
                "outputs": {k: ArtifactRef.from_dict(v) for k, v in result["outputs"].items()},
                "inputs": {k: ArtifactRef.from_dict(v) for k, v in result["inputs"].items()},
                "model_events": result.get("model_events"),
            }
        self._ends.append(((item, executed, "failed"), {"error": error, **touched}))
        if item.attempt <= self._retries(step):
            self._say(f"  {step.name}: failed ({error}); retrying")
            self.bar.advance(-1)
            self._submit(step, item.decision, item.attempt + 1, threads, delay=retry_delay(item.attempt))
            return
        self.failed[step.name] = f"step {step.name!r} (cell {step.cell}) failed: {error}"
        self._say(f"  {step.name}: failed ({error})")


class GraphRunner(Runner):
    """What the ``dag`` and ``dask`` runners share: a :class:`GraphRun` over a pool of step kernels."""

    options = frozenset({"jobs", "from_step", "to_step", "only", "retries", "reuse_kernels"})

    def execute(self, job: Job) -> Outcome:
        """Walk the DAG on this runner's pool; a failed step fails the run once independent branches finish."""
        from .kernels import KernelSetup

        jobs = job.options.jobs or os.cpu_count() or 1
        kernels = KernelSetup(
            tuple(preamble(job.pipeline, job.values)),
            str(job.pipeline.folder),
            {HOME_ENV: str(job.project.home)},
            job.options.kernel_name or "python3",
            reuse=job.options.reuse_kernels,
            fork=job.project.settings.fork_kernels,
        )
        pool = self.pool(kernels, jobs, job)
        try:
            status, error = GraphRun(job, pool, jobs).execute()
        finally:
            pool.close()
        return Outcome(status, error, StepFailedError(error) if status == "failed" else None)

    @abstractmethod
    def pool(self, kernels, jobs: int, job: Job):
        """The pool the steps run on: ``run(cells, timeout, gate) -> Executed`` and ``close()``."""


class DagRunner(GraphRunner):
    """``dag``: each step in a warm local kernel of its own, independent steps in parallel up to ``--jobs``."""

    name = "dag"

    def pool(self, kernels, jobs: int, job: Job):
        """Local warm kernels, started now (a kernel that is not installed is one error, before any starts)."""
        from .kernels import missing_kernel

        problem = missing_kernel(job.pipeline.path.name, kernels.kernel_name)
        if problem:
            raise ConfigError(problem)
        pool = LocalPool(kernels, jobs)
        pool.start()
        return pool


class LocalPool:
    """Runs steps on a pool of warm local kernels (created on first use, so a fully cached run starts none).

    Args:
        kernels: how the kernels are made (:class:`~mlops_nb.engine.executors.kernels.KernelSetup`).
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
