"""``mlops-nb demo``: the most complete end-to-end path mlops_nb has, in a fresh project folder.

It copies the quickstart notebook (raw data → processed data → features → split → model → evaluation) into
the folder and runs it headless three times: cold (every step runs), again (every step is a cache hit, no
kernel starts), and with one parameter changed (only the steps that use it, and what depends on them, run).
Then it shows the DAG, the runs, and the model's lineage back to the raw data file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

QUICKSTART_FILES = ("quickstart.ipynb", "features.ipynb", "helpers.py", "data/raw.csv")


def notebooks_folder() -> Path:
    """Where the example notebooks are: inside the installed package, or the repository's ``notebooks/``."""
    package = Path(__file__).resolve().parents[1]  # mlops_nb/
    for candidate in (package / "_notebooks", package.parent / "notebooks"):
        if (candidate / "quickstart.ipynb").is_file():
            return candidate
    from ..exceptions import MlopsError

    raise MlopsError("the example notebooks are missing from this installation; reinstall mlops-nb")


def write_raw_data(path: Path, n_rows: int = 2000, seed: int = 7) -> None:
    """The quickstart's seeded synthetic customer table (churn label from a known logistic model)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(n_rows),
            "tenure_months": rng.integers(1, 72, n_rows),
            "monthly_spend": rng.gamma(2.0, 30.0, n_rows).round(2),
            "support_calls": rng.poisson(1.5, n_rows),
        }
    )
    logit = -1.5 + 0.6 * frame.support_calls - 0.04 * frame.tenure_months + 0.01 * frame.monthly_spend
    frame["churned"] = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def run_demo(folder: str | os.PathLike = "demo-project", echo: Callable[[str], None] = print) -> str:
    """Set up ``folder`` as a project with the quickstart notebook, run the lifecycle, print what happened.

    Returns:
        the id of the last run.
    """
    from ..engine.driver import run
    from ..pipeline.notebook import Pipeline
    from ..project import Project
    from .format import indented, table

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "pyproject.toml").exists():
        (folder / "pyproject.toml").write_text('[project]\nname = "mlops-nb-demo"\nversion = "0.1.0"\n')
    source = notebooks_folder()
    for name in QUICKSTART_FILES:
        target = folder / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, target)
    project = Project(folder).init()
    notebook = folder / "quickstart.ipynb"
    echo(f"Project {project.home} (stores in {project.mlops_dir})\n")

    pipeline = Pipeline.from_notebook(notebook)
    echo("1. The notebook is the pipeline:  mlops-nb dag quickstart.ipynb")
    echo(pipeline.to_text() + "\n")

    def step(title: str, params: dict | None = None):
        echo(title)
        record = run(notebook, params, project=project, trigger="cli", progress=False)
        echo(f"   run {record.id} {record.status} in {record.duration:.2f}s")
        rows = [[s.step, s.status, f"{s.duration or 0:.2f}s", s.why] for s in record.step_runs]
        echo(indented(table(rows, ["STEP", "STATUS", "TIME", "WHY"])) + "\n")
        return record

    step("2. Headless run (papermill starts a kernel; every step is recorded):  mlops-nb run quickstart.ipynb")
    step("3. The same run again: every step is a cache hit, so no kernel starts")
    last = step(
        "4. One parameter changed (-p C 0.3): only the steps that use it, and what depends on them, run", {"C": 0.3}
    )

    artifacts = project.artifacts
    metrics = artifacts.get(last.step("evaluate").outputs["metrics"])
    echo("5. Metrics of the model: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    train = last.step("train")
    model = train.outputs["model"]
    graph = project.metadata.lineage(model.hash, direction="up", producer=train.cached_from or train.id)
    echo(f"\n6. Lineage of the model {model.short} ({model.summary}), back to the raw file:")
    rows = [[n.depth, n.kind.replace("_", " "), n.label] for n in graph.upstream()]
    echo(indented(table(rows, ["DEPTH", "KIND", "WHAT"])))

    features_nb = folder / "features.ipynb"
    echo("\n7. Processed data through the feature store into training, each step in a warm kernel of its own:")
    echo("   mlops-nb run features.ipynb --executor dag")
    record = run(features_nb, project=project, trigger="cli", progress=False, executor="dag")
    echo(f"   run {record.id} {record.status} in {record.duration:.2f}s")
    rows = [[s.step, s.status, f"{s.duration or 0:.2f}s", s.why] for s in record.step_runs]
    echo(indented(table(rows, ["STEP", "STATUS", "TIME", "WHY"])))
    from .plots import timeline

    views = project.features.list_views()
    echo(f"   feature views: {', '.join(views['view'])} ({int(views['rows'].sum())} rows)")
    train = record.step("train")
    kinds = sorted(
        {
            n.attrs.get("artifact_kind")
            for n in project.metadata.lineage(
                train.outputs["model"].hash, "up", producer=train.cached_from or train.id
            ).upstream()
            if n.kind == "artifact"
        }
    )
    echo(f"   the model's lineage reaches: {', '.join(k for k in kinds if k)}")
    png = folder / "timeline.png"
    timeline(record).savefig(png, dpi=110, bbox_inches="tight")
    echo(f"   timeline of the run: {png}")
    echo(f"\nExplore:  cd {folder} && mlops-nb runs && mlops-nb show latest && mlops-nb lineage latest/train")
    echo("Open quickstart.ipynb in JupyterLab and run it cell by cell: the steps load from the same cache.")
    return last.id
