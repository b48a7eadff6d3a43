"""Helpers for tests that run real notebooks (write one, copy the quickstart, execute cell by cell with nbclient)
for tests of old metadata stores, and a real Jupyter server on 127.0.0.1 for the front ends' and security tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses (ip, port) that process ``pid`` and its descendants listen on."""
    import psutil

    root = psutil.Process(pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
    return found


def listener_of(port: int) -> int:
    """The pid of the process listening on TCP ``port`` (any address)."""
    import psutil

    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise LookupError(f"nothing listens on port {port}")


def write_notebook(path: Path, sources: list[str], parameters: int | None = None) -> Path:
    """A notebook of code cells; cell ``parameters`` (an index) is tagged ``parameters``."""
    cells = []
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source)
        if i == parameters:
            cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def copy_quickstart(folder: Path) -> Path:
    """The quickstart notebook with its helper module and data, in a project folder of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text("[project]\nname = 'qs'\n")
    for name in ("01_quickstart.ipynb", "helpers.py"):
        shutil.copy(ROOT / "notebooks" / name, folder / name)
    shutil.copytree(ROOT / "notebooks" / "data", folder / "data")
    return folder / "01_quickstart.ipynb"


class ScoringServer:
    """``mlops-nb serve MODEL [EXTRA...]`` for the project at ``home``, in a child process on a free 127.0.0.1
    port, started once it answers ``/ping``; its output goes to a temporary file (shown if it fails to start)."""

    def __init__(self, home: Path, model: str, *extra: str):
        import tempfile

        import requests

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = tempfile.TemporaryFile("w+")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlops_nb.ui.cli", "serve", model, "--port", str(self.port), *extra],
            env={**os.environ, "MLOPS_NB_HOME": str(home)},
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.output.seek(0)
                raise AssertionError(f"mlops-nb serve ended: {self.output.read()[-3000:]}")
            try:
                if requests.get(self.url + "/ping", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("mlops-nb serve did not answer /ping within 90 s")

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM: the prediction log is flushed) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self.output.close()


def pipeline_project(home: Path, cells: list[str], mlflow_template: Path, parameters: int | None = None):
    """A project at ``home`` (made) with the notebook ``p.ipynb`` of ``cells``, a copy of the migrated MLflow
    store, and the feature view ``activity`` (``spend`` at ``ts``) of the entity ``customer`` (``customer_id``)."""
    from mlops_nb.project import Project

    home.mkdir(parents=True, exist_ok=True)
    project = Project(home).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    write_notebook(home / "p.ipynb", cells, parameters=parameters)
    project.features.register_entity("customer", {"customer_id": "int64"})
    project.features.register_view("activity", "customer", {"spend": "float64"}, timestamp="ts")
    return project


def quickstart_with_pending_model(folder: Path, mlflow_template: Path) -> dict:
    """A project that ran the quickstart once and has a model ``churn``: v1 champion, v2 waiting for approval
    (what the front ends' tests show and steer). Returns ``project``, ``folder``, ``notebook`` and ``run``."""
    from sklearn.linear_model import LogisticRegression

    import mlops_nb
    from mlops_nb.project import Project

    notebook = copy_quickstart(folder)
    project = Project(folder).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    run = mlops_nb.run(notebook, project=project, progress=False)
    assert run.status == "succeeded", run.error
    X, y = [[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]
    for accuracy in (0.8, 0.9):
        mlops_nb.register_model(LogisticRegression().fit(X, y), "churn", metrics={"accuracy": accuracy},
                                project=project)  # fmt: skip
    mlops_nb.promote("churn", 1, "champion", project=project)
    assert mlops_nb.promote("churn", 2, "champion", require_approval=True, project=project).outcome == "pending"
    return {"project": project, "folder": folder, "notebook": notebook, "run": run}


def run_by_hand(path: Path, extra_env: dict[str, str] | None = None, front_end: str = "jupyterlab") -> list[dict]:
    """Execute every code cell in order on a real kernel, as a user pressing Shift-Enter would.

    The kernel learns its notebook the way the front end tells it: JupyterLab sets ``JPY_SESSION_NAME``; VS Code
    (``front_end="vscode"``) sets ``__vsc_ipynb_file__`` in the namespace, with no cell of the notebook. Returns the
    outputs of each cell (``[{"index", "stream", "errors", "result", "images"}]``); errors do not stop the run.
    """
    env = {"JPY_SESSION_NAME": str(path)} if front_end == "jupyterlab" else {"JPY_SESSION_NAME": ""}
    env.update(extra_env or {})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, resources={"metadata": {"path": str(path.parent)}}, allow_errors=True)
        seen = []
        with client.setup_kernel():
            if front_end == "vscode":
                hidden = nbformat.v4.new_code_cell(f"__vsc_ipynb_file__ = {str(path)!r}")
                client.execute_cell(hidden, 0, store_history=False)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                client.execute_cell(cell, index)
                seen.append(
                    {
                        "index": index,
                        "stream": "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream"),
                        "errors": [(o.ename, o.evalue) for o in cell.outputs if o.output_type == "error"],
                        "result": [o.data.get("text/plain") for o in cell.outputs if o.output_type == "execute_result"],
                        "images": sum("image/png" in o.get("data", {}) for o in cell.outputs),
                    }
                )
        return seen
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def store_at_version(path: Path, version: int):
    """A real metadata store file as an older mlops_nb left it: the first ``version`` migrations applied. Returns
    an open DuckDB connection to fill it with old records (close it before opening the store)."""
    import duckdb

    from mlops_nb.store.metadata import MIGRATIONS

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMP)")
    for number, sql in enumerate(MIGRATIONS[:version], start=1):
        con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?, now())", [number])
    return con


# A real Jupyter server ---------------------------------------------------------------------------------------------
#: JupyterLab's news and update checks off (settings overrides).
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``(status, body)`` of a GET (HTTP errors are answers too)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own 127.0.0.1 server
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def jupyter_app(
    root: Path, work: Path, *, app: str = "lab", token: str = "", ip: str | None = "127.0.0.1"
) -> Iterator[str]:
    """A real ``jupyter lab`` (or ``jupyter server``) serving ``root`` on a free port of ``ip`` (None: Jupyter's
    default address) with ``token`` (empty: none) and its own config, data, runtime and settings folders (the user's
    are not read; the venv's share/ and etc/ still are, which is where the installed lab extension and the server
    extension's config live). Yields the base URL once ``/mlops/api`` answers; the server is stopped (its process
    group) on exit."""
    import pytest

    port = free_port()
    for name in ("config", "data", "runtime", "user-settings", "workspaces", "app-settings"):
        (work / name).mkdir(parents=True, exist_ok=True)
    (work / "app-settings" / "overrides.json").write_text(json.dumps(LAB_OVERRIDES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "MLOPS_NB_"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(work / "config"),
        JUPYTER_DATA_DIR=str(work / "data"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(work / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [
        str(Path(sys.executable).parent / "jupyter"),
        app,
        "--no-browser",
        *([f"--ServerApp.ip={ip}"] if ip is not None else []),
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    if app == "lab":
        command.append(f"--LabApp.app_settings_dir={work / 'app-settings'}")
    if os.geteuid() == 0:
        command.append("--allow-root")
    auth = {"Authorization": f"token {token}"} if token else {}
    log = work / "jupyter.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(  # noqa: S603
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter {app} ended with code {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if http_get(f"{base}/mlops/api", auth)[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter {app} did not serve /mlops/api within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
