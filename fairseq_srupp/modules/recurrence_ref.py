"""Plain PyTorch reference of the SRU elementwise recurrence (SPEC.md section 1.5).

This file is the executable specification: every fast path is tested against it.

Shapes (time-major, as everywhere in fairseq_srupp):
    U            (T, B, 3, d)  planes: [:, :, 0] candidate u0, [:, :, 1] forget pre-activation u1,
                               [:, :, 2] reset pre-activation u2
    x            (T, B, d)     skip input (the layer input, unscaled)
    weight_c     (2 * d,)      [v_f | v_r], peephole weights on c_{t-1}
    bias         (2 * d,)      [b_f | b_r]
    c0           (B, d)        initial cell state, or None for zeros
    mask_pad     (T, B) bool   True marks a padded step, or None
    dropout_mask (B, d)        variational mask already scaled by 1/(1-p), or None

For every t (with g the identity):
    f_t = sigmoid(u1 + v_f * c_{t-1} + b_f)
    r_t = sigmoid(u2 + v_r * c_{t-1} + b_r)
    c_t = f_t * c_{t-1} + (1 - f_t) * u0
    h_t = x_t + m * r_t * (c_t - x_t)
At a padded step c_t = c_{t-1} and h_t = 0.

Math runs in float32 (float64 when U is float64); h is returned in U's dtype and the last c in the
math dtype, so the running state never drops below float32.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor


class RecurrenceInputs(NamedTuple):
    """The recurrence's inputs as every backend (this module's forward/backward, recurrence_cpu,
    cuda.launcher) takes them; shapes as in the module docstring."""
    U: Tensor
    x: Tensor
    weight_c: Tensor
    bias: Tensor
    c0: Optional[Tensor] = None
    mask_pad: Optional[Tensor] = None
    dropout_mask: Optional[Tensor] = None


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the recurrence computes in for inputs of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sum_param_grads(param_grads: Tensor, weight_c: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor]:
    """The fused backwards' per-column partials (4, B, d) (rows v_f, v_r, b_f, b_r, math dtype) ->
    grad_weight_c and grad_bias (2d,) in the dtypes of weight_c and bias, summed over B in a fixed
    order (deterministic, no atomics)."""
    # two separate sums: the two results must not share storage (a custom op's outputs may not alias)
    return (param_grads[:2].sum(dim=1).reshape(-1).to(weight_c.dtype),
            param_grads[2:].sum(dim=1).reshape(-1).to(bias.dtype))


def sru_recurrence_ref(
    U: Tensor,
    x: Tensor,
    weight_c: Tensor,
    bias: Tensor,
    c0: Optional[Tensor] = None,
    mask_pad: Optional[Tensor] = None,
    dropout_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Differentiable time loop of the recurrence; returns h (T, B, d) and the last c (B, d)."""
    T, B, _, d = U.shape
    dtype = math_dtype(U.dtype)
    u = U.to(dtype)
    xs = x.to(dtype)
    v_f, v_r = weight_c.to(dtype).view(2, d)
    b_f, b_r = bias.to(dtype).view(2, d)
    c = U.new_zeros(B, d, dtype=dtype) if c0 is None else c0.to(dtype)
    m = None if dropout_mask is None else dropout_mask.to(dtype)
    outputs = []
    # unbind once: indexing U[t] per step would make autograd build a full-size zero gradient
    # for every step in the backward pass (quadratic in T)
    for t, (u_t, x_t) in enumerate(zip(u.unbind(0), xs.unbind(0))):
        u0, u1, u2 = u_t.unbind(1)
        f = torch.sigmoid(u1 + v_f * c + b_f)
        r = torch.sigmoid(u2 + v_r * c + b_r)
        c_new = (c - u0) * f + u0
        gate = r if m is None else m * r
        h = x_t + gate * (c_new - x_t)
        if mask_pad is not None:
            pad = mask_pad[t].unsqueeze(-1)
            c_new = torch.where(pad, c, c_new)
            h = h.masked_fill(pad, 0.0)
        c = c_new
        outputs.append(h)
    h_all = torch.stack(outputs) if outputs else xs.new_zeros(0, B, d)
    return h_all.to(U.dtype), c


