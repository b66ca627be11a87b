"""The fused CPU recurrence against the reference, and the backend dispatch (no GPU needed).

The first test that reaches the fused loop compiles csrc/sru_cpu.cpp (about 30 s on 2 cores; cached in
torch's extension directory afterwards).
"""
import functools
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from recurrence_cases import Case
from fairseq_srupp import cuda
from fairseq_srupp.cuda import launcher
from fairseq_srupp.modules import recurrence, recurrence_cpu, recurrence_ref, sru_recurrence, sru_recurrence_ref
from fairseq_srupp.modules.recurrence_ops import recurrence_op

FUSED_CPU = functools.partial(recurrence_op, "cpu")  # the custom op on one backend


CASES = [
    Case(1, 1, 1),
    Case(7, 3, 5, pad=True),
    Case(9, 2, 300, dropout=True, c0=True),  # d > 256: two tiles per batch row
    Case(40, 3, 17, pad=True, dropout=True, c0=True),
]
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def make_inputs(case: Case, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T, B, d = case.T, case.B, case.d
    U = torch.randn(T, B, 3, d, generator=g, dtype=dtype)
    x = torch.randn(T, B, d, generator=g, dtype=dtype)
    weight_c = torch.rand(2 * d, generator=g, dtype=dtype) * 2 - 1
    bias = torch.randn(2 * d, generator=g, dtype=dtype) * 0.5
    c0 = torch.randn(B, d, generator=g, dtype=dtype) if case.c0 else None
    mask_pad = None
    if case.pad:
        mask_pad = torch.rand(T, B, generator=g) < 0.3
        mask_pad[-1, 0] = True
    dropout_mask = (torch.rand(B, d, generator=g, dtype=dtype) > 0.3).to(dtype) / 0.7 if case.dropout else None
    return U, x, weight_c, bias, c0, mask_pad, dropout_mask


def run_with_grads(fn, inputs, seed: int = 1):
    """(h, c_last, grads...) of <h, g_h> + <c_last, g_c> for random cotangents."""
    leaves = [None if t is None else t.clone().requires_grad_() for t in inputs[:5]]
    h, c_last = fn(*leaves, *inputs[5:])
    g = torch.Generator().manual_seed(seed)
    grad_h = torch.randn(h.shape, generator=g, dtype=h.dtype)
    grad_c = torch.randn(c_last.shape, generator=g, dtype=c_last.dtype)
    torch.autograd.backward([h, c_last], [grad_h, grad_c])
    return {"h": h.detach(), "c_last": c_last.detach(),
            **{n: t.grad for n, t in zip(("U", "x", "weight_c", "bias", "c0"), leaves) if t is not None}}


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(recurrence, "_warned", set())
    monkeypatch.delenv("SRUPP_BACKEND", raising=False)


def test_fused_loop_builds():
    assert recurrence_cpu.build_error() is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fused_cpu_matches_reference(case, dtype):
    inputs = make_inputs(case, dtype)
    fused = run_with_grads(FUSED_CPU, inputs)
    reference = run_with_grads(sru_recurrence_ref, inputs)
    for name, expected in reference.items():
        diff = (fused[name] - expected).abs().max().item()
        print(f"{name:9s} max|diff| {diff:.3e}")
        assert fused[name].dtype == expected.dtype
        torch.testing.assert_close(fused[name], expected, **TOLERANCE[dtype], msg=lambda m: f"{name}: {m}")


def test_fused_cpu_without_grad_matches_reference():
    inputs = make_inputs(Case(20, 2, 33, pad=True, dropout=True, c0=True), torch.float32)
    with torch.no_grad():
        h, c_last = FUSED_CPU(*inputs)
    h_ref, c_ref = sru_recurrence_ref(*inputs)
    torch.testing.assert_close(h, h_ref, **TOLERANCE[torch.float32])
    torch.testing.assert_close(c_last, c_ref, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("pad,dropout", [(False, False), (True, True)], ids=["plain", "pad-dropout"])
def test_fused_cpu_gradcheck(pad, dropout):
    inputs = make_inputs(Case(5, 2, 3, pad=pad, dropout=dropout, c0=True), torch.float64)
    leaves = [t.requires_grad_() for t in inputs[:5]]

    def fn(U, x, weight_c, bias, c0):
        return FUSED_CPU(U, x, weight_c, bias, c0, *inputs[5:])

    assert torch.autograd.gradcheck(fn, leaves)


# ---- dispatch ----

def _no_cupy(monkeypatch):
    """Pretend to be a CUDA machine on which CuPy does not import."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launcher, "cupy_import_error", lambda: "ImportError: No module named 'cupy'")


def test_auto_without_cupy_warns_once_and_uses_the_reference(monkeypatch):
    _no_cupy(monkeypatch)
    with pytest.warns(RuntimeWarning, match="CUDA kernel is unavailable"):
        assert recurrence.select_backend(torch.device("cuda"), torch.float16) == "ref"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert recurrence.select_backend(torch.device("cuda"), torch.float16) == "ref"


def test_forced_cuda_without_cupy_names_the_install_command(monkeypatch):
    _no_cupy(monkeypatch)
    monkeypatch.setenv("SRUPP_BACKEND", "cuda")
    with pytest.raises(RuntimeError) as error:
        recurrence.select_backend(torch.device("cuda"), torch.float32)
    assert "pip install cupy-cuda12x" in str(error.value)
    assert "fairseq-srupp[cuda]" in str(error.value)
    assert cuda.INSTALL_HINT in str(error.value)


def test_forced_cuda_with_cpu_tensors_raises(monkeypatch):
    monkeypatch.setenv("SRUPP_BACKEND", "cuda")
    inputs = make_inputs(Case(3, 1, 2), torch.float32)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        sru_recurrence(*inputs)


def test_unknown_backend_is_rejected(monkeypatch):
    monkeypatch.setenv("SRUPP_BACKEND", "triton")
    with pytest.raises(ValueError, match="SRUPP_BACKEND must be one of"):
        recurrence.select_backend(torch.device("cpu"), torch.float32)


def _spy(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_auto_uses_the_fused_loop_on_cpu(monkeypatch):
    fused_calls = _spy(monkeypatch, recurrence_cpu, "forward")
    ref_calls = _spy(monkeypatch, recurrence_ref, "forward")
    sru_recurrence(*make_inputs(Case(4, 2, 3), torch.float32))
    assert fused_calls and not ref_calls


def test_ref_backend_forces_the_reference(monkeypatch):
    monkeypatch.setenv("SRUPP_BACKEND", "ref")
    fused_calls = _spy(monkeypatch, recurrence_cpu, "forward")
    ref_calls = _spy(monkeypatch, recurrence_ref, "forward")
    sru_recurrence(*make_inputs(Case(4, 2, 3), torch.float32))
    assert ref_calls and not fused_calls
    assert recurrence.select_backend(torch.device("cuda"), torch.float32) == "ref"


def test_half_precision_cpu_uses_the_reference_silently():
    inputs = make_inputs(Case(4, 2, 3), torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert recurrence.select_backend(torch.device("cpu"), torch.bfloat16) == "ref"
        h, _ = sru_recurrence(inputs[0].bfloat16(), inputs[1].bfloat16(), *inputs[2:])
    assert h.dtype == torch.bfloat16


def test_failed_cpu_build_warns_once_and_uses_the_reference(monkeypatch):
    monkeypatch.setattr(recurrence_cpu, "build_error", lambda: "RuntimeError: no C++ compiler")
    inputs = make_inputs(Case(5, 2, 3, pad=True, c0=True), torch.float32)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        h, c_last = sru_recurrence(*inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sru_recurrence(*inputs)
    h_ref, c_ref = sru_recurrence_ref(*inputs)
    assert torch.equal(h, h_ref) and torch.equal(c_last, c_ref)


def test_importing_the_packages_loads_no_cupy():
    code = ("import sys, fairseq_srupp.modules, fairseq_srupp.cuda; "
            "assert 'cupy' not in sys.modules, 'cupy imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
