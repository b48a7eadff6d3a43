"""Benchmark the model registry: ``mlops_nb.register_model`` side by side with MLflow's own ``log_model``, and
``mlops_nb.promote`` with two gates.

What it measures
----------------
One scikit-learn model (a LogisticRegression on 2,000 x 10 synthetic rows) is registered ``--reps`` times (20)
by each side, the sides taking turns call by call (so a busy machine slows both alike), after one warm-up call
each (imports, the SQLite engines). Each side has its own SQLite store, both copies of one freshly migrated file,
and its artifacts in a folder of its own:

* *ours*: ``register_model(model, "ours", input_example=X[:5], metrics={...})``: the model into the
  artifact store, logged and registered by MLflow with lineage tags and pinned requirements, the event indexed
  in the metadata store.
* *MLflow*: what a user writes: ``with mlflow.start_run(): mlflow.log_metrics(...);
  mlflow.sklearn.log_model(model, name="model", input_example=X[:5], registered_model_name="theirs",
  serialization_format="cloudpickle")`` (cloudpickle, because MLflow's default skops format refuses to load many
  estimators). MLflow infers the model's requirements by loading it in a subprocess; that is most of its time.
* *MLflow, requirements given*: the same with ``pip_requirements=`` the list mlops_nb computes: MLflow's floor,
  so the ratio against it shows what mlops_nb itself adds.

Target: ours / MLflow p50 <= 1.10. Then ``promote(name, version, gates={"f1": ">= champion - 0.01", "accuracy":
">= 0.5"})`` ``--reps`` times, each moving ``champion`` to another version (two MLflow reads for the candidate, two
for the holder, one tag, the alias, and a recorded promotion run): target p50 <= 100 ms.

Usage: ``.venv/bin/python benchmarks/bench_registry.py [--reps 20] [--results FILE]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _row(label: str, values: list[float], base: list[float] | None = None) -> str:
    p50, p95 = statistics.median(values), _pct(values, 0.95)
    text = f"{label:<38} p50 {p50 * 1000:8.1f} ms  p95 {p95 * 1000:8.1f} ms  range {min(values) * 1000:.0f}-{max(values) * 1000:.0f} ms"
    if base:
        text += f"  ratio {p50 / statistics.median(base):.3f}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="registrations (and promotions) per side")
    _results.add_results_option(parser)
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    import logging

    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from mlops_nb.project import Project
    from mlops_nb.promotion import promote, register_model, requirements
    from mlops_nb.store.registry import MlflowRegistry

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 10)), columns=[f"x{i}" for i in range(10)])
    y = (X.x0 + X.x1 * 0.5 + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    example = X.head(5)
    metrics = {"accuracy": 0.9, "f1": 0.8}

    root = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    try:
        template = root / "template.db"
        MlflowRegistry(f"sqlite:///{template}").client  # noqa: B018 - migrate once
        project = Project(root / "ours").init()
        shutil.copy(template, project.mlflow_db)
        theirs_db = root / "theirs" / "mlflow.db"
        theirs_db.parent.mkdir()
        shutil.copy(template, theirs_db)
        theirs_uri = f"sqlite:///{theirs_db}"

        import mlflow
        import mlflow.sklearn

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.ERROR)
        client = mlflow.MlflowClient(theirs_uri)
        experiment = client.create_experiment("bench", artifact_location=(root / "theirs" / "art").as_uri())
        pinned = requirements(model)

        def ours():
            register_model(model, "ours", input_example=example, metrics=metrics, project=project)

        def theirs(reqs=None):
            mlflow.set_tracking_uri(theirs_uri)
            mlflow.set_registry_uri(theirs_uri)
            with mlflow.start_run(experiment_id=experiment):
                mlflow.log_metrics(metrics)
                mlflow.sklearn.log_model(
                    model,
                    name="model",
                    input_example=example,
                    registered_model_name="theirs" if reqs is None else "theirs_pinned",
                    serialization_format="cloudpickle",
                    pip_requirements=reqs,
                )
            mlflow.set_tracking_uri(None)

        sides = {"ours": ours, "mlflow": theirs, "mlflow_pinned": lambda: theirs(pinned)}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for function in sides.values():  # warm-up: imports, engines
            function()
        for rep in range(args.reps):
            for key, function in sides.items():
                t0 = time.perf_counter()
                function()
                times[key].append(time.perf_counter() - t0)
            print(f"  registration {rep + 1}/{args.reps}", file=sys.stderr, end="\r")
        print(file=sys.stderr)

        print(f"register one model, {args.reps} times each, turn by turn (SQLite store each, same template)")
        print(_row("MLflow log_model + register", times["mlflow"]))
        print(_row("MLflow, requirements given (floor)", times["mlflow_pinned"]))
        print(_row("mlops_nb.register_model", times["ours"], times["mlflow"]))
        floor = statistics.median(times["ours"]) / statistics.median(times["mlflow_pinned"])
        register_met = statistics.median(times["ours"]) / statistics.median(times["mlflow"]) <= 1.10
        verdict = "met" if register_met else "MISSED"
        print(f"  ours / MLflow p50 (target <= 1.10): {verdict}; ours / MLflow's floor: {floor:.2f}")

        versions = [v.version for v in project.registry.versions("ours")]
        gates = {"f1": ">= champion - 0.01", "accuracy": ">= 0.5"}
        promote_times = []
        for i in range(args.reps + 1):
            version = versions[i % len(versions)]
            t0 = time.perf_counter()
            result = promote("ours", version, gates=gates, project=project)
            elapsed = time.perf_counter() - t0
            assert result.outcome == "promoted", result.line()
            if i:  # the first is a warm-up
                promote_times.append(elapsed)
        print(f"\npromote with two gates (one relative to champion), {args.reps} times")
        print(_row("mlops_nb.promote", promote_times))
        promote_met = statistics.median(promote_times) <= 0.100
        verdict = "met" if promote_met else "MISSED"
        print(f"  p50 target <= 100 ms: {verdict}")
        p50 = {key: statistics.median(values) * 1000 for key, values in times.items()}
        work = f"register_model, p50 of {args.reps}"
        _results.write_results(
            args.results,
            [
                _results.Result(
                    "registry",
                    work,
                    "MLflow log_model + register",
                    p50["ours"],
                    p50["mlflow"],
                    "ms",
                    target="<= 1.10x",
                    met=register_met,
                ),
                _results.Result(
                    "registry", work, "MLflow, requirements given (its floor)", p50["ours"], p50["mlflow_pinned"], "ms"
                ),
                _results.Result(
                    "registry",
                    f"promote with two gates, p50 of {args.reps}",
                    "-",
                    statistics.median(promote_times) * 1000,
                    None,
                    "ms",
                    target="<= 100 ms",
                    met=promote_met,
                ),
            ],
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
