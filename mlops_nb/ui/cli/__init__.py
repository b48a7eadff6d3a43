"""The ``mlops-nb`` command line: ``main.py`` (the group and the run commands), ``features.py``
(``mlops-nb features``); tables, JSON, durations and times come from ``ui/format.py``."""

from .main import cli, main

__all__ = ["cli", "main"]
