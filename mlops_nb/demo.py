"""``mlops-nb demo``: the most complete end-to-end path mlops_nb has, in a fresh project folder.

It writes a small seeded raw data file, then records a pipeline run through the Python API: load raw data,
build features, train a model, evaluate it. Every output is a content-addressed artifact, every step run and
its inputs/outputs are in the metadata store, and the model's lineage leads back to the raw file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def _write_raw_data(path: Path, n_rows: int = 2000, seed: int = 7) -> None:
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
    """Create (or reuse) a project in ``folder``, record one pipeline run, print what was recorded.

    Returns:
        the run id.
    """
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from tqdm.auto import tqdm

    from .cli import table
    from .project import Project

    project = Project(Path(folder)).init()
    echo(f"Project: {project.home}")
    raw_path = project.home / "data" / "raw.csv"
    if not raw_path.exists():
        _write_raw_data(raw_path)

    artifacts, store = project.artifacts, project.metadata
    params = {"test_size": 0.25, "C": 1.0, "seed": 7}
    run_id = store.create_run("demo", params=params, executor="api", trigger="cli", notebook=None)

    def step(name: str, inputs: dict, body: Callable[[], dict]) -> dict:
        step_run = store.start_step(run_id, name, inputs={k: v for k, v in inputs.items()}, why="demo step")
        try:
            values = body()
        except Exception as exc:
            store.finish_step(step_run, "failed", error=f"{type(exc).__name__}: {exc}")
            store.finish_run(run_id, "failed", error=f"step {name} failed: {exc}")
            raise
        refs = {k: artifacts.put(v, name=k) for k, v in values.items()}
        store.finish_step(step_run, "succeeded", outputs=refs)
        return refs

    bar = tqdm(total=4, desc="demo pipeline", unit="step")
    raw_file = artifacts.put_path(raw_path)
    refs = step("load", {"raw.csv": raw_file}, lambda: {"raw": pd.read_csv(raw_path)})
    bar.update()

    def features():
        raw = artifacts.get(refs["raw"])
        X = raw[["tenure_months", "monthly_spend", "support_calls"]].astype(float)
        return {"X": X, "y": raw["churned"]}

    refs.update(step("features", {"raw": refs["raw"]}, features))
    bar.update()

    def train():
        X, y = artifacts.get(refs["X"]), artifacts.get(refs["y"])
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=params["test_size"], random_state=params["seed"], stratify=y
        )
        model = LogisticRegression(C=params["C"], max_iter=500).fit(X_train, y_train)
        return {"model": model, "X_test": X_test, "y_test": y_test}

    refs.update(step("train", {"X": refs["X"], "y": refs["y"]}, train))
    bar.update()

    def evaluate():
        model, X_test, y_test = (artifacts.get(refs[k]) for k in ("model", "X_test", "y_test"))
        scores = model.predict_proba(X_test)[:, 1]
        metrics = {
            "accuracy": float(accuracy_score(y_test, scores > 0.5)),
            "roc_auc": float(roc_auc_score(y_test, scores)),
        }
        store.log_metrics(run_id, metrics)
        return {"metrics": metrics}

    refs.update(step("evaluate", {k: refs[k] for k in ("model", "X_test", "y_test")}, evaluate))
    bar.update()
    bar.close()
    store.finish_run(run_id, "succeeded")

    run = store.get_run(run_id)
    echo(f"\nRun {run.id} {run.status}: " + ", ".join(f"{k}={v:.3f}" for k, v in run.metrics.items()))
    rows = [
        [s.step, s.status, ", ".join(f"{k}={r.short} ({r.summary})" for k, r in s.outputs.items())]
        for s in run.step_runs
    ]
    echo(table(rows, ["STEP", "STATUS", "OUTPUTS"]))
    graph = store.lineage(run.step("train").outputs["model"].hash, direction="up")
    echo("\nLineage of the model (upstream):")
    echo(table([[n.depth, n.kind, n.label] for n in graph.upstream()], ["DEPTH", "KIND", "WHAT"]))
    echo(f"\nExplore: mlops-nb --home {project.home} runs | show {run.id} | lineage {run.id}/train")
    return run_id
