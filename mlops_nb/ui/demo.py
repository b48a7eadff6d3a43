"""``mlops-nb demo``: the most complete end-to-end path mlops_nb has, in a fresh project folder each time.

It copies the quickstart notebook (raw data → processed data → features → split → model → evaluation) into
the folder and runs it headless three times: cold (every step runs), again (every step is a cache hit, no
kernel starts), and with one parameter changed (only the steps that use it, and what depends on them, run).
Then it shows the DAG, the runs, and the model's lineage back to the raw data file; runs the feature store
notebook with the dag executor; and runs the registry notebook: the model is registered in MLflow, promoted
through gates, a worse one refused, a better one approved, then the champion rolled back and forth; the serving
notebook builds, deploys and rolls out the champion under traffic; and the served model is monitored against its
training set (drift, performance on the labelled predictions, latency) into an HTML report.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

QUICKSTART_FILES = (
    "quickstart.ipynb",
    "features.ipynb",
    "registry.ipynb",
    "serving.ipynb",
    "helpers.py",
    "data/raw.csv",
)


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


DEFAULT_FOLDER = "demo-project"


def fresh_folder(folder: str | os.PathLike | None, echo: Callable[[str], None] = print) -> Path:
    """The folder a demo runs in, new and empty: ``folder`` (``--dir``) must not hold anything yet; by default
    ``demo-project``, where an earlier demo is first moved aside to ``demo-project.<UTC time>`` (kept, not deleted).

    Raises:
        MlopsError: ``folder`` is a file, or a folder that is not empty.
    """
    from ..core.clock import utcnow
    from ..exceptions import MlopsError

    chosen = Path(folder if folder is not None else DEFAULT_FOLDER).expanduser()
    if chosen.exists() and (not chosen.is_dir() or any(chosen.iterdir())):
        if folder is not None:
            raise MlopsError(
                f"{chosen} already exists and is not empty; give --dir a new folder (the demo starts from nothing)"
            )
        stamp, n = f"{chosen.name}.{utcnow():%Y%m%d-%H%M%S}", 1
        aside = chosen.with_name(stamp)
        while aside.exists():  # two demos in one second
            n += 1
            aside = chosen.with_name(f"{stamp}-{n}")
        chosen.rename(aside)
        echo(f"An earlier demo was in {chosen}/: moved aside to {aside}/ (delete it when you are done with it)")
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen.resolve()


def _what_ran(record) -> str:
    """One true line about a run: which steps a kernel ran, or that every step was a cache hit."""
    ran = [s.step for s in record.step_runs if s.status != "cached"]
    head = f"   run {record.id} {record.status} in {record.duration:.2f}s: "
    if not record.step_runs:
        return head + "a notebook without steps, executed as papermill would and recorded with its output"
    if not ran:
        return head + "every step was a cache hit, so no kernel started"
    if len(ran) == len(record.step_runs):
        return head + f"all {len(ran)} steps ran ({record.executor} executor), each recorded with why it ran"
    cached = len(record.step_runs) - len(ran)
    return head + f"only {', '.join(ran)} ran; the other {cached} steps were cache hits, loaded instead of run"


def explore_commands(folder: Path, here: Path | None = None) -> list[str]:
    """The closing lines: the exact commands to look around ``folder``, with the path of this installation's
    ``mlops-nb`` when it is not the one on PATH (a venv that is not active), relative to where the user stands."""
    here = (here or Path.cwd()).resolve()
    bin_dir = Path(sys.executable).parent
    script = bin_dir / "mlops-nb"
    on_path = shutil.which("mlops-nb")
    if on_path and Path(on_path).resolve() == script.resolve():
        lines, command, lab = ["Explore:"], "mlops-nb", "jupyter"
    else:
        activate = bin_dir / "activate"
        how = f"; or first `source {_nearby(activate, here)}`, then plain mlops-nb" if activate.is_file() else ""
        lines = [f"Explore (mlops-nb is not on your PATH: it is {_nearby(script, here)}{how}):"]
        command = str(_nearby(script, folder))  # the commands run inside the demo folder
        lab = str(_nearby(bin_dir / "jupyter", folder)) if (bin_dir / "jupyter").is_file() else "jupyter"
    lines.append(f"  cd {_nearby(folder, here)}")
    for what in (
        "runs",
        "show latest",
        "lineage model --direction up",
        "run quickstart.ipynb -p C 0.5",
        "models show churn",
        "models history churn",
        "runs --kind deploy",
        "deploy churn@champion --port 8080   # then: deploy --status, deploy churn --stop",
        "monitor churn --window 1d           # drift, performance, latency; an HTML report",
        "schedule add --monitor churn@champion --cron '0 * * * *'   # then: schedule daemon",
    ):
        lines.append(f"  {command} {what}")
    lines.append(
        f"  {lab} lab quickstart.ipynb   # cell by cell from the same cache; the MLOps sidebar: runs, DAG, approvals"
    )
    mlflow = _nearby(bin_dir / "mlflow", folder) if (bin_dir / "mlflow").is_file() else "mlflow"
    lines.append(f"  {mlflow} ui --backend-store-uri sqlite:///.mlops/mlflow.db   # MLflow's UI: versions, runs")
    return lines


def _registry(project, folder: Path, echo: Callable[[str], None]) -> None:
    """Stage 8: the registry notebook (register, gates, refusal, approval), then MLflow's client loads the
    champion and the alias is rolled back and promoted again from the command line's API."""
    from ..engine.driver import run
    from ..promotion import history, load_model, promote, rollback
    from .format import indented, table
    from .reports import model_rows

    echo("\n8. The model registry (MLflow, .mlops/mlflow.db): register, promote through gates, approve")
    echo("   mlops-nb run registry.ipynb")
    record = run(folder / "registry.ipynb", project=project, trigger="cli", progress=False)
    echo(_what_ran(record))
    rows, headers = model_rows([v.to_dict() for v in project.registry.versions("churn", metrics=True)])
    echo(indented(table(rows, headers)))
    for event in history("churn", project=project):
        if event["action"] in ("refuse", "pending", "approve"):
            reasons = "; ".join(c["reason"] for c in event.get("checks") or []) or event.get("note", "")
            echo(f"   {event['action']:<8} v{event['version']}: {reasons}")
    served = project.registry.load_pyfunc("models:/churn@champion")  # mlflow.pyfunc.load_model, as MLflow users do
    sample = project.artifacts.get(record.step("prepare").outputs["X_test"]).head(200)
    same = bool((served.predict(sample) == load_model("churn", "@champion", project=project).predict(sample)).all())
    echo(f"   mlflow.pyfunc.load_model('models:/churn@champion') predicts as our artifact store's model: {same}")
    back = rollback("churn", trigger="cli", project=project)
    echo(f"   mlops-nb models rollback churn  →  {back.line()}")
    again = promote("churn", back.previous, trigger="cli", project=project)
    echo(f"   mlops-nb models promote churn {back.previous}  →  {again.line()}")


