"""A DuckDB file used the way every mlops_nb store uses one: short-lived connections (DESIGN invariant 3).

DuckDB lets one process at a time open a file for writing, and while it does no other process can open it at
all, not even read-only. So a store opens its file for one operation and closes it at once: writers are serialised
across processes by a file lock next to the database, and both readers and writers retry a locked file with
backoff for at most ``lock_timeout`` seconds before raising :class:`~mlops_nb.exceptions.StoreBusyError`.

Opening is cheap: each process keeps one in-memory DuckDB connection, and an operation *attaches* the file to it
(~3 ms, where a DuckDB instance of its own costs ~12 ms) and detaches it at the end, which holds and releases the
file's lock exactly as a connection of its own would. That connection serves one operation at a time per process.
The metadata store and the feature store catalog both use this module.

A process that writes many small records in a row while no user code runs in it (the ``dag`` driver) may hold
the file (:meth:`DuckDBFile.held`): its operations then share one attach, kept between them for at most a tenth of
a second of no use and a quarter of a second in all, so another process waits that long at most. Attaching and
detaching (which checkpoints the WAL) cost ~5 ms an operation, more than a small operation itself.

A reader that polls (the sidebar) must not hold the file between calls either: DuckDB 2.0 lets no other process
open a file for writing while any process holds it open, even read-only. What such a reader keeps instead is a
:class:`ReadCache` of results, each valid only while the file is exactly as it was read: every call compares the
file's current :meth:`DuckDBFile.state` (identity, size and change times of the file and of its WAL, a few
``stat`` calls) with the cached one, serves a copy on a match and otherwise reads the file as usual.
"""

from __future__ import annotations

import os
import pickle
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..core.clock import utcnow
from ..exceptions import StoreBusyError, StoreError

_thread_lock = threading.RLock()  # the process's in-memory connection serves one operation at a time
_memory: tuple[int, Any] | None = None  # (pid, connection)
_in_use: list[str] = []  # files attached now, innermost last (an operation on one store may use another)
_holds: dict[str, _Hold] = {}  # path -> the hold on that file in this process (see DuckDBFile.held)
T = TypeVar("T")

# A state whose newest change time is closer to "now" than this may still change without its change times
# moving (a file system stamps times from a clock that advances in ticks of a few ms, 25 ms seen here): results
# read in it are served but not cached.
SETTLE_SECONDS = 0.25
RETRY_CAP_SECONDS = 0.005  # the longest wait between two tries to open a file another process holds (first 0.5 s)
RETRY_CAP_LATER = 0.05  # ... and after that
YIELD_SECONDS = 0.06  # a holder that let the file go waits this long before taking it again when another waits


def _quiet(con):
    """``con`` without DuckDB's progress bar, which it draws on stdout for a query over 2 s: into a command's
    ``--json`` output or a notebook cell's."""
    con.execute("SET enable_progress_bar = false")
    return con


def memory_connection():
    """This process's in-memory DuckDB connection, which store files are attached to while they are used.

    A forked child makes its own: DuckDB connections do not survive a fork.
    """
    global _memory
    with _thread_lock:
        if _memory is None or _memory[0] != os.getpid():
            import duckdb

            _memory = (os.getpid(), _quiet(duckdb.connect(":memory:")))
            _in_use.clear()
        return _memory[1]


def _resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; 0 elsewhere, where :func:`release_memory` never runs)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_released_at = [0]  # resident bytes after the last release


def release_memory(grown: int = 32 << 20) -> None:
    """Give the memory DuckDB's allocator keeps after its queries back to the system, once the process grew by
    ``grown`` bytes since the last release. The allocator keeps up to 128 MB a thread, and more after a bulk free,
    for reuse: 270 MB more resident than needed after one large read, seen here. Long-lived processes (a kernel
    after each step, a driver after each run) call this: lowering the flush thresholds for every query would slow
    a large read by ~60 %; one flush costs ~30 ms per 250 MB returned, and the check when nothing grew ~20 µs. A
    no-op until this process used DuckDB."""
    with _thread_lock:
        if _memory is None or _memory[0] != os.getpid():
            return
        if _resident_bytes() - _released_at[0] < grown:
            return
        import duckdb

        con = _memory[1]
        try:
            try:
                con.execute("SET allocator_flush_threshold = '0MB'")
                con.execute("SET allocator_bulk_deallocation_flush_threshold = '0MB'")
                con.execute("SELECT 1").fetchall()  # the flush happens when a task ends
            finally:
                con.execute("RESET allocator_flush_threshold")
                con.execute("RESET allocator_bulk_deallocation_flush_threshold")
        except duckdb.Error:  # a housekeeping step: a DuckDB that cannot (closed, interrupted) keeps its memory
            pass
        _released_at[0] = _resident_bytes()


