"""Automatic execution: schedules (cron, UTC) and data-arrival triggers that start pipeline and monitoring runs.

A schedule is a row of the metadata store: a notebook (``kind = notebook``) or a model to monitor (``kind =
monitor``), fired by a cron expression or by new data (``--on-data PATH|VIEW``: a ``--reads`` path's content
hash, or a feature view's state, changed). :func:`run_due` fires what is due once; :func:`daemon` does so in a
loop on a clock it is given (wall time by default), one run at a time per schedule, with no catch-up of missed
runs, surviving failed runs. A monitoring schedule's alerts whose action is ``run NB`` start a retraining run with
trigger ``drift``: the loop closes with one mechanism.
"""

from __future__ import annotations

from .schedules import Schedule, add, daemon, data_state, get, next_due, remove, run_due, schedules

__all__ = ["Schedule", "add", "daemon", "data_state", "get", "next_due", "remove", "run_due", "schedules"]
