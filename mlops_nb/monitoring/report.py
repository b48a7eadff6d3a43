"""The monitoring report: one self-contained HTML file (inline SVG histograms and charts, no script, no network)
and its JSON, written under ``.mlops/reports/NAME/`` and stored as artifacts."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1f2328;max-width:1180px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#57606a}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}.bad{color:#cf222e}.good{color:#1a7f37}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;
vertical-align:middle}th{background:#f6f8fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.tag.bad{background:#ffebe9}.tag.good{background:#dafbe1}.legend span{margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
ul.notes{color:#57606a}
"""
_REF, _CUR = "#8c959f", "#0969da"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def _when(text: str) -> str:
    return html.escape(str(text)[:19].replace("T", " "))


def histogram_svg(hist: dict[str, list], width: int = 260, height: int = 64) -> str:
    """Reference (grey) and current (blue) bars of one column, as inline SVG."""
    ref, cur = hist.get("reference") or [], hist.get("current") or []
    n = len(ref)
    if not n:
        return ""
    top = max(max(ref), max(cur), 1e-12)
    slot = width / n
    bar = max(slot / 2 - 0.5, 0.5)
    parts = [f'<svg width="{width}" height="{height + 14}" viewBox="0 0 {width} {height + 14}" role="img">']
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        x = i * slot
        for dx, share, color in ((0, r, _REF), (bar, c, _CUR)):
            h = height * share / top
            parts.append(
                f'<rect x="{x + dx:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{share:.3f}</title></rect>"
            )
    if "edges" in hist:
        low, high = hist["edges"][0], hist["edges"][-1]
        parts.append(f'<text x="0" y="{height + 12}" font-size="10" fill="#57606a">{_fmt(low, 3)}</text>')
        parts.append(
            f'<text x="{width}" y="{height + 12}" font-size="10" fill="#57606a" text-anchor="end">{_fmt(high, 3)}</text>'
        )
    else:
        labels = ", ".join(str(v) for v in hist.get("values", [])[:6])
        parts.append(f'<text x="0" y="{height + 12}" font-size="10" fill="#57606a">{html.escape(labels[:48])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart_svg(windows: list[dict], metrics: list[str], training: dict, width: int = 680, height: int = 170) -> str:
    """Metrics over time windows (one line each) with the training-time values dashed."""
    if not windows:
        return ""
    colors = ["#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e"]
    values = [w[m] for w in windows for m in metrics if w.get(m) is not None] + [
        v for k, v in training.items() if k in metrics
    ]
    low, high = min(values + [0.0]), max(values + [1.0])
    span = (high - low) or 1.0
    pad, right = 30, 90  # the right margin holds the legend
    n = len(windows)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (width - pad - right) * (i / max(n - 1, 1))
        return x, height - pad * 0.8 - (height - pad * 1.3) * (v - low) / span

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    parts.append(
        f'<line x1="{pad}" y1="{height - pad * 0.8}" x2="{width - right}" y2="{height - pad * 0.8}" stroke="#d0d7de"/>'
    )
    for k, metric in enumerate(metrics):
        color = colors[k % len(colors)]
        points = [xy(i, w[metric]) for i, w in enumerate(windows) if w.get(metric) is not None]
        if len(points) == 1:
            x, y = points[0]
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        elif points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if metric in training:
            _, y = xy(0, training[metric])
            parts.append(
                f'<line x1="{pad}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{color}" stroke-dasharray="4 3">'
                f"<title>{metric} at training: {training[metric]:.3f}</title></line>"
            )
        parts.append(f'<text x="{width - right + 8}" y="{14 + 13 * k}" font-size="11" fill="{color}">{metric}</text>')
    first, last = _when(windows[0]["start"]), _when(windows[-1]["end"])
    parts.append(f'<text x="{pad}" y="{height - 2}" font-size="10" fill="#57606a">{first}</text>')
    parts.append(
        f'<text x="{width - right}" y="{height - 2}" font-size="10" fill="#57606a" text-anchor="end">{last} UTC</text>'
    )
    parts.append(f'<text x="2" y="12" font-size="10" fill="#57606a">{high:.2f}</text>')
    parts.append(f'<text x="2" y="{height - pad * 0.8}" font-size="10" fill="#57606a">{low:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any], inline: bool = False) -> str:
    """The report's HTML (``inline``: a fragment for a notebook cell instead of a whole page)."""
    drift = report["data_drift"]
    columns = drift["columns"]
    verdict = drift["dataset_drift"]
    title = f"{report['model']} v{report['version']}"
    service = report.get("service") or {}
    perf = report.get("performance") or {}
    body = [
        f"<h1>Monitoring: {html.escape(title)}</h1>",
        f'<div class="sub">{_when(report["since"])} → {_when(report["until"])} UTC · reference: '
        f"{html.escape(report.get('reference') or '')}</div>",
        '<div class="cards">',
        f'<div class="card">dataset drift<b class="{"bad" if verdict else "good"}">{"yes" if verdict else "no"}</b>'
        f"{drift['drifted_columns']} of {len(columns)} columns, share {drift['drift_share']:.2f} "
        f"(≥ {drift['drift_share_threshold']:.2f} drifts)</div>",
    ]
    pred = report.get("prediction_drift")
    if pred:
        body.append(
            f'<div class="card">prediction drift<b class="{"bad" if pred["drifted"] else "good"}">'
            f"{'yes' if pred['drifted'] else 'no'}</b>{pred['test']} {_fmt(pred['score'])}</div>"
        )
    for key in ("accuracy", "f1", "roc_auc", "rmse", "r2"):
        if key in (perf.get("overall") or {}):
            trained = (perf.get("training") or {}).get(key)
            body.append(
                f'<div class="card">{key}<b>{perf["overall"][key]:.3f}</b>'
                + (f"at training {trained:.3f}" if trained is not None else f"{perf['labelled']} labelled rows")
                + "</div>"
            )
    body.append(
        f'<div class="card">traffic<b>{service.get("rows", 0)}</b>rows, {service.get("requests", 0)} requests, '
        f"{service.get('errors', 0)} error{'s' * (service.get('errors', 0) != 1)}</div>"
    )
    if "p99_latency_ms" in service:
        body.append(
            f'<div class="card">latency p50 / p99<b>{service["p50_latency_ms"]:.1f} / {service["p99_latency_ms"]:.1f}'
            "</b>ms</div>"
        )
    body.append("</div>")
    alerts = report.get("alerts") or []
    if alerts:
        body.append("<h2>Alerts raised</h2><table><tr><th>rule</th><th>value</th><th>action</th></tr>")
        for a in alerts:
            body.append(
                f'<tr><td class="bad">{html.escape(a["rule"])}</td><td class="num">{_fmt(a["value"])}</td>'
                f"<td>{html.escape(a['action'])}</td></tr>"
            )
        body.append("</table>")
    if perf.get("windows"):
        metrics = [m for m in ("accuracy", "f1", "roc_auc", "precision", "recall", "r2") if m in perf["overall"]]
        metrics = metrics or [m for m in ("mae", "rmse") if m in perf["overall"]]
        body.append(f"<h2>Performance over time ({perf['task']}, {perf['labelled']} labelled rows)</h2>")
        body.append(line_chart_svg(perf["windows"], metrics, perf.get("training") or {}))
        body.append('<div class="legend sub">solid: in the window · dashed: at training</div>')
    body.append(
        f"<h2>Data drift per column ({len(columns)} columns{', and the predictions first' if pred else ''})</h2>"
    )
    body.append(
        f'<div class="legend sub"><span><i class="sw" style="background:{_REF}"></i>reference</span>'
        f'<span><i class="sw" style="background:{_CUR}"></i>current</span></div>'
    )
    body.append(
        "<table><tr><th>column</th><th>type</th><th>test</th><th>score</th><th>threshold</th><th>drift</th>"
        "<th>reference vs current</th></tr>"
    )
    ordered = sorted(columns, key=lambda c: (not c["drifted"], c["column"]))
    for c in [*([pred] if pred else []), *ordered]:
        tag = '<span class="tag bad">drift</span>' if c["drifted"] else '<span class="tag good">ok</span>'
        body.append(
            f"<tr><td>{html.escape(c['column'])}</td><td>{c['type']}</td><td>{c['test']}</td>"
            f'<td class="num">{_fmt(c["score"])}</td><td class="num">{_fmt(c["threshold"])}</td><td>{tag}</td>'
            f"<td>{histogram_svg(c.get('histogram') or {})}</td></tr>"
        )
    body.append("</table>")
    if drift.get("skipped"):
        body.append("<h2>Not tested</h2><ul class='notes'>")
        body += [f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in drift["skipped"].items()]
        body.append("</ul>")
    if report.get("notes"):
        body.append("<h2>Notes</h2><ul class='notes'>")
        body += [f"<li>{html.escape(n)}</li>" for n in report["notes"]]
        body.append("</ul>")
    content = "\n".join(body)
    if inline:
        return f'<div class="mlops-monitor"><style>{_scoped(_CSS)}</style>{content}</div>'
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} monitoring</title>'
        f"<style>{_CSS}</style></head><body>{content}</body></html>\n"
    )


