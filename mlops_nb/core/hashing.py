"""Content hashes: of bytes and text, of canonical JSON, of files and folders."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sha256(data: bytes | str) -> str:
    """Hex sha256 of bytes or text."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def canonical(value: Any) -> str:
    """Canonical JSON of a value (sorted keys, no spaces); unknown types by ``repr``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_path_hashes: dict[tuple[str, int, int], str] = {}


def hash_path(path: Path, skip: Callable[[Path], bool] | None = None) -> str:
    """sha256 of a file's bytes, or of a folder's sorted (relative path, file hash) list, leaving out the files
    whose relative path ``skip`` answers true for.

    File hashes are remembered per (path, size, mtime) for the life of the process.
    """
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.is_file() and not (skip and skip(p.relative_to(path)))]
        return sha256(canonical([(p.relative_to(path).as_posix(), hash_path(p)) for p in files]))
    stat = path.stat()
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _path_hashes:
        _path_hashes[memo_key] = sha256_file(path)
    return _path_hashes[memo_key]
