"""Concurrency and crash safety with real processes: many writers at once, kill -9 mid-write, a busy store.

The child processes run this very file as a script (``python tests/test_concurrency.py ROLE HOME ...``), so the
objects they store and the parent's expectations come from the same functions. Children signal the parent with
small JSON files written atomically into the project home; their stdout and stderr go to files there too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

N_WORKERS, N_RUNS, N_STEPS = 8, 10, 5  # 400 step runs written at once; tests/faults/test_soak.py mixes more
BIG_SIZE = 320 * 2**20  # bytes of the artifact a child is killed while writing


# What the children store (shared by child and parent) ---------------------------------------------------------------
SHARED_INPUT = {"dataset": "raw", "rows": [1, 2, 3]}  # every worker stores it: one artifact written 8 times at once


def step_object(worker: int, run: int, step: int):
    """The output of ``step`` in ``run`` of ``worker``: a small DataFrame (even steps) or dict, unique to the three."""
    if step % 2 == 0:
        import pandas as pd

        base = worker * 10_000 + run * 100 + step * 10
        return pd.DataFrame(
            {"worker": [worker] * 4, "run": [run] * 4, "step": [step] * 4, "x": [base + i for i in range(4)]}
        )
    return {"worker": worker, "run": run, "step": step, "values": [worker, run, step, worker * run * step]}


def big_bytes() -> bytes:
    """~320 MB of deterministic bytes."""
    block = b"".join(hashlib.sha256(b"mlops_nb kill -9 %d" % i).digest() for i in range(2048))  # 64 KiB
    return block * (BIG_SIZE // len(block))


def signal_parent(home: str | Path, name: str, data: dict | None = None) -> None:
    """Write ``<home>/<name>.json`` atomically: the parent polls for it."""
    tmp = Path(home) / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data or {}))
    os.replace(tmp, Path(home) / f"{name}.json")


def wait_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.002)


# Child roles ----------------------------------------------------------------------------------------------------------
def role_record(home: str, worker: str) -> None:
    """Wait at the start barrier, then record N_RUNS runs of N_STEPS steps, each storing an artifact."""
    import pandas  # noqa: F401 - import everything before the barrier, so the workers start writing together

    from mlops_nb.project import Project

    w = int(worker)
    signal_parent(home, f"ready-{w}")
    wait_file(Path(home) / "go.json")
    started = time.monotonic()
    project = Project(home).init()  # all workers at once: creating and migrating the store races too
    store, artifacts = project.metadata, project.artifacts
    shared = artifacts.put(SHARED_INPUT, name="raw")
    recorded = []
    for r in range(N_RUNS):
        run_id = store.create_run("concurrency", params={"worker": w, "run": r})
        previous = {"raw": shared}
        for s in range(N_STEPS):
            step_run_id = store.start_step(run_id, f"step{s}", inputs=previous)
            ref = artifacts.put(step_object(w, r, s), name=f"out{s}")
            store.finish_step(step_run_id, "succeeded", outputs={f"out{s}": ref})
            recorded.append({"run": r, "step": s, "run_id": run_id, "step_run_id": step_run_id, "hash": ref.hash})
            previous = {f"out{s}": ref}
        store.finish_run(run_id, "succeeded")
    signal_parent(home, f"done-{w}", {"recorded": recorded, "seconds": time.monotonic() - started})


def role_big_write(home: str) -> None:
    """Start a run and a step, then store a ~320 MB artifact (the parent kills this process while it writes)."""
    from mlops_nb.project import Project

    project = Project(home)
    store = project.metadata
    run_id = store.create_run("killed", params={"what": "big artifact"})
    step_run_id = store.start_step(run_id, "write_big")
    data = big_bytes()
    signal_parent(home, "writing", {"run_id": run_id, "step_run_id": step_run_id})
    project.artifacts.put(data, name="big")
    signal_parent(home, "written")
    time.sleep(600)


def role_hold_transaction(home: str) -> None:
    """Commit a run with 3 step runs, then stop inside an open write transaction (holding the writer lock)."""
    from mlops_nb.project import Project

    project = Project(home)
    store, artifacts = project.metadata, project.artifacts
    run_id = store.create_run("killed", params={"what": "open transaction"})
    for s in range(3):
        step_run_id = store.start_step(run_id, f"step{s}")
        store.finish_step(step_run_id, "succeeded", outputs={"out": artifacts.put({"step": s})})
    with store.batch(write=True):
        step_run_id = store.start_step(run_id, "uncommitted")
        store.finish_step(step_run_id, "succeeded", outputs={"out": artifacts.put({"step": "uncommitted"})})
        store.log_metrics(run_id, {"uncommitted": 1.0})
        signal_parent(home, "in-transaction", {"run_id": run_id})
        time.sleep(600)


def role_wal_after_commit(home: str) -> None:
    """Commit a run and a started step, then commit the step's end and stop before DuckDB checkpoints it: the last
    transaction lives only in the WAL, as when a writer is killed between COMMIT and closing the file."""
    from mlops_nb.project import Project
    from mlops_nb.store.dbfile import memory_connection

    project = Project(home)
    store = project.metadata
    run_id = store.create_run("killed", params={"what": "committed, not checkpointed"})
    step_run_id = store.start_step(run_id, "in_wal")
    ref = project.artifacts.put({"in": "wal"})
    memory = memory_connection()  # the DuckDB the store attaches its file to: from now on it leaves commits in the WAL
    memory.execute("SET checkpoint_on_detach = 'DISABLED'")
    memory.execute("SET wal_autocheckpoint = '1TB'")
    store.finish_step(step_run_id, "succeeded", outputs={"out": ref}, metrics={"rows": 3})
    signal_parent(home, "committed", {"run_id": run_id, "step_run_id": step_run_id, "hash": ref.hash})
    time.sleep(600)


def role_write_loop(home: str, tag: str) -> None:
    """Record runs of 5 steps, one after another, forever; report each committed step run."""
    from mlops_nb.project import Project

    project = Project(home)
    store, artifacts = project.metadata, project.artifacts
    log = open(Path(home) / f"committed-{tag}.txt", "a", buffering=1)  # open until the process is killed
    for r in range(10**6):
        run_id = store.create_run("loop", params={"tag": tag, "run": r})
        log.write(f"run {run_id}\n")
        for s in range(5):
            step_run_id = store.start_step(run_id, f"step{s}")
            ref = artifacts.put({"tag": tag, "run": r, "step": s})
            store.finish_step(step_run_id, "succeeded", outputs={"out": ref}, metrics={"step": s})
            log.write(f"step {step_run_id}\n")
        store.finish_run(run_id, "succeeded")
        log.write(f"finished {run_id}\n")


def role_hold_lock(home: str, db: str) -> None:
    """Hold the store's writer lock file until the parent writes ``release.json``."""
    from filelock import FileLock

    with FileLock(db + ".lock"):
        signal_parent(home, "held")
        wait_file(Path(home) / "release.json")
    signal_parent(home, "released")


