"""App bundles, the scoring server and the prediction log, on real processes and real HTTP on 127.0.0.1.

One project per module: two versions of an iris model registered in a real MLflow SQLite store, their bundles
built once (a build downloads the model from MLflow and checks it, seconds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from nbtools import ScoringServer as Server

from mlops_nb.exceptions import BundleError, NotFoundError, ServingError
from mlops_nb.project import Project
from mlops_nb.serving import build, parse_model_spec
from mlops_nb.serving.manifest import open_bundle
from mlops_nb.store.predictions import LogWriter, PredictionLog

CLI = [sys.executable, "-m", "mlops_nb.ui.cli"]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = COLUMNS
    return x, y


@pytest.fixture(scope="module")
def served(tmp_path_factory, mlflow_template):
    """A project with iris v1 (logistic regression, champion) and v2 (a tree), and the bundle of v1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    import mlops_nb

    home = tmp_path_factory.mktemp("served")
    project = Project(home).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    x, y = iris()
    v1 = mlops_nb.register_model(LogisticRegression(max_iter=500).fit(x, y), "iris", input_example=x.head(3),
                                 metrics={"accuracy": 0.97}, project=project)  # fmt: skip
    mlops_nb.promote("iris", v1.version, "champion", project=project)
    v2 = mlops_nb.register_model(DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, y), "iris",
                                 input_example=x.head(3), metrics={"accuracy": 0.95}, project=project)  # fmt: skip
    bundle = build("iris@champion", project=project, progress=False)
    return {"project": project, "home": home, "bundle": bundle, "v1": v1, "v2": v2, "x": x}


def _env(home: Path) -> dict:
    return {**os.environ, "MLOPS_NB_HOME": str(home)}


@pytest.fixture(scope="module")
def server(served):
    s = Server(served["home"], served["bundle"].short)
    yield s
    s.stop()


