"""Concurrency soak: 8 processes on one project for ``SOAK_SECONDS`` (default 120), all on 127.0.0.1.

Two pipeline runners (papermill with a new parameter each time; the dag executor over five parameter values, so
mostly cache hits), a feature ingester, a training-set reader, a model registrar moving the ``champion`` alias,
a runs/lineage querier (API and CLI), a REST poller of the Jupyter server extension, and a client sending 20
requests a second to a served model. The children run this file as a script (``python test_soak.py ROLE HOME
...``); each writes a JSON summary of what it did, what it wrote and every error that reached it. The parent
then checks that no error reached a user (a ``StoreBusyError`` would be one: with the default lock timeout none
may occur), that the stores hold exactly what the children say they wrote (runs, feature rows, model versions,
logged predictions), that the project verifies, and that no process of ours outlived its owner; it prints a table
(``-s`` shows it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
TOKEN = "soak-token"
RATE = 20  # requests a second to the served model
CELLS = [
    "%load_ext mlops_nb\nimport pandas as pd",
    "n = 100",
    "%%mlops step make\nframe = pd.DataFrame({'x': range(n)})",
    "%%mlops step total\ntotal = int(frame['x'].sum())",
]
ROW = {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 4.5, "petal_width": 1.5}
BATCH = 500  # feature rows per ingest


def cli(home: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mlops-nb --home HOME ARGS`` in a child process."""
    argv = [sys.executable, "-m", "mlops_nb.ui.cli", "--home", home, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=home)


def last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1][:300]


# Child roles: each loops until the deadline and returns (operations, what it wrote) -----------------------------------
def role_run(home: str, deadline: float, errors: list, mode: str) -> tuple[int, dict]:
    """Pipeline runs: ``fresh`` (papermill, a new ``n`` each time) or ``cached`` (dag executor, n cycling 100-104)."""
    runs, i = 0, 0
    while time.time() < deadline:
        if mode == "fresh":
            args = ["run", "p.ipynb", "-p", "n", str(1000 + i), "--executor", "notebook"]
        else:
            args = ["run", "p.ipynb", "-p", "n", str(100 + i % 5), "--executor", "dag", "--jobs", "1"]
        done = cli(home, *args)
        i += 1
        if done.returncode == 0:
            runs += 1
        else:
            errors.append(f"mlops-nb {' '.join(args)}: {last_line(done.stderr or done.stdout)}")
    return i, {"runs": runs}


def role_ingest(home: str, deadline: float, errors: list) -> tuple[int, dict]:
    """Feature ingests of BATCH rows, each with new event times."""
    import numpy as np
    import pandas as pd

    from mlops_nb.project import Project

    features = Project(home).features
    rows, i = 0, 0
    while time.time() < deadline:
        start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(seconds=(i + 1) * BATCH)
        frame = pd.DataFrame({"customer_id": np.arange(BATCH) % 200, "spend": np.random.rand(BATCH),
                              "ts": start + pd.to_timedelta(np.arange(BATCH), "s")})  # fmt: skip
        i += 1
        try:
            rows += features.ingest("activity", frame).rows
        except Exception as exc:  # noqa: BLE001 - every error that reaches a user is what this test counts
            errors.append(f"ingest: {type(exc).__name__}: {exc}"[:300])
        time.sleep(0.2)
    return i, {"feature_rows": rows}


def role_training(home: str, deadline: float, errors: list) -> tuple[int, dict]:
    """Point-in-time training sets of 200 labelled rows while the ingester writes."""
    import pandas as pd

    from mlops_nb.project import Project

    features = Project(home).features
    entity = pd.DataFrame({"customer_id": range(200), "event_timestamp": pd.Timestamp("2030-01-01", tz="UTC")})
    reads = 0
    while time.time() < deadline:
        try:
            frame = features.get_historical_features(entity, ["activity:spend"])
            if len(frame) != 200 or frame["spend"].isna().any():
                errors.append(f"training set: {len(frame)} rows, {int(frame['spend'].isna().sum())} without a value")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"training set: {type(exc).__name__}: {exc}"[:300])
        reads += 1
        time.sleep(0.1)
    return reads, {}


