"""Compile (NVRTC through CuPy) and launch the SRU recurrence kernels of sru_recurrence.cu.

This is the only module that imports CuPy, and only inside functions. The kernels are compiled on first
use, one module per (device, storage dtype, direction) holding every default pipeline configuration; CuPy
also keeps the binaries on disk (CUPY_CACHE_DIR, default ~/.cupy/kernel_cache), so later processes skip
NVRTC. Every launch runs on the *current* PyTorch stream of the inputs' device.

Pipeline configuration (P, STAGES): chunks of P time steps, STAGES chunks staged in shared memory or on
their way (see sru_recurrence.cu). For each problem size the launcher takes, from FORWARD_CONFIGS /
BACKWARD_CONFIGS, the first configuration that needs the fewest waves of blocks (occupancy from the CUDA
occupancy calculator, so registers and shared memory both count): the deepest pipeline while every column
of the problem fits on the GPU at once, a shallower one when it lets more columns run at once. The
benchmark can force any (P, STAGES) through the `config` arguments (compiled on demand). The shared-memory
carveout is set per problem size too (CARVEOUT below).

GPUs below sm_80 have no cp.async: there the same kernels are compiled with ordinary loads and shared-memory
stores (chosen at compile time from the architecture CuPy compiles for, i.e. the device's), which keeps only
P steps in flight. The register-ring kernels of v1 were dropped: on the H100 they were no faster than loading a
chunk of steps before computing it, which is what this fallback does.

Host overhead. A launch hands the kernel raw device pointers (tensor.data_ptr(), after .contiguous(); the
tensors stay referenced until the launch call has returned, and the launch is ordered on the stream) and
calls cuLaunchKernel directly with one packed parameter buffer; the kernel, grid and shared-memory size of a
problem size are looked up in a dict. No DLPack, no CuPy array or stream objects per call.

Two columns per thread. For float16/bfloat16 storage with d even and U, x (and grad_h) at 4-byte-aligned
addresses, the launcher runs the kernels with L = 2 (its directions forward_pair and backward_pair): one
thread per pair of adjacent columns, so one 4-byte copy
or store moves two elements (with one column per thread, 16-bit storage is bound by instruction issue, not
by bandwidth). Other 16-bit layouts take the one-column kernels, which handle any 2-byte alignment.
SRUPP_PAIRED=0 (read at every call) forces the one-column kernels, for comparisons.

Dtypes: U, x, h and their gradients are float32, float16, bfloat16 or float64 (storage); the math, the
running state, c0, weight_c, bias, the dropout mask, c_last and the saved c_all are float32 (float64 for
float64 storage). Shapes as in fairseq_srupp/modules/recurrence_ref.py.

SRUPP_POISON_OUTPUTS=1 (read at every call; a test aid) fills every output with NaN before the launch, so
an element the kernel fails to write shows up in the comparisons.
"""
import functools
import importlib.resources
import os
import threading
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..modules.recurrence_ref import RecurrenceInputs, math_dtype, sum_param_grads

BLOCK_THREADS = 64  # threads per block (one per column); small blocks spread B*d columns evenly over the SMs
# (P, STAGES) compiled by default, in order of preference; see the module docstring
# 4 x 3 was the best, or within 3 points of it, at every benchmark shape and dtype on an H200
# (scripts/bench/bench_recurrence.py --sweep); the backward falls back to 4 x 2 for grids too large for one wave
FORWARD_CONFIGS = ((4, 3),)
BACKWARD_CONFIGS = ((4, 3), (4, 2))
NVRTC_OPTIONS = (f"-DSRUPP_BLOCK_THREADS={BLOCK_THREADS}",)  # what the kernel source needs defined
DOUBLE_CONFIG = (2, 2)  # float64 exists for gradcheck; speed does not matter
# shared-memory words per step and thread: u0 u1 u2 x [grad_h c_{t-1}]; the two-column kernels hold two 16-bit
# elements in a word and c_{t-1} of both columns in two
NUM_VALUES = {"forward": 4, "backward": 6, "forward_pair": 4, "backward_pair": 7}
PAIR_DTYPES = (torch.float16, torch.bfloat16)

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


