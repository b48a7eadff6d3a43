"""``mlops_nb.register_model``: a trained model into the registry, with its lineage back to the notebook run.

The model is stored in the project's artifact store first (content-addressed: the hash is the version's
``mlops_nb.model_hash`` tag, and what :func:`~mlops_nb.promotion.load_model` loads after checking it), then logged
by MLflow with its signature, input example and pinned requirements in a tracking run that carries the pipeline
run's parameters, metrics, notebook and run id, and registered as a new version. Inside a step the version is an
output of that step run (its lineage node is ``models:/NAME/VERSION``); the step's inputs, feature segments
included, are in the version's ``mlops_nb.inputs`` tag.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from ..core import hooks
from ..core import progress as progress_bars
from ..exceptions import ArtifactError, MlopsError, RegistryError
from ..store.registry import ModelVersion, check_model_name, flavor_of
from .events import index_outside_step, new_event, person, register_key

_MAX_TAG = 5000  # MLflow's limit on a tag value


def _modules(model: Any) -> list[str]:
    """The top-level modules of the classes a model is made of (a scikit-learn pipeline's steps included)."""
    found: set[str] = set()

    def visit(obj: Any, depth: int) -> None:
        found.add(type(obj).__module__.partition(".")[0])
        if depth > 3:
            return
        get_params = getattr(obj, "get_params", None)
        if callable(get_params):
            try:
                params = get_params(deep=False)
            except Exception:  # noqa: BLE001 - an estimator whose params cannot be read keeps its own module
                return
            for value in params.values():
                for item in value if isinstance(value, list | tuple) else [value]:
                    target = item[-1] if isinstance(item, tuple) and item else item
                    if hasattr(target, "get_params") or hasattr(target, "predict"):
                        visit(target, depth + 1)

    visit(model, 0)
    return sorted(m for m in found if m and m not in ("builtins", "__main__") and m not in sys.stdlib_module_names)


def requirements(
    model: Any, flavor_modules: tuple[str, ...] = ("mlflow", "cloudpickle", "numpy", "pandas")
) -> list[str]:
    """The pinned requirements of a model: the installed versions of what its classes and MLflow's loader import."""
    from ..engine.libraries import versions

    pinned = versions([*_modules(model), *flavor_modules])
    return [f"{name}=={version}" for name, version in pinned.items()]


def _lineage_tags(project, active, model_hash: str) -> tuple[dict, dict, dict, dict, dict]:
    """Version tags, run tags, run params, the pipeline run's metrics so far and files that tie a version to the
    step run that registered it."""
    tags = {"mlops_nb.model_hash": model_hash, "mlops_nb.by": person(None)}
    run_tags: dict[str, str] = {"mlops_nb.model_hash": model_hash}
    params: dict[str, Any] = {}
    files: dict[str, str] = {}
    if active is None:
        return tags, run_tags, params, {}, files
    tags["mlops_nb.step"] = run_tags["mlops_nb.step"] = active.step
    read = {**active.read, **active.inputs}
    if read:
        tags["mlops_nb.inputs"] = _json_tag({name: ref.hash for name, ref in read.items()})
    info = active.run_info if active.run_info is not None else _run_info(project, active)
    data = {**(info.get("data") or {}), **{n: r.hash for n, r in active.inputs.items()}}  # + features read now
    if data:
        tags["mlops_nb.data"] = _json_tag(data)
    if active.run_id:
        tags["mlops_nb.run_id"] = run_tags["mlops_nb.run_id"] = active.run_id
    params.update(info.get("params") or {})
    for key in ("pipeline", "notebook", "notebook_hash", "git_commit"):
        if info.get(key):
            tags[f"mlops_nb.{key}"] = run_tags[f"mlops_nb.{key}"] = str(info[key])
    if info.get("notebook"):
        run_tags["mlflow.source.name"] = str(info["notebook"])
        if Path(info["notebook"]).is_file():
            files["notebook"] = str(info["notebook"])
    if info.get("git_commit"):
        run_tags["mlflow.source.git.commit"] = str(info["git_commit"])
    metrics = {  # those MLflow can keep: a number under a name of letters, digits, '_', '-', '.', ' ', '/'
        k: v
        for k, v in (info.get("metrics") or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and re.fullmatch(r"[\w\-. /]{1,250}", str(k))
    }
    return tags, run_tags, params, metrics, files


def _run_info(project, active) -> dict:
    """The run's fields and the step's upstream data, read from the metadata store (this process writes it too)."""
    if not active.run_id:
        return {}
    try:
        return project.metadata.step_context(active.run_id, active.read, active.sources)
    except MlopsError:  # a run this process cannot read (another store) leaves only its id
        return {}


def _json_tag(values: dict[str, str]) -> str:
    """A name -> hash dict as a tag value (cut to MLflow's 5,000 characters)."""
    text = json.dumps(dict(sorted(values.items())), sort_keys=True)
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 3] + "..."


def register_model(
    model: Any,
    name: str,
    *,
    input_example: Any = None,
    metrics: dict[str, float] | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    project=None,
) -> ModelVersion:
    """Register ``model`` as a new version of ``name`` in the project's MLflow registry.

    Args:
        model: a scikit-learn estimator (or anything with ``predict``), or an ``mlflow.pyfunc.PythonModel``.
        name: the registered model's name.
        input_example: a few rows of input; MLflow infers the signature from it.
        metrics: metrics of this version (what promotion gates compare), logged with its MLflow run.
        params: parameters logged with its MLflow run (besides the pipeline run's).
        tags: tags of the version (besides mlops_nb's lineage tags).
        project: the project (default: the running step's, else the current one).

    Returns:
        the new :class:`~mlops_nb.store.registry.ModelVersion` (``.name``, ``.version`` as in MLflow).

    Example::

        version = mlops_nb.register_model(model, "churn", input_example=X_test[:5], metrics={"f1": f1})
        mlops_nb.promote("churn", version.version, gates={"f1": ">= champion - 0.01"})
    """
    from ..project import current_project

    check_model_name(name)
    flavor_of(model)  # a model MLflow cannot serve is refused before anything is stored
    active = hooks.active_step()
    project = current_project(project)
    registry = project.registry
    clean_metrics = _metrics(metrics, name)
    with progress_bars.start(3, f"register {name}", unit="stage") as bar:
        try:  # a model loaded as the step's input is the artifact it was loaded from
            ref = hooks.loaded_ref(model) or project.artifacts.put(model, name=f"{name} model")
        except ArtifactError as exc:
            reason = getattr(exc, "reason", exc.message)[:120]
            raise RegistryError(
                f"cannot register {name!r}: the {type(model).__qualname__} cannot be pickled ({reason}); keep "
                "unpicklable state (locks, open files, connections, generators) out of the model"
            ) from None
        bar.advance()
        version_tags, run_tags, run_params, run_metrics, files = _lineage_tags(project, active, ref.hash)
        version = registry.register(
            model,
            name,
            input_example=input_example,
            metrics=clean_metrics,
            run_metrics=run_metrics,
            params={**run_params, **(params or {})},
            tags={**{str(k): str(v) for k, v in (tags or {}).items()}, **version_tags},
            run_tags=run_tags,
            files=files,
            pip_requirements=requirements(model),
            experiment=f"mlops_nb/{run_tags.get('mlops_nb.pipeline', 'models')}",
        )
        bar.advance(2)
        version.metrics = clean_metrics
    event = new_event(
        "register", name, version.version, trigger="api" if active is None else None, key=register_key(version)
    )
    event.update(
        model_hash=ref.hash, run_id=version_tags.get("mlops_nb.run_id"), step=version_tags.get("mlops_nb.step")
    )
    if active is not None:
        hooks.record_output(version.uri, version.node())
        hooks.record_event(event)
    else:
        index_outside_step(project, [event])
    return version


def _metrics(metrics: dict[str, Any] | None, name: str) -> dict[str, float]:
    """Metrics as floats, or a one-line error naming the bad one."""
    clean = {}
    for key, value in (metrics or {}).items():
        try:
            clean[str(key)] = float(value)
        except (TypeError, ValueError):
            raise RegistryError(
                f"metric {key!r} of model {name!r} is {value!r}, not a number; pass metrics={{'name': float}}"
            ) from None
    return clean
