"""Progress bars for the front ends: tqdm in a terminal, ``tqdm.auto`` widgets in a notebook (the command line and
the magics install them; the engine reports through :mod:`mlops_nb.core.progress`)."""

from __future__ import annotations

import sys
from functools import partial

from ..core import progress


class TqdmProgress(progress.Progress):
    """A tqdm bar (``tqdm.auto``: a widget in a notebook) on stderr, with each line written above it: to stderr in
    a terminal, to stdout with ``lines_to_stdout`` (a notebook, where stderr shows red)."""

    def __init__(self, total: int, desc: str, unit: str = "step", lines_to_stdout: bool = False):
        super().__init__(total, desc, unit)
        from tqdm.auto import tqdm

        self._stdout = lines_to_stdout
        self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def write(self, line: str) -> None:
        """Write ``line`` above the bar (to the stream ``sys`` has now: a notebook may have swapped it)."""
        self._bar.write(line, file=sys.stdout if self._stdout else sys.stderr)

    def advance(self, n: int = 1) -> None:
        """Move the bar by ``n``."""
        self._bar.update(n)

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()


def install(lines_to_stdout: bool = False) -> None:
    """Make long work show tqdm bars on stderr, their lines (and those of work too short for a bar) on stderr, or
    on stdout with ``lines_to_stdout`` (the command line's record of a run; a notebook, where stderr shows red)."""
    factory = partial(TqdmProgress, lines_to_stdout=True) if lines_to_stdout else TqdmProgress
    progress.use(factory, lines_to_stdout=lines_to_stdout)
