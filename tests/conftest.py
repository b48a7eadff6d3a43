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
