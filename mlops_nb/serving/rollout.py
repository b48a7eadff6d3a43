"""The deployment pipeline's front: ``mlops_nb.deploy``, its status, rollback and stop.

A deployment is one supervisor process per model (:mod:`mlops_nb.serving.router`): a router on the stable address
and the scoring servers behind it. :func:`deploy` builds (or reuses) the bundle, starts the supervisor when none
runs, and asks it for a rollout; the supervisor's state file ``.mlops/deployments/<model>.json`` lets
:func:`status`, :func:`rollback` and :func:`stop` find it from any shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..core.files import last_line
from ..exceptions import DeployError
from ..project import current_project
from ..store.registry import check_model_name
from .bundle import bundle_for, looks_like_bundle, parse_model_spec
from .manifest import TOKEN_HEADER

DEFAULT_PORT = 8080


def deployments_dir(project) -> Path:
    """Where the supervisors' state files and servers' logs are."""
    return project.mlops_dir / "deployments"


def _state_path(project, name: str) -> Path:
    return deployments_dir(project) / f"{check_model_name(name)}.json"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _read_state(project, name: str) -> dict[str, Any] | None:
    path = _state_path(project, name)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(state.get("pid")):
        path.unlink(missing_ok=True)  # a supervisor that was killed
        return None
    return state


def _call(state: dict[str, Any], method: str, route: str, body: dict | None = None, timeout: float = 600) -> dict:
    url = f"http://127.0.0.1:{state['control_port']}{route}"
    data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
    headers = {"content-type": "application/json", TOKEN_HEADER: str(state.get("token", ""))}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:  # the supervisor refused or failed: its reason, in one line
        try:
            reason = json.load(exc).get("reason") or exc.reason
        except ValueError:
            reason = exc.reason
        raise DeployError(f"the supervisor of {state['name']} could not do {route.strip('/')}: {reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeployError(
            f"the supervisor of {state['name']} (pid {state.get('pid')}) does not answer on its control port: {exc}"
        ) from None


def _start_supervisor(project, name: str, *, port: int, host: str, watch: str | None, workers: int,
                      window: float, poll: float, replace: bool = False) -> dict[str, Any]:  # fmt: skip
    """Start a detached supervisor for ``name`` and wait until it listens; return its state."""
    folder = deployments_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = _state_path(project, name)
    log = folder / f"{name}.log"
    command = [
        sys.executable, "-m", "mlops_nb.serving.router", "--name", name, "--home", str(project.home),
        "--state", str(state_path), "--host", host, "--port", str(port), "--predictions", str(project.predictions_dir),
        "--features", str(project.mlops_dir / "features"), "--workers", str(workers), "--window", str(window),
        "--poll", str(poll),
    ]  # fmt: skip
    if watch:
        command += ["--watch", watch]
    if replace:
        command.append("--replace")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=str(project.home),
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeployError(f"the router of {name} did not start: {last_line(log).removeprefix('error: ')}")
        state = _read_state(project, name)
        if state is not None and state.get("pid") == process.pid:
            return state
        time.sleep(0.05)
    process.terminate()
    raise DeployError(f"the router of {name} did not start within 60 s; see {log}")


def deploy(
    model: str,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    canary: float | None = None,
    window: float | None = None,
    watch: bool = False,
    workers: int = 1,
    poll: float = 1.0,
    replace: bool = False,
    project=None,
    trigger: str = "api",
    progress: bool = True,
) -> dict[str, Any]:
    """Deploy a registered model to a live, logged endpoint: build (or reuse) its bundle, start a server from it,
    health-check and smoke-test it, switch the stable address to it, watch it, then drain and stop the old one —
    or roll back at any failed step. Returns the outcome (``deployed``, ``unchanged`` or ``rolled_back`` with a
    ``reason``), the ``url`` and the deploy run's ``run_id``.

    Args:
        model: ``NAME@ALIAS`` (default alias ``champion``) or ``NAME/VERSION``.
        port: the stable address' port (default 8080 for a new deployment; an existing one keeps its port).
        host: the address to listen on (127.0.0.1 unless told otherwise).
        canary: a percentage of traffic to send to the new version for the watch window before switching.
        window: seconds to watch the new version (default 2).
        watch: follow the alias: roll out each version it moves to.
        workers: worker processes per scoring server.
        replace: one scoring server at a time, for a small machine: every rollout of this deployment stops the old
            server before it starts the new one (requests get 503 meanwhile; a failed start restarts the old one)
            instead of switching blue/green. Fixed when the deployment starts.

    Example::

        result = mlops_nb.deploy("churn@champion", port=8080)
        requests.post(result["url"] + "/invocations", json={"dataframe_records": rows})
    """
    project = current_project(project)
    if canary is not None and not 0 < float(canary) < 100:
        raise DeployError(f"--canary {canary} must be a percentage between 0 and 100 (exclusive)")
    spec = "" if looks_like_bundle(str(model), project) else parse_model_spec(model)[1]
    alias = spec.lstrip("@") if spec.startswith("@") else ""
    if watch and not alias:
        raise DeployError(f"--watch follows an alias: deploy {model} as NAME@ALIAS (such as churn@champion)")
    if replace and canary is not None:
        raise DeployError("--replace runs one server at a time, so there is no old one to split traffic with; "
                          "drop --canary or --replace")  # fmt: skip
    built = bundle_for(model, project=project, trigger=trigger, progress=progress)
    name = built.model  # a bundle named by its hash deploys under its model's name
    state = _read_state(project, name)
    if state is not None and port is not None and int(port) != int(state["port"]):
        raise DeployError(
            f"{name} is deployed on port {state['port']}; `mlops-nb deploy {name} --stop` first to move it to {port}"
        )
    if state is None:
        state = _start_supervisor(
            project, name, port=int(port or DEFAULT_PORT), host=host, watch=alias if watch else None,
            workers=workers, window=2.0 if window is None else float(window), poll=poll, replace=replace,
        )  # fmt: skip
    body = {
        "watch": alias if watch else None,
        "version": built.version,
        "bundle": built.bundle,
        "build_id": built.build_id,
        "path": str(built.path),
        "alias": alias,
        "canary": canary,
        "replace": replace or None,  # asked of a running deployment: refused unless it already runs that way
        "window": window,
        "trigger": trigger,
    }
    result = _call(state, "POST", "/deploy", body)
    if result.get("outcome") == "refused":  # flags the running deployment cannot take, or it is stopping
        raise DeployError(result["reason"])
    result["build_id"] = built.build_id
    result["bundle_path"] = str(built.path)
    return result


def status(name: str | None = None, *, project=None, timeout: float = 10) -> list[dict[str, Any]]:
    """The live deployments (of one model, or all): their address, the versions served, requests and errors
    (``timeout``: seconds to wait for each supervisor's answer; one that does not answer is ``answering: False``,
    without its control token)."""
    project = current_project(project)
    folder = deployments_dir(project)
    names = (
        [check_model_name(name)] if name else sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    )
    found = []
    for each in names:
        state = _read_state(project, each)
        if state is None:
            continue
        try:
            found.append(_call(state, "GET", "/status", timeout=timeout))
        except DeployError:
            found.append({**{k: v for k, v in state.items() if k != "token"}, "answering": False})
    return found


def _require(project, name: str) -> dict[str, Any]:
    state = _read_state(project, check_model_name(name))
    if state is None:
        raise DeployError(f"{name} is not deployed; `mlops-nb deploy {name}@champion` deploys it")
    return state


def rollback(name: str, *, project=None, trigger: str = "api") -> dict[str, Any]:
    """Serve the version served before the current one again, pinned until the alias moves again."""
    project = current_project(project)
    result = _call(_require(project, name), "POST", "/rollback", {"trigger": trigger})
    if result.get("outcome") == "refused":
        raise DeployError(result["reason"])
    return result


def stop(name: str, *, project=None, timeout: float = 60) -> dict[str, Any]:
    """Drain and stop a deployment's servers and its router."""
    project = current_project(project)
    state = _require(project, name)
    _call(state, "POST", "/stop", timeout=30)
    deadline = time.monotonic() + timeout
    while _alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(state["pid"]):
        raise DeployError(f"the supervisor of {name} (pid {state['pid']}) did not stop within {timeout:.0f} s")
    return {"name": name, "outcome": "stopped", "port": state["port"]}


__all__ = ["deploy", "rollback", "status", "stop"]
