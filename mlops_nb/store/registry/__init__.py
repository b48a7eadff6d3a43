"""The model registry: a small :class:`ModelRegistry` interface and its MLflow implementation.

MLflow is the source of truth for registered models, their versions, aliases and tags (local SQLite by default,
any tracking server by URI). Only :mod:`.mlflow_store` imports mlflow, and only inside the calls that need it, so
``import mlops_nb`` and a step that does not register never pay for it (DESIGN invariant 8). Gates, approval and
rollback are one layer up, in :mod:`mlops_nb.promotion`.
"""

from .base import ModelRegistry, ModelVersion, check_alias, check_model_name
from .mlflow_store import MlflowRegistry, flavor_of

__all__ = ["MlflowRegistry", "flavor_of", "ModelRegistry", "ModelVersion", "check_alias", "check_model_name"]
