"""Benchmark the REST API under load: a sidebar polling ``/mlops/api/`` every 0.5 s while a 10-step run writes.

What it measures
----------------
A real ``jupyter server`` (the mlops_nb extension enabled, token auth, 127.0.0.1) over a project with the
10-step pandas / scikit-learn notebook ``benchmarks/bench_notebook.py`` builds (``--step-seconds`` each, calibrated).
The notebook runs headless (``mlops-nb run``, a new seed each time, so every step runs) ``--repeat`` times alone
and ``--repeat`` times while a client polls what the sidebar polls (``GET runs?limit=20``, ``GET runs/<newest>``,
``GET pipelines/nb.ipynb/dag``, ``GET models``, ``GET deployments``) every 0.5 s; the two alternate (alone first,
then polled first, ...). The server runs throughout (idle while not polled), so the difference is the polling.

It prints the median wall clock of each side, the slowdown (median of each repetition's polled / alone, and
median over median), every repetition, the polls made, their p50/p95, and the answers that were not 200 (a
``StoreBusyError`` is a 503; target 0).

Target (issue #15): no ``StoreBusyError``, the run <= 5 % slower than unpolled.

``--smoke`` (the default when ``BENCH_SIZE=smoke``; ``--no-smoke`` turns it off): one run each way of small steps,
no calibration and no warm-up run (it shows the benchmark works, not what polling costs).

Usage: ``.venv/bin/python benchmarks/bench_rest.py [--repeat 3] [--step-seconds 0.3] [--smoke] [--results FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
import bench_notebook as nbb  # noqa: E402 - the notebook and the helpers of the notebook benchmark

POLL_INTERVAL_S = 0.5
SLOWDOWN_TARGET = 5.0
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``jupyter server`` subprocess with the extension, on 127.0.0.1."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/mlops/api/"
        home = Path(tempfile.mkdtemp(prefix="bench-rest-jupyter-"))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "rt")}
        self.log = open(home / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(nbb.VENV_BIN / "jupyter-server"), "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
             f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}",
             "--ServerApp.jpserver_extensions={'mlops_nb.ui.server': True}", "--allow-root"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=root,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("")[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the Jupyter server did not start; see {home / 'server.log'}")

    def get(self, path: str) -> tuple[int, dict]:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"token {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Poller(threading.Thread):
    """What the sidebar polls, every 0.5 s, until stopped."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.stopped = server, threading.Event()
        self.times: list[float] = []
        self.bad: list[tuple[int, str]] = []

    def run(self) -> None:
        next_poll = time.monotonic()
        while not self.stopped.is_set():
            started = time.perf_counter()
            status, runs = self.server.get("runs?limit=20")
            answers = [(status, runs)]
            if status == 200 and runs["runs"]:
                answers.append(self.server.get(f"runs/{runs['runs'][0]['id']}"))
            answers.append(self.server.get("pipelines/nb.ipynb/dag"))
            answers += [self.server.get("models"), self.server.get("deployments")]
            self.times.append((time.perf_counter() - started) * 1000)
            self.bad += [(code, data.get("error", "")) for code, data in answers if code != 200]
            next_poll += POLL_INTERVAL_S
            self.stopped.wait(max(0.0, next_poll - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs each way (3)")
    parser.add_argument("--step-seconds", type=float, default=0.3, help="seconds a step takes (0.3)")
    parser.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        default=_results.bench_size() == "smoke",
        help="one small run each way, no calibration (default: on when BENCH_SIZE=smoke)",
    )
    _results.add_results_option(parser)
    args = parser.parse_args(argv)

    out = Path(tempfile.mkdtemp(prefix="bench-rest-"))
    project = out / "project"
    (project / ".mlops").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "bench-rest"\nversion = "0"\n', encoding="utf-8")
    if args.smoke:
        n_rows, repeat = 2000, 1
    else:
        print(f"calibrating the steps to ~{args.step_seconds:g} s each ...", flush=True)
        n_rows, _ = nbb.calibrate(args.step_seconds, 0, 1.0)
        repeat = args.repeat
    import nbformat

    nbformat.write(nbb.build_notebook(n_rows, 0, 1.0, mlops=True), project / "nb.ipynb")
    cli = str(nbb.VENV_BIN / "mlops-nb")
    seed = 1000

    def run_once() -> float:
        nonlocal seed
        seed += 1
        seconds, _, _ = nbb.run_command([cli, "--home", str(project), "run", "nb.ipynb", "-p", "seed", str(seed)],
                                        project)  # fmt: skip
        nbb.check_statuses(nbb.latest_run(project), ["succeeded"] * nbb.STEPS, f"run with seed {seed}")
        return seconds

    server = Server(project)
    alone, polled, pollers = [], [], []
    try:
        if not args.smoke:
            print("warm-up run (untimed) ...", flush=True)
            run_once()
        for i in range(repeat):
            for poll in (False, True) if i % 2 == 0 else (True, False):
                print(f"repetition {i + 1}/{repeat}: {'polled' if poll else 'alone'} ...", flush=True)
                if not poll:
                    alone.append(run_once())
                    continue
                poller = Poller(server)
                poller.start()
                try:
                    polled.append(run_once())
                finally:
                    poller.stopped.set()
                    poller.join(30)
                pollers.append(poller)
    finally:
        server.stop()
    ratios = [p / a for a, p in zip(alone, polled, strict=True)]
    slowdown = (float(np.median(ratios)) - 1) * 100
    overall = (float(np.median(polled)) / float(np.median(alone)) - 1) * 100
    times = [t for p in pollers for t in p.times]
    bad = [b for p in pollers for b in p.bad]
    busy = sum(1 for code, _ in bad if code == 503)
    print()
    print(f"10-step run ({n_rows} rows a step), {repeat} repetitions each way, polled every {POLL_INTERVAL_S:g} s:")
    print(f"  alone   {np.median(alone):.2f} s  (runs: {', '.join(f'{s:.2f}' for s in alone)})")
    print(f"  polled  {np.median(polled):.2f} s  (runs: {', '.join(f'{s:.2f}' for s in polled)})")
    print(f"  slowdown: {slowdown:+.1f} % (median of the pairs), {overall:+.1f} % (median over median); "
          f"target <= {SLOWDOWN_TARGET:g} %")  # fmt: skip
    print(f"  polls {len(times)} (5 requests each), p50 {np.median(times):.1f} ms, p95 {np.percentile(times, 95):.1f} ms;"
          f" answers not 200: {len(bad)} ({busy} StoreBusyError){': ' + str(bad[:3]) if bad else ''}")  # fmt: skip
    met = busy == 0 and not bad and slowdown <= SLOWDOWN_TARGET
    print(f"  target {'met' if met else 'MISSED'}")
    _results.write_results(
        args.results,
        [
            _results.Result(
                "rest",
                f"10-step run polled every {POLL_INTERVAL_S:g} s, median of {repeat} ({len(bad)} answers not 200)",
                "the same run, not polled",
                float(np.median(polled)),
                float(np.median(alone)),
                "s",
                ratio=float(np.median(ratios)),
                target=f"<= {1 + SLOWDOWN_TARGET / 100:.2f}x, no StoreBusyError",
                met=met,
            )
        ],
    )
    shutil.rmtree(out, ignore_errors=True)
    return 0 if met or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
