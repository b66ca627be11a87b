"""Benchmark the SRU recurrence: the CUDA kernel against the reference loop (or, with --device cpu, the
fused CPU loop against the reference).

CUDA mode prints a banner (GPU | CUDA | torch | cupy), the measured device-to-device copy bandwidth,
the host time per call, and for each (T, B, d) and dtype the forward and forward+backward GPU times, the
effective bandwidth under the byte model below, its share of the copy bandwidth, the pipeline
configurations (P, STAGES) the launcher chose, the reference's forward+backward time and the speed-up
(float32 rows only: the reference is slow), and the kernel's largest error against the reference.
--sweep adds a table of every (P, STAGES) in {4, 8, 16} x {3, 4} (launcher level, float32 and bfloat16).

GPU times: `repeat` samples, each `inner` back-to-back calls between two CUDA events; all samples are
queued before a single synchronization at the end, so the host's launch overhead overlaps the GPU work
(the median per-call time is reported). Host time: wall time of issuing many calls of a one-element
problem, without synchronizing, per call.

Byte model, per element (t, b, j), with s = bytes of the input dtype and c_t saved in float32:
  forward:  reads U (3 values) and x, writes h (s each) and c_t (4 bytes)        = 5 s + 4
  backward: reads U (3), x, grad_h (s each) and c_{t-1} (4), writes grad_U (3) and grad_x (s each)
                                                                                   = 9 s + 4
This is the byte count of ANCHORS.md (6 and 10 values per element) with c kept in float32.

Usage: python scripts/bench/bench_recurrence.py [--device cuda|cpu] [--json PATH] [--sweep]
"""
import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_srupp.modules import sru_recurrence_ref  # noqa: E402
from fairseq_srupp.modules.recurrence_ops import recurrence_op  # noqa: E402
from fairseq_srupp.modules.recurrence_ref import RecurrenceInputs  # noqa: E402

