"""`mlops-nb gc`: what nothing kept references goes; what a kept run, model version or bundle references, what
the feature catalog lists and what a running pipeline is writing or reusing stays."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_nb.engine.driver import run
from mlops_nb.serving.gc import collect, parse_age
from mlops_nb.serving.verify import verify
from mlops_nb.ui.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile.hostile_tools import fingerprint  # noqa: E402
from nbtools import write_notebook  # noqa: E402

CELLS = [
    "%load_ext mlops_nb\nimport pandas as pd",
    "n = 1",
    "%%mlops step make\nframe = pd.DataFrame({'x': range(n * 10)})",
    "%%mlops step total\ntotal = int(frame['x'].sum())",
]


def _age(root: Path, hours: float = 2) -> None:
    """Make every file under ``root`` look ``hours`` old (older than gc's grace period)."""
    old = time.time() - hours * 3600
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


def _files(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_gc_removes_what_no_kept_run_or_model_references_and_the_cache_still_holds(registry_project):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import mlops_nb

    project = registry_project
    nb = write_notebook(project.home / "p.ipynb", CELLS, parameters=1)
    first = run(nb, {"n": 1}, executor="notebook", project=project, progress=False)
    run(nb, {"n": 2}, executor="notebook", project=project, progress=False)
    model = LogisticRegression().fit(np.arange(20.0).reshape(10, 2), [0, 1] * 5)
    version = mlops_nb.register_model(model, "m", project=project)
    (project.mlops_dir / "features").mkdir(exist_ok=True)
    (project.mlops_dir / "features" / "leftover.parquet").write_bytes(b"a killed ingest's file")
    artifacts = Path(project.artifacts.root)
    _age(project.mlops_dir)
    frame_1 = project.metadata.get_run(first.id).step("make").outputs["frame"].hash

    before = fingerprint(project)
    dry = collect(project, timedelta(0), dry_run=True)
    assert dry.removed["artifacts"] >= 2 and dry.removed["feature files"] == 1
    assert fingerprint(project) == before  # a dry run removes nothing

    done = collect(project, timedelta(0))
    assert done.removed == dry.removed and done.freed == dry.freed
    left = _files(artifacts)
    assert not any(name.startswith(frame_1) for name in left)  # the first run's own output went
    assert any(name.startswith(version.model_hash) for name in left)  # the model version's stayed
    assert not (project.mlops_dir / "features" / "leftover.parquet").exists()
    assert verify(project).ok, verify(project).problems

    again = run(nb, {"n": 2}, executor="notebook", project=project, progress=False)  # the latest run's cache
    assert [s.status for s in project.metadata.get_run(again.id).step_runs] == ["cached", "cached"]
    redo = run(nb, {"n": 1}, executor="notebook", project=project, progress=False)
    make = project.metadata.get_run(redo.id).step("make")
    assert make.status == "succeeded" and make.why == "cached outputs missing"
    collect(project, timedelta(0))  # the earlier n=2 run's executed notebook (past the grace) is no longer kept
    last = run(nb, {"n": 1}, executor="notebook", project=project, progress=False)
    assert [s.status for s in project.metadata.get_run(last.id).step_runs] == ["cached", "cached"]
    assert verify(project).ok, verify(project).problems


def test_gc_at_the_command_line(project):
    done = CliRunner().invoke(cli, ["--home", str(project.home), "gc", "--dry-run"])
    assert done.exit_code == 0 and done.output.startswith("would remove nothing"), done.output
    bad = CliRunner().invoke(cli, ["--home", str(project.home), "gc", "--older-than", "soon"])
    assert bad.exit_code == 1 and bad.output.strip() == (
        "Error: --older-than 'soon' is not a duration; write it as 30m, 12h, 1d or 2w"
    )
    assert parse_age("2w") == timedelta(days=14) and parse_age("90") == timedelta(days=90)


RACER = """
import sys
from mlops_nb.engine.driver import run
from mlops_nb.project import Project
project = Project(sys.argv[1])
for n in (1, 2, 3, 4, 5, 1, 2, 6):
    result = run(sys.argv[2], {"n": n}, executor="notebook", project=project, progress=False)
    print(n, result.status, flush=True)
"""


@pytest.mark.slow
def test_gc_raced_against_running_pipelines_removes_nothing_they_use(project, tmp_path):
    nb = write_notebook(project.home / "p.ipynb", CELLS, parameters=1)
    for n in (1, 2, 3):
        run(nb, {"n": n}, executor="notebook", project=project, progress=False)
    _age(project.mlops_dir)  # every earlier output is past the grace: only a reuse's touch protects it
    racer = subprocess.Popen([sys.executable, "-c", RACER, str(project.home), str(nb)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    sweeps = 0
    while racer.poll() is None:
        collect(project, timedelta(0))
        sweeps += 1
        time.sleep(0.05)
    out, err = racer.communicate()
    assert racer.returncode == 0, err[-2000:]
    assert [line.split()[1] for line in out.splitlines()] == ["succeeded"] * 8, out
    assert sweeps >= 5
    collect(project, timedelta(0))
    assert verify(project).ok, verify(project).problems
