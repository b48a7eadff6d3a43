"""Pictures the magics and the CLI draw: DAG and lineage diagrams stay readable at notebook width, whatever the
graph's size (top-down, labels never shrunk, wide levels collapsed), rendered to real PNG files."""

from __future__ import annotations

import io

from click.testing import CliRunner
from nbtools import write_notebook

from mlops_nb import Project
from mlops_nb.pipeline.notebook import Pipeline
from mlops_nb.ui.cli import cli
from mlops_nb.ui.plots import FONT, MAX_PER_LEVEL, WIDTH, dag_diagram, lineage_diagram


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _texts(figure) -> list:
    return [t for t in figure.axes[0].texts]


def _fan_out(path, n: int):
    """One step read by ``n`` steps, all read by a last one."""
    cells = ["%load_ext mlops_nb", "%%mlops step load\nrows = list(range(100))"]
    cells += [f"%%mlops step part{i}\npart{i} = rows[{i}::{n}]" for i in range(n)]
    cells.append("%%mlops step join\ntotal = " + " + ".join(f"sum(part{i})" for i in range(n)))
    cells.append("total")
    return write_notebook(path, cells)


def test_a_wide_dag_is_collapsed_and_keeps_its_font(tmp_path):
    pipeline = Pipeline.from_notebook(_fan_out(tmp_path / "wide.ipynb", 14))
    figure = dag_diagram(pipeline, {"load": "succeeded", "part0": "failed"})
    texts = _texts(figure)
    assert figure.get_figwidth() == WIDTH and min(t.get_fontsize() for t in texts) >= FONT - 1
    labels = [t.get_text() for t in texts]
    assert any(label.startswith(f"+{14 - MAX_PER_LEVEL + 1} more") for label in labels)
    assert "load\nsucceeded" in labels and "part0\nfailed" in labels
    png = tmp_path / "wide.png"
    figure.savefig(png, dpi=100, bbox_inches="tight")  # as Picture shows it
    width, height = _png_size(png)
    assert width <= 1000 and height < 600  # shown at its own size at notebook width: nothing shrinks


def test_a_deep_lineage_grows_downward_from_the_cli(tmp_path):
    """The CLI saves the same pictures the magics show: a 6-step lineage, each level one row."""
    import mlops_nb

    (tmp_path / "pyproject.toml").write_text("")
    cells = ["%load_ext mlops_nb", "%%mlops step s0\nv0 = 1"]
    cells += [f"%%mlops step s{i}\nv{i} = v{i - 1} + 1" for i in range(1, 6)]
    cells.append("v5")
    nb = write_notebook(tmp_path / "deep.ipynb", cells)
    run = mlops_nb.run(nb, project=Project(tmp_path), progress=False, executor="dag")
    assert run.status == "succeeded"
    png = tmp_path / "lineage.png"
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "lineage", "v5", "--png", str(png)], obj={})
    assert result.exit_code == 0, result.output
    width, height = _png_size(png)
    assert width <= 1000 and height > 1.3 * width  # 11 rows, top-down: it grows in height, labels stay large
    graph = Project(tmp_path).metadata.lineage("v5")
    figure = lineage_diagram(graph)
    labels = [t.get_text() for t in _texts(figure)]
    assert any(label.startswith("s0 · succeeded") for label in labels)
    assert min(t.get_fontsize() for t in _texts(figure)) >= FONT - 1
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")

    dag_png = tmp_path / "dag.png"
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "dag", str(nb), "--png", str(dag_png)], obj={})
    assert result.exit_code == 0 and f"diagram: {dag_png}" in result.output and dag_png.is_file()

    bad = tmp_path / "no-such-folder" / "dag.png"
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "dag", str(nb), "--png", str(bad)], obj={})
    assert result.exit_code == 2 and "Traceback" not in result.output  # a usage error, before any work
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--png': {bad}: the folder {bad.parent} does not exist"
    )
