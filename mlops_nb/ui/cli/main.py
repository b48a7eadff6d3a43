"""The ``mlops-nb`` command line: thin commands over the Python API.

Each command opens the project, calls one function, and prints a table for people or JSON with ``--json``.
An :class:`~mlops_nb.exceptions.MlopsError` becomes one line on stderr and exit status 1 (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ...core.records import RUN_KINDS, TRIGGERS
from ...exceptions import MlopsError
from ...settings import HOME_ENV
from ..format import duration, echo_json, step_counts, table, when
from .params import picture_file, positive_seconds


class _Group(click.Group):
    """Turns MlopsError into one line on stderr and exit 1, unless ``--debug``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlopsError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            raise click.ClickException(exc.message) from None


def _project(ctx: click.Context):
    from ...project import Project

    return Project(ctx.obj.get("home"))


def _store(ctx: click.Context):
    return _project(ctx).metadata


_format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=HOME_ENV,
    help="Project folder (default: $MLOPS_NB_HOME, else the nearest folder upward with pyproject.toml or .mlops/).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="mlops-nb")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, debug: bool) -> None:
    """mlops-nb: your Jupyter notebook is the pipeline.

    Runs, artifacts and lineage live under the project's .mlops/ folder; nothing to start.
    """
    from ..progress import install

    ctx.ensure_object(dict)
    ctx.obj.update(home=home, debug=debug)
    install(lines_to_stdout=True)  # long work shows a tqdm bar on stderr; its lines (a run's steps) are output


@cli.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def init(ctx: click.Context, folder: Path | None) -> None:
    """Create the project home's .mlops/ folder and stores (idempotent), the MLflow registry's included.

    FOLDER defaults to the discovered project home. In a git repository, .mlops/ is added to .gitignore. The
    embedded MLflow store is created and migrated here, once, before anything uses it concurrently; with
    MLOPS_NB_TRACKING_URI naming a server, init checks that it answers.

    Example: mlops-nb init
    """
    from ...project import Project

    project = Project(folder) if folder else _project(ctx)
    existed = project.initialized
    project.init(registry=True)
    click.echo(f"{'Project already initialised' if existed else 'Initialised project'} at {project.home}")
    click.echo(f"  stores: {project.mlops_dir}")
    click.echo(f"  model registry: {project.registry.shown_uri}")


