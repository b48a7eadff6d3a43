"""The segment format of the feature store: how an ingest resolves ties, and which rows a read sees.

A segment is one Parquet file holding the view's columns plus three internal ones:

* ``_created``: when the row was created: the view's ``created_timestamp`` column when it has one (then that
  column is used and ``_created`` is not stored), else the segment's ingest time;
* ``_superseded``: when a row replacing it (same keys and ``event_ts``, sorting after it by ``(created, ingest,
  position)``) was created, or null;
* ``_seq``: the segment's number.

Rows that are superseded by a row created at the same moment can never be seen and are not stored. Rows of
*older* segments that the new segment supersedes are listed in a ties file (``_seq``, keys, ``__ts``,
``__created``, ``__superseded_at``). A row is visible as of ``T`` when ``created <= T``, ``_superseded`` is null or
after ``T``, and no ties entry with ``__superseded_at <= T`` names it. Exactly one row per key and ``event_ts`` is
then visible — the latest created at or before ``T``, later ingests winning exact ties — which is what lets a read
be a plain ASOF join.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ...core.files import fsync_rename
from ...core.hashing import sha256_file
from ...exceptions import ArtifactCorruptedError
from ..dbfile import memory
from .checks import arrow_type, quote
from .records import FeatureView, Segment, naive_utc


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal (COPY takes no bound parameter)."""
    return "'" + str(path).replace("'", "''") + "'"


def table_hash(table) -> str:
    """sha256 of an Arrow table's IPC stream: equal data, equal hash."""
    import pyarrow as pa

    digest = hashlib.sha256()

    class _Sink:
        closed = False

        def write(self, data) -> int:
            digest.update(data)
            return len(data)

        def flush(self) -> None:
            pass

    table = table.combine_chunks()
    with pa.ipc.new_stream(pa.PythonFile(_Sink(), mode="w"), table.schema) as writer:
        writer.write_table(table)
    return digest.hexdigest()


def _copy(mem, relation: str, folder: Path) -> tuple[Path, str]:
    """Write ``relation`` to a temporary Parquet file in ``folder``; return it and its hash."""
    tmp = folder / f".tmp-{uuid.uuid4().hex}.parquet"
    mem.execute(f"COPY {relation} TO {_sql_path(tmp)} (FORMAT parquet, COMPRESSION zstd)")
    return tmp, sha256_file(tmp)


# Integrity ----------------------------------------------------------------------------------------------------------
_verified: set[tuple] = set()  # (path, hash, inode, mtime, size) of segment files this process has hashed
_verified_lock = threading.Lock()


def check_segment_file(view: str, seq: int, path: Path, digest: str, size: int | None, full: bool = False) -> None:
    """Refuse, with one line naming the view, the segment and the file, a segment (or ties) file that is missing,
    whose size is not the catalog's, or (on this process's first read of it, or with ``full``) whose sha256 is not
    the catalog's. DuckDB reading a damaged Parquet file may fail obscurely, or worse, read wrong values."""
    fix = "restore the file from a backup or ingest its data again (`mlops-nb verify` lists every damaged file)"
    where = f"feature view {view!r} segment {seq} file {path}"
    try:
        st = os.stat(path)
    except OSError:
        raise ArtifactCorruptedError(f"{where} is missing; {fix}") from None
    if size is not None and st.st_size != size:
        raise ArtifactCorruptedError(f"{where} is damaged ({st.st_size} bytes, the catalog recorded {size}); {fix}")
    key = (str(path), digest, st.st_ino, st.st_mtime_ns, st.st_size)
    if not full and key in _verified:
        return
    actual = sha256_file(path)
    if actual != digest:
        raise ArtifactCorruptedError(f"{where} is damaged (its sha256 is {actual[:12]}, the catalog recorded "
                                     f"{digest[:12]}); {fix}")  # fmt: skip
    with _verified_lock:
        _verified.add(key)


def check_segments(segments: list[Segment], full: bool = False) -> None:
    """:func:`check_segment_file` for each segment and its ties file (the ties file's size is not recorded: it
    is hashed on first read)."""
    for s in segments:
        check_segment_file(s.view, s.seq, s.path, s.hash, s.size, full)
        if s.ties_path is not None:
            check_segment_file(s.view, s.seq, s.ties_path, s.ties_hash, None, full)


# Writing ------------------------------------------------------------------------------------------------------------
@dataclass
class BuiltSegment:
    """The files one ingest wrote (already renamed into place) and what the catalog records about them.

    Attributes:
        path, hash: the segment file and its sha256.
        summary: ``(rows, min_ts, max_ts, min_created, max_created)``; times naive UTC.
        stats: feature statistics of the segment's rows that were current when it was ingested.
        ties_path, ties_hash: the ties file, if the segment supersedes rows of older ones.
        superseded: entries in the ties file; tied: the older segments they name.
    """

    path: Path
    hash: str
    summary: tuple
    stats: dict
    ties_path: Path | None = None
    ties_hash: str | None = None
    superseded: int = 0
    tied: list[int] = field(default_factory=list)


