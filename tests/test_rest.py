"""The REST API under /mlops/api/ from the browser's side: a real Jupyter server (pytest-jupyter) with the
extension enabled, over a project whose quickstart ran on a real kernel and whose models are in a real MLflow
SQLite store; requests over real HTTP on 127.0.0.1, with the token, a cookie, or nothing."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from urllib.parse import urlencode

import pytest
from nbtools import quickstart_with_pending_model
from pytest_jupyter.jupyter_server import *  # noqa: F403 - jp_serverapp, jp_fetch and the fixtures they need
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

import mlops_nb
from mlops_nb.project import Project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rest_project(tmp_path_factory, mlflow_template):
    """A project that ran the quickstart once and has a model ``churn``: v1 champion, v2 waiting for approval,
    and a feature view ``activity`` of 40 rows."""
    made = quickstart_with_pending_model(tmp_path_factory.mktemp("rest") / "project", mlflow_template)
    project = made["project"]
    import pandas as pd

    features = project.features
    features.register_entity("customer", {"customer_id": "int64"})
    features.register_view("activity", "customer", {"spend": "float64"}, ttl="10d")
    events = pd.Timestamp("2026-11-30", tz="UTC") + pd.to_timedelta(range(40), unit="h")
    features.ingest("activity", pd.DataFrame({"customer_id": range(40), "event_ts": events, "spend": range(40)}))
    return made


@pytest.fixture
def jp_root_dir(rest_project):
    return rest_project["folder"]


@pytest.fixture
def jp_server_config():
    return Config({"ServerApp": {"jpserver_extensions": {"mlops_nb.ui.server": True}}})


@pytest.fixture
def api(jp_fetch, jp_asyncio_loop):
    """``api(METHOD, path, body=None, **params)`` -> (status, JSON or text), with the server's token."""

    def call(method: str, path: str, body=None, headers=None, **params):
        kwargs = {"method": method, "raise_error": False, "params": params, "headers": headers}
        if method == "POST":
            kwargs["body"] = body if isinstance(body, str | bytes) else json.dumps(body or {})
        response = jp_asyncio_loop.run_until_complete(jp_fetch("mlops", "api", *path.split("/"), **kwargs))
        call.headers = response.headers
        text = response.body.decode()
        kind = response.headers.get("Content-Type", "")
        return response.code, json.loads(text) if kind.startswith("application/json") else text

    return call


