"""A notebook as a pipeline: inferred DAG, declared options, parameters, local modules, and every validation."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlops_nb.exceptions import MlopsError
from mlops_nb.pipeline.notebook import Pipeline, PipelineError, parse_magic_line

ROOT = Path(__file__).resolve().parents[1]


def notebook(path: Path, sources: list[str], parameters: int | None = None, markdown: tuple[int, ...] = ()) -> Path:
    """A notebook of these cells (code, or markdown at the ``markdown`` indices); cell ``parameters`` is tagged."""
    cells = []
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_markdown_cell(source) if i in markdown else nbformat.v4.new_code_cell(source)
        if i == parameters:
            cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def load(tmp_path: Path, sources: list[str], parameters: int | None = None, name: str = "nb.ipynb") -> Pipeline:
    return Pipeline.from_notebook(notebook(tmp_path / name, sources, parameters))


def problems(tmp_path: Path, sources: list[str], parameters: int | None = None, name: str = "nb.ipynb") -> list[str]:
    with pytest.raises(PipelineError) as info:
        load(tmp_path, sources, parameters, name)
    return info.value.problems


# the DAG -----------------------------------------------------------------------------------------------------
BRANCHING = [
    "import math\nscale = 2",  # 1: setup
    "n = 4\nseed = 1",  # 2: parameters
    "%%mlops step raw_a\na = list(range(n))",  # 3
    "%%mlops step raw_b\nb = [seed] * 3\nscratch = 0",  # 4
    "%%mlops step clean_b\nb2 = [x + 1 for x in b]",  # 5: after raw_b in the DAG, before clean_a in the notebook
    "%%mlops step clean_a --reads data/a.csv\na2 = [math.sqrt(x) * scale for x in a]",  # 6
    "%%mlops step join\ntotal = sum(a2) + sum(b2)",  # 7
    "print(total)",  # 8: a report cell
]


@pytest.fixture
def branching(tmp_path) -> Pipeline:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x\n1\n")
    return load(tmp_path, BRANCHING, parameters=1, name="branching.ipynb")


def test_branching_dag_follows_inputs_not_cell_order(branching):
    steps = {s.name: s for s in branching.steps}
    assert [s.name for s in branching.steps] == ["raw_a", "raw_b", "clean_b", "clean_a", "join"]
    assert {name: (s.inputs, s.outputs) for name, s in steps.items()} == {
        "raw_a": ([], ["a"]),
        "raw_b": ([], ["b"]),  # `scratch` is read by no later cell: not an output
        "clean_b": (["b"], ["b2"]),
        "clean_a": (["a"], ["a2"]),
        "join": (["a2", "b2"], ["total"]),  # `total` is read by the report cell
    }
    assert {name: s.upstream for name, s in steps.items()} == {
        "raw_a": {},
        "raw_b": {},
        "clean_b": {"b": "raw_b"},
        "clean_a": {"a": "raw_a"},
        "join": {"a2": "clean_a", "b2": "clean_b"},
    }
    assert branching.edges() == [
        ("raw_b", "clean_b", "b"),
        ("raw_a", "clean_a", "a"),
        ("clean_a", "join", "a2"),
        ("clean_b", "join", "b2"),
    ]
    assert [s.cell for s in branching.steps] == [3, 4, 5, 6, 7]
    assert branching.setup_cells == [0]
    assert branching.parameters_cell == 1
    assert branching.report_cells == [7]


def test_setup_names_and_parameters_are_not_inputs(branching):
    clean_a = branching.step("clean_a")
    assert clean_a.inputs == ["a"]  # `math` and `scale` come from the setup cell
    assert branching.params == {"n": 4, "seed": 1}
    assert {s.name: s.params for s in branching.steps} == {
        "raw_a": ["n"],
        "raw_b": ["seed"],
        "clean_b": [],
        "clean_a": [],
        "join": [],
    }
    assert clean_a.reads == ["data/a.csv"]


def test_downstream(branching):
    assert branching.downstream("raw_a") == ["clean_a", "join"]
    assert branching.downstream("raw_b") == ["clean_b", "join"]
    assert branching.downstream("clean_b") == ["join"]
    assert branching.downstream("join") == []


def test_to_text(branching):
    assert branching.to_text() == (
        "branching (branching.ipynb): 5 steps\n"
        "  params: n=4, seed=1\n"
        "  [ 3] raw_a: (no inputs) -> a  (params n)\n"
        "  [ 4] raw_b: (no inputs) -> b  (params seed)\n"
        "  [ 5] clean_b: b <- raw_b -> b2\n"
        "  [ 6] clean_a: a <- raw_a -> a2  (reads data/a.csv)\n"
        "  [ 7] join: a2 <- clean_a, b2 <- clean_b -> total\n"
        "  report cells: 8 (they show results; no cache key contains them)"
    )
    assert branching.to_dict()["report_cells"] == [8]


@pytest.mark.parametrize(
    ("source", "report"),
    [
        ("%mlops dag", True),
        ("%mlops runs 5\n%mlops lineage model\n%mlops timeline", True),
        ("%mlops features customer_stats", True),
        ("n", True),  # a bare name: displayed
        ("%mlops timeline\nn", True),
        ("%mlops run", False),  # runs the notebook: not a report
        ("%mlops end", False),
        ("%load_ext mlops_nb", False),
        ("%matplotlib inline", False),
        ("n = 2", False),
        ("print(n)", False),
        ("%mlops dag\nimport os", False),
    ],
)
def test_report_cells_are_in_no_cache_key(tmp_path, source, report):
    """A cell that only shows things (read-only %mlops magics, bare names) is a report cell: adding or editing it
    leaves the setup hash, and so every cache key, as it was."""
    cells = ["%load_ext mlops_nb\nn = 1", "%%mlops step a\nx = n + 1", "x"]
    plain = Pipeline(tmp_path / "nb.ipynb", [{"cell_type": "code", "source": c} for c in cells])
    with_cell = Pipeline(
        tmp_path / "nb.ipynb", [{"cell_type": "code", "source": c} for c in [*cells[:2], source, cells[2]]]
    )
    assert (2 in with_cell.report_cells) is report
    assert (with_cell.setup_hash == plain.setup_hash) is report
    assert with_cell.step("a").outputs == ["x"]  # the last cell still reads x: still an output


MERMAID = """flowchart TD
  s0["raw_a<br/><i>succeeded</i>"]
  s1["raw_b"]
  s2["clean_b"]
  s3["clean_a"]
  {rid}[("data/a.csv")] --> s3
  s4["join<br/><i>failed</i>"]
  s1 -->|b| s2
  s0 -->|a| s3
  s3 -->|a2| s4
  s2 -->|b2| s4
  style s0 fill:#c8e6c9
  style s4 fill:#ffcdd2"""


