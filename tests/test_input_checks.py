"""The checks that stand between a user's input and the stores: paths that climb out of the project, the kernel a
remote cluster starts, and integer values at the edges of their dtype."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops_nb.core.files import escapes
from mlops_nb.engine.cache import check_reads
from mlops_nb.engine.executors.kernels import require_kernel
from mlops_nb.exceptions import ConfigError, MlopsError
from mlops_nb.pipeline.notebook import Pipeline
from mlops_nb.schedule.schedules import resolve_on_data
from mlops_nb.store.features.checks import BadRows, cast_series

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import write_notebook  # noqa: E402


def test_only_a_relative_path_that_climbs_out_of_the_project_escapes(tmp_path):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    assert escapes("../../etc/passwd", home / "data", home)
    assert not escapes("../data/x.csv", home / "data", home)  # climbs, but stays inside
    assert not escapes("/etc/passwd", home, home)  # absolute: the user's explicit choice
    assert not escapes("x.csv", tmp_path, home)  # no `..`: it names what is beside the notebook
    (home / "link").symlink_to(tmp_path)
    assert not escapes("link/../data", home, home)  # resolved inside though lexically it is not


def test_reads_refuses_a_climb_out_and_keeps_an_absolute_path_elsewhere(project, tmp_path):
    shared = tmp_path.parent / f"{tmp_path.name}-shared.csv"  # the project's home is tmp_path
    shared.write_text("a\n1\n")
    write_notebook(project.home / "ok.ipynb", [f"%%mlops step a --reads {shared}\nx = 1"])
    check_reads(project, Pipeline.from_notebook(project.home / "ok.ipynb"))
    climb = "../" * 40 + "etc/passwd"  # enough to reach / from any temporary folder
    write_notebook(project.home / "bad.ipynb", [f"%%mlops step a --reads {climb}\nx = 1"])
    with pytest.raises(MlopsError, match=r"bad.ipynb step 'a': --reads (\.\./)+etc/passwd climbs out"):
        check_reads(project, Pipeline.from_notebook(project.home / "bad.ipynb"))


def test_on_data_keeps_inside_paths_relative_and_absolute_ones_absolute(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project.home)
    (project.home / "incoming").mkdir()
    assert resolve_on_data(project, "incoming") == "incoming"
    elsewhere = tmp_path.parent / f"{tmp_path.name}-drop"
    elsewhere.mkdir()
    assert resolve_on_data(project, str(elsewhere)) == str(elsewhere)
    with pytest.raises(MlopsError, match="climbs out of the project folder"):
        resolve_on_data(project, "../../../etc")


def test_a_remote_cluster_needs_no_local_kernelspec(project):
    write_notebook(project.home / "k.ipynb", ["%%mlops step a\nx = 1"])
    pipeline = Pipeline.from_notebook(project.home / "k.ipynb")
    with pytest.raises(ConfigError, match="no-such-kernel"):
        require_kernel(pipeline, "no-such-kernel")
    assert require_kernel(pipeline, "no-such-kernel", local=False) == "no-such-kernel"


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (pd.Series([-128, 127], dtype="int64"), "int8"),
        (pd.Series([-128.0, 127.0]), "int8"),
        (pd.Series([-(2**63), 2**63 - 1], dtype="int64"), "int64"),
        (pd.Series([-(2**31), None], dtype="Int64"), "int32"),
    ],
)
def test_the_ends_of_an_integer_range_are_kept(values, dtype):
    assert cast_series(values, dtype).to_pylist() == [None if pd.isna(v) else int(v) for v in values]


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (pd.Series([2**64 - 1, 1], dtype="uint64"), "int64"),
        (pd.Series([2**63, None], dtype="UInt64"), "int64"),
        (pd.Series([128, 1], dtype="int64"), "int8"),
        (pd.Series([-129.0, 1.0]), "int8"),
    ],
)
def test_a_value_past_the_range_is_a_bad_row_not_a_cast_error(values, dtype):
    with pytest.raises(BadRows) as caught:
        cast_series(values, dtype)
    assert "out of range" in caught.value.problem and list(caught.value.mask) == [True, False]


def test_a_notebook_named_with_braces_runs_and_a_missing_load_ext_is_named(project):
    from mlops_nb.engine.driver import run
    from mlops_nb.exceptions import StepFailedError

    braces = project.home / "{weird} name.ipynb"  # papermill fills {x} in paths from the parameters
    write_notebook(braces, ["%load_ext mlops_nb\nn = 1", "%%mlops step a\nx = n + 1"])
    assert run(braces, executor="notebook", project=project, progress=False).status == "succeeded"

    write_notebook(project.home / "noext.ipynb", ["n = 1", "%%mlops step a\nx = n + 1"])
    with pytest.raises(StepFailedError, match=r"step 'a' \(cell 2\) of noext.ipynb did not start: the %%mlops magic "
                       r"is not loaded; run `%load_ext mlops_nb`"):  # fmt: skip
        run(project.home / "noext.ipynb", executor="notebook", project=project, progress=False)
