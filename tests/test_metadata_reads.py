"""Reads of a long-lived store (what a polling sidebar does) from the user's side, with real processes.

A store keeps the answers of its reads while the file is unchanged; these tests check that a write by another
process, through the API or by plain DuckDB, is seen by the very next read, however quickly it follows, and that a
read whose answer is kept does not need the file at all (it answers while another process holds the file open).

The writer is this file run as a script (``python tests/test_metadata_reads.py writer DB``): it reads one command a
line on stdin, does it, and answers ``ok`` (or ``ok VALUE``) on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from mlops_nb.core.records import ArtifactRef
from mlops_nb.exceptions import StoreBusyError
from mlops_nb.store.dbfile import SETTLE_SECONDS
from mlops_nb.store.metadata import MetadataStore


# The writer process ------------------------------------------------------------------------------------------
def writer(db: str) -> None:
    """Do each command read from stdin on the store ``db`` (or on the file with plain DuckDB), answer on stdout."""
    store = MetadataStore(db)
    held = None
    for line in sys.stdin:
        command, *args = line.split()
        answer = ""
        if command == "create":
            answer = store.create_run("reads", params={"n": int(args[0])})
        elif command == "step":  # run_id step name hash: a step that made an artifact, in one write each
            run_id, step, name, digest = args
            step_run = store.start_step(run_id, step)
            store.finish_step(step_run, "succeeded", outputs={name: ArtifactRef(digest, "json")})
            answer = step_run
        elif command == "finish":
            store.finish_run(args[0], "succeeded")
        elif command == "duckdb":  # an UPDATE by another tool: plain DuckDB, closed at once (it checkpoints)
            import duckdb

            con = duckdb.connect(db)
            con.execute("UPDATE runs SET status = 'failed', error = ? WHERE id = ?", [args[1], args[0]])
            con.close()
        elif command == "hold":  # keep a read-write connection open, writing nothing
            import duckdb

            held = duckdb.connect(db)
            held.execute("SELECT count(*) FROM runs").fetchall()
        elif command == "release":
            held.close()
            held = None
        print(f"ok {answer}".strip(), flush=True)


class Writer:
    """The parent's handle on the writer process."""

    def __init__(self, db):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "writer", str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, *words: str) -> str:
        """Send one command and wait for its answer (the write is committed when this returns)."""
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer.startswith("ok"):
            raise AssertionError(f"writer answered {answer!r} to {words}; exit code {self.proc.poll()}")
        return answer[3:]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture
def store_and_writer(tmp_path):
    store = MetadataStore(tmp_path / "metadata.duckdb", lock_timeout=0.5)
    other = Writer(store.path)
    yield store, other
    other.close()


def settle() -> None:
    """Wait until the file's last change is old enough for the answers read now to be kept."""
    time.sleep(SETTLE_SECONDS + 0.05)


def digest(n: int) -> str:
    return f"{n:02x}" * 32


# Tests -------------------------------------------------------------------------------------------------------------
def test_a_write_by_another_process_is_seen_by_the_next_read(store_and_writer):
    store, other = store_and_writer
    assert store.list_runs() == []
    run_id = other("create", "1")
    settle()
    assert [r.id for r in store.list_runs()] == [run_id]  # read, and kept
    assert [r.id for r in store.list_runs()] == [run_id]  # answered from what was kept
    assert store.get_run(run_id).step_runs == []

    step_run = other("step", run_id, "load", "raw", digest(1))
    assert store.list_runs()[0].step_counts == {"succeeded": 1}
    assert [s.id for s in store.get_run(run_id).step_runs] == [step_run]
    assert store.get_run("latest").status == "running"

    # writes that follow the last read within milliseconds, again and again: each one is seen at once
    previous = step_run
    for n in range(2, 8):
        step_run = other("step", run_id, f"s{n}", f"out{n}", digest(n))
        run = store.get_run(run_id)
        assert run.step_runs[-1].id == step_run and run.step_runs[-1].outputs[f"out{n}"].hash == digest(n)
        assert store.list_runs()[0].step_counts == {"succeeded": n}
        assert store.get_step_run(step_run).outputs[f"out{n}"].hash == digest(n)
        assert store.resolve_node(f"out{n}") == ("artifact", digest(n))
        assert store.lineage(f"out{n}", "up").nodes.keys() == {f"artifact:{digest(n)}", f"step_run:{step_run}"}
        assert step_run != previous
        previous = step_run

    settle()  # kept answers, then a write after the file had been quiet for a while
    assert store.get_run(run_id).status == store.list_runs()[0].status == "running"
    other("finish", run_id)
    assert store.get_run(run_id).status == store.list_runs()[0].status == "succeeded"
    assert store.list_runs(status="succeeded")[0].id == run_id


def test_a_write_by_another_tool_is_seen_by_the_next_read(store_and_writer):
    store, other = store_and_writer
    run_id = other("create", "1")
    settle()
    assert store.get_run(run_id).status == "running"
    assert store.get_run(run_id).status == "running"
    other("duckdb", run_id, "edited")  # not through mlops_nb: nothing but the file tells
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("failed", "edited")
    assert store.list_runs(status="failed")[0].id == run_id


def test_a_kept_answer_needs_no_open_file(store_and_writer):
    """While another process holds the file open for writing nobody can open it; an answer kept for the file as
    it still is comes without opening it, and the first read after a change waits or says the store is busy."""
    store, other = store_and_writer
    run_id = other("create", "1")
    settle()
    assert [r.id for r in store.list_runs()] == [run_id]
    other("hold")
    try:
        assert [r.id for r in store.list_runs()] == [run_id]
        with pytest.raises(StoreBusyError, match="another process held the database open"):
            store.get_run(run_id)  # never read before: it needs the file
    finally:
        other("release")
    assert store.get_run(run_id).id == run_id


def test_an_answer_changed_by_its_caller_is_not_kept_changed(store_and_writer):
    store, other = store_and_writer
    run_id = other("create", "1")
    settle()
    first = store.get_run(run_id)
    first.status, first.params["n"] = "mangled", 99
    first.step_runs.append("junk")
    again = store.get_run(run_id)
    assert (again.status, again.params, again.step_runs) == ("running", {"n": 1}, [])
    listed = store.list_runs()
    listed.clear()
    assert [r.id for r in store.list_runs()] == [run_id]


def test_reads_inside_a_write_batch_see_its_uncommitted_writes(tmp_path):
    store = MetadataStore(tmp_path / "metadata.duckdb")
    run_id = store.create_run("reads")
    settle()
    assert store.get_run(run_id).step_runs == []
    with store.batch(write=True):
        step_run = store.record_step(run_id, "a", "skipped")
        assert [s.id for s in store.get_run(run_id).step_runs] == [step_run]
        assert store.list_runs()[0].step_counts == {"skipped": 1}
    assert store.list_runs()[0].step_counts == {"skipped": 1}


def test_a_store_file_replaced_by_another_is_read_anew(tmp_path):
    first = MetadataStore(tmp_path / "a.duckdb")
    run_a = first.create_run("a")
    second = MetadataStore(tmp_path / "b.duckdb")
    run_b = second.create_run("b")
    settle()
    assert [r.id for r in first.list_runs()] == [run_a]
    (tmp_path / "b.duckdb").replace(tmp_path / "a.duckdb")  # the user moved another store in its place
    assert [r.id for r in first.list_runs()] == [run_b]
    assert json.dumps(first.get_run(run_b).to_dict()["params"]) == "{}"


if __name__ == "__main__":  # the writer process: python test_metadata_reads.py writer DB
    {"writer": writer}[sys.argv[1]](*sys.argv[2:])
