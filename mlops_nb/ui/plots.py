"""Plots people would rather look at than read: a run's timeline.

Each function returns a bare matplotlib Figure (no pyplot state, no GUI backend), which the CLI saves to a file; the
magics wrap it in a :class:`Picture`, which a notebook shows as a PNG with no ``%matplotlib`` first.
"""

from __future__ import annotations

import io

from ..core.records import STATUS_COLOURS

COLOURS = {status: colour for status, (colour, _) in STATUS_COLOURS.items()}


class Picture:
    """A figure that displays itself as a PNG in Jupyter (``_repr_png_``), in a fresh kernel too.

    Attributes:
        figure: the matplotlib Figure.
        title: what it shows, for a text-only front end.
    """

    def __init__(self, figure, title: str, dpi: int = 110):
        self.figure, self.title, self.dpi = figure, title, dpi

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight")
        return buffer.getvalue()

    def __repr__(self) -> str:
        return f"<{self.title}>"

    def savefig(self, *args, **kwargs):
        """Save the figure (``matplotlib.figure.Figure.savefig``)."""
        return self.figure.savefig(*args, **kwargs)


def timeline(run):
    """A matplotlib Figure with one bar per step run from its start to its end, coloured by status; steps that
    ran in parallel overlap in time. ``run`` is a :class:`~mlops_nb.store.metadata.Run` with its step runs.

    Example::

        from mlops_nb.ui.plots import timeline
        timeline(project.metadata.get_run("latest")).savefig("timeline.png")
    """
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend
    from matplotlib.patches import Patch

    step_runs = [s for s in run.step_runs if s.started_at is not None]
    start = min([s.started_at for s in step_runs], default=run.started_at)
    figure = Figure(figsize=(9, 0.5 + 0.42 * max(1, len(step_runs))))
    axes = figure.subplots()
    labels = []
    for row, s in enumerate(step_runs):
        begin = (s.started_at - start).total_seconds()
        width = max((s.duration or 0.0), 0.01)
        axes.barh(row, width, left=begin, color=COLOURS.get(s.status, "#9e9e9e"), edgecolor="black", lw=0.4)
        axes.text(begin + width, row, f" {width:.2f}s", va="center", fontsize=8)
        labels.append(s.step if s.attempt == 1 else f"{s.step} (try {s.attempt})")
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first step started")
    axes.set_title(f"run {run.id} · {run.pipeline} · {run.executor} · {run.status}", fontsize=10)
    used = sorted({s.status for s in step_runs})
    axes.legend(
        handles=[Patch(color=COLOURS.get(u, "#9e9e9e"), label=u) for u in used],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure
