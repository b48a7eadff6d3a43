"""The example notebooks (notebooks/01_…06_): six, numbered, titled, parameterised and saved without outputs.

They run, in order, in tests/test_binder.py: with papermill (as a Binder user runs them cell by cell) in a venv built
from binder/requirements.txt alone, and what they recorded is checked there; `mlops-nb run` of a notebook headless
is tested in test_cli.py (the demo runs 01 and 02 that way) and test_notebook_runs.py."""

from __future__ import annotations

from pathlib import Path

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
