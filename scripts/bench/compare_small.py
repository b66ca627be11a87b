#!/usr/bin/env python3
"""Equal-wall-clock comparison of SRU++ with fairseq's Transformer and LSTM language models.

Five models train one after another with the real `fairseq-train`, each for the same wall-clock
budget and the same tokens per update, on character-level (byte) data:

    a  srupp_k1      SRU++, attention in every layer (the paper's k=1)
    b  srupp_last    SRU++, attention only in the last layer (k = number of layers)
    c  srupp_noattn  SRU++ without attention
    d  transformer   fairseq `transformer_lm`, width chosen so its parameter count is within
                     10% of (a)'s
    e  lstm          fairseq `lstm_lm`, matched to (a) the same way

Each is then scored with `fairseq-eval-lm` on the test split; bits per character = fairseq's
base-2 loss, since every symbol is one byte (the newline is </s>). The output folder gets
results.json, results.csv, valid_bpc.png (validation bpc against wall-clock seconds), the logs
and the checkpoints, and a table is printed. The write-up of the setup is docs/comparison.md.

Protocol (the choices and why)
- SRU++ runs use the plugin's `srupp_stream_lm` task: B contiguous streams, state (c and the
  attention memory of --mem-len positions) carried from segment to segment, in training,
  validation and evaluation (the paper's protocol). The Transformer and the LSTM use fairseq's
  `language_modeling` task with `--sample-break-mode none`: shuffled blocks of T tokens, each
  starting from an empty context. Every model sees B x T tokens per update.
- Budget: `--stop-time-hours` (fairseq's trainer clock, which starts when the trainer is built,
  after the model and before the training data are loaded, and runs through validation), plus a
  watchdog here that kills a run that overshoots. Model building and process start-up are not
  counted; evaluation is separate.
- Validation during training runs every `valid_every` updates on `valid_small`, the first
  `valid_tokens` tokens of the validation split (whole lines, binarized with the training
  dictionary), so it costs a few percent of the budget and every model is scored on the same
  text. Its times are the seconds from the trainer's start to the end of each validation,
  stamped when fairseq logs the line (the json log's own `wall` field is only on training
  lines and rounded to whole seconds). The Transformer/LSTM curves score each block of T tokens
  from an empty context, the SRU++ curves carry the state over the 4 or so segments of each
  stream: the curves favour SRU++ a little; the test numbers do not (see next point).
- Test: SRU++ streams the whole test split in `--batch-size B` rows with its state carried.
  The Transformer and the LSTM are given a context window instead (`--context-window T/2` with
  `--tokens-per-sample T`): every scored token sees between T/2 and T-1 earlier tokens, and no
  input is longer than the training length T (the Transformer's limit).
- Optimiser: Adam (0.9, 0.98), eps 1e-8, no weight decay, gradient clipping 1.0, a linear
  warm-up over `warmup` updates and then a constant learning rate (a wall-clock budget has no
  known end for a decay schedule). Dropout: `dropout` of the size table for every dropout of
  every model (0 on CPU, where a few hundred updates are far from overfitting).
- Learning rates: one per model family (SRU++ a/b/c share one), picked with `--tune`: a sweep
  of 3 rates per family on models a, d and e, the lowest final `valid_small` bpc wins. Short
  sweeps favour high rates, so the best two were rerun at about half the full run's updates;
  LEARNING_RATES records the numbers behind the defaults.

Sizes (SIZES below): `cpu` (2-core laptop-class machine, budget 600 s), `cuda` (one GPU, budget
300 s, fp32 unless --amp) and `tiny` (CI smoke test). (d) and (e) are sized from (a)'s parameter
count by the formulas in this file (the counts fairseq logs are reported and re-checked).

Usage
    python scripts/bench/compare_small.py --out runs/compare_cpu            # the demo corpus, CPU
    python scripts/bench/compare_small.py --data DIR --device cuda --out runs/compare_gpu
    python scripts/bench/compare_small.py --tune --max-update 480 --out runs/tune_cpu   # lr sweep
    python scripts/bench/compare_small.py --models a,d --budget-seconds 60 --out /tmp/quick

DIR is a folder with {train,valid,test}.txt in the character format of
scripts/data/text_to_chars.py, or the OUT_DIR of scripts/data/prepare_*.sh (with text/ and data-bin/).
Without --data the shipped demo corpus is prepared with scripts/data/prepare_demo.sh into --cache.
"""
import argparse
import csv
import json
import math
import os
import platform
import queue
import re
import shutil
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
USER_DIR = REPO / "fairseq_srupp"
BIN = Path(sys.executable).parent

