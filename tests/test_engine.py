"""The engine's declared interfaces: lifecycle hooks, the Runner registry (plugins too), runs of every kind,
and the progress interface the front ends fill."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from nbtools import store_at_version, write_notebook

import mlops_nb
from mlops_nb.core import progress
from mlops_nb.core.hooks import hooks
from mlops_nb.engine.executors import Outcome, Runner, executors
from mlops_nb.engine.executors.notebook import NotebookRunner
from mlops_nb.exceptions import ConfigError, MlopsError, StoreError

CHAIN = ["%load_ext mlops_nb", "n = 3", "%%mlops step a\nx = list(range(n))", "%%mlops step b\ny = sum(x)", "y"]


@pytest.fixture
def events():
    """Every post_step and post_run event of this process, while the test runs."""
    seen: list[tuple[str, dict]] = []
    off = [
        hooks.subscribe("post_step", lambda **fields: seen.append(("post_step", fields))),
        hooks.subscribe("post_run", lambda **fields: seen.append(("post_run", fields))),
    ]
    yield seen
    for unsubscribe in off:
        unsubscribe()


@pytest.fixture
def registry():
    yield executors
    executors.reset()


def steps_of(events, run_id):
    return [(f["step"], f["status"]) for name, f in events if name == "post_step" and f["run_id"] == run_id]


def runs_of(events):
    return [(f["run_id"], f["status"], f["kind"], f["trigger"]) for name, f in events if name == "post_run"]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["notebook", "dag"])
def test_post_step_and_post_run_hooks(project, events, executor):
    nb = write_notebook(project.home / "chain.ipynb", CHAIN, parameters=1)
    run = mlops_nb.run(nb, executor=executor, project=project, progress=False)
    assert steps_of(events, run.id) == [("a", "succeeded"), ("b", "succeeded")]
    assert runs_of(events) == [(run.id, "succeeded", "pipeline", "api")]
    step_event = next(f for name, f in events if name == "post_step" and f["step"] == "b")
    assert step_event["step_run_id"] == run.step("b").id and step_event["why"] == "no earlier run"
    assert step_event["outputs"]["y"].hash == run.step("b").outputs["y"].hash

    events.clear()
    again = mlops_nb.run(nb, executor=executor, project=project, progress=False)  # fully cached: no kernel
    assert steps_of(events, again.id) == [("a", "cached"), ("b", "cached")]
    assert runs_of(events) == [(again.id, "succeeded", "pipeline", "api")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executor", "expected"),
    [
        ("dag", [("a", "failed"), ("b", "skipped"), ("c", "succeeded")]),
        # papermill stops at the failing cell: the driver reports it, then records the rest as skipped
        ("notebook", [("a", "failed"), ("b", "skipped"), ("c", "skipped")]),
    ],
)
def test_hooks_see_a_failed_step_skipped_downstream_and_the_failed_run(project, events, executor, expected):
    nb = write_notebook(
        project.home / "boom.ipynb",
        ["%load_ext mlops_nb", "%%mlops step a\nx = 1 / 0", "%%mlops step b\ny = x + 1", "%%mlops step c\nz = 2"],
    )
    with pytest.raises(mlops_nb.StepFailedError) as info:
        mlops_nb.run(nb, executor=executor, project=project, progress=False)
    run_id = info.value.run_id
    assert sorted(steps_of(events, run_id)) == expected
    assert runs_of(events) == [(run_id, "failed", "pipeline", "api")]
    error = next(f["error"] for name, f in events if name == "post_run")
    assert "ZeroDivisionError" in error


@pytest.mark.slow
def test_a_hook_that_raises_warns_and_the_run_goes_on(project, events):
    nb = write_notebook(project.home / "chain.ipynb", CHAIN, parameters=1)

    def broken(**fields):
        raise RuntimeError("listener bug")

    unsubscribe = hooks.subscribe("post_run", broken)
    try:
        with pytest.warns(UserWarning, match="post_run hook .*broken.* failed: RuntimeError: listener bug"):
            run = mlops_nb.run(nb, executor="dag", project=project, progress=False)
    finally:
        unsubscribe()
    assert run.status == "succeeded" and runs_of(events) == [(run.id, "succeeded", "pipeline", "api")]


def test_unknown_hook_is_refused():
    with pytest.raises(ValueError, match="unknown hook 'pre_lunch'; hooks: post_step, post_run"):
        hooks.subscribe("pre_lunch", print)


# Runners ------------------------------------------------------------------------------------------------------------
class TracingRunner(NotebookRunner):
    """papermill, as the notebook runner, and a note of each job it ran."""

    name = "tracing"
    jobs_seen: list = []

    def execute(self, job):
        TracingRunner.jobs_seen.append((job.run_id, job.options.executor, sorted(job.prepared.selected)))
        return super().execute(job)


def test_executor_names_come_from_the_registry(registry):
    assert registry.names()[:3] == ["notebook", "dag", "dask"]
    with pytest.raises(ConfigError, match=r"^executor 'spark' is not available; use one of: notebook, dag, dask$"):
        registry.get("spark")
    with pytest.raises(TypeError):
        registry.register(object)


@pytest.mark.slow
def test_a_registered_runner_runs_notebooks(project, registry):
    registry.register(TracingRunner)
    nb = write_notebook(project.home / "chain.ipynb", CHAIN, parameters=1)
    run = mlops_nb.run(nb, {"n": 4}, executor="tracing", project=project, progress=False)
    assert run.status == "succeeded" and run.executor == "tracing"
    assert TracingRunner.jobs_seen[-1] == (run.id, "tracing", ["a", "b"])
    assert project.artifacts.get(run.step("b").outputs["y"]) == 6
    with pytest.raises(MlopsError, match=r"^the tracing executor does not take --jobs, --retries; they need --exec"):
        mlops_nb.run(nb, executor="tracing", project=project, jobs=2, retries=1)


def test_a_runner_from_an_entry_point(tmp_path, monkeypatch, registry):
    """An installed package adds an executor through the ``mlops_nb.executors`` entry-point group."""
    (tmp_path / "my_runner.py").write_text(
        textwrap.dedent(
            """
            from mlops_nb.engine.executors import Outcome, Runner

            class MyRunner(Runner):
                name = "mine"
                options = frozenset({"jobs"})

                def execute(self, job):
                    return Outcome("succeeded")
            """
        )
    )
    info = tmp_path / "my_runner-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-runner\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mlops_nb.executors]\nmine = my_runner:MyRunner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reset()
    assert registry.names() == ["notebook", "dag", "dask", "mine"]
    runner = registry.get("mine")
    assert issubclass(runner, Runner) and runner().execute(None) == Outcome("succeeded")
    sys.modules.pop("my_runner", None)


def test_options_a_runner_does_not_take_are_refused_before_anything_is_recorded(project):
    nb = write_notebook(project.home / "chain.ipynb", CHAIN, parameters=1)
    with pytest.raises(MlopsError) as info:
        mlops_nb.run(nb, project=project, only=["b"], scheduler="tcp://127.0.0.1:1")
    assert info.value.message == "the notebook executor does not take --only, --scheduler; they need --executor dask"
    with pytest.raises(MlopsError, match="the dag executor does not take --scheduler; they need --executor dask"):
        mlops_nb.run(nb, executor="dag", project=project, scheduler="tcp://127.0.0.1:1")
    assert project.metadata.list_runs() == []


# Runs of every kind ---------------------------------------------------------------------------------------------------
def test_an_unknown_trigger_is_refused_before_anything_is_recorded(project):
    nb = write_notebook(project.home / "chain.ipynb", CHAIN, parameters=1)
    with pytest.raises(ConfigError) as info:
        mlops_nb.run(nb, project=project, trigger="ci")
    assert info.value.message.startswith("trigger 'ci' is not one of manual, cli, api, rest, schedule, data, drift")
    assert project.metadata.list_runs() == []


def test_a_pipeline_run_without_a_notebook_file_records_the_current_folders_git_state(store, tmp_path, monkeypatch):
    """A manual session with no notebook file (a console) still records where the code came from."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "a"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(repo)
    run = store.get_run(store.create_run("interactive", executor="interactive", trigger="manual"))
    assert (run.git_commit, run.git_dirty) == (head, False)
    build = store.get_run(store.create_run(None, kind="build", trigger="cli"))
    assert (build.git_commit, build.git_dirty) == (None, None)


