"""Declared hooks: how a lower layer tells a higher one something without importing it (imports point down).

* **Step tracking.** While a step runs, stores other than the artifact store (the feature store, the model
  registry) record what the step read and wrote with :func:`record_input` / :func:`record_output`, and registry
  events with :func:`record_event`. The engine opens the tracking around the step's body with :func:`track`
  (which also tells the stores the step's run and what it loaded) and records what it collected with the step
  run. Outside a step the calls do nothing. An artifact named ``NAME#PART`` is a part of ``NAME`` (a segment of
  a feature view).
* **Artifact sources.** A store whose artifacts live outside the artifact store implements
  :class:`ArtifactSource`; before a cached step run stands in for a step, the engine asks it whether what the
  step read is unchanged and what it wrote is still there.
* **Lifecycle events.** :data:`hooks` calls its subscribers after each step run (``post_step``) and each run
  (``post_run``) is recorded, in the process that recorded it; alerts, triggers and the dashboard listen there.
* **The default project.** A store made without paths (``mlops_nb.MetadataStore()``) asks :func:`locate`; the
  package root installs the locator that finds the current project.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .records import ArtifactRef


# Step tracking ----------------------------------------------------------------------------------------------------
@dataclass
class ActiveStep:
    """What a running step read or wrote through stores other than the artifact store.

    Attributes:
        step: the step's name.
        run_id: the pipeline run the step belongs to (None when unknown).
        read: name -> :class:`ArtifactRef` of the inputs the step loaded from the artifact store and the files it
            ``--reads`` (what a registered model was trained on).
        project: the project whose stores the step uses (None: the one its process finds).
        loaded: ``id(obj)`` -> ``(obj, ref)`` for the objects loaded from the artifact store as the step's inputs
            (a registered model that is one of them keeps its artifact instead of being stored again).
        sources: input name -> the step run that produced it (where its lineage continues).
        run_info: the run's ``pipeline``, ``notebook``, ``notebook_hash``, ``git_commit``, ``params`` and the
            step's upstream ``data`` (name -> hash), when its driver passed them (a dag/dask kernel, which reads no
            metadata store); None: the process reads them itself.
        inputs, outputs: name -> :class:`ArtifactRef`, recorded with the step run when it ends.
        events: model registry events (registrations, gate outcomes, alias moves) recorded with the step run.
    """

    step: str
    run_id: str | None = None
    read: dict[str, ArtifactRef] = field(default_factory=dict)
    project: Any = None
    loaded: dict[int, tuple[Any, ArtifactRef]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    run_info: dict | None = None
    inputs: dict[str, ArtifactRef] = field(default_factory=dict)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)


_active: ActiveStep | None = None


def active_step() -> ActiveStep | None:
    """The step running in this process right now, if any."""
    return _active


def begin_step(
    step: str,
    run_id: str | None = None,
    read: dict[str, ArtifactRef] | None = None,
    project: Any = None,
    namespace: dict | None = None,
    sources: dict[str, str] | None = None,
    run_info: dict | None = None,
) -> ActiveStep:
    """Make ``step`` the running step (until :func:`end_step`); return what it will collect. ``namespace`` holds
    the inputs named in ``read`` as loaded (see :class:`ActiveStep` for the rest)."""
    global _active
    read = dict(read or {})
    loaded = {id(namespace[n]): (namespace[n], ref) for n, ref in read.items() if n in (namespace or {})}
    _active = ActiveStep(step, run_id, read, project, loaded, dict(sources or {}), run_info)
    return _active


def loaded_ref(obj: Any) -> ArtifactRef | None:
    """The artifact ``obj`` was loaded from as an input of the running step, if it was."""
    if _active is None:
        return None
    entry = _active.loaded.get(id(obj))
    return entry[1] if entry is not None and entry[0] is obj else None


def end_step() -> ActiveStep | None:
    """End the running step; return what it collected (None when no step was running)."""
    global _active
    done, _active = _active, None
    return done


class track:  # noqa: N801 - used as a context manager, like contextlib's
    """``with track(step, ...) as touched:`` makes ``step`` the running step while the block runs; it takes what
    :func:`begin_step` takes."""

    def __init__(self, step: str, *args: Any, **kwargs: Any):
        self.step, self.args, self.kwargs = step, args, kwargs
        self.touched = ActiveStep(step)

    def __enter__(self) -> ActiveStep:
        self.touched = begin_step(self.step, *self.args, **self.kwargs)
        return self.touched

    def __exit__(self, *exc: object) -> None:
        end_step()


def record_input(name: str, ref: ArtifactRef) -> None:
    """Record ``ref`` as an input of the running step (no-op outside a step)."""
    if _active is not None:
        _active.inputs[name] = ref


def record_output(name: str, ref: ArtifactRef) -> None:
    """Record ``ref`` as an output of the running step (no-op outside a step)."""
    if _active is not None:
        _active.outputs[name] = ref


def record_event(event: dict) -> bool:
    """Record a model registry event with the running step run; False outside a step (the caller records it)."""
    if _active is None:
        return False
    _active.events.append(event)
    return True


# Artifact sources -------------------------------------------------------------------------------------------------
class ArtifactSource(Protocol):
    """A store holding artifacts that live outside the artifact store (feature views and segments)."""

    def current_hash(self, ref: ArtifactRef) -> str | None:
        """The hash of what ``ref`` names now: ``ref.hash`` while it is unchanged and still stored, another hash
        when it changed since ``ref`` was recorded, None when it is gone."""


# Lifecycle events ---------------------------------------------------------------------------------------------------
class Hooks:
    """Subscribers of lifecycle events, called with keyword arguments only (new ones may be added; accept
    ``**future_kwargs``). A subscriber that raises is reported as a warning and does not stop the run.

    Events:
        ``post_step(*, run_id, step, step_run_id, status, why, outputs, error, **future_kwargs)``: a step run of a
        pipeline run ended (succeeded, failed, cached or skipped) and is recorded.
        ``post_run(*, run_id, kind, pipeline, status, trigger, error, **future_kwargs)``: a run ended and is recorded.
        ``alert(*, alert, project, **future_kwargs)``: monitoring raised an alert (a dict: ``id``, ``rule``,
        ``metric``, ``value``, ``action``, ``model``, ``version``, ``monitor_run``) and recorded it; the action it
        names (monitoring's own subscriber) and any other listener run here.

    Example::

        from mlops_nb.core.hooks import hooks

        def alert(*, run_id, status, **future_kwargs):
            if status == "failed":
                print(f"run {run_id} failed")

        unsubscribe = hooks.subscribe("post_run", alert)
    """

    EVENTS = ("post_step", "post_run", "alert")

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[..., Any]]] = {name: [] for name in self.EVENTS}

    def subscribe(self, event: str, function: Callable[..., Any]) -> Callable[[], None]:
        """Call ``function(**fields)`` on every ``event``; return a function that unsubscribes it."""
        if event not in self._subscribers:
            raise ValueError(f"unknown hook {event!r}; hooks: {', '.join(self.EVENTS)}")
        self._subscribers[event].append(function)
        return lambda: self._subscribers[event].remove(function) if function in self._subscribers[event] else None

    def emit(self, event: str, **fields: Any) -> None:
        """Call the subscribers of ``event`` with ``fields``."""
        for function in list(self._subscribers[event]):
            try:
                function(**fields)
            except Exception as exc:  # noqa: BLE001 - a listener must not break the run it listens to
                name = getattr(function, "__qualname__", repr(function))
                warnings.warn(f"{event} hook {name} failed: {type(exc).__name__}: {exc}", stacklevel=2)

    def reset(self) -> None:
        """Remove every subscriber (for tests)."""
        for subscribers in self._subscribers.values():
            subscribers.clear()


hooks = Hooks()
"""The process's lifecycle hooks."""


# The default project ------------------------------------------------------------------------------------------------
_locator: Callable[[str, Any], dict[str, Any]] | None = None


def set_locator(locator: Callable[[str, Any], dict[str, Any]]) -> None:
    """Install what :func:`locate` asks (the package root does, with the project's layout)."""
    global _locator
    _locator = locator


def locate(store: str, where: Any = None) -> dict[str, Any]:
    """The constructor arguments (paths, lock timeout) of ``store`` (``metadata``, ``features``) in the project
    ``where`` names: a project, its folder, or None for the current one."""
    if _locator is None:  # pragma: no cover - the package root installs it on import
        raise RuntimeError("mlops_nb's package root did not install its store locator")
    return _locator(store, where)
