"""The example notebooks (notebooks/01_…06_), run as a user runs them headless: `mlops-nb run` on each in
order, in one clean project laid out as `mlops-nb demo` lays it out. (tests/test_binder.py runs them with
papermill, in a venv built from binder/requirements.txt alone.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_nb.project import Project
from mlops_nb.promotion import history
from mlops_nb.serving import status, stop
from mlops_nb.serving.router import free_port

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_story_has_six_numbered_notebooks_with_a_title_and_parameters():
    import nbformat

    assert NOTEBOOKS == [
        "01_quickstart.ipynb",
        "02_feature_store.ipynb",
        "03_registry_and_approval.ipynb",
        "04_build_deploy_serve.ipynb",
        "05_monitoring_and_retraining.ipynb",
        "06_scale_out_with_dask.ipynb",
    ]
    for number, name in enumerate(NOTEBOOKS, 1):
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {number}. ")
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} is saved with outputs"
        prose = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "notebooks/" not in prose, f"{name}: paths in its prose must be right inside the demo project"


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """A clean project holding the notebooks, helpers.py and data/, as `mlops-nb demo` makes it."""
    folder = tmp_path_factory.mktemp("story")
    shutil.copytree(ROOT / "notebooks", folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".ipynb_*"))
    (folder / "pyproject.toml").write_text("[project]\nname = 'story'\n")
    project = Project(folder).init()
    yield project
    for deployment in status(project=project):
        stop(deployment["name"], project=project)


def mlops_nb(project, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    command = [str(Path(sys.executable).parent / "mlops-nb"), *args]
    done = subprocess.run(command, cwd=project.home, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


@pytest.mark.slow
def test_every_notebook_runs_headless_in_order_from_a_clean_project(story):
    project = story
    ports = {"04_build_deploy_serve.ipynb": free_port(), "05_monitoring_and_retraining.ipynb": free_port()}
    for name in NOTEBOOKS:
        args = ["run", name] + (["-p", "port", str(ports[name])] if name in ports else [])
        out = mlops_nb(project, *args)
        assert " succeeded in " in out.splitlines()[-1], out
        assert status(project=project) == [], f"{name} left a deployment running"

    runs = list(reversed(project.metadata.list_runs(200)))
    headless = [r for r in runs if r.trigger == "cli"]
    assert [r.pipeline for r in headless] == [Path(n).stem for n in NOTEBOOKS]
    assert all(r.status == "succeeded" for r in runs), [(r.id, r.kind, r.status) for r in runs]

    # 01: a second headless run is all cache hits: its report cells (runs, lineage, dag) disturb no cache key
    again = mlops_nb(project, "run", NOTEBOOKS[0])
    assert "(6 cached)" in again.splitlines()[-1]

    # 02: the training pipeline registered churn v1 through its gates (no approval asked): the champion
    trained = project.metadata.get_run(headless[1].id)
    released = project.artifacts.get(trained.step("register").outputs["released"])
    assert released["outcome"] == "promoted" and released["version"] == 1

    # 03 judged its versions against that champion: a weak one refused, a candidate waited and was approved
    actions = [e["action"] for e in history("churn", project=project)]
    assert {"refuse", "pending", "approve"} <= set(actions), actions

    # 04 and 05: each build and deployment a run; 05 closed the loop: drift → retraining → approval → watch
    kinds = [(r.kind, r.trigger) for r in runs]
    assert ("pipeline", "drift") in kinds and ("promotion", "approval") in kinds and ("deploy", "watch") in kinds
    retrain = next(r for r in runs if r.trigger == "drift")
    assert retrain.pipeline == "02_feature_store" and retrain.fired_by.startswith("alert-")
    watched = next(r for r in runs if r.kind == "deploy" and r.trigger == "watch")
    assert watched.params["version"] == project.registry.alias_version("churn", "champion")

    # 06: the quickstart's steps on a Dask cluster, then all cache hits there too
    on_dask = [project.metadata.get_run(r.id) for r in runs if r.executor == "dask"]
    assert [[s.status for s in r.step_runs] for r in on_dask] == [["succeeded"] * 6, ["cached"] * 6]
