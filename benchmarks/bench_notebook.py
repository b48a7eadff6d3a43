"""Benchmark ``mlops-nb run`` against plain ``papermill`` on a 10-step pandas/scikit-learn notebook.

What it measures
----------------
It generates one notebook with nbformat into a temporary project folder (its own ``pyproject.toml`` and
``.mlops/``, so no other project's stores are touched): a setup cell (``%load_ext mlops_nb`` and the imports of
numpy, pandas and scikit-learn), a cell tagged ``parameters`` (``n_rows``, ``seed``, ``alpha``) and 10 step cells
``s01`` ... ``s10`` in a chain. Every step takes the previous step's frame (step 1 makes a 2,000-row one),
bootstraps ``n_rows`` rows from it with noise, aggregates them per group (groupby), merges the aggregates back,
fits a ``Ridge`` regression, and returns the previous frame with the model's prediction as column ``p`` (2,000
rows, 11 columns, ~190 kB of parquet, so storing artifacts is not what costs); the last step also returns
``metrics`` (the model's R2). ``alpha`` is the Ridge penalty of the last 3 steps only.
``n_rows`` is calibrated once at start, in this process, so that one step takes ``--step-seconds`` (0.3 s), or set
with ``--work``.

The "plain" notebook is the same notebook without the ``%%mlops step ...`` first lines and without
``%load_ext mlops_nb``. Both run on the ``python3`` kernel of this environment. Each variant is timed as a user
would see it: the wall clock of the whole command, run as a subprocess:

(a) ``papermill plain.ipynb plain.out.ipynb -p n_rows N -p seed S -p alpha A``;
(b) ``mlops-nb --home P run nb.ipynb`` cold: a freshly initialised project, nothing cached;
(c) the same command again, nothing changed: every step is a cache hit, so no kernel starts;
(d) ``mlops-nb --home P run nb.ipynb -p alpha NEW``: steps 1-7 come from the cache, 8-10 run;
(d0) for reference, no target: ``papermill floor.ipynb ...``, the plain notebook with only steps 8-10, their input
     read from the cached parquet file. It is the floor of (d) for anything that starts a fresh kernel (process
     and kernel start, the setup cell's imports, the first-call costs of pandas / scikit-learn in a new process),
     so (d) - (d0) is what mlops-nb adds.
(a') and (d0') the same papermill commands without jsonschema's optional IRI checker ``rfc3987_syntax``: its import
     compiles ~40 lark grammars (1-2.5 s on this machine), papermill pays it through nbformat, and the ``mlops-nb``
     command leaves it out (``skip_slow_optional_imports``). The targets are judged against these lean peers, so
     that the import mlops-nb skips does not hide overhead it adds; the table shows (a) and (d0) beside them.

(a) and (b) are interleaved when repeated, and each repetition of (b) gets a new project; each repetition of (d)
uses a value of ``alpha`` not seen before. Before timing, a small notebook is run with papermill and twice with
``mlops-nb run``, so that the OS file cache (and, by default, a private bytecode cache: see ``--bytecode``) holds
everything the timed commands load. Every run is checked: (b) all 10 steps ``succeeded``, (c) all ``cached``, (d)
the first 7 ``cached`` and the last 3 ``succeeded`` (``mlops-nb show latest --json``).

It prints the environment, then a table: variant, seconds (median of the repetitions), ratio to (a), target,
met?, every repetition, and the CPU seconds other processes of the machine used meanwhile (from ``/proc/stat``
minus this process tree's own; with another benchmark running on a 2-core machine the timings mean little, and a
warning says so). The targets are (b) <= 1.05 x (a'), (c) <= 0.3 s, (d) <= 1.03 x (d0'), and an overhead of at most 35 ms
per step ((b) - (a'), divided by the 10 steps, its own row). Then a breakdown of where the
time went: the sum of the cells' execution times papermill recorded in the executed notebooks, and the steps' own
durations from the run records, so that "kernel work" and "everything else" (process start, imports, kernel
start and shutdown, stores) can be told apart. Examples::

    .venv/bin/python benchmarks/bench_notebook.py                     # calibrate, then a, b, c x5, d
    .venv/bin/python benchmarks/bench_notebook.py --work 300000 --repeat 3 --keep
    .venv/bin/python benchmarks/bench_notebook.py --step-seconds 0.1 --repeat-cached 10
    .venv/bin/python benchmarks/bench_notebook.py --smoke            # or BENCH_SIZE=smoke: a quick look

``--smoke`` (the default when ``BENCH_SIZE=smoke``; ``--no-smoke`` turns it off) changes the defaults to
``--work 2000 --repeat-cached 1 --bytecode env`` (options given still win) and leaves out the warm-up runs: every
row, in about a minute, but the timings include first-run costs, so the targets mean little there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import _results
import nbformat

STEPS = 10
ALPHA_STEPS = 3  # the last steps that read ``alpha``
BASE_ROWS = 2000
GROUPS = 200
KERNEL = "python3"
TARGET_COLD = 1.05  # (b) / (a')
TARGET_CACHED_S = 0.3  # (c) seconds
TARGET_CHANGED = 1.03  # (d) / (d0'), the floor
TARGET_PER_STEP_MS = 35.0  # ((b) - (a')) / steps
VENV_BIN = Path(sys.executable).parent
# papermill as ``mlops-nb`` imports it: without jsonschema's optional IRI checker rfc3987_syntax, whose import
# compiles ~40 lark grammars (1-2.5 s here) and which the mlops-nb command leaves out (cli.main.skip_slow_...)
LEAN_PAPERMILL = (
    "import sys; sys.modules['rfc3987_syntax'] = None; sys.argv[0] = 'papermill';"
    " from papermill.cli import papermill; papermill()"
)
SUBPROCESS_ENV: dict[str, str] | None = None  # the environment of the timed commands (None: ours)
SMOKE = {"work": 2000, "repeat_cached": 1, "bytecode": "env"}  # --smoke's defaults

SETUP = """\
import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge"""

FIRST = Template("""\
rng = np.random.default_rng(seed)
prev = pd.DataFrame(rng.normal(size=($base_rows, 8)), columns=[f"x{i}" for i in range(8)])
prev["g"] = rng.integers(0, $groups, $base_rows)
prev["p"] = 0.0
prev["y"] = 2 * prev["x0"] - prev["x1"] + prev["x2"] * prev["x3"] + rng.normal(size=$base_rows)
""")

BODY = Template("""\
rng = np.random.default_rng(seed + $k)
big = $prev.sample(n_rows, replace=True, random_state=seed + $k, ignore_index=True)
cols = [c for c in big.columns if c not in ("g", "y")]
big[cols] = big[cols].to_numpy() + rng.normal(0, 0.1, size=(len(big), len(cols)))
stats = big.groupby("g")[cols].agg(["mean", "std"]).fillna(0.0)
stats.columns = [f"{a}_{b}" for a, b in stats.columns]
big = big.merge(stats, left_on="g", right_index=True)
features = cols + list(stats.columns)
model = Ridge(alpha=$alpha).fit(big[features], big["y"])
small = $prev.merge(stats, left_on="g", right_index=True, how="left").fillna(0.0)
$out = $prev.assign(p=model.predict(small[features]))
""")


# The notebook ----------------------------------------------------------------------------------------------------
def step_sources() -> list[tuple[str, str, str]]:
    """``(step name, magic options, body)`` of the 10 steps. A step's outputs are inferred (the names a later cell
    reads: its frame); the last step declares its outputs, its frame and ``metrics``."""
    steps = []
    for k in range(1, STEPS + 1):
        prev = "prev" if k == 1 else f"d{k - 1:02d}"
        alpha = "alpha" if k > STEPS - ALPHA_STEPS else "1.0"
        body = BODY.substitute(prev=prev, out=f"d{k:02d}", alpha=alpha, k=k)
        options = ""
        if k == 1:
            body = FIRST.substitute(base_rows=BASE_ROWS, groups=GROUPS) + body
        if k == STEPS:
            body += 'metrics = {"r2": float(model.score(big[features], big["y"]))}\n'
            options = f" --outputs d{k:02d},metrics"
        steps.append((f"s{k:02d}", options, body.rstrip("\n")))
    return steps


def parameters_source(n_rows: int, seed: int, alpha: float) -> str:
    return (
        "# parameters: papermill / mlops-nb run -p override these\n"
        f"n_rows = {n_rows}  # rows each step bootstraps (the work size)\n"
        f"seed = {seed}\n"
        f"alpha = {alpha!r}  # Ridge penalty of the last {ALPHA_STEPS} steps only"
    )


def build_notebook(n_rows: int, seed: int, alpha: float, *, mlops: bool) -> nbformat.NotebookNode:
    """The benchmark notebook; ``mlops=False`` gives the plain one (no magic lines, no ``%load_ext``)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    setup = ("%load_ext mlops_nb\n\n" if mlops else "") + SETUP
    cells = [
        nbformat.v4.new_markdown_cell("# bench: 10 chained pandas / scikit-learn steps"),
        nbformat.v4.new_code_cell(setup),
        nbformat.v4.new_code_cell(parameters_source(n_rows, seed, alpha), metadata={"tags": ["parameters"]}),
    ]
    for name, options, body in step_sources():
        cells.append(nbformat.v4.new_code_cell((f"%%mlops step {name}{options}\n" if mlops else "") + body))
    nb.cells = cells
    return nb