def test_runs_of_every_kind(store):
    build = store.create_run(None, kind="build", trigger="approval", fired_by="models:/churn/3")
    store.finish_run(build, "succeeded")
    pipeline = store.create_run("churn", params={"C": 1.0}, trigger="schedule", fired_by="nightly")
    record = store.get_run(build)
    assert (record.kind, record.pipeline, record.trigger, record.fired_by) == (
        "build",
        None,
        "approval",
        "models:/churn/3",
    )
    assert record.notebook is None and record.git_commit is None and record.to_dict()["kind"] == "build"
    assert store.get_run(pipeline).kind == "pipeline" and store.get_run(pipeline).fired_by == "nightly"
    assert [r.id for r in store.list_runs(kind="build")] == [build]
    assert [r.id for r in store.list_runs(kind="pipeline", trigger="schedule")] == [pipeline]
    assert store.list_runs(kind="deploy") == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            ("churn",),
            {"kind": "training"},
            "run kind 'training' is not one of pipeline, promotion, build, deploy, monitor",
        ),
        (("churn",), {"trigger": "cron"}, "trigger 'cron' is not one of manual, cli, api, rest, schedule, data"),
        ((None,), {}, "a pipeline run needs the pipeline's name"),
        (("churn",), {"kind": "deploy"}, "a deploy run is not a notebook's: it takes no pipeline, notebook"),
        ((None,), {"kind": "monitor", "notebook": "x.ipynb"}, "a monitor run is not a notebook's"),
    ],
)
def test_bad_runs_are_refused(store, args, kwargs, message):
    with pytest.raises(StoreError) as info:
        store.create_run(*args, **kwargs)
    assert message in info.value.message
    assert store.list_runs() == []


