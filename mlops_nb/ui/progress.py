"""Progress bars for the front ends: tqdm in a terminal, ``tqdm.auto`` widgets in a notebook (the command line and
the magics install them; the engine reports through :mod:`mlops_nb.core.progress`)."""

from __future__ import annotations

import sys

from ..core import progress


class TqdmProgress(progress.Progress):
    """A tqdm bar (``tqdm.auto``: a widget in a notebook) on stderr, with each line written above it."""

    def __init__(self, total: int, desc: str, unit: str = "step"):
        super().__init__(total, desc, unit)
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def write(self, line: str) -> None:
        """Write ``line`` above the bar."""
        self._bar.write(line, file=sys.stderr)

    def advance(self, n: int = 1) -> None:
        """Move the bar by ``n``."""
        self._bar.update(n)

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()


def install() -> None:
    """Make long work show tqdm bars."""
    progress.use(TqdmProgress)
