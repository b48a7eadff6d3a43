"""``mlops-nb demo``: the whole lifecycle mlops_nb has, headless, in a fresh project folder each time.

A churn-prediction project on seeded synthetic data (the example notebooks, their ``helpers.py`` and
``data/raw.csv`` are copied into the folder):

1. the quickstart (``01_quickstart.ipynb``) run cold, again (every step a cache hit) and with one parameter
   changed, then the model's lineage back to the raw file (skipped by ``--fast``);
2. the training pipeline (``02_feature_store.ipynb``): raw data → processed data → feature store ingest →
   point-in-time training set → train → evaluate → registry, where the version passes its gates and waits for
   approval; it is approved;
3. the champion's app bundle built and deployed behind a stable address on 127.0.0.1, following the alias
   (``--watch``); traffic from the customers it was trained on, and their labels;
4. a monitoring report (no drift); then a different population arrives (a file in ``data/arrivals/`` and its
   traffic), monitoring finds the drift, the alert's action retrains (a run with trigger ``drift``), the new
   version passes its gates, is approved, and the deployment rolls it out by itself (trigger ``watch``).

Every stage is a recorded run with its trigger; the summary lists them, says where the report, the executed
notebooks, the MLflow store and the endpoint are and gives the command that opens each, and prints the peak
memory of all the demo's processes. ``--fast`` (the Binder path) skips the quickstart, runs the pipeline in one
kernel and replaces the serving version in place (one scoring server at a time instead of blue/green).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from ..exceptions import MlopsError

NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_feature_store.ipynb",
    "03_registry_and_approval.ipynb",
    "04_build_deploy_serve.ipynb",
    "05_monitoring_and_retraining.ipynb",
    "06_scale_out_with_dask.ipynb",
)
DEFAULT_FOLDER = "demo-project"
MODEL = "churn"
BINDER_MIB = 1024  # what mybinder.org guarantees a session
RETRAIN_RULE = {"rule": "drift_share > 0.3", "action": "run 02_feature_store.ipynb -p require_approval True"}


def notebooks_folder() -> Path:
    """Where the example notebooks are: inside the installed package, or the repository's ``notebooks/``."""
    package = Path(__file__).resolve().parents[1]  # mlops_nb/
    for candidate in (package / "_notebooks", package.parent / "notebooks"):
        if (candidate / NOTEBOOKS[0]).is_file():
            return candidate
    raise MlopsError("the example notebooks are missing from this installation; reinstall mlops-nb")


def _fresh_copy(folder: str, names: list[str]) -> set[str]:
    """What the demo does not copy from the notebooks' folder: checkpoints, bytecode, and data that arrived when
    05_monitoring_and_retraining.ipynb ran there (the demo's first training must not see it)."""
    skip = {n for n in names if n in (".ipynb_checkpoints", "__pycache__")}
    if Path(folder).name == "arrivals":
        skip |= {n for n in names if n.endswith(".csv")}
    return skip


def fresh_folder(folder: str | os.PathLike | None, echo: Callable[[str], None] = print) -> Path:
    """The folder a demo runs in, new and empty: ``folder`` (``--dir``) must not hold anything yet; by default
    ``demo-project``, where an earlier demo is first moved aside to ``demo-project.<UTC time>`` (kept, not deleted;
    a deployment it left running is stopped first).

    Raises:
        MlopsError: ``folder`` is a file, or a folder that is not empty.
    """
    from ..core.clock import utcnow

    chosen = Path(folder if folder is not None else DEFAULT_FOLDER).expanduser()
    if chosen.exists() and (not chosen.is_dir() or any(chosen.iterdir())):
        if folder is not None:
            raise MlopsError(
                f"{chosen} already exists and is not empty; give --dir a new folder (the demo starts from nothing)"
            )
        _stop_deployments(chosen, echo)
        stamp, n = f"{chosen.name}.{utcnow():%Y%m%d-%H%M%S}", 1
        aside = chosen.with_name(stamp)
        while aside.exists():  # two demos in one second
            n += 1
            aside = chosen.with_name(f"{stamp}-{n}")
        chosen.rename(aside)
        echo(f"An earlier demo was in {chosen}/: moved aside to {aside}/ (delete it when you are done with it)")
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen.resolve()


