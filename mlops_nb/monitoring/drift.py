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
categories categorical; text (mostly unique strings) and dates are not tested. (Evidently leaves unsigned and
nullable integer and nullable boolean columns untested; here they are typed like their plain kinds.) The dataset drifts when the share of
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
        unique: unique values of reference and current together when there are at most 5 (what the choice of
            test needs exactly), else the larger of the two samples' counts.
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
        threshold: the share of drifted columns that makes the dataset drift (``drift_share`` of
            :func:`data_drift`); :attr:`share` is the share that drifted.
    """

    columns: list[ColumnDrift]
    skipped: dict[str, str] = field(default_factory=dict)
    threshold: float = DRIFT_SHARE

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
        """Whether the dataset drifted: ``share >= threshold``."""
        return bool(self.columns) and self.share >= self.threshold

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
            "drift_share_threshold": self.threshold,
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
def _wasserstein_index(n_ref: int, n_cur: int):
    """Where the two quantile functions are compared, and the weights: with ``u`` in units of
    ``1 / (n_ref * n_cur)``, the breakpoints of both step functions; on each interval ``(a, b]`` the reference's
    quantile is its ``ceil(b / n_cur)``-th value and the current's its ``ceil(b / n_ref)``-th."""
    import numpy as np

    grid = np.union1d(np.arange(1, n_ref + 1, dtype=np.int64) * n_cur, np.arange(1, n_cur + 1, dtype=np.int64) * n_ref)
    weights = np.diff(grid, prepend=0) / (n_ref * n_cur)
    return (grid + n_cur - 1) // n_cur - 1, (grid + n_ref - 1) // n_ref - 1, weights


def _wasserstein(ref_sorted, cur_sorted, n_ref: int, n_cur: int):
    """The Wasserstein-1 distance of sorted samples, for all rows at once: the integral of the absolute difference
    of the quantile functions (equal to SciPy's integral of the difference of the CDFs)."""
    import numpy as np

    if n_ref == n_cur:
        return np.abs(ref_sorted[:, :n_ref] - cur_sorted[:, :n_cur]).mean(axis=1)
    at_ref, at_cur, weights = _wasserstein_index(n_ref, n_cur)
    return np.abs(ref_sorted[:, at_ref] - cur_sorted[:, at_cur]) @ weights


def _ks_statistic(ref_sorted, cur_sorted) -> float:
    """The two-sample K-S statistic from two sorted samples, evaluated at (and just before) the reference's points:
    between two of them the reference's CDF is flat and the current's rises, so the largest gap is at an end."""
    import numpy as np

    n_ref, n_cur = len(ref_sorted), len(cur_sorted)
    at = ref_sorted
    right = np.abs(np.searchsorted(ref_sorted, at, "right") / n_ref - np.searchsorted(cur_sorted, at, "right") / n_cur)
    left = np.abs(np.searchsorted(ref_sorted, at, "left") / n_ref - np.searchsorted(cur_sorted, at, "left") / n_cur)
    return float(max(right.max(), left.max()))


def _distinct(sorted_rows, counts):
    """Unique values of each row of a sorted array whose first ``counts[j]`` entries are its values."""
    import numpy as np

    n = sorted_rows.shape[1]
    if n < 2:
        return (counts > 0).astype(int)
    changes = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    changes &= np.arange(n - 1)[None, :] < (counts - 1)[:, None]
    return changes.sum(axis=1) + (counts > 0)


def _value_counts(values_sorted):
    """``(values, counts)`` of a sorted 1-D sample."""
    import numpy as np

    if not len(values_sorted):
        return np.array([]), np.array([], dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], values_sorted[1:] != values_sorted[:-1]]))
    return values_sorted[starts], np.diff(np.append(starts, len(values_sorted)))


def _merge_counts(ref_values, ref_counts, cur_values, cur_counts):
    """Per-value counts of both samples over the union of their values (sorted)."""
    import numpy as np

    values = np.union1d(ref_values, cur_values)
    r = np.zeros(len(values), dtype=np.int64)
    c = np.zeros(len(values), dtype=np.int64)
    r[np.searchsorted(values, ref_values)] = ref_counts
    c[np.searchsorted(values, cur_values)] = cur_counts
    return values, r, c


