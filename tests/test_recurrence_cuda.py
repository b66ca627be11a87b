"""The CUDA kernel (fairseq_srupp/cuda) against the reference recurrence.

Each comparison runs twice: on a GPU with CuPy (`cuda` marker; skipped without them, run by
scripts/gpu/gpu_check.sh on a GPU machine), and on the CPU in CI, where tests/kernel_emulation.py compiles the
same .cu file with host stand-ins for the device primitives and puts it behind the real launcher (the
emulation checks indexing, chunking, masking, 16-bit staging and the copy pipeline's order; not speed, nor
the inline PTX). Tests of the device itself (streams, autocast, the launcher's choice) are GPU only. All
launcher outputs are NaN-poisoned before each launch (SRUPP_POISON_OUTPUTS=1), so an element the kernel
forgets to write fails the comparison.

Tolerances. The kernel computes in float32 with a hardware exp2/reciprocal sigmoid (about 2 ulp), the
reference with torch.sigmoid; both start from the same (rounded) inputs and compute in float32, so each
result is held to the accuracy of its own dtype: float32 results (c_last, and the gradients of the
float32 parameters and c0) to about 1e-5, float16/bfloat16 results (h, grad_U, grad_x) to a few units
of their rounding. Each comparison prints its max abs and relative-RMS error before asserting.
"""
import functools
from typing import Optional

import pytest
import torch

import kernel_emulation
from recurrence_cases import Case
from fairseq_srupp.cuda import launcher
from fairseq_srupp.modules import sru_recurrence_ref
from fairseq_srupp.modules.recurrence import select_backend
from fairseq_srupp.modules.recurrence_ops import recurrence_op
from fairseq_srupp.modules.recurrence_ref import RecurrenceInputs

KERNEL = functools.partial(recurrence_op, "cuda")  # the custom op on one backend


# The pipeline runs chunks of P = 2..16 steps (launcher.FORWARD_CONFIGS / BACKWARD_CONFIGS): the cases cover
# T = 1, T < P, T not a multiple of P, odd B*d (16-bit elements alternate between the halves of their 4-byte
# words from step to step), odd d, and B*d not a multiple of the 64-thread block.
CASES = [
    Case(1, 1, 1),
    Case(1, 3, 5, pad=True, c0=True),
    Case(3, 2, 37, pad=True, dropout=True, c0=True),
    Case(7, 3, 5, pad=True),
    Case(7, 1, 500, dropout=True, c0=True),
    Case(33, 3, 1, pad=True, dropout=True),
    Case(45, 3, 37, pad=True, dropout=True, c0=True),
    Case(129, 3, 500, dropout=True, c0=True),
    Case(129, 1, 1056, pad=True, dropout=True, c0=True),
    Case(1000, 1, 1056, c0=True),
    Case(1000, 3, 5, pad=True, dropout=True),
    Case(1001, 2, 99, pad=True, c0=True),
]

# per result dtype. rel_rms: bound on ||kernel - ref|| / ||ref||; rtol/atol: elementwise bound, which
# catches a few wrong elements that the RMS would average away
TOLERANCE = {
    torch.float32: dict(rel_rms=2e-5, rtol=1e-4, atol=1e-4),
    torch.float16: dict(rel_rms=1e-3, rtol=4e-3, atol=4e-3),
    torch.bfloat16: dict(rel_rms=8e-3, rtol=3e-2, atol=3e-2),
}
DTYPES = list(TOLERANCE)


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.cuda), "emulated"])
def device(request, monkeypatch) -> str:
    """The device the kernel's tensors live on: a GPU, or the CPU with the kernel emulated."""
    if request.param == "emulated":
        library, error = kernel_emulation.build()
        if library is None:
            pytest.skip(f"the CPU emulation of the kernel could not be built: {error}")
        kernel_emulation.emulate(monkeypatch)
        return "cpu"
    return "cuda"


@pytest.fixture(autouse=True)
def _poison_outputs(monkeypatch):
    monkeypatch.setenv("SRUPP_POISON_OUTPUTS", "1")
    monkeypatch.setenv("SRUPP_BACKEND", "auto")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


Inputs = RecurrenceInputs  # U, x, weight_c, bias, c0, mask_pad, dropout_mask


