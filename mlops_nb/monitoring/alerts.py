"""Alert rules and their actions.

A rule is ``METRIC OP NUMBER`` over the metrics of a monitoring run (``drift_share > 0.3``, ``f1 < 0.8``,
``p99_latency_ms > 50``, ``drift.tenure_months < 0.05``; see :attr:`MonitorReport.metrics`) with an action:

- ``log`` (the default): the alert is recorded and logged (logger ``mlops_nb.alerts``);
- ``run NB [-p NAME VALUE]... [--executor NAME] [--no-cache]``: a pipeline run of the notebook with trigger
  ``drift``, fired by the alert: the retraining loop (its new version then meets the registry's gates; its steps
  are cache hits unless the data they read changed, or ``--no-cache``);
- ``command CMD [ARG]...``: a program run in the project's home (no shell), with the alert as JSON in
  ``$MLOPS_NB_ALERT``.

Rules come from ``[tool.mlops_nb.monitoring] alerts = [{rule = "...", action = "...", model = "..."}]`` or from
the API. Alerts reach their actions through the ``alert`` hook (:mod:`mlops_nb.core.hooks`), where other listeners
(the dashboard, a notifier) can subscribe too.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import re
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import hooks
from ..core.clock import utcnow
from ..exceptions import MlopsError, MonitoringError
from . import METRICS

log = logging.getLogger("mlops_nb.alerts")

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
_RULE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_KEYS = {"window", "test", "drift_share", "columns", "alerts"}
COMMAND_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Rule:
    """One alert rule: ``metric op threshold`` → ``action`` (for ``model`` only, when set)."""

    text: str
    metric: str
    op: str
    threshold: float
    action: str = "log"
    model: str | None = None

    def holds(self, metrics: dict[str, float]) -> bool | None:
        """Whether the rule fires on these metrics; None when the metric is not among them."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return None
        return bool(_OPS[self.op](value, self.threshold))


def settings_of(project) -> dict[str, Any]:
    """``[tool.mlops_nb.monitoring]`` of a project, checked."""
    table = dict(project.settings.monitoring or {})
    unknown = set(table) - _KEYS
    if unknown:
        raise MonitoringError(
            f"[tool.mlops_nb.monitoring]: unknown key {sorted(unknown)[0]!r}; keys: {', '.join(sorted(_KEYS))}"
        )
    if "columns" in table and not isinstance(table["columns"], dict):
        raise MonitoringError("[tool.mlops_nb.monitoring] columns must be a table: column -> {test, threshold, type}")
    if "alerts" in table and not isinstance(table["alerts"], list):
        raise MonitoringError('[tool.mlops_nb.monitoring] alerts must be a list: [{rule = "drift_share > 0.3"}]')
    share = table.get("drift_share", 0.5)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise MonitoringError(f"[tool.mlops_nb.monitoring] drift_share {share!r} must be a number in (0, 1]")
    if "test" in table and not isinstance(table["test"], str):
        raise MonitoringError(f"[tool.mlops_nb.monitoring] test {table['test']!r} must be one test's name, e.g. 'psi'")
    if "window" in table and not isinstance(table["window"], str | int | float):
        raise MonitoringError(f"[tool.mlops_nb.monitoring] window {table['window']!r} must be a duration, e.g. '1d'")
    return table


