"""A template process that forks warm kernels: the notebook's imports are paid once per pool, not once per step.

The ``dag`` and ``dask`` executors run every step in a fresh kernel (isolation). Started the usual way, each kernel
boots Python, ipykernel and the setup cells' imports again — for pandas and scikit-learn that is ~2 s of CPU per
step. Instead, a *template* process started with the kernel's own Python imports ipykernel and the modules the setup
cells import (third-party and standard library only: never the notebook's own modules, which may change), and then
forks on request: the child becomes the kernel (``IPKernelApp`` on the connection file jupyter_client wrote), in a
fresh namespace, with its own session, environment and working folder. The setup cells still run in every kernel;
their imports are then dictionary look-ups.

Protocol (one JSON object per line): the driver writes ``{"argv", "cwd", "env", "stderr"}``, the template forks and
answers ``{"pid": N}``. The template reaps its children, and when its stdin closes (the driver exited or closed the
pool) or its parent changes (the driver was killed while a process it forked still holds the stdin open: a Dask
worker killed mid-step) it kills them and exits, so a killed driver leaves no kernels behind.

With ``once`` (the ``notebook`` executor's one kernel), the template does not fork: asked for its kernel, it becomes
that kernel itself. It is started before the run needs it, so its imports overlap the driver's own work, and it is
one process, not a template and a copy of it sharing pages (the memory of one kernel, however it is counted).

Forking is like ``multiprocessing``'s forkserver with preloaded modules. Libraries that start threads or hold devices
at import (CUDA) are not fork-safe: ``MLOPS_NB_FORK_KERNELS=0`` (or ``fork_kernels = false`` in
``[tool.mlops_nb]``) starts every kernel the usual way.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time

# what every kernel of the dag/dask executors imports, besides the setup cells' own imports: what IPKernelApp
# imports as it starts, runs cells and shuts down (none starts a thread at import), and the ``%load_ext mlops_nb``
# of every pipeline notebook (a module imported after the fork costs every kernel its CPU: ~13 ms for these)
ALWAYS = [
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.debugger",
    "IPython.core.completerlib",
    "pdb",
    "sqlite3",
    "tornado.queues",
    "mlops_nb.engine.executors.worker",
    "mlops_nb.engine.step",
    "mlops_nb.engine.cache",
    "mlops_nb.store.artifacts",
    "mlops_nb.pipeline.notebook",
    "mlops_nb.ui.magics",
    "mlops_nb.ui.progress",
    "IPython.core.magics.extension",
    "IPython.core.oinspect",
    "IPython.core.logger",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "tornado.platform.asyncio",
    "faulthandler",
    "psutil",
]


def _warm_up() -> None:
    """Fill the caches each kernel would otherwise fill again after the fork: the compiled regular expressions of
    ``tokenize`` and of IPython's input transformers, which every cell goes through (~6 ms a kernel)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        TransformerManager().transform_cell('%ls\nx = 1  # a\ny = """b"""\n')
    except Exception:  # noqa: BLE001 - an IPython without it: each kernel compiles them itself
        pass


