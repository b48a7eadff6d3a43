"""What the browser front ends show, as JSON-able data: the one place the REST API (``ui/server``), the
ipywidgets dashboard and the sidebar (through the REST API) read a project's state.

Every function takes a :class:`~mlops_nb.project.Project` and makes short reads only (DESIGN invariant 3), so a
front end that polls never holds a store while a run writes it. Nothing here creates a store: a project with no
runs, no feature store or no registry yet answers with empty lists.

Example::

    from mlops_nb.project import Project
    from mlops_nb.ui import state

    project = Project("demo-project")
    state.runs(project, limit=5)                       # the five latest runs
    state.dag(project, project.home, "notebooks/01_quickstart.ipynb")  # steps with their last status
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from ..exceptions import MlopsError, NotFoundError

#: Folders never searched for pipelines (besides hidden ones).
SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__", "site-packages", "venv", "build", "dist"})
#: How deep under the root pipelines are searched for, and how many notebooks at most.
SEARCH_DEPTH, SEARCH_LIMIT = 6, 2000
_STEP_MARK = b"%%mlops step"

#: notebook -> ((mtime_ns, size), Pipeline | None): the latest parsed notebooks, while unchanged
_PARSED: OrderedDict[Path, tuple[tuple[int, int], Any]] = OrderedDict()
_PARSED_MAX = 256


class PathError(MlopsError):
    """A path from a front end is outside the root it may read, or not a notebook."""


class NotebookMissing(PathError, NotFoundError):
    """A notebook path inside the root that names no file."""


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold made plain: datetimes as ISO text, NaN/inf as None, NumPy scalars as
    numbers, paths and other objects as text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if hasattr(value, "item") and callable(value.item):  # numpy / pandas scalars
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if value != value:  # NaT and other NaN-likes
        return None
    return str(value)


# Paths ----------------------------------------------------------------------------------------------------------
def confine(root: str | os.PathLike, path: str) -> Path:
    """The notebook ``path`` (relative to ``root``, ``/``-separated) as an absolute path inside ``root``.

    Raises:
        PathError: ``path`` is absolute, climbs out with ``..``, leaves ``root`` through a link, or is not an
            ``.ipynb`` file that exists.
    """
    root = Path(root).resolve()
    text = str(path or "").strip()
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if not text or text.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise PathError(f"notebook path {text!r} must be relative to the server root, without '..'")
    if any(part.startswith(".") for part in parts) or "\0" in text or len(text) > 1024:
        raise PathError(f"notebook path {text[:200]!r} names a hidden file or folder, or is not a path")
    try:
        full = (root / Path(*parts)).resolve()
        inside = full == root or root in full.parents
        exists = full.is_file()
    except (OSError, ValueError) as exc:
        raise PathError(f"notebook path {text[:200]!r} cannot be read: {exc}") from None
    if not inside:
        raise PathError(f"notebook path {text!r} leads outside the server root")
    if full.suffix != ".ipynb":
        raise PathError(f"{text} is not a notebook (.ipynb); give the path of a notebook under the server root")
    if not exists:
        raise NotebookMissing(f"notebook {text} does not exist under the server root")
    return full


def relative(root: str | os.PathLike, path: str | os.PathLike | None) -> str | None:
    """``path`` relative to ``root`` with ``/`` separators, or None when it is outside ``root``."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None


def parsed(path: Path):
    """The parsed :class:`~mlops_nb.pipeline.notebook.Pipeline` of the notebook ``path`` (None: no step cells, or
    not readable), kept while the file is unchanged: what every front end draws a DAG from."""
    from ..pipeline.notebook import Pipeline

    try:
        info = path.stat()
    except OSError:
        return None
    stamp = (info.st_mtime_ns, info.st_size)
    known = _PARSED.get(path)
    if known and known[0] == stamp:
        _PARSED.move_to_end(path)
        return known[1]
    try:
        pipeline = Pipeline.from_notebook(path, strict=False) if _STEP_MARK in path.read_bytes() else None
    except Exception:  # noqa: BLE001 - a scan of the root: a notebook it cannot parse is not a pipeline
        pipeline = None
    if pipeline is not None and not pipeline.steps:
        pipeline = None
    _PARSED[path] = (stamp, pipeline)
    while len(_PARSED) > _PARSED_MAX:
        _PARSED.popitem(last=False)
    return pipeline


