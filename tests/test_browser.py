"""The JupyterLab sidebar in a real browser: a real `jupyter lab` on 127.0.0.1 and Debian's Chromium driven by
Playwright. The quickstart is run from the sidebar (progress, every step listed, badges on the step cells), then a
registry version waiting for approval is approved there and the alias moves in the sidebar and in MLflow.

Chromium comes from apt (`make test` installs it when it can), never from `playwright install`; without it the test
is skipped with the reason, except under CI=true, where it fails. Screenshots go to the test's folder and to
/tmp/mlops-shots/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest
from nbtools import http_get, jupyter_app

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",  # without these it floods the closed network
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path("/tmp/mlops-shots")

# the shapes the API answers: a supervisor's status (serving/router.py Supervisor.status) and state.monitoring
DEPLOYMENT = {
    "name": "churn", "pid": 4242, "host": "127.0.0.1", "port": 5151, "url": "http://127.0.0.1:5151",
    "control_port": 5152, "watch": "champion", "pinned": None,
    "stable": {"version": 4, "bundle": "ab12cd34", "path": "/tmp/b", "port": 5153, "pid": 4243, "requests": 10,
               "errors": 0, "inflight": 0, "p50_ms": 1.6, "log": True},
    "canary": None, "history": [], "last": None, "started": "2026-01-05T09:00:00+00:00",
}  # fmt: skip
DRIFT = {
    "model": "churn",
    "report": {"model": "churn", "version": 4, "since": "2026-01-04T10:00:00+00:00",
               "until": "2026-01-05T10:00:00+00:00", "dataset_drift": True, "drift_share": 0.5,
               "drifted": ["tenure_months", "monthly_spend"], "columns": 4, "prediction_drift": True,
               "performance": {"accuracy": 0.74}, "rows": 1000, "alerts": 1, "run_id": "20260105-100000-00000000"},
    "alerts": [],
    "links": {"report": "/mlops/api/monitoring/churn/report"},
}  # fmt: skip
BUSY = "the metadata store is busy (a run holds it); try again in a moment"

pytestmark = pytest.mark.slow


def _browser_or_skip() -> Path:
    """Chromium's path; skip (fail under CI=true) with the reason when there is no browser to drive."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (it is in the dev extras: `make setup`)"
    found = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or "/nonexistent")
    if reason is None and not found.exists():
        reason = "no Chromium at /usr/bin/chromium (`make test` installs it with `apt-get install -y chromium`)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run under CI=true: {reason}")
        pytest.skip(reason)
    return found


def _project_with_pending_approval(folder: Path, mlflow_template: Path):
    """A project holding the repo's notebooks, after the registry notebook ran headless (churn v3 champion),
    with one more version (v4) passing its gates and waiting for approval to become champion."""
    import mlops_nb
    from mlops_nb.project import Project

    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text("[project]\nname = 'sidebar'\n")
    shutil.copytree(ROOT / "notebooks", folder / "notebooks")
    project = Project(folder).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    run = mlops_nb.run(folder / "notebooks" / "03_registry_and_approval.ipynb", project=project, progress=False)
    assert run.status == "succeeded", run.error
    champion = project.registry.alias_holder("churn", "champion", metrics=True)
    model = mlops_nb.load_model("churn", "@champion", project=project)
    candidate = mlops_nb.register_model(model, "churn", metrics=champion.metrics, project=project)
    pending = mlops_nb.promote("churn", candidate.version, require_approval=True, project=project)
    assert pending.outcome == "pending"
    return project, champion.version, candidate.version


class Shots:
    """Screenshots saved in the test's folder and copied to /tmp/mlops-shots/."""

    def __init__(self, page, folder: Path):
        self.page, self.folder = page, folder
        folder.mkdir(parents=True, exist_ok=True)
        SHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, selector: str | None = None) -> Path:
        path = self.folder / f"{name}.png"
        if selector:
            self.page.locator(selector).screenshot(path=path)
        else:
            self.page.screenshot(path=path)
        shutil.copy(path, SHOTS / path.name)
        return path


