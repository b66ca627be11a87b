"""Time one SRU++ layer against one PyTorch Transformer layer, forward + backward under autocast.

SRU++ layer: d 3072, d' 768, 1 attention head, attention layer norm (the enwik8-base layer), recurrence by
the CUDA kernel and, unless --no-reference, also by the reference loop (SRUPP_BACKEND=ref).
Transformer layer: torch.nn.TransformerEncoderLayer(d 1024, ffn 4096, 16 heads, norm_first=True,
batch_first=False) with a causal mask. Input (T, B, d) = (1024, 8, d), float32 parameters, autocast to
float16 and bfloat16. Prints the parameter count, the median ms of forward + backward (CUDA events) and the
peak memory of each.

Usage: python scripts/bench_layer.py [--json PATH] [--dropout P]
"""
import argparse
import json
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
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


def time_ms(run, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def measure(name, model, d, args, dtype, repeat: int) -> dict:
    x = torch.randn(args.T, args.B, d, device="cuda", requires_grad=True)
    with torch.no_grad():
        out_dtype = forward(model, x, dtype).dtype
    grad_out = torch.randn(args.T, args.B, d, device="cuda").to(out_dtype)
    params = sum(p.numel() for p in model.parameters())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = time_ms(lambda: forward_backward(model, x, grad_out, dtype), min(args.warmup, repeat), repeat)
    peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(f"{name:28s} {str(dtype).replace('torch.', ''):>9} {params / 1e6:8.2f}M {ms:9.2f} {peak_mb:9.0f}")
    return dict(layer=name, dtype=str(dtype), params=params, fwd_bwd_ms=ms, peak_extra_mb=peak_mb)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout of both layers (default 0)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-reference", action="store_true", help="skip the SRU++ layer on the reference loop")
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
    print(f"{'layer':28s} {'autocast':>9} {'params':>9} {'fwd+bwd ms':>9} {'peak MB':>9}")
    rows = []
    for dtype in AUTOCAST_DTYPES.values():
        os.environ["SRUPP_BACKEND"] = "cuda"
        rows.append(measure("SRU++ (CUDA kernel)", srupp, 3072, args, dtype, args.repeat))
        if not args.no_reference:
            os.environ["SRUPP_BACKEND"] = "ref"
            rows.append(measure("SRU++ (reference loop)", srupp, 3072, args, dtype, repeat=2))
        os.environ["SRUPP_BACKEND"] = "auto"
        rows.append(measure("TransformerEncoderLayer", transformer, 1024, args, dtype, args.repeat))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), T=args.T, B=args.B, dropout=args.dropout,
                           rows=rows), f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
