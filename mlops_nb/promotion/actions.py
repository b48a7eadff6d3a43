"""Moving aliases: ``promote`` through gates, ``approve`` / ``reject`` a pending version, ``rollback``.

Outside a step each action is a recorded run of kind ``promotion`` with its trigger (``api``, ``cli``, ``rest``,
``manual``, ``approval``); inside a step it is an event of that step run (the version is one of its inputs). MLflow
keeps the outcome as version tags (see :mod:`.events`): ``approval`` is ``pending``, ``approved`` or ``rejected``,
``approval.alias`` the alias a pending version waits for, and every event its own ``mlops_nb.event.*`` tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core import hooks
from ..exceptions import MlopsError, ModelNotFoundError, PromotionRefused, RegistryError
from ..project import current_project
from ..store.registry import ModelVersion, check_alias, check_model_name
from . import gates as gate_rules
from .events import events_of, holders, new_event, person, read_history, tag_of


@dataclass
class Promotion:
    """What a promotion, approval, rejection or rollback did.

    Attributes:
        name, version, alias: the model, the version acted on and the alias.
        outcome: ``promoted``, ``pending`` (waits for approval), ``unchanged`` (it held the alias already),
            ``approved``, ``rejected`` or ``rolled back``.
        previous: the version that held the alias before (None: none did).
        checks: how each gate rule went (dicts: ``metric``, ``rule``, ``value``, ``threshold``, ``passed``,
            ``reason``).
        run_id: the promotion run recorded (None inside a step: the step run records it).
    """

    name: str
    version: int
    alias: str
    outcome: str
    previous: int | None = None
    checks: list[dict] = field(default_factory=list)
    run_id: str | None = None

    def line(self) -> str:
        """One line for people."""
        was = f" (was v{self.previous})" if self.previous is not None and self.previous != self.version else ""
        gates = "; ".join(c["reason"] for c in self.checks)
        text = {
            "promoted": f"{self.name} v{self.version} is now {self.alias}{was}",
            "approved": f"{self.name} v{self.version} approved: now {self.alias}{was}",
            "pending": f"{self.name} v{self.version} passed its gates and waits for approval to become {self.alias}; "
            f"`mlops-nb models approve {self.name} {self.version}`",
            "unchanged": f"{self.name} v{self.version} is {self.alias} already",
            "rejected": f"{self.name} v{self.version} rejected: {self.alias} stays "
            + (f"v{self.previous}" if self.previous is not None else "unset"),
            "rolled back": f"{self.name} {self.alias} rolled back to v{self.version}{was}",
        }[self.outcome]
        if not gates and self.outcome in ("promoted", "pending"):
            gates = "no gates checked"
        return text + (f" — {gates}" if gates else "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "outcome": self.outcome,
            "previous": self.previous,
            "checks": list(self.checks),
            "run_id": self.run_id,
        }


class _Action:
    """One action on a version. Outside a step it is a run of kind ``promotion``, recorded in one transaction
    once the registry is written (its id chosen first, so the MLflow tags name it; a registry event whose run is
    missing, after a crash in between, is restored by :func:`~mlops_nb.promotion.reindex`). Inside a step the
    events go with the step run, and the version is the step's input."""

    def __init__(self, project, version: ModelVersion, alias: str, action: str, trigger: str, params: dict):
        from ..core.clock import utcnow
        from ..store.metadata import new_run_id

        self.project, self.version, self.alias, self.action, self.trigger = project, version, alias, action, trigger
        self.in_step = hooks.active_step() is not None
        self.run_id = None if self.in_step else new_run_id()
        self.started_at = utcnow()
        self.params = {"model": version.name, "version": version.version, "alias": alias, "action": action, **params}
        self.written = False  # whether MLflow was written: from then on the action happened, recorded or not

    def write(self, function, *args) -> None:
        """A registry write of this action (the alias first, then the tags that tell of it)."""
        self.written = True
        function(*args)

    def event(self, action: str, version: ModelVersion, **fields) -> dict:
        """A new event of this action, with its run."""
        if self.in_step:  # an event of the step run (its run's trigger is the run's)
            active = hooks.active_step()
            fields.update(run_id=active.run_id, step=active.step)
            return new_event(action, version.name, version.version, self.alias, **fields)
        return new_event(
            action, version.name, version.version, self.alias, trigger=self.trigger, run_id=self.run_id, **fields
        )

    def done(self, events: list[dict], status: str = "succeeded", error: str | None = None) -> None:
        """Record how it ended: inside a step as the step run's events, else the run with its events."""
        if self.in_step:
            active = hooks.active_step()
            if self.version.uri not in active.outputs:  # a version the step registered itself is its output
                hooks.record_input(self.version.uri, self.version.node())
            for event in events:
                hooks.record_event(event)
            return
        try:
            self.project.metadata.record_run(
                kind="promotion",
                status=status,
                trigger=self.trigger,
                fired_by=self.version.uri,
                params=self.params,
                error=error,
                run_id=self.run_id,
                started_at=self.started_at,
                model_events=events,
            )
        except MlopsError as exc:
            if not self.written:
                raise
            self.recorded_error = exc
            raise RegistryError(
                f"{self.version.name} v{self.version.version}: the {self.action} is done in MLflow, but its run could "
                f"not be recorded ({exc.message}); mlops_nb.promotion.reindex(project, {self.version.name!r}) "
                "records it"
            ) from None

    def __enter__(self) -> _Action:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is None or self.in_step or isinstance(exc, PromotionRefused) or hasattr(self, "recorded_error"):
            return
        message = exc.message if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
        if self.written:  # MLflow has part of it: say so, and what to run
            message = f"{message} (after part of the {self.action} was written to MLflow)"
        self.done([], "failed", message)


