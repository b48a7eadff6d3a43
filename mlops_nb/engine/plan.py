"""Planning a run without a kernel: which steps the cache answers, which a partial run selects, and what the
selected steps take from earlier runs.

A step's key is computable before any kernel starts when its upstream steps are cache hits (their recorded
outputs give the input hashes); when every step is a hit, the run needs no kernel at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.records import ArtifactRef
from ..exceptions import MlopsError
from ..pipeline.notebook import Pipeline, Step
from .cache import cache_key, key_parts, reusable


@dataclass
class PlannedStep:
    """What the planner knows of a step before any kernel starts.

    Attributes:
        step: the step.
        key: its cache key, when every input's hash is known (None otherwise).
        parts: the key's parts.
        hit: the earlier step run whose outputs it would reuse, if any.
    """

    step: Step
    key: str | None
    parts: dict | None
    hit: Any


def plan(project, pipeline: Pipeline, params: dict[str, Any], no_cache: bool = False) -> list[PlannedStep]:
    """Each step's cache key and cache hit, computed from the records alone (no kernel).

    A step's input hashes are known when its upstream step is a hit (the hit's recorded outputs); otherwise the
    step must run and so must everything downstream of it.
    """
    store = project.metadata
    planned: dict[str, PlannedStep] = {}
    with store.batch():
        candidates = store.cached_candidates(pipeline.name) if not no_cache else {}
        for step in pipeline.steps:
            hashes = _input_hashes(step, planned)
            if hashes is None:
                planned[step.name] = PlannedStep(step, None, None, None)
                continue
            parts = key_parts(pipeline, step, hashes, params, project.settings.library_versions)
            key = cache_key(parts)
            hit = None
            if not (no_cache or step.no_cache):
                found = candidates.get(key) or store.find_cached(key)
                if reusable(project, found, step):
                    hit = found
            planned[step.name] = PlannedStep(step, key, parts, hit)
    return [planned[s.name] for s in pipeline.steps]


def _input_hashes(step: Step, planned: dict[str, PlannedStep]) -> dict[str, str] | None:
    """The hashes of a step's inputs, when every upstream step is a planned hit; else None."""
    hashes = {}
    for name, producer in step.upstream.items():
        upstream = planned.get(producer)
        if upstream is None or upstream.hit is None or name not in upstream.hit.outputs:
            return None
        hashes[name] = upstream.hit.outputs[name].hash
    return hashes


def fully_cached(pipeline: Pipeline, planned: list[PlannedStep]) -> bool:
    """Whether every step of a pipeline with steps is a planned cache hit (the run needs no kernel)."""
    return bool(pipeline.steps) and all(p.hit is not None for p in planned)


def cached_records(planned: list[PlannedStep]) -> list[dict]:
    """The ``cached`` step runs of planned cache hits (every step of a fully cached run, or the hits a runner
    records before its kernel starts), as :meth:`MetadataStore.record_steps` takes them."""
    records = []
    producers = {p.step.name: p.hit.id for p in planned}
    for p in planned:
        inputs = {n: p.hit.inputs[n] for n in [*p.step.inputs, *p.step.reads] if n in p.hit.inputs}
        sources = {n: producers[up] for n, up in p.step.upstream.items() if n in inputs and up in producers}
        records.append(
            {
                "step": p.step.name,
                "status": "cached",
                "why": f"cached from run {p.hit.run_id}",
                "cache_key": p.key,
                "cell_index": p.step.cell_index,
                "inputs": inputs,
                "sources": sources,
                "key_parts": p.parts,
                "outputs": {n: p.hit.outputs[n] for n in p.step.outputs},
                "cached_from": p.hit.id,
            }
        )
    return records


# Partial runs -------------------------------------------------------------------------------------------------------
def ancestors(pipeline: Pipeline, names: set[str]) -> set[str]:
    """Every step that ``names`` depend on, directly or not."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        step = pipeline.step(todo.pop())
        for up in step.upstream.values():
            if up not in found:
                found.add(up)
                todo.append(up)
    return found


def select_steps(pipeline: Pipeline, from_: str | None = None, to: str | None = None, only=None) -> set[str]:
    """The steps a partial run runs: ``--only`` these, ``--from`` a step and everything after it, ``--to`` a step
    and everything it needs (both: the steps between). Unknown names raise with the list of steps."""
    names = [s.name for s in pipeline.steps]
    for name in [from_, to, *(only or [])]:
        if name is not None and name not in names:
            raise MlopsError(f"{pipeline.path.name} has no step {name!r}; its steps: {', '.join(names)}")
    selected = set(names)
    if only:
        selected = set(only)
    if from_:
        selected &= {from_, *pipeline.downstream(from_)}
    if to:
        selected &= {to} | ancestors(pipeline, {to})
    return selected


@dataclass
class Prepared:
    """What a run runs, and what a partial run takes from earlier runs for the steps it does not run.

    Attributes:
        selected: the steps to run.
        outputs: step -> its outputs, for the unselected steps the selected ones need.
        records: ``cached`` step runs to record for those steps.
    """

    selected: set[str]
    outputs: dict[str, dict[str, ArtifactRef]] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)


def prepare(project, pipeline: Pipeline, values: dict, selected: set[str]) -> Prepared:
    """Find, before any kernel starts, the outputs of the unselected steps that the selected steps need: a cache
    hit if the planner finds one, else the step's latest successful run. Raises with one line naming the missing
    step and how to produce it."""
    prepared = Prepared(selected)
    needed = ancestors(pipeline, selected) - selected
    if not needed:
        return prepared
    planned = {p.step.name: p for p in plan(project, pipeline, values)}
    producers: dict[str, str] = {}
    for step in pipeline.steps:
        if step.name not in needed:
            continue
        hit = planned[step.name].hit
        why = f"not selected: cached from run {hit.run_id}" if hit else None
        if hit is None:
            hit = project.metadata.latest_succeeded(pipeline.name, step.name)
            why = f"not selected: outputs of its latest run {hit.run_id}" if hit else None
        if hit is None or not all(n in hit.outputs for n in step.outputs):
            consumer = next(
                s.name for s in pipeline.steps if s.name in selected and step.name in ancestors(pipeline, {s.name})
            )
            raise MlopsError(
                f"step {consumer!r} needs the outputs of step {step.name!r}, which has never run; produce them first: "
                f"mlops-nb run {pipeline.path.name} --to {step.name}"
            )
        prepared.outputs[step.name] = {n: hit.outputs[n] for n in step.outputs}
        prepared.records.append(
            {
                "step": step.name,
                "status": "cached",
                "why": why,
                "cache_key": hit.cache_key,
                "cell_index": step.cell_index,
                "inputs": dict(hit.inputs),
                "sources": {n: producers[up] for n, up in step.upstream.items() if up in producers},
                "outputs": prepared.outputs[step.name],
                "cached_from": hit.id,
            }
        )
        producers[step.name] = hit.id
    return prepared


def preamble(pipeline: Pipeline, values: dict[str, Any]) -> list[str]:
    """What every step's kernel runs first: the setup cells and the parameters, in notebook order."""
    cells = []
    for index in sorted(
        [*pipeline.setup_cells, *([pipeline.parameters_cell] if pipeline.parameters_cell is not None else [])]
    ):
        if index == pipeline.parameters_cell:
            cells.append("\n".join(f"{name} = {value!r}" for name, value in values.items()))
        else:
            cells.append(pipeline.cells[index]["source"])
    return cells