def memory():
    """A new connection (a cursor: microseconds, where opening a database costs ~12 ms) to this process's
    in-memory DuckDB database, with the time zone set to UTC. Temporary tables, views and registered Arrow tables
    belong to the connection and go when it is closed. Point-in-time reads and statistics run on these."""
    with _thread_lock:
        con = memory_connection().cursor()
    con.execute("SET TimeZone = 'UTC'; SET enable_progress_bar = false")
    return con


class _Hold:
    """A file kept attached between the operations of this process (see :meth:`DuckDBFile.held`), on an
    in-memory DuckDB of its own: never the process's shared connection, whose transaction may belong to an
    operation on another file."""

    def __init__(self, owner: DuckDBFile, longest: float, idle: float):
        from filelock import FileLock

        self.owner, self.longest, self.idle = owner, longest, idle
        # the writer lock, taken in one thread and released in another (the hold's own thread)
        self.lock = FileLock(str(owner.path) + ".lock", thread_local=False)
        self.pid = os.getpid()
        self.con = None  # the DuckDB the file is attached to (made on the first operation)
        self.attached = False  # the file attached and its writer lock held
        self.since = self.last = 0.0  # monotonic times of the attach and of the end of the last operation
        self.let_go_at = float("-inf")  # monotonic time the file was last let go
        self.closed = False
        self.wake = threading.Condition(_thread_lock)


