"""The scoring app: MLflow's scoring protocol over an app bundle, with signature checks, online features, metrics
and a prediction log.

Routes (as MLflow's scoring server answers them, so its clients work unchanged):

- ``POST /invocations``: JSON with one of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
  (and optional ``params``), or ``text/csv``; answers ``{"predictions": [...]}`` and an ``x-request-id`` header.
  Errors: 400 ``{"error_code": "BAD_REQUEST", "message": ...}`` (the message names the column), 413 for a body
  over the limit, 415 for another content type.
- ``GET /ping``, ``/health`` (model, version, bundle), ``/version``, ``/metrics`` (Prometheus text format).

Every request, answered or refused, is a row of the prediction log (:mod:`mlops_nb.store.predictions`). A request
may leave out the features the bundle looks up online and give their entity keys instead.

This module runs inside the bundle (``app/serve.py`` puts the bundle's copy of mlops_nb first on ``sys.path``):
what it imports at start is what the bundle carries and pins.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import signal
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow  # noqa: F401 - the prediction log's writer needs it: imported at start, so the bundle pins it
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..exceptions import MlopsError
from ..store.features.online import online_refs, read_online
from ..store.predictions import FEATURE_PREFIX, LogWriter, now_utc
from .manifest import PARENT_ENV, model_bytes, open_bundle

CONFIG_ENV = "MLOPS_NB_SERVE_CONFIG"
PREDICTIONS_ENV = "MLOPS_NB_PREDICTIONS"
MAX_BODY = 10 * 1024 * 1024
CONTENT_TYPES = ("application/json", "text/csv")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_VARIANTS = ("stable", "canary", "smoke")
_NUMERIC = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BadRequest(Exception):
    """A request the server refuses: its HTTP status, MLflow's error code and a one-line message; ``model`` when
    the model itself failed on the input (a router counts that against the version)."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST", model: bool = False):
        super().__init__(message)
        self.message, self.status, self.code, self.model = message, status, code, model


