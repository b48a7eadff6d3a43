"""The layers hold: imports point down only (import-linter's contracts in pyproject.toml, as `make lint` runs them),
nothing imports the package root, and no layer reaches another by a string or through ``sys.modules``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(package_parent), "HOME": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_contracts_kept():
    result = lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # an upward import inside a function counts: the store may not see the engine
        ("store/metadata.py", "def _upward():\n    from ..engine import driver\n", "Layers"),
        # the pipeline layer may not see the stores, nor the settings
        ("pipeline/inference.py", "from ..store import lineage\n", "Layers"),
        ("pipeline/inference.py", "def _home():\n    from ..settings import find_home\n", "pipeline/"),
        # a cycle between two modules of one layer
        ("store/lineage.py", "def _cycle():\n    from . import metadata\n", "No import cycle"),
        # front-end libraries stay in ui/
        ("engine/plan.py", "def _bar():\n    import tqdm\n", "front-end libraries"),
    ],
)
def test_a_deliberate_violation_breaks_a_contract(tmp_path, module, line, broken):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "mlops_nb", copy / "mlops_nb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = copy / "mlops_nb" / module
    target.write_text(target.read_text() + "\n\n" + line)
    result = lint_imports(tmp_path, copy)
    assert result.returncode == 1, result.stdout
    assert re.search(r"Contracts: \d+ kept, [1234] broken", result.stdout), result.stdout
    assert re.search(rf"{broken}.*? (KEPT|BROKEN)", result.stdout.replace("\n", " ")).group(1) == "BROKEN"
    assert "-> " in result.stdout  # the offending import is named


def test_nothing_imports_the_package_root():
    """The root is the public face above every layer; a module importing it would import everything."""
    graph = grimp.build_graph("mlops_nb", cache_dir=None)
    assert graph.find_modules_that_directly_import("mlops_nb") == set()


def test_no_layer_is_reached_by_a_string_or_sys_modules():
    offenders = []
    for path in sorted((ROOT / "mlops_nb").rglob("*.py")):
        text = path.read_text()
        for pattern in (r"sys\.modules\W{1,6}mlops_nb", r"[\"']mlops_nb(\.\w+)+:\w+[\"']"):
            for match in re.finditer(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert offenders == []


def test_every_package_and_module_has_a_docstring():
    missing = []
    for path in sorted((ROOT / "mlops_nb").rglob("*.py")):
        import ast

        if ast.get_docstring(ast.parse(path.read_text())) is None:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []
