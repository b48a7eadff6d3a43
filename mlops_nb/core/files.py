"""Atomic files: write to a temporary name in the target's folder, flush, rename, flush the folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lexical(path: str | Path) -> Path:
    """``path`` made absolute with ``..`` folded as text: a symlink is not followed (inside a project, one may
    point anywhere). What "is this path inside the project" is asked of."""
    return Path(os.path.normpath(Path(path).absolute()))


def escapes(path: str | Path, base: str | Path, home: str | Path) -> bool:
    """Whether a *relative* ``path`` (taken from ``base``) climbs out of ``home`` with ``..``: it holds a ``..`` and
    both its lexical and its resolved location lie outside. An absolute path is the user's explicit choice (a shared
    dataset in /data) and never escapes; a symlink inside ``home`` may point anywhere."""
    if Path(path).is_absolute() or ".." not in Path(path).parts:
        return False
    home = Path(home).resolve()
    full = Path(base) / path
    return not (lexical(full).is_relative_to(home) or full.resolve().is_relative_to(home))


def is_special(path: Path) -> bool:
    """Whether ``path`` exists but is neither a file nor a folder: a device, a pipe or a socket, whose reading may
    never end (hashing /dev/zero)."""
    return path.exists() and not (path.is_file() or path.is_dir())


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a filesystem that cannot is left alone."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems cannot fsync a folder
        pass
    finally:
        os.close(fd)


def last_line(path: str | Path, limit: int = 300) -> str:
    """The last non-blank line of a text file (a child process's log: why it stopped), or ``no output``."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no output"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else "no output"


def fsync_rename(tmp: str | Path, final: str | Path) -> None:
    """Flush ``tmp`` to disk and rename it to ``final`` (atomic on one filesystem), then flush the folder."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full: an ``OSError`` with ENOSPC or EDQUOT, or a
    library's error (DuckDB, Arrow) that carries the system's message."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextmanager
def full_disk_as(error: type[Exception], what: str, folder: str | Path) -> Iterator[None]:
    """Turn a write's "disk full" (:func:`disk_full`) into ``error`` with one line: what was not written, where,
    and how to go on; any other exception passes unchanged. The caller leaves nothing half-written.

    Example::

        with full_disk_as(ArtifactError, "artifact 'model' (5.0 MB)", root):
            write(...)
    """
    try:
        yield
    except Exception as exc:
        if not disk_full(exc):
            raise
        raise error(
            f"cannot write {what}: the disk is full under {folder}; free some space (`mlops-nb gc` removes what "
            "nothing keeps) and try again"
        ) from None