def smem_bytes(direction: str, dtype: torch.dtype, config: Tuple[int, int], has_mask: bool) -> int:
    """Dynamic shared memory of one block, as laid out in sru_recurrence.cu."""
    P, stages = config
    word = 8 if dtype == torch.float64 else 4
    return BLOCK_THREADS * stages * P * (NUM_VALUES[direction] * word + (4 if has_mask else 0))


def default_configs(direction: str, dtype: torch.dtype) -> Tuple[Tuple[int, int], ...]:
    if dtype == torch.float64:
        return (DOUBLE_CONFIG,)
    return FORWARD_CONFIGS if direction.startswith("forward") else BACKWARD_CONFIGS


def pairs_columns(dtype: torch.dtype, d: int, *streams: Tensor) -> bool:
    """Whether the two-column kernels (L = 2) serve this call: 16-bit storage, d even, every
    16-bit stream (U, x, grad_h) at a 4-byte-aligned address, and SRUPP_PAIRED not 0."""
    return (dtype in PAIR_DTYPES and d % 2 == 0 and os.environ.get("SRUPP_PAIRED", "1") != "0"
            and all(t.data_ptr() % 4 == 0 for t in streams))


@functools.lru_cache(maxsize=None)
def _kernel_source() -> str:
    return importlib.resources.files(__package__).joinpath("sru_recurrence.cu").read_text()


def kernel_name(direction: str, dtype: torch.dtype, config: Tuple[int, int]) -> str:
    """direction: forward, backward, or forward_pair / backward_pair (two columns per thread)."""
    storage, math = _STORAGE_TYPES[dtype]
    base, _, pair = direction.partition("_")
    return f"srupp::sru_{base}<{storage}, {math}, {config[0]}, {config[1]}, {2 if pair else 1}>"


class _Kernel(NamedTuple):
    module: object  # cupy RawModule and RawKernel, referenced so that the module stays loaded
    function: object
    pointer: int  # CUfunction
    context: int  # CUcontext the module was loaded in
    max_smem: int  # dynamic shared memory the function may use (0 when the device cannot give it)
    driver: object  # cupy_backends.cuda.api.driver


@functools.lru_cache(maxsize=None)
def _compiled(device_index: int, dtype: torch.dtype, direction: str,
              configs: Tuple[Tuple[int, int], ...]) -> Dict[Tuple[int, int], _Kernel]:
    """Compiles `configs` of one kernel into one module on `device_index`: {config: _Kernel}."""
    import cupy
    from cupy_backends.cuda.api import driver

    names = [kernel_name(direction, dtype, config) for config in configs]
    kernels = {}
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=_kernel_source(), options=NVRTC_OPTIONS,
                                name_expressions=names)
        for config, name in zip(configs, names):
            function = module.get_function(name)
            pointer = function.kernel.ptr  # compiles and loads the module on first access
            need = smem_bytes(direction, dtype, config, has_mask=True)
            try:  # shared memory over 48 KB per block must be opted into
                function.max_dynamic_shared_size_bytes = need
                max_smem = need
            except driver.CUDADriverError:  # more than this device has: never chosen
                max_smem = 0
            kernels[config] = _Kernel(module, function, pointer, driver.ctxGetCurrent(), max_smem, driver)
    return kernels


def _kernel(device_index: int, dtype: torch.dtype, direction: str, config: Tuple[int, int]) -> _Kernel:
    defaults = default_configs(direction, dtype)
    if config in defaults:
        return _compiled(device_index, dtype, direction, defaults)[config]
    return _compiled(device_index, dtype, direction, (config,))[config]  # benchmark sweeps only


