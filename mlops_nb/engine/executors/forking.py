"""jupyter_client's side of forked kernels: a provisioner that asks a :class:`~.template.Template` for the kernel
process instead of starting one, and the kernel manager that installs it.

Everything else — the connection file, the ZMQ channels, interrupts, shutdown, restarts — is jupyter_client's own
(:class:`LocalProvisioner`); only ``launch_kernel`` differs, and it falls back to the usual launch when the template
cannot serve (a kernel spec that is not ``python -m ipykernel_launcher``, or a template that failed to start).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from queue import Empty
from typing import Any

import psutil
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import DottedObjectName, Float, Type

from .template import Template


def forkable(argv: list[str]) -> bool:
    """Whether a kernel spec's command is one a template can fork (``PYTHON -m ipykernel_launcher ...``)."""
    return len(argv) >= 3 and argv[1:3] == ["-m", "ipykernel_launcher"]


class ForkedProcess:
    """The ``Popen``-like handle jupyter_client keeps for a kernel forked by the template (not our child)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._process = None

    def poll(self) -> int | None:
        """None while the kernel runs, else an exit code (the template reaped it: the real code is not known)."""
        if self.returncode is None:
            try:
                alive = self._process is not None and self._process.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            if not alive:
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Block until the kernel is gone."""
        if self._process is not None and self.poll() is None:
            try:
                self._process.wait(timeout)
            except psutil.NoSuchProcess:
                pass
        code = self.poll()
        return 0 if code is None else code

    def send_signal(self, signum: int) -> None:
        """Signal the kernel alone."""
        os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)


class ForkProvisioner(LocalProvisioner):
    """A :class:`LocalProvisioner` whose kernel process is forked from a warm template."""

    template: Template | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        """Fork the kernel from the template; the usual launch when the template cannot serve."""
        if self.template is None or not forkable(cmd):
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        try:
            pid = await asyncio.to_thread(self.template.spawn, cmd[3:], cwd, env, kwargs.get("stderr") is None)
        except OSError:
            return await super().launch_kernel(cmd, **kwargs)
        self.process = ForkedProcess(pid)
        self.pid = self.pgid = pid  # the child called setsid(): its group is its pid
        self.cwd = cwd
        return self.connection_info


class ReadyClient(AsyncKernelClient):
    """A kernel client that knows sooner when a new kernel is ready.

    jupyter_client's ``wait_for_ready`` asks for ``kernel_info`` and then waits 0.2 s for a message on IOPub, to be
    sure the subscription is live (ZMQ drops what a PUB socket sends before a subscriber joined); when the kernel's
    status message went out too early, the 0.2 s are lost and it asks again. This client asks again after 20 ms,
    and its sockets retry a connection every 10 ms (ZMQ's default is 100 ms) while the kernel is not yet listening.
    The guarantee is the same: it returns once a reply and an IOPub message have both arrived.

    It opens only the channels nbclient uses, shell and IOPub: nbclient runs cells with stdin off, and it knows a
    kernel is alive from its manager (the process), not from the heartbeat, whose thread and socket per kernel
    cost the driver ~1 ms of CPU a kernel.
    """

    def start_channels(
        self, shell: bool = True, iopub: bool = True, stdin: bool = False, hb: bool = False, control: bool = False
    ) -> None:
        """Start the channels asked for: by default shell and IOPub only."""
        super().start_channels(shell=shell, iopub=iopub, stdin=stdin, hb=hb, control=control)

    def stop_channels(self) -> None:
        """Stop the channels that were started (jupyter_client's would first create the others to ask them)."""
        for channel in (
            self._shell_channel,
            self._iopub_channel,
            self._stdin_channel,
            self._hb_channel,
            self._control_channel,
        ):
            if channel is not None and channel.is_alive():
                channel.stop()
        if self._created_context and not self.context.closed:
            self.context.destroy(linger=100)

    def _context_default(self):
        import zmq
        import zmq.asyncio

        self._created_context = True
        context = zmq.asyncio.Context()
        # the client connects before a new kernel has bound its sockets; ZMQ retries a failed connect after
        # RECONNECT_IVL (100 ms by default), which would be most of a forked kernel's start
        context.setsockopt(zmq.RECONNECT_IVL, 10)
        return context

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        self.kernel_info()
        asked = time.monotonic()
        while True:
            try:  # short polls: a kernel that died while starting is noticed within 50 ms
                reply = await self.shell_channel.get_msg(timeout=0.05)
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                try:
                    await self.iopub_channel.get_msg(timeout=0.02)
                except Empty:  # IOPub not subscribed yet when the kernel's status went out: ask again
                    asked = 0.0
                else:
                    self._handle_kernel_info_reply(reply)
                    while True:  # drop what else IOPub holds from the probes
                        try:
                            await self.iopub_channel.get_msg(timeout=0.005)
                        except Empty:
                            return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")
            if time.monotonic() - asked > 1.0:
                self.kernel_info()
                asked = time.monotonic()

    wait_for_ready = _async_wait_for_ready


class ForkingKernelManager(AsyncKernelManager):
    """An async kernel manager whose kernels come from ``template`` (set it before starting the kernel).

    Without a template it starts kernels as jupyter_client does, and still knows sooner that one is ready
    (:class:`ReadyClient`) or gone (10 ms polls): the ``notebook`` executor's papermill runs use it too.
    """

    template: Template | None = None
    client_class = DottedObjectName(f"{__name__}.ReadyClient")
    client_factory = Type(ReadyClient, klass=AsyncKernelClient)
    # A kernel asked to shut down sometimes does not exit (ipykernel 7, 1 run in 3 here): jupyter_client waits half
    # of this before it sends SIGTERM. 5 s by default, which made ~2.5 s stalls at the end of headless runs.
    shutdown_wait_time = Float(
        1.0, config=True, help="seconds to wait for a kernel to shut down before terminating it (twice half)"
    )

    async def _async_send_kernel_sigterm(self, restart: bool = False) -> None:
        """A kernel that did not exit when asked is killed rather than sent SIGTERM, which ipykernel would print
        as a KeyboardInterrupt error on the run's stderr (its atexit hooks had their turn: it was asked first)."""
        await self._async_kill_kernel(restart=restart)

    async def _async_pre_start_kernel(self, **kw: Any):
        if self.provisioner is None and self.template is not None:
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            provisioner = ForkProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
            provisioner.template = self.template
            self.provisioner = provisioner
        return await super()._async_pre_start_kernel(**kw)

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        # a kernel shut down gracefully is gone in a few ms: poll at 10 ms, not jupyter_client's 100 ms
        await super()._async_wait(pollinterval=min(pollinterval, 0.01))
