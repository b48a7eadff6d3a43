"""Benchmark the scoring server: ``mlflow models serve`` side by side with ``mlops-nb serve`` (prediction log on)
and with ``mlops-nb deploy``'s stable address (router + server).

What it measures
----------------
One scikit-learn LogisticRegression on iris, registered once in a fresh project's MLflow SQLite store, promoted to
``champion`` and built into an app bundle. Three servers answer it on 127.0.0.1, each with ``--workers`` worker
processes (default 1, MLflow's default):

* *MLflow*: ``mlflow models serve -m models:/iris@champion --env-manager local`` (FastAPI on uvicorn).
* *ours*: ``mlops-nb serve BUNDLE`` (Starlette on uvicorn with httptools and uvloop), every prediction logged.
* *ours via deploy*: ``mlops-nb deploy iris@champion``: the same server behind the deployment's router.

The client is one aiohttp session (keep-alive) in this process, sending one-row ``dataframe_split`` POSTs to
``/invocations``: first sequentially, then with 8 requests in flight. The sides take turns in rounds of
``--round`` requests, so a busy machine slows all alike; ``--repeats`` runs of the whole give the ranges. After
the runs every server is stopped gracefully and the prediction log must hold exactly one row per request that
ours and the deployment answered.

Targets (ratios ours / MLflow): p50 <= 0.7 (through the stable address <= 0.85), throughput at concurrency 8
>= 1.5x, 0 errors, 0 lost log rows.

Usage: ``.venv/bin/python benchmarks/bench_serving.py [--requests 2000] [--repeats 3] [--workers 1] [--results FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

ROW = {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[5.9, 3.0, 5.1, 1.8]]}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _wait(url: str, process: subprocess.Popen | None, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server for {url} exited (its log is next to the project)")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer /ping")


async def _run(session, url: str, total: int, concurrency: int) -> tuple[list[float], int, float, list[str]]:
    """Send ``total`` requests with ``concurrency`` in flight: latencies, errors, wall seconds, request ids."""
    latencies: list[float] = []
    ids: list[str] = []
    errors = 0
    queue = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        for _ in queue:
            start = time.perf_counter()
            try:
                async with session.post(url + "/invocations", json={"dataframe_split": ROW}) as answer:
                    await answer.read()
                    ok = answer.status == 200
                    rid = answer.headers.get("x-request-id")
            except Exception:  # noqa: BLE001 - any failure counts as an error
                ok, rid = False, None
            latencies.append(time.perf_counter() - start)
            if ok:
                if rid:
                    ids.append(rid)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start, ids


async def _measure(urls: dict[str, str], total: int, concurrency: int, round_size: int) -> dict[str, dict]:
    from aiohttp import ClientSession, TCPConnector

    results = {name: {"lat": [], "errors": 0, "wall": 0.0, "ids": []} for name in urls}
    async with ClientSession(connector=TCPConnector(limit=0)) as session:
        for url in urls.values():  # warm-up: connections, first predictions
            await _run(session, url, 50, concurrency)
        done = 0
        while done < total:
            n = min(round_size, total - done)
            for name, url in urls.items():
                lat, errors, wall, ids = await _run(session, url, n, concurrency)
                r = results[name]
                r["lat"] += lat
                r["errors"] += errors
                r["wall"] += wall
                r["ids"] += ids
            done += n
    for r in results.values():
        r["p50"] = statistics.median(r["lat"])
        r["p99"] = _pct(r["lat"], 0.99)
        r["rps"] = len(r["lat"]) / r["wall"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per side and mode in each repeat")
    parser.add_argument("--repeats", type=int, default=3, help="whole runs (for the ranges)")
    parser.add_argument("--round", type=int, default=250, help="requests per side before the next side's turn")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of every server")
    _results.add_results_option(parser)
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlops_nb
    from mlops_nb.project import Project
    from mlops_nb.serving import build, deploy, stop
    from mlops_nb.serving.router import free_port

    home = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    servers: list[subprocess.Popen] = []
    project = Project(home).init(registry=True)
    try:
        x, y = load_iris(return_X_y=True, as_frame=True)
        x.columns = ROW["columns"]
        version = mlops_nb.register_model(LogisticRegression(max_iter=500).fit(x, y), "iris", input_example=x.head(3),
                                          project=project)  # fmt: skip
        mlops_nb.promote("iris", version.version, "champion", project=project)
        bundle = build("iris@champion", project=project, progress=False)
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "MLFLOW_TRACKING_URI": project.tracking_uri, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
               "MLOPS_NB_HOME": str(home)}  # fmt: skip
        ports = {"mlflow": free_port(), "ours": free_port(), "deploy": free_port()}
        mlflow_cmd = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", "models:/iris@champion", "--env-manager",
                      "local", "-h", "127.0.0.1", "-p", str(ports["mlflow"]), "-w", str(args.workers)]  # fmt: skip
        # each server's output goes to a file: MLflow's uvicorn writes an access-log line per request, and a pipe
        # nobody reads fills up and stops it
        logs = {name: open(home / f"{name}.log", "w") for name in ("mlflow", "ours")}  # noqa: SIM115
        servers.append(subprocess.Popen(mlflow_cmd, env=env, stdout=logs["mlflow"], stderr=subprocess.STDOUT,
                                        start_new_session=True))  # fmt: skip
        ours_cmd = [sys.executable, "-m", "mlops_nb.ui.cli", "serve", bundle.short, "--port", str(ports["ours"]),
                    "--workers", str(args.workers)]  # fmt: skip
        servers.append(subprocess.Popen(ours_cmd, env=env, stdout=logs["ours"], stderr=subprocess.STDOUT))
        deployed = deploy("iris@champion", port=ports["deploy"], workers=args.workers, window=0.2, project=project,
                          progress=False)  # fmt: skip
        assert deployed["outcome"] == "deployed", deployed
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        _wait(urls["mlflow"], servers[0])
        _wait(urls["ours"], servers[1])
        _wait(urls["deploy"], None)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        print(f"iris LogisticRegression, one-row dataframe_split POSTs, {args.workers} worker(s) per server, "
              f"{args.requests} requests per side and mode, {args.repeats} repeats")  # fmt: skip
        figures: dict[tuple[str, int], list[dict]] = {}
        sent = {"ours": [], "deploy": []}
        for repeat in range(args.repeats):
            for concurrency in (1, 8):
                result = asyncio.run(_measure(urls, args.requests, concurrency, args.round))
                for name, r in result.items():
                    figures.setdefault((name, concurrency), []).append(r)
                    if name in sent:
                        sent[name] += r["ids"]
                base = result["mlflow"]
                line = f"repeat {repeat + 1} c={concurrency}:"
                for name, r in result.items():
                    line += f"  {name} p50 {r['p50'] * 1000:.2f} ms p99 {r['p99'] * 1000:.2f} ms {r['rps']:.0f} req/s"
                    line += f" err {r['errors']}" if r["errors"] else ""
                print(line + f"  | ours/mlflow p50 {result['ours']['p50'] / base['p50']:.2f}"
                      f" deploy/mlflow p50 {result['deploy']['p50'] / base['p50']:.2f}"
                      f" rps ours/mlflow {result['ours']['rps'] / base['rps']:.2f}", flush=True)  # fmt: skip
        # stop gracefully, then count the log
        servers[1].send_signal(signal.SIGTERM)
        servers[1].wait(60)
        stop("iris", project=project)
        logged = project.predictions.read(request_ids=sent["ours"] + sent["deploy"], labels=False)
        lost = len(sent["ours"]) + len(sent["deploy"]) - len(logged)

        def summary(name: str, concurrency: int, key: str) -> tuple[float, float, float]:
            ratios = [
                ours[key] / theirs[key]
                for ours, theirs in zip(figures[(name, concurrency)], figures[("mlflow", concurrency)], strict=True)
            ]
            return statistics.median(ratios), min(ratios), max(ratios)

        print()
        print("ratio (ours / MLflow), median over repeats [range]:")
        specs = [  # label, side, concurrency, figure, target
            ("p50 sequential, mlops-nb serve", "ours", 1, "p50", "<= 0.70"),
            ("p50 sequential, via deploy router", "deploy", 1, "p50", "<= 0.85"),
            ("p99 sequential, mlops-nb serve", "ours", 1, "p99", ""),
            ("p50 concurrency 8, mlops-nb serve", "ours", 8, "p50", ""),
            ("throughput c=8, mlops-nb serve", "ours", 8, "rps", ">= 1.50"),
            ("throughput c=8, via deploy router", "deploy", 8, "rps", ""),
        ]
        rows = [(label, summary(name, c, key), target) for label, name, c, key, target in specs]
        for label, (mid, low, high), target in rows:
            print(f"  {label:<36} {mid:6.2f}  [{low:.2f}-{high:.2f}]  {('target ' + target) if target else ''}")
        for name in ("mlflow", "ours", "deploy"):
            seq = figures[(name, 1)]
            conc = figures[(name, 8)]
            print(f"  {name:<8} p50 {statistics.median([r['p50'] for r in seq]) * 1000:.2f} ms "
                  f"[{min(r['p50'] for r in seq) * 1000:.2f}-{max(r['p50'] for r in seq) * 1000:.2f}]  "
                  f"c=8 {statistics.median([r['rps'] for r in conc]):.0f} req/s "
                  f"[{min(r['rps'] for r in conc):.0f}-{max(r['rps'] for r in conc):.0f}]  "
                  f"errors {sum(r['errors'] for r in seq + conc)}")  # fmt: skip
        print(f"  prediction log: {len(logged)} rows for {len(sent['ours']) + len(sent['deploy'])} answered requests "
              f"(lost {lost})")  # fmt: skip
        results = []
        for (label, name, concurrency, key, target), (_, (mid, _, _), _) in zip(specs, rows, strict=True):
            scale, unit = (1, "req/s") if key == "rps" else (1000, "ms")
            ours, theirs = (
                statistics.median(r[key] for r in figures[(side, concurrency)]) * scale for side in (name, "mlflow")
            )
            # the printed targets are on the ratio (ours / MLflow, median over the repeats)
            met = None if not target else (mid <= float(target[3:]) if target[:2] == "<=" else mid >= float(target[3:]))
            results.append(
                _results.Result(
                    "serving",
                    f"{label}, {args.requests} requests x {args.repeats}",
                    "mlflow models serve",
                    ours,
                    theirs,
                    unit,
                    ratio=mid,
                    target=f"{target}x" if target else "",
                    met=met,
                )
            )
        errors = sum(r["errors"] for key, runs in figures.items() if key[0] != "mlflow" for r in runs)
        answered = len(sent["ours"]) + len(sent["deploy"])
        results.append(
            _results.Result(
                "serving",
                f"prediction log: rows lost of {answered:,} answered ({errors} errors)",
                "-",
                lost,
                None,
                "rows",
                target="0 lost, 0 errors",
                met=lost == 0 and errors == 0,
            )
        )
        _results.write_results(args.results, results)
        return 0
    finally:
        for process in servers:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM) if process is servers[0] else process.terminate()
                    process.wait(30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    process.kill()
        try:
            stop("iris", project=project)
        except Exception:  # noqa: BLE001 - already stopped
            pass
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