class _Plan(NamedTuple):
    kernel: _Kernel
    config: Tuple[int, int]
    grid: int
    smem: int
    carveout: int  # preferred shared-memory carveout (percent) for this launch


# Shared-memory carveout. On sm_80+ shared memory and L1 share one array per SM, and a load (cp.async.ca
# included) in flight holds L1 space until its data arrives, so L1 should not shrink to its minimum: "fit"
# asks for the shared memory of the blocks that actually run at once on an SM (plus 8 KB of slack; the driver
# rounds up to the next capacity it supports) and leaves the rest to L1; "max" asks for all of it (28 KB of
# L1 on an H100). The benchmark compares the two.
CARVEOUT = os.environ.get("SRUPP_CARVEOUT", "fit")
_carveouts: Dict[int, int] = {}  # CUfunction -> the carveout last set on it


class _DeviceLimits(NamedTuple):
    multiprocessors: int
    smem_per_sm: int  # the most shared memory an SM can give (bytes)
    reserved_per_block: int  # shared memory the system reserves per block (bytes)


@functools.lru_cache(maxsize=None)
def _device_limits(device_index: int) -> _DeviceLimits:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(device_index)
    multiprocessors = props.get("multiProcessorCount") or torch.cuda.get_device_properties(device_index).multi_processor_count
    return _DeviceLimits(multiprocessors, props.get("sharedMemPerMultiprocessor", 0),
                         props.get("reservedSharedMemPerBlock", 1024))


def _set_carveout(kernel: _Kernel, percent: int) -> None:
    if _carveouts.get(kernel.pointer) != percent:
        try:
            kernel.driver.funcSetAttribute(kernel.pointer, kernel.driver.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                                           percent)
        except kernel.driver.CUDADriverError:  # a hint only
            pass
        _carveouts[kernel.pointer] = percent


def _blocks_per_sm(kernel: _Kernel, smem: int) -> int:
    if smem > kernel.max_smem:
        return 0
    _set_carveout(kernel, 100)  # the occupancy calculator honours the carveout: ask with all of it
    return kernel.driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.pointer, BLOCK_THREADS, smem)


