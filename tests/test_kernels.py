"""Warm kernels forked from a template process (``executors/template.py``, ``executors/forking.py``): real kernels,
real fork, real processes killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from nbtools import copy_quickstart

import mlops_nb
from mlops_nb.engine.executors.kernels import KernelPool, KernelSetup
from mlops_nb.engine.executors.template import imported_modules

PREAMBLE = ("import os\nimport numpy as np\nimport helpers", "%load_ext mlops_nb\nLIMIT = 3")
PROBE = (
    "import json, sys\n"
    "print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'cwd': os.getcwd(), 'rand': float(np.random.rand()),"
    " 'leak': 'leak' in globals(), 'env': os.environ.get('PROBE_ENV'), 'helper': helpers.VALUE,"
    " 'numpy_preloaded': 'numpy' in sys.modules}))\n"
    "leak = 1"
)


def probe(pool: KernelPool) -> dict:
    executed = pool.run([PROBE])
    assert executed.status == "succeeded", executed.error
    return json.loads(executed.cells[-1]["outputs"][0]["text"])


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "helpers.py").write_text("VALUE = 'from the notebook folder'\n")
    return tmp_path


def test_imported_modules_of_setup_cells(tmp_path):
    (tmp_path / "helpers.py").write_text("")
    (tmp_path / "localpkg").mkdir()
    cells = [
        "%load_ext mlops_nb\nimport pandas as pd, numpy\nfrom sklearn.linear_model import LogisticRegression",
        "import helpers\nfrom localpkg import thing\nfrom . import rel\n!pip list",
        "def f(:\n  broken",  # does not parse: adds nothing
        "from os.path import *\nimport os.path",
    ]
    assert imported_modules(cells, str(tmp_path)) == [
        "pandas",
        "numpy",
        "sklearn.linear_model",
        "sklearn.linear_model.LogisticRegression",
        "os.path",
    ]


@pytest.mark.slow
def test_forked_kernels_are_fresh_isolated_processes(folder):
    with KernelPool(KernelSetup(PREAMBLE, str(folder), {"PROBE_ENV": "given"}), 2) as pool:
        assert pool.template is not None
        first, second, third = probe(pool), probe(pool), probe(pool)
        assert len(os.listdir(pool.sockets)) >= 3  # a private socket folder per kernel, inside the pool's
    assert not os.path.exists(pool.sockets)  # closing the pool removes its kernels' socket folders
    template_pid = first["ppid"]
    assert template_pid != os.getpid()  # forked by the template, not started by this process
    assert len({first["pid"], second["pid"], third["pid"]}) == 3  # a kernel per step
    for seen in (first, second, third):
        assert seen["ppid"] == template_pid
        assert seen["cwd"] == str(folder) and seen["env"] == "given" and seen["helper"] == "from the notebook folder"
        assert seen["leak"] is False  # nothing of an earlier step's namespace
    assert len({first["rand"], second["rand"], third["rand"]}) == 3  # numpy's global generator is reseeded
    assert not psutil.pid_exists(template_pid)  # closing the pool stops the template
    kernels = []
    for seen in (first, second, third):
        try:
            kernels.append(psutil.Process(seen["pid"]))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(kernels, timeout=10)
    assert all(k.status() == psutil.STATUS_ZOMBIE for k in alive if k.is_running()), alive


@pytest.mark.slow
def test_fork_off_starts_kernels_from_scratch(folder):
    with KernelPool(KernelSetup(PREAMBLE, str(folder), {"PROBE_ENV": "given"}, fork=False), 1) as pool:
        assert pool.template is None
        seen = probe(pool)
    assert seen["ppid"] == os.getpid() and seen["helper"] == "from the notebook folder"


@pytest.mark.slow
def test_a_template_that_died_falls_back_to_usual_kernels(folder):
    with KernelPool(KernelSetup(PREAMBLE, str(folder)), 1) as pool:
        first = probe(pool)
        os.kill(first["ppid"], signal.SIGKILL)  # the template; the warm kernel it forked exits within a second
        for _ in range(10):  # a step may still land on that kernel and lose it: the pool then starts another
            executed = pool.run([PROBE])
            assert executed.status in ("succeeded", "died"), executed.error
            if executed.status == "succeeded":
                seen = json.loads(executed.cells[-1]["outputs"][0]["text"])
                if seen["ppid"] == os.getpid():
                    break
            time.sleep(0.5)
        else:
            pytest.fail("no kernel started the usual way after the template died")
        after = probe(pool)
    assert first["ppid"] != os.getpid()
    assert after["ppid"] == os.getpid() and after["helper"] == "from the notebook folder"
    assert seen["leak"] is False and after["leak"] is False


@pytest.mark.slow
def test_a_killed_driver_leaves_no_kernel_behind(folder):
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from mlops_nb.engine.executors.kernels import KernelPool, KernelSetup
        pool = KernelPool(KernelSetup({PREAMBLE!r}, {str(folder)!r}), 2)
        executed = pool.run([{PROBE!r}])
        print(executed.cells[-1]["outputs"][0]["text"], flush=True)
        time.sleep(600)
        """
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=folder)
    try:
        seen = json.loads(driver.stdout.readline())
        template = psutil.Process(seen["ppid"])
        warm = template.children()  # the spare warm kernels
        assert warm
    finally:
        driver.kill()
        driver.wait()
    gone, alive = psutil.wait_procs([template, *warm], timeout=15)
    assert not alive, f"still running after the driver was killed: {alive}"