def test_to_mermaid(branching):
    text = branching.to_mermaid({"raw_a": "succeeded", "join": "failed"})
    assert text == MERMAID.format(rid="r" + hashlib.sha256(b"data/a.csv").hexdigest()[:8])
    assert "style" not in branching.to_mermaid()


def test_to_mermaid_is_stable_across_processes(branching):
    script = (
        "import sys\nfrom mlops_nb.pipeline import Pipeline\nprint(Pipeline.from_notebook(sys.argv[1]).to_mermaid())"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script, str(branching.path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        outputs.add(result.stdout.strip())
    assert outputs == {branching.to_mermaid()}


def test_to_dict(branching):
    data = branching.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["notebook"] == str(branching.path) and data["name"] == "branching"
    assert data["params"] == {"n": 4, "seed": 1}
    assert data["steps"][3] == {
        "name": "clean_a",
        "cell": 6,
        "inputs": ["a"],
        "outputs": ["a2"],
        "reads": ["data/a.csv"],
        "params": [],
        "upstream": ["raw_a"],
        "no_cache": False,
        "retries": 0,
    }
    assert data["steps"][4]["upstream"] == ["clean_a", "clean_b"]
    assert data["edges"] == [
        {"from": "raw_b", "to": "clean_b", "name": "b"},
        {"from": "raw_a", "to": "clean_a", "name": "a"},
        {"from": "clean_a", "to": "join", "name": "a2"},
        {"from": "clean_b", "to": "join", "name": "b2"},
    ]


def test_declared_inputs_and_outputs_win(tmp_path):
    pipeline = load(
        tmp_path,
        [
            "%%mlops step make --outputs x --no-cache --retries 2\nx = 1\ny = 2",
            "%%mlops step use --inputs x --outputs result\nresult = x + 1\nother = 3",
            "%%mlops step last\nz = result + other",
        ],
    )
    make, use, last = pipeline.steps
    assert (make.outputs, make.declared_outputs, make.no_cache, make.retries) == (["x"], ["x"], True, 2)
    assert (use.inputs, use.declared_inputs, use.outputs) == (["x"], ["x"], ["result"])
    assert last.inputs == ["result"]  # `other` is not declared, so it is not an output of `use`
    assert pipeline.edges() == [("make", "use", "x"), ("use", "last", "result")]


def test_declared_inputs_with_star_import_are_accepted(tmp_path):
    pipeline = load(
        tmp_path,
        [
            "%%mlops step base\nradius = 2.0",
            "%%mlops step area --inputs radius --outputs area\nfrom math import *\narea = pi * radius ** 2",
        ],
    )
    assert pipeline.step("area").inputs == ["radius"] and pipeline.step("area").outputs == ["area"]


def test_mutation_and_rebinding_chain_steps(tmp_path):
    pipeline = load(
        tmp_path,
        [
            "%%mlops step load\ndf = {'a': 1}",
            "%%mlops step enrich\ndf['b'] = df['a'] * 2",
            "%%mlops step count\nn = 0\nn += len(df)",
            "%%mlops step report\nsummary = (n, df)",
        ],
    )
    assert pipeline.edges() == [
        ("load", "enrich", "df"),
        ("enrich", "count", "df"),
        ("count", "report", "n"),
        ("enrich", "report", "df"),
    ]
    assert pipeline.step("enrich").outputs == ["df"]
    assert pipeline.step("count").inputs == ["df"]  # `n` is assigned before it is read


def test_parameter_reassigned_by_a_step(tmp_path):
    pipeline = load(tmp_path, ["n = 3", "%%mlops step a\nn = n + 1", "%%mlops step b\nm = n * 2"], parameters=0)
    assert pipeline.step("a").params == ["n"] and pipeline.step("a").outputs == ["n"]
    assert pipeline.step("b").params == [] and pipeline.step("b").upstream == {"n": "a"}


def test_markdown_cells_count_in_cell_numbers(tmp_path):
    path = notebook(tmp_path / "nb.ipynb", ["# Title", "%%mlops step a\nx = 1"], markdown=(0,))
    assert Pipeline.from_notebook(path).step("a").cell == 2


def test_quickstart_notebook(tmp_path):
    from nbtools import copy_quickstart

    pipeline = Pipeline.from_notebook(copy_quickstart(tmp_path / "qs"))
    assert [s.name for s in pipeline.steps] == ["load", "clean", "features", "split", "train", "evaluate"]
    assert pipeline.step("split").upstream == {"X": "features", "y": "features"}
    assert pipeline.step("train").outputs == ["model"]
    assert pipeline.step("evaluate").upstream == {"model": "train", "X_test": "split", "y_test": "split"}
    assert pipeline.step("load").reads == ["data/raw.csv"]
    assert pipeline.step("load").params == ["n_rows"]
    assert list(pipeline.setup_modules) == ["helpers.py"]
    assert pipeline.report_cells == [10, 12, 14, 15]  # metrics; %mlops runs, lineage, dag: no cache key holds them


# local modules -----------------------------------------------------------------------------------------------
def test_local_modules_are_hashed_transitively(tmp_path):
    (tmp_path / "helpers.py").write_text("import util\n\ndef f():\n    import lazy\n    return lazy.X\n")
    (tmp_path / "util.py").write_text("A = 1\n")
    (tmp_path / "lazy.py").write_text("X = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub.py").write_text("from . import sibling\n")
    (tmp_path / "pkg" / "sibling.py").write_text("B = 1\n")
    (tmp_path / "stepmod.py").write_text("from pkg import sub\n")
    sources = [
        "import json\nimport helpers",
        "%%mlops step a\nfrom stepmod import sub\nx = 1",
        "%%mlops step b\nimport os.path\ny = x",
    ]

    def hashes():
        pipeline = load(tmp_path, sources)
        return pipeline.setup_modules, pipeline.step("a").modules, pipeline.step("b").modules

    setup, a, b = hashes()
    assert sorted(setup) == ["helpers.py", "lazy.py", "util.py"]
    assert sorted(a) == ["pkg/__init__.py", "pkg/sibling.py", "pkg/sub.py", "stepmod.py"]
    assert b == {}  # json, os.path: not local

    (tmp_path / "util.py").write_text("A = 2\n")  # imported by helpers
    setup2, a2, _ = hashes()
    assert setup2["util.py"] != setup["util.py"] and setup2["helpers.py"] == setup["helpers.py"]
    assert a2 == a

    (tmp_path / "lazy.py").write_text("X = 2\n")  # imported inside a helper function
    assert hashes()[0]["lazy.py"] != setup2["lazy.py"]

    (tmp_path / "pkg" / "sibling.py").write_text("B = 2\n")  # stepmod -> pkg.sub -> pkg.sibling
    _, a3, _ = hashes()
    assert a3["pkg/sibling.py"] != a["pkg/sibling.py"]
    assert {k: v for k, v in a3.items() if k != "pkg/sibling.py"} == {
        k: v for k, v in a.items() if k != "pkg/sibling.py"
    }

    before = hashes()
    (tmp_path / "unrelated.py").write_text("C = 1\n")  # imported by nothing
    assert hashes() == before


def test_setup_hash_ignores_comments_but_not_code(tmp_path):
    base = load(tmp_path, ["scale = 2", "%%mlops step a\nx = scale"])
    comment = load(tmp_path, ["# the scale\nscale  =  2", "%%mlops step a\nx = scale"])
    changed = load(tmp_path, ["scale = 3", "%%mlops step a\nx = scale"])
    assert base.setup_hash == comment.setup_hash != changed.setup_hash
    assert base.notebook_hash != comment.notebook_hash


# parameters --------------------------------------------------------------------------------------------------
PARAMS = ["n = 3\nrate = 0.5\nflag = True\nname = 'run'\nlayers = [1, 2]\nopts = {'a': 1}\nnothing = None"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"n": "5"}, {"n": 5}),
        ({"n": "-2"}, {"n": -2}),
        ({"rate": "1e-3"}, {"rate": 0.001}),
        ({"rate": "2"}, {"rate": 2.0}),
        ({"flag": "false"}, {"flag": False}),
        ({"flag": "YES"}, {"flag": True}),
        ({"flag": "0"}, {"flag": False}),
        ({"name": "7"}, {"name": "7"}),
        ({"name": "[1]"}, {"name": "[1]"}),
        ({"layers": "[3, 4, 5]"}, {"layers": [3, 4, 5]}),
        ({"layers": '["a", "b"]'}, {"layers": ["a", "b"]}),
        ({"opts": '{"b": 2}'}, {"opts": {"b": 2}}),
        ({"nothing": "x"}, {"nothing": "x"}),
        ({"n": 9, "rate": 1}, {"n": 9, "rate": 1}),
    ],
    ids=[
        "int",
        "negative-int",
        "float-exponent",
        "float-from-int-text",
        "bool-false",
        "bool-yes",
        "bool-0",
        "str-stays-str",
        "str-looking-like-list",
        "list-json",
        "list-of-strings",
        "dict",
        "none-default",
        "python-values",
    ],
)
def test_resolve_params(tmp_path, given, expected):
    pipeline = load(tmp_path, PARAMS + ["%%mlops step a\nx = n"], parameters=0)
    defaults = {"n": 3, "rate": 0.5, "flag": True, "name": "run", "layers": [1, 2], "opts": {"a": 1}, "nothing": None}
    resolved = pipeline.resolve_params(given)
    assert resolved == {**defaults, **expected}
    assert all(type(resolved[k]) is type(v) for k, v in expected.items())
    assert pipeline.resolve_params(None) == defaults


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"n": "abc"}, "parameter 'n' expects int (default 3 in cell 1), got 'abc'"),
        ({"n": "3.5"}, "parameter 'n' expects int (default 3 in cell 1), got '3.5'"),
        ({"n": 2.5}, "parameter 'n' expects int (default 3 in cell 1), got 2.5"),
        ({"n": True}, "parameter 'n' expects int (default 3 in cell 1), got True"),
        ({"rate": "fast"}, "parameter 'rate' expects float (default 0.5 in cell 1), got 'fast'"),
        ({"flag": "maybe"}, "parameter 'flag' expects bool (default True in cell 1), got 'maybe'"),
        ({"name": 5}, "parameter 'name' expects str (default 'run' in cell 1), got 5"),
        ({"layers": "[1"}, "parameter 'layers' expects list (default [1, 2] in cell 1), got '[1'"),
        ({"layers": "(1, 2)"}, "parameter 'layers' expects list (default [1, 2] in cell 1), got '(1, 2)'"),
        ({"opts": "[1]"}, "parameter 'opts' expects dict (default {'a': 1} in cell 1), got '[1]'"),
        (
            {"epochs": "3"},
            "parameter 'epochs' is not defined in the parameters cell (cell 1); "
            "defined: flag, layers, n, name, nothing, opts, rate",
        ),
    ],
    ids=[
        "int-text",
        "int-from-float-text",
        "int-from-float",
        "int-from-bool",
        "float-text",
        "bool-text",
        "str-from-int",
        "list-bad-json",
        "list-from-tuple",
        "dict-from-list",
        "unknown",
    ],
)
def test_resolve_params_problems(tmp_path, given, message):
    pipeline = load(tmp_path, PARAMS + ["%%mlops step a\nx = n"], parameters=0)
    with pytest.raises(PipelineError) as info:
        pipeline.resolve_params(given)
    assert info.value.problems == [f"nb.ipynb: {message}"]


