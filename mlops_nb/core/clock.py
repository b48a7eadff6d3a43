"""Time as the stores keep it: naive datetimes in UTC, shown to people and JSON as ISO 8601 with ``+00:00``."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC as a naive datetime, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """A naive UTC datetime (as the stores hold them) as an ISO string with ``+00:00``; None stays None."""
    return value.replace(tzinfo=UTC).isoformat() if value else None
