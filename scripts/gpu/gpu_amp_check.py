"""Mixed precision, memory and whole-model throughput of SRU++ on a GPU, without fairseq.

Three checks, each printed as a table (and written to --json):

1. precision: a 4-layer SRU++ LM (d 512, d' 128) trains 50 updates on a fixed synthetic stream in
   float32, float16 autocast + GradScaler (what fairseq's --amp does), bfloat16 autocast, and float16
   parameters with float32 master weights (what fairseq's --fp16 does), with the CUDA kernel and with
   the reference loop. Reports the final loss, the largest gap to the float32 run of the same backend
   over the last 10 updates, whether any loss was not finite, and the dtype of the carried state c.
2. memory: peak GPU memory of training at the enwik8-base shape (10 layers, d 3072, d' 768, batch 4 x
   1024 tokens, memory = the previous segment) and of evaluation with a 3072-token window at batch 1,
   each over several consecutive segments with the state carried: once the memory is full, the peak
   must not grow from one segment to the next.
3. throughput: training step time and tokens/s of the enwik8-base model (fp16 autocast + GradScaler,
   Adam, clipping 1.0, batch 4 x 1024), the setting of ANCHORS.md's whole-model table.

Usage: python scripts/gpu/gpu_amp_check.py [--json PATH] [--quick]
"""
import argparse
import json
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_srupp.modules import SRUppLayer  # noqa: E402


