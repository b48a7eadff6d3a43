"""The ipywidgets dashboard (``%mlops dashboard``, ``mlops_nb.dashboard()``): a project's whole lifecycle in one
notebook output, in tabs: Pipeline, Runs, Lineage, Features, Models, Deployments and Monitoring.

It reads what it shows through :mod:`mlops_nb.ui.state` (short reads, DESIGN invariant 3) and acts through the
Python API (``mlops_nb.approve``, ``reject``, ``promote``, ``rollback``), as the REST API does. Every call that
touches a store runs on one background thread per dashboard, one call at a time, so the kernel never waits for
a lineage walk, the first MLflow import or an approval; a progress bar shows while it works. Errors show as one
line in the widget, never as a traceback.

Example::

    import mlops_nb

    board = mlops_nb.dashboard("01_quickstart.ipynb")   # displays as the widget in a notebook
    board.refresh()                                  # or press its Refresh button
    board.wait()                                     # block until what it loads is shown (for scripts, tests)
"""

from __future__ import annotations

import html
import io
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..core.records import RUN_KINDS, STATUS_COLOURS, TRIGGERS
from ..exceptions import MlopsError, NotFoundError
from . import state
from .format import duration, ttl

_log = logging.getLogger(__name__)

TABS = ("Pipeline", "Runs", "Lineage", "Features", "Models", "Deployments", "Monitoring")
"""The dashboard's tabs, in order."""
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
"""What a run's status can be (the Runs tab's filter)."""
ACTIONS = {
    "approve": ("success", "Approve the pending version: its alias moves to it"),
    "reject": ("danger", "Reject the pending version: the alias never moves to it"),
    "promote": ("primary", "Move the alias to this version if it passes the gates"),
    "rollback": ("warning", "Point the alias back at the version that held it before"),
}
"""The Models tab's buttons (style, tooltip), each calling the function of that name in the Python API."""
RUNS_SHOWN = 50  # rows of the runs table
OUTPUTS_FROM = 5  # recent pipeline runs whose outputs the Lineage tab suggests

_CELL = "padding:3px 8px;border-bottom:1px solid #e0e0e0;text-align:left;vertical-align:top"
_HEAD = _CELL + ";background:#f5f5f5;font-weight:600;position:sticky;top:0"


# HTML pieces ----------------------------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def status_chip(status: str | None, label: str | None = None) -> str:
    """A status as a small coloured label in the colours of the plots (showing ``label`` when given)."""
    colour, light = STATUS_COLOURS.get(status or "", ("#9e9e9e", "#f5f5f5"))
    return (
        f'<span style="background:{light};border:1px solid {colour};border-radius:9px;padding:0 7px;'
        f'white-space:nowrap">{_esc(label or status or "never")}</span>'
    )


