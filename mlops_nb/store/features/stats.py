"""Feature statistics: computed at ingest for each segment, kept in the catalog, the training reference that
monitoring compares served traffic to; and their rendering as text, HTML and inline SVG histograms.

Numeric features get count, nulls, min, max, mean, std, quantiles (p01 ... p99) and a 10-bin equal-width
histogram; booleans and strings get count, nulls, distinct values and the 10 most frequent; timestamps and dates
count, nulls, min and max.
"""

from __future__ import annotations

import html
import math
from typing import Any

from .checks import DTYPES, quote

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 10
TOP = 10
EXACT_LIMIT = 1_000_000  # above this many rows, quantiles are approximate (t-digest)


def _num(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def compute_stats(con, relation: str, features: dict[str, str]) -> dict[str, dict]:
    """Statistics of each feature column of ``relation`` (a table or view in the DuckDB connection ``con``).

    Returns:
        feature -> ``{"dtype", "count", "nulls", ...}`` (JSON-able).
    """
    total = con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
    out: dict[str, dict] = {}
    for name, dtype in features.items():
        col = quote(name)
        kind = DTYPES[dtype]
        count = con.execute(f"SELECT count({col}) FROM {relation}").fetchall()[0][0]
        entry: dict[str, Any] = {"dtype": dtype, "count": int(count), "nulls": int(total - count)}
        if kind in ("int", "float"):
            expr = f"{col}::DOUBLE"
            quant = "quantile_cont" if total <= EXACT_LIMIT else "approx_quantile"
            qs = ", ".join(str(q) for q in QUANTILES)
            row = con.execute(
                f"SELECT min({expr}), max({expr}), avg({expr}), stddev_samp({expr}), {quant}({expr}, [{qs}]) "
                f"FROM {relation} WHERE isfinite({expr})"
            ).fetchall()[0]
            lo, hi, mean, std, quantiles = row
            entry.update(min=_num(lo), max=_num(hi), mean=_num(mean), std=_num(std))
            entry["quantiles"] = {
                f"p{round(q * 100):02d}": _num(v) for q, v in zip(QUANTILES, quantiles or [None] * 7, strict=True)
            }
            entry["histogram"] = _histogram(con, relation, expr, lo, hi)
        elif kind in ("bool", "string"):
            distinct = con.execute(f"SELECT approx_count_distinct({col}) FROM {relation}").fetchall()[0][0]
            top = con.execute(
                f"SELECT {col}::VARCHAR, count(*) AS n FROM {relation} WHERE {col} IS NOT NULL "
                f"GROUP BY 1 ORDER BY n DESC, 1 LIMIT {TOP}"
            ).fetchall()
            entry.update(distinct=int(distinct or 0), top=[[str(v), int(n)] for v, n in top])
        else:
            lo, hi = con.execute(f"SELECT min({col}), max({col}) FROM {relation}").fetchall()[0]
            entry.update(min=_num(lo), max=_num(hi))
        out[name] = entry
    return out


def _histogram(con, relation: str, expr: str, lo: float | None, hi: float | None) -> dict:
    if lo is None or hi is None:
        return {"edges": [], "counts": []}
    if hi == lo:
        n = con.execute(f"SELECT count(*) FROM {relation} WHERE {expr} = ?", [lo]).fetchall()[0][0]
        return {"edges": [lo, hi], "counts": [int(n)]}
    width = (hi - lo) / BINS
    rows = con.execute(
        f"SELECT least(CAST(floor(({expr} - ?) / ?) AS INTEGER), {BINS - 1}) AS b, count(*) FROM {relation} "
        f"WHERE isfinite({expr}) GROUP BY b",
        [lo, width],
    ).fetchall()
    counts = [0] * BINS
    for b, n in rows:
        counts[int(b)] = int(n)
    return {"edges": [lo + i * width for i in range(BINS)] + [hi], "counts": counts}


def stats_frame(stats: dict[str, dict]):
    """One row per feature: dtype, count, nulls, null_pct, mean, std, min, quantiles, max, distinct, top."""
    import pandas as pd

    rows = []
    for name, s in stats.items():
        row = {
            "feature": name,
            "dtype": s["dtype"],
            "count": s["count"],
            "nulls": s["nulls"],
            "null_pct": round(100.0 * s["nulls"] / max(s["count"] + s["nulls"], 1), 2),
            "mean": s.get("mean"),
            "std": s.get("std"),
            "min": s.get("min"),
        }
        row.update(s.get("quantiles") or {})
        row["max"] = s.get("max")
        row["distinct"] = s.get("distinct")
        row["top"] = ", ".join(f"{v} ({n})" for v, n in s.get("top", [])[:3]) or None
        rows.append(row)
    return pd.DataFrame(rows)


def svg_histogram(entry: dict, width: int = 160, height: int = 36) -> str:
    """An inline SVG bar chart of a feature's histogram (numeric) or top values (categorical)."""
    if entry.get("histogram"):
        counts = entry["histogram"]["counts"]
        edges = entry["histogram"]["edges"]
        labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}: {c}" for i, c in enumerate(counts)] if edges else []
    elif entry.get("top"):
        counts = [n for _, n in entry["top"]]
        labels = [f"{v}: {n}" for v, n in entry["top"]]
    else:
        return ""
    if not counts:
        return ""
    peak = max(counts) or 1
    bar = width / len(counts)
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for i, (count, label) in enumerate(zip(counts, labels, strict=True)):
        h = max(1.0, (height - 2) * count / peak) if count else 0.0
        parts.append(
            f'<rect x="{i * bar + 0.5:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="#4c78a8"><title>{html.escape(label)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def stats_html(view: str, stats: dict[str, dict], caption: str = "") -> str:
    """An HTML table of a view's feature statistics with an inline SVG histogram per feature."""
    head = "".join(
        f"<th>{h}</th>" for h in ("feature", "dtype", "count", "nulls", "mean", "std", "min", "p50", "max", "")
    )
    body = []
    for name, s in stats.items():
        cells = [
            html.escape(name),
            s["dtype"],
            s["count"],
            s["nulls"],
            s.get("mean"),
            s.get("std"),
            s.get("min"),
            (s.get("quantiles") or {}).get("p50"),
            s.get("max"),
        ]
        tds = "".join(f"<td>{_fmt(c)}</td>" for c in cells) + f"<td>{svg_histogram(s)}</td>"
        body.append(f"<tr>{tds}</tr>")
    cap = f"<caption>{html.escape(caption or view)}</caption>"
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
