"""Headless runs started from the browser (``POST /mlops/api/runs``): each in a process of its own, so a kernel
never runs inside the Jupyter server and a run outlives the tab that started it.

The server names the run before it starts (``RunOptions.run_id``), so the browser follows its progress at
``GET runs/<id>`` from the first poll: ``starting`` until the run records itself, then the run as the metadata store
has it. The process's output goes to ``.mlops/jobs/<id>.log``; a run that fails before it records itself (a
kernel that is missing, say) is reported with the log's last line.

``python -m mlops_nb.ui.server.jobs --run-id ID --home HOME NOTEBOOK`` is the process itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

JOBS_DIR = "jobs"


class Jobs:
    """The runs this server started, by id.

    Args:
        project: the project the runs are recorded in.
    """

    def __init__(self, project):
        self.project = project
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """``.mlops/jobs``: one log per started run."""
        return self.project.mlops_dir / JOBS_DIR

    def start(self, notebook: Path, params: dict[str, Any], executor: str | None = None, no_cache: bool = False) -> str:
        """Start a headless run of ``notebook`` (trigger ``rest``) in a new process; return its run id."""
        from ...settings import HOME_ENV, RUN_ENV
        from ...store.metadata import new_run_id

        run_id = new_run_id()
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / f"{run_id}.log"
        command = [
            sys.executable,
            "-m",
            "mlops_nb.ui.server.jobs",
            "--run-id",
            run_id,
            "--home",
            str(self.project.home),
        ]
        command += ["--params", json.dumps(params)]
        if executor:
            command += ["--executor", executor]
        if no_cache:
            command.append("--no-cache")
        command.append(str(notebook))
        env = {k: v for k, v in os.environ.items() if k != RUN_ENV}
        env[HOME_ENV] = str(self.project.home)
        with open(log, "wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own module, arguments as a list
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=notebook.parent,
                env=env,
                start_new_session=True,  # a Ctrl-C of the server does not interrupt the run
            )
        with self._lock:
            self._jobs[run_id] = {"process": process, "log": log, "notebook": str(notebook), "started": time.time()}
        return run_id

    def status(self, run_id: str) -> dict[str, Any] | None:
        """What is known of a started run that has not recorded itself: ``starting`` while its process lives,
        ``failed`` with the log's last line when it ended first; None when this server did not start it."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is None:
            return None
        code = job["process"].poll()
        if code is None:
            return {"id": run_id, "status": "starting", "kind": "pipeline", "notebook": job["notebook"]}
        return {"id": run_id, "status": "failed", "kind": "pipeline", "notebook": job["notebook"],
                "error": _last_line(job["log"]) or f"the run's process ended with code {code}"}  # fmt: skip


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1][:500] if lines else ""


def main(argv: list[str] | None = None) -> int:
    """Run one notebook headless as ``POST /mlops/api/runs`` asked; errors as one line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m mlops_nb.ui.server.jobs", description=main.__doc__)
    parser.add_argument("notebook")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--executor")
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)

    from ...engine.driver import run_notebook
    from ...engine.executors import RunOptions
    from ...exceptions import MlopsError
    from ...project import Project

    options = RunOptions(
        executor=args.executor, no_cache=args.no_cache, trigger="rest", progress=False, run_id=args.run_id
    )
    try:
        record = run_notebook(Path(args.notebook), json.loads(args.params), options, Project(args.home))
    except MlopsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"Run {record.id} {record.status}")
    return 0


if __name__ == "__main__":  # pragma: no cover - the process POST runs starts
    sys.exit(main())