# ---------------------------------------------------------------- the reference as an op backend
# The same interface as the fused backends (recurrence_cpu, cuda.launcher), in plain PyTorch without
# autograd: the custom op (recurrence_ops.py) runs it for dtypes and devices no fused loop serves.
def forward(inputs: RecurrenceInputs, store_c: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """h (T, B, d) in U's dtype, c_last (B, d) and, when store_c, every c_t (T, B, d) in the math dtype."""
    U, x, weight_c, bias, c0, mask_pad, dropout_mask = inputs
    T, B, _, d = U.shape
    dtype = math_dtype(U.dtype)
    u, xs, v, b = U.to(dtype), x.to(dtype), weight_c.to(dtype).view(2, d), bias.to(dtype).view(2, d)
    c = U.new_zeros(B, d, dtype=dtype) if c0 is None else c0.to(dtype).clone()
    m = None if dropout_mask is None else dropout_mask.to(dtype)
    h = U.new_empty(T, B, d)
    c_all = U.new_empty(T, B, d, dtype=dtype) if store_c else None
    for t in range(T):
        u0, u1, u2 = u[t].unbind(1)
        f = torch.sigmoid(u1 + v[0] * c + b[0])
        r = torch.sigmoid(u2 + v[1] * c + b[1])
        c_new = (c - u0) * f + u0
        h_t = xs[t] + (r if m is None else m * r) * (c_new - xs[t])
        if mask_pad is not None:
            pad = mask_pad[t].unsqueeze(-1)
            c_new = torch.where(pad, c, c_new)
            h_t = h_t.masked_fill(pad, 0.0)
        c = c_new
        h[t] = h_t
        if c_all is not None:
            c_all[t] = c
    return h, c, c_all


def backward(inputs: RecurrenceInputs, c_all: Tensor, grad_h: Tensor,
             grad_c_last: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """The analytic backward from the c_t the forward stored: grad_U, grad_x, grad_weight_c, grad_bias
    and grad_c0 (None without c0), each in the dtype of its input. A padded step passes the carry
    through and gets zero gradients."""
    U, x, weight_c, bias, c0, mask_pad, dropout_mask = inputs
    T, B, _, d = U.shape
    dtype = math_dtype(U.dtype)
    u, xs, v, b = U.to(dtype), x.to(dtype), weight_c.to(dtype).view(2, d), bias.to(dtype).view(2, d)
    gh_all = grad_h.to(dtype)
    m = torch.ones(B, d, dtype=dtype, device=U.device) if dropout_mask is None else dropout_mask.to(dtype)
    c_first = U.new_zeros(B, d, dtype=dtype) if c0 is None else c0.to(dtype)
    carry = U.new_zeros(B, d, dtype=dtype) if grad_c_last is None else grad_c_last.to(dtype).clone()
    grad_U = U.new_zeros(T, B, 3, d)
    grad_x = x.new_zeros(T, B, d)
    param = U.new_zeros(4, B, d, dtype=dtype)  # rows v_f, v_r, b_f, b_r
    for t in range(T - 1, -1, -1):
        c_prev = c_all[t - 1] if t > 0 else c_first
        u0, u1, u2 = u[t].unbind(1)
        f = torch.sigmoid(u1 + v[0] * c_prev + b[0])
        r = torch.sigmoid(u2 + v[1] * c_prev + b[1])
        c_t = (c_prev - u0) * f + u0
        gh = gh_all[t]
        gc = carry + gh * m * r
        gr = gh * m * (c_t - xs[t]) * r * (1 - r)
        gf = gc * (c_prev - u0) * f * (1 - f)
        new_carry = gc * f + gf * v[0] + gr * v[1]
        step = torch.stack([gc * (1 - f), gf, gr], dim=1)
        step_x = gh * (1 - m * r)
        step_param = torch.stack([gf * c_prev, gr * c_prev, gf, gr])
        if mask_pad is not None:
            keep = ~mask_pad[t].unsqueeze(-1)
            step, step_x = torch.where(keep.unsqueeze(1), step, 0.0), torch.where(keep, step_x, 0.0)
            step_param = torch.where(keep, step_param, 0.0)
            new_carry = torch.where(keep, new_carry, carry)
        grad_U[t], grad_x[t] = step, step_x
        param += step_param
        carry = new_carry
    grad_weight_c, grad_bias = sum_param_grads(param, weight_c, bias)
    return grad_U, grad_x, grad_weight_c, grad_bias, (None if c0 is None else carry.to(c0.dtype))
