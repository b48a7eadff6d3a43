"""Servers listen on the loopback interface unless told otherwise.

The scoring server (`mlops-nb serve`) and a deployment (its supervisor, router and servers) are checked where they
are started: tests/test_serving.py and tests/test_deploy_e2e.py. Here: the Jupyter server that hosts the REST
extension, and the local Dask cluster of the ``dask`` executor (its scheduler and workers' HTTP servers).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mlops_nb.engine.executors.cluster import DaskPool
from mlops_nb.engine.executors.kernels import KernelSetup

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import jupyter_app, listener_of, listening  # noqa: E402

pytestmark = pytest.mark.slow
LOOPBACK = {"127.0.0.1", "::1"}


def test_the_jupyter_server_with_our_extension_listens_on_loopback_by_default(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    with jupyter_app(root, tmp_path / "jupyter", app="server", token="t", ip=None) as base:
        port = urlsplit(base).port
        addresses = listening(listener_of(port))
        assert addresses and {ip for ip, _ in addresses} <= LOOPBACK, addresses


@pytest.mark.parametrize("processes", [False, True], ids=["thread-workers", "process-workers"])
def test_the_local_dask_cluster_listens_on_loopback_only(tmp_path, processes):
    before = listening(os.getpid())
    pool = DaskPool(KernelSetup((), str(tmp_path), fork=False), jobs=2, processes=processes)
    try:
        addresses = listening(os.getpid()) - before
        assert addresses and {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses
        assert 8787 not in {port for _, port in addresses}  # no fixed dashboard port to collide on
    finally:
        pool.close()
