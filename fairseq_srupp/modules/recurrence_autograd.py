"""Autograd Functions of the fused recurrence backends; they only wire tensors to a backend.

Each backend module (:mod:`fairseq_srupp.cuda.launcher`, :mod:`.recurrence_cpu`) provides
``forward(U, x, weight_c, bias, c0, mask_pad, dropout_mask, store_c) -> (h, c_last, c_all)`` and
``backward(U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all, grad_h, grad_c_last)
-> (grad_U, grad_x, grad_weight_c, grad_bias, grad_c0)``. Every c_t is saved by the forward (c_all, in the
math dtype) only when some input needs a gradient; the gates are recomputed from it in the backward.

Shapes: U (T, B, 3, d), x and h (T, B, d), weight_c and bias (2d,), c0, c_last and dropout_mask (B, d),
mask_pad (T, B) bool. mask_pad and dropout_mask get no gradient.

custom_fwd/custom_bwd (without cast_inputs) make the backward run under the forward's autocast state; the
backends choose their own dtypes, so autocast never casts the inputs.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.amp import custom_bwd, custom_fwd

from ..cuda import launcher as cuda_launcher
from . import recurrence_cpu


def _forward(ctx, backend, U, x, weight_c, bias, c0, mask_pad, dropout_mask) -> Tuple[Tensor, Tensor]:
    store_c = any(ctx.needs_input_grad[:5])
    h, c_last, c_all = backend.forward(U, x, weight_c, bias, c0, mask_pad, dropout_mask, store_c)
    if store_c:
        ctx.save_for_backward(U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all)
    return h, c_last


def _backward(ctx, backend, grad_h: Tensor, grad_c_last: Optional[Tensor]):
    U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all = ctx.saved_tensors
    grads = backend.backward(U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all, grad_h, grad_c_last)
    needed = ctx.needs_input_grad[:5]
    return tuple(g if need else None for g, need in zip(grads, needed)) + (None, None)


class SRURecurrenceCudaFn(torch.autograd.Function):
    """The CuPy kernel (fairseq_srupp/cuda) with its analytic backward."""

    @staticmethod
    @custom_fwd(device_type="cuda")
    def forward(ctx, U, x, weight_c, bias, c0, mask_pad, dropout_mask):
        return _forward(ctx, cuda_launcher, U, x, weight_c, bias, c0, mask_pad, dropout_mask)

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, grad_h, grad_c_last):
        return _backward(ctx, cuda_launcher, grad_h, grad_c_last)


class SRURecurrenceCpuFn(torch.autograd.Function):
    """The fused C++ loop (csrc/sru_cpu.cpp) with its analytic backward; float32 and float64 only."""

    @staticmethod
    @custom_fwd(device_type="cpu")
    def forward(ctx, U, x, weight_c, bias, c0, mask_pad, dropout_mask):
        return _forward(ctx, recurrence_cpu, U, x, weight_c, bias, c0, mask_pad, dropout_mask)

    @staticmethod
    @custom_bwd(device_type="cpu")
    def backward(ctx, grad_h, grad_c_last):
        return _backward(ctx, recurrence_cpu, grad_h, grad_c_last)
