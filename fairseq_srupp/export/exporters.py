"""torch.export of the step module and the scorer, ONNX export of the step."""
from typing import Tuple

import torch
from torch.export import Dim, ExportedProgram

from .scorer import SRUppScorer
from .step import STEP_INPUTS, STEP_OUTPUTS, SRUppStep

# torch.export specialises dimensions of size 1, so the examples that keep the batch (and the
# scorer's length) symbolic have two rows (positions)
EXAMPLE_ROWS = 2
ONNX_OPSET = 18


def step_example(step: SRUppStep, batch_size: int, token: int) -> Tuple[torch.Tensor, ...]:
    """(tokens (B, 1), c, kv, position) for a first step from `token` (e.g. </s>)."""
    return (torch.full((batch_size, 1), token, dtype=torch.long), *step.initial_state(batch_size))


def _step_dynamic_shapes(dynamic_batch: bool):
    if not dynamic_batch:
        return None
    batch = Dim("batch", min=1, max=4096)
    return {"tokens": {0: batch}, "c": {1: batch}, "kv": {2: batch}, "position": None}


def export_step(step: SRUppStep, token: int, dynamic_batch: bool = True,
                batch_size: int = 1) -> ExportedProgram:
    """torch.export of one step; the batch is symbolic when `dynamic_batch`, else `batch_size`."""
    rows = EXAMPLE_ROWS if dynamic_batch else batch_size
    with torch.no_grad():
        return torch.export.export(step, step_example(step, rows, token),
                                   dynamic_shapes=_step_dynamic_shapes(dynamic_batch))


def export_step_onnx(step: SRUppStep, path: str, token: int, dynamic_batch: bool = True,
                     batch_size: int = 1, external_data: bool = False) -> None:
    """ONNX (opset ONNX_OPSET, standard ops only) of one step, weights inside the file unless
    `external_data` (then beside it, path + ".data"); inputs and outputs named STEP_INPUTS /
    STEP_OUTPUTS."""
    rows = EXAMPLE_ROWS if dynamic_batch else batch_size
    with torch.no_grad():
        torch.onnx.export(step, step_example(step, rows, token), path, dynamo=True,
                          input_names=list(STEP_INPUTS), output_names=list(STEP_OUTPUTS),
                          dynamic_shapes=_step_dynamic_shapes(dynamic_batch),
                          opset_version=ONNX_OPSET, external_data=external_data, verbose=False)


def export_scorer(scorer: SRUppScorer, token: int) -> ExportedProgram:
    """torch.export of the full-sequence scorer, batch and length symbolic."""
    example = torch.full((EXAMPLE_ROWS, EXAMPLE_ROWS), token, dtype=torch.long)
    dims = {"tokens": {0: Dim("batch", min=1, max=4096), 1: Dim("length", min=1, max=1 << 20)}}
    with torch.no_grad():
        return torch.export.export(scorer, (example,), dynamic_shapes=dims)
