"""Compile (NVRTC through CuPy) and launch the SRU recurrence kernels of sru_recurrence.cu.

This is the only module that imports CuPy, and only inside functions. The kernels are compiled on first
use and cached per (device, storage dtype, ring depths); CuPy also keeps the binaries on disk
(CUPY_CACHE_DIR, default ~/.cupy/kernel_cache), so later processes skip NVRTC. Every launch runs on the
*current* PyTorch stream of the inputs' device, with tensors handed over through DLPack.

Dtypes: U, x, h and their gradients are float32, float16, bfloat16 or float64 (storage); the math, the
running state, c0, weight_c, bias, the dropout mask, c_last and the saved c_all are float32 (float64 for
float64 storage). Shapes as in fairseq_srupp/modules/recurrence_ref.py.

SRUPP_POISON_OUTPUTS=1 (read at every call; a test aid) fills every output with NaN before the launch, so
an element the kernel fails to write shows up in the comparisons.
"""
import functools
import importlib.resources
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

BLOCK_THREADS = 64  # threads per block; small blocks spread B*d columns over all SMs
DEFAULT_FORWARD_DEPTH = 32  # steps of U and x each thread keeps in flight (register ring)
DEFAULT_BACKWARD_DEPTH = 16  # same for the backward, which also loads grad_h and c_{t-1}
DOUBLE_DEPTH = 4  # float64 exists for gradcheck; a shallow ring keeps its registers in check
FORWARD_DEPTHS = (8, 16, 32)  # instantiations the benchmark may pick; the default is one of them
BACKWARD_DEPTHS = (8, 16, 24)

_STORAGE_TYPES = {  # torch dtype -> (C++ storage type, C++ math type)
    torch.float32: ("float", "float"),
    torch.float16: ("srupp::half_t", "float"),
    torch.bfloat16: ("srupp::bf16_t", "float"),
    torch.float64: ("double", "double"),
}
SUPPORTED_DTYPES = tuple(_STORAGE_TYPES)


@functools.lru_cache(maxsize=None)
def cupy_import_error() -> Optional[str]:
    """None when CuPy imports, else the reason it does not."""
    try:
        import cupy  # noqa: F401
    except Exception as error:  # ImportError, or a CuPy build that does not match the CUDA driver
        return f"{type(error).__name__}: {error}"
    return None


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=None)
def _kernel_source() -> str:
    return importlib.resources.files(__package__).joinpath("sru_recurrence.cu").read_text()


def _kernel_names(dtype: torch.dtype, forward_depth: int, backward_depth: int) -> Tuple[str, str]:
    storage, math = _STORAGE_TYPES[dtype]
    return (
        f"srupp::sru_forward<{storage}, {math}, {forward_depth}>",
        f"srupp::sru_backward<{storage}, {math}, {backward_depth}>",
    )


@functools.lru_cache(maxsize=None)
def _kernels(device_index: int, dtype: torch.dtype, forward_depth: int, backward_depth: int):
    """(forward, backward) cupy.RawKernel pair, compiled for `device_index` on first use."""
    import cupy

    names = _kernel_names(dtype, forward_depth, backward_depth)
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(
            code=_kernel_source(),
            options=(f"-DSRUPP_BLOCK_THREADS={BLOCK_THREADS}",),
            name_expressions=names,
        )
        return tuple(module.get_function(name) for name in names)


def _depths(dtype: torch.dtype, forward_depth: Optional[int], backward_depth: Optional[int]) -> Tuple[int, int]:
    if dtype == torch.float64:
        return DOUBLE_DEPTH, DOUBLE_DEPTH
    forward_depth = DEFAULT_FORWARD_DEPTH if forward_depth is None else forward_depth
    backward_depth = DEFAULT_BACKWARD_DEPTH if backward_depth is None else backward_depth
    if forward_depth not in FORWARD_DEPTHS or backward_depth not in BACKWARD_DEPTHS:
        raise ValueError(
            f"ring depths must be in {FORWARD_DEPTHS} (forward) and {BACKWARD_DEPTHS} (backward), "
            f"got {forward_depth} and {backward_depth}"
        )
    return forward_depth, backward_depth


