"""Benchmark the feature store's point-in-time join side by side with three ways to do it by hand, on one dataset.

What it measures
----------------
It generates one dataset: ``--features`` feature rows over ``--keys`` customers (event times on the hour over
``--days`` days, by default 100: about one row per key and day, a daily feature table; a few % of rows tie on key
and event time; each row has a distinct ``created_ts`` up to two days later)
and ``--entities`` label rows (2 % of them with keys that have no features, label times to the second). It ingests
the feature rows into a fresh :class:`~mlops_nb.store.features.FeatureStore` view (TTL 30 days, ``created_ts`` as the
created timestamp) as one segment, and every method below reads that segment's Parquet file. Each method runs in
its own subprocess, which first loads the label rows into a pandas DataFrame (not timed), then is timed ``--reps``
times (best kept) from that DataFrame to a pandas DataFrame with one column per feature. ``--rounds`` rounds run
every method once each, interleaved, so that load from other processes on the machine falls on all methods alike;
the median round is printed with the largest peak RSS of the subprocesses (``VmHWM``):

* **ours**: ``FeatureStore.get_historical_features`` (ties resolved, TTL applied, rows in label order);
* **(a) raw ASOF**: DuckDB ``ASOF LEFT JOIN`` of the label DataFrame with the Parquet file: no tie-breaking, no
  TTL, rows in whatever order DuckDB returns them — the floor any ASOF-based method stands on;
* **(b) pandas**: read the Parquet columns, sort features by ``(event_ts, created_ts)`` and labels by time (the
  sorts ``merge_asof`` needs), ``merge_asof(by=key, tolerance=TTL)``, then back to label order;
* **(c) Feast's query**: what Feast's DuckDB offline store runs: a range join on key and
  ``event_ts BETWEEN label_ts - TTL AND label_ts``, then ``row_number() OVER (PARTITION BY label row ORDER BY
  event_ts DESC, created_ts DESC) = 1`` (written here by hand in SQL).

Results are checked equal: ours, (b) and (c) on every row; (a) on the rows where it must agree with us (its
match is within the TTL and its (key, event time) has no tie), and null where ours is null. Then the online store:
``materialize`` the view and time ``get_online_features`` for 1,000 random keys (p50, p95 over 200 calls).

Targets: ours <= 1.2x (a), >= 3x faster than (b), >= 4x faster than (c), peak RSS <= 1.5x (a); online p50 <= 2 ms.

Sizes (``--size``): ``smoke`` 200k x 20k, 2k keys (seconds); ``medium`` 2M x 200k, 20k keys (a minute or two);
``full`` 10M x 1M, 100k keys (several minutes). The default is ``smoke``, or ``BENCH_SIZE`` when that is set
(``smoke`` or ``full``); with ``BENCH_SIZE=smoke``, ``--rounds`` defaults to 1. Examples::

    .venv/bin/python benchmarks/bench_features.py --size smoke
    .venv/bin/python benchmarks/bench_features.py --size medium --reps 3
    .venv/bin/python benchmarks/bench_features.py --features 5000000 --entities 500000 --keys 50000 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

SIZES = {
    "smoke": (200_000, 20_000, 2_000),
    "medium": (2_000_000, 200_000, 20_000),
    "full": (10_000_000, 1_000_000, 100_000),
}
TTL_DAYS = 30
FEATURES = ["f1", "f2", "f3"]
METHODS = ["ours", "asof", "pandas", "feast"]
LABELS = {
    "ours": "ours: get_historical_features",
    "asof": "(a) raw DuckDB ASOF JOIN",
    "pandas": "(b) pandas merge_asof + sorts",
    "feast": "(c) Feast range join + row_number",
}


# Data ---------------------------------------------------------------------------------------------------------------
def generate(out: Path, n_features: int, n_entities: int, n_keys: int, days: int, seed: int = 0) -> dict:
    """Write the label rows to ``out/entity.parquet`` and ingest the feature rows into a store at ``out/home``."""
    import numpy as np
    import pandas as pd

    from mlops_nb.store.features import FeatureStore

    rng = np.random.default_rng(seed)
    base = np.datetime64("2024-01-01T00:00:00", "us")
    hour = np.int64(3_600_000_000)
    event = base + rng.integers(0, days * 24, n_features).astype("int64") * hour
    created = event + rng.integers(0, 48 * 3600 * 10**6, n_features).astype("timedelta64[us]")
    features = pd.DataFrame(
        {
            "customer_id": rng.integers(0, n_keys, n_features),
            "event_ts": pd.to_datetime(event).tz_localize("UTC"),
            "created_ts": pd.to_datetime(created).tz_localize("UTC"),
            "f1": rng.normal(size=n_features),
            "f2": rng.normal(size=n_features).round(3),
            "f3": rng.integers(0, 1000, n_features),
        }
    )
    entity = pd.DataFrame(
        {
            "row_id": np.arange(n_entities),
            "customer_id": rng.integers(0, int(n_keys * 1.02), n_entities),
            "event_timestamp": pd.to_datetime(
                base + rng.integers(0, days * 86400, n_entities).astype("timedelta64[s]")
            ).tz_localize("UTC"),
            "label": rng.integers(0, 2, n_entities),
        }
    )
    entity.to_parquet(out / "entity.parquet")
    home = out / "home"
    home.mkdir()
    (home / "pyproject.toml").write_text("")
    fs = FeatureStore(home)
    fs.register_entity("customer", {"customer_id": "int64"})
    fs.register_view(
        "bench",
        "customer",
        {"f1": "float64", "f2": "float64", "f3": "int64"},
        created_timestamp="created_ts",
        ttl=f"{TTL_DAYS}d",
    )
    t0 = time.perf_counter()
    result = fs.ingest("bench", features)
    ingest_s = time.perf_counter() - t0
    return {
        "segment": str(result.path),
        "home": str(home),
        "ingest_s": ingest_s,
        "rows": result.rows,
        "input_rows": result.input_rows,
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: ``VmHWM`` (Linux; reset by exec, unlike ``ru_maxrss``, which
    a child started by ``fork`` + ``exec`` inherits from its parent), else ``getrusage``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Methods (each in its own process) -------------------------------------------------------------------------------------
def method_ours(entity, segment: str, home: str):
    from mlops_nb.store.features import FeatureStore

    fs = FeatureStore(home)
    return lambda: fs.get_historical_features(entity, [f"bench:{f}" for f in FEATURES])


def method_asof(entity, segment: str, home: str):
    import duckdb

    db = duckdb.connect()  # opening a database costs ~12 ms; a connection (cursor) to it microseconds

    def run():
        con = db.cursor()
        con.register("entity", entity)
        result = con.sql(
            "SELECT e.*, f.event_ts AS matched_ts, f.f1, f.f2, f.f3 FROM entity e ASOF LEFT JOIN read_parquet(?) f "
            "ON e.customer_id = f.customer_id AND e.event_timestamp >= f.event_ts",
            params=[segment],
        ).df()
        con.close()
        return result

    return run


def method_pandas(entity, segment: str, home: str):
    import pandas as pd

    def run():
        feats = pd.read_parquet(segment, columns=["customer_id", "event_ts", "created_ts", *FEATURES])
        feats = feats.sort_values(["event_ts", "created_ts"], kind="stable")
        left = entity.sort_values("event_timestamp", kind="stable")
        merged = pd.merge_asof(
            left,
            feats.drop(columns="created_ts"),
            left_on="event_timestamp",
            right_on="event_ts",
            by="customer_id",
            direction="backward",
            allow_exact_matches=True,
            tolerance=pd.Timedelta(days=TTL_DAYS),
        )
        return merged.sort_values("row_id", kind="stable").drop(columns="event_ts")

    return run


FEAST_SQL = f"""
SELECT * EXCLUDE (rn) FROM (
    SELECT e.*, f.f1, f.f2, f.f3,
           row_number() OVER (PARTITION BY e.row_id ORDER BY f.event_ts DESC, f.created_ts DESC) AS rn
    FROM entity e
    LEFT JOIN read_parquet(?) f
      ON e.customer_id = f.customer_id
     AND f.event_ts <= e.event_timestamp
     AND f.event_ts >= e.event_timestamp - INTERVAL {TTL_DAYS} DAY
) WHERE rn = 1
"""


def method_feast(entity, segment: str, home: str):
    import duckdb

    db = duckdb.connect()

    def run():
        con = db.cursor()
        con.register("entity", entity)
        result = con.sql(FEAST_SQL, params=[segment]).df()
        con.close()
        return result

    return run


def run_method(name: str, out: Path, reps: int) -> None:
    """Child process: time one method, save its result, print a JSON line."""
    import pandas as pd

    info = json.loads((out / "data.json").read_text())
    entity = pd.read_parquet(out / "entity.parquet")
    run = globals()[f"method_{name}"](entity, info["segment"], info["home"])
    times, result = [], None
    for _ in range(reps):
        result = None
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    rss_mb = peak_rss_mb()
    keep = ["row_id", *FEATURES] + (["matched_ts", "event_timestamp", "customer_id"] if name == "asof" else [])
    result[keep].to_parquet(out / f"result-{name}.parquet")
    print(json.dumps({"method": name, "seconds": min(times), "all": times, "rss_mb": rss_mb}))


def run_online(out: Path) -> None:
    """Child process: materialize, then time 1,000-key online lookups."""
    import numpy as np

    from mlops_nb.store.features import FeatureStore

    info = json.loads((out / "data.json").read_text())
    fs = FeatureStore(info["home"])
    t0 = time.perf_counter()
    result = fs.materialize("bench")
    materialize_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    keys = rng.integers(0, int(result.rows * 1.05), 1000)
    rows = [{"customer_id": int(k)} for k in keys]
    refs = [f"bench:{f}" for f in FEATURES]
    t0 = time.perf_counter()
    first = fs.get_online_features(refs, rows)  # loads the online table into memory
    load_s = time.perf_counter() - t0
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        got = fs.get_online_features(refs, rows)
        times.append(time.perf_counter() - t0)
    assert got.equals(first)
    print(
        json.dumps(
            {
                "materialize_s": materialize_s,
                "online_keys": result.rows,
                "first_lookup_s": load_s,
                "p50_ms": float(np.percentile(times, 50) * 1000),
                "p95_ms": float(np.percentile(times, 95) * 1000),
                "found": int(got["f1"].notna().sum()),
            }
        )
    )


# Checks ---------------------------------------------------------------------------------------------------------------
def check(out: Path, segment: str) -> list[str]:
    """Compare the saved results; return one line per check."""
    import duckdb
    import numpy as np
    import pandas as pd

    res = {
        m: pd.read_parquet(out / f"result-{m}.parquet").sort_values("row_id").reset_index(drop=True) for m in METHODS
    }
    lines = []

    def same(a: pd.DataFrame, b: pd.DataFrame, mask=None) -> tuple[int, int]:
        mask = np.ones(len(a), bool) if mask is None else mask
        bad = 0
        for f in FEATURES:
            x = pd.to_numeric(a[f], errors="coerce").astype("float64").to_numpy()[mask]
            y = pd.to_numeric(b[f], errors="coerce").astype("float64").to_numpy()[mask]
            bad += int((~((x == y) | (np.isnan(x) & np.isnan(y)))).sum())
        return int(mask.sum()), bad

    ours = res["ours"]
    for other in ("pandas", "feast"):
        n, bad = same(ours, res[other])
        lines.append(f"ours == {other:<6}: {n:,} rows compared, {bad} differing values" + ("" if bad else "  OK"))
    asof = res["asof"]
    ties = duckdb.sql(
        "SELECT customer_id, event_ts AS matched_ts, true AS tied FROM read_parquet(?) GROUP BY ALL HAVING count(*) > 1",
        params=[segment],
    ).df()
    asof = asof.merge(ties, on=["customer_id", "matched_ts"], how="left")
    within = asof["matched_ts"].notna() & (asof["matched_ts"] >= asof["event_timestamp"] - pd.Timedelta(days=TTL_DAYS))
    must = (within & asof["tied"].isna()).to_numpy()
    n, bad = same(ours, asof, must)
    lines.append(
        f"ours == asof  : {n:,} rows compared (matched within TTL, no tie), {bad} differing values"
        + ("" if bad else "  OK")
    )
    no_match = asof["matched_ts"].isna().to_numpy()
    bad_null = int(ours.loc[no_match, "f1"].notna().sum())
    lines.append(
        f"ours null where asof has no match: {int(no_match.sum()):,} rows, {bad_null} not null"
        + ("" if bad_null else "  OK")
    )
    lines.append(
        f"tied (key, event_ts) pairs in the segment: {len(ties):,}; asof rows left out for a tie: "
        f"{int((within & asof['tied'].notna()).sum()):,}"
    )
    return lines


# Driver ------------------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default=_results.bench_size(default="smoke"),
        help="dataset size (default smoke, or BENCH_SIZE when set: smoke or full)",
    )
    parser.add_argument("--features", type=int, help="feature rows (overrides --size)")
    parser.add_argument("--entities", type=int, help="label rows (overrides --size)")
    parser.add_argument("--keys", type=int, help="distinct keys (overrides --size)")
    parser.add_argument("--days", type=int, default=100, help="time span of the data in days (default 100)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1 if _results.bench_size() == "smoke" else 3,
        help="rounds; each runs every method once (median printed; default 3, 1 when BENCH_SIZE=smoke)",
    )
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions per method and round (best kept)")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--online", action="store_true", help=argparse.SUPPRESS)
    _results.add_results_option(parser)
    args = parser.parse_args()
    if args.method:
        run_method(args.method, args.out, args.reps)
        return
    if args.online:
        run_online(args.out)
        return

    n_features, n_entities, n_keys = SIZES[args.size]
    n_features, n_entities, n_keys = args.features or n_features, args.entities or n_entities, args.keys or n_keys
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_features-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        print(
            f"dataset: {n_features:,} feature rows x {n_entities:,} label rows, {n_keys:,} keys, {args.days} days, "
            f"TTL {TTL_DAYS} days; {os.cpu_count()} CPUs; median of {args.rounds} rounds, best of {args.reps} each"
        )
        t0 = time.perf_counter()
        info = generate(out, n_features, n_entities, n_keys, args.days)
        (out / "data.json").write_text(json.dumps(info))
        print(
            f"generated and ingested in {time.perf_counter() - t0:.1f} s (ingest {info['ingest_s']:.2f} s: "
            f"{info['input_rows']:,} rows in, {info['rows']:,} stored after collapsing exact duplicates)"
        )
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        rounds: dict[str, list[dict]] = {name: [] for name in METHODS}
        for _ in range(args.rounds):  # methods interleaved, so that load from other processes falls on all alike
            for name in METHODS:
                proc = subprocess.run(
                    [sys.executable, __file__, "--method", name, "--out", str(out), "--reps", str(args.reps)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if proc.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{proc.stderr}")
                rounds[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results = {}
        for name, runs in rounds.items():
            seconds = sorted(r["seconds"] for r in runs)
            results[name] = {
                "seconds": seconds[len(seconds) // 2],
                "rounds": seconds,
                "rss_mb": max(r["rss_mb"] for r in runs),
            }
        base = results["ours"]
        print(f"\n{'method':<36} {'seconds':>8} {'peak RSS MB':>12} {'ours faster by':>15}   rounds (s)")
        for name in METHODS:
            r = results[name]
            ratio = r["seconds"] / base["seconds"]
            each = " ".join(f"{x:.3f}" for x in r["rounds"])
            print(f"{LABELS[name]:<36} {r['seconds']:>8.3f} {r['rss_mb']:>12.0f} {ratio:>14.2f}x   {each}")
        a = results["asof"]
        targets = [
            ("ours / (a) time <= 1.2", base["seconds"] / a["seconds"], base["seconds"] / a["seconds"] <= 1.2),
            (
                "(b) / ours time >= 3",
                results["pandas"]["seconds"] / base["seconds"],
                results["pandas"]["seconds"] / base["seconds"] >= 3,
            ),
            (
                "(c) / ours time >= 4",
                results["feast"]["seconds"] / base["seconds"],
                results["feast"]["seconds"] / base["seconds"] >= 4,
            ),
            ("ours / (a) peak RSS <= 1.5", base["rss_mb"] / a["rss_mb"], base["rss_mb"] / a["rss_mb"] <= 1.5),
        ]
        proc = subprocess.run(
            [sys.executable, __file__, "--online", "--out", str(out)], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            raise SystemExit(f"online failed:\n{proc.stderr}")
        online = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"\nonline: materialize {online['online_keys']:,} keys in {online['materialize_s']:.2f} s; first lookup "
            f"(loads the table) {online['first_lookup_s'] * 1000:.1f} ms; 1,000 keys: p50 {online['p50_ms']:.3f} ms, "
            f"p95 {online['p95_ms']:.3f} ms ({online['found']} found)"
        )
        targets.append(("online p50 ms <= 2", online["p50_ms"], online["p50_ms"] <= 2))
        print("\nchecks:")
        for line in check(out, info["segment"]):
            print("  " + line)
        print("\ntargets:")
        for label, value, ok in targets:
            print(f"  {label:<28} {value:>7.2f}  {'met' if ok else 'MISSED'}")
        rounds = f"{args.rounds} round" + ("s" if args.rounds > 1 else "")
        join = f"point-in-time join, {n_features:,} x {n_entities:,} rows (median of {rounds})"
        met = [ok for _, _, ok in targets]

        def versus(name: str, key: str, unit: str, target: str, ok: bool, work: str = join) -> _results.Result:
            return _results.Result(
                "features", work, LABELS[name], base[key], results[name][key], unit, target=target, met=ok
            )

        _results.write_results(
            args.results,
            [
                versus("asof", "seconds", "s", "<= 1.2x", met[0]),
                versus("pandas", "seconds", "s", "<= 0.33x (>= 3x faster)", met[1]),
                versus("feast", "seconds", "s", "<= 0.25x (>= 4x faster)", met[2]),
                versus("asof", "rss_mb", "MB", "<= 1.5x", met[3], f"peak RSS of the {join}"),
                _results.Result(
                    "features",
                    f"online lookup of 1,000 keys, p50 of 200 ({online['online_keys']:,} keys)",
                    "-",
                    online["p50_ms"],
                    None,
                    "ms",
                    target="<= 2 ms",
                    met=met[4],
                ),
            ],
        )
    finally:
        if not args.keep and not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
