"""The prediction log: every request a scoring server answered, as Parquet segments under ``.mlops/predictions/``.

A server appends rows in memory; a background thread writes them as a new segment
``<day>/<time>-<pid>-<seq>.parquet`` (to a temporary name, fsynced, renamed: a reader never sees half a segment)
every ``flush_seconds`` or ``flush_rows`` rows, and on close. A graceful stop (SIGTERM) therefore loses nothing;
a ``kill -9`` loses at most the rows of the last ``flush_seconds``.

Each row is one predicted input row: ``request_id``, ``row`` (its index in the request), ``ts`` (UTC), ``model``,
``version``, ``alias``, ``bundle`` (the app bundle's hash), ``variant`` (``stable``, ``canary`` or ``direct``),
``status`` (the HTTP status), ``error``, ``latency_ms`` (of the whole request), ``prediction``, ``probability``
(of the positive class for a binary classifier, else of the predicted class) and one ``in_<feature>`` column per
input feature. Ground truth arrives later with :meth:`PredictionLog.log_labels`, as label segments under
``labels/``; reads join the latest label of each prediction.

Reads, compaction and retention hold a file lock so that a compaction never removes a segment a read is using.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..core.files import fsync_dir, full_disk_as
from ..exceptions import NotFoundError, ServingError, StoreBusyError

FEATURE_PREFIX = "in_"
BASE_COLUMNS = (
    "request_id",
    "row",
    "ts",
    "model",
    "version",
    "alias",
    "bundle",
    "variant",
    "status",
    "error",
    "latency_ms",
    "prediction",
    "probability",
)
_seq = itertools.count()


def _segment_name(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S%f}-{os.getpid()}-{next(_seq):06d}.parquet"


def _write_segment(folder: Path, table) -> Path:
    """Write an Arrow table as a new segment in ``folder`` atomically; return its path."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / _segment_name(datetime.now(UTC))
    tmp = folder / f".{final.name}.tmp"
    with full_disk_as(ServingError, f"{table.num_rows} prediction log rows", folder.parent):
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)  # nothing half-written stays behind
            raise
    fsync_dir(folder)
    return final


