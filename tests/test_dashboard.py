"""The ipywidgets dashboard from the user's side, without a browser: built against a project whose quickstart ran
on a real kernel and whose model ``churn`` is in a real MLflow SQLite store, driven through its widget objects
(values set, buttons clicked) as a person in JupyterLab drives it.

The tests on the shared ``board_project`` run in file order: the read-only ones first, then the one that records
a manual run, then the one that moves aliases.
"""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta

import ipywidgets as widgets
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbtools import quickstart_with_pending_model

import mlops_nb
from mlops_nb.project import Project
from mlops_nb.ui.dashboard import TABS, Dashboard

PNG = b"\x89PNG\r\n\x1a\n"
STEPS = ["load", "clean", "features", "split", "train", "evaluate"]


@pytest.fixture(scope="module")
def board_project(tmp_path_factory, mlflow_template):
    """A project that ran the quickstart once and has a model ``churn``: v1 champion, v2 waiting for approval."""
    return quickstart_with_pending_model(tmp_path_factory.mktemp("dashboard") / "project", mlflow_template)


def text(widget_or_html) -> str:
    """What a person reads in an HTML widget (or HTML text): tags dropped, spaces collapsed."""
    value = getattr(widget_or_html, "value", widget_or_html)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


def built(board: Dashboard) -> Dashboard:
    assert board.wait(60), "the dashboard did not finish loading"
    return board


def assert_one_line(widget, *words: str) -> None:
    shown = text(widget)
    assert shown and all(w in shown for w in words), shown
    assert "Traceback" not in widget.value and widget.value.count("<div") == 1, widget.value


def pngs(board: Dashboard, image) -> bytes:
    assert image.layout.display != "none", "the image is hidden"
    png = bytes(image.value)
    assert png.startswith(PNG) and len(png) > 2000
    return png


@pytest.mark.slow
def test_every_tab_shows_the_project(board_project):
    project, run = board_project["project"], board_project["run"]
    board = mlops_nb.dashboard(board_project["notebook"], project=project)
    assert isinstance(board, widgets.VBox) and board.busy  # it returns at once; the tabs fill in behind
    assert board._progress_box.layout.visibility == "visible"
    built(board)
    assert board._progress_box.layout.visibility == "hidden" and board.refreshed_at is not None
    assert [board.tabs.get_title(i) for i in range(len(TABS))] == list(TABS)
    assert board.status.value == ""  # no tab failed

    # Pipeline: this notebook's DAG coloured by the last run, a step table with status and why-line
    assert board.pipeline_pick.layout.display == "none"  # the notebook is known: nothing to pick
    pngs(board, board.dag_image)
    steps = text(board.steps_table)
    assert all(f"{name} succeeded no earlier run" in steps for name in STEPS), steps
    assert f"last run {run.id} succeeded" in text(board.pipeline_note)

    # Runs: the pipeline run and the two promotion runs; the pipeline run is selected, with its timeline
    runs = text(board.runs_table)
    assert run.id in runs and runs.count("promotion") == 2 and "6 succeeded" in runs
    assert board.run_pick.value == run.id
    pngs(board, board.timeline_image)
    assert "✔ load ran (no earlier run)" in text(board.why_lines)

    # Lineage: suggestions of recent outputs and model versions
    assert {"raw", "model", "metrics", "models:/churn/2", "models:/churn@champion"} <= set(board.lineage_node.options)

    # Models: the approval queue, the versions with their aliases, the pending version picked for the buttons
    assert "churn v2 champion accuracy 0.9" in text(board.pending_table)
    versions = text(board.versions_table)
    assert "v2 pending → champion 0.9" in versions and "v1 champion 0.8" in versions
    assert board.model_pick.label == "churn (champion=v1)" and board.action_version.value == 2

    # Features, Deployments, Monitoring of a project that has none of them yet
    assert "no feature views yet" in text(board.features_table)
    assert "no live deployments" in text(board.deployments_table)
    assert "churn never monitored; `%mlops monitor churn`" in text(board.monitoring_table)
    assert text(board.alerts_table) == "no alerts"
    board.close()


@pytest.mark.slow
def test_without_a_notebook_the_pipeline_tab_lists_the_pipelines_to_pick(board_project, monkeypatch):
    monkeypatch.chdir(board_project["folder"])
    board = built(mlops_nb.dashboard())  # the current folder's project
    assert board.project.home == board_project["folder"].resolve()
    listed = text(board.pipelines_table)
    assert f"01_quickstart.ipynb 01_quickstart 6 succeeded {board_project['run'].id}" in listed
    assert board.pipeline_pick.options == (("01_quickstart.ipynb · 6 steps", "01_quickstart.ipynb"),)
    assert board.pipeline_pick.value == "01_quickstart.ipynb"
    pngs(board, board.dag_image)
    assert "train succeeded" in text(board.steps_table)
    board.close()