# bundles ----------------------------------------------------------------------------------------------------------
def test_bundle_holds_the_model_app_requirements_and_dockerfile(served):
    b = served["bundle"]
    assert (b.model, b.version) == ("iris", 1)
    for rel in ("manifest.json", "model/model.pkl", "app/serve.py", "app/mlops_nb/serving/app.py", "requirements.txt"):
        assert (b.path / rel).is_file(), rel
    manifest = json.loads((b.path / "manifest.json").read_text())
    assert manifest["model"]["uri"] == "models:/iris/1"
    assert manifest["model"]["hash"] == served["v1"].model_hash
    assert [c["name"] for c in manifest["signature"]["inputs"]] == COLUMNS
    assert manifest["input_example"]["columns"] == COLUMNS and len(manifest["expected"]) == 3
    assert manifest["build_id"] == b.run_id and manifest["model"]["model_uuid"]
    pins = (b.path / "requirements.txt").read_text().split()
    names = {p.split("==")[0].lower() for p in pins}
    assert {"scikit-learn", "starlette", "uvicorn", "pandas", "numpy", "pyarrow", "cloudpickle"} <= names
    assert all("==" in p for p in pins)
    assert "mlflow" not in names  # the app serves the model without MLflow
    docker = (b.path / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r /bundle/requirements.txt" in docker and "app/serve.py" in docker


def test_same_model_code_and_requirements_give_the_same_bundle(served):
    project, first = served["project"], served["bundle"]
    again = build("iris/1", project=project, progress=False)
    assert again.reused and again.bundle == first.bundle and again.build_id == first.build_id
    other = build("iris/2", project=project, progress=False)
    assert not other.reused and other.bundle != first.bundle and other.version == 2


def test_a_tampered_bundle_is_refused(served, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(served["bundle"].path, copy)
    open_bundle(copy)
    with open(copy / "model" / "model.pkl", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(BundleError, match="changed since it was built: model/model.pkl"):
        open_bundle(copy)
    shutil.copy(served["bundle"].path / "model" / "model.pkl", copy / "model" / "model.pkl")
    (copy / "requirements.txt").write_text("numpy\n")
    with pytest.raises(BundleError, match="requirements.txt or the feature refs are altered"):
        open_bundle(copy)


def test_build_run_links_the_bundle_and_the_model_version_in_lineage(served):
    project, b = served["project"], served["bundle"]
    up = project.metadata.lineage(b.bundle, direction="up")
    assert any(
        n.attrs.get("artifact_kind") == "model_version" and n.label.startswith("models:/iris/1") for n in up.upstream()
    )
    run = project.metadata.get_run(b.run_id)
    assert run.kind == "build" and run.status == "succeeded"
    down = subprocess.run([*CLI, "lineage", "models:/iris/1", "--direction", "down", "--json"], env=_env(served["home"]),
                          capture_output=True, text=True)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert b.bundle in {n["id"] for n in json.loads(down.stdout)["nodes"]}


def test_model_specs_and_unknown_models():
    assert parse_model_spec("churn@champion") == ("churn", "@champion")
    assert parse_model_spec("models:/churn/3") == ("churn", "3")
    assert parse_model_spec("churn:v2") == ("churn", "2")
    assert parse_model_spec("churn") == ("churn", "@champion")


def test_build_cli_errors_are_one_line(served):
    done = subprocess.run([*CLI, "build", "nosuch@champion"], env=_env(served["home"]), capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "nosuch" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([*CLI, "serve", "abcdef123456"], env=_env(served["home"]), capture_output=True, text=True)
    assert done.returncode == 1 and "'abcdef123456'" in done.stderr and "Traceback" not in done.stderr


# the scoring protocol -----------------------------------------------------------------------------------------------
def test_every_payload_shape_gives_what_mlflow_pyfunc_gives(served, server):
    rows = served["x"].sample(20, random_state=1)
    expected = served["project"].registry.load_pyfunc("models:/iris@champion").predict(rows).tolist()
    records = rows.to_dict(orient="records")
    split = json.loads(rows.to_json(orient="split", index=False))
    payloads = [
        {"json": {"dataframe_split": split}},
        {"json": {"dataframe_records": records}},
        {"json": {"instances": records}},
        {"json": {"inputs": {c: rows[c].tolist() for c in COLUMNS}}},
        {"json": {"inputs": rows[COLUMNS].values.tolist(), "params": {}}},
        {"data": rows.to_csv(index=False), "headers": {"content-type": "text/csv"}},
    ]
    for payload in payloads:
        answer = requests.post(server.url + "/invocations", timeout=10, **payload)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": expected}
        assert len(answer.headers["x-request-id"]) == 32


def test_health_version_and_metrics(served, server):
    health = requests.get(server.url + "/health", timeout=5).json()
    assert health["status"] == "ok" and health["model"] == "iris" and health["version"] == 1
    version = requests.get(server.url + "/version", timeout=5).json()
    assert version["bundle"] == served["bundle"].bundle and version["build_id"] == served["bundle"].build_id
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert 'mlops_model_info{model="iris",version="1"' in text
    assert "# TYPE mlops_request_seconds histogram" in text and 'mlops_requests_total{status="200"}' in text


def test_serve_listens_on_loopback_only_by_default(server):
    from nbtools import listening

    addresses = listening(server.process.pid)
    assert (("127.0.0.1", server.port)) in addresses and {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses


def test_bad_requests_get_a_clear_4xx_are_logged_and_the_server_keeps_serving(served, server):
    post = server.url + "/invocations"
    good = {"dataframe_records": [dict(zip(COLUMNS, [5.1, 3.5, 1.4, 0.2], strict=True))]}
    cases = [
        ({"json": {"dataframe_records": [{"sepal_length": 5.1}]}}, 400, "missing column 'sepal_width'"),
        (
            {"json": {"dataframe_records": [{**good["dataframe_records"][0], "petal_width": "wide"}]}},
            400,
            "column 'petal_width' expects double values, got 'wide'",
        ),  # fmt: skip
        ({"data": "{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"records": []}}, 400, "exactly one of dataframe_split"),
        ({"data": "x", "headers": {"content-type": "text/plain"}}, 415, "not 'text/plain'"),
        ({"data": b"0" * (10 * 1024 * 1024 + 1), "headers": {"content-type": "application/json"}}, 413, "limit"),
    ]
    ids = []
    for payload, status, message in cases:
        answer = requests.post(post, timeout=30, **payload)
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert message in body["message"] and body["error_code"] and "\n" not in body["message"]
        ids.append(answer.headers["x-request-id"])
    unknown = requests.get(server.url + "/predict", timeout=5)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    ids.append(unknown.headers["x-request-id"])
    assert requests.post(post, json=good, timeout=5).status_code == 200  # still serving
    log = served["project"].predictions
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and log.count(request_ids=ids) < len(ids):
        time.sleep(0.2)
    rows = log.read(request_ids=ids)
    assert len(rows) == len(ids)
    assert sorted(rows["status"].tolist()) == sorted([400, 400, 400, 400, 415, 413, 404])
    assert rows["error"].notna().all() and rows["prediction"].isna().all()


_ROW = dict(zip(COLUMNS, [5.1, 3.5, 1.4, 0.2], strict=True))
HOSTILE_PAYLOADS = [
    (
        "nan-value",
        '{"dataframe_records": [{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}',
    ),
    (
        "infinite-value",
        '{"dataframe_records": [{"sepal_length": 1e999, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}',
    ),
    ("nested-object", json.dumps({"dataframe_records": [{**_ROW, "sepal_length": {"a": [1, 2]}}]})),
    ("list-value", json.dumps({"dataframe_records": [{**_ROW, "sepal_length": [1.0, 2.0]}]})),
    ("bool-value", json.dumps({"dataframe_records": [{**_ROW, "sepal_length": True}]})),
    ("null-value", json.dumps({"dataframe_records": [{**_ROW, "sepal_length": None}]})),
    ("records-not-a-list", json.dumps({"dataframe_records": "rows"})),
    ("record-not-an-object", json.dumps({"dataframe_records": [1, 2, 3]})),
    ("no-records", json.dumps({"dataframe_records": []})),
    ("split-lengths-differ", json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0]]}})),
    ("split-not-an-object", json.dumps({"dataframe_split": [1, 2]})),
    ("instances-a-string", json.dumps({"instances": "x"})),
    ("inputs-ragged", json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0], [1.0]]})),
    ("top-level-list", json.dumps([_ROW])),
    ("top-level-number", "42"),
    ("deeply-nested", '{"dataframe_records": ' + "[" * 100000 + "]" * 100000 + "}"),
    ("unicode-columns", json.dumps({"dataframe_records": [{"s\u00e9pal\U0001f600": 1.0}]})),
    ("ten-thousand-columns", json.dumps({"dataframe_records": [{f"c{i}": 1.0 for i in range(10000)}]})),
    ("not-utf8", b'{"dataframe_records": [{"\xff\xfe": 1}]}'.replace(b"\\xff\\xfe", b"\xff\xfe")),
    ("two-shapes", json.dumps({"dataframe_records": [_ROW], "instances": [[1.0, 2.0, 3.0, 4.0]]})),
]