def _serving(project, folder: Path, echo: Callable[[str], None]) -> None:
    """Stage 9: the serving notebook (build, deploy v1, the champion rolled out over it as a canary under traffic,
    labels, a prediction's lineage, rollback, stop), then what the stores hold of it."""
    from ..engine.driver import run
    from ..serving import request_lineage, status, stop
    from ..serving.router import free_port
    from .format import indented, table

    echo("\n9. App build and deployment: the bundle, a canary rollout under traffic, the prediction log, rollback")
    port = free_port()
    echo(f"   mlops-nb run serving.ipynb -p port {port}")
    try:
        record = run(folder / "serving.ipynb", {"port": port}, project=project, trigger="cli", progress=False)
    finally:
        for deployment in status(project=project):  # a notebook that failed half-way leaves no server behind
            stop(deployment["name"], project=project)
    echo(_what_ran(record))
    runs = project.metadata.list_runs(20, kind="build") + project.metadata.list_runs(20, kind="deploy")
    rows = [[r.kind, r.params.get("version"), r.params.get("outcome", r.status), r.trigger, r.id] for r in runs]
    echo(indented(table(sorted(rows, key=lambda r: r[-1]), ["KIND", "VERSION", "OUTCOME", "TRIGGER", "RUN"])))
    log = project.predictions.read(model="churn")
    served = log[log["variant"].isin(["stable", "canary"])]
    by = served.groupby(["version", "variant", "status"]).size().reset_index(name="rows")
    echo("   prediction log (.mlops/predictions/):")
    echo(indented(table(by.values.tolist(), ["VERSION", "VARIANT", "STATUS", "ROWS"])))
    labelled = served[served["label"].notna()]
    if len(labelled):
        accuracy = float((labelled["prediction"] == labelled["label"]).mean())
        echo(f"   {len(labelled)} predictions have labels; accuracy of what was served: {accuracy:.3f}")
        request = str(labelled["request_id"].iloc[0])
        graph = request_lineage(request, project=project)
        path = [n.label for n in sorted(graph.nodes.values(), key=lambda n: -n.depth) if n.kind != "step_run"]
        echo(f"   mlops-nb lineage request:{request}")
        echo("     " + "  ←  ".join(path[:5]))