# ------------------------------------------------------------------------------------------------
# Sizes per device. B x T tokens per update for every model. srupp_*: d, d', layers and the
# attention memory; transformer/lstm: layers (and heads), the width is matched to (a).
SIZES: Dict[str, Dict] = {
    # CI smoke test: seconds per model, a few KB of text.
    "tiny": dict(batch=4, tokens=32, hidden=32, proj=8, layers=2, mem_len=32,
                 tf_layers=2, tf_heads=2, lstm_layers=1, dropout=0.0, warmup=0,
                 valid_every=5, valid_tokens=512, budget=5.0),
    # 2 CPU cores: a few hundred SRU++ updates in 600 s (about 1.3M parameters each).
    "cpu": dict(batch=16, tokens=256, hidden=512, proj=128, layers=4, mem_len=256,
                tf_layers=4, tf_heads=4, lstm_layers=2, dropout=0.0, warmup=30,
                valid_every=40, valid_tokens=16384, budget=600.0),
    # One GPU (about 9.7M parameters each); many epochs of the 5 MB demo corpus, hence dropout.
    "cuda": dict(batch=32, tokens=512, hidden=1024, proj=256, layers=8, mem_len=512,
                 tf_layers=8, tf_heads=8, lstm_layers=2, dropout=0.1, warmup=200,
                 valid_every=200, valid_tokens=65536, budget=300.0),
}

MODELS = {
    "a": ("srupp_k1", "srupp", "SRU++, attention in every layer"),
    "b": ("srupp_last", "srupp", "SRU++, attention in the last layer only"),
    "c": ("srupp_noattn", "srupp", "SRU++, no attention"),
    "d": ("transformer", "transformer", "fairseq transformer_lm (pre-norm), params matched to (a)"),
    "e": ("lstm", "lstm", "fairseq lstm_lm, params matched to (a)"),
}

# Learning rates per size and family: the defaults. `cpu` comes from `--tune` on the demo corpus
# (2 CPU cores shared with other jobs, so every sweep run was cut at a number of updates rather
# than at a time; the lowest final valid_small bpc wins). valid_small bpc:
#   SRU++ (a)      120 updates: 1e-3 2.856, 2e-3 2.678, 4e-3 2.557, 8e-3 2.485, 1.6e-2 2.491
#                  480 updates: 4e-3 2.061, 8e-3 2.078 (4e-3 ahead from update ~240 on)  -> 4e-3
#   Transformer    120 updates: 5e-4 3.511, 1e-3 3.489, 2e-3 3.468 (still on the unigram plateau)
#   (d)            300 updates: 1e-3 3.196, 2e-3 3.048, 4e-3 2.825, 8e-3 3.156
#                  600 updates: 2e-3 2.423, 4e-3 2.381 (the gap shrinking)                 -> 4e-3
#   LSTM (e)       120 updates: 1e-3 3.658, 3e-3 3.248, 1e-2 2.773, 2e-2 2.604, 4e-2 2.701
#                  240 updates: 1e-2 2.356, 2e-2 2.297                                    -> 2e-2
# The short sweeps favour high rates, so the best two were rerun for about half of the updates
# each model makes in 600 s on 2 quiet cores (SRU++ ~1000, Transformer ~1600, LSTM ~450).
# Reproduce: --tune --max-update N --tune-grid FAMILY=LR,... (docs/comparison.md).
# `cuda` was not tuned (no GPU time for a sweep): the CPU choices halved, for models 7x larger
# trained on batches 4x larger. `tiny` only has to run.
LEARNING_RATES: Dict[str, Dict[str, float]] = {
    "tiny": {"srupp": 3e-3, "transformer": 3e-3, "lstm": 3e-3},
    "cpu": {"srupp": 4e-3, "transformer": 4e-3, "lstm": 2e-2},
    "cuda": {"srupp": 2e-3, "transformer": 2e-3, "lstm": 1e-2},
}
TUNE_GRID: Dict[str, List[float]] = {  # --tune's default sweep: the chosen rate x0.5, x1, x2
    "srupp": [2e-3, 4e-3, 8e-3],
    "transformer": [2e-3, 4e-3, 8e-3],
    "lstm": [1e-2, 2e-2, 4e-2],
}

PARAM_TOLERANCE = 0.10  # (d) and (e) within 10% of (a)