def build_floor_notebook(n_rows: int, seed: int, alpha: float, kept_input: str) -> nbformat.NotebookNode:
    """The plain notebook with only the last steps, their input read from a parquet file: what any run that starts
    a fresh kernel must at least do when only those steps changed (the floor of (d))."""
    nb = build_notebook(n_rows, seed, alpha, mlops=False)
    steps = nb.cells[3:]
    nb.cells = [
        *nb.cells[:3],
        nbformat.v4.new_code_cell(f'{kept_input} = pd.read_parquet("{kept_input}.parquet")'),
        *steps[STEPS - ALPHA_STEPS :],
    ]
    return nb


def make_project(folder: Path, n_rows: int, seed: int, alpha: float) -> None:
    """A fresh project folder: pyproject.toml, nb.ipynb, plain.ipynb and initialised stores (not timed)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "bench-notebook"\nversion = "0"\n', encoding="utf-8")
    nbformat.write(build_notebook(n_rows, seed, alpha, mlops=True), folder / "nb.ipynb")
    nbformat.write(build_notebook(n_rows, seed, alpha, mlops=False), folder / "plain.ipynb")
    run_command([str(VENV_BIN / "mlops-nb"), "--home", str(folder), "init"], folder)


# Calibration -----------------------------------------------------------------------------------------------------
def time_steps(n_rows: int, seed: int, alpha: float) -> list[float]:
    """Run the 10 step bodies in this process (as the plain notebook would) and return each one's seconds."""
    namespace: dict = {"n_rows": n_rows, "seed": seed, "alpha": alpha}
    exec(SETUP, namespace)  # noqa: S102 - our own generated code
    times = []
    for _, _, body in step_sources():
        code = compile(body, "<step>", "exec")
        started = time.perf_counter()
        exec(code, namespace)  # noqa: S102
        times.append(time.perf_counter() - started)
    return times


