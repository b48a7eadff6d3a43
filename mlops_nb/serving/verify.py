"""``mlops-nb verify``: every stored thing of a project checked against what was recorded about it.

It sits with serving because that is the highest layer that stores files (app bundles); everything below it
(artifacts, the metadata and feature stores, the registry's SQLite) is checked through its own store:

* every file of the artifact store hashes to its name, and has the size the metadata store recorded;
* every artifact the metadata store records (of a kind the artifact store holds) is there;
* every feature segment and ties file hashes to what the catalog recorded, and so does every online table;
* every app bundle under ``.mlops/builds/`` still hashes to its manifest;
* both DuckDB files open and every table reads; MLflow's SQLite passes ``PRAGMA integrity_check``.

It reads everything and writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.hashing import sha256_file
from ..exceptions import MlopsError


@dataclass
class Verification:
    """What :func:`verify` checked and what it found.

    Attributes:
        checked: what -> how many were checked (``artifacts``, ``recorded artifacts``, ``feature segments``,
            ``online tables``, ``bundles``, ``databases``).
        problems: one line per damaged, missing or unreadable thing, naming it (empty: all is whole).
    """

    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing was found wrong."""
        return not self.problems

    def count(self, what: str, n: int = 1) -> None:
        """Count ``n`` more things of kind ``what`` as checked."""
        self.checked[what] = self.checked.get(what, 0) + n


def _artifacts(project, report: Verification, progress) -> None:
    from ..store.artifacts import serializers

    store = project.artifacts
    recorded: dict[str, tuple[str, int]] = {}
    with project.metadata._connect() as con:
        for digest, kind, size in con.execute("SELECT hash, kind, size FROM artifacts").fetchall():
            try:
                serializers.by_kind(kind)
            except MlopsError:  # held by another store (a feature view, a model version) or a --reads file
                continue
            recorded[digest] = (kind, size or 0)
    if not store._local:
        report.problems.append(f"the artifact store {store.uri_root} is remote: its files were not hashed")
        return
    root, seen = store.root, set()
    for folder in sorted(os.scandir(root), key=lambda e: e.name) if os.path.isdir(root) else []:
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder.path), key=lambda e: e.name):
            if entry.name.startswith(".tmp-") or "." not in entry.name:
                continue
            digest = entry.name.split(".", 1)[0]
            seen.add(digest)
            report.count("artifacts")
            progress(1)
            actual = sha256_file(entry.path)
            if actual != digest:
                report.problems.append(f"artifact {entry.path} is damaged: its sha256 is {actual[:12]}")
            elif digest in recorded and recorded[digest][1] and entry.stat().st_size != recorded[digest][1]:
                report.problems.append(f"artifact {entry.path} has {entry.stat().st_size} bytes, the metadata "
                                       f"store recorded {recorded[digest][1]}")  # fmt: skip
    last_gc = project.mlops_dir / "gc.json"
    if last_gc.exists():  # what a gc removed is gone by design: only what it keeps must be there
        import json
        from datetime import datetime

        from .gc import referenced

        try:
            cutoff = datetime.fromisoformat(json.loads(last_gc.read_text())["cutoff"])
            keep = referenced(project, cutoff)
            recorded = {h: v for h, v in recorded.items() if h in keep}
        except (OSError, ValueError, KeyError, TypeError):
            report.problems.append(f"{last_gc} (what the last gc kept) cannot be read; run `mlops-nb gc` again")
    for digest, (kind, _) in sorted(recorded.items()):
        report.count("recorded artifacts")
        if digest not in seen:
            report.problems.append(f"artifact {digest[:12]} ({kind}) is recorded but missing from {root}")


def _features(project, report: Verification, progress) -> None:
    from ..store.features.segments import check_segment_file

    if not project.features_path.exists():
        return
    fs = project.features
    with fs.db.connect() as con:
        segments = con.execute(
            "SELECT view, seq, path, hash, size, ties_path, ties_hash FROM segments ORDER BY view, seq"
        ).fetchall()
        online = con.execute("SELECT view, path, hash FROM online ORDER BY view").fetchall()
    for view, seq, path, digest, size, ties_path, ties_hash in segments:
        report.count("feature segments")
        progress(1)
        for file, file_hash, file_size in ((path, digest, size), (ties_path, ties_hash, None)):
            if file is None:
                continue
            try:
                check_segment_file(view, seq, fs.root / file, file_hash, file_size, full=True)
            except MlopsError as exc:
                report.problems.append(exc.message.split("; restore")[0])
    for view, path, digest in online:
        report.count("online tables")
        file = fs.root / path
        if not file.is_file():
            report.problems.append(f"feature view {view!r} online table {file} is missing")
        elif sha256_file(file) != digest:
            report.problems.append(f"feature view {view!r} online table {file} is damaged (its sha256 is not the "
                                   "catalog's); materialize the view again")  # fmt: skip


def _bundles(project, report: Verification, progress) -> None:
    import json

    from .manifest import verify_files

    builds = project.builds_dir
    for folder in sorted(builds.iterdir()) if builds.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        report.count("bundles")
        progress(1)
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report.problems.append(f"bundle {folder} has no readable manifest.json; build it again")
            continue
        for problem in verify_files(folder, manifest):
            report.problems.append(f"bundle {folder}: {problem}")


def _databases(project, report: Verification) -> None:
    import sqlite3

    from ..store.dbfile import DuckDBFile

    for path, what in ((project.metadata_path, "metadata store"), (project.features_path, "feature store catalog")):
        if not path.exists():
            continue
        report.count("databases")
        try:
            with DuckDBFile(path, project.settings.lock_timeout, what).connect() as con:
                for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
                    con.execute(f'SELECT count(*) FROM "{table}"').fetchall()
        except MlopsError as exc:
            report.problems.append(exc.message)
        except Exception as exc:  # noqa: BLE001 - a damaged DuckDB file fails in its own ways: named, not raised
            report.problems.append(f"the {what} {path} cannot be read: {str(exc).splitlines()[0][:160]}")
    if project.mlflow_db.exists():
        report.count("databases")
        try:
            con = sqlite3.connect(f"file:{project.mlflow_db}?mode=ro", uri=True)
            try:
                said = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
            finally:
                con.close()
        except sqlite3.Error as exc:
            said = [str(exc)]
        if said != ["ok"]:
            report.problems.append(f"the model registry's database {project.mlflow_db} is damaged: {said[0][:160]}")


def _total(project) -> int:
    """How many files :func:`verify` will hash (for its progress bar): a listing, no reading."""
    root, n = project.artifacts.root, 0
    if project.artifacts._local and os.path.isdir(root):
        n += sum(len(os.listdir(e.path)) for e in os.scandir(root) if e.is_dir())
    if project.features_path.exists():
        with project.features.db.connect() as con:
            n += con.execute("SELECT count(*) FROM segments").fetchone()[0]
    if project.builds_dir.is_dir():
        n += sum(1 for e in project.builds_dir.iterdir() if e.is_dir())
    return n


def verify(project=None, progress: bool = False) -> Verification:
    """Check every stored thing of ``project`` (default: the one found from the current folder) against what
    was recorded about it, reading every byte; write nothing. ``progress``: a bar over the files hashed."""
    from ..core import progress as bars
    from ..project import Project

    project = project or Project.discover(Path.cwd())
    report = Verification()
    _databases(project, report)
    with bars.start(_total(project) if progress else 0, "verify", "file", enabled=progress) as bar:
        _artifacts(project, report, bar.advance)
        _features(project, report, bar.advance)
        _bundles(project, report, bar.advance)
    return report
