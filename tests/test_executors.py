"""The dag and dask executors on real kernels and a real Dask cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from nbtools import copy_quickstart, write_notebook

import mlops_nb
from mlops_nb import MlopsError, Project
from mlops_nb.ui.cli import cli

pytestmark = pytest.mark.slow


def statuses(run) -> dict[str, str]:
    return {s.step: s.status for s in run.step_runs}


def output_hashes(run) -> dict[str, dict[str, str]]:
    return {s.step: {k: r.hash for k, r in s.outputs.items()} for s in run.step_runs}


@contextlib.contextmanager
def dask_cluster(folder: Path, nthreads: int, env: dict | None = None):
    """A `dask scheduler` on a free loopback port and one `dask worker` (under its nanny); yields the address.

    The scheduler writes its address to a file once it listens: waiting for that file (not a fixed port and a
    10 s connect timeout) is what keeps this from failing on a busy machine.
    """
    bin_dir = Path(sys.executable).parent
    scheduler_file = folder / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen(
        [bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        + ["--scheduler-file", str(scheduler_file)],
        **quiet,
    )
    processes = [scheduler]
    try:
        deadline = time.time() + 120
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert scheduler.poll() is None and time.time() < deadline, "the dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        processes.insert(0, subprocess.Popen(
            [bin_dir / "dask", "worker", "--scheduler-file", str(scheduler_file), "--nthreads", str(nthreads)]
            + ["--no-dashboard", "--host", "127.0.0.1"],
            **quiet,
        ))  # fmt: skip
        yield address
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:  # a nanny busy restarting its worker may not stop on SIGTERM
                process.kill()
                process.wait()


def test_three_executors_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_NB_DASK_PROCESSES", "1")  # a small LocalCluster of worker processes
    runs = {}
    for executor in ("notebook", "dag", "dask"):
        nb = copy_quickstart(tmp_path / executor)
        runs[executor] = mlops_nb.run(nb, {"n_rows": 600}, executor, progress=False)
    assert {e: r.executor for e, r in runs.items()} == {"notebook": "notebook", "dag": "dag", "dask": "dask"}
    for run in runs.values():
        assert run.status == "succeeded" and set(statuses(run).values()) == {"succeeded"}
    assert output_hashes(runs["dag"]) == output_hashes(runs["notebook"]) == output_hashes(runs["dask"])
    assert runs["dag"].metrics == runs["notebook"].metrics
    step_run = runs["dag"].step("train")
    executed = Project(tmp_path / "dag").artifacts.get(step_run.executed_notebook)
    assert "LogisticRegression(C=C" in "".join(c.source for c in executed.cells)


PARALLEL = [
    "%load_ext mlops_nb\nimport time",
    "%%mlops step left --outputs a\ntime.sleep(1)\na = 1",
    "%%mlops step right --outputs b\ntime.sleep(1)\nb = 2",
    "%%mlops step join --outputs c\nc = a + b",
]


def test_independent_steps_overlap(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(tmp_path / "par.ipynb", PARALLEL)
    run = mlops_nb.run(nb, executor="dag", jobs=2, progress=False)
    left, right = run.step("left"), run.step("right")
    assert left.started_at < right.ended_at and right.started_at < left.ended_at  # they overlap
    assert Project(tmp_path).artifacts.get(run.step("join").outputs["c"]) == 3
    png = tmp_path / "timeline.png"
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "show", run.id, "--timeline", str(png)], obj={})
    assert result.exit_code == 0 and png.stat().st_size > 5000


BRANCHES = [
    "%load_ext mlops_nb\nfrom pathlib import Path",
    "%%mlops step base --outputs x\nx = 10",
    "%%mlops step bad --outputs y\ny = x / 0",
    "%%mlops step after_bad --outputs z\nz = y + 1",
    "%%mlops step good --outputs w\nw = x * 2",
]


def test_failure_is_isolated_to_its_branch(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(tmp_path / "branches.ipynb", BRANCHES)
    with pytest.raises(mlops_nb.StepFailedError) as info:
        mlops_nb.run(nb, executor="dag", jobs=2, progress=False)
    assert str(info.value) == "step 'bad' (cell 3) failed: ZeroDivisionError: division by zero"
    run = Project(tmp_path).metadata.get_run("latest")
    assert run.status == "failed"
    assert statuses(run) == {"base": "succeeded", "bad": "failed", "after_bad": "skipped", "good": "succeeded"}
    assert run.step("after_bad").why == "upstream step bad failed"
    assert run.step("bad").executed_notebook  # the failed step's notebook keeps its traceback


def test_retries_and_step_timeout(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    counter = tmp_path / "count.txt"
    nb = write_notebook(
        tmp_path / "flaky.ipynb",
        [
            "%load_ext mlops_nb\nimport time\nfrom pathlib import Path",
            f"%%mlops step flaky --outputs v\np = Path({str(counter)!r})\n"
            "n = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\n"
            "if n < 3:\n    raise RuntimeError(f'try {n}')\nv = n",
            "%%mlops step slow --outputs s\ntime.sleep(30)\ns = 1",
        ],
    )
    with pytest.raises(mlops_nb.StepFailedError) as info:
        mlops_nb.run(nb, executor="dag", retries=2, step_timeout=2, jobs=2, progress=False)
    assert "step 'slow' (cell 3) failed: step 'slow' timed out after 2 s (--step-timeout)" in str(info.value)
    run = Project(tmp_path).metadata.get_run("latest")
    flaky = [(s.status, s.attempt, s.why) for s in run.step_runs if s.step == "flaky"]
    assert flaky == [("failed", 1, "no earlier run"), ("failed", 2, "retry 1 of 2"), ("succeeded", 3, "retry 2 of 2")]
    slow = [s for s in run.step_runs if s.step == "slow"]
    assert [s.status for s in slow] == ["failed"] * 3 and all(s.duration < 10 for s in slow)


CHAIN = [
    "%load_ext mlops_nb",
    "k = 1",
    "%%mlops step a --outputs x\nx = k",
    "%%mlops step b --outputs y\ny = x + 1",
    "%%mlops step c --outputs z\nz = y + 1",
    "%%mlops step d --outputs w\nw = z + 1",
]


def test_partial_runs(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(tmp_path / "chain.ipynb", CHAIN, parameters=1)
    with pytest.raises(MlopsError) as info:
        mlops_nb.run(nb, executor="dag", only=["c"], progress=False)
    assert str(info.value) == (
        "step 'c' needs the outputs of step 'a', which has never run; produce them first: "
        "mlops-nb run chain.ipynb --to a"
    )
    assert Project(tmp_path).metadata.list_runs() == []  # nothing recorded, no kernel started

    run = mlops_nb.run(nb, executor="dag", to_step="b", progress=False)
    assert statuses(run) == {"a": "succeeded", "b": "succeeded"}

    run = mlops_nb.run(nb, {"k": 5}, executor="dag", only=["c"], progress=False)  # a and b from their last run
    assert statuses(run) == {"a": "cached", "b": "cached", "c": "succeeded"}
    assert run.step("b").why.startswith("not selected: outputs of its latest run")
    assert Project(tmp_path).artifacts.get(run.step("c").outputs["z"]) == 3

    run = mlops_nb.run(nb, executor="dag", from_step="c", no_cache=True, progress=False)
    assert statuses(run) == {"a": "cached", "b": "cached", "c": "succeeded", "d": "succeeded"}
    assert run.step("c").why == "--no-cache"

    result = CliRunner().invoke(
        cli, ["--home", str(tmp_path), "run", str(nb), "--only", "nope", "--executor", "dag"], obj={}
    )
    assert result.exit_code == 1 and "chain.ipynb has no step 'nope'; its steps: a, b, c, d" in result.output
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "run", str(nb), "--only", "c"], obj={})
    assert result.exit_code == 1 and "need --executor dag or dask" in result.output


def test_killed_driver_then_resume(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    flag = tmp_path / "started"
    nb = write_notebook(
        tmp_path / "slow.ipynb",
        [
            "%load_ext mlops_nb\nimport time\nfrom pathlib import Path",
            "%%mlops step first --outputs a\na = 1",
            f"%%mlops step second --outputs b\nPath({str(flag)!r}).touch()\ntime.sleep(60 if a == 1 else 0)\nb = 2",
        ],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    code = f"import mlops_nb; mlops_nb.run({str(nb)!r}, executor='dag', progress=False)"
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not flag.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert flag.exists()
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    store = Project(tmp_path).metadata
    run = store.get_run("latest")
    assert run.status == "interrupted" and statuses(run) == {"first": "succeeded", "second": "interrupted"}
    source = nb.read_text().replace("60 if a == 1 else 0", "0")
    nb.write_text(source)
    again = mlops_nb.run(nb, executor="dag", progress=False)
    assert statuses(again) == {"first": "cached", "second": "succeeded"}


@pytest.mark.parametrize("executor", ["dag", "notebook"])
def test_sigterm_interrupts_the_run(tmp_path, executor):
    import psutil

    (tmp_path / "pyproject.toml").write_text("")
    flag = tmp_path / "started"
    nb = write_notebook(
        tmp_path / "slow.ipynb",
        [
            "%load_ext mlops_nb\nimport os, time\nfrom pathlib import Path",
            f"%%mlops step wait --outputs w\nPath({str(flag)!r}).write_text(str(os.getpid()))\ntime.sleep(60)\nw = 1",
        ],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_NB_")}
    code = (
        f"import mlops_nb\ntry:\n    mlops_nb.run({str(nb)!r}, executor={executor!r}, progress=False)\n"
        "except KeyboardInterrupt:\n    pass"
    )
    driver = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 90
        while not (flag.exists() and flag.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        kernel = int(flag.read_text())
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(30) == 0
    finally:
        driver.kill()
    run = Project(tmp_path).metadata.get_run("latest")
    assert run.status == "interrupted" and statuses(run) == {"wait": "interrupted"}
    assert run.error == "interrupted (Ctrl-C or SIGTERM); re-run to resume from the cache"
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE
    if executor == "notebook":  # what papermill executed until then is kept with the run
        executed = Project(tmp_path).artifacts.get(run.executed_notebook)
        assert executed.cells[1].source.startswith("%%mlops step wait")


def test_dask_scheduler_and_worker_processes(tmp_path):
    nb = copy_quickstart(tmp_path / "qs")
    with dask_cluster(tmp_path, nthreads=2) as address:
        run = mlops_nb.run(nb, executor="dask", scheduler=address, jobs=2, progress=False)
    assert run.status == "succeeded" and set(statuses(run).values()) == {"succeeded"}
    assert run.executor == "dask"


KILL_WORKER = """
import pathlib, psutil
def kill_my_worker():
    # the kernel's parents: the kernel template (when forked), then the Dask worker process under its nanny
    me = psutil.Process()
    worker = next(p for p in me.parents() if "mlops_nb.engine.executors.template" not in " ".join(p.cmdline()))
    worker.kill()
    time.sleep(60)