def role_hold_db(home: str, db: str) -> None:
    """Hold a read-write DuckDB connection on the store file until the parent writes ``release.json``."""
    import duckdb

    con = duckdb.connect(db)
    con.execute("SELECT count(*) FROM runs").fetchall()
    signal_parent(home, "held")
    wait_file(Path(home) / "release.json")
    con.close()
    signal_parent(home, "released")


ROLES = {
    "record": role_record,
    "big-write": role_big_write,
    "hold-transaction": role_hold_transaction,
    "wal-after-commit": role_wal_after_commit,
    "write-loop": role_write_loop,
    "hold-lock": role_hold_lock,
    "hold-db": role_hold_db,
}


# Parent side ------------------------------------------------------------------------------------------------------------
@dataclass
class Child:
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return (self.log.with_suffix(".err")).read_text()

    def wait_for(self, path: Path, timeout: float = 120) -> dict:
        """Wait for the child's signal file ``path``; fail early (with its stderr) if the child exits first."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"child {self.pid} exited with {self.proc.returncode} before {path.name}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"child {self.pid} wrote no {path.name} in {timeout} s:\n{self.stderr()}")
            time.sleep(0.002)
        return json.loads(path.read_text())

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture
def spawn(tmp_path):
    """Start this file as a child process in a role; every child still alive at teardown is killed and reaped."""
    children: list[Child] = []

    def start(role: str, *args: str | Path) -> Child:
        log = tmp_path / f"child-{len(children)}-{role}.log"
        with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, __file__, role, *map(str, args)],
                stdout=out,
                stderr=err,
                cwd=tmp_path,
                start_new_session=True,  # its own process group, killed as a whole at teardown
            )
        children.append(Child(proc, log))
        return children[-1]

    yield start
    for child in children:
        if child.proc.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.proc.wait(30)


def artifact_files(root: Path) -> tuple[list[Path], list[Path]]:
    """``(artifact files, temporary files)`` under an artifact store root."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return [p for p in files if not p.name.startswith(".tmp-")], [p for p in files if p.name.startswith(".tmp-")]


