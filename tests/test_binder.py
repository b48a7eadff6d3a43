"""Binder: the files under binder/ are what repo2docker expects, and they make a working environment on their own.

A module fixture builds what Binder would, from committed files: a fresh ``git clone`` of this repository's HEAD (a
checkout has no prebuilt labextension), a venv from the machine's Python 3.11 holding ``binder/requirements.txt``
alone (uv, from its cache), then ``binder/postBuild`` with that venv first on PATH, run from another folder. In that
venv the JupyterLab extension is enabled, a Jupyter server started through ``binder/start`` serves MLflow's UI
through jupyter-server-proxy at ``/mlflow/`` and our REST API at ``/mlops/api/``, and the numbered notebooks run
with papermill in a clean project. Each part is timed; the timings and the peak memory of the server's and the
notebooks' process trees are printed at the end.

Node builds the labextension: without ``node`` (or uv) the environment tests are skipped with the reason, except under
CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nbtools import free_port
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
#: The notebooks a Binder user walks through, in this order.
NUMBERED = "[0-9][0-9]_*.ipynb"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TOKEN = "binder-test-token"
#: The host name a browser would use for a hosted server (Binder's, say): not a local one, so MLflow's host and
#: origin checks see what they would see there.
PUBLIC_HOST = "binder.test"

#: Not handed to the environment's processes. PYTHONDONTWRITEBYTECODE among them: Python then compiles what a process
#: imports as it imports it, far cheaper than compiling the whole tree at install (uv --compile-bytecode: 30-60 s
#: here), and as fast on every later import.
UNSET = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "PYTHONDONTWRITEBYTECODE")

pytestmark = pytest.mark.slow

TIMINGS: dict[str, float] = {}
PEAK_MEMORY: dict[str, int] = {}


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    """Record how long the block took under ``label``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        TIMINGS[label] = time.perf_counter() - start


class PeakMemory:
    """The peak memory of a process and its descendants, sampled on a thread every 0.25 s: the sum of their PSS
    (shared pages divided among the processes sharing them, so kernels importing the same libraries are not counted
    twice), or of their RSS where PSS is unavailable."""

    def __init__(self, pid: int):
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        psutil = self._psutil
        while not self._stop.is_set():
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    info = process.memory_full_info()
                    total += getattr(info, "pss", info.rss)
            self.peak = max(self.peak, total)
            self._stop.wait(0.25)

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def _unavailable(reason: str) -> None:
    """Skip with the reason; under CI=true, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Binder environment cannot be built under CI=true: {reason}")
    pytest.skip(reason)


def _uv() -> list[str]:
    """A command that runs uv: `uv` on PATH, else `python -m uv` of this or the machine's Python."""
    if shutil.which("uv"):
        return [shutil.which("uv")]
    for python in (sys.executable, shutil.which("python3.11"), shutil.which("python3")):
        if python and subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "uv"]
    _unavailable("uv is needed to build the venv (`python3 -m pip install uv`)")
    raise AssertionError("unreachable")


