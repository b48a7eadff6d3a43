"""The OpenAPI 3.1 description of ``/mlops/api/``, served at ``/mlops/api/openapi.json``.

A test checks it against the route table (``handlers.ROUTES``): every route is described, with exactly the methods
its handler answers, and nothing else is.
"""

from __future__ import annotations

from typing import Any

BASE = "/mlops/api"

_ERROR = {"description": "an error: {\"error\": \"one line\"}", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}  # fmt: skip
_JSON = {"description": "JSON", "content": {"application/json": {"schema": {"type": "object"}}}}
_HTML = {"description": "an HTML page (scripts disabled)", "content": {"text/html": {"schema": {"type": "string"}}}}


def _path(name: str, what: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": what, "schema": {"type": "string"}}


def _query(name: str, what: str, kind: str = "string") -> dict:
    return {"name": name, "in": "query", "required": False, "description": what, "schema": {"type": kind}}


def _op(summary: str, parameters: list | None = None, body: dict | None = None, ok: dict = _JSON, code: str = "200"):
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {code: ok, "400": _ERROR, "403": _ERROR, "404": _ERROR, "503": _ERROR},
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return operation


def _object(**properties: str) -> dict:
    return {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()}}


_NAME = _path("name", "a registered model's name")
_VERSION = _path("version", "a version number")

PATHS: dict[str, dict[str, dict]] = {
    "": {"get": _op("The project, the server root and this API's version")},
    "/openapi.json": {"get": _op("This description")},
    "/pipelines": {"get": _op("Notebooks under the server root that have step cells, with their last run")},
    "/pipelines/{path}/dag": {
        "get": _op(
            "A notebook's DAG with each step's last status and why-line",
            [_path("path", "the notebook, relative to the server root (no '..')")],
        )
    },
    "/runs": {
        "get": _op(
            "The latest runs, newest first",
            [
                _query("limit", "at most this many (1-500, default 20)", "integer"),
                _query("status", "running, succeeded, failed or interrupted"),
                _query("trigger", "manual, cli, api, rest, schedule, data, drift, approval or watch"),
                _query("pipeline", "a pipeline's name"),
                _query("kind", "pipeline, promotion, build, deploy or monitor"),
            ],
        ),
        "post": _op(
            "Start a headless run of a notebook (trigger rest); follow it at runs/{id}",
            body={
                **_object(path="string", params="object", executor="string", no_cache="boolean"),
                "required": ["path"],
            },
            code="202",
        ),
    },
    "/runs/{id}": {
        "get": _op(
            "One run with its step runs, metrics and expected_steps (status starting until it records itself)",
            [_path("id", "a run id, a unique prefix, or latest")],
        )
    },
    "/runs/{id}/notebook": {"get": _op("A run's executed notebook", [_path("id", "a run id")], ok=_HTML)},
    "/lineage/{node}": {
        "get": _op(
            "The lineage graph of an artifact, step run, output name, models:/NAME/VERSION, bundle or request:ID",
            [
                _path("node", "what to follow"),
                _query("direction", "up, down or both (default both)"),
                _query("depth", "follow at most this many steps", "integer"),
            ],
        )
    },
    "/features": {"get": _op("Feature views with rows, time range, TTL and freshness (age_s)")},
    "/features/{view}": {"get": _op("One feature view's statistics and histograms", [_path("view", "a view")])},
    "/models": {"get": _op("Registered models with their aliases, and the versions pending approval")},
    "/models/{name}/versions": {"get": _op("A model's versions: aliases, approval state, metrics, tags", [_NAME])},
    "/models/{name}/{version}/approve": {
        "post": _op("Approve a pending version: its alias moves to it", [_NAME, _VERSION], _object(note="string"))
    },
    "/models/{name}/{version}/reject": {
        "post": _op("Reject a pending version", [_NAME, _VERSION], _object(note="string"))
    },
    "/models/{name}/{version}/promote": {
        "post": _op(
            "Move an alias to a version through gates (or leave it pending approval)",
            [_NAME, _VERSION],
            _object(alias="string", gates="object", require_approval="boolean"),
        )
    },
    "/models/{name}/rollback": {
        "post": _op("Point an alias back at the version before", [_NAME], _object(alias="string", note="string"))
    },
    "/deployments": {"get": _op("Live deployments: address, versions served, health, requests")},
    "/monitoring/{name}": {"get": _op("A model's latest drift verdict, performance and alerts", [_NAME])},
    "/monitoring/{name}/report": {"get": _op("A model's latest monitoring report", [_NAME], ok=_HTML)},
}


def spec() -> dict[str, Any]:
    """The OpenAPI document."""
    from importlib.metadata import version

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mlops_nb REST API",
            "version": version("mlops-nb"),
            "description": "The project's runs, pipelines, lineage, features, models, deployments and monitoring, "
            "behind Jupyter's authentication. POST needs the XSRF token when authenticated by cookie.",
        },
        "paths": {BASE + path: operations for path, operations in PATHS.items()},
    }