def _numeric_chunk(names: list[str], ref, cur, plans: dict[str, dict], out: dict[str, ColumnDrift], skipped):
    """Drift of the numerical columns ``names``; ``ref``/``cur`` are ``(len(names), rows)`` float arrays with NaN
    for missing and infinite values. Each sample is sorted once, all its columns together (NaN last)."""
    import numpy as np
    from scipy.stats import kstwo

    ref.sort(axis=1)
    cur.sort(axis=1)
    n_ref, n_cur = (~np.isnan(ref)).sum(axis=1), (~np.isnan(cur)).sum(axis=1)  # the values come first
    distinct_ref, distinct_cur = _distinct(ref, n_ref), _distinct(cur, n_cur)
    std_ref = np.nanstd(ref, axis=1) if ref.shape[1] else np.zeros(len(names))
    tests: dict[int, tuple[str, float, int]] = {}
    for j, name in enumerate(names):
        nr, nc = int(n_ref[j]), int(n_cur[j])
        if nr == 0 or nc == 0:
            skipped[name] = f"no finite values in the {'reference' if nr == 0 else 'current'} data"
            continue
        unique = int(max(distinct_ref[j], distinct_cur[j]))
        if unique <= 5:  # the exact union, from the few values of each
            unique = len(np.union1d(_value_counts(ref[j, :nr])[0], _value_counts(cur[j, :nc])[0]))
        plan = plans[name]
        test = plan["test"] or default_test(nr, unique, plan["type"])
        threshold = plan["threshold"] if plan["threshold"] is not None else TESTS[test]["threshold"]
        tests[j] = (test, threshold, unique)
    scores: dict[int, float] = {}
    wasserstein = [j for j, t in tests.items() if t[0] == "wasserstein"]
    groups: dict[tuple[int, int], list[int]] = {}
    for j in wasserstein:
        groups.setdefault((int(n_ref[j]), int(n_cur[j])), []).append(j)
    for (nr, nc), rows in groups.items():
        distances = _wasserstein(ref[rows], cur[rows], nr, nc)
        for j, d in zip(rows, distances, strict=True):
            scores[j] = float(d / max(float(std_ref[j]), 0.001))
    for j, (test, _, _) in tests.items():
        name, kind = names[j], plans[names[j]]["type"]
        nr, nc = int(n_ref[j]), int(n_cur[j])
        r, c = ref[j, :nr], cur[j, :nc]
        per_value = test in ("chisquare", "z") or (
            test in ("jensenshannon", "psi") and (kind == "categorical" or int(distinct_ref[j]) <= 20)
        )  # Evidently bins only numerical columns with more than 20 reference values
        values = counts_r = counts_c = None
        if per_value or kind == "categorical":
            values, counts_r, counts_c = _merge_counts(*_value_counts(r), *_value_counts(c))
            values = values.tolist()
        if test == "ks":
            if max(nr, nc) <= _EXACT_KS:
                from scipy.stats import ks_2samp

                scores[j] = float(ks_2samp(r, c).pvalue)
            else:
                m, n = sorted([float(nr), float(nc)], reverse=True)
                scores[j] = float(np.clip(kstwo.sf(_ks_statistic(r, c), np.round(m * n / (m + n))), 0, 1))
        elif test == "wasserstein":
            pass
        elif per_value:
            scores[j] = _on_counts(test, values, counts_r, counts_c)
        else:  # Sturges bins over both samples, as numpy.histogram_bin_edges(..., "sturges")
            low, high = float(min(r[0], c[0])), float(max(r[-1], c[-1]))
            width = (high - low) / (np.log2(nr + nc) + 1.0)
            bins = int(np.ceil((high - low) / width)) if width else 1
            edges = np.linspace(low, high, bins + 1)
            share_r, share_c = np.histogram(r, edges)[0] / nr, np.histogram(c, edges)[0] / nc
            scores[j] = _js(share_r, share_c) if test == "jensenshannon" else _psi(share_r, share_c)
        if kind == "categorical":
            histogram = _categorical_histogram(values, counts_r, counts_c)
        else:
            low, high = float(min(r[0], c[0])), float(max(r[-1], c[-1]))
            edges = np.linspace(low, high, _HIST_BINS + 1) if high > low else np.array([low - 0.5, low + 0.5])
            inner = edges[1:-1]
            bounds_r = np.concatenate([[0], np.searchsorted(r, inner, "left"), [nr]])
            bounds_c = np.concatenate([[0], np.searchsorted(c, inner, "left"), [nc]])
            histogram = {
                "edges": [float(e) for e in edges],
                "reference": [round(float(x), 6) for x in np.diff(bounds_r) / nr],
                "current": [round(float(x), 6) for x in np.diff(bounds_c) / nc],
            }
        score = scores[j]
        threshold, unique = tests[j][1], tests[j][2]
        out[name] = ColumnDrift(
            name, kind, test, threshold, score, _is_drift(test, score, threshold), nr, nc, unique, histogram
        )


def _categorical(name: str, ref, cur, plan: dict, out: dict[str, ColumnDrift], skipped) -> None:
    import numpy as np
    import pandas as pd

    ref_codes, ref_values = pd.factorize(ref, use_na_sentinel=True)
    cur_codes, cur_values = pd.factorize(cur, use_na_sentinel=True)
    ref_codes, cur_codes = ref_codes[ref_codes >= 0], cur_codes[cur_codes >= 0]
    nr, nc = len(ref_codes), len(cur_codes)
    if nr == 0 or nc == 0:
        skipped[name] = f"no values in the {'reference' if nr == 0 else 'current'} data"
        return
    values = list(ref_values)
    position = {v: i for i, v in enumerate(values)}
    for v in cur_values:  # the union of the values of both, the reference's first
        position.setdefault(v, len(values))
        if len(values) < len(position):
            values.append(v)
    counts_r = np.bincount(ref_codes, minlength=len(values))
    cur_map = np.array([position[v] for v in cur_values], dtype=np.int64)
    counts_c = np.bincount(cur_map[cur_codes], minlength=len(values))
    test = plan["test"] or default_test(nr, len(values), "categorical")
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


def _as_floats(frame, columns: list[str]):
    """The columns as one ``(columns, rows)`` float64 array, NaN for missing and infinite values."""
    import numpy as np
    import pandas as pd

    out = np.empty((len(columns), len(frame)), dtype=np.float64)
    for i, column in enumerate(columns):
        series = frame[column]
        if series.dtype.kind not in "fiu":
            series = pd.to_numeric(series.astype("float64") if series.dtype.name in ("bool", "boolean") else series,
                                   errors="coerce")  # fmt: skip
        out[i] = series.to_numpy(dtype=np.float64, na_value=np.nan)
    out[~np.isfinite(out)] = np.nan
    return out


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
        _numeric_chunk(chunk, _as_floats(reference, chunk), _as_floats(current, chunk), plans, found, skipped)
    for name in plans:
        if name not in numeric:
            _categorical(name, reference[name], current[name], plans[name], found, skipped)
    return DriftResult([found[n] for n in names if n in found], skipped, drift_share)
