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
