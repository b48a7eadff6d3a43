"""The magics in a real in-process IPython shell: a session is a manual run, steps are cached and recorded."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbtools import write_notebook

from mlops_nb import Project


@pytest.fixture
def shell(tmp_path, monkeypatch, capsys):
    """A fresh IPython shell whose notebook is ``tmp_path/nb.ipynb``, with the extension loaded."""
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    result = ip.run_cell("%load_ext mlops_nb")
    assert result.success
    assert capsys.readouterr().out == ""  # loading is quiet
    yield ip
    ctx = ip.magics_manager.registry["MlopsMagics"]._ctx
    if ctx is not None:
        ctx.finish()
    InteractiveShell.clear_instance()


def run(ip, source: str):
    """Run a cell; return (result, the one-line error shown, if any)."""
    result = ip.run_cell(source)
    return result, result.error_in_exec


def test_session_is_one_manual_run_and_edits_record_new_step_runs(shell, tmp_path, monkeypatch, capsys):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "%load_ext mlops_nb",
            "n = 3",
            "%%mlops step make\nitems = list(range(n))",
            "%%mlops step total --outputs total\ntotal = sum(items)",
        ],
        parameters=1,
    )
    monkeypatch.setenv("JPY_SESSION_NAME", str(nb))
    shell.run_cell("n = 3")
    shell.run_cell("%%mlops step make\nitems = list(range(n))")
    shell.run_cell("%%mlops step total --outputs total\ntotal = sum(items)")
    out = capsys.readouterr().out
    assert "✔ make ran (no earlier run)" in out and "→ items: list len 3" in out
    assert shell.user_ns["total"] == 3

    shell.run_cell("%%mlops step make\nitems = list(range(n))  # a comment changes nothing")
    assert "↺ make cached (cached from run" in capsys.readouterr().out
    shell.run_cell("%%mlops step make\nitems = list(range(n + 1))")
    assert "✔ make ran (source changed)" in capsys.readouterr().out
    shell.run_cell("%%mlops step total --outputs total\ntotal = sum(items)")
    assert "✔ total ran (input items changed)" in capsys.readouterr().out
    assert shell.user_ns["total"] == 6

    store = Project(tmp_path).metadata
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0].trigger == "manual" and runs[0].status == "running"
    run_record = store.get_run(runs[0].id)
    assert [(s.step, s.status) for s in run_record.step_runs] == [
        ("make", "succeeded"),
        ("total", "succeeded"),
        ("make", "cached"),
        ("make", "succeeded"),
        ("total", "succeeded"),
    ]
    assert run_record.step_runs[0].cell_index == 2

    frame = shell.run_cell("%mlops runs").result
    assert list(frame["run"]) == [runs[0].id]
    dag = shell.run_cell("%mlops dag").result  # pictures too, in a fresh kernel
    assert dag._repr_png_().startswith(b"\x89PNG") and repr(dag) == "<DAG of nb: 2 steps>"
    picture = shell.run_cell("%mlops timeline").result  # an image in a fresh kernel: no %matplotlib needed
    assert picture.figure.axes[0].get_title().startswith(f"run {runs[0].id}")
    assert picture._repr_png_().startswith(b"\x89PNG\r\n\x1a\n") and repr(picture).startswith("<timeline of run")
    lineage = shell.run_cell("%mlops lineage total").result
    assert (
        lineage._repr_png_().startswith(b"\x89PNG")
        and repr(lineage) == "<lineage of total (json): 2 step runs upstream>"
    )
    texts = [t.get_text() for t in lineage.figure.axes[0].texts]
    assert any(t.startswith("make · succeeded") for t in texts)

    ended = shell.run_cell("%mlops end").result  # the session's run ends; the next step starts another
    assert list(ended["run"]) == [runs[0].id] and list(ended["status"]) == ["succeeded"]
    assert store.get_run(runs[0].id).ended_at is not None
    shell.run_cell("%%mlops step total --outputs total\ntotal = sum(items)")
    assert "↺ total cached" in capsys.readouterr().out
    latest = store.list_runs()
    assert len(latest) == 2 and latest[0].id != runs[0].id and latest[0].status == "running"
    assert shell.run_cell("%mlops end extra").error_in_exec is not None


def test_failed_step_shows_one_line_and_is_recorded(shell, tmp_path, capsys):
    result, error = run(shell, "%%mlops step boom\nx = 1 / 0")
    assert not result.success
    assert type(error).__name__ == "StepFailedError"
    assert str(error) == "step 'boom' (cell 1) failed: ZeroDivisionError: division by zero"
    out = capsys.readouterr().out
    assert "StepFailedError: step 'boom' (cell 1) failed: ZeroDivisionError: division by zero" in out
    run_record = Project(tmp_path).metadata.get_run("latest")
    assert run_record.step("boom").status == "failed"
    assert run_record.step("boom").error == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("%%mlops step\nx = 1", "the following arguments are required: name in `%%mlops step`"),
        (
            "%%mlops step a --colour red\nx = 1",
            "unrecognized arguments: --colour red in `%%mlops step a --colour red`; "
            "options: --inputs, --outputs, --reads, --no-cache, --retries",
        ),
        ("%%mlops step a --retries many\nx = 1", "argument --retries: invalid int value: 'many'"),
        ("%%mlops stop a\nx = 1", "`%%mlops stop a` is not a step; write `%%mlops step NAME [options]`"),
        ("%%mlops step 'a b'\nx = 1", "step name 'a b' must start with a letter"),
        ("%%mlops step a --reads missing.csv\nx = 1", "--reads missing.csv does not exist"),
        ("%%mlops step a --inputs ghost\nx = ghost", "input 'ghost' is not produced by any earlier step"),
        ("%mlops", "%mlops needs a subcommand: step (cell magic), run, dag, runs, lineage, timeline"),
        (
            "%mlops fly",
            "unknown %mlops subcommand 'fly'; use one of: step (cell magic), run, dag, runs, lineage, timeline",
        ),
        ("%mlops run -p n", "argument -p/--param: expected 2 arguments; usage: %mlops run [-p NAME VALUE]..."),
        ("%mlops lineage", "usage: %mlops lineage NAME"),
        ("%mlops end extra", "usage: %mlops end (ends this session's manual run)"),
        ("%mlops runs many", "usage: %mlops runs [N] (N a number of runs from 1 to 1000000), not 'many'"),
        ("%mlops runs --limit 0", "usage: %mlops runs [N] (N a number of runs from 1 to 1000000), not '0'"),
        ("%mlops runs --limit", "usage: %mlops runs [N] (N a number of runs from 1 to 1000000), not '--limit'"),
        # hostile input
        ("%mlops runs 99999999999999999999999", "N a number of runs from 1 to 1000000"),
        ("%mlops lineage x'; DROP TABLE runs; --", "cannot parse `%mlops lineage x'; DROP TABLE runs; --`"),
        ('%mlops dag "unclosed', "No closing quotation; close the quote"),
        ("%%mlops step a --retries 99999999999999999999\nx = 1", "--retries must be 0 to 100"),
        ("%%mlops step a'; DROP TABLE runs; --\nx = 1", "No closing quotation"),
        ("%%mlops step " + "a" * 5000 + "\nx = 1", "is 5000 characters; keep it to 100"),
        ("%%mlops step a --reads /dev/zero\nx = 1", "is not a file or a folder (a device, a pipe or a socket)"),
        ("%%mlops step a --reads " + "../" * 40 + "etc/passwd\nx = 1", "climbs out of the project folder"),
        ("%mlops notebook /dev/zero", "/dev/zero is not a notebook file"),
        ("%mlops timeline nope", "run 'nope' does not exist"),
        ("%%mlops step schritt_\u00e4\U0001f600\nx = 1", "must start with a letter"),
    ],
)
def test_usage_errors_are_one_line(shell, capsys, cell, message):
    result, error = run(shell, cell)
    assert not result.success and message in str(error)
    out = capsys.readouterr().out
    assert "Traceback" not in out and out.count("\n") <= 2


def test_without_a_notebook_file_inputs_come_from_the_session(shell, tmp_path, capsys):
    shell.run_cell("%%mlops step a\nbase = 10")
    shell.run_cell("%%mlops step b\ndoubled = base * 2")
    out = capsys.readouterr().out
    assert "✔ a ran (no earlier run) in" in out and "→ base: 10" in out
    run_record = Project(tmp_path).metadata.get_run("latest")
    assert run_record.pipeline == "interactive"
    assert run_record.step("b").inputs["base"].hash == run_record.step("a").outputs["base"].hash


@pytest.mark.slow
def test_mlops_run_runs_the_saved_notebook_headless(shell, tmp_path, monkeypatch, capsys):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        ["%load_ext mlops_nb", "n = 3", "%%mlops step make --outputs items\nitems = list(range(n))"],
        parameters=1,
    )
    monkeypatch.setenv("JPY_SESSION_NAME", str(nb))
    frame = shell.run_cell("%mlops run -p n 5").result
    out = capsys.readouterr().out
    assert f"mlops: running {nb} as saved (unsaved edits are not in this run)" in out
    assert "  make: ran (no earlier run)" in out  # the step lines are output, not red stderr
    assert list(frame["status"]) == ["succeeded"] and frame["params"][0] == {"n": 5}
    run_record = Project(tmp_path).metadata.get_run(frame["run"][0])
    assert run_record.trigger == "manual" and run_record.executor == "notebook"
    assert Project(tmp_path).artifacts.get(run_record.step("make").outputs["items"]) == [0, 1, 2, 3, 4]


def test_a_session_that_does_not_know_its_notebook_says_so_once(shell, tmp_path, capsys):
    shell.run_cell("%%mlops step a\nbase = 10")
    shell.run_cell("%%mlops step b\ndoubled = base * 2")
    out = capsys.readouterr().out
    warning = "mlops: this kernel does not know which notebook it runs, so its steps record as pipeline 'interactive'"
    assert out.count(warning) == 1 and "run `%mlops notebook PATH` first" in out


@pytest.mark.parametrize("how", ["vscode", "magic"])
def test_the_notebook_from_vscode_or_mlops_notebook(shell, tmp_path, capsys, how):
    """VS Code tells the kernel its notebook in ``__vsc_ipynb_file__``; a console or nbclient names it with
    ``%mlops notebook PATH``: either way the steps belong to that notebook's pipeline and share its cache."""
    nb = write_notebook(tmp_path / "nb.ipynb", ["%load_ext mlops_nb", "%%mlops step make\nitems = list(range(3))"])
    if how == "vscode":
        shell.user_ns["__vsc_ipynb_file__"] = str(nb)
    else:
        shell.run_cell("%mlops notebook nb.ipynb")
        assert f"mlops: this session's steps belong to {nb}" in capsys.readouterr().out
    shell.run_cell("%%mlops step make\nitems = list(range(3))")
    out = capsys.readouterr().out
    assert "✔ make ran (no earlier run)" in out and "does not know which notebook" not in out
    record = Project(tmp_path).metadata.get_run("latest")
    assert record.pipeline == "nb" and record.notebook == str(nb)


