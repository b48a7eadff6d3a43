"""The project a serving call works in: the one given, the running step's, else the current folder's."""

from __future__ import annotations

from ..core import hooks


def project_of(project=None):
    """``project`` if given, else the project of the step running now, else ``Project()``."""
    if project is not None:
        return project
    active = hooks.active_step()
    if active is not None and active.project is not None:
        return active.project
    from ..project import Project

    return Project()