def _stop_deployments(folder: Path, echo: Callable[[str], None], whose: str = "The earlier demo's") -> None:
    """Stop what a demo in ``folder`` still serves (an earlier one's supervisor would outlive the move; a failed
    one's would outlive the demo)."""
    if not (folder / ".mlops" / "deployments").is_dir():
        return
    from ..project import Project
    from ..serving import status, stop

    project = Project(folder)
    for deployment in status(project=project, timeout=2):
        stop(deployment["name"], project=project)
        echo(f"{whose} deployment {deployment['name']} (port {deployment.get('port')}) was stopped")


class PeakMemory:
    """The peak of the summed memory of this process and all its descendants (kernels, supervisors, scoring
    servers, build processes), sampled every ``interval`` seconds on a thread while in the ``with``: the sum of
    their resident sets (RSS, which counts a library shared by several processes once in each) and of their
    proportional sets (PSS, each shared page divided among its users: what the machine really gives them)."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak = 0  # sum of RSS, bytes
        self.peak_pss = 0
        self.processes: list[tuple[str, int]] = []  # at the RSS peak: (what, rss), largest first
        self.stage = ""  # what the demo is doing (set by it), and what it was doing at the peak
        self.peak_stage = ""
        self.also: set[int] = set()  # pids outside our tree to count with their children (a detached supervisor)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="mlops-nb-peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            seen, pss = [], 0
            family = {}
            for root in (me, *self.also):
                try:
                    root = root if isinstance(root, psutil.Process) else psutil.Process(root)
                    family.update({p.pid: p for p in (root, *root.children(recursive=True))})
                except psutil.Error:
                    continue
            for process in family.values():
                try:
                    full = process.memory_full_info()  # /proc/PID/smaps_rollup on Linux
                except psutil.AccessDenied:
                    full = process.memory_info()
                except psutil.Error:  # it ended between the listing and the reading
                    continue
                seen.append((_what(process), full.rss))
                pss += getattr(full, "pss", full.rss)
            total = sum(rss for _, rss in seen)
            if total > self.peak:
                self.peak, self.processes = total, sorted(seen, key=lambda p: -p[1])
                self.peak_stage = self.stage
            self.peak_pss = max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def line(self, limit_mb: float | None = None) -> str:
        """One line: the peaks in MiB (against ``limit_mb``, when given), and what each process held at the RSS
        peak."""
        mb, pss = self.peak / 2**20, self.peak_pss / 2**20

        def against(value: float) -> str:
            return "" if limit_mb is None else f", {'within' if value <= limit_mb else 'OVER'} {limit_mb:.0f} MiB"

        parts = ", ".join(f"{what} {rss / 2**20:.0f}" for what, rss in self.processes)
        return (
            f"peak memory of all the demo's processes: RSS {mb:.0f} MiB{against(mb)}, in stage "
            f"{self.peak_stage or '?'} ({parts}); PSS {pss:.0f} MiB{against(pss)}"
        )


def _what(process) -> str:
    """A short name for one of the demo's processes: this one, a kernel, a supervisor, a scoring server, a command."""
    try:
        words = process.cmdline()
    except Exception:  # noqa: BLE001 - a zombie, or gone: psutil's errors
        return "exiting"
    if process.pid == os.getpid():
        return "demo"
    text = " ".join(words[1:])
    for needle, name in (("ipykernel", "kernel"), ("serving.router", "supervisor"), ("serve.py", "server")):
        if needle in text:
            return name
    if "mlops_nb.ui.cli" in text:  # `mlops-nb COMMAND ...`: name it by its command
        rest = [w for w in words[words.index("mlops_nb.ui.cli") + 1 :] if not w.startswith("-")]
        return f"mlops-nb {rest[1] if len(rest) > 1 and rest[0].startswith('/') else (rest or ['?'])[0]}"
    return process.name()


def _what_ran(record) -> str:
    """One true line about a run: which steps a kernel ran, or that every step was a cache hit."""
    ran = [s.step for s in record.step_runs if s.status != "cached"]
    head = f"   run {record.id} {record.status} in {record.duration:.2f}s (trigger {record.trigger}): "
    if not record.step_runs:
        return head + "a notebook without steps, executed as papermill would and recorded with its output"
    if not ran:
        return head + "every step was a cache hit, so no kernel started"
    if len(ran) == len(record.step_runs):
        return head + f"all {len(ran)} steps ran ({record.executor} executor), each recorded with why it ran"
    cached = len(record.step_runs) - len(ran)
    return head + f"only {', '.join(ran)} ran; the other {cached} steps were cache hits, loaded instead of run"


