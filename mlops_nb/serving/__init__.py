"""The app build and deployment pipelines: a registered model version → an app bundle → a live, logged endpoint.

- :func:`build`: the app bundle of a version (:mod:`.bundle`), a content-addressed folder that runs by itself.
- :mod:`.app`: the scoring server (MLflow's protocol, signature checks, online features, prediction log, metrics).
- :func:`deploy`, :func:`status`, :func:`rollback`, :func:`stop`: rollouts through a supervisor and its router
  (:mod:`.router`, :mod:`.rollout`) on a stable address, with health checks, smoke tests, canaries, automatic rollback and
  ``--watch`` of an alias.
- :func:`score`: batch scoring of a file; :func:`log_labels`: ground truth for logged predictions.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "Build": "bundle",
    "build": "bundle",
    "bundle_for": "bundle",
    "find_bundle": "bundle",
    "parse_model_spec": "bundle",
    "deploy": "rollout",
    "rollback": "rollout",
    "status": "rollout",
    "stop": "rollout",
    "labels_from_file": "batch",
    "log_labels": "batch",
    "score": "batch",
    "request_lineage": "batch",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    # lazy: the scoring app (serving.app) runs inside a bundle that carries only the modules it imports
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_nb.serving' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
