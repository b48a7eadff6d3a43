"""mlops_nb: a Jupyter-native MLOps toolkit. The notebook a data scientist writes is the pipeline.

Importing ``mlops_nb`` is light: the stores and their heavy dependencies load on first use. The package is in
layers whose imports point down only (``ui`` → ``engine`` → ``project`` → ``store`` | ``pipeline`` → ``settings`` →
``core`` | ``exceptions``); this root is the public face above them all: it names the public objects and resolves
the current project for stores made without paths (``mlops_nb.MetadataStore()``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .core import hooks as _hooks
from .exceptions import (
    ArtifactCorruptedError,
    ArtifactError,
    ArtifactNotFoundError,
    ConfigError,
    MlopsError,
    ModelNotFoundError,
    MonitoringError,
    NotFoundError,
    PipelineError,
    PromotionRefused,
    RegistryError,
    ScheduleError,
    StepFailedError,
    StoreBusyError,
    StoreError,
    UnsupportedArtifactError,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactCorruptedError",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactRef",
    "ArtifactStore",
    "ConfigError",
    "FeatureStore",
    "LineageGraph",
    "MetadataStore",
    "MlopsError",
    "ModelNotFoundError",
    "MonitoringError",
    "NotFoundError",
    "Pipeline",
    "PipelineError",
    "Project",
    "PromotionRefused",
    "RegistryError",
    "Run",
    "ScheduleError",
    "StepFailedError",
    "StepRun",
    "StoreBusyError",
    "StoreError",
    "UnsupportedArtifactError",
    "__version__",
    "approve",
    "build",
    "dashboard",
    "deploy",
    "load_ipython_extension",
    "log_labels",
    "load_model",
    "model_history",
    "monitor",
    "promote",
    "register_model",
    "reject",
    "rollback",
    "run",
    "score",
]

_LAZY = {
    "Project": "project",
    "ArtifactRef": "core.records",
    "ArtifactStore": "store.artifacts",
    "MetadataStore": "store.metadata",
    "Run": "store.metadata",
    "StepRun": "store.metadata",
    "LineageGraph": "store.lineage",
    "FeatureStore": "store.features",
    "Pipeline": "pipeline",
    "run": "engine.driver",
    "register_model": "promotion",
    "promote": "promotion",
    "approve": "promotion",
    "reject": "promotion",
    "rollback": "promotion",
    "load_model": "promotion",
    "model_history": "promotion",
    "build": "serving",
    "deploy": "serving",
    "log_labels": "serving",
    "score": "serving",
    "monitor": "monitoring",
    "dashboard": "ui.dashboard",
}

if TYPE_CHECKING:  # pragma: no cover
    from .core.records import ArtifactRef
    from .engine.driver import run
    from .monitoring import monitor
    from .pipeline import Pipeline
    from .project import Project
    from .promotion import approve, load_model, promote, register_model, reject, rollback
    from .promotion import history as model_history
    from .serving import build, deploy, log_labels, score
    from .store.artifacts import ArtifactStore
    from .store.features import FeatureStore
    from .store.lineage import LineageGraph
    from .store.metadata import MetadataStore, Run, StepRun
    from .ui.dashboard import dashboard


def load_ipython_extension(ipython) -> None:
    """``%load_ext mlops_nb``: register the ``%%mlops`` / ``%mlops`` magics (prints nothing)."""
    from .ui.magics import load_ipython_extension as load

    load(ipython)


def _locate(store: str, where: Any) -> dict[str, Any]:
    """The paths of a store of the project ``where`` names (a Project, its folder, or None: the current one)."""
    from .project import Project

    project = where if isinstance(where, Project) else Project(where)
    return project.store_paths(store)


_hooks.set_locator(_locate)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_nb' has no attribute {name!r}")
    if name in (
        "run",
        "register_model",
        "build",
        "deploy",
        "score",
        "monitor",
    ):  # API users see progress bars as the command line's do
        from .ui.progress import install

        install()
    value = getattr(import_module(f".{module}", __name__), "history" if name == "model_history" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
