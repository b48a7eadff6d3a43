"""A notebook as a pipeline: setup cells, the ``parameters`` cell, and ``%%mlops step`` cells forming a DAG.

``Pipeline.from_notebook(path)`` reads the notebook's JSON, infers each step's inputs and outputs from its
code (``inference.py``), checks everything a run needs before any kernel starts, and reports every problem at
once in a :class:`PipelineError`, one line each naming the notebook, the cell and the fix.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.files import is_special
from ..core.hashing import canonical, sha256
from ..core.records import STATUS_COLOURS
from ..exceptions import MlopsError, PipelineError

if TYPE_CHECKING:  # pragma: no cover
    from .inference import CellAnalysis

MAGIC = "%%mlops"
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
MAX_STEP_NAME = 100
MAX_RETRIES = 100
FORMAT_VERSION = 1  # part of every cache key: bump when the key's meaning changes


class ArgumentError(Exception):
    """A magic's arguments do not parse; the message says why."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for magic lines: a bad argument raises :class:`ArgumentError` instead of printing and exiting."""

    def error(self, message):
        """Raise instead of exiting."""
        raise ArgumentError(message)


@functools.lru_cache(maxsize=1)
def step_parser() -> argparse.ArgumentParser:
    """The parser of ``%%mlops step`` options (built once: ~1.5 ms each); the magic's usage line comes from the
    same definitions."""
    parser = ArgumentParser(prog="%%mlops step", add_help=False)
    parser.add_argument("name", help="the step's name, unique in the notebook")
    parser.add_argument("--inputs", help="comma-separated names this step reads from earlier steps (default: inferred)")
    parser.add_argument("--outputs", help="comma-separated names this step produces (default: inferred)")
    parser.add_argument("--reads", help="comma-separated files or folders outside the store that the step reads")
    parser.add_argument("--no-cache", action="store_true", help="always run the step, never reuse cached outputs")
    parser.add_argument("--retries", type=int, default=0, help="re-run a failing step up to N more times")
    return parser


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


_LINE_MAGIC = re.compile(r"^%(?!%)([A-Za-z_]\w*)[ \t]*(.*?)[ \t]*$")


def transform(source: str) -> str:
    """IPython cell source to plain Python (magics and shell escapes become calls), as IPython does.

    Plain Python and cells whose only IPython syntax is top-level ``%line_magic`` lines are handled here;
    anything else goes through IPython's transformer (importing IPython costs ~0.1 s, which a fully cached run
    should not pay).
    """
    try:
        ast.parse(source)
        return source if source.endswith("\n") or not source else source + "\n"
    except SyntaxError:
        pass
    lines = []
    for line in source.splitlines():
        match = _LINE_MAGIC.match(line)
        lines.append(f"get_ipython().run_line_magic({match[1]!r}, {match[2]!r})" if match else line)
    simple = "\n".join(lines) + "\n"
    try:
        ast.parse(simple)
        return simple
    except SyntaxError:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)


@dataclass
class Step:
    """One ``%%mlops step`` cell.

    Attributes:
        name: the step's name.
        cell_index: position of the cell in the notebook (0-based, as papermill counts).
        source: the cell's body, without the magic line.
        code: the body as plain Python.
        inputs: names it reads from earlier steps (declared or inferred).
        outputs: names it produces for later cells (declared or inferred).
        reads: files or folders outside the store that it reads (``--reads``).
        no_cache: ``--no-cache`` was given.
        retries: ``--retries N``.
        params: parameters (from the ``parameters`` cell) that it reads.
        upstream: input name -> the step producing it.
        modules: local module name -> sha256 of its source, for modules the step imports.
        libraries: third-party packages (top-level module names) the step imports; their versions enter its key.
        declared_inputs, declared_outputs: what ``--inputs``/``--outputs`` said, if given.
    """

    name: str
    cell_index: int
    source: str
    code: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    no_cache: bool = False
    retries: int = 0
    params: list[str] = field(default_factory=list)
    upstream: dict[str, str] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    libraries: list[str] = field(default_factory=list)
    declared_inputs: list[str] | None = None
    declared_outputs: list[str] | None = None

    @property
    def cell(self) -> int:
        """The cell's number as people count (1-based)."""
        return self.cell_index + 1

    @cached_property
    def normalized(self) -> str:
        """The body's AST: formatting and comments do not change it."""
        from .inference import normalize

        return normalize(self.code)