def _new_output(shape, dtype: torch.dtype, like: Tensor) -> Tensor:
    if os.environ.get("SRUPP_POISON_OUTPUTS", "0") == "1":
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def _as(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if t is None else t.to(dtype).contiguous()


def _launch(kernel, tensors_and_scalars, columns: int, device: torch.device) -> None:
    """Launches `kernel` with one thread per column on the current torch stream of `device`.

    Tensors go through DLPack (16-bit floats as int16 and bool as uint8, so CuPy need not know their
    dtype); None becomes a null pointer. The caller holds a reference to every tensor until this returns,
    and the launch is stream-ordered, so the memory stays valid for the kernel.
    """
    import cupy
    import numpy

    grid = ((columns + BLOCK_THREADS - 1) // BLOCK_THREADS,)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
        args = []
        for value in tensors_and_scalars:
            if value is None:
                args.append(None)
            elif isinstance(value, Tensor):
                if value.dtype in (torch.float16, torch.bfloat16):
                    value = value.view(torch.int16)
                elif value.dtype == torch.bool:
                    value = value.view(torch.uint8)
                args.append(cupy.from_dlpack(value.detach()))
            else:
                args.append(numpy.int32(value))
        kernel(grid, (BLOCK_THREADS,), tuple(args))


def _check_sizes(U: Tensor) -> Tuple[int, int, int]:
    T, B, _, d = U.shape
    if B * d + BLOCK_THREADS >= 2**31 or T >= 2**31:
        raise ValueError(f"sru_recurrence (CUDA): B*d = {B * d} and T = {T} must stay below 2**31")
    return T, B, d


def forward(
    U: Tensor,
    x: Tensor,
    weight_c: Tensor,
    bias: Tensor,
    c0: Optional[Tensor],
    mask_pad: Optional[Tensor],
    dropout_mask: Optional[Tensor],
    store_c: bool,
    forward_depth: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Returns h (T, B, d) in U's dtype, c_last (B, d) and, when store_c, c_all (T, B, d) in the math dtype."""
    T, B, d = _check_sizes(U)
    dtype, acc = U.dtype, math_dtype(U.dtype)
    U, x = U.contiguous(), x.contiguous()
    forward_kernel, _ = _kernels(U.device.index, dtype, *_depths(dtype, forward_depth, None))
    h = _new_output((T, B, d), dtype, U)
    c_last = _new_output((B, d), acc, U)
    c_all = _new_output((T, B, d), acc, U) if store_c else None
    _launch(
        forward_kernel,
        (U, x, _as(weight_c, acc), _as(bias, acc), _as(c0, acc), _as(dropout_mask, acc),
         None if mask_pad is None else mask_pad.contiguous(), h, c_all, c_last, T, B, d),
        B * d,
        U.device,
    )
    return h, c_last, c_all


def backward(
    U: Tensor,
    x: Tensor,
    weight_c: Tensor,
    bias: Tensor,
    c0: Optional[Tensor],
    mask_pad: Optional[Tensor],
    dropout_mask: Optional[Tensor],
    c_all: Tensor,
    grad_h: Tensor,
    grad_c_last: Optional[Tensor],
    backward_depth: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Returns grad_U, grad_x, grad_weight_c, grad_bias and grad_c0 (None without c0), each in the dtype of
    the input it belongs to. weight_c/bias gradients come out of the kernel per (b, j) in the math dtype and
    are summed over B here (deterministic, no atomics)."""
    T, B, d = _check_sizes(U)
    dtype, acc = U.dtype, math_dtype(U.dtype)
    U, x = U.contiguous(), x.contiguous()
    _, backward_kernel = _kernels(U.device.index, dtype, *_depths(dtype, None, backward_depth))
    grad_U = _new_output((T, B, 3, d), dtype, U)
    grad_x = _new_output((T, B, d), dtype, U)
    grad_c0 = _new_output((B, d), acc, U) if c0 is not None else None
    param_grads = _new_output((4, B, d), acc, U)
    _launch(
        backward_kernel,
        (U, x, _as(weight_c, acc), _as(bias, acc), _as(c0, acc), _as(dropout_mask, acc),
         None if mask_pad is None else mask_pad.contiguous(), c_all.contiguous(), _as(grad_h, dtype),
         _as(grad_c_last, acc), grad_U, grad_x, grad_c0, param_grads, T, B, d),
        B * d,
        U.device,
    )
    param = param_grads.sum(dim=1)  # (4, d): v_f, v_r, b_f, b_r
    grad_weight_c = param[:2].reshape(-1).to(weight_c.dtype)
    grad_bias = param[2:].reshape(-1).to(bias.dtype)
    return grad_U, grad_x, grad_weight_c, grad_bias, (None if c0 is None else grad_c0.to(c0.dtype))