def test_resolve_params_reports_every_problem(tmp_path):
    pipeline = load(tmp_path, PARAMS + ["%%mlops step a\nx = n"], parameters=0)
    with pytest.raises(PipelineError) as info:
        pipeline.resolve_params({"n": "x", "rate": "0.1", "epochs": "3", "flag": "2"})
    assert info.value.problems == [
        "nb.ipynb: parameter 'n' expects int (default 3 in cell 1), got 'x'",
        "nb.ipynb: parameter 'epochs' is not defined in the parameters cell (cell 1); "
        "defined: flag, layers, n, name, nothing, opts, rate",
        "nb.ipynb: parameter 'flag' expects bool (default True in cell 1), got '2'",
    ]
    assert str(info.value) == info.value.message == "\n".join(info.value.problems)


def test_parameter_given_without_parameters_cell(tmp_path):
    pipeline = load(tmp_path, ["n = 3", "%%mlops step a\nx = n"])
    with pytest.raises(PipelineError) as info:
        pipeline.resolve_params({"n": "4"})
    assert info.value.problems == [
        "nb.ipynb: parameter 'n' given, but no cell is tagged `parameters`; tag the cell that assigns the parameters"
    ]


# bad notebooks: one line per problem, all at once ---------------------------------------------------------------
OPTIONS = "options: --inputs, --outputs, --reads, --no-cache, --retries"

