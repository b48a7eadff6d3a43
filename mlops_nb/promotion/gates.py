"""Promotion gates: metric rules a version must pass before an alias moves to it.

A rule is ``{"metric": "OP RHS"}``: ``OP`` is one of ``>= > <= < ==`` and ``RHS`` a number (absolute:
``{"accuracy": ">= 0.8"}``) or an alias with an optional margin (relative to the version the alias points at now:
``{"f1": ">= champion - 0.01"}`` lets the candidate be worse by at most 0.01; ``{"rmse": "<= champion * 1.05"}``;
``*`` scales the holder's value, so for a metric that can be negative use ``+``/``-``). A rule relative to the alias
being moved passes when it has no holder yet (there is nothing to be worse than); a rule naming another alias
that no version holds is an error. MLflow's
``MetricThreshold`` expresses absolute thresholds and "better by at least", not "worse by at most", so the rules
are evaluated here.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..exceptions import RegistryError

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_RULE = re.compile(
    r"^\s*(?P<op>>=|<=|==|>|<)\s*(?:(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|"
    r"(?P<alias>[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z_][A-Za-z0-9_]*)*)\s*"  # 'champion-1' is champion minus 1
    r"(?:(?P<sign>[-+*])\s*(?P<margin>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?)\s*$"
)


@dataclass(frozen=True)
class Rule:
    """One parsed gate rule."""

    metric: str
    text: str
    op: str
    number: float | None = None
    alias: str | None = None
    sign: str | None = None
    margin: float = 0.0

    def threshold(self, holder_value: float | None) -> float | None:
        """The value the candidate is compared with (None: a relative rule with nothing to compare to)."""
        if self.alias is None:
            return self.number
        if holder_value is None:
            return None
        if self.sign == "*":
            return holder_value * self.margin
        return holder_value + (self.margin if self.sign == "+" else -self.margin)


def parse(gates: dict[str, str] | None) -> list[Rule]:
    """The rules of a gate dict, or a one-line :class:`RegistryError` for the first malformed one."""
    if gates is None:
        return []
    if not isinstance(gates, dict):
        raise RegistryError(f"gates must be a dict of metric -> rule, such as {{'f1': '>= 0.8'}}; got {gates!r}")
    rules = []
    for metric, text in gates.items():
        match = _RULE.match(str(text)) if isinstance(text, str | int | float) and isinstance(metric, str) else None
        if isinstance(text, int | float) and not isinstance(text, bool):
            match = _RULE.match(f">= {text}")
        if not metric or match is None:
            raise RegistryError(
                f"gate {metric!r}: {text!r} is not a rule; write 'OP NUMBER' or 'OP ALIAS [+|-|* MARGIN]' with OP one "
                "of >= > <= < ==, such as '>= 0.8' or '>= champion - 0.01'"
            )
        rules.append(
            Rule(
                metric=metric,
                text=" ".join(str(text).split()),
                op=match["op"],
                number=float(match["number"]) if match["number"] is not None else None,
                alias=match["alias"],
                sign=match["sign"],
                margin=float(match["margin"])
                if match["margin"] is not None
                else (1.0 if match["sign"] == "*" else 0.0),
            )
        )
    return rules


@dataclass
class Check:
    """How one rule went: the candidate's value, what it was compared with, and why it passed or failed."""

    metric: str
    rule: str
    value: float
    threshold: float | None
    passed: bool
    reason: str
    holder: int | None = None
    holder_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def _fmt(value: float | None, other: float | None = None) -> str:
    """4 significant digits, more when ``other`` (what it is compared with) would otherwise look equal."""
    if value is None:
        return "none"
    for digits in (4, 6, 8, 12, 17):
        text = f"{value:.{digits}g}"
        if other is None or value == other or text != f"{other:.{digits}g}":
            return text
    return repr(value)


def evaluate(rules: list[Rule], name: str, candidate, holders: dict[str, Any], alias: str = "champion") -> list[Check]:
    """Check a candidate version for ``alias`` against rules; ``holders`` maps each alias a rule names to its current
    version (with metrics) or None. A metric the candidate (or a holder) lacks, a holder's NaN, or a rule naming
    another alias that no version holds, is a one-line error, not a refusal."""
    checks = []
    for rule in rules:
        if rule.alias and rule.alias != alias and holders.get(rule.alias) is None:
            raise RegistryError(
                f"gate {rule.metric!r}: {rule.text!r} compares with {rule.alias!r}, but no version of {name} holds "
                f"that alias; compare with {alias!r} (the alias being moved) or a number"
            )
        if rule.metric not in candidate.metrics:
            have = ", ".join(sorted(candidate.metrics)) or "none"
            raise RegistryError(
                f"gate {rule.metric!r}: {name} v{candidate.version} has no metric {rule.metric!r} (its metrics: "
                f"{have}); pass metrics= to register_model, or gate on a metric it has"
            )
        value = candidate.metrics[rule.metric]
        holder = holders.get(rule.alias) if rule.alias else None
        holder_value = None
        if holder is not None:
            if rule.metric not in holder.metrics:
                raise RegistryError(
                    f"gate {rule.metric!r}: {rule.alias} ({name} v{holder.version}) has no metric {rule.metric!r} to "
                    "compare with; gate on a metric both versions have"
                )
            holder_value = holder.metrics[rule.metric]
            if math.isnan(holder_value):
                raise RegistryError(
                    f"gate {rule.metric!r}: {rule.alias} ({name} v{holder.version}) has {rule.metric} = nan, nothing "
                    "to compare with; gate on a number instead"
                )
        threshold = rule.threshold(holder_value)
        if rule.alias and holder is None:
            checks.append(
                Check(rule.metric, rule.text, value, None, True, f"{rule.metric} {_fmt(value)}: no {rule.alias} yet")
            )
            continue
        passed = not math.isnan(value) and _OPS[rule.op](value, threshold)
        against = _fmt(threshold, value)
        if rule.alias:
            margin = "" if rule.sign is None else f" {rule.sign} {rule.margin:g}"
            against = f"{rule.alias} v{holder.version} {_fmt(holder_value)}{margin} = {_fmt(threshold, value)}"
        verdict = rule.op if passed else {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!="}[rule.op]
        reason = f"{rule.metric} {_fmt(value, threshold)} {verdict} {against}"
        if math.isnan(value):
            reason = f"{rule.metric} is nan (not a number), so it cannot be {rule.op} {against}"
        checks.append(
            Check(
                rule.metric,
                rule.text,
                value,
                threshold,
                passed,
                reason,
                holder.version if holder else None,
                holder_value,
            )
        )
    return checks