def best_step_times(n_rows: int, seed: int, alpha: float) -> list[float]:
    """Each step's fastest of two passes (a pass slowed by another process on the machine does not count)."""
    first, second = time_steps(n_rows, seed, alpha), time_steps(n_rows, seed, alpha)
    return [min(a, b) for a, b in zip(first, second, strict=True)]


def calibrate(target: float, seed: int, alpha: float) -> tuple[int, list[float]]:
    """``n_rows`` such that a step (steps 2-10, median) takes about ``target`` seconds here."""
    time_steps(20_000, seed, alpha)  # first-call costs of pandas / scikit-learn
    n_rows = 200_000
    for _ in range(3):
        times = best_step_times(n_rows, seed, alpha)
        per_step = statistics.median(times[1:])
        if abs(per_step - target) / target < 0.08:
            return n_rows, times
        n_rows = max(1000, round(int(n_rows * target / per_step), -3))
    return n_rows, best_step_times(n_rows, seed, alpha)


# Running ---------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    """The timings of one variant."""

    label: str
    command: str
    seconds: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)

    def add(self, timing: tuple[float, float]) -> None:
        self.seconds.append(timing[0])
        self.other_cpu.append(timing[1])

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def machine_cpu() -> float:
    """CPU seconds all processes of the machine have used since boot (``/proc/stat``; 0 where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and of its finished descendants (a command, papermill's kernel)."""
    self_, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + children.ru_utime + children.ru_stime