BAD = [
    (
        "duplicate-step-name",
        ["%%mlops step a\nx = 1", "%%mlops step a\ny = x"],
        None,
        "nb.ipynb cell 2, step 'a': step name 'a' is also used by cell 1; rename one of them",
    ),
    (
        "declared-input-not-produced",
        ["%%mlops step a\nx = 1", "%%mlops step b --inputs x,ghost\ny = x"],
        None,
        "nb.ipynb cell 2, step 'b': input 'ghost' is not produced by any earlier step; "
        "produce it in an earlier step or remove it from --inputs",
    ),
    (
        "reads-what-only-a-later-step-assigns",
        ["%%mlops step a\ny = x + 1", "%%mlops step b\nx = 1"],
        None,
        "nb.ipynb cell 1, step 'a': reads 'x', which only the later step 'b' (cell 2) assigns; move this step after it",
    ),
    (
        "reads-a-later-declared-output",
        ["%%mlops step a\ny = model", "%%mlops step b --outputs model\nmodel = 1"],
        None,
        "nb.ipynb cell 1, step 'a': reads 'model', which only the later step 'b' (cell 2) assigns; "
        "move this step after it",
    ),
    (
        "unknown-option",
        ["%%mlops step a --colour red\nx = 1"],
        None,
        f"nb.ipynb cell 1, step 'a': unrecognized arguments: --colour red in `%%mlops step a --colour red`; {OPTIONS}",
    ),
    (
        "reads-path-missing",
        ["%%mlops step a --reads data/missing.csv\nx = 1"],
        None,
        "nb.ipynb cell 1, step 'a': --reads data/missing.csv does not exist (relative to {folder}); "
        "fix the path or create the file",
    ),
    (
        "name-only-another-step-imports",
        ["%%mlops step a\nimport json\nx = 1", "%%mlops step b\ny = json.dumps(x)"],
        None,
        "nb.ipynb cell 2, step 'b': uses 'json', which step 'a' imports; "
        "move the import to a setup cell so every step (and a cache hit) has it",
    ),
    (
        "annotation-only-another-step-imports",
        ["%%mlops step a\nfrom pathlib import Path\nx = 1", "%%mlops step b\ndef f(p: Path):\n    return p\ny = x"],
        None,
        "nb.ipynb cell 2, step 'b': uses 'Path', which step 'a' imports; "
        "move the import to a setup cell so every step (and a cache hit) has it",
    ),
    (
        "bad-step-name",
        ["%%mlops step 9lives\nx = 1"],
        None,
        "nb.ipynb cell 1: step name '9lives' must start with a letter and use letters, digits, _ . -",
    ),
    (
        "step-name-with-space",
        ["%%mlops step 'a b'\nx = 1"],
        None,
        "nb.ipynb cell 1: step name 'a b' must start with a letter and use letters, digits, _ . -",
    ),
    (
        "missing-step-name",
        ["%%mlops step\nx = 1"],
        None,
        f"nb.ipynb cell 1: the following arguments are required: name in `%%mlops step`; {OPTIONS}",
    ),
    (
        "not-a-step",
        ["%%mlops run a\nx = 1"],
        None,
        "nb.ipynb cell 1: `%%mlops run a` is not a step; write `%%mlops step NAME [options]`",
    ),
    (
        "unclosed-quote",
        ["%%mlops step a --inputs 'x\nx = 1"],
        None,
        "nb.ipynb cell 1: cannot parse `%%mlops step a --inputs 'x`: No closing quotation",
    ),
    (
        "syntax-error-in-step",
        ["%%mlops step a\nx = 1\ny = (x"],
        None,
        "nb.ipynb cell 1, step 'a': syntax error on line 3: '(' was never closed; fix it",
    ),
    (
        "syntax-error-in-setup-cell",
        ["import math\nx = )"],
        None,
        "nb.ipynb cell 1: syntax error on line 2: unmatched ')'; fix it",
    ),
    (
        "negative-retries",
        ["%%mlops step a --retries -1\nx = 1"],
        None,
        "nb.ipynb cell 1, step 'a': --retries must be 0 to 100, not -1",
    ),
    (
        "retries-not-a-number",
        ["%%mlops step a --retries twice\nx = 1"],
        None,
        "nb.ipynb cell 1, step 'a': argument --retries: invalid int value: 'twice' in "
        f"`%%mlops step a --retries twice`; {OPTIONS}",
    ),
    (
        "star-import-undeclared",
        ["%%mlops step a --outputs y\nfrom math import *\ny = pi"],
        None,
        "nb.ipynb cell 1, step 'a': `import *` hides which names the step reads and assigns; declare them with "
        "--inputs and --outputs (or move the import to a setup cell)",
    ),
    (
        "parameter-not-a-literal",
        ["n = int('3')", "%%mlops step a\nx = n"],
        0,
        "nb.ipynb cell 1: parameter 'n' must be a literal value (number, string, bool, None, list or dict), "
        "as papermill requires",
    ),
]