def _steps_table(record) -> str:
    from .format import indented, table

    rows = [[s.step, s.status, f"{s.duration or 0:.2f}s", s.why] for s in record.step_runs]
    return indented(table(rows, ["STEP", "STATUS", "TIME", "WHY"]))


class Tools:
    """The commands a user types after the demo, as they must be typed from where they stand: this installation's
    ``mlops-nb``, ``jupyter``, ``mlflow`` and ``python``, by path when the venv is not the one on PATH."""

    def __init__(self, folder: Path, here: Path | None = None):
        self.folder, self.here = folder, (here or Path.cwd()).resolve()
        self.bin = Path(sys.executable).parent
        on_path = shutil.which("mlops-nb")
        self.on_path = bool(on_path) and Path(on_path).resolve() == (self.bin / "mlops-nb").resolve()

    def __call__(self, name: str) -> str:
        """The command ``name`` (mlops-nb, jupyter, mlflow, python) to type inside the demo folder."""
        path = self.bin / name
        if self.on_path or not path.is_file():
            return name
        return str(_nearby(path, self.folder))

    def header(self) -> str:
        """The line that opens the closing commands."""
        if self.on_path:
            return "Explore:"
        activate = self.bin / "activate"
        how = f"; or first `source {_nearby(activate, self.here)}`, then plain mlops-nb" if activate.is_file() else ""
        return f"Explore (mlops-nb is not on your PATH: it is {_nearby(self.bin / 'mlops-nb', self.here)}{how}):"


def explore_commands(folder: Path, here: Path | None = None) -> list[str]:
    """The closing lines: the exact commands to look around ``folder``, with the path of this installation's
    ``mlops-nb`` when it is not the one on PATH (a venv that is not active), relative to where the user stands."""
    tool = Tools(folder, here)
    command = tool("mlops-nb")
    lines = [tool.header(), f"  cd {_nearby(folder, tool.here)}"]
    for what in (
        "runs",
        "show latest",
        "lineage model --direction up",
        "run 01_quickstart.ipynb -p C 0.5",
        f"models show {MODEL}",
        f"models history {MODEL}",
        "runs --kind deploy",
        "deploy --status                      # then: deploy churn --stop",
        f"monitor {MODEL} --window 1d           # drift, performance, latency; an HTML report",
        f"schedule add --monitor {MODEL}@champion --cron '0 * * * *'   # then: schedule daemon",
    ):
        lines.append(f"  {command} {what}")
    lines.append(
        f"  {tool('jupyter')} lab 01_quickstart.ipynb   # cell by cell from the same cache; the MLOps sidebar: "
        "runs, DAG, approvals"
    )
    return lines


