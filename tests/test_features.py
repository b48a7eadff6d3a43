"""The feature store, driven as users drive it: real DuckDB catalogs, real Parquet segments, real processes.

The point-in-time join is checked against a brute-force pandas reference on random data (hypothesis); bad input
is refused with one line naming view, column and row, and leaves the catalog and the segment folder untouched.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_nb.exceptions import FeatureNotFoundError, SchemaChangeError, ValidationError
from mlops_nb.store.features import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def day(n: float) -> pd.Timestamp:
    return pd.Timestamp(BASE + timedelta(days=n))


@pytest.fixture
def fs(project) -> FeatureStore:
    """A feature store with entity ``customer`` and view ``stats`` (spend, calls, tier; TTL 10 days)."""
    store = FeatureStore(project)
    store.register_entity("customer", {"customer_id": "int64"})
    store.register_view(
        "stats",
        "customer",
        {"spend": "float64", "calls": "int64", "tier": "string", "seen": "timestamp"},
        ttl="10d",
        description="customer activity",
    )
    return store


def frame(rows) -> pd.DataFrame:
    """``[(customer_id, day, spend, calls, tier)]`` as data for view ``stats``."""
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "event_ts": [day(r[1]) for r in rows],
            "spend": [r[2] for r in rows],
            "calls": [r[3] for r in rows],
            "tier": [r[4] for r in rows],
            "seen": [day(r[1]).tz_convert(None) for r in rows],
        }
    )


# Point-in-time correctness against a brute-force reference ------------------------------------------------------
def reference(batches, entity: pd.DataFrame, view: dict, as_of) -> pd.DataFrame:
    """For each entity row: the latest row (by event time) among the winners of each (key, event time) group
    visible as of ``as_of``, within the TTL. ``batches``: (rows DataFrame, ingest time) in ingest order."""
    rows = []
    for order, (df, ingested) in enumerate(batches):
        for pos, row in enumerate(df.itertuples(index=False)):
            created = row.created_ts if view["created"] else ingested
            rows.append({**row._asdict(), "__created": created, "__order": order, "__pos": pos})
    all_rows = pd.DataFrame(rows)
    if as_of is not None and len(all_rows):
        all_rows = all_rows[all_rows["__created"] <= as_of]
    winners = {}
    for row in all_rows.to_dict("records"):
        key = (row["customer_id"], row["event_ts"])
        rank = (row["__created"], row["__order"], row["__pos"])
        if key not in winners or rank > winners[key][0]:
            winners[key] = (rank, row)
    out = {f: [] for f in view["features"]}
    for ent in entity.itertuples(index=False):
        best = None
        for (cid, ts), (_, row) in winners.items():
            if cid != ent.customer_id or ts > ent.event_timestamp:
                continue
            if view["ttl"] is not None and ts < ent.event_timestamp - view["ttl"]:
                continue
            if best is None or ts > best["event_ts"]:
                best = row
        for f in view["features"]:
            out[f].append(None if best is None else best[f])
    return pd.DataFrame(out)


batch_rows = st.lists(
    st.tuples(
        st.integers(0, 3),  # customer
        st.integers(0, 6),  # event day (small: many ties)
        st.integers(0, 8),  # created day (view a): late corrections come in later batches with older days
        st.integers(-5, 5),  # value
    ),
    min_size=1,
    max_size=8,
)


_example = itertools.count()


@pytest.fixture(scope="module")
def pit_store(tmp_path_factory) -> FeatureStore:
    """One store for every example of the property test (each example registers views of its own)."""
    fs = FeatureStore(tmp_path_factory.mktemp("pit"))
    fs.register_entity("customer", ["customer_id"])
    return fs


def check_point_in_time(fs, batches, entity, ttl_a, ttl_b, as_of_pick, full_names):
    """The store's answer equals the brute-force reference on one random case (two views, several ingests)."""
    n = next(_example)
    a, b = f"a{n}", f"b{n}"  # fresh views per example in one store: opening a new catalog costs more than a run
    views = {
        a: {"created": True, "ttl": timedelta(days=ttl_a) if ttl_a else None, "features": ["value", "count"]},
        b: {"created": False, "ttl": timedelta(days=ttl_b) if ttl_b else None, "features": ["value"]},
    }
    fs.register_view(
        a,
        "customer",
        {"customer_id": "int64", "value": "float64", "count": "int32"},
        created_timestamp="created_ts",
        ttl=views[a]["ttl"],
    )
    fs.register_view(b, "customer", {"customer_id": "int64", "value": "float64"}, ttl=views[b]["ttl"])
    ingested = {a: [], b: []}
    moments = []
    for which, rows in batches:
        name = a if which == "a" else b
        df = pd.DataFrame(
            {
                "customer_id": [r[0] for r in rows],
                "event_ts": [day(r[1]) for r in rows],
                "value": [float(r[3]) for r in rows],
            }
        )
        if name == a:
            df["created_ts"] = [day(r[2]) for r in rows]
            df["count"] = [r[3] * 10 for r in rows]
        result = fs.ingest(name, df)
        if result.new:
            ingested[name].append((df, pd.Timestamp(result.ingested_at)))
        moments += [pd.Timestamp(result.ingested_at), pd.Timestamp(result.ingested_at) - pd.Timedelta(microseconds=1)]
    moments += [day(d) for d in range(9)]
    as_of = None if as_of_pick is None else sorted(moments)[as_of_pick % len(moments)]
    entity_df = pd.DataFrame(
        {
            "customer_id": [e[0] for e in entity],
            "event_timestamp": [day(e[1]) + pd.Timedelta(hours=e[2]) for e in entity],
            "label": range(len(entity)),
        },
        index=[f"r{i}" for i in range(len(entity))],
    )
    got = fs.get_historical_features(
        entity_df, [f"{a}:value", f"{a}:count", f"{b}:value"], as_of=as_of, full_feature_names=True
    )
    assert list(got.index) == list(entity_df.index)
    assert list(got.columns[:3]) == ["customer_id", "event_timestamp", "label"]
    for name, view in views.items():
        want = reference(ingested[name], entity_df, view, as_of)
        for feature in view["features"]:
            column = got[f"{name}__{feature}"]
            expected = pd.array(want[feature], dtype="Float64" if feature == "value" else "Int64")
            actual = pd.array(column, dtype="Float64" if feature == "value" else "Int64")
            assert actual.isna().tolist() == pd.isna(expected).tolist(), (name, feature, as_of)
            assert actual.fillna(0).tolist() == expected.fillna(0).tolist(), (name, feature, as_of)
    if not full_names:  # a and b both have "value": short names collide
        with pytest.raises(ValidationError, match="full_feature_names=True"):
            fs.get_historical_features(entity_df, [f"{a}:value", f"{b}:value"])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.tuples(st.sampled_from(["a", "b"]), batch_rows), min_size=1, max_size=5),
    entity=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 9), st.sampled_from([0, 12])), min_size=1, max_size=12),
    ttl_a=st.sampled_from([None, 1, 2]),
    ttl_b=st.sampled_from([None, 3]),
    as_of_pick=st.one_of(st.none(), st.integers(0, 20)),
    full_names=st.booleans(),
)
def test_point_in_time_join_quick(pit_store, batches, entity, ttl_a, ttl_b, as_of_pick, full_names):
    check_point_in_time(pit_store, batches, entity, ttl_a, ttl_b, as_of_pick, full_names)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.tuples(st.sampled_from(["a", "b"]), batch_rows), min_size=1, max_size=5),
    entity=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 9), st.sampled_from([0, 12])), min_size=1, max_size=12),
    ttl_a=st.sampled_from([None, 1, 2]),
    ttl_b=st.sampled_from([None, 3]),
    as_of_pick=st.one_of(st.none(), st.integers(0, 20)),
    full_names=st.booleans(),
)
def test_point_in_time_join_matches_brute_force(pit_store, batches, entity, ttl_a, ttl_b, as_of_pick, full_names):
    check_point_in_time(pit_store, batches, entity, ttl_a, ttl_b, as_of_pick, full_names)


