"""The reference recurrence against a scalar float64 loop written from SPEC.md section 1.5."""
import math

import pytest
import torch

from fairseq_srupp.modules import sru_recurrence, sru_recurrence_ref


def scalar_loop(U, x, weight_c, bias, c0, mask_pad, mask):
    """One Python float per (t, b, j), straight from the spec's equations."""
    T, B, _, d = U.shape
    h = [[[0.0] * d for _ in range(B)] for _ in range(T)]
    c_last = [[0.0] * d for _ in range(B)]
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    for b in range(B):
        for j in range(d):
            c = 0.0 if c0 is None else float(c0[b, j])
            m = 1.0 if mask is None else float(mask[b, j])
            for t in range(T):
                if mask_pad is not None and bool(mask_pad[t, b]):
                    continue  # padded: c carried, h stays 0
                u0, u1, u2 = (float(U[t, b, k, j]) for k in range(3))
                f = sig(u1 + float(weight_c[j]) * c + float(bias[j]))
                r = sig(u2 + float(weight_c[d + j]) * c + float(bias[d + j]))
                c = f * c + (1.0 - f) * u0
                xt = float(x[t, b, j])
                h[t][b][j] = xt + m * r * (c - xt)
            c_last[b][j] = c
    return torch.tensor(h, dtype=torch.float64), torch.tensor(c_last, dtype=torch.float64)


def random_inputs(T, B, d, dtype=torch.float64, pad=False, dropout=False, with_c0=True):
    U = torch.randn(T, B, 3, d, dtype=dtype)
    x = torch.randn(T, B, d, dtype=dtype)
    weight_c = torch.empty(2 * d, dtype=dtype).uniform_(-1, 1)
    bias = torch.randn(2 * d, dtype=dtype)
    c0 = torch.randn(B, d, dtype=dtype) if with_c0 else None
    mask_pad = None
    if pad:
        mask_pad = torch.zeros(T, B, dtype=torch.bool)
        mask_pad[-2:, 0] = True  # right padding in row 0
        mask_pad[1, -1] = True  # a pad in the middle of the last row
    mask = None
    if dropout:
        mask = torch.bernoulli(torch.full((B, d), 0.7, dtype=dtype)) / 0.7
    return U, x, weight_c, bias, c0, mask_pad, mask


CASES = [
    dict(T=5, B=2, d=3),
    dict(T=6, B=3, d=4, pad=True),
    dict(T=4, B=2, d=5, dropout=True),
    dict(T=7, B=3, d=2, pad=True, dropout=True, with_c0=False),
    dict(T=1, B=1, d=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_reference_equals_scalar_loop(case):
    inputs = random_inputs(**case)
    h, c_last = sru_recurrence_ref(*inputs)
    h_ref, c_ref = scalar_loop(*inputs)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_last, c_ref, rtol=1e-12, atol=1e-12)


def test_padded_steps_carry_c_and_output_zero():
    U, x, weight_c, bias, c0, mask_pad, _ = random_inputs(6, 3, 4, pad=True)
    h, c_last = sru_recurrence_ref(U, x, weight_c, bias, c0, mask_pad)
    assert torch.all(h[mask_pad] == 0)
    # row 0 is padded at its last two steps: its last c is the c after step T-3
    _, c_before = sru_recurrence_ref(U[:-2, :1], x[:-2, :1], weight_c, bias, c0[:1])
    torch.testing.assert_close(c_last[0], c_before[0])


def test_low_precision_inputs_keep_float32_state():
    U, x, weight_c, bias, c0, _, _ = random_inputs(4, 2, 3, dtype=torch.float32)
    h, c_last = sru_recurrence_ref(U.half(), x.half(), weight_c, bias, c0)
    assert h.dtype == torch.float16 and c_last.dtype == torch.float32


@pytest.mark.parametrize("pad,dropout", [(False, False), (True, True)])
def test_reference_gradcheck(pad, dropout):
    U, x, weight_c, bias, c0, mask_pad, mask = random_inputs(4, 2, 3, pad=pad, dropout=dropout)
    tensors = [t.requires_grad_() for t in (U, x, weight_c, bias, c0)]

    def fn(U, x, weight_c, bias, c0):
        return sru_recurrence(U, x, weight_c, bias, c0, mask_pad, mask)

    assert torch.autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("bad,message", [
    (dict(U=torch.zeros(4, 2, 4, 3)), "U must have shape"),
    (dict(x=torch.zeros(4, 2, 5)), "x must have shape"),
    (dict(weight_c=torch.zeros(3)), "weight_c must have shape"),
    (dict(c0=torch.zeros(3, 3)), "c0 must have shape"),
    (dict(mask_pad=torch.zeros(4, 2)), "mask_pad must be bool"),
])
def test_bad_shapes_raise_clear_errors(bad, message):
    args = dict(U=torch.zeros(4, 2, 3, 3), x=torch.zeros(4, 2, 3), weight_c=torch.zeros(6),
                bias=torch.zeros(6), c0=None, mask_pad=None)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        sru_recurrence(**args)