def _holders_for(registry, name: str, rules: list, alias: str) -> tuple[ModelVersion | None, dict]:
    """The alias's holder now (with its metrics when a rule compares with it), and the holder of every alias a
    rule names."""
    compared = {r.alias for r in rules if r.alias}
    current = registry.alias_holder(name, alias, metrics=alias in compared)
    found: dict[str, Any] = {}
    for other in compared:
        found[other] = current if other == alias else registry.alias_holder(name, other, metrics=True)
    return current, found


def promote(
    name: str,
    version: int | str,
    alias: str = "champion",
    gates: dict[str, str] | None = None,
    require_approval: bool = False,
    *,
    by: str | None = None,
    trigger: str = "api",
    project=None,
) -> Promotion:
    """Move ``alias`` to a version of model ``name`` if it passes ``gates``.

    Args:
        name, version: the candidate (a version number, or ``@ALIAS``).
        alias: the alias to move (``champion``).
        gates: metric rules, absolute (``{"accuracy": ">= 0.8"}``) or relative to the alias's holder
            (``{"f1": ">= champion - 0.01"}``); see :mod:`mlops_nb.promotion.gates`.
        require_approval: a passing version waits (``approval=pending``) until :func:`approve` moves the alias.
        by: who promotes (default: the login name).
        trigger: what asked (``api``, ``cli``, ``rest``, ``manual``).

    Raises:
        PromotionRefused: a rule failed; its one line shows the rule and both values; the alias did not move.

    Example::

        mlops_nb.promote("churn", 3, gates={"f1": ">= champion - 0.01", "accuracy": ">= 0.8"})
    """
    check_model_name(name)
    check_alias(alias)
    _check_caller(trigger, by)
    rules = gate_rules.parse(gates)
    project = current_project(project)
    registry = project.registry
    candidate = registry.version(name, version, metrics=bool(rules))
    current, compare = _holders_for(registry, name, rules, alias)
    checks = gate_rules.evaluate(rules, name, candidate, compare, alias)
    previous = current.version if current is not None else None
    detail = [c.to_dict() for c in checks]
    if previous == candidate.version:
        return Promotion(name, candidate.version, alias, "unchanged", previous, detail)
    params = {"gates": dict(gates or {}), "require_approval": require_approval}
    with _Action(project, candidate, alias, "promote", trigger, params) as action:
        failed = [c for c in checks if not c.passed]
        if failed:
            event = action.event("refuse", candidate, checks=detail, **{"from": previous}, by=by)
            action.write(registry.set_tags, name, candidate.version, tag_of(event))
            message = f"{name} v{candidate.version} refused for {alias}: " + "; ".join(c.reason for c in failed)
            action.done([event], "failed", message)
            raise PromotionRefused(message, detail)
        if require_approval:
            waiting = candidate.tags.get("approval.alias")
            if candidate.approval == "pending" and waiting and waiting != alias:
                raise RegistryError(
                    f"{name} v{candidate.version} already waits for approval to become {waiting}; approve or "
                    f"reject that first (`mlops-nb models approve {name} {candidate.version}`)"
                )
            event = action.event("pending", candidate, checks=detail, **{"from": previous}, by=by)
            action.write(
                registry.set_tags,
                name,
                candidate.version,
                {"approval": "pending", "approval.alias": alias, **tag_of(event)},
            )
            action.done([event])
            return Promotion(name, candidate.version, alias, "pending", previous, detail, action.run_id)
        event = action.event("promote", candidate, checks=detail, **{"from": previous}, by=by)
        action.write(registry.set_alias, name, alias, candidate.version)
        action.write(registry.set_tags, name, candidate.version, tag_of(event))
        action.done([event])
    return Promotion(name, candidate.version, alias, "promoted", previous, detail, action.run_id)


