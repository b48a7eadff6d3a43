"""What a cell reads and assigns, found with ``ast`` and ``symtable``.

A step's inputs are the names it reads before assigning them; its outputs the names it assigns. The walk follows
execution order at the cell's top level (``x = x + 1`` reads ``x``; ``x = 1; print(x)`` does not), gives
comprehensions their own scope, treats ``df["c"] = ...`` and ``obj.attr = ...`` as reading and re-assigning ``df``
and ``obj``, and counts the global names that functions, lambdas and classes defined in the cell use as reads
(unless the cell assigns them itself), since they are looked up when the function is called.
"""

from __future__ import annotations

import ast
import symtable
from dataclasses import dataclass, field
from functools import lru_cache

_COMPREHENSIONS = {"listcomp", "setcomp", "dictcomp", "genexpr"}


@dataclass
class CellAnalysis:
    """The names one cell reads and binds.

    Attributes:
        reads: names read before the cell binds them, in first-read order.
        assigned: names the cell leaves bound (assignments, defs, classes, mutations), without imports and ``del``.
        imported: names bound by ``import`` statements.
        deleted: names the cell deletes and does not bind again.
        modules: module names the cell imports anywhere, with their relative level (``(name, level)``);
            ``from pkg import x`` also lists ``pkg.x``, which may be a submodule.
        star_import: whether the cell does ``from m import *`` (its names cannot be known).
    """

    reads: list[str] = field(default_factory=list)
    assigned: set[str] = field(default_factory=set)
    imported: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    modules: list[tuple[str, int]] = field(default_factory=list)
    star_import: bool = False