def assert_artifact_files_verify(root: Path) -> int:
    """Every non-temporary file is ``<hash[:2]>/<hash>.<kind>`` and its sha256 is its name; returns how many."""
    finals, _ = artifact_files(root)
    for path in finals:
        digest, _, kind = path.name.partition(".")
        assert kind and path.parent.name == digest[:2], path
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(2**24):
                h.update(chunk)
        assert h.hexdigest() == digest, f"{path} does not match its hash"
    return len(finals)


# 1. Many writers at once ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eight_processes_record_runs_at_once(tmp_path, spawn):
    from mlops_nb.project import Project
    from mlops_nb.store.artifacts import ArtifactStore

    workers = [spawn("record", tmp_path, w) for w in range(N_WORKERS)]
    for w, child in enumerate(workers):
        child.wait_for(tmp_path / f"ready-{w}.json")
    signal_parent(tmp_path, "go")
    started = time.monotonic()
    for child in workers:
        child.proc.wait(800)
    elapsed = time.monotonic() - started
    reports = {}
    for w, child in enumerate(workers):
        assert child.proc.returncode == 0, child.stderr()
        assert child.stderr() == ""
        reports[w] = json.loads((tmp_path / f"done-{w}.json").read_text())
    print(
        f"\n{N_WORKERS} processes x {N_RUNS} runs x {N_STEPS} steps: {elapsed:.1f} s wall; per worker "
        + ", ".join(f"{r['seconds']:.1f}" for r in reports.values())
    )

    project = Project(tmp_path)
    store, artifacts = project.metadata, project.artifacts
    total = N_WORKERS * N_RUNS * N_STEPS
    assert store.sql("SELECT count(*) AS n FROM step_runs")["n"][0] == total
    assert store.sql("SELECT count(DISTINCT id) AS n FROM step_runs")["n"][0] == total
    assert store.sql("SELECT status, count(*) AS n FROM step_runs GROUP BY status").to_dict("records") == [
        {"status": "succeeded", "n": total}
    ]
    assert store.sql("SELECT status, count(*) AS n FROM runs GROUP BY status").to_dict("records") == [
        {"status": "succeeded", "n": N_WORKERS * N_RUNS}
    ]
    assert store.sql("SELECT count(*) AS n FROM artifacts")["n"][0] == total + 1  # + the shared input
    assert store.sql("SELECT direction, count(*) AS n FROM events GROUP BY direction ORDER BY 1").to_dict(
        "records"
    ) == [{"direction": "in", "n": total}, {"direction": "out", "n": total}]

    # Each output is what its worker wrote for (run, step), recorded against the right step run; each step reads
    # the previous step's output.
    recorded = store.sql(
        "SELECT r.params, s.id, s.step, o.artifact AS out, i.artifact AS inp FROM step_runs s "
        "JOIN runs r ON r.id = s.run_id "
        "JOIN events o ON o.step_run_id = s.id AND o.direction = 'out' "
        "JOIN events i ON i.step_run_id = s.id AND i.direction = 'in'"
    )
    by_key = {}
    for row in recorded.itertuples():
        params = json.loads(row.params)
        by_key[(params["worker"], params["run"], int(row.step.removeprefix("step")))] = row
    assert len(by_key) == total
    expected_store = ArtifactStore(tmp_path / "expected")
    shared = expected_store.put(SHARED_INPUT).hash
    for w, report in reports.items():
        assert len(report["recorded"]) == N_RUNS * N_STEPS
        for item in report["recorded"]:
            r, s = item["run"], item["step"]
            row = by_key[(w, r, s)]
            expected = step_object(w, r, s)
            assert row.id == item["step_run_id"] == f"{item['run_id']}.{s + 1}"
            assert row.out == item["hash"] == expected_store.put(expected).hash
            assert row.inp == (shared if s == 0 else by_key[(w, r, s - 1)].out)
            got = artifacts.get(item["hash"])
            if isinstance(expected, dict):
                assert got == expected
            else:
                assert got.equals(expected)
    for digest in store.sql("SELECT hash FROM artifacts")["hash"]:
        artifacts.read_bytes(digest)  # verifies the hash
    assert artifacts.get(shared) == SHARED_INPUT
    root = Path(artifacts.root)
    assert assert_artifact_files_verify(root) == total + 1
    assert artifact_files(root)[1] == []  # no temporary file left behind


