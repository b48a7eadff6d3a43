"""The metadata store: pipelines, runs, step runs, artifacts, events, params, metrics and lineage in DuckDB.

DuckDB lets one process at a time open a file for writing, and while it does no other process can open it at
all. So every operation here is one short transaction on a connection opened for it and closed after it
(DESIGN invariant 3): writers are serialised across processes by a file lock, and both readers and writers
retry a locked file with backoff for at most ``lock_timeout`` seconds before raising :class:`StoreBusyError`.
No connection is held while user code runs.

Reads a front end polls (:meth:`MetadataStore.list_runs`, :meth:`~MetadataStore.get_run`,
:meth:`~MetadataStore.get_step_run`, :meth:`~MetadataStore.lineage` and the resolvers) go through a
:class:`~mlops_nb.store.dbfile.ReadCache`: a long-lived store answers a repeated read from memory while the file
is unchanged (checked on every call), so a sidebar polling an idle store never opens it, and a poll after a write
reads the file once, as before. A cached answer is never staler than an uncached one would be.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core import hooks
from ..core.clock import iso, utcnow
from ..core.records import RUN_KINDS, TRIGGERS, ArtifactRef
from ..exceptions import NotFoundError, StoreError
from .dbfile import DuckDBFile, ReadCache
from .lineage import LineageGraph, lineage_graph, lookup

STATUSES = ("running", "succeeded", "failed", "cached", "skipped", "interrupted")
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")

# Forward migrations: MIGRATIONS[i] takes the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE pipelines (
        name VARCHAR PRIMARY KEY,
        notebook VARCHAR,
        created_at TIMESTAMP NOT NULL
    );
    CREATE TABLE runs (
        id VARCHAR PRIMARY KEY,
        pipeline VARCHAR NOT NULL,
        notebook VARCHAR,
        notebook_hash VARCHAR,
        params JSON,
        executor VARCHAR,
        trigger VARCHAR,
        status VARCHAR NOT NULL,
        started_at TIMESTAMP NOT NULL,
        ended_at TIMESTAMP,
        host VARCHAR,
        pid INTEGER,
        pid_started DOUBLE,
        git_commit VARCHAR,
        git_dirty BOOLEAN,
        error VARCHAR,
        executed_notebook VARCHAR
    );
    CREATE SEQUENCE step_run_seq;
    CREATE TABLE step_runs (
        id VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL DEFAULT nextval('step_run_seq'),
        run_id VARCHAR NOT NULL,
        step VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        why VARCHAR,
        cache_key VARCHAR,
        cached_from VARCHAR,
        started_at TIMESTAMP NOT NULL,
        ended_at TIMESTAMP,
        error VARCHAR,
        cell_index INTEGER,
        attempt INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX step_runs_run ON step_runs (run_id);
    CREATE INDEX step_runs_key ON step_runs (cache_key);
    CREATE TABLE artifacts (
        hash VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        size BIGINT,
        uri VARCHAR,
        summary VARCHAR,
        created_at TIMESTAMP NOT NULL
    );
    CREATE TABLE events (
        step_run_id VARCHAR NOT NULL,
        artifact VARCHAR NOT NULL,
        direction VARCHAR NOT NULL,
        name VARCHAR
    );
    CREATE INDEX events_step_run ON events (step_run_id);
    CREATE INDEX events_artifact ON events (artifact);
    CREATE TABLE params (
        run_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        value JSON
    );
    CREATE INDEX params_run ON params (run_id);
    CREATE TABLE metrics (
        run_id VARCHAR NOT NULL,
        step_run_id VARCHAR,
        name VARCHAR NOT NULL,
        value DOUBLE,
        step BIGINT,
        logged_at TIMESTAMP NOT NULL
    );
    CREATE INDEX metrics_run ON metrics (run_id);
    """,
    # 2: the parts of each step run's cache key, to say why a step ran
    """
    ALTER TABLE step_runs ADD COLUMN key_parts JSON;
    """,
    # 3: a cached step run reuses its outputs (direction 'reuse'); lineage follows the run that made them
    """
    UPDATE events SET direction = 'reuse'
    WHERE direction = 'out' AND step_run_id IN (SELECT id FROM step_runs WHERE status = 'cached');
    """,
    # 4: the executed per-step notebook of a step run (dag and dask executors)
    """
    ALTER TABLE step_runs ADD COLUMN executed_notebook VARCHAR;
    """,
    # 5: runs of every kind, and what fired them; a run that is not a notebook's has no pipeline
    """
    ALTER TABLE runs ADD COLUMN kind VARCHAR NOT NULL DEFAULT 'pipeline';
    ALTER TABLE runs ADD COLUMN fired_by VARCHAR;
    ALTER TABLE runs ALTER COLUMN pipeline DROP NOT NULL;
    CREATE INDEX runs_kind ON runs (kind);
    """,
    # 6: the step run whose output an input event's artifact was (exact lineage when artifacts are equal);
    # earlier inputs get the latest step run of the same run that made or reused the artifact before them
    """
    ALTER TABLE events ADD COLUMN source VARCHAR;
    UPDATE events SET source = (
        SELECT coalesce(p.cached_from, p.id) FROM events o JOIN step_runs p ON p.id = o.step_run_id
        JOIN step_runs c ON c.id = events.step_run_id
        WHERE o.artifact = events.artifact AND o.direction IN ('out', 'reuse') AND p.run_id = c.run_id
            AND p.seq < c.seq
        ORDER BY p.seq DESC LIMIT 1
    ) WHERE direction = 'in';
    """,
    # 7: the index of model registry events (MLflow's version tags are the source of truth; see
    # mlops_nb.promotion): registrations, gate outcomes, approvals, alias moves, with the run or step run that did it
    """
    CREATE TABLE model_events (
        occurred_at TIMESTAMP NOT NULL,
        model VARCHAR NOT NULL,
        version BIGINT,
        alias VARCHAR,
        action VARCHAR NOT NULL,
        actor VARCHAR,
        trigger VARCHAR,
        run_id VARCHAR,
        step_run_id VARCHAR,
        detail JSON,
        event_key VARCHAR NOT NULL
    );
    CREATE INDEX model_events_model ON model_events (model);
    """,
    # 8: monitoring's alerts (the rule that fired, its value, the action and the run it started) and the schedules
    # and data triggers that start runs (see mlops_nb.monitoring and mlops_nb.schedule)
    """
    CREATE TABLE alerts (
        id VARCHAR PRIMARY KEY,
        raised_at TIMESTAMP NOT NULL,
        model VARCHAR,
        version BIGINT,
        rule VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        value DOUBLE,
        action VARCHAR NOT NULL,
        monitor_run VARCHAR,
        action_run VARCHAR,
        outcome VARCHAR
    );
    CREATE TABLE schedules (
        name VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        cron VARCHAR,
        on_data VARCHAR,
        options JSON,
        created_at TIMESTAMP NOT NULL,
        next_due TIMESTAMP,
        data_state VARCHAR,
        last_fired TIMESTAMP,
        last_run VARCHAR,
        last_status VARCHAR,
        last_error VARCHAR
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


_STEP_RUN_ID = re.compile(r"^.+\.\d+$")  # RUN.N


def new_run_id() -> str:
    """A readable, time-sortable run id: ``YYYYMMDD-HHMMSS-<8 hex>`` (UTC)."""
    return utcnow().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None when it is gone or a zombie. On Linux read from
    ``/proc`` as psutil does (importing psutil costs a command ~40 ms); elsewhere psutil."""
    if _PROC_STAT:
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                stat = file.read()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            stat = b""
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 19:
            return None if fields[0] == b"Z" else _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None  # dead (killed, say), only not yet reaped by its parent
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


_PROC_STAT = os.path.exists("/proc/self/stat")


@functools.cache
def _boot_time() -> float:
    """The system's boot time (``btime`` of ``/proc/stat``), read once."""
    with open("/proc/stat", "rb") as file:
        return float(next(line for line in file if line.startswith(b"btime")).split()[1])


