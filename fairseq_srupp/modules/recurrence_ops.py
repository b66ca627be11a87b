"""The recurrence as PyTorch custom ops (namespace ``srupp``); they only wire tensors to a backend.

    srupp::recurrence_forward(str backend, Tensor U, Tensor x, Tensor weight_c, Tensor bias, Tensor? c0,
        Tensor? mask_pad, Tensor? dropout_mask, bool store_c) -> (Tensor h, Tensor c_last, Tensor c_all)
    srupp::recurrence_backward(str backend, Tensor U, Tensor x, Tensor weight_c, Tensor bias, Tensor? c0,
        Tensor? mask_pad, Tensor? dropout_mask, Tensor c_all, Tensor grad_h, Tensor? grad_c_last)
        -> (Tensor grad_U, Tensor grad_x, Tensor grad_weight_c, Tensor grad_bias, Tensor grad_c0)

`backend` names the implementation: ``cpu`` (the fused C++ loop, :mod:`.recurrence_cpu`), ``cuda`` (the CuPy
kernel, :mod:`fairseq_srupp.cuda.launcher`) or ``ref`` (plain PyTorch, :mod:`.recurrence_ref`); the public
:func:`.recurrence.sru_recurrence` picks it outside any traced graph, so one op serves every device and the
tests can run the CUDA launcher on CPU tensors (tests/kernel_emulation.py). Every backend module provides
``forward(inputs, store_c) -> (h, c_last, c_all)`` and ``backward(inputs, c_all, grad_h, grad_c_last)
-> (grad_U, grad_x, grad_weight_c, grad_bias, grad_c0)``. Building a backend (the C++ extension, the NVRTC
compile) happens inside its functions, which torch.compile never traces (a custom op is one node of the graph;
its fake implementation below gives the shapes).

Shapes: U (T, B, 3, d), x and h (T, B, d), weight_c and bias (2d,), c0, c_last and dropout_mask (B, d), mask_pad
(T, B) bool. h has U's dtype; c_last and c_all the math dtype (float64 for float64 U, else float32). c_all holds
every c_t when store_c (the backward recomputes the gates from it), else it is empty (0, B, d); grad_c0 is
empty (0,) without c0. mask_pad and dropout_mask get no gradient. The ops never cast under autocast: the
backends take the storage dtype as it comes (16-bit U stays 16-bit) and compute in fp32.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..cuda import launcher as cuda_launcher
from . import recurrence_cpu, recurrence_ref
from .recurrence_ref import RecurrenceInputs, math_dtype

BACKENDS = {"ref": recurrence_ref, "cpu": recurrence_cpu, "cuda": cuda_launcher}


def _backend(name: str):
    if name not in BACKENDS:
        raise ValueError(f"srupp recurrence op: backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


@torch.library.custom_op("srupp::recurrence_forward", mutates_args=())
def recurrence_forward(backend: str, U: Tensor, x: Tensor, weight_c: Tensor, bias: Tensor, c0: Optional[Tensor],
                       mask_pad: Optional[Tensor], dropout_mask: Optional[Tensor],
                       store_c: bool) -> Tuple[Tensor, Tensor, Tensor]:
    h, c_last, c_all = _backend(backend).forward(
        RecurrenceInputs(U, x, weight_c, bias, c0, mask_pad, dropout_mask), store_c)
    if c_all is None:
        c_all = c_last.new_empty(0, *c_last.shape)
    return h, c_last, c_all


@recurrence_forward.register_fake
def _recurrence_forward_fake(backend, U, x, weight_c, bias, c0, mask_pad, dropout_mask, store_c):
    T, B, _, d = U.shape
    acc = math_dtype(U.dtype)
    return U.new_empty(T, B, d), U.new_empty(B, d, dtype=acc), U.new_empty(T if store_c else 0, B, d, dtype=acc)


@torch.library.custom_op("srupp::recurrence_backward", mutates_args=())
def recurrence_backward(backend: str, U: Tensor, x: Tensor, weight_c: Tensor, bias: Tensor, c0: Optional[Tensor],
                        mask_pad: Optional[Tensor], dropout_mask: Optional[Tensor], c_all: Tensor, grad_h: Tensor,
                        grad_c_last: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    grad_U, grad_x, grad_weight_c, grad_bias, grad_c0 = _backend(backend).backward(
        RecurrenceInputs(U, x, weight_c, bias, c0, mask_pad, dropout_mask), c_all, grad_h, grad_c_last)
    if grad_c0 is None:
        grad_c0 = U.new_empty(0)
    return grad_U, grad_x, grad_weight_c, grad_bias, grad_c0


@recurrence_backward.register_fake
def _recurrence_backward_fake(backend, U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all, grad_h,
                              grad_c_last):
    grad_c0 = U.new_empty(0) if c0 is None else c0.new_empty(c0.shape)
    return (U.new_empty(U.shape), x.new_empty(x.shape), weight_c.new_empty(weight_c.shape),
            bias.new_empty(bias.shape), grad_c0)


def _setup_context(ctx, inputs, output) -> None:
    backend, U, x, weight_c, bias, c0, mask_pad, dropout_mask, store_c = inputs
    ctx.backend = backend
    ctx.has_c0 = c0 is not None
    if store_c:  # else no input needs a gradient (recurrence_op decides) and nothing is saved
        ctx.save_for_backward(U, x, weight_c, bias, c0, mask_pad, dropout_mask, output[2])
    ctx.mark_non_differentiable(output[2])


def _backward(ctx, grad_h: Tensor, grad_c_last: Optional[Tensor], _grad_c_all):
    U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all = ctx.saved_tensors
    if grad_h is None:  # only c_last was used
        grad_h = U.new_zeros(U.shape[0], U.shape[1], U.shape[3])
    grad_U, grad_x, grad_weight_c, grad_bias, grad_c0 = recurrence_backward(
        ctx.backend, U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all, grad_h, grad_c_last)
    return (None, grad_U, grad_x, grad_weight_c, grad_bias, grad_c0 if ctx.has_c0 else None,
            None, None, None)


recurrence_forward.register_autograd(_backward, setup_context=_setup_context)


def recurrence_op(backend: str, U: Tensor, x: Tensor, weight_c: Tensor, bias: Tensor, c0: Optional[Tensor] = None,
                  mask_pad: Optional[Tensor] = None, dropout_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """h (T, B, d) and c_last (B, d) from the forward op of `backend`, without validation (see
    sru_recurrence); every c_t is stored for the backward only when some input needs a gradient."""
    store_c = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (U, x, weight_c, bias, c0))
    h, c_last, _ = recurrence_forward(backend, U, x, weight_c, bias, c0, mask_pad, dropout_mask, store_c)
    return h, c_last
