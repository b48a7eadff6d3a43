"""The REST API under ``/mlops/api/``: thin handlers over :mod:`mlops_nb.ui.state` and the Python API.

Every handler is a jupyter_server ``APIHandler`` whose methods are ``@tornado.web.authenticated`` and
``@authorized`` (resource ``mlops``), so Jupyter's token or cookie is needed and a cookie-authenticated POST needs
the XSRF token. Store reads run on one worker thread, never on the server's event loop, and each is a short read:
polling does not hold a store while a run writes it. Errors are JSON ``{"error": "one line"}``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from ...exceptions import ArtifactNotFoundError, FeatureNotFoundError, MlopsError, NotFoundError, StoreBusyError
from .. import state

API = "mlops/api"
#: The resource name Jupyter's authorizer is asked about.
RESOURCE = "mlops"
_STORE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-store")  # short store reads, one at a time
# the registry on a thread of its own: MLflow's first import (seconds) never holds up the polls of runs and DAGs
_REGISTRY = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-registry")
# deployments answer over HTTP (a supervisor that hangs must not hold up the store's reads)
_SERVICES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-services")
_NUMBER = re.compile(r"[0-9]{1,9}")
_RENDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-render")  # notebook HTML, off the store thread
_LOCAL = threading.local()


class _Api(APIHandler):
    """Base of the API's handlers: the extension's state, JSON bodies and one-line JSON errors."""

    auth_resource = RESOURCE

    @property
    def mlops(self) -> dict[str, Any]:
        """What the extension keeps: ``project``, ``root`` (the server root) and ``jobs``."""
        return self.settings["mlops_nb"]

    @property
    def project(self):
        return self.mlops["project"]

    @property
    def root(self) -> Path:
        return self.mlops["root"]

    async def read(self, function, *args, **kwargs):
        """``function(*args, **kwargs)`` on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(_STORE, lambda: function(*args, **kwargs))

    async def registry(self, function, *args, **kwargs):
        """``function(*args, **kwargs)`` on the registry thread (reads and moves of MLflow's registry)."""
        return await asyncio.get_running_loop().run_in_executor(_REGISTRY, lambda: function(*args, **kwargs))

    async def services(self, function, *args, **kwargs):
        """``function(*args, **kwargs)`` on the thread that asks live services (deployments)."""
        return await asyncio.get_running_loop().run_in_executor(_SERVICES, lambda: function(*args, **kwargs))

    def link(self, *parts: str) -> str:
        """The URL path of an API resource, under the server's base URL."""
        from jupyter_server.utils import url_path_join

        return url_path_join(self.base_url, API, *parts)

    def reply(self, data: Any, status: int = 200) -> None:
        """Finish with ``data`` as JSON."""
        self.set_status(status)
        self.finish(json.dumps(state.jsonable(data)))

    def body(self) -> dict[str, Any]:
        """The request's JSON object (empty body: ``{}``)."""
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError as exc:
            raise _BadRequest(f"the request body is not JSON ({exc}); send a JSON object") from None
        if not isinstance(data, dict):
            raise _BadRequest("the request body must be a JSON object")
        return data

    def limit(self, default: int = 20, most: int = 500) -> int:
        text = self.get_argument("limit", str(default))
        if not _NUMBER.fullmatch(text) or not 1 <= int(text) <= most:
            raise _BadRequest(f"limit={text!r} must be a whole number from 1 to {most}")
        return int(text)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as ``{"error": "one line"}``."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(self, "_mlops_error", None)
        if message is None and isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": _one_line(message or self._reason)}))

    def _handle_request_exception(self, e: BaseException) -> None:
        """Our errors become 400/404/503 with their one line; anything else a logged 500 with one line."""
        if self._finished or isinstance(e, tornado.web.HTTPError):
            return super()._handle_request_exception(e)
        if isinstance(e, MlopsError | _BadRequest):
            missing = isinstance(e, NotFoundError | FeatureNotFoundError | ArtifactNotFoundError)
            code = 404 if missing else 503 if isinstance(e, StoreBusyError) else 400
            self._mlops_error = e.message if isinstance(e, MlopsError) else str(e)
        else:
            self.log.error("mlops_nb: %s failed", self.request.path, exc_info=e)
            code, self._mlops_error = 500, f"internal error: {type(e).__name__}: {e}"
        self.send_error(code)


class _BadRequest(Exception):
    """A request the API cannot take (its message says why)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise _BadRequest(f"{what} must be true or false")
    return value


def _note(body: dict) -> str:
    note = body.get("note", "")
    if not isinstance(note, str):
        raise _BadRequest("note must be text")
    return note


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(f"{what} must be a non-empty string")
    return value.strip()


# Handlers -------------------------------------------------------------------------------------------------------
class IndexHandler(_Api):
    """``GET /mlops/api``: the project and the endpoints."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        from importlib.metadata import version

        self.reply(
            {
                "version": version("mlops-nb"),
                "project": str(self.project.home),
                "root": str(self.root),
                "openapi": self.link("openapi.json"),
            }
        )


