"""Registry events: what happened to a model version (registered, refused, pending, approved, rejected, moved an
alias, rolled back), who did it, when and why.

MLflow is the source of truth: each event is a version tag ``mlops_nb.event.<time>`` holding the event as JSON,
on the version it concerns (for an alias move, the version that received the alias), so a remote registry keeps
the whole history. The metadata store indexes the events (``model_events``) with the run or step run that did
them; :func:`read_history` reads them back from MLflow and :func:`reindex` rebuilds the index from there.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
from typing import Any

from ..core.clock import iso, utcnow

EVENT_TAG = "mlops_nb.event."
MOVES = ("promote", "approve", "rollback")
"""Actions that move an alias."""


def person(by: str | None) -> str:
    """Who acts: ``by``, else ``$MLOPS_NB_USER``, else the login name."""
    if by:
        return str(by)
    try:
        return os.environ.get("MLOPS_NB_USER") or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def register_key(version) -> str:
    """The index key of a version's registration: its name, number and creation time (a store that was reset
    numbers its versions from 1 again)."""
    created = version.created
    stamp = created.strftime("%Y%m%dT%H%M%S%f")[:-3] if created else "unknown"
    return f"register:{version.name}/{version.version}@{stamp}"


def new_event(
    action: str, model: str, version: int, alias: str | None = None, *, by: str | None = None, trigger=None, **fields
) -> dict[str, Any]:
    """A new event with its time and unique key (the MLflow tag that will hold it; a registration's is given as
    ``key=``, see :func:`register_key`)."""
    at = utcnow()
    key = fields.pop("key", None) or EVENT_TAG + at.strftime("%Y%m%dT%H%M%S%f") + secrets.token_hex(2)
    event = {"key": key, "at": iso(at), "model": model, "version": int(version), "alias": alias, "action": action}
    event.update(by=person(by), trigger=trigger, **fields)
    return event


def tag_of(event: dict) -> dict[str, str]:
    """The version tag that keeps ``event`` in MLflow."""
    body = {k: v for k, v in event.items() if k != "key" and v is not None}
    return {event["key"]: json.dumps(body, sort_keys=True, default=str)}


def events_of(version) -> list[dict]:
    """The events a :class:`~mlops_nb.store.registry.ModelVersion` carries, its registration first."""
    found = [
        {
            "key": register_key(version),
            "at": iso(version.created) if version.created else None,
            "model": version.name,
            "version": version.version,
            "alias": None,
            "action": "register",
            "by": version.tags.get("mlops_nb.by"),
            "run_id": version.tags.get("mlops_nb.run_id"),
            "step": version.tags.get("mlops_nb.step"),
        }
    ]
    for key, value in version.tags.items():
        if key.startswith(EVENT_TAG):
            try:
                body = json.loads(value)
            except ValueError:
                continue  # a tag someone else wrote
            if isinstance(body, dict):
                found.append({**body, "key": key, "model": version.name, "version": version.version})
    return found


def read_history(registry, name: str) -> list[dict]:
    """Every event of model ``name``, oldest first, read from the registry (the source of truth)."""
    found = [event for version in registry.versions(name) for event in events_of(version)]
    return sorted(found, key=lambda e: (e.get("at") or "", e["key"]))


def holders(events: list[dict], alias: str) -> list[int]:
    """The stack of versions that held ``alias``: each move pushes its version, each rollback pops one."""
    stack: list[int] = []
    for event in events:
        if event.get("alias") != alias or event.get("action") not in MOVES:
            continue
        if event["action"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != event["version"]:
                stack.append(event["version"])
            continue
        if not stack and event.get("from") is not None:  # the alias was set before mlops_nb moved it
            stack.append(int(event["from"]))
        if not stack or stack[-1] != event["version"]:
            stack.append(event["version"])
    return stack


def index_outside_step(project, events: list[dict], run_id: str | None = None) -> None:
    """Index events done outside a step (inside one, the engine indexes them with the step run)."""
    project.metadata.record_model_events(events, run_id=run_id)


def reindex(project, name: str) -> int:
    """Rebuild the metadata store's index of model ``name``'s events from the registry (MLflow, the source of
    truth); return how many events were missing. An event done outside a step whose promotion run is missing (the
    process died between writing MLflow and the metadata store) gets its run back."""
    store = project.metadata
    events = read_history(project.registry, name)
    runs = {e["run_id"] for e in events if e.get("run_id") and e.get("trigger")}
    known = set(store.sql("SELECT id FROM runs WHERE id IN (SELECT unnest(?::VARCHAR[]))", [sorted(runs)]).id)
    restored = 0
    for event in events:
        run_id = event.get("run_id")
        if run_id in runs and run_id not in known:
            params = {"model": event["model"], "version": event["version"], "alias": event.get("alias")}
            store.record_run(
                kind="promotion",
                status="failed" if event["action"] == "refuse" else "succeeded",
                trigger=event["trigger"],
                fired_by=f"models:/{event['model']}/{event['version']}",
                params={**params, "action": event["action"], "restored": True},
                run_id=run_id,
                started_at=_parse_time(event.get("at")),
                model_events=[event],
            )
            known.add(run_id)
            restored += 1
    return restored + store.record_model_events(events)


def _parse_time(text: str | None):
    from datetime import UTC, datetime

    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