def test_ties_corrections_ttl_and_as_of_by_hand(fs):
    first = fs.ingest(
        "stats", frame([(1, 0, 1.0, 1, "a"), (1, 5, 2.0, 2, "b"), (1, 5, 3.0, 3, "c"), (2, 2, 4.0, 4, "d")])
    )
    assert (first.rows, first.input_rows, first.superseded) == (3, 4, 0)  # the tie (1, day 5) collapses
    second = fs.ingest("stats", frame([(1, 5, 30.0, 30, "z")]))  # a late correction of (1, day 5)
    assert second.superseded == 1 and second.segment == 2
    labels = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 3],
            "event_timestamp": [day(5), day(4.9), day(15), day(12), day(12.001), day(1)],
        }
    )
    now = fs.get_historical_features(labels, ["stats:spend", "stats:calls", "stats:tier"])
    assert now["spend"].tolist()[:4] == [30.0, 1.0, 30.0, 4.0]  # inclusive at both ends: day 5 and day 12 - 10d
    assert now["spend"].isna().tolist() == [False, False, False, False, True, True]
    assert now["calls"].dtype == "Int64" and now["calls"].tolist()[:2] == [30, 1]
    before = fs.get_historical_features(labels, ["stats:spend"], as_of=first.ingested_at)
    assert before["spend"].tolist()[0] == 3.0  # the correction is invisible as of the first ingest
    empty = fs.get_historical_features(labels, ["stats:spend"], as_of=first.ingested_at - timedelta(seconds=1))
    assert empty["spend"].isna().all()


