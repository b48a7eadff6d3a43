"""The registry from the user's side: the registry notebook run headless (both executors), six processes
registering into a fresh store at once, and the same flow against a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from nbtools import free_port

import mlops_nb
from mlops_nb.project import Project

ROOT = Path(__file__).resolve().parents[1]


def _registry_project(folder: Path, template: Path | None) -> tuple[Project, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text("[project]\nname = 'reg'\n")
    for name in ("03_registry_and_approval.ipynb", "helpers.py"):
        shutil.copy(ROOT / "notebooks" / name, folder / name)
    shutil.copytree(ROOT / "notebooks" / "data", folder / "data")
    project = Project(folder).init()
    if template is not None:
        shutil.copy(template, project.mlflow_db)
    return project, folder / "03_registry_and_approval.ipynb"


def _outputs(notebook) -> str:
    text = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", "") if isinstance(output.get("text", ""), str) else "")
            text.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["notebook", "dag"])
def test_registry_notebook_trains_registers_gates_and_approves(tmp_path, mlflow_template, executor):
    project, notebook = _registry_project(tmp_path / "p", mlflow_template)
    run = mlops_nb.run(notebook, project=project, executor=executor, progress=False)
    assert run.status == "succeeded", run.error

    registry = project.registry
    versions = {v.version: v for v in registry.versions("churn")}
    assert sorted(versions) == [1, 2, 3]
    assert registry.alias_holder("churn", "champion").version == 3
    assert versions[3].approval == "approved" and versions[3].tags["approval.by"] == "reviewer"
    events = mlops_nb.model_history("churn", project=project)
    assert [(e["action"], e["version"]) for e in events] == [
        ("register", 1),
        ("promote", 1),
        ("register", 2),
        ("refuse", 2),
        ("register", 3),
        ("pending", 3),
        ("approve", 3),
    ]
    refusal = next(e for e in events if e["action"] == "refuse")
    assert refusal["step"] == "challenger" and refusal["run_id"] == run.id
    assert any(c["metric"] == "roc_auc" and not c["passed"] for c in refusal["checks"])

    # lineage tags tie each version to its step run, notebook and data
    tags = versions[1].tags
    assert tags["mlops_nb.run_id"] == run.id and tags["mlops_nb.step"] == "register"
    assert (
        tags["mlops_nb.notebook"].endswith("03_registry_and_approval.ipynb")
        and len(tags["mlops_nb.notebook_hash"]) == 64
    )
    inputs = json.loads(tags["mlops_nb.inputs"])
    assert inputs["model"] == run.step("train").outputs["model"].hash
    assert tags["mlops_nb.model_hash"] == run.step("train").outputs["model"].hash  # the very model the step made
    data = json.loads(tags["mlops_nb.data"])  # what it was trained on, back to the raw file
    assert data["X_train"] == run.step("prepare").outputs["X_train"].hash
    assert data["data/raw.csv"] == run.step("prepare").inputs["data/raw.csv"].hash

    # the MLflow run of a version shows the training run: parameters, metrics, notebook
    from mlflow import MlflowClient

    client = MlflowClient(project.tracking_uri)
    mlflow_run = client.get_run(versions[1].run_id)
    assert mlflow_run.data.params["C"] == "1.0" and mlflow_run.data.params["n_rows"] == "2000"
    assert set(mlflow_run.data.metrics) == {"accuracy", "roc_auc"}
    assert mlflow_run.data.tags["mlops_nb.run_id"] == run.id
    assert [a.path for a in client.list_artifacts(versions[1].run_id, "notebook")] == [
        "notebook/03_registry_and_approval.ipynb"
    ]

    # exact lineage: a version walks back to the raw file, the raw file forward to every version
    up = project.metadata.lineage("models:/churn/3", direction="up")
    assert any(n.kind == "artifact" and n.label.startswith("data/raw.csv") for n in up.upstream())
    raw = next(n for n in up.upstream() if n.label.startswith("data/raw.csv"))
    down = project.metadata.lineage(raw.id, direction="down")
    reached = {n.label.split(" ")[0] for n in down.nodes.values() if n.kind == "artifact"}
    assert {"models:/churn/1", "models:/churn/2", "models:/churn/3"} <= reached

    # in-step events are indexed with their step runs
    indexed = project.metadata.model_events("churn")
    assert len(indexed) == 7 and all(e["step_run_id"] for e in indexed)
    assert not project.metadata.list_runs(kind="promotion")  # inside steps: events, not runs of their own

    if executor == "notebook":
        from click.testing import CliRunner

        from mlops_nb.ui.cli import cli

        lineage = CliRunner().invoke(
            cli, ["--home", str(project.home), "lineage", "models:/churn@champion", "--direction", "up"], obj={}
        )
        assert lineage.exit_code == 0 and "models:/churn/3" in lineage.output and "data/raw.csv" in lineage.output
        executed = _outputs(project.artifacts.get(run.executed_notebook))
        assert "churn v2 refused for champion: roc_auc" in executed and "0.01 =" in executed
        assert "approved" in executed and "champion" in executed  # the %mlops models report cell

    again = mlops_nb.run(notebook, project=project, executor=executor, progress=False)
    assert again.status == "succeeded" and {s.status for s in again.step_runs} == {"cached"}
    assert len(registry.versions("churn")) == 3  # a cached step registers nothing new


_REGISTER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    import mlops_nb
    from mlops_nb.project import Project
    from mlops_nb.core import progress
    start = float(sys.argv[2])
    X = np.random.default_rng(int(sys.argv[3])).normal(size=(50, 2))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    project = Project(sys.argv[1])
    import mlflow  # importing takes seconds: all six reach the fresh store together
    while time.time() < start:
        time.sleep(0.01)
    version = mlops_nb.register_model(model, "race", metrics={"f1": 0.5}, project=project)
    print(version.version)
    """
)


