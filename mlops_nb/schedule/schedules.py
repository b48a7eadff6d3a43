"""Schedules and data triggers: add, list, remove, fire what is due, and the daemon that keeps firing."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..core.clock import utcnow
from ..core.files import escapes, is_special, lexical
from ..exceptions import MlopsError, ScheduleError, StoreError
from ..project import current_project

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
POLL_SECONDS = 10.0


def next_due(cron: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` (naive UTC) that the cron expression names (croniter, UTC)."""
    from croniter import CroniterError, croniter

    text = " ".join(str(cron).split())
    try:
        fields = len(text.split())
        if not text.startswith("@") and fields != 5:
            raise ValueError(f"{fields} field{'s' * (fields != 1)}, not five")
        return croniter(text, after).get_next(datetime)
    except (CroniterError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ScheduleError(
            f"cron expression {cron!r} is not valid ({str(exc).splitlines()[0][:80]}); write five fields, "
            "minute hour day month weekday, e.g. '0 3 * * *' (03:00 UTC daily) or '*/15 * * * *', or @daily, @hourly"
        ) from None


@dataclass
class Schedule:
    """One schedule.

    Attributes:
        name: its name (``--name``; default from the notebook or model).
        kind: ``notebook`` (a pipeline run) or ``monitor`` (a monitoring run).
        target: the notebook's path (relative to the project's home) or the model (``NAME@ALIAS``).
        cron: the cron expression (UTC), or None for a data trigger.
        on_data: the watched path or feature view, or None.
        options: ``params``, ``executor`` (notebook) or ``window`` (monitor).
        next_due: when the cron schedule fires next (UTC).
        data_state: the watched data's state when last seen.
        last_fired, last_run, last_status, last_error: its latest firing.
    """

    name: str
    kind: str
    target: str
    cron: str | None = None
    on_data: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    next_due: datetime | None = None
    data_state: str | None = None
    last_fired: datetime | None = None
    last_run: str | None = None
    last_status: str | None = None
    last_error: str | None = None

    @property
    def trigger(self) -> str:
        """The trigger of the runs it starts: ``schedule`` or ``data``."""
        return "schedule" if self.cron else "data"

    def when(self) -> str:
        """What fires it, in words."""
        return f"cron {self.cron}" if self.cron else f"on new data in {self.on_data}"

    def to_dict(self) -> dict[str, Any]:
        """As a record of the ``schedules`` table."""
        return dict(self.__dict__)


def _data_kind(project, on_data: str) -> tuple[str, Path | str]:
    """What a stored ``on_data`` names: ``("path", Path)`` (relative to the home) or ``("view", name)``."""
    text = str(on_data).strip()
    if text.startswith("view:"):
        return "view", text[5:]
    return "path", Path(text) if Path(text).is_absolute() else project.home / text


def resolve_on_data(project, on_data: str) -> str:
    """``--on-data`` as a schedule keeps it: a path (found from the current folder, else the project's home; kept
    relative to the home when inside it; one that does not exist yet fires when it appears) or ``view:NAME``."""
    text = str(on_data).strip()
    if not text:
        raise ScheduleError("--on-data needs a path (a file or folder) or a feature view's name")
    bases = [Path("/")] if Path(text).is_absolute() else [Path.cwd(), project.home]
    base = next((b for b in bases if (b / text).exists()), None)
    if base is None:
        try:
            project.features.get_view(text)
            return f"view:{text}"
        except MlopsError:
            if not ("/" in text or Path(text).suffix):
                where = " or ".join(dict.fromkeys(str((b / text).parent) for b in bases))
                raise ScheduleError(
                    f"--on-data {text!r} is neither a file or folder (in {where}) nor a feature view; give a path "
                    "(a folder: any new file fires) or a view's name"
                ) from None
        base = bases[0]
    found, home = base / text, project.home.resolve()
    if escapes(text, base, home):
        raise ScheduleError(f"--on-data {text!r} climbs out of the project folder {home}; watch data inside the "
                            "project, or give an absolute path if it truly lives elsewhere")  # fmt: skip
    full = lexical(found)
    if not full.is_relative_to(home) and found.resolve().is_relative_to(home):
        full = found.resolve()
    if is_special(full):
        raise ScheduleError(f"--on-data {text!r} is not a file or a folder (a device, a pipe or a socket)")
    return str(full.relative_to(home)) if full.is_relative_to(home) else str(full)


def data_state(project, on_data: str) -> str:
    """The state of watched data (``on_data`` as :func:`resolve_on_data` keeps it): the content hash of a file or
    of a folder's files (hidden and partly written ones left out; ``absent`` when missing), or a feature view's
    state hash (it changes with each ingest)."""
    from ..core.hashing import canonical, hash_path, sha256

    kind, where = _data_kind(project, on_data)
    if kind == "view":
        try:
            return "view:" + project.features.view_hash(str(where))
        except MlopsError:
            return ABSENT  # a view that is gone: nothing new to run on
    path = Path(where)
    try:
        if not path.exists():
            return ABSENT
        digest = hash_path(path, skip=_transient)
        return ABSENT if digest == sha256(canonical([])) else "path:" + digest  # emptied: nothing new to run on
    except OSError as exc:
        raise ScheduleError(f"--on-data {on_data}: cannot read it ({exc.strerror or exc})") from None


ABSENT = "path:absent"


def _transient(relative: Path) -> bool:
    """Files a data trigger does not watch: hidden ones and files being written (``.tmp``, ``.part``, ``~``)."""
    return any(part.startswith((".", "~")) for part in relative.parts) or relative.name.endswith(
        (".tmp", ".part", ".crdownload", "~")
    )


def _record(row: dict) -> Schedule:
    return Schedule(**row)


def schedules(project=None) -> list[Schedule]:
    """Every schedule of the project, by name."""
    return [_record(r) for r in current_project(project).metadata.schedules()]


def get(name: str, project=None) -> Schedule:
    """One schedule by name."""
    for schedule in schedules(project):
        if schedule.name == name:
            return schedule
    known = ", ".join(s.name for s in schedules(project)) or "none yet"
    raise ScheduleError(f"no schedule named {name!r} (schedules: {known}); see mlops-nb schedule list")


def add(
    target: str | None = None,
    *,
    cron: str | None = None,
    on_data: str | None = None,
    monitor: str | None = None,
    params: dict[str, Any] | None = None,
    executor: str | None = None,
    window: str | None = None,
    rules: list[Any] | None = None,
    name: str | None = None,
    now: datetime | None = None,
    project=None,
) -> Schedule:
    """Add a schedule: run the notebook ``target`` (or monitor the model ``monitor``) on the cron expression
    ``cron`` (UTC), or when the data ``on_data`` names changes.

    What can be checked now is (the cron expression, the notebook and its parameters, the executor; for a
    monitoring schedule the model's spec, the window, the monitoring settings and their alert rules), so that a
    schedule does not fail later on what was known when it was added.
    """
    project = current_project(project)
    now = now or utcnow()
    if (target is None) == (monitor is None):
        raise ScheduleError("give a notebook to run or --monitor NAME@ALIAS, not both or neither")
    if (cron is None) == (on_data is None):
        raise ScheduleError("give --cron EXPRESSION or --on-data PATH|VIEW (one of them)")
    options: dict[str, Any] = {}
    if monitor is not None:
        from ..monitoring.model_monitor import parse_model, parse_window

        if on_data is not None:
            raise ScheduleError("a monitoring schedule runs on --cron; --on-data starts notebooks")
        from ..monitoring import alerts

        model, which = parse_model(monitor)
        if window is not None:
            parse_window(window)
            options["window"] = window
        rule_list = alerts.parse_rules(rules if rules is not None else alerts.settings_of(project).get("alerts", []))
        alerts.check_targets(project, rule_list)  # its rules and what their actions name are checked now too
        if rules is not None:
            options["rules"] = [{"rule": r.text, "action": r.action} for r in rule_list]
        _check_model(project, model, which)
        kind, target_text = "monitor", monitor.strip()
        default_name = f"monitor-{model}"
        if params or executor:
            raise ScheduleError("-p and --executor are for notebook schedules, not --monitor")
    else:
        from ..engine.executors import executors
        from ..pipeline import Pipeline

        path = Path(target) if Path(target).is_absolute() else (Path.cwd() / target)
        if not path.is_file():
            raise ScheduleError(f"notebook {target} does not exist")
        pipeline = Pipeline.from_notebook(path)
        pipeline.resolve_params(params)  # a wrong parameter is refused now
        if executor is not None:
            executors.get(executor)
            options["executor"] = executor
        if window is not None or rules is not None:
            raise ScheduleError("--window and --rule are for --monitor schedules")
        options["params"] = dict(params or {})
        kind = "notebook"
        try:
            target_text = str(path.resolve().relative_to(project.home.resolve()))
        except ValueError:
            target_text = str(path.resolve())
        default_name = path.stem
    chosen = name or default_name
    if not _NAME.fullmatch(chosen):
        raise ScheduleError(f"schedule name {chosen!r} must be letters, digits, _ . - (at most 64)")
    record = Schedule(chosen, kind, target_text, cron, on_data, options, created_at=now)
    if cron is not None:
        record.cron = " ".join(cron.split())
        record.next_due = next_due(record.cron, now)
    else:
        record.on_data = resolve_on_data(project, on_data)
        record.data_state = data_state(project, record.on_data)  # the data as it is now: new data fires
    try:
        project.metadata.add_schedule(record.to_dict())
    except StoreError as exc:
        raise ScheduleError(exc.message) from None
    return record


def _check_model(project, model: str, which: str | None) -> None:
    """The model (and its alias or version) a monitoring schedule names exists in the registry."""
    registry = project.registry
    shown = model + (which if which and which.startswith("@") else f"/{which}" if which else "")
    try:
        if which is None:
            found = registry.versions(model)
        elif which.startswith("@"):
            found = registry.alias_holder(model, which[1:])
        else:
            found = registry.version(model, int(which))
    except MlopsError as exc:
        raise ScheduleError(f"--monitor {shown}: {exc.message}") from None
    if not found:
        what = f"no version has alias {which[1:]!r}" if which else "no registered versions"
        raise ScheduleError(f"--monitor {shown}: {what}; see mlops-nb models list")


def remove(name: str, project=None) -> None:
    """Remove a schedule."""
    project = current_project(project)
    if not project.metadata.remove_schedule(name):
        get(name, project)  # raises with the known names


def _lock(project, name: str):
    from filelock import FileLock

    folder = project.mlops_dir / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{name}.lock"), timeout=0)


def _fire(project, schedule: Schedule, fired_by: str, progress: bool) -> tuple[str | None, str, str | None]:
    """Start the schedule's run; ``(run id, status, detail)``: the error of a failed run, a monitoring run's verdict."""
    from ..exceptions import StepFailedError

    if schedule.kind == "monitor":
        from ..monitoring import monitor

        try:
            report = monitor(
                schedule.target,
                window=schedule.options.get("window"),
                rules=schedule.options.get("rules"),
                trigger="schedule",
                fired_by=fired_by,
                project=project,
            )
        except MlopsError as exc:
            return None, "failed", exc.message
        except Exception as exc:  # noqa: BLE001 - a schedule's failure is recorded; the daemon goes on
            return None, "failed", f"{type(exc).__name__}: {exc}"[:300]
        verdict = "drift" if report.drift.dataset_drift else "no drift"
        return report.run_id, "succeeded", f"{verdict}, {len(report.alerts)} alerts" if report.alerts else verdict
    from ..engine.driver import run

    path = Path(schedule.target)
    path = path if path.is_absolute() else project.home / path
    try:
        done = run(
            path,
            schedule.options.get("params") or None,
            schedule.options.get("executor"),
            project=project,
            trigger=schedule.trigger,
            fired_by=fired_by,
            progress=progress,
        )
    except StepFailedError as exc:
        return exc.run_id, "failed", exc.message
    except MlopsError as exc:
        return None, "failed", exc.message
    except Exception as exc:  # noqa: BLE001 - a schedule's failure is recorded; the daemon goes on
        return None, "failed", f"{type(exc).__name__}: {exc}"[:300]
    return done.id, done.status, None


def _reason(project, schedule: Schedule, moment: datetime, echo) -> tuple[str | None, str | None]:
    """Why ``schedule`` fires at ``moment`` (None: it does not) and the data state it saw."""
    if schedule.cron:
        if schedule.next_due is not None and schedule.next_due <= moment:
            return f"schedule {schedule.name} ({schedule.cron}, due {schedule.next_due:%Y-%m-%d %H:%M} UTC)", None
        return None, None
    try:
        state = data_state(project, schedule.on_data)
    except MlopsError as exc:
        if echo:
            echo(f"{schedule.name}: {exc.message}")
        return None, None
    if state == schedule.data_state:
        return None, None
    if state == ABSENT:  # data removed or rotated away: nothing new to run on; its return fires
        project.metadata.update_schedule(schedule.name, data_state=state)
        return None, None
    return f"schedule {schedule.name}: {schedule.on_data} changed", state


def run_due(
    project=None,
    *,
    now: datetime | None = None,
    clock: Callable[[], datetime] = utcnow,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Fire every schedule that is due (cron: ``next_due <= now``; data: its state changed), one after another;
    return one record per firing (``schedule``, ``trigger``, ``run_id``, ``status``, ``error``, ``detail``: the
    error, or a monitoring run's verdict).

    ``now`` fixes the time (default: ``clock()`` when each schedule is looked at). A cron schedule's next time is
    computed from when its run ended, so missed times are not caught up (a daemon started after a downtime runs an
    overdue schedule once, then keeps to its times). Each schedule fires under a file lock and is read again under
    it, so two daemons never run it twice; one whose lock is held (its previous run is still going) is skipped. A
    failed run is recorded and the others go on. ``stop`` is asked between schedules (a daemon told to stop).
    """
    from filelock import Timeout

    project = current_project(project)
    fired: list[dict[str, Any]] = []
    for listed in schedules(project):
        if stop is not None and stop():
            break
        moment = now or clock()
        reason, state = _reason(project, listed, moment, echo)
        if reason is None:
            continue
        try:
            with _lock(project, listed.name):
                current = next((s for s in schedules(project) if s.name == listed.name), None)
                if current is None:
                    continue  # removed meanwhile
                reason, state = _reason(project, current, moment, None)  # read again under the lock
                if reason is None:
                    continue  # another daemon ran it meanwhile
                if state is not None:  # seen before the run: a failing run does not fire again on the same data
                    project.metadata.update_schedule(current.name, data_state=state)
                if echo:
                    echo(f"{moment:%Y-%m-%d %H:%M:%S} {current.name}: {current.kind} {current.target} ({reason})")
                run_id, status, detail = _fire(project, current, reason, progress)
                error = detail if status == "failed" else None
                update: dict[str, Any] = {
                    "last_fired": moment, "last_run": run_id, "last_status": status, "last_error": error,
                }  # fmt: skip
                if current.cron:
                    update["next_due"] = next_due(current.cron, max(now or clock(), moment))  # no catch-up
                project.metadata.update_schedule(current.name, **update)
        except Timeout:
            if echo:
                echo(f"{listed.name}: its previous run is still going; skipped")
            continue
        record = {"schedule": current.name, "trigger": current.trigger, "run_id": run_id, "status": status,
                  "error": error, "detail": detail}  # fmt: skip
        if echo:
            echo(f"  -> run {run_id or '-'} {status}" + (f": {detail}" if detail else ""))
        fired.append(record)
    return fired


def daemon(
    project=None,
    *,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] | None = None,
    poll: float = POLL_SECONDS,
    ticks: int | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Fire due schedules until stopped (Ctrl-C, SIGTERM) or for ``ticks`` rounds: wake at the next cron time, and
    every ``poll`` seconds while a data trigger is watched or a due schedule was skipped. ``clock`` and ``sleep``
    make time controllable (tests pass a fake clock whose sleep advances it); by default the daemon sleeps on an
    event that SIGTERM sets, so it stops at once between runs (a run in progress ends first: stop it with a second
    signal). Returns every firing."""
    import signal
    import threading

    project = current_project(project)
    fired: list[dict[str, Any]] = []
    stopping = threading.Event()
    wait = sleep or stopping.wait

    def stop(*_: Any) -> None:
        if stopping.is_set():  # a second signal: stop the run in progress too
            raise KeyboardInterrupt
        threading.Thread(target=stopping.set, daemon=True).start()  # no lock taken inside the handler

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: Ctrl-C / ticks only
        previous = None
    if echo and ticks is None:  # said once the signal is handled: a SIGTERM from now on stops it cleanly
        echo(f"schedule daemon for {project.home}: {len(schedules(project))} schedules; Ctrl-C stops it")
    try:
        rounds = 0
        while not stopping.is_set() and (ticks is None or rounds < ticks):
            rounds += 1
            fired += run_due(project, clock=clock, progress=progress, echo=echo, stop=stopping.is_set)
            if ticks is not None and rounds >= ticks:
                break
            now = clock()
            listed = schedules(project)
            waits = [poll] if any(s.on_data for s in listed) else [poll * 6]
            for s in listed:
                if s.next_due is not None:
                    ahead = (s.next_due - now).total_seconds()
                    waits.append(ahead if ahead > 0 else poll)  # overdue: skipped because it is still running
            wait(max(min(waits), 0.05))
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return fired


def describe_next(schedule: Schedule, now: datetime | None = None) -> str:
    """When a schedule fires next, in words."""
    if schedule.next_due is None:
        return f"on new data in {schedule.on_data}"
    delta = schedule.next_due - (now or utcnow())
    return f"{schedule.next_due:%Y-%m-%d %H:%M} UTC (in {_span(delta)})"


def _span(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, hours, minutes = seconds // 86400, seconds % 86400 // 3600, seconds % 3600 // 60
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return " ".join(parts[:2]) or f"{seconds}s"