def _notebooks(root: Path) -> list[Path]:
    found: list[Path] = []
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - base
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_FOLDERS and depth < SEARCH_DEPTH)
        for name in sorted(files):
            if name.endswith(".ipynb") and not name.startswith("."):
                path = Path(folder, name)
                if not path.is_symlink() or root in path.resolve().parents:  # no link out of the root
                    found.append(path)
        if len(found) >= SEARCH_LIMIT:
            break
    return found[:SEARCH_LIMIT]


# Pipelines ------------------------------------------------------------------------------------------------------
def _run_brief(run) -> dict | None:
    if run is None:
        return None
    return {"id": run.id, "status": run.status, "started_at": jsonable(run.started_at), "trigger": run.trigger}


def _latest_runs(project, limit: int = 500) -> dict[str, Any]:
    """Pipeline name -> its latest run (one query)."""
    if not project.metadata_path.exists():
        return {}
    latest: dict[str, Any] = {}
    for run in project.metadata.list_runs(limit, kind="pipeline"):
        latest.setdefault(run.pipeline, run)
    return latest


def pipelines(project, root: str | os.PathLike) -> list[dict]:
    """The notebooks under ``root`` that have step cells: ``path`` (relative), ``name``, ``steps`` and
    ``last_run`` (``id``, ``status``, ``started_at``, ``trigger``, or None)."""
    root = Path(root).resolve()
    latest = _latest_runs(project)
    found = []
    for path in _notebooks(root):
        pipeline = parsed(path)
        if pipeline is None:
            continue
        found.append(
            {
                "path": path.relative_to(root).as_posix(),
                "name": pipeline.name,
                "steps": len(pipeline.steps),
                "last_run": _run_brief(latest.get(pipeline.name)),
            }
        )
    return found


def dag(project, root: str | os.PathLike, path: str) -> dict:
    """The pipeline of the notebook ``path`` (relative to ``root``) with each step's last status: from its latest
    step run in any run of the pipeline (``never`` for a step none recorded; ``pending`` for a step the headless run
    in progress has not reached). Steps carry ``status``, ``why``, ``step_run``,
    ``duration`` and ``error`` besides their inputs, outputs and upstream steps.

    Raises:
        PathError: see :func:`confine`; also when the notebook has no step cells.
    """
    full = confine(root, path)
    pipeline = parsed(full)
    if pipeline is None:
        raise PathError(f"{path} has no step cells; mark a cell with %%mlops step NAME to make it a pipeline")
    data = pipeline.to_dict()
    data["notebook"] = relative(root, full)
    data["path"] = relative(root, full)
    last = None
    latest: dict[str, Any] = {}
    if project.metadata_path.exists():
        runs = project.metadata.list_runs(1, pipeline=pipeline.name, kind="pipeline")
        last = runs[0] if runs else None
        latest = project.metadata.latest_step_runs(pipeline.name)  # each step's, in whichever run it was
    # a headless run in progress will reach its other steps; a session's manual run stays open while a person works
    in_progress = last is not None and last.status == "running" and last.executor != "interactive"
    for step in data["steps"]:
        step_run = latest.get(step["name"])
        if in_progress and (step_run is None or step_run.run_id != last.id):
            step_run, status = None, "pending"  # the run in progress has not reached it yet
        else:
            status = step_run.status if step_run else "never"
        step.update(
            status=status,
            why=step_run.why if step_run else None,
            step_run=step_run.id if step_run else None,
            duration=step_run.duration if step_run else None,
            error=step_run.error if step_run else None,
        )
    data["last_run"] = _run_brief(last)
    return jsonable(data)


