"""The ``dask`` executor: the ``dag`` plan's steps on a ``dask.distributed`` cluster (``cluster.py``, imported only
when a run uses it: distributed takes seconds to import)."""

from __future__ import annotations

import os

from .base import Job
from .dag import GraphRunner


class DaskRunner(GraphRunner):
    """``dask``: the dag plan's steps on a ``dask.distributed`` cluster (``--scheduler ADDRESS``, else a LocalCluster of
    ``--jobs`` workers; ``MLOPS_NB_DASK_PROCESSES=1`` makes its workers processes)."""

    name = "dask"
    options = GraphRunner.options | {"scheduler"}

    def pool(self, kernels, jobs: int, job: Job):
        """A Dask client whose workers keep warm kernels."""
        from .cluster import DaskPool

        processes = os.environ.get("MLOPS_NB_DASK_PROCESSES") == "1"
        return DaskPool(kernels, jobs, address=job.options.scheduler, processes=processes)
