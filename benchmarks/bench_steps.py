"""Benchmark many small steps: what mlops_nb adds per step when the steps themselves cost nothing.

What it measures
----------------
For each ``--steps`` N (default 10 and 200) it writes notebooks of N trivial steps (``v_k = v_{k-1} + 1``: a chain;
or ``v_k = v0 + k``: a fan-out of N - 1 independent steps after the first) into a fresh project folder, and times,
in this process (papermill and mlops_nb imported beforehand, so no variant pays for imports):

1. ``papermill.execute_notebook`` on the plain chain (the ``%%mlops step`` lines removed): the baseline;
2. ``mlops_nb.run(chain, executor="notebook")`` cold (nothing cached): the overhead per step is
   (2 - 1) / N, target <= 35 ms;
3. the same again, nothing changed: every step a cache hit, no kernel; target <= 1 ms a step;
4. ``executor="dag", jobs=2`` on the chain and on the fan-out (``no_cache``): the driver's own CPU time per
   step (this process's user + system time, the kernels being other processes) is the serial work that bounds
   how many steps a run can keep going; target <= 30 ms a step; and the fan-out should finish >= 1.6x sooner
   than the chain (two steps at a time instead of one).

Each variant runs ``--repeat`` times (fresh projects for the cold ones), taking turns; the median is printed with
every repetition, and each row's ratio to its baseline (ours / theirs). A step's own cost is the slope between the
fewest and the most steps (what one more step adds, without the run's fixed costs: imports, kernel start,
planning); the per-step targets apply to those rows. Examples::

    .venv/bin/python benchmarks/bench_steps.py                       # N = 10 and 200, 1 repetition
    .venv/bin/python benchmarks/bench_steps.py --steps 50 --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _results
import nbformat

TARGET_PER_STEP_MS = 35.0
TARGET_CACHED_MS = 1.0
TARGET_DRIVER_MS = 30.0
TARGET_FANOUT = 1.6


def notebook(path: Path, n: int, shape: str, plain: bool = False) -> Path:
    """N trivial steps in a chain or a fan-out; ``plain``: without mlops_nb (papermill's notebook)."""
    cells = [] if plain else ["%load_ext mlops_nb"]
    cells.append("v0 = 1" if plain else "%%mlops step s0\nv0 = 1")
    for k in range(1, n):
        body = f"v{k} = v{k - 1} + 1" if shape == "chain" else f"v{k} = v0 + {k}"
        cells.append(body if plain else f"%%mlops step s{k}\n{body}")
    cells.append(f"v{n - 1}" if shape == "chain" else "[" + ", ".join(f"v{k}" for k in range(1, n)) + "]")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def project(root: Path, name: str) -> Path:
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n', encoding="utf-8")
    return folder


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function, *args, **kwargs) -> tuple[float, float, object]:
    """Wall seconds, this process's CPU seconds, and the result of ``function(*args, **kwargs)``."""
    c0, t0 = cpu(), time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - t0, cpu() - c0, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="10,200", help="comma-separated step counts (default 10,200)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of each variant (default 1)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    _results.add_results_option(parser)
    args = parser.parse_args(argv)
    logging.getLogger("papermill").setLevel(logging.WARNING)
    import papermill

    import mlops_nb
    from mlops_nb import Project

    root = Path(tempfile.mkdtemp(prefix="mlops-nb-steps-"))
    print(f"python {sys.version.split()[0]}, nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    rows, missed, results = [], [], []
    medians: dict[int, dict[str, float]] = {}

    def row(label, values, unit, baseline=None, target=None, met=None, peer="-"):
        """A row of the table; and its Result (ours the median, theirs the baseline) unless ``peer`` is None."""
        median = statistics.median(values)
        if peer is not None:
            results.append(
                _results.Result(
                    "steps", label, peer, median, baseline, unit, target=f"{target} {unit}" if target else "", met=met
                )
            )
        ratio = f"{median / baseline:.3f}" if baseline else "-"
        if met is False:
            missed.append(label)
        rows.append(
            [
                label,
                f"{median:.2f}",
                unit,
                ratio,
                target or "-",
                "-" if met is None else ("yes" if met else "NO"),
                " ".join(f"{v:.2f}" for v in values),
            ]
        )

    try:
        warm = project(root, "warm")
        mlops_nb.run(notebook(warm / "w.ipynb", 3, "chain"), project=Project(warm), progress=False)
        papermill.execute_notebook(
            str(notebook(warm / "p.ipynb", 3, "chain", True)), str(warm / "p.out.ipynb"), progress_bar=False
        )
        for n in [int(x) for x in args.steps.split(",")]:
            plain, cold, cached, chain, fan, chain_cpu, fan_cpu = [], [], [], [], [], [], []
            for i in range(args.repeat):
                folder = project(root, f"n{n}-{i}")
                nb = notebook(folder / "chain.ipynb", n, "chain")
                pnb = notebook(folder / "plain.ipynb", n, "chain", plain=True)
                fnb = notebook(folder / "fan.ipynb", n, "fan")
                p = Project(folder)
                out = str(folder / "plain.out.ipynb")
                plain.append(timed(papermill.execute_notebook, str(pnb), out, progress_bar=False)[0])
                seconds, _, run = timed(mlops_nb.run, nb, project=p, progress=False)
                assert run.status == "succeeded", run.error
                cold.append(seconds)
                seconds, _, run = timed(mlops_nb.run, nb, project=p, progress=False)
                assert {s.status for s in run.step_runs} == {"cached"}
                cached.append(seconds)
                for walls, cpus, path in ((chain, chain_cpu, nb), (fan, fan_cpu, fnb)):
                    options = {"project": p, "progress": False, "executor": "dag", "jobs": 2, "no_cache": True}
                    seconds, used, run = timed(mlops_nb.run, path, **options)
                    assert run.status == "succeeded", run.error
                    walls.append(seconds)
                    cpus.append(used * 1000 / n)
            base = statistics.median(plain)
            papermill_label = f"N={n} (1) papermill, plain chain"
            row(papermill_label, plain, "s", peer=None)  # the baseline: the peer of the rows below
            row(f"N={n} (2) notebook executor, cold", cold, "s", base, peer=papermill_label)
            row(f"N={n} (3) all cached", cached, "s", base, peer=papermill_label)
            row(f"N={n} (4) dag -j2 chain", chain, "s", base, peer=papermill_label)
            row(f"N={n} (4) dag -j2 fan-out", fan, "s", base, peer=papermill_label)
            speed_up_met = statistics.median(chain) / statistics.median(fan) >= TARGET_FANOUT if n >= 50 else None
            speed_ups = [c / f for c, f in zip(chain, fan, strict=True)]
            row(
                f"N={n}     fan-out speed-up (chain / fan-out)",
                speed_ups,
                "x",
                None,
                f">= {TARGET_FANOUT}" if n >= 50 else None,
                speed_up_met,
                peer=None,
            )
            # as ours / theirs: the fan-out's time over the chain's, the inverse of the speed-up
            results.append(
                _results.Result(
                    "steps",
                    f"N={n} (4) dag -j2 fan-out",
                    f"N={n} (4) dag -j2 chain",
                    statistics.median(fan),
                    statistics.median(chain),
                    "s",
                    ratio=1 / statistics.median(speed_ups),
                    target=f"<= {1 / TARGET_FANOUT:.2f}x (speed-up >= {TARGET_FANOUT}x)" if n >= 50 else "",
                    met=speed_up_met,
                )
            )
            row(f"N={n}     dag driver CPU (this process)", [c * n / 1000 for c in chain_cpu + fan_cpu], "s")
            medians[n] = {
                "plain": base,
                "cold": statistics.median(cold),
                "cached": statistics.median(cached),
                "driver": statistics.median([c * n / 1000 for c in chain_cpu + fan_cpu]),
            }
        if len(medians) >= 2:  # a step's own cost: the slope between the fewest and the most steps
            low, high = min(medians), max(medians)
            span = high - low

            def slope(key, minus=None):
                extra = (medians[high][key] - medians[low][key]) * 1000 / span
                return extra - ((medians[high][minus] - medians[low][minus]) * 1000 / span if minus else 0.0)

            per_step = slope("cold", "plain")
            row(
                f"per step, N={low}->{high}: notebook executor over papermill",
                [per_step],
                "ms",
                None,
                f"<= {TARGET_PER_STEP_MS:.0f}",
                per_step <= TARGET_PER_STEP_MS,
            )
            cached = slope("cached")
            row(
                f"per step, N={low}->{high}: all cached",
                [cached],
                "ms",
                slope("plain"),
                f"<= {TARGET_CACHED_MS:.0f}",
                cached <= TARGET_CACHED_MS,
                peer=f"per step, N={low}->{high}: papermill",
            )
            driver = slope("driver")
            row(
                f"per step, N={low}->{high}: dag driver CPU",
                [driver],
                "ms",
                None,
                f"<= {TARGET_DRIVER_MS:.0f}",
                driver <= TARGET_DRIVER_MS,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    headers = ["VARIANT", "MEDIAN", "UNIT", "RATIO (ours/theirs)", "TARGET", "MET?", "ALL RUNS"]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print()
    for r in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"load average after: {os.getloadavg()[0]:.2f} (a busy machine skews every row)")
    _results.write_results(args.results, results)
    if missed:
        print("missed: " + "; ".join(missed))
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