def _wait(loop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def test_every_endpoint_answers_an_authenticated_client(api, rest_project):
    run = rest_project["run"]
    status, index = api("GET", "")
    assert status == 200 and index["project"] == str(rest_project["folder"])

    status, found = api("GET", "pipelines")
    assert status == 200
    assert [(p["path"], p["steps"], p["last_run"]["id"]) for p in found["pipelines"]] == [
        ("01_quickstart.ipynb", 6, run.id)
    ]

    status, dag = api("GET", "pipelines/01_quickstart.ipynb/dag")
    assert status == 200 and [s["name"] for s in dag["steps"]] == ["load", "clean", "features", "split", "train",
                                                                   "evaluate"]  # fmt: skip
    assert {s["status"] for s in dag["steps"]} == {"succeeded"} and all(s["why"] for s in dag["steps"])
    assert dag["last_run"]["id"] == run.id and {"from": "load", "to": "clean", "name": "raw"} in dag["edges"]

    status, runs = api("GET", "runs", limit="5")
    assert status == 200 and [r["kind"] for r in runs["runs"]][:3] == ["promotion", "promotion", "pipeline"]
    assert runs["runs"][2]["id"] == run.id and runs["runs"][2]["step_counts"] == {"succeeded": 6}
    status, only = api("GET", "runs", kind="pipeline", status="succeeded")
    assert status == 200 and [r["id"] for r in only["runs"]] == [run.id]

    status, one = api("GET", f"runs/{run.id}")
    assert status == 200 and one["expected_steps"] == 6 and len(one["step_runs"]) == 6
    assert one["links"]["notebook"] == f"/a%40b/mlops/api/runs/{run.id}/notebook"  # under the base URL
    status, page = api("GET", f"runs/{run.id}/notebook")
    assert status == 200 and "<html" in page and "roc_auc" in page  # the executed cells' outputs
    assert api.headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")  # no script runs

    status, graph = api("GET", f"lineage/{run.id}/train", direction="up")
    assert status == 200, graph
    labels = {n["label"] for n in graph["nodes"]}
    assert any(label.startswith("X_train") for label in labels), labels

    status, views = api("GET", "features")
    assert status == 200 and [(v["view"], v["rows"], v["ttl"]) for v in views["views"]] == [("activity", 40, "10 days")]
    assert views["views"][0]["age_s"] > 0 and views["views"][0]["last_ts"].startswith("2026-12-01T15:00")
    status, stats = api("GET", "features/activity")
    assert status == 200 and "spend" in json.dumps(stats)

    status, models = api("GET", "models")
    assert status == 200 and models["models"][0]["name"] == "churn"
    assert [(p["name"], p["version"], p["alias"]) for p in models["pending"]] == [("churn", 2, "champion")]
    status, versions = api("GET", "models/churn/versions")
    assert status == 200 and [v["version"] for v in versions["versions"]] == [2, 1]
    assert versions["versions"][1]["aliases"] == ["champion"] and versions["versions"][0]["approval"] == "pending"

    status, deployments = api("GET", "deployments")
    assert status == 200 and deployments == {"deployments": []}
    status, monitoring = api("GET", "monitoring/churn")
    assert status == 200 and monitoring["report"] is None and monitoring["links"]["report"] is None


def test_a_project_without_stores_answers_empty_and_creates_nothing(tmp_path):
    from mlops_nb.exceptions import NotFoundError
    from mlops_nb.ui import state

    project = Project(tmp_path)
    assert state.runs(project) == [] and state.features(project) == [] and state.deployments(project) == []
    assert state.models(project) == {"models": [], "pending": []} and state.pipelines(project, tmp_path) == []
    assert state.monitoring(project, "churn") == {"model": "churn", "report": None, "alerts": [], "report_file": None}
    for read in (
        lambda: state.run(project, "latest"),
        lambda: state.executed_notebook(project, "latest"),
        lambda: state.lineage(project, "model"),
        lambda: state.feature_stats(project, "activity"),
        lambda: state.versions(project, "churn"),
    ):
        with pytest.raises(NotFoundError):
            read()
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_process_died_is_interrupted_when_next_read(project):
    import subprocess
    import sys

    from mlops_nb.ui import state

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run_id = project.metadata.create_run("p", pid=gone.pid)  # as if a run's process was killed
    assert project.metadata.get_run(run_id).status == "running"
    assert state.run(project, run_id)["status"] == "interrupted"  # the long-lived store, not a reopened one


def test_a_deployment_that_does_not_answer_is_listed_without_its_token(project):
    import os
    import socket

    from mlops_nb.serving.rollout import deployments_dir
    from mlops_nb.ui import state

    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        folder = deployments_dir(project)
        folder.mkdir(parents=True, exist_ok=True)
        fake = {"name": "churn", "pid": os.getpid(), "control_port": silent.getsockname()[1], "token": "s3cret"}
        (folder / "churn.json").write_text(json.dumps(fake))
        started = time.monotonic()
        found = state.deployments(project, timeout=0.5)
    assert time.monotonic() - started < 5
    assert found == [{"name": "churn", "pid": os.getpid(), "control_port": fake["control_port"], "answering": False}]


def test_errors_are_one_json_line(api):
    cases = [
        ("GET", "runs/nope-not-a-run", None, 404, "nope-not-a-run"),
        ("GET", "models/nobody/versions", None, 404, "nobody"),
        ("GET", "pipelines/missing.ipynb/dag", None, 404, "does not exist"),
        ("GET", "pipelines/data/raw.csv.ipynb/dag", None, 404, "does not exist"),
        ("GET", "pipelines/.ipynb_checkpoints/01_quickstart-checkpoint.ipynb/dag", None, 400, "hidden"),
        ("POST", "runs", {"path": "01_quickstart.ipynb", "executor": "nope"}, 400, "nope"),
        ("POST", "runs", {"path": "01_quickstart.ipynb", "no_cache": "false"}, 400, "no_cache"),
        ("POST", "models/churn/1/promote", {"require_approval": "false"}, 400, "require_approval"),
        ("POST", "models/churn/²/approve", {}, 400, "version"),
        ("POST", "runs", "{not json", 400, "not JSON"),
        ("POST", "runs", {"path": "01_quickstart.ipynb", "params": {"nope": 1}}, 400, "nope"),
        ("POST", "runs", {"path": "01_quickstart.ipynb", "params": [1]}, 400, "params"),
        ("POST", "models/churn/1/approve", {"note": 5}, 400, "note"),
        ("POST", "models/churn/1/approve", {}, 400, "pending"),
        ("POST", "models/churn/x/approve", {}, 400, "version"),
        ("GET", "monitoring/bad name!", None, 400, "name"),
        ("GET", "features/nope", None, 404, "nope"),
    ]
    for method, path, body, code, words in cases:
        status, reply = api(method, path, body)
        assert status == code, (path, reply)
        assert set(reply) == {"error"} and words in reply["error"] and "\n" not in reply["error"], reply
        assert "Traceback" not in reply["error"]
    for limit in ("-1", "²", "0", "501"):
        status, reply = api("GET", "runs", limit=limit)
        assert status == 400 and "limit" in reply["error"], reply
    status, reply = api("GET", "lineage/model", depth="²")
    assert status == 400 and "depth" in reply["error"]
    status, reply = api("GET", "runs", trigger="bogus")
    assert status == 400 and "trigger" in reply["error"]


def test_paths_outside_the_root_are_refused(api, rest_project, jp_serverapp, http_server, jp_http_port, jp_base_url,
                                            jp_asyncio_loop):  # fmt: skip
    outside = rest_project["folder"].parent / "secret.ipynb"
    shutil.copy(rest_project["folder"] / "01_quickstart.ipynb", outside)
    client = AsyncHTTPClient()
    token = {"Authorization": f"token {jp_serverapp.identity_provider.token}"}
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}mlops/api/pipelines/"
    for raw in ("%2E%2E/secret.ipynb", "sub/%2E%2E/%2E%2E/secret.ipynb", "%2F" + str(outside).lstrip("/"),
                "%2E%2E%2Fsecret.ipynb"):  # fmt: skip
        response = jp_asyncio_loop.run_until_complete(
            client.fetch(base + raw + "/dag", headers=token, raise_error=False)
        )
        reply = json.loads(response.body)
        assert response.code == 400 and ("'..'" in reply["error"] or "relative" in reply["error"]), (raw, reply)
    for path in ("../secret.ipynb", str(outside), "..\\secret.ipynb"):
        status, reply = api("POST", "runs", {"path": path})
        assert status == 400 and ("root" in reply["error"] or "'..'" in reply["error"]), reply
    link = rest_project["folder"] / "link.ipynb"
    link.symlink_to(outside)
    try:
        status, reply = api("POST", "runs", {"path": "link.ipynb"})
        assert status == 400 and "outside the server root" in reply["error"]
        status, reply = api("GET", "pipelines/link.ipynb/dag")
        assert status == 400 and "outside the server root" in reply["error"]
        assert "link.ipynb" not in {p["path"] for p in api("GET", "pipelines")[1]["pipelines"]}  # not listed either
    finally:
        link.unlink()