def run_command(cmd: list[str], cwd: Path) -> tuple[float, str, float]:
    """Run ``cmd``; return its wall-clock seconds, its stdout, and the CPU seconds other processes of the machine
    used meanwhile (an idle machine: ~0); exit with its output if it failed."""
    machine, own = machine_cpu(), own_cpu()
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=SUBPROCESS_ENV)
    seconds = time.perf_counter() - started
    other = max(0.0, (machine_cpu() - machine) - (own_cpu() - own))
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout, other


def latest_run(project: Path) -> dict:
    _, out, _ = run_command([str(VENV_BIN / "mlops-nb"), "--home", str(project), "show", "latest", "--json"], project)
    return json.loads(out)


def check_statuses(run: dict, expected: list[str], what: str) -> None:
    got = [s["status"] for s in sorted(run["step_runs"], key=lambda s: s["step"])]
    names = sorted(s["step"] for s in run["step_runs"])
    if names != [f"s{k:02d}" for k in range(1, STEPS + 1)] or got != expected:
        sys.exit(f"{what}: expected step statuses {expected}, got {list(zip(names, got, strict=False))}")


def cell_seconds(nb_path: Path) -> float:
    """Sum of the code cells' execution times papermill recorded in an executed notebook."""
    nb = nbformat.read(nb_path, as_version=4)
    return sum(c.metadata.get("papermill", {}).get("duration") or 0.0 for c in nb.cells if c.cell_type == "code")


def executed_notebook(run: dict) -> Path | None:
    ref = run.get("executed_notebook") or {}
    uri = ref.get("uri") or ""
    path = Path(uri.removeprefix("file://")) if uri else None
    return path if path is not None and path.is_file() else None


