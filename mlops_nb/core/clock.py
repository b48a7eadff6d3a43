"""Time as the stores keep it: naive datetimes in UTC, shown to people and JSON as ISO 8601 with ``+00:00``; and
the one reader of durations (TTLs, monitoring windows, retention ages)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any


def utcnow() -> datetime:
    """Now in UTC as a naive datetime, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """A naive UTC datetime (as the stores hold them) as an ISO string with ``+00:00``; None stays None."""
    return value.replace(tzinfo=UTC).isoformat() if value else None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}


def parse_duration(
    value: Any,
    what: str,
    *,
    error: type[Exception] = ValueError,
    bare_unit: str = "s",
    zero: bool = False,
    longest: timedelta = timedelta(days=36500),
) -> timedelta:
    """The one reader of durations: ``30m``, ``12h``, ``1.5 h``, ``90 days``, ``2w``, a number, or a timedelta.

    ``what`` names the value in messages (``"ttl"``, ``"window"``, ``"--older-than"``); ``error`` is the exception
    raised, with one line saying what is wrong and how to write it. A bare number (or a string without a unit) is in
    ``bare_unit``; ``zero`` allows a zero duration; anything longer than ``longest`` (100 years) is refused, as are
    negative, NaN and infinite values. The form :func:`mlops_nb.ui.format.ttl` prints (``90 days``, ``1.5 h``,
    ``30 min``) reads back, and so do pandas' forms (``1 days 02:00:00``, ``PT1H``).

    Example::

        parse_duration("90 days", "ttl")  # timedelta(days=90)
    """
    hint = "write it as 30m, 12h, 1d or 2w"
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) * _UNIT_SECONDS[bare_unit]
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        unit = match.group(2).lower() or bare_unit
        if unit not in _UNIT_SECONDS:
            raise error(f"{what} {value!r} has an unknown unit {match.group(2)!r}; {hint}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[unit]
    elif isinstance(value, str) and value.strip():
        import warnings

        import pandas as pd  # the long forms (``1 days 02:00:00``, ISO 8601 ``PT1H``); imported only for them

        try:
            with warnings.catch_warnings():  # pandas' deprecation of unit spellings is not the user's concern
                warnings.simplefilter("ignore")
                seconds = pd.Timedelta(value).total_seconds()
        except (ValueError, TypeError, OverflowError):
            raise error(f"{what} {value!r} is not a duration; {hint}") from None
    else:
        raise error(f"{what} {value!r} is not a duration; {hint}")
    if not math.isfinite(seconds):
        raise error(f"{what} {value!r} is not a duration; {hint}")
    if seconds < 0 or (seconds == 0 and not zero):
        raise error(f"{what} {value!r} must be {'zero or ' if zero else ''}longer than zero; {hint}")
    if seconds > longest.total_seconds():
        span = f"{longest.days // 365} years" if longest.days % 365 == 0 else f"{longest.days} days"
        raise error(f"{what} {value!r} is longer than {span}; give a shorter one, e.g. 30d")
    return timedelta(seconds=seconds)
