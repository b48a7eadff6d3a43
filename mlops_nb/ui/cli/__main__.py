"""``python -m mlops_nb.ui.cli``: the ``mlops-nb`` command."""

from .main import main

main()
