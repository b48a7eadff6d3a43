"""Schedules and data triggers on a controllable clock: the daemon starts exactly the expected runs, never catches
up missed ones, survives a failing run, runs a schedule once at a time; new data fires once per change."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta

import pandas as pd
import pytest
from filelock import FileLock
from nbtools import write_notebook

from mlops_nb import schedule
from mlops_nb.exceptions import MlopsError, ScheduleError
from mlops_nb.project import Project
from mlops_nb.schedule.schedules import next_due

CLI = [sys.executable, "-m", "mlops_nb.ui.cli"]


class Clock:
    """A fake UTC clock; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime):
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def home(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'sched'\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "first.csv").write_text("a\n1\n")
    write_notebook(
        tmp_path / "job.ipynb",
        [
            "%load_ext mlops_nb\nimport os",
            "fail = False",
            "%%mlops step listing --reads data --outputs files\nassert not fail, 'asked to fail'\nfiles = sorted(os.listdir('data'))",
        ],
        parameters=1,
    )
    return tmp_path


def test_cron_is_croniter_in_utc_and_a_malformed_one_is_one_line():
    assert next_due("0 3 * * *", datetime(2026, 1, 1, 3, 0)) == datetime(2026, 1, 2, 3, 0)
    assert next_due("*/15 * * * *", datetime(2026, 1, 1, 3, 7)) == datetime(2026, 1, 1, 3, 15)
    assert next_due("@daily", datetime(2026, 1, 1, 3, 0)) == datetime(2026, 1, 2, 0, 0)
    for bad in ("61 * * * *", "every day", "* * *", "", "0 3 * * * 5"):  # six fields: croniter's seconds
        with pytest.raises(ScheduleError) as caught:
            next_due(bad, datetime(2026, 1, 1))
        assert "is not valid" in caught.value.message and "'0 3 * * *'" in caught.value.message


def test_the_daemon_starts_exactly_the_expected_runs_on_a_controllable_clock(home):
    project = Project(home).init()
    clock = Clock(datetime(2026, 1, 1, 0, 3))
    added = schedule.add(str(home / "job.ipynb"), cron="*/10 * * * *", now=clock(), project=project)
    assert (added.name, added.kind, added.target, added.next_due) == ("job", "notebook", "job.ipynb",
                                                                      datetime(2026, 1, 1, 0, 10))  # fmt: skip
    failing = schedule.add(str(home / "job.ipynb"), cron="*/20 * * * *", params={"fail": True}, name="failing",
                           now=clock(), project=project)  # fmt: skip
    fired = schedule.daemon(project, clock=clock, sleep=clock.sleep, ticks=28, echo=None)  # 00:03 ... 00:30
    assert clock.now == datetime(2026, 1, 1, 0, 30)
    by_name = {}
    for f in fired:
        by_name.setdefault(f["schedule"], []).append(f)
    assert [f["status"] for f in by_name["job"]] == ["succeeded"] * 3  # 00:10, 00:20, 00:30
    assert [f["status"] for f in by_name["failing"]] == ["failed"]  # 00:20; its failure did not stop the daemon
    assert "asked to fail" in by_name["failing"][0]["error"]
    runs = project.metadata.list_runs(limit=None, kind="pipeline", trigger="schedule")
    assert len(runs) == 4 and all(r.trigger == "schedule" for r in runs)
    dues = sorted(r.fired_by for r in runs if r.fired_by.startswith("schedule job "))
    assert [d.split("due ")[1] for d in dues] == ["2026-01-01 00:10 UTC)", "2026-01-01 00:20 UTC)",
                                                  "2026-01-01 00:30 UTC)"]  # fmt: skip
    assert max(clock.slept) <= 60 and min(clock.slept) > 0
    job = schedule.get("job", project)
    assert job.next_due == datetime(2026, 1, 1, 0, 40) and job.last_status == "succeeded"
    assert schedule.get("failing", project).last_status == "failed"

    # missed times are not caught up: hours later, one run, and the next time is after now
    clock.now = datetime(2026, 1, 1, 5, 1)
    again = schedule.run_due(project, clock=clock)
    assert sorted(f["schedule"] for f in again) == ["failing", "job"]
    assert schedule.get("job", project).next_due == datetime(2026, 1, 1, 5, 10)
    assert schedule.run_due(project, clock=clock) == []

    # one run at a time per schedule: a schedule whose lock another process holds is skipped
    clock.now = datetime(2026, 1, 1, 6, 0)
    with FileLock(str(project.mlops_dir / "schedules" / "job.lock")):
        held = schedule.run_due(project, clock=clock)
    assert [f["schedule"] for f in held] == ["failing"]
    assert schedule.get("job", project).next_due == datetime(2026, 1, 1, 5, 10)  # still due: it runs next time
    del failing, added