def git_state(folder: str | os.PathLike | None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git work tree holding ``folder``, or ``(None, None)`` outside git."""
    cwd = str(folder or os.getcwd())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


# Records -------------------------------------------------------------------------------------------------------
def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


@dataclass
class StepRun:
    """One execution (or cache hit, or skip) of one step in one run.

    Attributes:
        id: ``<run id>.<n>``.
        run_id: the run it belongs to.
        step: the step's name.
        status: ``running``, ``succeeded``, ``failed``, ``cached``, ``skipped`` or ``interrupted``.
        why: one line saying why the step ran or was cached (``input raw changed``, ``cached from run R``).
        cache_key: the step's cache key.
        cached_from: for ``cached``, the step run whose outputs were reused.
        started_at, ended_at: UTC.
        error: the error of a failed step.
        cell_index: the notebook cell of the step.
        attempt: 1 for the first try, more for retries.
        executed_notebook: hash of the executed per-step notebook (dag and dask executors).
        inputs, outputs: name -> :class:`ArtifactRef`.
        sources: input name -> the step run whose output it loaded, when known.
    """

    id: str
    run_id: str
    step: str
    status: str
    why: str | None = None
    cache_key: str | None = None
    cached_from: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    cell_index: int | None = None
    attempt: int = 1
    executed_notebook: str | None = None
    inputs: dict[str, ArtifactRef] = field(default_factory=dict)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, when ended."""
        return _seconds(self.started_at, self.ended_at)

    @property
    def cell(self) -> int | None:
        """The step's cell as people count it: 1-based among all cells of the saved notebook, markdown
        included (JupyterLab's "Cell N/M"); ``cell_index`` is the same cell 0-based."""
        return self.cell_index + 1 if self.cell_index is not None else None

    def to_dict(self) -> dict:
        """A JSON-able dict."""
        data = asdict(self)
        data["started_at"], data["ended_at"] = iso(self.started_at), iso(self.ended_at)
        data["duration"] = self.duration
        data["cell"] = self.cell
        data["inputs"] = {k: v.to_dict() for k, v in self.inputs.items()}
        data["outputs"] = {k: v.to_dict() for k, v in self.outputs.items()}
        return data


@dataclass
class Run:
    """One recorded unit of lifecycle work: a pipeline run (a notebook's), or a promotion, build, deploy or
    monitor run.

    Attributes:
        id: the run id.
        pipeline: the pipeline's name (None for a run that is not a notebook's).
        status: ``running``, ``succeeded``, ``failed`` or ``interrupted``.
        kind: ``pipeline``, ``promotion``, ``build``, ``deploy`` or ``monitor``.
        fired_by: what fired it (a schedule, a data file, an alert, an approval), when a trigger did.
        notebook, notebook_hash: the notebook run and the sha256 of its source.
        params: the parameters it ran with.
        executor: ``notebook``, ``dag``, ``dask``, ``interactive`` or ``api``.
        trigger: ``manual``, ``cli``, ``api``, ``rest``, ``schedule``, ``data``, ``drift``, ``approval``, ``watch``.
        started_at, ended_at: UTC.
        host, pid: the process that ran it.
        git_commit, git_dirty: the state of the git work tree.
        error: why it failed or was interrupted.
        executed_notebook: the executed notebook's artifact, when saved.
        step_runs: the step runs, in the order they started (filled by :meth:`MetadataStore.get_run`).
        metrics: name -> latest value (filled by :meth:`MetadataStore.get_run`).
        step_counts: status -> number of step runs with it.
        detailed: False for a record from :meth:`MetadataStore.list_runs` without ``details``: its step runs,
            metrics and the executed notebook's size were not read (its ``step_counts`` were), and :meth:`to_dict`
            leaves them out rather than show empty ones.
    """

    id: str
    pipeline: str | None
    status: str
    kind: str = "pipeline"
    fired_by: str | None = None
    notebook: str | None = None
    notebook_hash: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    executor: str | None = None
    trigger: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    host: str | None = None
    pid: int | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    error: str | None = None
    executed_notebook: ArtifactRef | None = None
    step_runs: list[StepRun] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    step_counts: dict[str, int] = field(default_factory=dict)
    detailed: bool = True

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, when ended."""
        return _seconds(self.started_at, self.ended_at)

    def step(self, name: str) -> StepRun:
        """The latest step run of step ``name``."""
        for step_run in reversed(self.step_runs):
            if step_run.step == name:
                return step_run
        raise NotFoundError(f"run {self.id} has no step {name!r}; its steps: {', '.join(self.steps) or 'none'}")

    @property
    def steps(self) -> list[str]:
        """Names of the steps that have step runs, in order."""
        return list(dict.fromkeys(s.step for s in self.step_runs))

    def to_dict(self) -> dict:
        """A JSON-able dict, step runs and metrics included (a record listed without details has
        ``step_counts`` only, and its executed notebook only its hash and kind)."""
        data = asdict(self)
        del data["detailed"]
        data["started_at"], data["ended_at"] = iso(self.started_at), iso(self.ended_at)
        data["duration"] = self.duration
        data["executed_notebook"] = self.executed_notebook.to_dict() if self.executed_notebook else None
        data["step_runs"] = [s.to_dict() for s in self.step_runs]
        if not self.detailed:
            del data["step_runs"], data["metrics"]
            if self.executed_notebook:
                data["executed_notebook"] = {"hash": self.executed_notebook.hash, "kind": "ipynb"}
        return data


# The store ------------------------------------------------------------------------------------------------------
class MetadataStore:
    """Records of pipelines, runs, step runs, artifacts, events, params and metrics in a DuckDB file.

    Opening the store creates or migrates the file and marks runs whose process is gone as ``interrupted``.

    Args:
        path: the DuckDB file (default: the current project's ``.mlops/metadata.duckdb``).
        lock_timeout: seconds to wait for a busy store before raising :class:`StoreBusyError`.
        cache_reads: keep the answers of reads while the file is unchanged (checked on every call; see the module
            docstring); False reads the file on every call.

    Example::

        store = MetadataStore()
        run_id = store.create_run("quickstart", params={"n_rows": 500})
        sr = store.start_step(run_id, "load")
        store.finish_step(sr, "succeeded", outputs={"raw": ref})
        store.finish_run(run_id, "succeeded")
        store.get_run(run_id).step("load").outputs["raw"].hash
    """

    def __init__(
        self, path: str | os.PathLike | None = None, lock_timeout: float | None = None, *, cache_reads: bool = True
    ):
        if path is None:  # the current project's (resolved by the package root)
            located = hooks.locate("metadata")
            path, lock_timeout = located["path"], located["lock_timeout"] if lock_timeout is None else lock_timeout
        lock_timeout = 30.0 if lock_timeout is None else lock_timeout
        self.path = Path(path).resolve()
        self.lock_timeout = float(lock_timeout)
        if self.path.is_dir():
            raise StoreError(f"metadata store {self.path} is a folder, not a DuckDB file; move it aside")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = DuckDBFile(
            self.path,
            self.lock_timeout,
            "metadata store",
            fix="move the file aside and run `mlops-nb init` to start a new store",
        )
        # create or migrate the schema, refuse a newer one, and mark runs of dead processes interrupted (an
        # up-to-date store with no run to mark and no WAL left by a killed writer needs no write lock)
        self._db.migrate(
            MIGRATIONS,
            "metadata store",
            needs_write=lambda con: bool(self._dead_runs(con)),
            on_write=self._mark_interrupted,
        )
        self._cache = ReadCache(self._db, max_entries=256 if cache_reads else 0)

    def __repr__(self) -> str:
        return f"MetadataStore({str(self.path)!r})"

    def cache_info(self) -> dict[str, int]:
        """How many reads were answered from memory (``hits``) and how many read the file (``misses``)."""
        return {"hits": self._cache.hits, "misses": self._cache.misses}

    # connections ---------------------------------------------------------------------------------------------
    @contextmanager
    def batch(self, write: bool = False) -> Iterator[MetadataStore]:
        """Run several operations on one connection (and, with ``write``, in one transaction).

        Keep it short: the file stays locked for other processes until the block ends.

        Example::

            with store.batch(write=True):
                run_id = store.create_run("p")
                store.record_step(run_id, "a", "cached", ...)
                store.finish_run(run_id, "succeeded")
        """
        with self._db.batch(write=write):
            yield self

    def held(self) -> AbstractContextManager[None]:
        """Within the block, this process's operations share one attach of the file, let go after a tenth of a
        second without use or a quarter of a second in all (:meth:`~mlops_nb.store.dbfile.DuckDBFile.held`): for a
        driver that writes many small records while no user code runs in it."""
        return self._db.held()

    def _connect(self, write: bool = False):
        """One short-lived connection (the protocol of :class:`~mlops_nb.store.dbfile.DuckDBFile`)."""
        return self._db.connect(write=write)

    def reap(self, run: Run | None = None) -> int:
        """Mark the runs of dead processes ``interrupted`` now, as opening the store does (a long-lived store, such
        as a server's, calls it for a run it sees running); return how many were marked. A read when none is;
        with ``run``, nothing at all while that run's process (on this host) lives."""
        if run is not None and (
            run.host != socket.gethostname() or not run.pid or _process_started(run.pid) is not None
        ):
            return 0
        with self._connect() as con:
            if not self._dead_runs(con):
                return 0
        with self._connect(write=True) as con:
            dead = len(self._dead_runs(con))
            self._mark_interrupted(con)
        return dead

    def _dead_runs(self, con) -> list[tuple[str, int]]:
        """``(run id, pid)`` of runs recorded as running on this host whose process is gone."""
        rows = con.execute(
            "SELECT id, pid, pid_started FROM runs WHERE status = 'running' AND host = ?", [socket.gethostname()]
        ).fetchall()
        dead = []
        for run_id, pid, pid_started in rows:
            started = _process_started(pid) if pid else None
            if started is None or (pid_started is not None and abs(started - pid_started) >= 1.0):
                dead.append((run_id, pid))
        return dead

    def _mark_interrupted(self, con) -> None:
        """Mark the runs of dead processes ``interrupted``, ended at their last recorded activity (when the process
        died is unknown; when it was found is not when it ended), with the step runs they left ``running``."""
        for run_id, pid in self._dead_runs(con):
            last = con.execute(
                "SELECT greatest(r.started_at, max(s.started_at), max(s.ended_at), "
                "(SELECT max(logged_at) FROM metrics WHERE run_id = r.id)) "
                "FROM runs r LEFT JOIN step_runs s ON s.run_id = r.id WHERE r.id = ? GROUP BY r.id, r.started_at",
                [run_id],
            ).fetchall()[0][0]
            reason = (
                f"process {pid} on {socket.gethostname()} ended while the run was running (found at "
                f"{utcnow():%H:%M:%S} UTC; its last record, at {last:%H:%M:%S}, is taken as its end)"
            )
            con.execute(
                "UPDATE runs SET status = 'interrupted', ended_at = ?, error = coalesce(error, ?) WHERE id = ?",
                [last, reason, run_id],
            )
            con.execute(
                "UPDATE step_runs SET status = 'interrupted', ended_at = ?, error = coalesce(error, ?) "
                "WHERE run_id = ? AND status = 'running'",
                [last, reason, run_id],
            )

    def sql(self, query: str, params: list | None = None):
        """Run a read-only SQL query on the store and return a pandas DataFrame (for notebooks and reports)."""
        with self._connect() as con:
            return con.execute(query, params or []).df()

    # writes --------------------------------------------------------------------------------------------------
    def create_run(
        self,
        pipeline: str | None,
        *,
        kind: str = "pipeline",
        fired_by: str | None = None,
        notebook: str | os.PathLike | None = None,
        notebook_hash: str | None = None,
        params: dict[str, Any] | None = None,
        executor: str = "api",
        trigger: str = "manual",
        run_id: str | None = None,
        pid: int | None = None,
        git: tuple[str | None, bool | None] | None = None,
        started_at: datetime | None = None,
    ) -> str:
        """Record a new ``running`` run and return its id.

        Args:
            pipeline: the pipeline's name (registered on first use); None for a run that is not a notebook's.
            kind: ``pipeline``, ``promotion``, ``build``, ``deploy`` or ``monitor``.
            fired_by: what fired it (a schedule's name, a data file, an alert), when a trigger did.
            notebook: the notebook's path; its folder's git commit and dirty flag are recorded.
            notebook_hash: sha256 of the notebook's source.
            params: the run's parameters (JSON-able values).
            executor: what runs it (``notebook``, ``dag``, ``dask``, ``api``).
            trigger: what started it: ``manual``, ``cli``, ``api``, ``rest``, ``schedule``, ``data``, ``drift``,
                ``approval`` or ``watch``.
            run_id: an id to use (default: a new one).
            pid: the process that owns the run (default: this one); when it dies the run becomes interrupted.
            git: ``(commit, dirty)`` when already known (default: asked of git in the notebook's folder).
            started_at: when the run began (UTC), if before it is recorded (a driver's planning); default: now.
        """
        self._check_run(kind, trigger, pipeline, notebook or notebook_hash)
        run_id = run_id or new_run_id()
        params = dict(params or {})
        pid = pid or os.getpid()
        folder = Path(notebook).resolve().parent if notebook else None
        if git is not None:
            commit, dirty = git
        else:  # a notebook's folder, else the current one (a session with no notebook file); no git for other kinds
            commit, dirty = git_state(folder) if kind == "pipeline" else (None, None)
        now = utcnow()
        with self._connect(write=True) as con:
            self._insert_run(
                con, run_id, pipeline, kind, fired_by, notebook, notebook_hash, params, executor, trigger, pid,
                (commit, dirty), started_at or now,
            )  # fmt: skip
        return run_id

    def record_run(
        self,
        *,
        kind: str,
        status: str,
        trigger: str = "api",
        fired_by: str | None = None,
        params: dict[str, Any] | None = None,
        error: str | None = None,
        run_id: str | None = None,
        started_at: datetime | None = None,
        executor: str = "api",
        model_events: list[dict] | None = None,
        steps: list[dict[str, Any]] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> str:
        """Record a run that is already over (a promotion: a few registry calls; a build) in one transaction, with
        the model registry events it did and its step runs (records as :meth:`record_steps` takes them: a build's
        step reads a model version and outputs a bundle); return its id. Not for pipelines: those are created, then
        finished.

        Its ``params`` describe it (model, version, alias, action) and are kept with the run only, not in the
        ``params`` table that ``list_runs(params=...)`` filters on: each table a write touches costs a DuckDB
        checkpoint (~20 ms here), and a promotion's latency is the sum of such writes."""
        self._check_run(kind, trigger, None, None)
        self._check_status(status, RUN_STATUSES)
        if kind == "pipeline":
            raise StoreError("a pipeline run is created with create_run and ended with finish_run")
        run_id = run_id or new_run_id()
        self._check_steps(steps or [])
        now = utcnow()
        with self._connect(write=True) as con:
            self._insert_run(
                con, run_id, None, kind, fired_by, None, None, dict(params or {}), executor, trigger, os.getpid(),
                (None, None), started_at or now, status=status, ended_at=now, error=error, params_table=False,
            )  # fmt: skip
            self._insert_model_events(con, model_events, run_id, None)
            if steps:
                self._insert_steps(con, run_id, steps)
            if metrics:
                self._insert_metrics(con, run_id, None, metrics, None)
        return run_id

    @staticmethod
    def _insert_run(
        con,
        run_id,
        pipeline,
        kind,
        fired_by,
        notebook,
        notebook_hash,
        params,
        executor,
        trigger,
        pid,
        git,
        started_at,
        *,
        status: str = "running",
        ended_at: datetime | None = None,
        error: str | None = None,
        params_table: bool = True,
    ) -> None:
        """Insert a run (``running`` unless told), its pipeline (on first use) and its parameters (also into the
        ``params`` table unless told not to)."""
        commit, dirty = git
        now = utcnow()
        if pipeline:
            con.execute(
                "INSERT INTO pipelines VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [pipeline, str(notebook) if notebook else None, now],
            )
        con.execute(
            "INSERT INTO runs (id, pipeline, kind, fired_by, notebook, notebook_hash, params, executor, trigger, "
            "status, started_at, host, pid, pid_started, git_commit, git_dirty, ended_at, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                pipeline,
                kind,
                fired_by,
                str(notebook) if notebook else None,
                notebook_hash,
                json.dumps(params, sort_keys=True, default=str),
                executor,
                trigger,
                status,
                started_at,
                socket.gethostname(),
                pid,
                _process_started(pid),
                commit,
                dirty,
                ended_at,
                error,
            ],
        )
        if params and params_table:  # one statement: executemany costs a round trip per row
            con.execute(
                "INSERT INTO params VALUES " + ", ".join(["(?, ?, ?)"] * len(params)),
                [v for k, value in params.items() for v in (run_id, k, json.dumps(value, sort_keys=True, default=str))],
            )

    def _check_run(self, kind: str, trigger: str, pipeline: str | None, notebook: Any) -> None:
        """Refuse an unknown kind or trigger, a pipeline run without a pipeline, notebook fields on other kinds."""
        self._check_status(kind, RUN_KINDS, "run kind")
        self._check_status(trigger, TRIGGERS, "trigger")
        if kind == "pipeline" and not pipeline:
            raise StoreError("a pipeline run needs the pipeline's name")
        if kind != "pipeline" and (pipeline or notebook):
            raise StoreError(f"a {kind} run is not a notebook's: it takes no pipeline, notebook or notebook_hash")

    @staticmethod
    def _record_artifacts(con, refs: list[ArtifactRef]) -> None:
        """Record the artifacts not recorded yet. Writes hold the file's write lock, so looking the known ones up
        first cannot race; it costs a third of ``INSERT ... ON CONFLICT DO NOTHING`` (~8 ms at 100k artifacts)."""
        if refs:
            unique = {r.hash: r for r in refs}
            known = {row[0] for row in lookup(con, "SELECT hash FROM artifacts WHERE {match}", "hash", list(unique))}
            new = [r for digest, r in unique.items() if digest not in known]
            if new:  # one statement: executemany costs a round trip per row
                con.execute(
                    "INSERT INTO artifacts VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?::TIMESTAMP)"] * len(new)),
                    [v for r in new for v in (r.hash, r.kind, r.size, r.uri, r.summary, utcnow())],
                )

    def _record_events(
        self,
        con,
        step_run_id: str,
        refs: dict[str, ArtifactRef] | None,
        direction: str,
        sources: dict[str, str] | None = None,
    ) -> None:
        if refs:
            self._record_artifacts(con, list(refs.values()))
            sources = sources or {}
            self._insert_events(
                con, [(step_run_id, ref.hash, direction, name, sources.get(name)) for name, ref in refs.items()]
            )

    @staticmethod
    def _insert_events(con, events: list[tuple]) -> None:
        """Insert ``(step_run_id, artifact, direction, name, source)`` rows in one statement."""
        if events:
            con.execute(
                "INSERT INTO events (step_run_id, artifact, direction, name, source) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?)"] * len(events)),
                [v for event in events for v in event],
            )

    def record_artifact(self, ref: ArtifactRef) -> None:
        """Record an artifact that no step produced (an uploaded file, a notebook)."""
        with self._connect(write=True) as con:
            self._record_artifacts(con, [ref])

    def start_step(
        self,
        run_id: str,
        step: str,
        *,
        status: str = "running",
        why: str | None = None,
        cache_key: str | None = None,
        cell_index: int | None = None,
        inputs: dict[str, ArtifactRef] | None = None,
        attempt: int = 1,
        key_parts: dict | None = None,
        sources: dict[str, str] | None = None,
    ) -> str:
        """Record the start of a step run and its input artifacts; return the step run's id.

        ``key_parts`` are the components of ``cache_key`` (kept to explain why a later run of the step ran).
        ``sources`` maps an input to the step run whose output the step loaded (the producer, through a cache
        hit's ``cached_from``), so lineage follows that chain only when other step runs made an equal artifact.
        """
        self._check_status(status, STATUSES)
        with self._connect(write=True) as con:
            found, n = con.execute(  # one statement: each costs a round trip
                "SELECT (SELECT count(*) FROM runs WHERE id = ?), (SELECT count(*) FROM step_runs WHERE run_id = ?)",
                [run_id, run_id],
            ).fetchall()[0]
            if not found:
                raise NotFoundError(f"run {run_id} does not exist; create it with create_run() first")
            step_run_id = f"{run_id}.{n + 1}"
            con.execute(
                "INSERT INTO step_runs (id, run_id, step, status, why, cache_key, started_at, cell_index, attempt, "
                "key_parts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    step_run_id,
                    run_id,
                    step,
                    status,
                    why,
                    cache_key,
                    utcnow(),
                    cell_index,
                    attempt,
                    json.dumps(key_parts, sort_keys=True) if key_parts is not None else None,
                ],
            )
            self._record_events(con, step_run_id, inputs, "in", sources)
        return step_run_id

    def finish_step(
        self,
        step_run_id: str,
        status: str,
        *,
        outputs: dict[str, ArtifactRef] | None = None,
        why: str | None = None,
        error: str | None = None,
        cached_from: str | None = None,
        metrics: dict[str, float] | None = None,
        inputs: dict[str, ArtifactRef] | None = None,
        executed_notebook: ArtifactRef | None = None,
        started_at: datetime | None = None,
        ended_at: datetime | None = None,
        model_events: list[dict] | None = None,
    ) -> None:
        """Record how a step run ended, its output artifacts and metrics, in one transaction.

        Args:
            inputs: inputs found while the step ran (a feature view it read), recorded as ``in`` events.
            executed_notebook: the executed per-step notebook (dag and dask executors).
            model_events: model registry events of the step (see :meth:`record_model_events`).
            started_at, ended_at: when the step really ran (UTC), if not when it was recorded (a worker's times).
        """
        self._check_status(status, STATUSES)
        with self._connect(write=True) as con:
            rows = con.execute(
                "UPDATE step_runs SET status = ?, ended_at = ?, error = ?, why = coalesce(?, why), cached_from = ?, "
                "executed_notebook = coalesce(?, executed_notebook), started_at = coalesce(?, started_at) "
                "WHERE id = ? RETURNING run_id",
                [
                    status,
                    ended_at or utcnow(),
                    error,
                    why,
                    cached_from,
                    executed_notebook.hash if executed_notebook else None,
                    started_at,
                    step_run_id,
                ],
            ).fetchall()
            if not rows:
                raise NotFoundError(f"step run {step_run_id} does not exist")
            # one statement each for the artifacts and the events: each costs a round trip
            produced = "reuse" if status == "cached" else "out"
            events = [(name, ref, "in") for name, ref in (inputs or {}).items()]
            events += [(name, ref, produced) for name, ref in (outputs or {}).items()]
            refs = [ref for _, ref, _ in events] + ([executed_notebook] if executed_notebook is not None else [])
            self._record_artifacts(con, refs)
            self._insert_events(con, [(step_run_id, ref.hash, way, name, None) for name, ref, way in events])
            if metrics:
                self._insert_metrics(con, rows[0][0], step_run_id, metrics, None)
            self._insert_model_events(con, model_events, rows[0][0], step_run_id)

    def record_model_events(self, events: list[dict], run_id: str | None = None, step_run_id: str | None = None) -> int:
        """Index model registry events (idempotent: an event whose ``key`` is indexed already is skipped); return
        how many were new.

        Each event is a dict with ``at`` (ISO time), ``model``, ``version``, ``alias``, ``action`` (``register``,
        ``promote``, ``refuse``, ``pending``, ``approve``, ``reject``, ``rollback``), ``by``, ``trigger``, a unique
        ``key`` (the MLflow tag that holds it) and any other fields, kept as ``detail``.
        """
        with self._connect(write=True) as con:
            return self._insert_model_events(con, events, run_id, step_run_id)

    @staticmethod
    def _insert_model_events(con, events: list[dict] | None, run_id: str | None, step_run_id: str | None) -> int:
        if not events:
            return 0
        keys = [e["key"] for e in events]
        known = {row[0] for row in lookup(con, "SELECT event_key FROM model_events WHERE {match}", "event_key", keys)}
        new = [e for e in {e["key"]: e for e in events}.values() if e["key"] not in known]
        fields = ("at", "model", "version", "alias", "action", "by", "trigger", "key")
        for event in new:
            detail = {k: v for k, v in event.items() if k not in fields and k not in ("run_id", "step_run_id")}
            con.execute(
                "INSERT INTO model_events (occurred_at, model, version, alias, action, actor, trigger, event_key, run_id, "
                "step_run_id, "
                "detail) VALUES (?::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    *(event.get(k) for k in fields),
                    event.get("run_id") or run_id,
                    event.get("step_run_id") or step_run_id,
                    json.dumps(detail, sort_keys=True, default=str),
                ],
            )
        return len(new)

    def model_events(self, model: str | None = None, limit: int | None = None) -> list[dict]:
        """Indexed model registry events, oldest first (of one model, or of all)."""
        query = (
            "SELECT occurred_at, model, version, alias, action, actor, trigger, run_id, step_run_id, detail, event_key "
            "FROM model_events"
        )
        args: list = []
        if model is not None:
            query += " WHERE model = ?"
            args.append(model)
        query += " ORDER BY occurred_at, event_key"
        if limit is not None:
            query += f" LIMIT {int(limit)}"

        def read(con) -> list[dict]:
            names = ("at", "model", "version", "alias", "action", "by", "trigger", "run_id", "step_run_id")
            found = []
            for row in con.execute(query, args).fetchall():
                event = dict(zip(names, row[:9], strict=True))
                event["at"] = iso(event["at"])
                found.append({**event, **json.loads(row[9] or "{}"), "key": row[10]})
            return found

        return self._cache.read(("model_events", model, limit), read)

    def time_step(self, step_run_id: str, started_at: datetime, ended_at: datetime) -> None:
        """Set when a recorded step run really started and ended (UTC): a cache hit recorded before its outputs
        were loaded, timed once they are."""
        with self._connect(write=True) as con:
            con.execute(
                "UPDATE step_runs SET started_at = ?, ended_at = ? WHERE id = ?", [started_at, ended_at, step_run_id]
            )

    def record_step(self, run_id: str, step: str, status: str, **kwargs: Any) -> str:
        """Record a step run that started and ended at once (``cached`` or ``skipped``); return its id.

        Keyword arguments: ``why``, ``cache_key``, ``cell_index``, ``inputs``, ``sources``, ``outputs``,
        ``key_parts``, ``cached_from``, ``error``, ``attempt`` (see :meth:`start_step`), ``started_at`` and
        ``ended_at`` (UTC; default: now).
        """
        return self.record_steps(run_id, [{"step": step, "status": status, **kwargs}])[0]

    _STEP_KEYS = frozenset(
        {
            "step",
            "status",
            "why",
            "cache_key",
            "cell_index",
            "inputs",
            "sources",
            "outputs",
            "key_parts",
            "cached_from",
            "error",
            "attempt",
            "started_at",
            "ended_at",
        }
    )

    def _check_steps(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            unknown = set(record) - self._STEP_KEYS
            if unknown:
                raise TypeError(f"record_steps() got unexpected keys {sorted(unknown)}")
            self._check_status(record["status"], STATUSES)

    def record_steps(self, run_id: str, records: list[dict[str, Any]]) -> list[str]:
        """Record several finished step runs of one run in one transaction (see :meth:`record_step`)."""
        self._check_steps(records)
        with self._connect(write=True) as con:
            if not con.execute("SELECT count(*) FROM runs WHERE id = ?", [run_id]).fetchall()[0][0]:
                raise NotFoundError(f"run {run_id} does not exist; create it with create_run() first")
            return self._insert_steps(con, run_id, records)

    def _insert_steps(self, con, run_id: str, records: list[dict[str, Any]]) -> list[str]:
        now = utcnow()
        n = con.execute("SELECT count(*) FROM step_runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
        ids = [f"{run_id}.{n + i + 1}" for i in range(len(records))]
        rows, refs, events = [], [], []
        for step_run_id, r in zip(ids, records, strict=True):
            parts = r.get("key_parts")
            rows.append(
                [
                    step_run_id,
                    run_id,
                    r["step"],
                    r["status"],
                    r.get("why"),
                    r.get("cache_key"),
                    r.get("cached_from"),
                    r.get("started_at") or now,
                    r.get("ended_at") or now,
                    r.get("error"),
                    r.get("cell_index"),
                    r.get("attempt", 1),
                    json.dumps(parts, sort_keys=True) if parts is not None else None,
                ]
            )
            out = "reuse" if r["status"] == "cached" else "out"
            sources = r.get("sources") or {}
            for direction, group in (("in", r.get("inputs") or {}), (out, r.get("outputs") or {})):
                for name, ref in group.items():
                    refs.append(ref)
                    source = sources.get(name) if direction == "in" else None
                    events.append((step_run_id, ref.hash, direction, name, source))
        # one statement, with seq numbers reserved first so that they follow the records' order
        if rows:
            seqs = sorted(
                r[0] for r in con.execute("SELECT nextval('step_run_seq') FROM range(?)", [len(rows)]).fetchall()
            )
            con.execute(
                "INSERT INTO step_runs (seq, id, run_id, step, status, why, cache_key, cached_from, started_at, "
                "ended_at, error, cell_index, attempt, key_parts) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows)),
                [v for seq, row in zip(seqs, rows, strict=True) for v in (seq, *row)],
            )
        self._record_artifacts(con, refs)
        self._insert_events(con, events)
        return ids

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        executed_notebook: ArtifactRef | None = None,
        model_events: list[dict] | None = None,
    ) -> None:
        """Record how a run ended (with the model registry events it did, see :meth:`record_model_events`); step
        runs still ``running`` take the run's status if it did not succeed."""
        self._check_status(status, RUN_STATUSES)
        with self._connect(write=True) as con:
            if executed_notebook is not None:
                self._record_artifacts(con, [executed_notebook])
            con.execute(
                "UPDATE runs SET status = ?, ended_at = ?, error = ?, "
                "executed_notebook = coalesce(?, executed_notebook) WHERE id = ?",
                [status, utcnow(), error, executed_notebook.hash if executed_notebook else None, run_id],
            )
            if status != "succeeded":
                con.execute(
                    "UPDATE step_runs SET status = ?, ended_at = ? WHERE run_id = ? AND status = 'running'",
                    [status, utcnow(), run_id],
                )
            self._insert_model_events(con, model_events, run_id, None)

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], *, step_run_id: str | None = None, step: int | None = None
    ) -> None:
        """Record metric values of a run (and optionally of one of its step runs)."""
        with self._connect(write=True) as con:
            self._insert_metrics(con, run_id, step_run_id, metrics, step)

    @staticmethod
    def _insert_metrics(con, run_id, step_run_id, metrics, step) -> None:
        now = utcnow()
        rows = []
        for name, value in metrics.items():
            try:
                rows.append([run_id, step_run_id, str(name), float(value), step, now])
            except (TypeError, ValueError):
                raise StoreError(
                    f"metric {name!r} of run {run_id} is {value!r}, not a number; log numbers as metrics"
                ) from None
        con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)

    # alerts and schedules ------------------------------------------------------------------------------------
    _ALERT_COLUMNS = (
        "id", "raised_at", "model", "version", "rule", "metric", "value", "action", "monitor_run", "action_run",
        "outcome",
    )  # fmt: skip
    _SCHEDULE_COLUMNS = (
        "name", "kind", "target", "cron", "on_data", "options", "created_at", "next_due", "data_state",
        "last_fired", "last_run", "last_status", "last_error",
    )  # fmt: skip

    def record_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Record alerts (dicts with the ``alerts`` table's columns) in one transaction."""
        if not alerts:
            return
        columns = self._ALERT_COLUMNS
        with self._connect(write=True) as con:
            con.execute(
                f"INSERT INTO alerts ({', '.join(columns)}) VALUES "
                + ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(alerts)),
                [a.get(c) for a in alerts for c in columns],
            )

    def update_alert(self, alert_id: str, *, action_run: str | None = None, outcome: str | None = None) -> None:
        """Record what an alert's action did: the run it started and its outcome."""
        with self._connect(write=True) as con:
            con.execute(
                "UPDATE alerts SET action_run = coalesce(?, action_run), outcome = coalesce(?, outcome) WHERE id = ?",
                [action_run, outcome, alert_id],
            )

    def alerts(self, model: str | None = None, limit: int | None = 50, monitor_run: str | None = None) -> list[dict]:
        """The latest alerts, newest first (of one model, or of one monitoring run)."""
        where, args = [], []
        for column, value in (("model", model), ("monitor_run", monitor_run)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        query = f"SELECT {', '.join(self._ALERT_COLUMNS)} FROM alerts"
        query += (" WHERE " + " AND ".join(where)) if where else ""
        query += " ORDER BY raised_at DESC, id DESC" + (" LIMIT ?" if limit is not None else "")
        args += [int(limit)] if limit is not None else []
        with self._connect() as con:
            rows = con.execute(query, args).fetchall()
        return [dict(zip(self._ALERT_COLUMNS, row, strict=True)) for row in rows]

    def add_schedule(self, record: dict[str, Any]) -> None:
        """Record a new schedule (a dict with the ``schedules`` table's columns; ``options`` a dict)."""
        columns = self._SCHEDULE_COLUMNS
        values = [json.dumps(record.get(c) or {}, sort_keys=True) if c == "options" else record.get(c) for c in columns]
        with self._connect(write=True) as con:
            if con.execute("SELECT count(*) FROM schedules WHERE name = ?", [record["name"]]).fetchall()[0][0]:
                raise StoreError(
                    f"a schedule named {record['name']!r} exists; remove it first or give --name another name"
                )
            con.execute(
                f"INSERT INTO schedules ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
            )

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule, by name."""
        with self._connect() as con:
            rows = con.execute(f"SELECT {', '.join(self._SCHEDULE_COLUMNS)} FROM schedules ORDER BY name").fetchall()
        out = []
        for row in rows:
            record = dict(zip(self._SCHEDULE_COLUMNS, row, strict=True))
            record["options"] = json.loads(record["options"]) if record["options"] else {}
            out.append(record)
        return out

    def update_schedule(self, name: str, **fields: Any) -> None:
        """Change fields of a schedule (``next_due``, ``data_state``, ``last_*``)."""
        unknown = set(fields) - set(self._SCHEDULE_COLUMNS[3:])
        if unknown:
            raise TypeError(f"update_schedule() got unexpected fields {sorted(unknown)}")
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [json.dumps(v, sort_keys=True) if k == "options" else v for k, v in fields.items()]
        with self._connect(write=True) as con:
            con.execute(f"UPDATE schedules SET {sets} WHERE name = ?", [*values, name])

    def remove_schedule(self, name: str) -> bool:
        """Remove a schedule; False when there was none of that name."""
        with self._connect(write=True) as con:
            found = con.execute("SELECT count(*) FROM schedules WHERE name = ?", [name]).fetchall()[0][0]
            con.execute("DELETE FROM schedules WHERE name = ?", [name])
        return bool(found)

    @staticmethod
    def _check_status(status: str, allowed: tuple[str, ...], what: str = "status") -> None:
        if status not in allowed:
            raise StoreError(f"{what} {status!r} is not one of {', '.join(allowed)}")

    # reads ---------------------------------------------------------------------------------------------------
    _RUN_COLUMNS = (
        "id, pipeline, status, kind, fired_by, notebook, notebook_hash, params, executor, trigger, started_at, "
        "ended_at, host, pid, git_commit, git_dirty, error, executed_notebook"
    )

    @staticmethod
    def _run_from_row(row) -> Run:
        (
            rid,
            pipeline,
            status,
            kind,
            fired_by,
            notebook,
            nb_hash,
            params,
            executor,
            trigger,
            started,
            ended,
            host,
            pid,
            commit,
            dirty,
            error,
            executed,
        ) = row
        return Run(
            id=rid,
            pipeline=pipeline,
            status=status,
            kind=kind,
            fired_by=fired_by,
            notebook=notebook,
            notebook_hash=nb_hash,
            params=json.loads(params) if params else {},
            executor=executor,
            trigger=trigger,
            started_at=started,
            ended_at=ended,
            host=host,
            pid=pid,
            git_commit=commit,
            git_dirty=dirty,
            error=error,
            executed_notebook=ArtifactRef(executed, "ipynb") if executed else None,
        )

    def list_runs(
        self,
        limit: int | None = 20,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        params: dict[str, Any] | None = None,
        kind: str | None = None,
        trigger: str | None = None,
        details: bool = False,
    ) -> list[Run]:
        """The latest runs, newest first: two queries, each run with its ``step_counts`` but not its step runs.

        With ``details`` each run is as :meth:`get_run` gives it (step runs with inputs and outputs, metrics, the
        executed notebook's size), read in a fixed number of queries whatever the number of runs.

        Args:
            limit: at most this many (None: all).
            status: only runs with this status.
            pipeline: only runs of this pipeline.
            params: only runs whose parameters have these values.
            kind: only runs of this kind (``pipeline``, ``build`` ...).
            trigger: only runs started by this trigger.
            details: also read each run's step runs, metrics and executed notebook.
        """
        where, args = [], []
        for column, value in (("kind", kind), ("trigger", trigger)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if status:
            where.append("status = ?")
            args.append(status)
        if pipeline:
            where.append("pipeline = ?")
            args.append(pipeline)
        for name, value in (params or {}).items():
            where.append("id IN (SELECT run_id FROM params WHERE name = ? AND value = ?::JSON)")
            args += [name, json.dumps(value, sort_keys=True, default=str)]
        query = f"SELECT {self._RUN_COLUMNS} FROM runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            query += " LIMIT ?"
            args.append(int(limit))
        if details:
            key = ("list_runs", query, tuple(args), True)
            return self._cache.read(key, lambda con: self._list_runs_detailed(con, query, args))
        rows, counts = self._cache.read(
            ("list_runs", query, tuple(args)), lambda con: self._list_run_rows(con, query, args), copy=False
        )
        records = [self._run_from_row(row) for row in rows]
        by_id = {r.id: r for r in records}
        for run_id, status, count in counts:
            by_id[run_id].step_counts[status] = count
        for record in records:
            record.detailed = False
        return records

    def _list_runs_detailed(self, con, query: str, args: list) -> list[Run]:
        records = [self._run_from_row(row) for row in con.execute(query, args).fetchall()]
        self._read_details(con, {r.id: r for r in records})
        return records

    @staticmethod
    def _list_run_rows(con, query: str, args: list) -> tuple[tuple, tuple]:
        """The rows of the runs and their ``(run id, status, count)`` of step runs (tuples: kept as they are)."""
        rows = tuple(con.execute(query, args).fetchall())
        if not rows:
            return rows, ()
        counts = con.execute(
            "SELECT run_id, status, count(*) FROM step_runs WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
            "GROUP BY run_id, status ORDER BY run_id, status",
            [[row[0] for row in rows]],
        ).fetchall()
        return rows, tuple(counts)

    def _read_details(self, con, by_id: dict[str, Run]) -> None:
        """Fill the step runs, step counts, metrics and executed notebooks of these runs: one query for each,
        whatever the number of runs."""
        if not by_id:
            return
        ids = list(by_id)
        for step_run in self._step_runs(con, "run_id IN (SELECT unnest(?::VARCHAR[]))", [ids]):
            run = by_id[step_run.run_id]
            run.step_runs.append(step_run)
            run.step_counts[step_run.status] = run.step_counts.get(step_run.status, 0) + 1
        for run_id, name, value in con.execute(
            "SELECT run_id, name, arg_max(value, logged_at) FROM metrics WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
            "GROUP BY run_id, name ORDER BY run_id, name",
            [ids],
        ).fetchall():
            by_id[run_id].metrics[name] = value
        executed = {r.executed_notebook.hash for r in by_id.values() if r.executed_notebook}
        if executed:
            found = {
                digest: (size, uri)
                for digest, size, uri in con.execute(
                    "SELECT hash, size, uri FROM artifacts WHERE hash IN (SELECT unnest(?::VARCHAR[]))",
                    [list(executed)],
                ).fetchall()
            }
            for run in by_id.values():
                if run.executed_notebook and run.executed_notebook.hash in found:
                    size, uri = found[run.executed_notebook.hash]
                    run.executed_notebook = ArtifactRef(
                        run.executed_notebook.hash, "ipynb", size or 0, "executed notebook", uri=uri or ""
                    )

    def resolve_run(self, run_id: str) -> str:
        """The full id for a run id, a unique prefix of one, or ``latest``."""
        return self._cache.read(("resolve_run", str(run_id)), lambda con: self._resolve_run(con, run_id))

    def _resolve_run(self, con, run_id: str) -> str:
        text = str(run_id).strip()
        if text == "latest":
            rows = con.execute("SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT 1").fetchall()
            if not rows:
                raise NotFoundError(f"no runs recorded in {self.path} yet; start one with `mlops-nb run NOTEBOOK`")
            return rows[0][0]
        if text and con.execute("SELECT id FROM runs WHERE id = ?", [text]).fetchall():
            return text  # a whole id: one index probe instead of a prefix scan of every run
        rows = (
            con.execute("SELECT id FROM runs WHERE starts_with(id, ?) ORDER BY id LIMIT 3", [text]).fetchall()
            if text
            else []
        )
        if not rows:
            raise NotFoundError(f"run {run_id!r} does not exist; list runs with `mlops-nb runs`")
        if len(rows) > 1 and rows[0][0] != text:
            raise NotFoundError(
                f"run id {run_id!r} is ambiguous ({', '.join(r[0] for r in rows[:2])}, ...); give more characters"
            )
        return rows[0][0]

    _STEP_COLUMNS = (
        "id, run_id, step, status, why, cache_key, cached_from, started_at, ended_at, error, cell_index, attempt, "
        "executed_notebook"
    )

    def _step_runs(self, con, where: str, args: list) -> list[StepRun]:
        return self._build_step_runs(*self._step_run_rows(con, where, args))

    def _step_run_rows(self, con, where: str, args: list) -> tuple[tuple, tuple]:
        """The rows of the step runs matching ``where`` and of their events (tuples: kept as they are)."""
        rows = tuple(
            con.execute(f"SELECT {self._STEP_COLUMNS} FROM step_runs WHERE {where} ORDER BY seq", args).fetchall()
        )
        if not rows:
            return rows, ()
        events = lookup(  # a few step runs (a cache look-up) by index probes, not a scan of every event
            con,
            "SELECT e.step_run_id, e.direction, e.name, e.source, a.hash, a.kind, a.size, a.summary, a.uri "
            "FROM events e JOIN artifacts a ON a.hash = e.artifact WHERE {match}",
            "e.step_run_id",
            [row[0] for row in rows],
        )
        return rows, tuple(events)

    @staticmethod
    def _build_step_runs(rows: tuple, events: tuple) -> list[StepRun]:
        step_runs = [StepRun(*row) for row in rows]
        by_id = {s.id: s for s in step_runs}
        for step_run_id, direction, name, source, digest, kind, size, summary, uri in events:
            ref = ArtifactRef(digest, kind, size or 0, name, summary or "", uri or "")
            step_run = by_id[step_run_id]
            (step_run.inputs if direction == "in" else step_run.outputs)[name] = ref
            if source is not None:
                step_run.sources[name] = source
        return step_runs

    def get_run(self, run_id: str) -> Run:
        """A run with its step runs (inputs and outputs included) and metrics.

        ``run_id`` may be a unique prefix or ``latest``. Raises :class:`NotFoundError` when there is none.
        """
        row, notebook, steps, metrics = self._cache.read(
            ("get_run", str(run_id)), lambda con: self._get_run_rows(con, run_id), copy=False
        )
        run = self._run_from_row(row)
        if run.executed_notebook and notebook:
            size, uri = notebook[0]
            run.executed_notebook = ArtifactRef(
                run.executed_notebook.hash, "ipynb", size or 0, "executed notebook", uri=uri
            )
        run.step_runs = self._build_step_runs(*steps)
        for step_run in run.step_runs:
            run.step_counts[step_run.status] = run.step_counts.get(step_run.status, 0) + 1
        for name, value in metrics:
            run.metrics[name] = value
        return run

    def _get_run_rows(self, con, run_id: str) -> tuple:
        """A run's row, its executed notebook's ``(size, uri)``, its step runs' and events' rows and its metrics'
        ``(name, latest value)`` (tuples: kept as they are)."""
        text = str(run_id).strip()
        rows = (
            []
            if text == "latest"
            else con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", [text]).fetchall()
        )
        if rows:  # a whole id: its row at once
            full, row = rows[0][0], rows[0]
        else:
            full = self._resolve_run(con, run_id)
            row = con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", [full]).fetchall()[0]
        executed = row[self._RUN_COLUMNS.split(", ").index("executed_notebook")]
        notebook = (
            tuple(con.execute("SELECT size, uri FROM artifacts WHERE hash = ?", [executed]).fetchall())
            if executed
            else ()
        )
        metrics = con.execute(
            "SELECT name, arg_max(value, logged_at) FROM metrics WHERE run_id = ? GROUP BY name ORDER BY name",
            [full],
        ).fetchall()
        return row, notebook, self._step_run_rows(con, "run_id = ?", [full]), tuple(metrics)

    def get_step_run(self, step_run_id: str) -> StepRun:
        """One step run with its inputs and outputs; ``RUN/STEP`` names the latest run of STEP in RUN."""

        def read(con) -> StepRun:
            return self._step_runs(con, "id = ?", [self._resolve_step_run(con, step_run_id)])[0]

        return self._cache.read(("get_step_run", str(step_run_id)), read)

    def _resolve_step_run(self, con, text: str) -> str:
        if "/" in text:
            run_part, step = text.split("/", 1)
            run_id = self._resolve_run(con, run_part)
            rows = con.execute(
                "SELECT id FROM step_runs WHERE run_id = ? AND step = ? ORDER BY seq DESC LIMIT 1", [run_id, step]
            ).fetchall()
        else:
            rows = con.execute("SELECT id FROM step_runs WHERE id = ?", [text]).fetchall()
        if not rows:
            raise NotFoundError(
                f"step run {text!r} does not exist; give RUN.N or RUN/STEP as `mlops-nb show RUN` lists them"
            )
        return rows[0][0]

    def cached_candidates(self, pipeline: str, runs: int = 20) -> dict[str, StepRun]:
        """Cache key -> the latest step run that succeeded with it in the latest ``runs`` runs of ``pipeline`` (or
        that a cache hit of those runs was cached from: re-runs with nothing changed keep their first run in
        reach), with its inputs and outputs: what a planner looks every step's key up in at once, before asking
        :meth:`find_cached` for a key that an older run or another pipeline may hold."""
        with self._connect() as con:
            ids = [
                row[0]
                for row in con.execute(
                    "WITH recent AS (SELECT id FROM runs WHERE pipeline = ? ORDER BY started_at DESC LIMIT ?) "
                    "SELECT arg_max(id, seq) FROM step_runs WHERE status = 'succeeded' AND cache_key IS NOT NULL "
                    "AND (run_id IN (SELECT id FROM recent) OR id IN (SELECT cached_from FROM step_runs "
                    "WHERE cached_from IS NOT NULL AND run_id IN (SELECT id FROM recent))) GROUP BY cache_key",
                    [pipeline, runs],
                ).fetchall()
            ]
            if not ids:
                return {}
            return {s.cache_key: s for s in self._step_runs(con, "id IN (SELECT unnest(?::VARCHAR[]))", [ids])}

    def find_cached(self, cache_key: str) -> StepRun | None:
        """The latest step run that succeeded with ``cache_key`` (its outputs are reusable), if any."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT id FROM step_runs WHERE cache_key = ? AND status = 'succeeded' ORDER BY seq DESC LIMIT 1",
                [cache_key],
            ).fetchall()
            return self._step_runs(con, "id = ?", [rows[0][0]])[0] if rows else None

    def latest_step_runs(self, pipeline: str) -> dict[str, StepRun]:
        """Each step of ``pipeline`` -> its latest step run in any run of it (the row alone: status, why, times,
        error, cell; no inputs or outputs): what a DAG coloured by last status shows. One statement, kept while
        the file is unchanged."""
        rows = self._cache.read(
            ("latest_step_runs", pipeline),
            lambda con: tuple(
                con.execute(
                    f"SELECT {', '.join('s.' + c.strip() for c in self._STEP_COLUMNS.split(','))} FROM step_runs s "
                    "JOIN runs r ON r.id = s.run_id WHERE r.pipeline = ? "
                    "QUALIFY row_number() OVER (PARTITION BY s.step ORDER BY s.seq DESC) = 1",
                    [pipeline],
                ).fetchall()
            ),
            copy=False,
        )
        return {row[2]: StepRun(*row) for row in rows}

    def latest_succeeded(self, pipeline: str, step: str) -> StepRun | None:
        """The latest step run of ``step`` in ``pipeline`` that succeeded (its outputs were computed then)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT s.id FROM step_runs s JOIN runs r ON r.id = s.run_id "
                "WHERE r.pipeline = ? AND s.step = ? AND s.status = 'succeeded' ORDER BY s.seq DESC LIMIT 1",
                [pipeline, step],
            ).fetchall()
            return self._step_runs(con, "id = ?", [rows[0][0]])[0] if rows else None

    def previous_step_run(self, pipeline: str, step: str, full: bool = True) -> tuple[StepRun, dict] | None:
        """The latest step run of ``step`` in any run of ``pipeline`` that recorded its key parts, with them.

        ``full=False`` reads its row alone (id, run, status, cache key: what deciding a step needs first; one
        statement on every step's path), without its inputs and outputs."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT s.id, s.key_parts, s.run_id, s.status, s.cache_key FROM step_runs s JOIN runs r "
                "ON r.id = s.run_id WHERE r.pipeline = ? AND s.step = ? AND s.key_parts IS NOT NULL "
                "AND s.status <> 'skipped' ORDER BY s.seq DESC LIMIT 1",
                [pipeline, step],
            ).fetchall()
            if not rows:
                return None
            step_run_id, parts, run_id, status, key = rows[0]
            if not full:
                return StepRun(step_run_id, run_id, step, status, cache_key=key), json.loads(parts)
            return self._step_runs(con, "id = ?", [step_run_id])[0], json.loads(parts)

    def lineage(
        self, node: str, direction: str = "both", depth: int | None = None, producer: str | None = None
    ) -> LineageGraph:
        """The lineage of a node: an artifact (hash or 6+ character prefix), a step run (``RUN.N`` or
        ``RUN/STEP``), or an output name (the latest artifact a step produced under that name, followed through
        that step run).

        Lineage is exact: each input event names the step run whose output was loaded, so when other notebooks
        or runs made an equal artifact, only the chain that was really followed is shown; such an artifact's
        node says how many other step runs also produced it.

        Args:
            node: what to start from.
            direction: ``up`` (what it came from), ``down`` (what came from it) or ``both``.
            depth: how many steps to follow (default: all).
            producer: for an artifact, the step run that made it (``RUN.N``): follow that one only.
        """
        if direction not in ("up", "down", "both"):
            raise StoreError(f"lineage direction {direction!r} must be up, down or both")
        max_hops = 2 * depth if depth is not None else 10_000

        def read(con) -> LineageGraph:
            kind, ident, pinned = self._resolve_node(con, str(node).strip())
            if producer is not None and kind == "artifact":
                pinned = self._resolve_step_run(con, producer)
            return lineage_graph(con, kind, ident, direction, max_hops, pinned)

        return self._cache.read(("lineage", str(node), direction, max_hops, producer), read)

    DATA_KINDS = frozenset({"external", "parquet", "series", "npy", "feature_view", "feature_segment"})
    """Artifact kinds that are data (what a model is trained on), not models or metrics."""

    def upstream_data(self, inputs: dict[str, ArtifactRef], sources: dict[str, str]) -> dict[str, str]:
        """Name -> hash of the data a step's inputs are made of: the inputs that are data themselves, and the data
        found upstream of each input through the step run that produced it (``sources``), raw files included."""
        found: dict[str, str] = {}
        for name, ref in inputs.items():
            if ref.kind in self.DATA_KINDS:
                found[name] = ref.hash
        for producer in dict.fromkeys(sources[n] for n in inputs if n in sources):
            # from the producing step run, whose inputs are recorded when it starts (a dag driver may not have
            # recorded its end, and so its outputs, yet)
            for node in self.lineage(producer, "up").upstream():
                if node.kind == "artifact" and node.attrs.get("artifact_kind") in self.DATA_KINDS:
                    found.setdefault(node.label.split(" (")[0], node.id)
        return dict(sorted(found.items()))

    def step_context(self, run_id: str, inputs: dict[str, ArtifactRef], sources: dict[str, str]) -> dict:
        """What a model registered in a step of ``run_id`` is tagged with: the run's ``pipeline``, ``notebook``,
        ``notebook_hash``, ``git_commit``, ``params``, ``metrics``, and the step's upstream ``data`` (see
        :meth:`upstream_data`), read on one connection."""
        with self.batch():
            run = self.get_run(run_id)
            data = self.upstream_data(inputs, sources)
        return {
            "pipeline": run.pipeline,
            "notebook": run.notebook,
            "notebook_hash": run.notebook_hash,
            "git_commit": run.git_commit,
            "params": run.params,
            "metrics": run.metrics,
            "data": data,
        }

    def resolve_node(self, node: str) -> tuple[str, str]:
        """``("artifact", hash)`` or ``("step_run", id)`` for a lineage node as people name it: an artifact hash or
        prefix, ``RUN.N``, ``RUN/STEP`` (``latest/train``), or an output name (its latest artifact)."""
        return self._cache.read(("resolve_node", str(node)), lambda con: self._resolve_node(con, str(node).strip())[:2])

    def _resolve_node(self, con, text: str) -> tuple[str, str, str | None]:
        """Kind, id and, for an output name, the step run that made it."""
        if text.startswith("models:/"):
            return "artifact", *self._model_version_node(con, text)
        if "/" in text or _STEP_RUN_ID.match(text):
            try:
                return "step_run", self._resolve_step_run(con, text), None
            except NotFoundError:
                named = self._latest_output(con, text) or self._latest_read(con, text)
                if named is None:
                    raise
                return "artifact", *named
        if len(text) >= 6 and all(c in "0123456789abcdef" for c in text.lower()):
            try:
                return "artifact", self._find_artifact_hash(con, text), None
            except NotFoundError:
                if self._latest_output(con, text) is None:
                    raise
        latest = self._latest_output(con, text)
        if latest is None:
            raise NotFoundError(
                f"no artifact, step run or output is named {text!r}; give an artifact hash (6+ hex characters), "
                "RUN.N, RUN/STEP (latest/train) or the name of a step's output (model)"
            )
        return "artifact", *latest

    @staticmethod
    def _model_version_node(con, uri: str) -> tuple[str, str | None]:
        """The artifact of a registered model version (``models:/NAME/VERSION``) and the step run that registered
        it."""
        rows = con.execute(
            "SELECT a.hash, (SELECT e.step_run_id FROM events e WHERE e.artifact = a.hash AND e.direction = 'out' "
            "LIMIT 1) FROM artifacts a WHERE a.kind = 'model_version' AND a.uri = ?",
            [uri],
        ).fetchall()
        if not rows:
            raise NotFoundError(
                f"{uri} was not registered by a step of this project (or does not exist); "
                "`mlops-nb models list` shows the versions, use models:/NAME/VERSION"
            )
        return rows[0][0], rows[0][1]

    @staticmethod
    def _latest_read(con, name: str) -> tuple[str, None] | None:
        """The latest file a step read under ``name`` (``--reads data/raw.csv``)."""
        rows = con.execute(
            "SELECT e.artifact FROM events e JOIN step_runs s ON s.id = e.step_run_id JOIN artifacts a "
            "ON a.hash = e.artifact WHERE e.name = ? AND e.direction = 'in' AND a.kind = 'external' "
            "ORDER BY s.seq DESC LIMIT 1",
            [name],
        ).fetchall()
        return (rows[0][0], None) if rows else None

    @staticmethod
    def _latest_output(con, name: str) -> tuple[str, str] | None:
        """The latest artifact a step run output under ``name``, and that step run."""
        rows = con.execute(
            "SELECT e.artifact, e.step_run_id FROM events e JOIN step_runs s ON s.id = e.step_run_id "
            "WHERE e.name = ? AND e.direction = 'out' ORDER BY s.seq DESC LIMIT 1",
            [name],
        ).fetchall()
        return (rows[0][0], rows[0][1]) if rows else None

    def _find_artifact_hash(self, con, text: str) -> str:
        if len(text) == 64:  # a whole hash: one index probe instead of a prefix scan of every artifact
            rows = con.execute("SELECT hash FROM artifacts WHERE hash = ?", [text.lower()]).fetchall()
            if rows:
                return rows[0][0]
        rows = con.execute("SELECT hash FROM artifacts WHERE starts_with(hash, ?) LIMIT 2", [text.lower()]).fetchall()
        if not rows:
            raise NotFoundError(f"no recorded artifact has hash {text!r}; `mlops-nb show RUN` lists a run's")
        if len(rows) > 1:
            raise NotFoundError(f"artifact prefix {text!r} is ambiguous; give more characters")
        return rows[0][0]
