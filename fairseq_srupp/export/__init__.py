"""Deployment of a trained SRU++ LM: a static-shape generation step (torch.export, ONNX), the
full-sequence scorer (torch.export), and `srupp-export` (cli.py), which writes what the
torch-free runtime `srupp_runtime` serves. Needs fairseq and, for ONNX, `pip install
'fairseq-srupp[export]'`."""
from .exporters import export_scorer, export_step, export_step_onnx
from .scorer import SRUppScorer
from .step import STEP_INPUTS, STEP_OUTPUTS, SRUppStep, memory_size

__all__ = ["STEP_INPUTS", "STEP_OUTPUTS", "SRUppScorer", "SRUppStep", "export_scorer",
           "export_step", "export_step_onnx", "memory_size"]
