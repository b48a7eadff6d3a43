"""Benchmark drift monitoring: Evidently's DataDriftPreset side by side with ``mlops_nb.monitor`` on the same data.

What it measures
----------------
Seeded synthetic data, mixed column kinds (normal and gamma floats, rounded floats, strings with 5 values, small
integers), about a third of the columns shifted by amounts from tiny to large (so that some verdicts are close
calls): 100,000 current rows x 25 and x 125 columns, against a 100,000-row reference (Evidently's distance branch:
Wasserstein, Jensen-Shannon) and a 1,000-row reference (its test branch: K-S, chi-square, Z).

* *Evidently*: ``Report([DataDriftPreset()]).run(current, reference)`` in a venv of its own with pandas 2.3
  (0.7.23 does not import under pandas 3), which the benchmark creates on first use with uv (or
  ``--evidently-python PATH``). Its verdicts are read from the snapshot.
* *ours, monitor*: ``mlops_nb.monitor(MODEL, reference=FILE)`` end to end: the current rows are the model's
  window of a real prediction log (Parquet segments written by the log writer, read back with DuckDB), the
  reference a Parquet file; it computes the drift, writes the HTML and JSON report, stores both as artifacts and
  records the monitoring run.
* *ours, drift*: ``mlops_nb.monitoring.data_drift(reference, current)`` on the DataFrames, the part of the
  above that Evidently's ``run`` does.

Both sides run ``--repeats`` times (ranges printed); ratios are Evidently / ours (how many times faster). The
verdict agreement is the share of columns on which both say "drift" or both say "no drift".

Targets: >= 20x faster at 125 columns, >= 10x at 25; verdicts agree on >= 98% of columns.

Usage: ``.venv/bin/python benchmarks/bench_monitoring.py [--repeats 3] [--rows 100000] [--widths 25,125]
[--results FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

EVIDENTLY = "evidently==0.7.23"
PANDAS = "pandas==2.3.3"
VENV = Path.home() / ".cache" / "mlops_nb" / "bench-evidently"

EVIDENTLY_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
t = time.perf_counter()
from evidently import Report
from evidently.presets import DataDriftPreset
imported = time.perf_counter() - t
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2]); repeats = int(sys.argv[3])
times, verdicts = [], {}
Report([DataDriftPreset()]).run(cur.head(2000), ref.head(2000))  # warm-up: its lazy imports and caches
for _ in range(repeats):
    t = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(cur, ref)
    times.append(time.perf_counter() - t)
for metric in snapshot.dict()["metrics"]:
    config = metric.get("config") or {}
    if config.get("type", "").endswith("ValueDrift"):
        verdicts[config["column"]] = {"score": metric["value"], "method": config.get("method"),
                                      "threshold": config.get("threshold")}
print(json.dumps({"times": times, "import": imported, "verdicts": verdicts}))
"""