class DuckDBFile:
    """One DuckDB file with a cross-process writer lock, opened for one short operation at a time.

    Args:
        path: the database file (created on the first write).
        lock_timeout: seconds to wait for a busy file before raising :class:`StoreBusyError`.
        label: what the file is, for messages (``feature store catalog``).
        fix: what a user can do about a file DuckDB cannot open.
        generations: keep a ``<file>.gen`` token that every write replaces (see :meth:`generation`).

    Example::

        db = DuckDBFile(".mlops/features.duckdb", 30.0, "feature store catalog")
        db.migrate(["CREATE TABLE t (x INTEGER)"], "feature store catalog")
        with db.connect(write=True) as con:
            con.execute("INSERT INTO t VALUES (?)", [1])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        lock_timeout: float,
        label: str,
        fix: str = "move the file aside to start anew",
        generations: bool = False,
    ):
        self.path = Path(path).resolve()
        self.lock_timeout = float(lock_timeout)
        self.label, self.fix, self.generations = label, fix, generations
        if self.path.is_dir():
            raise StoreError(f"{label} {self.path} is a folder, not a DuckDB file; move it aside")
        from filelock import FileLock

        self._file_lock = FileLock(str(self.path) + ".lock")
        self.alias = f"db_{secrets.token_hex(4)}"  # this file's name in the process's in-memory connection
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"DuckDBFile({str(self.path)!r})"

    def busy(self, what: str) -> StoreBusyError:
        """The error for a file kept busy longer than the lock timeout."""
        return StoreBusyError(
            f"{self.label} {self.path} is busy: {what} for more than {self.lock_timeout:g} s; retry, or raise "
            "lock_timeout in [tool.mlops_nb] (MLOPS_NB_LOCK_TIMEOUT)"
        )

    @property
    def wal_path(self) -> Path:
        """DuckDB's write-ahead log next to the file."""
        return self.path.with_name(self.path.name + ".wal")

    def state(self) -> tuple | None:
        """What the file is now, from ``stat`` alone: device, inode, size, mtime and ctime of the database and of
        its WAL (None for a WAL that is not there); None when the database does not exist.

        Every committed write changes it: a commit appends to the WAL (size and times move), a checkpoint rewrites
        the database (its times move) and a file moved in its place has another inode. ``ctime`` cannot be set back
        by any tool, so a copy that keeps the old mtime still changes it. Two states compare equal only when nothing
        touched either file in between, provided the state had settled (see :meth:`settled`). (A network file
        system may cache attributes: there, writes from another host can show late; read with caching off.)
        """
        parts = []
        for file in (self.path, self.wal_path):
            try:
                st = os.stat(file)
            except FileNotFoundError:
                parts.append(None)
                continue
            parts.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(parts) if parts[0] is not None else None

    @staticmethod
    def settled(state: tuple | None, seconds: float = SETTLE_SECONDS) -> bool:
        """Whether the newest change in ``state`` is at least ``seconds`` old, so that any later write gets
        change times of its own (file times advance in clock ticks: a write within the same tick as the last one
        might leave them as they were)."""
        if state is None:
            return False
        newest = max(max(part[3], part[4]) for part in state if part is not None)
        return time.time_ns() - newest >= seconds * 1e9

    def in_operation(self) -> bool:
        """Whether this thread has the file open now (inside :meth:`connect` or :meth:`batch`)."""
        return getattr(self._local, "con", None) is not None

    def _attach(self, deadline: float, read_only: bool, on=None):
        """The file attached to this process's in-memory connection (or to the DuckDB ``on``), or (inside an
        operation on another file, whose transaction that connection carries) opened on a connection of its own."""
        import duckdb

        nested = bool(_in_use) and on is None
        memory = on if on is not None else None if nested else memory_connection()
        path = str(self.path).replace("'", "''")
        statement = f"ATTACH '{path}' AS {self.alias}" + (" (READ_ONLY)" if read_only else "")
        delay, started = 0.002, time.monotonic()
        while True:
            try:
                if nested:
                    return _quiet(duckdb.connect(str(self.path), read_only=read_only))
                memory.execute(statement)
                memory.execute(f"USE {self.alias}")
                if on is None:
                    _in_use.append(self.alias)
                return memory
            except duckdb.Error as exc:
                text = str(exc)
                if "lock" not in text.lower():
                    first = text.splitlines()[0] if text else type(exc).__name__
                    raise StoreError(f"{self.label} {self.path} cannot be opened ({first}); {self.fix}") from None
                if time.monotonic() + delay > deadline:
                    raise self.busy("another process held the database open") from None
                self._mark_waiting()
                time.sleep(delay)
                # short steps at first: another process mostly holds the file for one short operation (a poll's
                # read, a write), and a waiter that sleeps on long after it let go adds that sleep to a run; longer
                # ones once the wait is long (each try opens the file)
                waited = time.monotonic() - started
                delay = min(delay * 2, RETRY_CAP_SECONDS if waited < 0.5 else RETRY_CAP_LATER)

    def _detach(self, con) -> None:
        if _in_use and _in_use[-1] == self.alias and con is memory_connection():
            _in_use.pop()
            con.execute(f"USE {_in_use[-1] if _in_use else 'memory'}")
            con.execute(f"DETACH {self.alias}")
        else:
            con.close()

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[Any]:
        """One short-lived connection; with ``write``, one transaction under the cross-process writer lock.

        A read of a file that does not exist yet creates it (under the lock). Inside :meth:`batch` (or another
        ``connect`` of this file in the same thread) the open connection is reused.
        """
        open_con = getattr(self._local, "con", None)
        if open_con is not None:
            if write and not self._local.write:
                raise StoreError(f"cannot write inside a read-only {self.label} operation")
            yield open_con
            return
        deadline = time.monotonic() + self.lock_timeout
        with _thread_lock:
            hold = _holds.get(str(self.path))
            if hold is not None and hold.pid == os.getpid():
                with self._held_operation(hold, write, deadline) as con:
                    yield con
                return
            write_lock = write or not self.path.exists()
            if write_lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._acquire(self._file_lock, deadline)
            try:
                con = self._attach(deadline, read_only=not write_lock)
                try:
                    # With the file open for writing no other process has it open, so a WAL now is one a killed
                    # writer left. DuckDB replays it on every open but no longer checkpoints it on close: it grows
                    # with every write and makes every connection slower until checkpointed here.
                    leftover_wal = write and self.wal_path.exists()
                    with self._transaction(con, write):
                        yield con
                    if leftover_wal:
                        self._checkpoint(con)
                finally:
                    self._detach(con)
                if write_lock and self.generations:
                    self._bump_generation()
            finally:
                if write_lock:
                    self._file_lock.release()

    @contextmanager
    def _transaction(self, con, write: bool) -> Iterator[Any]:
        """``con`` as this thread's open connection for one operation; with ``write``, in a transaction committed
        when the block ends and rolled back when it raises."""
        self._local.con, self._local.write = con, write
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
            self._local.con = None

    @contextmanager
    def batch(self, write: bool = False) -> Iterator[Any]:
        """Several operations on one connection (with ``write``, in one transaction). Keep it short: the file
        stays locked for other processes until the block ends."""
        if getattr(self._local, "con", None) is not None:
            raise StoreError(f"{self.label} batches cannot be nested")
        with self.connect(write=write) as con:
            yield con

    @property
    def waiting_path(self) -> Path:
        """``<file>.waiting``: touched by a process each time it finds the file busy, so that a process holding it
        (:meth:`held`) lets it have a turn."""
        return self.path.with_name(self.path.name + ".waiting")

    def _mark_waiting(self) -> None:
        try:
            os.utime(self.waiting_path)
        except FileNotFoundError:
            try:
                self.waiting_path.touch()
            except OSError:
                pass
        except OSError:  # a read-only folder: no turn asked for, the usual retries
            pass

    def _acquire(self, lock, deadline: float) -> None:
        """Take the cross-process writer ``lock`` by ``deadline``, marking this process as waiting meanwhile."""
        from filelock import Timeout

        while True:
            try:
                lock.acquire(timeout=max(0.0, min(0.05, deadline - time.monotonic())), poll_interval=0.002)
                return
            except Timeout:
                if time.monotonic() >= deadline:
                    raise self.busy("another process held its write lock") from None
                self._mark_waiting()

    def _yield_to_waiters(self, hold: _Hold) -> None:
        """Before a hold takes the file again: if another process found it busy since shortly before the hold let
        it go, wait until it had ``YIELD_SECONDS`` to take its turn (its tries come at most ``RETRY_CAP_LATER``
        apart), so a process that keeps writing cannot starve the others."""
        try:
            asked = os.stat(self.waiting_path).st_mtime
        except OSError:
            return
        if asked >= time.time() - (time.monotonic() - hold.let_go_at) - hold.longest:
            pause = hold.let_go_at + YIELD_SECONDS - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    @contextmanager
    def held(self, longest: float = 0.25, idle: float = 0.1) -> Iterator[None]:
        """Within the block, this process's operations on the file share one attach: it stays attached, and its
        writer lock held, between operations until none came for ``idle`` seconds or ``longest`` seconds passed
        since it was attached; the next operation attaches it again. Each operation is still a transaction of its
        own, committed when it ends, and every store object on this file in the process goes through the hold.
        For a process that writes many small records while no user code runs in it (the ``dag`` driver; DESIGN
        invariant 3): another process waits ``longest`` seconds at most for the file."""
        with _thread_lock:
            held = _holds.get(str(self.path))
            if held is not None and held.pid == os.getpid():  # held already: that hold serves this block too
                yield
                return
            hold = _holds[str(self.path)] = _Hold(self, longest, idle)
        releaser = threading.Thread(target=self._release_when_due, args=(hold,), daemon=True, name="mlops-nb-hold")
        releaser.start()
        try:
            yield
        finally:
            with _thread_lock:
                hold.closed = True
                _holds.pop(str(self.path), None)  # first: whatever happens next, later operations are the usual
                hold.wake.notify_all()
                try:
                    self._let_go(hold)
                finally:
                    if hold.con is not None:
                        hold.con.close()
            releaser.join()

    @contextmanager
    def _held_operation(self, hold: _Hold, write: bool, deadline: float) -> Iterator[Any]:
        """One operation (a transaction with ``write``) on the held file, attaching it first if it is not."""
        owner = hold.owner
        if not hold.attached:
            if hold.con is None:
                import duckdb

                # one thread: a hold serves many small operations, for which DuckDB's pool only adds wake-ups
                # (~2.5 ms of CPU a step of the dag driver)
                hold.con = _quiet(duckdb.connect(":memory:", config={"threads": 1}))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._yield_to_waiters(hold)
            self._acquire(hold.lock, deadline)
            try:
                owner._attach(deadline, read_only=False, on=hold.con)
            except BaseException:
                hold.lock.release()
                raise
            hold.attached, hold.since = True, time.monotonic()
            if self.wal_path.exists():  # a killed writer's WAL (see connect): checkpointed now, once
                self._checkpoint(hold.con)
        try:
            with self._transaction(hold.con, write) as con:
                yield con
        except BaseException:
            self._let_go(hold)  # a connection an error went through is not kept
            raise
        if write and self.generations:
            self._bump_generation()
        hold.last = time.monotonic()
        if hold.last - hold.since >= hold.longest:
            self._let_go(hold)
        else:
            hold.wake.notify()

    @staticmethod
    def _let_go(hold: _Hold) -> None:
        """Detach the held file (DuckDB checkpoints its WAL) and release its writer lock; under ``_thread_lock``,
        so that no operation is under way."""
        if not hold.attached:
            return
        hold.attached, hold.let_go_at = False, time.monotonic()
        try:
            hold.con.execute("USE memory")
            hold.con.execute(f"DETACH {hold.owner.alias}")
        except Exception:  # noqa: BLE001 - committed already: a DuckDB that will not detach is dropped
            hold.con.close()
            hold.con = None
        finally:
            hold.lock.release()

    def _release_when_due(self, hold: _Hold) -> None:
        """The hold's thread: let the file go once no operation came for ``idle`` seconds or it was held
        ``longest`` seconds in all."""
        with _thread_lock:
            while not hold.closed:
                if not hold.attached:
                    hold.wake.wait()
                    continue
                due = min(hold.since + hold.longest, hold.last + hold.idle) - time.monotonic()
                if due > 0:
                    hold.wake.wait(due)
                else:
                    self._let_go(hold)

    def _checkpoint(self, con) -> None:
        import duckdb

        try:
            con.execute(f"CHECKPOINT {self.alias}" if self.alias in _in_use else "CHECKPOINT")
        except duckdb.Error:
            pass  # the data is committed and safe in the WAL; the next write tries again

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

    def migrate(
        self,
        migrations: list[str],
        kind: str,
        needs_write: Callable[[Any], bool] | None = None,
        on_write: Callable[[Any], None] | None = None,
    ) -> None:
        """Create or migrate the schema: ``migrations[i]`` takes version ``i`` to ``i + 1``.

        A read-only look first, so an up-to-date file needs no write lock unless ``needs_write(con)`` says so or a
        killed writer left a WAL (checkpointed by the write). ``on_write(con)`` then runs in the same transaction.
        Refuses a newer schema and a DuckDB file that is not of this ``kind`` (tables but no ``schema_version``).
        """
        target = len(migrations)
        if self.path.exists():
            with self.connect() as con:
                if (
                    self._version(con, target, kind) == target
                    and not (needs_write and needs_write(con))
                    and not self.wal_path.exists()
                ):
                    return
        with self.connect(write=True) as con:
            version = self._version(con, target, kind)
            if version is None:
                others = con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database()"
                ).fetchall()[0][0]
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
            if on_write is not None:
                on_write(con)

    def _version(self, con, target: int, kind: str) -> int | None:
        tables = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' "
            "AND database_name = current_database()"
        ).fetchall()
        if not tables[0][0]:
            return None
        version = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0
        if version > target:
            raise StoreError(
                f"{kind} {self.path} has schema version {version}, newer than this mlops_nb knows ({target}); "
                "upgrade mlops_nb (pip install -U mlops-nb)"
            )
        return version


