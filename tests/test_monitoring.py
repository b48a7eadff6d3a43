"""Monitoring a served model end to end: a model trained and registered by a notebook pipeline, its bundle served
by a real `mlops-nb serve` process on 127.0.0.1, clean then drifted traffic in its prediction log, late labels;
then reports, alerts that retrain the model through a pipeline run with trigger `drift`, a monitoring schedule
whose alert is the drift trigger, the command line and the magic."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pandas as pd
import pytest
import requests
from nbtools import write_notebook

import mlops_nb
import mlops_nb.promotion
import mlops_nb.schedule
from mlops_nb.core.clock import utcnow
from mlops_nb.exceptions import MonitoringError, ScheduleError
from mlops_nb.project import Project
from mlops_nb.serving.router import free_port

CLI = [sys.executable, "-m", "mlops_nb.ui.cli"]
FEATURES = ["age", "spend", "visits", "plan"]

HELPERS = '''
import numpy as np
import pandas as pd


def customers(n, seed, drift=False):
    """Seeded customers: age (float), spend (float), visits (many ints), plan (0-3: categorical); churn label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(55 if drift else 40, 10, n),
        "spend": rng.gamma(2.0, 30.0, n),
        "visits": rng.poisson(8, n),
        "plan": rng.choice(4, n, p=[0.1, 0.2, 0.3, 0.4] if drift else [0.4, 0.3, 0.2, 0.1]),
    })
    logit = -1.0 + 0.04 * (frame.age - 40) - 0.01 * frame.spend + 0.5 * frame.plan - 0.05 * frame.visits
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame, label
'''

TRAIN = [
    "%load_ext mlops_nb\nimport mlops_nb\nfrom sklearn.linear_model import LogisticRegression\n"
    "from sklearn.metrics import accuracy_score\nfrom helpers_monitor import customers",
    "seed = 0\nmodel_name = 'churn'",
    "%%mlops step prepare\nX, y = customers(3000, seed)\nX_train, X_test = X.iloc[:2400], X.iloc[2400:]\n"
    "y_train, y_test = y[:2400], y[2400:]",
    "%%mlops step train --outputs model,metrics\nmodel = LogisticRegression(max_iter=1000).fit(X_train, y_train)\n"
    "metrics = {'accuracy': float(accuracy_score(y_test, model.predict(X_test)))}",
    "%%mlops step register --outputs released\n"
    "version = mlops_nb.register_model(model, model_name, input_example=X_test.head(3), metrics=metrics)\n"
    "released = mlops_nb.promote(model_name, version.version, gates={'accuracy': '>= 0.5'}).to_dict()",
]


def _env(home) -> dict:
    return {**os.environ, "MLOPS_NB_HOME": str(home)}


def _customers(home, n, seed, drift=False):
    import importlib.util

    spec = importlib.util.spec_from_file_location("helpers_monitor", home / "helpers_monitor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.customers(n, seed, drift)


def _send(url: str, frame, batch: int = 100) -> list[tuple[str, int]]:
    """POST the rows in batches; return (request id, rows) per request."""
    sent = []
    with requests.Session() as session:
        for start in range(0, len(frame), batch):
            part = frame.iloc[start : start + batch]
            answer = session.post(url + "/invocations", json={"dataframe_split": {
                "columns": list(part.columns), "data": part.to_numpy().tolist()}}, timeout=30)  # fmt: skip
            assert answer.status_code == 200, answer.text
            sent.append((answer.headers["x-request-id"], len(part)))
    return sent


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, mlflow_template):
    """churn v1 trained by train.ipynb and served; 1,000 clean rows, then 1,000 drifted rows (age, plan) logged."""
    home = tmp_path_factory.mktemp("monitored")
    (home / "pyproject.toml").write_text("[project]\nname = 'mon'\n")
    project = Project(home).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    (home / "helpers_monitor.py").write_text(HELPERS)
    notebook = write_notebook(home / "train.ipynb", TRAIN, parameters=1)
    mlops_nb.run(notebook, project=project, progress=False)
    bundle = mlops_nb.build("churn@champion", project=project, progress=False)
    port = free_port()
    server = subprocess.Popen([*CLI, "serve", bundle.short, "--port", str(port)], env=_env(home),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.05)
        start = utcnow()
        clean, clean_y = _customers(home, 1000, 11)
        clean_ids = _send(url, clean)
        middle = utcnow()
        time.sleep(0.05)
        drifted, _ = _customers(home, 1000, 12, drift=True)
        _send(url, drifted)
        end = utcnow() + timedelta(seconds=1)
    finally:
        server.send_signal(signal.SIGTERM)  # a graceful stop writes the rest of the log
        server.wait(30)
    return {"project": project, "home": home, "notebook": notebook, "start": start, "middle": middle, "end": end,
            "clean_ids": clean_ids, "clean_y": clean_y}  # fmt: skip


def _clean_window(m) -> dict:
    return {"until": m["middle"], "window": (m["middle"] - m["start"]).total_seconds() + 1}


def test_clean_traffic_shows_no_drift_and_raises_no_alert(monitored):
    m = monitored
    report = mlops_nb.monitor("churn@champion", **_clean_window(m), rules=["drift_share > 0.3"],
                              project=m["project"])  # fmt: skip
    assert (report.model, report.version) == ("churn", 1)
    assert report.drift.drifted == [] and not report.drift.dataset_drift and report.alerts == []
    assert [c.column for c in report.drift.columns] == FEATURES
    assert {c.test for c in report.drift.columns} == {"wasserstein", "jensenshannon"}  # 2,400 reference rows
    assert report.drift.column("plan").type == "categorical"
    assert report.reference.startswith("training set X_train (") and "upstream of models:/churn/1" in report.reference
    assert report.prediction_drift is not None and not report.prediction_drift.drifted
    assert report.service["rows"] == 1000 and report.service["errors"] == 0 and report.metrics["p99_latency_ms"] > 0
    assert "performance: no labels attached" in " ".join(report.notes)
    # the report: a self-contained page with a histogram per column, and its JSON; both stored as artifacts
    page = report.html.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") >= len(FEATURES) + 1
    assert "<script" not in page and "http://" not in page and "https://" not in page
    data = json.loads(report.json.read_text())
    assert data["data_drift"]["dataset_drift"] is False and data["model"] == "churn"
    assert m["project"].artifacts.read_bytes(report.html_ref.hash) == report.html.read_bytes()
    # a run of kind monitor, its metrics, and lineage from the report back to the training set
    run = m["project"].metadata.get_run(report.run_id)
    assert (run.kind, run.trigger, run.status) == ("monitor", "api", "succeeded")
    assert run.metrics["drift_share"] == 0.0 and run.params["verdict"] == "ok"
    step = run.step_runs[0]
    assert set(step.outputs) == {"report.html", "report.json"} and "X_train" in step.inputs
    upstream = m["project"].metadata.lineage(report.html_ref.hash, "up").upstream()
    assert any(n.kind == "step_run" and n.attrs.get("step") == "prepare" for n in upstream)


def test_late_labels_give_performance_against_the_training_metrics(monitored):
    m = monitored
    ids = [request_id for request_id, rows in m["clean_ids"] for _ in range(rows)]
    rows = [i for _, n in m["clean_ids"] for i in range(n)]
    attached = mlops_nb.log_labels(ids, [int(v) for v in m["clean_y"]], rows=rows, project=m["project"])
    assert attached == 1000
    report = mlops_nb.monitor("churn/1", **_clean_window(m), rules=["accuracy < 0.99"], actions=False,
                              project=m["project"])  # fmt: skip
    perf = report.performance
    assert perf["task"] == "classification" and perf["labelled"] == 1000
    assert set(perf["overall"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert 0.5 < perf["overall"]["accuracy"] < 1 and 0.5 < perf["overall"]["roc_auc"] <= 1
    assert set(perf["training"]) == {"accuracy"} and 0.5 < perf["training"]["accuracy"] <= 1
    assert 1 <= len(perf["windows"]) <= 12 and sum(w["rows"] for w in perf["windows"]) == 1000
    assert [a["rule"] for a in report.alerts] == ["accuracy < 0.99"] and report.alerts[0]["outcome"] == "recorded"
    assert "Performance over time" in report.html.read_text()


def test_drift_alert_retrains_the_model_through_a_pipeline_run_with_trigger_drift(monitored):
    m = monitored
    project = m["project"]
    rule = {"rule": "drift_share > 0.3", "action": "run train.ipynb -p seed 1"}
    report = mlops_nb.monitor("churn", until=m["end"], window=(m["end"] - m["middle"]).total_seconds(),
                              rules=[rule, "p99_latency_ms > 100000"], project=project)  # fmt: skip
    assert sorted(report.drift.drifted) == ["age", "plan"] and report.drift.share == 0.5 and report.drift.dataset_drift
    assert report.line().startswith("churn v1: DRIFT (2/4 columns drifted, share 0.50)")
    [alert] = report.alerts
    assert alert["rule"] == "drift_share > 0.3" and alert["value"] == 0.5 and alert["monitor_run"] == report.run_id
    retrain = project.metadata.get_run(alert["action_run"])
    assert (retrain.kind, retrain.trigger, retrain.status) == ("pipeline", "drift", "succeeded")
    assert retrain.fired_by.startswith(alert["id"]) and retrain.params["seed"] == 1
    assert alert["outcome"] == f"run {retrain.id} succeeded"
    versions = mlops_nb.promotion.models("churn", project=project)
    assert max(v["version"] for v in versions) == 2  # the retrained version, through the registry's gates
    assert [r.id for r in project.metadata.list_runs(kind="pipeline", trigger="drift")] == [retrain.id]
    assert project.metadata.alerts(model="churn")[0]["id"] == alert["id"]


def test_a_monitoring_schedule_finds_drift_and_its_alert_is_the_drift_trigger(monitored, monkeypatch):
    m = monitored
    project = m["project"]
    (m["home"] / "pyproject.toml").write_text(
        "[project]\nname = 'mon'\n[tool.mlops_nb.monitoring]\nwindow = '1d'\n"
        f"[[tool.mlops_nb.monitoring.alerts]]\nrule = 'drift_share > 0.3'\naction = 'command {sys.executable} -c \"print(42)\"'\n"
    )
    project = Project(m["home"])
    now = utcnow()
    added = mlops_nb.schedule.add(monitor="churn/1", cron="*/5 * * * *", now=now, project=project)
    assert added.kind == "monitor" and added.next_due > now
    assert mlops_nb.schedule.run_due(project, now=now) == []  # not due yet
    [fired] = mlops_nb.schedule.run_due(project, now=added.next_due)
    run = project.metadata.get_run(fired["run_id"])
    assert (run.kind, run.trigger, fired["status"]) == ("monitor", "schedule", "succeeded")
    assert run.fired_by.startswith("schedule monitor-churn")
    alert = project.metadata.alerts(monitor_run=run.id)[0]
    assert alert["outcome"] == "command exited 0: 42"
    assert fired["detail"] == "drift, 1 alerts" and fired["error"] is None
    listed = mlops_nb.schedule.get("monitor-churn", project)
    assert listed.last_run == run.id and listed.next_due > added.next_due
    for model, message in (("nochurn", "--monitor nochurn: "), ("churn@nobody", "--monitor churn@nobody: no version has "
                                                                "alias 'nobody'")):  # fmt: skip
        with pytest.raises(ScheduleError, match=message):
            mlops_nb.schedule.add(monitor=model, cron="0 * * * *", name="other", project=project)
    with pytest.raises(MonitoringError, match="unknown metric 'drift_shar'"):
        mlops_nb.schedule.add(monitor="churn/1", cron="0 * * * *", rules=["drift_shar > 0.3"], name="other",
                              project=project)  # fmt: skip
    mlops_nb.schedule.remove("monitor-churn", project)
    with pytest.raises(ScheduleError, match="no schedule named 'monitor-churn'"):
        mlops_nb.schedule.remove("monitor-churn", project)


def test_monitor_from_the_command_line_and_its_alert_list(monitored):
    m = monitored
    env = _env(m["home"])
    window = str((m["end"] - m["start"]).total_seconds() + 60)
    done = subprocess.run([*CLI, "monitor", "churn/1", "--window", window, "--rule", "drift_share > 0.1 => log",
                           "--column", "visits=psi:0.5"], env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "churn v1: " in done.stdout and "ALERT drift_share > 0.1" in done.stdout and "report: " in done.stdout
    assert "DRIFTED COLUMN" in done.stdout
    listed = subprocess.run([*CLI, "monitor", "churn", "--alerts"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "drift_share > 0.1" in listed.stdout and "logged" in listed.stdout
    runs = subprocess.run([*CLI, "runs", "--kind", "monitor", "--trigger", "cli"], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert runs.returncode == 0 and runs.stdout.count("monitor") >= 1
    as_json = subprocess.run([*CLI, "monitor", "churn/1", "--window", window, "--json", "--no-actions"], env=env,
                             capture_output=True, text=True)  # fmt: skip
    data = json.loads(as_json.stdout)
    assert {c["column"] for c in data["data_drift"]["columns"]} == set(FEATURES)


def test_monitor_magic_shows_the_report_inline(monitored, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    m = monitored
    monkeypatch.chdir(m["home"])
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    try:
        assert shell.run_cell("%load_ext mlops_nb").success
        result = shell.run_cell("%mlops monitor churn/1 --window 1d")
        assert result.success, result.error_in_exec
        html = result.result._repr_html_()
        assert "Monitoring: churn v1" in html and "<svg" in html and ".mlops-monitor" in html
        bad = shell.run_cell("%mlops monitor")
        assert "usage: %mlops monitor" in str(bad.error_in_exec)
    finally:
        InteractiveShell.clear_instance()


def test_bad_monitoring_input_is_one_line(monitored, tmp_path):
    m = monitored
    project = m["project"]
    empty = Project(tmp_path / "empty").init()
    cases = [
        (lambda: mlops_nb.monitor("churn", project=empty), "no prediction log yet under"),
        (lambda: mlops_nb.monitor("ghost", project=project), "no predictions of model 'ghost' (models in the log: "),
        (lambda: mlops_nb.monitor("churn/9", project=project), "no predictions of churn v9 (versions of churn in the"),
        (lambda: mlops_nb.monitor("churn/1", until=m["start"] - timedelta(days=3), project=project),
         "no predictions of churn v1 between"),
        (lambda: mlops_nb.monitor("churn/1", reference="missing.parquet", project=project),
         "reference file missing.parquet does not exist"),
        (lambda: mlops_nb.monitor("churn/1", reference="no_such_view", project=project),
         "reference 'no_such_view' is neither a file nor a feature view"),
        (lambda: mlops_nb.monitor("churn/1", rules=["f1 <<< 0.8"], project=project), "is not METRIC OP NUMBER"),
        (lambda: mlops_nb.monitor("churn/1", rules=["acuracy < 0.8"], project=project),
         "unknown metric 'acuracy'; did you mean 'accuracy'?"),
        (lambda: mlops_nb.monitor("churn/1", rules=[{"rule": "f1 < 0.8", "action": "run nosuch.ipynb"}],
                                  project=project), "its notebook"),
        (lambda: mlops_nb.monitor("churn/1", rules=[{"rule": "f1 < 0.8", "action": "run train.ipynb -p ghost 1"}],
                                  project=project), "parameter 'ghost' is not defined"),
        (lambda: mlops_nb.monitor("churn/1", rules=[{"rule": "f1 < 0.8", "action": "command nosuchprogram"}],
                                  project=project), "its program 'nosuchprogram' is not found on PATH"),
        (lambda: mlops_nb.monitor("churn/1", rules=[{"rule": "f1 < 0.8", "action": "email me"}], project=project),
         "alert action 'email me' is not one of"),
        (lambda: mlops_nb.monitor("churn/1", window="soon", project=project), "window 'soon' is not a duration"),
        (lambda: mlops_nb.monitor("churn/1", window="99999999999w", project=project), "is longer than 10 years"),
        (lambda: mlops_nb.monitor("churn/1", columns=["age", "visits"], reference=pd.DataFrame({"age": [1.0]}),
                                  project=project), "column 'visits' is not in the reference"),
        (lambda: mlops_nb.monitor("churn@nobody", project=project), "has no version with alias 'nobody'"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(MonitoringError) as caught:
            call()
        assert message in caught.value.message and "\n" not in caught.value.message, caught.value.message
    (m["home"] / "pyproject.toml").write_text(
        "[project]\nname = 'mon'\n[tool.mlops_nb.monitoring]\ndrift_share = 'half'\n"
    )
    with pytest.raises(MonitoringError, match=r"drift_share 'half' must be a number in \(0, 1\]"):
        mlops_nb.monitor("churn/1", project=Project(m["home"]))
    (m["home"] / "pyproject.toml").write_text("[project]\nname = 'mon'\n")
    done = subprocess.run([*CLI, "monitor", "churn/1", "--column", "visits"], env=_env(m["home"]),
                          capture_output=True, text=True)  # fmt: skip
    assert (
        done.returncode == 1 and done.stderr.startswith("Error: --column 'visits'") and "Traceback" not in done.stderr
    )
    late = subprocess.run([*CLI, "monitor", "churn/1", "--until", "yesterday"], env=_env(m["home"]),
                          capture_output=True, text=True)  # fmt: skip
    assert late.returncode == 1 and late.stderr.strip() == (
        "Error: --until 'yesterday' is not an ISO time; write it as 2026-12-01T12:00:00"
    )


def test_a_version_registered_outside_a_pipeline_needs_a_reference(monitored, tmp_path):
    m = monitored
    project = m["project"]
    X, y = _customers(m["home"], 500, 3)
    from sklearn.tree import DecisionTreeClassifier

    plain = mlops_nb.register_model(DecisionTreeClassifier(max_depth=2).fit(X, y), "plain", input_example=X.head(2),
                                    project=project)  # fmt: skip
    bundle = mlops_nb.build(f"plain/{plain.version}", project=project, progress=False)
    from mlops_nb.serving.app import Scorer

    scorer = Scorer(bundle.path)
    columns, _ = scorer.prepare({c: X[c].to_numpy() for c in X.columns})
    predicted, proba = scorer.predict(columns)
    writer = project.predictions.writer()
    now = utcnow()
    writer.append([{"request_id": f"plain{i:06d}", "row": 0, "ts": now, "model": "plain", "version": plain.version,
                    "alias": "", "bundle": bundle.bundle, "variant": "direct", "status": 200, "error": None,
                    "latency_ms": 1.0, "prediction": int(predicted[i]), "probability": float(proba[i]),
                    **{f"in_{c}": X[c].iloc[i].item() for c in X.columns}} for i in range(len(X))])  # fmt: skip
    writer.close()
    with pytest.raises(MonitoringError, match="has no training set in the lineage.*pass --reference FILE"):
        mlops_nb.monitor("plain", project=project)
    reference = tmp_path / "reference.parquet"
    X.to_parquet(reference)
    report = mlops_nb.monitor("plain", reference=reference, project=project)
    assert report.reference == f"file {reference}" and report.drift.drifted == []
    run = project.metadata.get_run(report.run_id)
    assert "reference.parquet" in run.step_runs[0].inputs


def test_a_model_trained_on_a_feature_store_training_set_is_compared_with_the_feature_view(monitored):
    m = monitored
    project = m["project"]
    notebook = write_notebook(m["home"] / "fs_train.ipynb", [
        "%load_ext mlops_nb\nimport mlops_nb\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression\n"
        "from helpers_monitor import customers\nfs = mlops_nb.FeatureStore()",
        "seed = 0",
        "%%mlops step ingest --outputs refs\nX, y = customers(400, seed)\nX['customer_id'] = range(400)\n"
        "X['event_ts'] = pd.Timestamp('2026-01-01', tz='UTC')\nfs.register_entity('customer', {'customer_id': 'int64'})\n"
        "fs.register_view('activity', 'customer', {'age': 'float64', 'spend': 'float64'})\n"
        "fs.ingest('activity', X[['customer_id', 'event_ts', 'age', 'spend']])\nrefs = ['activity:age', 'activity:spend']",
        "%%mlops step register --outputs version\nlabels = pd.DataFrame({'customer_id': range(400), 'churn': y,\n"
        "    'ts': pd.Timestamp('2026-02-01', tz='UTC')})\ntraining = fs.get_historical_features(labels, refs, timestamp='ts')\n"
        "model = LogisticRegression().fit(training[['age', 'spend']], training['churn'])\n"
        "version = mlops_nb.register_model(model, 'fsmodel', input_example=training[['age', 'spend']].head(2)).version",
    ], parameters=1)  # fmt: skip
    mlops_nb.run(notebook, project=project, progress=False)
    bundle = mlops_nb.build("fsmodel/1", project=project, progress=False)
    X, _ = _customers(m["home"], 300, 22)  # a seed whose sample is clean at the 5 % level
    writer = project.predictions.writer()
    now = utcnow()
    writer.append([{"request_id": f"fsm{i:07d}", "row": 0, "ts": now, "model": "fsmodel", "version": 1, "alias": "",
                    "bundle": bundle.bundle, "variant": "direct", "status": 200, "error": None, "latency_ms": 1.0,
                    "prediction": 0, "probability": 0.2, "in_age": float(X.age.iloc[i]),
                    "in_spend": float(X.spend.iloc[i])} for i in range(len(X))])  # fmt: skip
    writer.close()
    report = mlops_nb.monitor("fsmodel", project=project)
    assert report.reference == "feature view activity upstream of models:/fsmodel/1"
    assert [c.column for c in report.drift.columns] == ["age", "spend"] and report.drift.drifted == []
