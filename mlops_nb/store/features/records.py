"""The feature store's records: entities, feature views, segments, and what ingest and materialize report.

Also the small conversions they share (durations, UTC timestamps, ``view:feature`` references).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ...core.clock import iso, parse_duration
from ...exceptions import ValidationError
from .checks import check_name


# Records ---------------------------------------------------------------------------------------------------------
def aware(value: datetime | None) -> datetime | None:
    """A naive UTC datetime made tz-aware (UTC); aware values and None unchanged."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class Entity:
    """A thing features describe (a customer, a merchant), identified by its join keys.

    Attributes:
        name: the entity's name.
        join_keys: key column -> dtype (None when the views give it).
        description: free text.
    """

    name: str
    join_keys: dict[str, str | None]
    description: str = ""

    def to_dict(self) -> dict:
        """A JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned group of features of one entity, with their event-time column.

    Attributes:
        name: the view's name.
        version: 1, and one more for each incompatible re-registration with ``force=True``.
        entity: the entity's name.
        join_keys: key column -> dtype.
        features: feature column -> dtype.
        timestamp: the event-time column (tz-aware UTC).
        created_timestamp: the column saying when a row was created (breaks ties; drives ``as_of``), or None.
        ttl: how far back a feature value stays valid for a label time, or None (forever).
        description: free text.
    """

    name: str
    version: int
    entity: str
    join_keys: dict[str, str]
    features: dict[str, str]
    timestamp: str = "event_ts"
    created_timestamp: str | None = None
    ttl: timedelta | None = None
    description: str = ""

    @property
    def schema(self) -> dict[str, str]:
        """Every column of the view's data: join keys, timestamps and features -> dtype."""
        cols = dict(self.join_keys)
        cols[self.timestamp] = "timestamptz"
        if self.created_timestamp:
            cols[self.created_timestamp] = "timestamptz"
        cols.update(self.features)
        return cols

    @property
    def ttl_seconds(self) -> float | None:
        """The TTL in seconds, or None."""
        return self.ttl.total_seconds() if self.ttl is not None else None

    def definition(self) -> dict:
        """What the stored data depends on (re-registering with a different one is a schema change)."""
        return {
            "entity": self.entity,
            "join_keys": self.join_keys,
            "features": self.features,
            "timestamp": self.timestamp,
            "created_timestamp": self.created_timestamp,
        }

    def to_dict(self) -> dict:
        """A JSON-able dict."""
        return {
            "name": self.name,
            "version": self.version,
            **self.definition(),
            "ttl_seconds": self.ttl_seconds,
            "description": self.description,
        }

    @classmethod
    def from_row(cls, name: str, version: int, definition: str | dict, description: str | None) -> FeatureView:
        """A view from its catalog row."""
        d = json.loads(definition) if isinstance(definition, str) else definition
        ttl = d.get("ttl_seconds")
        return cls(
            name,
            int(version),
            d["entity"],
            dict(d["join_keys"]),
            dict(d["features"]),
            d["timestamp"],
            d.get("created_timestamp"),
            timedelta(seconds=ttl) if ttl is not None else None,
            description or "",
        )


@dataclass(frozen=True)
class Segment:
    """One immutable Parquet file of a view's data, written by one ingest.

    Attributes:
        view, version, seq: the view, its version, and the segment's number (per view, increasing).
        path: the Parquet file.
        hash: sha256 of the file's bytes; content_hash: of the ingested data (an identical ingest is a no-op).
        size: bytes.
        rows: rows stored; input_rows: rows given (duplicates of one key and event time collapse).
        min_ts, max_ts: the event-time range (UTC); min_created, max_created: the creation-time range.
        ingested_at: when it was registered (UTC).
        ties_path, ties_hash, ties_rows, tied_segments: the rows of older segments it supersedes.
        source: the file it was read from, if any.
        stats: feature statistics of its rows.
    """

    view: str
    version: int
    seq: int
    path: Path
    hash: str
    content_hash: str
    size: int
    rows: int
    input_rows: int
    min_ts: datetime | None
    max_ts: datetime | None
    min_created: datetime | None
    max_created: datetime | None
    ingested_at: datetime
    ties_path: Path | None = None
    ties_hash: str | None = None
    ties_rows: int = 0
    tied_segments: tuple[int, ...] = ()
    source: str | None = None
    stats: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """A JSON-able dict (statistics left out)."""
        data = asdict(self)
        data.pop("stats")
        data["path"] = str(self.path)
        data["ties_path"] = str(self.ties_path) if self.ties_path else None
        data["tied_segments"] = list(self.tied_segments)
        for key in ("min_ts", "max_ts", "min_created", "max_created", "ingested_at"):
            data[key] = iso(data[key])
        return data