def test_register_is_idempotent_ttl_updates_and_schema_change_needs_force(fs):
    again = fs.register_view(
        "stats",
        "customer",
        {"spend": "float", "calls": "int", "tier": "str", "seen": "datetime"},
        ttl=timedelta(days=10),
        description="customer activity",
    )
    assert again.version == 1
    fs.ingest("stats", frame([(1, 0, 1.0, 1, "a")]))
    before = fs.view_hash("stats")
    fs.register_view(
        "stats", "customer", {"spend": "float", "calls": "int", "tier": "str", "seen": "datetime"}, ttl="20d"
    )
    assert fs.get_view("stats").ttl == timedelta(days=20) and fs.view_hash("stats") != before
    with pytest.raises(SchemaChangeError) as err:
        fs.register_view("stats", "customer", {"spend": "int64", "calls": "int64", "extra": "bool"})
    message = str(err.value)
    for part in (
        "feature 'spend' float64 -> int64",
        "removed feature 'tier'",
        "added feature 'extra' (bool)",
        "force=True",
    ):
        assert part in message
    bumped = fs.register_view("stats", "customer", {"spend": "int64", "calls": "int64", "extra": "bool"}, force=True)
    assert bumped.version == 2 and fs.describe("stats")["rows"] == 0
    assert [v["version"] for v in fs.describe("stats")["versions"]] == [1, 2]


def test_identical_ingest_is_a_no_op_and_view_hash_follows_data(fs, project):
    from mlops_nb.core.records import ArtifactRef

    ref = ArtifactRef(fs.view_hash("stats"), "feature_view", name="stats", uri="features://stats")
    assert fs.current_hash(ref) == ref.hash
    assert project.artifact_source("feature_view").current_hash(ref) == ref.hash  # what the step runtime asks
    data = frame([(1, 0, 1.0, 1, "a")])
    first = fs.ingest("stats", data)
    assert fs.current_hash(ref) == first.view_hash != ref.hash
    again = fs.ingest("stats", data)
    assert not again.new and again.segment == first.segment and "nothing written" in again.line()
    assert fs.current_hash(ArtifactRef("x", "feature_view", name="gone")) is None


def test_steps_record_views_and_segments_for_lineage(fs, tmp_path):
    from mlops_nb.core import hooks

    raw = tmp_path / "stats.csv"
    frame([(1, 0, 1.0, 1, "a")]).to_csv(raw, index=False)
    with hooks.track("ingest") as touched:
        result = fs.ingest("stats", raw)
    assert touched.outputs["features:stats"].hash == result.view_hash
    segment = touched.outputs[f"features:stats#{result.segment}"]
    assert segment.kind == "feature_segment" and segment.hash == result.hash and segment.uri.endswith(".parquet")
    assert touched.inputs["stats.csv"].kind == "external"
    labels = pd.DataFrame({"customer_id": [1], "event_timestamp": [day(1)]})
    with hooks.track("train") as touched:
        fs.get_historical_features(labels, ["stats:spend"])
    view = touched.inputs["features:stats"]
    assert (view.kind, view.hash, view.uri) == ("feature_view", result.view_hash, "features://stats")
    assert touched.inputs[f"features:stats#{result.segment}"].hash == result.hash
    hooks.record_input("x", view)  # outside a step: a no-op