class OpenApiHandler(_Api):
    """``GET /mlops/api/openapi.json``: the OpenAPI description of this API."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        from .openapi import spec

        self.reply(spec())


class PipelinesHandler(_Api):
    """``GET pipelines``: the notebooks under the server root that have step cells."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply({"pipelines": await self.read(state.pipelines, self.project, self.root)})


class DagHandler(_Api):
    """``GET pipelines/<path>/dag``: a notebook's DAG with each step's last status."""

    @tornado.web.authenticated
    @authorized
    async def get(self, path: str):
        if not path.endswith(".ipynb"):
            raise _BadRequest(f"{path!r} is not a notebook; give the path of an .ipynb file under the server root")
        self.reply(await self.read(state.dag, self.project, self.root, path))


class RunsHandler(_Api):
    """``GET runs`` (filters: limit, status, trigger, pipeline, kind); ``POST runs``: start a headless run."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        filters = {k: self.get_argument(k, None) or None for k in ("status", "trigger", "pipeline", "kind")}
        self._check_filters(filters)
        self.reply({"runs": await self.read(state.runs, self.project, self.limit(), **filters)})

    @staticmethod
    def _check_filters(filters: dict) -> None:
        from ...core.records import RUN_KINDS, TRIGGERS
        from ...store.metadata import RUN_STATUSES

        for key, known in (("status", RUN_STATUSES), ("trigger", TRIGGERS), ("kind", RUN_KINDS)):
            if filters[key] is not None and filters[key] not in known:
                raise _BadRequest(f"{key}={filters[key]!r} is not one of {', '.join(known)}")

    @tornado.web.authenticated
    @authorized
    async def post(self):
        # a run executes the notebook's code: who may run kernels may start one
        allowed = self.authorizer.is_authorized(self, self.current_user, "execute", "kernels")
        if asyncio.iscoroutine(allowed):
            allowed = await allowed
        if not allowed:
            raise tornado.web.HTTPError(403, "starting a run needs the permission to execute kernels")
        body = self.body()
        path = _text(body.get("path"), "path (the notebook, relative to the server root)")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise _BadRequest("params must be a JSON object of parameter names and values")
        executor = body.get("executor")
        if executor is not None:
            executor = _text(executor, "executor")
        no_cache = _flag(body.get("no_cache", False), "no_cache")

        def check() -> Path:
            from ...engine.executors import executors
            from ...pipeline.notebook import Pipeline

            full = state.confine(self.root, path)
            pipeline = Pipeline.from_notebook(full)
            pipeline.resolve_params(params)  # a wrong parameter is refused here, not in the run's log
            executors.get(executor or self.project.settings.executor)  # and an unknown executor
            return full

        full = await self.read(check)
        run_id = self.mlops["jobs"].start(full, params, executor, no_cache)
        self.reply({"id": run_id, "status": "starting", "url": self.link("runs", run_id)}, status=202)


class RunHandler(_Api):
    """``GET runs/<id>``: one run with its step runs (``starting`` while a run started here records itself)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str):
        try:
            data = await self.read(state.run, self.project, run_id, self.root)
        except NotFoundError:
            started = self.mlops["jobs"].status(run_id)
            if started is None:
                raise
            if started["status"] == "starting":
                data = started
            else:  # its process ended: it may have recorded the run after the read above
                try:
                    data = await self.read(state.run, self.project, run_id, self.root)
                except NotFoundError:
                    data = started
        data["links"] = {
            "notebook": self.link("runs", data["id"], "notebook") if data.get("executed_notebook") else None
        }
        self.reply(data)


class RunNotebookHandler(_Api):
    """``GET runs/<id>/notebook``: the run's executed notebook as an HTML page (scripts disabled)."""

    @property
    def content_security_policy(self) -> str:
        return "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id: str):
        data = await self.read(state.executed_notebook, self.project, run_id)
        page = await asyncio.get_running_loop().run_in_executor(_RENDER, _notebook_html, data)
        self.finish(page, set_content_type="text/html; charset=utf-8")


def _notebook_html(data: bytes) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = getattr(_LOCAL, "exporter", None)
    if exporter is None:
        exporter = _LOCAL.exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nbformat.reads(data.decode("utf-8"), as_version=4))
    return body


class LineageHandler(_Api):
    """``GET lineage/<node>`` (``direction`` up|down|both, ``depth``): a lineage graph."""

    @tornado.web.authenticated
    @authorized
    async def get(self, node: str):
        direction = self.get_argument("direction", "both")
        depth = self.get_argument("depth", None)
        if depth is not None and (not _NUMBER.fullmatch(depth) or int(depth) < 1):
            raise _BadRequest(f"depth={depth!r} must be a whole number of 1 or more")
        where = self.registry if node.startswith("models:/") else self.read  # an alias is resolved by MLflow
        graph = await where(state.lineage, self.project, node, direction, int(depth) if depth else None)
        self.reply(graph.to_dict())