"""


def test_dask_worker_lost_mid_step(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}  # two deaths: KilledWorker
    # a nanny restarts its worker when it dies: the lost step then runs again on the new worker
    with dask_cluster(tmp_path, nthreads=1, env=env) as address:
        once = write_notebook(
            tmp_path / "once.ipynb",
            [
                "%load_ext mlops_nb\nimport time" + KILL_WORKER,
                "%%mlops step fragile --outputs a\nmarker = pathlib.Path('attempted')\n"
                "if not marker.exists():\n    marker.write_text('1')\n    kill_my_worker()\na = 1",
            ],
        )
        run = mlops_nb.run(once, executor="dask", scheduler=address, progress=False)
        assert run.status == "succeeded" and statuses(run) == {"fragile": "succeeded"}
        assert (tmp_path / "attempted").exists()  # the first attempt did run, and lost its worker
        always = write_notebook(
            tmp_path / "always.ipynb",
            [
                "%load_ext mlops_nb\nimport time" + KILL_WORKER,
                "%%mlops step doomed --outputs b\nkill_my_worker()\nb = 1",
            ],
        )
        with pytest.raises(mlops_nb.StepFailedError, match="Dask workers running it died 2 times"):
            mlops_nb.run(always, executor="dask", scheduler=address, progress=False)
        run = Project(tmp_path).metadata.get_run("latest")
        assert run.status == "failed" and statuses(run) == {"doomed": "failed"}
        assert "\n" not in run.error


def test_reused_kernels_start_each_step_from_a_clean_namespace(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    nb = write_notebook(
        tmp_path / "reuse.ipynb",
        [
            "%load_ext mlops_nb\nimport os\nsetup_value = 7",
            "%%mlops step a --outputs pa\nleak = 1\npa = os.getpid()",
            "%%mlops step b --outputs pb\nassert 'leak' not in globals() and setup_value == 7\npb = (os.getpid(), pa)",
        ],
    )
    run = mlops_nb.run(nb, executor="dag", jobs=1, reuse_kernels=True, progress=False)
    assert statuses(run) == {"a": "succeeded", "b": "succeeded"}
    pid_b, pid_a = Project(tmp_path).artifacts.get(run.step("b").outputs["pb"])
    assert pid_a == pid_b  # the same kernel, reset between the steps


_ORPHAN_PARENT = """
import os, sys, time
from mlops_nb.engine.executors.template import Template
t = Template(sys.executable, os.getcwd(), [], dict(os.environ))
pid = t.spawn(["-f", os.path.join(os.getcwd(), "kernel.json")], os.getcwd(), dict(os.environ))
if os.fork() == 0:  # a process that outlives the driver, holding a copy of the template's stdin
    time.sleep(60)
    os._exit(0)
print(t._process.pid, pid, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_killed_driver_leaves_no_kernel_template_even_when_its_stdin_stays_open(tmp_path):
    """A Dask worker killed mid-step left its kernel template running (its stdin held open by a forked
    process): the template also watches its parent, and takes the kernels it forked with it."""
    import psutil
    from jupyter_client.connect import write_connection_file

    write_connection_file(str(tmp_path / "kernel.json"))
    driver = subprocess.Popen([sys.executable, "-c", _ORPHAN_PARENT], cwd=tmp_path, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    template_pid, kernel_pid = map(int, driver.stdout.readline().split())
    template, kernel = psutil.Process(template_pid), psutil.Process(kernel_pid)
    holder = [c for c in psutil.Process(driver.pid).children() if c.pid != template_pid]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    gone, alive = psutil.wait_procs([template, kernel], timeout=15)
    for p in holder:
        p.kill()
    assert not alive, [p.pid for p in alive]