@pytest.mark.parametrize("payload", [p for _, p in HOSTILE_PAYLOADS], ids=[i for i, _ in HOSTILE_PAYLOADS])
def test_a_hostile_scoring_payload_gets_a_one_line_4xx_and_the_server_keeps_serving(server, payload):
    answer = requests.post(server.url + "/invocations", data=payload, timeout=30,
                           headers={"content-type": "application/json"})  # fmt: skip
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    message = answer.json()["message"]
    assert "\n" not in message and 0 < len(message) <= 300, message
    assert not re.search(r"\b\w+(Error|Exception)\b|Traceback", message), message
    good = requests.post(server.url + "/invocations", json={"dataframe_records": [_ROW]}, timeout=10)
    assert good.status_code == 200  # still serving


def test_serve_on_a_busy_port_is_one_line(served):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([*CLI, "serve", served["bundle"].short, "--port", str(port)], env=_env(served["home"]),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and f"Error: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "serving " not in done.stdout and "Traceback" not in done.stderr


def test_graceful_stop_loses_no_log_rows(served):
    s = Server(served["home"], served["bundle"].short)
    session = requests.Session()
    ids = []
    for i in range(150):
        row = dict(zip(COLUMNS, [5.0 + i / 100, 3.4, 1.5, 0.2], strict=True))
        ids.append(
            session.post(s.url + "/invocations", json={"dataframe_records": [row]}, timeout=5).headers["x-request-id"]
        )
    s.stop()  # SIGTERM right after the last answer: the rows still wait in memory
    assert s.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful stop
    rows = served["project"].predictions.read(request_ids=ids)
    assert len(rows) == 150 and set(rows["version"]) == {1} and rows["in_sepal_length"].notna().all()
    assert rows["probability"].between(0, 1).all()


def test_labels_attach_to_logged_predictions_and_request_lineage(served, server, tmp_path):
    post = server.url + "/invocations"
    rows = served["x"].head(4).to_dict(orient="records")
    ids = [requests.post(post, json={"dataframe_records": [r]}, timeout=5).headers["x-request-id"] for r in rows]
    log = served["project"].predictions
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and log.count(request_ids=ids) < 4:
        time.sleep(0.2)
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"request_id": ids, "label": [0, 0, 1, 0]}).to_csv(truth, index=False)
    done = subprocess.run([*CLI, "labels", str(truth)], env=_env(served["home"]), capture_output=True, text=True)
    assert done.returncode == 0 and "attached 4 labels" in done.stdout, done.stderr
    import mlops_nb

    assert mlops_nb.log_labels([ids[2]], [0], project=served["project"]) == 1  # a later label wins
    got = log.read(request_ids=ids).set_index("request_id")["label"]
    assert [int(got[i]) for i in ids] == [0, 0, 0, 0]
    with pytest.raises(NotFoundError, match="no logged prediction for request id nosuch"):
        mlops_nb.log_labels(["nosuch"], [1], project=served["project"])
    with pytest.raises(ServingError, match="2 request ids, 1 labels"):
        mlops_nb.log_labels(ids[:2], [1], project=served["project"])
    lineage = subprocess.run([*CLI, "lineage", f"request:{ids[0][:12]}", "--json"], env=_env(served["home"]),
                             capture_output=True, text=True)  # fmt: skip
    assert lineage.returncode == 0, lineage.stderr
    graph = json.loads(lineage.stdout)
    kinds = {n.get("artifact_kind") for n in graph["nodes"]}
    assert graph["root"] == f"prediction:request:{ids[0]}" and {"bundle", "model_version"} <= kinds