class Scorer:
    """A bundle's model with its signature: parses MLflow's payloads, checks them and predicts.

    Args:
        bundle: the bundle's folder (its hashes are checked before the model is unpickled).
        features_root: the feature store's folder (``.mlops/features``) for online lookups.
    """

    def __init__(self, bundle: str | os.PathLike, features_root: str | os.PathLike | None = None):
        self.path = Path(bundle).resolve()
        self.manifest = open_bundle(self.path)
        self.model = pickle.loads(model_bytes(self.path, self.manifest))  # noqa: S301 - hash-checked above
        info = self.manifest["model"]
        self.name, self.version, self.bundle = info["name"], int(info["version"]), self.manifest["bundle"]
        self.inputs = [(c.get("name"), c.get("type")) for c in self.manifest.get("signature", {}).get("inputs") or []]
        if any(name is None for name, _ in self.inputs):
            self.inputs = []  # a tensor signature: columns are not checked by name
        self.features_root = Path(features_root) if features_root else None
        self.online = online_refs(tuple(self.manifest.get("features") or ())) if self.manifest.get("features") else {}
        self.classes = getattr(self.model, "classes_", None)
        self.has_proba = callable(getattr(self.model, "predict_proba", None))
        self.numeric = bool(self.inputs) and all(t in _NUMERIC for _, t in self.inputs)
        self.array_ok = False
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self._check_fast_path()

    # parsing ----------------------------------------------------------------------------------------------------
    def parse(self, body: bytes, content_type: str | None) -> dict[str, Any]:
        """The request's columns (name -> list of values) from a JSON or CSV body, or :class:`BadRequest`."""
        kind = (content_type or "").split(";")[0].strip().lower()
        if kind == "text/csv":
            try:
                frame = pd.read_csv(io.BytesIO(body))
            except (ValueError, pd.errors.ParserError) as exc:
                raise BadRequest(f"the CSV body cannot be read: {_first_line(exc)}") from None
            return {str(c): frame[c].tolist() for c in frame.columns}
        if kind != "application/json":
            raise BadRequest(
                f"this server reads {' or '.join(CONTENT_TYPES)}, not {kind or 'a body without a content type'!r}; "
                "send Content-Type: application/json",
                415,
            )
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {_first_line(exc)}") from None
        except RecursionError:
            raise BadRequest("the JSON body is nested too deeply") from None
        formats = ("dataframe_split", "dataframe_records", "instances", "inputs")
        if not isinstance(data, dict):
            raise BadRequest(f"the JSON body must be an object with one of {', '.join(formats)}")
        given = [k for k in formats if k in data]
        unknown = sorted(set(data) - set(formats) - {"params"})
        if len(given) != 1 or unknown:
            what = f"unknown field {unknown[0]!r}" if unknown else f"{len(given)} of them"
            raise BadRequest(f"the JSON body must have exactly one of {', '.join(formats)} (it has {what})")
        if "params" in data and not isinstance(data["params"], dict):
            raise BadRequest("params must be an object of parameter name -> value")
        return self._columns(given[0], data[given[0]])

    def _columns(self, shape: str, value: Any) -> dict[str, Any]:
        names = [n for n, _ in self.inputs]
        if shape == "dataframe_split":
            if not isinstance(value, dict) or not isinstance(value.get("data"), list):
                raise BadRequest('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
            columns = value.get("columns") or names
            rows = value["data"]
            if not isinstance(columns, list) or any(not isinstance(r, list) or len(r) != len(columns) for r in rows):
                raise BadRequest(f"each row of dataframe_split.data must have {len(columns)} values, one per column")
            return {str(c): [r[i] for r in rows] for i, c in enumerate(columns)}
        if isinstance(value, dict):  # {"column": [values]} (instances / inputs)
            lists = {str(k): v if isinstance(v, list) else [v] for k, v in value.items()}
            if len({len(v) for v in lists.values()}) > 1:
                raise BadRequest(f"the columns of {shape} must have the same number of values")
            return lists
        if not isinstance(value, list) or not value:
            raise BadRequest(f"{shape} must be a non-empty list of rows")
        if all(isinstance(r, dict) for r in value):
            keys = list(dict.fromkeys(k for r in value for k in r))
            return {str(k): [r.get(k) for r in value] for k in keys}
        if shape != "dataframe_records" and names and all(isinstance(r, list) for r in value):
            if any(len(r) != len(names) for r in value):
                raise BadRequest(f"each row of {shape} must have {len(names)} values: {', '.join(names)}")
            return {n: [r[i] for r in value] for i, n in enumerate(names)}
        raise BadRequest(f"{shape} must be a list of objects (column -> value)")

    # checking ---------------------------------------------------------------------------------------------------
    def prepare(self, columns: dict[str, list]) -> tuple[dict[str, np.ndarray], int]:
        """The model's input columns, typed as its signature says and in its order (online features looked up
        for the columns a request leaves out), and the row count; or :class:`BadRequest` naming the column."""
        if not columns:
            raise BadRequest("the request has no columns")
        n = len(next(iter(columns.values())))
        if n == 0:
            raise BadRequest("the request has no rows")
        if not self.inputs:
            return {k: np.asarray(v) for k, v in columns.items()}, n
        missing = [name for name, _ in self.inputs if name not in columns]
        if missing and self.online:
            columns = {**columns, **self._lookup(columns, missing, n)}
            missing = [name for name, _ in self.inputs if name not in columns]
        if missing:
            expected = ", ".join(name for name, _ in self.inputs)
            unknown = [c for c in columns if c not in {n for n, _ in self.inputs}]
            sent = f" (the request has {', '.join(repr(c) for c in unknown[:3])}, which it does not)" if unknown else ""
            raise BadRequest(f"missing column {missing[0]!r}{sent}: the model takes {expected}")
        return {name: _typed(name, kind, columns[name]) for name, kind in self.inputs}, n

    def _lookup(self, columns: dict[str, list], missing: list[str], n: int) -> dict[str, np.ndarray]:
        """The online values of the missing features, by the entity keys the request carries."""
        found: dict[str, np.ndarray] = {}
        for view, names in self.online.items():
            table = read_online(self.features_root / view / "online.parquet") if self.features_root else None
            if table is None:
                raise BadRequest(f"feature view {view!r} has no online table here; materialize it", 503, "UNAVAILABLE")
            wanted = [f for f in (names or list(table.features)) if f in missing]
            if not wanted:
                continue
            keys = [k for k in table.keys if k not in columns]
            if keys:
                raise BadRequest(f"missing column {keys[0]!r}: the entity key of feature view {view!r}")
            positions = table.lookup({k: np.asarray(columns[k]) for k in table.keys})
            if (positions < 0).any():
                absent = {k: columns[k][int(np.argmax(positions < 0))] for k in table.keys}
                raise BadRequest(f"no online features in view {view!r} for {json.dumps(absent, default=str)}", 404,
                                 "RESOURCE_DOES_NOT_EXIST")  # fmt: skip
            for f in wanted:
                found[f] = np.asarray(table.take(f, positions))
        return found

    # predicting -------------------------------------------------------------------------------------------------
    def _check_fast_path(self) -> None:
        """Predict on a plain float array when the model gives the same answers for it as for a DataFrame (a
        scikit-learn model trained on a frame checks names, ~0.6 ms a request); checked on the input example."""
        example = self.manifest.get("input_example")
        if not self.numeric or not example:
            return
        try:
            columns, _ = self.prepare(self._columns("dataframe_split", example))
            framed = self.model.predict(pd.DataFrame(columns))
            plain = self.model.predict(np.column_stack([columns[n].astype(np.float64) for n, _ in self.inputs]))
            self.array_ok = bool(np.array_equal(np.asarray(framed), np.asarray(plain)))
        except Exception:  # noqa: BLE001 - any model that refuses arrays takes frames
            self.array_ok = False

    def predict(self, columns: dict[str, np.ndarray]) -> tuple[list, list | None]:
        """Predictions and probabilities (of the positive class for two classes, else of the predicted one)."""
        try:
            if self.array_ok:
                x = np.column_stack([columns[n].astype(np.float64, copy=False) for n, _ in self.inputs])
            else:
                x = pd.DataFrame(columns)
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"the columns do not make a table ({_first_line(exc)}); send one value per row") from None
        try:
            predicted = self.model.predict(x)
            proba = None
            if self.has_proba:
                p = np.asarray(self.model.predict_proba(x))
                proba = (p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p.max(axis=1)).tolist()
        except Exception as exc:  # noqa: BLE001 - the model's own error, as MLflow reports it
            gaps = [n for n, v in columns.items() if v.dtype.kind == "f" and np.isnan(v).any()]
            hint = f"; column {gaps[0]!r} has missing values" if gaps else "; check the values"
            raise BadRequest(f"the model failed on this input: {_first_line(exc)[:160]}{hint}", model=True) from None
        out = predicted.tolist() if hasattr(predicted, "tolist") else list(predicted)
        return out, proba


