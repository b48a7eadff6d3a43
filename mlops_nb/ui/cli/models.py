"""``mlops-nb models list|show|promote|approve|reject|rollback|history``: thin commands over
:mod:`mlops_nb.promotion` (the registry is MLflow; mlflow is imported only by the commands that reach it).

Errors are :class:`~mlops_nb.exceptions.MlopsError`, which the main command group prints as one line (exit status 1).
"""

from __future__ import annotations

import re

import click

from ..format import echo_json, table


def _project(ctx: click.Context):
    from ...project import Project

    return Project((ctx.obj or {}).get("home"))


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _echo_promotion(result, as_json: bool) -> None:
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.line())


_GATE = re.compile(
    r"^\s*(?P<metric>[^\s=<>]+)\s*(?:=\s*(?P<rule>(?:>=|<=|==|>|<).*)|(?P<bare>(?:>=|<=|==|>|<).*)|=\s*(?P<number>[^<>=].*))$"
)


def _gates(values: tuple[str, ...]) -> dict[str, str] | None:
    """``--gate`` options as a gate dict: ``'f1>=0.8'``, ``'f1 >= champion - 0.01'``, ``'f1=>= 0.8'`` or
    ``f1=0.8`` (at least 0.8)."""
    from ...exceptions import RegistryError

    gates = {}
    for value in values:
        match = _GATE.match(value)
        if match is None:
            raise RegistryError(
                f"--gate {value!r} must be METRIC OP VALUE, such as --gate 'f1 >= 0.8' or --gate 'f1 >= champion - 0.01'"
            )
        rule = match["rule"] or match["bare"] or f">= {match['number']}"
        gates[match["metric"]] = rule.strip()
    return gates or None


@click.group()
def models() -> None:
    """Model registry (MLflow; .mlops/mlflow.db unless MLOPS_NB_TRACKING_URI names a server): versions, aliases,
    gated promotion, approval, rollback and history.

    Example: mlops-nb models show churn
    """


@models.command("list")
@_json_option
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """List the registered models with their latest version and aliases.

    Example: mlops-nb models list --json
    """
    from ...promotion import models as registered

    records = registered(project=_project(ctx))
    if as_json:
        echo_json(records)
    elif not records:
        click.echo("No registered models yet; mlops_nb.register_model(model, NAME) in a step adds one")
    else:
        rows = [
            [m["name"], m["latest"] or "", ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items()))]
            for m in records
        ]
        click.echo(table(rows, ["MODEL", "LATEST", "ALIASES"]))


@models.command("show")
@click.argument("name")
@_json_option
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show the versions of model NAME: aliases, approval state, metrics, the run and step that trained each.

    Example: mlops-nb models show churn
    """
    from ...promotion import models as registered
    from ..reports import model_rows

    versions = registered(name, project=_project(ctx))
    if as_json:
        echo_json(versions)
        return
    rows, headers = model_rows(versions)
    click.echo(table(rows, headers))
    pending = [f"v{v['version']}" for v in versions if v["approval"] == "pending"]
    if pending:
        click.echo(f"waiting for approval: {', '.join(pending)} (mlops-nb models approve {name} VERSION)")


@models.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--alias", default="champion", show_default=True, help="The alias to move.")
@click.option(
    "--gate",
    "gates",
    multiple=True,
    metavar="METRIC=RULE",
    help="A gate rule, repeatable: 'accuracy >= 0.8' (absolute), 'f1 >= champion - 0.01' (relative to the alias's "
    "holder); METRIC=NUMBER means at least NUMBER.",
)
@click.option("--require-approval", is_flag=True, help="A passing version waits for `models approve`.")
@click.option("--by", help="Who promotes (default: your login name).")
@_json_option
@click.pass_context
def promote(ctx, name: str, version: str, alias: str, gates, require_approval: bool, by, as_json: bool) -> None:
    """Move ALIAS to VERSION of model NAME if it passes the gates (exit status 1 with the failed rule and both
    values if not).

    Example: mlops-nb models promote churn 3 --gate 'roc_auc >= champion - 0.01' --require-approval
    """
    from ...exceptions import PromotionRefused
    from ...promotion import promote as do_promote

    try:
        result = do_promote(
            name,
            version,
            alias,
            _gates(gates),
            require_approval,
            by=by,
            trigger="cli",
            project=_project(ctx),
        )
    except PromotionRefused as refused:
        if as_json:  # a script reads the checks; the line still goes to stderr and the exit status is 1
            echo_json(
                {"name": name, "version": version, "alias": alias, "outcome": "refused", "checks": refused.checks}
            )
        raise
    _echo_promotion(result, as_json)


@models.command("approve")
@click.argument("name")
@click.argument("version")
@click.option("--by", help="Who approves (default: your login name).")
@click.option("--note", default="", help="Why (kept with the version in MLflow).")
@_json_option
@click.pass_context
def approve(ctx: click.Context, name: str, version: str, by, note: str, as_json: bool) -> None:
    """Approve VERSION of model NAME, which waits for approval: its alias moves to it.

    Example: mlops-nb models approve churn 3 --note "report read"
    """
    from ...promotion import approve as do_approve

    _echo_promotion(do_approve(name, version, by, note, project=_project(ctx)), as_json)


@models.command("reject")
@click.argument("name")
@click.argument("version")
@click.option("--by", help="Who rejects (default: your login name).")
@click.option("--note", default="", help="Why (kept with the version in MLflow).")
@_json_option
@click.pass_context
def reject(ctx: click.Context, name: str, version: str, by, note: str, as_json: bool) -> None:
    """Reject VERSION of model NAME, which waits for approval: the alias never moves to it.

    Example: mlops-nb models reject churn 3 --note "drifts on new customers"
    """
    from ...promotion import reject as do_reject

    _echo_promotion(do_reject(name, version, by, note, trigger="cli", project=_project(ctx)), as_json)


@models.command("rollback")
@click.argument("name")
@click.option("--alias", default="champion", show_default=True, help="The alias to move back.")
@click.option("--by", help="Who rolls back (default: your login name).")
@click.option("--note", default="", help="Why.")
@_json_option
@click.pass_context
def rollback(ctx: click.Context, name: str, alias: str, by, note: str, as_json: bool) -> None:
    """Point ALIAS of model NAME back at the version that held it before the current one.

    Example: mlops-nb models rollback churn
    """
    from ...promotion import rollback as do_rollback

    _echo_promotion(do_rollback(name, alias, by=by, note=note, trigger="cli", project=_project(ctx)), as_json)


@models.command("history")
@click.argument("name")
@_json_option
@click.pass_context
def history(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show who registered, promoted, refused, approved, rejected or rolled back which version of NAME, when
    and why (read from MLflow's version tags).

    Example: mlops-nb models history churn --json
    """
    from ...promotion import history as read_history

    events = read_history(name, project=_project(ctx))
    if as_json:
        echo_json(events)
        return
    rows = []
    for e in events:
        moves = e["action"] in ("promote", "approve", "rollback") and e.get("from") is not None
        moved = f"v{e['from']} → v{e['version']}" if moves else f"v{e['version']}"
        why = "; ".join(c["reason"] for c in e.get("checks") or []) or e.get("note") or ""
        rows.append(
            [
                (e.get("at") or "")[:19].replace("T", " "),
                e["action"],
                moved,
                e.get("alias") or "",
                e.get("by") or "",
                e.get("trigger") or ("step " + e["step"] if e.get("step") else ""),
                why,
            ]
        )
    click.echo(table(rows, ["WHEN", "ACTION", "VERSION", "ALIAS", "BY", "TRIGGER", "WHY"]))