@pytest.mark.slow
def test_filters_change_the_runs_table_and_a_picked_run_shows_its_timeline(board_project):
    run = board_project["run"]
    board = built(Dashboard(board_project["project"]))
    board.kind_filter.value = "promotion"
    built(board)
    runs = text(board.runs_table)
    assert run.id not in runs and runs.count("models:/churn/") == 2
    assert board.run_pick.value != run.id and "promotion succeeded (trigger api, fired by models:/churn/" in text(
        board.run_line
    )
    assert board.timeline_image.layout.display == "none" and "has no step runs" in text(board.why_lines)

    board.kind_filter.value = ""
    board.trigger_filter.value = "cli"
    built(board)
    assert text(board.runs_table) == "no runs with trigger=cli; change the filters" and board.run_pick.value is None
    board.trigger_filter.value = ""
    board.status_filter.value = "succeeded"
    built(board)
    assert run.id in text(board.runs_table)

    board.run_pick.value = run.id  # a person picks the pipeline run
    built(board)
    pngs(board, board.timeline_image)
    lines = text(board.why_lines)
    for name in STEPS:
        assert f"✔ {name} ran (no earlier run) in" in lines, lines
    assert "→ model:" in lines and f"run {run.id}: 01_quickstart succeeded (trigger api)" in text(board.run_line)
    board.close()


@pytest.mark.slow
def test_lineage_of_an_output_shows_its_upstream_steps_and_errors_are_one_line(board_project):
    board = built(Dashboard(board_project["project"]))
    board.lineage_node.value = "model"  # as a person types it and presses Enter
    built(board)
    first = pngs(board, board.lineage_image)
    summary = text(board.lineage_summary)
    assert "upstream train · succeeded" in summary and "load · succeeded" in summary, summary
    assert "lineage of model" in text(board.lineage_note)

    board.lineage_node.value = "raw"
    board.lineage_direction.value = "down"
    built(board)
    assert pngs(board, board.lineage_image) != first
    summary = text(board.lineage_summary)
    assert "downstream clean · succeeded" in summary and "evaluate · succeeded" in summary, summary

    for node, words in [
        ("no-such-output", "no-such-output"),
        ("models:/churn/1", "registered outside a pipeline step"),
        ("models:/churn/9", "has no version 9"),
    ]:
        board.lineage_node.value = node
        board.buttons["lineage"].click()
        built(board)
        assert_one_line(board.lineage_note, words)
    board.close()


@pytest.fixture
def shell(board_project, monkeypatch):
    """A real IPython shell in the project folder whose notebook is the quickstart, with the extension loaded."""
    monkeypatch.chdir(board_project["folder"])
    monkeypatch.setenv("JPY_SESSION_NAME", str(board_project["notebook"]))
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    assert ip.run_cell("%load_ext mlops_nb").success
    yield ip
    ctx = ip.magics_manager.registry["MlopsMagics"]._ctx
    if ctx is not None:
        ctx.finish()
    InteractiveShell.clear_instance()


@pytest.mark.slow
def test_the_magic_returns_the_dashboard_and_refresh_shows_a_run_made_after_it(shell, board_project):
    board = shell.run_cell("%mlops dashboard").result
    assert isinstance(board, Dashboard) and board.notebook == board_project["notebook"].resolve()
    built(board)
    before = board.refreshed_at
    assert "load succeeded" in text(board.steps_table)

    # a step run by hand in this kernel (a cache hit of the headless run) opens a manual run
    assert shell.run_cell("import pandas as pd\nn_rows = 2000").success
    assert shell.run_cell('%%mlops step load --reads data/raw.csv\nraw = pd.read_csv("data/raw.csv").head(n_rows)')
    manual = board_project["project"].metadata.get_run("latest")
    assert manual.trigger == "manual"
    built(board)  # the step's post_step hook refreshed the dashboard: no click, no cell re-run
    assert board.refreshed_at > before
    assert manual.id in text(board.runs_table) and board.run_pick.value == manual.id
    assert "↺ load cached (cached from run" in text(board.why_lines)
    steps = text(board.steps_table)
    assert "load cached" in steps and "train succeeded" in steps, steps  # each step: its latest step run

    # a run recorded elsewhere (no hook here) shows after Refresh, without re-running the cell
    store = board_project["project"].metadata
    other = store.create_run(None, kind="build", trigger="cli")
    store.finish_run(other, "succeeded")
    built(board)
    assert other not in text(board.runs_table)
    board.buttons["refresh"].click()
    built(board)
    assert other in text(board.runs_table)

    again = shell.run_cell("%mlops dashboard").result  # the cell re-run: the old board stops listening
    assert again is not board and board._closed and not again._closed
    again.wait(60)
    again.close()

    result = shell.run_cell("%mlops dashboard now")
    assert not result.success and "usage: %mlops dashboard" in str(result.error_in_exec)
    board.close()


