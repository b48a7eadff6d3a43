"""Data drift per column, with Evidently's DataDriftPreset defaults, computed for all columns at once.

Which test a column gets (Evidently's ``legacy/calculations/stattests/registry.py::_get_default_stattest``), after
NaN and ±inf are dropped, with ``n`` the reference column's rows and ``u`` the unique values of reference and
current together:

============  ===========================================  ==========================================
              reference ≤ 1,000 rows                       reference > 1,000 rows
============  ===========================================  ==========================================
numerical     u > 5: ``ks`` (p ≤ 0.05); 3-5: ``chisquare``  u > 5: ``wasserstein`` (÷ std of the
              (p < 0.05); ≤ 2: ``z`` (p < 0.05)             reference, ≥ 0.1); else ``jensenshannon``
categorical   u > 2: ``chisquare``; else ``z``              ``jensenshannon`` (≥ 0.1)
============  ===========================================  ==========================================

``jensenshannon`` and ``psi`` compare per-value frequencies, or Sturges bins over both samples for a numerical
column with more than 20 unique reference values. A column's type is inferred from the reference as Evidently
infers it: floats are numerical, integers with ≤ 10 unique values categorical, strings, booleans and pandas
categories categorical; text (mostly unique strings) and dates are not tested. The dataset drifts when the share of
drifted columns is ≥ ``drift_share`` (0.5).

The numerical columns are sorted once, all together (a ``(columns, rows)`` array, in chunks), and the
Kolmogorov–Smirnov statistic, the Wasserstein distance, the unique counts and the per-value counts all come from
the sorted arrays and their running counts; SciPy is called for the distributions' tails only
(``kstwo.sf``, ``chi2.sf``), except for the exact K-S p-value of small samples (both ≤ 10,000 rows, as SciPy's
``ks_2samp`` chooses), which is SciPy's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import MonitoringError

TESTS: dict[str, dict[str, Any]] = {
    "ks": {"threshold": 0.05, "kind": "p_value", "label": "K-S p-value", "types": ("numerical",)},
    "chisquare": {"threshold": 0.05, "kind": "p_value", "label": "chi-square p-value", "types": None},
    "z": {"threshold": 0.05, "kind": "p_value", "label": "Z-test p-value", "types": None},
    "wasserstein": {
        "threshold": 0.1,
        "kind": "distance",
        "label": "Wasserstein distance (normed)",
        "types": ("numerical",),
    },
    "jensenshannon": {"threshold": 0.1, "kind": "distance", "label": "Jensen-Shannon distance", "types": None},
    "psi": {"threshold": 0.1, "kind": "distance", "label": "PSI", "types": None},
}
"""The drift tests: their default threshold, whether a low p-value or a high distance means drift, and the
column types they take (None: both)."""

TYPES = ("numerical", "categorical")
DRIFT_SHARE = 0.5
_CHUNK = 16  # numerical columns sorted together: bounds memory (~10 arrays of chunk x rows)
_EXACT_KS = 10_000  # SciPy's ks_2samp computes the exact p-value when both samples are at most this long
_HIST_BINS = 20
_TOP_VALUES = 12


@dataclass
class ColumnDrift:
    """The drift of one column.

    Attributes:
        column: its name.
        type: ``numerical`` or ``categorical``.
        test: the test used (a key of :data:`TESTS`).
        threshold: the test's threshold.
        score: the p-value or distance.
        drifted: whether the column drifted.
        reference_rows, current_rows: the finite values compared.
        unique: unique values of reference and current together.
        histogram: what the report draws: ``edges`` (numerical) or ``values`` (categorical), with ``reference``
            and ``current`` as fractions of each sample.
    """

    column: str
    type: str
    test: str
    threshold: float
    score: float
    drifted: bool
    reference_rows: int
    current_rows: int
    unique: int
    histogram: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As JSON-able values."""
        return {
            "column": self.column,
            "type": self.type,
            "test": self.test,
            "threshold": self.threshold,
            "score": _finite(self.score),
            "drifted": bool(self.drifted),
            "reference_rows": int(self.reference_rows),
            "current_rows": int(self.current_rows),
            "unique": int(self.unique),
            "histogram": self.histogram,
        }


