"""Property tests of the notebook parser and of input/output inference: random cells, in random orders, with
random step headers, flags and bodies, never raise anything but MlopsError (the one-line errors users see), and a
notebook that parses gives a DAG whose edges follow the cell order."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_nb.exceptions import MlopsError
from mlops_nb.pipeline.inference import analyze
from mlops_nb.pipeline.notebook import Pipeline

NAMES = st.sampled_from(["a", "b", "frame", "model", "x", "y", "n", "df", "total", "_", "pd"])
WORDS = st.text(alphabet=string.ascii_letters + string.digits + "_-.'\";$ \u00e4\U0001f600", max_size=12)
FLAGS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["--inputs", "--outputs"]), st.lists(NAMES, max_size=3).map(",".join)),
        st.tuples(st.sampled_from(["--reads"]), st.sampled_from(["data.csv", "../x", "/dev/null", "", "a b"])),
        st.tuples(st.sampled_from(["--retries"]), st.sampled_from(["0", "2", "-1", "x"])),
        st.tuples(st.sampled_from(["--no-cache", "--bogus", "-x"]), st.just("")),
    ),
    max_size=3,
).map(lambda flags: " ".join(f"{k} {v}".strip() for k, v in flags))
HEADER = st.one_of(
    st.builds(lambda name, flags: f"%%mlops step {name} {flags}", st.one_of(NAMES, WORDS), FLAGS),
    st.sampled_from(["%%mlops", "%%mlops step", "%%mlops run", "%mlops dag", "%load_ext mlops_nb", "%%time"]),
)
BODY_LINE = st.one_of(
    st.builds(lambda a, b: f"{a} = {b} + 1", NAMES, NAMES),
    st.builds(lambda a: f"print({a})", NAMES),
    st.builds(lambda a: f"import {a}", st.sampled_from(["os", "pandas as pd", "json", "nosuchmodule"])),
    st.builds(lambda a, b: f"def {a}():\n    return {b}", NAMES, NAMES),
    st.builds(lambda a: f"global {a}\n{a} = 1", NAMES),
    st.sampled_from(["x = = 1", "for i in range(3):\n    y = i", "del x", "lambda: z", "!ls", "x?", "%who"]),
    WORDS,
)
SOURCE = st.builds(
    lambda header, lines: "\n".join(([header] if header else []) + lines),
    st.one_of(st.none(), HEADER),
    st.lists(BODY_LINE, max_size=4),
)
CELL = st.one_of(
    st.builds(
        lambda kind, source, tags, split: {
            "cell_type": kind,
            "metadata": {"tags": tags} if tags else {},
            "source": source.splitlines(keepends=True) if split else source,
            **({"outputs": [], "execution_count": None} if kind == "code" else {}),
        },
        st.sampled_from(["code", "code", "code", "markdown", "raw"]),
        SOURCE,
        st.lists(st.sampled_from(["parameters", "skip", "injected-parameters"]), max_size=1),
        st.booleans(),
    ),
    st.builds(dict),  # an empty object, where a cell belongs
    st.one_of(st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2)),
    st.fixed_dictionaries(
        {"cell_type": st.just("code"), "source": st.one_of(st.integers(), st.none(), st.lists(st.none(), max_size=2))}
    ),
)
NOTEBOOK = st.builds(
    lambda cells, version, metadata: {"cells": cells, "nbformat": version, "nbformat_minor": 5,
                                      "metadata": metadata},
    st.lists(CELL, max_size=8),
    st.sampled_from([4, 4, 4, 3, 5, "4", None]),
    st.one_of(st.just({"kernelspec": {"name": "python3", "display_name": "Python 3"}}), st.just({}),
              st.just([]), st.none()),
)  # fmt: skip

GOOD_CELL = st.builds(
    lambda source, tags: {
        "cell_type": "code",
        "metadata": {"tags": tags} if tags else {},
        "source": source,
        "outputs": [],
        "execution_count": None,
    },
    SOURCE,
    st.lists(st.sampled_from(["parameters", "skip"]), max_size=1),
)
WELL_FORMED = st.builds(
    lambda cells: {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                   "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}}},
    st.lists(st.one_of(GOOD_CELL, GOOD_CELL, st.just({"cell_type": "markdown", "metadata": {}, "source": "# t"})),
             min_size=1, max_size=8),
)  # fmt: skip

FOLDER = Path(tempfile.mkdtemp(prefix="mlops_nb-props-"))


def _parse_or_refuse(notebook) -> None:
    path = FOLDER / "random.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    try:
        pipeline = Pipeline.from_notebook(path)
    except MlopsError as exc:
        assert str(exc).strip(), "an error with no message"
        return
    order = {step.name: step.cell_index for step in pipeline.steps}
    assert len(order) == len(pipeline.steps)  # step names are unique
    for up, down, name in pipeline.edges():
        assert order[up] < order[down], (up, down, name)  # a step reads only what earlier steps made
    pipeline.to_text()  # what `mlops-nb dag` prints, for any notebook that parses


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NOTEBOOK)
def test_any_notebook_json_parses_or_is_refused_with_an_mlops_error(notebook):
    _parse_or_refuse(notebook)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WELL_FORMED)
def test_any_cells_in_any_order_parse_or_are_refused_with_an_mlops_error(notebook):
    _parse_or_refuse(notebook)


@settings(max_examples=500, deadline=None)
@given(st.lists(BODY_LINE, max_size=6).map("\n".join))
def test_inference_of_any_cell_raises_only_a_syntax_error(code):
    try:
        result = analyze(code)
    except SyntaxError:
        return
    assert all(name.isidentifier() and name in code for name in result.reads)  # inputs are names the cell uses
    assert len(result.reads) == len(set(result.reads))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_inference_of_arbitrary_text_raises_only_a_syntax_error(code):
    try:
        analyze(code)
    except (SyntaxError, ValueError):  # ValueError: source with a NUL byte, as compile() says
        return