@cli.command()
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Show at most this many runs.")  # fmt: skip
@click.option(
    "--status", type=click.Choice(["running", "succeeded", "failed", "interrupted"]), help="Only runs with this status."
)
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--kind", type=click.Choice(RUN_KINDS), help="Only runs of this kind.")
@click.option("--trigger", type=click.Choice(TRIGGERS), help="Only runs started by this trigger.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_context
def runs(
    ctx: click.Context, limit: int, status: str | None, pipeline: str | None, kind, trigger, as_json: bool
) -> None:
    """List the latest runs, newest first; with --json each run as `mlops-nb show --json` gives it (step runs,
    metrics, the executed notebook).

    Example: mlops-nb runs --limit 5 --kind pipeline
    """
    records = _store(ctx).list_runs(
        limit, status=status, pipeline=pipeline, kind=kind, trigger=trigger, details=as_json
    )
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    if not records:
        if status or pipeline or kind or trigger:
            click.echo("No runs match; `mlops-nb runs` lists them all.")
        else:
            click.echo("No runs yet. Start one with `mlops-nb run NOTEBOOK` or `mlops-nb demo`.")
        return
    rows = [
        [
            r.id,
            r.kind,
            r.pipeline or "-",
            r.status,
            when(r.started_at),
            duration(r.duration),
            r.trigger,
            step_counts(r.step_counts) or "-",
        ]
        for r in records
    ]
    headers = ["RUN", "KIND", "PIPELINE", "STATUS", "STARTED (UTC)", "DURATION", "TRIGGER", "STEPS"]
    if any(r.fired_by for r in records):  # what fired the schedule, data and drift runs
        for row, r in zip(rows, records, strict=True):
            row.append(_cut(r.fired_by or "", 48))
        headers.append("FIRED BY")
    click.echo(table(rows, headers))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _refs(refs: dict) -> str:
    return ", ".join(f"{name}={ref.short}" + (f" ({ref.summary})" if ref.summary else "") for name, ref in refs.items())


@cli.command()
@click.argument("run", default="latest")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.option(
    "--timeline",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=picture_file,
    help="Also draw the run's timeline (a bar per step run; parallel steps overlap) to this PNG or SVG file.",
)
@click.pass_context
def show(ctx: click.Context, run: str, as_json: bool, timeline: Path | None) -> None:
    """Show one run: parameters, metrics, and each step run with why it ran and what it made.

    RUN is a run id, a unique prefix of one, or `latest` (the default).

    Example: mlops-nb show latest
    """
    record = _store(ctx).get_run(run)
    if timeline is not None:
        from ..plots import timeline as draw_timeline

        _save_picture(draw_timeline(record), timeline, "--timeline", f"timeline of run {record.id}", dpi=110)
    if as_json:
        echo_json(record.to_dict())
        return
    what = f"pipeline {record.pipeline}" if record.kind == "pipeline" else record.kind
    click.echo(f"Run {record.id}  {what}  {record.status}  {duration(record.duration)}")
    if record.notebook:
        click.echo(
            f"  notebook:  {record.notebook}"
            + (f" (sha256 {record.notebook_hash[:12]})" if record.notebook_hash else "")
        )
    git = "-" if not record.git_commit else record.git_commit[:10] + (" (dirty)" if record.git_dirty else "")
    click.echo(
        f"  started:   {when(record.started_at)} UTC  trigger {record.trigger}"
        + (f" ({record.fired_by})" if record.fired_by else "")
        + f"  executor {record.executor}  "
        f"host {record.host} pid {record.pid}  git {git}"
    )
    if record.params:
        click.echo("  params:    " + ", ".join(f"{k}={json.dumps(v)}" for k, v in record.params.items()))
    if record.metrics:
        click.echo("  metrics:   " + ", ".join(f"{k}={v:.4g}" for k, v in record.metrics.items()))
    if record.error:
        click.echo(f"  error:     {record.error}")
    if record.executed_notebook:
        click.echo(f"  executed notebook: {record.executed_notebook.uri or record.executed_notebook.hash}")
    if record.step_runs:
        click.echo("")
        rows = [
            [s.id, s.step, s.status, duration(s.duration), s.why or "-", _refs(s.outputs) or "-"]
            for s in record.step_runs
        ]
        click.echo(table(rows, ["STEP RUN", "STEP", "STATUS", "DURATION", "WHY", "OUTPUTS"]))
        for s in record.step_runs:
            if s.error:
                where = f" (cell {s.cell})" if s.cell is not None else ""
                click.echo(f"  {s.step}{where}: {s.error}")


_png_option = click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=picture_file,
    help="Also draw the diagram, top-down, into this PNG file.",
)


def _save_png(figure, path: Path | None) -> None:
    if path is not None:
        _save_picture(figure, path, "--png", "diagram")


def _save_picture(figure, path: Path, option: str, what: str, dpi: int = 100) -> None:
    """Write ``figure`` to ``path`` (checked by :func:`~.params.picture_file`) and say so on stderr."""
    try:
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
    except OSError as exc:
        raise MlopsError(f"{option} {path}: cannot write the {what} ({exc.strerror or exc}); give a file you may "
                         "write in a folder that exists") from None  # fmt: skip
    click.echo(f"{what}: {path}", err=True)


@cli.command()
@click.argument("node")
@click.option(
    "--direction",
    type=click.Choice(["up", "down", "both"]),
    default="both",
    show_default=True,
    help="Follow what NODE came from (up), what came from it (down), or both.",
)
@click.option("--depth", type=click.IntRange(min=1), help="Follow at most this many steps.")
@_format_option
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@_png_option
@click.pass_context
def lineage(
    ctx: click.Context, node: str, direction: str, depth: int | None, fmt: str, as_json: bool, png: Path | None
) -> None:
    """Show the lineage of an artifact or a step run.

    NODE is an artifact hash (or its first 6+ characters), a step run id (RUN.N), RUN/STEP, the name of a
    step's output (its latest artifact: mlops-nb lineage model), or a registered model version
    (models:/NAME/VERSION or models:/NAME@ALIAS), an app bundle's hash, or a logged prediction (request:ID).

    Example: mlops-nb lineage latest/train --direction up
    """
    from ..state import lineage as follow

    graph = follow(_project(ctx), node, direction, depth)
    if png is not None:
        from ..plots import lineage_diagram

        _save_png(lineage_diagram(graph), png)
    if as_json or fmt == "json":
        echo_json(graph.to_dict())
    elif fmt == "mermaid":
        click.echo(graph.to_mermaid())
    else:
        rows = [
            [
                n["depth"],
                n["kind"].replace("_", " "),
                n["id"][:12] if n["kind"] == "artifact" else n["id"],
                n["label"],
                n.get("summary") or n.get("run_id") or "",
            ]
            for n in graph.records()
        ]
        click.echo(table(rows, ["DEPTH", "KIND", "ID", "WHAT", "DETAIL"]))