def _sample(pattern: str) -> str:
    """A concrete path for a route's pattern (its groups filled with plausible values)."""
    samples = iter(["churn", "1", "approve"])
    text = re.sub(r"\(\.\+\\\.ipynb\)", "01_quickstart.ipynb", pattern)
    text = re.sub(r"\((?:[^()]|\([^()]*\))*\)", lambda _m: next(samples), text)
    return text.replace("/?", "").replace("\\", "")


def test_every_route_refuses_unauthenticated_calls(jp_serverapp, jp_fetch, jp_asyncio_loop):
    from mlops_nb.ui.server.handlers import ROUTES

    refused = []
    for pattern, handler in ROUTES:
        for method in ("GET", "POST"):
            if method.lower() not in handler.__dict__:
                continue  # the handler does not answer this method
            path = _sample(pattern)
            kwargs = {"method": method, "raise_error": False, "headers": {"Authorization": ""}}
            if method == "POST":
                kwargs["body"] = "{}"
            response = jp_asyncio_loop.run_until_complete(jp_fetch("mlops", "api" + path, **kwargs))
            assert response.code == 403, (method, path, response.code, response.body[:200])
            assert "error" in json.loads(response.body), (method, path)
            refused.append((method, path))
    assert len(refused) == 18  # every route was tried: 15 answer GET, 3 POST (runs both)