def warm_up(root: Path) -> None:
    """Untimed: run a one-step notebook (same kernel, same imports) with papermill, then with ``mlops-nb run``
    twice (cold, cached), so that the OS file cache (and the bytecode cache) hold everything the timed runs load."""
    folder = root / "warmup"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "warmup"\nversion = "0"\n', encoding="utf-8")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext mlops_nb\n" + SETUP),
        nbformat.v4.new_code_cell("n = 10", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("%%mlops step one\nframe = pd.DataFrame({'x': np.arange(n)})"),
        nbformat.v4.new_code_cell("%%mlops step two\nmodel = Ridge().fit(frame[['x']], frame['x'])"),
    ]
    nbformat.write(nb, folder / "warm.ipynb")
    run_command([str(VENV_BIN / "papermill"), "warm.ipynb", "warm.out.ipynb", "-k", KERNEL], folder)
    run_command([str(VENV_BIN / "mlops-nb"), "--home", str(folder), "init"], folder)
    for _ in range(2):
        run_command([str(VENV_BIN / "mlops-nb"), "--home", str(folder), "run", "warm.ipynb"], folder)
    latest_run(folder)


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every timing here."""
    return os.getloadavg()[0]


def environment() -> list[str]:
    from importlib.metadata import version

    packages = ", ".join(
        f"{p} {version(p)}" for p in ("papermill", "nbclient", "ipykernel", "pandas", "scikit-learn", "duckdb")
    )
    return [
        f"python {platform.python_version()} ({sys.executable}), {platform.platform()}",
        f"nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), kernel {KERNEL!r} of {sys.prefix}",
        packages,
        f"load average (1 min) before: {load_average():.2f}",
    ]


def table(rows: list[list[str]], headers: list[str]) -> str:
    cells = [headers, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


# Main ------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=int, help="n_rows each step bootstraps (default: calibrated to --step-seconds per step)"
    )
    parser.add_argument("--step-seconds", type=float, default=0.3, help="calibration target per step (default 0.3)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of (a), (b) and (d) (default 1)")
    parser.add_argument("--repeat-cached", type=int, default=5, help="repetitions of (c) (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="the notebook's seed parameter (default 0)")
    parser.add_argument("--alpha", type=float, default=1.0, help="the notebook's alpha parameter (default 1.0)")
    parser.add_argument("--out", type=Path, help="folder for the projects (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        default=_results.bench_size() == "smoke",
        help="defaults --work 2000 --repeat-cached 1 --bytecode env, no warm-up runs (options given still win): a "
        "quick look; on by default when BENCH_SIZE=smoke",
    )
    _results.add_results_option(parser)
    parser.add_argument(
        "--bytecode",
        choices=["cache", "env"],
        default="cache",
        help="cache (default): the timed commands keep a bytecode cache in the bench folder (PYTHONPYCACHEPREFIX, "
        "PYTHONDONTWRITEBYTECODE unset), as on a usual machine, so no command pays for compiling stale sources; "
        "env: run them with this environment as it is",
    )
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for line in environment():
        print(line)
    if args.work:
        n_rows = args.work
        time_steps(n_rows, args.seed, args.alpha)  # first-call costs of pandas / scikit-learn
        step_times = best_step_times(n_rows, args.seed, args.alpha)
    else:
        n_rows, step_times = calibrate(args.step_seconds, args.seed, args.alpha)
    print(
        f"work: n_rows={n_rows}; in-process step times {' '.join(f'{t:.2f}' for t in step_times)} s "
        f"(sum {sum(step_times):.2f} s)"
    )

    root = args.out or Path(tempfile.mkdtemp(prefix="mlops-nb-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    global SUBPROCESS_ENV
    if args.bytecode == "cache":
        SUBPROCESS_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        SUBPROCESS_ENV["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    print(
        "bytecode: "
        + (f"cached in {root / 'pycache'}" if args.bytecode == "cache" else "as the environment says")
        + f" (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} here)"
    )
    mlops_nb, papermill = str(VENV_BIN / "mlops-nb"), str(VENV_BIN / "papermill")
    try:
        if not args.smoke:
            warm_up(root)
        plain_args = ["-p", "n_rows", str(n_rows), "-p", "seed", str(args.seed), "-p", "alpha", repr(args.alpha)]
        a = Result("(a) papermill, plain notebook", "papermill plain.ipynb plain.out.ipynb " + " ".join(plain_args))
        b = Result("(b) mlops-nb run, cold", "mlops-nb --home P run nb.ipynb")
        c = Result("(c) mlops-nb run, nothing changed", "mlops-nb --home P run nb.ipynb")
        d = Result("(d) mlops-nb run -p alpha NEW", "mlops-nb --home P run nb.ipynb -p alpha NEW")
        floor = Result("(d0) papermill, last 3 steps only", "papermill floor.ipynb floor.out.ipynb -p alpha NEW")
        lean = [sys.executable, "-c", LEAN_PAPERMILL]
        a_lean = Result("(a') (a) without the IRI checker import", "python -c LEAN_PAPERMILL plain.ipynb ...")
        floor_lean = Result("(d0') (d0) without the IRI checker import", "python -c LEAN_PAPERMILL floor.ipynb ...")
        cells_a, cells_b, steps_b, recorded_b, cells_d, steps_d = [], [], [], [], [], []
        project = root / "project"
        for i in range(args.repeat):
            project = root / f"project{i}"
            make_project(project, n_rows, args.seed, args.alpha)
            seconds, _, other = run_command([papermill, "plain.ipynb", "plain.out.ipynb", *plain_args], project)
            a.add((seconds, other))
            cells_a.append(cell_seconds(project / "plain.out.ipynb"))
            seconds, _, other = run_command([*lean, "plain.ipynb", "plain.out.ipynb", *plain_args], project)
            a_lean.add((seconds, other))
            seconds, _, other = run_command([mlops_nb, "--home", str(project), "run", "nb.ipynb"], project)
            b.add((seconds, other))
            run = latest_run(project)
            check_statuses(run, ["succeeded"] * STEPS, "(b) cold run")
            steps_b.append(sum(s["duration"] or 0.0 for s in run["step_runs"]))
            recorded_b.append(run["duration"] or 0.0)
            executed = executed_notebook(run)
            cells_b.append(cell_seconds(executed) if executed else float("nan"))
        for _ in range(args.repeat_cached):
            seconds, _, other = run_command([mlops_nb, "--home", str(project), "run", "nb.ipynb"], project)
            c.add((seconds, other))
            check_statuses(latest_run(project), ["cached"] * STEPS, "(c) unchanged run")
        for i in range(args.repeat):
            alpha = args.alpha * (i + 2) + 0.5
            seconds, _, other = run_command(
                [mlops_nb, "--home", str(project), "run", "nb.ipynb", "-p", "alpha", str(alpha)], project
            )
            d.add((seconds, other))
            run = latest_run(project)
            kept = STEPS - ALPHA_STEPS
            check_statuses(run, ["cached"] * kept + ["succeeded"] * ALPHA_STEPS, f"(d) alpha={alpha}")
            steps_d.append(sum(s["duration"] or 0.0 for s in run["step_runs"] if s["status"] == "succeeded"))
            executed = executed_notebook(run)
            cells_d.append(cell_seconds(executed) if executed else float("nan"))
        # the floor of (d): papermill on the last 3 steps alone, their input from the cached artifact
        kept_input = f"d{STEPS - ALPHA_STEPS:02d}"
        kept = next(x for x in run["step_runs"] if x["step"] == f"s{STEPS - ALPHA_STEPS:02d}")
        shutil.copyfile(kept["outputs"][kept_input]["uri"].removeprefix("file://"), project / f"{kept_input}.parquet")
        nbformat.write(build_floor_notebook(n_rows, args.seed, args.alpha, kept_input), project / "floor.ipynb")
        for i in range(args.repeat):
            alpha = args.alpha * (i + 2) + 0.5
            floor_args = [*plain_args[:-1], str(alpha)]
            seconds, _, other = run_command([papermill, "floor.ipynb", "floor.out.ipynb", *floor_args], project)
            floor.add((seconds, other))
            seconds, _, other = run_command([*lean, "floor.ipynb", "floor.out.ipynb", *floor_args], project)
            floor_lean.add((seconds, other))
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep or args.out:
            print(f"projects kept in {root}")

    base = a.median
    rows, missed = [], []
    # the targets hold against the lean peers: the import mlops-nb leaves out is not overhead it removed
    targets = {
        b.label: (
            f"<= {TARGET_COLD:.2f}x (a'): {b.median / a_lean.median:.3f}x",
            b.median <= TARGET_COLD * a_lean.median,
        ),
        c.label: (f"<= {TARGET_CACHED_S:.1f} s", c.median <= TARGET_CACHED_S),
        d.label: (
            f"<= {TARGET_CHANGED:.2f}x (d0'): {d.median / floor_lean.median:.3f}x",
            d.median <= TARGET_CHANGED * floor_lean.median,
        ),
    }
    targets[floor.label] = (f"- (floor of d; d/d0 {d.median / floor.median:.3f}x)", None)
    targets[floor_lean.label] = ("- (the floor the target uses)", None)
    for r in (a, a_lean, b, c, d, floor, floor_lean):
        target, met = targets.get(r.label, ("-", None))
        if met is False:
            missed.append(r.label)
        rows.append(
            [
                r.label,
                f"{r.median:.2f}",
                f"{r.median / base:.3f}",
                target,
                "-" if met is None else ("yes" if met else "NO"),
                " ".join(f"{s:.2f}" for s in r.seconds),
                f"{max(r.other_cpu):.2f}",
            ]
        )
    per_step = [(sb - sa) * 1000 / STEPS for sa, sb in zip(a_lean.seconds, b.seconds, strict=True)]
    per_step_met = statistics.median(per_step) <= TARGET_PER_STEP_MS
    if not per_step_met:
        missed.append("overhead per step")
    rows.append(
        [
            "overhead per step ((b)-(a'))/10, ms",
            f"{statistics.median(per_step):.1f}",
            "-",
            f"<= {TARGET_PER_STEP_MS:.0f} ms",
            "yes" if per_step_met else "NO",
            " ".join(f"{x:.1f}" for x in per_step),
            "-",
        ]
    )
    print()
    print(table(rows, ["VARIANT", "SECONDS", "RATIO TO (a)", "TARGET", "MET?", "ALL RUNS (s)", "OTHER CPU (s)"]))
    print(
        "SECONDS: median of the runs; OTHER CPU: the most CPU seconds other processes of the machine used during "
        "one run of the variant (idle machine: ~0)"
    )
    print()
    med = statistics.median
    print("where the time went (medians, seconds):")
    print(
        f"  (a) wall {a.median:.2f} = cells {med(cells_a):.2f} (papermill's cell durations, setup included) "
        f"+ {a.median - med(cells_a):.2f} outside cells (process start, kernel start, notebook I/O)"
    )
    print(
        f"  (b) wall {b.median:.2f} = cells {med(cells_b):.2f} + {b.median - med(cells_b):.2f} outside cells; "
        f"the steps' recorded durations sum to {med(steps_b):.2f} (run record: {med(recorded_b):.2f})"
    )
    print(
        f"  (b) - (a) = {b.median - a.median:+.2f} s: in cells {med(cells_b) - med(cells_a):+.2f}, "
        f"outside cells {(b.median - med(cells_b)) - (a.median - med(cells_a)):+.2f}"
    )
    print(
        f"  (d) wall {d.median:.2f} = cells {med(cells_d):.2f} + {d.median - med(cells_d):.2f} outside cells; "
        f"the {ALPHA_STEPS} re-run steps' recorded durations sum to {med(steps_d):.2f}"
    )
    print(
        f"  (d0) wall {floor.median:.2f}: papermill on the last {ALPHA_STEPS} steps alone (fresh kernel, imports, "
        f"input from parquet); (d) - (d0) = {d.median - floor.median:+.2f} s is what mlops-nb adds to that floor"
    )
    print(f"load average (1 min) after: {load_average():.2f} (this benchmark alone keeps it near 1)")
    print(
        f"  (a) - (a') = {a.median - a_lean.median:+.2f} s, (d0) - (d0') = {floor.median - floor_lean.median:+.2f} s: "
        "papermill's import of jsonschema's IRI checker (rfc3987_syntax), which mlops-nb leaves out"
    )
    busy = max(max(r.other_cpu) for r in (a, a_lean, b, c, d, floor, floor_lean))
    if busy > 0.5:
        print(
            f"warning: other processes used up to {busy:.1f} CPU s during a timed run on this {os.cpu_count()}-core "
            "machine; the timings are skewed: re-run on an idle machine"
        )
    if missed:
        print("missed: " + "; ".join(missed))
    work = f"10-step notebook, n_rows {n_rows}, median of"
    _results.write_results(
        args.results,
        [
            _results.Result(
                "notebook",
                f"{work} {args.repeat}: {b.label}",
                a_lean.label,
                b.median,
                a_lean.median,
                "s",
                target=targets[b.label][0],
                met=targets[b.label][1],
            ),
            _results.Result(
                "notebook",
                f"{work} {args.repeat_cached}: {c.label}",
                a.label,
                c.median,
                base,
                "s",
                target=targets[c.label][0],
                met=targets[c.label][1],
            ),
            _results.Result(
                "notebook",
                f"{work} {args.repeat}: {d.label}",
                floor_lean.label,
                d.median,
                floor_lean.median,
                "s",
                target=f"<= {TARGET_CHANGED:.2f}x",
                met=targets[d.label][1],
            ),
            _results.Result(
                "notebook",
                f"{work} {args.repeat}: overhead per step ((b)-(a'))/{STEPS}",
                "-",
                statistics.median(per_step),
                None,
                "ms",
                target=f"<= {TARGET_PER_STEP_MS:.0f} ms",
                met=per_step_met,
            ),
        ],
    )
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