def test_mlops_notebook_refuses_what_is_not_a_notebook(shell, tmp_path):
    (tmp_path / "data.csv").write_text("a\n1\n")
    for line, message in [
        ("%mlops notebook", "usage: %mlops notebook PATH"),
        ("%mlops notebook data.csv", "data.csv is not a notebook file; give the path of the saved .ipynb file"),
        ("%mlops notebook missing.ipynb", "missing.ipynb is not a notebook file"),
    ]:
        result, error = run(shell, line)
        assert not result.success and message in str(error)


def test_dag_of_a_named_notebook_where_the_kernel_cannot_tell_its_own(shell, tmp_path, monkeypatch):
    """papermill and nbclient tell the kernel nothing: `%mlops dag NOTEBOOK` names the file instead."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "named.ipynb", ["%load_ext mlops_nb", "%%mlops step make\nitems = [1, 2]"])
    result, error = run(shell, "%mlops dag")
    assert not result.success and "cannot tell which notebook this kernel runs; name it (%mlops dag" in str(error)
    dag = shell.run_cell("%mlops dag named.ipynb").result
    assert repr(dag) == "<DAG of named: 1 steps>" and dag._repr_png_().startswith(b"\x89PNG")
    for line, message in [
        ("%mlops dag missing.ipynb", "missing.ipynb is not a notebook file; give the path of a saved .ipynb file"),
        ("%mlops dag a.ipynb b.ipynb", "usage: %mlops dag [NOTEBOOK.ipynb]"),
    ]:
        result, error = run(shell, line)
        assert not result.success and message in str(error)


def test_mlops_run_is_refused_inside_a_headless_run(shell, monkeypatch):
    monkeypatch.setenv("MLOPS_NB_RUN_ID", "20261201-000000-00000000")
    result, error = run(shell, "%mlops run")
    assert not result.success
    assert str(error).startswith("%mlops run inside a headless run would start a run within the run")


def test_runs_table_shows_parameters_whole(shell, tmp_path, monkeypatch):
    params = "learning_rate_schedule = 'cosine_with_warm_restarts'\nregularisation_strength = 0.000125\nseed = 7"
    nb = write_notebook(
        tmp_path / "long.ipynb",
        ["%load_ext mlops_nb", params, "%%mlops step make\nitems = [seed] * 3"],
        parameters=1,
    )
    monkeypatch.setenv("JPY_SESSION_NAME", str(nb))
    shell.run_cell(params)
    shell.run_cell("%%mlops step make\nitems = [seed] * 3")
    frame = shell.run_cell("%mlops runs --limit 5").result  # as the CLI spells it; `%mlops runs 5` too
    whole = str(frame["params"][0])
    assert len(whole) > 80 and "cosine_with_warm_restarts" in whole and "'seed': 7" in whole
    assert whole in frame._repr_html_().replace("&#x27;", "'") and whole in repr(frame)
    assert "..." not in frame._repr_html_() and "..." not in repr(frame)
