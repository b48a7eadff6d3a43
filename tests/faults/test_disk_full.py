"""Disk full: a project on a small tmpfs, filled to the last few hundred KB, then an artifact write, a feature
ingest and a prediction-log flush. Each must fail with one line that says the disk is full and where, leave nothing
half-written (no temporary or partial file, every store verifies, the row counts are those of before), and succeed
once space is freed (the log writer keeps its rows and writes them then).

The scenario runs in a child process in its own mount namespace (``unshare``), where a tmpfs of a few MB is
mounted over a folder of the test's; it reports in JSON to the parent, which checks the promises. The tmpfs
vanishes with the child.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
DISK_MB = 24


def _fill(folder: Path, leave: int) -> Path:
    """Write a ballast file until the disk is full, then give back ``leave`` bytes."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as handle:
        block = b"\0" * 2**16
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError:
            pass
    size = ballast.stat().st_size
    os.truncate(ballast, max(0, size - leave))
    return ballast


def _snapshot(project) -> dict:
    """What must not change when a write fails: store row counts and every file under the home with its size."""
    counts = {"runs": len(project.metadata.list_runs(None))}
    counts["segments"] = len(project.features.describe("activity")["segments"])
    files = {}
    for path in sorted(project.home.rglob("*")):
        if path.is_file() and path.name != "ballast" and not path.name.endswith((".wal", ".lock")):
            if ".duckdb" in path.name or path.suffix == ".db":
                continue  # store files change size on open (checkpoints); their row counts are compared instead
            files[str(path.relative_to(project.home))] = path.stat().st_size
    counts["files"] = files
    return counts


def _attempt(action) -> dict:
    from mlops_nb.exceptions import MlopsError

    try:
        action()
    except Exception as exc:  # noqa: BLE001 - what reaches the user is what this test checks
        return {"ok": False, "ours": isinstance(exc, MlopsError), "type": type(exc).__name__, "message": str(exc)}
    return {"ok": True}


def scenario(root: str) -> None:
    """Run in the child: the three writes on a full disk, then again with space freed; report to root/report.json."""
    import numpy as np
    import pandas as pd

    from mlops_nb.project import Project
    from mlops_nb.serving.verify import verify

    disk = Path(root) / "disk"
    home = disk / "project"
    project = Project(home).init()
    fs = project.features
    fs.register_entity("customer", {"customer_id": "int64"})
    fs.register_view("activity", "customer", {"spend": "float64"}, timestamp="ts")
    fs.ingest("activity", pd.DataFrame({"customer_id": range(100), "spend": 1.0,
                                        "ts": pd.Timestamp("2024-01-01", tz="UTC")}))  # fmt: skip
    project.artifacts.put({"small": 1}, name="small")
    run_id = project.metadata.create_run("before", params={})
    project.metadata.finish_run(run_id, "succeeded")
    writer = project.predictions.writer(flush_seconds=3600, flush_rows=10**9)
    rng = np.random.default_rng(0)
    big = pd.DataFrame(rng.random((300_000, 2)), columns=["a", "b"])  # ~4.8 MB of Parquet: does not fit
    batch = pd.DataFrame({"customer_id": rng.integers(0, 10**6, 300_000), "spend": rng.random(300_000),
                          "ts": pd.Timestamp("2024-02-01", tz="UTC")})  # fmt: skip
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    rows = [{"ts": now, "request_id": os.urandom(16).hex(), "row": 0, "model": "m", "version": 1, "prediction": rng.random(),
             "status": 200, "latency_ms": 1.0} for _ in range(30_000)]  # fmt: skip
    before = _snapshot(project)
    ballast = _fill(disk, leave=256 * 1024)
    report = {"artifact": _attempt(lambda: project.artifacts.put(big, name="big"))}
    report["ingest"] = _attempt(lambda: fs.ingest("activity", batch))
    writer.append(rows)
    report["log flush"] = _attempt(writer.flush)
    report["log pending"] = writer.pending
    after = _snapshot(project)
    report["unchanged"] = before == after
    report["changes"] = {k: (before[k], after[k]) for k in before if before[k] != after[k] and k != "files"}
    report["new files"] = sorted(set(after["files"]) - set(before["files"]))
    report["grown files"] = sorted(k for k in before["files"] if after["files"].get(k) != before["files"][k])
    report["problems (full)"] = list(verify(project).problems)
    ballast.unlink()
    report["artifact again"] = _attempt(lambda: project.artifacts.put(big, name="big"))
    report["ingest again"] = _attempt(lambda: fs.ingest("activity", batch))
    report["log flush again"] = _attempt(writer.flush)
    writer.close()
    report["log rows"] = len(project.predictions.read(labels=False))
    report["problems (freed)"] = list(verify(project).problems)
    (Path(root) / "report.json").write_text(json.dumps(report, default=str))


if __name__ == "__main__":
    root = sys.argv[1]
    disk = Path(root) / "disk"
    disk.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)], check=True)
    scenario(root)
    sys.exit(0)


# The parent -----------------------------------------------------------------------------------------------------------
import pytest  # noqa: E402

pytestmark = pytest.mark.slow


def _unshare() -> list[str] | None:
    """A command prefix that runs a child in its own mount namespace where it may mount a tmpfs, or None."""
    tool = shutil.which("unshare")
    if tool is None:
        return None
    for prefix in ([tool, "--mount"], [tool, "--user", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "true"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def test_a_full_disk_gives_one_line_and_leaves_nothing_half_written(tmp_path):
    prefix = _unshare()
    if prefix is None:
        pytest.skip("no mount namespace here (unshare --mount is refused): cannot make a small disk to fill")
    done = subprocess.run([*prefix, sys.executable, str(HERE), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    print("\n| write on a full disk | what the user sees |\n|---|---|")
    for what in ("artifact", "ingest", "log flush"):
        print(f"| {what} | {report[what].get('message', 'no error')[:150]} |")
    for what in ("artifact", "ingest", "log flush"):
        seen = report[what]
        assert not seen["ok"], f"{what} on a full disk did not fail"
        message = seen["message"]
        assert seen["ours"], (what, seen)
        assert "\n" not in message and len(message) <= 300, (what, message)
        assert "disk is full" in message, (what, message)
    assert report["unchanged"], (report["changes"], report["new files"], report["grown files"])
    assert report["problems (full)"] == []
    assert report["log pending"] == 30_000  # kept for the next attempt
    for what in ("artifact again", "ingest again", "log flush again"):
        assert report[what]["ok"], (what, report[what])
    assert report["log rows"] == 30_000
    assert report["problems (freed)"] == []