def parse_magic_line(line: str) -> argparse.Namespace:
    """Parse the options after ``%%mlops`` (``step NAME ...``); raises ValueError with the problem."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"cannot parse `{MAGIC} {_cut(line, 60)}`: {exc}") from None
    if not words or words[0] != "step":
        raise ValueError(f"`{MAGIC} {_cut(line, 60)}` is not a step; write `{MAGIC} step NAME [options]`")
    try:
        args = step_parser().parse_args(words[1:])
    except ArgumentError as exc:
        options = "--inputs, --outputs, --reads, --no-cache, --retries"
        raise ValueError(f"{_cut(str(exc), 80)} in `{MAGIC} {_cut(line.strip(), 60)}`; options: {options}") from None
    if not STEP_NAME.match(args.name):
        raise ValueError(f"step name {_cut(args.name, 40)!r} must start with a letter and use letters, digits, _ . -")
    if len(args.name) > MAX_STEP_NAME:
        raise ValueError(f"step name {args.name[:20]}... is {len(args.name)} characters; keep it to {MAX_STEP_NAME}")
    if not 0 <= args.retries <= MAX_RETRIES:
        raise ValueError(f"--retries must be 0 to {MAX_RETRIES}, not {str(args.retries)[:20]}")
    return args


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (``...`` marks the cut): what a one-line error quotes of user input."""
    return text if len(text) <= limit else text[:limit] + "..."


def _step_name(line: str) -> str | None:
    """The step's name in a magic line that does not parse, if it has a valid one (to name it in the problem)."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    return words[1] if len(words) > 1 and words[0] == "step" and STEP_NAME.match(words[1]) else None


def step_from_source(name_line: str, body: str, cell_index: int) -> Step:
    """A :class:`Step` from its magic line (after ``%%mlops``) and body; raises ValueError on a bad line."""
    args = parse_magic_line(name_line)
    return Step(
        name=args.name,
        cell_index=cell_index,
        source=body,
        code=transform(body),
        reads=_names(args.reads) or [],
        no_cache=args.no_cache,
        retries=args.retries,
        declared_inputs=_names(args.inputs),
        declared_outputs=_names(args.outputs),
    )


REPORT_SUBCOMMANDS = frozenset({"dag", "runs", "lineage", "timeline", "features", "models", "monitor", "dashboard"})
"""``%mlops`` line magics that only read the stores: a cell of these is a report cell, in no cache key."""


def is_report(code: str) -> bool:
    """Whether a cell's code (as plain Python) only shows things: every statement is a ``%mlops`` line magic that
    reads (:data:`REPORT_SUBCOMMANDS`) or a bare name to display. Such a cell runs in a manual run and with the
    ``notebook`` executor, but it is not setup: editing, adding or removing it re-runs nothing."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return False
    return bool(body) and all(isinstance(node, ast.Expr) and _shows(node.value) for node in body)


