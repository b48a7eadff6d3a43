"""How every front end prints for people: aligned tables, JSON records (``--json``), durations and times in one
form."""

from __future__ import annotations

import json

import click


def echo_json(data) -> None:
    """Print ``data`` as indented JSON (anything JSON does not know as its string)."""
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[list], headers: list[str]) -> str:
    """Rows as a plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def indented(text: str, prefix: str = "   ") -> str:
    """Every line of ``text`` with ``prefix`` before it."""
    return "\n".join(prefix + line for line in text.splitlines())


def duration(seconds: float | None) -> str:
    """Seconds as ``1.23s`` or ``2m05s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def when(value) -> str:
    """A UTC datetime as ``YYYY-MM-DD HH:MM:SS``; ``-`` when unknown."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def short(value) -> str:
    """A statistic for a table cell: 4 significant digits for floats, ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def step_counts(counts: dict[str, int]) -> str:
    """``{"succeeded": 4, "cached": 2}`` as ``4 succeeded, 2 cached``."""
    return ", ".join(f"{n} {s}" for s, n in counts.items())


_SPAN_UNITS = ((86400, "day"), (3600, "h"), (60, "min"), (1, "s"))


def ttl(value) -> str:
    """A TTL (seconds, a ``timedelta``, or None for no limit) in the one form every front end shows: ``90 days``,
    ``1 day``, ``12 h``, ``30 min``, ``45 s`` (the largest unit it is a whole number of, else 3 significant digits
    of the largest unit it reaches: ``1.5 h``); ``none`` when there is no limit. :func:`parse_ttl` reads it back.

    Example::

        ttl(7776000.0)  # '90 days'
    """
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else value
    if seconds is None or seconds != seconds:  # None, NaN or NaT: no limit
        return "none"
    seconds = float(seconds)
    for size, unit in _SPAN_UNITS:
        if abs(seconds) >= size and round(seconds / size, 9).is_integer():
            return _span(seconds / size, unit)
    size, unit = next(((s, u) for s, u in _SPAN_UNITS if abs(seconds) >= s), _SPAN_UNITS[-1])
    return _span(seconds / size, unit)


def _span(number: float, unit: str) -> str:
    text = f"{number:.3g}" if not float(number).is_integer() else str(int(number))
    if unit == "day":
        unit = "day" if text == "1" else "days"
    return f"{text} {unit}"