def role_registry(home: str, deadline: float, errors: list) -> tuple[int, dict]:
    """Model registrations, each version then promoted to ``champion``."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import mlops_nb
    from mlops_nb.project import Project

    project = Project(home)
    x, y = np.arange(40.0).reshape(20, 2), [0, 1] * 10
    versions, i = 0, 0
    while time.time() < deadline:
        i += 1
        try:
            version = mlops_nb.register_model(LogisticRegression(C=float(i)).fit(x, y), "m", project=project)
            versions += 1
            mlops_nb.promote("m", version.version, "champion", project=project)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"register/promote: {type(exc).__name__}: {exc}"[:300])
    return i, {"versions": versions}


def role_queries(home: str, deadline: float, errors: list) -> tuple[int, dict]:
    """``runs`` and ``lineage`` from a long-lived reader, and every fifth time from the CLI."""
    from mlops_nb.project import Project

    store = Project(home).metadata
    i = 0
    while time.time() < deadline:
        i += 1
        made = False  # whether a run of the pipeline has made the output `frame` yet
        try:
            store.list_runs(50)
            made = bool(store.list_runs(1, pipeline="p", status="succeeded"))
            if made:
                store.lineage("frame", direction="up")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"list_runs/lineage: {type(exc).__name__}: {exc}"[:300])
        if i % 5 == 0:
            for args in (["runs", "--json", "--limit", "5"], ["lineage", "frame", "--json"])[: 1 + made]:
                done = cli(home, *args, timeout=60)
                if done.returncode != 0:
                    errors.append(f"mlops-nb {' '.join(args)}: {last_line(done.stderr)}")
        time.sleep(0.05)
    return i, {}


def role_rest(home: str, deadline: float, errors: list, base: str) -> tuple[int, dict]:
    """The sidebar's polling: runs, models, features and deployments, twice a second."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"token {TOKEN}"
    calls = 0
    while time.time() < deadline:
        for route in ("runs", "models", "features", "deployments"):
            calls += 1
            try:
                answer = session.get(f"{base}/mlops/api/{route}", timeout=30)
                if answer.status_code != 200:
                    errors.append(f"GET {route}: {answer.status_code} {answer.text[:200]}")
            except requests.RequestException as exc:
                errors.append(f"GET {route}: {exc}"[:300])
        time.sleep(0.5)
    return calls, {}


def role_load(home: str, deadline: float, errors: list, url: str) -> tuple[int, dict]:
    """RATE one-row scoring requests a second, paced; remembers each answered request id."""
    import requests

    session = requests.Session()
    ids, sent, start = [], 0, time.time()
    while time.time() < deadline:
        sent += 1
        try:
            answer = session.post(url + "/invocations", json={"dataframe_records": [ROW]}, timeout=30)
            if answer.status_code == 200:
                ids.append(answer.headers["x-request-id"])
            else:
                errors.append(f"POST /invocations: {answer.status_code} {answer.text[:200]}")
        except requests.RequestException as exc:
            errors.append(f"POST /invocations: {exc}"[:300])
        time.sleep(max(0.0, start + sent / RATE - time.time()))
    return sent, {"predictions": len(ids), "request_ids": ids, "rate": sent / (time.time() - start)}


ROLES = {"run": role_run, "ingest": role_ingest, "training": role_training, "registry": role_registry,
         "queries": role_queries, "rest": role_rest, "load": role_load}  # fmt: skip


def child(role: str, home: str, name: str, *extra: str) -> None:
    """Import what the role needs, wait for the parent's go, loop until the deadline, then write the summary."""
    import mlops_nb.project  # noqa: F401 - imported before the start, as the role's own imports are below

    out = Path(home) / "soak"
    (out / f"ready-{name}").touch()
    while not (out / "go").exists():
        time.sleep(0.01)
    deadline = float((out / "go").read_text())
    errors: list[str] = []
    started = time.time()
    try:
        ops, wrote = ROLES[role](home, deadline, errors, *extra)
    except Exception as exc:  # noqa: BLE001 - a role that broke reports it as its error
        ops, wrote = 0, {}
        errors.append(f"{role} broke: {type(exc).__name__}: {exc}"[:300])
    summary = {"name": name, "role": role, "ops": ops, "wrote": wrote, "errors": errors,
               "seconds": time.time() - started}  # fmt: skip
    tmp = out / f".{name}.json"
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, out / f"{name}.json")


if __name__ == "__main__":
    child(*sys.argv[1:])
    sys.exit(0)


# The parent --------------------------------------------------------------------------------------------------------------
import psutil  # noqa: E402
import pytest  # noqa: E402

from mlops_nb.project import Project  # noqa: E402