def test_composite_keys_and_string_keys(project):
    fs = FeatureStore(project)
    fs.register_entity("store_item", {"store": "string", "item": "int32"})
    fs.register_view("sales", "store_item", {"units": "int64"}, timestamp="ts")
    data = pd.DataFrame(
        {
            "store": ["a", "a", "b"],
            "item": [1, 2, 1],
            "ts": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00+01:00", "2024-01-01T00:00:00Z"],
            "units": [5, 6, 7],
        }
    )
    fs.ingest("sales", data)
    labels = pd.DataFrame({"store": ["a", "b", "b", "a"], "item": [2, 1, 2, 1], "event_timestamp": [day(3)] * 4})
    got = fs.get_historical_features(labels, ["sales:units"])
    assert got["units"].tolist()[:2] == [6, 7] and got["units"].isna().tolist() == [False, False, True, False]
    fs.materialize("sales")
    online = fs.get_online_features(["sales:units"], {"store": ["b", "a", "z"], "item": [1, 1, 1]})
    assert online.columns.tolist() == ["store", "item", "units"]
    assert online["units"].tolist()[:2] == [7, 5] and pd.isna(online["units"].iloc[2])


# The online store -------------------------------------------------------------------------------------------------------
def test_materialize_keeps_the_newest_value_and_lookups_follow(fs):
    fs.ingest("stats", frame([(1, 1, 1.0, 1, "a"), (1, 3, 3.0, 3, "c"), (2, 2, 2.0, 2, "b")]))
    result = fs.materialize("stats", end=day(2))
    assert (result.rows, result.updated) == (2, 2)
    rows = [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 5}]
    assert fs.get_online_features(["stats:spend"], rows)["spend"].tolist()[:2] == [1.0, 2.0]
    assert fs.materialize("stats").updated == 1  # key 1 moves to day 3
    assert fs.get_online_features(["stats:spend"], rows)["spend"].tolist()[:2] == [3.0, 2.0]
    again = fs.materialize("stats", end=day(2))  # an older end never replaces a newer value
    assert again.updated == 0
    got = fs.get_online_features(["stats:spend", "stats:tier"], rows, full_feature_names=True)
    assert got.columns.tolist() == ["customer_id", "stats__spend", "stats__tier"]
    assert got["stats__spend"].tolist()[:2] == [3.0, 2.0] and pd.isna(got["stats__spend"].iloc[2])
    assert fs.describe("stats")["online"]["rows"] == 2
    with pytest.raises(FeatureNotFoundError, match="unknown feature 'nope' in view 'stats'"):
        fs.get_online_features(["stats:nope"], rows)


def test_online_lookup_of_1000_keys_returns_the_latest_row_per_key(fs):
    # the speed of this lookup (p50 <= 2 ms) is measured in benchmarks/bench_features.py, not here
    rng = np.random.default_rng(1)
    n = 100_000
    data = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "event_ts": pd.Timestamp(BASE) + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s"),
            "spend": rng.normal(size=n),
            "calls": rng.integers(0, 9, n),
            "tier": rng.choice(["gold", "silver"], n),
            "seen": pd.Timestamp("2024-01-01"),
        }
    )
    fs.ingest("stats", data)
    fs.materialize("stats")
    keys = rng.integers(0, n + 500, 1000)
    got = fs.get_online_features(["stats:spend", "stats:calls"], [{"customer_id": int(k)} for k in keys])
    assert len(got) == 1000
    expected = data.set_index("customer_id").reindex(keys)
    assert got["spend"].isna().tolist() == (keys >= n).tolist()
    np.testing.assert_allclose(got["spend"].to_numpy(dtype=float), expected["spend"].to_numpy(), equal_nan=True)
    assert got["calls"].dropna().astype(int).tolist() == expected["calls"].dropna().astype(int).tolist()


def test_online_before_materialize_says_how_to_fix(fs):
    with pytest.raises(FeatureNotFoundError, match=r"no online table yet; run fs.materialize\('stats'\)"):
        fs.get_online_features(["stats:spend"], [{"customer_id": 1}])


# Statistics -----------------------------------------------------------------------------------------------------------
def test_stats_are_kept_per_segment_and_merged_for_the_view(fs):
    fs.ingest("stats", frame([(1, 0, 1.0, 1, "gold"), (2, 0, 3.0, None, "gold"), (3, 0, None, 3, "silver")]))
    fs.ingest("stats", frame([(4, 1, 5.0, 5, "gold")]))
    stats = fs.stats_dict("stats")
    spend = stats["spend"]
    assert (spend["count"], spend["nulls"], spend["min"], spend["max"], spend["mean"]) == (3, 1, 1.0, 5.0, 3.0)
    assert sum(spend["histogram"]["counts"]) == 3 and len(spend["histogram"]["edges"]) == 11
    assert spend["quantiles"]["p50"] == 3.0
    assert stats["tier"]["top"][0] == ["gold", 3] and stats["calls"]["nulls"] == 1
    per_segment = fs.stats("stats", by_segment=True)
    assert per_segment["segment"].tolist().count(1) == 4 and set(per_segment["segment"]) == {1, 2}
    table = fs.stats("stats")
    assert table.set_index("feature").loc["spend", "p50"] == 3.0


