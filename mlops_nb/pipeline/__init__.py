"""A notebook as a pipeline: cells parsed into setup, parameters and steps, and the DAG their names make.

No kernel and no store: ``notebook.py`` reads and validates the notebook, ``inference.py`` tells what a cell reads
and assigns.
"""

from .notebook import Pipeline, Step

__all__ = ["Pipeline", "Step"]
