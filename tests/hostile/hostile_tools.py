"""What the hostile-input suites check after each input: one clear error line, and every store as it was."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from contextlib import closing
from pathlib import Path

# A raw library or Python exception named in what the user reads: ours say what is wrong in words.
RAW = re.compile(r"\b(Traceback|_duckdb|duckdb\.|sqlalchemy|mlflow\.exceptions|\w+Error\b|\w+Exception\b)")
PROGRESS = re.compile(r"^.*?\d+%\|[^|]*\|[^\]]*\]")  # a tqdm bar: "name:  50%|█████     | 1/2 [00:00<..]"
USAGE_LINES = ("Usage: ", "Try '")  # click's hint above a usage error's line
SKIPPED_FILES = (".lock",)  # lock files are touched by every opener


def one_error_line(output: str, exit_code: int, exception: BaseException | None) -> str:
    """The one error line of a refused command (``Error: ...``), after checking that it is the only thing said
    besides click's usage hint, at most 300 characters, with no traceback or raw exception name."""
    assert exception is None or isinstance(exception, SystemExit), (
        f"an exception escaped: {type(exception).__name__}: {exception}\n{output}"
    )
    assert exit_code != 0, f"accepted (exit 0): {output[-500:]}"
    # a progress bar (tqdm, on stderr) redraws itself with \r: what the terminal keeps is what follows each \r
    segments = [seg for line in output.split("\n") for seg in line.split("\r")]
    lines = [PROGRESS.sub("", seg).strip() for seg in segments]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith("Error: ")]
    others = [line for line in lines if not line.startswith(("Error: ", *USAGE_LINES))]
    assert len(errors) == 1 and not others, f"not one error line:\n{output[-1500:]}"
    line = errors[0]
    assert len(line) <= 300, f"{len(line)} characters: {line}"
    assert not RAW.search(line), f"a raw exception reaches the user: {line}"
    return line


def fingerprint(project) -> dict:
    """Row counts of every table of the project's stores (both DuckDB files, MLflow's SQLite) and the sha256 of
    every file under ``.mlops/`` but lock files."""
    import duckdb

    found: dict = {}
    for path in (project.metadata_path, project.features_path):
        if path.exists():
            with closing(duckdb.connect(str(path), read_only=True)) as con:
                tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
                for table in tables:
                    found[f"{path.name}:{table}"] = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    if project.mlflow_db.exists():
        with closing(sqlite3.connect(f"file:{project.mlflow_db}?mode=ro", uri=True)) as con:
            tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
            for table in tables:
                found[f"mlflow:{table}"] = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    for path in sorted(Path(project.home, ".mlops").rglob("*")):
        if path.is_file() and not path.name.endswith(SKIPPED_FILES):
            found[str(path.relative_to(project.home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