# Bad input: one line naming view, column and row; nothing written ---------------------------------------------------
def snapshot(project) -> dict[str, str]:
    """Hash of the catalog and of every file under the segment folder (lock files aside)."""
    files = {}
    gen = project.features_path.with_name("features.duckdb.gen")
    for path in [project.features_path, gen, *sorted((project.mlops_dir / "features").rglob("*"))]:
        if path.is_file() and not path.name.endswith(".lock"):
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _stats_row(**changes):
    row = frame([(1, 0, 1.0, 1, "a"), (2, 1, 2.0, 2, "b"), (3, 2, 3.0, 3, "c")])
    for column, (index, value) in changes.items():
        row[column] = row[column].astype(object)
        row.loc[index, column] = value
    return row


LABELS = pd.DataFrame({"customer_id": [1], "event_timestamp": [day(1)]})

BAD_INPUT = [
    (
        "null key",
        lambda fs: fs.ingest("stats", _stats_row(customer_id=(2, None))),
        ValidationError,
        "view 'stats' column 'customer_id' row 2: null join key",
    ),
    (
        "naive event time",
        lambda fs: fs.ingest("stats", frame([(1, 0, 1.0, 1, "a")]).assign(event_ts=pd.Timestamp("2024-01-01"))),
        ValidationError,
        "view 'stats' column 'event_ts' row 0: timestamp '2024-01-01T00:00:00' has no time zone",
    ),
    (
        "aware in a naive column",
        lambda fs: fs.ingest("stats", frame([(1, 0, 1.0, 1, "a")]).assign(seen=day(0))),
        ValidationError,
        "view 'stats' column 'seen' row 0: timestamp '2024-01-01T00:00:00+00:00' has a time zone",
    ),
    (
        "aware string in a naive column",
        lambda fs: fs.ingest("stats", _stats_row(seen=(1, "2024-01-02T00:00:00Z"))),
        ValidationError,
        "view 'stats' column 'seen' row 1:",
    ),
    (
        "wrong dtype",
        lambda fs: fs.ingest("stats", _stats_row(spend=(1, "abc"))),
        ValidationError,
        "view 'stats' column 'spend' row 1: value 'abc' cannot be cast to float64",
    ),
    (
        "not an integer",
        lambda fs: fs.ingest("stats", _stats_row(calls=(2, 2.5))),
        ValidationError,
        "view 'stats' column 'calls' row 2: value 2.5 is not an integer",
    ),
    (
        "unparseable time",
        lambda fs: fs.ingest("stats", _stats_row(event_ts=(0, "yesterday"))),
        ValidationError,
        "view 'stats' column 'event_ts' row 0: value 'yesterday' cannot be parsed as a timestamp",
    ),
    (
        "null event time",
        lambda fs: fs.ingest("stats", _stats_row(event_ts=(1, None))),
        ValidationError,
        "view 'stats' column 'event_ts' row 1: missing timestamp",
    ),
    (
        "unknown column",
        lambda fs: fs.ingest("stats", frame([(1, 0, 1.0, 1, "a")]).assign(bonus=1)),
        ValidationError,
        "view 'stats' column 'bonus': not in the view's schema",
    ),
    (
        "missing column",
        lambda fs: fs.ingest("stats", frame([(1, 0, 1.0, 1, "a")]).drop(columns="tier")),
        ValidationError,
        "view 'stats' column 'tier': missing from the data",
    ),
    (
        "empty frame",
        lambda fs: fs.ingest("stats", frame([(1, 0, 1.0, 1, "a")]).iloc[:0]),
        ValidationError,
        "view 'stats': the data has no rows",
    ),
    (
        "unknown view",
        lambda fs: fs.ingest("nope", frame([(1, 0, 1.0, 1, "a")])),
        FeatureNotFoundError,
        "unknown feature view 'nope' (known views: stats)",
    ),
    (
        "injection in a view name",
        lambda fs: fs.ingest("x; DROP TABLE segments", frame([(1, 0, 1.0, 1, "a")])),
        ValidationError,
        "invalid view name 'x; DROP TABLE segments'",
    ),
    (
        "injection in a feature name",
        lambda fs: fs.get_historical_features(LABELS, ['stats:spend"; DROP TABLE views; --']),
        ValidationError,
        "invalid feature name",
    ),
    (
        "injection in a schema",
        lambda fs: fs.register_view("v2", "customer", {"x INT); DROP TABLE views; --": "int64"}),
        ValidationError,
        "invalid column name",
    ),
    (
        "unknown feature",
        lambda fs: fs.get_historical_features(LABELS, ["stats:nope"]),
        FeatureNotFoundError,
        "unknown feature 'nope' in view 'stats' (its features: spend, calls, tier, seen)",
    ),
    (
        "entity_df without its timestamp",
        lambda fs: fs.get_historical_features(LABELS.drop(columns="event_timestamp"), ["stats:spend"]),
        ValidationError,
        "entity_df has no column 'event_timestamp' (the label time)",
    ),
    (
        "entity_df without a key",
        lambda fs: fs.get_historical_features(LABELS.rename(columns={"customer_id": "id"}), ["stats:spend"]),
        ValidationError,
        "entity_df has no column 'customer_id', the join key of view 'stats'",
    ),
    (
        "entity_df key of a wrong type",
        lambda fs: fs.get_historical_features(LABELS.assign(customer_id="x1"), ["stats:spend"]),
        ValidationError,
        "entity_df column 'customer_id' row 0: value 'x1' cannot be cast to int64",
    ),
    (
        "schema change",
        lambda fs: fs.register_view("stats", "customer", {"spend": "string"}),
        SchemaChangeError,
        "feature view 'stats' v1 exists with a different schema: feature 'spend' float64 -> string",
    ),
    (
        "unknown entity",
        lambda fs: fs.register_view("v2", "merchant", {"x": "int64"}),
        FeatureNotFoundError,
        "view 'v2': unknown entity 'merchant'",
    ),
    (
        "bad dtype",
        lambda fs: fs.register_view("v2", "customer", {"x": "decimal"}),
        ValidationError,
        "view 'v2' column 'x': unknown dtype 'decimal'",
    ),
]


