"""mlops_nb: a Jupyter-native MLOps toolkit. The notebook a data scientist writes is the pipeline.

Importing ``mlops_nb`` is light: the stores and their heavy dependencies load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .exceptions import (
    ArtifactCorruptedError,
    ArtifactError,
    ArtifactNotFoundError,
    ConfigError,
    MlopsError,
    NotFoundError,
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
    "NotFoundError",
    "Pipeline",
    "PipelineError",
    "Project",
    "Run",
    "StepFailedError",
    "StepRun",
    "StoreBusyError",
    "StoreError",
    "UnsupportedArtifactError",
    "__version__",
    "load_ipython_extension",
    "run",
]

_LAZY = {
    "Project": "project",
    "ArtifactRef": "artifacts",
    "ArtifactStore": "artifacts",
    "MetadataStore": "metadata",
    "Run": "metadata",
    "StepRun": "metadata",
    "LineageGraph": "lineage",
    "FeatureStore": "features",
    "Pipeline": "pipeline",
    "PipelineError": "pipeline",
    "StepFailedError": "runtime",
    "run": "headless",
}

if TYPE_CHECKING:  # pragma: no cover
    from .artifacts import ArtifactRef, ArtifactStore
    from .headless import run
    from .lineage import LineageGraph
    from .metadata import MetadataStore, Run, StepRun
    from .pipeline import Pipeline, PipelineError
    from .project import Project
    from .runtime import StepFailedError


def load_ipython_extension(ipython) -> None:
    """``%load_ext mlops_nb``: register the ``%%mlops`` / ``%mlops`` magics (prints nothing)."""
    from .magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_nb' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