class LogWriter:
    """Buffers prediction rows and writes them as segments from a background thread (see the module docstring).

    Args:
        folder: the prediction log's folder.
        flush_seconds: the longest a row waits in memory.
        flush_rows: write as soon as this many rows wait.
    """

    def __init__(self, folder: str | os.PathLike, flush_seconds: float = 1.0, flush_rows: int = 5000):
        self.folder = Path(folder)
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.written = 0
        self.segments = 0
        self.errors = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="mlops-prediction-log", daemon=True)
        self._thread.start()

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows (dicts of the module's columns and ``in_*`` features) for the next segment."""
        with self._lock:
            self._rows.extend(rows)
            full = len(self._rows) >= self.flush_rows
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Rows waiting to be written."""
        return len(self._rows)

    def _loop(self) -> None:
        delay = self.flush_seconds
        while not self._closed:
            self._wake.wait(delay)
            self._wake.clear()
            try:
                self.flush()
                delay = self.flush_seconds
            except Exception:  # noqa: BLE001 - a full or read-only disk: flush kept the rows and last_error says why
                delay = min(delay * 2, 30.0)

    def flush(self) -> int:
        """Write the waiting rows as one segment now; return how many were written. When the write fails the
        rows stay queued for the next attempt and the error is raised (and kept in ``last_error``)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            table = _table(rows)
            _write_segment(self.folder / rows[0]["ts"].strftime("%Y-%m-%d"), table)
        except Exception as exc:
            self.errors += 1
            self.last_error = str(exc) if isinstance(exc, ServingError) else f"{type(exc).__name__}: {exc}"
            with self._lock:  # kept for the next attempt
                self._rows[:0] = rows
            raise
        self.written += len(rows)
        self.segments += 1
        self.last_error = None
        return len(rows)

    def close(self) -> None:
        """Stop the background thread and write what waits; rows that cannot be written are reported on stderr
        (with the reason), not raised: a server stopping must stop."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the last chance: say what is lost and why
            print(f"error: {self.pending} prediction log rows not written to {self.folder}: {exc}", file=sys.stderr)


def _table(rows: list[dict[str, Any]]):
    """The rows as an Arrow table; a column of mixed types (a bad request's raw values) becomes text."""
    import pyarrow as pa

    columns = list(dict.fromkeys(k for r in rows for k in r))
    try:
        return pa.table({c: [r.get(c) for r in rows] for c in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.table({c: [r.get(c) if c in _TYPED else _text(r.get(c)) for r in rows] for c in columns})


_TYPED = {"row", "ts", "version", "status", "latency_ms", "probability"}


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value, default=str)


class PredictionLog:
    """The prediction log of a project: segments written by servers, read with DuckDB.

    Args:
        root: the log's folder (``.mlops/predictions``).
        retention_days: :meth:`compact` removes days older than this.
        lock_timeout: seconds to wait for a compaction to finish before a read gives up.
    """

    def __init__(self, root: str | os.PathLike, retention_days: float = 90.0, lock_timeout: float = 30.0):
        self.root = Path(root)
        self.retention_days = retention_days
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"PredictionLog({str(self.root)!r})"

    @property
    def labels_dir(self) -> Path:
        """Where label segments are written."""
        return self.root / "labels"

    def writer(self, flush_seconds: float = 1.0, flush_rows: int = 5000) -> LogWriter:
        """A :class:`LogWriter` appending to this log."""
        return LogWriter(self.root, flush_seconds, flush_rows)

    @contextmanager
    def _lock(self):
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".lock"), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise StoreBusyError(
                f"the prediction log {self.root} stayed locked for {self.lock_timeout:g} s (a compaction is running); "
                "try again when it ends"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def summary(self):
        """Rows and the latest time per model and version, as a pandas DataFrame (``model``, ``version``, ``rows``,
        ``last``): what the log holds, read without its feature columns."""
        import pandas as pd

        from .dbfile import memory

        with self._lock():
            files = self.segments()
            if not files:
                return pd.DataFrame(columns=["model", "version", "rows", "last"])
            con = memory()
            try:
                files_sql = _files(files)
                return con.sql(
                    f"SELECT model, version, count(*) AS rows, max(ts) AS last FROM read_parquet({files_sql}, "
                    "union_by_name = true) WHERE variant IS DISTINCT FROM 'smoke' GROUP BY ALL ORDER BY ALL"
                ).df()
            finally:
                con.close()

    def segments(self) -> list[Path]:
        """The prediction segments, oldest day first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("????-??-??/*.parquet"))

    def _label_segments(self) -> list[Path]:
        return sorted(self.labels_dir.glob("*.parquet")) if self.labels_dir.is_dir() else []

    # reads ----------------------------------------------------------------------------------------------------
    def read(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: int | None = None,
        request_ids: Iterable[str] | None = None,
        labels: bool = True,
        request_prefix: str | None = None,
        ordered: bool = True,
    ):
        """Logged predictions as a pandas DataFrame, oldest first, with a ``label`` column (the latest label
        attached to each, else null) unless ``labels`` is false.

        Args:
            model, version: only the predictions of this model (and version).
            since, until: only those logged in ``[since, until)`` (UTC).
            status: only those answered with this HTTP status (200: the successful ones).
            request_ids: only these requests.
            request_prefix: only requests whose id starts with this.
            ordered: oldest first (False: in no particular order, faster on a wide log).
        """
        import pandas as pd

        from .dbfile import memory

        where, args = [], []
        for column, value in (("model", model), ("version", version), ("status", status)):
            if value is not None:
                where.append(f"p.{column} = ?")
                args.append(value)
        if since is not None:
            where.append("p.ts >= ?")
            args.append(_naive_utc(since))
        if until is not None:
            where.append("p.ts < ?")
            args.append(_naive_utc(until))
        ids = None if request_ids is None else [str(i) for i in request_ids]
        with self._lock():
            files = self.segments()
            if not files:
                return pd.DataFrame(columns=[*BASE_COLUMNS, "label"] if labels else list(BASE_COLUMNS))
            label_files = self._label_segments() if labels else []
            con = memory()
            try:
                files_sql = _files(files)
                query = f"SELECT p.* FROM read_parquet({files_sql}, union_by_name = true) p"
                if ids is not None:
                    con.register("wanted", pd.DataFrame({"request_id": ids}))
                    where.append("p.request_id IN (SELECT request_id FROM wanted)")
                if request_prefix is not None:
                    where.append("starts_with(p.request_id, ?)")
                    args.append(request_prefix)
                if label_files:
                    labels_sql = _files(label_files)
                    query = (
                        f"SELECT p.*, l.label FROM read_parquet({files_sql}, union_by_name = true) p LEFT JOIN ("
                        f"SELECT request_id, row, label FROM read_parquet({labels_sql}, union_by_name = true) "
                        "QUALIFY row_number() OVER (PARTITION BY request_id, row ORDER BY ts DESC) = 1) l "
                        "ON l.request_id = p.request_id AND l.row = p.row"
                    )
                if where:
                    query += " WHERE " + " AND ".join(where)
                query += " ORDER BY p.ts, p.request_id, p.row" if ordered else ""
                frame = con.sql(query, params=args or None).to_arrow_table().to_pandas()  # 3x df() on wide logs
            finally:
                con.close()
        if labels and "label" not in frame.columns:
            frame["label"] = None
        return frame

    def count(self, **filters: Any) -> int:
        """How many predictions :meth:`read` would return with these filters."""
        return len(self.read(labels=False, **filters))

    def find(self, request_id: str) -> dict:
        """The first logged row of one request (its model, version, bundle, inputs and prediction), named by its
        id or a unique prefix of 8+ characters."""
        request_id = str(request_id).strip().removesuffix("...")
        frame = self.read(request_ids=[request_id])
        if frame.empty and len(request_id) >= 8:
            frame = self.read(request_prefix=request_id)
            if frame["request_id"].nunique() > 1:
                raise NotFoundError(f"request id prefix {request_id!r} is ambiguous; give more characters")
        if frame.empty:
            raise NotFoundError(
                f"no logged prediction has request id {request_id!r}; the `x-request-id` header of a response "
                "names it (a server writes its log every second: try again in a moment)"
            )
        row = frame.iloc[0].to_dict()
        return {k: (None if _isna(v) else v) for k, v in row.items()}

    # labels ---------------------------------------------------------------------------------------------------
    def log_labels(self, request_ids: Iterable[str], labels: Iterable[Any], rows: Iterable[int] | None = None) -> int:
        """Attach ground truth to logged predictions (a later label of the same prediction wins); return how many
        were attached. Every request id must be in the log; nothing is written otherwise.

        Args:
            request_ids: the ``request_id`` of each prediction.
            labels: the true value of each, in the same order.
            rows: the row of each within its request (default 0: one-row requests).
        """
        import pyarrow as pa

        ids = [str(i) for i in request_ids]
        values = list(labels)
        positions = [0] * len(ids) if rows is None else [int(r) for r in rows]
        if not (len(ids) == len(values) == len(positions)):
            raise ServingError(
                f"log_labels got {len(ids)} request ids, {len(values)} labels and {len(positions)} rows; "
                "give one label (and row) per request id"
            )
        if not ids:
            return 0
        if any(v is None or (isinstance(v, float) and v != v) for v in values):
            raise ServingError("a label is missing (None or NaN); give every request id its true value")
        known = self.read(request_ids=set(ids), labels=False)
        have = set(zip(known["request_id"], known["row"].astype(int), strict=True)) if len(known) else set()
        missing = [
            f"{i}" if r == 0 else f"{i} row {r}" for i, r in zip(ids, positions, strict=True) if (i, r) not in have
        ]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise NotFoundError(
                f"no logged prediction for request id {shown}; nothing was attached (a server writes its log every "
                "second: attach labels once the predictions are logged)"
            )
        now = datetime.now(UTC).replace(tzinfo=None)
        try:
            table = pa.table({"request_id": ids, "row": positions, "label": values, "ts": [now] * len(ids)})
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise ServingError("labels must all be numbers or all be strings") from None
        _write_segment(self.labels_dir, table)
        return len(ids)

    # upkeep ---------------------------------------------------------------------------------------------------
    def compact(self, now: datetime | None = None) -> dict[str, int]:
        """Merge each day's segments into one file and drop days older than the retention; return counts of
        ``merged`` segments, ``removed`` days and ``rows`` kept."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        now = now or datetime.now(UTC)
        cutoff = (now - timedelta(days=self.retention_days)).strftime("%Y-%m-%d")
        merged = removed = rows = 0
        with self._lock():
            for day in sorted(p for p in self.root.glob("????-??-??") if p.is_dir()):
                files = sorted(day.glob("*.parquet"))
                if day.name < cutoff:
                    for f in files:
                        f.unlink()
                    removed += 1
                    try:
                        day.rmdir()
                    except OSError:
                        pass
                    continue
                if len(files) > 1:
                    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
                    _write_segment(day, table)
                    for f in files:
                        f.unlink()
                    merged += len(files)
                rows += sum(pq.ParquetFile(f).metadata.num_rows for f in day.glob("*.parquet"))
        return {"merged": merged, "removed": removed, "rows": rows}


def _files(paths: list[Path]) -> str:
    """A list of files as a DuckDB list literal, for ``read_parquet``."""
    return "[" + ", ".join(_literal(str(f)) for f in paths) + "]"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _isna(value: Any) -> bool:
    try:
        return bool(value != value) or value is None
    except (TypeError, ValueError):
        return False


def now_utc() -> datetime:
    """The current time in UTC, naive (what the log's ``ts`` column holds)."""
    return datetime.now(UTC).replace(tzinfo=None)


def elapsed_ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - start) * 1000.0


__all__ = ["BASE_COLUMNS", "FEATURE_PREFIX", "LogWriter", "PredictionLog", "elapsed_ms", "now_utc"]
