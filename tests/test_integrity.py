"""Stored bytes that change under us are found before they are used: artifacts on a cache hit (size) and when
loaded (hash), feature segments (size on every read, hash on a process's first read), and `mlops-nb verify`
over a whole project (every byte of every store)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlops_nb.exceptions import ArtifactCorruptedError
from mlops_nb.project import Project
from mlops_nb.serving.verify import verify
from mlops_nb.ui.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import pipeline_project  # noqa: E402

CELLS = [
    "%load_ext mlops_nb\nimport pandas as pd",
    "%%mlops step make\nframe = pd.DataFrame({'x': range(50)})",
    "%%mlops step total\ntotal = int(frame['x'].sum())",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory, mlflow_template):
    """A project with a pipeline run, a feature view of two ingests (a ties file), a model and its bundle."""
    from sklearn.linear_model import LogisticRegression

    import mlops_nb
    from mlops_nb.engine.driver import run
    from mlops_nb.serving.bundle import build

    home = tmp_path_factory.mktemp("integrity") / "project"
    project = pipeline_project(home, CELLS, mlflow_template)
    run(home / "p.ipynb", executor="notebook", project=project, progress=False)
    fs = project.features
    ts = pd.to_datetime(["2024-01-01"] * 200, utc=True)
    fs.ingest("activity", pd.DataFrame({"customer_id": range(200), "spend": np.arange(200.0), "ts": ts}))
    fs.ingest("activity", pd.DataFrame({"customer_id": range(100), "spend": np.arange(100.0) + 1, "ts": ts[:100]}))
    x = np.arange(40.0).reshape(20, 2)
    mlops_nb.register_model(LogisticRegression().fit(x, [0, 1] * 10), "m", project=project)
    build("m/1", project=project, progress=False)
    return home


@pytest.fixture
def home(template, tmp_path):
    """A copy of the template project, free to damage."""
    copy = tmp_path / "project"
    shutil.copytree(template, copy)
    return copy


def _flip(path: Path, at: int, n: int = 40) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, min(at + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _output(project: Project, step: str, name: str):
    runs = [r for r in project.metadata.list_runs(None) if r.pipeline == "p"]
    return project.metadata.get_run(runs[0].id).step(step).outputs[name]


def _artifact(project: Project, step: str, name: str) -> Path:
    ref = _output(project, step, name)
    return Path(project.artifacts.root) / ref.hash[:2] / f"{ref.hash}.{ref.kind}"


def test_a_whole_project_verifies_and_says_what_it_checked(home):
    report = verify(Project(home))
    assert report.ok, report.problems
    assert report.checked["artifacts"] >= 3 and report.checked["recorded artifacts"] >= 2
    assert report.checked["feature segments"] == 2 and report.checked["bundles"] == 1
    assert report.checked["databases"] == 3
    done = CliRunner().invoke(cli, ["--home", str(home), "verify"])
    assert done.exit_code == 0 and done.output.strip().endswith("all whole"), done.output


def test_a_cache_hit_over_an_artifact_of_another_size_runs_the_step_again_and_heals_it(home):
    from mlops_nb.engine.driver import run

    project = Project(home)
    frame = _artifact(project, "make", "frame")
    frame.write_bytes(frame.read_bytes() + b"junk")
    result = run(home / "p.ipynb", executor="notebook", project=project, progress=False)
    make = result.step("make")
    assert make.status == "succeeded" and "cached output frame is damaged" in (make.why or ""), make
    assert verify(project).ok  # the re-run wrote the true bytes back


def test_verify_names_an_artifact_damaged_in_place_and_loading_it_is_refused(home):
    project = Project(home)
    frame = _artifact(project, "make", "frame")
    _flip(frame, 10)
    report = verify(project)
    assert [p for p in report.problems if str(frame) in p and "damaged" in p], report.problems
    ref = _output(project, "make", "frame")
    with pytest.raises(ArtifactCorruptedError, match="is corrupted"):
        project.artifacts.get(ref)
    done = CliRunner().invoke(cli, ["--home", str(home), "verify"])
    assert done.exit_code == 1 and str(frame) in done.output
    assert done.output.strip().splitlines()[-1] == "Error: 1 problem(s) found; each is named above"


def test_a_damaged_feature_segment_is_refused_in_one_line_naming_it(home):
    project = Project(home)
    segment = sorted((home / ".mlops" / "features").rglob("000001*.parquet"))[0]
    _flip(segment, 100)  # same size: found by the hash on this process's first read since it changed
    entities = pd.DataFrame({"customer_id": [1, 150], "event_timestamp": pd.to_datetime(["2024-02-01"] * 2)})
    with pytest.raises(ArtifactCorruptedError) as caught:
        project.features.get_historical_features(entities, ["activity:spend"])
    message = caught.value.message
    assert "\n" not in message and len(message) < 400
    assert "feature view 'activity' segment 1" in message and "is damaged" in message and "sha256" in message
    segment.write_bytes(segment.read_bytes()[:-10])  # a shorter file: found by its size on every read
    with pytest.raises(ArtifactCorruptedError, match=r"segment 1 file .* is damaged \(\d+ bytes, the catalog"):
        project.features.get_historical_features(entities, ["activity:spend"])
    assert any("segment 1" in p for p in verify(project).problems)


def test_verify_names_a_damaged_ties_file_bundle_and_database(home):
    project = Project(home)
    ties = next((home / ".mlops" / "features").rglob("*-ties.parquet"))
    _flip(ties, 20)
    bundle = next(p for p in project.builds_dir.iterdir() if p.is_dir())
    (bundle / "model" / "model.pkl").write_bytes(b"not the model")
    problems = verify(project).problems
    assert any("segment 2" in p and "ties" in p for p in problems), problems
    assert any(str(bundle) in p and "model.pkl" in p for p in problems), problems
    with open(project.mlflow_db, "r+b") as handle:  # a page of MLflow's SQLite overwritten
        handle.seek(4096)
        handle.write(b"\x00" * 4096)
    assert any("model registry" in p for p in verify(project).problems)