def test_batch_scoring_writes_predictions_and_records_a_run(served, tmp_path):
    source = tmp_path / "customers.csv"
    served["x"].head(50).to_csv(source, index=False)
    out = tmp_path / "scored.parquet"
    done = subprocess.run([*CLI, "score", "iris@champion", str(source), "-o", str(out), "--json"],
                          env=_env(served["home"]), capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    scored = pd.read_parquet(out)
    expected = served["project"].registry.load_pyfunc("models:/iris/1").predict(served["x"].head(50)).tolist()
    assert result["rows"] == 50 and scored["prediction"].tolist() == expected
    run = served["project"].metadata.get_run(result["run_id"])
    assert run.kind == "deploy" and run.step_runs[0].step == "score"
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"sepal_length": [1.0]}).to_csv(bad, index=False)
    done = subprocess.run([*CLI, "score", "iris@champion", str(bad), "-o", str(tmp_path / "o.csv")],
                          env=_env(served["home"]), capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "rows 0-0: missing column 'sepal_width'" in done.stderr
    assert not (tmp_path / "o.csv").exists()
    other = tmp_path / "data.json"
    other.write_text("{}")
    done = subprocess.run([*CLI, "score", "iris@champion", str(other), "-o", str(tmp_path / "o.csv")],
                          env=_env(served["home"]), capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "is neither .parquet nor .csv" in done.stderr and "build iris" not in done.stderr


# the prediction log as a store -------------------------------------------------------------------------------------
def _row(i: int, ts: datetime, **extra) -> dict:
    return {"request_id": f"r{i}", "row": 0, "ts": ts, "model": "m", "version": 1, "alias": "", "bundle": "b",
            "variant": "direct", "status": 200, "error": None, "latency_ms": 1.0, "prediction": i % 2,
            "probability": 0.5, "in_x": float(i), **extra}  # fmt: skip


def test_log_writer_flushes_by_time_and_size_and_on_close(tmp_path):
    log = PredictionLog(tmp_path / "predictions")
    writer = LogWriter(log.root, flush_seconds=0.2, flush_rows=50)
    now = datetime.now(UTC).replace(tzinfo=None)
    writer.append([_row(i, now) for i in range(60)])  # over flush_rows: written at once
    deadline = time.monotonic() + 5
    while writer.written < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.written == 60
    writer.append([_row(100, now)])  # one row, far under flush_rows: written by time alone
    deadline = time.monotonic() + 10
    while writer.written < 61 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.written == 61
    writer.append([_row(101, now)])
    writer.close()  # on close
    assert log.count() == 62 and log.count(version=1, status=200) == 62
    assert not list(log.root.rglob("*.tmp"))
    assert log.count(since=now + timedelta(seconds=1)) == 0


def test_compaction_merges_days_and_drops_those_past_retention(tmp_path):
    log = PredictionLog(tmp_path / "predictions", retention_days=30)
    recent = datetime.now(UTC).replace(tzinfo=None)
    old = recent - timedelta(days=60)
    for ts in (old, recent, recent, recent):
        writer = LogWriter(log.root, flush_seconds=10)
        writer.append([_row(int(ts.timestamp() * 1e6) % 10_000 + len(log.segments()), ts)])
        writer.close()
    assert len(log.segments()) == 4
    result = log.compact()
    assert result == {"merged": 3, "removed": 1, "rows": 3}
    assert len(log.segments()) == 1 and log.count() == 3


def test_a_failed_write_keeps_the_rows_for_the_next_attempt(tmp_path):
    now = datetime.now(UTC).replace(tzinfo=None)
    day = tmp_path / now.strftime("%Y-%m-%d")
    day.write_text("a file where the day's folder goes: every write fails")
    writer = LogWriter(tmp_path, flush_seconds=0.05)
    writer.append([_row(i, now) for i in range(5)])
    deadline = time.monotonic() + 5
    while writer.errors < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.errors >= 2 and writer.written == 0 and writer.pending == 5 and writer.last_error
    day.unlink()  # the disk is back
    deadline = time.monotonic() + 10
    while writer.written < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.close()
    assert writer.written == 5 and writer.last_error is None and PredictionLog(tmp_path).count() == 5


def test_a_changed_bundle_is_set_aside_and_built_again(served):
    project = served["project"]
    first = build("iris/2", project=project, progress=False)
    (first.path / "requirements.txt").write_text("numpy\n")
    again = build("iris/2", project=project, progress=False)
    assert again.bundle == first.bundle and not again.reused and again.run_id != first.run_id
    open_bundle(again.path)
    assert list(project.builds_dir.glob(f".tampered-{first.short}-*"))


def test_mixed_types_in_a_column_still_write_a_segment(tmp_path):
    writer = LogWriter(tmp_path, flush_seconds=10)
    now = datetime.now(UTC).replace(tzinfo=None)
    writer.append([_row(1, now, in_x="a"), _row(2, now, in_x=2.5)])
    writer.close()
    frame = PredictionLog(tmp_path).read(labels=False)
    assert sorted(frame["in_x"].tolist()) == ["2.5", "a"]


def test_the_scorer_checks_types_by_signature(served):
    from mlops_nb.serving.app import BadRequest, Scorer

    scorer = Scorer(served["bundle"].path)
    assert scorer.array_ok  # a scikit-learn model answers the same for a plain array: the fast path
    columns, n = scorer.prepare({c: [1.0, None] for c in COLUMNS})
    assert n == 2 and np.isnan(columns["sepal_length"][1])
    with pytest.raises(BadRequest, match="expects double values, got True"):
        scorer.prepare({**{c: [1.0] for c in COLUMNS}, "sepal_length": [True]})
    with pytest.raises(BadRequest, match="the request has no rows"):
        scorer.prepare({c: [] for c in COLUMNS})


def test_a_request_may_carry_only_entity_keys_for_online_features(served, tmp_path):
    """A bundle built with online feature refs joins the latest online values of the keys a request carries."""
    from sklearn.linear_model import LogisticRegression

    import mlops_nb
    from mlops_nb.serving.app import BadRequest, Scorer

    project = served["project"]
    fs = project.features
    fs.register_entity("flower", {"flower_id": "int64"})
    fs.register_view("petals", "flower", {"flower_id": "int64", "petal_length": "float64", "petal_width": "float64"})
    x, y = iris()
    now = pd.Timestamp.now(tz="UTC").floor("s")
    table = pd.DataFrame({"flower_id": range(len(x)), "petal_length": x.petal_length, "petal_width": x.petal_width,
                          "event_ts": now - pd.Timedelta(hours=1)})  # fmt: skip
    fs.ingest("petals", table)
    fs.materialize("petals")
    features = x[["petal_length", "petal_width"]]
    version = mlops_nb.register_model(LogisticRegression(max_iter=500).fit(features, y), "petals",
                                      input_example=features.head(2), project=project)  # fmt: skip
    done = subprocess.run([*CLI, "build", f"petals/{version.version}", "--feature", "petals:*", "--json"],
                          env=_env(served["home"]), capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    bundle = json.loads(done.stdout)
    assert bundle["manifest"]["features"] == ["petals:*"]
    scorer = Scorer(bundle["path"], project.mlops_dir / "features")
    columns, n = scorer.prepare({"flower_id": [0, 100, 149]})
    assert n == 3 and columns["petal_length"].tolist() == x.petal_length.iloc[[0, 100, 149]].tolist()
    predicted, _ = scorer.predict(columns)
    assert predicted == version_predictions(project, version.version, features.iloc[[0, 100, 149]])
    with pytest.raises(BadRequest, match=r'no online features in view \'petals\' for \{"flower_id": 999\}'):
        scorer.prepare({"flower_id": [0, 999]})
    s = Server(served["home"], bundle["bundle"][:12], "--workers", "2")  # two worker processes, one port
    try:
        answer = requests.post(s.url + "/invocations", json={"dataframe_records": [{"flower_id": 100}]}, timeout=10)
        assert answer.status_code == 200 and answer.json()["predictions"] == predicted[1:2]
        pids = {requests.get(s.url + "/health", timeout=5).json()["pid"] for _ in range(20)}
        assert pids and s.process.pid not in pids  # the workers answer, not the parent
    finally:
        s.stop()
    with pytest.raises(BundleError, match="feature view 'nosuch' is not in the feature store"):
        build(f"petals/{version.version}", features=["nosuch:*"], project=project, progress=False)


def version_predictions(project, version: int, frame) -> list:
    """What MLflow's pyfunc predicts for ``frame`` with version ``version`` of ``petals``."""
    return project.registry.load_pyfunc(f"models:/petals/{version}").predict(frame).tolist()


def test_malformed_payloads_are_one_line_each(served):
    from mlops_nb.serving.app import BadRequest, Scorer

    scorer = Scorer(served["bundle"].path)
    row = [5.1, 3.5, 1.4, 0.2]
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, "the JSON body is nested too deeply"),
        (
            json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [row[:3]]}}).encode(),
            "each row of dataframe_split.data must have 4 values",
        ),  # fmt: skip
        (json.dumps({"dataframe_split": [row]}).encode(), 'dataframe_split must be {"columns"'),
        (json.dumps({"inputs": []}).encode(), "inputs must be a non-empty list of rows"),
        (
            json.dumps({"inputs": {"sepal_length": [1.0, 2.0], "sepal_width": [1.0]}}).encode(),
            "the columns of inputs must have the same number of values",
        ),  # fmt: skip
        (json.dumps({"dataframe_records": [row], "params": 3}).encode(), "params must be an object"),
        (json.dumps([row]).encode(), "the JSON body must be an object"),
    ]
    for body, message in cases:
        with pytest.raises(BadRequest, match=re.escape(message)) as caught:
            scorer.prepare(scorer.parse(body, "application/json"))
        assert "\n" not in caught.value.message and caught.value.status == 400
    with pytest.raises(BadRequest, match="the request has no columns"):
        scorer.prepare({})
    with pytest.raises(BadRequest, match=r"the CSV body cannot be read"):
        scorer.parse(b'a,b\n"1,2\n', "text/csv")