class TinyLM(nn.Module):
    """Embedding -> SRU++ layers -> linear output, with the state (c, memory) carried by the caller."""

    def __init__(self, vocab: int, d: int, d_proj: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(
            SRUppLayer(d, d, d_proj, 1, True, dropout, dropout, recurrence_dropout=i < layers - 1)
            for i in range(layers))
        self.out = nn.Linear(d, vocab)
        self.dropout = dropout

    def forward(self, tokens, state=None, window=None, mem_len=0):
        """tokens (T, B) -> logits (T, B, V) and the new state [(c (B, d), memory (M, B, d))]."""
        x = F.dropout(self.embed(tokens), self.dropout, self.training)
        new_state = []
        for i, layer in enumerate(self.layers):
            c0, memory = (None, None) if state is None else state[i]
            h, c_last = layer(x, c0, memory, None, window)
            joined = x if memory is None else torch.cat([memory, x])
            new_state.append((c_last.detach(), joined[-mem_len:].detach() if mem_len else None))
            x = h
        return self.out(F.dropout(x, self.dropout, self.training)), new_state


def synthetic_stream(vocab: int, length: int, device) -> torch.Tensor:
    """A learnable token stream: a random first-order Markov chain with peaked transitions."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(vocab, vocab, generator=g) * 3
    tokens = [0]
    probs = logits.softmax(-1)
    samples = torch.multinomial(probs, length, replacement=True, generator=g)
    for i in range(length - 1):
        tokens.append(int(samples[tokens[-1], i]))
    return torch.tensor(tokens, device=device)


def train_run(mode: str, backend: str, stream: torch.Tensor, updates: int, T: int, B: int):
    """Trains TinyLM for `updates` steps; returns the losses and the dtype of the carried c."""
    os.environ["SRUPP_BACKEND"] = backend
    torch.manual_seed(0)
    device = stream.device
    model = TinyLM(64, 512, 128, 4).to(device)
    master = None
    if mode == "fp16 params":
        master = [p.detach().clone().float() for p in model.parameters()]
        model.half()
        opt = torch.optim.Adam(master, lr=1e-3)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = {"amp fp16": torch.float16, "amp bf16": torch.bfloat16}.get(mode)
    scaler = torch.amp.GradScaler("cuda", enabled=mode in ("amp fp16",))
    rows = stream[: (len(stream) // B) * B].view(B, -1).t()  # (L, B) contiguous streams
    state, losses, c_dtype = None, [], None
    static_scale = 1024.0
    for step in range(updates):
        segment = rows[step * T: (step + 1) * T + 1]
        inputs, targets = segment[:-1], segment[1:]
        with torch.autocast("cuda", dtype=autocast or torch.float32, enabled=autocast is not None):
            logits, state = model(inputs, state, mem_len=T)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        c_dtype = state[0][0].dtype
        if master is not None:
            (loss * static_scale).backward()
            for p, m in zip(model.parameters(), master):
                m.grad = p.grad.float() / static_scale
                p.grad = None
            torch.nn.utils.clip_grad_norm_(master, 1.0)
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                for p, m in zip(model.parameters(), master):
                    p.copy_(m)
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        losses.append(loss.item())
    return losses, c_dtype


def precision_check(updates: int, device) -> list:
    T, B = 128, 8
    stream = synthetic_stream(64, T * B * (updates + 1) + B, device)
    rows = []
    for backend in ("cuda", "ref"):
        reference = None
        for mode in ("fp32", "amp fp16", "amp bf16", "fp16 params"):
            losses, c_dtype = train_run(mode, backend, stream, updates, T, B)
            if mode == "fp32":
                reference = losses
            gap = max(abs(a - b) for a, b in zip(losses[-10:], reference[-10:]))
            rows.append(dict(backend=backend, mode=mode, first_loss=losses[0], final_loss=losses[-1],
                             max_gap_last10=gap, all_finite=all(math.isfinite(v) for v in losses),
                             state_dtype=str(c_dtype).replace("torch.", "")))
            print(f"{backend:>5} {mode:>12} | loss {losses[0]:.3f} -> {losses[-1]:.3f} | gap to fp32 "
                  f"(last 10) {gap:.4f} | finite {rows[-1]['all_finite']} | state c {rows[-1]['state_dtype']}",
                  flush=True)
    os.environ.pop("SRUPP_BACKEND", None)
    return rows


def enwik8_base(device, dropout: float) -> TinyLM:
    return TinyLM(205, 3072, 768, 10, dropout).to(device)


def memory_check(device, segments: int) -> dict:
    torch.manual_seed(0)
    model = enwik8_base(device, 0.22)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    train_peaks, state = [], None
    for _ in range(segments):
        torch.cuda.reset_peak_memory_stats()
        tokens = torch.randint(0, 205, (1025, 4), device=device)
        with torch.autocast("cuda", dtype=torch.float16):
            logits, state = model(tokens[:-1], state, mem_len=1024)
            loss = F.cross_entropy(logits.float().view(-1, 205), tokens[1:].reshape(-1))
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        train_peaks.append(torch.cuda.max_memory_allocated() / 2**20)
    del opt, scaler
    model.eval()
    eval_peaks, state = [], None
    with torch.no_grad():
        for _ in range(segments):
            torch.cuda.reset_peak_memory_stats()
            tokens = torch.randint(0, 205, (3072, 1), device=device)
            _, state = model(tokens, state, window=3072, mem_len=3072)
            torch.cuda.synchronize()
            eval_peaks.append(torch.cuda.max_memory_allocated() / 2**20)
    # the first segments grow (no memory yet, then optimizer state and allocator pools); once the
    # memory is full the peak must stay put
    result = dict(train_peak_mb=train_peaks, eval_window3072_peak_mb=eval_peaks,
                  train_grows=train_peaks[-1] > train_peaks[-2] * 1.01,
                  eval_grows=eval_peaks[-1] > eval_peaks[-2] * 1.01)
    print(f"train enwik8-base (B 4 x T 1024, fp16 autocast), peak MB per segment: "
          f"{', '.join(f'{v:.0f}' for v in train_peaks)}; grows: {result['train_grows']}")
    print(f"eval window 3072, batch 1 (fp32), peak MB per segment: "
          f"{', '.join(f'{v:.0f}' for v in eval_peaks)}; grows: {result['eval_grows']}", flush=True)
    del model
    torch.cuda.empty_cache()
    return result


def throughput_check(device, steps: int) -> dict:
    torch.manual_seed(0)
    model = enwik8_base(device, 0.22)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    state, times = None, []
    for step in range(steps + 4):
        tokens = torch.randint(0, 205, (1025, 4), device=device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.autocast("cuda", dtype=torch.float16):
            logits, state = model(tokens[:-1], state, mem_len=1024)
            loss = F.cross_entropy(logits.float().view(-1, 205), tokens[1:].reshape(-1))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        end.record()
        end.synchronize()
        if step >= 4:
            times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    result = dict(params=params, ms_per_step=ms, tokens_per_s=4 * 1024 / ms * 1000)
    print(f"enwik8-base training step ({params / 1e6:.1f}M params, B 4 x T 1024, fp16 autocast, Adam, "
          f"clip): {ms:.1f} ms, {result['tokens_per_s'] / 1e3:.1f}k tokens/s "
          f"(authors' code on an H100: 36.3 ms, 112.7k tokens/s)", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer updates and segments")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__}", flush=True)
    results = dict(device=torch.cuda.get_device_name())
    print("== precision (50 updates, 4 x SRU++ d 512)")
    results["precision"] = precision_check(20 if args.quick else 50, device)
    print("== memory")
    results["memory"] = memory_check(device, 3 if args.quick else 4)
    print("== throughput")
    results["throughput"] = throughput_check(device, 6 if args.quick else 12)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    bad = [r for r in results["precision"] if not r["all_finite"] or r["state_dtype"] != "float32"]
    return 1 if bad or results["memory"]["train_grows"] or results["memory"]["eval_grows"] else 0


if __name__ == "__main__":
    sys.exit(main())
