"""What notebook magics display: objects with a text form for terminals and an HTML form for notebooks."""

from __future__ import annotations

from .format import ttl


class Report:
    """A displayable report: ``repr`` gives the text, Jupyter shows the HTML."""

    def __init__(self, text: str, html_text: str):
        self.text, self.html = text, html_text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html


def features_report(store, view: str | None = None) -> Report:
    """What ``%mlops features [VIEW]`` shows: the views of ``store`` (a
    :class:`~mlops_nb.store.features.FeatureStore`) as a table, or one view's statistics with histograms."""
    from ..store.features.stats import stats_frame, stats_html

    if view is None:
        frame = store.list_views()
        if frame.empty:
            return Report(
                "no feature views yet; register one with FeatureStore().register_view(...)",
                "<p>no feature views yet</p>",
            )
        frame["ttl"] = [ttl(t) for t in frame["ttl"]]
        return Report(frame.to_string(index=False), frame.to_html(index=False))
    info = store.describe(view)
    stats = store.stats_dict(view)
    caption = (
        f"{view} v{info['version']} — entity {info['entity']} ({', '.join(info['join_keys'])}), "
        f"{info['rows']} rows in {len(info['segments'])} segments, ttl {ttl(info['ttl_seconds'])}"
    )
    return Report(caption + "\n" + stats_frame(stats).to_string(index=False), stats_html(view, stats, caption))


def runs_frame(runs):
    """What ``%mlops runs``, ``%mlops run`` and ``%mlops end`` show: a DataFrame with a row per run (a
    :class:`~mlops_nb.store.metadata.Run`), whose every cell shows whole, so long parameters are never cut off."""
    import pandas as pd

    class RunsFrame(pd.DataFrame):
        """A DataFrame of runs that displays every cell whole (no ``...`` at ``display.max_colwidth``)."""

        def _repr_html_(self):
            with pd.option_context("display.max_colwidth", None, "display.max_columns", None):
                return super()._repr_html_()

        def __repr__(self) -> str:
            with pd.option_context("display.max_colwidth", None, "display.max_columns", None):
                return super().__repr__()

    return RunsFrame(
        [
            {
                "run": r.id,
                "pipeline": r.pipeline,
                "status": r.status,
                "started": r.started_at,
                "duration_s": r.duration,
                "trigger": r.trigger,
                "executor": r.executor,
                "steps": ", ".join(f"{n} {s}" for s, n in r.step_counts.items()),
                "params": r.params,
            }
            for r in runs
        ]
    )


def model_rows(versions: list[dict]) -> tuple[list[list], list[str]]:
    """Rows and headers of a table of model versions (dicts of :meth:`ModelVersion.to_dict`): what
    ``%mlops models NAME`` and ``mlops-nb models show NAME`` print."""
    names = sorted({k for v in versions for k in v["metrics"]})
    rows = [
        [
            f"v{v['version']}",
            ", ".join(v["aliases"]) or "",
            _approval(v),
            *(f"{v['metrics'][n]:.4g}" if n in v["metrics"] else "" for n in names),
            (v["created"] or "")[:19].replace("T", " "),
            v["tags"].get("mlops_nb.run_id", ""),
            v["tags"].get("mlops_nb.step", ""),
        ]
        for v in versions
    ]
    return rows, ["VERSION", "ALIASES", "APPROVAL", *names, "CREATED", "RUN", "STEP"]


def _approval(version: dict) -> str:
    """``pending → champion`` for a version waiting for an alias, else its approval state."""
    state = version["approval"] or ""
    waiting = version["tags"].get("approval.alias")
    return f"{state} → {waiting}" if state == "pending" and waiting else state


def models_report(name: str | None, records: list[dict]) -> Report:
    """What ``%mlops models [NAME]`` shows: the registered models, or one model's versions with their aliases,
    approval state and metrics."""
    import html

    from .format import table

    if name is None:
        if not records:
            return Report(
                "no registered models yet; mlops_nb.register_model(model, NAME) adds one",
                "<p>no registered models yet</p>",
            )
        rows = [
            [m["name"], m["latest"] or "", ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items()))]
            for m in records
        ]
        headers = ["MODEL", "LATEST", "ALIASES"]
    else:
        rows, headers = model_rows(records)
    text = table(rows, headers)
    head = "".join(f"<th>{html.escape(h.lower())}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    caption = f"<caption>model {html.escape(name)}</caption>" if name else ""
    return Report(text, f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