class FeaturesHandler(_Api):
    """``GET features``: the feature views with their freshness."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply({"views": await self.read(state.features, self.project)})


class FeatureStatsHandler(_Api):
    """``GET features/<view>``: one view's statistics and histograms."""

    @tornado.web.authenticated
    @authorized
    async def get(self, view: str):
        self.reply(await self.read(state.feature_stats, self.project, view))


class ModelsHandler(_Api):
    """``GET models``: registered models with aliases, and the versions waiting for approval."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply(await self.registry(state.models, self.project))


class VersionsHandler(_Api):
    """``GET models/<name>/versions``: a model's versions."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str):
        self.reply({"name": name, "versions": await self.registry(state.versions, self.project, name)})


class VersionActionHandler(_Api):
    """``POST models/<name>/<version>/approve|reject|promote``: a person's decision, by the Jupyter user."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str, version: str, action: str):
        from ... import promotion

        body = self.body()
        if not _NUMBER.fullmatch(version):
            raise _BadRequest(f"version {version!r} must be a version number")
        note = _note(body)
        by = self.current_user.username
        if action == "promote":
            alias = _text(body.get("alias", "champion"), "alias")
            gates = body.get("gates")
            if gates is not None and not (isinstance(gates, dict) and all(isinstance(v, str) for v in gates.values())):
                raise _BadRequest('gates must be an object of metric names and rules, like {"accuracy": ">= 0.9"}')
            approval = _flag(body.get("require_approval", False), "require_approval")
            result = await self.registry(
                promotion.promote, name, int(version), alias, gates=gates, require_approval=approval, by=by,
                trigger="rest", project=self.project,
            )  # fmt: skip
        else:
            function = promotion.approve if action == "approve" else promotion.reject
            result = await self.registry(function, name, int(version), by, note, trigger="rest", project=self.project)
        self.reply({"result": result.to_dict()})


class RollbackHandler(_Api):
    """``POST models/<name>/rollback`` (body ``{"alias": "champion"}``): the alias back to the version before."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str):
        from ... import promotion

        body = self.body()
        alias = _text(body.get("alias", "champion"), "alias")
        note = _note(body)
        result = await self.registry(
            promotion.rollback, name, alias, by=self.current_user.username, note=note, trigger="rest",
            project=self.project,
        )  # fmt: skip
        self.reply({"result": result.to_dict()})


class DeploymentsHandler(_Api):
    """``GET deployments``: the live deployments."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply({"deployments": await self.services(state.deployments, self.project)})


class MonitoringHandler(_Api):
    """``GET monitoring/<name>``: a model's latest drift verdict and alerts."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str):
        data = await self.read(state.monitoring, self.project, name)
        data["links"] = {"report": self.link("monitoring", name, "report") if data.pop("report_file") else None}
        self.reply(data)


class ReportHandler(RunNotebookHandler):
    """``GET monitoring/<name>/report``: the latest monitoring report (HTML, scripts disabled)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str):
        data = await self.read(state.monitoring, self.project, name)
        file = data.get("report_file")
        reports = (self.project.mlops_dir / "reports").resolve()
        if not file or reports not in Path(file).resolve().parents:
            raise NotFoundError(f"model {name!r} has no monitoring report yet; run mlops-nb monitor {name}")
        self.finish(Path(file).read_text(encoding="utf-8"), set_content_type="text/html; charset=utf-8")


_SEGMENT = r"([^/]+)"
#: The route table: (path under /mlops/api, handler). ``openapi.spec()`` describes exactly these.
ROUTES: list[tuple[str, type[_Api]]] = [
    ("/?", IndexHandler),
    ("/openapi.json", OpenApiHandler),
    ("/pipelines", PipelinesHandler),
    ("/pipelines/(.+)/dag", DagHandler),
    ("/runs", RunsHandler),
    (f"/runs/{_SEGMENT}", RunHandler),
    (f"/runs/{_SEGMENT}/notebook", RunNotebookHandler),
    ("/lineage/(.+)", LineageHandler),
    ("/features", FeaturesHandler),
    (f"/features/{_SEGMENT}", FeatureStatsHandler),
    ("/models", ModelsHandler),
    (f"/models/{_SEGMENT}/versions", VersionsHandler),
    (f"/models/{_SEGMENT}/{_SEGMENT}/(approve|reject|promote)", VersionActionHandler),
    (f"/models/{_SEGMENT}/rollback", RollbackHandler),
    ("/deployments", DeploymentsHandler),
    (f"/monitoring/{_SEGMENT}", MonitoringHandler),
    (f"/monitoring/{_SEGMENT}/report", ReportHandler),
]
