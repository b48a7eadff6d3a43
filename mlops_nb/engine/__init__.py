"""Running pipelines (named ``engine`` so that ``mlops_nb.run``, the function, is not shadowed by a package): the
cache (``cache.py``), the step runtime every mode shares (``step.py``), the kernel-free plan (``plan.py``), the run
driver (``driver.py``) and the executors that run the steps (``executors/``)."""