def _numbered(table, ingested_at: datetime, stamp: bool):
    """``table`` plus ``__r``, each row's position, and with ``stamp`` (a view without ``created_timestamp``)
    ``_created``, the ingest time ``ingested_at``."""
    import numpy as np
    import pyarrow as pa

    n = table.num_rows
    table = table.append_column("__r", pa.array(np.arange(n, dtype=np.int64)))
    if stamp:
        stamps = np.full(n, np.datetime64(ingested_at, "us"), dtype="datetime64[us]")
        table = table.append_column("_created", pa.array(stamps).cast(pa.timestamp("us", tz="UTC")))
    return table


def _pair_rows(mem, older: list[Segment], key_ts: list[str], ts: str, created_col: str) -> None:
    """Create the temporary table ``pairs`` in ``mem``: the pairs of (older row, new row of ``new_rows``) with
    equal keys and event time, from those ``older`` segments whose event times overlap the new rows'.

    Its columns: ``__seq`` (the older row's segment), the keys and event time, ``__oc`` and ``__nc`` (the older and
    the new row's creation times) and ``__r`` (the new row's position).
    """
    check_segments(older)
    lo, hi = mem.execute(f"SELECT min({quote(ts)}), max({quote(ts)}) FROM new_rows").fetchall()[0]
    older = [s for s in older if s.min_ts <= naive_utc(hi) and s.max_ts >= naive_utc(lo)]
    if older:
        on = " AND ".join(f"o.{c} = n.{c}" for c in key_ts)
        mem.execute(
            f"CREATE TEMP TABLE pairs AS SELECT o._seq AS __seq, {', '.join(f'o.{c}' for c in key_ts)}, "
            f"o.{created_col} AS __oc, n.{created_col} AS __nc, n.__r FROM read_parquet(?) o "
            f"JOIN new_rows n ON {on}",
            [[str(s.path) for s in older]],
        )
    else:
        mem.execute(
            f"CREATE TEMP TABLE pairs AS SELECT 0::INTEGER AS __seq, {', '.join(key_ts)}, {created_col} AS __oc, "
            f"{created_col} AS __nc, __r FROM new_rows WHERE false"
        )


def _write_ties(mem, built: BuiltSegment, keys: list[str], ts: str, seq: int, folder: Path) -> None:
    """Write the ties file of segment ``seq`` into ``folder`` if its rows supersede rows of older segments (from
    the table ``pairs`` in ``mem``), and record it in ``built``."""
    # older rows the new rows supersede (a new row sorts after an older one created at the same time or before)
    group = ", ".join(["__seq AS _seq", *(quote(k) for k in keys), f"{quote(ts)} AS __ts", "__oc AS __created"])
    mem.execute(
        f"CREATE TEMP TABLE ties AS SELECT {group}, min(__nc) AS __superseded_at FROM pairs "
        "WHERE __nc >= __oc GROUP BY ALL"
    )
    built.superseded = mem.execute("SELECT count(*) FROM ties").fetchall()[0][0]
    if built.superseded:
        built.tied = [r[0] for r in mem.execute("SELECT DISTINCT _seq FROM ties ORDER BY 1").fetchall()]
        tmp, built.ties_hash = _copy(mem, "ties", folder)
        built.ties_path = folder / f"{seq:06d}-ties.parquet"
        fsync_rename(tmp, built.ties_path)


