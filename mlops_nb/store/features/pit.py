"""Point-in-time reads of the feature store: which columns a training set gets, and the ASOF join of one view.

``FeatureStore.get_historical_features`` validates the request, then for each view joins the entity rows (label
times) to the view's visible rows with DuckDB's ``ASOF LEFT JOIN`` (latest event at or before the label time), with
the TTL as a filter after the join (DuckDB's ASOF takes one inequality). Ties were resolved at ingest, so a read is
a plain ASOF join (see FACTS: resolving ties at read time costs 2.5x).
"""

from __future__ import annotations

from ...exceptions import FeatureNotFoundError, ValidationError
from .checks import BadRows, cast_series, fail, quote
from .online import to_pandas_values
from .records import FeatureView
from .segments import visible_sql


def output_columns(
    snapshot: dict, refs: list[tuple[str, str]], entity_df, full_feature_names: bool
) -> tuple[dict[str, list[str]], dict[tuple[str, str], str]]:
    """The features asked for, per view (``view:*`` expanded), and the column each becomes.

    Raises:
        FeatureNotFoundError: a feature the view does not have.
        ValidationError: two views give the same column name, or it is already a column of ``entity_df``.
    """
    wanted: dict[str, list[str]] = {}
    for view, feature in refs:
        v = snapshot[view][0]
        names = list(v.features) if feature == "*" else [feature]
        for name in names:
            if name not in v.features:
                raise FeatureNotFoundError(
                    f"unknown feature {name!r} in view {view!r} (its features: {', '.join(v.features)})"
                )
            if name not in wanted.setdefault(view, []):
                wanted[view].append(name)
    out_names: dict[tuple[str, str], str] = {}
    seen: dict[str, str] = {}
    for view, names in wanted.items():
        for name in names:
            out = f"{view}__{name}" if full_feature_names else name
            if out in seen:
                raise ValidationError(
                    f"feature {name!r} is in views {seen[out]!r} and {view!r}; pass full_feature_names=True"
                )
            if out in entity_df.columns:
                raise ValidationError(
                    f"feature column {out!r} (view {view!r}) is already a column of entity_df; rename that column "
                    "or pass full_feature_names=True"
                )
            seen[out] = view
            out_names[(view, name)] = out
    return wanted, out_names


def asof_columns(mem, index: int, v: FeatureView, segments, entity_df, label, names: list[str], as_of) -> dict:
    """The ASOF join of one view against the entity rows: feature name -> values in ``entity_df``'s row order.

    Args:
        mem: an in-memory DuckDB connection for the join.
        index: the view's number in the request (names its temporary relations).
        v, segments: the view and its current segments.
        entity_df: the entity rows (join keys).
        label: their label times (an Arrow UTC timestamp array).
        names: the features to read.
        as_of: only data created at or before this time (None: all).
    """
    import numpy as np
    import pyarrow as pa

    n = len(entity_df)
    ent = {"__row": pa.array(np.arange(n, dtype=np.int64))}
    for key, dtype in v.join_keys.items():
        if key not in entity_df.columns:
            raise ValidationError(
                f"entity_df has no column {key!r}, the join key of view {v.name!r} (entity {v.entity!r}); add it"
            )
        series = entity_df[key].reset_index(drop=True)
        try:
            ent[key] = cast_series(series, dtype)
        except BadRows as bad:
            raise ValidationError(
                str(fail(v.name, key, series, bad)).replace(f"view {v.name!r} column", "entity_df column", 1)
            ) from None
    ent["__ts"] = label
    ttl_filter = ""
    if v.ttl is not None:
        ttl_us = int(round(v.ttl_seconds * 1_000_000))
        lo = pa.compute.subtract(label.cast(pa.int64()), ttl_us).cast(pa.timestamp("us", tz="UTC"))
        ent["__lo"] = lo
        ttl_filter = "f.__ts >= e.__lo"
    name = f"e{index}"
    mem.register(name, pa.table(ent))
    feature_sql, params = visible_sql(mem, index, v, segments, as_of)
    on = " AND ".join([*(f"e.{quote(k)} = f.{quote(k)}" for k in v.join_keys), "e.__ts >= f.__ts"])
    outs = ", ".join(
        (f"CASE WHEN {ttl_filter} THEN f.{quote(f)} END" if ttl_filter else f"f.{quote(f)}") + f" AS c{i}"
        for i, f in enumerate(names)
    )
    sql = f"SELECT e.__row, {outs} FROM {name} e ASOF LEFT JOIN ({feature_sql}) f ON {on}"
    table = mem.sql(sql, params=params).to_arrow_table()
    mem.unregister(name)
    rows = table.column("__row").to_numpy()
    order = np.empty(n, dtype=np.int64)
    order[rows] = np.arange(n, dtype=np.int64)
    take = pa.array(order)
    return {f: to_pandas_values(table.column(f"c{i}").take(take), v.features[f]) for i, f in enumerate(names)}
