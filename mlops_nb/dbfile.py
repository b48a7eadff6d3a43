"""A DuckDB file used the way every mlops_nb store uses one: short-lived connections (DESIGN invariant 3).

DuckDB lets one process at a time open a file for writing, and while it does no other process can open it at
all, not even read-only. So a store opens a connection per operation and closes it at once: writers are
serialised across processes by a file lock next to the database, and both readers and writers retry a locked file
with backoff for at most ``lock_timeout`` seconds before raising :class:`~mlops_nb.exceptions.StoreBusyError`.
Within one process, connections to a file are taken one at a time (DuckDB refuses a second connection to the same
file with a different configuration).

The metadata store follows the same protocol with its own copy; new stores (the feature catalog) use this module.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .exceptions import StoreBusyError, StoreError

_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.RLock())


def utcnow() -> datetime:
    """Now in UTC as a naive datetime, the form every catalog timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


class DuckDBFile:
    """One DuckDB file with a cross-process writer lock, opened for one short operation at a time.

    Args:
        path: the database file (created on the first write).
        lock_timeout: seconds to wait for a busy file before raising :class:`StoreBusyError`.
        label: what the file is, for messages (``feature store catalog``).

    Example::

        db = DuckDBFile(".mlops/features.duckdb", 30.0, "feature store catalog")
        db.migrate(["CREATE TABLE t (x INTEGER)"])
        with db.connect(write=True) as con:
            con.execute("INSERT INTO t VALUES (?)", [1])
    """

    def __init__(self, path: str | os.PathLike, lock_timeout: float, label: str):
        self.path = Path(path).resolve()
        self.lock_timeout = float(lock_timeout)
        self.label = label
        if self.path.is_dir():
            raise StoreError(f"{label} {self.path} is a folder, not a DuckDB file; move it aside")
        from filelock import FileLock

        self._file_lock = FileLock(str(self.path) + ".lock")
        self._thread_lock = _process_lock(self.path)

    def __repr__(self) -> str:
        return f"DuckDBFile({str(self.path)!r})"

    def busy(self, what: str) -> StoreBusyError:
        """The error for a file kept busy longer than the lock timeout."""
        return StoreBusyError(
            f"{self.label} {self.path} is busy: {what} for more than {self.lock_timeout:g} s; retry, or raise "
            "lock_timeout in [tool.mlops_nb] (MLOPS_NB_LOCK_TIMEOUT)"
        )

    def _open(self, deadline: float, read_only: bool):
        import duckdb

        delay = 0.002
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as exc:
                text = str(exc)
                if "lock" not in text.lower():
                    first = text.splitlines()[0] if text else type(exc).__name__
                    raise StoreError(
                        f"{self.label} {self.path} cannot be opened ({first}); move the file aside to start anew"
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise self.busy("another process held the database open") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[Any]:
        """One short-lived connection; with ``write``, one transaction under the cross-process writer lock.

        A read of a file that does not exist yet opens it for writing (which creates it) under the lock.
        """
        from filelock import Timeout

        deadline = time.monotonic() + self.lock_timeout
        with self._thread_lock:
            write_lock = write or not self.path.exists()
            if write_lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._file_lock.acquire(timeout=self.lock_timeout, poll_interval=0.002)
                except Timeout:
                    raise self.busy("another process held its write lock") from None
            try:
                con = self._open(deadline, read_only=not write_lock)
                try:
                    if write:
                        con.execute("BEGIN TRANSACTION")
                    yield con
                    if write:
                        con.execute("COMMIT")
                except BaseException:
                    if write:
                        try:
                            con.execute("ROLLBACK")
                        except Exception:  # noqa: BLE001 - the original error matters
                            pass
                    raise
                finally:
                    con.close()
                if write_lock:
                    self._bump_generation()
            finally:
                if write_lock:
                    self._file_lock.release()

    @property
    def generation_path(self) -> Path:
        """``<file>.gen``: a token replaced after every write, so readers can tell the file changed."""
        return self.path.with_name(self.path.name + ".gen")

    def generation(self) -> str:
        """The current write token ("" before the first write). A cache of what was read from the file stays
        valid while this is unchanged (file mtimes are too coarse to tell two quick writes apart)."""
        try:
            return self.generation_path.read_text(encoding="ascii")
        except FileNotFoundError:
            return ""

    def _bump_generation(self) -> None:
        tmp = self.generation_path.with_name(f"{self.generation_path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(uuid.uuid4().hex, encoding="ascii")
        os.replace(tmp, self.generation_path)

    def migrate(self, migrations: list[str], kind: str) -> None:
        """Create or migrate the schema: ``migrations[i]`` takes version ``i`` to ``i + 1``.

        A read-only look first, so an up-to-date file needs no write lock. Refuses a newer schema and a DuckDB
        file that is not of this ``kind`` (it has tables but no ``schema_version``).
        """
        target = len(migrations)
        if self.path.exists():
            with self.connect() as con:
                if self._version(con, target, kind) == target:
                    return
        with self.connect(write=True) as con:
            version = self._version(con, target, kind)
            if version is None:
                others = con.execute("SELECT count(*) FROM information_schema.tables").fetchall()[0][0]
                if others:
                    raise StoreError(
                        f"{self.path} is a DuckDB file but not an mlops_nb {kind} (no schema_version table); "
                        "point the project elsewhere or move the file aside"
                    )
                con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP)")
                version = 0
            for step in range(version, target):
                con.execute(migrations[step])
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [step + 1, utcnow()])

    def _version(self, con, target: int, kind: str) -> int | None:
        tables = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'").fetchall()
        if not tables[0][0]:
            return None
        version = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0
        if version > target:
            raise StoreError(
                f"{kind} {self.path} has schema version {version}, newer than this mlops_nb knows ({target}); "
                "upgrade mlops_nb (pip install -U mlops-nb)"
            )
        return version
