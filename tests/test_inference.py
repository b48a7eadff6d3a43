"""What a cell reads and assigns (``inference.analyze``), and the IPython-to-Python ``transform`` it relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mlops_nb.pipeline.inference import analyze, normalize
from mlops_nb.pipeline.notebook import transform


@dataclass
class Case:
    """One snippet and exactly what ``analyze`` must find in it (``reads`` in first-read order)."""

    id: str
    code: str
    reads: list[str]
    assigned: set[str]
    imported: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    star_import: bool = False
    modules: list[tuple[str, int]] | None = None  # None: not checked
    ipython: bool = False  # run the source through ``transform`` first


CASES = [
    # loops ---------------------------------------------------------------------------------------------------
    Case("for-loop-accumulates", "for i in range(n):\n    total += i\n", ["range", "n", "total"], {"i", "total"}),
    Case("for-else", "for i in xs:\n    pass\nelse:\n    last = i\n", ["xs"], {"i", "last"}),
    Case("while-reads-and-rebinds", "while x < limit:\n    x = x + step\n", ["x", "limit", "step"], {"x"}),
    Case("for-nested-tuple-target", "for k, (a, b) in pairs:\n    s = a + b\n", ["pairs"], {"k", "a", "b", "s"}),
    # comprehensions ------------------------------------------------------------------------------------------
    Case("listcomp-with-condition", "ys = [x * k for x in xs if x > lo]", ["xs", "lo", "k"], {"ys"}),
    Case("dictcomp", "d = {k: v * w for k, v in items.items()}", ["items", "w"], {"d"}),
    Case("setcomp", "s = {x % m for x in xs}", ["xs", "m"], {"s"}),
    Case("genexp-in-call", "t = sum(x for x in xs if x)", ["sum", "xs"], {"t"}),
    Case(
        "nested-comprehension",
        "m = [[a * b for b in row if b > cut] for row in grid for a in row]",
        ["grid", "cut"],
        {"m"},
    ),
    Case("comprehension-variable-does-not-leak", "ys = [x for x in xs]\nz = x", ["xs", "x"], {"ys", "z"}),
    Case("comprehension-shadows-cell-name", "x = 1\nys = [x for x in xs]", ["xs"], {"x", "ys"}),
    Case("comprehension-iterates-same-name", "x = [x for x in x]", ["x"], {"x"}),
    # functions, lambdas, classes -----------------------------------------------------------------------------
    Case(
        "function-reads-globals-when-called",
        "def f(a):\n    local = a * scale\n    return local + offset\nr = f(3)",
        ["offset", "scale"],
        {"f", "r"},
    ),
    Case("function-default-read-at-definition", "def f(a=default):\n    return a\n", ["default"], {"f"}),
    Case("function-reads-a-name-the-cell-assigns", "def f():\n    return later\nlater = 1", [], {"f", "later"}),
    Case("recursive-function", "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)", [], {"fact"}),
    Case("decorator", "@cache\ndef f():\n    return 1", ["cache"], {"f"}),
    Case("annotations-read-at-definition", "def f(a: Config) -> Result:\n    return a", ["Config", "Result"], {"f"}),
    Case(
        "postponed-annotations-are-not-read",
        "from __future__ import annotations\ndef f(a: Config) -> Result:\n    return a",
        [],
        {"f"},
        imported={"annotations"},
        modules=[("__future__", 0), ("__future__.annotations", 0)],
    ),
    Case("annotated-assignment", "n: Count = m", ["m", "Count"], {"n"}),
    Case("lambda-body-reads-global", "g = lambda v: v * factor", ["factor"], {"g"}),
    Case("lambda-default", "g = lambda v=base: v", ["base"], {"g"}),
    Case("lambdas-in-comprehension", "fs = [lambda: i for i in range(3)]", ["range"], {"fs"}),
    Case(
        "class-bases-body-and-methods",
        "class Model(Base, metaclass=Meta):\n    size = const\n    def fit(self):\n        return helper(self)\n",
        ["Base", "Meta", "const", "helper"],
        {"Model"},
    ),
    Case("class-used-in-cell", "class A:\n    pass\nb = A()", [], {"A", "b"}),
    Case(
        "global-assigned-inside-function",
        "def setup():\n    global counter\n    counter = start\nsetup()",
        ["start"],
        {"setup", "counter"},
    ),
    Case(
        "global-updated-inside-function",
        "def bump():\n    global counter\n    counter += step\nbump()",
        ["counter", "step"],
        {"bump", "counter"},
    ),
    Case(
        "nonlocal-stays-in-function",
        "def outer():\n    v = 1\n    def inner():\n        nonlocal v\n        v = w\n    return inner",
        ["w"],
        {"outer"},
    ),
    Case(
        "import-inside-function",
        "def f():\n    import json\n    return json.dumps(x)",
        ["x"],
        {"f"},
        modules=[("json", 0)],
    ),
    # augmented assignment and mutation -----------------------------------------------------------------------
    Case("augmented-assignment", "total += x", ["x", "total"], {"total"}),
    Case("augmented-attribute", "obj.count += 1", ["obj"], {"obj"}),
    Case("augmented-subscript", "counts[key] += 1", ["counts", "key"], {"counts"}),
    Case("subscript-mutation", "df['x'] = df['a'] * 2", ["df"], {"df"}),
    Case("attribute-mutation", "obj.attr = value", ["value", "obj"], {"obj"}),
    Case("nested-subscript-mutation", "a[0][1] = b", ["b", "a"], {"a"}),
    Case("deep-attribute-mutation", "a.b.c = 1", ["a"], {"a"}),
    Case("call-result-mutation-binds-nothing", "f(x)[0] = 1", ["f", "x"], set()),
    Case("x-equals-x-plus-one", "x = x + 1", ["x"], {"x"}),
    Case("read-after-assign-in-same-cell", "x = 1\nprint(x)", ["print"], {"x"}),
    Case("read-before-assign-in-same-cell", "print(x)\nx = 1", ["print", "x"], {"x"}),
    # del -----------------------------------------------------------------------------------------------------
    Case("del-name", "del tmp", ["tmp"], set(), deleted={"tmp"}),
    Case("del-several", "del a, b", ["a", "b"], set(), deleted={"a", "b"}),
    Case("assign-then-del", "tmp = 1\ndel tmp", [], set(), deleted={"tmp"}),
    Case("del-then-assign-again", "del tmp\ntmp = 1", ["tmp"], {"tmp"}),
    Case("del-subscript-is-mutation", "del d['k']", ["d"], {"d"}),
    # imports -------------------------------------------------------------------------------------------------
    Case(
        "star-import",
        "from numpy import *\nz = zeros(3)",
        ["zeros"],
        {"z"},
        star_import=True,
        modules=[("numpy", 0)],
    ),
    Case("import-dotted-as", "import a.b as c", [], set(), imported={"c"}, modules=[("a.b", 0)]),
    Case("import-dotted-binds-root", "import os.path", [], set(), imported={"os"}, modules=[("os.path", 0)]),
    Case("from-import-as", "from x import y as z", [], set(), imported={"z"}, modules=[("x", 0), ("x.y", 0)]),
    Case(
        "relative-from-import",
        "from .pkg import thing",
        [],
        set(),
        imported={"thing"},
        modules=[("pkg", 1), ("pkg.thing", 1)],
    ),
    Case("import-then-rebind", "import pandas as pd\npd = pd.DataFrame()", [], {"pd"}, modules=[("pandas", 0)]),
    # binding forms -------------------------------------------------------------------------------------------
    Case("walrus", "if (n := len(xs)) > 3:\n    big = n", ["len", "xs"], {"n", "big"}),
    Case("walrus-in-comprehension-binds-in-cell", "ys = [y for x in xs if (y := f(x))]", ["xs", "f"], {"y", "ys"}),
    Case(
        "try-except-as-unbinds-name",
        "try:\n    r = risky()\nexcept ValueError as err:\n    msg = str(err)\nfinally:\n    done = True",
        ["risky", "ValueError", "str"],
        {"r", "msg", "done"},
    ),
    Case(
        "with-as",
        "with open(path) as fh, lock:\n    text = fh.read()",
        ["open", "path", "lock"],
        {"fh", "text"},
    ),
    Case("with-as-tuple", "with ctx() as (a, b):\n    c = a", ["ctx"], {"a", "b", "c"}),
    Case(
        "match-statement",
        "match cmd:\n"
        "    case [first, *rest]:\n"
        "        out = first\n"
        "    case {'k': v, **others}:\n"
        "        out = v\n"
        "    case Point(x=px) as p if px > lim:\n"
        "        out = px\n"
        "    case Color.RED:\n"
        "        out = 0\n"
        "    case _:\n"
        "        out = fallback",
        ["cmd", "Point", "lim", "Color", "fallback"],
        {"first", "rest", "v", "others", "px", "p", "out"},
    ),
    Case("f-string", "label = f'{name}: {value:.{digits}f}'", ["name", "value", "digits"], {"label"}),
    Case("tuple-swap", "a, b = b, a", ["b", "a"], {"a", "b"}),
    Case("nested-tuple-unpacking", "(p, q), r = pair, third", ["pair", "third"], {"p", "q", "r"}),
    Case("starred-assignment", "first, *rest = items", ["items"], {"first", "rest"}),
    # IPython syntax (transformed first) ----------------------------------------------------------------------
    Case("line-magic", "%matplotlib inline\nplt.plot(xs)", ["get_ipython", "plt", "xs"], set(), ipython=True),
    Case("shell-escape", "!ls\ny = 1", ["get_ipython"], {"y"}, ipython=True),
    Case("shell-capture", "files = !ls {folder}", ["get_ipython"], {"files"}, ipython=True),
    # the magic's argument is a string to IPython: `f` is read only when the magic runs it
    Case("indented-line-magic", "for i in xs:\n    %time f(i)", ["xs", "get_ipython"], {"i"}, ipython=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_analyze(case: Case):
    code = transform(case.code) if case.ipython else case.code
    result = analyze(code)
    assert result.reads == case.reads
    assert result.assigned == case.assigned
    assert result.imported == case.imported
    assert result.deleted == case.deleted
    assert result.star_import is case.star_import
    if case.modules is not None:
        assert result.modules == case.modules


def test_there_are_enough_cases():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_syntax_error_raises():
    with pytest.raises(SyntaxError):
        analyze("x = (")


# transform ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source", ["x = 1\n", "def f(a):\n    return a * 2\n\ny = f(3)\n", ""], ids=["one", "def", "empty"]
)
def test_transform_leaves_plain_python_unchanged(source):
    assert transform(source) is source


def test_transform_adds_a_final_newline_to_plain_python():
    assert transform("x = 1") == "x = 1\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("%load_ext mlops_nb", "get_ipython().run_line_magic('load_ext', 'mlops_nb')\n"),
        (
            "%load_ext mlops_nb\nimport pandas as pd",
            "get_ipython().run_line_magic('load_ext', 'mlops_nb')\nimport pandas as pd\n",
        ),
        ("%matplotlib inline", "get_ipython().run_line_magic('matplotlib', 'inline')\n"),
        ("!ls", "get_ipython().system('ls')\n"),
        ("x = !ls", "x = get_ipython().getoutput('ls')\n"),
        ("%%time\nz = w + 1", "get_ipython().run_cell_magic('time', '', 'z = w + 1\\n')\n"),
        ("%%capture out\nprint(1)", "get_ipython().run_cell_magic('capture', 'out', 'print(1)\\n')\n"),
    ],
    ids=["load-ext", "load-ext-then-code", "matplotlib", "shell", "shell-capture", "cell-magic", "cell-magic-args"],
)
def test_transform_ipython_syntax(source, expected):
    assert transform(source) == expected


@pytest.mark.parametrize(
    "source",
    ["%load_ext mlops_nb\nx = 1", "x = !ls", "%%time\nz = w + 1", "for i in xs:\n    %time f(i)"],
    ids=["line-magic", "shell-capture", "cell-magic", "indented-magic"],
)
def test_transform_matches_ipython(source):
    from IPython.core.inputtransformer2 import TransformerManager

    assert transform(source) == TransformerManager().transform_cell(source)


def test_cell_magic_body_is_opaque_to_inference():
    result = analyze(transform("%%time\nz = w + 1"))
    assert result.reads == ["get_ipython"]
    assert result.assigned == set()


# normalize ---------------------------------------------------------------------------------------------------
def test_normalize_ignores_comments_and_formatting():
    plain = "x = f(a, b)\ny = [i for i in x]\n"
    noisy = "# a comment\nx = f( a,\n      b )  # trailing\n\n\ny = [ i for i in x ]\n"
    assert normalize(plain) == normalize(noisy)


@pytest.mark.parametrize(
    "changed",
    [
        "x = f(a, c)\ny = [i for i in x]\n",
        "x = f(a, b)\ny = [i for i in x if i]\n",
        "x = f(b, a)\ny = [i for i in x]\n",
    ],
    ids=["name", "condition", "argument-order"],
)
def test_normalize_changes_with_code(changed):
    assert normalize("x = f(a, b)\ny = [i for i in x]\n") != normalize(changed)


def test_normalize_changes_with_string_constants():
    assert normalize("path = 'data/a.csv'") != normalize("path = 'data/b.csv'")