def log(msg: str) -> None:
    print(f"[compare_small] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Parameter counts (checked against the counts fairseq-train logs; see the smoke test)

def srupp_params(vocab: int, d: int, dp: int, layers: int, attention: List[bool]) -> int:
    """srupp_lm with a plain untied embedding and output layer (with bias), attention LN on."""
    n = vocab * d + vocab * d + vocab  # embedding, output weight + bias
    for att in attention:
        n += d * dp + 3 * d * dp + 2 * dp + 4 * d  # W1, W3 (or W2), LN(d'), weight_c + bias
        if att:
            n += 2 * dp * dp + 1  # fused K/V projection, alpha
    return n


def transformer_params(vocab: int, dim: int, layers: int) -> int:
    """fairseq transformer_lm, pre-norm, FFN 4*dim, sinusoidal positions, untied output (no bias)."""
    ffn = 4 * dim
    per_layer = 4 * (dim * dim + dim) + 2 * 2 * dim + dim * ffn + ffn + ffn * dim + dim
    return vocab * dim + layers * per_layer + 2 * dim + vocab * dim


def lstm_params(vocab: int, hidden: int, layers: int) -> int:
    """fairseq lstm_lm with embed = hidden = out-embed (no extra projection), no attention."""
    per_layer = 4 * hidden * hidden * 2 + 8 * hidden  # W_ih (input = hidden), W_hh, two biases
    return vocab * hidden + layers * per_layer + hidden * vocab + vocab


def attention_pattern(model: str, layers: int) -> List[bool]:
    if model == "a":
        return [True] * layers
    if model == "b":
        return [i == layers - 1 for i in range(layers)]
    return [False] * layers


def match_width(count, target: int, fine: int, coarse: int = 8) -> int:
    """The width (a multiple of `fine`) whose count(width) is closest to target; a multiple of
    `coarse` is preferred when it is within 5%."""
    candidates, width = [], fine
    while True:
        n = count(width)
        candidates.append((abs(n - target) / target, width))
        if n > target * 1.1:
            break
        width += fine
    candidates.sort()
    for err, w in candidates:
        if w % coarse == 0 and err <= 0.05:
            return w
    return candidates[0][1]


def plan_sizes(size: Dict, vocab: int) -> Dict[str, Dict]:
    """Architecture numbers and expected parameter count of every model."""
    d, dp, L = size["hidden"], size["proj"], size["layers"]
    target = srupp_params(vocab, d, dp, L, attention_pattern("a", L))
    plans = {}
    for key in "abc":
        plans[key] = dict(hidden=d, proj=dp, layers=L, mem_len=size["mem_len"],
                          params=srupp_params(vocab, d, dp, L, attention_pattern(key, L)))
    heads, tl = size["tf_heads"], size["tf_layers"]
    dim = match_width(lambda w: transformer_params(vocab, w, tl), target, heads,
                      8 * heads // math.gcd(8, heads))
    plans["d"] = dict(dim=dim, ffn=4 * dim, layers=tl, heads=heads,
                      params=transformer_params(vocab, dim, tl))
    ll = size["lstm_layers"]
    hidden = match_width(lambda w: lstm_params(vocab, w, ll), target, 2)
    plans["e"] = dict(hidden=hidden, layers=ll, params=lstm_params(vocab, hidden, ll))
    return plans


# ------------------------------------------------------------------------------------------------
# fairseq commands

def tool_cmd(tool: str) -> List[str]:
    exe = BIN / tool
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "fairseq_cli." + tool.split("-", 1)[1].replace("-", "_")]


def tool_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads),
               # our own checkpoints; lstm_lm (a legacy model) stores an argparse Namespace
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    return env


def model_flags(key: str, plan: Dict, size: Dict) -> List[str]:
    p = str(size["dropout"])
    if key in "abc":
        every = {"a": 1, "b": plan["layers"], "c": 0}[key]
        return ["--arch", "srupp_lm", "--hidden-dim", str(plan["hidden"]),
                "--proj-dim", str(plan["proj"]), "--num-layers", str(plan["layers"]),
                "--attention-every", str(every), "--mem-len", str(plan["mem_len"]),
                "--dropout", p, "--attention-dropout", p, "--embed-dropout", p]
    if key == "d":
        dim = str(plan["dim"])
        # --arch transformer_lm does not run base_lm_architecture: give input/output dims too
        return ["--arch", "transformer_lm", "--decoder-layers", str(plan["layers"]),
                "--decoder-embed-dim", dim, "--decoder-input-dim", dim,
                "--decoder-output-dim", dim, "--decoder-ffn-embed-dim", str(plan["ffn"]),
                "--decoder-attention-heads", str(plan["heads"]), "--decoder-normalize-before",
                "--dropout", p, "--attention-dropout", p, "--activation-dropout", p]
    h = str(plan["hidden"])
    return ["--arch", "lstm_lm", "--decoder-layers", str(plan["layers"]),
            "--decoder-embed-dim", h, "--decoder-hidden-size", h, "--decoder-out-embed-dim", h,
            "--decoder-attention", "0", "--dropout", p]


def task_flags(key: str, size: Dict) -> List[str]:
    B, T = str(size["batch"]), str(size["tokens"])
    if key in "abc":
        return ["--task", "srupp_stream_lm", "--tokens-per-sample", T, "--batch-size", B,
                "--batch-size-valid", B]
    return ["--task", "language_modeling", "--sample-break-mode", "none",
            "--tokens-per-sample", T, "--batch-size", B, "--batch-size-valid", B]


