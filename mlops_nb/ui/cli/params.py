"""Option checks shared by the commands: a bad value is refused by click as a usage error, before any work."""

from __future__ import annotations

import math
from pathlib import Path

import click


def positive_seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A finite number of seconds above zero (``nan``, ``inf`` and ``-1`` are refused)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a number of seconds above 0")
    return value


def seconds_or_zero(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A finite number of seconds, 0 or more."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"{value} is not a number of seconds, 0 or more")
    return value


def picture_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A .png or .svg file in a folder that exists."""
    if value is None:
        return value
    if value.suffix.lower() not in (".png", ".svg"):
        raise click.BadParameter(f"{value} must end in .png or .svg")
    if not value.parent.is_dir():
        raise click.BadParameter(f"{value}: the folder {value.parent} does not exist")
    return value
