"""The feature store: entities, feature views, validated ingestion, point-in-time training sets, online lookups.

Layout under ``<home>/.mlops/``:

* ``features.duckdb``: the catalog (entities, views and their versions, segments with their statistics, the
  online snapshots). Like the metadata store it is opened for one short transaction at a time (DESIGN invariant 3).
* ``features/<view>/v<version>/<seq>-<hash>.parquet``: the immutable segments, one per ingest, written to a
  temporary name, fsynced and renamed. ``<seq>-ties.parquet`` lists rows of older segments a segment supersedes.
* ``features/<view>/online.parquet``: the online table (the latest value per key), replaced atomically.

**Point-in-time semantics.** For an entity row with label time ``t``, a view answers with its latest row whose
``event_ts <= t`` and ``event_ts >= t - ttl`` (both inclusive, as Feast). Rows with equal keys and ``event_ts``
are ties: the one with the latest ``created_timestamp`` wins, then the one ingested last (then the later row of
one ingest). With ``as_of=T`` only rows created (for a view without ``created_timestamp``: ingested) at or before
``T`` exist, so late corrections do not leak into a training set built "as of" an earlier time.

**How reads stay near a plain ASOF join.** Ties are resolved when data is ingested, not when it is read: each
row of a segment carries ``_superseded``, the creation time of the row that replaces it (null if none), and rows
of older segments that a new segment replaces are listed in the new segment's ties file. A row is visible as of
``T`` when ``created <= T`` and it is not superseded at or before ``T``; at most one row per key and ``event_ts``
is then visible, so DuckDB's ``ASOF JOIN`` (which does not break ties) is exact. A read is: the segments filtered
by that predicate (an anti-join against the small ties list only for segments that have ties), one ``ASOF LEFT
JOIN`` per view in an in-memory DuckDB connection over the Parquet files, and the TTL as a filter after it. The
catalog is held only to list the segments, so reads run alongside ingests.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ...core import hooks
from ...core.clock import iso, utcnow
from ...core.files import fsync_rename, full_disk_as
from ...core.hashing import sha256_file
from ...core.records import FEATURE_ARTIFACT_KINDS, ArtifactRef
from ...exceptions import (
    FeatureNotFoundError,
    FeatureStoreError,
    SchemaChangeError,
    StoreBusyError,
    ValidationError,
)
from ..dbfile import DuckDBFile, memory
from .checks import (
    KEY_DTYPES,
    check_name,
    label_times,
    normalize_dtype,
    read_data_file,
    validate_frame,
)
from .online import merged_online_table, online_refs, read_online, request_columns
from .pit import asof_columns, output_columns
from .records import (
    Entity,
    FeatureView,
    IngestResult,
    MaterializeResult,
    Segment,
    aware,
    differences,
    naive_utc,
    parse_feature_refs,
    parse_ttl,
    stored_definition,
    to_utc,
)
from .segments import BuiltSegment, build_segment, table_hash, visible_sql

__all__ = ["ARTIFACT_KINDS", "FeatureStore"]

ARTIFACT_KINDS = FEATURE_ARTIFACT_KINDS  # the public name here; defined in core.records

MIGRATIONS: list[str] = [
    """
    CREATE TABLE entities (
        name VARCHAR NOT NULL,
        join_keys JSON NOT NULL,
        description VARCHAR,
        created_at TIMESTAMP NOT NULL
    );
    CREATE TABLE views (
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        entity VARCHAR NOT NULL,
        definition JSON NOT NULL,
        description VARCHAR,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    );
    CREATE TABLE view_versions (
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        definition JSON NOT NULL,
        created_at TIMESTAMP NOT NULL
    );
    CREATE TABLE segments (
        view VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        path VARCHAR NOT NULL,
        hash VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        rows BIGINT NOT NULL,
        input_rows BIGINT NOT NULL,
        min_ts TIMESTAMP,
        max_ts TIMESTAMP,
        min_created TIMESTAMP,
        max_created TIMESTAMP,
        ingested_at TIMESTAMP NOT NULL,
        ties_path VARCHAR,
        ties_hash VARCHAR,
        ties_rows BIGINT NOT NULL DEFAULT 0,
        tied_segments JSON,
        source VARCHAR,
        stats JSON
    );
    CREATE TABLE online (
        view VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        path VARCHAR NOT NULL,
        hash VARCHAR NOT NULL,
        rows BIGINT NOT NULL,
        end_ts TIMESTAMP,
        materialized_at TIMESTAMP NOT NULL
    );
    """,
]

_US = timedelta(microseconds=1)


# Small helpers ----
_catalog_images: dict[str, tuple[tuple, dict]] = {}


def _catalog_key(db: DuckDBFile) -> tuple:
    """What changes whenever the catalog is written: its write token, and identity, mtime and size of the file
    and of its WAL (for writes by other tools)."""
    key: list = [db.generation()]
    for file in (db.path, db.path.with_name(db.path.name + ".wal")):
        try:
            st = os.stat(file)
            key.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            key.append(None)
    return tuple(key)


def _segment_ref(segment: Segment) -> ArtifactRef:
    return ArtifactRef(
        segment.hash,
        "feature_segment",
        size=segment.size,
        name=segment.view,
        summary=f"feature segment {segment.view}#{segment.seq}: {segment.rows} rows",
        uri=segment.path.as_uri(),
    )


# The store ---------------------------------------------------------------------------------------------------------
class FeatureStore:
    """Entities, feature views, validated ingestion, point-in-time training sets and an online table.

    Args:
        project: a :class:`~mlops_nb.project.Project`, a project folder, or None for the current project.
        root, catalog, lock_timeout: explicit paths instead (the segments' folder and the catalog's DuckDB
            file), as the project hands them down.

    Example::

        fs = FeatureStore()
        fs.register_entity("customer", join_keys={"customer_id": "int64"})
        fs.register_view("customer_stats", "customer", schema={"spend": "float64", "calls": "int64"},
                         timestamp="event_ts", ttl="90d")
        fs.ingest("customer_stats", df)
        train = fs.get_historical_features(labels, ["customer_stats:spend", "customer_stats:calls"])
        fs.materialize("customer_stats")
        fs.get_online_features(["customer_stats:spend"], [{"customer_id": 7}])
    """

    def __init__(
        self,
        project: Any = None,
        *,
        root: str | os.PathLike | None = None,
        catalog: str | os.PathLike | None = None,
        lock_timeout: float = 30.0,
    ):
        if root is None or catalog is None:  # a project, its folder, or None: its paths, found by the package root
            located = hooks.locate("features", project)
            root, catalog, lock_timeout = located["root"], located["catalog"], located["lock_timeout"]
        self.root = Path(root).resolve()
        self.db = DuckDBFile(Path(catalog).resolve(), lock_timeout, "feature store catalog", generations=True)
        if not self.db.path.exists() or str(self.db.path) not in _catalog_images:
            self.db.migrate(MIGRATIONS, "feature store catalog")

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    # catalog reads -----------------------------------------------------------------------------------------------
    def _entity(self, con, name: str) -> Entity | None:
        rows = con.execute("SELECT join_keys, description FROM entities WHERE name = ?", [name]).fetchall()
        if not rows:
            return None
        return Entity(name, dict(json.loads(rows[0][0])), rows[0][1] or "")

    def _view(self, con, name: str) -> FeatureView | None:
        rows = con.execute("SELECT version, definition, description FROM views WHERE name = ?", [name]).fetchall()
        if not rows:
            return None
        return FeatureView.from_row(name, *rows[0])

    def _view_names(self, con) -> list[str]:
        return [r[0] for r in con.execute("SELECT name FROM views ORDER BY name").fetchall()]

    def _require_view(self, con, name: str) -> FeatureView:
        check_name(name, "view")
        view = self._view(con, name)
        if view is None:
            names = self._view_names(con)
            known = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "") or "none yet"
            raise FeatureNotFoundError(
                f"unknown feature view {name!r} (known views: {known}); register it with fs.register_view({name!r}, ...)"
            )
        return view

    def _segments(self, con, view: FeatureView) -> list[Segment]:
        rows = con.execute(
            "SELECT seq, path, hash, content_hash, size, rows, input_rows, min_ts, max_ts, min_created, max_created, "
            "ingested_at, ties_path, ties_hash, ties_rows, tied_segments, source, stats FROM segments "
            "WHERE view = ? AND version = ? ORDER BY seq",
            [view.name, view.version],
        ).fetchall()
        out = []
        for r in rows:
            out.append(
                Segment(
                    view.name,
                    view.version,
                    r[0],
                    self.root / r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    *r[7:12],
                    self.root / r[12] if r[12] else None,
                    r[13],
                    r[14] or 0,
                    tuple(json.loads(r[15]) if r[15] else ()),
                    r[16],
                    json.loads(r[17]) if r[17] else {},
                )
            )
        return out

    def _snapshot(self, names: list[str]) -> dict[str, tuple[FeatureView, list[Segment]]]:
        """The named views and their current segments. What is read from the catalog (in one short connection)
        is kept in memory until the catalog is written again, so repeated reads do not open it."""
        names = [check_name(n, "view") for n in dict.fromkeys(names)]
        key = _catalog_key(self.db)  # taken before reading: a write meanwhile makes the next call re-read
        cached = _catalog_images.get(str(self.db.path))
        if cached is None or cached[0] != key:
            cached = _catalog_images[str(self.db.path)] = (key, {})
        views = cached[1]
        missing = [n for n in names if n not in views]
        if missing:
            with self.db.connect() as con:
                for name in missing:
                    view = self._require_view(con, name)
                    views[name] = (view, self._segments(con, view))
        return {n: views[n] for n in names}

    def _all_views(self) -> dict[str, tuple[FeatureView, list[Segment]]]:
        with self.db.connect() as con:
            names = self._view_names(con)
        return self._snapshot(names)

    @staticmethod
    def state_hash(view: FeatureView, segments: list[Segment]) -> str:
        """The view's state: sha256 of its definition (TTL included) and its segments' hashes."""
        state = {
            "view": view.name,
            "version": view.version,
            "definition": view.definition(),
            "ttl_seconds": view.ttl_seconds,
            "segments": [[s.seq, s.hash, s.ties_hash] for s in segments],
        }
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()

    def view_hash(self, view: str) -> str:
        """The current state hash of ``view`` (changes with every ingest, TTL change or version bump)."""
        (v, segments) = self._snapshot([view])[view]
        return self.state_hash(v, segments)

    def _view_ref(self, view: FeatureView, segments: list[Segment]) -> ArtifactRef:
        rows = sum(s.rows for s in segments)
        return ArtifactRef(
            hash=self.state_hash(view, segments),
            kind="feature_view",
            size=sum(s.size for s in segments),
            name=view.name,
            summary=f"feature view {view.name} v{view.version}: {len(segments)} segments, {rows} rows",
            uri=f"features://{view.name}",
        )

    # registration ------------------------------------------------------------------------------------------------
    def register_entity(self, name: str, join_keys: str | list[str] | dict[str, str], description: str = "") -> Entity:
        """Register an entity and its join keys; registering the same one again is a no-op.

        Args:
            name: the entity's name (an identifier).
            join_keys: a key column, a list of them, or key column -> dtype (``int64``, ``string``, ``date``...).
            description: free text.

        Raises:
            SchemaChangeError: an entity of that name exists with other join keys.
        """
        check_name(name, "entity")
        if isinstance(join_keys, str):
            join_keys = [join_keys]
        if isinstance(join_keys, dict):
            keys = {
                check_name(k, "join key"): self._key_dtype(v, f"entity {name!r} join key {k!r}")
                for k, v in join_keys.items()
            }
        elif isinstance(join_keys, (list, tuple)):
            keys = {check_name(k, "join key"): None for k in join_keys}
        else:
            raise ValidationError(f"entity {name!r}: join_keys must be a name, a list of names or a dict name -> dtype")
        if not keys:
            raise ValidationError(f"entity {name!r} needs at least one join key")
        entity = Entity(name, keys, description)
        with self.db.connect(write=True) as con:
            existing = self._entity(con, name)
            if existing is not None:
                if existing.join_keys != keys:
                    raise SchemaChangeError(
                        f"entity {name!r} exists with join keys {existing.join_keys}, not {keys}; register the new "
                        "keys under a new entity name"
                    )
                if existing.description != description:
                    con.execute("UPDATE entities SET description = ? WHERE name = ?", [description, name])
                return entity
            con.execute("INSERT INTO entities VALUES (?, ?, ?, ?)", [name, json.dumps(keys), description, utcnow()])
        return entity

    @staticmethod
    def _key_dtype(dtype: Any, where: str) -> str:
        value = normalize_dtype(dtype, where)
        if value not in KEY_DTYPES:
            raise ValidationError(f"{where}: dtype {value} cannot be a join key; use one of {', '.join(KEY_DTYPES)}")
        return value

    def register_view(
        self,
        name: str,
        entity: str,
        schema: dict[str, Any],
        timestamp: str = "event_ts",
        created_timestamp: str | None = None,
        ttl: Any = None,
        description: str = "",
        force: bool = False,
    ) -> FeatureView:
        """Register a feature view of ``entity``; registering the same definition again is a no-op.

        Args:
            name: the view's name (an identifier).
            entity: the entity it describes (registered with :meth:`register_entity`).
            schema: column -> dtype of the features; may also give the join keys' dtypes and the timestamps.
            timestamp: the event-time column.
            created_timestamp: the column saying when a row was created (ties, ``as_of``), if the data has one.
            ttl: how long a value stays valid (timedelta, seconds, ``"30d"``); None for ever.
            description: free text.
            force: on an incompatible change, start a new version of the view (its data starts empty).

        Returns:
            the registered :class:`FeatureView`.

        Raises:
            SchemaChangeError: the view exists with another schema and ``force`` is False; the message lists the
                differences. TTL and description changes are applied in place.
        """
        view = self._build_view(name, entity, schema, timestamp, created_timestamp, ttl, description)
        return self._store_view(view, force)

    def _build_view(
        self,
        name: str,
        entity: str,
        schema: dict[str, Any],
        timestamp: str,
        created_timestamp: str | None,
        ttl: Any,
        description: str,
    ) -> FeatureView:
        """Validate the arguments of :meth:`register_view` and build the view they define (at version 1).

        Checks, in this order: the names of the view and its timestamp columns, the schema's form, the TTL, the
        entity, the join keys' dtypes, then the feature columns.

        Returns:
            the :class:`FeatureView`, at version 1 (:meth:`_store_view` gives it its version in the catalog).

        Raises:
            ValidationError: an invalid name, schema, TTL or dtype.
            FeatureNotFoundError: the entity is not registered.
        """
        check_name(name, "view")
        check_name(timestamp, "timestamp column")
        if created_timestamp is not None:
            check_name(created_timestamp, "created_timestamp column")
            if created_timestamp == timestamp:
                raise ValidationError(f"view {name!r}: created_timestamp must differ from timestamp {timestamp!r}")
        if not isinstance(schema, dict) or not schema:
            raise ValidationError(f"view {name!r}: schema must be a dict column -> dtype with at least one feature")
        ttl_value = parse_ttl(ttl)
        with self.db.connect() as con:
            ent = self._entity(con, check_name(entity, "entity"))
        if ent is None:
            raise FeatureNotFoundError(
                f"view {name!r}: unknown entity {entity!r}; register it first with fs.register_entity({entity!r}, "
                "join_keys=...)"
            )
        keys = self._view_join_keys(name, ent, schema)
        features = self._view_features(name, schema, keys, timestamp, created_timestamp)
        return FeatureView(name, 1, entity, keys, features, timestamp, created_timestamp, ttl_value, description)

    def _view_join_keys(self, name: str, ent: Entity, schema: dict[str, Any]) -> dict[str, str]:
        """The dtypes of view ``name``'s join keys: the entity's, or the schema's where the entity gives none.

        Raises:
            ValidationError: entity and schema disagree on a key's dtype, or neither gives it.
        """
        keys: dict[str, str] = {}
        for key, dtype in ent.join_keys.items():
            given = schema.get(key)
            if given is not None:
                given = self._key_dtype(given, f"view {name!r} join key {key!r}")
            if dtype and given and dtype != given:
                raise ValidationError(
                    f"view {name!r} join key {key!r}: schema says {given} but entity {ent.name!r} says {dtype}; "
                    "drop it from the schema"
                )
            if not (dtype or given):
                raise ValidationError(
                    f"view {name!r} join key {key!r} has no dtype; give it in the schema ({key!r}: 'int64') or in "
                    f"the entity (join_keys={{{key!r}: 'int64'}})"
                )
            keys[key] = dtype or given
        return keys

    @staticmethod
    def _view_features(
        name: str, schema: dict[str, Any], keys: dict[str, str], timestamp: str, created_timestamp: str | None
    ) -> dict[str, str]:
        """The feature columns of view ``name`` and their dtypes: the schema's columns other than the join keys
        and the timestamp columns (whose dtypes must be timestamps).

        Raises:
            ValidationError: an invalid column name or dtype, or no feature column at all.
        """
        features = {}
        for column, dtype in schema.items():
            check_name(column, "column")
            if column in keys:
                continue
            if column in (timestamp, created_timestamp):
                if normalize_dtype(dtype, f"view {name!r} column {column!r}") not in ("timestamp", "timestamptz"):
                    raise ValidationError(
                        f"view {name!r} column {column!r} is a timestamp column; its dtype must be timestamptz"
                    )
                continue
            features[column] = normalize_dtype(dtype, f"view {name!r} column {column!r}")
        if not features:
            raise ValidationError(f"view {name!r}: the schema has no feature columns (only keys and timestamps)")
        return features

    def _store_view(self, view: FeatureView, force: bool) -> FeatureView:
        """Write ``view`` (from :meth:`_build_view`) to the catalog: a new view, a no-op for the same definition (a
        TTL or description change applied in place), or with ``force`` a new version of a changed one.

        Raises:
            SchemaChangeError: the view exists with another schema and ``force`` is False.
        """
        name, now = view.name, utcnow()
        with self.db.connect(write=True) as con:
            existing = self._view(con, name)
            if existing is not None:
                diff = differences(existing, view)
                if not diff:
                    view = FeatureView(**{**view.__dict__, "version": existing.version})
                    if existing.ttl != view.ttl or existing.description != view.description:
                        con.execute(
                            "UPDATE views SET definition = ?, description = ?, updated_at = ? WHERE name = ?",
                            [json.dumps(stored_definition(view)), view.description, now, name],
                        )
                    return view
                if not force:
                    raise SchemaChangeError(
                        f"feature view {name!r} v{existing.version} exists with a different schema: {'; '.join(diff)}; "
                        "register it under a new name, or pass force=True to start version "
                        f"{existing.version + 1} (its data starts empty)"
                    )
                view = FeatureView(**{**view.__dict__, "version": existing.version + 1})
                con.execute(
                    "UPDATE views SET version = ?, entity = ?, definition = ?, description = ?, updated_at = ? "
                    "WHERE name = ?",
                    [view.version, view.entity, json.dumps(stored_definition(view)), view.description, now, name],
                )
                con.execute("DELETE FROM online WHERE view = ?", [name])
            else:
                con.execute(
                    "INSERT INTO views VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [name, 1, view.entity, json.dumps(stored_definition(view)), view.description, now, now],
                )
            con.execute(
                "INSERT INTO view_versions VALUES (?, ?, ?, ?)",
                [name, view.version, json.dumps(stored_definition(view)), now],
            )
        online = self.root / name / "online.parquet"
        if online.exists() and view.version > 1:
            online.unlink(missing_ok=True)
        return view

    # listing -----------------------------------------------------------------------------------------------------
    def get_view(self, name: str) -> FeatureView:
        """The registered view ``name``.

        Raises:
            FeatureNotFoundError: no such view.
        """
        return self._snapshot([name])[name][0]

    def list_entities(self) -> list[Entity]:
        """The registered entities, by name."""
        with self.db.connect() as con:
            rows = con.execute("SELECT name, join_keys, description FROM entities ORDER BY name").fetchall()
        return [Entity(n, dict(json.loads(k)), d or "") for n, k, d in rows]

    def list_views(self):
        """A DataFrame with one row per view: version, entity, keys, features, rows, segments, time range, TTL,
        online keys and description."""
        import pandas as pd

        image = self._all_views()
        views = [image[n][0] for n in sorted(image)]
        segs = {n: image[n][1] for n in image}
        with self.db.connect() as con:
            online = dict(con.execute("SELECT view, rows FROM online").fetchall())
        rows = []
        for v in views:
            s = segs[v.name]
            rows.append(
                {
                    "view": v.name,
                    "version": v.version,
                    "entity": v.entity,
                    "join_keys": ", ".join(v.join_keys),
                    "features": ", ".join(v.features),
                    "rows": sum(x.rows for x in s),
                    "segments": len(s),
                    "first_ts": aware(min((x.min_ts for x in s if x.min_ts), default=None)),
                    "last_ts": aware(max((x.max_ts for x in s if x.max_ts), default=None)),
                    "ttl": v.ttl,
                    "online_keys": online.get(v.name),
                    "description": v.description,
                }
            )
        columns = ["view", "version", "entity", "join_keys", "features", "rows", "segments", "first_ts", "last_ts"]
        return pd.DataFrame(rows, columns=[*columns, "ttl", "online_keys", "description"])

    def describe(self, view: str) -> dict:
        """Everything about ``view``: definition, segments, online table and state hash (JSON-able)."""
        with self.db.connect() as con:
            v = self._require_view(con, view)
            segments = self._segments(con, v)
            online = con.execute(
                "SELECT rows, end_ts, materialized_at, hash FROM online WHERE view = ?", [view]
            ).fetchall()
            versions = con.execute(
                "SELECT version, created_at FROM view_versions WHERE name = ? ORDER BY version", [view]
            ).fetchall()
        return {
            **v.to_dict(),
            "state_hash": self.state_hash(v, segments),
            "rows": sum(s.rows for s in segments),
            "segments": [s.to_dict() for s in segments],
            "online": {
                "rows": online[0][0],
                "end": iso(online[0][1]),
                "materialized_at": iso(online[0][2]),
                "hash": online[0][3],
            }
            if online
            else None,
            "versions": [{"version": n, "created_at": iso(t)} for n, t in versions],
        }

    # ingestion ---------------------------------------------------------------------------------------------------
    def ingest(self, view: str, data: Any, *, allow_extra: bool = False, assume_utc: bool = False) -> IngestResult:
        """Validate ``data`` and store it as one immutable segment of ``view``; nothing is written if it is invalid.

        Join keys must be present and not null; the timestamp columns present, parseable and tz-aware (made UTC);
        every value castable to the schema's dtype; no unknown columns unless ``allow_extra``. Rows of one key and
        event time collapse to the latest-created one (then the last given). Ingesting data identical to an
        earlier segment of the view is a no-op. Inside a pipeline step, the segment and the view's new state are
        recorded as the step's outputs.

        Args:
            view: the view's name.
            data: a pandas DataFrame, or the path of a .parquet, .csv or .jsonl file.
            allow_extra: drop columns the schema does not know instead of refusing the data.
            assume_utc: take naive timestamps as UTC instead of refusing them.

        Returns:
            an :class:`IngestResult`.

        Raises:
            ValidationError: the data is invalid (the message names view, column, row and value).
            FeatureNotFoundError: no such view.
        """
        v = self._snapshot([view])[view][0]
        source = None
        if isinstance(data, (str, os.PathLike)):
            source = Path(data).resolve()
            data = read_data_file(v.name, source)
        table = validate_frame(v, data, allow_extra, assume_utc)
        content_hash = table_hash(table)
        with full_disk_as(FeatureStoreError, f"{table.num_rows} rows of feature view {v.name!r}", self.root / v.name):
            result, segment, segments = self._write_segment(v, table, content_hash, str(source) if source else None)
        if hooks.active_step() is not None:  # inside a pipeline step: what it read and wrote
            if source is not None:
                hooks.record_input(source.name, ArtifactRef.external(source))
            if segment is not None:
                hooks.record_output(f"features:{v.name}#{segment.seq}", _segment_ref(segment))
            hooks.record_output(f"features:{v.name}", self._view_ref(v, segments))
        return result

    def _view_lock(self, view: str):
        from filelock import FileLock

        folder = self.root / view
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / ".lock"))

    def _locked(self, view: str):
        """The view's writer lock (ingest and materialize of one view run one at a time), or StoreBusyError."""
        from contextlib import contextmanager

        from filelock import Timeout

        lock = self._view_lock(view)
        timeout = max(self.db.lock_timeout, 60.0)

        @contextmanager
        def held():
            try:
                lock.acquire(timeout=timeout, poll_interval=0.01)
            except Timeout:
                raise StoreBusyError(
                    f"feature view {view!r} is busy: another process ingested or materialized it for more than "
                    f"{timeout:g} s; retry, or raise lock_timeout in [tool.mlops_nb] (MLOPS_NB_LOCK_TIMEOUT)"
                ) from None
            try:
                yield
            finally:
                lock.release()

        return held()

    def _write_segment(self, validated: FeatureView, table, content_hash: str, source: str | None):
        """Store validated data ``table`` as the view's next segment (files, then catalog row) under its writer
        lock; data identical to one of the view's segments (same ``content_hash``) is a no-op.

        Returns:
            ``(result, segment, segments)``: the :class:`IngestResult`, the new :class:`Segment` (None for a no-op)
            and the view's segments, the new one included.

        Raises:
            SchemaChangeError: the view got a new version since ``validated`` was read.
        """
        with self._locked(validated.name):
            with self.db.connect() as con:
                v = self._require_view(con, validated.name)
                segments = self._segments(con, v)
                last = con.execute(
                    "SELECT max(seq), max(ingested_at) FROM segments WHERE view = ?", [v.name]
                ).fetchall()[0]
            if v.definition() != validated.definition():
                raise SchemaChangeError(
                    f"feature view {v.name!r} changed to version {v.version} while the data was being validated; "
                    "ingest again"
                )
            for s in segments:
                if s.content_hash == content_hash:
                    return self._result(v, s, segments, new=False, superseded=0), None, segments
            seq = (last[0] or 0) + 1
            now = utcnow()
            ingested_at = max(now, last[1] + _US) if last[1] else now
            folder = self.root / v.name / f"v{v.version}"
            folder.mkdir(parents=True, exist_ok=True)

            older = [s for s in segments if s.min_ts is not None]
            built = build_segment(v, table, older, seq, ingested_at, folder)
            segment = self._segment_record(v, built, seq, content_hash, table.num_rows, ingested_at, source)
            with self.db.connect(write=True) as con:
                con.execute(
                    "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    self._segment_row(segment),
                )
                con.execute("UPDATE views SET updated_at = ? WHERE name = ?", [ingested_at, v.name])
        segments = [*segments, segment]
        return self._result(v, segment, segments, new=True, superseded=segment.ties_rows), segment, segments

    @staticmethod
    def _segment_record(
        v: FeatureView,
        built: BuiltSegment,
        seq: int,
        content_hash: str,
        input_rows: int,
        ingested_at: datetime,
        source: str | None,
    ) -> Segment:
        """The catalog's record of segment ``seq`` of ``v``, whose files :func:`build_segment` wrote as ``built``
        from ``input_rows`` rows of data (hashed as ``content_hash``) read from ``source``."""
        rows, min_ts, max_ts, min_created, max_created = built.summary
        return Segment(
            v.name,
            v.version,
            seq,
            built.path,
            built.hash,
            content_hash,
            built.path.stat().st_size,
            rows,
            input_rows,
            naive_utc(min_ts),
            naive_utc(max_ts),
            naive_utc(min_created),
            naive_utc(max_created),
            ingested_at,
            built.ties_path,
            built.ties_hash,
            int(built.superseded),
            tuple(built.tied),
            source,
            built.stats,
        )

    def _segment_row(self, segment: Segment) -> list:
        """The row of the ``segments`` table for ``segment`` (paths relative to the store's root)."""
        return [
            segment.view,
            segment.version,
            segment.seq,
            str(segment.path.relative_to(self.root)),
            segment.hash,
            segment.content_hash,
            segment.size,
            segment.rows,
            segment.input_rows,
            segment.min_ts,
            segment.max_ts,
            segment.min_created,
            segment.max_created,
            segment.ingested_at,
            str(segment.ties_path.relative_to(self.root)) if segment.ties_path else None,
            segment.ties_hash,
            segment.ties_rows,
            json.dumps(list(segment.tied_segments)),
            segment.source,
            json.dumps(segment.stats),
        ]

    def _result(self, v: FeatureView, s: Segment, segments: list[Segment], new: bool, superseded: int) -> IngestResult:
        return IngestResult(
            v.name,
            v.version,
            s.seq,
            s.rows,
            s.input_rows,
            superseded,
            s.hash,
            s.path,
            aware(s.min_ts),
            aware(s.max_ts),
            aware(s.ingested_at),
            new,
            self.state_hash(v, segments),
        )

    # reading -----------------------------------------------------------------------------------------------------
    def get_historical_features(
        self,
        entity_df,
        features: list[str],
        timestamp: str = "event_timestamp",
        as_of: Any = None,
        full_feature_names: bool = False,
    ):
        """A point-in-time correct training set: ``entity_df``'s rows in their order plus one column per feature.

        For each row and view, the view's latest row with the row's keys and ``event_ts <= label time`` and
        ``event_ts >= label time - ttl`` gives the values; none gives nulls. Naive label times are taken as UTC.

        Args:
            entity_df: a DataFrame with the views' join keys and the label-time column.
            features: ``["view:feature", ...]`` (``"view:*"`` for all of a view's features).
            timestamp: the label-time column of ``entity_df``.
            as_of: only data created (ingested, for views without ``created_timestamp``) at or before this time.
            full_feature_names: name columns ``view__feature`` instead of ``feature``.

        Returns:
            a pandas DataFrame (``entity_df``'s index and columns, then the features).

        Raises:
            FeatureNotFoundError: an unknown view or feature.
            ValidationError: ``entity_df`` lacks a key or the label-time column, or names collide.
        """
        import pandas as pd

        refs = parse_feature_refs(features)
        if not isinstance(entity_df, pd.DataFrame):
            raise ValidationError(f"entity_df must be a pandas DataFrame, not {type(entity_df).__name__}")
        if timestamp not in entity_df.columns:
            raise ValidationError(
                f"entity_df has no column {timestamp!r} (the label time); add it or pass timestamp='<its column>' "
                f"(its columns: {', '.join(map(str, entity_df.columns))})"
            )
        as_of_value = to_utc(as_of, "as_of") if as_of is not None else None
        snapshot = self._snapshot([view for view, _ in refs])
        wanted, out_names = output_columns(snapshot, refs, entity_df, full_feature_names)
        label = label_times(entity_df[timestamp], timestamp)
        result = entity_df.copy()
        mem = memory()
        try:
            for index, (view, names) in enumerate(wanted.items()):
                v, segments = snapshot[view]
                columns = asof_columns(mem, index, v, segments, entity_df, label, names, as_of_value)
                for name, values in columns.items():
                    result[out_names[(view, name)]] = values
        finally:
            mem.close()
        if hooks.active_step() is not None:  # inside a pipeline step: the views (and segments) it read
            for view in wanted:
                v, segments = snapshot[view]
                hooks.record_input(f"features:{view}", self._view_ref(v, segments))
                for segment in segments:  # lineage: the training set came from these segments
                    hooks.record_input(f"features:{view}#{segment.seq}", _segment_ref(segment))
        return result

    # online store ------------------------------------------------------------------------------------------------
    def materialize(self, view: str, end: Any = None) -> MaterializeResult:
        """Upsert the latest value per key of ``view`` (event time at or before ``end``) into its online table;
        a key's value is replaced only by a newer one.

        Args:
            view: the view's name.
            end: the latest event time to consider (default: now).

        Returns:
            a :class:`MaterializeResult`.
        """
        import pyarrow.parquet as pq

        end_value = to_utc(end, "end") if end is not None else datetime.now(UTC).replace(microsecond=0)
        with self._locked(check_name(view, "view")):
            snapshot = self._snapshot([view])
            v, segments = snapshot[view]
            path = self.root / v.name / "online.parquet"
            table, updated = merged_online_table(v, segments, end_value, read_online(path))
            meta = {"view": v.to_dict(), "end": end_value.isoformat()}
            table = table.replace_schema_metadata({b"mlops_nb": json.dumps(meta).encode()})
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".tmp-{uuid.uuid4().hex}.parquet"
            pq.write_table(table, tmp, compression="zstd")
            digest = sha256_file(tmp)
            fsync_rename(tmp, path)
            with self.db.connect(write=True) as con:
                con.execute("DELETE FROM online WHERE view = ?", [v.name])
                con.execute(
                    "INSERT INTO online VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        v.name,
                        v.version,
                        str(path.relative_to(self.root)),
                        digest,
                        table.num_rows,
                        naive_utc(end_value),
                        utcnow(),
                    ],
                )
        return MaterializeResult(v.name, table.num_rows, int(updated), end_value, path)

    def get_online_features(self, features: list[str], entity_rows: Any, full_feature_names: bool = False):
        """The online values of ``features`` for a batch of keys (what a scoring server asks at request time).

        Reads only the views' online tables (kept in memory, reloaded when a materialization replaces them).

        Args:
            features: ``["view:feature", ...]``.
            entity_rows: the keys: a list of dicts, a dict of lists, or a DataFrame.
            full_feature_names: name columns ``view__feature`` instead of ``feature``.

        Returns:
            a DataFrame: the join keys, then one column per feature (null for a key with no online value).

        Raises:
            FeatureNotFoundError: an unknown view or feature, or a view never materialized.
        """
        import pandas as pd

        refs = online_refs(tuple(features) if isinstance(features, (list, tuple)) else features)
        request = request_columns(entity_rows)
        columns: dict[str, Any] = {}
        key_columns: list[str] = []
        for view, names in refs.items():
            online = read_online(self.root / view / "online.parquet")
            if online is None:
                with self.db.connect() as con:
                    self._require_view(con, view)
                raise FeatureNotFoundError(
                    f"feature view {view!r} has no online table yet; run fs.materialize({view!r}) "
                    f"(or mlops-nb features materialize {view})"
                )
            for key in online.keys:
                if key not in request:
                    raise ValidationError(f"entity_rows have no {key!r}, the join key of view {view!r}; add it")
                if key not in key_columns:
                    key_columns.append(key)
            positions = online.lookup(request)
            for name in names if names else list(online.features):
                if name not in online.features:
                    raise FeatureNotFoundError(
                        f"unknown feature {name!r} in view {view!r} (its features: {', '.join(online.features)})"
                    )
                out = f"{view}__{name}" if full_feature_names else name
                if out in columns:
                    raise ValidationError(f"feature {name!r} is in two views; pass full_feature_names=True")
                columns[out] = online.take(name, positions)
        result = {k: request[k] for k in key_columns}
        result.update(columns)
        return pd.DataFrame(result)

    # lineage: an artifact source for the step runtime -------------------------------------------------------------
    def current_hash(self, ref: ArtifactRef) -> str | None:
        """What a recorded feature artifact names now (:class:`~mlops_nb.core.hooks.ArtifactSource`): for a view
        (``feature_view``), its current state hash, which changes with every ingest, TTL change or re-registration;
        for a segment (``feature_segment``), its hash while it is still one of its view's segments with its file in
        place; None when the view or segment is gone. Before a cached step stands in for a step, the runtime asks:
        a training step whose view changed runs again, and so does an ingest whose segment is gone."""
        if ref.uri.startswith("features://"):
            view = ref.uri.removeprefix("features://")
        else:
            view = (ref.name or "").removeprefix("features:").split("#", 1)[0]
        if not self.db.path.exists():
            return None
        try:
            v, segments = self._snapshot([view])[view]
        except (FeatureNotFoundError, ValidationError):
            return None
        if ref.kind == "feature_view":
            return self.state_hash(v, segments)
        present = any(s.hash == ref.hash and s.path.exists() for s in segments)
        return ref.hash if present else None

    # statistics --------------------------------------------------------------------------------------------------
    def stats(self, view: str, by_segment: bool = False):
        """Feature statistics of ``view``: one row per feature (count, nulls, mean, std, min, quantiles, max,
        distinct, top values), over the view's current rows; with ``by_segment``, the statistics kept for each
        segment at ingest (a ``segment`` column first).

        The full statistics, histograms included, are in :meth:`stats_dict`.
        """
        import pandas as pd

        from .stats import stats_frame

        if by_segment:
            segments = self._snapshot([view])[view][1]
            frames = [stats_frame(s.stats).assign(segment=s.seq) for s in segments]
            if not frames:
                return pd.DataFrame(columns=["segment", "feature"])
            frame = pd.concat(frames, ignore_index=True)
            return frame[["segment", *[c for c in frame.columns if c != "segment"]]]
        return stats_frame(self.stats_dict(view))

    def view_data(self, view: str, as_of: datetime | None = None):
        """The rows of ``view`` visible as of ``as_of`` (default now; the latest version of each key and event
        time) as a pandas DataFrame: its join keys, event time and features (what monitoring takes as a
        reference: as of the time the model was trained)."""
        v, segments = self._snapshot([view])[view]
        if not segments:
            raise FeatureNotFoundError(f"feature view {view!r} has no data yet; ingest some first")
        mem = memory()
        try:
            sql, params = visible_sql(mem, 0, v, segments, as_of)
            frame = mem.execute(sql, params).df()
        finally:
            mem.close()
        frame = frame.rename(columns={"__ts": v.timestamp, "__created": v.created_timestamp or "__created"})
        return frame.drop(columns=[c for c in frame.columns if str(c).startswith("__")])

    def stats_dict(self, view: str) -> dict[str, dict]:
        """Feature name -> statistics (with ``histogram`` edges and counts, or ``top`` values) over the view's
        current rows (the latest version of each key and event time)."""
        from .stats import compute_stats

        v, segments = self._snapshot([view])[view]
        if len(segments) == 1 and not segments[0].ties_rows and segments[0].stats:
            return segments[0].stats
        mem = memory()
        try:
            sql, params = visible_sql(mem, 0, v, segments, None)
            mem.execute(f"CREATE TEMP TABLE current_rows AS {sql}", params)
            return compute_stats(mem, "current_rows", v.features)
        finally:
            mem.close()
