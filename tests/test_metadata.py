"""Metadata store: runs, step runs, events, params, metrics, lineage, migrations and bad store files."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import duckdb
import pytest

from mlops_nb import MetadataStore, NotFoundError, StoreError
from mlops_nb.core.clock import utcnow
from mlops_nb.store.metadata import SCHEMA_VERSION


def _pipeline(store, artifacts, params=None, n_steps=3):
    """Record a chain: step0 reads a file artifact, step k reads step k-1's output."""
    run_id = store.create_run("chain", params=params or {"lr": 0.1, "depth": 3}, executor="api")
    previous = {"raw.csv": artifacts.put(b"a,b\n1,2\n", name="raw.csv")}
    for k in range(n_steps):
        sr = store.start_step(run_id, f"step{k}", inputs=previous, cache_key=f"key{k}", cell_index=k + 2)
        out = {f"out{k}": artifacts.put({"k": k, "run": run_id}, name=f"out{k}")}
        store.finish_step(sr, "succeeded", outputs=out, why="no earlier run", metrics={"rows": 10 * k})
        previous = out
    store.log_metrics(run_id, {"accuracy": 0.9})
    store.finish_run(run_id, "succeeded")
    return run_id


def test_run_round_trip(store, artifacts):
    run_id = _pipeline(store, artifacts)
    run = store.get_run(run_id)
    assert run.id == run_id and run.pipeline == "chain" and run.status == "succeeded"
    assert run.params == {"lr": 0.1, "depth": 3}
    assert run.executor == "api" and run.trigger == "manual" and run.host and run.pid
    assert run.duration is not None and run.duration >= 0
    assert [s.step for s in run.step_runs] == ["step0", "step1", "step2"]
    assert [s.id for s in run.step_runs] == [f"{run_id}.1", f"{run_id}.2", f"{run_id}.3"]
    first = run.step("step0")
    assert first.status == "succeeded" and first.why == "no earlier run" and first.cache_key == "key0"
    assert first.cell_index == 2 and first.inputs["raw.csv"].kind == "bytes"
    assert run.step("step1").inputs["out0"].hash == first.outputs["out0"].hash
    assert run.metrics == {"accuracy": 0.9, "rows": 20.0}
    assert run.step_counts == {"succeeded": 3}
    assert store.get_step_run(f"{run_id}/step1").id == f"{run_id}.2"
    assert store.get_step_run(f"{run_id}.3").outputs["out2"].summary == "dict len 2"
    data = run.to_dict()
    assert data["step_runs"][0]["outputs"]["out0"]["hash"] == first.outputs["out0"].hash


def test_list_runs_filters_and_order(store, artifacts):
    ids = [_pipeline(store, artifacts, params={"lr": lr}) for lr in (0.1, 0.2, 0.1)]
    failed = store.create_run("other")
    store.finish_run(failed, "failed", error="boom")
    listed = store.list_runs()
    assert [r.id for r in listed] == [failed, *reversed(ids)]
    assert [r.id for r in store.list_runs(2)] == [failed, ids[2]]
    assert [r.id for r in store.list_runs(params={"lr": 0.1})] == [ids[2], ids[0]]
    assert [r.id for r in store.list_runs(status="failed")] == [failed]
    assert [r.id for r in store.list_runs(pipeline="chain", limit=None)] == list(reversed(ids))
    assert listed[1].step_counts == {"succeeded": 3}


def test_run_id_prefix_and_latest(store, artifacts):
    run_id = _pipeline(store, artifacts)
    assert store.resolve_run("latest") == run_id
    assert store.resolve_run(run_id[:-3]) == run_id
    with pytest.raises(NotFoundError, match="run 'nope' does not exist; list runs with `mlops-nb runs`"):
        store.get_run("nope")


def test_no_runs_latest(store):
    with pytest.raises(NotFoundError, match="no runs recorded in .* yet"):
        store.get_run("latest")


def test_cached_and_skipped_steps(store, artifacts):
    run_id = _pipeline(store, artifacts)
    original = store.get_run(run_id).step("step1")
    found = store.find_cached("key1")
    assert found.id == original.id and found.outputs == original.outputs
    assert store.find_cached("missing") is None

    second = store.create_run("chain")
    cached = store.record_step(
        second,
        "step1",
        "cached",
        cache_key="key1",
        why=f"cached from run {run_id}",
        cached_from=original.id,
        outputs=original.outputs,
    )
    skipped = store.record_step(second, "step2", "skipped", why="step1 failed")
    store.finish_run(second, "failed", error="x")
    run = store.get_run(second)
    assert run.step("step1").status == "cached" and run.step("step1").cached_from == original.id
    assert run.step("step1").outputs["out1"].hash == original.outputs["out1"].hash
    assert store.get_step_run(skipped).status == "skipped"
    assert store.find_cached("key1").id == original.id  # a cache hit is not itself a source
    assert cached.startswith(second)


