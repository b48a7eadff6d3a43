"""Plots people would rather look at than read: a run's timeline, a pipeline's DAG, a lineage graph.

Each function returns a bare matplotlib Figure (no pyplot state, no GUI backend), which the CLI saves to a file; the
magics wrap it in a :class:`Picture`, which a notebook shows as a PNG with no ``%matplotlib`` first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from ..core.records import STATUS_COLOURS

COLOURS = {status: colour for status, (colour, _) in STATUS_COLOURS.items()}


class Picture:
    """A figure that displays itself as a PNG in Jupyter (``_repr_png_``), in a fresh kernel too.

    Attributes:
        figure: the matplotlib Figure.
        title: what it shows, for a text-only front end.
    """

    def __init__(self, figure, title: str, dpi: int = 100):
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
    figure = Figure(figsize=(9, 1.3 + 0.42 * max(1, len(step_runs))))  # title and axis label need ~1.3 in
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


# Diagrams: a pipeline's DAG and a lineage graph, drawn top-down ------------------------------------------------------
WIDTH = 9.0  # inches: a notebook's output width at 100-110 dpi
MAX_PER_LEVEL = 6  # more nodes in one level are collapsed into a "+N more" box, so labels keep their size
FONT = 9  # points: never smaller, whatever the graph's size


@dataclass
class _Box:
    key: str
    label: str
    fill: str = "white"
    edge: str = "#616161"
    rounded: bool = False
    bold: bool = False
    members: list[str] = field(default_factory=list)  # the keys a collapsed box stands for


def _levels(keys: list[str], edges: list[tuple[str, str, str | None]]) -> dict[str, int]:
    """Longest-path layering: a node sits one level below the lowest of its parents (sources at level 0)."""
    parents: dict[str, set[str]] = {k: set() for k in keys}
    for source, target, _ in edges:
        if source in parents and target in parents and source != target:
            parents[target].add(source)
    level: dict[str, int] = {}

    def place(key: str, seen: frozenset = frozenset()) -> int:
        if key not in level:
            ups = [place(p, seen | {key}) for p in parents[key] if p not in seen]
            level[key] = 1 + max(ups) if ups else 0
        return level[key]

    for key in keys:
        place(key)
    return level


def _diagram(boxes: list[_Box], edges: list[tuple[str, str, str | None]], title: str):
    """A top-down layered drawing of ``boxes`` joined by ``edges`` (source key, target key, label)."""
    import textwrap

    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    by_key = {b.key: b for b in boxes}
    level = _levels(list(by_key), edges)
    rows: dict[int, list[_Box]] = {}
    for box in boxes:
        rows.setdefault(level[box.key], []).append(box)
    where: dict[str, str] = {}  # key -> the key of the box drawn for it (itself, or its collapsed group)
    x_of: dict[str, float] = {}
    drawn_rows: list[list[_Box]] = []
    for n in sorted(rows):
        row = rows[n]
        parents = {t: [s for s, t2, _ in edges if t2 == t] for t in (b.key for b in row)}

        def centre(box: _Box, parents=parents) -> float:
            xs = [x_of[where[p]] for p in parents[box.key] if p in where]
            return sum(xs) / len(xs) if xs else 0.0

        row.sort(key=centre)
        if len(row) > MAX_PER_LEVEL:
            kept, rest = row[: MAX_PER_LEVEL - 1], row[MAX_PER_LEVEL - 1 :]
            names = ", ".join(b.label.split("\n")[0] for b in rest[:3]) + (", …" if len(rest) > 3 else "")
            group = _Box(f"group:{n}", f"+{len(rest)} more\n{names}", "#f5f5f5", members=[b.key for b in rest])
            row = [*kept, group]
            for b in rest:
                where[b.key] = group.key
        slot = WIDTH / len(row)
        for i, box in enumerate(row):
            where.setdefault(box.key, box.key)
            x_of[box.key] = slot * (i + 0.5)
        drawn_rows.append(row)
    box_w = min(2.4, WIDTH / max(len(r) for r in drawn_rows) - 0.25)
    chars = max(8, int(box_w * 72 / (FONT * 0.6)))  # characters that fit one line of a box
    lines = {}
    for box in (b for r in drawn_rows for b in r):
        wrapped = [w for part in box.label.split("\n") for w in textwrap.wrap(part, chars - 2 * box.bold) or [""]]
        lines[box.key] = wrapped[:4] if len(wrapped) <= 4 else [*wrapped[:3], "…"]
    row_h = [max(len(lines[b.key]) for b in r) * FONT * 1.35 / 72 + 0.22 for r in drawn_rows]
    gap = 0.55
    height = sum(row_h) + gap * (len(drawn_rows) - 1) + 0.5
    figure = Figure(figsize=(WIDTH, height))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, WIDTH)
    axes.set_ylim(-height, 0)
    axes.axis("off")
    top, y_of, h_of = -0.4, {}, {}
    for r, h in zip(drawn_rows, row_h, strict=True):
        for box in r:
            y_of[box.key], h_of[box.key] = top - h / 2, h
            x = x_of[box.key]
            style = "round,pad=0.02,rounding_size=0.12" if box.rounded else "square,pad=0.02"
            axes.add_patch(
                FancyBboxPatch(
                    (x - box_w / 2, top - h),
                    box_w,
                    h,
                    boxstyle=style,
                    facecolor=box.fill,
                    edgecolor=box.edge,
                    linewidth=2.2 if box.bold else 0.9,
                )
            )
            axes.text(
                x,
                top - h / 2,
                "\n".join(lines[box.key]),
                ha="center",
                va="center",
                fontsize=FONT,
                fontweight="bold" if box.bold else "normal",
            )
        top -= h + gap
    axes.text(0.05, -0.15, title, fontsize=FONT + 1, va="center", color="#424242")
    labelled: dict[tuple[str, str], list[str]] = {}
    for source, target, label in edges:
        a, b = where.get(source), where.get(target)
        if a is None or b is None or a == b:
            continue
        names = labelled.setdefault((a, b), [])
        if label and label not in names:
            names.append(label)
    row_of = {key: i for i, r in enumerate(drawn_rows) for key in (b.key for b in r)}
    fan_out: dict[str, int] = {}
    fan_in: dict[str, int] = {}
    for a, b in labelled:
        fan_out[a], fan_in[b] = fan_out.get(a, 0) + 1, fan_in.get(b, 0) + 1
    for (a, b), names in labelled.items():
        start = (x_of[a], y_of[a] - h_of[a] / 2)
        end = (x_of[b], y_of[b] + h_of[b] / 2)
        dx, dy = end[0] - start[0], end[1] - start[1]
        rad = 0.0
        if row_of[b] - row_of[a] > 1:  # it would cross the rows between: bend it round their boxes
            rad = 2 * (box_w / 2 + 0.3) / max(1e-6, (dx * dx + dy * dy) ** 0.5)
            if start[0] + end[0] > WIDTH + 0.01:  # on the right half: bulge to the right, away from the middle
                rad = -rad
        axes.add_patch(
            FancyArrowPatch(
                start,
                end,
                arrowstyle="-|>",
                mutation_scale=10,
                color="#757575",
                lw=0.9,
                shrinkA=2,
                shrinkB=2,
                connectionstyle=f"arc3,rad={rad}",
            )
        )
        if names:  # on the arrow, where arrows fanning out of (or into) one box are furthest apart
            text = textwrap.shorten(", ".join(names), 28, placeholder="…")
            t = 0.65 if fan_out[a] > 1 else 0.35 if fan_in[b] > 1 else 0.5
            control = (start[0] + dx / 2 + rad * dy, start[1] + dy / 2 - rad * dx)  # the Bezier's control point
            at = tuple(
                (1 - t) ** 2 * p0 + 2 * t * (1 - t) * c + t**2 * p2
                for p0, c, p2 in zip(start, control, end, strict=True)
            )
            axes.text(
                *at,
                text,
                fontsize=FONT - 1,
                ha="center",
                va="center",
                color="#424242",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
            )
    return figure


def dag_diagram(pipeline, statuses: dict[str, str] | None = None):
    """A pipeline's DAG, top-down: one box per step (filled by the status of its last run, when given) with the
    variables it passes on the arrows and the files it ``--reads`` under its name. Returns a matplotlib Figure."""
    statuses = statuses or {}
    boxes = []
    for step in pipeline.steps:
        status = statuses.get(step.name)
        label = (
            step.name + (f"\n{status}" if status else "") + (f"\nreads {', '.join(step.reads)}" if step.reads else "")
        )
        boxes.append(_Box(step.name, label, STATUS_COLOURS.get(status, ("", "white"))[1]))
    title = f"{pipeline.name}: {len(pipeline.steps)} steps"
    return _diagram(boxes, pipeline.edges(), title)


def lineage_diagram(graph):
    """A lineage graph, top-down from what the root came from to what came from it: artifacts as rounded boxes,
    step runs as boxes filled by status, the root in bold. Returns a matplotlib Figure."""
    boxes = []
    for key, node in graph.nodes.items():
        if node.kind == "artifact":
            boxes.append(_Box(key, f"{node.label}\n{node.id[:10]}", rounded=True, bold=key == graph.root))
        elif node.kind == "prediction":  # a logged request: what it was answered with, and when
            label = f"{node.label}\n{node.attrs.get('summary', '')} · {str(node.attrs.get('ts', ''))[:19]}"
            boxes.append(_Box(key, label, rounded=True, bold=key == graph.root))
        else:
            fill = STATUS_COLOURS.get(node.attrs.get("status"), ("", "white"))[1]
            label = f"{node.attrs.get('step')} · {node.attrs.get('status')}\n{node.id}"
            boxes.append(_Box(key, label, fill, bold=key == graph.root))
    root = graph.nodes[graph.root]
    return _diagram(boxes, [(s, t, None) for s, t, _ in graph.edges], f"lineage of {root.label}")
