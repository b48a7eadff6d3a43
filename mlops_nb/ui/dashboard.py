"""The ipywidgets dashboard (``%mlops dashboard``, ``mlops_nb.dashboard()``): a project's whole lifecycle in one
notebook output, in tabs: Pipeline, Runs, Lineage, Features, Models, Deployments and Monitoring.

It reads what it shows through :mod:`mlops_nb.ui.state` (short reads, DESIGN invariant 3) and acts through the
Python API (``mlops_nb.approve``, ``reject``, ``promote``, ``rollback``), as the REST API does. Every call that
touches a store runs on one background thread per dashboard, one call at a time, so the kernel never waits for
a lineage walk, the first MLflow import or an approval; a progress bar shows while it works. Errors show as one
line in the widget, never as a traceback.

Example::

    import mlops_nb

    board = mlops_nb.dashboard("quickstart.ipynb")   # displays as the widget in a notebook
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
from datetime import UTC, datetime
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
ACTIONS = ("approve", "reject", "promote", "rollback")
"""The Models tab's buttons, each calling the function of that name in the Python API."""
RUNS_SHOWN = 50  # rows of the runs table
OUTPUTS_FROM = 5  # recent pipeline runs whose outputs the Lineage tab suggests

_CELL = "padding:3px 8px;border-bottom:1px solid #e0e0e0;text-align:left;vertical-align:top"
_HEAD = _CELL + ";background:#f5f5f5;font-weight:600;position:sticky;top:0"


# HTML pieces ----------------------------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def status_chip(status: str | None) -> str:
    """A status as a small coloured label (the colours of the plots)."""
    colour, light = STATUS_COLOURS.get(status or "", ("#9e9e9e", "#f5f5f5"))
    return (
        f'<span style="background:{light};border:1px solid {colour};border-radius:9px;padding:0 7px;'
        f'white-space:nowrap">{_esc(status or "never")}</span>'
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


def _set_options(widget, options: list, keep: Any = None) -> None:
    """Give a selection widget new options, keeping its value when it still is one (else ``keep``, else the
    first)."""
    current = widget.value
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    widget.options = options
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
        status: the one-line outcome of the last action or refresh (HTML).
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
        self.buttons: dict[str, widgets.Button] = {}
        self._build()
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
        title = widgets.HTML(f'<b style="font-size:15px">mlops</b> <span style="color:#616161">{_esc(self.root)}</span>')
        self.status = widgets.HTML("")
        toolbar = widgets.HBox(
            [title, refresh, self.auto, self.interval, self._progress_box],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap", gap="8px"),
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
        return widgets.VBox(list(children), layout=widgets.Layout(padding="6px", gap="6px"))

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
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        super().close()

    # refresh --------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the project's state again and update every tab, on the background thread (returns at once)."""
        self.submit("refresh", "loading…", self._refresh)

    def _refresh(self) -> None:
        loaders = [
            ("pipelines", self._load_pipeline),
            ("runs", self._load_runs),
            ("lineage", self._load_lineage_options),
            ("features", self._load_features),
            ("models", self._load_models),
            ("deployments", self._load_deployments),
            ("monitoring", self._load_monitoring),
        ]
        failed = []
        for done, (what, load) in enumerate(loaders):
            self._step(done, len(loaders), f"loading {what}…")
            if not load():
                failed.append(what)
        self._step(len(loaders), len(loaders), "")
        stamp = datetime.now().strftime("%H:%M:%S")
        note = f"; {', '.join(failed)} could not be read (see their tabs)" if failed else ""
        if not self.status.value or "refreshed at" in self.status.value or "could not be read" in self.status.value:
            self.status.value = _line(f"refreshed at {stamp}{note}", "error" if failed else "info")

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
        return self._page(self.pipeline_pick, self.pipelines_table, self.pipeline_note, self.dag_image, self.steps_table)

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
                _set_options(self.pipeline_pick, [(p["path"], p["path"]) for p in found])
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
        from ..pipeline.notebook import Pipeline
        from .plots import dag_diagram

        place = self._notebook_place()
        if place is None:
            _show_png(self.dag_image, None)
            self.steps_table.value = ""
            self.pipeline_note.value = ""
            return
        root, path = place
        data = state.dag(self.project, root, path)
        pipeline = Pipeline.from_notebook(root / path, strict=False)
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
