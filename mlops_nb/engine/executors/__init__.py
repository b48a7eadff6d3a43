"""The executors: how the steps of a headless run execute. ``base.py`` holds the :class:`Runner` interface; the
registry here knows the built-in runners (``notebook``: papermill; ``dag``: a warm kernel per step; ``dask``: the
dag plan on a cluster) and any an installed package adds through the ``mlops_nb.executors`` entry-point group, as
papermill does for engines. A runner class is imported when first asked for (dask costs seconds to import).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ...exceptions import ConfigError, MlopsError
from .base import INTERRUPTED, Interrupted, Job, Outcome, Runner, RunOptions


def _notebook() -> type[Runner]:
    from .notebook import NotebookRunner

    return NotebookRunner


def _dag() -> type[Runner]:
    from .dag import DagRunner

    return DagRunner


def _dask() -> type[Runner]:
    from .dask import DaskRunner

    return DaskRunner


class Registry:
    """Runner classes by name: the built-in ones, those registered, and the ``mlops_nb.executors`` entry points
    (each a :class:`Runner` subclass), loaded on first use."""

    ENTRY_POINT_GROUP = "mlops_nb.executors"
    BUILTIN: dict[str, Callable[[], type[Runner]]] = {"notebook": _notebook, "dag": _dag, "dask": _dask}

    def __init__(self) -> None:
        self._runners: dict[str, type[Runner]] = {}
        self._plugins_loaded = False

    def register(self, runner: type[Runner]) -> None:
        """Make ``runner`` available as ``--executor runner.name``."""
        if not (isinstance(runner, type) and issubclass(runner, Runner) and runner.name):
            raise TypeError("register() takes a Runner subclass with a name")
        self._runners[runner.name] = runner

    def reset(self) -> None:
        """Forget registered and plugin runners (for tests)."""
        self._runners.clear()
        self._plugins_loaded = False

    def names(self) -> list[str]:
        """Every executor's name, the built-in ones first."""
        self._load_plugins()
        return [*self.BUILTIN, *(n for n in self._runners if n not in self.BUILTIN)]

    def get(self, name: str) -> type[Runner]:
        """The runner class called ``name``; an unknown name raises with the known ones."""
        if name not in self._runners and name in self.BUILTIN:
            self.register(self.BUILTIN[name]())
        if name not in self._runners:
            self._load_plugins()
        if name not in self._runners:
            raise ConfigError(f"executor {name!r} is not available; use one of: {', '.join(self.names())}")
        return self._runners[name]

    def items(self) -> Iterator[tuple[str, type[Runner]]]:
        """``(name, runner class)`` of every executor."""
        for name in self.names():
            yield name, self.get(name)

    def check(self, runner: type[Runner], options: RunOptions) -> None:
        """Refuse options ``runner`` does not honour, in one line naming them and the executors that do."""
        unsupported = runner.unsupported(options)
        if unsupported:
            flags = ", ".join(_flag(name) for name in unsupported)
            others = [name for name, other in self.items() if not other.unsupported(options)]
            hint = f"; they need --executor {' or '.join(others)}" if others else ""
            raise MlopsError(f"the {runner.name} executor does not take {flags}{hint}")
        if options.scheduler:
            check_scheduler(options.scheduler)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        import warnings
        from importlib.metadata import entry_points

        for entry in entry_points(group=self.ENTRY_POINT_GROUP):
            try:
                runner = entry.load()
                self.register(runner)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the built-in executors
                warnings.warn(f"executor plugin {entry.name!r} could not be loaded: {exc}", stacklevel=2)
                continue
            if runner.name != entry.name:
                warnings.warn(
                    f"executor plugin {entry.name!r} ({entry.value}) is named {runner.name!r}; use --executor "
                    f"{runner.name} (or make its entry point's name match)",
                    stacklevel=2,
                )


def _flag(option: str) -> str:
    return {"from_step": "--from", "to_step": "--to"}.get(option, "--" + option.replace("_", "-"))


executors = Registry()
"""The process's executors."""

__all__ = ["INTERRUPTED", "Interrupted", "Job", "Outcome", "RunOptions", "Runner", "executors"]


def check_scheduler(address: str, timeout: float = 10.0) -> None:
    """Refuse, before a run is recorded, a ``--scheduler`` address that is malformed, does not resolve, or where
    nothing listens within ``timeout`` seconds (Dask's own connect timeout: a scheduler may be starting)."""
    import socket
    import time
    from urllib.parse import urlsplit

    fix = "start one with `dask scheduler` and give its address (tcp://HOST:PORT), or leave out --scheduler"
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port if parts.scheme in ("tcp", "tls") else None
    except ValueError as exc:
        raise MlopsError(f"--scheduler {address!r} is not an address ({exc}); {fix}") from None
    if parts.scheme not in ("tcp", "tls"):
        return  # inproc:// (a LocalCluster in this process), ucx://, ws://: Dask's to check
    if not host or port is None:
        raise MlopsError(f"--scheduler {address!r} is not an address like tcp://HOST:PORT; {fix}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=min(2.0, timeout)).close()
            return
        except ConnectionRefusedError as exc:  # perhaps not listening yet
            if time.monotonic() >= deadline:
                raise MlopsError(f"cannot reach the Dask scheduler at {address} within {timeout:.0f} s: "
                                 f"{exc.strerror}; {fix}") from None  # fmt: skip
            time.sleep(0.2)
        except (OSError, UnicodeError) as exc:
            from ...core.net import host_problem

            reason = host_problem(exc)
            raise MlopsError(f"cannot reach the Dask scheduler at {address}: {reason}; {fix}") from None