def test_sidebar_runs_the_pipeline_and_approves_a_model(tmp_path, mlflow_template):
    chromium = _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from mlops_nb import Pipeline
    from mlops_nb.promotion import models

    project, champion, candidate = _project_with_pending_approval(tmp_path / "project", mlflow_template)
    steps = [s.name for s in Pipeline.from_notebook(tmp_path / "project" / "notebooks" / "01_quickstart.ipynb").steps]

    with jupyter_app(project.home, tmp_path / "jupyter") as base, sync_playwright() as pw:
        status, body = http_get(f"{base}/lab/api/extensions")
        assert status == 200 and b'"mlops-nb"' in body, "the mlops-nb lab extension is not installed in this venv"
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        shot = Shots(page, tmp_path / "screenshots")
        sidebar = page.locator("#mlops-sidebar")
        try:
            page.goto(f"{base}/lab/tree/notebooks/01_quickstart.ipynb", timeout=60_000)
            page.locator('.jp-SideBar [data-id="mlops-sidebar"]').click(timeout=60_000)  # the MLOps icon
            expect(sidebar).to_be_visible()
            expect(sidebar.locator(".mlops-dag-step")).to_have_count(len(steps), timeout=60_000)
            badges = page.locator(".jp-Notebook .mlops-badge")
            expect(badges).to_have_count(len(steps), timeout=30_000)
            assert {b.get_attribute("data-status") for b in badges.all()} == {"never"}
            shot("1-before-run")

            # run the pipeline from the sidebar: progress, then every step listed and the badges set
            sidebar.locator(".mlops-run-button").click()
            progress = sidebar.locator(".mlops-progress")
            expect(progress).to_be_visible(timeout=10_000)
            expect(progress).to_contain_text("steps", timeout=30_000)
            shot("2-running", "#mlops-sidebar")
            expect(progress).to_have_attribute("data-status", "succeeded", timeout=120_000)
            run_id = progress.get_attribute("data-run-id")
            row = sidebar.locator(f'.mlops-run-row[data-run-id="{run_id}"]')
            expect(row).to_have_attribute("data-status", "succeeded", timeout=15_000)
            expect(row.locator(".mlops-step-run")).to_have_count(len(steps), timeout=15_000)
            assert [s.get_attribute("data-step") for s in row.locator(".mlops-step-run").all()] == steps
            for step in steps:
                badge = page.locator(f'.jp-Notebook .mlops-badge[data-step="{step}"]')
                expect(badge).to_have_attribute("data-status", "succeeded", timeout=15_000)
            for step in sidebar.locator(".mlops-dag-step").all():
                assert step.get_attribute("data-status") == "succeeded"
            link = row.locator(".mlops-notebook-link")
            expect(link).to_have_attribute("target", "_blank")
            executed = page.request.get(link.get_attribute("href"))
            assert executed.ok and "text/html" in executed.headers["content-type"]
            shot("3-after-run")
            shot("3-after-run-sidebar", "#mlops-sidebar")

            # a second run is all cache hits: the badges say so, with the why line as their tooltip
            sidebar.locator(".mlops-run-button").click()
            expect(progress).not_to_have_attribute("data-run-id", run_id, timeout=15_000)
            expect(progress).to_have_attribute("data-status", "succeeded", timeout=120_000)
            for step in steps:
                badge = page.locator(f'.jp-Notebook .mlops-badge[data-step="{step}"]')
                expect(badge).to_have_attribute("data-status", "cached", timeout=15_000)
                assert badge.get_attribute("title").startswith(f"{step}: cached")
            shot("3b-cached")

            # the approval queue: approve churn's candidate; champion moves to it
            approve = sidebar.locator(f'.mlops-approve[data-model="churn"][data-version="{candidate}"]')
            approve.scroll_into_view_if_needed(timeout=30_000)
            alias = sidebar.locator('.mlops-model[data-model="churn"] .mlops-alias[data-alias="champion"]')
            expect(alias).to_have_attribute("data-version", str(champion))
            sidebar.locator(".mlops-note").fill("read the report; looks good")
            shot("4-pending", "#mlops-sidebar")
            approve.click()
            expect(alias).to_have_attribute("data-version", str(candidate), timeout=30_000)
            expect(approve).to_have_count(0)
            expect(sidebar.locator(".mlops-notice")).to_contain_text(f"v{champion} → v{candidate}")
            alias.scroll_into_view_if_needed()
            shot("5-approved", "#mlops-sidebar")

            # what this project cannot cheaply produce (a live deployment, a drift report) and an API error, routed
            # by the browser: how the sidebar shows them
            # (ServerConnection adds a cache-busting query to every GET)
            api = f"^{re.escape(base)}/mlops/api/"
            page.route(re.compile(api + r"deployments\?"), lambda r: r.fulfill(json={"deployments": [DEPLOYMENT]}))
            page.route(re.compile(api + r"monitoring/churn\?"), lambda r: r.fulfill(json=DRIFT))
            page.route(re.compile(api + r"runs\?"), lambda r: r.fulfill(status=503, json={"error": BUSY}))
            sidebar.locator(".mlops-refresh").click()
            expect(sidebar.locator("#mlops-runs .mlops-error")).to_have_text(BUSY)
            expect(sidebar.locator("#mlops-runs .mlops-run-row").first).to_be_visible()  # the last list stays
            deployment = sidebar.locator('.mlops-deployment[data-deployment="churn"]')
            expect(deployment).to_have_attribute("data-healthy", "true", timeout=20_000)
            expect(deployment).to_contain_text("churn@champion (v4)")
            drift = sidebar.locator('.mlops-drift[data-model="churn"]')
            expect(drift).to_have_attribute("data-verdict", "drift")
            expect(drift).to_contain_text("50% of columns drifted")
            report = drift.locator(".mlops-report-link")
            expect(report).to_have_attribute("href", re.compile(r"/mlops/api/monitoring/churn/report$"))
            expect(report).to_have_attribute("target", "_blank")
            drift.scroll_into_view_if_needed()
            shot("6-deployments-drift-error", "#mlops-sidebar")
        finally:
            with contextlib.suppress(Exception):
                shot("last")
            browser.close()
        assert not errors, errors

    version = next(v for v in models("churn", project=project) if v["version"] == candidate)
    assert "champion" in version["aliases"] and version["approval"] == "approved"
    assert version["tags"]["approval.note"] == "read the report; looks good"
