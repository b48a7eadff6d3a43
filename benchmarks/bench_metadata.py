"""Benchmark the metadata store's read queries side by side with MLflow's ``search_runs`` on the same runs.

What it measures
----------------
It builds one synthetic dataset (default 20,000 runs of a 5-step pipeline, so 100,000 step runs) and records it
twice: in an mlops_nb :class:`~mlops_nb.store.metadata.MetadataStore` (DuckDB) and in an MLflow SQLite tracking store.
Each run has 3 params (``lr`` from a set of 5 values, ``depth``, ``seed``) and 2 metrics (``accuracy``,
``loss``); about 5 % of the runs fail in their last step. The step runs are chained: step k's output artifact is
step k+1's input, and step 1 reads a raw dataset shared by 50 consecutive runs.

Then it times three queries, each ``--reps`` times after two warm-up calls, the three callers below taking turns
call by call (so a busy machine slows all alike), and prints p50 and p95 in ms:

1. the latest 50 runs with their status: ``store.list_runs(50)`` vs ``search_runs(max_results=50, order_by=
   ["attributes.start_time DESC"])``;
2. the runs with one param value: ``store.list_runs(None, params={"lr": 0.1})`` vs ``search_runs(filter_string=
   "params.lr = '0.1'")`` with every match returned (both must return the same runs), and the same with a limit
   of 50 (the first page of a runs table);
3. a 5-deep upstream lineage of the last step's output: ``store.lineage(hash, direction="up", depth=5)`` vs what
   an MLflow user has to do: one ``search_runs`` for the step run whose ``output_artifact`` tag is the hash, then
   one ``search_runs`` per step following its ``upstream_run`` tag (5 calls in all).

The callers:

* *reader*: one long-lived ``MetadataStore``, as a sidebar holds. It holds no connection between calls (DESIGN
  invariant 3: while any process holds the file open, even read-only, no other process can write it); it keeps
  the answers it read while the file is unchanged, checked on every call (a few ``stat`` calls), so a repeated
  query on a quiet file is answered from memory. The targets are on this column.
* *uncached*: ``MetadataStore(path, cache_reads=False)``: every call opens the file and reads it (the floor of
  that, opening and closing a DuckDB connection, is printed first). It is what a poll right after a write costs.
* MLflow: one ``MlflowClient`` with its SQLAlchemy connection pool.

Targets at 20,000 runs: reader p50 <= 6 ms for the latest 50 and the filtered latest 50, <= 10 ms for the 5-deep
lineage, and reader / MLflow p50 <= 1/7 (at least 7x faster) on each; every row prints its ratios. The filter
returning every match is shown without a target. Before timing, the objects the benchmark itself holds (the
generated dataset) are moved out of the garbage collector's reach with ``gc.freeze()``, so that collections
traversing them do not land in any side's timings.

The polling row
---------------
A sidebar polls while runs write. In a project whose store is a copy of the one above, a 10-step notebook (the one
``benchmarks/bench_notebook.py`` builds: chained pandas / scikit-learn steps, ``--poll-step-seconds`` each) runs
with ``mlops-nb run`` (papermill, a real kernel; a new ``seed`` each time, so every step runs), ``--repeat`` times
alone and ``--repeat`` times while another process polls ``list_runs(50)`` + ``get_run`` of the newest run every
0.5 s, the two alternating (alone first, then polled first, ...). It prints the median wall clock of each, the
slowdown in % (target <= 5 %: the median of each repetition's polled / alone, as the two ran back to back), every
repetition, the CPU other processes of the machine used meanwhile (how noisy the figures are), the polls made, how many answers came from memory, the reader's
poll p50, and the ``StoreBusyError`` count of the reader (target 0; a writer that gave up would fail its run).
``--no-poll`` leaves it out, ``--only-poll`` runs it alone (no MLflow); ``--smoke`` makes it one small run each way without the warm-up run (it shows the
row works, not what it costs).

How the data is loaded
----------------------
Both stores are bulk-loaded, because logging 100,000 step runs call by call would take far longer than the
queries being measured (each mlops_nb write opens a DuckDB connection; MLflow takes ~3-4 ms per tracking call):

* mlops_nb: ``MetadataStore(path)`` creates the schema, then one DuckDB connection inserts pandas DataFrames whose
  columns match the tables exactly (``INSERT ... BY NAME``) and advances ``step_run_seq`` past them. The data is
  then checked through the public API (``get_run``, ``list_runs``, ``lineage``), and a copy of the file takes a new
  run written by the API, to show bulk rows and API rows mix.
* MLflow: the first ``--api-sample`` runs (with their step runs) are logged through the public ``MlflowClient``
  (``create_run`` + ``log_batch`` + ``set_terminated``); their rate is printed with the time the whole dataset
  would take that way. The other runs are inserted with ``sqlite3`` into MLflow's ``runs``, ``tags``, ``params``,
  ``metrics`` and ``latest_metrics`` tables, copying every constant column from a run the API wrote, and
  ``MlflowClient.get_run`` of a bulk row is checked against an API-logged one.

MLflow keeps the step runs as child runs (tag ``mlflow.parentRunId``) in a second experiment, so that query 1 and
2 search only the pipeline runs. Examples::

    .venv/bin/python benchmarks/bench_metadata.py --smoke          # 300 runs, 20 repetitions, 1 polled run
    BENCH_SIZE=smoke .venv/bin/python benchmarks/bench_metadata.py   # the same (--no-smoke: full size)
    .venv/bin/python benchmarks/bench_metadata.py --repeat 3       # 20,000 runs, 100 repetitions: minutes
    .venv/bin/python benchmarks/bench_metadata.py --runs 5000 --out /tmp/bench --keep --no-poll
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _results
import numpy as np
import pandas as pd
from tqdm import tqdm

from mlops_nb.store.metadata import MetadataStore

STEP_NAMES = ("clean", "featurize", "split", "train", "evaluate")
OUTPUT_NAMES = ("clean", "features", "train_set", "model", "report")
OUTPUT_KINDS = ("parquet", "parquet", "parquet", "pickle", "json")
SUMMARIES = {"parquet": "DataFrame 1000x12", "pickle": "RandomForestClassifier", "json": "dict of 4"}
LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
FILTER_LR = 0.1
RUNS_PER_DATASET = 50  # consecutive runs that read the same raw dataset
RUN_GAP_S = 30  # seconds between run starts
STEP_GAP_S = 5  # seconds between step starts within a run
FAIL_RATE = 0.05
LIMIT = 50
MAX_LINEAGE_DEPTH = 5
P50_TARGET_MS = {"latest": 6.0, "filter page": 6.0, "lineage": 10.0}  # reader p50, at 20,000 runs
RATIO_TARGET = 1 / 7  # reader / MLflow p50: at least 7x faster
POLL_INTERVAL_S = 0.5
POLL_SLOWDOWN_TARGET = 5.0  # % the polling reader may slow the run by
PIPELINE = "bench"
MLFLOW_RUNS_EXPERIMENT = "mlops-nb-bench-runs"
MLFLOW_STEPS_EXPERIMENT = "mlops-nb-bench-steps"


# Dataset -----------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """One synthetic dataset, as mlops_nb tables and as the per-run fields MLflow needs.

    Attributes:
        n_runs, steps: runs and step runs per run.
        tables: table name -> DataFrame with exactly that table's columns.
        run_ids: mlops_nb run ids, oldest first.
        run_status: ``succeeded`` or ``failed`` per run.
        start_ms, end_ms: run start and end, ms since the epoch.
        params: per run, name -> value.
        metrics: per run, name -> value.
        step_names: the step names in order.
        step_status: ``(n_runs, steps)`` status of each step run.
        step_start_ms, step_end_ms: ``(n_runs, steps)`` ms since the epoch.
        inputs, outputs: ``(n_runs, steps)`` artifact hashes; ``outputs`` is None where a step failed.
    """

    n_runs: int
    steps: int
    tables: dict[str, pd.DataFrame]
    run_ids: list[str]
    run_status: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    params: list[dict[str, Any]]
    metrics: list[dict[str, float]]
    step_names: list[str]
    step_status: np.ndarray
    step_start_ms: np.ndarray
    step_end_ms: np.ndarray
    inputs: np.ndarray
    outputs: np.ndarray

    @property
    def n_step_runs(self) -> int:
        """Step runs in all."""
        return self.n_runs * self.steps

    def step_run_id(self, run: int, step: int) -> str:
        """The mlops_nb id of step ``step`` (0-based) of run ``run``."""
        return f"{self.run_ids[run]}.{step + 1}"

    def last_succeeded(self) -> int:
        """Index of the newest run that succeeded."""
        return int(np.flatnonzero(self.run_status == "succeeded")[-1])


def _hex_ids(rng: np.random.Generator, count: int, nbytes: int = 32) -> list[str]:
    """``count`` random hex strings of ``2 * nbytes`` characters (64 by default, like a sha256)."""
    text = rng.bytes(nbytes * count).hex()
    width = 2 * nbytes
    return [text[i : i + width] for i in range(0, len(text), width)]


def _ms(index: pd.DatetimeIndex) -> np.ndarray:
    """Milliseconds since the epoch of naive UTC timestamps."""
    return ((index - pd.Timestamp(0)) // pd.Timedelta(1, "ms")).to_numpy().astype(np.int64)


def _pick(names: tuple[str, ...], k: int, fallback: str) -> str:
    return names[k] if k < len(names) else fallback


def generate(n_runs: int, steps: int, seed: int, artifact_root: Path) -> Dataset:
    """Build the dataset: runs, step runs, artifacts, events, params and metrics, in mlops_nb's id formats."""
    rng = np.random.default_rng(seed)
    index = np.arange(n_runs)
    started = pd.Timestamp("2026-01-01") + pd.to_timedelta(index * RUN_GAP_S, unit="s")
    suffixes = _hex_ids(rng, n_runs, 4)
    run_ids = [f"{stamp}{suffix}" for stamp, suffix in zip(started.strftime("%Y%m%d-%H%M%S-"), suffixes, strict=True)]
    failed = rng.random(n_runs) < FAIL_RATE
    failed[-1] = False  # the newest run succeeds, so there is a full chain to trace
    run_status = np.where(failed, "failed", "succeeded")

    step_names = [_pick(STEP_NAMES, k, f"step{k + 1}") for k in range(steps)]
    out_names = [_pick(OUTPUT_NAMES, k, f"out{k + 1}") for k in range(steps)]
    in_names = ["raw", *out_names[:-1]]
    out_kinds = [_pick(OUTPUT_KINDS, k, "parquet") for k in range(steps)]

    # step runs, row-major: run r, step k -> row r * steps + k
    run_of = np.repeat(index, steps)
    step_of = np.tile(np.arange(steps), n_runs)
    step_start = started[run_of] + pd.to_timedelta(step_of * STEP_GAP_S, unit="s")
    step_end = step_start + pd.Timedelta(seconds=STEP_GAP_S - 1)
    ended = step_end[steps - 1 :: steps]
    last_failed = (step_of == steps - 1) & failed[run_of]
    step_status = np.where(last_failed, "failed", "succeeded")
    step_ids = [f"{run_ids[r]}.{k + 1}" for r, k in zip(run_of, step_of, strict=True)]

    outputs = np.array(_hex_ids(rng, n_runs * steps), dtype=object).reshape(n_runs, steps)
    outputs[failed, steps - 1] = None
    raw = _hex_ids(rng, math.ceil(n_runs / RUNS_PER_DATASET))
    inputs = np.empty((n_runs, steps), dtype=object)
    inputs[:, 0] = [raw[r // RUNS_PER_DATASET] for r in index]
    inputs[:, 1:] = outputs[:, :-1]

    lr = np.array(LRS)[rng.integers(0, len(LRS), n_runs)]
    depth = rng.integers(3, 13, n_runs)
    params = [{"lr": float(a), "depth": int(b), "seed": int(c)} for a, b, c in zip(lr, depth, index, strict=True)]
    accuracy = rng.uniform(0.6, 0.99, n_runs)
    loss = rng.uniform(0.05, 1.0, n_runs)
    metrics = [{"accuracy": float(a), "loss": float(b)} for a, b in zip(accuracy, loss, strict=True)]
    metric_step = max(0, steps - 2)  # the train step logs them

    git_commit = _hex_ids(rng, 1, 20)[0]
    notebook_hash = _hex_ids(rng, 1)[0]
    error = "ValueError: evaluation failed"
    runs = pd.DataFrame(
        {
            "id": run_ids,
            "pipeline": PIPELINE,
            "notebook": "pipeline.ipynb",
            "notebook_hash": notebook_hash,
            "params": [json.dumps(p, sort_keys=True) for p in params],
            "executor": "notebook",
            "trigger": "manual",
            "status": run_status,
            "started_at": started,
            "ended_at": ended,
            "host": "bench-host",
            "pid": 10_000 + index,
            "pid_started": _ms(started) / 1000.0,
            "git_commit": git_commit,
            "git_dirty": False,
            "error": np.where(failed, error, None),
            "executed_notebook": None,
            "kind": "pipeline",
            "fired_by": None,
        }
    )
    step_runs = pd.DataFrame(
        {
            "id": step_ids,
            "seq": np.arange(1, n_runs * steps + 1, dtype=np.int64),
            "run_id": [run_ids[r] for r in run_of],
            "step": [step_names[k] for k in step_of],
            "status": step_status,
            "why": "no cached result",
            "cache_key": _hex_ids(rng, n_runs * steps),
            "cached_from": None,
            "started_at": step_start,
            "ended_at": step_end,
            "error": np.where(last_failed, error, None),
            "cell_index": (step_of + 1).astype(np.int32),
            "attempt": np.ones(n_runs * steps, dtype=np.int32),
            "key_parts": None,
            "executed_notebook": None,
        }
    )
    has_out = outputs.reshape(-1) != None  # noqa: E711 - elementwise on an object array
    out_hashes = outputs.reshape(-1)[has_out]
    out_kind = np.array(out_kinds, dtype=object)[step_of[has_out]]
    artifacts = pd.DataFrame(
        {
            "hash": [*raw, *out_hashes],
            "kind": ["parquet"] * len(raw) + list(out_kind),
            "size": rng.integers(1_000, 100_000_000, len(raw) + len(out_hashes)),
            "summary": ["DataFrame 100000x20"] * len(raw) + [SUMMARIES[k] for k in out_kind],
            "created_at": pd.DatetimeIndex([pd.Timestamp("2025-12-31")] * len(raw)).append(step_end[has_out]),
        }
    )
    artifacts["uri"] = [f"{artifact_root}/{h[:2]}/{h}.{k}" for h, k in zip(artifacts.hash, artifacts.kind, strict=True)]
    events = pd.concat(
        [
            pd.DataFrame(
                {
                    "step_run_id": step_ids,
                    "artifact": inputs.reshape(-1),
                    "direction": "in",
                    "name": [in_names[k] for k in step_of],
                    # the step run whose output was loaded: the step before, in the same run (none for raw data)
                    "source": [step_ids[i - 1] if k else None for i, k in enumerate(step_of)],
                }
            ),
            pd.DataFrame(
                {
                    "step_run_id": np.array(step_ids, dtype=object)[has_out],
                    "artifact": out_hashes,
                    "direction": "out",
                    "name": [out_names[k] for k in step_of[has_out]],
                    "source": None,
                }
            ),
        ],
        ignore_index=True,
    )
    params_table = pd.DataFrame(
        [(run_ids[r], name, json.dumps(value)) for r in index for name, value in params[r].items()],
        columns=["run_id", "name", "value"],
    )
    metric_rows = run_of[step_of == metric_step]
    metrics_table = pd.DataFrame(
        [
            (run_ids[r], f"{run_ids[r]}.{metric_step + 1}", name, value, step_end[r * steps + metric_step])
            for r in metric_rows
            for name, value in metrics[r].items()
        ],
        columns=["run_id", "step_run_id", "name", "value", "logged_at"],
    )
    metrics_table.insert(4, "step", pd.array([pd.NA] * len(metrics_table), dtype="Int64"))
    pipelines = pd.DataFrame({"name": [PIPELINE], "notebook": ["pipeline.ipynb"], "created_at": [started[0]]})
    return Dataset(
        n_runs=n_runs,
        steps=steps,
        tables={
            "pipelines": pipelines,
            "runs": runs,
            "step_runs": step_runs,
            "artifacts": artifacts,
            "events": events,
            "params": params_table,
            "metrics": metrics_table,
        },
        run_ids=run_ids,
        run_status=run_status,
        start_ms=_ms(started),
        end_ms=_ms(ended),
        params=params,
        metrics=metrics,
        step_names=step_names,
        step_status=step_status.reshape(n_runs, steps),
        step_start_ms=_ms(step_start).reshape(n_runs, steps),
        step_end_ms=_ms(step_end).reshape(n_runs, steps),
        inputs=inputs,
        outputs=outputs,
    )


# mlops_nb ----------------------------------------------------------------------------------------------------
def load_ours(path: Path, data: Dataset) -> MetadataStore:
    """Create the store through the API, bulk-insert the dataset on one DuckDB connection, and return the store."""
    import duckdb

    store = MetadataStore(path)  # creates the schema; it holds no connection between calls
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN TRANSACTION")
        for table, frame in data.tables.items():
            columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
            if sorted(columns) != sorted(frame.columns):
                raise RuntimeError(f"{table}: generated columns {sorted(frame.columns)} != table's {sorted(columns)}")
            con.register("frame", frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")
            con.unregister("frame")
        # the API numbers step runs from this sequence: move it past the bulk rows
        con.execute("SELECT max(nextval('step_run_seq')) FROM range(?)", [data.n_step_runs]).fetchall()
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return store


def verify_ours(store: MetadataStore, data: Dataset, depth: int) -> None:
    """Check the bulk rows through the public API, and that an API write on a copy of the file fits with them."""
    from mlops_nb.store.artifacts import ArtifactRef

    r = data.last_succeeded()
    run = store.get_run(data.run_ids[r])
    if len(run.step_runs) != data.steps or run.params != data.params[r] or set(run.metrics) != set(data.metrics[r]):
        raise AssertionError(f"get_run({run.id}) does not match the generated run")
    for k, step_run in enumerate(run.step_runs):
        if step_run.id != data.step_run_id(r, k) or step_run.step != data.step_names[k]:
            raise AssertionError(f"step run {k + 1} of {run.id} is {step_run.id} {step_run.step}")
        if [ref.hash for ref in step_run.inputs.values()] != [data.inputs[r, k]]:
            raise AssertionError(f"inputs of {step_run.id}: {step_run.inputs}")
        if [ref.hash for ref in step_run.outputs.values()] != [data.outputs[r, k]]:
            raise AssertionError(f"outputs of {step_run.id}: {step_run.outputs}")
        if k and step_run.inputs != run.step_runs[k - 1].outputs:
            raise AssertionError(f"{step_run.id} does not read what the step before it wrote")
    failed = np.flatnonzero(data.run_status == "failed")
    if len(failed):
        bad = store.get_run(data.run_ids[failed[-1]])
        if bad.status != "failed" or bad.step_runs[-1].status != "failed" or bad.step_runs[-1].outputs:
            raise AssertionError(f"failed run {bad.id} reads back as {bad.status}")
    latest = store.list_runs(3)
    if [x.id for x in latest] != data.run_ids[::-1][:3] or latest[0].step_counts.get("succeeded") != data.steps:
        raise AssertionError(f"list_runs(3) returned {[(x.id, x.step_counts) for x in latest]}")
    graph = store.lineage(data.outputs[r, -1], direction="up", depth=depth)
    if len(graph.nodes) != 2 * depth + 1 or len(graph.edges) != 2 * depth:
        raise AssertionError(f"lineage: {len(graph.nodes)} nodes, {len(graph.edges)} edges; want {2 * depth + 1}")

    with tempfile.TemporaryDirectory() as folder:  # an API write next to the bulk rows, on a copy
        last_id = data.step_run_id(r, data.steps - 1)
        copy = Path(folder) / "copy.duckdb"
        shutil.copy(store.path, copy)
        other = MetadataStore(copy)
        new = other.create_run(PIPELINE, params=data.params[r])
        (last,) = other.get_step_run(last_id).outputs.values()
        step_run = other.start_step(new, "reuse", inputs={"report": last}, sources={"report": last_id})
        other.finish_step(step_run, "succeeded", outputs={"copy": ArtifactRef("ab" * 32, "json")})
        other.finish_run(new, "succeeded")
        back = other.get_run(new)
        if other.list_runs(1)[0].id != new or back.step_runs[0].id != f"{new}.1":
            raise AssertionError("a run written by the API after the bulk load reads back wrongly")
        down = other.lineage(data.outputs[r, -1], direction="down", depth=1)
        if f"step_run:{new}.1" not in down.nodes:
            raise AssertionError("the API-written step run is not downstream of the bulk artifact it read")
        seq = other.sql("SELECT seq FROM step_runs WHERE id = ?", [f"{new}.1"]).iloc[0, 0]
        if seq <= data.n_step_runs:
            raise AssertionError(f"step_run_seq was not advanced past the bulk rows (new seq {seq})")


# MLflow ------------------------------------------------------------------------------------------------------
def _mlflow_status(status: str) -> str:
    return {"succeeded": "FINISHED", "failed": "FAILED"}[status]


def _run_tags(data: Dataset, r: int) -> dict[str, str]:
    return {"mlops_run_id": data.run_ids[r], "pipeline": PIPELINE}


def _step_tags(data: Dataset, r: int, k: int, parent: str, upstream: str | None) -> dict[str, str]:
    tags = {
        "mlflow.parentRunId": parent,
        "step": data.step_names[k],
        "mlops_step_run_id": data.step_run_id(r, k),
        "input_artifact": data.inputs[r, k],
    }
    if data.outputs[r, k] is not None:
        tags["output_artifact"] = data.outputs[r, k]
    if upstream:
        tags["upstream_run"] = upstream  # the MLflow run that produced this step's input
    return tags


def log_mlflow_api(client, data: Dataset, exp_runs: str, exp_steps: str, count: int) -> tuple[list[str], list[str]]:
    """Log the first ``count`` runs and their step runs through ``MlflowClient``; return their MLflow run ids."""
    from mlflow.entities import Metric, Param

    run_uuids, step_uuids = [], []
    for r in tqdm(range(count), desc="MLflow API", unit="run", leave=False):
        parent = client.create_run(
            exp_runs, start_time=int(data.start_ms[r]), tags=_run_tags(data, r), run_name=data.run_ids[r]
        ).info.run_id
        client.log_batch(
            parent,
            params=[Param(k, str(v)) for k, v in data.params[r].items()],
            metrics=[Metric(k, v, int(data.end_ms[r]), 0) for k, v in data.metrics[r].items()],
        )
        upstream = None
        for k in range(data.steps):
            child = client.create_run(
                exp_steps,
                start_time=int(data.step_start_ms[r, k]),
                tags=_step_tags(data, r, k, parent, upstream),
                run_name=data.step_run_id(r, k),
            ).info.run_id
            client.set_terminated(child, _mlflow_status(data.step_status[r, k]), end_time=int(data.step_end_ms[r, k]))
            step_uuids.append(child)
            upstream = child
        client.set_terminated(parent, _mlflow_status(data.run_status[r]), end_time=int(data.end_ms[r]))
        run_uuids.append(parent)
    return run_uuids, step_uuids


def load_mlflow_bulk(
    db: Path, data: Dataset, exp_runs: str, exp_steps: str, start: int, template_run: str, template_step: str
) -> None:
    """Insert runs ``start..`` with sqlite3 into MLflow's tables, in the form the API wrote the template runs."""
    con = sqlite3.connect(db)
    try:
        columns = [row[1] for row in con.execute("PRAGMA table_info(runs)")]
        templates = {}
        for key, run_uuid in (("run", template_run), ("step", template_step)):
            row = con.execute("SELECT * FROM runs WHERE run_uuid = ?", [run_uuid]).fetchone()
            templates[key] = (run_uuid, dict(zip(columns, row, strict=True)))
        insert_run = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        def run_row(kind: str, run_uuid: str, name: str, status: str, start_ms: int, end_ms: int) -> list:
            template_uuid, template = templates[kind]
            row = dict(template, run_uuid=run_uuid, name=name, status=status, start_time=start_ms, end_time=end_ms)
            row["artifact_uri"] = template["artifact_uri"].replace(template_uuid, run_uuid)
            return [row[c] for c in columns]

        chunk = 1000
        with tqdm(total=data.n_runs - start, desc="MLflow bulk", unit="run", leave=False) as bar:
            for first in range(start, data.n_runs, chunk):
                runs, tags, params, metrics = [], [], [], []
                for r in range(first, min(first + chunk, data.n_runs)):
                    parent = uuid.uuid4().hex
                    runs.append(
                        run_row(
                            "run",
                            parent,
                            data.run_ids[r],
                            _mlflow_status(data.run_status[r]),
                            int(data.start_ms[r]),
                            int(data.end_ms[r]),
                        )
                    )
                    tags += [
                        (k, v, parent) for k, v in {"mlflow.runName": data.run_ids[r], **_run_tags(data, r)}.items()
                    ]
                    params += [(k, str(v), parent) for k, v in data.params[r].items()]
                    metrics += [(k, v, int(data.end_ms[r]), 0, False, parent) for k, v in data.metrics[r].items()]
                    upstream = None
                    for k in range(data.steps):
                        child = uuid.uuid4().hex
                        runs.append(
                            run_row(
                                "step",
                                child,
                                data.step_run_id(r, k),
                                _mlflow_status(data.step_status[r, k]),
                                int(data.step_start_ms[r, k]),
                                int(data.step_end_ms[r, k]),
                            )
                        )
                        step_tags = {"mlflow.runName": data.step_run_id(r, k)}
                        step_tags |= _step_tags(data, r, k, parent, upstream)
                        tags += [(key, value, child) for key, value in step_tags.items()]
                        upstream = child
                with con:  # one transaction per chunk
                    con.executemany(insert_run, runs)
                    con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tags)
                    con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", params)
                    for table in ("metrics", "latest_metrics"):
                        con.executemany(
                            f"INSERT INTO {table} (key, value, timestamp, step, is_nan, run_uuid) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            metrics,
                        )
                bar.update(min(chunk, data.n_runs - first))
    finally:
        con.close()


def _shape(run) -> dict:
    """What must agree between an API-logged and a bulk-loaded MLflow run (ids and values left out)."""
    info = run.info
    return {
        "params": sorted(run.data.params),
        "metrics": sorted(run.data.metrics),
        "tags": sorted(k for k in run.data.tags if k not in ("output_artifact", "upstream_run")),
        "user_id": info.user_id,
        "lifecycle_stage": info.lifecycle_stage,
        "artifact_uri": info.artifact_uri.replace(info.run_id, "RUN"),
        "experiment_id": info.experiment_id,
        "ended": info.status in ("FINISHED", "FAILED") and info.end_time is not None,
    }


def verify_mlflow(client, data: Dataset, exp_runs: str, api_runs: list[str]) -> None:
    """Check a bulk-loaded MLflow run reads back like an API-logged one, and every run is there."""
    found = client.search_runs([exp_runs], filter_string=f"attributes.run_name = '{data.run_ids[-1]}'")
    if len(found) != 1:
        raise AssertionError(f"MLflow has {len(found)} runs named {data.run_ids[-1]}")
    bulk, api = found[0], client.get_run(api_runs[0])
    if _shape(bulk) != _shape(api):
        raise AssertionError(f"bulk MLflow run {_shape(bulk)} != API-logged {_shape(api)}")
    if bulk.data.params != {k: str(v) for k, v in data.params[-1].items()}:
        raise AssertionError(f"MLflow params of the newest run: {bulk.data.params}")
    total = len(search_all(client, exp_runs, None))
    if total != data.n_runs:
        raise AssertionError(f"MLflow holds {total} pipeline runs, want {data.n_runs}")


def search_all(client, experiment: str, filter_string: str | None) -> list:
    """Every run of ``experiment`` matching ``filter_string``, newest first, paging past MLflow's 50,000 cap."""
    from mlflow.store.tracking import SEARCH_MAX_RESULTS_THRESHOLD

    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment],
            filter_string=filter_string or "",
            max_results=SEARCH_MAX_RESULTS_THRESHOLD,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            return runs


def mlflow_lineage(client, experiment: str, digest: str, depth: int) -> list:
    """The step runs up to ``depth`` steps upstream of artifact ``digest``, found as an MLflow user would."""
    found = client.search_runs([experiment], filter_string=f"tags.output_artifact = '{digest}'", max_results=1)
    chain = list(found)
    while chain and len(chain) < depth and "upstream_run" in chain[-1].data.tags:
        upstream = chain[-1].data.tags["upstream_run"]
        chain += client.search_runs([experiment], filter_string=f"attributes.run_id = '{upstream}'", max_results=1)
    return chain


# Timing and report -------------------------------------------------------------------------------------------
def timed(*fns: Callable[[], Any], reps: int, warmup: int = 2) -> list[np.ndarray]:
    """Milliseconds of ``reps`` calls of each of ``fns`` after ``warmup`` untimed ones.

    The functions take turns call by call (in an order that rotates), so that a busy machine slows each alike.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    out = [np.empty(reps) for _ in fns]
    for i in range(reps):
        for j in range(len(fns)):
            k = (i + j) % len(fns)
            t0 = time.perf_counter()
            fns[k]()
            out[k][i] = (time.perf_counter() - t0) * 1000
    return out


@dataclass
class Result:
    """p50/p95 of one query on each side."""

    query: str
    rows: str
    target: float | None  # reader p50 target in ms (None: no target)
    reader: np.ndarray
    uncached: np.ndarray
    theirs: np.ndarray

    def p(self, side: str, q: int) -> float:
        """Percentile ``q`` of a side's milliseconds."""
        return float(np.percentile(getattr(self, side), q))

    def line(self) -> list[str]:
        """The table row."""
        o50, u50, m50 = self.p("reader", 50), self.p("uncached", 50), self.p("theirs", 50)
        return [
            self.query,
            self.rows,
            f"{o50:.2f}",
            f"{self.p('reader', 95):.2f}",
            f"{u50:.1f}",
            f"{self.p('uncached', 95):.1f}",
            f"{m50:.1f}",
            f"{self.p('theirs', 95):.1f}",
            f"{o50 / m50:.4f} ({m50 / o50:.0f}x)",
            f"{u50 / m50:.3f} ({m50 / u50:.1f}x)",
            f"<={self.target:g} ms, >=7x" if self.target is not None else "-",
            "-" if self.target is None else ("yes" if self.met else "NO"),
        ]

    @property
    def met(self) -> bool:
        """The reader's p50 target and the ratio target are met (always, for a row without a target)."""
        if self.target is None:
            return True
        o50 = self.p("reader", 50)
        return o50 <= self.target and o50 / self.p("theirs", 50) <= RATIO_TARGET


def print_table(results: list[Result]) -> None:
    """Print the results as an aligned text table."""
    header = [
        "query",
        "rows",
        "reader p50",
        "reader p95",
        "uncached p50",
        "uncached p95",
        "MLflow p50",
        "MLflow p95",
        "reader/MLflow p50",
        "uncached/MLflow p50",
        "target (reader p50)",
        "met",
    ]
    lines = [header] + [r.line() for r in results]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def run_queries(store: MetadataStore, client, data: Dataset, exp_runs: str, exp_steps: str, depth: int, reps: int):
    """Check both stores answer each query alike, then time them; return the results."""
    import duckdb

    reader = store  # long-lived: it keeps answers while the file is unchanged
    uncached = MetadataStore(store.path, cache_reads=False)

    ours_latest = store.list_runs(LIMIT)
    theirs_latest = client.search_runs([exp_runs], max_results=LIMIT, order_by=["attributes.start_time DESC"])
    ours_pairs = [(r.id, _mlflow_status(r.status)) for r in ours_latest]
    if ours_pairs != [(r.info.run_name, r.info.status) for r in theirs_latest]:
        raise AssertionError("the latest runs differ between mlops_nb and MLflow")

    flt = f"params.lr = '{FILTER_LR}'"
    ours_filtered = {r.id for r in store.list_runs(None, params={"lr": FILTER_LR})}
    theirs_filtered = {r.info.run_name for r in search_all(client, exp_runs, flt)}
    expected = {data.run_ids[i] for i, p in enumerate(data.params) if p["lr"] == FILTER_LR}
    if not ours_filtered == theirs_filtered == expected:
        raise AssertionError(f"lr filter: ours {len(ours_filtered)}, MLflow {len(theirs_filtered)}")

    ours_page = [r.id for r in store.list_runs(LIMIT, params={"lr": FILTER_LR})]
    theirs_page = client.search_runs(
        [exp_runs], filter_string=flt, max_results=LIMIT, order_by=["attributes.start_time DESC"]
    )
    if ours_page != [r.info.run_name for r in theirs_page]:
        raise AssertionError("the first page of the lr filter differs between mlops_nb and MLflow")

    r = data.last_succeeded()
    digest = data.outputs[r, -1]
    graph = store.lineage(digest, direction="up", depth=depth)
    chain = mlflow_lineage(client, exp_steps, digest, depth)
    ours_steps = {n.id for n in graph.nodes.values() if n.kind == "step_run"}
    theirs_steps = {run.data.tags["mlops_step_run_id"] for run in chain}
    theirs_artifacts = {run.data.tags["input_artifact"] for run in chain} | {chain[0].data.tags["output_artifact"]}
    ours_artifacts = {n.id for n in graph.nodes.values() if n.kind == "artifact"}
    if ours_steps != theirs_steps or ours_artifacts != theirs_artifacts or len(ours_steps) != depth:
        raise AssertionError("the lineage differs between mlops_nb and MLflow")

    for ours in (reader, uncached):  # both callers answer alike (the reader from memory by now)
        if [r.id for r in ours.list_runs(LIMIT)] != [r.id for r in ours_latest]:
            raise AssertionError("the reader's latest runs differ from the first answer")
        if ours.lineage(digest, direction="up", depth=depth).to_dict() != graph.to_dict():
            raise AssertionError("the reader's lineage differs from the first answer")

    queries = [
        (
            f"latest {LIMIT} runs + status",
            str(len(ours_latest)),
            P50_TARGET_MS["latest"],
            lambda ours: ours.list_runs(LIMIT),
            lambda: client.search_runs([exp_runs], max_results=LIMIT, order_by=["attributes.start_time DESC"]),
        ),
        (
            f"filter lr = {FILTER_LR}, all",
            str(len(ours_filtered)),
            None,
            lambda ours: ours.list_runs(None, params={"lr": FILTER_LR}),
            lambda: search_all(client, exp_runs, flt),
        ),
        (
            f"filter lr = {FILTER_LR}, latest {LIMIT}",
            str(len(ours_page)),
            P50_TARGET_MS["filter page"],
            lambda ours: ours.list_runs(LIMIT, params={"lr": FILTER_LR}),
            lambda: client.search_runs(
                [exp_runs], filter_string=flt, max_results=LIMIT, order_by=["attributes.start_time DESC"]
            ),
        ),
        (
            f"lineage up, depth {depth}",
            f"{len(graph.nodes)} nodes",
            P50_TARGET_MS["lineage"],
            lambda ours: ours.lineage(digest, direction="up", depth=depth),
            lambda: mlflow_lineage(client, exp_steps, digest, depth),
        ),
    ]
    gc.collect()
    gc.freeze()  # the dataset the benchmark holds is no part of either store's cost
    (floor,) = timed(lambda: duckdb.connect(str(store.path), read_only=True).close(), reps=reps)
    print(
        f"  floor of every mlops_nb call, opening + closing a DuckDB connection: p50 {np.percentile(floor, 50):.1f} "
        f"ms, p95 {np.percentile(floor, 95):.1f} ms"
    )
    results = []
    for name, rows, target, ours, theirs in queries:
        print(f"  timing {name} ({reps} reps each) ...", flush=True)
        times = timed(lambda ours=ours: ours(reader), lambda ours=ours: ours(uncached), theirs, reps=reps)
        results.append(Result(name, rows, target, *times))
    return results


# The polling row ---------------------------------------------------------------------------------------------
def poll_reader(db: str) -> None:
    """Child process: one long-lived store polling ``list_runs(50)`` + ``get_run`` of the newest run every
    ``POLL_INTERVAL_S`` until stdin closes; prints ``ready`` after the first poll, then one JSON line of stats."""
    import threading

    from mlops_nb.exceptions import MlopsError, StoreBusyError

    store = MetadataStore(db)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    busy, errors, times = 0, [], []
    next_poll = time.monotonic()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            runs = store.list_runs(LIMIT)
            if runs:
                store.get_run(runs[0].id)
        except StoreBusyError:
            busy += 1
        except MlopsError as error:
            errors.append(str(error))
        times.append((time.perf_counter() - started) * 1000)
        if len(times) == 1:
            print("ready", flush=True)
        next_poll += POLL_INTERVAL_S
        stop.wait(max(0.0, next_poll - time.monotonic()))
    info = store.cache_info()
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    print(json.dumps({"polls": len(times), "busy": busy, "errors": errors[:3], "ms": times, "cpu": cpu, **info}))


@dataclass
class PollResult:
    """The polling row: wall-clock seconds of the run alone and polled, and the reader's stats per polled run."""

    n_rows: int
    step_seconds: float
    alone: list[float]
    polled: list[float]
    readers: list[dict]
    other_cpu: dict[str, list[float]] = field(default_factory=lambda: {"alone": [], "polled": []})

    @property
    def pair_ratios(self) -> list[float]:
        """Polled over alone of each repetition (the two ran back to back, so a busy spell slows both alike)."""
        return [p / a for a, p in zip(self.alone, self.polled, strict=False)]

    @property
    def slowdown(self) -> float:
        """The median of the repetitions' polled / alone, as a % slowdown."""
        return (float(np.median(self.pair_ratios)) - 1) * 100

    @property
    def median_slowdown(self) -> float:
        """Median polled over median alone, as a % slowdown."""
        return (float(np.median(self.polled)) / float(np.median(self.alone)) - 1) * 100

    @property
    def busy(self) -> int:
        """StoreBusyError count of the readers."""
        return sum(r["busy"] for r in self.readers)

    @property
    def met(self) -> bool:
        """Slowdown within the target and no StoreBusyError."""
        return self.slowdown <= POLL_SLOWDOWN_TARGET and self.busy == 0

    def report(self) -> str:
        """The row and its details."""
        ms = np.concatenate([r["ms"][1:] for r in self.readers]) if self.readers else np.zeros(1)  # past the first
        polls = sum(r["polls"] for r in self.readers)
        hits = sum(r["hits"] for r in self.readers)
        reads = hits + sum(r["misses"] for r in self.readers)
        errors = [e for r in self.readers for e in r["errors"]]
        return "\n".join(
            [
                f"10-step run (n_rows {self.n_rows}"
                + (f", ~{self.step_seconds:.2f} s a step" if self.step_seconds else "")
                + f"), median of {len(self.alone)}: "
                f"alone {np.median(self.alone):.2f} s, polled every {POLL_INTERVAL_S:g} s {np.median(self.polled):.2f} "
                f"s ({self.median_slowdown:+.1f} %); slowdown, median of the repetitions' polled/alone: "
                f"{self.slowdown:+.1f} % (target <= {POLL_SLOWDOWN_TARGET:g} %); StoreBusyError in the reader: "
                f"{self.busy} (target 0): {'met' if self.met else 'NOT met'}",
                "  alone:  " + ", ".join(f"{x:.2f}" for x in self.alone) + " s",
                "  polled: " + ", ".join(f"{x:.2f}" for x in self.polled) + " s",
                "  polled/alone per repetition: " + ", ".join(f"{x:.3f}" for x in self.pair_ratios),
                "  CPU seconds other processes used during each run (the reader's included when polled; ~0 on a quiet "
                "machine): alone "
                + ", ".join(f"{x:.1f}" for x in self.other_cpu["alone"])
                + "; polled "
                + ", ".join(f"{x:.1f}" for x in self.other_cpu["polled"]),
                f"  reader: {polls} polls (list_runs({LIMIT}) + get_run), {hits} of {reads} reads from memory, poll "
                f"p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms"
                + (f"; other errors: {errors}" if errors else ""),
            ]
        )


def poll_row(out: Path, store_path: Path, repeat: int, step_seconds: float, smoke: bool) -> PollResult:
    """Time a 10-step notebook run alone and with a polling reader, alternating; see the module docstring."""
    import subprocess

    import nbformat

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_notebook as nbb

    project = out / "poll-project"
    shutil.rmtree(project, ignore_errors=True)
    (project / ".mlops").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "bench-poll"\nversion = "0"\n', encoding="utf-8")
    shutil.copy(store_path, project / ".mlops" / "metadata.duckdb")  # the sidebar reads a store of this size
    if smoke:
        n_rows, times = 2000, []
    else:
        print(f"  calibrating the steps to ~{step_seconds:g} s each ...", flush=True)
        n_rows, times = nbb.calibrate(step_seconds, 0, 1.0)
    seconds_per_step = float(np.median(times[1:])) if times else 0.0
    nbformat.write(nbb.build_notebook(n_rows, 0, 1.0, mlops=True), project / "nb.ipynb")
    mlops_nb_cli = str(nbb.VENV_BIN / "mlops-nb")
    nbb.run_command([mlops_nb_cli, "--home", str(project), "init"], project)
    seed = 1000
    result = PollResult(n_rows, seconds_per_step, [], [], [])

    def run_once(kind: str | None = None) -> float:
        nonlocal seed
        seed += 1  # a new seed: every step runs
        seconds, _, other = nbb.run_command(
            [mlops_nb_cli, "--home", str(project), "run", "nb.ipynb", "-p", "seed", str(seed)], project
        )
        nbb.check_statuses(nbb.latest_run(project), ["succeeded"] * nbb.STEPS, f"run with seed {seed}")
        if kind:
            result.other_cpu[kind].append(other)
        return seconds

    if not smoke:  # the first run also fills the OS file cache
        print("  warm-up run (untimed) ...", flush=True)
        run_once()
    db = str(project / ".mlops" / "metadata.duckdb")
    for i in range(repeat):
        for polled in (False, True) if i % 2 == 0 else (True, False):
            print(f"  repetition {i + 1}/{repeat}: {'polled' if polled else 'alone'} ...", flush=True)
            if not polled:
                result.alone.append(run_once("alone"))
                continue
            reader = subprocess.Popen(
                [sys.executable, __file__, "--poll-reader", db],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                if reader.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"the polling reader did not start (exit code {reader.wait(30)})")
                result.polled.append(run_once("polled"))
                reader.stdin.close()
                result.readers.append(json.loads(reader.stdout.readline()))
            finally:
                if reader.poll() is None:
                    reader.kill()
                reader.wait(30)
    return result


# Results (--results) ------------------------------------------------------------------------------------------
def query_result(result: Result, runs: int, reps: int) -> _results.Result:
    """A query's row for ``--results``: the long-lived reader against MLflow, p50 in ms."""
    peer = "MLflow search_runs" + (", one a step up the tags" if result.query.startswith("lineage") else "")
    target = "" if result.target is None else f"<= {result.target:g} ms and <= {RATIO_TARGET:.3f}x (>= 7x faster)"
    return _results.Result(
        "metadata",
        f"{result.query} ({result.rows}), p50 of {reps} at {runs:,} runs, long-lived reader",
        peer,
        result.p("reader", 50),
        result.p("theirs", 50),
        "ms",
        target=target,
        met=None if result.target is None else result.met,
    )


def polling_result(polling: PollResult, runs: int) -> _results.Result:
    """The polling row for ``--results``: the run polled against the run alone (median of the pairs' ratios)."""
    return _results.Result(
        "metadata",
        f"10-step run polled every {POLL_INTERVAL_S:g} s on a {runs:,}-run store, median of {len(polling.alone)} "
        f"({polling.busy} StoreBusyError)",
        "the same run, not polled",
        float(np.median(polling.polled)),
        float(np.median(polling.alone)),
        "s",
        ratio=float(np.median(polling.pair_ratios)),
        target=f"<= {1 + POLL_SLOWDOWN_TARGET / 100:.2f}x, no StoreBusyError",
        met=polling.met,
    )


# Main --------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for what is measured and how the data is loaded.",
    )
    parser.add_argument("--runs", type=int, help="pipeline runs (default 20000; 300 with --smoke)")
    parser.add_argument("--steps-per-run", type=int, default=5, help="step runs per run, chained (default 5)")
    parser.add_argument("--reps", type=int, help="timed repetitions per query (default 100; 20 with --smoke)")
    parser.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        default=_results.bench_size() == "smoke",
        help="a small dataset that runs in seconds (default: on when BENCH_SIZE=smoke)",
    )
    parser.add_argument("--out", type=Path, help="folder for metadata.duckdb and mlflow.db (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the default temp dir (--out is always kept)")
    parser.add_argument(
        "--api-sample", type=int, default=20, help="runs logged through MlflowClient before the bulk load (default 20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the dataset (default 0)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--repeat", type=int, help="runs of the polling row, alone and polled each (default 3; 1 with --smoke)"
    )
    parser.add_argument(
        "--poll-step-seconds", type=float, default=0.3, help="seconds a step of the polled notebook takes (0.3)"
    )
    parser.add_argument("--no-poll", action="store_true", help="leave out the polling row")
    parser.add_argument("--only-poll", action="store_true", help="only the polling row (no MLflow, no query timings)")
    parser.add_argument("--poll-reader", metavar="DB", help=argparse.SUPPRESS)  # the polling child process
    _results.add_results_option(parser)
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.smoke else 3)
    args.runs = args.runs or (300 if args.smoke else 20_000)
    args.reps = args.reps or (20 if args.smoke else 100)
    if args.runs < 1 or args.steps_per_run < 1 or args.reps < 1:
        parser.error("--runs, --steps-per-run and --reps must be positive")
    args.api_sample = max(1, min(args.api_sample, args.runs))
    return args


