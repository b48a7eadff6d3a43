"""The ``dask`` executor's pool: the dag plan's steps submitted to a ``dask.distributed`` cluster.

Each worker keeps a :class:`~mlops_nb.engine.executors.kernels.KernelPool` of warm kernels (a WorkerPlugin), runs the
per-step notebook there, reads inputs from and writes outputs to the artifact root (an fsspec URI all workers can
reach, for a real cluster), and returns what happened. Only the driver writes the metadata store.
"""

from __future__ import annotations

import os
import uuid

from distributed import WorkerPlugin

from ...exceptions import MlopsError


class KernelPoolPlugin(WorkerPlugin):
    """Keeps warm kernels on each worker for one run."""

    def __init__(self, kernels, size: int):
        self.kernels, self.size = kernels, size
        self.pool = None

    def setup(self, worker) -> None:
        """Start warming kernels on the worker (in the notebook's folder when the worker can see it)."""
        from dataclasses import replace

        from .kernels import KernelPool

        kernels = self.kernels if os.path.isdir(self.kernels.cwd) else replace(self.kernels, cwd=os.getcwd())
        self.pool = KernelPool(kernels, self.size)

    def teardown(self, worker) -> None:
        """Stop the worker's kernels."""
        if self.pool is not None:
            self.pool.close()


def run_on_worker(plugin_name: str, cells: list[str], timeout: float | None):
    """Run one step's cells on this worker's warm kernels (the task Dask executes)."""
    from distributed import get_worker

    return get_worker().plugins[plugin_name].pool.run(cells, timeout)


class DaskPool:
    """Runs steps on a Dask cluster: the scheduler at ``address``, or a LocalCluster of ``jobs`` workers.

    Args:
        kernels: how each worker makes its step kernels (:class:`~mlops_nb.engine.executors.kernels.KernelSetup`).
        jobs: workers of the LocalCluster (ignored with ``address``).
        address: a running scheduler (``tcp://127.0.0.1:8786``).
        processes: LocalCluster workers as processes (True) or threads (False; enough, since kernels do the work).
    """

    def __init__(self, kernels, jobs: int, address: str | None = None, processes: bool = False):
        from distributed import Client, LocalCluster

        self.cluster = None
        try:
            if address:
                self.client = Client(address, timeout=10)
            else:
                # thread workers talk in-process; the scheduler's and workers' HTTP servers (dashboard, metrics)
                # would listen on every interface (0.0.0.0:8787) unless told otherwise: loopback, any free port
                where = {"host": "127.0.0.1"} if processes else {}
                self.cluster = LocalCluster(
                    n_workers=max(1, jobs),
                    threads_per_worker=1,
                    processes=processes,
                    dashboard_address="127.0.0.1:0",
                    worker_dashboard_address="127.0.0.1:0",
                    **where,
                )
                self.client = Client(self.cluster)
        except (OSError, TimeoutError) as exc:
            raise MlopsError(
                f"cannot reach the Dask scheduler at {address}: {exc}; start one with `dask scheduler` and "
                "`dask worker ADDRESS`, or leave out --scheduler for a local cluster"
            ) from None
        self.plugin_name = f"mlops-nb-kernels-{uuid.uuid4().hex[:8]}"
        # two warm kernels per worker (one per job with reuse): the next step need not wait for a kernel to start
        plugin = KernelPoolPlugin(kernels, size=1 if kernels.reuse else 2)
        self.client.register_plugin(plugin, name=self.plugin_name)

    def run(self, cells: list[str], timeout: float | None, gate=None):
        """Submit one step once ``gate`` (a future: its records are committed) is done; a worker lost mid-step is
        run again on another, then reported as a dead kernel."""
        from distributed import KilledWorker

        from .kernels import Executed

        if gate is not None:
            try:
                gate.result()
            except Exception as exc:  # noqa: BLE001 - reported as the step's failure, as a local kernel does
                return Executed("failed", error=f"its start could not be recorded: {exc}", ename=type(exc).__name__)
        future = self.client.submit(run_on_worker, self.plugin_name, cells, timeout, pure=False, retries=1)
        try:
            return future.result()
        except KilledWorker as exc:
            worker = getattr(exc.last_worker, "address", exc.last_worker)
            return Executed(
                "died",
                error=f"the Dask workers running it died {exc.allowed_failures + 1} times (last {worker}); "
                "see the workers' logs (out of memory?)",
                ename="KilledWorker",
            )

    def close(self) -> None:
        """Stop the workers' kernels and, for a LocalCluster, the cluster."""
        try:
            self.client.unregister_worker_plugin(self.plugin_name)
        except Exception:  # noqa: BLE001 - the cluster may be gone already
            pass
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
