"""The mlops-nb command line, driven as a user would: CliRunner in-process and the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_nb.project import Project
from mlops_nb.ui.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def invoke(home, *args):
    result = CliRunner().invoke(cli, ["--home", str(home), *args], obj={})
    return result


def test_every_command_has_help_and_is_documented():
    readme = (ROOT / "README.md").read_text()
    assert cli.commands, "no commands"
    for name, command in cli.commands.items():
        result = CliRunner().invoke(cli, [name, "--help"], obj={})
        assert result.exit_code == 0, name
        assert command.help and len(command.help) > 20, f"{name} needs a docstring"
        assert f"mlops-nb {name}" in readme, f"README does not document `mlops-nb {name}`"


def test_init_is_idempotent(tmp_path):
    result = invoke(tmp_path, "init")
    assert result.exit_code == 0 and f"Initialised project at {tmp_path}" in result.output
    result = invoke(tmp_path, "init")
    assert result.exit_code == 0 and "Project already initialised" in result.output


def _record_pipeline(home):
    """A small run recorded through the Python API: load -> train -> evaluate."""
    project = Project(home).init()
    store, artifacts = project.metadata, project.artifacts
    run_id = store.create_run("demo", params={"C": 1.0, "seed": 7}, trigger="cli")
    raw = {"raw": artifacts.put({"rows": [1, 2, 3]}, name="raw")}
    previous = raw
    for step, outputs in (
        ("load", raw),
        ("train", {"model": artifacts.put([0.5, 0.25], name="model")}),
        ("evaluate", {"metrics": artifacts.put({"accuracy": 0.9}, name="metrics")}),
    ):
        sr = store.start_step(run_id, step, inputs=previous if step != "load" else None, why="no earlier run")
        store.finish_step(sr, "succeeded", outputs=outputs)
        previous = outputs
    store.log_metrics(run_id, {"accuracy": 0.9})
    store.finish_run(run_id, "succeeded")
    return run_id


def test_runs_show_lineage(tmp_path):
    result = invoke(tmp_path, "runs")
    assert result.exit_code == 0 and "No runs yet" in result.output
    run_id = _record_pipeline(tmp_path)

    result = invoke(tmp_path, "runs")
    assert result.exit_code == 0
    header, row = result.output.splitlines()[:2]
    assert header.split() == ["RUN", "KIND", "PIPELINE", "STATUS", "STARTED", "(UTC)", "DURATION", "TRIGGER", "STEPS"]
    assert row.startswith(run_id) and "demo" in row and "succeeded" in row and "3 succeeded" in row
    assert row.split()[1] == "pipeline"

    records = json.loads(invoke(tmp_path, "runs", "--json").output)
    assert records[0]["id"] == run_id and records[0]["params"]["C"] == 1.0
    assert records[0]["kind"] == "pipeline" and records[0]["fired_by"] is None
    assert json.loads(invoke(tmp_path, "runs", "--kind", "build", "--json").output) == []
    assert [r["id"] for r in json.loads(invoke(tmp_path, "runs", "--kind", "pipeline", "--json").output)] == [run_id]

    result = invoke(tmp_path, "show", run_id[:18])
    assert result.exit_code == 0
    assert f"Run {run_id}  pipeline demo  succeeded" in result.output
    assert "params:    C=1.0, seed=7" in result.output
    assert "metrics:   accuracy=0.9" in result.output
    assert f"{run_id}.2  train     succeeded" in result.output and "model=" in result.output

    shown = json.loads(invoke(tmp_path, "show", "--json").output)
    assert shown["id"] == run_id and [s["step"] for s in shown["step_runs"]] == ["load", "train", "evaluate"]
    model_hash = shown["step_runs"][1]["outputs"]["model"]["hash"]

    result = invoke(tmp_path, "lineage", model_hash[:8], "--direction", "up")
    assert result.exit_code == 0
    assert "train [succeeded]" in result.output and "raw (json)" in result.output

    by_name = invoke(tmp_path, "lineage", "model", "--direction", "up", "--json")  # an output name: its latest artifact
    assert by_name.exit_code == 0 and json.loads(by_name.output)["root"] == f"artifact:{model_hash}"
    graph = json.loads(invoke(tmp_path, "lineage", f"{run_id}/train", "--json").output)
    labels = {n["label"] for n in graph["nodes"]}
    assert {"load [succeeded]", "evaluate [succeeded]", "model (json)"} <= labels

    mermaid = invoke(tmp_path, "lineage", f"{run_id}/train", "--format", "mermaid").output
    assert mermaid.startswith("flowchart TD")


@pytest.mark.slow
def test_demo_runs_the_lifecycle_in_a_fresh_folder_and_says_how_to_explore(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.defpath)  # the venv is not active: mlops-nb is not on PATH
    earlier = tmp_path / "demo-project"
    (earlier / ".mlops").mkdir(parents=True)  # a demo ran here before
    (earlier / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["demo"], obj={})
    assert result.exit_code == 0, result.output
    out = result.output
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("demo-project.")]
    assert len(aside) == 1 and (aside[0] / "notes.txt").read_text() == "mine"  # moved aside, not deleted
    assert out.startswith(f"An earlier demo was in demo-project/: moved aside to {aside[0].name}/")
    folder = tmp_path / "demo-project"
    assert "quickstart (01_quickstart.ipynb): 6 steps" in out
    runs = Project(folder).metadata.list_runs(kind="pipeline")
    assert [r.status for r in runs] == ["succeeded"] * 6
    assert [r.step_counts for r in runs] == [
        {},  # 04_build_deploy_serve.ipynb: no steps
        {"succeeded": 6},
        {"succeeded": 7},
        {"cached": 4, "succeeded": 2},
        {"cached": 6},
        {"succeeded": 6},
    ]
    narration = [line for line in out.splitlines() if line.startswith("   run ")]
    assert narration[0].endswith("all 6 steps ran (notebook executor), each recorded with why it ran")
    assert narration[1].endswith("every step was a cache hit, so no kernel started")  # true: nothing ran
    assert narration[2].endswith("only train, evaluate ran; the other 4 steps were cache hits, loaded instead of run")
    assert "train     succeeded  " in out and "param C changed" in out
    assert "5. Metrics of the model: accuracy=" in out
    assert "data/raw.csv (external)" in out
    assert "feature views: customer_activity" in out and "feature_view" in out
    assert (folder / "timeline.png").stat().st_size > 5000

    # the closing lines are commands that work as printed, from where the user stands
    # the registry stage: gates refuse the weak model, the candidate is approved, MLflow loads the champion
    assert "refuse   v2: roc_auc" in out and "approve  v3: gates passed; report read" in out
    assert "predicts as our artifact store's model: True" in out
    assert "churn champion rolled back to v1 (was v3)" in out and "churn v3 is now champion (was v1)" in out
    promotions = Project(folder).metadata.list_runs(kind="promotion")
    assert [(r.params["action"], r.trigger) for r in promotions] == [("promote", "cli"), ("rollback", "cli")]

    # the serving stage: two bundles, v1 deployed, the champion rolled out over it as a canary under traffic, rolled
    # back; every request logged, labelled, and its lineage reaches the model version
    assert "9. App build and deployment" in out and "a notebook without steps, executed as papermill would" in out
    project = Project(folder)
    deploys = project.metadata.list_runs(kind="deploy")
    assert [(r.params["version"], r.params["outcome"]) for r in reversed(deploys)] == [
        (1, "deployed"), (3, "deployed"), (1, "deployed")]  # fmt: skip
    assert len(project.metadata.list_runs(kind="build")) == 2
    log = project.predictions.read(model="churn")
    served = log[log["variant"].isin(["stable", "canary"])]
    assert set(served["version"]) == {1, 3} and {"stable", "canary"} <= set(served["variant"])
    assert set(served[served["variant"] == "canary"]["version"]) == {3}
    assert served[served["status"] == 200]["label"].notna().all()
    assert "predictions have labels; accuracy of what was served: 0." in out
    assert "mlops-nb lineage request:" in out and "models:/churn/1 (model_version)" in out
    from mlops_nb.serving import status

    assert status(project=project) == []  # nothing left running

    # the monitoring stage: the served traffic against the training set, no drift, a report, a monitor run
    assert "10. Monitoring: the served traffic against the training set" in out
    assert "no dataset drift" in out and "no alert: no rule holds" in out
    [listed] = project.metadata.list_runs(kind="monitor")
    monitoring = project.metadata.get_run(listed.id)  # with its metrics
    assert monitoring.params["verdict"] == "ok" and Path(monitoring.params["report"]).is_file()
    assert "accuracy" in monitoring.metrics and monitoring.metrics["labelled_rows"] > 0

    closing = out.splitlines()[-14:]
    assert closing[0].startswith("Explore (mlops-nb is not on your PATH: it is ") and "source " in closing[0]
    assert closing[1] == "  cd demo-project"
    commands = [line.strip() for line in closing[2:12]]
    assert commands[0].endswith("mlops-nb runs") and commands[1].endswith("mlops-nb show latest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    listed = subprocess.run(commands[0], shell=True, cwd=folder, capture_output=True, text=True, env=env)
    assert listed.returncode == 0, closing
    every = len(project.metadata.list_runs(100))
    assert len(listed.stdout.splitlines()) == 1 + min(every, 20) and listed.stdout.startswith("RUN ")
    shown = subprocess.run(commands[4], shell=True, cwd=folder, capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "champion" in shown.stdout and "approved" in shown.stdout, closing
    again = CliRunner().invoke(cli, ["demo", "--dir", "demo-project"], obj={})  # an explicit --dir is never moved
    assert again.exit_code == 1 and again.output.startswith("Error: demo-project already exists and is not empty")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "20991231-nope"], "Error: run '20991231-nope' does not exist; list runs with `mlops-nb runs`"),
        (["lineage", "deadbeef00"], "Error: no recorded artifact has hash 'deadbeef00'"),
        (["show"], "Error: no runs recorded in"),
    ],
)
def test_errors_are_one_line(tmp_path, args, message):
    Project(tmp_path).init()
    result = invoke(tmp_path, *args)
    assert result.exit_code == 1
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_console_script_error_and_debug(tmp_path):
    """The installed script: one line on stderr without --debug, the traceback with it."""
    (tmp_path / "pyproject.toml").write_text("[tool.mlops_nb]\nlock_timeout = 'x'\n")
    exe = Path(sys.executable).with_name("mlops-nb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    plain = subprocess.run([exe, "--home", tmp_path, "runs"], capture_output=True, text=True, env=env)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.startswith("Error: ") and plain.stderr.count("\n") == 1
    assert "lock_timeout: invalid value 'x'" in plain.stderr
    debug = subprocess.run([exe, "--home", tmp_path, "--debug", "runs"], capture_output=True, text=True, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_import_and_help_stay_light():
    """DESIGN invariant 8: `import mlops_nb` and `mlops-nb --help` import none of the heavy libraries."""
    code = (
        "import sys, mlops_nb, mlops_nb.ui.cli; heavy = {'pandas', 'duckdb', 'mlflow', 'sklearn', 'pyarrow', 'scipy',"
        " 'dask', 'jupyter_server', 'numpy'}; print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
