"""The Runner interface: what an executor implements (registered by name in ``executors/__init__.py``).

The driver (``engine/driver.py``) does everything a run needs around the runner: it validates the notebook, plans
without a kernel, records the run, records never-reached steps and ends the run. A runner only executes the steps
that must run, recording each as it goes (the notebook runner's kernel does so through the magic; the dag and
dask runners record from the driver's process), and returns an :class:`Outcome`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ...core.records import ArtifactRef
from ...exceptions import StepFailedError


@dataclass(frozen=True)
class RunOptions:
    """How to run a notebook headless: everything ``mlops_nb.run`` and ``mlops-nb run`` take besides the notebook,
    its parameters and the project.

    Attributes:
        executor: the runner's name (None: the project's ``executor`` setting).
        no_cache: run every step.
        trigger: what started the run (``api``, ``cli``, ``manual``, ``schedule`` ...).
        fired_by: what fired it, when a trigger did (a schedule's name, a changed file, an alert).
        progress: show progress (a bar with a line per step).
        kernel_name: the Jupyter kernel (None: the notebook's).
        step_timeout: seconds a step (``notebook``: a cell) may run before its kernel is stopped.
        jobs: steps at once (``dag``, ``dask``; None: the number of cores).
        from_step, to_step, only: a partial run: from one step, up to one, or just these.
        retries: re-run a failing step up to this many more times (a step's ``--retries`` also counts).
        reuse_kernels: keep a kernel for the next step (namespace reset) instead of a fresh one.
        scheduler: a Dask scheduler address (None: a local cluster).
        run_id: the id to record the run under (None: a new one); a front end that starts a run in another
            process names it before it starts, so it can follow its progress.
    """

    executor: str | None = None
    no_cache: bool = False
    trigger: str = "api"
    fired_by: str | None = None
    progress: bool = True
    kernel_name: str | None = None
    step_timeout: float | None = None
    jobs: int | None = None
    from_step: str | None = None
    to_step: str | None = None
    only: tuple[str, ...] | None = None
    retries: int = 0
    reuse_kernels: bool = False
    scheduler: str | None = None
    run_id: str | None = None

    @property
    def partial(self) -> bool:
        """Whether only some steps are selected (``--from``, ``--to``, ``--only``)."""
        return bool(self.from_step or self.to_step or self.only)

    def given(self) -> set[str]:
        """Names of the options set to something other than their default."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}


@dataclass(frozen=True)
class Job:
    """One run for a runner to execute.

    Attributes:
        project: the project.
        pipeline: the notebook's pipeline.
        values: resolved parameter values (defaults and what was given).
        given: the parameters given (what papermill injects).
        run_id: the run, already recorded as ``running``.
        options: the run's options.
        prepared: the selected steps and what unselected steps contribute (:class:`~mlops_nb.engine.plan.Prepared`).
        planned: what the planner found before any kernel started (a list of
            :class:`~mlops_nb.engine.plan.PlannedStep`; None for a partial run): a runner may record the planned
            cache hits itself instead of deciding them again.
    """

    project: Any
    pipeline: Any
    values: dict
    given: dict
    run_id: str
    options: RunOptions
    prepared: Any
    planned: Any = None


@dataclass
class Outcome:
    """How a runner's execution ended.

    Attributes:
        status: the run's status (``succeeded``, ``failed``, ``interrupted``).
        error: one line, when it did not succeed.
        failure: the error to raise (a failed step), if any; the driver adds the run id.
        executed_notebook: the executed notebook, when the runner made one.
    """

    status: str
    error: str | None = None
    failure: StepFailedError | None = None
    executed_notebook: ArtifactRef | None = None


INTERRUPTED = "interrupted (Ctrl-C or SIGTERM); re-run to resume from the cache"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a runner once its kernels were stopped; ``outcome`` holds what it had made by
    then (the executed notebook), for the driver to record with the interrupted run."""

    def __init__(self, outcome: Outcome):
        super().__init__(INTERRUPTED)
        self.outcome = outcome


class Runner(ABC):
    """Executes the steps of one run that must run. Subclass it and register the class by name.

    Attributes:
        name: the executor's name (``--executor NAME``).
        options: the :class:`RunOptions` fields it honours besides the common ones (``no_cache``, ``trigger``,
            ``progress``, ``kernel_name``, ``step_timeout``, ``run_id``); a run given another is refused before it starts.
    """

    name: ClassVar[str] = ""
    options: ClassVar[frozenset[str]] = frozenset()
    COMMON: ClassVar[frozenset[str]] = frozenset(
        {"executor", "no_cache", "trigger", "fired_by", "progress", "kernel_name", "step_timeout", "run_id"}
    )

    @classmethod
    def unsupported(cls, options: RunOptions) -> list[str]:
        """The options given that this runner does not honour."""
        return sorted(options.given() - cls.COMMON - cls.options)

    @abstractmethod
    def execute(self, job: Job) -> Outcome:
        """Run ``job``'s steps that must run and record them; return how it ended. ``KeyboardInterrupt`` (Ctrl-C,
        SIGTERM) is left to propagate once the kernels are stopped; the driver records the run interrupted."""
