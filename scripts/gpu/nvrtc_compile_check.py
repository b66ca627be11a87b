"""Compile every CUDA kernel the launcher can name with NVRTC, down to machine code, without a GPU.

A build check for machines with no GPU (CI, laptops): NVRTC compiles fairseq_srupp/cuda/sru_recurrence.cu
with the launcher's options and name expressions (every storage dtype, both directions, one and two columns
per thread, the default pipeline configurations and the benchmark sweep's) for each --arch, including
ptxas, so errors in the inline PTX show up too. tests/kernel_emulation.py checks what the kernels compute;
this checks that they build. Needs NVRTC: `pip install nvidia-cuda-nvrtc` (CUDA 13) or a CUDA toolkit.

Usage: python scripts/gpu/nvrtc_compile_check.py [--arch sm_80 --arch sm_90] [--lib PATH/libnvrtc.so]
Takes a few minutes per architecture on 2 cores.
"""
import argparse
import ctypes
import ctypes.util
import glob
import importlib.util
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from bench_recurrence import SWEEP_CONFIGS  # noqa: E402
from fairseq_srupp.cuda import launcher  # noqa: E402


def find_nvrtc() -> str:
    """libnvrtc from the nvidia-cuda-nvrtc wheel, else the system's; '' when there is none."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(glob.glob(os.path.join(root, "cu*", "lib", "libnvrtc.so*")) +
                       glob.glob(os.path.join(root, "cuda_nvrtc", "lib", "libnvrtc.so*")))
        found = [f for f in found if "builtins" not in f and ".alt." not in f]
        if found:
            return found[0]
    return ctypes.util.find_library("nvrtc") or ""


def kernel_names() -> list:
    names = []
    for dtype in launcher.SUPPORTED_DTYPES:
        directions = ["forward", "backward"]
        if dtype in launcher.PAIR_DTYPES:
            directions += ["forward_pair", "backward_pair"]
        for direction in directions:
            configs = set(launcher.default_configs(direction, dtype))
            if dtype != torch.float64:
                configs |= set(SWEEP_CONFIGS)
            names += [launcher.kernel_name(direction, dtype, config) for config in sorted(configs)]
    return names


def compile_for(nvrtc, source: bytes, names: list, arch: str) -> tuple:
    """(status, log, cubin bytes) of one NVRTC compilation of every name in `names`."""
    program = ctypes.c_void_p()
    status = nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, b"sru_recurrence.cu", 0, None, None)
    if status != 0:
        return status, "nvrtcCreateProgram failed", 0
    for name in names:
        nvrtc.nvrtcAddNameExpression(program, name.encode())
    options = [*launcher.NVRTC_OPTIONS, f"--gpu-architecture={arch}", "-std=c++17"]
    array = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
    status = nvrtc.nvrtcCompileProgram(program, len(options), array)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    cubin = ctypes.c_size_t()
    if status == 0:
        nvrtc.nvrtcGetCUBINSize(program, ctypes.byref(cubin))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return status, log.value.decode(errors="replace").strip(), cubin.value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", default=None, help="e.g. sm_90 (repeatable; default sm_80, sm_90)")
    p.add_argument("--lib", default=None, help="path of libnvrtc.so (default: the nvidia-cuda-nvrtc wheel's)")
    args = p.parse_args(argv)
    path = args.lib or find_nvrtc()
    if not path:
        p.error("NVRTC not found: pip install nvidia-cuda-nvrtc, or pass --lib /path/to/libnvrtc.so")
    if not os.path.isfile(path) and os.sep in path:
        p.error(f"--lib {path}: no such file; point it at libnvrtc.so (e.g. .../nvidia/cu13/lib/libnvrtc.so.13)")
    # NVRTC loads libnvrtc-builtins from its own folder only through the loader's search path
    builtins = [f for f in glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*")) if ".alt." not in f]
    if builtins:
        ctypes.CDLL(builtins[0], mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(path)
    source = launcher._kernel_source().encode()
    names = kernel_names()
    failures = 0
    for arch in args.arch or ["sm_80", "sm_90"]:
        start = time.monotonic()
        status, log, cubin = compile_for(nvrtc, source, names, arch)
        verdict = "ok" if status == 0 and not log else ("FAILED" if status else "ok, with messages")
        seconds = time.monotonic() - start
        print(f"{arch}: {len(names)} kernels, {cubin} bytes of machine code, {seconds:.0f} s: {verdict}")
        if log:
            print(log[:6000])
        failures += status != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
