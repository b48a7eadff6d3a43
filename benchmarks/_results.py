"""What every benchmark shares: its rows as :class:`Result` records, the size it runs at, and where the rows go.

Each ``benchmarks/bench_*.py`` takes ``--results FILE`` (:func:`add_results_option`); when given, it appends one
JSON line per row of the table it prints (:func:`write_results`), which ``benchmarks/run_all.py`` gathers into one
table. ``BENCH_SIZE`` (:func:`bench_size`) picks the sizes a script runs at when no option says otherwise:
``smoke`` for a quick look, ``full`` for the sizes the issues name (each script's own defaults).

The scripts import this file as ``_results``: run as ``python benchmarks/bench_x.py``, a script's folder is the
first entry of ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

SIZES = ("smoke", "full")


@dataclass
class Result:
    """One row of a benchmark's table: what mlops_nb does ("ours") against a peer or a baseline ("theirs").

    Attributes:
        benchmark: the script's short name, e.g. ``"notebook"`` for ``bench_notebook.py``.
        work: what was measured (the row's label, with the size where it matters).
        peer: what ours is compared with (``papermill``, ``MLflow search_runs``, ...), or ``"-"`` for a row
            with a target but no peer.
        ours, theirs: the two figures, both in ``unit`` (``theirs`` is None on a row without a peer).
        unit: the unit of ``ours`` and ``theirs``: ``s``, ``ms``, ``req/s``, ``MB``, ...
        ratio: ours / theirs as the script computes it (``ours / theirs`` when not given; a script that takes the
            median of per-repetition ratios passes that, which may differ a little from the ratio of the medians).
            Below 1 means ours is the smaller figure: faster for a time, slower for a throughput.
        target: the row's target as text, in the row's own terms (``"<= 1.05x"``, ``"<= 6 ms"``); empty when none.
        met: whether the script judged the target met; None when there is no target.
    """

    benchmark: str
    work: str
    peer: str
    ours: float | None
    theirs: float | None
    unit: str
    ratio: float | None = None
    target: str = ""
    met: bool | None = None

    def __post_init__(self) -> None:
        self.ours, self.theirs, self.ratio = _number(self.ours), _number(self.theirs), _number(self.ratio)
        if self.ratio is None and self.ours is not None and self.theirs:
            self.ratio = self.ours / self.theirs
        self.met = None if self.met is None else bool(self.met)


def _number(value) -> float | None:
    """``value`` as a plain float (numpy scalars included); None for None or NaN (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def bench_size(default: str = "full") -> str:
    """The size the benchmarks run at: ``BENCH_SIZE`` (``smoke`` or ``full``), else ``default``.

    ``full`` is each script's own defaults, the sizes the issues name; ``smoke`` is small sizes for a quick look.
    A script whose own default is a small size passes ``default="smoke"`` and goes full only when asked.
    """
    size = os.environ.get("BENCH_SIZE", "").strip().lower() or default
    if size not in SIZES:
        raise SystemExit(f"BENCH_SIZE={size!r}: use one of {', '.join(SIZES)}")
    return size


def add_results_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--results FILE`` to ``parser``: the file :func:`write_results` appends the rows to."""
    parser.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="also append one JSON line per row of the table to FILE (benchmarks/run_all.py gathers them)",
    )


def write_results(path: Path | str | None, results: list[Result]) -> None:
    """Append ``results`` to ``path`` as JSON lines (one object per :class:`Result`); nothing when ``path`` is None."""
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as handle:
        for result in results:
            handle.write(json.dumps(asdict(result)) + "\n")


def read_results(path: Path | str) -> list[Result]:
    """The :class:`Result` records in a file :func:`write_results` wrote (none if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    names = {f.name for f in fields(Result)}
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Result(**{k: v for k, v in json.loads(line).items() if k in names}) for line in lines if line.strip()]
