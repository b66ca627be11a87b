"""Generation and evaluation speed on the CPU: SRU++ (incremental decoder, step module eager and
compiled, ONNX Runtime) against a fairseq transformer_lm of about the same size.

Models are random-initialised (one fairseq-train update of lr 1e-9 on random byte text, so both
are ordinary fairseq checkpoints): SRU++ `srupp_lm` (d 512, d' 128, 4 layers, attention in every
layer) and transformer_lm (4 layers, d 160, ffn 640, 4 heads, pre-norm). Speed does not depend
on the weights.

Tables (every figure batch 1, --threads intra-op threads for torch and onnxruntime):
1. Generation: greedy decoding from position 0 to max(--positions) (tokens/s over that run),
   keeping the state at each position; then 100 steps from each kept state, the positions
   interleaved step by step; ms per token = the median of those steps. Medians over --rounds
   rounds, the variants interleaved within each round (the machine may be shared).
   (a) SRU++ incremental decoder (fairseq's incremental_state, cached keys/values), eager;
   (a') the static-shape step module, eager; (b) the step module under torch.compile;
   (c) the ONNX step on onnxruntime; (d) transformer_lm's incremental decoder, eager.
   SRU++ attends to the last --gen-window positions.
2. The inference cache: the incremental decoder with and without the projected-key/value cache,
   state prefilled to each position in one call, then 100 timed steps, interleaved.
3. fairseq-eval-lm tokens/s on --eval-tokens test tokens at batch 1 for each --eval-windows W:
   SRU++ with the stream task (--tokens-per-sample W --eval-attn-window W), with and without the
   cache, against transformer_lm with --context-window W (and --tokens-per-sample 2W, of which
   fairseq-eval-lm scores W tokens per block, each with W to 2W - 1 tokens of context).

Usage: python scripts/bench/bench_generation.py [--out DIR] [--threads 1] [--rounds 3] [--json PATH]
"""
import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from fairseq_srupp.encoders.byte_codec import encode_line  # noqa: E402
from fairseq_srupp.export import SRUppStep, export_step_onnx  # noqa: E402
from fairseq_srupp.export.cli import load_model, set_window  # noqa: E402
from fairseq_srupp.models.srupp_decoder import SRUppDecoder  # noqa: E402

USER_DIR = str(REPO / "fairseq_srupp")
BIN = Path(sys.executable).parent
TIMED = 100
TRANSFORMER = "(d) transformer_lm incremental decoder, eager"
# fairseq-eval-lm with the decoder's inference cache switched off (the code before the cache)
UNCACHED_EVAL = ("import sys; from fairseq_srupp.models.srupp_decoder import SRUppDecoder; "
                 "SRUppDecoder._caches_projections = lambda self: False; "
                 "from fairseq_cli.eval_lm import cli_main; sys.argv[0] = 'fairseq-eval-lm'; "
                 "cli_main()")
SRUPP_FLAGS = ["--task", "srupp_stream_lm", "--arch", "srupp_lm", "--tokens-per-sample", "64",
               "--mem-len", "64"]
TRANSFORMER_FLAGS = ["--task", "language_modeling", "--sample-break-mode", "none",
                     "--tokens-per-sample", "64", "--max-target-positions", "8192",
                     "--arch", "transformer_lm", "--decoder-layers", "4",
                     "--decoder-embed-dim", "160", "--decoder-input-dim", "160",
                     "--decoder-output-dim", "160", "--decoder-ffn-embed-dim", "640",
                     "--decoder-attention-heads", "4", "--decoder-normalize-before"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_generation", help="work folder (data, checkpoints)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--positions", default="100,1000,4000")
    p.add_argument("--gen-window", type=int, default=512)
    p.add_argument("--eval-windows", default="512,2048")
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--no-compile", action="store_true", help="skip (b), torch.compile")
    p.add_argument("--no-eval-lm", action="store_true", help="skip table 3")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def tool(name):
    exe = BIN / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fairseq_cli." + name.split("-", 1)[1].replace("-", "_")]


def env(threads):
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads))


