"""Fault injection: ``kill -9`` at seeded random moments inside a pipeline run, a feature ingest, a model
registration with an alias move, and the prediction-log writer (52 kills in all), then the promises checked:
every store opens and verifies (no partial artifact, segment or log file), no run stays ``running``, the alias
points at a version that exists, no process of ours outlives its owner, and a re-run resumes from the cache.
A table of fault points and what survived is printed (``-s`` shows it)."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlops_nb.project import Project
from mlops_nb.serving.verify import verify

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import write_notebook  # noqa: E402

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
KILLS = {"pipeline run": 16, "feature ingest": 14, "registration and alias move": 12, "prediction-log writer": 10}
WINDOW = {"pipeline run": (0.5, 7.0), "feature ingest": (1.0, 5.0), "registration and alias move": (2.0, 9.0),
          "prediction-log writer": (0.8, 2.5)}  # fmt: skip


@pytest.fixture(scope="module")
def home(tmp_path_factory, mlflow_template):
    home = tmp_path_factory.mktemp("faults") / "project"
    home.mkdir()
    project = Project(home).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    write_notebook(home / "p.ipynb", CELLS)
    fs = project.features
    fs.register_entity("customer", {"customer_id": "int64"})
    fs.register_view("activity", "customer", {"spend": "float64"}, timestamp="ts")
    return home


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


def _check(home: Path) -> list[str]:
    """What a kill broke (empty: nothing)."""
    project = Project(home)
    broken = list(verify(project).problems)
    running = [r.id for r in project.metadata.list_runs(None) if r.status == "running"]
    broken += [f"run {r} still running" for r in running]
    if project.mlflow_db.exists():
        held = project.registry.alias_version("m", "champion") if project.registry.models() else None
        versions = {v.version for v in project.registry.versions("m")} if held is not None else set()
        if held is not None and held not in versions:
            broken.append(f"champion points at v{held}, which does not exist")
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
    for site, kills in KILLS.items():
        survived = 0
        for _ in range(kills):
            child = _start(site, home)
            delay = rng.uniform(*WINDOW[site])
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
    assert sum(k for _, k, _ in table) >= 50
