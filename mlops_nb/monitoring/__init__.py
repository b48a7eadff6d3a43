"""Monitoring: a served model's drift, performance and health against its training reference, a report, alerts.

- :func:`monitor`: a window of the prediction log against the training set (:mod:`.model_monitor`), recorded as a run
  of kind ``monitor``, with its HTML and JSON report (:mod:`.report`).
- :func:`data_drift`: per-column drift with Evidently's DataDriftPreset defaults, vectorised (:mod:`.drift`).
- :mod:`.alerts`: rules over a monitoring run's metrics and their actions (log, a retraining run, a command).
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "monitor": "model_monitor",
    "MonitorReport": "model_monitor",
    "latest_report": "model_monitor",
    "parse_window": "model_monitor",
    "data_drift": "drift",
    "DriftResult": "drift",
    "ColumnDrift": "drift",
    "parse_rule": "alerts",
    "Rule": "alerts",
}
__all__ = sorted([*_LAZY, "METRICS"])

METRICS = (
    "drift_share", "drifted_columns", "dataset_drift", "prediction_drift", "prediction_drift_score",
    "accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2", "labelled_rows",
    "requests", "rows", "errors", "error_rate", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms",
)  # fmt: skip
"""The metrics an alert rule can name (besides ``drift.COLUMN``, a column's drift score); here, so that the
command line's help names them without importing :mod:`.alerts`."""


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_nb.monitoring' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
