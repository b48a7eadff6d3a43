"""Network helpers shared by the layers that connect or listen (the Dask executor, the serving router)."""

from __future__ import annotations


def host_problem(exc: Exception) -> str:
    """Why a host name could not be used, in words: the resolver's reason, or for a name IDNA cannot encode
    (``a..b``, a label over 63 characters) what is wrong with it, not the codec's message."""
    if isinstance(exc, UnicodeError):
        return "a part of the name is empty or longer than 63 characters"
    return getattr(exc, "strerror", None) or str(exc) or "unknown reason"