def _short(value) -> str:
    """A request's value as an error quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _typed(name: str, kind: str | None, values: list) -> np.ndarray:
    """One column as its signature type, or a BadRequest naming the column and the first bad value."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        array = values
    else:
        try:
            array = np.asarray(values)
        except (ValueError, TypeError):
            raise BadRequest(f"column {name!r} holds values of mixed shapes") from None
    if array.ndim != 1:  # a list or table where one value per row belongs
        raise BadRequest(f"column {name!r} holds lists or arrays; send one value per row")
    dtype = _NUMERIC.get(kind or "")
    if dtype is not None:
        if array.dtype.kind == "O":  # None for missing values
            bad = [v for v in values if v is not None and (not isinstance(v, int | float) or isinstance(v, bool))]
            if bad:
                raise BadRequest(f"column {name!r} expects {kind} values, got {_short(bad[0])}")
            array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        if array.dtype.kind not in "fiu":
            bad = values[0] if len(values) else None
            raise BadRequest(f"column {name!r} expects {kind} values, got {_short(bad)}")
        if dtype in (np.int64, np.int32) and array.dtype.kind == "f":
            if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
                bad = array[~(np.isfinite(array) & (array == np.round(array)))][0]
                raise BadRequest(f"column {name!r} expects {kind} values, got {float(bad)!r}")
        if dtype in (np.int64, np.int32):
            info = np.iinfo(dtype)
            if array.size and (array.min() < info.min or array.max() > info.max):
                bad = array.max() if array.max() > info.max else array.min()
                raise BadRequest(f"column {name!r} expects {kind} values, got {bad.item()!r}, out of its range")
        return array.astype(dtype, copy=False)
    if kind == "string":
        bad = next((v for v in values if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise BadRequest(f"column {name!r} expects string values, got {_short(bad)}")
        return np.asarray(values, dtype=object)
    if kind == "boolean":
        if array.dtype.kind != "b":
            raise BadRequest(f"column {name!r} expects boolean values, got {_short(values[0])}")
        return array
    if kind == "datetime":
        try:
            return pd.to_datetime(pd.Series(values)).to_numpy()
        except (ValueError, TypeError):
            raise BadRequest(f"column {name!r} expects datetime values, got {_short(values[0])}") from None
    return array


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class Metrics:
    """Counters and a latency histogram of this process, in Prometheus' text format."""

    def __init__(self):
        self.requests: dict[int, int] = {}
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self._lock = threading.Lock()

    def observe(self, status: int, seconds: float) -> None:
        """Count one answered request."""
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            self.latency_sum += seconds
            for i, bound in enumerate(_LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
                    break
            else:
                self.buckets[-1] += 1

    def text(self, scorer: Scorer, log: LogWriter | None) -> str:
        """The exposition text."""
        labels = f'model="{scorer.name}",version="{scorer.version}",bundle="{scorer.bundle[:12]}"'
        lines = [
            "# HELP mlops_model_info The model this server answers with.",
            "# TYPE mlops_model_info gauge",
            f"mlops_model_info{{{labels}}} 1",
            "# HELP mlops_requests_total Requests answered, by HTTP status.",
            "# TYPE mlops_requests_total counter",
        ]
        with self._lock:
            for status, count in sorted(self.requests.items()):
                lines.append(f'mlops_requests_total{{status="{status}"}} {count}')
            lines += [
                "# HELP mlops_request_seconds Time to answer a request.",
                "# TYPE mlops_request_seconds histogram",
            ]
            total = 0
            for bound, count in zip(_LATENCY_BUCKETS, self.buckets, strict=False):
                total += count
                lines.append(f'mlops_request_seconds_bucket{{le="{bound}"}} {total}')
            total += self.buckets[-1]
            lines.append(f'mlops_request_seconds_bucket{{le="+Inf"}} {total}')
            lines.append(f"mlops_request_seconds_sum {self.latency_sum:.6f}")
            lines.append(f"mlops_request_seconds_count {total}")
        if log is not None:
            lines += [
                "# HELP mlops_prediction_log_rows_total Prediction log rows written to segments.",
                "# TYPE mlops_prediction_log_rows_total counter",
                f"mlops_prediction_log_rows_total {log.written}",
                "# HELP mlops_prediction_log_pending Prediction log rows waiting for the next segment.",
                "# TYPE mlops_prediction_log_pending gauge",
                f"mlops_prediction_log_pending {log.pending}",
                "# HELP mlops_prediction_log_errors_total Failed prediction log writes (the rows are retried).",
                "# TYPE mlops_prediction_log_errors_total counter",
                f"mlops_prediction_log_errors_total {log.errors}",
            ]
        return "\n".join(lines) + "\n"


def create_app(config: dict[str, Any] | None = None) -> Starlette:
    """The ASGI app for a bundle. ``config`` (default: the JSON in ``$MLOPS_NB_SERVE_CONFIG``) holds ``bundle``,
    ``predictions`` (the log's folder; none: no log), ``features`` (the feature store's folder), ``alias``,
    ``max_body`` and ``flush_seconds``."""
    if config is None:
        config = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    scorer = Scorer(config["bundle"], config.get("features"))
    alias = config.get("alias") or ""
    max_body = int(config.get("max_body") or MAX_BODY)
    metrics = Metrics()
    state: dict[str, LogWriter | None] = {"log": None}
    base = {"model": scorer.name, "version": scorer.version, "alias": alias, "bundle": scorer.bundle}

    def log_rows(request_id: str, variant: str, status: int, latency: float, columns=None, predictions=None,
                 proba=None, error: str | None = None) -> None:  # fmt: skip
        log = state["log"]
        if log is None:
            return
        ts = now_utc()
        common = {"request_id": request_id, "ts": ts, **base, "variant": variant, "status": status, "error": error,
                  "latency_ms": latency}  # fmt: skip
        if predictions is None:
            log.append([{**common, "row": 0, "prediction": None, "probability": None}])
            return
        features = {FEATURE_PREFIX + k: v.tolist() for k, v in (columns or {}).items()}
        log.append(
            [
                {
                    **common,
                    "row": i,
                    "prediction": predictions[i],
                    "probability": proba[i] if proba is not None else None,
                    **{k: v[i] for k, v in features.items()},
                }
                for i in range(len(predictions))
            ]
        )

    def identify(request: Request) -> tuple[str, str]:
        given = request.headers.get("x-request-id", "")
        variant = request.headers.get("x-mlops-variant", "")
        return (given if _REQUEST_ID.match(given) else uuid.uuid4().hex), (
            variant if variant in _VARIANTS else "direct"
        )

    def refuse(request_id: str, variant: str, start: float, error: BadRequest) -> JSONResponse:
        latency = time.perf_counter() - start
        metrics.observe(error.status, latency)
        log_rows(request_id, variant, error.status, latency * 1000.0, error=error.message)
        headers = {"x-request-id": request_id}
        if error.model:
            headers["x-mlops-error"] = "model"
        return JSONResponse({"error_code": error.code, "message": error.message}, status_code=error.status,
                            headers=headers)  # fmt: skip

    async def invocations(request: Request) -> Response:
        start = time.perf_counter()
        request_id, variant = identify(request)
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_body:
                raise BadRequest(f"the body is {int(declared)} bytes, over this server's limit of {max_body}", 413,
                                 "REQUEST_LIMIT_EXCEEDED")  # fmt: skip
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:
                    raise BadRequest(f"the body is over this server's limit of {max_body} bytes", 413,
                                     "REQUEST_LIMIT_EXCEEDED")  # fmt: skip
                chunks.append(chunk)
            columns, _ = scorer.prepare(scorer.parse(b"".join(chunks), request.headers.get("content-type")))
            predictions, proba = scorer.predict(columns)
        except BadRequest as error:
            return refuse(request_id, variant, start, error)
        except Exception as exc:  # noqa: BLE001 - whatever else fails is answered, logged, and the server goes on
            error = BadRequest(f"internal error: {type(exc).__name__}: {_first_line(exc)}", 500, "INTERNAL_ERROR")
            return refuse(request_id, variant, start, error)
        body = json.dumps({"predictions": predictions}, allow_nan=True).encode()
        latency = time.perf_counter() - start
        metrics.observe(200, latency)
        log_rows(request_id, variant, 200, latency * 1000.0, columns, predictions, proba)
        return Response(body, media_type="application/json", headers={"x-request-id": request_id})

    async def ping(request: Request) -> Response:
        return PlainTextResponse("\n")

    async def health(request: Request) -> Response:
        log = state["log"]
        problem = log.last_error if log is not None else None
        return JSONResponse({"status": "ok", **base, "pid": os.getpid(), "prediction_log": problem or "ok"})

    async def version(request: Request) -> Response:
        return JSONResponse(
            {**base, "build_id": scorer.manifest.get("build_id"), "mlops_nb": scorer.manifest.get("mlops_nb")}
        )

    async def metrics_route(request: Request) -> Response:
        return PlainTextResponse(metrics.text(scorer, state["log"]), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: Exception) -> Response:
        start = time.perf_counter()
        request_id, variant = identify(request)
        status = getattr(exc, "status_code", 404)
        what = "no route" if status == 404 else "method not allowed:"
        return refuse(request_id, variant, start, BadRequest(
            f"{what} {request.method} {request.url.path}; this server answers POST /invocations and GET /ping, "
            "/health, /version, /metrics", status, "ENDPOINT_NOT_FOUND" if status == 404 else "BAD_REQUEST",
        ))  # fmt: skip

    def startup() -> None:
        folder = config.get("predictions")
        if folder:
            state["log"] = LogWriter(folder, float(config.get("flush_seconds") or 1.0))

    def shutdown() -> None:
        log = state["log"]
        if log is not None:
            log.close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        startup()
        try:
            yield
        finally:
            shutdown()

    return Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/version", version, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> int:
    """``python app/serve.py BUNDLE [--host] [--port] [--workers] [--predictions DIR] [--features DIR] [--alias]``."""
    parser = argparse.ArgumentParser(prog="serve.py", description="Serve an mlops_nb app bundle.")
    parser.add_argument("bundle", help="the bundle's folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--predictions", default=os.environ.get(PREDICTIONS_ENV), help="prediction log folder")
    parser.add_argument("--features", default=None, help="the feature store folder, for online features")
    parser.add_argument("--alias", default="", help="the alias this server answers for (logged with each row)")
    parser.add_argument("--max-body", type=int, default=MAX_BODY, help="largest request body in bytes")
    parser.add_argument("--flush-seconds", type=float, default=1.0, help="prediction log flush interval")
    args = parser.parse_args(argv)
    config = {
        "bundle": str(Path(args.bundle).resolve()),
        "predictions": args.predictions,
        "features": args.features,
        "alias": args.alias,
        "max_body": args.max_body,
        "flush_seconds": args.flush_seconds,
    }
    os.environ[CONFIG_ENV] = json.dumps(config)
    _follow_parent()
    try:
        scorer = Scorer(config["bundle"], config["features"])  # fail here, in one line, before uvicorn starts
    except MlopsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    busy = _port_in_use(args.host, args.port)
    if busy:
        print(f"Error: cannot listen on {args.host}:{args.port} ({busy}); choose another --port", file=sys.stderr)
        return 1
    print(
        f"serving {scorer.name} v{scorer.version} (bundle {scorer.bundle[:12]}) on http://{args.host}:{args.port} "
        f"with {args.workers} worker(s); log: {args.predictions or 'off'}",
        flush=True,
    )
    del scorer
    uvicorn.run(
        f"{__name__}:create_app",  # this module, as uvicorn imports it in each worker
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers > 1 else None,
        loop=_best("uvloop", "auto"),
        http=_best("httptools", "auto"),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, no such address), or None."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _follow_parent() -> None:
    """Under a deployment's supervisor (``$MLOPS_NB_PARENT_PID``): get SIGTERM, a graceful stop with the log
    flushed, when the supervisor dies, even by ``kill -9`` (Linux' PR_SET_PDEATHSIG; elsewhere a server outlives a
    killed supervisor)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if str(os.getppid()) != parent:  # the supervisor died before prctl took hold
        sys.exit("error: the deployment's supervisor is gone")


def _best(module: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return module


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