@dataclass
class DriftResult:
    """The drift of a dataset: its columns and the dataset verdict.

    Attributes:
        columns: one :class:`ColumnDrift` per tested column, in the order asked.
        skipped: column -> why it was not tested (text, dates, no finite values).
        drift_share: the share of drifted columns that makes the dataset drift.
    """

    columns: list[ColumnDrift]
    skipped: dict[str, str] = field(default_factory=dict)
    drift_share: float = DRIFT_SHARE

    @property
    def drifted(self) -> list[str]:
        """The names of the drifted columns."""
        return [c.column for c in self.columns if c.drifted]

    @property
    def share(self) -> float:
        """The share of tested columns that drifted (0 when none was tested)."""
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Whether the dataset drifted: ``share >= drift_share``."""
        return bool(self.columns) and self.share >= self.drift_share

    def column(self, name: str) -> ColumnDrift:
        """The drift of one column."""
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """As JSON-able values."""
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.share,
            "drift_share_threshold": self.drift_share,
            "drifted_columns": len(self.drifted),
            "columns": [c.to_dict() for c in self.columns],
            "skipped": dict(self.skipped),
        }


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# column types --------------------------------------------------------------------------------------------------
def infer_type(series) -> str | None:
    """Evidently's column type of a reference column: ``numerical``, ``categorical``, or None (text, dates,
    lists, unknown: not tested)."""
    import pandas as pd

    dtype = series.dtype
    name = dtype.name
    if name.startswith("float"):
        return "numerical"
    if name.startswith(("int", "uint", "Int", "UInt")):
        return "categorical" if series.nunique() <= 10 else "numerical"
    if name in ("bool", "boolean", "category"):
        return "categorical"
    if pd.api.types.is_string_dtype(dtype) or name == "object":
        values = series.dropna()
        if values.empty or not isinstance(values.iloc[0], str) or not isinstance(values.iloc[-1], str):
            return None
        return None if series.nunique() > series.count() * 0.5 else "categorical"
    return None


def _check_override(column: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        spec = {"test": spec}
    if not isinstance(spec, dict):
        raise MonitoringError(
            f"column {column!r}: an override is a test name or a table of test, threshold and type, not {spec!r}"
        )
    unknown = set(spec) - {"test", "threshold", "type"}
    if unknown:
        raise MonitoringError(
            f"column {column!r}: unknown override {sorted(unknown)[0]!r}; an override sets test, threshold or type"
        )
    test, kind = spec.get("test"), spec.get("type")
    if test is not None and test not in TESTS:
        raise MonitoringError(f"column {column!r}: unknown drift test {test!r}; tests: {', '.join(TESTS)}")
    if kind is not None and kind not in TYPES:
        raise MonitoringError(f"column {column!r}: unknown column type {kind!r}; types: numerical, categorical")
    threshold = spec.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
            raise MonitoringError(f"column {column!r}: threshold {threshold!r} is not a number")
        threshold = float(threshold)
    return {"test": test, "threshold": threshold, "type": kind}


def default_test(reference_rows: int, unique: int, kind: str) -> str:
    """Evidently's default test of a column (see the module's table)."""
    if reference_rows <= 1000:
        if kind == "numerical" and unique > 5:
            return "ks"
        return "chisquare" if unique > 2 else "z"
    if kind == "numerical" and unique > 5:
        return "wasserstein"
    return "jensenshannon"


# the tests on counts --------------------------------------------------------------------------------------------
def _p_chisquare(ref_counts, cur_counts) -> float:
    """SciPy's ``chisquare(f_obs=current, f_exp=reference scaled to the current's size)`` p-value."""
    import numpy as np
    from scipy.stats import chi2

    ref = np.asarray(ref_counts, float)
    cur = np.asarray(cur_counts, float)
    expected = ref * (cur.sum() / ref.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = float(np.sum((cur - expected) ** 2 / expected))
    return float(chi2.sf(stat, len(ref) - 1))


def _p_z(values, ref_counts, cur_counts) -> float:
    """Evidently's two-proportion Z-test on the first (smallest) value's share."""
    import numpy as np
    from scipy.stats import norm

    ref = np.asarray(ref_counts, float)
    cur = np.asarray(cur_counts, float)
    if len(values) == 1:
        return 1.0
    first = _first(values)
    n1, n2 = ref.sum(), cur.sum()
    p1, p2 = (n1 - ref[first]) / n1, (n2 - cur[first]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - norm.cdf(np.abs(z))))


def _first(values) -> int:
    try:
        return min(range(len(values)), key=lambda i: values[i])
    except TypeError:  # values of mixed types: any of the two gives the same two-sided p-value
        return 0


def _js(ref_share, cur_share) -> float:
    """SciPy's ``jensenshannon`` (natural log) of two frequency vectors."""
    import numpy as np
    from scipy.special import rel_entr

    p = np.asarray(ref_share, float)
    q = np.asarray(cur_share, float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    return float(np.sqrt((rel_entr(p, m).sum() + rel_entr(q, m).sum()) / 2.0))


def _fill_zeroes(share):
    import numpy as np

    share = np.asarray(share, float).copy()
    smallest = share[share != 0].min()
    share[share == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return share


def _psi(ref_share, cur_share) -> float:
    """Evidently's PSI: zeroes filled, ``sum((r - c) * ln(r / c))``."""
    import numpy as np

    r, c = _fill_zeroes(ref_share), _fill_zeroes(cur_share)
    return float(np.sum((r - c) * np.log(r / c)))


def _on_counts(test: str, values, ref_counts, cur_counts) -> float:
    import numpy as np

    ref = np.asarray(ref_counts, float)
    cur = np.asarray(cur_counts, float)
    if test == "chisquare":
        return _p_chisquare(ref, cur)
    if test == "z":
        return _p_z(values, ref, cur)
    if test == "jensenshannon":
        return _js(ref / ref.sum(), cur / cur.sum())
    if test == "psi":
        return _psi(ref / ref.sum(), cur / cur.sum())
    raise MonitoringError(f"the {test} test does not take categorical values")  # pragma: no cover - checked before


def _is_drift(test: str, score: float, threshold: float) -> bool:
    if not math.isfinite(score):
        return bool(TESTS[test]["kind"] == "distance" and score > 0)
    if test == "ks":
        return score <= threshold
    if TESTS[test]["kind"] == "p_value":
        return score < threshold
    return score >= threshold


def _categorical_histogram(values, ref_counts, cur_counts) -> dict[str, list]:
    import numpy as np

    ref = np.asarray(ref_counts, float)
    cur = np.asarray(cur_counts, float)
    order = np.argsort(-(ref / max(ref.sum(), 1) + cur / max(cur.sum(), 1)), kind="stable")
    top = order[:_TOP_VALUES]
    labels = [_label(values[i]) for i in top]
    r, c = list(ref[top] / max(ref.sum(), 1)), list(cur[top] / max(cur.sum(), 1))
    if len(order) > _TOP_VALUES:
        rest = order[_TOP_VALUES:]
        labels.append(f"({len(rest)} more)")
        r.append(float(ref[rest].sum() / max(ref.sum(), 1)))
        c.append(float(cur[rest].sum() / max(cur.sum(), 1)))
    return {"values": labels, "reference": [round(float(x), 6) for x in r], "current": [round(float(x), 6) for x in c]}


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)[:40]


# the numerical columns, sorted together ------------------------------------------------------------------------
def _numeric_chunk(names: list[str], ref, cur, plans: dict[str, dict], out: dict[str, ColumnDrift], skipped):
    """Drift of the numerical columns ``names``; ``ref``/``cur`` are ``(len(names), rows)`` float arrays with NaN
    for missing and infinite values."""
    import numpy as np
    from scipy.stats import kstwo

    n_ref_rows = ref.shape[1]
    both = np.concatenate([ref, cur], axis=1)
    order = np.argsort(both, axis=1)
    ordered = np.take_along_axis(both, order, axis=1)
    del both
    valid = ~np.isnan(ordered)
    from_ref = order < n_ref_rows
    del order
    n_ref = (valid & from_ref).sum(axis=1)
    n_cur = valid.sum(axis=1) - n_ref
    cum_ref = np.cumsum(from_ref & valid, axis=1, dtype=np.int64)
    cum_cur = np.cumsum(~from_ref & valid, axis=1, dtype=np.int64)
    ends = np.empty_like(valid)
    ends[:, :-1] = ordered[:, 1:] != ordered[:, :-1]
    ends[:, -1] = True
    ends &= valid
    unique = ends.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.diff(ordered, axis=1)
        gap[~valid[:, 1:]] = 0.0
        cdf_gap = np.abs(cum_ref / np.maximum(n_ref, 1)[:, None] - cum_cur / np.maximum(n_cur, 1)[:, None])
        ks_d = np.where(ends, cdf_gap, 0.0).max(axis=1)
        wasserstein = (cdf_gap[:, :-1] * gap).sum(axis=1)
    del gap, cdf_gap
    std_ref = np.nanstd(ref, axis=1)
    at_ends = np.where(ends, cum_ref, 0)
    before = np.zeros_like(at_ends)
    before[:, 1:] = np.maximum.accumulate(at_ends, axis=1)[:, :-1]
    ref_unique = (ends & (cum_ref - before > 0)).sum(axis=1)
    del at_ends, before
    for j, name in enumerate(names):
        nr, nc = int(n_ref[j]), int(n_cur[j])
        if nr == 0 or nc == 0:
            skipped[name] = f"no finite values in the {'reference' if nr == 0 else 'current'} data"
            continue
        plan = plans[name]
        kind = plan["type"]
        test = plan["test"] or default_test(nr, int(unique[j]), kind)
        if kind == "categorical" and TESTS[test]["types"] == ("numerical",):
            raise MonitoringError(f"column {name!r}: the {test} test takes numerical columns; the column is {kind}")
        threshold = plan["threshold"] if plan["threshold"] is not None else TESTS[test]["threshold"]
        stop = nr + nc
        per_value = test in ("chisquare", "z") or (test in ("jensenshannon", "psi") and int(ref_unique[j]) <= 20)
        per_value = per_value or kind == "categorical"
        values = counts_r = counts_c = None
        if per_value or kind == "categorical":
            at = np.flatnonzero(ends[j, :stop])
            values = ordered[j, at].tolist()
            counts_r = np.diff(cum_ref[j, at], prepend=0)
            counts_c = np.diff(cum_cur[j, at], prepend=0)
        if test == "ks":
            if max(nr, nc) <= _EXACT_KS:
                from scipy.stats import ks_2samp

                row, mask = ordered[j, :stop], from_ref[j, :stop]
                score = float(ks_2samp(row[mask], row[~mask]).pvalue)
            else:
                m, n = sorted([float(nr), float(nc)], reverse=True)
                score = float(np.clip(kstwo.sf(ks_d[j], np.round(m * n / (m + n))), 0, 1))
        elif test == "wasserstein":
            score = float(wasserstein[j] / max(float(std_ref[j]), 0.001))
        elif per_value:
            score = _on_counts(test, values, counts_r, counts_c)
        else:  # Sturges bins over both samples, as numpy.histogram_bin_edges(..., "sturges")
            row, mask = ordered[j, :stop], from_ref[j, :stop]
            low, high = float(row[0]), float(row[-1])
            width = (high - low) / (np.log2(stop) + 1.0)
            bins = int(np.ceil((high - low) / width)) if width else 1
            edges = np.linspace(low, high, bins + 1)
            share_r = np.histogram(row[mask], edges)[0] / nr
            share_c = np.histogram(row[~mask], edges)[0] / nc
            score = _js(share_r, share_c) if test == "jensenshannon" else _psi(share_r, share_c)
        if kind == "categorical":
            histogram = _categorical_histogram(values, counts_r, counts_c)
        else:
            low, high = float(ordered[j, 0]), float(ordered[j, stop - 1])
            edges = np.linspace(low, high, _HIST_BINS + 1) if high > low else np.array([low - 0.5, low + 0.5])
            cut = np.searchsorted(ordered[j, :stop], edges[1:-1], side="left")
            cut = np.concatenate([[0], cut, [stop]])
            bounds_r = np.concatenate([[0], cum_ref[j, :stop]])[cut]
            bounds_c = np.concatenate([[0], cum_cur[j, :stop]])[cut]
            histogram = {
                "edges": [float(e) for e in edges],
                "reference": [round(float(x), 6) for x in np.diff(bounds_r) / nr],
                "current": [round(float(x), 6) for x in np.diff(bounds_c) / nc],
            }
        out[name] = ColumnDrift(
            name, kind, test, threshold, score, _is_drift(test, score, threshold), nr, nc, int(unique[j]), histogram
        )


def _categorical(name: str, ref, cur, plan: dict, out: dict[str, ColumnDrift], skipped) -> None:
    import numpy as np
    import pandas as pd

    both = pd.concat([ref.reset_index(drop=True), cur.reset_index(drop=True)], ignore_index=True)
    codes, uniques = pd.factorize(both, use_na_sentinel=True)
    n = len(ref)
    ref_codes, cur_codes = codes[:n], codes[n:]
    ref_codes, cur_codes = ref_codes[ref_codes >= 0], cur_codes[cur_codes >= 0]
    nr, nc = len(ref_codes), len(cur_codes)
    if nr == 0 or nc == 0:
        skipped[name] = f"no values in the {'reference' if nr == 0 else 'current'} data"
        return
    counts_r = np.bincount(ref_codes, minlength=len(uniques))
    counts_c = np.bincount(cur_codes, minlength=len(uniques))
    values = list(uniques)
    test = plan["test"] or default_test(nr, len(values), "categorical")
    if TESTS[test]["types"] == ("numerical",):
        raise MonitoringError(f"column {name!r}: the {test} test takes numerical columns; the column is categorical")
    threshold = plan["threshold"] if plan["threshold"] is not None else TESTS[test]["threshold"]
    score = _on_counts(test, values, counts_r, counts_c)
    out[name] = ColumnDrift(
        name,
        "categorical",
        test,
        threshold,
        score,
        _is_drift(test, score, threshold),
        nr,
        nc,
        len(values),
        _categorical_histogram(values, counts_r, counts_c),
    )


def _as_float(series):
    import numpy as np
    import pandas as pd

    if series.dtype.name in ("bool", "boolean"):
        series = series.astype("float64")
    values = np.array(pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
    values[~np.isfinite(values)] = np.nan
    return values


def data_drift(
    reference,
    current,
    columns: list[str] | None = None,
    *,
    test: str | None = None,
    threshold: float | None = None,
    overrides: dict[str, Any] | None = None,
    drift_share: float = DRIFT_SHARE,
) -> DriftResult:
    """The drift of ``current`` against ``reference`` (two pandas DataFrames), column by column.

    Args:
        reference, current: the data; ``current`` must have every column compared.
        columns: the columns to compare (default: the reference's columns).
        test, threshold: one test (a key of :data:`TESTS`) and threshold for every column instead of the defaults.
        overrides: column -> a test name, or ``{"test": ..., "threshold": ..., "type": "numerical"|"categorical"}``
            (Evidently's per-column stattest, threshold and column type).
        drift_share: the share of drifted columns at which the dataset drifts.

    Raises:
        MonitoringError: a column is missing, an override or test is unknown, or a test does not fit the column.
    """
    import numpy as np

    if test is not None and test not in TESTS:
        raise MonitoringError(f"unknown drift test {test!r}; tests: {', '.join(TESTS)}")
    names = [str(c) for c in (columns if columns is not None else reference.columns)]
    for where, frame in (("reference", reference), ("current", current)):
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise MonitoringError(
                f"column {missing[0]!r} is not in the {where} data ({len(frame.columns)} columns: "
                f"{', '.join(map(str, list(frame.columns)[:8]))}{', ...' if len(frame.columns) > 8 else ''})"
            )
    overrides = dict(overrides or {})
    unknown = [c for c in overrides if c not in names]
    if unknown:
        raise MonitoringError(f"override for column {unknown[0]!r}, which is not compared; columns: {', '.join(names)}")
    plans: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for name in names:
        plan = (
            _check_override(name, overrides[name])
            if name in overrides
            else dict.fromkeys(("test", "threshold", "type"))
        )
        plan["test"] = plan["test"] or test
        plan["threshold"] = plan["threshold"] if plan["threshold"] is not None else threshold
        kind = plan["type"] or infer_type(reference[name])
        if kind is None:
            skipped[name] = f"{reference[name].dtype} values (text or dates) are not tested for drift"
            continue
        if kind == "numerical" and reference[name].dtype.kind not in "biuf":
            raise MonitoringError(f"column {name!r} is set to numerical but holds {reference[name].dtype} values")
        if plan["test"] and TESTS[plan["test"]]["types"] == ("numerical",) and kind != "numerical":
            raise MonitoringError(
                f"column {name!r}: the {plan['test']} test takes numerical columns; the column is {kind}"
            )
        plan["type"] = kind
        plans[name] = plan
    found: dict[str, ColumnDrift] = {}
    numeric = [n for n, p in plans.items() if p["type"] == "numerical" or reference[n].dtype.kind in "biuf"]
    for start in range(0, len(numeric), _CHUNK):
        chunk = numeric[start : start + _CHUNK]
        ref = np.stack([_as_float(reference[c]) for c in chunk])
        cur = np.stack([_as_float(current[c]) for c in chunk])
        _numeric_chunk(chunk, ref, cur, plans, found, skipped)
    for name in plans:
        if name not in numeric:
            _categorical(name, reference[name], current[name], plans[name], found, skipped)
    return DriftResult([found[n] for n in names if n in found], skipped, drift_share)
