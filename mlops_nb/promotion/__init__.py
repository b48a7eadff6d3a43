"""The model lifecycle above the pipelines: register a trained model, promote it through gates, with a person's
approval when asked, and roll back.

The registry itself is a store (:mod:`mlops_nb.store.registry`, MLflow behind a small interface); this layer adds
what MLflow leaves to its users: lineage back to the notebook run and its data, metric gates absolute and relative
to the current holder, an approval step, the history of every alias move, and rollback.
"""

from .actions import Promotion, approve, history, load_model, models, promote, reject, resolve_uri, rollback
from .events import reindex
from .register import register_model, requirements

__all__ = [
    "Promotion",
    "approve",
    "history",
    "load_model",
    "models",
    "promote",
    "register_model",
    "reindex",
    "reject",
    "requirements",
    "resolve_uri",
    "rollback",
]