def train_command(key: str, plan: Dict, size: Dict, lr: float, budget: float, data: Path,
                  save_dir: Path, args) -> List[str]:
    cmd = tool_cmd("fairseq-train") + [
        str(data), "--user-dir", str(USER_DIR), *task_flags(key, size),
        *model_flags(key, plan, size),
        "--criterion", "cross_entropy", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
        "--adam-eps", "1e-8", "--weight-decay", "0", "--clip-norm", "1.0",
        "--lr", repr(lr), "--lr-scheduler", "fixed", "--warmup-updates", str(size["warmup"]),
        "--stop-time-hours", repr(budget / 3600.0), "--seed", "1",
        "--valid-subset", "valid_small", "--validate-interval-updates", str(size["valid_every"]),
        "--validate-interval", "1000000", "--save-interval", "1000000",
        "--no-epoch-checkpoints", "--no-save-optimizer-state", "--save-dir", str(save_dir),
        "--log-format", "json", "--log-interval", str(max(1, size["valid_every"] // 2)),
        "--num-workers", "0", "--required-batch-size-multiple", "1",
    ]
    if args.max_update:
        cmd += ["--max-update", str(args.max_update)]
    if args.device == "cpu":
        cmd.append("--cpu")
    elif args.amp:
        cmd.append("--amp")
    return cmd


def eval_command(key: str, size: Dict, checkpoint: Path, data: Path, args) -> List[str]:
    B, T = size["batch"], size["tokens"]
    cmd = tool_cmd("fairseq-eval-lm") + [
        str(data), "--user-dir", str(USER_DIR), "--path", str(checkpoint), "--gen-subset", "test",
        "--num-workers", "0", "--log-format", "simple",
    ]
    if key in "abc":  # the state is carried over the whole split, B rows of it
        cmd += ["--task", "srupp_stream_lm", "--tokens-per-sample", str(T), "--batch-size", str(B)]
    else:  # windows of T tokens: T/2 scored, the T/2 before them as context
        cmd += ["--task", "language_modeling", "--sample-break-mode", "none",
                "--tokens-per-sample", str(T), "--context-window", str(T // 2),
                "--batch-size", str(B)]
    if args.device == "cpu":
        cmd.append("--cpu")
    return cmd


# ------------------------------------------------------------------------------------------------
# Running fairseq-train under a watchdog and reading its json log

LINE_RE = re.compile(r"\| (\S+) \| (\{.*\})\s*$")
PARAMS_RE = re.compile(r"num\. shared model params: ([\d,]+)")


def _reader(stream, q: "queue.Queue") -> None:
    for line in iter(stream.readline, ""):
        q.put((time.monotonic(), line))
    q.put((time.monotonic(), None))


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_streaming(cmd: List[str], env: Dict, log_path: Path, on_line, deadline_fn) -> int:
    """Run cmd, stamping each output line as it arrives (on_line(stamp, line)); kill the process
    when deadline_fn(now) says so. Returns the exit code (negative = killed)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as logf:
        logf.write("$ " + shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env=env, cwd=str(REPO))
        try:
            q: "queue.Queue" = queue.Queue()
            threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
            killed = False
            while True:
                try:
                    stamp, line = q.get(timeout=0.5)
                except queue.Empty:
                    stamp, line = time.monotonic(), ""
                if line is None:
                    break
                if line:
                    logf.write(line)
                    logf.flush()
                    on_line(stamp, line)
                if not killed and deadline_fn(time.monotonic()):
                    log(f"watchdog: stopping {cmd[0]} (pid {proc.pid}), it overran its budget")
                    logf.write("[compare_small] watchdog: killed (budget overrun)\n")
                    stop(proc)
                    killed = True
            rc = proc.wait()
        finally:  # interrupted (Ctrl-C, SIGTERM): do not leave the training running
            if proc.poll() is None:
                stop(proc)
    return -abs(rc) if killed else rc


class TrainLog:
    """What one fairseq-train run printed: trainer start, valid curve, updates, tokens, params."""

    def __init__(self, valid_subset: str):
        self.subset = valid_subset
        self.launch = time.monotonic()
        self.t0: Optional[float] = None  # the trainer's start (its "training on ..." line)
        self.curve: List[Tuple[float, float]] = []
        self.valid_updates: List[int] = []
        self.params: Optional[int] = None
        self.updates = 0
        self.epoch_tokens: List[Tuple[int, float]] = []  # (num_updates at epoch end, wpb)
        self.last_stamp: Optional[float] = None
        self.tail: List[str] = []

    def on_line(self, stamp: float, line: str) -> None:
        self.tail = (self.tail + [line])[-40:]
        if self.t0 is None and "training on " in line and "devices" in line:
            self.t0 = stamp
        m = PARAMS_RE.search(line)
        if m:
            self.params = int(m.group(1).replace(",", ""))
        m = LINE_RE.search(line)
        if not m:
            return
        tag, payload = m.groups()
        try:
            stats = json.loads(payload)
        except json.JSONDecodeError:
            return
        if tag == self.subset and f"{tag}_loss" in stats:
            t = stamp - (self.t0 if self.t0 is not None else self.launch)
            self.curve.append((round(t, 2), float(stats[f"{tag}_loss"])))
            n = int(float(stats.get(f"{tag}_num_updates", self.updates)))
            self.valid_updates.append(n)
            self.updates = max(self.updates, n)
            self.last_stamp = stamp
        elif tag == "train_inner" and "num_updates" in stats:
            self.updates = max(self.updates, int(float(stats["num_updates"])))
        elif tag == "train" and "train_num_updates" in stats:
            n = int(float(stats["train_num_updates"]))
            self.updates = max(self.updates, n)
            self.epoch_tokens.append((n, float(stats.get("train_wpb", 0.0))))

    def tokens(self, nominal_per_update: int) -> int:
        """Target tokens trained on: per epoch, its updates x its mean tokens per batch."""
        total, prev = 0.0, 0
        for n, wpb in self.epoch_tokens:
            total += (n - prev) * (wpb or nominal_per_update)
            prev = n
        total += (self.updates - prev) * nominal_per_update
        return int(round(total))


def train_one(key: str, plan: Dict, size: Dict, lr: float, budget: float, data: Path,
              out: Path, args, tag: str) -> Dict:
    name = MODELS[key][0]
    save_dir = out / "checkpoints" / tag
    if save_dir.exists():
        shutil.rmtree(save_dir)
    cmd = train_command(key, plan, size, lr, budget, data, save_dir, args)
    tl = TrainLog("valid_small")
    grace = max(60.0, budget)  # final validation + checkpoint after the stop, and slack

    def deadline(now: float) -> bool:
        if tl.t0 is None:
            return now - tl.launch > args.startup_timeout
        return now - tl.t0 > budget + grace

    log(f"train {tag} ({name}, lr {lr:g}, budget {budget:g} s)")
    start = time.monotonic()
    threads = args.model_threads.get(key, args.threads)
    rc = run_streaming(cmd, tool_env(threads), out / "logs" / f"{tag}.train.log",
                       tl.on_line, deadline)
    result = {
        "model": key, "name": name, "description": MODELS[key][2], "family": MODELS[key][1],
        "arch": plan, "lr": lr, "params": tl.params, "params_expected": plan["params"],
        "updates": tl.updates, "tokens": tl.tokens(size["batch"] * size["tokens"]),
        "wall_seconds": round(tl.last_stamp - tl.t0, 2) if tl.last_stamp and tl.t0 else None,
        "process_seconds": round(time.monotonic() - start, 2),
        "valid_bpc_curve": [list(p) for p in tl.curve],
        "final_valid_bpc": tl.curve[-1][1] if tl.curve else None,
        "threads": threads, "train_returncode": rc,
        "train_command": cmd,
        "checkpoint": str(save_dir / "checkpoint_last.pt"),
    }
    if rc != 0 or not (save_dir / "checkpoint_last.pt").exists():
        result["error"] = (f"fairseq-train exited with {rc}; see logs/{tag}.train.log:\n"
                           + "".join(tl.tail[-15:]))
        log(result["error"])
    return result


def evaluate(key: str, result: Dict, size: Dict, data: Path, out: Path, args, tag: str) -> None:
    cmd = eval_command(key, size, Path(result["checkpoint"]), data, args)
    log_path = out / "logs" / f"{tag}.eval.log"
    start = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=tool_env(result["threads"]), cwd=str(REPO))
    log_path.write_text("$ " + shlex.join(cmd) + "\n" + proc.stdout)
    result["eval_seconds"] = round(time.monotonic() - start, 2)
    result["eval_command"] = cmd
    m = re.search(r"Loss \(base 2\): ([-\d.naif]+)", proc.stdout)
    n = re.search(r"Evaluated ([\d,]+) tokens", proc.stdout)
    result["test_bpc"] = float(m.group(1)) if m else None
    result["test_tokens_evaluated"] = int(n.group(1).replace(",", "")) if n else None
    if proc.returncode != 0 or m is None:
        result["error"] = (f"fairseq-eval-lm exited with {proc.returncode}; see logs/{tag}.eval.log:\n"
                           + proc.stdout[-2000:])
        log(result["error"])


# ------------------------------------------------------------------------------------------------
# Data

def run_quiet(cmd: List[str], env: Dict, what: str) -> None:
    """Run a helper command; show its output only when it fails."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=str(REPO))
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}")


def write_valid_small(valid_txt: Path, out_txt: Path, max_tokens: int) -> int:
    """The first lines of valid (the last one cut if needed) with <= max_tokens tokens, counting
    fairseq's </s> per line. Returns the token count."""
    total = 0
    with open(valid_txt) as fin, open(out_txt, "w") as fout:
        for line in fin:
            room = max_tokens - total - 1
            if room <= 0:
                break
            syms = line.split()[:room]
            fout.write(" ".join(syms) + "\n")
            total += len(syms) + 1
    if total == 0:
        raise SystemExit(f"{valid_txt} is empty")
    return total


def preprocess(env: Dict, dest: Path, srcdict: Optional[Path] = None, workers: int = 1,
               **prefs: Path) -> None:
    """fairseq-preprocess --only-source into a fresh dest (trainpref=..., validpref=...)."""
    shutil.rmtree(dest, ignore_errors=True)
    cmd = tool_cmd("fairseq-preprocess") + ["--only-source", "--destdir", str(dest),
                                            "--workers", str(workers)]
    if srcdict is not None:
        cmd += ["--srcdict", str(srcdict)]
    for name, path in prefs.items():
        cmd += [f"--{name}", str(path)]
    run_quiet(cmd, env, "fairseq-preprocess")


def prepare_data(args, out: Path, size: Dict) -> Tuple[Path, Dict]:
    """out/data/data-bin for the runs: dict, train, valid, test and valid_small (the first
    size['valid_tokens'] tokens of valid, used for validation during training)."""
    env = tool_env(args.threads)
    work = out / "data" / "data-bin"
    small_txt = out / "data" / "valid_small.txt"
    work.parent.mkdir(parents=True, exist_ok=True)
    source = None
    if args.data is None:
        demo = Path(args.cache).expanduser().resolve() / "demo"
        log(f"preparing the demo corpus in {demo} (scripts/data/prepare_demo.sh)")
        env_demo = dict(env, PYTHON=env.get("PYTHON", sys.executable),
                        FAIRSEQ_PREPROCESS=env.get("FAIRSEQ_PREPROCESS",
                                                   " ".join(tool_cmd("fairseq-preprocess"))),
                        WORKERS=env.get("WORKERS", str(args.threads)))
        run_quiet(["bash", str(REPO / "scripts" / "data" / "prepare_demo.sh"), str(demo)], env_demo,
                  "scripts/data/prepare_demo.sh")
        text_dir, source = demo / "text", demo / "data-bin"
    else:
        root = Path(args.data).expanduser().resolve()
        if (root / "text" / "valid.txt").exists() and (root / "data-bin" / "dict.txt").exists():
            text_dir, source = root / "text", root / "data-bin"  # scripts/data/prepare_*.sh output
        elif all((root / f"{s}.txt").exists() for s in ("train", "valid", "test")):
            text_dir = root
        else:
            raise SystemExit(f"--data {root}: expected train.txt, valid.txt and test.txt (character "
                             f"format, scripts/data/text_to_chars.py) or the text/ and data-bin/ folders "
                             f"of scripts/data/prepare_*.sh")
    n_small = write_valid_small(text_dir / "valid.txt", small_txt, size["valid_tokens"])
    if source is None:  # binarize everything at once; valid_small comes out as valid1
        log(f"fairseq-preprocess {text_dir} -> {work}")
        preprocess(env, work, workers=args.threads, trainpref=text_dir / "train.txt",
                   validpref=f"{text_dir / 'valid.txt'},{small_txt}",
                   testpref=text_dir / "test.txt")
        for ext in ("bin", "idx"):
            os.replace(work / f"valid1.{ext}", work / f"valid_small.{ext}")
    else:  # link the prepared splits, binarize valid_small with their dictionary
        tmp = out / "data" / "valid_small.tmp"
        preprocess(env, tmp, srcdict=source / "dict.txt", validpref=small_txt)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        for split in ("train", "valid", "test"):
            for ext in ("bin", "idx"):
                (work / f"{split}.{ext}").symlink_to((source / f"{split}.{ext}").resolve())
        shutil.copyfile(source / "dict.txt", work / "dict.txt")
        for ext in ("bin", "idx"):
            os.replace(tmp / f"valid.{ext}", work / f"valid_small.{ext}")
        shutil.rmtree(tmp, ignore_errors=True)
    with open(work / "dict.txt") as f:
        vocab = 4 + sum(1 for _ in f)  # fairseq's <s> <pad> </s> <unk> + the file's symbols
    return work, {"text_dir": str(text_dir), "binarized": str(source or work), "vocab": vocab,
                  "valid_small_tokens": n_small}


WARMUP_SNIPPET = """
import torch
from fairseq_srupp.modules import sru_recurrence
dev = "{device}"
U = torch.zeros(3, 2, 3, 4, device=dev, requires_grad=True)
x = torch.zeros(3, 2, 4, device=dev)
h, c = sru_recurrence(U, x, torch.zeros(8, device=dev), torch.zeros(8, device=dev))
(h.sum() + c.sum()).backward()
"""


def start_warmup(args) -> subprocess.Popen:
    """Build (or load from the cache) the SRU++ recurrence backend once before any timed run, so
    no budget pays for a first compilation."""
    return subprocess.Popen([sys.executable, "-c", WARMUP_SNIPPET.format(device=args.device)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=tool_env(args.threads), cwd=str(REPO))


def finish_warmup(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate()
    if proc.returncode != 0:
        log(f"warning: the SRU++ recurrence warm-up failed ({proc.returncode}); the first SRU++ "
            f"run may pay for a compilation:\n{output[-2000:]}")


# ------------------------------------------------------------------------------------------------
# Reports

CSV_COLUMNS = ["model", "name", "params", "lr", "threads", "updates", "tokens", "wall_seconds",
               "final_valid_bpc", "test_bpc", "eval_seconds", "valid_bpc_curve", "error"]


def write_reports(out: Path, config: Dict, results: List[Dict], plot_title: str) -> None:
    (out / "results.json").write_text(json.dumps({"config": config, "models": results}, indent=2)
                                      + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in results:
            row = {k: r.get(k) for k in CSV_COLUMNS}
            row["valid_bpc_curve"] = json.dumps(r.get("valid_bpc_curve", []))
            row["error"] = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
            w.writerow(row)
    plot(out / "valid_bpc.png", results, plot_title)


def plot(path: Path, results: List[Dict], title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install matplotlib): no plot written")
        return

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    finals = []
    for r in results:
        curve = r.get("valid_bpc_curve") or []
        if not curve:
            continue
        xs, ys = zip(*curve)
        test = r.get("test_bpc")
        label = f"({r['model']}) {r.get('tag') or r['name']}, " \
                f"{r.get('params') or r['params_expected']:,} params"
        if test is not None:
            label += f", test {test:.3f}"
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
        finals.extend(ys[len(ys) // 3:])
    if finals:  # leave the first, very high points out of the y range
        lo, hi = min(finals), max(finals)
        pad = 0.1 * (hi - lo) + 0.02
        ax.set_ylim(lo - pad, hi + 3 * pad)
    ax.set_xlabel("wall-clock seconds since the trainer started")
    ax.set_ylabel("validation bpc (valid_small)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: List[Dict], tune: bool = False) -> None:
    head = f"{'model':<18}{'params':>11}{'lr':>9}{'updates':>9}{'tokens':>12}{'wall s':>9}" \
           f"{'valid bpc':>11}" + ("" if tune else f"{'test bpc':>10}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{'(' + r['model'] + ') ' + r['name']:<18}{fmt(r.get('params'), ',d'):>11}"
              f"{r['lr']:>9.2g}{r['updates']:>9d}{r['tokens']:>12,d}"
              f"{fmt(r.get('wall_seconds'), '.0f'):>9}{fmt(r.get('final_valid_bpc'), '.3f'):>11}"
              + ("" if tune else f"{fmt(r.get('test_bpc'), '.3f'):>10}")
              + ("  ERROR" if r.get("error") else ""))
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="character-level text folder ({train,valid,test}.txt) or the "
                                  "OUT_DIR of scripts/data/prepare_*.sh; default: the demo corpus")
    p.add_argument("--cache", default=os.environ.get("SRUPP_CACHE", "~/.cache/fairseq_srupp"),
                   help="where the demo corpus is prepared (default ~/.cache/fairseq_srupp)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--size", choices=sorted(SIZES), help="model sizes (default: --device)")
    p.add_argument("--budget-seconds", type=float,
                   help="wall-clock training budget per model (default: 600 on cpu, 300 on cuda, "
                        "5 for --size tiny; 60 with --tune)")
    p.add_argument("--models", default=None,
                   help="comma separated subset of a,b,c,d,e (default: all; with --tune: a,d,e)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads per run (OMP_NUM_THREADS; default: all cores)")
    p.add_argument("--model-threads", action="append", default=[], metavar="MODEL=N",
                   help="torch threads for one model, e.g. e=1 (repeatable; default --threads)")
    p.add_argument("--lr", action="append", default=[], metavar="FAMILY=LR",
                   help="override a learning rate: srupp=, transformer= or lstm= (repeatable)")
    p.add_argument("--tune", action="store_true",
                   help="learning-rate sweep: TUNE_GRID's 3 rates per family, no test eval; "
                        "writes tune.json and prints the best rate per family")
    p.add_argument("--tune-grid", action="append", default=[], metavar="FAMILY=LR,LR,...",
                   help="replace a family's sweep")
    p.add_argument("--max-update", type=int, default=0,
                   help="also stop after this many updates (0 = budget only)")
    p.add_argument("--amp", action="store_true", help="--device cuda: train with --amp")
    p.add_argument("--eval-jobs", type=int, default=1,
                   help="test evaluations to run at once after all training (default 1: each "
                        "right after its training)")
    p.add_argument("--startup-timeout", type=float, default=900.0,
                   help="kill a run whose trainer has not started after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="print the plan and commands only")
    args = p.parse_args(argv)
    args.size = args.size or args.device
    if args.models is None:
        args.models = "a,d,e" if args.tune else "a,b,c,d,e"
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    bad = [k for k in keys if k not in MODELS]
    if bad or not keys:
        p.error(f"--models: unknown {bad}; choose from a,b,c,d,e")
    args.keys = sorted(set(keys))
    if args.budget_seconds is None:
        args.budget_seconds = 60.0 if args.tune and args.size != "tiny" else SIZES[args.size]["budget"]
    if args.budget_seconds <= 0:
        p.error("--budget-seconds must be positive")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.eval_jobs < 1:
        p.error("--eval-jobs must be >= 1")
    model_threads = {}
    for item in args.model_threads:
        key, _, val = item.partition("=")
        if key not in MODELS or not val.isdigit() or int(val) < 1:
            p.error(f"--model-threads {item}: expected MODEL=N with MODEL in a,b,c,d,e, N >= 1")
        model_threads[key] = int(val)
    args.model_threads = model_threads
    args.lrs = dict(LEARNING_RATES[args.size])
    for item in args.lr:
        fam, _, val = item.partition("=")
        if fam not in args.lrs:
            p.error(f"--lr {item}: family must be one of {sorted(args.lrs)}")
        args.lrs[fam] = float(val)
    args.grid = {f: list(v) for f, v in TUNE_GRID.items()}
    for item in args.tune_grid:
        fam, _, vals = item.partition("=")
        if fam not in args.grid:
            p.error(f"--tune-grid {item}: family must be one of {sorted(args.grid)}")
        args.grid[fam] = [float(v) for v in vals.split(",")]
    return args


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        from importlib.metadata import version
        for pkg in ("torch", "fairseq-fixed", "fairseq", "numpy"):
            try:
                out[pkg] = version(pkg)
            except Exception:
                pass
    except ImportError:
        pass
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the cleanup in run_streaming
    size = SIZES[args.size]
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        vocab = 104
        data = Path("<data-bin>")
        info = {"vocab": vocab, "note": "dry run: vocabulary of the demo corpus assumed"}
    else:
        warmup = start_warmup(args) if any(k in "abc" for k in args.keys) else None
        data, info = prepare_data(args, out, size)
        vocab = info["vocab"]
        if warmup is not None:
            finish_warmup(warmup)
    plans = plan_sizes(size, vocab)
    budget = args.budget_seconds
    config = {
        "mode": "tune" if args.tune else "compare", "device": args.device, "size": args.size,
        "size_table": size, "budget_seconds": budget, "threads": args.threads,
        "model_threads": args.model_threads,
        "batch": size["batch"], "tokens_per_sample": size["tokens"],
        "tokens_per_update": size["batch"] * size["tokens"], "models": args.keys,
        "learning_rates": args.lrs, "data": info, "max_update": args.max_update,
        "amp": bool(args.amp and args.device == "cuda"), "argv": sys.argv, "versions": versions(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    runs: List[Tuple[str, float, str]] = []  # (model key, lr, tag)
    for key in args.keys:
        fam = MODELS[key][1]
        if args.tune:
            runs += [(key, lr, f"{MODELS[key][0]}_lr{lr:g}") for lr in args.grid[fam]]
        else:
            runs.append((key, args.lrs[fam], MODELS[key][0]))
    for key in args.keys:
        log(f"({key}) {MODELS[key][0]}: {plans[key]}")
    if args.dry_run:
        for key, lr, tag in runs:
            print(shlex.join(train_command(key, plans[key], size, lr, budget, data,
                                           out / "checkpoints" / tag, args)))
            if not args.tune:
                checkpoint = out / "checkpoints" / tag / "checkpoint_last.pt"
                print(shlex.join(eval_command(key, size, checkpoint, data, args)))
        return 0

    results: List[Dict] = []
    title = (f"{args.device} ({args.size} sizes), {budget:g} s per model, "
             f"{size['batch']}x{size['tokens']} tokens per update, "
             f"{args.threads} thread{'s' if args.threads != 1 else ''}")
    for key, lr, tag in runs:
        r = train_one(key, plans[key], size, lr, budget, data, out, args, tag)
        r["tag"] = tag
        if not args.tune and "error" not in r and args.eval_jobs == 1:
            evaluate(key, r, size, data, out, args, tag)
        results.append(r)
        write_reports(out, config, results, title)  # partial results survive an interruption
    if not args.tune and args.eval_jobs > 1:  # after the timed runs, several at once
        with ThreadPoolExecutor(max_workers=args.eval_jobs) as pool:
            list(pool.map(lambda r: evaluate(r["model"], r, size, data, out, args, r["tag"]),
                          [r for r in results if "error" not in r]))

    ref = next((r["params"] for r in results if r["model"] == "a" and r.get("params")),
               plans["a"]["params"])
    for r in results:
        if r.get("params"):
            r["params_ratio_to_a"] = round(r["params"] / ref, 4)
            if r["model"] in "de" and abs(r["params"] / ref - 1) > PARAM_TOLERANCE:
                r.setdefault("warning", f"parameter count {r['params']:,} is not within 10% "
                                        f"of (a)'s {ref:,}")
                log(r["warning"])
    if args.tune:
        best = {}
        for fam in sorted({r["family"] for r in results}):
            ok = [r for r in results if r["family"] == fam and r.get("final_valid_bpc") is not None
                  and math.isfinite(r["final_valid_bpc"])]
            if ok:
                win = min(ok, key=lambda r: r["final_valid_bpc"])
                best[fam] = win["lr"]
                grid = args.grid[fam]
                if len(grid) >= 3 and win["lr"] in (min(grid), max(grid)):
                    log(f"{fam}: the best lr {win['lr']:g} is at the edge of the sweep {grid}")
        config["best_learning_rates"] = best
        (out / "tune.json").write_text(json.dumps({"config": config, "runs": results}, indent=2)
                                       + "\n")
    config["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_reports(out, config, results, title)
    print_table(results, tune=args.tune)
    if args.tune:
        print("best learning rates:", json.dumps(config["best_learning_rates"]))
    print(f"results: {out / 'results.json'}, {out / 'results.csv'}, {out / 'valid_bpc.png'}")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
