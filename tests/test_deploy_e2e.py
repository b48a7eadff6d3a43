"""The deployment pipeline end to end: a supervisor, its router and real scoring servers on 127.0.0.1.

Rollout under load (2,000 requests while version 1 moves to 2: none fails, every one is logged once with the version
that answered), automatic rollback of a version that crashes on start or fails its smoke test, canaries, rollback,
``--watch`` following an alias, status and stop from another process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import requests

import mlops_nb
from mlops_nb.exceptions import DeployError
from mlops_nb.project import Project
from mlops_nb.serving import build, deploy, rollback, status, stop
from mlops_nb.serving.rollout import _alive, _call, _read_state
from mlops_nb.serving.router import free_port

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "mlops_nb.ui.cli"]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 4.5, "petal_width": 1.5}


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, mlflow_template):
    """iris v1 (champion) and v2 registered, both bundles built."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    home = tmp_path_factory.mktemp("deploy")
    project = Project(home).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = COLUMNS
    v1 = mlops_nb.register_model(LogisticRegression(max_iter=500).fit(x, y), "iris", input_example=x.head(3),
                                 project=project)  # fmt: skip
    mlops_nb.promote("iris", v1.version, "champion", project=project)
    mlops_nb.register_model(DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y), "iris",
                            input_example=x.sample(3, random_state=3), project=project)  # fmt: skip
    bundles = {1: build("iris/1", project=project, progress=False), 2: build("iris/2", project=project, progress=False)}
    yield {"project": project, "home": home, "bundles": bundles}
    for state in (project.mlops_dir / "deployments").glob("*.json"):
        try:
            stop(state.stem, project=project)
        except DeployError:
            pass


class Load:
    """A bounded client: ``threads`` sessions sending ``total`` one-row requests to ``url``."""

    def __init__(self, url: str, total: int, threads: int = 4, pause: float = 0.002):
        self.url, self.total, self.pause = url + "/invocations", total, pause
        self.answers: list[tuple[int, str, str]] = []  # status, request id, version that answered
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._next = iter(range(total))
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def _work(self) -> None:
        session = requests.Session()
        while not self.halt.is_set():
            with self._lock:
                if next(self._next, None) is None:
                    return
            try:
                answer = session.post(self.url, json={"dataframe_records": [ROW]}, timeout=30)
                with self._lock:
                    self.answers.append(
                        (answer.status_code, answer.headers.get("x-request-id"), answer.headers.get("x-mlops-version"))
                    )
            except requests.RequestException as exc:
                with self._lock:
                    self.errors.append(str(exc))
            time.sleep(self.pause)

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(120)

    @property
    def done(self) -> int:
        return len(self.answers) + len(self.errors)