@pytest.mark.slow
def test_dag_run_is_the_same_with_and_without_fork(tmp_path, monkeypatch):
    runs = {}
    for fork in ("1", "0"):
        monkeypatch.setenv("MLOPS_NB_FORK_KERNELS", fork)
        nb = copy_quickstart(tmp_path / f"fork{fork}")
        runs[fork] = mlops_nb.run(nb, {"n_rows": 600}, "dag", progress=False)
    for run in runs.values():
        assert {s.status for s in run.step_runs} == {"succeeded"}
    hashes = {f: {s.step: {k: r.hash for k, r in s.outputs.items()} for s in r.step_runs} for f, r in runs.items()}
    assert hashes["1"] == hashes["0"]
    assert runs["1"].metrics == runs["0"].metrics


def test_fork_kernels_setting(tmp_path, monkeypatch):
    from mlops_nb import Project
    from mlops_nb.exceptions import ConfigError

    assert Project(tmp_path).settings.fork_kernels is True
    (tmp_path / "pyproject.toml").write_text("[tool.mlops_nb]\nfork_kernels = false\n")
    assert Project(tmp_path).settings.fork_kernels is False
    monkeypatch.setenv("MLOPS_NB_FORK_KERNELS", "yes")
    assert Project(tmp_path).settings.fork_kernels is True
    monkeypatch.setenv("MLOPS_NB_FORK_KERNELS", "sometimes")
    with pytest.raises(ConfigError, match="MLOPS_NB_FORK_KERNELS.*expected true or false"):
        Project(tmp_path).settings  # noqa: B018 - loading the settings is the test