def main(argv: list[str] | None = None) -> int:
    """Build both stores, check them, time the queries and print the comparison."""
    args = parse_args(argv)
    if args.poll_reader:
        poll_reader(args.poll_reader)
        return 0
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    temp = args.out is None
    out = Path(tempfile.mkdtemp(prefix="bench_metadata-")) if temp else args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metadata.duckdb", "metadata.duckdb.lock", "metadata.duckdb.wal", "mlflow.db"):
        (out / name).unlink(missing_ok=True)
    depth = min(MAX_LINEAGE_DEPTH, args.steps_per_run)
    print(
        f"bench_metadata: {args.runs:,} runs x {args.steps_per_run} steps = {args.runs * args.steps_per_run:,} step "
        f"runs; {args.reps} reps per query; out {out}"
    )
    try:
        t0 = time.perf_counter()
        data = generate(args.runs, args.steps_per_run, args.seed, out / "artifacts")
        t_gen = time.perf_counter() - t0
        rows = {table: len(frame) for table, frame in data.tables.items()}
        print(f"generated in {t_gen:.1f} s: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()))

        t0 = time.perf_counter()
        store = load_ours(out / "metadata.duckdb", data)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        verify_ours(store, data, depth)
        t_verify = time.perf_counter() - t0
        size = (out / "metadata.duckdb").stat().st_size / 1e6
        print(f"mlops_nb: bulk load {t_ours:.1f} s ({size:.0f} MB), API checks {t_verify:.1f} s")
        if args.only_poll:
            polling = poll_row(out, store.path, args.repeat, args.poll_step_seconds, args.smoke)
            print("\nPolling row (a benchmark row, not a test; rough on a shared machine):")
            print(polling.report())
            _results.write_results(args.results, [polling_result(polling, args.runs)])
            return 1 if args.strict and not polling.met else 0

        t0 = time.perf_counter()
        import mlflow
        from mlflow import MlflowClient

        for logger in ("mlflow", "alembic"):  # MLflow sets its levels on import; quiet its migration messages
            logging.getLogger(logger).setLevel(logging.WARNING)
        t_import = time.perf_counter() - t0
        mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
        client = MlflowClient()
        t0 = time.perf_counter()
        location = (out / "mlartifacts").as_uri()
        exp_runs = client.create_experiment(MLFLOW_RUNS_EXPERIMENT, artifact_location=location)  # creates the DB
        exp_steps = client.create_experiment(MLFLOW_STEPS_EXPERIMENT, artifact_location=location)
        t_create = time.perf_counter() - t0
        t0 = time.perf_counter()
        api_runs, api_steps = log_mlflow_api(client, data, exp_runs, exp_steps, args.api_sample)
        t_api = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_mlflow_bulk(out / "mlflow.db", data, exp_runs, exp_steps, args.api_sample, api_runs[0], api_steps[0])
        t_bulk = time.perf_counter() - t0
        t0 = time.perf_counter()
        verify_mlflow(client, data, exp_runs, api_runs)
        t_mverify = time.perf_counter() - t0
        per_run = t_api / args.api_sample
        calls = 2 + 2 * args.steps_per_run + 1
        size = (out / "mlflow.db").stat().st_size / 1e6
        print(
            f"MLflow: import {t_import:.1f} s, create DB {t_create:.1f} s; API-logged {args.api_sample} runs in "
            f"{t_api:.1f} s ({per_run * 1000:.0f} ms per run with its {args.steps_per_run} step runs, {calls} calls; "
            f"all {args.runs:,} runs that way: ~{per_run * args.runs / 60:.1f} min); sqlite3 bulk load of the other "
            f"{args.runs - args.api_sample:,} in {t_bulk:.1f} s ({size:.0f} MB); checks {t_mverify:.1f} s"
        )

        results = run_queries(store, client, data, exp_runs, exp_steps, depth, args.reps)
        gc.unfreeze()
        polling = None
        if not args.no_poll:
            print("polling row:", flush=True)
            polling = poll_row(out, store.path, args.repeat, args.poll_step_seconds, args.smoke)
        print()
        print(
            f"Query times in ms over {args.reps} reps at {args.runs:,} runs (rough on a shared machine). reader: a "
            "long-lived store, answers kept while the file is unchanged (checked every call); uncached: every call "
            f"opens and reads the file. Targets at 20,000 runs: reader p50 <= 6 / 6 / 10 ms and reader/MLflow p50 <= "
            f"1/7 (>= 7x faster):"
        )
        print_table(results)
        if polling is not None:
            print()
            print("Polling row (a benchmark row, not a test; rough on a shared machine):")
            print(polling.report())
        rows = [query_result(r, args.runs, args.reps) for r in results]
        _results.write_results(args.results, rows + ([polling_result(polling, args.runs)] if polling else []))
        missed = [r.query for r in results if not r.met] + (["polling"] if polling and not polling.met else [])
        print("all targets met" if not missed else f"targets missed: {', '.join(missed)}")
        return 1 if missed and args.strict else 0
    finally:
        if temp and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        else:
            print(f"kept {out}")


if __name__ == "__main__":
    sys.exit(main())
