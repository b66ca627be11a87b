"""Build, load and call the fused CPU recurrence (csrc/sru_cpu.cpp).

The C++ source is compiled on first use with torch.utils.cpp_extension.load (needs a C++ compiler and
ninja) into torch's extension cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), so later
processes only load it. Nothing is built at import time. It handles float32 and float64 tensors.

Shapes as in :mod:`recurrence_ref`: U (T, B, 3, d), x (T, B, d), weight_c and bias (2d,), c0 and
dropout_mask (B, d), mask_pad (T, B) bool.
"""
import functools
import hashlib
import importlib.resources
import threading
from typing import Optional, Tuple

import torch
from torch import Tensor

from .recurrence_ref import RecurrenceInputs, sum_param_grads

SUPPORTED_DTYPES = (torch.float32, torch.float64)
_OPS_NAMESPACE = "srupp_cpu"  # TORCH_LIBRARY name in csrc/sru_cpu.cpp
_build_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _build() -> Optional[str]:
    """Compiles and loads the extension once per process; returns None on success, else the error."""
    from torch.utils.cpp_extension import load

    source = importlib.resources.files(__package__).joinpath("csrc", "sru_cpu.cpp")
    try:
        with importlib.resources.as_file(source) as path:
            # one build folder per source path and content: two checkouts (or versions) on one machine
            # would otherwise rebuild over each other in every process
            digest = hashlib.sha256(str(path).encode() + path.read_bytes()).hexdigest()[:12]
            load(name=f"{_OPS_NAMESPACE}_{digest}", sources=[str(path)],
                 extra_cflags=["-O3", "-fno-trapping-math"], is_python_module=False)
    except Exception as error:  # no compiler, no ninja, or a failed build: the caller falls back
        return f"{type(error).__name__}: {error}"
    return None


def build_error() -> Optional[str]:
    """Builds the extension on the first call. None when it is usable, else why it is not."""
    with _build_lock:
        return _build()


def _ops():
    error = build_error()
    if error is not None:
        raise RuntimeError(f"the fused CPU recurrence could not be built: {error}")
    return getattr(torch.ops, _OPS_NAMESPACE)


def _as(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if t is None else t.to(dtype).contiguous()


def _prepared(inputs: RecurrenceInputs) -> tuple:
    """The inputs as the C++ loop takes them: contiguous, the small tensors in U's dtype."""
    U, x, weight_c, bias, c0, mask_pad, dropout_mask = inputs
    dtype = U.dtype
    return (U.contiguous(), x.contiguous(), _as(weight_c, dtype), _as(bias, dtype), _as(c0, dtype),
            None if mask_pad is None else mask_pad.contiguous(), _as(dropout_mask, dtype))


def forward(inputs: RecurrenceInputs, store_c: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Returns h (T, B, d), c_last (B, d) and, when store_c, c_all (T, B, d) for the backward, all in U's
    dtype (the math dtype on the CPU)."""
    h, c_last, c_all = _ops().forward(*_prepared(inputs), store_c)
    return h, c_last, (c_all if store_c else None)


def backward(inputs: RecurrenceInputs, c_all: Tensor, grad_h: Tensor,
             grad_c_last: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Returns grad_U, grad_x, grad_weight_c, grad_bias and grad_c0 (None without c0), each in the dtype of
    the input it belongs to. The weight_c/bias gradients are summed over B here, in a fixed order."""
    dtype = inputs.U.dtype
    grad_U, grad_x, grad_c0, param_grads = _ops().backward(
        *_prepared(inputs), c_all, _as(grad_h, dtype), _as(grad_c_last, dtype))
    grad_weight_c, grad_bias = sum_param_grads(param_grads, inputs.weight_c, inputs.bias)
    c0 = inputs.c0
    return grad_U, grad_x, grad_weight_c, grad_bias, (None if c0 is None else grad_c0.to(c0.dtype))
