"""Fault injection: ``kill -9`` at seeded random moments inside a pipeline run, a feature ingest, a model
registration with an alias move, the prediction-log writer and a deployment switch (50 kills in all), then the
promises checked: every store opens and verifies (no partial artifact, segment or log file), no run stays
``running``, every alias points at a version that exists, no process of ours outlives its owner, the server that was
serving still serves (its stable address never stops answering), and a re-run resumes from the cache. A table of
fault points and what survived is printed (``-s`` shows it)."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from mlops_nb.project import Project
from mlops_nb.serving.rollout import _read_state
from mlops_nb.serving.verify import verify

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import pipeline_project  # noqa: E402

SEED = 17
CELLS = [
    "%load_ext mlops_nb\nimport time\nimport pandas as pd",
    "%%mlops step make\nframe = pd.DataFrame({'x': range(20000)})",
    "%%mlops step slow\ntime.sleep(0.5)\ndoubled = frame.assign(y=frame['x'] * 2)",
    "%%mlops step total\ntotal = int(doubled['y'].sum())",
]
CHILDREN = {
    "pipeline run": None,  # mlops-nb run
    "feature ingest": """
import sys, numpy as np, pandas as pd
from mlops_nb.project import Project
fs = Project(sys.argv[1]).features
for i in range(6):
    n = 20000
    fs.ingest("activity", pd.DataFrame({"customer_id": np.arange(n) % 500, "spend": np.random.rand(n),
              "ts": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) + i * n, "s")}))
""",
    "registration and alias move": """
import sys, numpy as np
from sklearn.linear_model import LogisticRegression
import mlops_nb
from mlops_nb.project import Project
project = Project(sys.argv[1])
for i in range(3):
    v = mlops_nb.register_model(LogisticRegression().fit(np.arange(40.0).reshape(20, 2), [0, 1] * 10), "m",
                                project=project)
    mlops_nb.promote("m", v.version, "champion", project=project)
""",
    "prediction-log writer": """
import sys, time
from mlops_nb.project import Project
writer = Project(sys.argv[1]).predictions.writer(flush_seconds=0.05, flush_rows=200)
i = 0
while True:
    writer.append([{"request_id": f"r{i}", "row": 0, "model": "m", "version": 1, "prediction": 1.0,
                    "status": 200, "latency_ms": 1.0}])
    i += 1
    if i % 50 == 0:
        time.sleep(0.01)
""",
}
# "deployment switch": `mlops-nb deploy iris/N` against the running deployment of iris, killed either in the client
# (the rollout goes on in the supervisor) or in the new scoring server it starts (during the rollout: it must roll
# back; after the switch: the supervisor restarts it)
KILLS = {"pipeline run": 13, "feature ingest": 11, "registration and alias move": 9, "prediction-log writer": 7,
         "deployment switch": 10}  # fmt: skip
WINDOW = {"pipeline run": (0.5, 7.0), "feature ingest": (1.0, 5.0), "registration and alias move": (2.0, 9.0),
          "prediction-log writer": (0.8, 2.5), "deployment switch": (0.5, 4.0)}  # fmt: skip
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, mlflow_template):
    home = tmp_path_factory.mktemp("faults") / "project"
    project = pipeline_project(home, CELLS, mlflow_template)
    _deploy_iris(project)
    yield home
    from mlops_nb.exceptions import DeployError
    from mlops_nb.serving import stop

    try:
        stop("iris", project=project)
    except DeployError:
        pass


def _deploy_iris(project: Project) -> None:
    """iris v1 and v2 registered and built; v1 deployed (the supervisor runs detached until the fixture ends)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    import mlops_nb
    from mlops_nb.serving import build, deploy
    from mlops_nb.serving.router import free_port

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = IRIS
    for model in (LogisticRegression(max_iter=500), DecisionTreeClassifier(max_depth=2, random_state=0)):
        v = mlops_nb.register_model(model.fit(x, y), "iris", input_example=x.head(3), project=project)
        build(f"iris/{v.version}", project=project, progress=False)
    deploy("iris/1", port=free_port(), window=0.2, project=project, progress=False)