# Runs -----------------------------------------------------------------------------------------------------------
def runs(
    project,
    limit: int = 20,
    *,
    status: str | None = None,
    trigger: str | None = None,
    pipeline: str | None = None,
    kind: str | None = None,
) -> list[dict]:
    """The latest runs, newest first, as dicts (``step_counts`` but not step runs); filters as
    :meth:`~mlops_nb.store.metadata.MetadataStore.list_runs` takes them."""
    if not project.metadata_path.exists():
        return []
    records = project.metadata.list_runs(limit, status=status, trigger=trigger, pipeline=pipeline, kind=kind)
    return [jsonable(r.to_dict()) for r in records]


def run(project, run_id: str, root: str | os.PathLike | None = None) -> dict:
    """One run with its step runs and metrics; ``expected_steps`` (a pipeline run's step count, for progress) and
    ``notebook`` relative to ``root`` when it is inside it.

    Raises:
        NotFoundError: no such run.
    """
    if not project.metadata_path.exists():
        raise NotFoundError(f"run {run_id!r} does not exist; this project has no runs yet")
    record = project.metadata.get_run(run_id)
    if record.status == "running" and project.metadata.reap(record):  # its process died: say so now
        record = project.metadata.get_run(run_id)
    data = record.to_dict()
    data["expected_steps"] = None
    if record.kind == "pipeline" and record.notebook:
        pipeline = parsed(Path(record.notebook))
        data["expected_steps"] = len(pipeline.steps) if pipeline else None
    if root is not None:
        data["notebook_path"] = relative(root, record.notebook)
    return jsonable(data)


def executed_notebook(project, run_id: str) -> bytes:
    """The bytes of a run's executed notebook (``.ipynb``), hash-checked by the artifact store.

    Raises:
        NotFoundError: no such run, or it kept no executed notebook.
    """
    if not project.metadata_path.exists():
        raise NotFoundError(f"run {run_id!r} does not exist; this project has no runs yet")
    record = project.metadata.get_run(run_id)
    if record.executed_notebook is None:
        raise NotFoundError(f"run {record.id} kept no executed notebook (only headless notebook runs keep one)")
    return project.artifacts.read_bytes(record.executed_notebook)


# Lineage --------------------------------------------------------------------------------------------------------
def lineage(project, node: str, direction: str = "both", depth: int | None = None):
    """The :class:`~mlops_nb.store.lineage.LineageGraph` of ``node``: an artifact hash or prefix, ``RUN.N``,
    ``RUN/STEP``, an output name, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``, a bundle hash, or
    ``request:ID`` (a logged prediction).

    Raises:
        NotFoundError: nothing is known by that name, in one line saying what to write instead.
    """
    if direction not in ("up", "down", "both"):
        raise MlopsError(f"direction {direction!r} must be up, down or both")
    if not project.metadata_path.exists():
        raise NotFoundError(f"{node} is not known: this project has recorded nothing yet")
    if node.startswith("request:"):
        from ..serving.batch import request_lineage

        return request_lineage(node[len("request:") :], direction=direction, depth=depth, project=project)
    if node.startswith("models:/"):
        return _model_lineage(project, node, direction, depth)
    return project.metadata.lineage(node, direction=direction, depth=depth)


def _model_lineage(project, node: str, direction: str, depth: int | None):
    from ..promotion import resolve_uri

    uri = resolve_uri(node, project=project)
    try:
        return project.metadata.lineage(uri, direction=direction, depth=depth)
    except NotFoundError:
        name, _, number = uri[len("models:/") :].rpartition("/")
        if not number.isdigit():
            raise NotFoundError(
                f"{node} is not a model version; write models:/NAME/VERSION or models:/NAME@ALIAS"
            ) from None
        if project.registry.exists(name, int(number)):
            raise NotFoundError(
                f"{uri} was registered outside a pipeline step, so it has no lineage here; register it inside a "
                "%%mlops step to tie it to its run and data"
            ) from None
        raise NotFoundError(
            f"model {name!r} has no version {number}; `mlops-nb models show {name}` lists them"
        ) from None