def _wait_logged(project, ids: list[str], timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = project.predictions.read(request_ids=ids, labels=False)
        if len(frame) >= len(ids):
            return frame
        time.sleep(0.2)
    return project.predictions.read(request_ids=ids, labels=False)


def test_rollout_under_load_loses_no_request_and_logs_each_once(lifecycle):
    project = lifecycle["project"]
    port = free_port()
    first = deploy("iris/1", port=port, window=0.5, project=project, progress=False)
    assert first["outcome"] == "deployed" and first["version"] == 1 and first["url"] == f"http://127.0.0.1:{port}"
    load = Load(first["url"], 2000).start()
    deadline = time.monotonic() + 60
    while load.done < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = deploy("iris/2", window=0.5, project=project, progress=False)  # the same supervisor, its port
    assert second["outcome"] == "deployed", second
    assert second["previous"] == 1  # the switch happened while the load ran: answers below come from v1 and v2
    load.join()
    assert load.errors == [] and [a for a in load.answers if a[0] != 200] == []
    assert len(load.answers) == 2000
    answered = {rid: int(v) for _, rid, v in load.answers}
    assert set(answered.values()) == {1, 2}
    frame = _wait_logged(project, list(answered))
    assert len(frame) == 2000 and frame["request_id"].is_unique
    assert dict(zip(frame["request_id"], frame["version"].astype(int), strict=True)) == answered
    assert set(frame["variant"]) == {"stable"}
    smoke = project.predictions.read(labels=False, status=200)
    assert (smoke["variant"] == "smoke").sum() == 2 * 3  # each rollout's smoke test: the 3-row input example
    runs = project.metadata.list_runs(kind="deploy")
    assert {r.id for r in runs} >= {first["run_id"], second["run_id"]}
    run = project.metadata.get_run(second["run_id"])
    assert run.status == "succeeded" and run.params["previous"] == 1
    assert run.params["build_id"] == lifecycle["bundles"][2].build_id and set(run.params["timings"]) >= {
        "start",
        "smoke",
    }
    up = project.metadata.lineage(second["run_id"] + ".1", direction="up")
    assert any(n.attrs.get("artifact_kind") == "model_version" for n in up.upstream())  # deploy -> bundle -> version


def test_a_version_that_crashes_on_start_or_fails_its_smoke_test_never_takes_traffic(lifecycle, tmp_path):
    project, bundles = lifecycle["project"], lifecycle["bundles"]
    state = _read_state(project, "iris")
    serving = state["stable"]["version"] if state else None
    if state is None:
        deploy("iris/2", port=free_port(), window=0.2, project=project, progress=False)
        state, serving = _read_state(project, "iris"), 2
    url = state["url"] + "/invocations"
    broken = tmp_path / "broken"
    shutil.copytree(bundles[1].path, broken)
    (broken / "app" / "mlops_nb" / "serving" / "app.py").write_text("raise SystemExit('tampered')\n")
    result = _call(state, "POST", "/deploy", {"version": 1, "bundle": bundles[1].bundle, "path": str(broken)})
    assert result["outcome"] == "rolled_back" and "crashed on start" in result["reason"], result
    assert result["serving"] == serving
    assert requests.post(url, json={"dataframe_records": [ROW]}, timeout=5).headers["x-mlops-version"] == str(serving)
    wrong = tmp_path / "wrong"
    shutil.copytree(bundles[1].path, wrong)
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["expected"] = [9, 9, 9]  # what MLflow's model would say, if the bundle's model answered otherwise
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    result = _call(state, "POST", "/deploy", {"version": 1, "bundle": bundles[1].bundle, "path": str(wrong)})
    assert result["outcome"] == "rolled_back" and "failed its smoke test" in result["reason"], result
    assert "[9, 9, 9]" in result["reason"] and result["serving"] == serving
    refused = requests.post(f"http://127.0.0.1:{state['control_port']}/stop", json={}, timeout=5)
    assert refused.status_code == 403  # the control port answers only with the token of the 0600 state file
    plain = requests.post(f"http://127.0.0.1:{state['control_port']}/stop", data="{}", timeout=5,
                          headers={"x-mlops-token": state["token"], "content-type": "text/plain"})  # fmt: skip
    assert plain.status_code == 415 and plain.json()["reason"] == "send application/json"
    huge = requests.post(url, data=b"0" * (64 * 1024 * 1024 + 1), headers={"content-type": "application/json"},
                         timeout=60)  # fmt: skip
    assert huge.status_code == 413 and huge.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert oct(os.stat(project.mlops_dir / "deployments" / "iris.json").st_mode)[-3:] == "600"
    failed = project.metadata.get_run(result["run_id"])
    assert failed.kind == "deploy" and failed.status == "failed" and "smoke test" in failed.error
    assert status("iris", project=project)[0]["stable"]["version"] == serving


def test_canary_rollback_status_and_stop_from_the_command_line(lifecycle):
    project, home = lifecycle["project"], lifecycle["home"]
    env = {**os.environ, "MLOPS_NB_HOME": str(home)}
    if _read_state(project, "iris") is None:
        deploy("iris/2", port=free_port(), window=0.2, project=project, progress=False)
    deploy("iris/2", window=0.2, project=project, progress=False)
    state = _read_state(project, "iris")
    if state["stable"]["version"] != 2:
        deploy("iris/2", window=0.2, project=project, progress=False)
    from nbtools import listening

    addresses = listening(state["pid"])  # the supervisor, its router (stable address and control) and servers
    assert {("127.0.0.1", state["port"]), ("127.0.0.1", state["control_port"])} <= addresses, addresses
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses
    load = Load(state["url"], 100_000, threads=2, pause=0.005).start()
    done = subprocess.run([*CLI, "deploy", "iris/1", "--canary", "50", "--window", "1.5", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    load.halt.set()
    load.join()
    assert load.errors == [] and {a[0] for a in load.answers} == {200}
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "deployed"
    frame = _wait_logged(project, [rid for _, rid, _ in load.answers])
    assert {"canary", "stable"} <= set(frame["variant"])
    canary = frame[frame["variant"] == "canary"]
    assert set(canary["version"]) == {1}
    shown = subprocess.run([*CLI, "deploy", "--status"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "iris" in shown.stdout and "v1" in shown.stdout
    back = subprocess.run([*CLI, "deploy", "iris", "--rollback"], env=env, capture_output=True, text=True, timeout=120)
    assert back.returncode == 0, back.stderr + back.stdout
    assert "rolled back iris to v2 (was v1)" in back.stdout and "pinned until the alias moves" in back.stdout
    assert status("iris", project=project)[0]["pinned"] is True
    pid = _read_state(project, "iris")["pid"]
    ended = subprocess.run([*CLI, "deploy", "iris", "--stop"], env=env, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 0 and "stopped iris" in ended.stdout
    assert not _alive(pid)
    with pytest.raises(requests.ConnectionError):
        requests.get(state["url"] + "/ping", timeout=2)
    assert status(project=project) == []
    gone = subprocess.run([*CLI, "deploy", "iris", "--stop"], env=env, capture_output=True, text=True)
    assert gone.returncode == 1 and "iris is not deployed" in gone.stderr


def test_watch_follows_the_alias_so_an_approval_reaches_production(lifecycle):
    project = lifecycle["project"]
    if _read_state(project, "iris") is not None:
        stop("iris", project=project)
    mlops_nb.promote("iris", 1, "champion", project=project)
    result = deploy("iris@champion", port=free_port(), window=0.2, poll=0.3, project=project, progress=False)
    assert result["outcome"] == "deployed" and result["version"] == 1
    with pytest.raises(DeployError, match="no earlier version"):
        rollback("iris", project=project)
    with pytest.raises(DeployError, match="--watch follows an alias"):
        deploy("iris/1", watch=True, project=project, progress=False)
    told = deploy("iris@champion", watch=True, project=project, progress=False)  # follow it from now on
    assert told["outcome"] == "unchanged" and status("iris", project=project)[0]["watch"] == "champion"
    mlops_nb.promote("iris", 2, "champion", project=project)
    deadline = time.monotonic() + 90
    found = None
    while time.monotonic() < deadline:
        found = status("iris", project=project)[0]
        if found["stable"] and found["stable"]["version"] == 2 and found["last"].get("run_id"):
            break  # switched, drained and recorded
        time.sleep(0.3)
    assert found["stable"]["version"] == 2, found
    assert found["last"]["trigger"] == "watch"
    run = project.metadata.get_run(found["last"]["run_id"])
    assert run.trigger == "watch" and run.fired_by == "iris@champion -> v2"
    stop("iris", project=project)


def test_deploy_errors_are_one_line(lifecycle):
    env = {**os.environ, "MLOPS_NB_HOME": str(lifecycle["home"])}
    busy = free_port()
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        done = subprocess.run([*CLI, "deploy", "iris/1", "--port", str(busy)], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{busy}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([*CLI, "deploy", "iris/1", "--canary", "150"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "between 0 and 100" in done.stderr
    done = subprocess.run([*CLI, "deploy", "nosuch@champion"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "nosuch" in done.stderr and "Traceback" not in done.stderr


def test_a_killed_supervisor_takes_its_servers_with_it_and_their_log_is_kept(lifecycle):
    import signal

    project = lifecycle["project"]
    if _read_state(project, "iris") is not None:
        stop("iris", project=project)
    port = free_port()
    result = deploy("iris/1", port=port, window=0.2, project=project, progress=False)
    session = requests.Session()
    ids = [session.post(result["url"] + "/invocations", json={"dataframe_records": [ROW]}, timeout=5)
           .headers["x-request-id"] for _ in range(20)]  # fmt: skip
    state = _read_state(project, "iris")
    server = state["stable"]["pid"]
    os.kill(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server), "the server outlived its supervisor"
    assert len(_wait_logged(project, ids)) == 20  # it stopped gracefully: its log was flushed
    assert status(project=project) == []  # the stale state file is gone
    again = deploy("iris/1", port=port, window=0.2, project=project, progress=False)
    assert again["outcome"] == "deployed" and again["url"] == result["url"]
    stop("iris", project=project)


def test_a_killed_stable_server_is_restarted_and_no_request_fails(lifecycle):
    """kill -9 of the scoring server behind the stable address (a crash, the OOM killer): the supervisor restarts
    it from its bundle on a new port, and the requests sent meanwhile wait for it instead of failing."""
    import signal

    project = lifecycle["project"]
    if _read_state(project, "iris") is not None:
        stop("iris", project=project)
    result = deploy("iris/1", port=free_port(), window=0.2, project=project, progress=False)
    try:
        load = Load(result["url"], 600, threads=2, pause=0.01).start()
        deadline = time.monotonic() + 60
        while load.done < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        killed = _read_state(project, "iris")["stable"]
        os.kill(killed["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (_read_state(project, "iris") or {}).get("restarts", 0) < 1:
            time.sleep(0.1)
        load.join()
        state = _read_state(project, "iris")
        assert state["restarts"] == 1, state["last"]
        assert state["stable"]["version"] == 1 and state["stable"]["pid"] != killed["pid"]
        assert _alive(state["stable"]["pid"]) and state["stable"]["port"] != killed["port"]
        assert state["last"]["outcome"] == "restarted" and "version 1 exited (status -9)" in state["last"]["reason"]
        failed = load.errors + [a for a in load.answers if a[0] != 200]
        assert failed == [] and len(load.answers) == 600, failed[:5]
        again = requests.post(result["url"] + "/invocations", json={"dataframe_records": [ROW]}, timeout=10)
        assert again.status_code == 200 and again.headers["x-mlops-version"] == "1"
        shown = subprocess.run([*CLI, "--home", str(project.home), "deploy", "--status"], capture_output=True,
                               text=True, cwd=project.home)  # fmt: skip
        assert "iris: version 1 exited (status -9)" in shown.stdout and "(1 restart so far)" in shown.stdout
    finally:
        stop("iris", project=project)


def test_replace_serves_with_one_server_at_a_time_and_restarts_the_old_one_when_the_new_fails(lifecycle, tmp_path):
    """`deploy --replace` (the Binder path): each rollout stops the old server before it starts the new one."""
    import psutil

    project, bundles = lifecycle["project"], lifecycle["bundles"]
    if _read_state(project, "iris") is not None:
        stop("iris", project=project)
    first = deploy("iris/1", port=free_port(), window=0.2, replace=True, project=project, progress=False)
    try:
        assert first["outcome"] == "deployed" and first["version"] == 1
        assert status("iris", project=project)[0]["replace"] is True
        with pytest.raises(DeployError, match="--replace runs one server at a time"):
            deploy("iris/2", canary=20, replace=True, project=project, progress=False)
        with pytest.raises(DeployError, match="iris is deployed with --replace .* drop --canary"):
            deploy("iris/2", canary=20, project=project, progress=False)  # the running deployment's mode holds
        state = _read_state(project, "iris")
        supervisor = psutil.Process(state["pid"])
        old = state["stable"]["pid"]
        servers, errors, watching = [], [], threading.Event()

        def count():  # how many scoring servers the supervisor runs at once, sampled through the rollout
            while not watching.is_set():
                try:
                    found = 0
                    for child in supervisor.children():
                        try:
                            found += "serve.py" in " ".join(child.cmdline())
                        except psutil.Error:  # exiting: it is not serving any more
                            pass
                    servers.append(found)
                except Exception as exc:  # noqa: BLE001 - the test fails below with it
                    errors.append(exc)
                    return
                time.sleep(0.01)

        sampler = threading.Thread(target=count)
        sampler.start()
        try:
            second = deploy("iris/2", window=0.2, project=project, progress=False)  # the deployment keeps --replace
        finally:
            watching.set()
            sampler.join()
        assert errors == [] and second["outcome"] == "deployed" and second["version"] == 2 and not _alive(old)
        assert servers and max(servers) == 1, sorted(set(servers))  # never two at once
        url = state["url"] + "/invocations"
        assert requests.post(url, json={"dataframe_records": [ROW]}, timeout=5).headers["x-mlops-version"] == "2"

        broken = tmp_path / "broken"  # a version that crashes on start: the one that served is started again
        shutil.copytree(bundles[1].path, broken)
        (broken / "app" / "mlops_nb" / "serving" / "app.py").write_text("raise SystemExit('tampered')\n")
        result = _call(_read_state(project, "iris"), "POST", "/deploy",
                       {"version": 1, "bundle": bundles[1].bundle, "path": str(broken)})  # fmt: skip
        assert result["outcome"] == "rolled_back" and "crashed on start" in result["reason"], result
        assert result["serving"] == 2 and status("iris", project=project)[0]["stable"]["version"] == 2
        assert requests.post(url, json={"dataframe_records": [ROW]}, timeout=5).headers["x-mlops-version"] == "2"
        restarted = status("iris", project=project)[0]["stable"]
        assert _read_state(project, "iris")["stable"]["pid"] == restarted["pid"]  # the state file follows the restart
    finally:
        stop("iris", project=project)
