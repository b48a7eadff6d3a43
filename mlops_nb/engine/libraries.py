"""The installed versions of the third-party packages a notebook imports: part of each step's cache key, so that
an upgrade re-runs the steps with a why-line such as ``scikit-learn 1.9.1 → 1.10.0``.

A module is mapped to the distribution that installed it by the ``*.dist-info`` folders on ``sys.path``: a
distribution of the module's own name, else one whose ``top_level.txt`` lists it, else one whose ``RECORD``
holds its files (the most similar names read first). ``importlib.metadata.packages_distributions()`` does the
same job but reads every ``RECORD`` (~0.4 s here, on every run); this module reads folder names, and a ``RECORD``
only for a module that needs it, once per process. A version comes from the folder's name. An upgrade replaces
the folder, which changes its parent's modification time: the next look-up notices (one ``stat`` per ``sys.path``
entry) and maps again, except for the modules this process already imported (see :func:`versions`).

The versions are read in the process that decides a step: the kernel for manual runs and the notebook executor,
the driver when it plans and for the dag and dask executors. A kernel of another environment than the driver's
is keyed by the driver's versions there.
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


def _path_state() -> tuple:
    """The folders on ``sys.path`` and their modification times: installing or removing a package changes one."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(state)


_state: tuple | None = None


def versions(modules: list[str]) -> dict[str, str]:
    """Distribution name -> installed version, for the top-level ``modules`` that an installed distribution
    provides (a module nothing installed is left out).

    A module this process already imported keeps the version it was imported at, even if a newer one was
    installed since (``%pip install -U`` in a live kernel): the key names the code that runs. Other modules are
    mapped again whenever a folder on ``sys.path`` changes."""
    global _infos, _top_level, _state
    state = _path_state()
    if state != _state:
        _state, _infos, _top_level = state, None, None
        for module in [m for m in _owners if m not in sys.modules]:
            del _owners[module]
    found: dict[str, str] = {}
    for module in modules:
        if module not in _owners:
            _owners[module] = _owner(module)
        info = _owners[module]
        if info is not None:
            name, version = _name_version(info)
            found[name] = version
    return dict(sorted(found.items()))