def imported_modules(sources: list[str], folder: str) -> list[str]:
    """The modules the given cells import, in order, leaving out those found in ``folder`` (the notebook's own).

    IPython syntax (``%magic``, ``!shell``) is skipped line by line; a cell that still does not parse adds nothing.
    """
    names: list[str] = []
    for source in sources:
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
                names.extend(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
    local = {
        os.path.splitext(entry)[0] for entry in (os.listdir(folder) if os.path.isdir(folder) else []) if entry[0] != "."
    }
    seen: dict[str, None] = {}
    for name in names:
        if name.split(".")[0] not in local:
            seen.setdefault(name, None)
    return list(seen)


class Template:
    """The driver's side: starts the template process and asks it for kernels.

    Args:
        python: the kernel's Python executable (from its kernel spec).
        cwd: the kernels' working folder (the notebook's).
        preload: modules to import in the template (see :func:`imported_modules`).
        env: the template's environment (the kernels get theirs with each request).
        once: serve one kernel by becoming it (no fork); asked again, it refuses.
    """

    def __init__(self, python: str, cwd: str, preload: list[str], env: dict[str, str], once: bool = False):
        self._lock = threading.Lock()
        self.error: str | None = None
        self.once = once
        self._process = subprocess.Popen(
            [python, "-m", __name__, json.dumps([*ALWAYS, *preload]), *(["--once"] if once else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches the driver, which closes the pool
        )
        self._ready = False

    def spawn(self, argv: list[str], cwd: str, env: dict[str, str], stderr: bool = False) -> int:
        """Fork a kernel that runs ``ipykernel_launcher`` with ``argv``; return its pid. Raises OSError when the
        template is not (or no longer) usable."""
        with self._lock:
            if self.error:
                raise OSError(self.error)
            try:
                if not self._ready:
                    line = self._process.stdout.readline()
                    if line.strip() != b"ready":
                        raise OSError("the kernel template did not start")
                    self._ready = True
                request = {"argv": list(argv), "cwd": cwd, "env": dict(env), "stderr": stderr}
                self._process.stdin.write(json.dumps(request).encode() + b"\n")
                self._process.stdin.flush()
                answer = json.loads(self._process.stdout.readline() or b"{}")
                if "pid" not in answer:
                    raise OSError(answer.get("error", "the kernel template exited"))
                if self.once:
                    self.error = "the kernel template became its one kernel"
                return int(answer["pid"])
            except (OSError, ValueError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                raise OSError(self.error) from None

    def close(self) -> None:
        """Stop the template; it kills the kernels it forked that still run (with ``once``: the kernel it became,
        if it still runs)."""
        if self.once and self._process.poll() is None:  # its kernel, or a template no longer needed: no wait
            self._process.kill()
        try:
            self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# --- the template process itself -------------------------------------------------------------------------------


def _child(request: dict, forked: bool = True) -> None:
    """In the forked child (or, not ``forked``, the template itself): become a kernel. Never returns."""
    code = 1
    try:
        if forked:  # the template was started in a session of its own
            os.setsid()  # its own process group, which jupyter_client signals, as for a kernel it started itself
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # the template's pipe must close when the template's side does
        if not request.get("stderr"):
            os.dup2(null, 2)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # the kernel exits when its parent does (the template; with ``once`` the driver): given on the command line,
        # since IPKernelApp read JPY_PARENT_PID for its default when the template imported it
        os.environ["JPY_PARENT_PID"] = str(os.getppid())
        argv = [*request["argv"], f"--IPKernelApp.parent_handle={os.getppid()}"]
        sys.path[0] = request["cwd"]
        if "numpy" in sys.modules:  # a fresh process seeds numpy's global generator from the OS, so do we
            sys.modules["numpy"].random.seed()
        sys.argv = ["ipykernel_launcher", *argv]
        import gc

        gc.enable()
        from ipykernel import kernelapp

        kernelapp.launch_new_instance(argv=argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:  # noqa: BLE001 - the kernel's own failure; the driver sees a dead kernel
        code = 1
    finally:
        os._exit(code)


def main() -> None:
    """Import the preload list, say ``ready``, then fork one kernel per request until stdin closes (``--once``:
    become the kernel of the first request)."""
    import gc
    import importlib

    gc.disable()  # no collection while importing: it would only touch (and later copy) the template's pages
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as a kernel would set it
    for name in json.loads(sys.argv[1]) if len(sys.argv) > 1 else []:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - not a module (an attribute) or failing: the kernel will say so
            pass
    _warm_up()
    try:  # what a step's first artifact read or write would otherwise look up in every kernel
        from mlops_nb.store.artifacts import serializers

        serializers.load_plugins()
    except Exception:  # noqa: BLE001 - a broken plugin: the kernel reports it where it is used
        pass
    children: set[int] = set()

    def reap(signum, frame) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)

    def stop() -> None:
        for pid in list(children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)  # no interpreter shutdown: tearing the preloaded modules down takes longer than the rest

    def watch(parent: int) -> None:  # stdin stays open while any copy of its write end lives (a process the
        while True:  # driver forked): a killed driver is also seen as this process being reparented
            time.sleep(1.0)
            if os.getppid() != parent:
                stop()

    once = "--once" in sys.argv[2:]
    if not once:  # a kernel it became watches its parent itself (IPKernelApp.parent_handle)
        threading.Thread(target=watch, args=(os.getppid(),), daemon=True, name="mlops_nb-parent-watch").start()
    gc.freeze()  # the imported objects move out of the collector's sight: a kernel's collections skip them,
    # so forked kernels neither spend time on them nor copy the pages they live on
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            sys.stdout.flush()
            if once:
                out.write(json.dumps({"pid": os.getpid()}).encode() + b"\n")
                out.flush()
                _child(request, forked=False)
            pid = os.fork()
        except (ValueError, OSError) as exc:
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n")
            out.flush()
            continue
        if pid == 0:
            _child(request)
        children.add(pid)
        out.write(json.dumps({"pid": pid}).encode() + b"\n")
        out.flush()
    stop()


if __name__ == "__main__":
    main()
