"""The one protocol every store uses for its DuckDB file (``mlops_nb/dbfile.py``), on real files."""

from __future__ import annotations

import pytest

from mlops_nb.exceptions import StoreError
from mlops_nb.store.dbfile import DuckDBFile

SCHEMA = ["CREATE TABLE items (name VARCHAR, n INTEGER)"]


def make(tmp_path, name: str) -> DuckDBFile:
    db = DuckDBFile(tmp_path / f"{name}.duckdb", 5.0, f"{name} store", generations=True)
    db.migrate(SCHEMA, f"{name} store")
    return db


def test_an_operation_on_one_file_inside_another_ones(tmp_path):
    outer, inner = make(tmp_path, "outer"), make(tmp_path, "inner")
    with outer.connect(write=True) as con:
        con.execute("INSERT INTO items VALUES ('o', 1)")
        with inner.connect(write=True) as con2:
            con2.execute("INSERT INTO items VALUES ('i', 2)")
            with outer.connect() as again:  # the same file again in the same thread: the open connection
                assert again is con
            fresh = make(tmp_path, "fresh")  # created and migrated inside the other two's operations
            with fresh.connect() as con3:
                assert con3.execute("SELECT count(*) FROM items").fetchall() == [(0,)]
        # after the inner file is done, unqualified names are the outer file's again
        assert con.execute("SELECT name FROM items").fetchall() == [("o",)]
    with inner.connect() as con:
        assert con.execute("SELECT name, n FROM items").fetchall() == [("i", 2)]


def test_writes_change_the_generation_and_nested_writes_in_reads_are_refused(tmp_path):
    db = make(tmp_path, "catalog")
    before = db.generation()
    with db.connect(write=True) as con:
        con.execute("INSERT INTO items VALUES ('a', 1)")
    assert db.generation() != before
    with db.connect() as con, pytest.raises(StoreError, match="cannot write inside a read-only catalog store"):
        with db.connect(write=True):
            pass
    with db.batch(write=True) as con, pytest.raises(StoreError, match="batches cannot be nested"):
        with db.batch():
            pass


def test_a_failed_write_rolls_back(tmp_path):
    db = make(tmp_path, "catalog")
    with pytest.raises(RuntimeError), db.connect(write=True) as con:
        con.execute("INSERT INTO items VALUES ('lost', 1)")
        raise RuntimeError("boom")
    with db.connect() as con:
        assert con.execute("SELECT count(*) FROM items").fetchall() == [(0,)]


def test_a_newer_schema_and_a_foreign_file_are_refused(tmp_path):
    db = make(tmp_path, "catalog")
    with pytest.raises(StoreError, match="has schema version 1, newer than this mlops_nb knows \\(0\\)"):
        db.migrate([], "catalog store")
    foreign = DuckDBFile(tmp_path / "other.duckdb", 5.0, "catalog store")
    with foreign.connect(write=True) as con:
        con.execute("CREATE TABLE mine (x INTEGER)")
    with pytest.raises(StoreError, match="is a DuckDB file but not an mlops_nb catalog store"):
        foreign.migrate(SCHEMA, "catalog store")


def test_a_read_cache_serves_an_answer_only_for_the_file_as_it_was_read(tmp_path):
    import time

    from mlops_nb.store.dbfile import SETTLE_SECONDS, ReadCache

    db = make(tmp_path, "catalog")
    cache = ReadCache(db)

    def names():
        return cache.read(
            "names", lambda con: [r[0] for r in con.execute("SELECT name FROM items ORDER BY name").fetchall()]
        )

    with db.connect(write=True) as con:
        con.execute("INSERT INTO items VALUES ('a', 1)")
    assert not db.settled(db.state())  # just written: an answer read now is served, not kept
    assert names() == ["a"] and names() == ["a"] and cache.hits == 0
    time.sleep(SETTLE_SECONDS + 0.05)
    assert db.settled(db.state())
    assert names() == ["a"] and names() == ["a"] and cache.hits == 1
    kept = names()
    kept.append("changed by the caller")
    assert names() == ["a"]
    with db.connect(write=True) as con:
        con.execute("INSERT INTO items VALUES ('b', 2)")
    assert names() == ["a", "b"]  # the file changed: read again
    with db.batch() as con:  # inside an operation: the open connection, uncached
        assert names() == ["a", "b"] and cache.hits == 3


