"""CPU training step, eager against torch.compile (--compile), in one run: prints a table.

Settings:
  demo   the whole `srupp_lm` at the demo setting (scripts/demo.sh): 4 layers, d 512, d' 128, attention
         in every layer, V 136, batch 16 x 256 tokens, memory 256 and c carried from the previous
         segment, no dropout; one step = forward, cross-entropy, backward, Adam step.
  layer  one enwik8-base-width SRU++ layer (d 3072, d' 768, one head), T 256, B 4, memory 256 and c0,
         dropout 0.22 (the architecture's); one step = forward + backward.
Both variants are built from the same seed and warmed up first (the compiled one compiles there: the
compile time is the warm-up's extra wall time over eager, reported separately); then steps alternate
eager, compiled, eager, ... and the table shows medians and the ratio eager / compiled (> 1: compiled is
faster), and the ratio of the fastest step of each (less sensitive to other jobs on a shared machine). --profile prints the top CPU operators of one step of each variant (torch.profiler).

Usage: python scripts/bench/bench_compile.py [--settings demo,layer] [--steps 7] [--threads N]
       [--json PATH] [--profile]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_srupp.modules import SRUppLayer, compile_layer  # noqa: E402


class _Dictionary:
    """The little of a fairseq Dictionary that build_model needs."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def pad(self):
        return 1


class _Task:
    def __init__(self, size):
        self.source_dictionary = self.target_dictionary = _Dictionary(size)


def demo_step_factory(compiled: bool):
    """A closure running one training step of the demo model on carried state (segments 0, 1, 2, ...)."""
    from fairseq_srupp.models.config import SRUppLMConfig
    from fairseq_srupp.models.srupp_lm import SRUppLanguageModel

    torch.manual_seed(0)
    cfg = SRUppLMConfig(dropout=0.0, attention_dropout=0.0, embed_dropout=0.0, mem_len=256,
                        max_target_positions=None, compile=compiled)
    model = SRUppLanguageModel.build_model(cfg, _Task(136)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, 136, (16, 257), generator=g)
    segment = [0]

    def step():
        logits = model(tokens[:, :-1], segment_index=segment[0])[0]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        segment[0] += 1

    return step


def layer_step_factory(compiled: bool):
    torch.manual_seed(0)
    layer = SRUppLayer(3072, 3072, 768, 1, True, 0.22, 0.22).train()
    if compiled:
        compile_layer(layer)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 4, 3072, generator=g, requires_grad=True)
    memory = torch.randn(256, 4, 3072, generator=g)
    c0 = torch.randn(4, 3072, generator=g)
    grad_h = torch.randn(256, 4, 3072, generator=g)

    def step():
        h, _ = layer(x, c0, memory)
        torch.autograd.backward(h, grad_h)
        layer.zero_grad(set_to_none=True)
        x.grad = None

    return step


SETTINGS = {"demo": ("srupp_lm, 4 x (512, 128), 16 x 256, mem 256", demo_step_factory, 2),
            "layer": ("SRU++ layer (3072, 768), T 256, B 4, mem 256", layer_step_factory, 1)}


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def profile(step, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"\n--- {label}: top operators by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def bench(name: str, steps: int, do_profile: bool) -> dict:
    title, factory, warmup = SETTINGS[name]
    eager, compiled = factory(False), factory(True)
    # warm-up: the first segments (no state, then state) compile their graphs in the compiled variant;
    # eager goes first once more, so that one-time costs of both (allocations) are out of the difference
    seconds(eager)
    eager_warm = sum(seconds(eager) for _ in range(warmup + 1))
    compiled_warm = sum(seconds(compiled) for _ in range(warmup + 1))
    times = {"eager": [], "compiled": []}
    for _ in range(steps):
        times["eager"].append(seconds(eager))
        times["compiled"].append(seconds(compiled))
    eager_ms = statistics.median(times["eager"]) * 1e3
    compiled_ms = statistics.median(times["compiled"]) * 1e3
    if do_profile:
        profile(eager, f"{name} eager")
        profile(compiled, f"{name} compiled")
    return dict(setting=name, title=title, eager_ms=eager_ms, compiled_ms=compiled_ms,
                speedup=eager_ms / compiled_ms, compile_s=compiled_warm - eager_warm,
                eager_steps_ms=[t * 1e3 for t in times["eager"]],
                compiled_steps_ms=[t * 1e3 for t in times["compiled"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="demo,layer", help="comma separated: demo, layer")
    parser.add_argument("--steps", type=int, default=7, help="timed steps per variant (interleaved)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--profile", action="store_true", help="print a CPU operator profile per variant")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(machine)
    from fairseq_srupp.modules import recurrence_cpu

    error = recurrence_cpu.build_error()  # builds (or loads) the fused CPU loop before any timing
    if error is not None:
        sys.exit(f"the fused CPU loop does not build here: {error}")
    rows = [bench(name, args.steps, args.profile) for name in args.settings.split(",")]
    header = (f"{'setting':<48} | {'eager ms':>9} | {'compiled ms':>11} | {'eager/compiled':>14} | "
              f"{'best of each':>12} | {'compile s':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        best = min(r["eager_steps_ms"]) / min(r["compiled_steps_ms"])
        print(f"{r['title']:<48} | {r['eager_ms']:9.1f} | {r['compiled_ms']:11.1f} | {r['speedup']:13.2f}x | "
              f"{best:11.2f}x | {r['compile_s']:9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine, steps=args.steps, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