def html_table(headers: list[str], rows: list[list[str]], *, height: int | None = None, empty: str = "") -> str:
    """An HTML table (cells given as HTML: escape text first), scrolling past ``height`` pixels."""
    if not rows:
        return f'<p style="color:#616161;margin:4px 0">{_esc(empty)}</p>' if empty else ""
    head = "".join(f'<th style="{_HEAD}">{_esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in row) + "</tr>" for row in rows)
    box = f"max-height:{height}px;overflow:auto;" if height else "overflow-x:auto;"
    return (
        f'<div style="{box}border:1px solid #e0e0e0;border-radius:4px">'
        f'<table style="border-collapse:collapse;font-size:13px;width:100%">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _line(text: str, kind: str = "info") -> str:
    """One line of HTML: ``ok`` (green), ``error`` (red) or ``info`` (grey)."""
    colour = {"ok": "#2e7d32", "error": "#c62828"}.get(kind, "#424242")
    mark = {"ok": "✔ ", "error": "✘ "}.get(kind, "")
    return f'<div style="color:{colour};margin:4px 0">{mark}{_esc(" ".join(str(text).split()))}</div>'


def _when(text: str | None) -> str:
    return (text or "")[:19].replace("T", " ")


def _png(figure) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _message(exc: BaseException) -> str:
    """An exception as the one line the widget shows."""
    if isinstance(exc, MlopsError):
        return exc.message
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"


def _set_options(widget, options: list, keep: Any = None, follow: bool = False) -> None:
    """Give a selection widget new options, keeping its value when it still is one (else ``keep``, else the
    first); with ``follow``, ``keep`` wins over the value (a choice the dashboard made, not a person)."""
    current = widget.value
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    widget.options = options
    if follow and keep in values:
        current = keep
    chosen = current if current in values else keep if keep in values else values[0] if values else None
    if widget.value != chosen:
        widget.value = chosen


def _image() -> widgets.Image:
    return widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto", display="none"))


def _show_png(image: widgets.Image, png: bytes | None) -> None:
    if png:
        image.value = png
        image.layout.display = None
    else:
        image.layout.display = "none"


# The dashboard --------------------------------------------------------------------------------------------------
class Dashboard(widgets.VBox):
    """The dashboard widget of a project: tabs for the pipeline, runs, lineage, features, models, deployments and
    monitoring, a Refresh button and an auto-refresh toggle.

    Building it returns at once: the tabs fill in from a background thread. Every store read and every action
    runs on that thread, one at a time, in the order asked (a refresh asked while one waits is not queued twice).
    A step or run recorded in the same process (a step cell run by hand, ``%mlops run``) refreshes it too
    (the ``post_step`` and ``post_run`` hooks).

    Args:
        project: the :class:`~mlops_nb.project.Project` shown.
        notebook: the notebook whose DAG the Pipeline tab shows; None: the tab lists the project's pipelines
            with a dropdown to pick one.
        root: the folder searched for pipelines (default: the project's home).

    Attributes:
        project, notebook, root: as given.
        tabs: the ``widgets.Tab``.
        buttons: ``approve``, ``reject``, ``promote``, ``rollback``, ``refresh``, ``lineage``: the buttons (a
            test may ``.click()`` them).
        status: the one-line outcome of the last action, or why a tab could not be read (HTML).
        refreshed_at: when the last refresh ended (local time; None before the first).
    """

    def __init__(self, project, notebook: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None):
        super().__init__()
        self.project = project
        self.notebook = Path(notebook).resolve() if notebook else None
        self.root = Path(root).resolve() if root else Path(project.home)
        self._quiet = threading.local()  # set while the worker fills widgets: their observers stay still
        self._jobs: list[str] = []  # keys waiting, in order
        self._work: dict[str, tuple[str, Callable[[], None]]] = {}  # key -> (label, function): the latest asked
        self._busy = 0  # jobs waiting or running
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._auto_stop: threading.Event | None = None
        self._runs: dict[str, dict] = {}  # run id -> its row, as the Runs tab shows it
        self._run_picked: str | None = None  # the run a person picked (else the newest pipeline run is shown)
        self.buttons: dict[str, widgets.Button] = {}
        self.refreshed_at: datetime | None = None
        self._build()
        from ..core.hooks import hooks

        # a step or run recorded in this process (a step cell run by hand, %mlops run) refreshes the tabs
        self._unsubscribe = [hooks.subscribe(event, self._recorded) for event in ("post_step", "post_run")]
        self.refresh()

    def _recorded(self, **_fields: Any) -> None:
        self.refresh()

    # layout ---------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        refresh = widgets.Button(description="Refresh", icon="refresh", tooltip="Read the project's state again")
        refresh.on_click(lambda _: self.refresh())
        self.buttons["refresh"] = refresh
        self.auto = widgets.ToggleButton(value=False, description="Auto-refresh", icon="clock-o")
        self.interval = widgets.BoundedIntText(
            value=10, min=2, max=3600, description="every (s)", layout=widgets.Layout(width="150px")
        )
        self.auto.observe(self._toggle_auto, "value")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="160px"))
        self.progress_label = widgets.Label("")
        self._progress_box = widgets.HBox(
            [self.progress, self.progress_label], layout=widgets.Layout(visibility="hidden", align_items="center")
        )
        title = widgets.HTML(
            f'<b style="font-size:15px">mlops</b> <span style="color:#616161">{_esc(self.root)}</span>'
        )
        self.status = widgets.HTML("")
        self.refreshed = widgets.HTML("")
        toolbar = widgets.HBox(
            [title, refresh, self.auto, self.interval, self.refreshed, self._progress_box],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        pages = [
            self._build_pipeline(),
            self._build_runs(),
            self._build_lineage(),
            self._build_features(),
            self._build_models(),
            self._build_deployments(),
            self._build_monitoring(),
        ]
        self.tabs = widgets.Tab(children=pages, titles=TABS)
        self.children = [toolbar, self.status, self.tabs]

    def _page(self, *children) -> widgets.VBox:
        return widgets.VBox(list(children), layout=widgets.Layout(padding="6px"))

    def _observe(self, widget, handler: Callable[[], None], name: str = "value") -> None:
        """Call ``handler`` when a person changes ``widget`` (not when the dashboard fills it)."""

        def changed(_change) -> None:
            if not getattr(self._quiet, "on", False):
                handler()

        widget.observe(changed, name)

    # background work ------------------------------------------------------------------------------------------
    def submit(self, key: str, label: str, function: Callable[[], None]) -> None:
        """Run ``function`` on the dashboard's thread after what waits already; a job of the same ``key`` that has
        not started yet is replaced (the latest asked wins), so clicks never pile up."""
        with self._cond:
            if self._closed:
                return
            if key not in self._work:
                self._jobs.append(key)
                self._busy += 1
            self._work[key] = (label, function)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="mlops-dashboard", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        self._show_progress()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed and not self._jobs:
                    return
                key = self._jobs.pop(0)
                label, function = self._work.pop(key)
            self.progress_label.value = label
            self._quiet.on = True
            try:
                function()
            except Exception as exc:  # noqa: BLE001 - the widget shows one line; the thread serves on
                _log.debug("dashboard job %s failed", key, exc_info=exc)
                self.status.value = _line(f"{label.rstrip('…')} failed: {_message(exc)}", "error")
            finally:
                self._quiet.on = False
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
                self._show_progress()

    def _show_progress(self) -> None:
        with self._cond:
            busy = self._busy
        self._progress_box.layout.visibility = "visible" if busy else "hidden"
        if not busy:
            self.progress_label.value = ""

    def _step(self, done: int, total: int, label: str) -> None:
        self.progress.max, self.progress.value = max(total, 1), done
        self.progress_label.value = label

    @property
    def busy(self) -> bool:
        """Whether work is waiting or running."""
        with self._cond:
            return self._busy > 0

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until every job asked so far is done (for scripts and tests; a notebook need not wait).

        Returns:
            True when idle, False when ``timeout`` seconds passed first.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def close(self) -> None:
        """Stop the auto-refresh and the background thread, and close the widgets."""
        self.auto.value = False
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        stack = list(self.children)
        while stack:
            widget = stack.pop()
            stack.extend(getattr(widget, "children", ()))
            widget.close()
        super().close()

    # refresh --------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the project's state again and update every tab, on the background thread (returns at once)."""
        self.submit("refresh", "loading…", self._refresh)

    def _refresh(self) -> None:
        loaders = [
            ("pipelines", self._load_pipeline),
            ("runs", self._load_runs),
            ("features", self._load_features),
            ("models", self._load_models),
            ("lineage", self._load_lineage_options),
            ("deployments", self._load_deployments),
            ("monitoring", self._load_monitoring),
        ]
        failed = []
        for done, (what, load) in enumerate(loaders):
            self._step(done, len(loaders), f"loading {what}…")
            if not load():
                failed.append(what)
        self._step(len(loaders), len(loaders), "")
        self.refreshed_at = datetime.now()
        self.refreshed.value = f'<span style="color:#757575">refreshed {self.refreshed_at:%H:%M:%S}</span>'
        if failed:
            tabs = ", ".join(failed)
            says = "the tab says why" if len(failed) == 1 else "the tabs say why"
            self.status.value = _line(f"{tabs} could not be read; {says}", "error")

    def _guarded(self, note: widgets.HTML, function: Callable[[], None]) -> bool:
        """Run ``function``; an error becomes one line in ``note``. Returns whether it went through."""
        try:
            function()
        except Exception as exc:  # noqa: BLE001 - one line in the tab, never a traceback; the other tabs still load
            _log.debug("dashboard read failed", exc_info=exc)
            note.value = _line(_message(exc), "error")
            return False
        return True

    def _toggle_auto(self, change) -> None:
        if self._auto_stop is not None:
            self._auto_stop.set()
            self._auto_stop = None
        if not change["new"]:
            return
        stop = self._auto_stop = threading.Event()

        def tick() -> None:
            while not stop.wait(max(2, int(self.interval.value or 10))):
                if not self.busy:
                    self.refresh()

        threading.Thread(target=tick, name="mlops-dashboard-auto", daemon=True).start()

    # Pipeline -------------------------------------------------------------------------------------------------
    def _build_pipeline(self) -> widgets.VBox:
        self.pipeline_pick = widgets.Dropdown(description="pipeline", layout=widgets.Layout(width="60%"))
        self._observe(self.pipeline_pick, self._pick_pipeline)
        self.pipelines_table = widgets.HTML()
        self.dag_image = _image()
        self.steps_table = widgets.HTML()
        self.pipeline_note = widgets.HTML()
        if self.notebook is not None:
            self.pipeline_pick.layout.display = "none"
        return self._page(
            self.pipeline_pick, self.pipelines_table, self.pipeline_note, self.dag_image, self.steps_table
        )

    def _notebook_place(self) -> tuple[Path, str] | None:
        """The (root, relative path) of the notebook the Pipeline tab shows."""
        if self.notebook is not None:
            return self.notebook.parent, self.notebook.name
        if self.pipeline_pick.value:
            return self.root, self.pipeline_pick.value
        return None

    def _load_pipeline(self) -> bool:
        def load() -> None:
            if self.notebook is None:
                found = state.pipelines(self.project, self.root)
                _set_options(self.pipeline_pick, [(f"{p['path']} · {p['steps']} steps", p["path"]) for p in found])
                rows = [
                    [
                        _esc(p["path"]),
                        _esc(p["name"]),
                        str(p["steps"]),
                        status_chip((p["last_run"] or {}).get("status")),
                        _esc((p["last_run"] or {}).get("id", "")),
                        _esc(_when((p["last_run"] or {}).get("started_at"))),
                    ]
                    for p in found
                ]
                self.pipelines_table.value = html_table(
                    ["notebook", "pipeline", "steps", "last run", "run", "started"],
                    rows,
                    height=200,
                    empty=f"no notebook with %%mlops step cells under {self.root}",
                )
            self._show_pipeline()

        return self._guarded(self.pipeline_note, load)

    def _pick_pipeline(self) -> None:
        self.submit("pipeline", "drawing the DAG…", lambda: self._guarded(self.pipeline_note, self._show_pipeline))

    def _show_pipeline(self) -> None:
        from .plots import dag_diagram

        place = self._notebook_place()
        if place is None:
            _show_png(self.dag_image, None)
            self.steps_table.value = ""
            self.pipeline_note.value = ""
            return
        root, path = place
        data = state.dag(self.project, root, path)
        pipeline = state.parsed(root / path)  # the parse state.dag made and kept
        statuses = {s["name"]: s["status"] for s in data["steps"] if s["status"] != "never"}
        _show_png(self.dag_image, _png(dag_diagram(pipeline, statuses)))
        rows = []
        for s in data["steps"]:
            rows.append(
                [
                    f"<b>{_esc(s['name'])}</b>",
                    status_chip(s["status"]),
                    _esc(s["why"] or "not run yet"),
                    _esc(duration(s["duration"])),
                    _esc(", ".join(s["inputs"]) or "-"),
                    _esc(", ".join(s["outputs"]) or "-"),
                    _esc(s["error"] or ""),
                ]
            )
        self.steps_table.value = html_table(["step", "status", "why", "took", "inputs", "outputs", "error"], rows)
        last = data["last_run"]
        self.pipeline_note.value = _line(
            f"{data['name']} ({path}): last run {last['id']} {last['status']} ({last['trigger']}), "
            f"{_when(last['started_at'])} UTC"
            if last
            else f"{data['name']} ({path}) never ran; run its cells, or `%mlops run`"
        )

    # Runs -----------------------------------------------------------------------------------------------------
    def _build_runs(self) -> widgets.VBox:
        def choice(description: str, values) -> widgets.Dropdown:
            options = [("any", ""), *((v, v) for v in values)]
            return widgets.Dropdown(options=options, value="", description=description, layout=_narrow(200))

        self.status_filter = choice("status", RUN_STATUSES)
        self.trigger_filter = choice("trigger", TRIGGERS)
        self.kind_filter = choice("kind", RUN_KINDS)
        for each in (self.status_filter, self.trigger_filter, self.kind_filter):
            self._observe(each, self._filter_runs)
        self.runs_table = widgets.HTML()
        self.run_pick = widgets.Dropdown(description="run", layout=widgets.Layout(width="70%"))
        self._observe(self.run_pick, self._pick_run)
        self.run_line = widgets.HTML()
        self.timeline_image = _image()
        self.why_lines = widgets.HTML()
        self.runs_note = widgets.HTML()
        filters = widgets.HBox([self.status_filter, self.trigger_filter, self.kind_filter])
        return self._page(
            filters, self.runs_note, self.runs_table, self.run_pick, self.run_line, self.timeline_image, self.why_lines
        )

    def _filters(self) -> dict[str, str | None]:
        return {
            "status": self.status_filter.value or None,
            "trigger": self.trigger_filter.value or None,
            "kind": self.kind_filter.value or None,
        }

    def _filter_runs(self) -> None:
        self.submit("runs", "reading runs…", self._load_runs)

    def _load_runs(self) -> bool:
        def load() -> None:
            filters = self._filters()
            found = state.runs(self.project, RUNS_SHOWN, **filters)
            self._runs = {r["id"]: r for r in found}
            rows = [
                [
                    f"<code>{_esc(r['id'])}</code>",
                    _esc(r["kind"]),
                    _esc(r["pipeline"] or r.get("fired_by") or ""),
                    status_chip(r["status"]),
                    _esc(r["trigger"]),
                    _esc(_when(r["started_at"])),
                    _esc(duration(r["duration"])),
                    _esc(", ".join(f"{n} {s}" for s, n in (r.get("step_counts") or {}).items())),
                    _esc(r.get("error") or ""),
                ]
                for r in found
            ]
            chosen = ", ".join(f"{k}={v}" for k, v in filters.items() if v)
            empty = f"no runs with {chosen}; change the filters" if chosen else "no runs yet; run a pipeline"
            self.runs_table.value = html_table(
                ["run", "kind", "pipeline / for", "status", "trigger", "started (UTC)", "took", "steps", "error"],
                rows,
                height=260,
                empty=empty,
            )
            labels = [(f"{r['id']} · {r['pipeline'] or r['kind']} · {r['status']}", r["id"]) for r in found]
            pipeline_runs = [r["id"] for r in found if r["kind"] == "pipeline"]  # with a timeline to show
            newest = pipeline_runs[0] if pipeline_runs else None
            _set_options(self.run_pick, labels, keep=newest, follow=self._run_picked not in self._runs)
            self.runs_note.value = ""
            self._show_run()

        return self._guarded(self.runs_note, load)

    def _pick_run(self) -> None:
        self._run_picked = self.run_pick.value  # a person's choice: kept while it is listed
        self.submit("run", "reading the run…", lambda: self._guarded(self.runs_note, self._show_run))

    def _show_run(self) -> None:
        from ..engine.step import StepResult
        from .plots import timeline

        run_id = self.run_pick.value
        if not run_id:
            self.run_line.value = self.why_lines.value = ""
            _show_png(self.timeline_image, None)
            return
        record = self.project.metadata.get_run(run_id)
        fired = f", fired by {record.fired_by}" if record.fired_by else ""
        took = f", took {duration(record.duration)}" if record.duration is not None else ""
        error = f" — {record.error}" if record.error else ""
        what = record.pipeline or record.kind
        self.run_line.value = _line(
            f"run {record.id}: {what} {record.status} (trigger {record.trigger}{fired}), started "
            f"{_when(record.started_at.isoformat() if record.started_at else None)} UTC{took}{error}",
            "error" if record.status == "failed" else "info",
        )
        if not record.step_runs:
            _show_png(self.timeline_image, None)
            self.why_lines.value = _line(f"a {record.kind} run has no step runs")
            return
        _show_png(self.timeline_image, _png(timeline(record)))
        lines = []
        for s in record.step_runs:
            result = StepResult(
                s.step, s.status, s.why or "", s.id, s.cache_key or "", dict(s.outputs), s.duration or 0.0, s.error
            )
            colour = STATUS_COLOURS.get(s.status, ("#424242", ""))[0]
            lines.append(f'<div style="border-left:4px solid {colour};padding-left:6px">{_esc(result.line())}</div>')
        self.why_lines.value = (
            '<div style="font-family:var(--jp-code-font-family,monospace);font-size:12px;line-height:1.6">'
            + "".join(lines)
            + "</div>"
        )

    # Lineage --------------------------------------------------------------------------------------------------
    def _build_lineage(self) -> widgets.VBox:
        self.lineage_node = widgets.Combobox(
            placeholder="an output name, artifact hash, RUN/STEP, RUN.N or models:/NAME/VERSION",
            description="node",
            ensure_option=False,
            continuous_update=False,
            layout=widgets.Layout(width="60%"),
        )
        self._observe(self.lineage_node, self.show_lineage)
        self.lineage_direction = widgets.ToggleButtons(
            options=[("upstream", "up"), ("downstream", "down"), ("both ways", "both")], value="up"
        )
        self._observe(self.lineage_direction, self.show_lineage)
        self.lineage_depth = widgets.BoundedIntText(
            value=0, min=0, max=99, description="depth", tooltip="steps away; 0: all", layout=_narrow(140)
        )
        show = widgets.Button(description="Show lineage", icon="sitemap")
        show.on_click(lambda _: self.show_lineage())
        self.buttons["lineage"] = show
        self.lineage_note = widgets.HTML()
        self.lineage_summary = widgets.HTML()
        self.lineage_image = _image()
        controls = widgets.HBox([self.lineage_node, self.lineage_depth, show])
        return self._page(controls, self.lineage_direction, self.lineage_note, self.lineage_summary, self.lineage_image)

    def _load_lineage_options(self) -> bool:
        def load() -> None:
            names: list[str] = []
            if self.project.metadata_path.exists():
                for record in self.project.metadata.list_runs(OUTPUTS_FROM, kind="pipeline", details=True):
                    for s in record.step_runs:
                        names.extend(n for n in s.outputs if n not in names)
            self.lineage_node.options = [*names, *getattr(self, "_model_uris", [])]

        return self._guarded(self.lineage_note, load)

    def show_lineage(self) -> None:
        """Draw the lineage of the node typed in the Lineage tab (on the background thread)."""
        self.submit("lineage", "walking the lineage…", lambda: self._guarded(self.lineage_note, self._show_lineage))

    def _show_lineage(self) -> None:
        from .plots import lineage_diagram

        node = self.lineage_node.value.strip()
        if not node:
            self.lineage_note.value = _line("type or pick an output name, an artifact hash or models:/NAME/VERSION")
            return
        self.lineage_note.value = _line(f"walking the lineage of {node}…")
        graph = state.lineage(self.project, node, self.lineage_direction.value, self.lineage_depth.value or None)
        _show_png(self.lineage_image, _png(lineage_diagram(graph)))
        root = graph.nodes[graph.root]

        def steps(nodes) -> str:
            found = [f"{n.attrs.get('step')} · {n.attrs.get('status')} ({n.id})" for n in nodes if n.kind == "step_run"]
            return ", ".join(found) or "none"

        up, down = graph.upstream(), graph.downstream()
        self.lineage_note.value = _line(f"lineage of {root.label}: {len(up)} nodes upstream, {len(down)} downstream")
        self.lineage_summary.value = html_table(
            ["", "step runs"],
            [["<b>upstream</b>", _esc(steps(up))], ["<b>downstream</b>", _esc(steps(down))]],
        )

    # Features -------------------------------------------------------------------------------------------------
    def _build_features(self) -> widgets.VBox:
        self.features_table = widgets.HTML()
        self.view_pick = widgets.Dropdown(description="view", layout=_narrow(320))
        self._observe(self.view_pick, self._pick_view)
        self.stats_box = widgets.HTML()
        self.features_note = widgets.HTML()
        return self._page(self.features_note, self.features_table, self.view_pick, self.stats_box)

    def _load_features(self) -> bool:
        def load() -> None:
            views = state.features(self.project)
            rows = [
                [
                    f"<b>{_esc(v['view'])}</b>",
                    _esc(f"v{v['version']}"),
                    _esc(f"{v['entity']} ({v['join_keys']})"),
                    _esc(v["features"]),
                    _esc(v["rows"]),
                    _esc(_when(v["last_ts"]) or "-"),
                    _esc(_age(v["age_s"])),
                    _esc(v["ttl"]),
                    freshness(v["age_s"], v["ttl"]),
                ]
                for v in views
            ]
            self.features_table.value = html_table(
                ["view", "version", "entity", "features", "rows", "newest event (UTC)", "age", "ttl", "freshness"],
                rows,
                height=220,
                empty="no feature views yet; register one with FeatureStore().register_view(...)",
            )
            _set_options(self.view_pick, [v["view"] for v in views])
            self.view_pick.layout.display = None if views else "none"
            self.features_note.value = ""
            self._show_stats()

        return self._guarded(self.features_note, load)

    def _pick_view(self) -> None:
        self.submit("stats", "computing statistics…", lambda: self._guarded(self.features_note, self._show_stats))

    def _show_stats(self) -> None:
        from ..store.features.stats import stats_html

        view = self.view_pick.value
        if not view:
            self.stats_box.value = ""
            return
        stats = state.feature_stats(self.project, view)
        caption = f"{view}: {len(stats)} features over its current rows"
        self.stats_box.value = _styled(stats_html(view, stats, caption))

    # Models ---------------------------------------------------------------------------------------------------
    def _build_models(self) -> widgets.VBox:
        self.model_pick = widgets.Dropdown(description="model", layout=_narrow(280))
        self._observe(self.model_pick, self._pick_model)
        self.pending_table = widgets.HTML()
        self.versions_table = widgets.HTML()
        self.action_version = widgets.Dropdown(description="version", layout=_narrow(240))
        self.action_alias = widgets.Text(value="champion", description="alias", layout=_narrow(220))
        self.action_note = widgets.Text(placeholder="note (optional)", layout=_narrow(240))
        self.action_gates = widgets.Text(
            placeholder="gates, e.g. accuracy >= 0.8, f1 >= champion - 0.01", layout=widgets.Layout(width="440px")
        )
        self.require_approval = widgets.Checkbox(value=False, description="promotion waits for approval", indent=False)
        for action, (style, tip) in ACTIONS.items():
            button = widgets.Button(description=action.capitalize(), button_style=style, tooltip=tip)
            button.on_click(lambda _, action=action: self.act(action))
            self.buttons[action] = button
        self.action_line = widgets.HTML()
        self.models_note = widgets.HTML()
        row = widgets.HBox([self.action_version, self.action_alias, self.action_note])
        promote_row = widgets.HBox([self.action_gates, self.require_approval])
        buttons = widgets.HBox([self.buttons[a] for a in ACTIONS])
        head = widgets.HTML("<b>waiting for approval</b>")
        parts = [self.models_note, head, self.pending_table, self.model_pick, self.versions_table, row, promote_row]
        return self._page(*parts, buttons, self.action_line)

    def _load_models(self) -> bool:
        def load() -> None:
            data = state.models(self.project)
            found, pending = data["models"], data["pending"]
            self._models = [m["name"] for m in found]
            rows = [
                [
                    f"<b>{_esc(p['name'])}</b>",
                    _esc(f"v{p['version']}"),
                    _esc(p["alias"] or "champion"),
                    _esc(_metrics(p["metrics"])),
                    _esc(_when(p["created"])),
                    _esc(p["tags"].get("mlops_nb.run_id", "")),
                ]
                for p in pending
            ]
            self.pending_table.value = html_table(
                ["model", "version", "waits to become", "metrics", "registered (UTC)", "run"],
                rows,
                empty="no version waits for approval",
            )
            labels = [
                (f"{m['name']} ({', '.join(f'{a}=v{v}' for a, v in sorted(m['aliases'].items())) or 'no alias'})",
                 m["name"])
                for m in found
            ]  # fmt: skip
            _set_options(self.model_pick, labels, keep=pending[0]["name"] if pending else None)
            uris: list[str] = []
            for m in found:
                uris.extend(f"models:/{m['name']}@{a}" for a in sorted(m["aliases"]))
                uris.extend(f"models:/{m['name']}/{n}" for n in range((m["latest"] or 0), 0, -1))
            self._model_uris = uris
            self.models_note.value = (
                "" if found else _line("no registered models yet; mlops_nb.register_model(model, NAME) adds one")
            )
            self._show_versions()

        return self._guarded(self.models_note, load)

    def _pick_model(self) -> None:
        self.submit("versions", "reading versions…", lambda: self._guarded(self.models_note, self._show_versions))

    def _show_versions(self) -> None:
        from .reports import model_rows

        name = self.model_pick.value
        if not name:
            self.versions_table.value = ""
            _set_options(self.action_version, [])
            return
        versions = state.versions(self.project, name)
        rows, headers = model_rows(versions)
        cells = []
        for row in rows:
            aliases = row[1]
            cells.append(
                [f"<b>{_esc(row[0])}</b>", f"<b style='color:#1565c0'>{_esc(aliases)}</b>", *(_esc(c) for c in row[2:])]
            )
        self.versions_table.value = html_table([h.lower() for h in headers], cells, height=260)
        labels = [
            (f"v{v['version']}" + (f" ({v['approval']})" if v["approval"] else ""), v["version"]) for v in versions
        ]
        pending = [v["version"] for v in versions if v["approval"] == "pending"]
        _set_options(self.action_version, labels, keep=pending[0] if pending else None)

    def act(self, action: str) -> None:
        """Do ``action`` (``approve``, ``reject``, ``promote`` or ``rollback``) for the model, version and alias
        chosen in the Models tab, on the background thread; its outcome shows as one line, then every tab
        refreshes."""
        name, version = self.model_pick.value, self.action_version.value
        alias = self.action_alias.value.strip() or "champion"
        note, gates, wait = self.action_note.value, self.action_gates.value, self.require_approval.value
        what = f"{name} {alias}" if action == "rollback" else f"{name} v{version}"
        label = f"{action.rstrip('e')}ing {what}…"
        self.submit("action", label, lambda: self._act(action, name, version, alias, note, gates, wait))

    def _act(self, action: str, name, version, alias: str, note: str, gates: str, wait: bool) -> None:
        from .. import promotion

        self.action_line.value = _line(self.progress_label.value)
        try:
            if not name:
                raise NotFoundError("no model to act on; register one with mlops_nb.register_model(model, NAME)")
            if version is None and action != "rollback":
                raise NotFoundError(f"pick a version of {name} first")
            project = self.project
            if action == "approve":
                result = promotion.approve(name, version, note=note, project=project)
            elif action == "reject":
                result = promotion.reject(name, version, note=note, trigger="manual", project=project)
            elif action == "promote":
                rules = parse_gates(gates)
                result = promotion.promote(
                    name, version, alias, rules, require_approval=wait, trigger="manual", project=project
                )
            else:
                result = promotion.rollback(name, alias, note=note, trigger="manual", project=project)
        except Exception as exc:  # noqa: BLE001 - one line in the widget, never a traceback or a stuck "approving…"
            self.action_line.value = self.status.value = _line(_message(exc), "error")
            return
        self.action_line.value = self.status.value = _line(result.line(), "ok")
        self._refresh()

    # Deployments ----------------------------------------------------------------------------------------------
    def _build_deployments(self) -> widgets.VBox:
        self.deployments_table = widgets.HTML()
        self.deployments_note = widgets.HTML()
        return self._page(self.deployments_note, self.deployments_table)

    def _load_deployments(self) -> bool:
        def load() -> None:
            rows = []
            for d in state.deployments(self.project):
                stable, canary = d.get("stable") or {}, d.get("canary") or {}
                answering = d.get("answering", True)
                rows.append(
                    [
                        f"<b>{_esc(d.get('name'))}</b>",
                        f'<a href="{_esc(d.get("url"))}" target="_blank">{_esc(d.get("url"))}</a>',
                        status_chip("succeeded", "live") if answering else status_chip("failed", "not answering"),
                        _esc(f"v{stable['version']}" if stable.get("version") is not None else "-"),
                        _esc(f"v{canary['version']} ({canary.get('share', 0):.0%})" if canary else "-"),
                        _esc(f"{stable.get('requests', '-')} / {stable.get('errors', '-')}"),
                        _esc(stable.get("p50_ms") if stable.get("p50_ms") is not None else "-"),
                        _esc(d.get("watch") or "-"),
                        _esc("yes" if d.get("pinned") else ""),
                        _esc(_when(d.get("started"))),
                    ]
                )
            self.deployments_table.value = html_table(
                ["model", "address", "health", "stable", "canary", "requests / errors", "p50 ms", "follows", "pinned",
                 "started (UTC)"],
                rows,
                empty="no live deployments; `mlops-nb deploy NAME@champion` starts one",
            )  # fmt: skip
            self.deployments_note.value = ""

        return self._guarded(self.deployments_note, load)

    # Monitoring -----------------------------------------------------------------------------------------------
    def _build_monitoring(self) -> widgets.VBox:
        self.monitoring_table = widgets.HTML()
        self.alerts_table = widgets.HTML()
        self.monitoring_note = widgets.HTML()
        return self._page(
            self.monitoring_note, self.monitoring_table, widgets.HTML("<b>latest alerts</b>"), self.alerts_table
        )

    def _load_monitoring(self) -> bool:
        def load() -> None:
            rows, alerts = [], []
            for name in getattr(self, "_models", []):
                found = state.monitoring(self.project, name)
                report = found["report"]
                if report is None:
                    rows.append([f"<b>{_esc(name)}</b>", _esc(f"never monitored; `%mlops monitor {name}`")] + [""] * 5)
                else:
                    drift = "drift" if report["dataset_drift"] else "no drift"
                    share = report["drift_share"]
                    rows.append(
                        [
                            f"<b>{_esc(name)}</b>",
                            _esc(f"v{report['version']} · {_when(report['since'])} → {_when(report['until'])}"),
                            _esc(report["rows"]),
                            status_chip("failed" if report["dataset_drift"] else "succeeded", drift)
                            + (f" {share:.0%} of {report['columns']} columns" if share is not None else ""),
                            _esc(", ".join(report["drifted"]) or "-"),
                            _esc(_metrics(report["performance"] or {}) or "-"),
                            _esc(found["report_file"] or "-"),
                        ]
                    )
                alerts.extend(found["alerts"])
            self.monitoring_table.value = html_table(
                ["model", "window", "rows", "data drift", "drifted columns", "performance", "report"],
                rows,
                empty="no registered models to monitor",
            )
            alerts.sort(key=lambda a: a.get("raised_at") or "", reverse=True)
            self.alerts_table.value = html_table(
                ["raised (UTC)", "model", "version", "rule", "value", "action", "outcome"],
                [
                    [
                        _esc(_when(a.get("raised_at"))),
                        _esc(a.get("model")),
                        _esc(f"v{a['version']}" if a.get("version") is not None else "-"),
                        _esc(a.get("rule")),
                        _esc(_number(a.get("value"))),
                        _esc(a.get("action") or "-"),
                        _esc(a.get("outcome") or "-"),
                    ]
                    for a in alerts[:20]
                ],
                empty="no alerts",
            )
            self.monitoring_note.value = ""

        return self._guarded(self.monitoring_note, load)


# Helpers --------------------------------------------------------------------------------------------------------
def _narrow(pixels: int) -> widgets.Layout:
    return widgets.Layout(width=f"{pixels}px")


def _age(seconds: float | None) -> str:
    """How long ago: ``45 s ago``, ``3.5 h ago``, ``12 days ago``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    return f"{seconds / 86400:.0f} days ago" if seconds >= 10 * 86400 else f"{ttl(max(seconds, 0.0))} ago"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def _metrics(values: dict) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in sorted(values.items()) if not isinstance(v, dict | list))


def _styled(table: str) -> str:
    """An unstyled HTML table (the feature statistics') with the dashboard's cell styles."""
    return (
        table.replace("<table>", '<table style="border-collapse:collapse;font-size:13px">')
        .replace("<th>", f'<th style="{_HEAD}">')
        .replace("<td>", f'<td style="{_CELL}">')
        .replace("<caption>", '<caption style="text-align:left;font-weight:600;padding:4px 0">')
    )


def freshness(age_s: float | None, ttl_text: str) -> str:
    """A feature view's freshness as a coloured label: ``fresh`` while its newest event is within the TTL,
    ``stale`` past it, ``no TTL`` when it has none, ``empty`` without rows."""
    from ..store.features.records import parse_ttl

    if age_s is None:
        return status_chip("skipped", "empty")
    if not ttl_text or ttl_text == "none":
        return status_chip("cached", "no TTL")
    limit = parse_ttl(ttl_text)
    if limit is not None and age_s > limit.total_seconds():
        return status_chip("failed", "stale")
    return status_chip("succeeded", "fresh")


def parse_gates(text: str) -> dict[str, str] | None:
    """``"accuracy >= 0.8, f1 >= champion - 0.01"`` as promotion gates (``{"accuracy": ">= 0.8", ...}``); empty:
    None.

    Raises:
        MlopsError: a part is not ``METRIC RULE``.
    """
    gates: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        metric, _, rule = part.partition(" ")
        if not metric.isidentifier() or not rule.strip():
            raise MlopsError(f"gate {part!r} must be METRIC RULE, such as 'accuracy >= 0.8'; separate gates with ','")
        gates[metric] = rule.strip()
    return gates or None


def dashboard(notebook: str | os.PathLike | None = None, *, project=None) -> Dashboard:
    """The ipywidgets dashboard of a project: its pipeline's DAG by last status, runs with their timelines and
    why-lines, lineage, feature views with freshness and histograms, models with Approve / Reject / Promote /
    Rollback buttons, deployments and monitoring. Display it in a notebook (it is a widget); it fills in from a
    background thread and its Refresh button updates it without re-running the cell. Calling it again for the
    same project and notebook (a re-run cell) closes the dashboard it made before.

    Args:
        notebook: the notebook whose DAG the Pipeline tab shows (default: none; the tab then lists the project's
            pipelines with a dropdown to pick one).
        project: a :class:`~mlops_nb.project.Project` or its folder (default: the notebook's project, else the
            current one).

    Raises:
        NotFoundError: ``notebook`` is not a saved ``.ipynb`` file.

    Example::

        import mlops_nb
        mlops_nb.dashboard("01_quickstart.ipynb")   # the last expression of a cell: shown as the widget
    """
    from ..project import Project, current_project

    path = None
    if notebook is not None:
        path = Path(notebook).expanduser()
        if path.suffix != ".ipynb" or not path.is_file():
            raise NotFoundError(f"{notebook} is not a notebook file; give the path of a saved .ipynb file")
    if project is None:
        project = Project.discover(path.parent) if path is not None else current_project()
    elif not isinstance(project, Project):
        project = Project(project)
    key = (str(project.home), str(path.resolve()) if path is not None else None)
    previous = _SHOWN.pop(key, None)
    if previous is not None:  # a re-run cell replaces its dashboard: the old one stops listening and refreshing
        previous.close()
    board = _SHOWN[key] = Dashboard(project, path)
    return board


_SHOWN: dict[tuple[str, str | None], Dashboard] = {}  # (project, notebook) -> the dashboard dashboard() last made


__all__ = ["Dashboard", "dashboard"]
