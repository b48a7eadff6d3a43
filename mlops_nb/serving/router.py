"""The deployment supervisor: a router on the stable address, the scoring servers behind it, and their rollout.

One supervisor process per deployed model (``python -m mlops_nb.serving.router``, started detached by
:func:`mlops_nb.serving.rollout.deploy`, so it outlives the command that started it). It listens on two ports of
127.0.0.1 (unless told another host): the *stable address* that clients call, and a *control* port for the
``mlops-nb deploy`` commands. Its pid, ports and versions are in ``.mlops/deployments/<model>.json``.

A rollout (``POST /deploy`` on the control port): start a server from the bundle on a free port; wait for its
``/health``; smoke-test it with the bundle's input example against the predictions MLflow gave for it; switch the
stable address to it (or, with a canary share, send that share of the traffic to it for the watch window first);
watch its errors and latency for the window; drain the old server (its in-flight requests finish) and stop it
with SIGTERM (its prediction log is flushed). Any failed step stops the new server and leaves traffic where it
was, with a one-line reason. Every rollout is a recorded run of kind ``deploy``.

With ``--watch ALIAS`` the supervisor follows the alias: when it moves, the new version is built (in a child
process) and rolled out, so an approval in the registry reaches production by itself. A rollback pins the
previous version until the alias moves again. A stable server whose process exits outside a rollout is restarted
from its bundle (requests wait for it rather than fail), so the stable address keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from ..core.files import last_line
from .manifest import PARENT_ENV, TOKEN_HEADER

_FORWARD_REQUEST = ("content-type", "x-request-id", "accept")
#: Seconds a request waits for a backend that exited to be replaced (rolled back from, or restarted) before a 502.
REPLACE_WAIT = 15.0
ROUTER_MAX_BODY = 64 * 1024 * 1024  # the servers apply their own, smaller limit (and log what they refuse)
_FORWARD_RESPONSE = ("content-type", "x-request-id")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_listen(host: str, port: int | None = None) -> None:
    """Refuse, with one line, a host this machine cannot listen on (``999.1.1.1``, a name that does not resolve,
    an address of another machine) or a port in use, before anything is built or started."""
    from ..core.net import host_problem
    from ..exceptions import ServingError

    if not host.strip():
        raise ServingError("--host is empty; give an address (the default is 127.0.0.1; 0.0.0.0 listens on every "
                           "interface)")  # fmt: skip
    try:
        family = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise ServingError(f"--host {host!r} is not an address or a host name that resolves ({host_problem(exc)}); "
                           "the default is 127.0.0.1") from None  # fmt: skip
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port or 0))
        except OSError as exc:
            where = f"{host}:{port}" if port else host
            raise ServingError(
                f"cannot listen on {where}: {exc.strerror or exc}; pick another --host or --port"
            ) from None


@dataclass
class Backend:
    """One scoring server behind the router."""

    version: int
    bundle: str
    path: str
    port: int
    process: asyncio.subprocess.Process | None = None
    log: str = ""
    started: float = field(default_factory=time.time)
    inflight: int = 0
    requests: int = 0
    errors: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=5000))
    build_id: str | None = None
    alias: str = ""

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"http://127.0.0.1:{self.port}"

    def spec(self) -> dict[str, Any]:
        """What starts this bundle again (a rollback's or a restart's spec)."""
        return {"version": self.version, "bundle": self.bundle, "path": self.path, "alias": self.alias,
                "build_id": self.build_id}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict for the status."""
        ordered = sorted(self.latencies)
        p50 = ordered[len(ordered) // 2] if ordered else None
        return {
            "version": self.version,
            "bundle": self.bundle,
            "path": self.path,
            "port": self.port,
            "pid": self.process.pid if self.process else None,
            "requests": self.requests,
            "errors": self.errors,
            "inflight": self.inflight,
            "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
            "log": self.log,
        }


class RolloutFailed(Exception):
    """A rollout step failed; the message is the one-line reason."""


class Supervisor:
    """The router and the servers of one deployed model (see the module docstring)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.name: str = args.name
        self.home = Path(args.home)
        self.state_path = Path(args.state)
        self.logs = self.state_path.parent / self.name
        self.stable: Backend | None = None
        self.canary: Backend | None = None
        self.canary_share = 0.0
        self.history: list[dict[str, Any]] = []  # the bundles served before, newest last (for rollback)
        self.pinned = False  # a rollback pinned the version served
        self.pinned_from: int | None = None  # the alias' version then: the pin holds until the alias moves
        self.watch_alias: str | None = None
        self.watcher: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.session: ClientSession | None = None
        self.stopping = asyncio.Event()
        self.control_port = 0
        self.last: dict[str, Any] = {}
        self._project = None
        self.token = secrets.token_hex(16)
        self.restarts = 0  # stable servers restarted by keep_alive

    @property
    def project(self):
        """The project the deployment belongs to (opened on first use: the stores load lazily)."""
        if self._project is None:
            from ..project import Project

            self._project = Project(self.home)
        return self._project

    # routing ----------------------------------------------------------------------------------------------------
    def pick(self) -> tuple[Backend | None, str]:
        """The backend for the next request, and its variant."""
        if self.canary is not None and random.random() < self.canary_share:
            return self.canary, "canary"
        return self.stable, "stable"

    async def route(self, request: web.Request) -> web.StreamResponse:
        """Forward one request to a backend and its answer back. The body is read first, then the backend is
        picked and counted in flight with no wait in between, so a drain never stops a server a request chose."""
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > ROUTER_MAX_BODY:
                return web.json_response(
                    {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": f"the body is over {ROUTER_MAX_BODY} bytes"},
                    status=413,
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        headers = {k: v for k in _FORWARD_REQUEST if (v := request.headers.get(k)) is not None}
        for attempt in (1, 2):
            backend, variant = self.pick()
            if backend is None:
                what = "is stopping" if self.stopping.is_set() else "has no version deployed yet"
                return web.json_response(
                    {"error_code": "TEMPORARILY_UNAVAILABLE", "message": f"the deployment of {self.name} {what}"},
                    status=503,
                )
            headers["x-mlops-variant"] = variant
            start = time.perf_counter()
            backend.inflight += 1
            try:
                async with self.session.request(
                    request.method, backend.url + request.rel_url.path_qs, data=body, headers=headers
                ) as answer:
                    data = await answer.read()
                    status = answer.status
                    out = {k: v for k in _FORWARD_RESPONSE if (v := answer.headers.get(k)) is not None}
                    model_failed = answer.headers.get("x-mlops-error") == "model"
            except (TimeoutError, ClientError, OSError) as exc:
                backend.errors += 1
                if attempt == 1 and await self._replaced(backend):  # switched away, rolled back or restarted
                    continue
                return web.json_response(
                    {"error_code": "BAD_GATEWAY", "message": f"version {backend.version} did not answer: {exc}"},
                    status=502,
                )
            finally:
                backend.inflight -= 1
                backend.requests += 1
                backend.latencies.append(time.perf_counter() - start)
            if status >= 500 or model_failed:  # a model that fails on its input counts against it
                backend.errors += 1
            out["x-mlops-version"] = str(backend.version)
            return web.Response(body=data, status=status, headers=out)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if the supervisor starts stopping; whether it is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    async def _replaced(self, backend: Backend) -> bool:
        """Whether the router now picks another backend than one that did not answer. A backend whose process
        exited is replaced soon (the watch window rolls back from a new one, :meth:`keep_alive` restarts a stable
        one): the request waits for that, up to :data:`REPLACE_WAIT` seconds, rather than fail."""
        start = time.monotonic()
        while True:
            picked = self.pick()[0]
            if picked is not backend:
                return picked is not None
            exited = backend.process is not None and backend.process.returncode is not None
            waited = time.monotonic() - start
            # a refused connection can come before the event loop has seen the process exit: a second's grace
            if (not exited and waited >= 1.0) or waited >= REPLACE_WAIT or self.stopping.is_set():
                return False
            await asyncio.sleep(0.05)

    async def keep_alive(self) -> None:
        """Restart the stable server when its process exits outside a rollout (a crash, the OOM killer, a kill):
        the same bundle on a new port, health-checked and smoke-tested like a rollout's, then switched to. A
        restart that fails is tried again after 1, 2, 4 ... 30 s; each outcome is the status' ``last``."""
        wait = 1.0
        while not await self.stopped_within(0.2):
            dead = self.stable
            if dead is None or dead.process is None or dead.process.returncode is None or self.lock.locked():
                continue
            async with self.lock:
                if self.stable is not dead or self.stopping.is_set():  # a rollout or a stop got there first
                    continue
                why = f"version {dead.version} exited (status {dead.process.returncode}): {last_line(dead.log)}"
                new, failed = None, None
                try:
                    manifest = json.loads((Path(dead.path) / "manifest.json").read_text(encoding="utf-8"))
                    new = await self.start_server(dead.spec())
                    await self.smoke_test(new, manifest)
                except (RolloutFailed, OSError, ValueError) as exc:
                    await self.stop_server(new, drain=0)
                    failed = exc
                if failed is None:
                    new.requests, new.errors = dead.requests, dead.errors
                    self.stable, self.restarts = new, self.restarts + 1
                    self.last = {"name": self.name, "outcome": "restarted", "version": dead.version,
                                 "reason": f"{why}; restarted on port {new.port}"}  # fmt: skip
                else:
                    self.last = {"name": self.name, "outcome": "restart_failed", "version": dead.version,
                                 "reason": f"{why}; restarting it failed: {failed}; trying again in {wait:.0f} s"}  # fmt: skip
                self.write_state()
            if failed is None:
                wait = 1.0
            else:  # outside the lock: a deploy or a rollback may come in meanwhile
                await self.stopped_within(wait)
                wait = min(30.0, wait * 2)

    # servers ----------------------------------------------------------------------------------------------------
    async def start_server(self, spec: dict[str, Any]) -> Backend:
        """Start a scoring server from a bundle on a free port and wait until it answers ``/health``."""
        port = free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"v{spec['version']}-{port}.log"
        command = [
            sys.executable,
            str(Path(spec["path"]) / "app" / "serve.py"),
            spec["path"],
            "--port",
            str(port),
            "--predictions",
            self.args.predictions,
            "--alias",
            spec.get("alias") or "",
            "--workers",
            str(self.args.workers),
        ]
        if self.args.features:
            command += ["--features", self.args.features]
        with open(log, "ab") as out:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, PARENT_ENV: str(os.getpid())},
            )  # fmt: skip
        backend = Backend(spec["version"], spec["bundle"], spec["path"], port, process, str(log),
                          build_id=spec.get("build_id"), alias=spec.get("alias") or "")  # fmt: skip
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RolloutFailed(
                    f"version {backend.version} crashed on start (exit {process.returncode}): {last_line(log)}"
                )
            try:
                async with self.session.get(backend.url + "/health", timeout=ClientTimeout(total=2)) as answer:
                    if answer.status == 200:
                        health = await answer.json()
                        if health.get("bundle") != spec["bundle"]:
                            await self.stop_server(backend, drain=0)
                            raise RolloutFailed(f"port {port} answers with another bundle; try again")
                        return backend
            except (TimeoutError, ClientError, OSError):
                pass
            await asyncio.sleep(0.05)
        await self.stop_server(backend)
        raise RolloutFailed(f"version {backend.version} did not answer /health within {self.args.start_timeout:.0f} s")

    async def smoke_test(self, backend: Backend, manifest: dict[str, Any]) -> None:
        """The bundle's input example must get the predictions MLflow gave for it."""
        example, expected = manifest.get("input_example"), manifest.get("expected")
        if not example or expected is None:
            return
        try:
            async with self.session.post(
                backend.url + "/invocations",
                json={"dataframe_split": example},
                headers={"x-mlops-variant": "smoke"},
                timeout=ClientTimeout(total=30),
            ) as answer:
                data = await answer.json(content_type=None)
        except (TimeoutError, ClientError, OSError, ValueError) as exc:
            raise RolloutFailed(f"version {backend.version} failed its smoke test: {exc}") from None
        got = data.get("predictions") if isinstance(data, dict) else None
        if answer.status != 200 or not _same(got, expected):
            detail = data.get("message") if isinstance(data, dict) and "message" in data else f"answered {got}"
            raise RolloutFailed(
                f"version {backend.version} failed its smoke test: {detail}, where MLflow's model gives {expected}"
            )

    async def stop_server(self, backend: Backend | None, drain: float = 30.0) -> None:
        """Wait for a server's in-flight requests (up to ``drain`` seconds), then SIGTERM it (its log is flushed)."""
        if backend is None or backend.process is None:
            return
        deadline = time.monotonic() + drain
        while backend.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if backend.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                backend.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(backend.process.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    backend.process.kill()
                await backend.process.wait()

    async def watch_window(self, backend: Backend, seconds: float, baseline: Backend | None) -> None:
        """Fail when the new backend errs on more than 1% of its requests (and at least once), or its median
        latency is over 3x the old one's and over 50 ms, during the window."""
        start_requests, start_errors = backend.requests, backend.errors
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, seconds))
            if backend.process is not None and backend.process.returncode is not None:
                raise RolloutFailed(
                    f"version {backend.version} exited during the watch window: {last_line(backend.log)}"
                )
            requests = backend.requests - start_requests
            errors = backend.errors - start_errors
            if errors >= 1 and errors > 0.01 * requests:
                raise RolloutFailed(
                    f"version {backend.version} failed {errors} of {requests} requests in the watch window"
                )
        new_p50 = _median(backend.latencies)
        old_p50 = _median(baseline.latencies) if baseline is not None else None
        if new_p50 is not None and old_p50 is not None and new_p50 > 3 * old_p50 and new_p50 > 0.05:
            raise RolloutFailed(
                f"version {backend.version}'s median latency {new_p50 * 1000:.0f} ms is over 3x version "
                f"{baseline.version}'s {old_p50 * 1000:.0f} ms"
            )

    # rollout ----------------------------------------------------------------------------------------------------
    async def rollout(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Deploy one bundle (see the module docstring); the result says what happened."""
        async with self.lock:
            return await self._rollout(spec)

    async def _rollout(self, spec: dict[str, Any]) -> dict[str, Any]:
        """:meth:`rollout`, with the lock held."""
        started = time.time()
        timings: dict[str, float] = {}
        previous = self.stable
        canary = float(spec.get("canary") or 0.0)
        window = float(spec.get("window") if spec.get("window") is not None else self.args.window)
        if self.stopping.is_set():
            return {"name": self.name, "outcome": "refused", "reason": f"the deployment of {self.name} is stopping"}
        one_at_a_time = bool(getattr(self.args, "replace", False))
        if spec.get("replace") and not one_at_a_time:
            return {"name": self.name, "outcome": "refused", "reason": f"{self.name} is deployed blue/green; "
                    f"`mlops-nb deploy {self.name} --stop` first to deploy it with --replace"}  # fmt: skip
        if canary and one_at_a_time:
            return {"name": self.name, "outcome": "refused", "reason": f"{self.name} is deployed with --replace (one "
                    "server at a time): there is no old server to split traffic with; drop --canary"}  # fmt: skip
        manifest = json.loads((Path(spec["path"]) / "manifest.json").read_text(encoding="utf-8"))
        if previous is not None and previous.bundle == spec["bundle"] and not spec.get("force"):
            result = self._result(spec, "unchanged", started, timings, previous, None)
            return result
        new = None
        replace = bool(getattr(self.args, "replace", False)) and previous is not None
        try:
            if replace:  # one server at a time (a small machine): the old one drains and stops first
                self.stable = None
                mark = time.perf_counter()
                await self.stop_server(previous)
                timings["drain"] = time.perf_counter() - mark
            mark = time.perf_counter()
            new = await self.start_server(spec)
            timings["start"] = time.perf_counter() - mark
            mark = time.perf_counter()
            await self.smoke_test(new, manifest)
            timings["smoke"] = time.perf_counter() - mark
            mark = time.perf_counter()
            if canary > 0 and previous is not None and not replace:
                self.canary, self.canary_share = new, canary / 100.0
                await self.watch_window(new, window, previous)
                self.stable, self.canary, self.canary_share = new, None, 0.0
            else:
                self.stable = new
                await self.watch_window(new, window, None if replace else previous)
            timings["watch"] = time.perf_counter() - mark
        except Exception as failed:  # noqa: BLE001 - any failed step: the new server goes, traffic stays
            if not isinstance(failed, RolloutFailed):
                failed = RolloutFailed(
                    f"version {spec['version']} could not be rolled out: {type(failed).__name__}: {failed}"
                )
            if self.canary is new:
                self.canary, self.canary_share = None, 0.0
            if self.stable is new:
                self.stable = None if replace else previous  # the old server is gone when it was replaced: 503
            if new is not None:
                await self.stop_server(new)
            reason = str(failed)
            if replace:  # the old server was stopped first: start it again (it passed its smoke test before)
                try:
                    self.stable = await self.start_server(previous.spec())
                except RolloutFailed as again:
                    reason += f"; and version {previous.version} could not be restarted: {again}"
                self.write_state()
            result = self._result(spec, "rolled_back", started, timings, previous, reason)
            await self._record(spec, result)
            return result
        mark = time.perf_counter()
        if previous is not None:
            self.history.append(previous.spec())
            if not replace:
                await self.stop_server(previous)
        if not replace:
            timings["drain"] = time.perf_counter() - mark
        self.pinned = bool(spec.get("pin"))
        self.pinned_from = spec.get("pinned_from") if self.pinned else None
        result = self._result(spec, "deployed", started, timings, previous, None)
        self.write_state()
        await self._record(spec, result)
        return result

    def _result(self, spec, outcome, started, timings, previous, reason) -> dict[str, Any]:
        result = {
            "name": self.name,
            "outcome": outcome,
            "version": spec["version"],
            "bundle": spec["bundle"],
            "previous": previous.version if previous is not None else None,
            "serving": self.stable.version if self.stable is not None else None,
            "url": f"http://{self.args.host}:{self.args.port}",
            "reason": reason,
            "canary": spec.get("canary"),
            "trigger": spec.get("trigger", "api"),
            "watch": self.watch_alias,
            "started": started,
            "seconds": round(time.time() - started, 3),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        self.last = result
        return result

    async def _record(self, spec: dict[str, Any], result: dict[str, Any]) -> None:
        """The rollout as a run of kind ``deploy`` (its step reads the bundle), written by a child process
        (:mod:`mlops_nb.serving.record`): the supervisor itself never loads DuckDB and stays small."""
        rollout = json.dumps({"spec": {k: v for k, v in spec.items() if k != "window"}, "result": result}, default=str)
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mlops_nb.serving.record", "--home", str(self.home),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                out, err = await asyncio.wait_for(child.communicate(rollout.encode()), timeout=120)
            except BaseException:  # the time ran out, or the rollout was cancelled: the child goes with it
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await asyncio.shield(child.wait())
                raise
        except TimeoutError:  # a busy store must not undo a rollout; the reason is kept
            result["run_id"] = None
            result["record_error"] = "the record took over 120 s (the metadata store stayed busy) and was stopped"
            return
        except OSError as exc:
            result["run_id"] = None
            result["record_error"] = f"could not start the record process: {exc.strerror or exc}"
            return
        said = [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()]
        if child.returncode == 0 and said:
            result["run_id"] = said[-1]  # the last line: anything a library printed first is not the id
        else:
            result["run_id"] = None
            said = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
            result["record_error"] = said[-1][:300] if said else f"exit status {child.returncode}"

    async def rollback(self, trigger: str = "cli") -> dict[str, Any]:
        """Deploy the version served before the current one, pinned until the alias moves again."""
        async with self.lock:  # the history read, the rollout and the history written as one
            if not self.history:
                reason = f"{self.name} has no earlier version to roll back to"
                return {"name": self.name, "outcome": "refused", "reason": reason}
            spec = dict(self.history[-1])
            alias_version = await asyncio.to_thread(self._alias_version)
            spec.update(trigger=trigger, pin=True, pinned_from=alias_version, fired_by="rollback", window=0)
            result = await self._rollout(spec)
            if result["outcome"] == "deployed":
                self.history = self.history[:-2]  # the version now served, and the one it replaced
                self.write_state()
            return result

    # watching the alias ------------------------------------------------------------------------------------------
    def _alias_version(self) -> int | None:
        if not self.watch_alias:
            return None
        return self.project.registry.alias_version(self.name, self.watch_alias)

    async def watch(self) -> None:
        """Roll out the alias' version whenever it moves (unless a rollback pinned the current one), once it was
        seen there on two looks a poll apart. A version whose build or rollout failed is not tried again until the
        alias moves to another; whatever fails is kept in the status' ``last``, and the watch goes on."""
        failed: int | None = None
        moved_to: int | None = None  # a version the alias was seen to move to, rolled out once seen there again
        while not await self.stopped_within(self.args.poll):
            if self.lock.locked():  # a rollout is under way (the deploy that started us): look again after it
                continue
            try:
                version = await asyncio.to_thread(self._alias_version)
                serving = self.stable.version if self.stable is not None else None
                failed_here = version == failed and self.stable is not None  # nothing serving: try it again
                if (
                    version is None
                    or version == serving
                    or failed_here
                    or (self.pinned and version == self.pinned_from)
                ):
                    moved_to = None
                    continue
                if version != moved_to:  # settled first: one more look a poll later (the command that moved it
                    moved_to = version  # ends meanwhile, so its process and the build's never overlap)
                    continue
                spec = await asyncio.to_thread(self._build, version)
                if spec is None:
                    failed = version
                    continue
                spec.update(
                    trigger="watch", fired_by=f"{self.name}@{self.watch_alias} -> v{version}", alias=self.watch_alias
                )
                result = await self.rollout(spec)
                failed = version if result["outcome"] == "rolled_back" else None
            except Exception as exc:  # noqa: BLE001 - a busy registry, a bad build answer: next time, and say so
                self.last = {"name": self.name, "outcome": "watch_error", "reason": f"{type(exc).__name__}: {exc}"}

    def follow(self, alias: str) -> None:
        """Follow ``alias`` from now on (a deployment started without ``--watch`` can be told later)."""
        self.watch_alias = alias
        if self.watcher is None or self.watcher.done():
            self.watcher = asyncio.ensure_future(self.watch())

    def _build(self, version: int) -> dict[str, Any] | None:
        """Build (or reuse) the bundle of a version in a child process (the registry imports MLflow)."""
        command = [sys.executable, "-m", "mlops_nb.ui.cli", "--home", str(self.home), "build", f"{self.name}/{version}",
                   "--json", "--trigger", "watch"]  # fmt: skip
        for ref in self._features():  # the online features the deployment looks up stay looked up
            command += ["--feature", ref]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            self.last = {"name": self.name, "outcome": "build_failed", "version": version,
                         "reason": (done.stderr.strip().splitlines() or ["?"])[-1]}  # fmt: skip
            return None
        built = json.loads(done.stdout)
        return {
            "version": built["version"],
            "bundle": built["bundle"],
            "path": built["path"],
            "build_id": built["build_id"],
        }

    def _features(self) -> list[str]:
        if self.stable is None:
            return []
        try:
            manifest = json.loads((Path(self.stable.path) / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return list(manifest.get("features") or [])

    # state ------------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What the supervisor serves now."""
        return {
            "name": self.name,
            "pid": os.getpid(),
            "host": self.args.host,
            "port": self.args.port,
            "url": f"http://{self.args.host}:{self.args.port}",
            "control_port": self.control_port,
            "watch": self.watch_alias,
            "replace": bool(getattr(self.args, "replace", False)),
            "pinned": self.pinned,
            "restarts": self.restarts,
            "stable": self.stable.to_dict() if self.stable else None,
            "canary": {**self.canary.to_dict(), "share": self.canary_share} if self.canary else None,
            "history": list(self.history),
            "last": self.last,
            "started": self.args.started,
        }

    def _state(self) -> dict[str, Any]:
        return {**self.status(), "token": self.token}

    def write_state(self) -> None:
        """Write the status to the state file atomically (``--status`` from any shell reads it)."""
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the control token
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self._state(), handle, indent=2, default=str)
        os.replace(tmp, self.state_path)

    async def shutdown(self) -> None:
        """Stop every server (draining them) and end."""
        async with self.lock:
            self.stopping.set()
            serving, canary = self.stable, self.canary
            self.stable = self.canary = None  # new requests get 503 "stopping"; in-flight ones finish
            await self.stop_server(canary)
            await self.stop_server(serving)


def _same(got: Any, expected: Any) -> bool:
    if not isinstance(got, list) or not isinstance(expected, list) or len(got) != len(expected):
        return False
    for a, b in zip(got, expected, strict=True):
        if isinstance(a, float) or isinstance(b, float):
            try:
                if abs(float(a) - float(b)) > 1e-6 * max(1.0, abs(float(b))):
                    return False
            except (TypeError, ValueError):
                return False
        elif a != b:
            return False
    return True


def _median(values) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


async def _serve(args: argparse.Namespace) -> int:
    supervisor = Supervisor(args)
    supervisor.session = ClientSession(
        connector=TCPConnector(limit=0, ttl_dns_cache=None), timeout=ClientTimeout(total=60)
    )

    router = web.Server(supervisor.route)
    runner = web.ServerRunner(router, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port, reuse_address=True).start()
    except OSError as exc:
        print(
            f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; choose another --port", flush=True
        )
        await supervisor.session.close()
        return 2

    @web.middleware
    async def guard(request: web.Request, handler):
        # the control port is for the deploy commands only: they read the token from the 0600 state file, and a
        # browser page cannot send the header (nor JSON) cross-site without a preflight this port never answers
        if request.headers.get(TOKEN_HEADER) != supervisor.token:
            return web.json_response({"outcome": "refused", "reason": "missing or wrong control token"}, status=403)
        if request.method == "POST" and request.content_type != "application/json":
            return web.json_response({"outcome": "refused", "reason": "send application/json"}, status=415)
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - the command gets the reason, the supervisor goes on
            reason = f"{type(exc).__name__}: {exc}"
            return web.json_response({"name": supervisor.name, "outcome": "error", "reason": reason}, status=500)

    control = web.Application(middlewares=[guard])

    async def status(request: web.Request) -> web.Response:
        return web.json_response(supervisor.status())

    async def deploy(request: web.Request) -> web.Response:
        spec = await request.json()
        if spec.get("watch"):
            supervisor.follow(spec["watch"])
        return web.json_response(await supervisor.rollout(spec))

    async def rollback(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        trigger = body.get("trigger") if body.get("trigger") in ("api", "cli", "rest", "watch") else "cli"
        return web.json_response(await supervisor.rollback(trigger))

    async def stop(request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(supervisor.shutdown()))
        return web.json_response({"name": supervisor.name, "outcome": "stopping"})

    control.add_routes(
        [
            web.get("/status", status),
            web.post("/deploy", deploy),
            web.post("/rollback", rollback),
            web.post("/stop", stop),
        ]
    )
    control_runner = web.AppRunner(control, handle_signals=False, access_log=None)
    await control_runner.setup()
    control_site = web.TCPSite(control_runner, "127.0.0.1", 0)
    await control_site.start()
    supervisor.control_port = control_site._server.sockets[0].getsockname()[1]
    supervisor.write_state()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(supervisor.shutdown()))
    if args.watch:
        supervisor.follow(args.watch)
    keeper = asyncio.ensure_future(supervisor.keep_alive())
    print(
        f"router for {args.name} on http://{args.host}:{args.port} (control port {supervisor.control_port})", flush=True
    )
    await supervisor.stopping.wait()
    keeper.cancel()
    if supervisor.watcher is not None:
        supervisor.watcher.cancel()
    await runner.cleanup()
    await control_runner.cleanup()
    await supervisor.session.close()
    with contextlib.suppress(FileNotFoundError):
        supervisor.state_path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a deployment supervisor (started by ``mlops-nb deploy``; not meant to be run by hand)."""
    parser = argparse.ArgumentParser(prog="python -m mlops_nb.serving.router", description=main.__doc__)
    parser.add_argument("--name", required=True, help="the model deployed")
    parser.add_argument("--home", required=True, help="the project home")
    parser.add_argument("--state", required=True, help="the state file")
    parser.add_argument("--host", default="127.0.0.1", help="the stable address' host")
    parser.add_argument("--port", type=int, required=True, help="the stable address' port")
    parser.add_argument("--predictions", required=True, help="the prediction log folder")
    parser.add_argument("--features", default=None, help="the feature store folder")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server")
    parser.add_argument("--window", type=float, default=2.0, help="seconds to watch a new version")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds a server has to start")
    parser.add_argument("--watch", default=None, help="an alias to follow")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the alias")
    parser.add_argument("--replace", action="store_true", help="stop the old server before starting the new one")
    args = parser.parse_args(argv)
    args.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    return asyncio.run(_serve(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
