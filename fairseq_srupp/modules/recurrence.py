"""Public entry point of the SRU recurrence: validates arguments, then picks a backend.

Backends: ``ref`` (plain PyTorch, :mod:`.recurrence_ref`), ``cuda`` (the CuPy kernel in
fairseq_srupp/cuda) and ``cpu`` (the fused C++ loop, :mod:`.recurrence_cpu`), all behind the custom ops
of :mod:`.recurrence_ops` (torch.ops.srupp.*; torch.compile and torch.export see one node). The
environment variable SRUPP_BACKEND (read at every call; under torch.compile at tracing, and the
compiled code guards on it) chooses:

- ``auto`` (default): CUDA tensors take the kernel when CuPy imports, else the reference with one
  warning; float32/float64 CPU tensors take the fused CPU loop when it builds, else the reference
  with one warning; other CPU dtypes (float16, bfloat16) take the reference.
- ``cuda``: the kernel, or a RuntimeError that says how to install CuPy.
- ``ref``: the reference everywhere.
"""
import os
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import cuda
from . import recurrence_cpu
from .recurrence_ops import recurrence_op

BACKEND_CHOICES = ("auto", "ref", "cuda")
_warned = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned and not torch.compiler.is_compiling():  # eager calls warn
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# Whether a backend can run. Building it (a lock, a C++ or NVRTC compile) must stay out of torch.compile's
# graphs: dynamo runs these at tracing time and keeps their answers as constants.
@torch.compiler.assume_constant_result
def _cuda_unavailable_reason() -> Optional[str]:
    return cuda.unavailable_reason()


@torch.compiler.assume_constant_result
def _cpu_build_error() -> Optional[str]:
    return recurrence_cpu.build_error()


def select_backend(device: torch.device, dtype: torch.dtype) -> str:
    """'cuda', 'cpu' (fused loop) or 'ref' for inputs on `device` with `dtype`, following SRUPP_BACKEND."""
    choice = os.environ.get("SRUPP_BACKEND", "auto").strip().lower() or "auto"
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"SRUPP_BACKEND must be one of {BACKEND_CHOICES}, got {choice!r}")
    if choice == "ref":
        return "ref"
    if device.type == "cuda":
        reason = _cuda_unavailable_reason()
        if reason is None:
            return "cuda"
        if choice == "cuda":
            raise RuntimeError(f"SRUPP_BACKEND=cuda, but the CUDA recurrence kernel cannot run: {reason}")
        _warn_once("cuda", f"sru_recurrence: the CUDA kernel is unavailable ({reason}); "
                           "falling back to the much slower reference loop")
        return "ref"
    if choice == "cuda":
        raise RuntimeError(f"SRUPP_BACKEND=cuda needs CUDA tensors, got tensors on {device}")
    if device.type == "cpu" and dtype in recurrence_cpu.SUPPORTED_DTYPES:
        error = _cpu_build_error()
        if error is None:
            return "cpu"
        _warn_once("cpu", f"sru_recurrence: the fused CPU loop could not be built ({error}); "
                          "falling back to the slower reference loop")
    return "ref"


def _check(name: str, t: Optional[Tensor], shape: tuple, U: Tensor) -> None:
    if t is None:
        return
    if tuple(t.shape) != shape:
        raise ValueError(f"sru_recurrence: {name} must have shape {shape}, got {tuple(t.shape)}")
    if t.device != U.device:
        raise ValueError(f"sru_recurrence: {name} is on {t.device} but U is on {U.device}")


def sru_recurrence(
    U: Tensor,
    x: Tensor,
    weight_c: Tensor,
    bias: Tensor,
    c0: Optional[Tensor] = None,
    mask_pad: Optional[Tensor] = None,
    dropout_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """SRU elementwise recurrence over time.

    Args:
        U: (T, B, 3, d) candidate, forget and reset pre-activations.
        x: (T, B, d) skip input, same dtype as U.
        weight_c: (2*d,) peephole weights [v_f | v_r].
        bias: (2*d,) gate biases [b_f | b_r].
        c0: (B, d) initial state or None (zeros).
        mask_pad: (T, B) bool, True at padded steps (they carry c and output 0), or None.
        dropout_mask: (B, d) variational mask (already scaled by 1/(1-p)), or None.

    Returns:
        h: (T, B, d) in U's dtype; c_last: (B, d) in float32 (float64 for float64 input).
    """
    if U.dim() != 4 or U.shape[2] != 3:
        raise ValueError(f"sru_recurrence: U must have shape (T, B, 3, d), got {tuple(U.shape)}")
    T, B, _, d = U.shape
    if x.dtype != U.dtype:
        raise ValueError(f"sru_recurrence: x has dtype {x.dtype} but U has {U.dtype}")
    _check("x", x, (T, B, d), U)
    _check("weight_c", weight_c, (2 * d,), U)
    _check("bias", bias, (2 * d,), U)
    _check("c0", c0, (B, d), U)
    _check("mask_pad", mask_pad, (T, B), U)
    _check("dropout_mask", dropout_mask, (B, d), U)
    if mask_pad is not None and mask_pad.dtype != torch.bool:
        raise ValueError(f"sru_recurrence: mask_pad must be bool, got {mask_pad.dtype}")
    backend = select_backend(U.device, U.dtype) if U.numel() > 0 else "ref"
    return recurrence_op(backend, U, x, weight_c, bias, c0, mask_pad, dropout_mask)