def _check_caller(trigger: str, by: str | None, note: Any = "") -> str:
    """Refuse a bad trigger or person before anything is written; the note as text."""
    from ..core.records import TRIGGERS

    if trigger not in TRIGGERS:
        raise RegistryError(f"trigger {trigger!r} is not one of {', '.join(TRIGGERS)}")
    if by is not None and (not isinstance(by, str) or not by.strip() or len(by) > 200):
        raise RegistryError(f"by={by!r} must name who acts (text, up to 200 characters)")
    return "" if note is None else str(note)[:2000]


def _pending_from(candidate: ModelVersion) -> int | None:
    """The version that held the alias when the candidate passed its gates and became pending."""
    pending = sorted((e for e in events_of(candidate) if e["action"] == "pending"), key=lambda e: e.get("at") or "")
    moved = pending[-1].get("from") if pending else None
    return int(moved) if moved is not None else None


def _pending(name: str, version, verb: str, project) -> tuple[Any, ModelVersion, str, int | None]:
    """The registry, a version waiting for approval, the alias it waits for and that alias's holder now; a
    one-line error when the version is not pending."""
    registry = project.registry
    candidate = registry.version(name, version)
    if candidate.approval != "pending":
        state = candidate.approval or "never asked for"
        raise RegistryError(
            f"cannot {verb} {name} v{candidate.version}: it is not waiting for approval (approval: {state}); "
            f"`mlops-nb models show {name}` lists the pending versions"
        )
    alias = candidate.tags.get("approval.alias") or "champion"
    current = registry.alias_holder(name, alias)
    return registry, candidate, alias, current.version if current is not None else None


def approve(
    name: str, version: int | str, by: str | None = None, note: str = "", *, trigger: str = "approval", project=None
) -> Promotion:
    """Approve a version waiting for approval: its alias moves to it (a promotion run with trigger ``approval``).

    Raises:
        RegistryError: the version is not pending.
    """
    check_model_name(name)
    note = _check_caller(trigger, by, note)
    project = current_project(project)
    registry, candidate, alias, previous = _pending(name, version, "approve", project)
    checked_against = _pending_from(candidate)
    if previous not in (checked_against, candidate.version):
        was = f"v{checked_against}" if checked_against is not None else "nobody"
        raise RegistryError(
            f"cannot approve {name} v{candidate.version}: {alias} moved from {was} to v{previous} since its gates "
            f"were checked; promote it again (`mlops-nb models promote {name} {candidate.version} ...`) to check it "
            f"against v{previous}"
        )
    with _Action(project, candidate, alias, "approve", trigger, {"note": note}) as action:
        state = {"approval": "approved", "approval.by": person(by), "approval.note": note}
        if previous == candidate.version:  # it holds the alias already: approved, nothing moves
            action.write(registry.set_tags, name, candidate.version, state)
            action.done([])
            return Promotion(name, candidate.version, alias, "unchanged", previous, run_id=action.run_id)
        event = action.event("approve", candidate, note=note, **{"from": previous}, by=by)
        action.write(registry.set_alias, name, alias, candidate.version)
        action.write(registry.set_tags, name, candidate.version, {**state, **tag_of(event)})
        action.done([event])
    return Promotion(name, candidate.version, alias, "approved", previous, run_id=action.run_id)