def _carveout_for(per_sm: int, grid: int, smem: int, limits: _DeviceLimits) -> int:
    if CARVEOUT == "max" or limits.smem_per_sm <= 0:
        return 100
    resident = min(per_sm, -(-grid // limits.multiprocessors))  # blocks per SM in the first wave
    need = resident * (smem + limits.reserved_per_block) + 8192
    return max(1, min(100, -(-100 * need // limits.smem_per_sm)))


_plans: Dict[tuple, _Plan] = {}


def plan(direction: str, dtype: torch.dtype, device_index: int, columns: int, has_mask: bool,
         config: Optional[Tuple[int, int]] = None) -> _Plan:
    """The kernel, grid and shared memory for `columns` threads (B*d; B*d/2 for the *_pair directions, two columns each), cached
    per problem size."""
    config = None if config is None else tuple(config)
    key = (direction, dtype, device_index, columns, has_mask, config)
    found = _plans.get(key)
    if found is not None:
        return found
    import cupy

    with cupy.cuda.Device(device_index):
        _plans[key] = _new_plan(direction, dtype, device_index, columns, has_mask, config)
    return _plans[key]


def _new_plan(direction: str, dtype: torch.dtype, device_index: int, columns: int, has_mask: bool,
              config: Optional[Tuple[int, int]]) -> _Plan:
    limits = _device_limits(device_index)
    grid = max(1, -(-columns // BLOCK_THREADS))
    if config is not None:
        candidates = [tuple(config)]
    else:
        candidates = list(default_configs(direction, dtype))
    best = None
    for candidate in candidates:
        kernel = _kernel(device_index, dtype, direction, candidate)
        smem = smem_bytes(direction, dtype, candidate, has_mask)
        per_sm = _blocks_per_sm(kernel, smem)
        if per_sm == 0:
            continue
        waves = -(-grid // (per_sm * limits.multiprocessors))
        if best is None or waves < best[0]:
            best = (waves, _Plan(kernel, candidate, grid, smem, _carveout_for(per_sm, grid, smem, limits)))
    if best is None:
        raise RuntimeError(f"sru_recurrence (CUDA): no {direction} configuration among {candidates} fits one "
                           f"block of {BLOCK_THREADS} threads on device {device_index}")
    return best[1]


def _current_stream(device_index: int) -> int:
    try:
        return torch._C._cuda_getCurrentRawStream(device_index)
    except AttributeError:  # the private accessor is gone: the public one (slower)
        return torch.cuda.current_stream(device_index).cuda_stream


_MAX_PARAMS = 32
_thread_state = threading.local()


def _param_buffer():
    """(values, kernel_params address) of this thread: `values` holds the launch's parameters (8 bytes each)
    and kernel_params points to an array of their addresses, made once per thread (cuLaunchKernel copies the
    parameters during the call, so the buffer can be reused by the next launch of the same thread)."""
    found = getattr(_thread_state, "params", None)
    if found is None:
        import numpy

        values = numpy.zeros(_MAX_PARAMS, dtype=numpy.uint64)
        addresses = numpy.arange(_MAX_PARAMS, dtype=numpy.uint64) * numpy.uint64(8) + numpy.uint64(values.ctypes.data)
        found = _thread_state.params = (values, int(addresses.ctypes.data), addresses)
    return found


def _launch(plan_: _Plan, args: Sequence[int], device_index: int) -> None:
    """cuLaunchKernel of plan_.kernel with `args` (device pointers and integers, all passed as 64-bit
    parameters: every kernel parameter is a pointer or a long long) on the current torch stream."""
    values, kernel_params, _ = _param_buffer()
    values[: len(args)] = args
    kernel = plan_.kernel
    driver = kernel.driver
    if _carveouts.get(kernel.pointer) != plan_.carveout:
        _set_carveout(kernel, plan_.carveout)
    if driver.ctxGetCurrent() != kernel.context:  # another device is current, or none on this thread yet
        import cupy

        with torch.cuda.device(device_index):
            cupy.cuda.runtime.setDevice(device_index)  # makes the device's primary context current
            driver.launchKernel(kernel.pointer, plan_.grid, 1, 1, BLOCK_THREADS, 1, 1, plan_.smem,
                                _current_stream(device_index), kernel_params, 0)
        return
    driver.launchKernel(kernel.pointer, plan_.grid, 1, 1, BLOCK_THREADS, 1, 1, plan_.smem,
                        _current_stream(device_index), kernel_params, 0)


def _new_output(shape, dtype: torch.dtype, like: Tensor, poison: Optional[bool] = None) -> Tensor:
    if poison is None:
        poison = os.environ.get("SRUPP_POISON_OUTPUTS", "0") == "1"
    if poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def _as(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    if t is None:
        return None
    return (t if t.dtype == dtype else t.to(dtype)).contiguous()


def _aligned(t: Tensor) -> Tensor:
    """t, contiguous and with its data pointer aligned to its element size. 16-bit tensors may start at any
    even address (the kernel handles it); wider ones are aligned unless a byte-offset view made them so."""
    t = t.contiguous()
    if t.element_size() > 2 and t.data_ptr() % t.element_size():
        t = t.clone()
    return t


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _check_sizes(U: Tensor) -> Tuple[int, int, int]:
    T, B, _, d = U.shape
    if B * d + BLOCK_THREADS >= 2**31 or T >= 2**31 or T * B >= 2**31:
        raise ValueError(f"sru_recurrence (CUDA): B*d = {B * d}, T*B = {T * B} and T = {T} must stay below 2**31")
    return T, B, d


def forward(
    inputs: RecurrenceInputs, store_c: bool, config: Optional[Tuple[int, int]] = None
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Returns h (T, B, d) in U's dtype, c_last (B, d) and, when store_c, c_all (T, B, d) in the math dtype.
    config: force a (P, STAGES) pipeline configuration (benchmarks)."""
    U, x, weight_c, bias, c0, mask_pad, dropout_mask = inputs
    T, B, d = _check_sizes(U)
    dtype, acc = U.dtype, math_dtype(U.dtype)
    device_index = U.device.index
    U, x = _aligned(U), _aligned(x)
    paired = pairs_columns(dtype, d, U, x)
    weight_c, bias, c0, dropout_mask = _as(weight_c, acc), _as(bias, acc), _as(c0, acc), _as(dropout_mask, acc)
    mask = None if mask_pad is None else mask_pad.contiguous()  # bool: one byte per step, 0 or 1
    poison = os.environ.get("SRUPP_POISON_OUTPUTS", "0") == "1"
    h = _new_output((T, B, d), dtype, U, poison)
    c_last = _new_output((B, d), acc, U, poison)
    c_all = _new_output((T, B, d), acc, U, poison) if store_c else None
    plan_ = plan("forward_pair" if paired else "forward", dtype, device_index, B * d // 2 if paired else B * d,
                 mask is not None, config)
    _launch(plan_, (_ptr(U), _ptr(x), _ptr(weight_c), _ptr(bias), _ptr(c0), _ptr(dropout_mask), _ptr(mask),
                    _ptr(h), _ptr(c_all), _ptr(c_last), T, B, d), device_index)
    return h, c_last, c_all


def backward(
    inputs: RecurrenceInputs,
    c_all: Tensor,
    grad_h: Tensor,
    grad_c_last: Optional[Tensor],
    config: Optional[Tuple[int, int]] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Returns grad_U, grad_x, grad_weight_c, grad_bias and grad_c0 (None without c0), each in the dtype of
    the input it belongs to. weight_c/bias gradients come out of the kernel per (b, j) in the math dtype and
    are summed over B here (deterministic, no atomics). config: as in forward."""
    U, x, weight_c, bias, c0, mask_pad, dropout_mask = inputs
    T, B, d = _check_sizes(U)
    dtype, acc = U.dtype, math_dtype(U.dtype)
    device_index = U.device.index
    U, x, c_all = _aligned(U), _aligned(x), _aligned(c_all)
    grad_h = _aligned(grad_h.to(dtype))
    paired = pairs_columns(dtype, d, U, x, grad_h)
    weight_c_, bias_ = _as(weight_c, acc), _as(bias, acc)
    c0_, dropout_mask, grad_c_last = _as(c0, acc), _as(dropout_mask, acc), _as(grad_c_last, acc)
    mask = None if mask_pad is None else mask_pad.contiguous()
    poison = os.environ.get("SRUPP_POISON_OUTPUTS", "0") == "1"
    grad_U = _new_output((T, B, 3, d), dtype, U, poison)
    grad_x = _new_output((T, B, d), dtype, U, poison)
    grad_c0 = _new_output((B, d), acc, U, poison) if c0 is not None else None
    param_grads = _new_output((4, B, d), acc, U, poison)
    plan_ = plan("backward_pair" if paired else "backward", dtype, device_index, B * d // 2 if paired else B * d,
                 mask is not None, config)
    _launch(plan_, (_ptr(U), _ptr(x), _ptr(weight_c_), _ptr(bias_), _ptr(c0_), _ptr(dropout_mask), _ptr(mask),
                    _ptr(c_all), _ptr(grad_h), _ptr(grad_c_last), _ptr(grad_U), _ptr(grad_x), _ptr(grad_c0),
                    _ptr(param_grads), T, B, d), device_index)
    grad_weight_c, grad_bias = sum_param_grads(param_grads, weight_c, bias)
    return grad_U, grad_x, grad_weight_c, grad_bias, (None if c0 is None else grad_c0.to(c0.dtype))
