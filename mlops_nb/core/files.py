"""Atomic files: write to a temporary name in the target's folder, flush, rename, flush the folder."""

from __future__ import annotations

import os
from pathlib import Path


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


def fsync_rename(tmp: str | Path, final: str | Path) -> None:
    """Flush ``tmp`` to disk and rename it to ``final`` (atomic on one filesystem), then flush the folder."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))
