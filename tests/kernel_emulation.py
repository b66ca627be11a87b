"""The CUDA recurrence kernels run on the CPU, behind the real launcher (for tests without a GPU).

tests/csrc/kernel_emulation.cpp compiles fairseq_srupp/cuda/sru_recurrence.cu with host stand-ins for the
device primitives (see its header) into a shared library, built once per source content with the system C++
compiler (GCC >= 12 or Clang: it needs _Float16). `emulate(monkeypatch)` replaces the launcher's two device
steps, `plan` (pick and compile a kernel) and `_launch` (cuLaunchKernel), so that launcher.forward/backward and
the custom ops (backend "cuda") run unchanged on CPU tensors: output allocation, poisoning, alignment handling, the
parameter-gradient reduction and the autograd wiring included.
"""
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import torch

from fairseq_srupp.cuda import launcher

HARNESS = Path(__file__).resolve().parent / "csrc" / "kernel_emulation.cpp"
KERNEL = Path(launcher.__file__).resolve().parent / "sru_recurrence.cu"
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
CONFIGS = ((4, 3), (4, 2), (2, 2), (3, 2), (1, 1))  # SRUPP_FOR_EACH_CONFIG in the harness


@functools.lru_cache(maxsize=None)
def build() -> Tuple[Optional[ctypes.CDLL], Optional[str]]:
    """(library, None), or (None, why it could not be built)."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return None, "no C++ compiler (g++ or clang++) on PATH"
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wno-unknown-pragmas", "-DSRUPP_EMULATION",
             f"-DSRUPP_BLOCK_THREADS={launcher.BLOCK_THREADS}", "-I", str(KERNEL.parent)]
    digest = hashlib.sha256(HARNESS.read_bytes() + KERNEL.read_bytes() + " ".join(flags).encode()).hexdigest()
    target = Path(tempfile.gettempdir()) / f"srupp_kernel_emulation_{digest[:16]}.so"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([compiler, *flags, str(HARNESS), "-o", str(partial)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            return None, f"{compiler} failed:\n{proc.stdout[-3000:]}"
        os.replace(partial, target)  # atomic: concurrent test processes see a whole library or none
    library = ctypes.CDLL(str(target))
    for name, count in (("srupp_emulate_forward", 13), ("srupp_emulate_backward", 17)):
        function = getattr(library, name)
        function.argtypes = [ctypes.c_int] * 4 + [ctypes.c_longlong] * count
        function.restype = ctypes.c_int
    return library, None


class EmulatedPlan(NamedTuple):
    direction: str
    dtype: torch.dtype
    config: Tuple[int, int]


def _plan(direction, dtype, device_index, columns, has_mask, config=None) -> EmulatedPlan:
    chosen = tuple(config) if config is not None else launcher.default_configs(direction, dtype)[0]
    if chosen not in CONFIGS:
        raise ValueError(f"configuration {chosen} is not compiled in the emulation harness ({CONFIGS})")
    return EmulatedPlan(direction, dtype, chosen)


def _launch(plan_: EmulatedPlan, args, device_index) -> None:
    library, error = build()
    assert library is not None, error
    direction, _, pair = plan_.direction.partition("_")
    function = library.srupp_emulate_forward if direction == "forward" else library.srupp_emulate_backward
    status = function(DTYPE_CODES[plan_.dtype], plan_.config[0], plan_.config[1], int(pair == "pair"),
                      *(int(a) for a in args))
    assert status == 0, f"the harness has no {plan_} kernel"


def emulate(monkeypatch) -> None:
    """Route the launcher's kernels to the CPU emulation for the rest of the test."""
    monkeypatch.setattr(launcher, "plan", _plan)
    monkeypatch.setattr(launcher, "_launch", _launch)