def _shows(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return True
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run_line_magic"):
        return False
    owner = node.func.value  # get_ipython()
    if not (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "get_ipython"):
        return False
    args = node.args
    if len(args) != 2 or not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
        return False
    words = args[1].value.split()
    return args[0].value == "mlops" and bool(words) and words[0] in REPORT_SUBCOMMANDS


def split_magic(source: str) -> tuple[str, str] | None:
    """``(options line, body)`` when the cell starts with ``%%mlops``, else None."""
    stripped = source.lstrip()
    if not stripped.startswith(MAGIC):
        return None
    first, _, body = stripped.partition("\n")
    rest = first[len(MAGIC) :]
    if rest and not rest[0].isspace():
        return None  # some other magic, e.g. %%mlopsx
    return rest.strip(), body


def _find_module(name: str, roots: list[Path]) -> list[Path]:
    """Source files of a module under ``roots`` (the module and its parent packages), or [] if not local."""
    parts = name.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                found = [candidate]
                for i in range(1, len(parts)):
                    init = root.joinpath(*parts[:i], "__init__.py")
                    if init.is_file():
                        found.append(init)
                return found
    return []


def local_modules(modules: list[tuple[str, int]], roots: list[Path]) -> dict[str, str]:
    """``{file: sha256}`` of the local modules imported (and those they import, transitively).

    A module is local when its source is under one of ``roots``; files are named relative to the first root.
    """
    from .inference import analyze

    hashes: dict[str, str] = {}
    pending: list[tuple[str, int, Path | None]] = [(name, level, None) for name, level in modules]
    seen: set[Path] = set()
    while pending:
        name, level, importer = pending.pop()
        if level:
            if importer is None:
                continue  # a relative import in a notebook cell
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            files = _find_module(name, [base]) if name else [p for p in [base / "__init__.py"] if p.is_file()]
        else:
            files = _find_module(name, roots)
        for path in files:
            if path in seen:
                continue
            seen.add(path)
            text = path.read_bytes()
            try:
                label = path.relative_to(roots[0]).as_posix()
            except ValueError:
                label = str(path)
            hashes[label] = sha256(text)
            try:
                child = analyze(text.decode("utf-8", "replace"))
            except SyntaxError:
                continue
            pending += [(m, lvl, path) for m, lvl in child.modules]
    return dict(sorted(hashes.items()))


_OWN = {"mlops_nb", "__future__", "IPython", "ipykernel"}  # versioned by the cache format, or no step's result


def third_party(modules: list[tuple[str, int]], roots: list[Path]) -> list[str]:
    """The top-level names of the absolute imports that are neither the standard library nor local modules."""
    names = set()
    for name, level in modules:
        top = name.split(".")[0]
        if level or not top or top in sys.stdlib_module_names or top in _OWN or _find_module(top, roots):
            continue
        names.add(top)
    return sorted(names)


@dataclass
class _ParseState:
    """What :meth:`Pipeline._parse` collects in its pass over the cells, for the checks that follow it.

    Attributes:
        producers: name -> the latest step producing it.
        imported_by: name -> the first step importing it.
        setup_names: names the setup cells assign or import.
        setup_sources: the setup cells' normalised source.
        setup_modules: (module, level) pairs the setup cells import.
        analyses: step cell index -> the analysis of its code.
        pending_reads: (cell index, step, names it reads that no earlier step produced), checked once every step is
            known.
        seen_names: step name -> index of the cell defining it.
    """

    producers: dict[str, Step] = field(default_factory=dict)
    imported_by: dict[str, Step] = field(default_factory=dict)
    setup_names: set[str] = field(default_factory=set)
    setup_sources: list[str] = field(default_factory=list)
    setup_modules: list[tuple[str, int]] = field(default_factory=list)
    analyses: dict[int, CellAnalysis] = field(default_factory=dict)
    pending_reads: list[tuple[int, Step, list[str]]] = field(default_factory=list)
    seen_names: dict[str, int] = field(default_factory=dict)

    def assigns(self, step: Step) -> list[str] | set[str]:
        """The names a step assigns: its ``--outputs`` if declared, otherwise every name its code assigns."""
        return step.declared_outputs if step.declared_outputs is not None else self.analyses[step.cell_index].assigned


class Pipeline:
    """A notebook's pipeline: setup cells, parameters and steps with their DAG.

    Use :meth:`from_notebook`; construction validates and raises :class:`PipelineError` listing every problem.

    Attributes:
        path: the notebook.
        name: the pipeline's name (the notebook's file name without ``.ipynb``).
        steps: the steps in notebook order.
        params: parameter name -> default value, from the cell tagged ``parameters``.
        parameters_cell: that cell's index, if any.
        setup_cells: indices of setup cells (code cells that are neither steps nor read step outputs).
        report_cells: indices of report cells (they read step outputs or only show something; in no cache key).
        report_reads: report cell index -> the names it reads.
        setup_hash: sha256 of the setup cells' normalised source.
        setup_modules: local modules the setup cells import -> sha256 of their source.
        setup_libraries: third-party packages (top-level module names) the setup cells import.
        notebook_hash: sha256 of the notebook's cells' source.
        kernel: the Jupyter kernel the notebook's metadata names (its kernelspec), or None.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cells: list[dict],
        name: str | None = None,
        strict: bool = True,
        kernel: str | None = None,
    ):
        self.path = Path(path).resolve()
        self.name = name or self.path.stem
        self.kernel = kernel
        self.cells = [_plain_cell(c) for c in cells]
        self.steps: list[Step] = []
        self.params: dict[str, Any] = {}
        self.parameters_cell: int | None = None
        self.setup_cells: list[int] = []
        self.report_cells: list[int] = []
        self.report_reads: dict[int, list[str]] = {}
        self.setup_reads: set[str] = set()  # names setup cells read, in function bodies too
        self.setup_hash = ""
        self.setup_modules: dict[str, str] = {}
        self.setup_libraries: list[str] = []
        self.notebook_hash = sha256(canonical([c["source"] for c in self.cells]))
        self.problems: list[tuple[int | None, str]] = []  # (cell index, message)
        self._parse()
        if strict and self.problems:
            raise PipelineError([message for _, message in self.problems])

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={[s.name for s in self.steps]})"

    @classmethod
    def from_notebook(cls, path: str | os.PathLike, strict: bool = True) -> Pipeline:
        """Parse and validate a notebook. Raises :class:`PipelineError` (every problem) or MlopsError.

        With ``strict=False`` problems are kept in :attr:`problems` instead (for interactive use).
        """
        path = Path(path)
        if path.is_dir():
            raise MlopsError(f"notebook {path} is a folder; give the path of an .ipynb file")
        if not path.is_file():
            raise MlopsError(f"notebook {path} does not exist; check the path")
        cells, data = read_cells(path)
        metadata = data.get("metadata")
        spec = metadata.get("kernelspec") if isinstance(metadata, dict) else None
        return cls(path, cells, strict=strict, kernel=spec.get("name") if isinstance(spec, dict) else None)

    def with_cell(self, line: str, body: str) -> Pipeline:
        """This pipeline with step cell ``%%mlops {line}`` replaced by (or, if new, appended as) this source.

        Used by the magic: a cell edited but not yet saved runs as edited. Never raises for problems.
        """
        name = parse_magic_line(line).name
        cells = [dict(c) for c in self.cells]
        source = f"{MAGIC} {line}\n{body}"
        for cell in cells:
            magic = split_magic(cell.get("source", "")) if cell.get("cell_type") == "code" else None
            if magic is not None:
                try:
                    if parse_magic_line(magic[0]).name == name:
                        cell["source"] = source
                        break
                except ValueError:
                    continue
        else:
            cells.append({"cell_type": "code", "source": source, "metadata": {}})
        return Pipeline(self.path, cells, name=self.name, strict=False, kernel=self.kernel)

    def problems_of(self, cell_index: int) -> list[str]:
        """The problems found in one cell."""
        return [message for index, message in self.problems if index == cell_index]

    @property
    def folder(self) -> Path:
        """The notebook's folder: relative ``--reads`` paths and local modules are found from here."""
        return self.path.parent

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        known = ", ".join(s.name for s in self.steps) or "none"
        raise MlopsError(f"{self.path.name} has no step {name!r}; its steps: {known}")

    def _problem(self, index: int | None, message: str) -> None:
        self.problems.append((index, message))

    def _where(self, index: int, step: str | None = None) -> str:
        where = f"{self.path.name} cell {index + 1}"
        step = _cut(step, 40) if step else step
        return f"{where}, step {step!r}" if step else where

    # parsing -----------------------------------------------------------------------------------------------
    def _parse(self) -> None:
        """Classify the cells, build the steps and their DAG, and record every problem found."""
        state = _ParseState()
        self._scan_cells(state)
        self._check_later_reads(state)
        self._infer_outputs(state)
        self._check_reads_and_hash(state)

    def _scan_cells(self, state: _ParseState) -> None:
        """One pass over the cells: the parameters cell, report cells, setup cells and step cells.

        A plain code cell reading a name an earlier step produces, or made only of ``%mlops`` line magics that read
        and names to display (:func:`is_report`), is a report cell; any other plain code cell (except the one tagged
        ``parameters``) is a setup cell.

        Args:
            state: the parse state, filled in here.
        """
        from .inference import analyze, normalize

        for index, cell in enumerate(self.cells):
            if cell.get("cell_type") != "code" or not cell.get("source", "").strip():
                continue
            source = cell["source"]
            magic = split_magic(source)
            if magic is not None:
                self._parse_step(state, index, *magic)
                continue
            try:
                code = transform(source)
                analysis = analyze(code)
            except SyntaxError as exc:
                self._problem(index, f"{self._where(index)}: syntax error on line {exc.lineno}: {exc.msg}; fix it")
                continue
            if "parameters" in (cell.get("metadata", {}).get("tags") or []):
                if self.parameters_cell is not None:  # papermill would inject after the first one only
                    self._problem(index, f"{self._where(index)} is tagged 'parameters', and so is cell "
                                  f"{self.parameters_cell + 1}; keep the tag on one cell")  # fmt: skip
                    continue
                self._parse_parameters(index, code)
                continue
            if any(n in state.producers for n in analysis.reads) or is_report(code):
                self.report_cells.append(index)
                self.report_reads[index] = sorted(analysis.reads)
                continue
            self.setup_cells.append(index)
            self.setup_reads |= set(analysis.reads)
            state.setup_sources.append(normalize(code))
            state.setup_names |= analysis.assigned | analysis.imported
            state.setup_modules += analysis.modules

    def _parse_step(self, state: _ParseState, index: int, line: str, body: str) -> None:
        """Parse one ``%%mlops step`` cell and add its step, unless its magic line or code is invalid.

        Args:
            state: the parse state; the step's outputs and imports are registered in it.
            index: the cell's index.
            line: the magic line, without ``%%mlops``.
            body: the cell's body, without the magic line.
        """
        from .inference import analyze

        try:
            step = step_from_source(line, body, index)
        except ValueError as exc:
            self._problem(index, f"{self._where(index, _step_name(line))}: {exc}")
            return
        except SyntaxError as exc:
            self._problem(index, f"{self._where(index)}: syntax error on line {exc.lineno}: {exc.msg}; fix it")
            return
        if step.name in state.seen_names:
            self._problem(
                index,
                f"{self._where(index, step.name)}: step name {step.name!r} is also used by cell "
                f"{state.seen_names[step.name] + 1}; rename one of them",
            )
            return
        state.seen_names[step.name] = index
        try:
            analysis = analyze(step.code)
        except SyntaxError as exc:
            self._problem(
                index, f"{self._where(index, step.name)}: syntax error on line {exc.lineno + 1}: {exc.msg}; fix it"
            )
            return
        state.analyses[index] = analysis
        if analysis.star_import and (step.declared_inputs is None or step.declared_outputs is None):
            self._problem(
                index,
                f"{self._where(index, step.name)}: `import *` hides which names the step reads and assigns; "
                "declare them with --inputs and --outputs (or move the import to a setup cell)",
            )
        self._resolve_inputs(state, step, analysis)
        # outputs: declared, or resolved once later cells are known (_infer_outputs)
        produced = step.declared_outputs if step.declared_outputs is not None else sorted(analysis.assigned)
        for name in produced:
            state.producers[name] = step
        for name in analysis.imported:
            state.imported_by.setdefault(name, step)
        self.steps.append(step)

    def _resolve_inputs(self, state: _ParseState, step: Step, analysis: CellAnalysis) -> None:
        """Set a step's inputs, upstream and params from the steps before it, and check what it reads.

        Args:
            state: the parse state, as of the steps before this one; the step's reads are queued in it.
            step: the step, its inputs not yet set.
            analysis: the step's code analysed.
        """
        where = self._where(step.cell_index, step.name)
        producers = state.producers
        if step.declared_inputs is not None:
            for name in step.declared_inputs:
                if name not in producers:
                    self._problem(
                        step.cell_index,
                        f"{where}: input {name!r} is not produced by any earlier step; produce it in an earlier "
                        "step or remove it from --inputs",
                    )
            step.inputs = list(step.declared_inputs)
        else:
            step.inputs = [n for n in analysis.reads if n in producers]
        step.upstream = {n: producers[n].name for n in step.inputs if n in producers}
        for name in analysis.reads:
            if name in state.imported_by and name not in producers and name not in state.setup_names:
                self._problem(
                    step.cell_index,
                    f"{where}: uses {name!r}, which step {state.imported_by[name].name!r} imports; move the import "
                    "to a setup cell so every step (and a cache hit) has it",
                )
        step.params = [n for n in analysis.reads if n in self.params and n not in producers]
        state.pending_reads.append((step.cell_index, step, [n for n in analysis.reads if n not in producers]))

    def _check_later_reads(self, state: _ParseState) -> None:
        """Report each step reading a name that only a later step assigns (the steps are in the wrong order).

        Args:
            state: the parse state after :meth:`_scan_cells`.
        """
        for index, step, names in state.pending_reads:
            for name in names:
                if name in state.setup_names or name in self.params or name in step.inputs:
                    continue
                later = [s for s in self.steps if s.cell_index > index and name in state.assigns(s)]
                if later:
                    self._problem(
                        index,
                        f"{self._where(index, step.name)}: reads {name!r}, which only the later step "
                        f"{later[0].name!r} (cell {later[0].cell}) assigns; move this step after it",
                    )

    def _infer_outputs(self, state: _ParseState) -> None:
        """Set each step's outputs: the declared ones, or the names it assigns that a later cell reads from it.

        Args:
            state: the parse state after :meth:`_scan_cells`.
        """
        from .inference import analyze

        readers: dict[str, set[str]] = {}  # step name -> names later cells take from it
        for step in self.steps:
            for name, producer in step.upstream.items():
                readers.setdefault(producer, set()).add(name)
        for index in self.report_cells:
            analysis = analyze(transform(self.cells[index]["source"]))
            for name in analysis.reads:
                producer = None
                for step in self.steps:
                    if step.cell_index < index and name in state.assigns(step):
                        producer = step
                if producer is not None:
                    readers.setdefault(producer.name, set()).add(name)
        for step in self.steps:
            if step.declared_outputs is not None:
                step.outputs = list(step.declared_outputs)
            else:
                step.outputs = sorted(readers.get(step.name, set()) & state.analyses[step.cell_index].assigned)

    def _check_reads_and_hash(self, state: _ParseState) -> None:
        """Check that every ``--reads`` path exists; hash the setup cells and the local modules imported.

        Args:
            state: the parse state after :meth:`_scan_cells`.
        """
        for step in self.steps:
            for path in step.reads:
                full = self.folder / path
                if not full.exists():
                    self._problem(
                        step.cell_index,
                        f"{self._where(step.cell_index, step.name)}: --reads {path} does not exist (relative to "
                        f"{self.folder}); fix the path or create the file",
                    )
                elif is_special(full):
                    self._problem(
                        step.cell_index,
                        f"{self._where(step.cell_index, step.name)}: --reads {path} is not a file or a folder (a "
                        "device, a pipe or a socket); give a data file or folder",
                    )
        roots = [self.folder]
        self.setup_hash = sha256(canonical(state.setup_sources))
        self.setup_modules = local_modules(state.setup_modules, roots)
        self.setup_libraries = third_party(state.setup_modules, roots)
        for step in self.steps:
            if step.cell_index in state.analyses:
                step.modules = local_modules(state.analyses[step.cell_index].modules, roots)
                step.libraries = third_party(state.analyses[step.cell_index].modules, roots)

    def _parse_parameters(self, index: int, code: str) -> None:
        self.parameters_cell = index
        for node in ast.parse(code).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and node.value is not None:
                        try:
                            self.params[target.id] = ast.literal_eval(node.value)
                        except ValueError:
                            self._problem(
                                index,
                                f"{self._where(index)}: parameter {target.id!r} must be a literal value "
                                "(number, string, bool, None, list or dict), as papermill requires",
                            )

    # parameters --------------------------------------------------------------------------------------------
    def resolve_params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overridden by ``given``; CLI strings are converted to the default's type.

        Raises :class:`PipelineError` naming every unknown parameter and wrong type.
        """
        values = dict(self.params)
        problems = []
        for name, value in (given or {}).items():
            if name not in self.params:
                if self.parameters_cell is None:
                    problems.append(
                        f"{self.path.name}: parameter {name!r} given, but no cell is tagged `parameters`; tag the "
                        "cell that assigns the parameters"
                    )
                else:
                    known = ", ".join(sorted(self.params)) or "none"
                    problems.append(
                        f"{self.path.name}: parameter {name!r} is not defined in the parameters cell (cell "
                        f"{self.parameters_cell + 1}); defined: {known}"
                    )
                continue
            try:
                values[name] = _coerce(value, self.params[name])
            except ValueError:
                default = self.params[name]
                problems.append(
                    f"{self.path.name}: parameter {name!r} expects {type(default).__name__} (default {default!r} in "
                    f"cell {self.parameters_cell + 1}), got {value!r}"
                )
        if problems:
            raise PipelineError(problems)
        return values

    # the DAG -----------------------------------------------------------------------------------------------
    def edges(self) -> list[tuple[str, str, str]]:
        """``(upstream step, downstream step, variable)`` for every input of every step."""
        return [(up, step.name, name) for step in self.steps for name, up in step.upstream.items()]

    def needed_after(self, skipped: set[str]) -> dict[str, list[str]]:
        """For each step in ``skipped`` (cached steps whose cells do not run their bodies), its outputs that a later
        cell still reads: a report cell, or a step not in ``skipped``; or that a setup cell reads anywhere (a helper
        function a step calls may read a global). Those must be loaded; the rest need not."""
        later: set[str] = set(self.setup_reads)
        needed: dict[str, list[str]] = {}
        by_cell = {s.cell_index: s for s in self.steps}
        for index in range(len(self.cells) - 1, -1, -1):
            step = by_cell.get(index)
            if step is None:
                later |= set(self.report_reads.get(index, ()))
            elif step.name in skipped:
                needed[step.name] = [n for n in step.outputs if n in later]
            else:
                later |= set(step.inputs)
        return needed

    def downstream(self, name: str) -> list[str]:
        """Steps that depend on step ``name``, directly or not, in notebook order."""
        found = {name}
        for step in self.steps:
            if any(up in found for up in step.upstream.values()):
                found.add(step.name)
        return [s.name for s in self.steps if s.name in found and s.name != name]

    def to_dict(self) -> dict:
        """The pipeline as JSON-able data: steps with inputs, outputs, reads, params, and the edges."""
        return {
            "notebook": str(self.path),
            "name": self.name,
            "params": self.params,
            "steps": [
                {
                    "name": s.name,
                    "cell": s.cell,
                    "inputs": s.inputs,
                    "outputs": s.outputs,
                    "reads": s.reads,
                    "params": s.params,
                    "upstream": sorted(set(s.upstream.values())),
                    "no_cache": s.no_cache,
                    "retries": s.retries,
                }
                for s in self.steps
            ],
            "edges": [{"from": a, "to": b, "name": n} for a, b, n in self.edges()],
            "report_cells": [i + 1 for i in self.report_cells],
        }

    def to_mermaid(self, statuses: dict[str, str] | None = None) -> str:
        """A mermaid flowchart; ``statuses`` (step -> status of its last run) colours the nodes."""
        statuses = statuses or {}
        colours = {status: light for status, (_, light) in STATUS_COLOURS.items()}
        ids = {s.name: f"s{i}" for i, s in enumerate(self.steps)}
        lines = ["flowchart TD"]
        for step in self.steps:
            status = statuses.get(step.name)
            label = step.name + (f"<br/><i>{status}</i>" if status else "")
            lines.append(f'  {ids[step.name]}["{label}"]')
            for path in step.reads:
                rid = "r" + sha256(path)[:8]
                lines.append(f'  {rid}[("{path}")] --> {ids[step.name]}')
        grouped: dict[tuple[str, str], list[str]] = {}
        for up, down, name in self.edges():
            grouped.setdefault((up, down), []).append(name)
        for (up, down), names in grouped.items():
            lines.append(f"  {ids[up]} -->|{', '.join(names)}| {ids[down]}")
        for step in self.steps:
            status = statuses.get(step.name)
            if status in colours:
                lines.append(f"  style {ids[step.name]} fill:{colours[status]}")
        return "\n".join(lines)

    def to_text(self) -> str:
        """The DAG for a terminal: one line per step with what it takes from which step."""
        lines = [f"{self.name} ({self.path.name}): {len(self.steps)} steps"]
        if self.params:
            lines.append("  params: " + ", ".join(f"{k}={v!r}" for k, v in self.params.items()))
        for step in self.steps:
            takes = ", ".join(f"{n} <- {up}" for n, up in step.upstream.items())
            extra = []
            if step.reads:
                extra.append("reads " + ", ".join(step.reads))
            if step.params:
                extra.append("params " + ", ".join(step.params))
            lines.append(
                f"  [{step.cell:>2}] {step.name}: {takes or '(no inputs)'} -> {', '.join(step.outputs) or '(no outputs)'}"
                + (f"  ({'; '.join(extra)})" if extra else "")
            )
        if self.report_cells:
            cells = ", ".join(str(i + 1) for i in self.report_cells)
            lines.append(f"  report cells: {cells} (they show results; no cache key contains them)")
        return "\n".join(lines)


CELL_TYPES = ("code", "markdown", "raw")


def read_cells(path: Path) -> tuple[list[dict], dict]:
    """The cells and the whole JSON of the notebook file at ``path``, checked as far as a pipeline needs: nbformat
    4, each cell an object of a known type whose source is a string or a list of strings. Raises MlopsError with
    one line naming the file (and the cell, 1-based) and the fix. Plain JSON: nbformat's import alone takes ~1 s
    (jsonschema), too slow for a fully cached run."""
    fix = "open and save it in JupyterLab"

    def refuse(problem: str) -> MlopsError:
        return MlopsError(f"{path} is not a Jupyter notebook mlops_nb can read: {problem}; {fix}")

    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise refuse(f"byte {exc.start} is not UTF-8 text") from None
    except ValueError as exc:
        at = f" (line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else ""
        raise refuse(f"not valid JSON{at}: {_cut(str(getattr(exc, 'msg', exc)), 80)}") from None
    except RecursionError:
        raise refuse("its JSON is nested too deeply") from None
    except OSError as exc:
        raise MlopsError(f"cannot read notebook {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise refuse(f"its top level is a JSON {type(data).__name__}, not an object")
    version = data.get("nbformat", 4)
    if not isinstance(version, int) or isinstance(version, bool):
        raise refuse(f"nbformat is {_cut(repr(version), 40)}, not a number")
    if version < 4:
        raise refuse(f"nbformat {version} (an old notebook; JupyterLab saves it as nbformat 4)")
    if version > 4:
        raise MlopsError(f"{path} is nbformat {version}, newer than the nbformat 4 mlops_nb reads; save it as "
                         "nbformat 4 or upgrade mlops-nb")  # fmt: skip
    if not isinstance(data.get("metadata", {}), dict):
        raise refuse("its metadata is not an object")
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise refuse("no list of cells" if cells is None else f"its cells are a JSON {type(cells).__name__}")
    if not cells:
        raise MlopsError(f"{path} has no cells; write the pipeline's cells in it first")
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict):
            raise refuse(f"cell {number} is a JSON {type(cell).__name__}, not an object")
        kind = cell.get("cell_type")
        if kind not in CELL_TYPES:
            raise refuse(f"cell {number} has cell_type {_cut(repr(kind), 40)}, not one of {', '.join(CELL_TYPES)}")
        source = cell.get("source")
        if not isinstance(source, str) and not (isinstance(source, list) and all(isinstance(s, str) for s in source)):
            problem = "no source" if source is None else "a source that is not text (a string or a list of strings)"
            raise refuse(f"cell {number} has {problem}")
        if not isinstance(cell.get("metadata", {}), dict):
            raise refuse(f"cell {number}'s metadata is not an object")
    return cells, data


def _plain_cell(cell: dict) -> dict:
    """A cell as a plain dict whose source is one string (notebook files may store a list of lines)."""
    source = cell.get("source", "")
    return {
        "cell_type": cell.get("cell_type", "code"),
        "source": "".join(source) if isinstance(source, list) else str(source),
        "metadata": dict(cell.get("metadata") or {}),
    }


def _coerce(value: Any, default: Any) -> Any:
    """Convert a CLI value to the type of the parameter's default (papermill-like)."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        if (
            default is not None
            and (not isinstance(value, type(default)) or (isinstance(value, bool) and not isinstance(default, bool)))
            and not (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool))
        ):
            raise ValueError
        return value
    if isinstance(default, bool):
        lowered = value.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    try:
        parsed = json.loads(value) if value.strip()[:1] in "[{" else ast.literal_eval(value)
    except SyntaxError:
        raise ValueError(value) from None
    if not isinstance(parsed, type(default)):
        raise ValueError
    return parsed