class Pinger(threading.Thread):
    """Asks the stable address for /ping every 20 ms; counts the answers that were not 200."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.failures, self.calls = url + "/ping", [], 0
        self.halt = threading.Event()

    def run(self) -> None:
        import requests

        session = requests.Session()
        while not self.halt.is_set():
            self.calls += 1
            try:
                answer = session.get(self.url, timeout=5)
                if answer.status_code != 200:
                    self.failures.append(f"/ping gave {answer.status_code}")
            except requests.RequestException as exc:
                self.failures.append(f"/ping failed: {exc}"[:200])
            time.sleep(0.02)

    def stop(self) -> list[str]:
        self.halt.set()
        self.join(10)
        return self.failures


def _switch(home: Path, version: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mlops_nb.ui.cli", "--home", str(home), "deploy", f"iris/{version}",
            "--window", "0.5"]  # fmt: skip
    return subprocess.Popen(argv, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _start(site: str, home: Path) -> subprocess.Popen:
    if site == "pipeline run":
        argv = [sys.executable, "-m", "mlops_nb.ui.cli", "--home", str(home), "run", str(home / "p.ipynb"),
                "--no-cache", "--executor", "notebook"]  # fmt: skip
    else:
        argv = [sys.executable, "-c", CHILDREN[site], str(home)]
    return subprocess.Popen(argv, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _servers(state: dict) -> list[psutil.Process]:
    """The scoring servers (app/serve.py) under the deployment's supervisor."""
    found = []
    for p in _descendants(state["pid"]):
        try:
            if any(part.endswith("serve.py") for part in p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def _settled(home: Path, timeout: float = 60) -> tuple[dict | None, bool]:
    """The iris deployment's state, and whether it settled within ``timeout``: no rollout in progress (no canary,
    one scoring server, its stable one)."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = _read_state(Project(home), "iris")
        if state is not None and state.get("canary") is None and state.get("stable"):
            if [p.pid for p in _servers(state)] == [state["stable"]["pid"]]:
                return state, True
        time.sleep(0.2)
    return state, False


def _kill_in_switch(home: Path, delay: float, target: str) -> tuple[list[str], str]:
    """Start `mlops-nb deploy iris/N` (the other version) and kill -9 the client ``delay`` seconds after it starts,
    or the new scoring server it has the supervisor start ``delay / 2`` seconds after that server appears; then
    what broke, and what was killed."""
    import requests

    state, _ = _settled(home)
    if state is None:
        return ["the iris deployment is gone"], "-"
    version = 3 - int(state["stable"]["version"])
    pinger = Pinger(state["url"])
    pinger.start()
    client = _switch(home, version)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and client.poll() is None:
        time.sleep(0.02)
    killed = "nothing (the switch had ended)"
    if target == "new server":  # from the moment it appears: while it starts, is smoke-tested, watched, or after
        new = []
        appear = time.monotonic() + 90
        while not new and time.monotonic() < appear and client.poll() is None:
            new = [p for p in _servers(state) if p.pid != state["stable"]["pid"]]
            time.sleep(0.02)
        if new:
            time.sleep(delay / 2)
            now = _read_state(Project(home), "iris") or {}
            with contextlib.suppress(psutil.NoSuchProcess):
                new[0].kill()
                switched = (now.get("stable") or {}).get("pid") == new[0].pid
                killed = "new server, after the switch" if switched else "new server, during the rollout"
    if not killed.startswith("new server") and client.poll() is None:
        client.send_signal(signal.SIGKILL)
        killed = "client"
    try:
        client.wait(90)
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait()
    after, settled = _settled(home)
    broken = [f"the stable address: {f}" for f in pinger.stop()[:3]]
    if not settled:
        broken.append(f"the deployment did not settle: {after}")
    elif after["stable"]["version"] not in (1, 2) or after["url"] != state["url"]:
        broken.append(f"the deployment serves {after['stable']} at {after['url']}")
    else:
        try:
            if requests.get(after["url"] + "/ping", timeout=5).status_code != 200:
                broken.append("the stable address does not answer /ping")
        except requests.RequestException as exc:
            broken.append(f"the stable address does not answer: {exc}")
    return broken, killed


def _check(home: Path) -> list[str]:
    """What a kill broke (empty: nothing)."""
    project = Project(home)
    broken = list(verify(project).problems)
    running = [r.id for r in project.metadata.list_runs(None) if r.status == "running"]
    broken += [f"run {r} still running" for r in running]
    if project.mlflow_db.exists():
        for model in project.registry.models():
            versions = {v.version for v in project.registry.versions(model["name"])}
            for alias, held in model["aliases"].items():
                if held not in versions:
                    broken.append(f"{model['name']}@{alias} points at v{held}, which does not exist")
    log = project.predictions
    try:
        log.read()
    except Exception as exc:  # noqa: BLE001 - any failure to read is what this test is for
        if "no predictions" not in str(exc).lower():
            broken.append(f"the prediction log cannot be read: {exc}")
    return broken


@pytest.mark.slow
def test_kill_9_at_seeded_points_loses_nothing_and_leaves_no_process(home):
    rng = random.Random(SEED)
    table = []
    switch_kills: dict[str, int] = {}  # what a deployment switch's kill hit
    for site, kills in KILLS.items():
        survived = 0
        for i in range(kills):
            delay = rng.uniform(*WINDOW[site])
            if site == "deployment switch":
                broken, killed = _kill_in_switch(home, delay, "new server" if i % 2 else "client")
                switch_kills[killed] = switch_kills.get(killed, 0) + 1
                broken += _check(home)
                assert not broken, (site, killed, round(delay, 2), broken)
                survived += 1
                continue
            child = _start(site, home)
            deadline = time.monotonic() + delay
            family: dict[int, psutil.Process] = {}
            while time.monotonic() < deadline and child.poll() is None:
                family.update({p.pid: p for p in _descendants(child.pid)})
                time.sleep(0.05)
            family.update({p.pid: p for p in _descendants(child.pid)})
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.wait()
            _, alive = psutil.wait_procs(list(family.values()), timeout=15)
            broken = _check(home)
            broken += [f"process {p.pid} ({' '.join(p.cmdline())[:60]}) outlived its owner" for p in alive]
            for p in alive:
                p.kill()
            assert not broken, (site, round(delay, 2), broken)
            survived += 1
        table.append((site, kills, survived))

    done = subprocess.run([sys.executable, "-m", "mlops_nb.ui.cli", "--home", str(home), "run",
                           str(home / "p.ipynb"), "--executor", "notebook"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    assert _check(home) == []
    print("\n| fault point | kill -9 | survived |\n|---|---|---|")
    for site, kills, survived in table:
        print(f"| {site} | {kills} | {survived} |")
    print("deployment switch kills: " + ", ".join(f"{what} {n}" for what, n in sorted(switch_kills.items())))
    assert switch_kills.get("client", 0) >= 3, switch_kills
    assert sum(n for what, n in switch_kills.items() if what.startswith("new server")) >= 3, switch_kills
    assert sum(k for _, k, _ in table) >= 50