class ReadCache:
    """Results of reads of one :class:`DuckDBFile`, each served only while the file is as it was when read.

    ``read(key, fn)`` takes the file's :meth:`~DuckDBFile.state` first (a few ``stat`` calls, ~10 µs), then serves
    a copy of the value cached under ``key`` for exactly that state, or else opens the file as every read does
    (short-lived, never held between calls), runs ``fn(con)`` and caches its value when the state had settled.
    Taking the state *before* reading is what keeps it safe: a write that lands between the ``stat`` and the read
    leaves a value newer than its state, which the next call, seeing a changed state, reads again. Values are kept
    pickled, so a caller may change what it gets without changing the cache (or, with ``copy=False``, as they are,
    for values nobody can change). Inside an operation on the file
    (a write batch) reads go to the open connection, uncached: they may see uncommitted writes.

    Args:
        db: the file.
        max_entries: values kept for the current state (least recently used go first); 0 keeps none.

    Example::

        cache = ReadCache(db)
        rows = cache.read(("items", 10), lambda con: con.execute("SELECT * FROM items LIMIT 10").fetchall())
    """

    def __init__(self, db: DuckDBFile, max_entries: int = 256):
        self.db = db
        self.max_entries = max_entries
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._state: tuple | None = None
        self._entries: OrderedDict[Hashable, tuple[bool, Any]] = OrderedDict()  # key -> (pickled, value)

    def read(self, key: Hashable, fn: Callable[[Any], T], copy: bool = True) -> T:
        """``fn(con)`` on a short-lived read connection, or a copy of its value cached for the file's current
        state. With ``copy=False`` the value is kept and served as it is: only for values nobody can change
        (tuples of rows), where it saves pickling a large answer."""
        if self.max_entries <= 0 or self.db.in_operation():
            with self.db.connect() as con:
                return fn(con)
        state = self.db.state()
        entry = None
        with self._lock:
            if state is not None and state == self._state:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
            if entry is None:
                self.misses += 1
        if entry is not None:
            pickled, kept = entry
            return pickle.loads(kept) if pickled else kept
        with self.db.connect() as con:
            value = fn(con)
        if self.db.settled(state):
            kept = value
            if copy:
                try:
                    kept = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                except (pickle.PicklingError, TypeError, AttributeError):
                    return value
            with self._lock:
                if state != self._state:  # every value of an older state is stale now
                    self._entries.clear()
                    self._state = state
                self._entries[key] = (copy, kept)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._entries.clear()
            self._state = None
