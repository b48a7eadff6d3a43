"""What runs inside a kernel of the ``dag`` and ``dask`` executors, around one step's body.

A per-step notebook is: the setup cells and parameters (already run when the kernel was warmed up), then
``load_inputs(spec, globals())``, the step's body as its own cell, and ``finish(spec, globals())``. The kernel reads
and writes only the artifact store; the result goes back to the driver as a display of type
:data:`RESULT_MIME`, and only the driver writes the metadata store (DESIGN invariant 3).
"""

from __future__ import annotations

import json
from typing import Any

RESULT_MIME = "application/vnd.mlops-nb.step-result+json"


def _step(spec: dict):
    from ...pipeline.notebook import Step

    return Step(name=spec["step"], cell_index=spec["cell_index"], source="", code="", outputs=list(spec["outputs"]))


def load_inputs(spec: dict[str, Any], namespace: dict) -> None:
    """Load the step's inputs from the artifact store into ``namespace`` and make it the running step."""
    from ...core import hooks
    from ...core.records import ArtifactRef
    from ...store.artifacts import ArtifactStore

    store = ArtifactStore(spec["artifact_root"])
    read = {name: ArtifactRef.from_dict(ref) for name, ref in spec["inputs"].items()}
    for name, ref in read.items():
        namespace[name] = store.get(ref)
    hooks.begin_step(
        spec["step"],
        spec.get("run_id"),
        read,
        namespace=namespace,
        sources=spec.get("sources"),
        run_info=spec.get("run"),
    )


def finish(spec: dict[str, Any], namespace: dict) -> dict:
    """Store the step's outputs and display the result for the driver (outputs, what it touched, metrics)."""
    from IPython.display import display

    from ...core import hooks
    from ...store.artifacts import ArtifactStore
    from ..step import metrics_of, store_outputs

    step = _step(spec)
    touched = hooks.end_step() or hooks.ActiveStep(step.name)
    outputs = store_outputs(ArtifactStore(spec["artifact_root"]), step, namespace)
    result = {
        "outputs": {k: v.to_dict() for k, v in {**touched.outputs, **outputs}.items()},
        "inputs": {k: v.to_dict() for k, v in touched.inputs.items()},
        "metrics": metrics_of(namespace, step),
        "model_events": touched.events,
    }
    display({RESULT_MIME: result, "text/plain": f"{step.name}: {', '.join(outputs) or 'no outputs'} stored"}, raw=True)
    return result


def salvage(spec: dict[str, Any]) -> dict:
    """After the body failed: display what it did to other stores before failing (a registered model version, a
    feature segment, registry events), so that the driver records it with the failed step run."""
    from IPython.display import display

    from ...core import hooks

    touched = hooks.end_step() or hooks.ActiveStep(spec["step"])
    result = {
        "failed": True,
        "outputs": {k: v.to_dict() for k, v in touched.outputs.items()},
        "inputs": {k: v.to_dict() for k, v in touched.inputs.items()},
        "model_events": touched.events,
    }
    display({RESULT_MIME: result, "text/plain": f"{spec['step']}: what it touched before failing"}, raw=True)
    return result


class StepCells(list):
    """The cells that run one step in a warm kernel (load the inputs, the body, store the outputs), with
    ``on_error``: the cell a kernel runs instead of the rest when the body fails (:func:`salvage`)."""

    on_error: str | None = None


def step_cells(spec: dict[str, Any], body: str) -> StepCells:
    """The three cells that run one step in a warm kernel, and the one that runs if its body fails."""
    encoded = json.dumps(spec)
    cells = StepCells(
        [
            f"import json as _json\nfrom {__name__} import load_inputs\nload_inputs(_json.loads({encoded!r}), globals())",
            body,
            f"from {__name__} import finish\nfinish(_json.loads({encoded!r}), globals());",
        ]
    )
    cells.on_error = f"from {__name__} import salvage\nsalvage(_json.loads({encoded!r}));"
    return cells
