"""Progress of long work (a run's steps, an ingest, a registration), through an interface the front end fills.

Nothing below ``ui/`` imports tqdm or click: work calls :func:`start` and reports on what it gets. The default
writes each line to stderr; the command line and the notebook magics install tqdm bars with :func:`use`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class Progress:
    """Progress of one piece of work: lines for people and a count of units done. This base prints the lines.

    Args:
        total: units of work (steps, rows, files).
        desc: what the work is.
        unit: the unit's name.
    """

    def __init__(self, total: int, desc: str, unit: str = "step"):
        self.total, self.desc, self.unit = total, desc, unit

    def write(self, line: str) -> None:
        """Show one line (a step finished, and why), on stderr unless the front end asked for stdout."""
        print(line, file=sys.stdout if _lines_to_stdout else sys.stderr, flush=True)

    def advance(self, n: int = 1) -> None:
        """``n`` more units are done (negative: a retry takes one back)."""

    def close(self) -> None:
        """The work ended."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Silent(Progress):
    """Progress that shows nothing (``progress=False``)."""

    def write(self, line: str) -> None:
        """Show nothing."""


_factory: Callable[[int, str, str], Progress] = Progress
_lines_to_stdout = False


def use(factory: Callable[[int, str, str], Progress], *, lines_to_stdout: bool = False) -> None:
    """Make ``factory(total, desc, unit)`` what :func:`start` returns for work that wants a bar; with
    ``lines_to_stdout``, work without a bar writes its lines to stdout too (where the front end's bar puts them)."""
    global _factory, _lines_to_stdout
    _factory, _lines_to_stdout = factory, lines_to_stdout


def start(total: int, desc: str, unit: str = "step", *, enabled: bool = True, bar: bool = True) -> Progress:
    """Progress of new work: silent unless ``enabled``; plain lines without ``bar`` (work too short for one);
    else what the front end installed (a tqdm bar in a terminal or a notebook)."""
    if not enabled:
        return Silent(total, desc, unit)
    if not bar or not total:
        return Progress(total, desc, unit)
    return _factory(total, desc, unit)