def run(cmd, threads):
    proc = subprocess.run(cmd, env=env(threads), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} failed:\n{proc.stdout[-3000:]}")
    return proc.stdout


def prepare(out: Path, eval_tokens: int, threads: int):
    """Random byte text, binarized; one fairseq-train update of each model -> checkpoints."""
    data = out / "data-bin"
    if not (data / "test.bin").exists():
        rng = random.Random(0)
        letters = "etaoin shrdlu"
        for split, n in {"train": 4000, "valid": 500, "test": eval_tokens}.items():
            text = "".join(rng.choice(letters) for _ in range(n))
            lines = [text[i:i + 100] for i in range(0, len(text), 100)]
            (out / f"{split}.txt").write_text("".join(encode_line(line) + "\n" for line in lines))
        run(tool("fairseq-preprocess") + ["--only-source", "--trainpref", out / "train.txt", "--validpref",
                                          out / "valid.txt", "--testpref", out / "test.txt",
                                          "--destdir", data, "--workers", "1"], threads)
    checkpoints = {}
    for name, flags in (("srupp", SRUPP_FLAGS), ("transformer", TRANSFORMER_FLAGS)):
        save = out / f"ck_{name}"
        if not (save / "checkpoint_last.pt").exists():
            run(tool("fairseq-train") + [data, "--user-dir", USER_DIR, "--cpu", *flags, "--batch-size", "2",
                                         "--optimizer", "adam", "--lr", "1e-9", "--max-update", "1",
                                         "--disable-validation", "--num-workers", "0", "--save-dir", save,
                                         "--no-epoch-checkpoints"], threads)
        checkpoints[name] = save / "checkpoint_last.pt"
    return data, checkpoints


# ---------------------------------------------------------------------------------------- generation
# Each variant is (start() -> state, advance(state, token) -> (scores (V,), state), copy(state) -> state).

def greedy(scores, banned) -> int:
    scores = np.array(scores, dtype=np.float64)
    scores[banned] = -np.inf
    return int(scores.argmax())


def copy_nested(state):
    """A copy of an incremental_state (dicts of tensors) that later steps do not change."""
    if isinstance(state, dict):
        return {k: copy_nested(v) for k, v in state.items()}
    return state.clone() if torch.is_tensor(state) else state


def decoder_variant(model, eos):
    """fairseq-style incremental decoding (the whole prefix passed, the last token consumed)."""
    def advance(state, token):
        incremental, prefix = state
        prefix = torch.cat([prefix, torch.tensor([[token]])], dim=1) if prefix is not None else \
            torch.tensor([[token]])
        logits, _ = model.decoder(prefix, incremental_state=incremental)
        return logits[0, -1].numpy(), (incremental, prefix)
    return (lambda: ({}, None)), advance, (lambda st: (copy_nested(st[0]), st[1]))


def step_variant(step_fn, initial):
    def advance(state, token):
        log_probs, *state = step_fn(torch.tensor([[token]]), *state)
        return log_probs[0].numpy(), state
    return initial, advance, (lambda st: st)


def onnx_variant(session, initial):
    def advance(state, token):
        c, kv, position = state
        log_probs, *state = session.run(None, {"tokens": np.array([[token]], np.int64), "c": c, "kv": kv,
                                               "position": position})
        return log_probs[0], state
    return (lambda: tuple(t.numpy() for t in initial())), advance, (lambda st: st)


def measure(variant, positions, eos, banned):
    """Generate from position 0 to max(positions) (tokens/s over the run), keeping the state at each
    position; then TIMED steps from every kept state, the positions interleaved step by step (so load
    on a shared machine hits all positions alike); ms per token = the median of those steps."""
    start, advance, copy = variant
    kept, state, token = {}, start(), eos
    begin = time.perf_counter()
    with torch.no_grad():
        for pos in range(max(positions) + 1):
            if pos in positions:
                kept[pos] = (copy(state), token)
            scores, state = advance(state, token)
            token = greedy(scores, banned)
        run_s = time.perf_counter() - begin
        times = {p: [] for p in positions}
        for _ in range(TIMED):
            for p in positions:
                state, token = kept[p]
                tick = time.perf_counter()
                scores, state = advance(state, token)
                token = greedy(scores, banned)
                times[p].append(time.perf_counter() - tick)
                kept[p] = (state, token)
    out = {f"ms@{p}": 1e3 * statistics.median(times[p]) for p in positions}
    out["tokens/s"] = (max(positions) + 1) / run_s
    return out