sys.path.insert(0, str(HERE.parents[1]))
from nbtools import ScoringServer, jupyter_app, pipeline_project  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory, mlflow_template):
    """A project with the pipeline notebook, a feature view with one batch, and a served model ``iris`` v1."""
    import mlops_nb
    from mlops_nb.serving import build

    home = tmp_path_factory.mktemp("soak") / "project"
    project = pipeline_project(home, CELLS, mlflow_template, parameters=1)
    fs = project.features
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    fs.ingest("activity", pd.DataFrame({"customer_id": np.arange(200), "spend": np.ones(200),
                                        "ts": pd.Timestamp("2024-01-01", tz="UTC")}))  # fmt: skip
    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(ROW)
    mlops_nb.register_model(LogisticRegression(max_iter=500).fit(x, y), "iris", input_example=x.head(3),
                            project=project)  # fmt: skip
    build("iris/1", project=project, progress=False)
    (home / "soak").mkdir()
    return home


def test_eight_processes_for_two_minutes_lose_nothing_and_show_no_error(home, tmp_path):
    project = Project(home)
    server = ScoringServer(home, "iris/1")
    url = server.url
    out = home / "soak"
    with jupyter_app(home, tmp_path / "jupyter", app="server", token=TOKEN) as base:
        plan = [("run", "run-fresh", "fresh"), ("run", "run-cached", "cached"), ("ingest", "ingest"),
                ("training", "training"), ("registry", "registry"), ("queries", "queries"),
                ("rest", "rest", base), ("load", "load", url)]  # fmt: skip
        children = []
        for role, name, *extra in plan:
            log = open(out / f"{name}.log", "wb")  # noqa: SIM115 - closed when the child is reaped
            argv = [sys.executable, str(HERE), role, str(home), name, *extra]
            children.append((name, log, subprocess.Popen(argv, cwd=home, stdout=log, stderr=subprocess.STDOUT)))
        deadline = time.monotonic() + 120
        while not all((out / f"ready-{name}").exists() for name, _, _ in children):
            assert time.monotonic() < deadline, "the soak's children did not start"
            assert all(p.poll() is None for _, _, p in children), [(n, p.returncode) for n, _, p in children]
            time.sleep(0.05)
        (out / ".go").write_text(str(time.time() + SECONDS))
        os.replace(out / ".go", out / "go")  # atomically: a child never reads it half-written
        family: dict[int, psutil.Process] = {}
        end = time.monotonic() + SECONDS + 300
        while any(p.poll() is None for _, _, p in children):
            assert time.monotonic() < end, "a child of the soak did not stop after its deadline"
            for _, _, p in children:
                try:
                    family.update({q.pid: q for q in psutil.Process(p.pid).children(recursive=True)})
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.5)
        for _, log, _ in children:
            log.close()
    server.stop()  # a graceful stop flushes the prediction log

    summaries = {name: json.loads((out / f"{name}.json").read_text()) for name, _, _ in children}
    _, alive = psutil.wait_procs(list(family.values()), timeout=15)
    leftovers = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in alive if p.is_running()]
    for p in alive:
        p.kill()

    print(f"\n| process | operations | wrote | errors | ({SECONDS:.0f} s, 8 processes)\n|---|---|---|---|")
    for name, s in summaries.items():
        wrote = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in s["wrote"].items() if k != "request_ids")  # fmt: skip
        print(f"| {name} | {s['ops']} | {wrote or '-'} | {len(s['errors'])} |")
    errors = {name: s["errors"][:5] for name, s in summaries.items() if s["errors"]}
    assert not errors, errors
    assert not leftovers, leftovers

    # nothing lost: the stores hold exactly what the children say they wrote
    written = {k: sum(s["wrote"].get(k, 0) for s in summaries.values()) for k in ("runs", "feature_rows", "versions")}
    runs = project.metadata.list_runs(None, pipeline="p")
    assert len(runs) == written["runs"] and {r.status for r in runs} == {"succeeded"}
    assert len(project.features.view_data("activity")) == written["feature_rows"] + 200
    assert len(project.registry.versions("m")) == written["versions"]
    assert project.registry.alias_version("m", "champion") == written["versions"]
    ids = summaries["load"]["wrote"]["request_ids"]
    logged = project.predictions.read(request_ids=ids, labels=False)
    assert len(logged) == len(ids) and logged["request_id"].is_unique
    assert summaries["load"]["wrote"]["rate"] >= 0.8 * RATE
    assert min(s["ops"] for s in summaries.values()) > 0
    from mlops_nb.serving.verify import verify

    assert list(verify(project).problems) == []