def test_a_version_4_store_migrates_to_runs_of_every_kind(tmp_path):
    """A store written before runs had kinds: its runs become pipeline runs, and new kinds can be recorded."""
    from mlops_nb.store.metadata import MetadataStore

    path = tmp_path / "metadata.duckdb"
    con = store_at_version(path, 4)
    con.execute(
        "INSERT INTO runs (id, pipeline, status, started_at, trigger, executor) "
        "VALUES ('20260101-000000-00000000', 'old', 'succeeded', now(), 'cli', 'notebook')"
    )
    con.close()
    store = MetadataStore(path)
    old = store.get_run("20260101-000000-00000000")
    assert (old.kind, old.pipeline, old.fired_by) == ("pipeline", "old", None)
    deploy = store.create_run(None, kind="deploy", trigger="watch")
    assert store.get_run(deploy).kind == "deploy" and store.get_run(deploy).pipeline is None


# Progress -------------------------------------------------------------------------------------------------------------
def test_progress_goes_through_the_installed_factory(capsys):
    class Recorder(progress.Progress):
        made: list = []

        def __init__(self, total, desc, unit="step"):
            super().__init__(total, desc, unit)
            self.lines, self.done = [], 0
            Recorder.made.append(self)

        def write(self, line):
            self.lines.append(line)

        def advance(self, n=1):
            self.done += n

    progress.use(Recorder)
    try:
        with progress.start(2, "work") as bar:
            bar.write("one")
            bar.advance()
        assert Recorder.made[-1].lines == ["one"] and Recorder.made[-1].done == 1
        with progress.start(2, "short work", bar=False) as plain:  # lines only, no bar: the base prints them
            plain.write("two")
        progress.start(2, "quiet", enabled=False).write("three")
        assert capsys.readouterr().err == "two\n"
    finally:
        from mlops_nb.ui.progress import TqdmProgress

        progress.use(TqdmProgress)


