"""Public entry point of the SRU recurrence: validates arguments, then picks a backend.

Backends: ``ref`` (plain PyTorch, :mod:`recurrence_ref`) and the fast paths registered in
:mod:`fairseq_srupp.modules.recurrence_backends`. ``SRUPP_BACKEND=auto|ref|cuda`` forces a choice.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .recurrence_ref import sru_recurrence_ref


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
    return sru_recurrence_ref(U, x, weight_c, bias, c0, mask_pad, dropout_mask)
