"""``mlops_nb.monitor``: a served model's drift, performance and service health over a window of its prediction log,
against its training reference; a self-contained report; a recorded run of kind ``monitor``; alerts.

The reference is the training set of the served version, found through lineage: the data artifacts upstream of
the step run that registered ``models:/NAME/VERSION`` (a DataFrame holding the logged input columns; one named
like ``*train*`` first, else the largest). ``reference=`` takes a file (Parquet or CSV), a feature view's name
(its offline data), or a DataFrame instead. The current data is the window's successful predictions: their
``in_<feature>`` columns, their predictions, and the labels attached to them.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..core.clock import iso, parse_duration, utcnow
from ..exceptions import MlopsError, MonitoringError, NotFoundError
from ..project import current_project
from .drift import DRIFT_SHARE, DriftResult, data_drift

_MAX_BUCKETS = 12
_LABEL_METRICS = {"accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2", "labelled_rows"}


def parse_window(text: str | float | timedelta) -> timedelta:
    """``30m``, ``12h``, ``1d``, ``2w`` or seconds as a :class:`~datetime.timedelta` (at most 10 years)."""
    return parse_duration(text, "window", error=MonitoringError, longest=timedelta(days=3650))


@dataclass
class MonitorReport:
    """What :func:`monitor` found.

    Attributes:
        model, version: the model version monitored.
        since, until: the window (UTC).
        drift: the features' :class:`~mlops_nb.monitoring.drift.DriftResult`.
        prediction_drift: the predictions' drift (one column), or None when it could not be computed.
        performance: ``overall`` metrics on the labelled rows, ``windows`` (one dict per time bucket), ``training``
            (the version's training-time metrics), ``task`` and ``labelled`` rows; empty without labels.
        service: ``requests``, ``rows``, ``errors``, ``error_rate``, ``p50/p95/p99_latency_ms``.
        metrics: the flat metrics alert rules compare (``drift_share``, ``f1``, ``p99_latency_ms`` ...).
        alerts: the alerts raised (dicts as :meth:`MetadataStore.alerts` gives them, with their outcome).
        reference: where the reference came from; notes: what could not be computed and why.
        run_id: the monitoring run; html, json: the report's files; html_ref, json_ref: its artifacts.
    """

    model: str
    version: int
    since: datetime
    until: datetime
    drift: DriftResult
    prediction_drift: Any = None
    performance: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)
    reference: str = ""
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    html: Path | None = None
    json: Path | None = None
    html_ref: Any = None
    json_ref: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON."""
        return {
            "model": self.model,
            "version": self.version,
            "since": iso(self.since),
            "until": iso(self.until),
            "reference": self.reference,
            "data_drift": self.drift.to_dict(),
            "prediction_drift": self.prediction_drift.to_dict() if self.prediction_drift is not None else None,
            "performance": self.performance,
            "service": self.service,
            "metrics": self.metrics,
            "alerts": [_jsonable(a) for a in self.alerts],
            "notes": self.notes,
            "run_id": self.run_id,
            "html": str(self.html) if self.html else None,
        }

    def line(self) -> str:
        """One line: the verdict."""
        drift = self.drift
        verdict = "DRIFT" if drift.dataset_drift else "no dataset drift"
        parts = [
            f"{self.model} v{self.version}: {verdict} ({len(drift.drifted)}/{len(drift.columns)} columns drifted, "
            f"share {drift.share:.2f})"
        ]
        if self.prediction_drift is not None:
            parts.append(f"prediction drift {'yes' if self.prediction_drift.drifted else 'no'}")
        overall = self.performance.get("overall") or {}
        shown = [f"{k} {v:.3f}" for k, v in overall.items() if k in ("accuracy", "f1", "roc_auc", "rmse", "r2")]
        if shown:
            parts.append(", ".join(shown))
        parts.append(f"{self.service.get('rows', 0)} rows")
        if self.alerts:
            parts.append(f"{len(self.alerts)} alert{'s' * (len(self.alerts) > 1)}")
        return "; ".join(parts)

    def _repr_html_(self) -> str:
        from .report import render_html

        return render_html(self.to_dict(), inline=True)


def _jsonable(record: dict) -> dict:
    return {k: (iso(v) if isinstance(v, datetime) else v) for k, v in record.items()}


# what is monitored ------------------------------------------------------------------------------------------
def _resolve_version(project, name: str, which: str) -> int:
    """The version ``which`` names (a number, ``@alias``, or None: the one that served most in the window)."""
    if which.startswith("@"):
        alias = which[1:]
        holder = project.registry.alias_holder(name, alias)
        if holder is None:
            raise MonitoringError(f"model {name!r} has no version with alias {alias!r}; give NAME/VERSION")
        return int(holder.version)
    return int(which)


def parse_model(spec: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` as ``(name, "@alias" | version | None)``."""
    from ..serving.bundle import parse_model_spec

    return parse_model_spec(spec, default=None)


def _current(project, name: str, which: str | None, since: datetime, until: datetime):
    """The window's logged rows of the model (all statuses) and the version monitored."""
    log = project.predictions
    if not log.segments():
        raise MonitoringError(
            f"no prediction log yet under {log.root}: deploy {name} (mlops-nb deploy {name}@champion) and send it "
            "traffic first"
        )
    rows = log.read(model=name, since=since, until=until, ordered=False)
    rows = rows[rows["variant"] != "smoke"]  # a rollout's smoke tests are not traffic
    if which is None:
        if rows.empty:
            _no_rows(log, name, None, since, until)
        version = int(rows["version"].value_counts().idxmax())
    else:
        version = _resolve_version(project, name, which)
    rows = rows[rows["version"] == version]
    if rows.empty:
        _no_rows(log, name, version, since, until)
    return rows, version


def _no_rows(log, name: str, version: int | None, since: datetime, until: datetime) -> None:
    held = log.summary()
    what = f"{name} v{version}" if version is not None else name
    mine = held[held["model"] == name]
    if mine.empty:
        models = sorted(set(held["model"].dropna()))
        raise MonitoringError(
            f"the prediction log has no predictions of model {name!r} (models in the log: "
            f"{', '.join(models) or 'none'}); check the name, or deploy it and send traffic"
        )
    if version is not None:
        logged = sorted({int(v) for v in mine["version"].dropna()})
        mine = mine[mine["version"] == version]
        if mine.empty:
            raise MonitoringError(
                f"the prediction log has no predictions of {what} (versions of {name} in the log: "
                f"{', '.join(map(str, logged))}); monitor a version that served"
            )
    raise MonitoringError(
        f"no predictions of {what} between {iso(since)} and {iso(until)} (the latest is from "
        f"{iso(mine['last'].max())}; a rollout's smoke tests are not counted); widen --window"
    )


def _reference(project, reference, name: str, version: int, features: list[str]):
    """The reference frame and where it came from."""
    import pandas as pd

    if isinstance(reference, pd.DataFrame):
        return reference, "the DataFrame given"
    if reference is not None:
        text = str(reference)
        path = Path(text)
        if path.is_file():
            from ..serving.batch import read_table

            table = read_table(path, MonitoringError, "reference ", "give one of them or a feature view's name")
            return table, f"file {path}"
        if path.suffix.lower() in (".parquet", ".pq", ".csv") or os.sep in text:
            raise MonitoringError(f"reference file {path} does not exist")
        from ..exceptions import FeatureStoreError

        try:
            return project.features.view_data(text), f"feature view {text}"
        except FeatureStoreError as exc:
            raise MonitoringError(
                f"reference {text!r} is neither a file nor a feature view ({exc.message.split(';')[0]})"
            ) from None
    found = _training_set(project, name, version, features)
    if found is None:
        raise MonitoringError(
            f"{name} v{version} has no training set in the lineage (registered outside a pipeline, or trained on "
            "other columns); pass --reference FILE|VIEW (reference= in the API)"
        )
    return found


def _registered_at(project, graph) -> datetime | None:
    """When the step run that registered the version (the root's producer) started: what it could have read."""
    for node in graph.upstream():
        if node.kind == "step_run":
            try:
                return project.metadata.get_step_run(node.id).started_at
            except MlopsError:
                return None
    return None


def _training_set(project, name: str, version: int, features: list[str]):
    """The DataFrame upstream of ``models:/NAME/VERSION`` that holds the logged input columns."""
    try:
        graph = project.metadata.lineage(f"models:/{name}/{version}", "up")
    except MlopsError:
        return None
    candidates = []
    views: list[str] = []
    for node in graph.upstream():
        if node.kind == "artifact" and node.attrs.get("artifact_kind") in ("feature_view", "feature_segment"):
            views.append(node.label.split(" (")[0].split("#")[0].removeprefix("features:"))
        if node.kind != "artifact" or node.attrs.get("artifact_kind") != "parquet":
            continue
        label = node.label.split(" (")[0]
        try:
            frame = project.artifacts.get(node.id)
        except MlopsError:
            continue
        if not hasattr(frame, "columns") or not set(features) <= {str(c) for c in frame.columns}:
            continue
        candidates.append(("train" not in label.lower(), -len(frame), label, node.id, frame))
    if not candidates:  # trained on a feature store's training set that was not kept: the views it read
        trained = _registered_at(project, graph)
        for view in dict.fromkeys(views):
            try:
                frame = project.features.view_data(view, as_of=trained)
            except MlopsError:
                continue
            if set(features) <= {str(c) for c in frame.columns}:
                return frame, f"feature view {view} upstream of models:/{name}/{version}"
        return None
    _, _, label, digest, frame = min(candidates, key=lambda c: c[:3])
    return frame, f"training set {label} ({digest[:12]}) upstream of models:/{name}/{version}"


# what is measured -----------------------------------------------------------------------------------------------
def _service(rows) -> dict[str, Any]:
    import numpy as np

    requests = rows.drop_duplicates("request_id")
    latency = requests["latency_ms"].astype(float).to_numpy()
    errors = int((requests["status"] != 200).sum())
    out: dict[str, Any] = {"requests": len(requests), "rows": int((rows["status"] == 200).sum()), "errors": errors}
    out["error_rate"] = errors / len(requests) if len(requests) else 0.0
    if len(latency):
        for q in (50, 95, 99):
            out[f"p{q}_latency_ms"] = float(np.percentile(latency, q))
    return out


def _task(scorer, predictions) -> str:
    if scorer is not None:
        return "classification" if scorer.has_proba or scorer.classes is not None else "regression"
    values = predictions.dropna()
    if values.dtype.kind in "OSUb" or (values.dtype.kind in "iu"):
        return "classification"
    return "classification" if values.nunique() <= 20 and (values == values.round()).all() else "regression"


def _scores(task: str, labels, predictions, probability, classes=None) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    out: dict[str, float] = {}
    if task == "regression":
        y, p = labels.astype(float).to_numpy(), predictions.astype(float).to_numpy()
        out["mae"] = float(m.mean_absolute_error(y, p))
        out["rmse"] = float(np.sqrt(m.mean_squared_error(y, p)))
        if len(y) > 1:
            out["r2"] = float(m.r2_score(y, p))
        return out
    n = len(labels)
    together, _ = _same_type([*labels, *predictions, *(classes or [])], [])  # one type for labels, predictions, classes
    y, p, known = together[:n], together[n : 2 * n], (together[2 * n :] if classes is not None else None)
    seen = sorted(set(y) | set(p), key=lambda v: (isinstance(v, str), v))
    out["accuracy"] = float(m.accuracy_score(y, p))
    binary = len(known) == 2 and set(seen) <= set(known) if known is not None else len(seen) <= 2
    average = "binary" if binary else "macro"
    # the model's second class is the positive one (the logged probability is of it), as scikit-learn orders them
    positive = (known[1] if known is not None else (1 if 1 in seen else seen[-1])) if binary else None
    classes = seen
    kwargs = {"average": average, "zero_division": 0}
    if binary:
        kwargs["pos_label"] = positive
        if len(classes) == 1:
            kwargs["labels"] = classes
    out["precision"] = float(m.precision_score(y, p, **kwargs))
    out["recall"] = float(m.recall_score(y, p, **kwargs))
    out["f1"] = float(m.f1_score(y, p, **kwargs))
    if binary and len(set(y)) == 2 and probability is not None and probability.notna().all():
        out["roc_auc"] = float(m.roc_auc_score([v == positive for v in y], probability.astype(float)))
    return out


def _same_type(labels, predictions):
    y, p = list(labels), list(predictions)
    if all(isinstance(v, int | float) for v in y + p):
        return [_num(v) for v in y], [_num(v) for v in p]
    return [str(v) for v in y], [str(v) for v in p]


def _num(value):
    return int(value) if float(value).is_integer() else float(value)


def _performance(rows, scorer, training: dict[str, float]) -> dict[str, Any]:
    import pandas as pd

    labelled = rows[(rows["status"] == 200) & rows["label"].notna()]
    if labelled.empty:
        return {}
    task = _task(scorer, rows["prediction"])
    has_proba = "probability" in labelled and labelled["probability"].notna().all()
    probability = labelled["probability"] if has_proba else None
    out: dict[str, Any] = {"task": task, "labelled": len(labelled)}
    classes = getattr(scorer, "classes", None) if task == "classification" else None
    classes = [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None
    out["overall"] = _scores(task, labelled["label"], labelled["prediction"], probability, classes)
    first, last = labelled["ts"].min(), labelled["ts"].max()  # buckets over the labelled rows' own span
    buckets = max(1, min(_MAX_BUCKETS, len(labelled) // 50))  # at least ~50 labelled rows a window
    span = max((last - first) / buckets, pd.Timedelta(milliseconds=1))
    bucket = ((labelled["ts"] - first) / span).astype(int).clip(0, buckets - 1)
    windows = []
    for b, part in labelled.groupby(bucket):
        start = (first + span * int(b)).to_pydatetime()
        scores = _scores(task, part["label"], part["prediction"], part["probability"] if has_proba else None, classes)
        windows.append({"start": iso(start), "end": iso(start + span), "rows": len(part), **scores})
    out["windows"] = windows
    out["training"] = {k: v for k, v in training.items() if k in out["overall"]}
    return out


def _prediction_drift(scorer, reference, rows, notes: list[str]):
    import pandas as pd

    current = rows.loc[rows["status"] == 200, "prediction"].reset_index(drop=True)
    if scorer is None:
        notes.append("prediction drift: the app bundle that served is not in this project")
        return None
    try:
        columns, _ = scorer.prepare({str(c): reference[c].to_numpy() for c in reference.columns})
        predicted, _ = scorer.predict(columns)
    except Exception as exc:  # noqa: BLE001 - the reference may lack online features; say so, keep the rest
        notes.append(f"prediction drift: the model cannot score the reference ({str(exc).splitlines()[0][:240]})")
        return None
    ref = pd.Series(list(predicted), name="prediction")
    if ref.dtype.kind == "O":
        try:
            ref = ref.astype(current.dtype)
        except (TypeError, ValueError):
            pass
    result = data_drift(pd.DataFrame({"prediction": ref}), pd.DataFrame({"prediction": current}))
    return result.columns[0] if result.columns else None


def _scorer(project, rows, notes: list[str]):
    from ..serving.app import Scorer

    bundle = rows["bundle"].dropna()
    if bundle.empty:
        return None
    path = project.builds_dir / str(bundle.value_counts().idxmax())
    if not path.is_dir():
        return None
    try:
        return Scorer(path, project.mlops_dir / "features")
    except MlopsError as exc:
        notes.append(f"the app bundle {path.name[:12]} cannot be used: {exc.message}")
        return None


def _training_metrics(project, name: str, version: int, notes: list[str]) -> dict[str, float]:
    try:
        return project.registry.version_metrics(name, version)
    except MlopsError as exc:
        notes.append(f"training metrics: {exc.message}")
        return {}


def _flat_metrics(drift: DriftResult, prediction, performance: dict, service: dict) -> dict[str, float]:
    metrics: dict[str, float] = {
        "drift_share": drift.share,
        "drifted_columns": float(len(drift.drifted)),
        "dataset_drift": float(drift.dataset_drift),
    }
    for column in drift.columns:
        if math.isfinite(column.score):
            metrics[f"drift.{column.column}"] = float(column.score)
    if prediction is not None:
        metrics["prediction_drift"] = float(prediction.drifted)
        if math.isfinite(prediction.score):
            metrics["prediction_drift_score"] = float(prediction.score)
    for key, value in (performance.get("overall") or {}).items():
        metrics[key] = float(value)
    if performance:
        metrics["labelled_rows"] = float(performance["labelled"])
    for key, value in service.items():
        metrics[key] = float(value)
    return metrics


def monitor(
    model: str,
    *,
    window: str | float | timedelta | None = None,
    reference: Any = None,
    until: datetime | None = None,
    columns: list[str] | None = None,
    test: str | None = None,
    overrides: dict[str, Any] | None = None,
    drift_share: float | None = None,
    rules: list[Any] | None = None,
    actions: bool = True,
    report: bool = True,
    trigger: str = "api",
    fired_by: str | None = None,
    project=None,
) -> MonitorReport:
    """Monitor a served model over a window of its prediction log: data drift of every input column against the
    training reference (Evidently's DataDriftPreset defaults, see :mod:`mlops_nb.monitoring.drift`), prediction
    drift, performance where labels are attached (against the version's training-time metrics), latency and
    errors. Writes a self-contained HTML report and its JSON (also stored as artifacts), records a run of kind
    ``monitor``, and raises the alerts whose rules hold (each then runs its action: ``log``, ``run NB`` or a
    command).

    Args:
        model: ``NAME`` (the version that served most in the window), ``NAME@ALIAS`` or ``NAME/VERSION``.
        window: how far back from ``until``: ``30m``, ``12h``, ``1d`` ... (default: the settings' ``window``, else
            ``1d``).
        reference: a Parquet/CSV file, a feature view's name or a DataFrame (default: the training set, found
            through lineage).
        until: the window's end (UTC; default now).
        columns: the input columns to compare (default: every logged input column the reference has).
        test, overrides, drift_share: as :func:`~mlops_nb.monitoring.drift.data_drift` takes them; defaults from
            ``[tool.mlops_nb.monitoring]``.
        rules: alert rules (``"drift_share > 0.3"``, or ``{"rule": ..., "action": ...}``); default: the settings'.
        actions: run the alerts' actions (False: only record the alerts).
        report: write the HTML and JSON report.
        trigger, fired_by: what started this monitoring run.

    Example::

        report = mlops_nb.monitor("churn@champion", window="1d")
        print(report.line(), report.html)
    """
    from . import alerts as alerting
    from .report import write_report

    project = current_project(project)
    config = alerting.settings_of(project)
    name, which = parse_model(model)
    window_delta = parse_window(window if window is not None else config.get("window", "1d"))
    if until is not None and until.tzinfo is not None:  # the stores keep naive UTC
        until = until.astimezone(UTC).replace(tzinfo=None)
    until = until or utcnow()
    since = until - window_delta
    started = utcnow()
    rule_list = alerting.parse_rules(config.get("alerts", []) if rules is None else rules)
    if actions:  # a retraining notebook or program that is not there: said now, before anything is computed
        alerting.check_targets(project, [r for r in rule_list if r.model in (None, name)])
    rows, version = _current(project, name, which, since, until)
    ok = rows[rows["status"] == 200]
    if ok.empty:
        raise MonitoringError(
            f"{name} v{version} answered no request successfully between {iso(since)} and {iso(until)}"
        )
    logged = [c[3:] for c in rows.columns if c.startswith("in_") and ok[c].notna().any()]
    notes: list[str] = []
    ref, source = _reference(project, reference, name, version, list(columns or logged))
    wanted = list(columns) if columns is not None else [c for c in logged if c in set(map(str, ref.columns))]
    if not wanted:
        raise MonitoringError(
            f"the reference ({source}) has none of the logged input columns ({', '.join(logged[:8])}); pass the "
            "training data as --reference"
        )
    missing = [c for c in wanted if c not in logged]
    if missing:
        raise MonitoringError(f"column {missing[0]!r} is not in the prediction log of {name} v{version}")
    absent = [c for c in wanted if c not in set(map(str, ref.columns))]
    if absent:
        raise MonitoringError(f"column {absent[0]!r} is not in the reference ({source})")
    configured = {k: v for k, v in (config.get("columns") or {}).items() if k in wanted}  # for this model's columns
    current = ok[[f"in_{c}" for c in wanted]].rename(columns=lambda c: c[3:]).reset_index(drop=True)
    drift = data_drift(
        ref[wanted],
        current,
        test=test if test is not None else config.get("test"),
        overrides={**configured, **(overrides or {})},
        drift_share=drift_share if drift_share is not None else config.get("drift_share", DRIFT_SHARE),
    )
    for column in logged:
        if column not in wanted:
            drift.skipped[column] = "not in the reference" if column not in set(map(str, ref.columns)) else "not asked"
    scorer = _scorer(project, rows, notes)
    prediction = _prediction_drift(scorer, ref[wanted], rows, notes)
    training = _training_metrics(project, name, version, notes) if rows["label"].notna().any() else {}
    performance = _performance(rows, scorer, training)
    if not performance:
        notes.append("performance: no labels attached in the window yet (mlops-nb labels FILE)")
    service = _service(rows)
    result = MonitorReport(name, version, since, until, drift, prediction, performance, service, reference=source)
    result.notes = notes
    result.metrics = _flat_metrics(drift, prediction, performance, service)
    fired = alerting.evaluate(rule_list, result.metrics, model=name)
    for rule in rule_list:
        if rule.model in (None, name) and rule.metric not in result.metrics:
            why = "no labels in the window" if rule.metric in _LABEL_METRICS else "not measured in this window"
            notes.append(f"alert rule {rule.text!r} not evaluated: {rule.metric} is {why}")
    if report:
        write_report(project, result, fired)
    result.run_id = _record(project, result, started, trigger, fired_by)
    result.alerts = alerting.raise_alerts(project, result, fired, run_actions=actions)
    return result


def _record(project, result: MonitorReport, started: datetime, trigger: str, fired_by: str | None) -> str:
    outputs = {}
    if result.html_ref is not None:
        outputs = {"report.html": result.html_ref, "report.json": result.json_ref}
    found = _reference_ref(project, result)
    inputs = {found[0]: found[1]} if found else {}
    params = {
        "model": result.model,
        "version": result.version,
        "since": iso(result.since),
        "until": iso(result.until),
        "reference": result.reference,
        "verdict": "drift" if result.drift.dataset_drift else "ok",
        "report": str(result.html) if result.html else None,
    }
    metrics = {k: v for k, v in result.metrics.items() if not k.startswith("drift.") and math.isfinite(v)}
    return project.metadata.record_run(
        kind="monitor",
        status="succeeded",
        trigger=trigger,
        fired_by=fired_by,
        started_at=started,
        params=params,
        metrics=metrics,
        steps=[{"step": "monitor", "status": "succeeded", "inputs": inputs, "outputs": outputs, "started_at": started}],
    )


def _reference_ref(project, result: MonitorReport):
    """The reference as the monitoring step's input: ``(name, ArtifactRef)``, or None (a DataFrame, a view)."""
    match = re.match(r"training set (.+) \(([0-9a-f]{12})\) upstream", result.reference)
    if match:
        try:
            return match.group(1).split("/")[0], project.artifacts.resolve(match.group(2))
        except MlopsError:
            return None
    if result.reference.startswith("file "):
        from ..core.records import ArtifactRef

        path = Path(result.reference[5:])
        return path.name, ArtifactRef.external(path)
    return None


def latest_report(model: str, project=None) -> dict:
    """The JSON of the latest monitoring report of a model (``NAME``), from its latest monitoring run."""
    project = current_project(project)
    name, _ = parse_model(model)
    for run in project.metadata.list_runs(limit=200, kind="monitor"):
        if run.params.get("model") == name and run.params.get("report"):
            path = Path(run.params["report"]).with_suffix(".json")
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
    raise NotFoundError(f"no monitoring report of {name!r} yet; run mlops-nb monitor {name}")
