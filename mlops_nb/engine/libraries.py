"""The installed versions of the third-party packages a notebook imports: part of each step's cache key, so that
an upgrade re-runs the steps with a why-line such as ``scikit-learn 1.9.1 → 1.10.0``.

A module is mapped to the distribution that installed it by the ``*.dist-info`` folders on ``sys.path``: a
distribution of the module's own name, else one whose ``top_level.txt`` lists it, else one whose ``RECORD``
holds its files (the most similar names read first). ``importlib.metadata.packages_distributions()`` does the
same job but reads every ``RECORD`` (~0.4 s here, on every run); this module reads folder names, and a ``RECORD``
only for a module that needs it, once per process. A version comes from the folder's name; an upgrade replaces
the folder, which the next look-up notices (one ``stat`` per package) and maps again.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path

_owners: dict[str, Path | None] = {}  # module -> the dist-info folder of the distribution that installed it
_infos: list[Path] | None = None
_top_level: dict[str, Path] | None = None


def _normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``scikit_learn`` and ``Scikit.Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_version(info: Path) -> tuple[str, str]:
    """``scikit_learn-1.9.1.dist-info`` -> ``("scikit-learn", "1.9.1")``."""
    name, _, version = info.name[: -len(".dist-info")].partition("-")
    return _normalize(name), version


def _scan() -> list[Path]:
    """Every ``*.dist-info`` folder on ``sys.path``, in import order."""
    found = []
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as items:
                found += sorted(Path(i.path) for i in items if i.name.endswith(".dist-info") and i.is_dir())
        except OSError:
            continue
    return found


def _read(info: Path, name: str) -> str:
    try:
        return (info / name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _owner(module: str) -> Path | None:
    """The dist-info folder of the distribution that installed top-level module ``module``, if any."""
    global _infos, _top_level
    if _infos is None:
        _infos, _top_level = _scan(), None
    wanted = _normalize(module)
    for info in _infos:
        if _name_version(info)[0] == wanted:
            return info
    if _top_level is None:  # read only when a module is not named like its distribution
        _top_level = {}
        for info in reversed(_infos):  # the first on sys.path wins
            for line in _read(info, "top_level.txt").split():
                _top_level[line] = info
    if module in _top_level:
        return _top_level[module]
    prefixes = (f"{module}/", f"{module}.py,", f"{module}.")
    listed = {id(i) for i in _top_level.values()}
    unlisted = [i for i in _infos if id(i) not in listed]
    unlisted.sort(key=lambda i: -difflib.SequenceMatcher(None, wanted, _name_version(i)[0]).ratio())
    for info in unlisted:
        if any(line.startswith(prefixes) for line in _read(info, "RECORD").splitlines()):
            return info
    return None


def versions(modules: list[str]) -> dict[str, str]:
    """Distribution name -> installed version, for the top-level ``modules`` that an installed distribution
    provides (a module nothing installed is left out)."""
    global _infos
    found: dict[str, str] = {}
    for module in modules:
        info = _owners.get(module)
        if info is not None and not info.is_dir():  # upgraded or removed since: map every module again
            _owners.clear()
            _infos = None
        if module not in _owners:
            _owners[module] = _owner(module)
        info = _owners[module]
        if info is not None:
            name, version = _name_version(info)
            found[name] = version
    return dict(sorted(found.items()))