def make_inputs(case: Case, dtype: torch.dtype, device: str, seed: int = 0, noncontiguous: bool = False) -> Inputs:
    """Random inputs on `device`; U and x in `dtype`, the small tensors in float32 (float64 for float64)."""
    g = torch.Generator().manual_seed(seed)
    T, B, d = case.T, case.B, case.d
    small = torch.float64 if dtype == torch.float64 else torch.float32
    U = torch.randn(T, B, 3, d + 7 if noncontiguous else d, generator=g)
    x = torch.randn(T, B, 2 * d if noncontiguous else d, generator=g)
    weight_c = torch.rand(2 * d, generator=g) * 2 - 1
    bias = torch.randn(2 * d, generator=g) * 0.5
    c0 = torch.randn(B, d, generator=g) if case.c0 else None
    mask_pad = None
    if case.pad:
        mask_pad = torch.rand(T, B, generator=g) < 0.25
        mask_pad[-1, 0] = True  # a padded last step, so c_last must be a carried state
    dropout_mask = (torch.rand(B, d, generator=g) > 0.3).float() / 0.7 if case.dropout else None

    def dev(t, dt):
        return None if t is None else t.to(device).to(dt)

    U, x = dev(U, dtype), dev(x, dtype)
    if noncontiguous:  # views cut out of wider buffers, starting at odd elements
        U, x = U[..., 3:3 + d], x[..., 1::2]
    return Inputs(
        U, x, dev(weight_c, small), dev(bias, small), dev(c0, small),
        None if mask_pad is None else mask_pad.to(device), dev(dropout_mask, small),
    )