def build_segment(v: FeatureView, table, older: list[Segment], seq: int, ingested_at: datetime, folder: Path):
    """Resolve ties of validated data ``table`` (within itself and against ``older`` segments) and write the
    segment file (and ties file) into ``folder``. Runs under the view's writer lock.

    Returns:
        a :class:`BuiltSegment`.
    """
    from .stats import compute_stats

    keys = list(v.join_keys)
    ts = v.timestamp
    created = v.created_timestamp
    table = _numbered(table, ingested_at, stamp=created is None)
    created_col = quote(created) if created else "_created"
    key_ts = [quote(c) for c in [*keys, ts]]
    mem = memory()
    try:
        mem.register("new_in", table)
        mem.execute(
            f"CREATE TEMP TABLE new_rows AS SELECT *, lead({created_col}) OVER (PARTITION BY {', '.join(key_ts)} "
            f"ORDER BY {created_col}, __r) AS __next FROM new_in"
        )
        mem.unregister("new_in")
        _pair_rows(mem, older, key_ts, ts, created_col)
        data_cols = [*keys, ts, *([created] if created else []), *v.features]
        select = ", ".join(f"n.{quote(c)}" for c in data_cols) + (", n._created" if created is None else "")
        # a new row is superseded by the next one of its own (keys, event time) or by a later-created older row
        mem.execute(
            f"CREATE TEMP TABLE seg AS SELECT {select}, least(n.__next, x.__sup) AS _superseded, "
            f"{int(seq)}::INTEGER AS _seq FROM new_rows n LEFT JOIN (SELECT __r, min(__oc) FILTER (WHERE __oc > __nc) "
            f"AS __sup FROM pairs GROUP BY __r) x USING (__r) "
            f"WHERE n.__next IS NULL OR n.__next <> n.{created_col} ORDER BY n.__r"
        )
        summary = mem.execute(
            f"SELECT count(*), min({quote(ts)}), max({quote(ts)}), min({created_col}), max({created_col}) FROM seg"
        ).fetchall()[0]
        summary = (summary[0], *(naive_utc(x) for x in summary[1:]))
        mem.execute("CREATE TEMP VIEW seg_current AS SELECT * FROM seg WHERE _superseded IS NULL")
        stats = compute_stats(mem, "seg_current", v.features)  # the rows current when ingested
        tmp, digest = _copy(mem, "seg", folder)
        built = BuiltSegment(folder / f"{seq:06d}-{digest[:16]}.parquet", digest, summary, stats)
        fsync_rename(tmp, built.path)
        _write_ties(mem, built, keys, ts, seq, folder)
    finally:
        mem.close()
    return built


# Reading ------------------------------------------------------------------------------------------------------------
def visible_sql(mem, index: int, v: FeatureView, segments: list[Segment], as_of: datetime | None):
    """SQL (and its parameters, file lists included) of the rows of ``v`` visible as of ``as_of`` (now when
    None), with columns: the join keys, ``__ts``, ``__created`` and the features. A view without segments is an
    empty Arrow table registered in ``mem`` as ``v<index>_empty``."""
    import pyarrow as pa

    name = f"v{index}"
    keys = list(v.join_keys)
    if as_of is not None:  # a segment all created after as_of is skipped unread
        limit = naive_utc(as_of)
        segments = [s for s in segments if s.min_created is not None and s.min_created <= limit]
    check_segments(segments)
    created = quote(v.created_timestamp) if v.created_timestamp else "_created"

    def cols(prefix: str) -> str:
        return ", ".join(
            [f"{prefix}{quote(k)}" for k in keys]
            + [f"{prefix}{quote(v.timestamp)} AS __ts", f"{prefix}{created} AS __created"]
            + [f"{prefix}{quote(f)}" for f in v.features]
        )

    def visible(prefix: str) -> tuple[str, list]:
        if as_of is None:
            return f"{prefix}_superseded IS NULL", []
        return f"{prefix}{created} <= ? AND ({prefix}_superseded IS NULL OR {prefix}_superseded > ?)", [as_of, as_of]

    tied_seqs = {seq for s in segments if s.ties_path for seq in s.tied_segments}
    plain = [str(s.path) for s in segments if s.seq not in tied_seqs]
    tied = [str(s.path) for s in segments if s.seq in tied_seqs]
    parts, params = [], []
    if plain:
        cond, p = visible("")
        parts.append(f"SELECT {cols('')} FROM read_parquet(?) WHERE {cond}")
        params += [plain, *p]
    if tied:
        ties = [str(s.ties_path) for s in segments if s.ties_path]
        on = " AND ".join(
            ["s._seq = t._seq"]
            + [f"s.{quote(k)} = t.{quote(k)}" for k in keys]
            + [f"s.{quote(v.timestamp)} = t.__ts", f"s.{created} = t.__created"]
        )
        tie_filter, tie_params = ("", []) if as_of is None else (" WHERE __superseded_at <= ?", [as_of])
        cond, p = visible("s.")
        parts.append(
            f"SELECT {cols('s.')} FROM read_parquet(?) s ANTI JOIN (SELECT * FROM read_parquet(?){tie_filter}) t "
            f"ON {on} WHERE {cond}"
        )
        params += [tied, ties, *tie_params, *p]
    if not parts:
        empty = pa.table(
            {
                **{k: pa.array([], arrow_type(d)) for k, d in v.join_keys.items()},
                "__ts": pa.array([], pa.timestamp("us", tz="UTC")),
                "__created": pa.array([], pa.timestamp("us", tz="UTC")),
                **{f: pa.array([], arrow_type(d)) for f, d in v.features.items()},
            }
        )
        mem.register(f"{name}_empty", empty)
        parts.append(f"SELECT * FROM {name}_empty")
    return " UNION ALL ".join(parts), params