def _scoped(css: str) -> str:
    """The report's CSS limited to its own block (a notebook's page keeps its styles)."""
    out = []
    for rule in css.strip().split("}"):
        if "{" in rule:
            selectors, _, decls = rule.partition("{")
            scoped = ",".join(f".mlops-monitor {s.strip()}" for s in selectors.split(",") if s.strip())
            out.append(f"{scoped}{{{decls}}}")
    return "".join(out).replace(".mlops-monitor body", ".mlops-monitor")


def _write(path: Path, text: str) -> None:
    from ..core.files import fsync_rename

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    fsync_rename(tmp, path)


def write_report(project, result, fired: list) -> None:
    """Write a :class:`MonitorReport`'s HTML and JSON under ``.mlops/reports/NAME/`` and store both as artifacts
    (the paths and references are set on ``result``)."""
    folder = project.mlops_dir / "reports" / result.model
    folder.mkdir(parents=True, exist_ok=True)
    from ..core.clock import utcnow

    stamp = f"{utcnow():%Y%m%dT%H%M%S%f}"  # when it was written: two reports of one window are two files
    base = f"{result.model}-v{result.version}-{stamp}"  # a model's name may hold dots: no with_suffix
    result.html, result.json = folder / f"{base}.html", folder / f"{base}.json"
    data = result.to_dict()
    data["alerts"] = [
        {"rule": rule.text, "metric": rule.metric, "value": value, "action": rule.action} for rule, value in fired
    ]
    _write(result.json, json.dumps(data, indent=1, sort_keys=True, default=str))
    _write(result.html, render_html(data))
    result.json_ref = project.artifacts.put_path(result.json, name="monitoring report (JSON)")
    result.html_ref = project.artifacts.put_path(result.html, name="monitoring report")