# Features, models, deployments, monitoring ----------------------------------------------------------------------
def features(project, now: datetime | None = None) -> list[dict]:
    """The feature views: name, version, entity, keys, features, rows, segments, time range, TTL (as every front
    end shows it), online keys, and ``age_s`` (seconds since the newest event: how fresh the view is)."""
    from .format import ttl

    if not project.features_path.exists():
        return []
    frame = project.features.list_views()
    now = now or datetime.now(UTC)
    views = []
    for record in frame.to_dict("records"):
        last = record.get("last_ts")
        record["ttl"] = ttl(record["ttl"])
        record["age_s"] = (now - last).total_seconds() if isinstance(last, datetime) else None
        views.append(jsonable(record))
    return views


def feature_stats(project, view: str) -> dict:
    """One view's statistics (per feature: counts, moments, histogram), as ``mlops-nb features stats --json``."""
    if not project.features_path.exists():
        raise NotFoundError(f"unknown feature view {view!r}: this project has no feature store yet")
    return jsonable(project.features.stats_dict(view))


def _registry_ready(project) -> bool:
    return project.mlflow_db.exists() or not project.tracking_uri.startswith("sqlite:")


def models(project) -> dict:
    """``models`` (name, latest version, aliases) and ``pending``: versions waiting for a person's approval, with
    the alias they wait for and their metrics."""
    from ..promotion import models as registered

    if not _registry_ready(project):
        return {"models": [], "pending": []}
    found = registered(project=project)
    pending = []
    for model in found:
        for version in registered(model["name"], project=project):
            if version["approval"] == "pending":
                pending.append({**version, "alias": version["tags"].get("approval.alias")})
    return jsonable({"models": found, "pending": pending})


def versions(project, name: str) -> list[dict]:
    """The versions of model ``name``, newest first (aliases, approval state, metrics, tags).

    Raises:
        ModelNotFoundError: no such model.
    """
    from ..exceptions import ModelNotFoundError
    from ..promotion import models as registered

    if not _registry_ready(project):
        raise ModelNotFoundError(f"no registered model {name!r}: this project has no model registry yet")
    return jsonable(registered(name, project=project))


def deployments(project, timeout: float = 1.0) -> list[dict]:
    """The live deployments: address, versions served, health, requests and errors (a supervisor that does not
    answer within ``timeout`` seconds is ``answering: False``)."""
    from ..serving.rollout import deployments_dir, status

    if not deployments_dir(project).is_dir():
        return []
    found = status(project=project, timeout=timeout)
    return jsonable([{k: v for k, v in d.items() if k != "token"} for d in found])


def monitoring(project, name: str, alerts: int = 20) -> dict:
    """The latest monitoring verdict of model ``name``: ``report`` (a summary of the latest report, or None when
    it was never monitored), ``alerts`` (the latest ones) and ``report_file`` (the HTML report's path)."""
    from ..monitoring.model_monitor import latest_report
    from ..promotion.actions import check_model_name

    check_model_name(name)
    report = None
    if project.metadata_path.exists():
        try:
            report = latest_report(name, project=project)
        except NotFoundError:
            pass
    summary = None
    if report is not None:
        drift = report.get("data_drift") or {}
        prediction = report.get("prediction_drift") or {}
        summary = {
            "model": report.get("model"),
            "version": report.get("version"),
            "since": report.get("since"),
            "until": report.get("until"),
            "dataset_drift": drift.get("dataset_drift"),
            "drift_share": drift.get("drift_share"),
            "drifted": [c["column"] for c in drift.get("columns", []) if c.get("drifted")],
            "columns": len(drift.get("columns", [])),
            "prediction_drift": prediction.get("drifted") if prediction else None,
            "performance": (report.get("performance") or {}).get("overall"),
            "rows": (report.get("service") or {}).get("rows"),
            "alerts": len(report.get("alerts") or []),
            "run_id": report.get("run_id"),
        }
    records = project.metadata.alerts(name, limit=alerts) if project.metadata_path.exists() else []
    html = report.get("html") if report else None
    return jsonable(
        {
            "model": name,
            "report": summary,
            "alerts": records,
            "report_file": html if html and Path(html).is_file() else None,
        }
    )