def test_openapi_describes_exactly_the_routes(api):
    from mlops_nb.ui.server.handlers import ROUTES

    status, spec = api("GET", "openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    described = {}
    for path, operations in spec["paths"].items():
        described[path] = set(operations)
    matched = []
    for pattern, handler in ROUTES:
        regex = re.compile("^/mlops/api" + pattern + "$")
        methods = {m for m in ("get", "post") if m in handler.__dict__}
        hits = [p for p in described if regex.match(re.sub(r"\{(\w+)\}", _fill, p))]
        assert hits, f"route {pattern} is not described"
        for hit in hits:
            assert described[hit] == methods, (pattern, described[hit], methods)
        matched += hits
    assert sorted(matched) == sorted(described)  # each described path is one route's, none is made up


def _fill(match: re.Match) -> str:
    return {"path": "a/b.ipynb", "version": "3"}.get(match.group(1), "x")


def test_a_cookie_session_needs_the_xsrf_token_to_post(
    jp_serverapp, http_server, jp_http_port, jp_base_url, jp_asyncio_loop
):
    token = jp_serverapp.identity_provider.token
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    client = AsyncHTTPClient()

    def fetch(url, **kwargs):
        return jp_asyncio_loop.run_until_complete(
            client.fetch(base + url, raise_error=False, follow_redirects=False, **kwargs)
        )

    login = fetch("login")
    xsrf = re.search(r"_xsrf=([^;]+)", login.headers.get("Set-Cookie", "")).group(1)
    done = fetch("login", method="POST", body=urlencode({"_xsrf": xsrf, "password": token}),
                 headers={"Cookie": f"_xsrf={xsrf}"})  # fmt: skip
    assert done.code == 302, done.body[:300]
    cookies = "; ".join(c.split(";")[0] for c in done.headers.get_list("Set-Cookie")) + f"; _xsrf={xsrf}"
    assert fetch("mlops/api/models", headers={"Cookie": cookies}).code == 200  # the cookie is a session
    body = json.dumps({"alias": "champion"})
    refused = fetch("mlops/api/models/churn/rollback", method="POST", body=body, headers={"Cookie": cookies})
    assert refused.code == 403 and "_xsrf" in json.loads(refused.body)["error"]
    accepted = fetch("mlops/api/models/nobody/rollback", method="POST", body=body,
                     headers={"Cookie": cookies, "X-XSRFToken": xsrf})  # fmt: skip
    assert accepted.code == 404 and "nobody" in json.loads(accepted.body)["error"]  # past the XSRF check


def test_approve_reject_and_rollback_move_aliases_in_mlflow(api, rest_project):
    from sklearn.linear_model import LogisticRegression

    project = rest_project["project"]
    registry = project.registry
    status, reply = api("POST", "models/churn/2/approve", {"note": "looks right"})
    assert status == 200 and reply["result"]["outcome"] == "approved", reply
    assert registry.alias_holder("churn", "champion").version == 2
    version = registry.versions("churn")[0]
    assert version.version == 2 and version.approval == "approved" and version.tags["approval.by"]
    events = mlops_nb.model_history("churn", project=project)
    assert events[-1]["action"] == "approve" and events[-1]["note"] == "looks right"
    assert project.metadata.list_runs(1, kind="promotion")[0].trigger == "rest"

    mlops_nb.register_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), "churn", metrics={"accuracy": 0.5},
                            project=project)  # fmt: skip
    status, reply = api("POST", "models/churn/3/promote", {"alias": "champion", "require_approval": True})
    assert status == 200 and reply["result"]["outcome"] == "pending", reply
    status, models = api("GET", "models")
    assert [(p["version"], p["alias"]) for p in models["pending"]] == [(3, "champion")]
    status, reply = api("POST", "models/churn/3/reject", {"note": "worse"})
    assert status == 200 and reply["result"]["outcome"] == "rejected", reply
    assert registry.alias_holder("churn", "champion").version == 2 and api("GET", "models")[1]["pending"] == []

    status, reply = api("POST", "models/churn/rollback", {"alias": "champion"})
    assert status == 200 and registry.alias_holder("churn", "champion").version == 1, reply