def _read_params_file(path: Path) -> dict:
    from ...exceptions import ConfigError

    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        raise ConfigError(f"parameters file {path} cannot be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"parameters file {path} must hold a mapping of NAME: VALUE")
    return data


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-p",
    "--param",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a parameter (repeatable); the value is converted to the default's type.",
)
@click.option(
    "-f",
    "--params-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML or JSON file of parameters (-p wins).",
)
@click.option("--no-cache", is_flag=True, help="Run every step; reuse nothing from the cache.")
@click.option(
    "--executor",
    metavar="NAME",
    help="notebook: papermill runs the whole notebook in one kernel; dag: each step in a warm kernel of its own, "
    "independent steps in parallel; dask: the dag plan on a Dask cluster; or one an installed package registers "
    "(default: the project's executor setting).",
)
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1), help="Steps at once (dag, dask; default: the number of cores)."
)
@click.option("--from", "from_step", metavar="STEP", help="Run STEP and everything after it (dag, dask).")
@click.option("--to", "to_step", metavar="STEP", help="Run STEP and everything it needs (dag, dask).")
@click.option(
    "--only", metavar="STEP[,STEP]", help="Run only these steps; their inputs come from the cache (dag, dask)."
)
@click.option(
    "--retries", type=click.IntRange(min=0), default=0, help="Re-run a failing step up to N more times (dag, dask)."
)
@click.option(
    "--reuse-kernels", is_flag=True, help="Reset and reuse a kernel for the next step instead of a fresh one."
)
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address (dask; default: a local cluster).")
@click.option(
    "--step-timeout",
    type=float,
    callback=positive_seconds,
    help="Seconds a step (notebook executor: a cell) may run before it is stopped.",
)
@click.option(
    "--kernel",
    "kernel_name",
    help="Jupyter kernel name (default: the one the notebook's kernelspec names; needed without one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def run(
    ctx,
    notebook: Path,
    params,
    params_file,
    no_cache: bool,
    executor,
    jobs,
    from_step,
    to_step,
    only,
    retries,
    reuse_kernels,
    scheduler,
    step_timeout,
    kernel_name,
    as_json: bool,
) -> None:
    """Run NOTEBOOK headless and record it: steps whose cache key did not change are loaded from the cache
    (when all are, no kernel starts), and every step run says why it ran.

    Prints a line per step as it ends (why it ran, how long, what it made), then one line for the run; `mlops-nb
    show latest` has the table.

    Example: mlops-nb run notebooks/01_quickstart.ipynb -p n_rows 500 --executor dag --jobs 2
    """
    from ...engine.driver import run_notebook
    from ...engine.executors import RunOptions
    from ...project import Project

    values = _read_params_file(params_file) if params_file else {}
    values.update(dict(params))
    options = RunOptions(
        executor=executor,
        no_cache=no_cache,
        trigger="cli",
        progress=not as_json,
        kernel_name=kernel_name,
        step_timeout=step_timeout,
        jobs=jobs,
        from_step=from_step,
        to_step=to_step,
        only=tuple(o.strip() for o in only.split(",") if o.strip()) if only else None,
        retries=retries,
        reuse_kernels=reuse_kernels,
        scheduler=scheduler,
    )
    project = Project(ctx.obj["home"]) if ctx.obj.get("home") else None
    record = run_notebook(notebook, values, options, project)
    if as_json:
        echo_json(record.to_dict())
        return
    # each step printed its line as it ended; the run ends with one line
    counts = step_counts(record.step_counts)
    executed = f"; executed notebook: {record.executed_notebook.uri}" if record.executed_notebook else ""
    click.echo(f"Run {record.id} {record.status} in {duration(record.duration)} ({counts or 'no steps'}){executed}")


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
@_format_option
@_png_option
def dag(notebook: Path, fmt: str, png: Path | None) -> None:
    """Show NOTEBOOK's pipeline: its steps, what each takes from which step, the files and parameters it reads.

    Example: mlops-nb dag notebooks/01_quickstart.ipynb --format mermaid
    """
    from ...pipeline.notebook import Pipeline

    pipeline = Pipeline.from_notebook(notebook)
    if png is not None:
        from ..plots import dag_diagram

        _save_png(dag_diagram(pipeline), png)
    if fmt == "json":
        echo_json(pipeline.to_dict())
    elif fmt == "mermaid":
        click.echo(pipeline.to_mermaid())
    else:
        click.echo(pipeline.to_text())


