"""Exact lineage from the user's side: two notebooks whose steps make byte-equal artifacts, run by hand, headless
(notebook and dag executors) and fully cached; each model's lineage holds only its own notebook's step runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from nbtools import run_by_hand, store_at_version, write_notebook

import mlops_nb
from mlops_nb import Project
from mlops_nb.ui.cli import cli


def _notebook(path: Path, scale: int) -> Path:
    """load and split make the same bytes in every notebook from different code (no cache hit across them);
    train's model depends on ``scale``."""
    return write_notebook(
        path,
        [
            "%load_ext mlops_nb",
            "%%mlops step load\n" + ("raw = list(range(20))" if scale == 2 else "raw = [i for i in range(20)]"),
            "%%mlops step split\n" + ("train_rows = raw[:15]" if scale == 2 else "train_rows = raw[0:15]"),
            f"%%mlops step train\nmodel = {{'weights': [x * {scale} for x in train_rows]}}",
            "model",  # a report cell: its read makes model an output of train
        ],
    )


def _pipeline_steps(project: Project, graph) -> set[str]:
    """The pipelines of the step runs in a lineage graph."""
    runs = {n.attrs["run_id"] for n in graph.nodes.values() if n.kind == "step_run"}
    return {project.metadata.get_run(r).pipeline for r in runs}


@pytest.mark.slow
def test_equal_artifacts_of_two_notebooks_keep_each_lineage_apart(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'twins'\n")
    first, second = _notebook(tmp_path / "first.ipynb", 2), _notebook(tmp_path / "second.ipynb", 3)
    project = Project(tmp_path)

    by_hand = run_by_hand(first)
    assert not [c for c in by_hand if c["errors"]], by_hand
    headless = mlops_nb.run(second, project=project, progress=False)
    assert headless.status == "succeeded"
    again = mlops_nb.run(first, project=project, progress=False, executor="dag")  # fully cached
    assert {s.status for s in again.step_runs} == {"cached"}
    dag = mlops_nb.run(second, project=project, progress=False, executor="dag", no_cache=True)
    assert {s.status for s in dag.step_runs} == {"succeeded"}

    store = project.metadata
    for record, pipeline in ((headless, "second"), (again, "first"), (dag, "second")):
        train = store.get_run(record.id).step("train")
        graph = store.lineage(train.outputs["model"].hash, "up", producer=train.cached_from or train.id)
        assert _pipeline_steps(project, graph) == {pipeline}, graph.records()
        steps = sorted(n.attrs["step"] for n in graph.nodes.values() if n.kind == "step_run")
        assert steps == ["load", "split", "train"]
        raw = next(n for n in graph.nodes.values() if n.label.startswith("raw "))
        assert raw.attrs["also_produced_by"] >= 1 and "also produced by" in raw.label

    # the step run of the dag run: walking up from it reaches its own run's load, not the first notebook's
    graph = store.lineage(f"{dag.id}/train", "up")
    assert {n.attrs["run_id"] for n in graph.nodes.values() if n.kind == "step_run"} == {dag.id}

    # downstream from the first notebook's raw: the consumers that loaded it, not the second notebook's
    load = store.get_run(store.list_runs(pipeline="first")[-1].id).step("load")
    down = store.lineage(f"{load.run_id}/load", "down")
    assert _pipeline_steps(project, down) == {"first"}

    # downstream from a cached step run: the consumers in its own run, not those of every run that reused it
    down = store.lineage(f"{again.id}/load", "down")
    assert {n.attrs["run_id"] for n in down.nodes.values() if n.kind == "step_run"} == {again.id}

    # by output name, from the CLI: the latest model, through the step run that made it
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "lineage", "model", "--direction", "up"], obj={})
    assert result.exit_code == 0, result.output
    assert dag.id in result.output and headless.id not in result.output


def test_a_version_5_store_learns_the_source_of_each_input(tmp_path):
    """Input events written before they named their source get the step run of the same run that made (or reused)
    the artifact before them; lineage of old records is exact too."""
    from mlops_nb.store.metadata import MetadataStore

    path = tmp_path / "metadata.duckdb"
    con = store_at_version(path, 5)
    con.execute("INSERT INTO artifacts VALUES ('a' || repeat('0', 63), 'json', 1, '', '', now())")
    con.execute("INSERT INTO artifacts VALUES ('b' || repeat('0', 63), 'json', 1, '', '', now())")
    for run, pipeline in (("20260101-000000-00000001", "one"), ("20260101-000000-00000002", "two")):
        con.execute(
            "INSERT INTO runs (id, pipeline, status, started_at, trigger, executor) "
            "VALUES (?, ?, 'succeeded', now(), 'cli', 'notebook')",
            [run, pipeline],
        )
        for n, step in ((1, "load"), (2, "train")):
            con.execute(
                "INSERT INTO step_runs (id, run_id, step, status, started_at) VALUES (?, ?, ?, 'succeeded', now())",
                [f"{run}.{n}", run, step],
            )
        con.execute("INSERT INTO events VALUES (?, 'a' || repeat('0', 63), 'out', 'raw')", [f"{run}.1"])
        con.execute("INSERT INTO events VALUES (?, 'a' || repeat('0', 63), 'in', 'raw')", [f"{run}.2"])
        con.execute("INSERT INTO events VALUES (?, 'b' || repeat('0', 63), 'out', 'model')", [f"{run}.2"])
    con.close()

    store = MetadataStore(path)
    train = store.get_step_run("20260101-000000-00000002.2")
    assert train.sources == {"raw": "20260101-000000-00000002.1"}
    graph = store.lineage("20260101-000000-00000002/train", "up")
    assert {n.id for n in graph.nodes.values() if n.kind == "step_run"} == {
        "20260101-000000-00000002.1",
        "20260101-000000-00000002.2",
    }
    raw = graph.nodes["artifact:a" + "0" * 63]
    assert raw.attrs["also_produced_by"] == 1 and raw.label == "raw (json); also produced by 1 other step run"