def test_nothing_below_ui_imports_front_end_libraries():
    """The engine, the stores and the project load without tqdm, click, ipywidgets or matplotlib."""
    import subprocess

    code = (
        "import sys, json; import mlops_nb.engine.driver, mlops_nb.engine.executors.dag, mlops_nb.project, "
        "mlops_nb.store.features, mlops_nb.store.metadata; "
        "print(json.dumps(sorted(m for m in ('tqdm', 'click', 'ipywidgets', 'matplotlib') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


@pytest.mark.parametrize("order", ["view first", "segment first"])
def test_a_gone_output_is_named_the_same_whatever_order_the_records_come_in(project, order):
    """Both a view and its segment are gone (the feature store was deleted): the reason names the segment, the
    most precise one, whichever order the events were read in."""
    from mlops_nb.core.records import ArtifactRef
    from mlops_nb.engine.cache import unusable
    from mlops_nb.pipeline.notebook import Step
    from mlops_nb.store.metadata import StepRun

    view = ArtifactRef("a" * 64, "feature_view", name="features:stats", uri="features://stats")
    segment = ArtifactRef("b" * 64, "feature_segment", name="stats", uri="file:///gone.parquet")
    outputs = {"features:stats": view, "features:stats#1": segment}
    if order == "segment first":
        outputs = dict(reversed(list(outputs.items())))
    hit = StepRun("r.1", "r", "ingest", "succeeded", outputs=outputs)
    step = Step(name="ingest", cell_index=1, source="", code="")
    assert unusable(project, hit, step) == "output features:stats#1 is gone"


# Library versions in the cache key ------------------------------------------------------------------------------------
def test_library_versions_name_each_module_by_its_distribution():
    import importlib.metadata as md

    from mlops_nb.engine.libraries import versions

    found = versions(["sklearn", "pandas", "yaml", "not_installed_anywhere"])
    assert found == {
        "pandas": md.version("pandas"),
        "pyyaml": md.version("PyYAML"),
        "scikit-learn": md.version("scikit-learn"),
    }


def _install(site, version: str) -> None:
    """Install (as pip lays it out) a one-module distribution ``tiny-lib`` of ``version`` into ``site``."""
    import shutil

    for old in site.glob("tiny_lib-*.dist-info"):
        shutil.rmtree(old)
    (site / "tinylib.py").write_text(f"VERSION = {version!r}\n")
    info = site / f"tiny_lib-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tiny-lib\nVersion: {version}\n")
    (info / "RECORD").write_text("tinylib.py,,\n")


@pytest.mark.slow
def test_an_upgraded_library_reruns_the_steps_that_import_it_unless_turned_off(tmp_path):
    import os
    import subprocess

    site = tmp_path / "site"
    site.mkdir()
    home = tmp_path / "project"
    home.mkdir()
    (home / "pyproject.toml").write_text("")
    nb = write_notebook(
        home / "libs.ipynb",
        ["%load_ext mlops_nb", "import tinylib", "%%mlops step use\nversion = tinylib.VERSION", "version"],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    env["PYTHONPATH"] = str(site)
    command = [str(Path(sys.executable).parent / "mlops-nb"), "run", nb.name, "--json"]

    def run(**extra):
        done = subprocess.run(command, cwd=home, env={**env, **extra}, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["step_runs"][0]

    _install(site, "1.0")
    assert run()["why"] == "no earlier run"
    assert run()["status"] == "cached"
    _install(site, "1.1")
    upgraded = run()
    assert upgraded["status"] == "succeeded" and upgraded["why"] == "tiny-lib 1.0 → 1.1"

    off = {"MLOPS_NB_LIBRARY_VERSIONS": "false"}
    assert run(**off)["why"] == "library versions no longer in the cache key"
    _install(site, "2.0")
    assert run(**off)["status"] == "cached"


def test_a_library_imported_before_an_upgrade_keys_the_version_that_runs(tmp_path, monkeypatch):
    """``%pip install -U`` in a live kernel: the module already imported is still the old code, so the key keeps
    its old version; a package installed after the first look-up is found."""
    import importlib

    from mlops_nb.engine.libraries import versions

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    _install(site, "1.0")
    monkeypatch.delitem(sys.modules, "tinylib", raising=False)
    importlib.import_module("tinylib")
    assert versions(["tinylib", "tinylib2"]) == {"tiny-lib": "1.0"}
    _install(site, "1.1")
    (site / "tinylib2.py").write_text("")
    info = site / "tiny_lib2-0.3.dist-info"
    info.mkdir()
    (info / "RECORD").write_text("tinylib2.py,,\n")
    assert versions(["tinylib", "tinylib2"]) == {"tiny-lib": "1.0", "tiny-lib2": "0.3"}
