"""Run every benchmark and print one table of them all (``make bench``); write it to benchmarks/RESULTS.md.

Each ``benchmarks/bench_*.py`` runs as a subprocess of its own, in a fixed order, as
``python benchmarks/bench_NAME.py [smoke arguments] --results FILE`` with ``BENCH_SIZE`` set to the size: the
scripts with a smoke mode of their own (metadata, notebook, executors, rest, features) take it from
``BENCH_SIZE=smoke``; the others get small sizes as arguments (listed at the end). At ``full`` every script runs at
its own defaults, the sizes the issues name (features: ``--size full``), which takes long.

A progress line per benchmark gives its wall time. A benchmark that exits with an error, writes no rows, or
outlives ``--timeout`` gets one FAILED row (with the last line of its stderr) and the others still run; each
one's whole output is kept in a log folder, printed at the end. Then one Markdown table of every row (ours, theirs,
the ratio ours / theirs, the target and whether it was met) is printed and written to ``--output`` with the
machine, the date, the size, the git commit and the total wall time. The exit code is 1 when a benchmark FAILED
(a missed target is a row, not a failure), else 0. Examples::

    .venv/bin/python benchmarks/run_all.py                          # smoke sizes (or BENCH_SIZE), a few minutes
    .venv/bin/python benchmarks/run_all.py --only registry,serving
    BENCH_SIZE=full .venv/bin/python benchmarks/run_all.py          # the issues' sizes: up to an hour on 2 cores
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import _results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHMARKS = ("metadata", "notebook", "steps", "executors", "registry", "serving", "monitoring", "rest", "features")
SMOKE_ARGS = {  # for the scripts without a smoke mode of their own: small sizes that still exercise every row
    "steps": ["--steps", "2,5"],
    "registry": ["--reps", "1"],
    "serving": ["--requests", "200", "--repeats", "1"],
    "monitoring": ["--rows", "2000", "--widths", "25", "--repeats", "1"],
}
TIMEOUTS = {"smoke": 300, "full": 3 * 3600}  # seconds per benchmark
NOTE = (
    "Smoke sizes are for a quick look (that every benchmark runs, and roughly how we compare); the issues' targets "
    "apply at full size (`BENCH_SIZE=full make bench`)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    smoke = "\n".join(f"    bench_{name}.py {' '.join(extra)}" for name, extra in SMOKE_ARGS.items())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1] + f"\nThe arguments at smoke size:\n\n{smoke}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--size",
        choices=_results.SIZES,
        default=_results.bench_size(default="smoke"),
        help="smoke (small sizes) or full (the issues' sizes); default: BENCH_SIZE, else smoke",
    )
    parser.add_argument("--only", metavar="A,B", help=f"run only these benchmarks, of: {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"per benchmark (default {TIMEOUTS['smoke']} at smoke, {TIMEOUTS['full']} at full)",
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "RESULTS.md", help="the Markdown file written (benchmarks/RESULTS.md)"
    )
    parser.add_argument("--logs", type=Path, help="folder for each benchmark's output (default: a new temp folder)")
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip().removeprefix("bench_").removesuffix(".py") for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown or not names:
            parser.error(f"--only: unknown {', '.join(unknown) or 'nothing'}; use some of {', '.join(BENCHMARKS)}")
        args.only = [n for n in BENCHMARKS if n in names]  # the fixed order
    else:
        args.only = list(BENCHMARKS)
    args.timeout = args.timeout or TIMEOUTS[args.size]
    return args


# Running -----------------------------------------------------------------------------------------------------
def command(name: str, size: str, results: Path) -> list[str]:
    """How ``name`` is run at ``size``."""
    extra = SMOKE_ARGS.get(name, []) if size == "smoke" else []
    return [sys.executable, str(HERE / f"bench_{name}.py"), *extra, "--results", str(results)]


def last_line(*paths: Path) -> str:
    """The last non-empty line of the first of ``paths`` that has one (progress bars' ``\\r`` count as breaks)."""
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return "no output"


def stop(process: subprocess.Popen) -> None:
    """Stop a benchmark and everything it started in its session: SIGINT first (its ``finally`` blocks stop its
    servers and remove its folders), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(name: str, size: str, timeout: float, logs: Path) -> tuple[list[_results.Result], float, str | None]:
    """Run one benchmark: its rows, its wall seconds, and why it failed (None when it did not)."""
    results = logs / f"{name}.jsonl"
    results.unlink(missing_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    env = {**os.environ, "BENCH_SIZE": size}
    started = time.perf_counter()
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            command(name, size, results), cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:g} s; its last line: {last_line(err, out)}"  # before it is stopped
            stop(process)
            return _results.read_results(results), time.perf_counter() - started, failure
        except BaseException:  # Ctrl-C: the benchmark is in a session of its own, so stop it too
            stop(process)
            raise
    seconds = time.perf_counter() - started
    rows = _results.read_results(results)
    # bench_rest exits 1 on a missed target, having written its rows: not a failure; any other error exit is
    crashed = "Traceback (most recent call last)" in err.read_text(encoding="utf-8", errors="replace")
    if code != 0 and (code != 1 or crashed or not any(r.met is False for r in rows)):
        return rows, seconds, f"exit code {code}: {last_line(err, out)}"
    if not rows:
        return rows, seconds, f"wrote no results: {last_line(err, out)}"
    return rows, seconds, None


# The table ---------------------------------------------------------------------------------------------------
def number(value: float | None) -> str:
    """A figure with as many digits as it needs to be read."""
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1000:
        return str(int(value))  # counts: 0 rows, 100 % of columns
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ") or "-"


def table(rows: list[_results.Result], failures: dict[str, str]) -> str:
    """The Markdown table: every row, and one FAILED row per benchmark that failed, in the fixed order."""
    lines = [
        "| benchmark | work | peer | ours | theirs | ratio (ours/theirs) | target | met |",
        "|---|---|---|--:|--:|--:|---|---|",
    ]
    for name in BENCHMARKS:
        for r in (r for r in rows if r.benchmark == name):
            unit = f" {r.unit}" if r.unit else ""
            ours = number(r.ours) + (unit if r.ours is not None else "")
            theirs = number(r.theirs) + (unit if r.theirs is not None else "")
            ratio = (
                "-" if r.ratio is None else (f"{r.ratio:.3f}x" if 0.1 <= abs(r.ratio) < 10 else f"{number(r.ratio)}x")
            )
            met = "-" if r.met is None else ("yes" if r.met else "NO")
            lines.append(
                f"| {name} | {cell(r.work)} | {cell(r.peer)} | {ours} | {theirs} | {ratio} | {cell(r.target)} | {met} |"
            )
        if name in failures:
            lines.append(f"| {name} | FAILED: {cell(failures[name])} | - | - | - | - | - | FAILED |")
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, RAM, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    ram = "unknown RAM"
    try:
        total_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        ram = f"{total_kb / 1024**2:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    system = f"{platform.system()} {platform.release()}"
    try:
        pretty = next(
            line.split("=", 1)[1].strip('"')
            for line in Path("/etc/os-release").read_text().splitlines()
            if line.startswith("PRETTY_NAME=")
        )
        system = f"{pretty}, {system}"
    except (OSError, StopIteration):
        pass
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{cpu}, {cores} cores ({usable} usable), {ram}, {system}, {python}"


def git_commit() -> str:
    """The short commit of this checkout, with ``+ local changes`` when its files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    dirty = [line for line in status.splitlines() if line[3:].strip() != "benchmarks/RESULTS.md"]  # rewritten now
    return head + (" + local changes" if dirty else "")


def minutes(seconds: float) -> str:
    """``4 min 12 s``."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{seconds:.1f} s"


def report(args, rows, failures, walls: dict[str, float], total: float, commit: str, date: str) -> str:
    """The whole of RESULTS.md."""
    subset = "" if args.only == list(BENCHMARKS) else f" (only {', '.join(args.only)})"
    sizes = [f"`{name}` {' '.join(SMOKE_ARGS[name])}" for name in args.only if name in SMOKE_ARGS]
    how = "BENCH_SIZE=smoke: the scripts' own smoke modes" + ("; " + ", ".join(sizes) if sizes else "")
    if args.size == "full":
        how = "BENCH_SIZE=full: every script's own defaults, the sizes the issues name"
    per = ", ".join(f"{name} {walls[name]:.0f} s" for name in args.only if name in walls)
    return "\n".join(
        [
            "# Benchmarks: every one in one table",
            "",
            "Written by `make bench` (`benchmarks/run_all.py`); each row is one row of a benchmark's own table.",
            "Ratios are ours / theirs in the row's unit: below 1 is faster for a time, slower for a throughput.",
            "",
            f"- machine: {machine()}",
            f"- date: {date}",
            f"- size: {args.size}{subset} ({how})",
            f"- commit: {commit}",
            f"- total wall time: {minutes(total)} ({per})",
            "",
            table(rows, failures),
            "",
            NOTE,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, write RESULTS.md; 1 when a benchmark failed."""
    args = parse_args(argv)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="mlops-nb-bench-"))
    logs.mkdir(parents=True, exist_ok=True)
    commit, date = git_commit(), datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"{len(args.only)} benchmarks at size {args.size}, timeout {args.timeout:g} s each; output in {logs}")
    rows: list[_results.Result] = []
    failures: dict[str, str] = {}
    walls: dict[str, float] = {}
    started = time.perf_counter()
    for i, name in enumerate(args.only, 1):
        print(f"[{i}/{len(args.only)}] {name:<10} ", end="", flush=True)
        got, seconds, failure = run_one(name, args.size, args.timeout, logs)
        walls[name] = seconds
        rows += got
        if failure:
            failures[name] = failure
            rows = [r for r in rows if r.benchmark != name]  # a failed benchmark's rows (if any) are not shown
        print(f"{seconds:6.1f} s  " + (f"FAILED: {failure}" if failure else f"{len(got)} rows"), flush=True)
    total = time.perf_counter() - started
    text = report(args, rows, failures, walls, total, commit, date)
    print()
    print(table(rows, failures))
    print()
    print(NOTE)
    args.output.write_text(text, encoding="utf-8")
    print(f"total {minutes(total)}; wrote {args.output}; each benchmark's output: {logs}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
