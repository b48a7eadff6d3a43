"""``mlops-nb gc``: free the space of stored things nothing kept refers to.

Kept are: every run that is running, that started within ``older_than``, and the latest succeeded run of each
pipeline (so that its cache holds); every version of every registered model; every app bundle. What they
reference stays: the artifacts their steps read and wrote and their executed notebooks, each version's model,
each bundle's model. Removed, when older than the grace period (by file time, so a run writing its outputs
right now, not yet recorded, is safe):

* artifact files no kept thing references (their records stay, as history: ``show`` says they are gone, and a
  cache hit on them is refused, so the step runs again);
* files under the feature store that its catalog does not list (a killed ingest's leftovers);
* prediction-log days older than ``older_than``;
* temporary files of killed writers.

Feature segments the catalog lists are never removed: they are the views' data. Nothing is removed with
``dry_run``; the report says what would be. Runs' records are never removed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..core.clock import parse_duration
from ..core.files import fsync_rename
from ..exceptions import ConfigError

GRACE = timedelta(hours=1)


@dataclass
class Collection:
    """What :func:`collect` removed (or, with ``dry_run``, would remove).

    Attributes:
        removed: what -> how many (``artifacts``, ``feature files``, ``prediction days``, ``temporary files``).
        freed: bytes freed.
        kept: artifacts kept because something kept references them.
        dry_run: whether nothing was removed.
    """

    removed: dict[str, int] = field(default_factory=dict)
    freed: int = 0
    kept: int = 0
    dry_run: bool = False

    def count(self, what: str, size: int) -> None:
        """One more ``what`` removed, of ``size`` bytes."""
        self.removed[what] = self.removed.get(what, 0) + 1
        self.freed += size


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` (or a number of days) as a timedelta; anything else is a ConfigError."""
    return parse_duration(text, "--older-than", error=ConfigError, bare_unit="d", zero=True)


def referenced(project, cutoff: datetime) -> set[str]:
    """The hashes of the artifacts kept things reference (see the module's docstring); ``cutoff`` is naive UTC."""
    keep: set[str] = set()
    with project.metadata._connect() as con:
        runs = con.execute(
            "SELECT id FROM runs WHERE status = 'running' OR started_at >= ? OR id IN ("
            "SELECT arg_max(id, started_at) FROM runs WHERE status = 'succeeded' GROUP BY pipeline, kind)",
            [cutoff],
        ).fetchall()
        ids = [r[0] for r in runs]
        if ids:
            keep.update(
                h for (h,) in con.execute(
                    "SELECT DISTINCT e.artifact FROM events e JOIN step_runs s ON s.id = e.step_run_id "
                    "WHERE s.run_id IN (SELECT unnest(?::VARCHAR[]))", [ids]
                ).fetchall()
            )  # fmt: skip
            keep.update(
                h for (h,) in con.execute(
                    "SELECT executed_notebook FROM runs WHERE executed_notebook IS NOT NULL "
                    "AND id IN (SELECT unnest(?::VARCHAR[]))", [ids]
                ).fetchall()
            )  # fmt: skip
    if project.mlflow_db.exists():
        for model in project.registry.models():
            keep.update(v.model_hash for v in project.registry.versions(model["name"]) if v.model_hash)
    if project.builds_dir.is_dir():
        for manifest in project.builds_dir.glob("*/manifest.json"):
            try:
                keep.add(json.loads(manifest.read_text(encoding="utf-8"))["model"]["hash"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # an unreadable bundle is verify's to name; it keeps nothing
    return keep


def _remove(path: str, report: Collection, what: str, old: float) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if st.st_mtime > old:
        return  # within the grace period: perhaps being written, or about to be recorded
    if not report.dry_run:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
    report.count(what, st.st_size)


def collect(project=None, older_than: timedelta = timedelta(days=30), dry_run: bool = False,
            grace: timedelta = GRACE) -> Collection:  # fmt: skip
    """Remove what nothing kept references (see the module's docstring) and return what was (or, with
    ``dry_run``, would be) removed. Safe while runs are in progress: files younger than ``grace`` stay."""
    from ..project import Project
    from ..store.predictions import PredictionLog

    project = project or Project.discover(Path.cwd())
    now = datetime.now(UTC)
    report = Collection(dry_run=dry_run)
    old = time.time() - grace.total_seconds()
    cutoff = (now - older_than).replace(tzinfo=None)
    keep = referenced(project, cutoff)
    if not dry_run:  # verify then expects only what this gc kept
        tmp = project.mlops_dir / f".gc.json.{os.getpid()}"
        tmp.write_text(json.dumps({"cutoff": cutoff.isoformat(), "at": now.isoformat()}))
        fsync_rename(tmp, project.mlops_dir / "gc.json")
    root = project.artifacts.root
    if project.artifacts._local and os.path.isdir(root):
        for folder in os.scandir(root):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder.path):
                if entry.name.startswith(".tmp-"):
                    _remove(entry.path, report, "temporary files", old)
                elif entry.name.split(".", 1)[0] in keep:
                    report.kept += 1
                else:
                    _remove(entry.path, report, "artifacts", old)
    features_root, listed = project.mlops_dir / "features", set()
    if project.features_path.exists():  # else: no catalog lists anything (and none is created)
        fs = project.features
        features_root = fs.root
        with fs.db.connect() as con:
            listed = {str(fs.root / p) for (p,) in con.execute(
                "SELECT path FROM segments UNION SELECT ties_path FROM segments WHERE ties_path IS NOT NULL "
                "UNION SELECT path FROM online"
            ).fetchall()}  # fmt: skip
    if features_root.is_dir():
        for path in features_root.rglob("*.parquet"):
            if str(path) not in listed:
                what = "temporary files" if path.name.startswith(".tmp-") else "feature files"
                _remove(str(path), report, what, old)
    log = PredictionLog(project.predictions_dir)
    day_cutoff = (now - max(older_than, grace)).strftime("%Y-%m-%d")
    with log._lock():
        for day in sorted(p for p in project.predictions_dir.glob("????-??-??") if p.is_dir()):
            if day.name >= day_cutoff:
                continue
            files = list(day.glob("*.parquet"))
            report.count("prediction days", sum(f.stat().st_size for f in files))
            if not dry_run:
                for f in files:
                    f.unlink()
                try:
                    day.rmdir()
                except OSError:
                    pass
    return report