def test_a_run_started_over_rest_shows_its_progress(api, rest_project, jp_asyncio_loop):
    status, started = api("POST", "runs", {"path": "01_quickstart.ipynb", "params": {"C": 0.5}})
    assert status == 202 and started["status"] == "starting", started
    seen, deadline = [], time.monotonic() + 150
    while time.monotonic() < deadline:
        status, record = api("GET", f"runs/{started['id']}")
        assert status == 200, record
        seen.append((record["status"], len(record.get("step_runs", []))))
        if record["status"] not in ("starting", "running"):
            break
        _wait(jp_asyncio_loop, 0.3)
    assert record["status"] == "succeeded", (record.get("error"), seen)
    assert record["trigger"] == "rest" and record["params"]["C"] == 0.5
    assert record["expected_steps"] == 6 and [s["step"] for s in record["step_runs"]] == [
        "load", "clean", "features", "split", "train", "evaluate"
    ]  # fmt: skip
    statuses = {s["step"]: s["status"] for s in record["step_runs"]}
    assert statuses["load"] == "cached" and statuses["train"] == "succeeded"  # C changes train, not load
    assert seen[0][0] in ("starting", "running") and any(state == "running" for state, _ in seen), seen
    status, dag = api("GET", "pipelines/01_quickstart.ipynb/dag")
    assert dag["last_run"]["id"] == started["id"] and dag["last_run"]["trigger"] == "rest"
    assert {s["name"]: s["status"] for s in dag["steps"]} == statuses


def test_the_latest_monitoring_report_is_summarised_and_served_as_a_page(api, rest_project):
    project = rest_project["project"]
    folder = project.mlops_dir / "reports" / "churn"
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / "churn-v2-20261201T100000000000.html"
    html.write_text("<html><body><h1>churn v2</h1><script>alert(1)</script></body></html>")
    columns = [{"column": "tenure", "drifted": True}, {"column": "plan", "drifted": False}]
    report = {"model": "churn", "version": 2, "until": "2026-12-01T10:00:00+00:00", "html": str(html),
              "data_drift": {"dataset_drift": True, "drift_share": 0.5, "columns": columns},
              "prediction_drift": {"drifted": False}, "performance": {"overall": {"accuracy": 0.8}},
              "service": {"rows": 100}, "alerts": [], "run_id": "r1"}  # fmt: skip
    html.with_suffix(".json").write_text(json.dumps(report))
    store = project.metadata
    run_id = store.create_run(None, kind="monitor", trigger="api", params={"model": "churn", "report": str(html)})
    store.finish_run(run_id, "succeeded")

    status, found = api("GET", "monitoring/churn")
    assert status == 200 and found["links"]["report"] == "/a%40b/mlops/api/monitoring/churn/report"
    summary = found["report"]
    assert (summary["dataset_drift"], summary["drifted"], summary["columns"], summary["version"]) == (
        True, ["tenure"], 2, 2
    )  # fmt: skip
    status, page = api("GET", "monitoring/churn/report")
    assert status == 200 and "<h1>churn v2</h1>" in page
    assert api.headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")  # its script never runs

    outside = project.home / "elsewhere.html"  # a report path that left the reports folder is not served
    outside.write_text("<p>not a report</p>")
    outside.with_suffix(".json").write_text(json.dumps({**report, "html": str(outside)}))
    run_id = store.create_run(None, kind="monitor", trigger="api", params={"model": "churn", "report": str(outside)})
    store.finish_run(run_id, "succeeded")
    status, reply = api("GET", "monitoring/churn/report")
    assert status == 404 and "no monitoring report" in reply["error"]


def test_openapi_names_every_query_parameter_and_body_field_the_handlers_read(api):
    import inspect

    from mlops_nb.ui.server.handlers import ROUTES

    spec = api("GET", "openapi.json")[1]["paths"]
    checked = 0
    for pattern, handler in ROUTES:
        regex = re.compile("^/mlops/api" + pattern + "$")
        hits = [p for p in spec if regex.match(re.sub(r"\{(\w+)\}", _fill, p))]
        for method in ("get", "post"):
            if method not in handler.__dict__:
                continue
            source = inspect.getsource(handler.__dict__[method])
            reads = set(re.findall(r'(?:get_argument|body\.get)\("(\w+)"', source))
            reads |= {"limit"} if "self.limit(" in source else set()
            reads |= {"note"} if "_note(body)" in source else set()
            for names in re.findall(r"for k in \(([^)]*)\)", source):
                reads |= set(re.findall(r'"(\w+)"', names))
            described = set()
            for hit in hits:
                operation = spec[hit][method]
                described |= {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
                body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
                described |= set(body.get("schema", {}).get("properties", {}))
            assert reads <= described, (pattern, method, reads - described)
            checked += len(reads)
    assert checked == 17  # runs: limit + 4 filters, 4 body fields; lineage: 2; decisions: 4; rollback: alias, note