def generate(n: int, columns: int, seed: int, drift: bool):
    """The benchmark's data: ``columns`` mixed columns; with ``drift`` a third of them shifted by varied amounts."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {}
    for i in range(columns):
        kind = i % 5
        shift = 0.0
        if drift and i % 3 == 0:
            shift = [0.005, 0.02, 0.05, 0.1, 0.3, 1.0][(i // 3) % 6]  # from far below to far above the thresholds
        name = f"c{i:03d}"
        if kind == 0:
            data[name] = rng.normal(shift, 1.0, n)
        elif kind == 1:
            data[name] = rng.gamma(2.0 * (1 + shift), 2.0, n)
        elif kind == 2:
            p = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
            p = p + shift * np.array([-0.2, -0.1, 0.0, 0.1, 0.2])
            data[name] = rng.choice(["alpha", "beta", "gamma", "delta", "eps"], n, p=p / p.sum())
        elif kind == 3:
            data[name] = rng.binomial(5, min(0.3 * (1 + shift), 0.9), n)
        else:
            data[name] = np.round(rng.normal(shift, 1.0, n), 1)
    return pd.DataFrame(data)


def ensure_evidently(python: str | None) -> str:
    """The Python of a venv with Evidently and pandas 2.3 (created with uv on first use)."""
    if python:
        return python
    exe = VENV / "bin" / "python"
    if exe.is_file():
        return str(exe)
    print(f"creating {VENV} with {EVIDENTLY} and {PANDAS} (once) ...", flush=True)
    uv = [sys.executable, "-m", "uv"]
    if subprocess.run([*uv, "--version"], capture_output=True).returncode != 0:
        uv = [shutil.which("uv") or "uv"]
    base = shutil.which("python3.11") or sys.executable
    subprocess.run([*uv, "venv", "--quiet", "--python", base, str(VENV)], check=True)
    # bytecode compiled now: where PYTHONDONTWRITEBYTECODE is set, every run would compile Evidently's imports anew
    install = [*uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(exe), EVIDENTLY, PANDAS]
    subprocess.run(install, check=True)
    return str(exe)


def run_evidently(python: str, ref: Path, cur: Path, repeats: int, out: Path) -> dict:
    script = out.parent / "evidently_run.py"
    script.write_text(EVIDENTLY_SCRIPT)
    result = out.parent / "evidently_out.json"
    with open(result, "w") as handle:  # to a file: an unread pipe can stall the child
        done = subprocess.run([python, str(script), str(ref), str(cur), str(repeats)], stdout=handle,
                              stderr=subprocess.DEVNULL, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"Evidently failed (exit {done.returncode}); run {script} by hand to see why")
    return json.loads(result.read_text())


def _log_current(project, current, model: str) -> None:
    """The current rows as a served model's window of the prediction log (what a scoring server writes)."""
    import numpy as np

    from mlops_nb.core.clock import utcnow
    from mlops_nb.store.predictions import FEATURE_PREFIX, LogWriter

    writer = LogWriter(project.predictions_dir, flush_seconds=3600, flush_rows=25_000)
    now = utcnow()
    columns = {FEATURE_PREFIX + c: current[c].tolist() for c in current.columns}
    n = len(current)
    ids = [f"bench{i:010d}" for i in range(n)]
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 2, n).tolist()
    for start in range(0, n, 25_000):
        stop = min(start + 25_000, n)
        writer.append([{"request_id": ids[i], "row": 0, "ts": now, "model": model, "version": 1, "alias": "champion",
                        "bundle": None, "variant": "stable", "status": 200, "error": None, "latency_ms": 1.0,
                        "prediction": predictions[i], "probability": None,
                        **{k: v[i] for k, v in columns.items()}} for i in range(start, stop)])  # fmt: skip
    writer.close()


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f} s" if len(values) > 1 else f"{values[0]:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="current rows (and the large reference's)")
    parser.add_argument("--widths", default="25,125", help="column counts, comma-separated")
    parser.add_argument("--small-reference", type=int, default=1000, help="rows of the small reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evidently-python", help="a Python with Evidently (default: a venv the benchmark makes)")
    parser.add_argument("--keep", action="store_true", help="keep the data and projects")
    _results.add_results_option(parser)
    args = parser.parse_args()

    import mlops_nb
    from mlops_nb.monitoring import data_drift
    from mlops_nb.project import Project

    python = ensure_evidently(args.evidently_python)
    work = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    rows = []
    print(f"{'columns':>7} {'reference':>9}  {'Evidently':>13}  {'ours: monitor':>13}  {'ours: drift':>12}  "
          f"{'ratio monitor':>13}  {'ratio drift':>11}  {'agree':>6}  drifted (E/ours)")  # fmt: skip
    for width in [int(w) for w in args.widths.split(",")]:
        current = generate(args.rows, width, 2, drift=True)
        for ref_rows in (args.rows, args.small_reference):
            reference = generate(ref_rows, width, 1, drift=False)
            case = work / f"w{width}-r{ref_rows}"
            case.mkdir()
            ref_file, cur_file = case / "reference.parquet", case / "current.parquet"
            reference.to_parquet(ref_file)
            current.to_parquet(cur_file)
            theirs = run_evidently(python, ref_file, cur_file, args.repeats, case / "x")
            project = Project(case / "project").init()
            _log_current(project, current, "bench")
            monitor_times, drift_times = [], []
            mlops_nb.monitor("bench/1", window="1d", reference=ref_file, project=project)  # warm-up: imports
            for _ in range(args.repeats):
                t = time.perf_counter()
                report = mlops_nb.monitor("bench/1", window="1d", reference=ref_file, project=project)
                monitor_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                data_drift(reference, current)
                drift_times.append(time.perf_counter() - t)
            ours = {c.column: c for c in report.drift.columns}
            their_drift = {}
            for column, v in theirs["verdicts"].items():
                method, score, threshold = v["method"] or "", v["score"], v["threshold"]
                if "p_value" in method:
                    their_drift[column] = score <= threshold if method.startswith("K-S") else score < threshold
                else:
                    their_drift[column] = score >= threshold
            disagreements = [(c, theirs["verdicts"][c], ours.get(c)) for c, d in their_drift.items()
                             if c not in ours or ours[c].drifted != d]  # fmt: skip
            share = 1 - len(disagreements) / max(len(their_drift), 1)
            their_best, our_best = min(theirs["times"]), min(monitor_times)
            row = {
                "columns": width, "reference": ref_rows, "evidently_s": theirs["times"], "monitor_s": monitor_times,
                "drift_s": drift_times, "ratio_monitor": their_best / our_best,
                "ratio_drift": their_best / min(drift_times), "agreement": share,
                "drifted_evidently": sum(their_drift.values()), "drifted_ours": len(report.drift.drifted),
            }  # fmt: skip
            rows.append(row)
            print(f"{width:>7} {ref_rows:>9}  {_range(theirs['times']):>13}  {_range(monitor_times):>13}  "
                  f"{_range(drift_times):>12}  {row['ratio_monitor']:>12.1f}x  {row['ratio_drift']:>10.1f}x  "
                  f"{share:>6.1%}  {row['drifted_evidently']}/{row['drifted_ours']}", flush=True)  # fmt: skip
            for column, v, mine in disagreements:
                print(f"    disagree on {column}: Evidently {v['method']} {v['score']:.6g}; ours "
                      f"{mine.test if mine else '-'} {mine.score if mine else '-'}")  # fmt: skip
    print()
    print(f"Evidently import: {theirs['import']:.1f} s (not counted). Ratios: Evidently's best / ours' best.")
    targets = {25: 10.0, 125: 20.0}
    results = []
    for row in rows:
        target = targets.get(row["columns"])
        if target:
            verdict = "met" if row["ratio_monitor"] >= target else "MISSED"
            print(f"  {row['columns']} columns, {row['reference']}-row reference: monitor {row['ratio_monitor']:.1f}x "
                  f"(target >= {target:.0f}x: {verdict}); agreement {row['agreement']:.1%} (target >= 98%: "
                  f"{'met' if row['agreement'] >= 0.98 else 'MISSED'})")  # fmt: skip
        # as ours / theirs, the inverse of the ratios printed above (Evidently / ours, how many times faster)
        case = f"drift on {args.rows:,} rows x {row['columns']} columns, {row['reference']:,}-row reference"
        case += f", best of {args.repeats}"
        their_best = min(row["evidently_s"])
        results += [
            _results.Result(
                "monitoring",
                f"{case}: mlops_nb.monitor",
                "Evidently DataDriftPreset",
                min(row["monitor_s"]),
                their_best,
                "s",
                target=f"<= {1 / target:.2f}x (>= {target:.0f}x faster)" if target else "",
                met=row["ratio_monitor"] >= target if target else None,
            ),
            _results.Result(
                "monitoring",
                f"{case}: data_drift alone",
                "Evidently DataDriftPreset",
                min(row["drift_s"]),
                their_best,
                "s",
            ),
            _results.Result(
                "monitoring",
                f"{case}: verdicts agreeing",
                "Evidently's verdicts",
                row["agreement"] * 100,
                None,
                "% of columns",
                target=">= 98 %" if target else "",
                met=row["agreement"] >= 0.98 if target else None,
            ),
        ]
    _results.write_results(args.results, results)
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"data and projects kept in {work}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