KERNEL = functools.partial(recurrence_op, "cuda")  # the custom op, CUDA kernel backend
FUSED_CPU = functools.partial(recurrence_op, "cpu")  # the custom op, fused C++ loop backend
CUDA_SHAPES = [(1024, 8, 3072), (1024, 16, 3072), (512, 64, 4096), (1024, 4, 6016)]
CPU_SHAPES = [(256, 8, 256), (128, 16, 512)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def bytes_per_element(dtype: torch.dtype) -> tuple:
    s = torch.empty(0, dtype=dtype).element_size()
    return 5 * s + 4, 9 * s + 4  # forward, backward


def make_inputs(T, B, d, dtype, device):
    U = torch.randn(T, B, 3, d, device=device).to(dtype).requires_grad_()
    x = torch.randn(T, B, d, device=device).to(dtype).requires_grad_()
    small = torch.float64 if dtype == torch.float64 else torch.float32
    weight_c = (torch.rand(2 * d, device=device, dtype=small) * 2 - 1).requires_grad_()
    bias = torch.zeros(2 * d, device=device, dtype=small).requires_grad_()
    grad_h = torch.randn(T, B, d, device=device).to(dtype)
    return (U, x, weight_c, bias), grad_h


def fwd(fn, inputs):
    return fn(*inputs, None, None, None)


def fwd_bwd(fn, inputs, grad_h):
    h, _ = fn(*inputs, None, None, None)
    return torch.autograd.grad(h, inputs, grad_h)  # no accumulation into .grad, which would add traffic


def cuda_time_ms(run, warmup: int, repeat: int, inner: int = 1) -> float:
    """Median over `repeat` samples of the mean GPU time of `inner` back-to-back calls (CUDA events). Every
    sample is queued before one synchronization at the end, so host overhead is hidden behind GPU work."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    events = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            run()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) / inner for start, end in events)


def cpu_time_ms(run, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def copy_bandwidth_gbs(n_bytes: int = 1 << 30) -> float:
    """Device-to-device copy of a large tensor; bytes read + written per second."""
    src = torch.empty(n_bytes // 4, device="cuda", dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), warmup=3, repeat=10)
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def host_overhead_us(calls: int = 300) -> dict:
    """Host time per call on a one-element problem, without synchronizing: the forward alone (custom op,
    launcher, launch; inputs require grad, so c_all is stored and the graph is built), the
    launcher's forward alone, and a forward+backward. When it exceeds a kernel's run time, the GPU idles
    between back-to-back calls."""
    from fairseq_srupp.cuda import launcher

    inputs, grad_h = make_inputs(1, 1, 1, torch.float32, "cuda")
    detached = [t.detach() for t in inputs]
    runs = {
        "forward_us": lambda: fwd(KERNEL, inputs),
        "launcher_forward_us": lambda: launcher.forward(RecurrenceInputs(*detached), True),
        "forward_backward_us": lambda: fwd_bwd(KERNEL, inputs, grad_h),
    }
    result = {}
    for name, run in runs.items():
        for _ in range(20):
            run()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            run()
        result[name] = (time.perf_counter() - start) / calls * 1e6
        torch.cuda.synchronize()
    return result


def chosen_configs(T, B, d, dtype) -> dict:
    """The (P, STAGES) the launcher picks for this size (no padding mask, aligned inputs)."""
    from fairseq_srupp.cuda import launcher

    index = torch.cuda.current_device()
    paired = launcher.pairs_columns(dtype, d)
    return {direction: list(launcher.plan(direction + ("_pair" if paired else ""), dtype, index,
                                          B * d // 2 if paired else B * d, False).config)
            for direction in ("forward", "backward")}


def kernel_variants(name: str, d: int):
    """(row label, SRUPP_PAIRED) for a dtype: 16-bit storage with d even runs the two-columns-per-thread
    kernels by default and is measured a second time with one column per thread ("/1col")."""
    from fairseq_srupp.cuda import launcher

    if DTYPES[name] in launcher.PAIR_DTYPES and d % 2 == 0:
        return [(name, "1"), (name + "/1col", "0")]
    return [(name, "1")]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.double(), expected.double()
    return ((a - e).norm() / e.norm().clamp_min(1e-30)).item()


def banner_cuda() -> str:
    try:
        import cupy
        cupy_version = cupy.__version__
    except ImportError:
        cupy_version = "not installed"
    return (f"{torch.cuda.get_device_name()} | CUDA {torch.version.cuda} | torch {torch.__version__} | "
            f"cupy {cupy_version}")


def bench_cuda(args) -> dict:
    print(banner_cuda())
    copy_gbs = copy_bandwidth_gbs()
    host = host_overhead_us()
    print(f"device-to-device copy bandwidth: {copy_gbs:.0f} GB/s (read + write)")
    print(f"host time per call (no sync): forward {host['forward_us']:.0f} us (autograd + launcher + launch), "
          f"launcher only {host['launcher_forward_us']:.0f} us, forward+backward {host['forward_backward_us']:.0f} us\n")
    rows = []
    header = (f"{'T':>5} {'B':>3} {'d':>5} {'dtype':>13} | {'fwd ms':>7} {'GB/s':>6} {'%copy':>5} | "
              f"{'f+b ms':>7} {'GB/s':>6} {'%copy':>5} | {'P,STAGES f/b':>12} | {'ref f+b':>8} {'speedup':>7} | "
              f"{'max rel err':>11}")
    print(header)
    print("-" * len(header))
    for T, B, d in args.shapes:
        runs = [(name, label, paired) for name in args.dtypes for label, paired in kernel_variants(name, d)]
        for name, label, paired in runs:
            os.environ["SRUPP_PAIRED"] = paired
            dtype = DTYPES[name]
            inputs, grad_h = make_inputs(T, B, d, dtype, "cuda")
            n = T * B * d
            fwd_bytes, bwd_bytes = bytes_per_element(dtype)
            fwd_ms = cuda_time_ms(lambda: fwd(KERNEL, inputs), args.warmup, args.repeat, args.inner)
            fb_ms = cuda_time_ms(lambda: fwd_bwd(KERNEL, inputs, grad_h), args.warmup,
                                 args.repeat, args.inner)
            row = dict(T=T, B=B, d=d, dtype=label, fwd_ms=fwd_ms, fwd_bwd_ms=fb_ms,
                       fwd_gbs=n * fwd_bytes / fwd_ms / 1e6, fwd_bwd_gbs=n * (fwd_bytes + bwd_bytes) / fb_ms / 1e6,
                       configs=chosen_configs(T, B, d, dtype))
            row["fwd_copy_share"] = row["fwd_gbs"] / copy_gbs
            row["fwd_bwd_copy_share"] = row["fwd_bwd_gbs"] / copy_gbs
            ref_text = err_text = "-"
            if not args.no_reference:
                if name == "float32":
                    row["ref_fwd_bwd_ms"] = cuda_time_ms(lambda: fwd_bwd(sru_recurrence_ref, inputs, grad_h), 1,
                                                         args.ref_repeat)
                    row["speedup"] = row["ref_fwd_bwd_ms"] / fb_ms
                    ref_text = f"{row['ref_fwd_bwd_ms']:8.1f}"
                with torch.no_grad():  # inference path (no c_all stored)
                    outputs = fwd(KERNEL, inputs)
                    expected = fwd(sru_recurrence_ref, inputs)
                outputs += fwd_bwd(KERNEL, inputs, grad_h)
                expected += fwd_bwd(sru_recurrence_ref, inputs, grad_h)
                row["max_rel_err"] = max(relative_error(a, e) for a, e in zip(outputs, expected))
                err_text = f"{row['max_rel_err']:11.2e}"
            rows.append(row)
            speedup = f"{row['speedup']:6.0f}x" if "speedup" in row else "      -"
            chosen = "{}/{}".format(*(",".join(map(str, row["configs"][k])) for k in ("forward", "backward")))
            print(f"{T:5d} {B:3d} {d:5d} {label:>13} | {fwd_ms:7.3f} {row['fwd_gbs']:6.0f} "
                  f"{100 * row['fwd_copy_share']:4.0f}% | {fb_ms:7.3f} {row['fwd_bwd_gbs']:6.0f} "
                  f"{100 * row['fwd_bwd_copy_share']:4.0f}% | {chosen:>12} | {ref_text:>8} {speedup} | {err_text:>11}")
    os.environ.pop("SRUPP_PAIRED", None)
    result = dict(device=banner_cuda(), copy_gbs=copy_gbs, host_overhead_us=host["forward_us"], host_us=host,
                  byte_model="fwd 5s+4, bwd 9s+4 bytes per element", rows=rows)
    if args.sweep:
        result["config_sweep"] = sweep_configs(args, copy_gbs)
    return result


SWEEP_CONFIGS = [(P, stages) for P in (4, 8, 16) for stages in (3, 4)]


def sweep_configs(args, copy_gbs: float) -> list:
    """Forward and backward kernel times for every (P, STAGES) of SWEEP_CONFIGS, at the launcher level (the
    forward stores c_all, as in training). Configurations outside the launcher's defaults are compiled here."""
    from fairseq_srupp.cuda import launcher

    labels = [f"{P}x{stages}" for P, stages in SWEEP_CONFIGS]
    print("\npipeline sweep (launcher level; P x STAGES; % of copy bandwidth; * = the launcher's choice; "
          "last: the choice with the whole shared-memory carveout)")
    print(f"{'T':>5} {'B':>3} {'d':>5} {'dtype':>8} | fwd " + " ".join(f"{v:>6}" for v in labels) + " | bwd "
          + " ".join(f"{v:>6}" for v in labels))
    rows = []
    for T, B, d in args.shapes:
        for name in ("float32", "bfloat16"):
            dtype = DTYPES[name]
            (U, x, weight_c, bias), grad_h = make_inputs(T, B, d, dtype, "cuda")
            U, x, weight_c, bias = (t.detach() for t in (U, x, weight_c, bias))
            n = T * B * d
            fwd_bytes, bwd_bytes = bytes_per_element(dtype)
            _, _, c_all = launcher.forward(RecurrenceInputs(U, x, weight_c, bias), True)
            chosen = chosen_configs(T, B, d, dtype)
            row = dict(T=T, B=B, d=d, dtype=name, chosen=chosen, forward={}, backward={})
            for config in SWEEP_CONFIGS:
                label = f"{config[0]}x{config[1]}"
                try:
                    ms = cuda_time_ms(lambda: launcher.forward(RecurrenceInputs(U, x, weight_c, bias), True,
                                                               config=config), args.warmup, args.repeat, args.inner)
                    row["forward"][label] = n * fwd_bytes / ms / 1e6 / copy_gbs
                except RuntimeError as error:  # the configuration does not fit this device
                    print(f"  forward {label}: {error}")
                    row["forward"][label] = float("nan")
                try:
                    ms = cuda_time_ms(lambda: launcher.backward(RecurrenceInputs(U, x, weight_c, bias), c_all,
                                                                grad_h, None, config=config),
                                      args.warmup, args.repeat, args.inner)
                    row["backward"][label] = n * bwd_bytes / ms / 1e6 / copy_gbs
                except RuntimeError as error:
                    print(f"  backward {label}: {error}")
                    row["backward"][label] = float("nan")
            # the launcher's choice once more with all of the shared-memory carveout (28 KB of L1 on an H100)
            # instead of the default that leaves L1 what the resident blocks do not need
            saved_carveout, saved_plans = launcher.CARVEOUT, dict(launcher._plans)
            launcher.CARVEOUT = "max"
            launcher._plans.clear()
            try:
                ms = cuda_time_ms(lambda: launcher.forward(RecurrenceInputs(U, x, weight_c, bias), True),
                                  args.warmup, args.repeat, args.inner)
                row["forward_max_carveout"] = n * fwd_bytes / ms / 1e6 / copy_gbs
                ms = cuda_time_ms(lambda: launcher.backward(RecurrenceInputs(U, x, weight_c, bias), c_all, grad_h,
                                                            None), args.warmup, args.repeat, args.inner)
                row["backward_max_carveout"] = n * bwd_bytes / ms / 1e6 / copy_gbs
            finally:
                launcher.CARVEOUT = saved_carveout
                launcher._plans.clear()
                launcher._plans.update(saved_plans)
            rows.append(row)

            def cells(direction):
                return " ".join(f"{100 * v:5.0f}%" + ("*" if chosen[direction] == [int(p) for p in k.split("x")]
                                                       else " ") for k, v in row[direction].items())

            print(f"{T:5d} {B:3d} {d:5d} {name:>8} | fwd {cells('forward')}| bwd {cells('backward')}| "
                  f"max carveout: fwd {100 * row['forward_max_carveout']:3.0f}% bwd {100 * row['backward_max_carveout']:3.0f}%")
    return rows


def bench_cpu(args) -> dict:
    from fairseq_srupp.modules import recurrence_cpu

    start = time.perf_counter()
    error = recurrence_cpu.build_error()
    build_s = time.perf_counter() - start
    if error is not None:
        sys.exit(f"the fused CPU loop does not build here: {error}")
    machine = f"{platform.processor() or platform.machine()} | {torch.get_num_threads()} threads | torch {torch.__version__}"
    print(machine)
    print(f"fused CPU loop built or loaded in {build_s:.1f} s\n")
    header = (f"{'T':>5} {'B':>3} {'d':>5} {'dtype':>8} | {'ref fwd':>8} {'fused':>8} {'speedup':>7} | "
              f"{'ref f+b':>8} {'fused':>8} {'speedup':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    for T, B, d in args.shapes:
        for name in args.dtypes:
            dtype = DTYPES[name]
            if dtype not in recurrence_cpu.SUPPORTED_DTYPES:
                continue
            inputs, grad_h = make_inputs(T, B, d, dtype, "cpu")
            times = {}
            for label, fn in (("ref", sru_recurrence_ref), ("fused", FUSED_CPU)):
                times[label + "_fwd_ms"] = cpu_time_ms(lambda: fwd(fn, inputs), args.warmup, args.repeat)
                times[label + "_fwd_bwd_ms"] = cpu_time_ms(lambda: fwd_bwd(fn, inputs, grad_h), args.warmup,
                                                           args.repeat)
            row = dict(T=T, B=B, d=d, dtype=name, **times)
            rows.append(row)
            print(f"{T:5d} {B:3d} {d:5d} {name:>8} | {times['ref_fwd_ms']:8.1f} {times['fused_fwd_ms']:8.1f} "
                  f"{times['ref_fwd_ms'] / times['fused_fwd_ms']:6.1f}x | {times['ref_fwd_bwd_ms']:8.1f} "
                  f"{times['fused_fwd_bwd_ms']:8.1f} {times['ref_fwd_bwd_ms'] / times['fused_fwd_bwd_ms']:6.1f}x")
    return dict(device=machine, build_or_load_s=build_s, rows=rows)


def parse_shapes(text: str):
    return [tuple(int(v) for v in shape.split(",")) for shape in text.split(";") if shape]

# per device: shapes, dtypes, untimed calls, timed samples (the --shapes, --dtypes, --warmup,
# --repeat defaults)
DEVICE_DEFAULTS = {
    "cuda": dict(shapes=CUDA_SHAPES, dtypes="float32,bfloat16,float16", warmup=3, repeat=10),
    "cpu": dict(shapes=CPU_SHAPES, dtypes="float32,float64", warmup=1, repeat=5),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--shapes", type=parse_shapes, help="'T,B,d;T,B,d' (default: per device)")
    parser.add_argument("--dtypes", default=None, help="comma-separated (default cuda: float32,bfloat16,float16; "
                                                       "cpu: float32,float64)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (default cuda 3, cpu 1)")
    parser.add_argument("--repeat", type=int, help="timed samples, the median is reported (cuda 10, cpu 5)")
    parser.add_argument("--inner", type=int, default=3, help="back-to-back calls per CUDA-event sample")
    parser.add_argument("--ref-repeat", type=int, default=3, help="samples of the (slow) reference")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference timing and error")
    parser.add_argument("--sweep", "--sweep-depth", dest="sweep", action="store_true",
                        help="also time every pipeline configuration (P, STAGES) in {4, 8, 16} x {3, 4}")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device; use --device cpu")
    defaults = DEVICE_DEFAULTS[args.device]
    args.shapes = args.shapes or defaults["shapes"]
    args.dtypes = (args.dtypes or defaults["dtypes"]).split(",")
    args.warmup = defaults["warmup"] if args.warmup is None else args.warmup
    args.repeat = defaults["repeat"] if args.repeat is None else args.repeat
    torch.manual_seed(0)
    result = bench_cuda(args) if args.device == "cuda" else bench_cpu(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