def reject(
    name: str, version: int | str, by: str | None = None, note: str = "", *, trigger: str = "api", project=None
) -> Promotion:
    """Reject a version waiting for approval: the alias never moves to it.

    Raises:
        RegistryError: the version is not pending.
    """
    check_model_name(name)
    note = _check_caller(trigger, by, note)
    project = current_project(project)
    registry, candidate, alias, previous = _pending(name, version, "reject", project)
    with _Action(project, candidate, alias, "reject", trigger, {"note": note}) as action:
        event = action.event("reject", candidate, note=note, by=by)
        state = {"approval": "rejected", "approval.by": event["by"], "approval.note": note}
        action.write(registry.set_tags, name, candidate.version, {**state, **tag_of(event)})
        action.done([event])
    return Promotion(name, candidate.version, alias, "rejected", previous, run_id=action.run_id)


def rollback(
    name: str, alias: str = "champion", *, by: str | None = None, note: str = "", trigger: str = "api", project=None
) -> Promotion:
    """Point ``alias`` back at the version that held it before the current one.

    Raises:
        RegistryError: the alias never had an earlier holder.
    """
    check_model_name(name)
    check_alias(alias)
    note = _check_caller(trigger, by, note)
    project = current_project(project)
    registry = project.registry
    current = registry.alias_holder(name, alias)
    stack = holders(read_history(registry, name), alias)
    if current is not None and (not stack or stack[-1] != current.version):
        stack.append(current.version)  # moved outside mlops_nb
    if current is None:
        raise RegistryError(
            f"cannot roll back {name} {alias}: no version holds that alias; `mlops-nb models show {name}` lists "
            "the aliases"
        )
    if len(stack) < 2:
        holder = f"v{current.version}"
        raise RegistryError(
            f"cannot roll back {name} {alias}: it has no earlier holder (held by {holder}); "
            f"`mlops-nb models history {name}` shows its moves"
        )
    target = registry.version(name, stack[-2])
    with _Action(project, target, alias, "rollback", trigger, {"from": current.version, "note": note}) as action:
        event = action.event("rollback", target, note=note, **{"from": current.version}, by=by)
        action.write(registry.set_alias, name, alias, target.version)
        action.write(registry.set_tags, name, target.version, tag_of(event))
        action.done([event])
    return Promotion(name, target.version, alias, "rolled back", current.version, run_id=action.run_id)


def history(name: str, *, project=None) -> list[dict]:
    """Every event of model ``name``, oldest first, read from MLflow: who registered, promoted, refused,
    approved, rejected or rolled back which version, when, why (``action``, ``version``, ``alias``, ``from``,
    ``by``, ``trigger``, ``at``, ``checks``, ``note``, ``run_id``)."""
    project = current_project(project)
    return read_history(project.registry, check_model_name(name))


def load_model(name: str, version: int | str = "@champion", *, project=None) -> Any:
    """The model of a version (``name`` may be MLflow's ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``): from
    the project's artifact store, after its hash check, when mlops_nb registered it here; else as MLflow loads it.

    Example::

        model = mlops_nb.load_model("churn", "@champion")
    """
    if name.startswith("models:/"):  # MLflow's form: models:/NAME@ALIAS or models:/NAME/VERSION
        rest = name[len("models:/") :]
        name, version = (rest.split("@", 1)[0], "@" + rest.split("@", 1)[1]) if "@" in rest else rest.rsplit("/", 1)
    project = current_project(project)
    found = project.registry.version(check_model_name(name), version)
    if found.model_hash and project.artifacts.exists(found.model_hash):
        return project.artifacts.get(found.model_hash)
    return project.registry.load(name, found.version)


def models(name: str | None = None, *, project=None) -> list[dict]:
    """The registered models (``name``, ``aliases``, ``latest``), or with ``name`` that model's versions as dicts
    (``version``, ``aliases``, ``approval``, ``metrics``, ``created``, ``tags``), newest first."""
    project = current_project(project)
    if name is None:
        return project.registry.models()
    return [v.to_dict() for v in project.registry.versions(check_model_name(name), metrics=True)]


def resolve_uri(uri: str, *, project=None) -> str:
    """``models:/NAME@ALIAS`` as the version it points at now (``models:/NAME/VERSION``); other URIs unchanged."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    name, _, alias = uri[len("models:/") :].rpartition("@")
    project = current_project(project)
    number = project.registry.alias_version(check_model_name(name), alias)
    if number is None:
        raise ModelNotFoundError(
            f"model {name!r} has no alias {alias!r}; `mlops-nb models show {name}` lists its aliases"
        )
    return f"models:/{name}/{number}"