def _helpers(folder: Path):
    """The project's own ``helpers.py`` (the notebooks' data and feature code), imported from its file."""
    spec = importlib.util.spec_from_file_location("mlops_nb_demo_helpers", folder / "helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _traffic(url: str, frame, helpers) -> tuple[list[str], list[int], list]:
    """Score each customer of ``frame`` with one request; return the request ids, the versions that answered, and
    the true labels (what arrives later)."""
    import requests

    X, y = helpers.make_features(frame)
    ids, versions = [], []
    with requests.Session() as session:
        for row in X.to_dict(orient="records"):
            try:
                answer = session.post(url + "/invocations", json={"dataframe_records": [row]}, timeout=30)
                answer.raise_for_status()
            except requests.RequestException as exc:
                raise MlopsError(f"the endpoint {url} failed the demo's traffic: {exc}") from None
            ids.append(answer.headers["x-request-id"])
            versions.append(int(answer.headers.get("x-mlops-version") or 0))
    return ids, versions, y.tolist()


def _label(project, ids: list[str], labels: list, echo: Callable[[str], None]) -> None:
    """Wait until the servers logged every request (they flush each second), then attach the labels."""
    from ..serving import log_labels

    deadline = time.monotonic() + 30
    while project.predictions.count(request_ids=ids) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    log_labels(ids, labels, project=project)
    log = project.predictions.read(request_ids=ids)
    accuracy = float((log["prediction"] == log["label"]).mean())
    echo(f"   mlops-nb labels: {len(ids)} labels attached by request id; accuracy of what was served: {accuracy:.3f}")


def _cli(folder: Path, *args: str) -> str:
    """Run ``mlops-nb ARGS`` in the demo project as the user would (its own process, which ends when it is done);
    return what it printed."""
    command = [sys.executable, "-m", "mlops_nb.ui.cli", "--home", str(folder), *args]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise MlopsError(f"the demo's `mlops-nb {' '.join(args)}` did not end within 300 s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
        raise MlopsError(f"the demo's `mlops-nb {' '.join(args)}` failed: {said}")
    return done.stdout.strip()


def _approve(folder: Path, released: dict, echo: Callable[[str], None]) -> int:
    """Approve the version the pipeline's ``register`` step left waiting (``released``), as a person would."""
    if released.get("outcome") != "pending":
        raise MlopsError(f"the demo expected {MODEL} v{released.get('version')} to wait for approval; it is "
                         f"{released.get('outcome')}: {released.get('reason', '')}")  # fmt: skip
    version = int(released["version"])
    args = ("models", "approve", MODEL, str(version), "--by", "demo-reviewer", "--note", "gates passed; report read")
    echo(f"   mlops-nb models approve {MODEL} {version} --note 'gates passed; report read'")
    echo("   " + _cli(folder, *args).splitlines()[-1])
    return version


def _monitor(folder: Path, project, since, echo: Callable[[str], None]) -> dict:
    """``mlops-nb monitor`` over the traffic sent since ``since`` (UTC, naive: the prediction log's clock) with the
    retraining rule, its alerts recorded but their actions left to the caller. Monitoring runs in a process of its
    own (scikit-learn and SciPy, ~150 MB) that ends before a retraining kernel starts, so that the demo's processes
    stay under Binder's 1 GiB. Returns the report's JSON with its ``alerts`` as recorded."""
    import json

    from ..core.clock import utcnow

    until = (utcnow() + timedelta(seconds=1)).replace(microsecond=0)  # whole seconds: the command reads as typed
    window = f"{math.ceil((until - since).total_seconds())}s"
    rule = f"{RETRAIN_RULE['rule']} => {RETRAIN_RULE['action']}"
    echo(f"   mlops-nb monitor {MODEL} --window {window} --until {until.isoformat()} --rule '{rule}'")
    args = (
        "monitor",
        MODEL,
        "--window",
        window,
        "--until",
        until.isoformat(),
        "--rule",
        rule,
        "--no-actions",
        "--json",
    )
    report = json.loads(_cli(folder, *args))
    verdict = "DRIFT" if report["data_drift"].get("dataset_drift") else "no dataset drift"
    drifted = [c["column"] for c in report["data_drift"]["columns"] if c.get("drifted")]
    overall = report["performance"].get("overall") or {}
    echo(f"   {MODEL} v{report['version']}: {verdict} (drift share {report['metrics']['drift_share']:.2f}"
         f"{': ' + ', '.join(drifted) if drifted else ''}); accuracy {overall.get('accuracy', float('nan')):.3f} on "
         f"{report['performance'].get('labelled', 0)} labelled predictions; {_alerts(len(report['alerts']))}")  # fmt: skip
    echo(f"   report: {report['html']}")
    report["alerts"] = project.metadata.alerts(monitor_run=report["run_id"], limit=None)
    return report


def _alerts(n: int) -> str:
    return f"{n or 'no'} alert{'s' * (n != 1)}"


def _watched_deploy(project, version: int, timeout: float = 120):
    """Wait for the deploy run the watching supervisor records when ``version``'s rollout is over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = project.metadata.list_runs(1, kind="deploy")
        if latest and latest[0].trigger == "watch" and latest[0].params.get("version") == version:
            if latest[0].status != "succeeded":
                raise MlopsError(f"the deployment did not roll out v{version}: {latest[0].error}")
            return latest[0]
        time.sleep(0.3)
    raise MlopsError(f"the deployment did not roll out v{version} within {timeout:.0f} s; see mlops-nb deploy --status")


def _quickstart(project, folder: Path, echo: Callable[[str], None]) -> None:
    """Stage 1: the notebook is the pipeline; cold, cached, one parameter changed; the model's lineage."""
    from ..engine.driver import run
    from ..pipeline.notebook import Pipeline
    from .format import indented, table

    notebook = folder / NOTEBOOKS[0]
    echo(f"1. The notebook is the pipeline:  mlops-nb dag {notebook.name}")
    echo(Pipeline.from_notebook(notebook).to_text() + "\n")
    last = None
    for title, params in (
        (f"   mlops-nb run {notebook.name}   (a headless run, every step recorded)", None),
        ("   the same again: a step whose code, inputs, data and parameters are unchanged is a cache hit", None),
        (f"   mlops-nb run {notebook.name} -p C 0.3   (one parameter changed)", {"C": 0.3}),
    ):
        echo(title)
        last = run(notebook, params, project=project, trigger="cli", progress=False)
        echo(_what_ran(last))
        echo(_steps_table(last) + "\n")
    metrics = project.artifacts.get(last.step("evaluate").outputs["metrics"])
    echo("   metrics of the model: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    train = last.step("train")
    model = train.outputs["model"]
    graph = project.metadata.lineage(model.hash, direction="up", producer=train.cached_from or train.id)
    echo(f"   mlops-nb lineage model --direction up   ({model.short}, {model.summary}):")
    rows = [[n.depth, n.kind.replace("_", " "), n.label] for n in graph.upstream()]
    echo(indented(table(rows, ["DEPTH", "KIND", "WHAT"])) + "\n")


def run_demo(
    folder: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
    *,
    fast: bool = False,
    port: int | None = None,
) -> dict:
    """Run the lifecycle in a fresh project folder and print what happened (see the module docstring).

    Args:
        folder: a new (or empty) folder; default ``demo-project``, an earlier one moved aside first.
        echo: where the narration goes.
        fast: the Binder path: no quickstart, the pipeline in one kernel, one scoring server at a time.
        port: the endpoint's port (default 8080 when it is free, else any free one).

    Returns:
        ``folder``, ``url``, ``report`` (the last monitoring report's HTML), ``peak_mb`` and ``runs`` (ids).
    """
    from ..project import Project

    started = time.monotonic()
    folder = fresh_folder(folder, echo)
    (folder / "pyproject.toml").write_text('[project]\nname = "mlops-nb-demo"\nversion = "0.1.0"\n')
    shutil.copytree(
        notebooks_folder(),
        folder,
        dirs_exist_ok=True,
        ignore=_fresh_copy,
    )
    project = Project(folder).init()
    helpers = _helpers(folder)
    echo(f"Project {project.home} (stores in {project.mlops_dir}){'  --fast: the Binder path' if fast else ''}\n")
    try:
        with PeakMemory() as memory:
            drifted, trained, url = _lifecycle(project, folder, helpers, memory, echo, fast=fast, port=port)
    except BaseException:  # a demo that fails half-way leaves no server behind (and its own error stands)
        try:
            _stop_deployments(folder, echo, "The demo did not finish: its")
        except Exception as exc:  # noqa: BLE001 - said, then the demo's own error is raised
            echo(f"The demo did not finish, and its deployment could not be stopped: {exc}; mlops-nb deploy --status")
        raise
    return _summary(project, folder, url, drifted["html"], trained, memory, started, echo, fast)


def _lifecycle(project, folder: Path, helpers, memory: PeakMemory, echo: Callable[[str], None], *, fast: bool,
               port: int | None):  # fmt: skip
    """Stages 1-6 of :func:`run_demo`; returns the drift monitoring report, the first training run and the URL."""
    from ..core.clock import utcnow
    from ..engine.driver import run
    from ..monitoring.alerts import perform_action
    from ..serving import status
    from ..serving.router import free_port

    if fast:
        echo("1. (--fast: the quickstart's cache demo is skipped; 01_quickstart.ipynb shows it)\n")
    else:
        memory.stage = "1 (quickstart)"
        _quickstart(project, folder, echo)

    memory.stage = "2 (training pipeline, approval)"
    pipeline = folder / NOTEBOOKS[1]
    executor = "notebook" if fast else "dag"
    echo(
        "2. The training pipeline: raw data → processed → feature store → point-in-time training set → train → "
        "evaluate → registry"
    )
    echo(f"   mlops-nb run {pipeline.name} -p require_approval True --executor {executor}")
    trained = run(
        pipeline, {"require_approval": True}, executor, project=project, trigger="cli", progress=False
    )  # fmt: skip
    echo(_what_ran(trained))
    echo(_steps_table(trained))
    if not fast:  # pictures (matplotlib: the Binder path leaves them to the notebooks)
        from ..pipeline.notebook import Pipeline
        from .plots import dag_diagram, timeline

        statuses = {s.step: s.status for s in trained.step_runs}
        dag_diagram(Pipeline.from_notebook(pipeline), statuses).savefig(
            folder / "dag.png", dpi=110, bbox_inches="tight"
        )
        timeline(trained).savefig(folder / "timeline.png", dpi=110, bbox_inches="tight")
        echo("   pictures: dag.png (the pipeline, coloured by status), timeline.png (its steps in time)")
    views = project.features.list_views()
    echo(f"   feature store: {', '.join(views['view'])} ({int(views['rows'].sum())} rows)")
    released = project.artifacts.get(trained.step("register").outputs["released"])
    echo(f"   registry (.mlops/mlflow.db): {MODEL} v{released['version']} {released['outcome']}: passed its gates, "
         "waits for a person")  # fmt: skip
    first = _approve(folder, released, echo)

    memory.stage = "3 (build, deploy, traffic)"
    echo("\n3. App build and deployment (127.0.0.1), following the alias")
    port = port or (8080 if _free(8080) else free_port())
    how = (
        "one scoring server at a time (--fast)"
        if fast
        else "blue/green: the new server takes traffic only once healthy"
    )
    args = ["deploy", f"{MODEL}@champion", "--port", str(port), "--watch"] + (["--replace"] if fast else [])
    echo(f"   mlops-nb {' '.join(args)}   (builds the app bundle first; {how})")
    echo("   " + _cli(folder, *args).splitlines()[-1])
    live = next(iter(status(MODEL, project=project)), None)
    if live is None:
        raise MlopsError(f"`mlops-nb deploy` said it deployed {MODEL}, but no deployment of it is live")
    memory.also.add(int(live["pid"]))  # the supervisor runs in a session of its own: count it and its servers
    url = live["url"]
    n = 200 if fast else 400
    raw = helpers.pd.read_csv(folder / "data" / "raw.csv")
    usual_since = utcnow()
    ids, versions, labels = _traffic(url, raw.sample(n, random_state=13), helpers)
    echo(f"   traffic: {len(ids)} requests from the customers it was trained on, answered by v{versions[-1]}")
    _label(project, ids, labels, echo)

    memory.stage = "4 (monitoring)"
    echo("\n4. Monitoring: the served traffic against the version's training set")
    usual = _monitor(folder, project, usual_since, echo)
    if not usual["alerts"]:
        echo("   no rule holds, so nothing is retrained (the rule fires above a drift share of 0.3)")

    memory.stage = "5 (drift, alert, retraining)"
    echo("\n5. Drift injected: a different population arrives (more spend and support calls, shorter tenures)")
    arrivals = folder / "data" / "arrivals" / "customers-2024-07.csv"
    arrived = helpers.customers(n, seed=12, first_id=20_000, drift=0.8)
    arrived.to_csv(arrivals, index=False)
    echo(f"   new data: {arrivals.relative_to(folder)} ({len(arrived)} customers)")
    drift_since = utcnow()
    ids, versions, labels = _traffic(url, arrived, helpers)
    echo(f"   traffic: {len(ids)} requests from the new population")
    _label(project, ids, labels, echo)
    drifted = _monitor(folder, project, drift_since, echo)
    retrain = None
    for alert in drifted["alerts"]:
        echo(f"   alert {alert['id']}: {alert['rule']} ({alert['metric']} = {alert['value']:.2f}) → "
             f"{alert['action']}")  # fmt: skip
        perform_action(alert=alert, project=project)  # the retraining run, trigger drift, fired by the alert
        done = next(a for a in project.metadata.alerts(monitor_run=drifted["run_id"]) if a["id"] == alert["id"])
        echo(f"   the alert's action: {done['outcome']}")
        retrain = project.metadata.get_run(done["action_run"]) if done.get("action_run") else None
    if retrain is not None:
        echo(_what_ran(retrain))
        why = {s.step: s.why for s in retrain.step_runs}
        echo(f"   why it retrained: load {why.get('load')}; register {why.get('register')}")

    memory.stage = "6 (approval, watched redeploy)"
    echo("\n6. The retrained version: gates, approval, and the deployment follows the alias by itself")
    if retrain is None:
        raise MlopsError("the drift alert did not start the retraining run; see mlops-nb runs --kind monitor")
    second = _approve(folder, project.artifacts.get(retrain.step("register").outputs["released"]), echo)
    watched = _watched_deploy(project, second)
    echo(f"   deploy run {watched.id} (trigger watch, fired by {watched.fired_by}): v{first} → v{second}")
    ids, versions, _ = _traffic(url, arrived.head(20), helpers)
    if set(versions) != {second}:
        raise MlopsError(f"after the redeploy {url} answered with versions {sorted(set(versions))}, not v{second}")
    echo(f"   {len(ids)} requests now answered by v{second} at the same address {url}")
    return drifted, trained, url


def _summary(project, folder: Path, url: str, report: str, trained, memory: PeakMemory, started: float,
             echo: Callable[[str], None], fast: bool) -> dict:  # fmt: skip
    """The closing table of runs, where each thing is and the command that opens it, and the peak memory."""
    import json

    from .format import indented, table

    runs = list(reversed(project.metadata.list_runs(100)))
    rows = []
    for r in runs:
        what = r.pipeline or (f"v{r.params['version']}" if r.params.get("version") else "")
        if r.kind == "promotion":
            what = f"{r.params.get('action', '')} {what}".strip()
        rows.append([r.id, r.kind, what, r.trigger, r.status, f"{r.duration or 0:.1f}s", (r.fired_by or "")[:48]])
    echo(f"\nSummary: {len(runs)} recorded runs, the whole lifecycle in {time.monotonic() - started:.0f} s")
    echo(indented(table(rows, ["RUN", "KIND", "WHAT", "TRIGGER", "STATUS", "TIME", "FIRED BY"])))
    tool = Tools(folder)
    notebooks = [r for r in runs if r.kind == "pipeline" and r.executed_notebook is not None]
    last_notebook = project.metadata.get_run(notebooks[-1].id).executed_notebook.uri
    example = json.dumps({"dataframe_records": [{"tenure_months": 3, "monthly_spend": 180.0, "support_calls": 4,
                                                 "spend_per_month_of_tenure": 60.0}]})  # fmt: skip
    where = [
        ["monitoring report", _nearby(Path(report), folder), f"{tool('python')} -m webbrowser {report}"],
        ["executed notebooks", f"{len(notebooks)} in .mlops/artifacts/ (mlops-nb show RUN)",
         f"{tool('jupyter')} lab {_nearby(Path(last_notebook), folder)}"],
        ["MLflow store", ".mlops/mlflow.db",
         f"{tool('mlflow')} ui --backend-store-uri sqlite:///.mlops/mlflow.db --port 5000"],
        ["endpoint", f"{url}/invocations",
         f"curl -s {url}/invocations -H 'Content-Type: application/json' -d '{example}'"],
    ]  # fmt: skip
    echo(f"\nWhere things are (inside {_nearby(folder, Path.cwd())}/; run the commands there):")
    echo(indented(table(where, ["WHAT", "WHERE", "OPEN WITH"])))
    if os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):  # on Binder (or a JupyterHub): the proxied MLflow UI
        echo("   On Binder, the launcher's MLflow tile (/mlflow/) shows the store of the folder JupyterLab started in; "
             f"this project's is its .mlops/mlflow.db (`mlops-nb models show {MODEL}` lists it)")  # fmt: skip
    echo(f"   The deployment keeps serving (following {MODEL}@champion): {tool('mlops-nb')} deploy {MODEL} --stop")
    echo("   " + memory.line(BINDER_MIB if fast else None))
    echo("")
    for line in explore_commands(folder):
        echo(line)
    return {
        "folder": folder,
        "url": url,
        "report": report,
        "peak_mb": memory.peak / 2**20,
        "runs": [r.id for r in runs],
        "trained": trained.id,
    }


def _free(port: int) -> bool:
    """Whether nobody listens on 127.0.0.1:``port``."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _nearby(path: Path, start: Path) -> Path:
    """``path`` relative to ``start`` when that is short (inside it, or one folder up), else absolute."""
    path = path if path.is_absolute() else path.resolve()
    try:
        relative = Path(os.path.relpath(path, start))
    except ValueError:  # another drive
        return path
    return relative if relative.parts[:2].count("..") <= 1 else path