def _monitoring(project, echo: Callable[[str], None]) -> None:
    """Stage 10: the served model monitored against its training set (drift per column, prediction drift,
    performance on the labelled predictions, latency), a report, and the rule that would retrain it."""
    from ..monitoring import monitor
    from .format import indented, short, table

    echo("\n10. Monitoring: the served traffic against the training set, an HTML report, alert rules")
    echo("   mlops-nb monitor churn --window 1d --rule 'drift_share > 0.3 => run registry.ipynb'")
    rule = {"rule": "drift_share > 0.3", "action": "run registry.ipynb"}
    report = monitor("churn", window="1d", rules=[rule, "p99_latency_ms > 1000"], trigger="cli", project=project)
    echo("   " + report.line())
    rows = [[c.column, c.type, c.test, short(c.score), "drift" if c.drifted else "ok"] for c in report.drift.columns]
    echo(indented(table(rows, ["COLUMN", "TYPE", "TEST", "SCORE", "VERDICT"])))
    echo(
        f"   no alert: no rule holds (drift share {report.drift.share:.2f}, p99 "
        f"{report.service.get('p99_latency_ms', 0):.1f} ms); drift would start registry.ipynb with trigger drift"
    )
    echo(f"   report: {report.html}")


def _nearby(path: Path, start: Path) -> Path:
    """``path`` relative to ``start`` when that is short (inside it, or one folder up), else absolute."""
    path = path if path.is_absolute() else path.resolve()
    try:
        relative = Path(os.path.relpath(path, start))
    except ValueError:  # another drive
        return path
    return relative if relative.parts[:2].count("..") <= 1 else path


def run_demo(folder: str | os.PathLike | None = None, echo: Callable[[str], None] = print) -> str:
    """Run the lifecycle in a fresh project folder with the quickstart notebooks and print what happened.

    Args:
        folder: a new (or empty) folder; default ``demo-project``, an earlier one moved aside first.
        echo: where the narration goes.

    Returns:
        the id of the last quickstart run.
    """
    from ..engine.driver import run
    from ..pipeline.notebook import Pipeline
    from ..project import Project
    from .format import indented, table

    folder = fresh_folder(folder, echo)
    (folder / "pyproject.toml").write_text('[project]\nname = "mlops-nb-demo"\nversion = "0.1.0"\n')
    source = notebooks_folder()
    for name in QUICKSTART_FILES:
        target = folder / name
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
        echo(_what_ran(record))
        rows = [[s.step, s.status, f"{s.duration or 0:.2f}s", s.why] for s in record.step_runs]
        echo(indented(table(rows, ["STEP", "STATUS", "TIME", "WHY"])) + "\n")
        return record

    step("2. Headless run, every step recorded:  mlops-nb run quickstart.ipynb")
    step("3. The same run again; a step whose code, inputs, data and parameters are unchanged is a cache hit")
    last = step("4. One parameter changed:  mlops-nb run quickstart.ipynb -p C 0.3", {"C": 0.3})

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
    echo(_what_ran(record))
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
    _registry(project, folder, echo)
    _serving(project, folder, echo)
    _monitoring(project, echo)
    echo("")
    for line in explore_commands(folder):
        echo(line)
    return last.id