RELEASE_SCRIPT = """
import sys
from mlops_nb.store.dbfile import DuckDBFile, _resident_bytes, release_memory
db = DuckDBFile(sys.argv[1], 5.0, "test store")
with db.connect(write=True) as con:
    con.execute("CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(1500000)")
with db.connect() as con:
    con.execute("SELECT s, count(*) FROM t GROUP BY s ORDER BY 2 DESC LIMIT 3").fetchall()
after_read = _resident_bytes()
release_memory()
released = _resident_bytes()
release_memory()  # nothing grew since: a no-op
print(after_read >> 20, released >> 20, _resident_bytes() >> 20)
"""


def test_release_memory_gives_back_what_duckdbs_allocator_kept_after_a_large_read(tmp_path):
    """A kernel lives on after its steps: the memory DuckDB's allocator caches after a large read goes back to the
    system when a step ends (engine.step calls release_memory), instead of staying resident for the session."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT, str(tmp_path / "big.duckdb")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    after_read, released, again = map(int, done.stdout.splitlines()[-1].split()[-3:])  # after any progress bar
    assert after_read - released >= 100, (after_read, released)  # ~250 MB measured here
    assert abs(again - released) < 16


READ_ITEMS = """
import sys, time
from mlops_nb.exceptions import StoreBusyError
from mlops_nb.store.dbfile import DuckDBFile
db = DuckDBFile(sys.argv[1], float(sys.argv[2]), "catalog store")
started = time.monotonic()
try:
    with db.connect() as con:
        print(con.execute("SELECT count(*) FROM items").fetchall()[0][0], round(time.monotonic() - started, 3))
except StoreBusyError:
    print(-1, round(time.monotonic() - started, 3))
"""


def _read_in_another_process(db: DuckDBFile, lock_timeout: float = 30.0) -> tuple[int, float]:
    """(rows, seconds waited) of a read by another process; rows -1 when the file stayed busy."""
    import subprocess
    import sys

    command = [sys.executable, "-c", READ_ITEMS, str(db.path), str(lock_timeout)]
    count, waited = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    return int(count), float(waited)


def test_a_held_file_shares_one_attach_and_is_let_go_when_idle(tmp_path):
    """Inside ``held()`` the operations of this process reuse one attach (another process cannot open the file
    meanwhile); the file is let go after ``idle`` seconds without use, and each operation was committed on its own."""
    db = make(tmp_path, "catalog")
    other = DuckDBFile(db.path, 5.0, "catalog store")  # a second store object on the same file goes through the hold
    with db.held(longest=30.0, idle=30.0):
        with db.connect(write=True) as con:
            con.execute("INSERT INTO items VALUES ('a', 1)")
        with other.connect() as con:
            assert con.execute("SELECT count(*) FROM items").fetchall() == [(1,)]
        assert _read_in_another_process(db, lock_timeout=0.3)[0] == -1  # held: attached for writing here
        with pytest.raises(RuntimeError), db.connect(write=True) as con:  # rolled back; the file is let go
            con.execute("INSERT INTO items VALUES ('lost', 2)")
            raise RuntimeError("boom")
        assert _read_in_another_process(db)[0] == 1
        with db.connect(write=True) as con:
            con.execute("INSERT INTO items VALUES ('b', 3)")
    assert _read_in_another_process(db)[0] == 2  # let go at the end of the block
    with db.held(longest=30.0, idle=0.05):
        with db.connect(write=True) as con:
            con.execute("INSERT INTO items VALUES ('c', 4)")
        count, waited = _read_in_another_process(db)  # waits for the idle hold to be let go, then reads
        assert count == 3 and waited < 5.0


def test_a_held_file_is_let_go_after_longest_even_when_in_use(tmp_path):
    """A process that keeps writing lets the file go every ``longest`` seconds and, seeing another process wait
    for it (``<file>.waiting``), gives it a turn before taking the file again."""
    import threading

    db = make(tmp_path, "catalog")
    stop = threading.Event()

    def keep_writing() -> None:
        with db.held(longest=0.05, idle=1.0):
            while not stop.is_set():
                with db.connect(write=True) as con:
                    con.execute("INSERT INTO items VALUES ('x', 1)")

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        count, waited = _read_in_another_process(db)
    finally:
        stop.set()
        writer.join()
    assert count > 0 and waited < 2.0  # ~0.12 s here
    with db.connect() as con:  # every write committed, the file let go
        assert con.execute("SELECT count(*) FROM items").fetchall()[0][0] >= count