def _run(command: list[str], what: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command``; a failure names ``what`` and shows the end of its output."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-40:]
        pytest.fail(f"{what} failed (exit {done.returncode}): {' '.join(map(str, command))}\n" + "\n".join(tail))
    return done


@dataclass
class BinderEnv:
    """The environment the fixture built."""

    venv: Path
    repo: Path  # the clone postBuild installed
    work: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def run(self, command: list, what: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """Run ``command`` in this environment (from the work folder unless ``cwd`` says: no checkout on sys.path)."""
        kwargs.setdefault("cwd", self.work)
        return _run([str(part) for part in command], what, timeout=timeout, env=self.env, **kwargs)


@pytest.fixture(scope="module")
def binder(tmp_path_factory, request) -> Iterator[BinderEnv]:
    """A venv from binder/requirements.txt alone, then binder/postBuild from a fresh clone of HEAD."""
    if shutil.which("node") is None:
        _unavailable("no `node` on PATH: postBuild builds the labextension with Node (Binder's base image has it)")
    uv = _uv()
    work = tmp_path_factory.mktemp("binder")
    repo, venv = work / "repo", work / "venv"

    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "binder", "pyproject.toml", "mlops_nb", "labextension", "notebooks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if dirty:
        print(f"note: this tests the committed files (HEAD); uncommitted changes are not in the clone:\n{dirty}")
    with timed("clone"):
        _run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(repo)], "git clone")
    assert not (repo / "mlops_nb" / "labextension").exists(), "the labextension build output is committed"

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    for name in UNSET:
        env.pop(name, None)
    jupyter = work / "jupyter"  # no user-level Jupyter config, data or kernels from this machine
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
        "JUPYTER_DATA_DIR": str(jupyter / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
        "JUPYTER_PATH": str(venv / "share" / "jupyter"),  # the venv's python3 kernel first
        "IPYTHONDIR": str(jupyter / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    python = shutil.which("python3.11") or "3.11"
    with timed("venv from requirements.txt"):
        _run([*uv, "venv", "--quiet", "--seed", "--python", python, str(venv)], "uv venv")
        _run(
            [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
            + ["-r", str(repo / "binder" / "requirements.txt")],
            "uv pip install -r binder/requirements.txt",
        )
    built = BinderEnv(venv=venv, repo=repo, work=work, env=env)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    with timed("postBuild"):
        built.run([repo / "binder" / "postBuild"], "binder/postBuild", timeout=900, cwd=elsewhere)

    yield built

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\nBinder timings: " + ", ".join(f"{label} {seconds:.1f} s" for label, seconds in TIMINGS.items()))
        if PEAK_MEMORY:
            print(
                "Binder peak memory (PSS): "
                + ", ".join(f"{label} {rss / 2**20:.0f} MB" for label, rss in PEAK_MEMORY.items())
            )


# a. the files ----------------------------------------------------------------------------------------------------
def _pins() -> dict[str, Version]:
    """requirements.txt's pins by canonical name; every line is a pin, a comment or blank."""
    pins = {}
    for number, line in enumerate((BINDER / "requirements.txt").read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = PIN.match(text)
        assert match, f"binder/requirements.txt line {number} is not `name==version`: {line!r}"
        pins[canonicalize_name(match["name"])] = Version(match["version"])
    return pins


def test_binder_files_are_what_repo2docker_expects():
    """runtime.txt, requirements.txt (every runtime dependency pinned, within pyproject's bounds), postBuild, start."""
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"

    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    problems = []
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}=={pinned} is outside pyproject's {requirement.specifier}")
    assert not problems, "binder/requirements.txt vs pyproject.toml [project] dependencies: " + "; ".join(problems)
    assert pins.get("jupyter-server-proxy") == Version("4.6.0"), "jupyter-server-proxy 4.6.0 serves MLflow's UI"
    assert canonicalize_name(project["name"]) not in pins, "postBuild installs the project itself"
    assert not {"pytest", "ruff", "playwright", "hypothesis", "import-linter"} & set(pins), "dev tools pinned"
    entry_points = project["entry-points"]["jupyter_serverproxy_servers"]
    assert entry_points == {"mlflow": "mlops_nb.ui.server.proxy:mlflow_ui"}

    for name in ("postBuild", "start"):
        path = BINDER / name
        assert os.access(path, os.X_OK), f"binder/{name} is not executable"
        lines = path.read_text().splitlines()
        assert lines[0].startswith("#!") and "bash" in lines[0], f"binder/{name} starts with no bash shebang"
    post_build = (BINDER / "postBuild").read_text()
    assert re.search(r"^set -e\S*", post_build, re.M), "binder/postBuild does not stop at the first error"
    assert "install --no-deps ." in post_build
    start = [line.strip() for line in (BINDER / "start").read_text().splitlines() if line.strip()]
    assert start[-1] == 'exec "$@"', 'binder/start must end by running its command: exec "$@"'


def test_mlflow_ui_config_is_jupyter_server_proxys_contract(tmp_path):
    """The entry point's value: a ServerProcess config whose command serves the project's store on the given port."""
    from mlops_nb.ui.server import proxy

    config = proxy.mlflow_ui()
    assert config["launcher_entry"]["title"] == "MLflow"
    assert config["timeout"] >= 60 and config["absolute_url"] is False
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    command = proxy.mlflow_command(tmp_path, 4321)
    assert Path(command[0]).name == "mlflow" and command[1] == "ui"
    assert command[command.index("--port") + 1] == "4321"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/.mlops/mlflow.db"
    assert command[command.index("--workers") + 1] == "1"


# b. postBuild ----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(900)  # the first test that asks for the fixture pays for the clone, the venv and postBuild
def test_postbuild_installs_the_repository_from_requirements_alone(binder):
    """The package from the clone, every dependency met by requirements.txt, no build leftovers, news checks off."""
    where = binder.run([binder.python, "-c", "import mlops_nb, sys; print(mlops_nb.__file__)"], "import mlops_nb")
    assert Path(where.stdout.strip()).is_relative_to(binder.venv), f"mlops_nb imported from {where.stdout}"
    binder.run([binder.python, "-m", "pip", "check"], "pip check (requirements.txt holds every dependency)")
    assert not (binder.repo / "labextension" / "node_modules").exists(), "postBuild left node_modules behind"
    assert (binder.repo / ".mlops" / "mlflow.db").is_file(), "postBuild did not make the repository's stores"
    overrides = binder.venv / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    notification = json.loads(overrides.read_text())["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}


# c. the server ---------------------------------------------------------------------------------------------------
def _request(url: str, host: str, method: str = "GET", body: dict | None = None, origin: str | None = None):
    """(status, text) of a token-authenticated request that names ``host`` in its Host header."""
    headers = {"Authorization": f"token {TOKEN}", "Host": host}
    if origin:
        headers["Origin"] = origin
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process's group (the server, MLflow and its uvicorn), SIGKILL what is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group's stragglers too
    process.wait(timeout=10)


def test_labextension_enabled_and_server_serves_mlflow_and_the_api(binder):
    """`jupyter labextension list` shows mlops-nb enabled; through binder/start, /mlflow/ and /mlops/api/ answer."""
    listing = binder.run([binder.bin / "jupyter", "labextension", "list"], "jupyter labextension list")
    text = ANSI.sub("", listing.stdout + listing.stderr)
    assert re.search(r"^\s*mlops-nb v\S+ enabled\s+OK", text, re.M), text

    project = binder.work / "server-project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "binder-server-check"\nversion = "0"\n')
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    host = f"{PUBLIC_HOST}:{port}"
    command = [binder.repo / "binder" / "start", binder.bin / "jupyter", "server", "--no-browser"]
    command += ["--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}"]
    command += [f"--ServerApp.root_dir={project}", "--ServerApp.allow_remote_access=True"]  # as on Binder
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (binder.work / "server.log").open("w")
    start = time.perf_counter()
    server = subprocess.Popen(
        [str(part) for part in command], cwd=project, env=binder.env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    peak = PeakMemory(server.pid)
    try:
        status, page = 0, ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status, page = _request(f"{base}/mlflow/", host)
                if status == 200:
                    break
            assert server.poll() is None, "the Jupyter server exited: " + (binder.work / "server.log").read_text()
            time.sleep(0.5)
        TIMINGS["server start to MLflow's page"] = time.perf_counter() - start
        assert status == 200 and "<title>MLflow</title>" in page, (
            f"/mlflow/ answered {status}: {page[:300]}\n" + (binder.work / "server.log").read_text()[-3000:]
        )
        with timed("proxy checks"):
            # the UI's own POSTs pass MLflow's cross-origin check; another site's are still refused
            search = f"{base}/mlflow/ajax-api/2.0/mlflow/experiments/search"
            status, text = _request(search, host, "POST", {"max_results": 5}, origin=f"http://{host}")
            assert status == 200 and "experiments" in json.loads(text), text
            status, text = _request(search, host, "POST", {"max_results": 5}, origin="http://elsewhere.example")
            assert status == 403, f"a cross-origin POST answered {status}: {text[:200]}"
            assert (project / ".mlops" / "mlflow.db").is_file(), "MLflow's UI is not on the project's store"
            status, text = _request(f"{base}/mlops/api/runs", host)
            assert status == 200 and "runs" in json.loads(text), text
            status, text = _request(f"{base}/server-proxy/servers-info", host)
            servers = {server["name"]: server for server in json.loads(text)["server_processes"]}
            assert servers["mlflow"]["launcher_entry"]["title"] == "MLflow", text
    finally:
        PEAK_MEMORY["server + MLflow UI"] = peak.stop()
        _stop_group(server)
        log.close()


# d. the notebooks ------------------------------------------------------------------------------------------------
def _parameters(notebook: Path) -> set[str]:
    """The names the notebook's ``parameters`` cell assigns."""
    import nbformat

    for cell in nbformat.read(notebook, 4).cells:
        if "parameters" in cell.metadata.get("tags", []):
            return set(re.findall(r"^(\w+)\s*=", cell.source, re.M))
    return set()


def _papermill_error(stderr: str) -> str:
    """The failing cell's error out of papermill's output (its PapermillExecutionError), else the output's end."""
    text = ANSI.sub("", stderr)
    at = text.rfind("PapermillExecutionError")
    if at >= 0:
        return text[at:].strip()[:4000]
    return "\n".join(text.strip().splitlines()[-30:])


@pytest.mark.timeout(900)
def test_notebooks_run_in_the_binder_environment(binder):
    """Each numbered notebook runs, in order, with papermill and the venv's kernel, in a clean project; then what
    they recorded there tells the whole story (the only run of all six in the test suite: they take minutes)."""
    import nbformat

    project = binder.work / "notebook-project"
    shutil.copytree(binder.repo / "notebooks", project)
    (project / "pyproject.toml").write_text('[project]\nname = "binder-notebooks"\nversion = "0"\n')
    binder.run([binder.bin / "mlops-nb", "init"], "mlops-nb init", cwd=project)
    notebooks = sorted(project.glob(NUMBERED))
    if not notebooks:  # before the notebooks were numbered
        notebooks = sorted(project.glob("*.ipynb"))
        print(f"note: no notebooks match {NUMBERED}; running {[p.name for p in notebooks]}")
    assert notebooks, "no notebooks to run"
    out = binder.work / "executed"
    out.mkdir()

    probe = out / "probe.ipynb"  # the kernel papermill starts as `python3` is the venv's Python
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    nbformat.write(nb, probe)
    binder.run([binder.python, "-m", "papermill", probe, probe, "-k", "python3", "--no-progress-bar"], "probe kernel")
    executable = nbformat.read(probe, 4).cells[0].outputs[0]["text"].strip()
    assert Path(executable).parent == binder.bin, f"papermill's python3 kernel runs {executable}, not the venv's"

    failures = []
    for notebook in notebooks:
        command = [binder.python, "-m", "papermill", notebook, out / notebook.name, "--cwd", project]
        command += ["-k", "python3", "--no-progress-bar"]
        if "port" in _parameters(notebook):  # a free port, not the notebook's default (8080 may be in use here)
            command += ["-p", "port", str(free_port())]
        start = time.perf_counter()
        # which notebook the kernel runs: JupyterLab tells the magic on Binder (JPY_SESSION_NAME); here, this does
        env = binder.env | {"MLOPS_NB_NOTEBOOK": str(notebook)}
        process = subprocess.Popen(
            [str(part) for part in command], cwd=project, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        peak = PeakMemory(process.pid)
        try:
            _, stderr = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            stderr += "\n(timed out after 600 s)"
        finally:
            PEAK_MEMORY[notebook.name] = peak.stop()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # a kernel or server the notebook left behind
        TIMINGS[notebook.name] = time.perf_counter() - start
        if process.returncode != 0:
            failures.append(f"{notebook.name} (exit {process.returncode}):\n{_papermill_error(stderr)}")
    assert not failures, "notebooks failed in the Binder environment:\n\n" + "\n\n".join(failures)
    _the_story_was_told(binder, project)


def _the_story_was_told(binder: BinderEnv, folder: Path) -> None:
    """What the six notebooks, run in order as a Binder user runs them, left in their project: each a recorded
    run, the champion trained and gated, the approval, the loop closed from drift to a watched deployment, the
    Dask runs; and the cache they share with `mlops-nb run` headless."""
    from mlops_nb.project import Project
    from mlops_nb.promotion import history
    from mlops_nb.serving import status

    project = Project(folder)
    assert status(project=project) == [], "a notebook left a deployment running"
    runs = list(reversed(project.metadata.list_runs(200)))
    assert all(r.status == "succeeded" for r in runs), [(r.id, r.kind, r.status) for r in runs]
    by_hand = [r for r in runs if r.kind == "pipeline" and r.trigger == "manual"]
    assert [r.pipeline for r in by_hand] == ["01_quickstart", "02_feature_store", "03_registry_and_approval"]

    # 01, headless now: every step a cache hit of the runs the notebooks made (its report cells change no key)
    again = binder.run([binder.bin / "mlops-nb", "run", "01_quickstart.ipynb"], "mlops-nb run 01", cwd=folder)
    assert "(6 cached)" in again.stdout.splitlines()[-1], again.stdout[-2000:]

    # 02: the training pipeline registered churn v1 through its gates (no approval asked): the champion
    trained = project.metadata.get_run(by_hand[1].id)
    released = project.artifacts.get(trained.step("register").outputs["released"])
    assert released["outcome"] == "promoted" and released["version"] == 1

    # 03 judged its versions against that champion: a weak one refused, a candidate waited and was approved
    actions = [e["action"] for e in history("churn", project=project)]
    assert {"refuse", "pending", "approve"} <= set(actions), actions

    # 04 and 05: each build and deployment a run; 05 closed the loop: drift → retraining → approval → watch
    kinds = [(r.kind, r.trigger) for r in runs]
    assert ("build", "api") in kinds and ("deploy", "api") in kinds and ("monitor", "api") in kinds, kinds
    assert ("pipeline", "drift") in kinds and ("promotion", "approval") in kinds and ("deploy", "watch") in kinds
    retrain = next(r for r in runs if r.trigger == "drift")
    assert retrain.pipeline == "02_feature_store" and retrain.fired_by.startswith("alert-")
    watched = next(r for r in runs if r.kind == "deploy" and r.trigger == "watch")
    assert watched.params["version"] == project.registry.alias_version("churn", "champion")

    # 06: the quickstart's steps on a Dask cluster, then all cache hits there too
    on_dask = [project.metadata.get_run(r.id) for r in runs if r.executor == "dask"]
    assert [[s.status for s in r.step_runs] for r in on_dask] == [["succeeded"] * 6, ["cached"] * 6]


@pytest.mark.timeout(600)
def test_the_binder_path_demo_fast_keeps_all_its_processes_under_1_gib(binder):
    """`mlops-nb demo --fast` in the Binder environment: the whole lifecycle, and the peak memory of all its
    processes (kernels, supervisor, scoring server, the commands it runs) within 1 GiB, as it prints."""
    folder = binder.work / "demo-fast"
    start = time.perf_counter()
    done = binder.run([binder.bin / "mlops-nb", "demo", "--fast", "--dir", folder, "--port", free_port()],
                      "mlops-nb demo --fast", timeout=400)  # fmt: skip
    TIMINGS["demo --fast"] = time.perf_counter() - start
    try:
        out = done.stdout
        assert "Summary: 10 recorded runs" in out and "(trigger watch, fired by churn@champion -> v2): v1 → v2" in out
        line = next(line for line in out.splitlines() if "peak memory of all the demo's processes" in line)
        print("\n" + line.strip())
        rss = int(re.search(r"RSS (\d+) MiB, (within|OVER) 1024 MiB", line).group(1))
        pss = int(re.search(r"PSS (\d+) MiB, (within|OVER) 1024 MiB", line).group(1))
        PEAK_MEMORY["demo --fast (summed RSS)"] = rss * 2**20
        PEAK_MEMORY["demo --fast (PSS)"] = pss * 2**20
        # Both must fit: what a container is charged (each shared page once, PSS), and the sum of the RSS of all
        # the processes, which counts every shared library once per process (923-965 MiB measured here).
        assert pss <= 1024 and rss <= 1024, line
    finally:  # whatever the demo left serving (nothing, when it failed: it stops its own deployment then)
        subprocess.run([str(binder.bin / "mlops-nb"), "--home", str(folder), "deploy", "churn", "--stop"],
                       env=binder.env, capture_output=True, timeout=120)  # fmt: skip