@cli.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="A new (or empty) folder for the demo project (default: demo-project, an earlier demo there moved aside "
    "to demo-project.<time>).",
)
@click.option(
    "--fast",
    is_flag=True,
    help="The Binder path (about a minute, its processes under 1 GiB together): no quickstart runs, the pipeline "
    "in one kernel, one scoring server at a time.",
)
@click.option("--port", type=int, help="The endpoint's port (default 8080 when it is free, else any free one).")
@click.pass_context
def demo(ctx: click.Context, folder: Path | None, fast: bool, port: int | None) -> None:
    """Run the whole lifecycle headless in a fresh project folder: data -> feature store -> training set -> model
    -> registry (gates, approval) -> build -> deploy -> traffic -> labels -> monitoring -> drift -> alert ->
    retraining -> approval -> redeployed by the watching deployment. Every stage is a recorded run; it ends with
    a summary of the runs, where things are, and the commands to look around. The deployment keeps serving.

    Example: mlops-nb demo --dir /tmp/demo --fast
    """
    from ..demo import run_demo

    run_demo(folder, echo=click.echo, fast=fast, port=port)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was checked and found as JSON.")
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every stored thing of the project against what was recorded about it, reading every byte: artifact
    files against their hashes and recorded sizes, recorded artifacts present, feature segments, ties files and
    online tables against the catalog, app bundles against their manifests, both DuckDB files readable and
    MLflow's SQLite intact. Writes nothing. Exits 1, with one line per problem, when anything is damaged.

    Example: mlops-nb verify
    """
    from ...serving.verify import verify as check

    report = check(_project(ctx), progress=not as_json)
    if as_json:
        echo_json({"ok": report.ok, "checked": report.checked, "problems": report.problems})
    else:
        checked = ", ".join(f"{what}: {n}" for what, n in report.checked.items()) or "nothing stored yet"
        click.echo(f"checked {checked}")
        for problem in report.problems:
            click.echo(f"  {problem}")
    if not report.ok:
        raise click.ClickException(f"{len(report.problems)} problem(s) found; each is named above")
    if not as_json:
        click.echo("all whole")


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    default="30d",
    show_default=True,
    help="Runs that started longer ago than this (30d, 12h, 2w) no longer keep their artifacts, unless "
    "one is its pipeline's latest succeeded run; prediction-log days older than this are removed.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def gc(ctx: click.Context, older_than: str, dry_run: bool, as_json: bool) -> None:
    """Free the space of stored things nothing kept refers to: artifacts no kept run, model version or bundle
    references, feature files the catalog does not list, old prediction-log days and killed writers'
    temporary files. Kept: running runs, runs newer than --older-than, each pipeline's latest succeeded run,
    every model version and bundle. Files younger than an hour are never removed (a run may be writing them),
    so it is safe while pipelines run. Run records and the feature views' data are never removed.

    Example: mlops-nb gc --older-than 14d --dry-run
    """
    from ...serving.gc import collect, parse_age

    report = collect(_project(ctx), parse_age(older_than), dry_run=dry_run)
    if as_json:
        echo_json({"dry_run": dry_run, "removed": report.removed, "freed_bytes": report.freed, "kept": report.kept})
        return
    verb = "would remove" if dry_run else "removed"
    what = ", ".join(f"{n} {kind}" for kind, n in report.removed.items()) or "nothing"
    click.echo(f"{verb} {what} ({report.freed / 1e6:.1f} MB); kept {report.kept} referenced artifacts")


from .features import features as _features  # noqa: E402 - the groups live in modules of their own
from .models import models as _models  # noqa: E402
from .serving import build as _build  # noqa: E402
from .serving import deploy as _deploy  # noqa: E402
from .serving import labels as _labels  # noqa: E402
from .serving import score as _score  # noqa: E402
from .serving import serve as _serve  # noqa: E402
from .watch import monitor as _monitor  # noqa: E402
from .watch import schedule as _schedule  # noqa: E402

cli.add_command(_features)
cli.add_command(_models)
for _command in (_build, _serve, _score, _labels, _deploy, _monitor, _schedule):
    cli.add_command(_command)


def skip_slow_optional_imports() -> None:
    """Leave out, in this process (the CLI's own, never a user's kernel), an optional import that costs seconds.

    jsonschema, which nbformat and so papermill import, imports the IRI format checker ``rfc3987_syntax`` when it
    is installed (jupyter_server's dependencies install it), and that module compiles ~40 lark grammars at import:
    1-2.5 s on every ``mlops-nb run`` that starts a kernel. No notebook schema uses the ``iri`` format, and
    jsonschema treats the missing module as not installed.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mlops-nb`` console script."""
    skip_slow_optional_imports()
    cli.main(args=argv, prog_name="mlops-nb", obj={})


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