def parse_rule(spec: Any) -> Rule:
    """A rule from ``"METRIC OP NUMBER"`` or ``{"rule": ..., "action": ..., "model": ...}``."""
    if isinstance(spec, Rule):
        return spec
    action, model = "log", None
    if isinstance(spec, dict):
        unknown = set(spec) - {"rule", "action", "model"}
        if unknown or "rule" not in spec:
            raise MonitoringError(
                f'alert {spec!r}: give rule (and action, model) only, e.g. {{rule = "drift_share > 0.3"}}'
            )
        action = str(spec.get("action") or "log").strip()
        model = spec.get("model")
        spec = spec["rule"]
    text = str(spec)
    match = _RULE.match(text)
    if not match:
        raise MonitoringError(
            f"alert rule {text!r} is not METRIC OP NUMBER; write e.g. 'drift_share > 0.3' or 'f1 < 0.8' "
            "(operators: > >= < <= == !=)"
        )
    metric = match.group(1)
    if metric not in METRICS and not (metric.startswith("drift.") and len(metric) > 6):
        import difflib

        close = difflib.get_close_matches(metric, METRICS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise MonitoringError(
            f"alert rule {text[:60]!r}: unknown metric {metric[:40]!r}; {hint}`mlops-nb monitor --help` lists the "
            "metrics (drift_share, accuracy, error_rate, drift.COLUMN, ...)"
        )
    check_action(action)
    return Rule(text.strip(), metric, match.group(2), float(match.group(3)), action, model)


def parse_rules(specs: Any) -> list[Rule]:
    """Rules from a list (or one rule)."""
    if isinstance(specs, str | dict | Rule):
        specs = [specs]
    return [parse_rule(s) for s in specs or []]


def check_action(action: str) -> list[str]:
    """The action's words, or a one-line error saying what actions there are."""
    try:
        words = shlex.split(action)
    except ValueError as exc:
        raise MonitoringError(f"alert action {action!r} cannot be parsed ({exc})") from None
    if words == ["log"]:
        return words
    if words and words[0] == "run" and len(words) >= 2:
        _run_args(words[1:])
        return words
    if words and words[0] == "command" and len(words) >= 2:
        return words
    raise MonitoringError(
        f"alert action {action!r} is not one of: log, run NOTEBOOK [-p NAME VALUE]..., command PROGRAM [ARG]..."
    )


def _run_args(words: list[str]) -> tuple[str, dict[str, str], str | None, bool]:
    notebook, params, executor, no_cache = words[0], {}, None, False
    rest = words[1:]
    while rest:
        flag = rest.pop(0)
        if flag in ("-p", "--param") and len(rest) >= 2:
            key = rest.pop(0)
            params[key] = rest.pop(0)
        elif flag == "--executor" and rest:
            executor = rest.pop(0)
        elif flag == "--no-cache":
            no_cache = True
        else:
            raise MonitoringError(
                f"alert action 'run {' '.join(words)}': unexpected {flag!r}; write run NOTEBOOK [-p NAME VALUE]... "
                "[--executor NAME] [--no-cache]"
            )
    return notebook, params, executor, no_cache


def check_targets(project, rules: list[Rule]) -> None:
    """Check what the rules' actions name, before anything runs: a ``run`` action's notebook and its parameters,
    a ``command`` action's program."""
    import shutil

    for rule in rules:
        words = shlex.split(rule.action)
        if words[0] == "run":
            from ..pipeline import Pipeline

            notebook, params, _, _ = _run_args(words[1:])
            path = Path(notebook) if Path(notebook).is_absolute() else project.home / notebook
            if not path.is_file():
                raise MonitoringError(f"alert {rule.text!r}: its notebook {path} does not exist")
            try:
                Pipeline.from_notebook(path).resolve_params(params)
            except MlopsError as exc:
                raise MonitoringError(f"alert {rule.text!r}: {' '.join(exc.message.split())}") from None
        elif words[0] == "command":
            program = words[1]
            if "/" in program:  # a path: from the project's home, where the command runs
                path = Path(program) if Path(program).is_absolute() else project.home / program
                if not (path.is_file() and os.access(path, os.X_OK)):
                    raise MonitoringError(f"alert {rule.text!r}: its program {path} is not an executable file")
            elif shutil.which(program) is None:
                raise MonitoringError(
                    f"alert {rule.text!r}: its program {program!r} is not found on PATH (a script in the project: "
                    f"./{program})"
                )


def evaluate(rules: list[Rule], metrics: dict[str, float], model: str | None = None) -> list[tuple[Rule, float]]:
    """The rules that fire on ``metrics`` (of ``model``), with the value each saw."""
    fired = []
    for rule in rules:
        if rule.model is not None and model is not None and rule.model != model:
            continue
        if rule.holds(metrics):
            fired.append((rule, float(metrics[rule.metric])))
    return fired


def raise_alerts(project, result, fired: list[tuple[Rule, float]], *, run_actions: bool = True) -> list[dict]:
    """Record the alerts of a monitoring run, hand each to the ``alert`` hook (which runs its action), and return
    them as recorded (with each action's outcome)."""
    fired = [(rule, value) for rule, value in fired if rule.model in (None, result.model)]
    if not fired:
        return []
    now = utcnow()
    records = [
        {
            "id": f"alert-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}",
            "raised_at": now,
            "model": result.model,
            "version": result.version,
            "rule": rule.text,
            "metric": rule.metric,
            "value": value,
            "action": rule.action,
            "monitor_run": result.run_id,
            "outcome": "recorded" if not run_actions else None,
        }
        for rule, value in fired
    ]
    project.metadata.record_alerts(records)
    _subscribe()
    for record in records:
        hooks.hooks.emit("alert", alert=dict(record), project=project, act=run_actions)
    return project.metadata.alerts(monitor_run=result.run_id, limit=None)[::-1]


_subscribed = False


def _subscribe() -> None:
    global _subscribed
    if not _subscribed or perform_action not in hooks.hooks._subscribers["alert"]:
        hooks.hooks.subscribe("alert", perform_action)
        _subscribed = True


def perform_action(*, alert: dict, project, act: bool = True, **future_kwargs: Any) -> None:
    """The ``alert`` hook's subscriber that runs an alert's action and records its outcome."""
    if not act:
        return
    words = shlex.split(alert["action"])
    line = f"{alert['model']} v{alert['version']}: {alert['rule']} ({alert['metric']} = {alert['value']:.4g})"
    action_run, outcome = None, "logged"
    try:
        if words[0] == "log":
            log.warning("alert %s", line)
        elif words[0] == "run":
            action_run, outcome = _run_notebook(project, alert, words[1:])
        else:
            outcome = _command(project, alert, words[1:])
    except MlopsError as exc:
        outcome = f"failed: {exc.message}"[:300]
        action_run = getattr(exc, "run_id", None)
    except Exception as exc:  # noqa: BLE001 - an action that breaks is recorded as failed, never lost
        outcome = f"failed: {type(exc).__name__}: {exc}"[:300]
    project.metadata.update_alert(alert["id"], action_run=action_run, outcome=outcome)


def _run_notebook(project, alert: dict, words: list[str]) -> tuple[str | None, str]:
    from ..engine.driver import run
    from ..exceptions import StepFailedError

    notebook, params, executor, no_cache = _run_args(words)
    path = Path(notebook) if Path(notebook).is_absolute() else project.home / notebook
    if not path.is_file():
        raise MonitoringError(f"the alert's notebook {path} does not exist")
    fired_by = f"{alert['id']}: {alert['rule']}"
    try:
        done = run(path, params, executor, project=project, trigger="drift", fired_by=fired_by, no_cache=no_cache)
    except StepFailedError as exc:
        return exc.run_id, f"run {exc.run_id} failed: {exc.message}"[:300]
    return done.id, f"run {done.id} {done.status}"


def _command(project, alert: dict, words: list[str]) -> str:
    env = {**os.environ, "MLOPS_NB_ALERT": json.dumps(alert, default=str)}
    try:
        done = subprocess.run(
            words, cwd=project.home, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MonitoringError(f"the alert's command {words[0]!r} could not run: {exc}") from None
    tail = (done.stderr or done.stdout or "").strip().splitlines()
    return f"command exited {done.returncode}" + (f": {tail[-1][:200]}" if tail else "")
