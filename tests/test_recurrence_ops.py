"""The custom ops torch.ops.srupp.recurrence_forward / recurrence_backward on every backend CI has.

torch.library.opcheck runs each op through its schema, fake (meta) implementation, autograd registration
and AOT dispatch (with dynamic shapes) and compares with the real implementation: for the reference, the
fused C++ loop and the CUDA kernel emulated on the CPU (tests/kernel_emulation.py), with masks, dropout mask,
c0, float32 and float64, odd shapes and non-contiguous inputs. The reference backend's analytic backward is
also checked against autograd through the spec (sru_recurrence_ref).
"""
import pytest
import torch

import kernel_emulation
from fairseq_srupp.modules import sru_recurrence_ref
from fairseq_srupp.modules.recurrence_ops import recurrence_op

OPS = torch.ops.srupp
BACKENDS = ("ref", "cpu", "cuda")
CASES = {  # id: (T, B, d, pad, dropout, c0, contiguous)
    "plain": (3, 2, 4, False, False, False, True),
    "all-odd": (5, 3, 7, True, True, True, True),
    "noncontiguous": (4, 3, 5, True, False, True, False),
}


def make_inputs(case, dtype, requires_grad=False):
    T, B, d, pad, dropout, c0, contiguous = CASES[case]
    g = torch.Generator().manual_seed(0)
    if contiguous:
        U = torch.randn(T, B, 3, d, generator=g, dtype=dtype)
        x = torch.randn(T, B, d, generator=g, dtype=dtype)
    else:  # batch-major storage seen time-major, as a transposed activation would be
        U = torch.randn(B, T, 3, d, generator=g, dtype=dtype).transpose(0, 1)
        x = torch.randn(B, T, d, generator=g, dtype=dtype).transpose(0, 1)
    weight_c = torch.rand(2 * d, generator=g, dtype=dtype) * 2 - 1
    bias = torch.randn(2 * d, generator=g, dtype=dtype) * 0.5
    c0_t = torch.randn(B, d, generator=g, dtype=dtype) if c0 else None
    mask_pad = None
    if pad:
        mask_pad = torch.rand(T, B, generator=g) < 0.3
        mask_pad[-1, 0] = True
    mask = (torch.rand(B, d, generator=g, dtype=dtype) > 0.3).to(dtype) / 0.7 if dropout else None
    tensors = [U, x, weight_c, bias, c0_t]
    if requires_grad:
        tensors = [None if t is None else t.detach().requires_grad_() for t in tensors]
    return (*tensors, mask_pad, mask)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "cuda":
        library, error = kernel_emulation.build()
        if library is None:
            pytest.skip(f"the kernel emulation does not build here: {error}")
        kernel_emulation.emulate(monkeypatch)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", list(CASES))
def test_opcheck(backend, case, dtype):
    inputs = make_inputs(case, dtype, requires_grad=True)
    torch.library.opcheck(OPS.recurrence_forward, (backend, *inputs, True))
    with torch.no_grad():
        plain = make_inputs(case, dtype)
        torch.library.opcheck(OPS.recurrence_forward, (backend, *plain, False),
                              test_utils=("test_schema", "test_faketensor"))
        h, c_last, c_all = OPS.recurrence_forward(backend, *plain, True)
        g = torch.Generator().manual_seed(1)
        grad_h = torch.randn(h.shape, generator=g, dtype=h.dtype)
        grad_c_last = torch.randn(c_last.shape, generator=g, dtype=c_last.dtype)
    for grad_c in (grad_c_last, None):
        torch.library.opcheck(OPS.recurrence_backward, (backend, *plain, c_all, grad_h, grad_c))


@pytest.mark.parametrize("case", list(CASES))
def test_every_backend_matches_the_spec_in_float64(backend, case):
    inputs = make_inputs(case, torch.float64, requires_grad=True)
    h, c_last = recurrence_op(backend, *inputs)
    cotangents = torch.randn_like(h), torch.randn_like(c_last)
    grads = torch.autograd.grad([h, c_last], [t for t in inputs[:5] if t is not None], cotangents)
    ref_inputs = make_inputs(case, torch.float64, requires_grad=True)
    h_ref, c_ref = sru_recurrence_ref(*ref_inputs)
    ref_grads = torch.autograd.grad([h_ref, c_ref], [t for t in ref_inputs[:5] if t is not None], cotangents)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c_last, c_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_no_gradient_needed_stores_no_state():
    inputs = make_inputs("all-odd", torch.float32)
    *_, c_all = OPS.recurrence_forward("ref", *inputs, False)
    assert c_all.shape[0] == 0


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="backend must be one of"):
        OPS.recurrence_forward("triton", *make_inputs("plain", torch.float32), False)