def test_template_exits_when_its_stdin_closes(tmp_path):
    template = subprocess.Popen(
        [sys.executable, "-m", "mlops_nb.engine.executors.template", json.dumps(["json"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert template.stdout.readline() == b"ready\n"
    template.stdin.write(b"not json\n")
    template.stdin.flush()
    assert b"error" in template.stdout.readline()  # a bad request is answered, not fatal
    template.stdin.close()
    assert template.wait(10) == 0


def test_the_notebook_executor_s_kernel_is_a_template_that_imported_the_setup_modules(tmp_path, monkeypatch):
    """`mlops-nb run` (notebook executor): its one kernel is a template process started first, which imported the
    setup cell's modules while the driver prepared the run and then became the kernel (one process, a child of
    the driver); with fork_kernels off the kernel starts the usual way. Same outputs; no process outlives the run."""
    from nbtools import write_notebook

    cells = [
        "%load_ext mlops_nb\nimport os, sys\nPRELOADED = 'numpy' in sys.modules\nimport numpy as np",
        "%%mlops step where --outputs where,total\n"
        "where = {'pid': os.getpid(), 'ppid': os.getppid(), 'preloaded': PRELOADED}\n"
        "total = float(np.arange(10).sum())",
    ]
    seen = {}
    for fork in ("1", "0"):
        monkeypatch.setenv("MLOPS_NB_FORK_KERNELS", fork)
        nb = write_notebook(tmp_path / f"fork{fork}" / "nb.ipynb", cells)
        run = mlops_nb.run(nb, executor="notebook", progress=False)
        (step,) = run.step_runs
        assert step.status == "succeeded"
        project = mlops_nb.Project(nb.parent)
        seen[fork] = (project.artifacts.get(step.outputs["where"]), project.artifacts.get(step.outputs["total"]))
    warm, usual = seen["1"][0], seen["0"][0]
    assert warm["ppid"] == usual["ppid"] == os.getpid()
    assert warm["preloaded"] is True and usual["preloaded"] is False
    assert not psutil.pid_exists(warm["pid"]) and not psutil.pid_exists(usual["pid"])
    assert seen["1"][1] == seen["0"][1] == 45.0


@pytest.mark.slow
def test_the_notebook_executor_s_kernel_exits_when_its_driver_is_killed(tmp_path):
    """kill -9 of `mlops-nb run` mid-step: the kernel (the template it became) notices its parent is gone and exits,
    as a kernel jupyter_client started would."""
    from nbtools import write_notebook

    pid_file = tmp_path / "kernel.pid"
    cells = [
        "%load_ext mlops_nb\nimport os, time, pathlib",
        f"%%mlops step wait\npathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\ntime.sleep(120)\ndone = 1",
    ]
    nb = write_notebook(tmp_path / "nb.ipynb", cells)
    exe = Path(sys.executable).with_name("mlops-nb")
    driver = subprocess.Popen([exe, "--home", str(tmp_path), "run", str(nb)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
    assert pid_file.exists(), "the step never started"
    kernel = psutil.Process(int(pid_file.read_text()))
    assert kernel.ppid() == driver.pid
    driver.kill()
    driver.wait()
    gone, alive = psutil.wait_procs([kernel], timeout=15)
    for process in alive:
        process.kill()
    assert not alive, "the kernel outlived its driver"


@pytest.mark.slow
def test_a_forked_kernel_finds_what_every_kernel_imports_preloaded(folder):
    """The template imports what IPython imports as a kernel starts, runs cells and shuts down (``ALWAYS``): a
    module renamed in a new IPython would silently cost every kernel its import again."""
    from mlops_nb.engine.executors.template import ALWAYS

    check = f"import sys\nprint(sorted(m for m in {ALWAYS!r} if m not in sys.modules))"
    with KernelPool(KernelSetup(PREAMBLE, str(folder)), 1) as pool:
        executed = pool.run([check])
    assert executed.status == "succeeded", executed.error
    assert executed.cells[-1]["outputs"][0]["text"].strip() == "[]"


def test_a_step_kernel_client_opens_only_the_channels_nbclient_uses(tmp_path):
    """Shell and IOPub only (no heartbeat thread, no stdin or control socket, not even to stop them), and it still
    knows a killed kernel is gone (from its manager)."""
    import asyncio

    from mlops_nb.engine.executors.forking import ForkingKernelManager
    from mlops_nb.engine.executors.kernels import kernel_config

    async def scenario():
        km = ForkingKernelManager(kernel_name="python3", config=kernel_config(str(tmp_path)))
        await km.start_kernel(cwd=str(tmp_path), extra_arguments=["--HistoryManager.enabled=False"])
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            msg_id = kc.execute("1 + 1")
            reply = await kc.get_shell_msg(timeout=30)
            assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"
            assert kc._hb_channel is None and kc._stdin_channel is None and kc._control_channel is None
            os.kill(km.provisioner.process.pid, signal.SIGKILL)  # killed from outside, as out of memory would
            deadline = time.monotonic() + 10
            while await kc.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not await kc.is_alive()
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        assert kc._hb_channel is None and kc._stdin_channel is None and kc._control_channel is None

    asyncio.run(scenario())