def test_cache_candidates_keep_the_first_run_of_many_unchanged_re_runs_in_reach(store, artifacts):
    """A planner looks every key up in one query (cached_candidates): after more unchanged re-runs than its window
    of recent runs, the step runs they were cached from still answer, at their own cache keys."""
    run_id = _pipeline(store, artifacts)
    original = store.get_run(run_id)
    for _ in range(25):
        again = store.create_run("chain")
        for step in original.step_runs:
            store.record_step(
                again, step.step, "cached", cache_key=step.cache_key, cached_from=step.id, outputs=step.outputs
            )
        store.finish_run(again, "succeeded")
    candidates = store.cached_candidates("chain", runs=20)
    assert {k: s.id for k, s in candidates.items()} == {s.cache_key: s.id for s in original.step_runs}
    assert candidates["key1"].outputs == original.step("step1").outputs
    assert store.cached_candidates("another pipeline") == {}


def test_lineage_up_down_depth(store, artifacts):
    run_id = _pipeline(store, artifacts, n_steps=4)
    run = store.get_run(run_id)
    last = run.step("step3").outputs["out3"]
    up = store.lineage(last.hash, direction="up")
    assert up.root == f"artifact:{last.hash}"
    assert [n.label for n in up.upstream() if n.kind == "step_run"] == [
        "step3 [succeeded]",
        "step2 [succeeded]",
        "step1 [succeeded]",
        "step0 [succeeded]",
    ]
    assert {n.depth for n in up.upstream()} == {-1, -2, -3, -4}
    assert "raw.csv (bytes)" in [n.label for n in up.nodes.values()]
    assert not up.downstream()
    assert len(up.edges) == 8

    shallow = store.lineage(last.hash[:10], direction="up", depth=2)
    assert sorted(n.attrs.get("step") for n in shallow.upstream() if n.kind == "step_run") == ["step2", "step3"]

    down = store.lineage(f"{run_id}/step1", direction="down")
    assert [n.attrs["step"] for n in down.downstream() if n.kind == "step_run"] == ["step2", "step3"]
    both = store.lineage(f"{run_id}.2")
    assert len(both.upstream()) == 3 and len(both.downstream()) == 5

    mermaid = both.to_mermaid()
    assert mermaid.startswith("flowchart TD") and "-->|out1|" in mermaid
    records = both.to_dict()
    assert records["root"] == f"step_run:{run_id}.2" and len(records["edges"]) == len(both.edges)


def test_lineage_of_an_output_name_is_its_latest_artifact(store, artifacts):
    first = _pipeline(store, artifacts, n_steps=2)
    second = _pipeline(store, artifacts, n_steps=2)  # the same names again: the latest run's artifacts win
    latest = store.get_run(second).step("step1").outputs["out1"]
    assert latest.hash != store.get_run(first).step("step1").outputs["out1"].hash
    graph = store.lineage("out1", direction="up")
    assert graph.root == f"artifact:{latest.hash}" and store.resolve_node("out1") == ("artifact", latest.hash)
    assert store.resolve_node(f"{second}/step0") == ("step_run", f"{second}.1")
    assert store.resolve_node(latest.hash[:8]) == ("artifact", latest.hash)
    with pytest.raises(NotFoundError) as info:
        store.lineage("model")
    assert info.value.message == (
        "no artifact, step run or output is named 'model'; give an artifact hash (6+ hex characters), RUN.N, "
        "RUN/STEP (latest/train) or the name of a step's output (model)"
    )


def test_lineage_bad_nodes(store, artifacts):
    _pipeline(store, artifacts)
    with pytest.raises(NotFoundError, match="no recorded artifact has hash 'abcdef12'"):
        store.lineage("abcdef12")
    with pytest.raises(NotFoundError, match=r"step run 'r-1\.9' does not exist; give RUN.N or RUN/STEP"):
        store.lineage("r-1.9")
    with pytest.raises(StoreError, match="lineage direction 'sideways' must be up, down or both"):
        store.lineage("abcdef12", direction="sideways")


