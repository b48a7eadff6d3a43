"""The front ends, thin over the Python API: the ``mlops-nb`` command line, the IPython magics, plots, the demo."""