def test_integer_columns_refuse_fractions_and_values_out_of_range():
    from mlops_nb.serving.app import BadRequest, _typed

    assert _typed("n", "long", [1, 2.0]).tolist() == [1, 2]
    with pytest.raises(BadRequest, match=r"column 'n' expects long values, got 1\.5"):
        _typed("n", "long", [1, 1.5])
    with pytest.raises(BadRequest, match=r"column 'n' expects integer values, got 3000000000, out of its range"):
        _typed("n", "integer", [3_000_000_000])
    with pytest.raises(BadRequest, match="column 's' expects string values, got 3"):
        _typed("s", "string", ["a", 3])
    with pytest.raises(BadRequest, match="column 'b' expects boolean values, got 'yes'"):
        _typed("b", "boolean", ["yes"])


def test_label_and_command_line_errors_are_one_line(served, tmp_path):
    log = served["project"].predictions
    with pytest.raises(ServingError, match=r"a label is missing \(None or NaN\)"):
        log.log_labels(["a"], [float("nan")])
    wrong = tmp_path / "truth.csv"
    pd.DataFrame({"id": ["a"], "label": [1]}).to_csv(wrong, index=False)
    env = _env(served["home"])
    for args, message in [
        (["labels", str(wrong)], "has no column 'request_id'; give request_id and label (and row) columns"),
        (["labels"], "give a FILE of request_id,label rows, or --compact"),
        (["deploy"], "give the MODEL to deploy (NAME@ALIAS or NAME/VERSION), or --status"),
        (["score", "iris@champion", str(wrong), "-o", str(tmp_path / "out.txt")], "must end in .parquet or .csv"),
    ]:
        done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
        assert done.stderr.strip().startswith("Error:") and len(done.stderr.strip().splitlines()) == 1