def generation_table(srupp, transformer, dictionary, args, positions, out: Path):
    import onnxruntime

    eos, banned = dictionary.eos(), [dictionary.pad(), dictionary.bos()]
    step = SRUppStep(srupp.decoder)
    onnx_path = out / "step.onnx"
    export_step_onnx(step, str(onnx_path), eos)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    initial = lambda: step.initial_state(1)  # noqa: E731
    variants = {"(a) SRU++ incremental decoder, eager": decoder_variant(srupp, eos),
                "(a') SRU++ step module, eager": step_variant(step, initial)}
    if not args.no_compile:
        print("[bench] compiling the step (torch.compile, inductor) ...", flush=True)
        compiled = torch.compile(step, dynamic=False)
        with torch.no_grad():
            compiled(torch.tensor([[eos]]), *initial())
        variants["(b) SRU++ step module, torch.compile"] = step_variant(compiled, initial)
    variants["(c) SRU++ step, ONNX Runtime"] = onnx_variant(session, initial)
    variants[TRANSFORMER] = decoder_variant(transformer, eos)
    rounds = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, variant in variants.items():
            rounds[name].append(measure(variant, positions, eos, banned))
            print(f"[bench] round {r + 1}: {name}: {rounds[name][-1]}", flush=True)
    first, last = f"ms@{positions[0]}", f"ms@{positions[-1]}"
    for name, results in rounds.items():  # ratios within each round, then their median
        for r, row in enumerate(results):
            row[f"{positions[-1]}/{positions[0]}"] = row[last] / row[first]
            row[f"transformer/this @{positions[-1]}"] = rounds[TRANSFORMER][r][last] / row[last]
    return {name: {k: statistics.median(x[k] for x in results) for k in results[0]}
            for name, results in rounds.items()}


def cache_table(srupp, dictionary, args, positions):
    """Per-token ms of the incremental decoder at each position, with and without the inference
    cache: the state prefilled to the position in one call, then TIMED steps, all (variant,
    position) pairs interleaved step by step."""
    modes = {"cached (this version)": SRUppDecoder._caches_projections,
             "uncached (before)": lambda self: False}
    banned = [dictionary.pad(), dictionary.bos()]
    rows = {name: [] for name in modes}
    with torch.no_grad():
        for _ in range(args.rounds):
            states, times = {}, {}
            for name, method in modes.items():
                SRUppDecoder._caches_projections = method
                for p in positions:
                    prefix = torch.randint(4, len(dictionary), (1, p))
                    incremental = {}
                    srupp.decoder(prefix, incremental_state=incremental)
                    states[name, p], times[name, p] = (incremental, prefix), []
            for _ in range(TIMED):
                for (name, p), (incremental, prefix) in states.items():
                    SRUppDecoder._caches_projections = modes[name]
                    tick = time.perf_counter()
                    logits, _ = srupp.decoder(prefix, incremental_state=incremental)
                    token = greedy(logits[0, -1].numpy(), banned)
                    times[name, p].append(time.perf_counter() - tick)
                    states[name, p] = (incremental, torch.cat([prefix, torch.tensor([[token]])], dim=1))
            for name in modes:
                rows[name].append({f"ms@{p}": 1e3 * statistics.median(times[name, p]) for p in positions})
    SRUppDecoder._caches_projections = modes["cached (this version)"]
    return {name: {k: statistics.median(x[k] for x in r) for k in r[0]} for name, r in rows.items()}


# ---------------------------------------------------------------------------------------- eval-lm
TOKENS_RE = re.compile(r"Evaluated ([\d,]+) tokens in [\d.]+s \(([\d.]+) tokens/s\)")


