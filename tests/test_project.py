"""Project home: discovery, layout, init, settings precedence and bad configuration."""

from __future__ import annotations

import pytest

from mlops_nb import ConfigError, Project
from mlops_nb.project import find_home


def test_init_creates_layout_and_is_idempotent(tmp_path):
    project = Project(tmp_path).init()
    mlops = tmp_path / ".mlops"
    for name in ("metadata.duckdb", "artifacts", "mlartifacts", "builds", "predictions"):
        assert (mlops / name).exists(), name
    assert project.metadata_path == mlops / "metadata.duckdb"
    assert project.features_path == mlops / "features.duckdb"
    assert project.mlflow_db == mlops / "mlflow.db"
    assert project.tracking_uri == f"sqlite:///{mlops / 'mlflow.db'}"
    project.metadata.create_run("p")
    Project(tmp_path).init()  # again: nothing lost
    assert len(Project(tmp_path).metadata.list_runs()) == 1


def test_init_adds_mlops_to_gitignore_only_in_git_repo(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    Project(plain).init()
    assert not (plain / ".gitignore").exists()

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".gitignore").write_text("*.pyc")
    Project(repo).init()
    Project(repo).init()
    assert (repo / ".gitignore").read_text() == "*.pyc\n.mlops/\n"


def test_discovery_order(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    deep = root / "a" / "b"
    deep.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    assert find_home(deep, environ={}) == root

    (root / "a" / ".mlops").mkdir()
    assert find_home(deep, environ={}) == root / "a"

    other = tmp_path / "other"
    other.mkdir()
    assert find_home(deep, environ={"MLOPS_NB_HOME": str(other)}) == other

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    monkeypatch.chdir(lonely)
    assert find_home(environ={}) in (lonely, *lonely.parents)


def test_discover_from_cwd(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    sub = tmp_path / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert Project().home == tmp_path
    assert Project.discover(sub).home == tmp_path


def test_settings_precedence(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.mlops_nb]\nlock_timeout = 5\nartifact_root = "store/art"\n')
    project = Project(tmp_path, environ={})
    assert project.settings.lock_timeout == 5.0
    assert project.settings.executor == "notebook"
    assert project.settings.sources["executor"] == "default"
    assert project.artifact_root == str(tmp_path / "store" / "art")

    env = {"MLOPS_NB_LOCK_TIMEOUT": "2.5", "MLOPS_NB_ARTIFACT_ROOT": "memory://bucket"}
    project = Project(tmp_path, environ=env)
    assert project.settings.lock_timeout == 2.5
    assert project.settings.sources["lock_timeout"] == "environment variable MLOPS_NB_LOCK_TIMEOUT"
    assert project.artifact_root == "memory://bucket"
    assert project.metadata.lock_timeout == 2.5


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (
            "[tool.mlops_nb]\nlock_timeout = 'soon'\n",
            {},
            "[tool.mlops_nb] lock_timeout: invalid value 'soon' (could not convert string to float: 'soon'); "
            "seconds to wait",
        ),
        ("[tool.mlops_nb]\nlock_timeout = -1\n", {}, "invalid value -1 (expected a positive number of seconds)"),
        ("[tool.mlops_nb]\nexecutor = 'no such'\n", {}, "executor: invalid value 'no such' (expected a name: letters,"),
        (
            "[tool.mlops_nb]\ncolour = 'red'\n",
            {},
            "[tool.mlops_nb]: unknown setting 'colour'; known settings: artifact_root,",
        ),
        ("[tool.mlops_nb\n", {}, "cannot be read"),
        ("", {"MLOPS_NB_LOCK_TIMEOUT": "abc"}, "environment variable MLOPS_NB_LOCK_TIMEOUT: invalid value 'abc'"),
    ],
)
def test_invalid_settings(tmp_path, toml, env, message):
    (tmp_path / "pyproject.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        Project(tmp_path, environ=env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_home_env_pointing_at_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ConfigError, match=r"MLOPS_NB_HOME=.*file.txt is a file, not a folder; point it at"):
        Project(environ={"MLOPS_NB_HOME": str(target)})


def test_unknown_executor_setting_is_refused_when_a_run_starts(tmp_path):
    """The executors are registered in the engine (plugins too), so the setting is checked when a run needs it:
    one line naming where the value came from and the executors there are; nothing is recorded."""
    import mlops_nb

    (tmp_path / "pyproject.toml").write_text("[tool.mlops_nb]\nexecutor = 'spark'\n")
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(
        '{"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [], "execution_count": null}],'
        ' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    project = Project(tmp_path)
    assert project.settings.executor == "spark"
    with pytest.raises(ConfigError) as info:
        mlops_nb.run(notebook, project=project)
    message = info.value.message
    assert message.startswith(
        f"{tmp_path / 'pyproject.toml'} [tool.mlops_nb] executor: executor 'spark' is not available"
    )
    assert message.endswith("use one of: notebook, dag, dask")
    assert "\n" not in message
    assert project.metadata.list_runs() == []


def test_stores_made_without_paths_belong_to_the_current_project(tmp_path, monkeypatch):
    """``mlops_nb.MetadataStore()`` and ``mlops_nb.FeatureStore()`` resolve the project at the package root (the
    stores themselves take explicit paths and never import the project)."""
    import mlops_nb

    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    (home / "pyproject.toml").write_text("[tool.mlops_nb]\nlock_timeout = 7\n")
    monkeypatch.chdir(home / "sub")
    store = mlops_nb.MetadataStore()
    assert store.path == home / ".mlops" / "metadata.duckdb" and store.lock_timeout == 7.0
    assert isinstance(Project(home).metadata, mlops_nb.MetadataStore)
    features = mlops_nb.FeatureStore()
    assert features.root == home / ".mlops" / "features" and features.db.path == home / ".mlops" / "features.duckdb"
    assert mlops_nb.FeatureStore(home).root == features.root == mlops_nb.FeatureStore(Project(home)).root
    assert isinstance(Project(home).features, mlops_nb.FeatureStore)
    assert mlops_nb.MetadataStore(tmp_path / "other.duckdb").path == tmp_path / "other.duckdb"