def test_a_data_trigger_fires_once_per_new_file(home):
    project = Project(home).init()
    added = schedule.add(str(home / "job.ipynb"), on_data="data", project=project)
    assert added.cron is None and added.data_state.startswith("path:")
    assert schedule.run_due(project) == []  # the data as it was when the schedule was added
    (home / "data" / "second.csv").write_text("a\n2\n")
    [first] = schedule.run_due(project)
    assert (first["trigger"], first["status"]) == ("data", "succeeded")
    assert schedule.run_due(project) == []  # the same data fires once
    (home / "data" / ".hidden").write_text("x")  # hidden and partly written files are not new data
    (home / "data" / "fourth.csv.part").write_text("a\n")
    assert schedule.run_due(project) == []
    (home / "data" / "fourth.csv.part").unlink()
    (home / "data" / "third.csv").write_text("a\n3\n")
    [second] = schedule.run_due(project)
    runs = project.metadata.list_runs(limit=None, trigger="data")
    assert [r.id for r in runs] == [second["run_id"], first["run_id"]]
    assert all(r.fired_by == "schedule job: data changed" for r in runs)
    listing = project.metadata.get_run(second["run_id"]).step("listing")
    assert listing.status == "succeeded"  # --reads data changed, so the step ran again
    assert project.artifacts.get(listing.outputs["files"]) == [".hidden", "first.csv", "second.csv", "third.csv"]
    import shutil

    shutil.rmtree(home / "data")  # data that disappears does not fire; its return does
    assert schedule.run_due(project) == []
    (home / "data").mkdir()
    (home / "data" / "first.csv").write_text("a\n1\n")
    assert [f["trigger"] for f in schedule.run_due(project)] == ["data"]


def test_a_feature_view_trigger_fires_when_the_view_gets_a_new_segment(home):
    project = Project(home).init()
    fs = project.features
    fs.register_entity("customer", {"customer_id": "int64"})
    fs.register_view("activity", "customer", {"spend": "float64"})

    def ingest(day: int) -> None:
        fs.ingest("activity", pd.DataFrame({"customer_id": [1, 2], "spend": [1.0 * day, 2.0],
                                            "event_ts": pd.Timestamp(f"2026-01-0{day}", tz="UTC")}))  # fmt: skip

    ingest(1)
    schedule.add(str(home / "job.ipynb"), on_data="activity", name="on-activity", project=project)
    assert schedule.run_due(project) == []
    ingest(2)
    [fired] = schedule.run_due(project)
    assert fired["trigger"] == "data" and fired["status"] == "succeeded"
    assert schedule.run_due(project) == []


def test_bad_schedules_are_one_line_and_record_nothing(home):
    project = Project(home).init()
    nb = str(home / "job.ipynb")
    cases = [
        (dict(target=nb, cron="99 * * * *"), "cron expression '99 * * * *' is not valid"),
        (dict(target=nb), "give --cron EXPRESSION or --on-data PATH|VIEW"),
        (dict(target=nb, cron="* * * * *", on_data="data"), "give --cron EXPRESSION or --on-data"),
        (dict(target=str(home / "nope.ipynb"), cron="* * * * *"), "notebook"),
        (dict(target=nb, cron="* * * * *", params={"ghost": 1}), "parameter 'ghost' is not defined"),
        (dict(target=nb, cron="* * * * *", executor="warp"), "warp"),
        (dict(target=nb, on_data="no_such_view"), "is neither a file or folder"),
        (dict(cron="* * * * *"), "give a notebook to run or --monitor"),
        (dict(monitor="churn@champion", on_data="data"), "a monitoring schedule runs on --cron"),
        (dict(monitor="churn@champion", cron="* * * * *", window="soon"), "window 'soon' is not a duration"),
        (dict(target=nb, cron="* * * * *", name="bad name!"), "schedule name 'bad name!' must be"),
        (dict(target=nb, cron="* * * * *", name="job\n"), "schedule name 'job\\n' must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MlopsError) as caught:
            schedule.add(project=project, **kwargs)
        assert message in caught.value.message and "\n" not in caught.value.message, (kwargs, caught.value.message)
    assert schedule.schedules(project) == []
    schedule.add(nb, cron="0 3 * * *", project=project)
    with pytest.raises(ScheduleError, match="a schedule named 'job' exists"):
        schedule.add(nb, cron="0 4 * * *", project=project)


def test_schedule_commands(home):
    env = {"MLOPS_NB_HOME": str(home), "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, cwd=home)

    added = cli("schedule", "add", "job.ipynb", "--cron", "0 3 * * *", "-p", "fail", "False")
    assert added.returncode == 0, added.stderr
    assert "added schedule job: notebook job.ipynb, cron 0 3 * * *; next: " in added.stdout
    listed = cli("schedule", "list")
    assert "job" in listed.stdout and "0 3 * * *" in listed.stdout and "NEXT" in listed.stdout
    assert cli("schedule", "run-due").stdout.strip() == "Nothing is due."
    bad = cli("schedule", "add", "job.ipynb", "--cron", "3am daily", "--name", "other")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: cron expression '3am daily' is not valid")
    assert "Traceback" not in bad.stderr
    assert cli("schedule", "remove", "job").stdout.strip() == "removed schedule job"
    assert cli("schedule", "list").stdout.startswith("No schedules yet.")
    for command in ("add", "list", "remove", "run-due", "daemon"):
        assert cli("schedule", command, "--help").returncode == 0
    daemon = subprocess.Popen([*CLI, "schedule", "daemon"], env=env, cwd=home, stdout=subprocess.PIPE, text=True)
    assert daemon.stdout.readline().startswith("schedule daemon for ")
    daemon.send_signal(signal.SIGTERM)  # stops at once: it sleeps on an event the signal sets
    assert daemon.wait(10) == 0 and "schedule daemon stopped" in daemon.stdout.read()
