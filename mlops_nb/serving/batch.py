"""Batch scoring and ground truth: ``mlops_nb.score`` and ``mlops_nb.log_labels``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..exceptions import MlopsError, ServingError
from ..project import current_project


def read_table(
    path: Path, error: type[MlopsError] = ServingError, what: str = "", hint: str = "give the input as one of them"
):
    """A Parquet or CSV file as a pandas DataFrame, or ``error`` with one line (``what`` names the file's role)."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {what}{path}: {str(exc).splitlines()[0][:200]}") from None
    raise error(f"{what}{path} is neither .parquet nor .csv; {hint}")


def score(
    model: str,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    batch_size: int = 10_000,
    project=None,
    trigger: str = "api",
    progress: bool = True,
) -> dict[str, Any]:
    """Score a file with a model's app bundle, in batches, and write the predictions (and probabilities) next to
    the input's columns; record a run of kind ``deploy`` whose step reads the bundle and the input file and
    outputs the scored file, so lineage leads from it back to the model version.

    Args:
        model: ``NAME@ALIAS``, ``NAME/VERSION``, or a bundle's folder or hash.
        data: the input, ``.parquet`` or ``.csv``, with the model's input columns.
        output: where to write the result (``.parquet`` or ``.csv``).
        batch_size: rows scored at a time.

    Returns:
        ``rows``, ``output``, ``model``, ``version``, ``bundle`` and the run's ``run_id``.
    """
    import numpy as np

    from ..core import progress as progress_bars
    from ..core.clock import utcnow
    from ..core.records import ArtifactRef
    from .app import BadRequest, Scorer
    from .bundle import bundle_for

    project = current_project(project)
    source, target = Path(data), Path(output)
    if not source.is_file():
        raise ServingError(f"input file {source} does not exist")
    if target.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ServingError(f"output {target} must end in .parquet or .csv")
    if source.suffix.lower() not in (".parquet", ".pq", ".csv", ".txt"):  # before the build: seconds saved
        raise ServingError(f"{source} is neither .parquet nor .csv; give the input as one of them")
    built = bundle_for(str(model), project=project, trigger=trigger, progress=progress)
    started = utcnow()
    frame = read_table(source)
    scorer = Scorer(built.path, project.mlops_dir / "features")
    predictions: list = []
    probabilities: list = []
    bar = progress_bars.start(len(frame), f"score {built.model} v{built.version}", "row", enabled=progress)
    try:
        for start in range(0, max(len(frame), 1), batch_size):
            part = frame.iloc[start : start + batch_size]
            if part.empty:
                break
            try:
                columns, _ = scorer.prepare({str(c): part[c].to_numpy() for c in part.columns})
                got, proba = scorer.predict(columns)
            except BadRequest as exc:
                raise ServingError(f"{source}, rows {start}-{start + len(part) - 1}: {exc.message}") from None
            predictions.extend(got)
            probabilities.extend(proba if proba is not None else [np.nan] * len(got))
            bar.advance(len(part))
    finally:
        bar.close()
    result = frame.copy()
    result["prediction"] = predictions
    if scorer.has_proba:
        result["probability"] = probabilities
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    if target.suffix.lower() == ".csv":
        result.to_csv(tmp, index=False)
    else:
        result.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    bundle_ref = built.node()
    run_id = project.metadata.record_run(
        kind="deploy",
        status="succeeded",
        trigger=trigger,
        started_at=started,
        params={
            "action": "score",
            "model": built.model,
            "version": built.version,
            "bundle": built.bundle,
            "input": str(source),
            "output": str(target),
            "rows": len(result),
        },  # fmt: skip
        steps=[
            {
                "step": "score",
                "status": "succeeded",
                "inputs": {"bundle": bundle_ref, source.name: ArtifactRef.external(source)},
                "outputs": {target.name: ArtifactRef.external(target)},
                "started_at": started,
            }
        ],
    )
    return {"rows": len(result), "output": str(target), "model": built.model, "version": built.version,
            "bundle": built.bundle, "run_id": run_id}  # fmt: skip


def log_labels(request_ids, labels, *, rows=None, project=None) -> int:
    """Attach ground truth to logged predictions (see :meth:`PredictionLog.log_labels`); return how many.

    Example::

        mlops_nb.log_labels(["a1b2...", "c3d4..."], [1, 0])
    """
    return current_project(project).predictions.log_labels(request_ids, labels, rows)


def labels_from_file(path: str | os.PathLike, *, project=None) -> int:
    """Attach the labels of a CSV or Parquet file with columns ``request_id``, ``label`` (and ``row``)."""
    frame = read_table(Path(path))
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise ServingError(f"{path} has no column {missing[0]!r}; give request_id and label (and row) columns")
    if frame.empty:
        raise ServingError(f"{path} has no rows; give one request_id,label row per prediction to label")
    rows = frame["row"].tolist() if "row" in frame.columns else None
    return log_labels(frame["request_id"].tolist(), frame["label"].tolist(), rows=rows, project=project)


def request_lineage(request_id: str, *, direction: str = "up", depth: int | None = None, project=None):
    """The lineage of one logged prediction (``request:ID``): the request, the bundle that answered it, the model
    version the bundle was built from, its training data and raw files.

    Returns a :class:`~mlops_nb.store.lineage.LineageGraph` whose root is the request (kind ``prediction``)."""
    from ..exceptions import NotFoundError
    from ..store.lineage import LineageGraph, LineageNode

    project = current_project(project)
    row = project.predictions.find(request_id)
    request_id = row["request_id"]  # the whole id, when a prefix named it
    key = f"prediction:request:{request_id}"
    shown = "" if row.get("prediction") is None else f" -> {row['prediction']}"
    root = LineageNode(
        "prediction",
        f"request:{request_id}",
        f"request {request_id[:12]}{shown} [{row.get('status')}]",
        0,
        {
            "model": row.get("model"),
            "version": row.get("version"),
            "ts": str(row.get("ts")),
            "variant": row.get("variant"),
            "summary": f"{row.get('model')} v{row.get('version')}",
        },  # fmt: skip
    )
    graph = LineageGraph(key, {key: root})
    if direction == "down":
        return graph
    try:
        upstream = project.metadata.lineage(row["bundle"], direction="up", depth=None if depth is None else depth - 1)
    except NotFoundError:
        return graph  # a bundle built in another project
    for node_key, node in upstream.nodes.items():
        graph.nodes[node_key] = LineageNode(node.kind, node.id, node.label, node.depth - 1, node.attrs)
    graph.edges = [*upstream.edges, (upstream.root, key, "bundle")]
    return graph