@pytest.mark.parametrize(("sources", "parameters", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_notebook_gives_one_line(tmp_path, sources, parameters, message):
    found = problems(tmp_path, sources, parameters)
    assert found == [message.format(folder=tmp_path.resolve())]
    assert "\n" not in found[0]


def test_there_are_enough_bad_cases():
    assert len(BAD) >= 15


def test_every_problem_is_reported_at_once(tmp_path):
    found = problems(
        tmp_path,
        [
            "%%mlops step load --retries -1\nraw = 1",
            "%%mlops step load\nraw = 2",
            "%%mlops step clean --inputs raw,ghost\nclean = raw",
            "%%mlops step fit --reads nowhere.csv\nmodel = clean",
        ],
    )
    assert found == [
        "nb.ipynb cell 1, step 'load': --retries must be 0 to 100, not -1",
        "nb.ipynb cell 3, step 'clean': input 'ghost' is not produced by any earlier step; "
        "produce it in an earlier step or remove it from --inputs",
        f"nb.ipynb cell 4, step 'fit': --reads nowhere.csv does not exist (relative to {tmp_path.resolve()}); "
        "fix the path or create the file",
    ]


def test_three_problems_three_lines(tmp_path):
    with pytest.raises(PipelineError) as info:
        load(
            tmp_path,
            ["%%mlops step a\nx = 1", "%%mlops step a\ny = 2", "%%mlops step b --bogus\nz = 3", "w = ("],
        )
    assert len(info.value.problems) == 3
    assert str(info.value).splitlines() == info.value.problems
    assert [p.split(":")[0] for p in info.value.problems] == [
        "nb.ipynb cell 2, step 'a'",
        "nb.ipynb cell 3, step 'b'",
        "nb.ipynb cell 4",
    ]


def test_not_strict_keeps_problems_by_cell(tmp_path):
    path = notebook(tmp_path / "nb.ipynb", ["%%mlops step a\nx = 1", "%%mlops step a\ny = 2", "%%mlops step b\nz = x"])
    pipeline = Pipeline.from_notebook(path, strict=False)
    assert pipeline.problems_of(1) == [
        "nb.ipynb cell 2, step 'a': step name 'a' is also used by cell 1; rename one of them"
    ]
    assert pipeline.problems_of(0) == [] and pipeline.problems_of(2) == []
    assert [s.name for s in pipeline.steps] == ["a", "b"]


def test_unknown_step_name(tmp_path):
    pipeline = load(tmp_path, ["%%mlops step a\nx = 1", "%%mlops step b\ny = x"])
    with pytest.raises(MlopsError, match=r"^nb.ipynb has no step 'c'; its steps: a, b$"):
        pipeline.step("c")


def test_missing_notebook(tmp_path):
    path = tmp_path / "nope.ipynb"
    with pytest.raises(MlopsError) as info:
        Pipeline.from_notebook(path)
    assert str(info.value) == f"notebook {path} does not exist; check the path"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("this is not json", "not valid JSON (line 1, column 1): Expecting value"),
        ("", "not valid JSON (line 1, column 1): Expecting value"),
        ('{"metadata": {}}', "no list of cells"),
        ('{"cells": [], "nbformat": 3}', "nbformat 3 (an old notebook; JupyterLab saves it as nbformat 4)"),
        ('{"cells": {}, "nbformat": 4}', "its cells are a JSON dict"),
        ("[1, 2]", "its top level is a JSON list, not an object"),
        ('{"cells": [{"cell_type": "code"}], "nbformat": 4}', "cell 1 has no source"),
        ('{"cells": [{"cell_type": "code", "source": [1]}], "nbformat": 4}',
         "cell 1 has a source that is not text (a string or a list of strings)"),
        ('{"cells": ["x = 1"], "nbformat": 4}', "cell 1 is a JSON str, not an object"),
        ('{"cells": [{"cell_type": "sql", "source": ""}], "nbformat": 4}',
         "cell 1 has cell_type 'sql', not one of code, markdown, raw"),
    ],
    ids=["text", "empty", "no-cells", "nbformat-3", "cells-not-a-list", "json-list", "no-source", "source-ints",
         "cell-a-string", "unknown-cell-type"],
)  # fmt: skip
def test_unreadable_notebook(tmp_path, content, reason):
    path = tmp_path / "broken.ipynb"
    path.write_text(content)
    with pytest.raises(MlopsError) as info:
        Pipeline.from_notebook(path)
    assert not isinstance(info.value, PipelineError)
    assert (
        str(info.value)
        == f"{path} is not a Jupyter notebook mlops_nb can read: {reason}; open and save it in JupyterLab"
    )


def test_parse_magic_line():
    args = parse_magic_line("step train --inputs a,b --outputs model --reads data/x.csv,data/y --no-cache --retries 3")
    assert (args.name, args.outputs, args.reads, args.no_cache, args.retries) == (
        "train",
        "model",
        "data/x.csv,data/y",
        True,
        3,
    )
    with pytest.raises(ValueError, match=r"^--retries must be 0 to 100, not -1$"):
        parse_magic_line("step a --retries -1")