# 2. kill -9 ---------------------------------------------------------------------------------------------------------------
def _kill_while_writing(home: Path, spawn, final: Path) -> tuple[Child, dict] | None:
    """Start a child that stores the big artifact in ``home`` and SIGKILL it once the temporary file has bytes in
    it; ``None`` if the write finished first (the parent was too slow to see it)."""
    child = spawn("big-write", home)
    ids = child.wait_for(home / "writing.json")
    folder = final.parent
    deadline = time.monotonic() + 60
    while True:  # until the temporary file exists and has bytes in it: the write is under way
        tmps = list(folder.glob(".tmp-*")) if folder.is_dir() else []
        try:
            if tmps and tmps[0].stat().st_size > 0:
                break
        except FileNotFoundError:  # renamed to its final name meanwhile
            pass
        if final.exists():
            child.kill9()
            return None
        assert child.proc.poll() is None, child.stderr()
        assert time.monotonic() < deadline, "the child never started writing"
        time.sleep(0.0005)
    os.kill(child.pid, signal.SIGKILL)
    return child, ids


@pytest.mark.slow
def test_kill9_while_writing_a_large_artifact(tmp_path, spawn):
    import psutil

    from mlops_nb.exceptions import ArtifactNotFoundError
    from mlops_nb.project import Project
    from mlops_nb.store.metadata import MetadataStore

    data = big_bytes()
    digest = hashlib.sha256(data).hexdigest()
    for attempt in range(3):  # the write takes ~0.2 s: on a busy machine the parent may miss it, then try again
        project = Project(tmp_path / f"home{attempt}").init()
        root = Path(project.artifact_root)
        final = root / digest[:2] / f"{digest}.bytes"
        killed = _kill_while_writing(project.home, spawn, final)
        if killed:
            break
    else:
        pytest.fail("the child finished writing every time before it could be killed")
    child, ids = killed

    # Dead but not reaped yet (a zombie, as long as its parent has not waited for it): its run already counts as
    # interrupted.
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed child did not die"
        time.sleep(0.01)
    store = MetadataStore(project.metadata_path)
    run = store.get_run(ids["run_id"])
    child.proc.wait(30)

    # No partial artifact is visible: the temporary file is left, the final name does not exist.
    finals, tmps = artifact_files(root)
    assert not final.exists() and final not in finals
    assert len(tmps) == 1 and tmps[0].stat().st_size <= len(data)
    assert assert_artifact_files_verify(root) == len(finals)
    artifacts = project.artifacts
    assert not artifacts.exists(digest)
    with pytest.raises(ArtifactNotFoundError):
        artifacts.get(digest)

    # The store opens and the run and its step show interrupted.
    assert run.status == "interrupted" and run.ended_at is not None
    assert f"process {child.pid}" in run.error
    assert [(s.step, s.status) for s in run.step_runs] == [("write_big", "interrupted")]
    assert run.step_runs[0].id == ids["step_run_id"]
    assert MetadataStore(project.metadata_path).get_run(ids["run_id"]).status == "interrupted"

    # Storing the same object again works and reads back.
    ref = artifacts.put(data, name="big")
    assert ref.hash == digest and final.exists()
    assert artifacts.get(ref) == data
    assert assert_artifact_files_verify(root) == len(finals) + 1