def test_interrupted_when_process_is_gone(store, artifacts):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    run_id = store.create_run("chain", pid=pid)
    sr = store.start_step(run_id, "train")
    alive = store.create_run("chain")  # this process: still running
    reopened = MetadataStore(store.path)
    run = reopened.get_run(run_id)
    assert run.status == "interrupted" and f"process {pid}" in run.error
    assert reopened.get_step_run(sr).status == "interrupted"
    assert reopened.get_run(alive).status == "running"


def test_process_start_times_are_psutil_s_and_a_zombie_is_dead():
    """Liveness of a run's process, read from /proc without psutil: the start time psutil gives, None for a zombie
    (killed, not yet reaped) and for a process that is gone."""
    import psutil

    from mlops_nb.store.metadata import _process_started

    for pid in (os.getpid(), os.getppid()):
        assert abs(_process_started(pid) - psutil.Process(pid).create_time()) < 0.02
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _process_started(child.pid) is None
    child.wait()
    assert _process_started(child.pid) is None


def test_interrupted_run_ends_at_its_last_record_not_when_found(store):
    """A step left running by a dead process gets an end time: the run's last record, not the moment a later
    command noticed, so neither its duration nor the run's keeps growing."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_id = store.create_run("chain", pid=int(dead.stdout))
    first = store.start_step(run_id, "load")
    store.finish_step(first, "succeeded")
    running = store.start_step(run_id, "train")
    store.log_metrics(run_id, {"loss": 0.5}, step_run_id=running)
    last_record = utcnow()
    time.sleep(1.2)  # the process is long gone before anyone looks
    run = MetadataStore(store.path).get_run(run_id)
    step = run.step("train")
    assert run.status == "interrupted" and step.status == "interrupted"
    assert step.ended_at is not None and step.ended_at <= last_record
    assert run.ended_at == step.ended_at and run.duration < 1.0
    assert "its last record, at" in run.error and step.error == run.error
    time.sleep(0.3)
    again = MetadataStore(store.path).get_run(run_id)
    assert (again.duration, again.step("train").duration) == (run.duration, step.duration)


def test_failed_run_marks_running_steps(store):
    run_id = store.create_run("p")
    sr = store.start_step(run_id, "a")
    store.finish_run(run_id, "failed", error="step a failed")
    assert store.get_step_run(sr).status == "failed"


def test_bad_writes(store):
    with pytest.raises(NotFoundError, match="run nope does not exist; create it with create_run"):
        store.start_step("nope", "a")
    with pytest.raises(NotFoundError, match="step run nope.1 does not exist"):
        store.finish_step("nope.1", "succeeded")
    run_id = store.create_run("p")
    with pytest.raises(StoreError, match="status 'done' is not one of"):
        store.finish_run(run_id, "done")
    sr = store.start_step(run_id, "a")
    with pytest.raises(StoreError, match="metric 'acc' of run .* is 'high', not a number"):
        store.finish_step(sr, "succeeded", metrics={"acc": "high"})
    assert store.get_step_run(sr).status == "running"  # the failed transaction left nothing behind


def test_migrations_recorded(store):
    versions = store.sql("SELECT version FROM schema_version ORDER BY version")["version"].tolist()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    MetadataStore(store.path)  # re-open: no migration twice
    assert store.sql("SELECT count(*) AS n FROM schema_version")["n"][0] == SCHEMA_VERSION


def test_newer_schema_refused(store):
    con = duckdb.connect(str(store.path))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 5])
    con.close()
    with pytest.raises(StoreError) as info:
        MetadataStore(store.path)
    assert str(info.value) == (
        f"metadata store {store.path} has schema version {SCHEMA_VERSION + 5}, newer than this mlops_nb knows "
        f"({SCHEMA_VERSION}); upgrade mlops_nb (pip install -U mlops-nb)"
    )


def test_unreadable_file(tmp_path):
    path = tmp_path / "metadata.duckdb"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError) as info:
        MetadataStore(path)
    message = str(info.value)
    assert message.startswith(f"metadata store {path} cannot be opened (IO Error:")
    assert message.endswith("move the file aside and run `mlops-nb init` to start a new store")
    assert path.read_bytes() == b"this is not a database" * 200  # untouched


def test_foreign_duckdb_file(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE users (id INT)")
    con.close()
    with pytest.raises(StoreError, match="is a DuckDB file but not an mlops_nb metadata store"):
        MetadataStore(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(StoreError, match="is a folder, not a DuckDB file"):
        MetadataStore(tmp_path)
