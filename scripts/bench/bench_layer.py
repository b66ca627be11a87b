"""Time one SRU++ layer against one PyTorch Transformer layer, forward + backward under autocast.

SRU++ layer: d 3072, d' 768, 1 attention head, attention layer norm (the enwik8-base layer), recurrence by
the CUDA kernel and, unless --no-reference, also by the reference loop (SRUPP_BACKEND=ref).
Transformer layer: torch.nn.TransformerEncoderLayer(d 1024, ffn 4096, 16 heads, norm_first=True,
batch_first=False) with a causal mask. Input (T, B, d) = (1024, 8, d), float32 parameters, autocast to
float16 and bfloat16. Prints the parameter count, the GPU ms per forward + backward, the host ms per
iteration and the peak memory of each.

GPU time: `repeat` iterations queued back to back between two CUDA events, one synchronization at the end
(so the host's Python and launch overhead overlaps the GPU work unless it is the bottleneck). Host time: the
wall time of queueing those iterations, per iteration; when it is close to the GPU time, the layer is
host-bound.

--profile prints the CUDA kernels of the SRU++ layer (CUDA kernel backend, --profile-dtype autocast) by GPU
time per iteration (torch.profiler).

Usage: python scripts/bench/bench_layer.py [--json PATH] [--dropout P] [--no-reference] [--profile]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_srupp.modules import SRUppLayer  # noqa: E402

AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class CausalTransformerLayer(nn.Module):
    """nn.TransformerEncoderLayer with the causal mask built once; forward(x (T, B, d)) -> (T, B, d)."""

    def __init__(self, d_model: int, ffn_dim: int, heads: int, dropout: float, T: int, device):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d_model, heads, ffn_dim, dropout, norm_first=True,
                                                batch_first=False, device=device)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T, device=device))

    def forward(self, x):
        return self.layer(x, src_mask=self.mask, is_causal=True)


def forward(model, x, dtype):
    with torch.autocast("cuda", dtype=dtype):
        out = model(x)
    return out[0] if isinstance(out, tuple) else out


def forward_backward(model, x, grad_out, dtype):
    torch.autograd.backward(forward(model, x, dtype), grad_out)


def time_ms(run, warmup: int, repeat: int):
    """(GPU ms, host ms) per iteration of `repeat` back-to-back iterations, one synchronization at the end."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    wall = time.perf_counter()
    start.record()
    for _ in range(repeat):
        run()
    end.record()
    host_ms = (time.perf_counter() - wall) / repeat * 1e3
    end.synchronize()
    return start.elapsed_time(end) / repeat, host_ms


def make_batch(model, d, args, dtype):
    x = torch.randn(args.T, args.B, d, device="cuda", requires_grad=True)
    with torch.no_grad():
        out_dtype = forward(model, x, dtype).dtype
    grad_out = torch.randn(args.T, args.B, d, device="cuda").to(out_dtype)
    return x, grad_out


def measure(name, model, d, args, dtype, repeat: int) -> dict:
    x, grad_out = make_batch(model, d, args, dtype)
    params = sum(p.numel() for p in model.parameters())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms, host_ms = time_ms(lambda: forward_backward(model, x, grad_out, dtype), min(args.warmup, repeat), repeat)
    peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(f"{name:28s} {str(dtype).replace('torch.', ''):>9} {params / 1e6:8.2f}M {ms:9.2f} {host_ms:9.2f} "
          f"{peak_mb:9.0f}")
    return dict(layer=name, dtype=str(dtype), params=params, fwd_bwd_ms=ms, host_ms=host_ms, peak_extra_mb=peak_mb)


def _device_time_us(event) -> float:
    for key in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, key, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_layer(model, d, args, dtype, iterations: int = 5, top: int = 20) -> dict:
    """The CUDA kernels of forward + backward by GPU time per iteration (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    x, grad_out = make_batch(model, d, args, dtype)
    for _ in range(3):
        forward_backward(model, x, grad_out, dtype)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iterations):
            forward_backward(model, x, grad_out, dtype)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if _device_time_us(e) > 0]
    on_device = [e for e in events if getattr(e, "device_type", None) != torch.autograd.DeviceType.CPU]
    events = on_device or events  # kernels, memcpy and memset only (no CPU ops, whose time would count twice)
    events.sort(key=_device_time_us, reverse=True)
    total = sum(_device_time_us(e) for e in events) / iterations
    kernels = [dict(name=e.key, calls=e.count / iterations, us=_device_time_us(e) / iterations) for e in events]
    print(f"\nSRU++ layer, CUDA kernel backend, autocast {str(dtype).replace('torch.', '')}: GPU kernels per "
          f"forward+backward: {sum(k['calls'] for k in kernels):.0f} launches, {total / 1e3:.2f} ms of kernel time")
    print(f"{'us/iter':>9} {'share':>6} {'calls':>5}  kernel")
    for k in kernels[:top]:
        print(f"{k['us']:9.1f} {100 * k['us'] / max(total, 1e-9):5.1f}% {k['calls']:5.1f}  {k['name'][:110]}")
    return dict(dtype=str(dtype), kernel_ms=total / 1e3, launches=sum(k["calls"] for k in kernels), kernels=kernels[:top])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout of both layers (default 0)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-reference", action="store_true", help="skip the SRU++ layer on the reference loop")
    parser.add_argument("--profile", action="store_true", help="print the SRU++ layer's CUDA kernels by GPU time")
    parser.add_argument("--profile-dtype", choices=tuple(AUTOCAST_DTYPES), default="float16")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_layer.py needs a CUDA device")
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()} | CUDA {torch.version.cuda} | torch {torch.__version__} | "
          f"T={args.T} B={args.B} dropout={args.dropout}")
    srupp = SRUppLayer(3072, 3072, 768, num_heads=1, use_attention=True, dropout=args.dropout,
                       attention_dropout=args.dropout).cuda().train()
    transformer = CausalTransformerLayer(1024, 4096, 16, args.dropout, args.T, "cuda").train()
    print(f"{'layer':28s} {'autocast':>9} {'params':>9} {'GPU ms':>9} {'host ms':>9} {'peak MB':>9}")
    rows = []
    for dtype in AUTOCAST_DTYPES.values():
        os.environ["SRUPP_BACKEND"] = "cuda"
        rows.append(measure("SRU++ (CUDA kernel)", srupp, 3072, args, dtype, args.repeat))
        if not args.no_reference:
            os.environ["SRUPP_BACKEND"] = "ref"
            rows.append(measure("SRU++ (reference loop)", srupp, 3072, args, dtype, repeat=2))
        os.environ["SRUPP_BACKEND"] = "auto"
        rows.append(measure("TransformerEncoderLayer", transformer, 1024, args, dtype, args.repeat))
    result = dict(device=torch.cuda.get_device_name(), T=args.T, B=args.B, dropout=args.dropout, rows=rows)
    if args.profile:
        os.environ["SRUPP_BACKEND"] = "cuda"
        result["profile"] = profile_layer(srupp, 3072, args, AUTOCAST_DTYPES[args.profile_dtype])
        os.environ["SRUPP_BACKEND"] = "auto"
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
