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
def test_demo_runs_the_whole_lifecycle_in_a_fresh_folder_and_says_how_to_explore(tmp_path, monkeypatch):
    """`make demo`: every stage a recorded run with its trigger, from raw data to the watched redeploy."""
    from mlops_nb.serving import status, stop
    from mlops_nb.serving.router import free_port

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.defpath)  # the venv is not active: mlops-nb is not on PATH
    earlier = tmp_path / "demo-project"
    (earlier / ".mlops").mkdir(parents=True)  # a demo ran here before
    (earlier / "notes.txt").write_text("mine")
    port = free_port()
    result = CliRunner().invoke(cli, ["demo", "--port", str(port)], obj={})
    folder = tmp_path / "demo-project"
    project = Project(folder)
    try:
        assert result.exit_code == 0, result.output
        out = result.output
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("demo-project.")]
        assert len(aside) == 1 and (aside[0] / "notes.txt").read_text() == "mine"  # moved aside, not deleted
        assert out.startswith(f"An earlier demo was in demo-project/: moved aside to {aside[0].name}/")

        # 1. the quickstart: cold, all cached (no kernel), one parameter changed; lineage back to the raw file
        assert "01_quickstart (01_quickstart.ipynb): 6 steps" in out and "report cells: 11, 13, 15, 16" in out
        narration = [line for line in out.splitlines() if line.startswith("   run ")]
        assert narration[0].endswith("all 6 steps ran (notebook executor), each recorded with why it ran")
        assert narration[1].endswith("every step was a cache hit, so no kernel started")
        assert narration[2].endswith(
            "only train, evaluate ran; the other 4 steps were cache hits, loaded instead of run"
        )
        assert "param C changed" in out and "data/raw.csv (external)" in out

        # every stage a recorded run, with its trigger, in this order
        runs = list(reversed(project.metadata.list_runs(100)))
        stages = [(r.kind, r.pipeline, r.trigger, r.status) for r in runs]
        pipelines = [("pipeline", "01_quickstart", "cli", "succeeded")] * 3
        assert stages == pipelines + [
            ("pipeline", "02_feature_store", "cli", "succeeded"),  # raw → processed → features → PIT → model → registry
            ("promotion", None, "approval", "succeeded"),  # v1 passed its gates, waited, approved
            ("build", None, "cli", "succeeded"),
            ("deploy", None, "cli", "succeeded"),
            ("monitor", None, "cli", "succeeded"),  # the usual traffic: no drift, no alert
            ("monitor", None, "cli", "succeeded"),  # the new population: drift, the alert
            ("pipeline", "02_feature_store", "drift", "succeeded"),  # the alert's retraining
            ("promotion", None, "approval", "succeeded"),  # v2 approved
            ("build", None, "watch", "succeeded"),  # the watching deployment builds v2 ...
            ("deploy", None, "watch", "succeeded"),  # ... and rolls it out
        ]
        trained = project.metadata.get_run(runs[3].id)
        assert trained.executor == "dag" and [s.status for s in trained.step_runs] == ["succeeded"] * 8
        usual, drifted = (project.metadata.get_run(r.id) for r in runs[7:9])
        assert usual.params["verdict"] == "ok" and usual.metrics["labelled_rows"] == 400
        assert project.metadata.alerts(monitor_run=usual.id) == []
        [alert] = project.metadata.alerts(monitor_run=drifted.id)
        retrain = runs[9]
        assert alert["action_run"] == retrain.id and retrain.fired_by.startswith(alert["id"])
        why = {s.step: s.why for s in project.metadata.get_run(retrain.id).step_runs}
        assert why["load"] == "data/arrivals changed" and why["register"].startswith("input ")
        deploys = [r for r in runs if r.kind == "deploy"]
        assert [(r.params["version"], r.params["outcome"]) for r in deploys] == [(1, "deployed"), (2, "deployed")]
        assert deploys[1].fired_by == "churn@champion -> v2"

        # the registry: both versions passed their gates, waited for a person and were approved
        versions = {v.version: v for v in project.registry.versions("churn")}
        assert set(versions) == {1, 2} and all(v.approval == "approved" for v in versions.values())
        assert project.registry.alias_version("churn", "champion") == 2
        assert "churn v1 approved: now champion" in out and "churn v2 approved: now champion (was v1)" in out

        # the endpoint still serves, now v2, at the same address; every prediction logged, labelled
        [live] = status("churn", project=project)
        assert live["stable"]["version"] == 2 and live["port"] == port and live["watch"] == "champion"
        assert f"20 requests now answered by v2 at the same address http://127.0.0.1:{port}" in out
        log = project.predictions.read(model="churn")
        assert set(log["version"]) == {1, 2} and log[log["version"] == 1]["label"].notna().sum() == 800
        assert (folder / "dag.png").stat().st_size > 5000 and (folder / "timeline.png").stat().st_size > 5000

        # the summary: every run, where things are and how to open them, the peak memory
        assert f"Summary: {len(runs)} recorded runs, the whole lifecycle in " in out
        where = out[out.index("Where things are") :]
        report = drifted.params["report"]
        assert Path(report).is_file() and f"-m webbrowser {report}" in where
        assert (
            "jupyter lab .mlops/artifacts/" in where
            and "mlflow ui --backend-store-uri sqlite:///.mlops/mlflow.db" in where
        )
        curl = next(line for line in where.splitlines() if "curl -s" in line)
        answered = subprocess.run(curl[curl.index("curl -s") :], shell=True, capture_output=True, text=True, timeout=30)
        assert answered.returncode == 0 and json.loads(answered.stdout)["predictions"] in ([0], [1]), answered
        assert "peak memory of all the demo's processes: RSS " in out and "PSS " in out

        # the closing lines are commands that work as printed, from where the user stands
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("Explore"))
        closing = lines[start : start + 13]
        assert closing[12].endswith("runs, DAG, approvals") and "lab 01_quickstart.ipynb" in closing[12], closing
        assert closing[0].startswith("Explore (mlops-nb is not on your PATH: it is ") and "source " in closing[0]
        assert closing[1] == "  cd demo-project"
        commands = [line.strip() for line in closing[2:12]]
        assert commands[0].endswith("mlops-nb runs") and commands[1].endswith("mlops-nb show latest")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
        listed = subprocess.run(commands[0], shell=True, cwd=folder, capture_output=True, text=True, env=env)
        assert listed.returncode == 0, closing
        assert len(listed.stdout.splitlines()) == 1 + min(len(runs), 20) and listed.stdout.startswith("RUN ")
        shown = subprocess.run(commands[4], shell=True, cwd=folder, capture_output=True, text=True, env=env)
        assert shown.returncode == 0 and "champion" in shown.stdout and "approved" in shown.stdout, closing
    finally:
        for deployment in status(project=project):
            stop(deployment["name"], project=project)
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