def test_the_supervisors_record_child_writes_the_deploy_run_and_refuses_a_bad_record_in_one_line(project):
    """The supervisor never opens DuckDB: a child records each rollout (its step reads the bundle)."""
    rollout = {
        "spec": {
            "version": 3,
            "bundle": "ab" * 32,
            "path": str(project.home),
            "trigger": "watch",
            "fired_by": "churn@champion -> v3",
            "build_id": "b1",
        },  # fmt: skip
        "result": {
            "name": "churn",
            "outcome": "deployed",
            "version": 3,
            "bundle": "ab" * 32,
            "previous": 2,
            "url": "http://127.0.0.1:1",
            "reason": None,
            "canary": None,
            "started": time.time() - 2,
            "timings": {"start": 1.0},
        },  # fmt: skip
    }
    record = [sys.executable, "-m", "mlops_nb.serving.record", "--home", str(project.home)]
    done = subprocess.run(record, input=json.dumps(rollout), capture_output=True, text=True, check=True)
    run = project.metadata.get_run(done.stdout.strip())
    assert (run.kind, run.status, run.trigger, run.fired_by) == ("deploy", "succeeded", "watch", "churn@champion -> v3")
    assert run.params["version"] == 3 and run.params["previous"] == 2 and run.params["build_id"] == "b1"
    assert run.step("deploy").inputs["bundle"].hash == "ab" * 32
    before = len(project.metadata.list_runs(None))

    for given, said in [
        ('{"spec": {}}', "the rollout record has no 'result'"),
        ("[1, 2]", "the rollout record is not a JSON object"),
        ("not json", "the rollout record is not a JSON object"),
    ]:
        bad = subprocess.run(record, input=given, capture_output=True, text=True)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr and "Error" not in bad.stderr
        assert bad.stderr.strip().startswith(f"the deploy run was not recorded: {said}"), bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert len(project.metadata.list_runs(None)) == before