def leaf_like(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A leaf copy of t that requires grad and keeps t's strides (clone would compact a view with gaps)."""
    if t is None:
        return None
    leaf = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
    return leaf.copy_(t).requires_grad_()


def run_with_grads(fn, inputs: Inputs, seed: int = 1):
    """fn's (h, c_last) and the gradients of <h, g_h> + <c_last, g_c> for random cotangents g_h, g_c."""
    leaves = [leaf_like(t) for t in inputs[:5]]
    h, c_last = fn(*leaves, inputs.mask_pad, inputs.dropout_mask)
    g = torch.Generator().manual_seed(seed)
    grad_h = torch.randn(h.shape, generator=g).to(h.device, h.dtype)
    grad_c = torch.randn(c_last.shape, generator=g).to(c_last.device, c_last.dtype)
    torch.autograd.backward([h, c_last], [grad_h, grad_c])
    grads = {name: leaf.grad for name, leaf in zip(("U", "x", "weight_c", "bias", "c0"), leaves) if leaf is not None}
    return {"h": h.detach(), "c_last": c_last.detach(), **grads}


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (name, actual.dtype, actual.shape)
    rel_rms, rtol, atol = (TOLERANCE[actual.dtype][key] for key in ("rel_rms", "rtol", "atol"))
    a, e = actual.double(), expected.double()
    assert not torch.isnan(a).any(), f"{name}: NaN in the kernel output (an element was not written)"
    diff = (a - e).abs()
    err_rms = (diff.norm() / e.norm().clamp_min(1e-30)).item()
    print(f"{name:9s} max|diff| {diff.max().item():.3e}  mean|diff| {diff.mean().item():.3e}  rel-RMS {err_rms:.3e}")
    assert err_rms <= rel_rms, f"{name}: relative RMS error {err_rms:.3e} > {rel_rms:.1e}"
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def compare(kernel: dict, reference: dict):
    for name in reference:
        assert_close(name, kernel[name], reference[name])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_matches_reference(case, dtype, device):
    inputs = make_inputs(case, dtype, device)
    if device == "cuda":
        assert select_backend(inputs.U.device, dtype) == "cuda"
    kernel = run_with_grads(KERNEL, inputs)
    reference = run_with_grads(sru_recurrence_ref, inputs)
    compare(kernel, reference)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noncontiguous_inputs(dtype, device):
    inputs = make_inputs(Case(65, 3, 96, pad=True, dropout=True, c0=True), dtype, device, noncontiguous=True)
    assert not inputs.U.is_contiguous() and not inputs.x.is_contiguous()
    kernel = run_with_grads(KERNEL, inputs)
    reference = run_with_grads(sru_recurrence_ref, inputs)
    compare(kernel, reference)


def test_half_precision_parameters_get_half_gradients(device):
    """fairseq --fp16 turns the parameters into float16; the kernel still computes in float32."""
    inputs = make_inputs(Case(50, 2, 64, c0=True), torch.float16, device)
    inputs = inputs._replace(weight_c=inputs.weight_c.half(), bias=inputs.bias.half(), c0=inputs.c0.half())
    kernel = run_with_grads(KERNEL, inputs)
    reference = run_with_grads(sru_recurrence_ref, inputs)
    for name in ("weight_c", "bias", "c0"):
        assert kernel[name].dtype == torch.float16
    compare(kernel, reference)


def test_inference_without_grad_matches(device):
    inputs = make_inputs(Case(100, 3, 130, pad=True, dropout=True, c0=True), torch.float32, device)
    with torch.no_grad():
        h, c_last = KERNEL(*inputs)
        h_ref, c_ref = sru_recurrence_ref(*inputs)
    assert_close("h", h, h_ref)
    assert_close("c_last", c_last, c_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_repeated_runs_are_bitwise_identical(dtype, device):
    inputs = make_inputs(Case(300, 3, 700, pad=True, dropout=True, c0=True), dtype, device)
    first = run_with_grads(KERNEL, inputs)
    for _ in range(4):
        again = run_with_grads(KERNEL, inputs)
        for name in first:
            assert torch.equal(first[name], again[name]), f"{name} differs between identical runs"


@pytest.mark.parametrize("pad,dropout", [(False, False), (True, True)], ids=["plain", "pad-dropout"])
def test_float64_gradcheck_of_the_kernel_function(pad, dropout, device):
    inputs = make_inputs(Case(6, 2, 3, pad=pad, dropout=dropout, c0=True), torch.float64, device)
    leaves = [t.detach().clone().requires_grad_() for t in inputs[:5]]

    def fn(U, x, weight_c, bias, c0):
        return KERNEL(U, x, weight_c, bias, c0, inputs.mask_pad, inputs.dropout_mask)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.cuda
def test_launch_uses_the_current_stream():
    """Inputs written on a busy side stream must be visible to the kernel launched on that stream."""
    source = make_inputs(Case(64, 2, 256, c0=True), torch.float32, "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        U = torch.zeros_like(source.U)
        torch.cuda._sleep(50_000_000)  # keep the side stream busy, so a launch on another stream runs early
        U.copy_(source.U)
        h, c_last = KERNEL(U, *source[1:])
    torch.cuda.current_stream().wait_stream(side)
    h_ref, c_ref = sru_recurrence_ref(*source)
    assert_close("h", h, h_ref)
    assert_close("c_last", c_last, c_ref)


@pytest.mark.cuda
def test_autocast_keeps_input_dtypes():
    """Under autocast the op neither casts its inputs nor fails in the backward."""
    inputs = make_inputs(Case(40, 2, 48, c0=True), torch.bfloat16, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        kernel = run_with_grads(KERNEL, inputs)
    assert kernel["h"].dtype == torch.bfloat16 and kernel["c_last"].dtype == torch.float32
    assert kernel["weight_c"].dtype == torch.float32 and kernel["U"].dtype == torch.bfloat16
    compare(kernel, run_with_grads(sru_recurrence_ref, inputs))


def test_poison_flag_fills_outputs_with_nan(device):
    out = launcher._new_output((3, 4), torch.float32, torch.empty(1, device=device))
    assert torch.isnan(out).all()


def offset_copy(t: torch.Tensor, offset: int) -> torch.Tensor:
    """A contiguous copy of t that starts `offset` elements into a larger buffer: for 16-bit dtypes and odd
    offsets its data pointer is only 2-byte aligned (bool: any offset moves it off 4-byte alignment)."""
    fill = True if t.dtype == torch.bool else float("nan")
    buffer = torch.full((t.numel() + offset + 5,), fill, dtype=t.dtype, device=t.device)
    view = buffer[offset:offset + t.numel()].view(t.shape)
    view.copy_(t)
    return view


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_contiguous_inputs_at_odd_offsets(dtype, device):
    """Contiguous U and x that start at odd elements of their buffers go to the kernel as they are (16-bit:
    2-byte-aligned data pointers); the gradients flow back into the buffers."""
    case = Case(45, 3, 37, pad=True, dropout=True, c0=True)
    inputs = make_inputs(case, dtype, device)
    T, B, d = case.T, case.B, case.d
    buffers = [torch.randn(T * B * 3 * d + 8, device=device).to(dtype).requires_grad_(),
               torch.randn(T * B * d + 8, device=device).to(dtype).requires_grad_()]
    with torch.no_grad():
        buffers[0][1:1 + U_numel(case)].copy_(inputs.U.reshape(-1))
        buffers[1][3:3 + T * B * d].copy_(inputs.x.reshape(-1))
    mask = offset_copy(inputs.mask_pad, 1)

    def views():
        return buffers[0][1:1 + U_numel(case)].view(T, B, 3, d), buffers[1][3:3 + T * B * d].view(T, B, d)

    results = []
    for fn in (KERNEL, sru_recurrence_ref):
        for b in buffers:
            b.grad = None
        U, x = views()
        if dtype in (torch.float16, torch.bfloat16):
            assert U.data_ptr() % 4 == 2 and x.data_ptr() % 4 == 2
        h, c_last = fn(U, x, inputs.weight_c, inputs.bias, inputs.c0, mask, inputs.dropout_mask)
        g = torch.Generator().manual_seed(1)
        grad_h = offset_copy(torch.randn(h.shape, generator=g).to(h.device, h.dtype), 1)
        torch.autograd.backward([h, c_last], [grad_h, torch.ones_like(c_last)])
        results.append({"h": h.detach(), "c_last": c_last.detach(), "U_buffer": buffers[0].grad.clone(),
                        "x_buffer": buffers[1].grad.clone()})
    compare(*results)


def U_numel(case: Case) -> int:
    return case.T * case.B * 3 * case.d


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_launcher_with_2_byte_aligned_pointers(dtype, device):
    """The launcher entry points with U, x, grad_h at 2-byte-aligned addresses and mask_pad at an odd address
    whose length (T*B = 21 bytes) ends inside a 4-byte word."""
    case = Case(7, 3, 37, pad=True, dropout=True, c0=True)
    inputs = make_inputs(case, dtype, device)
    U, x, mask = offset_copy(inputs.U, 1), offset_copy(inputs.x, 3), offset_copy(inputs.mask_pad, 1)
    grad_h = offset_copy(torch.randn(x.shape, device=device).to(dtype), 5)
    assert U.data_ptr() % 4 == 2 and x.data_ptr() % 4 == 2 and grad_h.data_ptr() % 4 == 2 and mask.data_ptr() % 2 == 1
    grad_c = torch.randn(case.B, case.d, device=device)
    h, c_last, c_all = launcher.forward(inputs._replace(U=U, x=x, mask_pad=mask), True)
    grads = launcher.backward(inputs._replace(U=U, x=x, mask_pad=mask), c_all,
                              grad_h, grad_c)
    leaves = [t.detach().clone().requires_grad_() for t in (inputs.U, inputs.x, inputs.weight_c, inputs.bias, inputs.c0)]
    h_ref, c_ref = sru_recurrence_ref(*leaves, inputs.mask_pad, inputs.dropout_mask)
    torch.autograd.backward([h_ref, c_ref], [grad_h, grad_c])
    compare({"h": h, "c_last": c_last, "U": grads[0], "x": grads[1], "weight_c": grads[2], "bias": grads[3],
             "c0": grads[4]},
            {"h": h_ref.detach(), "c_last": c_ref.detach(), **{name: leaf.grad for name, leaf in
                                                               zip(("U", "x", "weight_c", "bias", "c0"), leaves)}})


SWEEP_CONFIGS = [(P, stages) for P in (4, 8, 16) for stages in (3, 4)]  # scripts/bench/bench_recurrence.py --sweep


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_pipeline_configuration(dtype, device):
    """Every (P, STAGES) the launcher or the benchmark sweep may run, at T = 1, T < P and T not a multiple of P
    (emulated: the configurations the harness compiles, which include the launcher's)."""
    configs = set(SWEEP_CONFIGS) if device == "cuda" else set(kernel_emulation.CONFIGS)
    forward_configs = sorted(set(launcher.FORWARD_CONFIGS) | configs)
    backward_configs = sorted(set(launcher.BACKWARD_CONFIGS) | configs)
    names = ("U", "x", "weight_c", "bias", "c0")
    for T in (1, 5, 37):
        inputs = make_inputs(Case(T, 3, 70, pad=True, dropout=True, c0=True), dtype, device, seed=T)
        leaves = [t.detach().clone().requires_grad_() for t in inputs[:5]]
        h_ref, c_ref = sru_recurrence_ref(*leaves, inputs.mask_pad, inputs.dropout_mask)
        grad_h = torch.randn(h_ref.shape, device=device).to(dtype)
        grad_c = torch.randn(c_ref.shape, device=device)
        torch.autograd.backward([h_ref, c_ref], [grad_h, grad_c])
        forward_ref = {"h": h_ref.detach(), "c_last": c_ref.detach()}
        backward_ref = {name: leaf.grad for name, leaf in zip(names, leaves)}
        c_all = None
        for config in forward_configs:
            print(f"forward T={T} config={config}")
            h, c_last, c_all = launcher.forward(inputs, True, config=config)
            compare({"h": h, "c_last": c_last}, forward_ref)
        for config in backward_configs:
            print(f"backward T={T} config={config}")
            grads = launcher.backward(inputs, c_all, grad_h, grad_c,
                                      config=config)
            compare(dict(zip(names, grads)), backward_ref)


@pytest.mark.cuda
def test_configuration_choice_fits_the_device():
    """The launcher's choice for the benchmark shapes: a default configuration whose blocks fit the device."""
    for columns in (8 * 3072, 16 * 3072, 64 * 4096, 4 * 6016, 1):
        for direction in ("forward", "backward"):
            for dtype in (torch.float32, torch.bfloat16):
                for has_mask in (False, True):
                    chosen = launcher.plan(direction, dtype, torch.cuda.current_device(), columns, has_mask)
                    print(f"{direction:8s} {str(dtype):15s} columns={columns:6d} mask={has_mask!s:5s} -> "
                          f"P, STAGES = {chosen.config}, {chosen.smem} bytes of shared memory per block")
                    assert chosen.config in launcher.default_configs(direction, dtype)
                    assert chosen.smem <= chosen.kernel.max_smem


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_two_columns_per_thread_kernels(dtype, device, monkeypatch):
    """16-bit storage with d even and aligned streams takes the *_pair kernels (one thread per two columns);
    SRUPP_PAIRED=0, odd d and a 2-byte-aligned stream take the one-column kernels; all match the reference."""
    directions = []
    plan = launcher.plan

    def recording_plan(direction, *args, **kwargs):
        directions.append(direction)
        return plan(direction, *args, **kwargs)

    monkeypatch.setattr(launcher, "plan", recording_plan)
    for case, paired_env, expected in [
        (Case(45, 3, 38, pad=True, dropout=True, c0=True), "1", ["forward_pair", "backward_pair"]),
        (Case(45, 3, 38, pad=True, dropout=True, c0=True), "0", ["forward", "backward"]),
        (Case(9, 2, 2, pad=True, c0=True), "1", ["forward_pair", "backward_pair"]),
        (Case(9, 2, 37, dropout=True), "1", ["forward", "backward"]),
    ]:
        monkeypatch.setenv("SRUPP_PAIRED", paired_env)
        inputs = make_inputs(case, dtype, device)
        directions.clear()
        kernel = run_with_grads(KERNEL, inputs)
        assert directions == expected, (case, paired_env)
        compare(kernel, run_with_grads(sru_recurrence_ref, inputs))
    # a 2-byte-aligned U (test_launcher_with_2_byte_aligned_pointers checks the values)
    monkeypatch.setenv("SRUPP_PAIRED", "1")
    inputs = make_inputs(Case(9, 2, 38), dtype, device)
    U = offset_copy(inputs.U, 1)
    directions.clear()
    h, c_last, c_all = launcher.forward(RecurrenceInputs(U, *inputs[1:5]), True)
    launcher.backward(RecurrenceInputs(U, *inputs[1:5]), c_all, torch.ones_like(h), None)
    assert directions == ["forward", "backward"]
