"""The online table of a feature view in memory: the latest value per key, indexed for batch lookups.

``FeatureStore.materialize`` writes ``features/<view>/online.parquet`` atomically; a process keeps its parsed copy
until the file is replaced (a ``stat`` per lookup tells), so a scoring server answers 1,000 keys in well under
2 ms without opening the catalog.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...exceptions import ValidationError
from ..dbfile import memory
from .checks import DTYPES, quote
from .records import parse_feature_refs
from .segments import visible_sql


def to_pandas_values(array, dtype: str):
    """An Arrow result column as pandas values: nullable ints and bools, float NaN for missing floats."""
    import pandas as pd
    import pyarrow as pa

    kind = DTYPES[dtype]
    if kind == "int":
        return pd.array(
            array.to_pandas(
                types_mapper={
                    pa.int8(): pd.Int8Dtype(),
                    pa.int16(): pd.Int16Dtype(),
                    pa.int32(): pd.Int32Dtype(),
                    pa.int64(): pd.Int64Dtype(),
                }.get
            )
        )
    if kind == "bool":
        return pd.array(array.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get))
    return array.to_pandas().to_numpy() if kind in ("float",) else array.to_pandas().array


class OnlineTable:
    """An online table in memory: the latest value per key, indexed for batch lookups."""

    def __init__(self, table, meta: dict):
        import pandas as pd

        self.table = table
        self.meta = meta
        view = meta["view"]
        self.version = view["version"]
        self.keys = list(view["join_keys"])
        self.features = dict(view["features"])
        self.key_dtypes = dict(view["join_keys"])
        frame = table.to_pandas()
        if len(self.keys) == 1:
            self.index = pd.Index(frame[self.keys[0]].to_numpy())
        else:
            self.index = pd.MultiIndex.from_frame(frame[self.keys])
        self.values = {f: to_pandas_values(table.column(f), d) for f, d in self.features.items()}

    def lookup(self, request: dict):
        """Positions of the request's keys (column -> array) in the table (-1 where absent)."""
        import pandas as pd

        if len(self.keys) == 1:
            return self.index.get_indexer(request[self.keys[0]])
        return self.index.get_indexer(pd.MultiIndex.from_arrays([request[k] for k in self.keys]))

    def take(self, feature: str, positions):
        """The values of ``feature`` at ``positions`` (null at -1)."""
        from pandas.api.extensions import take

        return take(self.values[feature], positions, allow_fill=True)


_online_cache: dict[str, tuple[tuple, OnlineTable]] = {}


def read_online(path: Path) -> OnlineTable | None:
    """The online table at ``path`` (cached in memory until the file is replaced), or None."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _online_cache.get(str(path))
    if cached is not None and cached[0] == signature:
        return cached[1]
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"mlops_nb"])
    online = OnlineTable(table, meta)
    _online_cache[str(path)] = (signature, online)
    return online


_refs_cache: dict[Any, dict[str, list[str]]] = {}


def online_refs(features) -> dict[str, list[str]]:
    """view -> feature names (empty for ``view:*``), parsed once per distinct request."""
    cached = _refs_cache.get(features)
    if cached is None:
        cached = {}
        for view, feature in parse_feature_refs(list(features) if isinstance(features, tuple) else features):
            names = cached.setdefault(view, [])
            if feature != "*" and feature not in names:
                names.append(feature)
        if len(_refs_cache) < 1024:
            _refs_cache[features] = cached
    return cached


def merged_online_table(v, segments, end, current: OnlineTable | None):
    """The online table after materializing ``v`` up to ``end``: per key the newest of the current online value and
    the view's latest event at or before ``end``. Returns ``(arrow table, number of keys added or updated)``."""
    keys = ", ".join(quote(k) for k in v.join_keys)
    mem = memory()
    try:
        feature_sql, params = visible_sql(mem, 0, v, segments, None)
        mem.execute(
            f"CREATE TEMP TABLE latest AS SELECT * FROM ({feature_sql}) WHERE __ts <= ? "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY __ts DESC, __created DESC) = 1",
            [*params, end],
        )
        if current is not None and current.version == v.version:
            mem.register("current_online", current.table)
            mem.execute(
                "CREATE TEMP TABLE merged AS SELECT * EXCLUDE (__src) FROM ("
                "SELECT *, 0 AS __src FROM current_online UNION ALL BY NAME SELECT *, 1 AS __src FROM latest) "
                f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY __ts DESC, __created DESC, __src) = 1"
            )
            updated = mem.execute(
                "SELECT count(*) FROM merged m ANTI JOIN current_online c ON "
                + " AND ".join(
                    [
                        *(f"m.{quote(k)} = c.{quote(k)}" for k in v.join_keys),
                        "m.__ts = c.__ts",
                        "m.__created = c.__created",
                    ]
                )
            ).fetchall()[0][0]
        else:
            mem.execute("CREATE TEMP TABLE merged AS SELECT * FROM latest")
            updated = mem.execute("SELECT count(*) FROM merged").fetchall()[0][0]
        order = ", ".join([*(quote(k) for k in v.join_keys), "__ts", "__created", *(quote(f) for f in v.features)])
        table = mem.sql(f"SELECT {order} FROM merged").to_arrow_table()
    finally:
        mem.close()
    return table, updated


def request_columns(entity_rows) -> dict:
    """The keys of an online request (list of dicts, dict of lists, or DataFrame) as column -> numpy array."""
    import numpy as np
    import pandas as pd

    if isinstance(entity_rows, pd.DataFrame):
        return {str(c): entity_rows[c].to_numpy() for c in entity_rows.columns}
    if isinstance(entity_rows, dict):
        return {str(k): np.asarray(v) for k, v in entity_rows.items()}
    rows = list(entity_rows)
    if not rows or not isinstance(rows[0], dict):
        raise ValidationError("entity_rows must be a non-empty list of dicts, a dict of lists, or a DataFrame")
    try:
        return {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
    except (KeyError, TypeError):
        raise ValidationError(
            f"entity_rows must all have the same keys as the first one ({', '.join(map(str, rows[0]))})"
        ) from None