def test_the_command_line_leaves_out_the_slow_iri_checker_and_still_validates_notebooks():
    """`mlops-nb` skips jsonschema's optional rfc3987_syntax import (seconds of lark grammars); nbformat still
    validates through jsonschema in that process, and a process that imported jsonschema first is left alone."""
    code = (
        "import sys; from mlops_nb.ui.cli.main import skip_slow_optional_imports; skip_slow_optional_imports();"
        " import nbformat, papermill, jsonschema; nb = nbformat.v4.new_notebook();"
        " nb.cells.append(nbformat.v4.new_code_cell('1')); nbformat.validate(nb);"
        " bad = nbformat.from_dict({'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [{'x': 1}]});"
        " print(sys.modules['rfc3987_syntax'], nbformat.validator.isvalid(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "False"]
    first = "import jsonschema, sys; from mlops_nb.ui.cli.main import skip_slow_optional_imports as s; s();"
    first += " print(sys.modules.get('rfc3987_syntax') is not None)"
    out = subprocess.run([sys.executable, "-c", first], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_a_run_with_nothing_changed_imports_only_what_it_needs(tmp_path):
    """The all-cached `mlops-nb run` starts no kernel and so imports neither papermill nor nbformat, nor psutil,
    the feature store, the monitoring rules or the kernel machinery: its time is the floor a re-run costs."""
    from nbtools import write_notebook

    nb = write_notebook(
        tmp_path / "nb.ipynb", ["%load_ext mlops_nb", "%%mlops step a\nx = 1", "%%mlops step b\ny = x + 1"]
    )
    assert invoke(tmp_path, "run", str(nb)).exit_code == 0
    code = (
        "import sys; from mlops_nb.ui.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "mods = set(sys.modules)\n"
        "bad = ['papermill', 'nbformat', 'nbclient', 'jupyter_client', 'psutil', 'pandas', 'numpy', 'pyarrow',"
        " 'mlops_nb.store.features', 'mlops_nb.monitoring.alerts', 'mlops_nb.engine.executors.kernels']\n"
        "print('IMPORTED', sorted(b for b in bad if b in mods))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "--home", str(tmp_path), "run", str(nb)], capture_output=True, text=True
    )
    assert "(2 cached)" in out.stdout, out.stdout + out.stderr
    assert "IMPORTED []" in out.stdout