@pytest.mark.parametrize(("action", "error", "message"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(fs, project, action, error, message):
    fs.ingest("stats", frame([(1, 0, 1.0, 1, "a")]))
    before = snapshot(project)
    with pytest.raises(error) as err:
        action(fs)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert snapshot(project) == before


def test_assume_utc_accepts_naive_times(fs):
    data = frame([(1, 0, 1.0, 1, "a")]).assign(event_ts=pd.Timestamp("2024-01-03 12:00"))
    result = fs.ingest("stats", data, assume_utc=True)
    assert result.min_ts == datetime(2024, 1, 3, 12, tzinfo=UTC)


# Concurrency: two ingesting processes and a reader ------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import sys, time, pandas as pd
    from datetime import UTC, datetime, timedelta
    from mlops_nb.store.features import FeatureStore
    home, role, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fs = FeatureStore(home)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    if role == "read":
        labels = pd.DataFrame({"customer_id": range(400), "event_timestamp": [base + timedelta(days=5)] * 400})
        builds = 0
        while True:
            done = all(__import__("os").path.exists(f"{home}/done-{w}") for w in ("w1", "w2"))
            got = fs.get_historical_features(labels, ["stats:spend", "stats:calls"])
            assert len(got) == 400
            builds += 1
            if done:
                break
        print(builds)
    else:
        offset = 0 if role == "w1" else 200
        for i in range(n):
            rows = range(offset + i * 20, offset + i * 20 + 20)
            df = pd.DataFrame({"customer_id": list(rows), "event_ts": [base + timedelta(days=i)] * 20,
                               "spend": [float(r) for r in rows], "calls": [i] * 20,
                               "tier": ["x"] * 20, "seen": [pd.Timestamp("2024-01-01")] * 20})
            fs.ingest("stats", df)
        open(f"{home}/done-{role}", "w").close()
    """
)


@pytest.mark.slow
def test_two_ingesting_processes_and_a_reader_lose_nothing(fs, project):
    script = project.home / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "MLOPS_NB_LOCK_TIMEOUT": "60"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(project.home), role, "10"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ("read", "w1", "w2")
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    assert int(outputs[0][0].strip()) >= 1
    info = fs.describe("stats")
    assert len(info["segments"]) == 20 and info["rows"] == 400
    labels = pd.DataFrame({"customer_id": range(400), "event_timestamp": [day(c % 200 // 20 + 1) for c in range(400)]})
    got = fs.get_historical_features(labels, ["stats:spend"])
    assert got["spend"].tolist() == [float(i) for i in range(400)]


# The command line -------------------------------------------------------------------------------------------------------
def cli(home, *args):
    from mlops_nb.ui.cli import cli as main

    return CliRunner().invoke(main, ["--home", str(home), "features", *args], obj={})


def test_cli_list_show_ingest_materialize_stats(fs, project, tmp_path):
    data = tmp_path / "stats.csv"
    frame([(1, 0, 1.0, 1, "a"), (2, 1, 2.0, 2, "b")]).to_csv(data, index=False)
    result = cli(project.home, "ingest", "stats", str(data))
    assert result.exit_code == 0, result.output
    assert "stats: segment 1 with 2 rows" in result.output
    result = cli(project.home, "list")
    assert result.exit_code == 0 and "stats" in result.output and "customer" in result.output
    listed = json.loads(cli(project.home, "list", "--json").output)
    assert listed[0]["view"] == "stats" and listed[0]["rows"] == 2
    shown = cli(project.home, "show", "stats")
    assert shown.exit_code == 0 and "segment" in shown.output and "spend" in shown.output
    assert json.loads(cli(project.home, "show", "stats", "--json").output)["rows"] == 2
    materialized = cli(project.home, "materialize", "stats")
    assert materialized.exit_code == 0 and "online table has 2 keys" in materialized.output
    stats = cli(project.home, "stats", "stats")
    assert stats.exit_code == 0 and "spend" in stats.output and "p50" in stats.output
    assert json.loads(cli(project.home, "stats", "stats", "--json").output)["spend"]["count"] == 2


def test_ttl_reads_the_same_in_every_front_end(fs, project, monkeypatch):
    """A TTL is shown one way: `features list`, `features show`, and `%mlops features` (table and one view)."""
    from IPython.core.interactiveshell import InteractiveShell

    for name, value in (("hourly", "12h"), ("recent", 1800), ("fresh", "45 s"), ("forever", None)):
        fs.register_view(name, "customer", {"spend": "float64"}, ttl=value)
    fs.register_view("quarter", "customer", {"spend": "float64"}, ttl=7776000.0)
    listed = cli(project.home, "list").output.splitlines()
    column = listed[0].index("TTL")
    shown = {line.split()[0]: line[column:].split("  ")[0].strip() for line in listed[1:]}
    assert shown == {
        "stats": "10 days",
        "hourly": "12 h",
        "recent": "30 min",
        "fresh": "45 s",
        "forever": "none",
        "quarter": "90 days",
    }
    assert "created (ingest time), ttl 90 days" in cli(project.home, "show", "quarter").output
    monkeypatch.chdir(project.home)
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    try:
        assert ip.run_cell("%load_ext mlops_nb").success
        assert "ttl 90 days" in repr(ip.run_line_magic("mlops", "features quarter"))
        listing = ip.run_line_magic("mlops", "features")
        assert "12 h" in repr(listing) and "90 days" in listing._repr_html_() and "0:00:00" not in repr(listing)
    finally:
        InteractiveShell.clear_instance()


def test_cli_errors_are_one_line(fs, project, tmp_path):
    bad = tmp_path / "bad.csv"
    frame([(1, 0, 1.0, 1, "a")]).assign(spend="lots").to_csv(bad, index=False)
    result = cli(project.home, "ingest", "stats", str(bad))
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: view 'stats' column 'spend' row 0: value 'lots' cannot be cast to float64; fix or drop those rows"
    )
    assert cli(project.home, "show", "nope").output.startswith("Error: unknown feature view 'nope'")
    for command in ("list", "show", "ingest", "materialize", "stats"):
        helped = cli(project.home, command, "--help")
        assert helped.exit_code == 0 and "Example: mlops-nb features" in helped.output


def test_cli_help_does_not_import_pandas_or_duckdb():
    code = "import sys; from mlops_nb.ui.cli import cli; import mlops_nb.ui.cli.features; print('pandas' in sys.modules, 'duckdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# The magic ------------------------------------------------------------------------------------------------------------
def test_magic_shows_views_and_histograms(fs, project, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    fs.ingest("stats", frame([(1, 0, 1.0, 1, "a"), (2, 1, 2.0, 2, "b")]))
    monkeypatch.chdir(project.home)
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    try:
        assert ip.run_cell("%load_ext mlops_nb").success
        listing = ip.run_line_magic("mlops", "features")
        assert "stats" in repr(listing) and "<table" in listing._repr_html_()
        one = ip.run_line_magic("mlops", "features stats")
        assert "<svg" in one._repr_html_() and "spend" in repr(one)
    finally:
        InteractiveShell.clear_instance()


# The features notebook, headless -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_features_notebook_runs_headless_then_fully_cached_with_lineage(tmp_path):
    import shutil

    from mlops_nb import Project

    home = tmp_path / "project"
    shutil.copytree(ROOT / "notebooks", home / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (home / "pyproject.toml").write_text("[project]\nname = 'features-demo'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    command = [str(Path(sys.executable).parent / "mlops-nb"), "run", "notebooks/02_feature_store.ipynb"]
    first = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "(8 succeeded)" in first.stdout
    second = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0 and "(8 cached)" in second.stdout, second.stdout

    project = Project(home)
    run = project.metadata.get_run(project.metadata.list_runs(1)[0].id)
    model = run.step("train").outputs["model"]
    graph = project.metadata.lineage(model.hash, direction="up")
    kinds = {n.attrs["artifact_kind"] for n in graph.nodes.values() if n.kind == "artifact"}
    assert {"feature_view", "feature_segment", "external"} <= kinds
    labels = " ".join(n.label for n in graph.nodes.values())
    assert "data/raw.csv" in labels and "customer_activity" in labels
    fs = FeatureStore(project)
    assert fs.describe("customer_activity")["rows"] > 1000
    first_run = project.metadata.get_run(project.metadata.list_runs(2)[-1].id)
    assert first_run.metrics["roc_auc"] > 0.5

    # the feature store deleted: the cached ingest step must ingest again, and what reads the view runs again
    shutil.rmtree(project.mlops_dir / "features")
    project.features_path.unlink()
    third = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=240)
    assert third.returncode == 0, third.stderr + third.stdout
    run = project.metadata.get_run(project.metadata.list_runs(1)[0].id)
    ingest = run.step("ingest")
    assert ingest.status == "succeeded" and ingest.why == "output features:customer_activity#1 is gone"
    training_set = run.step("training_set")  # the view is a new segment (a new ingest time): read again
    assert training_set.status == "succeeded" and training_set.why == "features:customer_activity changed"
    assert FeatureStore(project).describe("customer_activity")["rows"] > 1000


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["notebook", "dag"])
def test_two_ingests_into_one_view_rerun_fully_cached(tmp_path, executor):
    """A view that grows after an ingest step does not invalidate that step: its segment is still there. Only
    what reads the view depends on its state."""
    from nbtools import write_notebook

    import mlops_nb
    from mlops_nb import Project

    (tmp_path / "pyproject.toml").write_text("")
    setup = (
        "%load_ext mlops_nb\nimport pandas as pd\nfrom mlops_nb import FeatureStore\nfs = FeatureStore()\n"
        "fs.register_entity('customer', {'customer_id': 'int64'})\n"
        "fs.register_view('stats', 'customer', {'spend': 'float64'}, ttl='30d')"
    )

    def ingest(name, day_):
        return (
            f"%%mlops step {name} --outputs {name}_rows\n"
            f"{name}_rows = fs.ingest('stats', pd.DataFrame({{'customer_id': [1, 2], 'spend': [{day_}.0, 2.0], "
            f"'event_ts': pd.to_datetime(['2024-01-{day_:02d}'] * 2, utc=True)}})).rows"
        )

    read = (
        "%%mlops step read --inputs first_rows,second_rows --outputs spend\n"
        "labels = pd.DataFrame({'customer_id': [1], 'event_timestamp': pd.to_datetime(['2024-01-20'], utc=True)})\n"
        "spend = float(fs.get_historical_features(labels, ['stats:spend'])['spend'][0])"
    )
    nb = write_notebook(tmp_path / "grow.ipynb", [setup, ingest("first", 1), ingest("second", 5), read, "spend"])
    project = Project(tmp_path)
    first = mlops_nb.run(nb, executor=executor, project=project, progress=False)
    assert {s.step: s.status for s in first.step_runs} == {
        "first": "succeeded",
        "second": "succeeded",
        "read": "succeeded",
    }
    assert project.artifacts.get(first.step("read").outputs["spend"]) == 5.0
    again = mlops_nb.run(nb, executor=executor, project=project, progress=False)
    assert {s.step: s.status for s in again.step_runs} == {"first": "cached", "second": "cached", "read": "cached"}