@pytest.mark.slow
def test_kill9_inside_an_open_write_transaction(tmp_path, spawn):
    from filelock import FileLock, Timeout

    from mlops_nb.project import Project
    from mlops_nb.store.metadata import MetadataStore

    project = Project(tmp_path).init()
    child = spawn("hold-transaction", tmp_path)
    run_id = child.wait_for(tmp_path / "in-transaction.json")["run_id"]
    with pytest.raises(Timeout):  # it really holds the writer lock
        FileLock(str(project.metadata_path) + ".lock").acquire(timeout=0)
    child.kill9()

    store = MetadataStore(project.metadata_path, lock_timeout=5)
    run = store.get_run(run_id)
    assert run.status == "interrupted"
    assert [(s.step, s.status) for s in run.step_runs] == [(f"step{s}", "succeeded") for s in range(3)]
    assert run.metrics == {}  # the open transaction left nothing behind
    assert store.sql("SELECT count(*) AS n FROM step_runs WHERE step = 'uncommitted'")["n"][0] == 0
    for s, step_run in enumerate(run.step_runs):
        assert project.artifacts.get(step_run.outputs["out"]) == {"step": s}
    new = store.create_run("after")  # and it takes writes again
    store.finish_run(new, "succeeded")
    assert store.get_run(new).status == "succeeded"


@pytest.mark.slow
def test_kill9_between_commit_and_checkpoint(tmp_path, spawn):
    from mlops_nb.project import Project
    from mlops_nb.store.metadata import MetadataStore

    project = Project(tmp_path).init()
    wal = project.metadata_path.with_name(project.metadata_path.name + ".wal")
    child = spawn("wal-after-commit", tmp_path)
    ids = child.wait_for(tmp_path / "committed.json")
    child.kill9()
    assert wal.exists()  # the last commit is only in the WAL

    store = MetadataStore(project.metadata_path, lock_timeout=5)
    assert not wal.exists()  # opening checkpointed it (DuckDB replays a leftover WAL but never checkpoints it)
    run = store.get_run(ids["run_id"])
    assert run.status == "interrupted" and run.metrics == {"rows": 3.0}
    (step_run,) = run.step_runs
    assert step_run.id == ids["step_run_id"] and step_run.status == "succeeded"
    assert step_run.outputs["out"].hash == ids["hash"]
    assert project.artifacts.get(step_run.outputs["out"]) == {"in": "wal"}
    new = store.create_run("after")
    store.finish_run(new, "succeeded")
    assert store.get_run(new).status == "succeeded" and not wal.exists()


