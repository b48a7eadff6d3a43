"""``mlops-nb monitor`` and ``mlops-nb schedule``: thin commands over :mod:`mlops_nb.monitoring` and
:mod:`mlops_nb.schedule`.

Errors are :class:`~mlops_nb.exceptions.MlopsError`, which the main command group prints as one line (exit status 1).
"""

from __future__ import annotations

import math

import click

from ...monitoring import METRICS
from ..format import echo_json, short, table, when


def _project(ctx: click.Context):
    from ...project import Project

    return Project((ctx.obj or {}).get("home"))


def _params(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {name: value for name, value in pairs}


def _rules(texts: tuple[str, ...]) -> list | None:
    """``--rule 'RULE [=> ACTION]'`` options as rules (None when none was given: the settings' apply)."""
    from ...exceptions import MonitoringError

    if not texts:
        return None
    found: list = []
    for text in texts:
        rule, sep, action = text.partition("=>")
        if sep and not action.strip():
            raise MonitoringError(f"--rule {text!r}: nothing after '=>'; give an action (log, run NB, command ...)")
        found.append({"rule": rule.strip(), "action": action.strip()} if sep else rule.strip())
    return found


def _until(text: str | None):
    """``--until``: an ISO time as naive UTC (the prediction log's clock), or None for now."""
    from datetime import UTC, datetime

    from ...exceptions import MonitoringError

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MonitoringError(f"--until {text!r} is not an ISO time; write it as 2026-12-01T12:00:00") from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@click.command()
@click.argument("model")
@click.option("--window", help="How far back: 30m, 12h, 1d, 2w (default: [tool.mlops_nb.monitoring] window, else 1d).")
@click.option("--until", help="Where the window ends: an ISO time, UTC unless it names its zone (default: now).")
@click.option("--reference", help="The reference: a Parquet/CSV file or a feature view (default: the training set "
              "found through lineage).")  # fmt: skip
@click.option("--test", help="One drift test for every column: ks, chisquare, z, wasserstein, jensenshannon, psi.")
@click.option("--column", "column_tests", multiple=True, metavar="COLUMN=TEST[:THRESHOLD]",
              help="A per-column test (and threshold); repeat it.")  # fmt: skip
@click.option("--rule", "rules", multiple=True, metavar="RULE[=>ACTION]",
              help="An alert rule such as 'drift_share > 0.3' (default: the settings'); '=> run NB' gives its action. "
              f"Repeat it. Metrics: {', '.join(METRICS)}, drift.COLUMN.")  # fmt: skip
@click.option("--no-actions", is_flag=True, help="Record the alerts but do not run their actions.")
@click.option("--alerts", "show_alerts", is_flag=True, help="List the model's latest alerts instead of monitoring.")
@click.option("--trigger", default="cli", hidden=True, help="What started the monitoring run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report's JSON.")
@click.pass_context
def monitor(
    ctx: click.Context,
    model: str,
    window: str | None,
    until: str | None,
    reference: str | None,
    test: str | None,
    column_tests: tuple[str, ...],
    rules: tuple[str, ...],
    no_actions: bool,
    show_alerts: bool,
    trigger: str,
    as_json: bool,
) -> None:
    """Monitor a served model: data drift of its inputs against the training set, prediction drift, performance
    where labels are attached, latency and errors, over a window of the prediction log. Writes an HTML report
    (and JSON), records a run of kind monitor, and raises the alerts whose rules hold.

    MODEL is NAME (the version that served most in the window), NAME@ALIAS or NAME/VERSION.

    Example: mlops-nb monitor churn@champion --window 1d --rule 'drift_share > 0.3 => run train.ipynb'
    """
    from ...exceptions import MonitoringError
    from ...monitoring.drift import TESTS as DRIFT_TESTS
    from ...monitoring.model_monitor import monitor as run_monitor
    from ...monitoring.model_monitor import parse_model

    project = _project(ctx)
    if show_alerts:
        name, _ = parse_model(model)
        found = project.metadata.alerts(model=name)
        if as_json:
            echo_json(found)
            return
        if not found:
            click.echo(f"No alerts of {name} yet.")
            return
        rows = [[when(a["raised_at"]), f"v{a['version']}", a["rule"], short(a["value"]), a["action"],
                 a.get("outcome") or "-"] for a in found]  # fmt: skip
        click.echo(table(rows, ["RAISED (UTC)", "VERSION", "RULE", "VALUE", "ACTION", "OUTCOME"]))
        return
    overrides = {}
    for spec in column_tests:
        column, sep, rest = spec.partition("=")
        if not sep or not column or not rest:
            raise MonitoringError(f"--column {spec!r}: write COLUMN=TEST or COLUMN=TEST:THRESHOLD, e.g. age=psi:0.2")
        name_of_test, _, threshold = rest.partition(":")
        if name_of_test not in DRIFT_TESTS:
            raise MonitoringError(f"--column {spec!r}: {name_of_test!r} is not a drift test; use one of "
                                  f"{', '.join(DRIFT_TESTS)}")  # fmt: skip
        entry: dict = {"test": name_of_test}
        if threshold:
            try:
                entry["threshold"] = float(threshold)
            except ValueError:
                entry["threshold"] = math.nan
            if not math.isfinite(entry["threshold"]):
                raise MonitoringError(f"--column {spec!r}: threshold {threshold!r} is not a finite number")
        overrides[column] = entry
    report = run_monitor(model, window=window, until=_until(until), reference=reference, test=test,
                         overrides=overrides or None, rules=_rules(rules), actions=not no_actions, trigger=trigger,
                         project=project)  # fmt: skip
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(report.line())
    drifted = [c for c in report.drift.columns if c.drifted]
    if drifted:
        rows = [[c.column, c.type, c.test, short(c.score), short(c.threshold)] for c in drifted]
        click.echo(table(rows, ["DRIFTED COLUMN", "TYPE", "TEST", "SCORE", "THRESHOLD"]))
    for alert in report.alerts:
        click.echo(f"ALERT {alert['rule']} ({alert['metric']} = {short(alert['value'])}): {alert['action']} -> "
                   f"{alert.get('outcome') or '-'}")  # fmt: skip
    for column, why in report.drift.skipped.items():
        click.echo(f"  not tested: {column} ({why})")
    for note in report.notes:
        click.echo(f"  note: {note}")
    click.echo(f"  report: {report.html}")
    click.echo(f"  run:    {report.run_id} (mlops-nb runs --kind monitor)")


@click.group()
def schedule() -> None:
    """Schedules and data triggers: start a notebook's pipeline run (or a monitoring run) on a cron expression
    (UTC) or when new data arrives; `schedule daemon` keeps firing them, `schedule run-due` fires once (for the
    system's cron).

    Example: mlops-nb schedule add train.ipynb --cron '0 3 * * *' -p n_rows 5000
    """


@schedule.command("add")
@click.argument("notebook", required=False)
@click.option("--cron", help="When, as five cron fields in UTC: '0 3 * * *' is 03:00 every day.")
@click.option("--on-data", help="Fire when this --reads path (file or folder) or feature view changes.")
@click.option("--monitor", "monitor_model", metavar="NAME@ALIAS", help="Monitor this model instead of running a "
              "notebook (its alerts' 'run NB' actions retrain).")  # fmt: skip
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE", help="A notebook parameter.")
@click.option("--executor", help="The notebook run's executor (notebook, dag, dask).")
@click.option("--window", help="The monitoring window (with --monitor): 30m, 12h, 1d.")
@click.option("--rule", "rules", multiple=True, metavar="RULE[=>ACTION]", help="An alert rule of the monitoring "
              "(with --monitor; default: [tool.mlops_nb.monitoring] alerts), e.g. 'drift_share > 0.3 => run "
              "train.ipynb --no-cache'. Repeat it.")  # fmt: skip
@click.option("--name", help="The schedule's name (default: the notebook's stem, or monitor-MODEL).")
@click.pass_context
def schedule_add(ctx: click.Context, notebook, cron, on_data, monitor_model, params, executor, window, rules,
                 name) -> None:  # fmt: skip
    """Add a schedule: NOTEBOOK (or --monitor NAME@ALIAS) on --cron EXPRESSION or --on-data PATH|VIEW."""
    from ...schedule import add
    from ...schedule.schedules import describe_next

    added = add(notebook, cron=cron, on_data=on_data, monitor=monitor_model, params=_params(params) or None,
                executor=executor, window=window, rules=_rules(rules), name=name,
                project=_project(ctx))  # fmt: skip
    click.echo(
        f"added schedule {added.name}: {added.kind} {added.target}, {added.when()}; next: {describe_next(added)}"
    )
    click.echo("  it fires while `mlops-nb schedule daemon` runs (or on each `mlops-nb schedule run-due`)")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_context
def schedule_list(ctx: click.Context, as_json: bool) -> None:
    """List the schedules with their next time and latest run."""
    from ...schedule import schedules
    from ...schedule.schedules import describe_next

    found = schedules(_project(ctx))
    if as_json:
        echo_json([s.to_dict() for s in found])
        return
    if not found:
        click.echo("No schedules yet. Add one with `mlops-nb schedule add NOTEBOOK --cron '0 3 * * *'`.")
        return
    rows = [[s.name, s.kind, s.target, s.cron or f"on-data {s.on_data}", describe_next(s),
             f"{s.last_run} {s.last_status}" if s.last_run or s.last_status else "-"] for s in found]  # fmt: skip
    click.echo(table(rows, ["NAME", "KIND", "TARGET", "WHEN", "NEXT", "LAST RUN"]))


@schedule.command("remove")
@click.argument("name")
@click.pass_context
def schedule_remove(ctx: click.Context, name: str) -> None:
    """Remove a schedule."""
    from ...schedule import remove

    remove(name, _project(ctx))
    click.echo(f"removed schedule {name}")


@schedule.command("run-due")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_context
def schedule_run_due(ctx: click.Context, as_json: bool) -> None:
    """Fire every schedule that is due now, once, and exit (for the system's cron or a CI job)."""
    from ...schedule import run_due

    fired = run_due(_project(ctx), echo=None if as_json else click.echo, progress=not as_json)
    if as_json:
        echo_json(fired)
    elif not fired:
        click.echo("Nothing is due.")


@schedule.command("daemon")
@click.option("--poll", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between checks of --on-data triggers.")  # fmt: skip
@click.pass_context
def schedule_daemon(ctx: click.Context, poll: float) -> None:
    """Keep firing due schedules in the foreground (UTC; one run at a time; missed times are not caught up; a
    failing run does not stop it). Stop it with Ctrl-C."""
    from ...schedule import daemon

    daemon(_project(ctx), poll=poll, echo=click.echo, progress=True)
    click.echo("schedule daemon stopped")