@pytest.mark.slow
def test_six_processes_register_into_a_fresh_store_at_once(tmp_path):
    project = Project(tmp_path).init()
    assert not project.mlflow_db.exists()
    start = time.time() + 12
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _REGISTER, str(tmp_path), str(start), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[:3000]
    assert sorted(int(out.strip().splitlines()[-1]) for out, _ in results) == [1, 2, 3, 4, 5, 6]
    assert len(project.registry.versions("race")) == 6


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store in a temporary folder."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = tmp_path / "server"
    server.mkdir()
    proc = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{server / 'mlflow.db'}",
            "--artifacts-destination",
            str(server / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=server,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"mlflow server did not start: {proc.stderr.read()[-2000:]}")
        time.sleep(0.3)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_remote_registry_by_uri(tmp_path, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLOPS_NB_TRACKING_URI", mlflow_server)
    home = tmp_path / "p"
    project = Project(home).init()
    assert project.tracking_uri == mlflow_server
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(80, 2)), columns=["a", "b"])
    y = (X.a > 0).astype(int)
    for C, f1 in ((1.0, 0.8), (0.5, 0.85)):
        model = LogisticRegression(C=C).fit(X, y)
        mlops_nb.register_model(model, "remote", input_example=X.head(2), metrics={"f1": f1}, project=project)
    assert mlops_nb.promote("remote", 1, gates={"f1": ">= 0.5"}, project=project).outcome == "promoted"
    pending = mlops_nb.promote("remote", 2, gates={"f1": ">= champion - 0.01"}, require_approval=True, project=project)
    assert pending.outcome == "pending"
    mlops_nb.approve("remote", 2, by="ann", project=project)
    assert mlops_nb.rollback("remote", project=project).version == 1
    history = [e["action"] for e in mlops_nb.model_history("remote", project=project)]
    assert history == ["register", "register", "promote", "pending", "approve", "rollback"]
    assert not project.mlflow_db.exists()  # nothing embedded was created

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    try:
        served = mlflow.pyfunc.load_model("models:/remote@champion")
    finally:
        mlflow.set_tracking_uri(None)
    ours = mlops_nb.load_model("remote", "@champion", project=project)
    assert (served.predict(X) == ours.predict(X)).all()
    assert project.registry.exists("remote", 2) and not project.registry.exists("remote", 9)


@pytest.mark.slow
def test_registry_notebook_by_hand_then_headless_is_all_cached(tmp_path, mlflow_template):
    """Cell by cell in a kernel that knows its notebook (as JupyterLab tells it), then `mlops-nb run`: the
    registrations made by hand are the cache hits of the headless run, which registers nothing new."""
    from nbtools import run_by_hand

    project, notebook = _registry_project(tmp_path / "p", mlflow_template)
    cells = run_by_hand(notebook, {"MLOPS_NB_HOME": str(project.home)})
    assert not [c for c in cells if c["errors"]], [c["errors"] for c in cells if c["errors"]]
    printed = "\n".join(c["stream"] for c in cells)
    assert "churn v2 refused for champion: roc_auc" in printed
    report = cells[-1]
    shown = "\n".join(report["result"])
    assert "v3" in shown and "approved" in shown and "champion" in shown
    assert project.registry.alias_holder("churn", "champion").version == 3

    headless = mlops_nb.run(notebook, project=project, progress=False)
    assert {s.status for s in headless.step_runs} == {"cached"}
    assert len(project.registry.versions("churn")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["notebook", "dag"])
def test_a_step_that_fails_after_registering_keeps_the_version_and_its_event(tmp_path, mlflow_template, executor):
    """Nothing lost: the version a step registered before raising is in its step run's lineage and the index."""
    from nbtools import write_notebook

    project = Project(tmp_path).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    notebook = write_notebook(
        tmp_path / "fails.ipynb",
        [
            "%load_ext mlops_nb\nimport numpy as np\nimport mlops_nb\nfrom sklearn.linear_model import LogisticRegression",
            "%%mlops step data\nX = np.arange(40.0).reshape(20, 2)\ny = (X[:, 0] > 19).astype(int)",
            "%%mlops step train\nmodel = LogisticRegression().fit(X, y)\n"
            "version = mlops_nb.register_model(model, 'fails', metrics={'f1': 0.1})\n"
            "mlops_nb.promote('fails', version.version, gates={'f1': '>= 0.5'})",
        ],
    )
    with pytest.raises(mlops_nb.StepFailedError, match="fails v1 refused for champion: f1 0.1 < 0.5") as failure:
        mlops_nb.run(notebook, project=project, executor=executor, progress=False)
    run = project.metadata.get_run(failure.value.run_id)
    assert run.status == "failed"
    train = run.step("train")
    assert train.status == "failed" and "models:/fails/1" in train.outputs
    events = project.metadata.model_events("fails")
    assert [e["action"] for e in events] == ["register", "refuse"]
    assert {e["step_run_id"] for e in events} == {train.id}
    up = project.metadata.lineage("models:/fails/1", direction="up")
    assert any(n.kind == "step_run" and n.id == train.id for n in up.nodes.values())