def eval_lm_table(data, checkpoints, args, windows):
    common = [str(data), "--user-dir", USER_DIR, "--gen-subset", "test", "--batch-size", "1", "--cpu",
              "--num-workers", "0"]
    commands = {}
    for w in windows:
        srupp = ["--path", str(checkpoints["srupp"]), "--task", "srupp_stream_lm", "--tokens-per-sample",
                 str(w), "--eval-attn-window", str(w)]
        commands[f"SRU++, cached, W={w}"] = tool("fairseq-eval-lm") + common + srupp
        commands[f"SRU++, uncached (before), W={w}"] = [sys.executable, "-c", UNCACHED_EVAL] + common + srupp
        commands[f"transformer_lm, W={w}"] = tool("fairseq-eval-lm") + common + [
            "--path", str(checkpoints["transformer"]), "--task", "language_modeling", "--sample-break-mode",
            "none", "--tokens-per-sample", str(2 * w), "--context-window", str(w)]  # eval-lm scores 2w - w
    rounds = {name: [] for name in commands}
    for r in range(args.rounds):
        for name, cmd in commands.items():
            match = TOKENS_RE.search(run(cmd, args.threads))
            rounds[name].append(float(match.group(2)))
            print(f"[bench] round {r + 1}: eval-lm {name}: {rounds[name][-1]:.0f} tokens/s", flush=True)
    return {name: statistics.median(v) for name, v in rounds.items()}


# ---------------------------------------------------------------------------------------- report
def machine():
    cpu = platform.processor() or "?"
    if os.path.exists("/proc/cpuinfo"):
        names = re.findall(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read())
        cpu = names[0] if names else cpu
    import onnxruntime

    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"python {platform.python_version()}")


def print_table(title, rows, columns):
    print(f"\n{title}\n")
    print(" | ".join(["variant"] + columns))
    print("|".join(["---"] * (len(columns) + 1)))
    for name, row in rows.items():
        print(" | ".join([name] + [f"{row[c]:.0f}" if c == "tokens/s" else f"{row[c]:.2f}" for c in columns]))


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    positions = [int(p) for p in args.positions.split(",")]
    windows = [int(w) for w in args.eval_windows.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, checkpoints = prepare(out, args.eval_tokens, args.threads)
    srupp, dictionary = load_model(str(checkpoints["srupp"]), str(data))
    set_window(srupp.decoder, args.gen_window)
    from fairseq import checkpoint_utils

    (transformer,), _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoints["transformer"])], arg_overrides={"data": str(data)})
    transformer.eval()
    params = {"SRU++": sum(p.numel() for p in srupp.parameters()),
              "transformer_lm": sum(p.numel() for p in transformer.parameters())}
    gen = generation_table(srupp, transformer, dictionary, args, positions, out)
    cache = cache_table(srupp, dictionary, args, positions)
    evals = {} if args.no_eval_lm else eval_lm_table(data, checkpoints, args, windows)
    print(f"\nmachine: {machine()}; {args.threads} thread(s); medians of {args.rounds} interleaved rounds")
    print(f"parameters: SRU++ {params['SRU++']:,}, transformer_lm {params['transformer_lm']:,}; "
          f"SRU++ generation window {args.gen_window}")
    ratios = [f"{positions[-1]}/{positions[0]}", f"transformer/this @{positions[-1]}"]
    print_table("generation, batch 1 (ratios: medians of the per-round ratios)", gen,
                [f"ms@{p}" for p in positions] + ["tokens/s"] + ratios)
    print_table("incremental decoder with and without the inference cache", cache, [f"ms@{p}" for p in positions])
    if evals:
        print("\nfairseq-eval-lm, batch 1\n\nvariant | tokens/s\n---|---")
        for name, value in evals.items():
            print(f"{name} | {value:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "threads": args.threads, "params": params,
                                               "generation": gen, "cache": cache, "eval_lm": evals}, indent=1))


if __name__ == "__main__":
    main()
