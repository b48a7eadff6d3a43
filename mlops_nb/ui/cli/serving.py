"""``mlops-nb build | serve | score | labels | deploy``: thin commands over :mod:`mlops_nb.serving`.

Errors are :class:`~mlops_nb.exceptions.MlopsError`, which the main command group prints as one line (exit status 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..format import echo_json, table
from .params import seconds_or_zero


def _project(ctx: click.Context):
    from ...project import Project

    return Project((ctx.obj or {}).get("home"))


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command()
@click.argument("model")
@click.option("--feature", "features", multiple=True, help="An online feature (VIEW:FEATURE or VIEW:*) a request may "
              "leave out and give the entity key of instead; repeat it.")  # fmt: skip
@click.option("--trigger", default="cli", hidden=True, help="What started the build (watch: a supervisor).")
@_json_option
@click.pass_context
def build(ctx: click.Context, model: str, features: tuple[str, ...], trigger: str, as_json: bool) -> None:
    """Build the app bundle of a registered model version (or reuse the bundle of the same model, code and
    requirements).

    MODEL is NAME@ALIAS (a bare name: NAME@champion) or NAME/VERSION. The bundle is a folder under .mlops/builds/
    with the model, the scoring app, pinned requirements and a Dockerfile.

    Example: mlops-nb build churn@champion
    """
    from ...serving import build as build_bundle

    built = build_bundle(model, features=list(features) or None, project=_project(ctx), trigger=trigger,
                         progress=not as_json)  # fmt: skip
    if as_json:
        echo_json(built.to_dict())
        return
    click.echo(built.line())
    click.echo(f"  serve it:  mlops-nb serve {built.short}")
    click.echo(f"  image:     docker build -t {built.model}:v{built.version} {built.path}")


@click.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--no-log", is_flag=True, help="Do not write the prediction log.")
@click.option("--max-body", default=10 * 1024 * 1024, show_default=True, type=click.IntRange(1),
              help="Largest request body in bytes (larger: 413).")  # fmt: skip
@click.pass_context
def serve(ctx: click.Context, model: str, host: str, port: int, workers: int, no_log: bool, max_body: int) -> None:
    """Serve a model with MLflow's scoring protocol (POST /invocations; GET /ping /health /version /metrics),
    logging every prediction under .mlops/predictions/.

    MODEL is an app bundle (its folder or hash) or a registered model as NAME@ALIAS or NAME/VERSION (built first).
    Stop it with Ctrl-C or SIGTERM: the prediction log is flushed.

    Example: mlops-nb serve churn@champion --port 8080
    """
    from ...serving import bundle_for
    from ...serving.router import check_listen

    check_listen(host)  # before the build: a bad address changes no store (a port in use: the server says so)
    project = _project(ctx)
    built = bundle_for(model, project=project, trigger="cli")
    alias = model.split("@", 1)[1] if "@" in model else ""
    command = [sys.executable, str(built.path / "app" / "serve.py"), str(built.path), "--host", host, "--port",
               str(port), "--workers", str(workers), "--alias", alias,
               "--features", str(project.mlops_dir / "features"), "--max-body", str(max_body)]  # fmt: skip
    if not no_log:
        command += ["--predictions", str(project.predictions_dir)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)  # the server is this process: signals reach it directly


@click.command()
@click.argument("model")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the scored rows (.parquet or .csv).")  # fmt: skip
@click.option("--batch-size", default=10_000, show_default=True, type=click.IntRange(1), help="Rows per batch.")
@_json_option
@click.pass_context
def score(ctx: click.Context, model: str, data: Path, output: Path, batch_size: int, as_json: bool) -> None:
    """Score a .parquet or .csv file with a model's app bundle and write predictions next to its columns,
    recorded as a run with lineage from the output back to the model version.

    Example: mlops-nb score churn@champion customers.parquet -o scored.parquet
    """
    from ...serving import score as score_file

    result = score_file(model, data, output, batch_size=batch_size, project=_project(ctx), trigger="cli",
                        progress=not as_json)  # fmt: skip
    if as_json:
        echo_json(result)
    else:
        click.echo(f"scored {result['rows']} rows with {result['model']} v{result['version']} -> {result['output']} "
                   f"(run {result['run_id']})")  # fmt: skip


@click.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--compact", is_flag=True, help="Merge each day's log segments and drop days past the retention.")
@_json_option
@click.pass_context
def labels(ctx: click.Context, file: Path | None, compact: bool, as_json: bool) -> None:
    """Attach ground truth to logged predictions from a CSV or Parquet FILE with columns request_id and label
    (and row, for requests of several rows).

    Example: mlops-nb labels truth.csv
    """
    from ...exceptions import ServingError
    from ...serving import labels_from_file

    project = _project(ctx)
    if file is None and not compact:
        raise ServingError("give a FILE of request_id,label rows, or --compact")
    result: dict = {}
    if file is not None:
        result["attached"] = labels_from_file(file, project=project)
    if compact:
        result.update(project.predictions.compact())
    if as_json:
        echo_json(result)
        return
    if "attached" in result:
        click.echo(f"attached {result['attached']} labels")
    if compact:
        click.echo(f"compacted: {result['merged']} segments merged, {result['removed']} old days removed, "
                   f"{result['rows']} rows kept")  # fmt: skip


@click.command()
@click.argument("model", required=False)
@click.option("--port", type=click.IntRange(1, 65535), help="The stable address' port (default 8080).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--canary", type=float, help="Send this percentage of traffic to the new version for the watch "
              "window before switching.")  # fmt: skip
@click.option(
    "--window",
    type=float,
    callback=seconds_or_zero,
    help="Seconds to watch a new version before the old one stops (default 2).",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes per server."
)
@click.option("--watch", is_flag=True, help="Follow the alias: roll out every version it moves to.")
@click.option("--replace", is_flag=True, help="One scoring server at a time (a small machine): stop the old one "
              "before starting the new one, instead of blue/green. Set when the deployment starts.")  # fmt: skip
@click.option("--status", "show_status", is_flag=True, help="Show the live deployments (of MODEL, or all).")
@click.option("--rollback", "do_rollback", is_flag=True, help="Serve the previous version again (pinned until the "
              "alias moves).")  # fmt: skip
@click.option("--stop", "do_stop", is_flag=True, help="Drain and stop the deployment.")
@_json_option
@click.pass_context
def deploy(ctx: click.Context, model: str | None, port: int | None, host: str, canary: float | None,
           window: float | None, workers: int, watch: bool, replace: bool, show_status: bool, do_rollback: bool,
           do_stop: bool, as_json: bool) -> None:  # fmt: skip
    """Deploy a registered model behind a stable address: build, start, health-check, smoke-test, switch, watch,
    drain the old version — or roll back at any failed step.

    MODEL is NAME@ALIAS (default alias champion) or NAME/VERSION. A supervisor keeps serving after this command
    ends; --status, --rollback and --stop find it from any shell.

    Example: mlops-nb deploy churn@champion --port 8080 --watch
    """
    from ...exceptions import DeployError
    from ...serving import deploy as deploy_model
    from ...serving import parse_model_spec, rollback, status, stop

    project = _project(ctx)
    name = parse_model_spec(model)[0] if model else None
    if show_status:
        found = status(name, project=project)
        if as_json:
            echo_json(found)
            return
        if not found:
            click.echo("no live deployments" + (f" of {name}" if name else ""))
            return
        rows = []
        for d in found:
            for role in ("stable", "canary"):
                b = d.get(role)
                if b:
                    rows.append([d["name"], d["url"], role, f"v{b['version']}", b["bundle"][:12], b["pid"],
                                 b["requests"], b["errors"], b["p50_ms"] if b["p50_ms"] is not None else ""])  # fmt: skip
            if not d.get("stable"):
                rows.append([d["name"], d["url"], "-", "", "", d.get("pid"), "", "", ""])
        click.echo(table(rows, ["MODEL", "URL", "ROLE", "VERSION", "BUNDLE", "PID", "REQUESTS", "ERRORS", "P50 MS"]))
        for d in found:  # a server that crashed and was restarted (or could not be) is worth a line
            last = d.get("last") or {}
            if last.get("outcome") in ("restarted", "restart_failed"):
                restarts = d.get("restarts", 0)
                click.echo(f"{d['name']}: {last['reason']} ({restarts} restart{'s' if restarts != 1 else ''} so far)")
        return
    if name is None:
        raise DeployError("give the MODEL to deploy (NAME@ALIAS or NAME/VERSION), or --status")
    if do_stop:
        result = stop(name, project=project)
    elif do_rollback:
        result = rollback(name, project=project, trigger="cli")
        result["rollback"] = True
    else:
        import time

        from ...serving.router import check_listen

        check_listen(host)  # the host now; the port may be this deployment's own
        began = time.monotonic()
        result = deploy_model(model, port=port, host=host, canary=canary, window=window, watch=watch,
                              workers=workers, replace=replace, project=project, trigger="cli",
                              progress=not as_json)  # fmt: skip
        result["total_seconds"] = round(time.monotonic() - began, 3)
    if as_json:
        echo_json(result)
        return
    click.echo(_line(result))
    if result.get("outcome") == "rolled_back":
        ctx.exit(1)


def _line(result: dict) -> str:
    outcome = result.get("outcome")
    name = result.get("name")
    if outcome == "stopped":
        return f"stopped {name} (port {result['port']})"
    following = f"; following @{result['watch']}" if result.get("watch") else ""
    if outcome == "deployed" and result.get("rollback"):
        return (f"rolled back {name} to v{result['version']} (was v{result['previous']}) at {result['url']}, pinned "
                f"until the alias moves; run {result.get('run_id')}")  # fmt: skip
    if outcome == "deployed":
        was = f" (was v{result['previous']})" if result.get("previous") else ""
        took = f" in {result['seconds']:.1f} s" if result.get("seconds") is not None else ""
        if result.get("total_seconds"):
            took += f" ({result['total_seconds']:.1f} s with the build)"
        return (
            f"deployed {name} v{result['version']}{was} at {result['url']}{took}; run {result.get('run_id')}{following}"
        )
    if outcome == "unchanged":
        return f"{name} v{result['version']} is already deployed at {result['url']}{following}"
    if outcome == "rolled_back":
        serving = f"v{result['serving']}" if result.get("serving") else "nothing"
        return f"rolled back {name} v{result['version']}: {result['reason']}; still serving {serving}"
    return f"{name}: {outcome} {result.get('reason') or ''}".strip()
