"""Benchmark the ``dag`` and ``dask`` executors against papermill, side by side in one run.

What it measures
----------------
1. **Chain**: a notebook of ``--steps`` (default 10) steps in a line; step k reads step k-1's output (a float64
   array of ``--elements`` values, 2 MB by default) and does ``--step-seconds`` (default 0.1 s) of single-threaded
   numpy work, calibrated in this process before anything is timed. Four ways to run it:

   (a)  the peers' way (Elyra, Kale): one fresh papermill execution per step, one after the other. Each step is a
        notebook of its own: the setup cell (without ``%load_ext mlops_nb``), a cell that unpickles the step's
        input from a temp folder, the step's body (the ``%%mlops`` line removed) and a cell that pickles its
        output. ``papermill.execute_notebook`` is called in this process (papermill imported beforehand), so each
        step costs a fresh kernel but no new Python process: the cheapest honest form of the peers' way, and the
        baseline of the target.
   (a2) the same with the ``papermill`` command line, one process per step (closer to a container per step);
        reported for reference.
   (b)  ``mlops_nb.run(..., executor="dag")``: each step in a warm kernel of its own from a pool (default
        ``jobs``: the number of cores), the kernel discarded after the step.
   (c)  the same with ``reuse_kernels=True``: a kernel is reset (``%reset -f`` + setup cells) and kept.
   (d)  ``executor="notebook"``: papermill runs the whole notebook in one kernel, the magic records each step.

   Target: (b)/(a) <= 0.25. Also printed: (c)/(a), (b)/(a2), (b)/(d), (c)/(d).

2. **Fan-out**: ``--fanout`` (default 8) independent steps of ``--fanout-seconds`` (default 2 s) each, then a join
   step that adds their outputs. The work is ``time.sleep`` (shows how well steps overlap) and/or a busy loop of
   that much CPU time (``time.process_time``; shows the limit of the machine's cores), see ``--fanout-work``.
   Variants: ``executor="notebook"`` (the baseline), ``executor="dask", jobs=2`` (a LocalCluster of 2 workers),
   and for reference ``executor="dag", jobs=2`` and both with ``reuse_kernels=True``.
   Target: notebook / dask >= 1.7 (speed-up).

Both sections run once per import set of the setup cell (``--imports``), because what a fresh kernel costs depends
on what the setup cell imports: ``light`` is ``import numpy``; ``realistic`` adds pandas and scikit-learn, as a
data scientist's notebook does.

Every variant runs in a fresh project folder of its own (a ``pyproject.toml``, so its own ``.mlops/`` stores) with
``no_cache=True``: every step really runs. Times are wall-clock seconds around the whole call (for mlops_nb:
parsing, planning, recording, kernels, storing artifacts; for the peers' way: every papermill execution and the
pickles), the median of ``--repeat`` repetitions. After each mlops_nb run, its recorded step runs
(``Project(folder).metadata.get_run(run.id)``: started_at / ended_at, measured inside the kernel around the step's
cells) split the wall time into *lead-in* (call -> first step starts: kernel boot + setup cells, or the Dask
cluster), *steps* (sum of the recorded step durations), *waits* (chain: gaps between one step's end and the next
one's start, i.e. waiting for a warm kernel plus the driver's bookkeeping; fan-out: slot-seconds during which fewer
than ``jobs`` steps ran, divided by ``jobs``) and *tail* (last step's end -> the call returns). A probe before the
sections times the parts a kernel costs: start, setup cell, ``%reset -f`` + setup cell again, shutdown.

Examples::

    .venv/bin/python benchmarks/bench_executors.py --smoke        # small sizes, light imports: ~30 s
    BENCH_SIZE=smoke .venv/bin/python benchmarks/bench_executors.py   # the same (--no-smoke: the issue's sizes)
    .venv/bin/python benchmarks/bench_executors.py                # the issue's sizes, both import sets: minutes
    .venv/bin/python benchmarks/bench_executors.py --sections fanout --fanout-work sleep --imports realistic
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import _results
import nbformat
import numpy as np

CHAIN_TARGET = 0.25  # (b) dag / (a) peers, at most
FANOUT_TARGET = 1.7  # notebook / dask, at least
IMPORT_SETS = {
    "light": "import numpy as np",
    "realistic": (
        "import numpy as np\n"
        "import pandas as pd\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.model_selection import train_test_split\n"
        "from sklearn.preprocessing import StandardScaler"
    ),
}
MAGIC = "%load_ext mlops_nb"
SMOKE = {  # --smoke: small sizes, one import set, sleep only, papermill through its API only
    "steps": 3,
    "step_seconds": 0.05,
    "fanout": 4,
    "fanout_seconds": 0.5,
    "imports": "light",
    "fanout_work": "sleep",
    "peers": "api",
}


# Notebooks ---------------------------------------------------------------------------------------------------
def setup_source(imports: str, magic: bool = True) -> str:
    """The setup cell: the extension (mlops_nb's notebooks only), ``time`` and the import set."""
    lines = ([MAGIC] if magic else []) + ["import time", IMPORT_SETS[imports]]
    return "\n".join(lines)


def write_notebook(path: Path, sources: list[str]) -> Path:
    """A notebook of code cells with a python3 kernelspec."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def project_folder(root: Path, name: str) -> Path:
    """A fresh project folder (its own ``.mlops/``)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    (folder / "pyproject.toml").write_text(f"[project]\nname = '{name}'\n")
    return folder


def chain_body(k: int, elements: int, reps: int) -> str:
    """Step k's body: take step k-1's array (step 0 makes one), ~``reps`` elementwise passes over it."""
    start = f"x = np.random.default_rng(0).random({elements})" if k == 0 else f"x = x{k - 1:02d}"
    return f"{start}\nfor _ in range({reps}):\n    x = np.sin(x) + 0.5\nx{k:02d} = x"


def chain_notebook(folder: Path, steps: int, imports: str, elements: int, reps: int) -> Path:
    cells = [setup_source(imports)]
    cells += [f"%%mlops step s{k:02d} --outputs x{k:02d}\n{chain_body(k, elements, reps)}" for k in range(steps)]
    return write_notebook(folder / "chain.ipynb", cells)


def fanout_body(i: int, work: str, seconds: float) -> str:
    if work == "sleep":
        return f"time.sleep({seconds!r})\no{i} = {i}"
    return f"_t = time.process_time()\nwhile time.process_time() - _t < {seconds!r}:\n    pass\no{i} = {i}"


def fanout_notebook(folder: Path, width: int, imports: str, work: str, seconds: float) -> Path:
    cells = [setup_source(imports)]
    cells += [f"%%mlops step f{i} --outputs o{i}\n{fanout_body(i, work, seconds)}" for i in range(width)]
    cells.append("%%mlops step join --outputs total\ntotal = " + " + ".join(f"o{i}" for i in range(width)))
    return write_notebook(folder / "fanout.ipynb", cells)


def calibrate(elements: int, seconds: float) -> tuple[int, float]:
    """Passes of ``x = np.sin(x) + 0.5`` over ``elements`` values that take ``seconds``; and one pass's time."""
    x = np.random.default_rng(0).random(elements)
    for _ in range(3):  # warm up
        x = np.sin(x) + 0.5
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            x = np.sin(x) + 0.5
        samples.append((time.perf_counter() - t) / 10)
    one = statistics.median(samples)
    return max(1, round(seconds / one)), one


# Timing ------------------------------------------------------------------------------------------------------
def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # as the records store it


@dataclass
class Sample:
    """One timed execution of a variant."""

    seconds: float
    note: str = ""


@dataclass
class Variant:
    """A variant's samples, by label."""

    label: str
    name: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None


def seconds_between(a: datetime | None, b: datetime | None) -> float:
    return (b - a).total_seconds() if a and b else float("nan")


def breakdown(folder: Path, run_id: str, called: datetime, returned: datetime, kind: str, jobs: int) -> str:
    """Split a run's wall time by its recorded step runs (see the module docstring)."""
    from mlops_nb import Project

    record = Project(folder).metadata.get_run(run_id)
    steps = sorted((s for s in record.step_runs if s.status == "succeeded"), key=lambda s: s.started_at)
    if not steps:
        return "no step ran"
    lead = seconds_between(called, steps[0].started_at)
    busy = sum(s.duration or 0.0 for s in steps)
    tail = seconds_between(max(s.ended_at for s in steps), returned)
    durations = sorted(s.duration or 0.0 for s in steps)
    text = f"lead-in {lead:.2f}s, steps {busy:.2f}s (median {statistics.median(durations):.2f}s"
    text += f", max {durations[-1]:.2f}s)"
    if kind == "chain":
        gaps = [seconds_between(a.ended_at, b.started_at) for a, b in zip(steps, steps[1:], strict=False)]
        if gaps:
            text += (
                f", waits between steps {sum(gaps):.2f}s (median {statistics.median(gaps):.2f}s, max {max(gaps):.2f}s)"
            )
    else:
        fan = [s for s in steps if s.step != "join"]
        join = [s for s in steps if s.step == "join"]
        start, end = fan[0].started_at, max(s.ended_at for s in fan)
        span = seconds_between(start, end)
        fan_busy = sum(s.duration or 0.0 for s in fan)
        idle = (span * jobs - fan_busy) / jobs
        text += f", fan-out span {span:.2f}s (ideal {fan_busy / jobs:.2f}s; idle slots {idle:.2f}s per slot)"
        if join:
            text += f", wait before join {seconds_between(end, join[0].started_at):.2f}s"
    return text + f", tail {tail:.2f}s"


def run_mlops(
    root: Path, name: str, make_notebook, kind: str, executor: str, jobs: int | None = None, reuse: bool = False
) -> Sample:
    """One ``mlops_nb.run`` in a fresh project folder; every step runs."""
    import mlops_nb
    from mlops_nb import Project

    folder = project_folder(root, name)
    nb = make_notebook(folder)
    project = Project(folder)
    kwargs = {"jobs": jobs} if jobs else {}
    if reuse:
        kwargs["reuse_kernels"] = True
    called = utcnow()
    t = time.perf_counter()
    run = mlops_nb.run(nb, executor=executor, no_cache=True, progress=False, project=project, **kwargs)
    seconds = time.perf_counter() - t
    returned = utcnow()
    if run.status != "succeeded":
        raise RuntimeError(f"run {run.id} {run.status}: {run.error}")
    used = 1 if executor == "notebook" else (jobs or os.cpu_count() or 1)
    return Sample(seconds, breakdown(folder, run.id, called, returned, kind, used))


@contextmanager
def kernel_stderr_to_devnull():
    """Point file descriptor 2, which a kernel started now inherits, at /dev/null (Python's sys.stderr too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run_peers(root: Path, imports: str, steps: int, elements: int, reps: int, how: str) -> Sample:
    """The chain the peers' way: one fresh papermill execution per step, data passed as pickles."""
    import papermill

    folder = project_folder(root, f"peers-{how}")
    data = folder / "data"
    data.mkdir()
    notebooks = []
    for k in range(steps):
        cells = [setup_source(imports, magic=False)]
        if k:
            src = data / f"x{k - 1:02d}.pkl"
            cells.append(f"import pickle\nwith open({str(src)!r}, 'rb') as f:\n    x{k - 1:02d} = pickle.load(f)")
        cells.append(chain_body(k, elements, reps))
        out = data / f"x{k:02d}.pkl"
        cells.append(f"import pickle\nwith open({str(out)!r}, 'wb') as f:\n    pickle.dump(x{k:02d}, f)")
        notebooks.append(write_notebook(folder / f"step{k:02d}.ipynb", cells))
    command = str(Path(sys.executable).parent / "papermill")
    per_step = []
    t = time.perf_counter()
    for nb in notebooks:
        s = time.perf_counter()
        executed = nb.with_suffix(".out.ipynb")
        if how == "api":
            with kernel_stderr_to_devnull():  # ipykernel's warning about TCP, once per kernel
                papermill.execute_notebook(
                    str(nb), str(executed), kernel_name="python3", progress_bar=False, cwd=str(folder)
                )
        else:
            done = subprocess.run(
                [command, str(nb), str(executed), "-k", "python3", "--cwd", str(folder), "--no-progress-bar"],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise RuntimeError(f"papermill {nb.name} exited {done.returncode}: {done.stderr[-2000:]}")
        per_step.append(time.perf_counter() - s)
    seconds = time.perf_counter() - t
    last = pickle.loads((data / f"x{steps - 1:02d}.pkl").read_bytes())
    assert last.shape == (elements,)
    note = f"per step median {statistics.median(per_step):.2f}s (min {min(per_step):.2f}s, max {max(per_step):.2f}s)"
    return Sample(seconds, note)


def children_cpu() -> float:
    """User + system CPU seconds of this process's reaped children (nan where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def probe_kernel(root: Path, imports: str, rounds: int = 3) -> dict[str, float]:
    """Median seconds of a kernel's parts as the dag executor uses them (IPC transport, nbclient), and the CPU
    seconds its process used in all (from ``RUSAGE_CHILDREN`` once it has been reaped, where available)."""
    from nbclient import NotebookClient

    from mlops_nb.engine.executors.kernels import kernel_config

    folder = project_folder(root, f"probe-{imports}")
    parts: dict[str, list[float]] = {"start": [], "setup": [], "reset+setup": [], "shutdown": [], "kernel cpu": []}
    for _ in range(rounds):
        cpu = children_cpu()
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup_source(imports))])
        client = NotebookClient(
            nb, kernel_name="python3", resources={"metadata": {"path": str(folder)}}, config=kernel_config(str(folder))
        )
        t0 = time.perf_counter()
        with client.setup_kernel(stderr=subprocess.DEVNULL):
            t1 = time.perf_counter()
            client.execute_cell(nb.cells[0], 0)
            t2 = time.perf_counter()
            client.execute_cell(nbformat.v4.new_code_cell("%reset -f"), 0)
            client.execute_cell(nb.cells[0], 0)
            t3 = time.perf_counter()
        t4 = time.perf_counter()
        parts["start"].append(t1 - t0)
        parts["setup"].append(t2 - t1)
        parts["reset+setup"].append(t3 - t2)
        parts["shutdown"].append(t4 - t3)
        parts["kernel cpu"].append(children_cpu() - cpu)
    return {k: statistics.median(v) for k, v in parts.items()}


def probe_papermill_process(rounds: int = 3) -> float:
    """Median seconds of ``python -c 'import papermill'``: what a papermill process costs before its kernel."""
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import papermill.cli"], check=True)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


# Report ------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    imports: str
    variant: str
    seconds: float | None
    ratios: list[tuple[str, str, str]]  # (ratio text, target, met)
    results: list[_results.Result] = field(default_factory=list)  # the same ratios, for --results


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def ratio(a: Variant, b: Variant) -> float | None:
    return a.seconds / b.seconds if a.seconds and b.seconds else None


def print_table(rows: list[Row]) -> None:
    header = ("section", "imports", "variant", "seconds", "ratio", "target", "met?")
    lines = []
    for row in rows:
        ratios = row.ratios or [("", "", "")]
        for i, (text, target, met) in enumerate(ratios):
            first = i == 0
            lines.append(
                (
                    row.section if first else "",
                    row.imports if first else "",
                    row.variant if first else "",
                    fmt(row.seconds) if first else "",
                    text,
                    target,
                    met,
                )
            )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    right = {3}

    def show(cells) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    print(show(header))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(show(line))


# Sections ----------------------------------------------------------------------------------------------------
def timed(variant: Variant, function, *args, **kwargs) -> None:
    """Run one sample of a variant, print it, keep going on failure."""
    try:
        sample = function(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a failed variant is reported, the others still run
        variant.error = f"{type(exc).__name__}: {exc}"
        print(f"  {variant.label:<5} {variant.name}: FAILED {variant.error}", flush=True)
        return
    variant.samples.append(sample)
    print(f"  {variant.label:<5} {variant.name}: {sample.seconds:.2f}s  [{sample.note}]", flush=True)


def chain_section(args, root: Path, imports: str, reps: int) -> list[Row]:
    steps, elements = args.steps, args.elements
    section = f"chain {steps}x{args.step_seconds:g}s"
    print(f"\n== {section}, imports {imports} ==", flush=True)

    def make(folder: Path) -> Path:
        return chain_notebook(folder, steps, imports, elements, reps)

    v = {
        "a": Variant("(a)", "peers: papermill API, fresh kernel per step"),
        "a2": Variant("(a2)", "peers: papermill CLI process per step"),
        "b": Variant("(b)", f"dag, fresh kernels (jobs={args.chain_jobs or os.cpu_count()})"),
        "c": Variant("(c)", f"dag, reuse_kernels (jobs={args.chain_jobs or os.cpu_count()})"),
        "d": Variant("(d)", "notebook executor"),
    }
    if "cli" not in args.peers:
        del v["a2"]
    if "api" not in args.peers:
        del v["a"]
    for rep in range(args.repeat):
        if args.repeat > 1:
            print(f" repetition {rep + 1} of {args.repeat}", flush=True)
        for key, variant in v.items():
            if variant.error:
                continue
            if key in ("a", "a2"):
                how = "api" if key == "a" else "cli"
                timed(variant, run_peers, root, imports, steps, elements, reps, how)
            elif key == "b":
                timed(variant, run_mlops, root, "dag", make, "chain", "dag", args.chain_jobs)
            elif key == "c":
                timed(variant, run_mlops, root, "dag-reuse", make, "chain", "dag", args.chain_jobs, reuse=True)
            else:
                timed(variant, run_mlops, root, "notebook", make, "chain", "notebook")

    results: dict[str, list[_results.Result]] = {key: [] for key in v}

    def r(x: str, y: str, target: bool = False) -> tuple[str, str, str]:
        if x not in v or y not in v:
            return ("", "", "")
        value = ratio(v[x], v[y])
        text = f"{v[x].label}/{v[y].label} = {fmt(value)}"
        met = None if not target or value is None else value <= CHAIN_TARGET
        work, peer = f"{section}, {imports} imports: {v[x].label} {v[x].name}", f"{v[y].label} {v[y].name}"
        results[x].append(
            _results.Result(
                "executors",
                work,
                peer,
                v[x].seconds,
                v[y].seconds,
                "s",
                ratio=value,
                target=f"<= {CHAIN_TARGET:g}x" if target else "",
                met=met,
            )
        )
        if not target:
            return (text, "", "")
        return (text, f"<= {CHAIN_TARGET:g}", "—" if met is None else ("yes" if met else "NO"))

    plan = {
        "a": [("baseline", "", "")],
        "a2": [r("a2", "a")],
        "b": [r("b", "a", target=True), r("b", "a2"), r("b", "d")],
        "c": [r("c", "a"), r("c", "a2"), r("c", "d")],
        "d": [r("d", "a")],
    }
    rows = []
    for key, variant in v.items():
        ratios = [x for x in plan[key] if x[0]]
        if variant.error:
            ratios = [(f"FAILED: {variant.error[:60]}", "", "")]
            results[key] = [failed_result(section, imports, variant)]
        rows.append(Row(section, imports, f"{variant.label} {variant.name}", variant.seconds, ratios, results[key]))
    return rows


def fanout_section(args, root: Path, imports: str, work: str) -> list[Row]:
    width, seconds, jobs = args.fanout, args.fanout_seconds, 2
    section = f"fan-out {width}x{seconds:g}s {work}"
    print(f"\n== {section} + join, imports {imports} ==", flush=True)

    def make(folder: Path) -> Path:
        return fanout_notebook(folder, width, imports, work, seconds)

    v = {
        "n": Variant("(n)", "notebook executor"),
        "k": Variant("(k)", f"dask, {jobs}-worker LocalCluster"),
        "kr": Variant("(kr)", f"dask, {jobs} workers, reuse_kernels"),
        "g": Variant("(g)", f"dag, jobs={jobs}"),
        "gr": Variant("(gr)", f"dag, jobs={jobs}, reuse_kernels"),
    }
    for rep in range(args.repeat):
        if args.repeat > 1:
            print(f" repetition {rep + 1} of {args.repeat}", flush=True)
        for key, variant in v.items():
            if variant.error:
                continue
            if key == "n":
                timed(variant, run_mlops, root, "notebook", make, "fanout", "notebook")
            else:
                executor = "dask" if key.startswith("k") else "dag"
                reuse = key.endswith("r")
                timed(variant, run_mlops, root, key, make, "fanout", executor, jobs, reuse=reuse)
    rows = []
    for key, variant in v.items():
        results = []
        if variant.error:
            ratios = [(f"FAILED: {variant.error[:60]}", "", "")]
            results = [failed_result(section, imports, variant)]
        elif key == "n":
            ratios = [("baseline", "", "")]
        else:
            value = ratio(v["n"], variant)
            text = f"speed-up (n)/{variant.label} = {fmt(value)}x"
            met = None if key != "k" or value is None else value >= FANOUT_TARGET
            if key == "k":
                ratios = [(text, f">= {FANOUT_TARGET:g}x", "—" if met is None else ("yes" if met else "NO"))]
            else:
                ratios = [(text, "", "")]
            # ours / theirs is the inverse of the speed-up: the target >= 1.7x is <= 1/1.7 of the notebook's time
            target = f"<= {1 / FANOUT_TARGET:.2f}x (speed-up >= {FANOUT_TARGET:g}x)" if key == "k" else ""
            results = [
                _results.Result(
                    "executors",
                    f"{section}, {imports} imports: {variant.label} {variant.name}",
                    f"{v['n'].label} {v['n'].name}",
                    variant.seconds,
                    v["n"].seconds,
                    "s",
                    ratio=1 / value if value else None,
                    target=target,
                    met=met,
                )
            ]
        rows.append(Row(section, imports, f"{variant.label} {variant.name}", variant.seconds, ratios, results))
    return rows


def failed_result(section: str, imports: str, variant: Variant) -> _results.Result:
    """The --results row of a variant that failed."""
    work = f"{section}, {imports} imports: {variant.label} {variant.name}"
    return _results.Result("executors", work, f"FAILED: {variant.error[:60]}", None, None, "s")


# Main --------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the dag/dask executors against papermill (a chain of short steps, a fan-out of long ones).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        default=_results.bench_size() == "smoke",
        help="other defaults: a 3-step chain of 0.05 s, 4 fan-out steps of 0.5 s (sleep), light imports, papermill's "
        "API only (flags given still win): ~30 s; on by default when BENCH_SIZE=smoke",
    )
    parser.add_argument("--steps", type=int, default=10, help="chain: steps")
    parser.add_argument("--step-seconds", type=float, default=0.1, help="chain: numpy work per step (calibrated)")
    parser.add_argument("--elements", type=int, default=250_000, help="chain: float64 values passed between steps")
    parser.add_argument("--chain-jobs", type=int, help="chain: jobs of (b) and (c); none: the number of cores")
    parser.add_argument("--fanout", type=int, default=8, help="fan-out: independent steps")
    parser.add_argument("--fanout-seconds", type=float, default=2.0, help="fan-out: seconds per step")
    parser.add_argument("--fanout-work", default="sleep,cpu", help="fan-out: sleep, cpu (busy loop) or both")
    parser.add_argument("--imports", default="light,realistic", help="setup-cell import sets: light, realistic")
    parser.add_argument("--peers", default="api,cli", help="chain: papermill per step via api, cli or both")
    parser.add_argument("--sections", default="chain,fanout", help="chain, fanout or both")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of each variant (the median is reported)")
    parser.add_argument("--out", type=Path, help="folder for the project folders (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the default temp dir (--out is always kept)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    _results.add_results_option(parser)
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)
    for name, allowed in (
        ("imports", set(IMPORT_SETS)),
        ("peers", {"api", "cli"}),
        ("sections", {"chain", "fanout"}),
        ("fanout_work", {"sleep", "cpu"}),
    ):
        values = [x.strip() for x in getattr(args, name).split(",") if x.strip()]
        unknown = set(values) - allowed
        if unknown or not values:
            parser.error(f"--{name.replace('_', '-')}: use one or more of {', '.join(sorted(allowed))}")
        setattr(args, name, values)
    if args.steps < 1 or args.fanout < 1 or args.repeat < 1:
        parser.error("--steps, --fanout and --repeat must be at least 1")
    return args


def source_state() -> str:
    """The commit of the mlops_nb being timed, and whether its files differ from it."""
    here = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "mlops_nb"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}" + (" + uncommitted changes under mlops_nb/" if dirty else "")


def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on the machine skews every timing here."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def versions() -> str:
    from importlib.metadata import version

    names = ("mlops-nb", "papermill", "nbclient", "ipykernel", "distributed", "numpy", "pandas", "scikit-learn")
    return ", ".join(f"{n} {version(n)}" for n in names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    stray = sorted(k for k in os.environ if k.startswith("MLOPS_NB_"))
    if stray:
        print(f"note: {', '.join(stray)} set in the environment; the benchmark passes each project explicitly")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"python {platform.python_version()} ({sys.executable}) on {platform.platform()}")
    print(f"nproc {affinity} (os.cpu_count {os.cpu_count()}); load average {load_average()}")
    print(versions())
    print(f"mlops_nb source: {source_state()}")

    reps, one = calibrate(args.elements, args.step_seconds)
    print(
        f"chain work: {reps} passes of np.sin over {args.elements:,} float64 "
        f"({one * 1e3:.2f} ms a pass, {reps * one:.3f} s a step)"
    )
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-executors-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"project folders under {root}")

    import papermill  # noqa: F401 - imported before timing: the in-process peers' way does not pay for it

    started = time.perf_counter()
    rows: list[Row] = []
    try:
        print("\n== what a kernel costs (median of 3; nbclient, IPC, as the dag pool starts them) ==")
        print("   (kernel cpu: its process's CPU seconds for start + setup + reset+setup + shutdown)")
        for imports in args.imports:
            parts = probe_kernel(root, imports)
            print(f"  {imports:<10} " + ", ".join(f"{k} {v:.2f}s" for k, v in parts.items()))
        if "cli" in args.peers and "chain" in args.sections:
            print(
                f"  a papermill process before its kernel (python -c 'import papermill.cli'): {probe_papermill_process():.2f}s"
            )
        for imports in args.imports:
            if "chain" in args.sections:
                rows += chain_section(args, root, imports, reps)
            if "fanout" in args.sections:
                for work in args.fanout_work:
                    rows += fanout_section(args, root, imports, work)
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    took = time.perf_counter() - started
    print(f"\n== summary (seconds: median of {args.repeat}; benchmark {took:.0f}s; load average {load_average()}) ==")
    print_table(rows)
    _results.write_results(args.results, [result for row in rows for result in row.results])
    missed = [r for r in rows for x in r.ratios if x[2] == "NO"]
    failed = [r for r in rows if r.seconds is None]
    targets = [x for r in rows for x in r.ratios if x[1]]
    print(
        f"\ntargets met: {len(targets) - len(missed)} of {len(targets)}"
        + (f"; failed variants: {len(failed)}" if failed else "")
    )
    return 1 if args.strict and (missed or failed) else 0


if __name__ == "__main__":
    sys.exit(main())