@pytest.mark.slow
def test_the_buttons_approve_reject_promote_and_roll_back_in_the_real_registry(board_project):
    project = board_project["project"]
    champion = lambda: project.registry.alias_holder("churn", "champion").version  # noqa: E731
    board = built(Dashboard(project))
    assert champion() == 1 and board.action_version.value == 2  # the pending version is picked

    board.buttons["approve"].click()
    built(board)
    assert champion() == 2
    assert_one_line(board.action_line, "churn v2 approved: now champion (was v1)")
    assert "v2 champion approved" in text(board.versions_table)
    assert text(board.pending_table) == "no version waits for approval"
    assert board.model_pick.label == "churn (champion=v2)"

    board.buttons["approve"].click()  # v2 is no longer pending: one line, nothing moves
    built(board)
    assert_one_line(board.action_line, "cannot approve churn v2: it is not waiting for approval")
    assert_one_line(board.status, "cannot approve churn v2")
    assert champion() == 2

    board.buttons["rollback"].click()
    built(board)
    assert champion() == 1
    assert_one_line(board.action_line, "churn champion rolled back to v1 (was v2)")

    board.action_version.value = 2
    board.require_approval.value = True
    board.action_gates.value = "accuracy >= 0.85"
    board.buttons["promote"].click()
    built(board)
    assert_one_line(board.action_line, "churn v2 passed its gates and waits for approval", "accuracy")
    assert "churn v2 champion" in text(board.pending_table) and board.action_version.value == 2

    board.buttons["reject"].click()
    built(board)
    assert champion() == 1 and project.registry.version("churn", 2).approval == "rejected"
    assert_one_line(board.action_line, "churn v2 rejected: champion stays v1")

    board.action_gates.value = "accuracy"
    board.buttons["promote"].click()
    built(board)
    assert_one_line(board.action_line, "gate 'accuracy' must be METRIC RULE")

    board.trigger_filter.value = "manual"  # the actions are runs of their own, with the trigger a person gives
    built(board)
    assert text(board.runs_table).count("promotion") == 3  # rollback, promote, reject
    board.close()


@pytest.mark.slow
def test_features_tab_shows_freshness_and_histograms_and_auto_refresh(tmp_path):
    from mlops_nb.store.features import FeatureStore

    project = Project(tmp_path).init()
    store = FeatureStore(project)
    store.register_entity("customer", {"customer_id": "int64"})
    store.register_view("activity", "customer", {"spend": "float64", "tier": "string"}, ttl="10d")
    store.register_view("recent", "customer", {"calls": "int64"}, ttl="30d")
    old = pd.Timestamp(datetime(2024, 1, 1, tzinfo=UTC))
    store.ingest(
        "activity",
        pd.DataFrame({"customer_id": [1, 2, 3], "event_ts": [old] * 3, "spend": [1.0, 5.0, 9.0],
                      "tier": ["a", "b", "a"]}),
    )  # fmt: skip
    now = pd.Timestamp(datetime.now(UTC) - timedelta(hours=1))
    store.ingest("recent", pd.DataFrame({"customer_id": [1], "event_ts": [now], "calls": [4]}))

    board = built(Dashboard(project))
    views = text(board.features_table)
    assert "activity v1 customer (customer_id) spend, tier 3 2024-01-01 00:00:00" in views, views
    assert " days ago 10 days stale" in views and "1 h ago 30 days fresh" in views, views
    assert board.view_pick.options == ("activity", "recent") and board.view_pick.value == "activity"
    stats = board.stats_box.value
    assert stats.count("<svg") == 2 and "spend" in stats and "tier" in stats and "activity" in text(stats)
    board.view_pick.value = "recent"
    built(board)
    assert "calls" in board.stats_box.value and "spend" not in board.stats_box.value

    # no runs, no registry: the tabs say so, and nothing is created
    assert text(board.runs_table) == "no runs yet; run a pipeline"
    assert "no registered models yet" in text(board.models_note) and not project.mlflow_db.exists()

    before = board.refreshed_at
    board.interval.value = 2
    board.auto.value = True
    deadline = time.monotonic() + 15
    while board.refreshed_at == before and time.monotonic() < deadline:
        time.sleep(0.1)
    board.auto.value = False
    assert board.refreshed_at > before, "auto-refresh did not refresh"
    board.close()


def test_a_path_that_is_no_notebook_is_one_line(tmp_path):
    (tmp_path / "data.csv").write_text("a\n1\n")
    with pytest.raises(mlops_nb.NotFoundError, match="data.csv is not a notebook file"):
        mlops_nb.dashboard(tmp_path / "data.csv", project=tmp_path)


def test_import_mlops_nb_does_not_load_ipywidgets():
    import subprocess
    import sys

    code = "import sys, mlops_nb; mlops_nb.dashboard; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"  # only when the dashboard is asked for
    heavy = ("ipywidgets", "matplotlib", "tornado", "jupyter_server", "nbconvert", "mlflow")
    code = f"import sys, mlops_nb, mlops_nb.ui.state; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # nor does the state the REST API reads


def test_a_store_that_cannot_be_read_is_one_line_in_its_tab_and_the_others_still_load(tmp_path):
    project = Project(tmp_path).init()
    project.features_path.write_bytes(b"not a DuckDB file " * 100)
    board = built(Dashboard(project))
    assert_one_line(board.status, "features could not be read; the tab says why")
    assert_one_line(board.features_note, "feature store catalog", "cannot be opened", "move the file aside")
    assert text(board.runs_table) == "no runs yet; run a pipeline" and board.runs_note.value == ""
    board.close()
