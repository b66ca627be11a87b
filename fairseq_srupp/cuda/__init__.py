"""CUDA fast path of the SRU recurrence: sru_recurrence.cu, compiled by CuPy (NVRTC) on first use.

Importing this package compiles nothing and does not import CuPy; :mod:`.launcher` does both lazily.
"""
from typing import Optional

import torch

INSTALL_HINT = "pip install cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13), or pip install 'fairseq-srupp[cuda]'"


def unavailable_reason() -> Optional[str]:
    """None when the kernel can run here (a CUDA device and an importable CuPy), else why it cannot."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    from .launcher import cupy_import_error

    error = cupy_import_error()
    return None if error is None else f"CuPy does not import ({error}); install it with: {INSTALL_HINT}"


def is_available() -> bool:
    return unavailable_reason() is None