class _Walker(ast.NodeVisitor):
    def __init__(self, postponed: bool = False):
        self.result = CellAnalysis()
        self.postponed = postponed  # `from __future__ import annotations`: annotations are not evaluated
        self.defined: set[str] = set()
        self.scopes: list[set[str]] = []  # comprehension scopes

    # bindings ----------------------------------------------------------------------------------------------
    def load(self, name: str) -> None:
        if any(name in scope for scope in self.scopes):
            return
        if name not in self.defined and name not in self.result.reads:
            self.result.reads.append(name)

    def store(self, name: str, *, module_level: bool = False) -> None:
        if self.scopes and not module_level:
            self.scopes[-1].add(name)
            return
        self.defined.add(name)
        self.result.assigned.add(name)
        self.result.deleted.discard(name)
        self.result.imported.discard(name)

    def mutate(self, node: ast.AST) -> None:
        """``a.b[c].d = ...``: read and re-bind the root name ``a``."""
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            node = node.value
        if isinstance(node, ast.Name):
            self.load(node.id)
            if not any(node.id in scope for scope in self.scopes):
                self.store(node.id)

    # expressions -------------------------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self.store(node.id)

    def _target(self, node: ast.AST) -> None:
        if isinstance(node, ast.Attribute):
            self.visit(node.value)
            self.mutate(node)
        elif isinstance(node, ast.Subscript):
            self.visit(node.value)
            self.visit(node.slice)
            self.mutate(node)
        elif isinstance(node, ast.Starred):
            self._target(node.value)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self._target(element)
        else:
            self.visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self.visit(node.value)
        else:
            self._target(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load):
            self.visit(node.value)
            self.visit(node.slice)
        else:
            self._target(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.store(node.target.id, module_level=True)

    def _comprehension(self, node, *elements: ast.AST) -> None:
        generators = node.generators
        self.visit(generators[0].iter)
        self.scopes.append(set())
        for i, gen in enumerate(generators):
            if i:
                self.visit(gen.iter)
            self.visit(gen.target)
            for condition in gen.ifs:
                self.visit(condition)
        for element in elements:
            self.visit(element)
        self.scopes.pop()

    def visit_ListComp(self, node):
        self._comprehension(node, node.elt)

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node):
        self._comprehension(node, node.key, node.value)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in (*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]):
            self.visit(default)
        # the body's global reads come from symtable (they happen when the lambda is called)

    # statements --------------------------------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self._target(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._target(node.target)
        if not self.postponed:  # a module-level annotation is evaluated
            self.visit(node.annotation)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
            self.store(node.target.id)
        else:
            self._target(node.target)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.load(target.id)
                if not self.scopes:
                    self.defined.discard(target.id)
                    self.result.assigned.discard(target.id)
                    self.result.deleted.add(target.id)
            else:
                self._target(target)

    def visit_For(self, node) -> None:
        self.visit(node.iter)
        self._target(node.target)
        for stmt in (*node.body, *node.orelse):
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._target(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def _definition(self, node) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        if isinstance(node, ast.ClassDef):
            for base in (*node.bases, *[k.value for k in node.keywords]):
                self.visit(base)
        else:
            for default in (*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]):
                self.visit(default)
            if not self.postponed:  # annotations are evaluated when the function is defined
                args = node.args
                for arg in (*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg):
                    if arg is not None and arg.annotation is not None:
                        self.visit(arg.annotation)
                if node.returns is not None:
                    self.visit(node.returns)
        self.store(node.name)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _definition

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            name = alias.asname or alias.name.split(".")[0]
            self.store(name)
            self.result.imported.add(name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.result.star_import = True
                continue
            name = alias.asname or alias.name
            self.store(name)
            self.result.imported.add(name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.store(node.name)
        for stmt in node.body:
            self.visit(stmt)
        if node.name and not self.scopes:  # Python unbinds the name when the handler ends
            self.defined.discard(node.name)
            self.result.assigned.discard(node.name)

    def visit_MatchAs(self, node) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.store(node.name)

    def visit_MatchStar(self, node) -> None:
        if node.name:
            self.store(node.name)

    def visit_MatchMapping(self, node) -> None:
        self.generic_visit(node)
        if node.rest:
            self.store(node.rest)

    def visit_Global(self, node) -> None:  # module-level `global x` changes nothing
        return

    visit_Nonlocal = visit_Global


def _imported_modules(node: ast.Import | ast.ImportFrom) -> list[tuple[str, int]]:
    """``(module, level)`` an import may load: ``from pkg import sub`` may import the submodule ``pkg.sub``."""
    if isinstance(node, ast.Import):
        return [(alias.name, 0) for alias in node.names]
    module = node.module or ""
    found = [(module, node.level)]
    for alias in node.names:
        if alias.name != "*":
            found.append((f"{module}.{alias.name}" if module else alias.name, node.level))
    return found


def _global_updates(tree: ast.AST) -> set[str]:
    """Names a function or class declares ``global`` and updates (``x += 1``): symtable reports no read for them."""
    found: set[str] = set()
    for scope in ast.walk(tree):
        if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        declared, updated = set(), set()
        stack: list[ast.AST] = list(scope.body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Global):
                declared.update(node.names)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                updated.add(node.target.id)
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.extend(ast.iter_child_nodes(node))
        found |= declared & updated
    return found


def _deferred(table: symtable.SymbolTable, deferred: bool, reads: set[str], assigns: set[str]) -> None:
    """Global names read and assigned inside functions, lambdas and classes (run when called)."""
    for child in table.get_children():
        child_deferred = deferred or child.get_name() not in _COMPREHENSIONS
        if child_deferred:
            for symbol in child.get_symbols():
                if symbol.is_global() and symbol.is_referenced():
                    reads.add(symbol.get_name())
                if symbol.is_declared_global() and symbol.is_assigned():
                    assigns.add(symbol.get_name())
        _deferred(child, child_deferred, reads, assigns)


@lru_cache(maxsize=512)
def analyze(code: str) -> CellAnalysis:
    """Analyze plain Python source (IPython syntax already transformed). Raises SyntaxError."""
    tree = ast.parse(code)
    postponed = any(
        isinstance(stmt, ast.ImportFrom)
        and stmt.module == "__future__"
        and any(a.name == "annotations" for a in stmt.names)
        for stmt in tree.body
    )
    walker = _Walker(postponed)
    for stmt in tree.body:
        walker.visit(stmt)
    result = walker.result
    for node in ast.walk(tree):  # imports anywhere, also inside functions (they run when called)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            result.modules += [m for m in _imported_modules(node) if m not in result.modules]
    reads, assigns = _global_updates(tree), set()
    _deferred(symtable.symtable(code, "<cell>", "exec"), False, reads, assigns)
    for name in sorted(reads - result.assigned - result.imported):
        if name not in result.reads:
            result.reads.append(name)
    result.assigned |= assigns
    result.assigned -= result.imported
    return result


def normalize(code: str) -> str:
    """The source with formatting and comments removed (its AST), so that they do not change a cache key."""
    return ast.dump(ast.parse(code), annotate_fields=False, include_attributes=False)
