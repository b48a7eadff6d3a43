"""A rollout as a recorded run of kind ``deploy``, written by a short-lived child of the supervisor.

The supervisor lives as long as its deployment and stays small (aiohttp, ~40 MB resident): the metadata store's
DuckDB (~55 MB resident once opened) is loaded by ``python -m mlops_nb.serving.record`` for the one write and
given back when it exits. The rollout (what the supervisor did) arrives as JSON on stdin; the run id is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..exceptions import MlopsError
from .manifest import bundle_node

PARAMS = ("name", "version", "bundle", "previous", "outcome", "url", "canary")


def record_rollout(project, spec: dict[str, Any], result: dict[str, Any]) -> str:
    """Record the rollout of ``spec`` (version, bundle, path, trigger, fired_by, build_id) that ended as
    ``result`` (outcome, reason, started, timings, ...) as a run of kind ``deploy`` whose step reads the bundle;
    return its id."""
    ref = bundle_node(spec["bundle"], result["name"], spec["version"], Path(spec["path"]))
    status = "succeeded" if result["outcome"] in ("deployed", "unchanged") else "failed"
    began = datetime.fromtimestamp(result["started"], UTC).replace(tzinfo=None)
    params = {k: result.get(k) for k in PARAMS}
    params["timings"] = result.get("timings")
    params["build_id"] = spec.get("build_id")
    step = {"step": "deploy", "status": status, "inputs": {"bundle": ref}, "error": result.get("reason"),
            "started_at": began}  # fmt: skip
    return project.metadata.record_run(
        kind="deploy",
        status=status,
        trigger=spec.get("trigger", "api"),
        fired_by=spec.get("fired_by"),
        params=params,
        error=result.get("reason"),
        started_at=began,
        steps=[step],
    )


def main(argv: list[str] | None = None) -> int:
    """Record one rollout read as ``{"spec": ..., "result": ...}`` from stdin; print the run id (exit 1 and one
    line on stderr when it cannot be recorded)."""
    parser = argparse.ArgumentParser(prog="python -m mlops_nb.serving.record", description=main.__doc__)
    parser.add_argument("--home", required=True, help="the project home")
    args = parser.parse_args(argv)
    from ..project import Project

    try:
        rollout = json.load(sys.stdin)
        print(record_rollout(Project(args.home), rollout["spec"], rollout["result"]))
    except MlopsError as exc:
        print(f"the deploy run was not recorded: {exc}", file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"the deploy run was not recorded: the rollout record has no {exc.args[0]!r}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, AttributeError) as exc:
        print(f"the deploy run was not recorded: the rollout record is not a JSON object with spec and result "
              f"as the supervisor writes them ({str(exc)[:120]})", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