def _locks_held_by(pid: int) -> set[str]:
    """Kinds of file locks (``FLOCK``: the writer lock file, ``POSIX``: DuckDB's) process ``pid`` holds (Linux)."""
    kinds = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == str(pid) and fields[1] in ("FLOCK", "POSIX"):
            kinds.add(fields[1])
    return kinds


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to see who holds the lock")
def test_kill9_at_random_moments_while_writing(tmp_path, spawn):
    from mlops_nb.project import Project
    from mlops_nb.store.metadata import MetadataStore

    project = Project(tmp_path).init()
    wal = project.metadata_path.with_name(project.metadata_path.name + ".wal")
    rng = random.Random(20240607)
    interrupted = 0
    for attempt in range(6):
        child = spawn("write-loop", tmp_path, attempt)
        committed = tmp_path / f"committed-{attempt}.txt"
        deadline = time.monotonic() + 60
        while not committed.exists() or committed.read_text().count("step ") < 7:  # 1 run finished, 1 under way
            assert child.proc.poll() is None, child.stderr()
            assert time.monotonic() < deadline, "the child recorded nothing"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        while "FLOCK" not in _locks_held_by(child.pid):  # a random moment while it holds the writer lock
            assert time.monotonic() < deadline and child.proc.poll() is None
        child.kill9()

        store = MetadataStore(project.metadata_path, lock_timeout=5)  # opens after a kill mid-write
        assert not wal.exists()
        lines = committed.read_text().splitlines()
        runs = [line.split()[1] for line in lines if line.startswith("run ")]
        finished = {line.split()[1] for line in lines if line.startswith("finished ")}
        steps = {line.split()[1] for line in lines if line.startswith("step ")}
        for run_id in runs:
            run = store.get_run(run_id)
            assert {s for s in steps if s.startswith(run_id + ".")} <= {s.id for s in run.step_runs}
            if run_id in finished:
                assert run.status == "succeeded" and len(run.step_runs) == 5
            elif run.status == "interrupted":  # the run it was killed in (unless killed in finish_run's COMMIT)
                assert run_id == runs[-1]
                assert {s.status for s in run.step_runs} <= {"succeeded", "interrupted"}
                interrupted += 1
            else:
                assert run.status == "succeeded" and run_id == runs[-1]
            for step_run in run.step_runs:
                if step_run.status == "succeeded":
                    assert project.artifacts.get(step_run.outputs["out"])["step"] == int(step_run.step[-1])

    # Every run ever recorded is readable, none is left running, and the store still takes writes.
    store = MetadataStore(project.metadata_path, lock_timeout=5)
    listed = store.list_runs(limit=None)
    assert {r.status for r in listed} <= {"succeeded", "interrupted"}
    assert interrupted >= 1
    assert store.sql("SELECT count(*) AS n FROM step_runs WHERE status = 'running'")["n"][0] == 0
    for r in listed:
        assert store.get_run(r.id).step_counts.get("running", 0) == 0
    new = store.create_run("after")
    store.finish_run(new, "succeeded")
    assert store.get_run(new).status == "succeeded"


# 3. A busy store ------------------------------------------------------------------------------------------------------------
def _assert_busy_message(error: pytest.ExceptionInfo, path: Path, what: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and what in message
    assert "0.5 s" in message and "lock_timeout" in message


@pytest.mark.slow
def test_writer_lock_held_by_another_process(tmp_path, spawn):
    from mlops_nb.exceptions import StoreBusyError
    from mlops_nb.project import Project
    from mlops_nb.store.metadata import MetadataStore

    path = Project(tmp_path).init().metadata_path
    child = spawn("hold-lock", tmp_path, path)
    child.wait_for(tmp_path / "held.json")
    store = MetadataStore(path, lock_timeout=0.5)  # opening reads only: the writer lock is not needed
    assert store.list_runs() == []
    started = time.monotonic()
    with pytest.raises(StoreBusyError) as error:
        store.create_run("blocked")
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 10.0, elapsed  # 0.5 s, not the default: loose above for a loaded machine
    _assert_busy_message(error, path, "another process held its write lock")
    assert store.list_runs() == []

    signal_parent(tmp_path, "release")
    child.wait_for(tmp_path / "released.json")
    run_id = store.create_run("unblocked")
    assert store.get_run(run_id).status == "running"
    child.proc.wait(30)
    assert child.proc.returncode == 0, child.stderr()


@pytest.mark.slow
def test_database_held_open_by_another_process(tmp_path, spawn):
    from mlops_nb.exceptions import StoreBusyError
    from mlops_nb.project import Project
    from mlops_nb.store.metadata import MetadataStore

    path = Project(tmp_path).init().metadata_path
    opened = MetadataStore(path, lock_timeout=0.5)
    child = spawn("hold-db", tmp_path, path)
    child.wait_for(tmp_path / "held.json")
    for action in (lambda: MetadataStore(path, lock_timeout=0.5), opened.list_runs, lambda: opened.create_run("x")):
        started = time.monotonic()
        with pytest.raises(StoreBusyError) as error:
            action()
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 10.0, elapsed
        _assert_busy_message(error, path, "another process held the database open")

    signal_parent(tmp_path, "release")
    child.wait_for(tmp_path / "released.json")
    store = MetadataStore(path, lock_timeout=0.5)
    run_id = store.create_run("unblocked")
    assert opened.get_run(run_id).status == "running"
    child.proc.wait(30)
    assert child.proc.returncode == 0, child.stderr()


if __name__ == "__main__":  # a child process: python test_concurrency.py ROLE ARGS...
    ROLES[sys.argv[1]](*sys.argv[2:])
