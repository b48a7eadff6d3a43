"""Shared fixtures: a fresh project home in a temporary folder, isolated from the environment."""

from __future__ import annotations

import pytest

from mlops_nb.project import Project


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No test sees the developer's MLOPS_NB_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("MLOPS_NB_"):
            monkeypatch.delenv(name)


@pytest.fixture
def project(tmp_path) -> Project:
    """An initialised project in a temporary folder."""
    return Project(tmp_path).init()


@pytest.fixture
def store(project):
    """The project's metadata store (a real DuckDB file)."""
    return project.metadata


@pytest.fixture
def artifacts(project):
    """The project's artifact store (a real folder)."""
    return project.artifacts


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """A migrated MLflow SQLite store, made once per test session (migrations cost seconds): tests copy it."""
    from mlops_nb.store.registry import MlflowRegistry

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowRegistry(f"sqlite:///{path}").client  # noqa: B018 - opening migrates it
    return path


@pytest.fixture
def registry_project(project, mlflow_template):
    """An initialised project whose embedded MLflow store is a copy of the migrated template."""
    import shutil

    shutil.copy(mlflow_template, project.mlflow_db)
    return project


# The longest test files, longest first. `make test` runs two xdist workers with `--dist loadfile
# --no-loadscope-reorder`: files are handed out in collection order, so these start first and the short files fill
# in around them, instead of the Binder file (few tests, six minutes) starting last and running alone.
LONGEST_FIRST = [
    "test_binder.py",
    "test_kill_points.py",
    "test_soak.py",
    "test_concurrency.py",
    "test_cli.py",
    "test_deploy_e2e.py",
]


def pytest_collection_modifyitems(config, items):
    """Put the files of :data:`LONGEST_FIRST` first, in that order; the rest keep their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
