"""Notebook pipelines end to end: real kernels (nbclient, papermill), real DuckDB, the real CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from nbtools import copy_quickstart, run_by_hand, write_notebook

import mlops_nb
from mlops_nb import Project
from mlops_nb.core.clock import utcnow
from mlops_nb.ui.cli import cli

pytestmark = pytest.mark.slow

STEPS = ["load", "clean", "features", "split", "train", "evaluate"]


def statuses(run) -> dict[str, str]:
    return {s.step: s.status for s in run.step_runs}


def whys(run) -> dict[str, str]:
    return {s.step: s.why for s in run.step_runs}


def cli_run(home: Path, *args: str):
    return CliRunner().invoke(cli, ["--home", str(home), "run", *args], obj={})


@pytest.mark.parametrize("front_end", ["jupyterlab", "vscode"])
def test_manual_then_headless_is_fully_cached(tmp_path, front_end):
    nb = copy_quickstart(tmp_path / "qs")
    home = nb.parent
    cells = run_by_hand(nb, front_end=front_end)
    lines = "".join(c["stream"] for c in cells)
    for step in STEPS:
        assert f"✔ {step} ran (no earlier run)" in lines
    assert "→ raw: DataFrame 2000x5" in lines
    assert not [c for c in cells if c["errors"]]
    by_index = {c["index"]: c for c in cells}
    assert "'roc_auc'" in by_index[10]["result"][0]  # the report cell after the steps: `metrics`
    assert by_index[14]["images"] and by_index[15]["images"]  # `%mlops lineage model`, `%mlops dag`: pictures

    store = Project(home).metadata
    manual = store.list_runs(1)[0]
    assert manual.trigger == "manual" and manual.executor == "interactive"
    assert manual.status == "succeeded"  # the kernel ended the session's run when it shut down
    manual = store.get_run(manual.id)

    headless = mlops_nb.run(nb, progress=False)
    assert headless.status == "succeeded" and headless.trigger == "api"
    assert statuses(headless) == {s: "cached" for s in STEPS}
    assert all(why == f"cached from run {manual.id}" for why in whys(headless).values())
    for step in STEPS:
        assert headless.step(step).cache_key == manual.step(step).cache_key
        assert {k: r.hash for k, r in headless.step(step).outputs.items()} == {
            k: r.hash for k, r in manual.step(step).outputs.items()
        }
    assert headless.executed_notebook is None  # no kernel started


def test_report_cells_added_by_hand_leave_the_cache_alone(tmp_path):
    """The README invites `%mlops dag` / `runs` / `lineage` / `timeline` cells: once JupyterLab saves them, a
    headless run is still fully cached."""
    import nbformat

    nb = copy_quickstart(tmp_path / "qs")
    book = nbformat.read(nb, as_version=4)
    book.cells += [
        nbformat.v4.new_code_cell(src) for src in ("%mlops dag", "%mlops runs 3", "%mlops timeline", "model")
    ]
    nbformat.write(book, nb)  # what autosave writes after the user added the cells
    cells = run_by_hand(nb)
    assert not [c for c in cells if c["errors"]], [c for c in cells if c["errors"]]
    assert cells[-2]["images"] == 1  # `%mlops timeline` in a fresh kernel: a picture, not `<Figure size ...>`
    manual = Project(nb.parent).metadata.list_runs(1)[0]
    headless = mlops_nb.run(nb, progress=False)
    assert statuses(headless) == {s: "cached" for s in STEPS}
    assert all(why == f"cached from run {manual.id}" for why in whys(headless).values())
    book.cells.append(nbformat.v4.new_code_cell("%mlops lineage model"))  # one more, edited later: still cached
    nbformat.write(book, nb)
    assert statuses(mlops_nb.run(nb, progress=False)) == {s: "cached" for s in STEPS}


def test_param_module_and_data_changes_rerun_only_what_depends(tmp_path):
    nb = copy_quickstart(tmp_path / "qs")
    home = nb.parent
    first = mlops_nb.run(nb, {"n_rows": "800"}, progress=False)
    assert statuses(first) == {s: "succeeded" for s in STEPS}
    assert first.executed_notebook is not None and Path(first.executed_notebook.uri).is_file()
    assert first.params["n_rows"] == 800

    result = cli_run(home, str(nb), "-p", "n_rows", "800", "-p", "C", "0.5")
    assert result.exit_code == 0, result.output
    run = Project(home).metadata.get_run("latest")
    assert statuses(run) == {**{s: "cached" for s in STEPS[:4]}, "train": "succeeded", "evaluate": "succeeded"}
    assert run.step("train").why == "param C changed"
    assert run.step("evaluate").why == "input model changed"

    helpers = home / "helpers.py"
    helpers.write_text(helpers.read_text() + "\n\ndef unused():\n    return 1\n")
    run = mlops_nb.run(nb, {"n_rows": 800, "C": 0.5}, progress=False)
    assert statuses(run) == {s: "succeeded" for s in STEPS}
    assert run.step("load").why == "module helpers.py changed"

    raw = home / "data" / "raw.csv"
    raw.write_text(raw.read_text().replace("\n1,", "\n1,", 1) + "")  # same content: still cached
    assert set(statuses(mlops_nb.run(nb, {"n_rows": 800, "C": 0.5}, progress=False)).values()) == {"cached"}
    lines = raw.read_text().splitlines()
    raw.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # drop a row
    run = mlops_nb.run(nb, {"n_rows": 800, "C": 0.5}, progress=False)
    assert run.step("load").status == "succeeded" and run.step("load").why == "data/raw.csv changed"
    assert run.step("clean").why == "input raw changed"

    lineage = Project(home).metadata.lineage(run.step("train").outputs["model"].hash, direction="up")
    assert "data/raw.csv (external)" in {n.label for n in lineage.nodes.values()}


FAILING = [
    "%load_ext mlops_nb\nfrom pathlib import Path",
    "fail_until = 0",
    "%%mlops step make\nnumbers = list(range(10))",
    "%%mlops step divide\nhalves = [n / 0 for n in numbers]",
    "%%mlops step total\ntotal = sum(halves)",
    "%%mlops step side\nside = len(numbers)",
    "%%mlops step report --outputs report\nreport = {'total': total}",
]


def test_failing_step_skips_downstream_and_cli_says_where(tmp_path):
    home = tmp_path
    (home / "pyproject.toml").write_text("")
    nb = write_notebook(home / "failing.ipynb", FAILING, parameters=1)
    result = cli_run(home, str(nb))
    assert result.exit_code == 1
    message = re.search(r"Error: .*", result.stderr)[0]  # after the progress bar on stderr
    assert message.startswith(
        "Error: step 'divide' (cell 4) failed: ZeroDivisionError: division by zero; executed notebook: "
    )
    executed = Path(message.rsplit(": ", 1)[1])
    assert executed.is_file() and executed.suffix == ".ipynb"
    run = Project(home).metadata.get_run("latest")
    assert run.status == "failed" and run.error == message[len("Error: ") :]
    assert statuses(run) == {
        "make": "succeeded",
        "divide": "failed",
        "total": "skipped",
        "side": "skipped",
        "report": "skipped",
    }
    assert run.step("divide").error == "ZeroDivisionError: division by zero" and run.step("divide").cell_index == 3
    assert run.step("total").why == "upstream step divide failed"
    assert run.step("side").why == "not reached: the run stopped at step divide"
    assert run.executed_notebook.hash == executed.stem


def test_retries_rerun_a_failing_step(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    counter = tmp_path / "attempts.txt"
    nb = write_notebook(
        tmp_path / "flaky.ipynb",
        [
            "%load_ext mlops_nb\nfrom pathlib import Path",
            "%%mlops step flaky --retries 2 --outputs value\n"
            f"p = Path({str(counter)!r})\nn = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\n"
            "if n < 2:\n    raise RuntimeError(f'attempt {n} fails')\nvalue = n",
        ],
    )
    run = mlops_nb.run(nb, progress=False)
    assert run.status == "succeeded"
    attempts = [(s.status, s.attempt, s.why) for s in run.step_runs]
    assert attempts == [("failed", 1, "no earlier run"), ("succeeded", 2, "retry 1 of 2")]
    assert run.step_runs[0].error == "RuntimeError: attempt 1 fails"
    assert Project(tmp_path).artifacts.get(run.step("flaky").outputs["value"]) == 2


def test_declared_output_not_assigned_and_unstorable_output(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(tmp_path / "bad.ipynb", ["%load_ext mlops_nb", "%%mlops step a --outputs x,y\nx = 1"])
    with pytest.raises(mlops_nb.StepFailedError) as info:
        mlops_nb.run(nb, progress=False)
    assert str(info.value).startswith(
        "step 'a' (cell 2) failed: step 'a' (cell 2) did not assign its declared output 'y'; assign it in the step "
        "or remove it from --outputs"
    )
    nb = write_notebook(
        tmp_path / "lock.ipynb",
        ["%load_ext mlops_nb\nimport threading", "%%mlops step b --outputs lock\nlock = threading.Lock()"],
    )
    with pytest.raises(mlops_nb.StepFailedError) as info:
        mlops_nb.run(nb, progress=False)
    assert "output 'lock': cannot store 'lock' of type _thread.lock as an artifact" in str(info.value)
    assert "register a serializer" in str(info.value)


def test_notebook_without_steps_is_papermill_with_tracking(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    out = tmp_path / "out.txt"
    nb = write_notebook(
        tmp_path / "plain.ipynb",
        ["greeting = 'hi'", f"open({str(out)!r}, 'w').write(greeting)\nimport sys\nsys.exit(0)", "raise ValueError"],
        parameters=0,
    )
    run = mlops_nb.run(nb, {"greeting": "hello"}, progress=False)
    assert run.status == "succeeded" and run.step_runs == [] and out.read_text() == "hello"
    executed = Project(tmp_path).artifacts.get(run.executed_notebook)
    assert len(executed.cells) == 4  # papermill's injected parameters cell included


def test_killed_kernel_marks_run_interrupted_and_rerun_resumes(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    flag = tmp_path / "slow-started"
    nb = write_notebook(
        tmp_path / "slow.ipynb",
        [
            "%load_ext mlops_nb\nimport os, time\nfrom pathlib import Path",
            "slow = True",
            "%%mlops step first --outputs a\na = 41",
            f"%%mlops step second --outputs b\nPath({str(flag)!r}).write_text(str(os.getpid()))\n"
            "if slow:\n    time.sleep(60)\nb = a + 1",
        ],
        parameters=1,
    )
    code = (
        "import mlops_nb, sys\n"
        f"try:\n    mlops_nb.run({str(nb)!r}, progress=False)\n"
        "except mlops_nb.MlopsError as e:\n    print(e, file=sys.stderr); sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not flag.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert flag.exists(), "the slow step never started"
        time.sleep(0.3)
        os.kill(int(flag.read_text()), signal.SIGKILL)  # kill -9 the kernel mid-step
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 3
    assert "the kernel died while running step 'second' (cell 4); re-run to resume from the cache" in err
    store = Project(tmp_path).metadata
    run = store.get_run("latest")
    assert run.status == "interrupted" and statuses(run) == {"first": "succeeded", "second": "interrupted"}

    again = mlops_nb.run(nb, {"slow": False}, progress=False)
    assert statuses(again) == {"first": "cached", "second": "succeeded"}
    assert Project(tmp_path).artifacts.get(again.step("second").outputs["b"]) == 42


def test_killed_driver_is_interrupted_when_next_seen(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    flag = tmp_path / "started"
    nb = write_notebook(
        tmp_path / "slow.ipynb",
        [
            "%load_ext mlops_nb\nimport time\nfrom pathlib import Path",
            f"%%mlops step wait --outputs w\nPath({str(flag)!r}).touch()\ntime.sleep(60)\nw = 1",
        ],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    driver = subprocess.Popen(
        [sys.executable, "-c", f"import mlops_nb; mlops_nb.run({str(nb)!r}, progress=False)"],
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while not flag.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert flag.exists()
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its kernel, as a killed terminal would
        driver.wait(timeout=30)
        killed_at = utcnow()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    time.sleep(1.0)  # the next command comes later: the run's end is not when it is found
    run = Project(tmp_path).metadata.get_run("latest")
    assert run.status == "interrupted" and f"process {driver.pid}" in run.error
    assert statuses(run) == {"wait": "interrupted"}
    assert run.ended_at <= killed_at and run.step("wait").ended_at <= killed_at


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-p", "n_row", "5"],
            "01_quickstart.ipynb: parameter 'n_row' is not defined in the parameters cell (cell 3); "
            "defined: C, n_rows, seed, test_size",
        ),
        (
            ["-p", "n_rows", "many"],
            "01_quickstart.ipynb: parameter 'n_rows' expects int (default 2000 in cell 3), got 'many'",
        ),
        (["-p", "C", "high"], "01_quickstart.ipynb: parameter 'C' expects float (default 1.0 in cell 3), got 'high'"),
    ],
)
def test_bad_parameters_record_nothing(tmp_path, args, message):
    nb = copy_quickstart(tmp_path / "qs")
    result = cli_run(nb.parent, str(nb), *args)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
    assert Project(nb.parent).metadata.list_runs() == []


def test_params_file_and_json_output(tmp_path):
    nb = copy_quickstart(tmp_path / "qs")
    params = tmp_path / "params.yaml"
    params.write_text("n_rows: 300\nseed: 3\n")
    result = cli_run(nb.parent, str(nb), "-f", str(params), "-p", "seed", "4", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["params"]["n_rows"] == 300 and record["params"]["seed"] == 4
    assert [s["step"] for s in record["step_runs"]] == STEPS


def test_dag_command(tmp_path):
    nb = copy_quickstart(tmp_path / "qs")
    runner = CliRunner()
    text = runner.invoke(cli, ["dag", str(nb)], obj={}).output
    assert "[ 9] train: X_train <- split, y_train <- split -> model  (params C)" in text
    mermaid = runner.invoke(cli, ["dag", str(nb), "--format", "mermaid"], obj={}).output
    assert mermaid.startswith("flowchart TD") and "-->|model|" in mermaid
    data = json.loads(runner.invoke(cli, ["dag", str(nb), "--format", "json"], obj={}).output)
    assert [s["name"] for s in data["steps"]] == STEPS
    assert {"from": "split", "to": "evaluate", "name": "X_test"} in data["edges"]
    bad = runner.invoke(cli, ["dag", str(tmp_path / "missing.ipynb")], obj={})
    assert bad.exit_code == 1 and "does not exist; check the path" in bad.output


def _with_markdown(path: Path, sources: list[str]) -> Path:
    """A notebook whose cells alternate markdown and ``sources`` (cell 2 is tagged ``parameters``)."""
    import nbformat

    cells = []
    for i, source in enumerate(sources):
        cells.append(nbformat.v4.new_markdown_cell(f"## part {i}"))
        cell = nbformat.v4.new_code_cell(source)
        if i == 1:
            cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_one_cell_number_everywhere(tmp_path):
    """The failing step's cell is its 1-based position among all saved cells (markdown included, papermill's
    injected parameters cell not counted): by hand, headless, in `show`, in the record."""
    (tmp_path / "pyproject.toml").write_text("")
    nb = _with_markdown(
        tmp_path / "cells.ipynb",
        [
            "%load_ext mlops_nb",
            "n = 3",
            "%%mlops step make\nnumbers = list(range(n))",
            "%%mlops step divide\nhalves = [x / (n - 4) for x in numbers]",
            "halves",
        ],
    )  # divide is cell 8 of 10; it fails when n == 4
    by_hand = run_by_hand(nb)
    assert not [c for c in by_hand if c["errors"]]
    result = cli_run(tmp_path, str(nb), "-p", "n", "4")
    assert result.exit_code == 1
    assert "Error: step 'divide' (cell 8) failed: ZeroDivisionError: division by zero" in result.stderr
    run = Project(tmp_path).metadata.get_run("latest")
    assert run.step("divide").cell == 8 and run.step("divide").to_dict()["cell"] == 8
    shown = CliRunner().invoke(cli, ["--home", str(tmp_path), "show", run.id], obj={})
    assert "divide (cell 8): ZeroDivisionError: division by zero" in shown.output

    import nbformat

    saved = nbformat.read(nb, as_version=4)
    saved.cells[3].source = "n = 4"  # divide now fails by hand too
    nbformat.write(saved, nb)
    manual = run_by_hand(nb)
    errors = [c for c in manual if c["errors"]]
    assert errors and errors[0]["index"] == 7
    assert errors[0]["errors"][-1] == (
        "StepFailedError",
        "step 'divide' (cell 8) failed: ZeroDivisionError: division by zero",
    )

    # a cell that is not a step fails headless, after papermill's injected cell: the saved notebook's number
    saved.cells[3].source = "n = 3"
    saved.cells[9].source = "assert n != 5, 'n must not be 5'"
    nbformat.write(saved, nb)
    result = cli_run(tmp_path, str(nb), "-p", "n", "5")
    assert "Error: cell 10 of cells.ipynb (not a step) failed: AssertionError: n must not be 5" in result.stderr


def test_planned_hits_are_recorded_by_the_driver_and_the_kernel_loads_only_what_later_cells_read(tmp_path):
    """A run with one parameter changed: the driver records the steps the cache answers before the kernel starts;
    the kernel does not decide them again and loads only the outputs that a step that runs (or a report cell)
    reads; the step that loads records the time loading took; the post_step hook hears every step once."""
    from mlops_nb.core.hooks import hooks

    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(
        tmp_path / "planned.ipynb",
        [
            "%load_ext mlops_nb",
            "alpha = 1",
            "%%mlops step load\nraw = list(range(100_000))",
            "%%mlops step double\ndoubled = [x * 2 for x in raw]",
            "%%mlops step scale\nscaled = sum(doubled) * alpha",
            "print('loaded:', sorted(k for k in ('raw', 'doubled') if k in globals()))",
            "scaled",
        ],
        parameters=1,
    )
    project = Project(tmp_path)
    first = mlops_nb.run(nb, project=project, progress=False)
    heard = []
    unsubscribe = hooks.subscribe("post_step", lambda *, step, status, **kw: heard.append((step, status)))
    from mlops_nb.core.clock import utcnow

    called = utcnow()
    try:
        second = mlops_nb.run(nb, {"alpha": 2}, project=project, progress=False)
    finally:
        unsubscribe()
    assert (second.started_at - called).total_seconds() < 0.5  # the run's duration includes its planning
    assert statuses(second) == {"load": "cached", "double": "cached", "scale": "succeeded"}
    assert sorted(heard) == [("double", "cached"), ("load", "cached"), ("scale", "succeeded")]
    executed = project.artifacts.get(second.executed_notebook)
    text = json.dumps(executed.cells[-2].outputs)
    assert "loaded: ['doubled']" in text  # raw was not loaded: no later cell that runs reads it
    assert executed.cells[3].outputs[0]["text"].startswith("↺ load cached (cached from run")  # after the injected cell
    double = second.step("double")
    assert double.cached_from == first.step("double").id and double.ended_at > double.started_at
    assert second.step("scale").sources == {"doubled": first.step("double").id}
    assert project.artifacts.get(second.step("scale").outputs["scaled"]) == 2 * sum(range(100_000)) * 2


SMALL = [
    "%load_ext mlops_nb",
    "n = 3",
    "%%mlops step make\nnumbers = list(range(n))",
    "%%mlops step score --outputs metrics\nmetrics = {'total': float(sum(numbers))}",
]


def test_cli_run_prints_each_step_once_then_one_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(tmp_path / "small.ipynb", SMALL, parameters=1)
    for expected in ("ran (no earlier run)", "cached (cached from run"):
        result = cli_run(tmp_path, str(nb))
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert [line.split(":")[0].strip() for line in lines[:-1]] == ["make", "score"]
        assert all(expected in line for line in lines[:-1]), lines
        run = Project(tmp_path).metadata.get_run("latest")
        counts = "2 succeeded" if expected.startswith("ran") else "2 cached"
        assert lines[-1].startswith(f"Run {run.id} succeeded in ") and f"({counts})" in lines[-1]
        assert "make" not in result.stderr and "score" not in result.stderr  # the bar only
    assert "executed notebook: " not in lines[-1]  # a fully cached run executes nothing
    as_json = cli_run(tmp_path, str(nb), "-p", "n", "4", "--json")
    assert json.loads(as_json.stdout)["step_counts"] == {"succeeded": 2}


def test_runs_json_has_step_runs_metrics_and_the_executed_notebook(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(tmp_path / "small.ipynb", SMALL, parameters=1)
    assert cli_run(tmp_path, str(nb)).exit_code == 0
    assert cli_run(tmp_path, str(nb), "-p", "n", "5").exit_code == 0
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["--home", str(tmp_path), "runs", "--json"], obj={}).stdout)
    assert len(listed) == 2
    for record in listed:
        shown = json.loads(runner.invoke(cli, ["--home", str(tmp_path), "show", record["id"], "--json"], obj={}).stdout)
        assert record == shown  # a listed run is the whole record
        assert [s["step"] for s in record["step_runs"]] == ["make", "score"]
        assert record["step_runs"][0]["outputs"]["numbers"]["size"] > 0
        executed = record["executed_notebook"]
        assert executed["size"] == Path(executed["uri"]).stat().st_size > 0
    assert [r["metrics"] for r in listed] == [{"total": 10.0}, {"total": 3.0}]
    summary = Project(tmp_path).metadata.list_runs()[0].to_dict()  # the API's list: counts, no empty lists
    assert summary["step_counts"] == {"succeeded": 2} and "step_runs" not in summary and "metrics" not in summary
    assert summary["executed_notebook"] == {"hash": listed[0]["executed_notebook"]["hash"], "kind": "ipynb"}


@pytest.mark.parametrize("executor", ["notebook", "dag"])
def test_a_notebook_without_kernelspec_names_kernel_option(tmp_path, executor):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(tmp_path / "bare.ipynb", SMALL, parameters=1)
    data = json.loads(nb.read_text())
    del data["metadata"]["kernelspec"]
    nb.write_text(json.dumps(data))
    result = cli_run(tmp_path, str(nb), "--executor", executor)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and re.fullmatch(
        r"Error: bare\.ipynb names no Jupyter kernel \(its metadata has no kernelspec\); run it with --kernel NAME "
        r"\(kernel_name= in Python; installed here: .*python3.*\), or pick a kernel for it in Jupyter and save it\n",
        result.output,
    )
    assert Project(tmp_path).metadata.list_runs() == []  # refused before anything is recorded

    missing = cli_run(tmp_path, str(nb), "--executor", executor, "--kernel", "nosuch")
    assert missing.exit_code == 1
    message = re.search(r"Error: .*", missing.stderr)[0]
    assert re.match(
        r"Error: bare\.ipynb asks for Jupyter kernel 'nosuch', which is not installed here \(installed: .*python3.*\); "
        r"run it with --kernel NAME \(kernel_name= in Python\)",
        message,
    )
    assert Project(tmp_path).metadata.list_runs() == []  # an explicit kernel is checked before anything is recorded

    result = cli_run(tmp_path, str(nb), "--executor", executor, "--kernel", "python3")
    assert result.exit_code == 0, result.output
    assert Project(tmp_path).metadata.get_run("latest").step_counts == {"succeeded": 2}