@dataclass
class IngestResult:
    """What one ingest wrote.

    Attributes:
        view, version: the view and its version.
        segment: the segment's number (of the existing one when ``new`` is False).
        rows: rows stored; input_rows: rows given; superseded: rows of older segments this segment replaces.
        hash: the segment file's sha256; path: the file.
        min_ts, max_ts: its event-time range (UTC).
        ingested_at: when it was registered (UTC, tz-aware).
        new: False when identical data had already been ingested (nothing was written).
        view_hash: the view's state hash after the ingest.
    """

    view: str
    version: int
    segment: int
    rows: int
    input_rows: int
    superseded: int
    hash: str
    path: Path
    min_ts: datetime | None
    max_ts: datetime | None
    ingested_at: datetime
    new: bool
    view_hash: str

    def line(self) -> str:
        """One line for people."""
        if not self.new:
            return f"{self.view}: identical data already ingested as segment {self.segment}; nothing written"
        text = f"{self.view}: segment {self.segment} with {self.rows} rows ({self.min_ts} .. {self.max_ts})"
        if self.rows != self.input_rows:
            text += f", {self.input_rows - self.rows} duplicate rows collapsed"
        if self.superseded:
            text += f", supersedes {self.superseded} older rows"
        return text

    def to_dict(self) -> dict:
        """A JSON-able dict."""
        data = asdict(self)
        data["path"] = str(self.path)
        for key in ("min_ts", "max_ts", "ingested_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


@dataclass
class MaterializeResult:
    """What one materialization wrote to the online table.

    Attributes:
        view: the view.
        rows: keys in the online table now.
        updated: keys whose value was added or replaced by a newer one.
        end: the latest event time considered (UTC).
        path: the online table's file.
    """

    view: str
    rows: int
    updated: int
    end: datetime
    path: Path

    def line(self) -> str:
        """One line for people."""
        return f"{self.view}: online table has {self.rows} keys ({self.updated} updated) as of {self.end.isoformat()}"

    def to_dict(self) -> dict:
        """A JSON-able dict."""
        return {**asdict(self), "end": self.end.isoformat(), "path": str(self.path)}


# Conversions ------------------------------------------------------------------------------------------------------
def parse_ttl(value: Any) -> timedelta | None:
    """A TTL from a timedelta, a number of seconds, or a string such as ``"30d"``, ``"12h"`` or ``"90 days"``;
    None is no limit."""
    return None if value is None else parse_duration(value, "ttl", error=ValidationError)


def to_utc(value: Any, what: str) -> datetime:
    """A tz-aware UTC datetime from a datetime, pandas Timestamp or ISO string (naive values are taken as UTC)."""
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValidationError(f"{what} {value!r} is not a timestamp; use ISO 8601, e.g. 2024-01-31T12:00:00Z") from None
    if pd.isna(stamp):
        raise ValidationError(f"{what} is missing; give a timestamp")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("us").to_pydatetime()


def naive_utc(value: datetime) -> datetime:
    """A tz-aware datetime as naive UTC (the catalog's form); a naive one is taken to be UTC already."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def parse_feature_refs(features: Any) -> list[tuple[str, str]]:
    """``["view:feature", ...]`` -> ``[(view, feature), ...]`` with validated names (``view:*`` allowed)."""
    if isinstance(features, str):
        features = [features]
    if not isinstance(features, (list, tuple)) or not features:
        raise ValidationError('features must be a non-empty list like ["view:feature", ...]')
    refs = []
    for ref in features:
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise ValidationError(f'feature reference {ref!r} must look like "view:feature" (or "view:*")')
        view, feature = ref.split(":")
        check_name(view, "view")
        if feature != "*":
            check_name(feature, "feature")
        refs.append((view, feature))
    return refs


def stored_definition(view: FeatureView) -> dict:
    """What the catalog stores for a view's definition: :meth:`FeatureView.definition` plus the TTL."""
    return {**view.definition(), "ttl_seconds": view.ttl_seconds}


def differences(old: FeatureView, new: FeatureView) -> list[str]:
    """What differs between two definitions of a view, for people (TTL and description are not differences)."""
    diff = []
    if old.entity != new.entity:
        diff.append(f"entity {old.entity} -> {new.entity}")
    if old.join_keys != new.join_keys:
        diff.append(f"join keys {old.join_keys} -> {new.join_keys}")
    for label, a, b in (
        ("timestamp", old.timestamp, new.timestamp),
        ("created_timestamp", old.created_timestamp, new.created_timestamp),
    ):
        if a != b:
            diff.append(f"{label} {a} -> {b}")
    for name in old.features:
        if name not in new.features:
            diff.append(f"removed feature {name!r}")
        elif old.features[name] != new.features[name]:
            diff.append(f"feature {name!r} {old.features[name]} -> {new.features[name]}")
    for name in new.features:
        if name not in old.features:
            diff.append(f"added feature {name!r} ({new.features[name]})")
    return diff
