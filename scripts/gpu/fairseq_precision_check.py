"""fairseq-train under --amp, --fp16 and --memory-efficient-fp16 against float32, per recurrence backend.

For each backend (the CUDA kernel, the reference loop) and precision (float32, --amp,
--fp16, --memory-efficient-fp16), trains the same small srupp_lm (4 layers, d 512, d' 128,
no dropout) for --updates updates with the srupp_stream_lm task on a synthetic character
stream, through fairseq_cli.train in this process, and records every training step's loss and
the dtype of the carried cell state c. Per run it reports:

  final   the mean loss (nats per token) of the last 10 steps
  gap     |final - final of the float32 run with the same backend|
  skipped steps whose update fairseq skipped (fp16 gradient overflow)
  state   the dtype of c after the last step (must stay float32)

A run passes when every loss is finite, gap <= --tolerance and c is float32. Prints a table,
writes --json, exits 1 when a run fails. Needs fairseq. On CPU only float32 and
--memory-efficient-fp16 run (fairseq's --fp16 needs CUDA and its --amp is float32 there), with the
reference recurrence: a check of the plumbing (float16 parameters, state dtype, reporting).

Usage: python scripts/gpu/fairseq_precision_check.py [--device cuda|cpu] [--updates 50] [--json PATH]
"""
import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CPU_PRECISIONS = ("fp32", "memory-efficient-fp16")  # what fairseq can run on a CPU
PRECISIONS = {
    "fp32": [],
    "amp": ["--amp"],
    "fp16": ["--fp16"],
    "memory-efficient-fp16": ["--memory-efficient-fp16"],
}
MODEL = ["--arch", "srupp_lm", "--hidden-dim", "512", "--proj-dim", "128", "--num-layers", "4",
         "--mem-len", "128", "--dropout", "0", "--attention-dropout", "0", "--embed-dropout", "0"]
SEGMENT, BATCH = 128, 16
LAST = 10  # steps averaged for the final loss


def write_stream_corpus(folder: Path, seed: int = 0) -> None:
    """Character text (space-separated symbols, enwik8 style) drawn from a peaked first-order
    Markov chain over 40 symbols, so the loss falls quickly and visibly."""
    rng = random.Random(seed)
    symbols = [chr(ord("a") + i) for i in range(26)] + [str(i) for i in range(10)] + list(".,;:")
    nexts = {s: rng.sample(symbols, 3) for s in symbols}
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 800), ("valid", 20), ("test", 20)):
        current = rng.choice(symbols)
        with open(folder / f"{split}.txt", "w") as f:
            for _ in range(lines):
                row = []
                for _ in range(100):
                    current = rng.choice(nexts[current]) if rng.random() < 0.9 else rng.choice(symbols)
                    row.append(current)
                f.write(" ".join(row) + "\n")


def binarize(text: Path, dest: Path) -> None:
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--workers", "1",
           "--trainpref", str(text / "train.txt"), "--validpref", str(text / "valid.txt"),
           "--testpref", str(text / "test.txt"), "--destdir", str(dest)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"fairseq-preprocess failed:\n{proc.stdout[-3000:]}")


@contextlib.contextmanager
def recorded_steps():
    """Yields a list that gets (update_num, loss per token in nats, dtype of layer 1's c) for
    every training step of srupp_stream_lm."""
    from fairseq_srupp.tasks.srupp_stream_lm import SRUppStreamLMTask, _unwrap

    steps = []
    original = SRUppStreamLMTask.train_step

    def recording(self, sample, model, criterion, optimizer, update_num, *args, **kwargs):
        loss, sample_size, logging_output = original(self, sample, model, criterion, optimizer,
                                                     update_num, *args, **kwargs)
        state = _unwrap(model).decoder.stream_slots["train"].state
        steps.append((int(update_num), float(loss.detach().float()) / sample_size,
                      str(state[0].c.dtype).replace("torch.", "") if state else "none"))
        return loss, sample_size, logging_output

    SRUppStreamLMTask.train_step = recording
    try:
        yield steps
    finally:
        SRUppStreamLMTask.train_step = original


def train(data: Path, precision: str, backend: str, args) -> dict:
    """One fairseq-train run in this process; returns its recorded steps and timing."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import train as fairseq_train

    argv = [str(data), "--user-dir", str(REPO / "fairseq_srupp"), "--task", "srupp_stream_lm",
            *MODEL, "--tokens-per-sample", str(SEGMENT), "--batch-size", str(BATCH),
            "--optimizer", "adam", "--lr", str(args.lr), "--clip-norm", "1.0",
            "--max-update", str(args.updates), "--seed", "1", "--num-workers", "0",
            "--no-save", "--disable-validation", "--log-format", "simple", "--log-interval", "1000",
            *PRECISIONS[precision]]
    if args.device == "cpu":
        argv.append("--cpu")
    os.environ["SRUPP_BACKEND"] = backend
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    start = time.monotonic()
    with recorded_steps() as steps:
        distributed_utils.call_main(cfg, fairseq_train.main)
    return {"steps": steps, "seconds": time.monotonic() - start, "flags": PRECISIONS[precision]}


def summarize(run: dict, reference: dict, tolerance: float) -> dict:
    losses = [loss for _, loss, _ in run["steps"]]
    finite = all(math.isfinite(x) for x in losses)
    final = sum(losses[-LAST:]) / max(1, len(losses[-LAST:]))
    ref_losses = [loss for _, loss, _ in reference["steps"]]
    ref_final = sum(ref_losses[-LAST:]) / max(1, len(ref_losses[-LAST:]))
    updates = [u for u, _, _ in run["steps"]]
    skipped = len(updates) - len(set(updates))
    state = run["steps"][-1][2] if run["steps"] else "none"
    gap = abs(final - ref_final)
    ok = finite and gap <= tolerance and state == "float32"
    return {"steps": len(losses), "first_loss": losses[0] if losses else float("nan"),
            "final_loss": final, "gap": gap, "finite": finite, "skipped": skipped,
            "state_dtype": state, "seconds": round(run["seconds"], 1), "ok": ok}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backends", default=None,
                   help="comma separated of cuda,ref (default: cuda,ref on a GPU, ref on CPU)")
    p.add_argument("--precisions", default=None,
                   help="comma separated of " + ",".join(PRECISIONS) + " (default: all on a GPU, "
                        + ",".join(CPU_PRECISIONS) + " on CPU)")
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="largest allowed |final loss - float32 final loss| in nats (default 0.05)")
    p.add_argument("--work", type=Path, default=None, help="folder for the corpus (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--verbose", action="store_true", help="show fairseq's log of every run")
    args = p.parse_args(argv)
    if importlib.util.find_spec("fairseq") is None:
        p.error("fairseq is not importable: install fairseq-fixed (scripts/setup_env.sh), or on the "
                "GPU device the wheels from scripts/gpu/device_wheels.sh")
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu")
    backends = (args.backends or ("cuda,ref" if on_gpu else "ref")).split(",")
    precisions = (args.precisions or ",".join(PRECISIONS if on_gpu else CPU_PRECISIONS)).split(",")
    for name in backends:
        if name not in ("cuda", "ref") or (name == "cuda" and not on_gpu):
            p.error(f"--backends: {name!r} is not one of cuda (GPU only), ref")
    for name in precisions:
        if name not in PRECISIONS or (name not in CPU_PRECISIONS and not on_gpu):
            p.error(f"--precisions: {name!r} is not one of {', '.join(PRECISIONS)} "
                    f"(on CPU: {', '.join(CPU_PRECISIONS)})")
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # the baseline every gap is measured against

    work = args.work or Path(tempfile.mkdtemp(prefix="srupp_precision_"))
    data = work / "bin"
    if not (data / "dict.txt").exists():
        write_stream_corpus(work / "text")
        binarize(work / "text", data)

    if not args.verbose:  # fairseq's INFO lines (set up when fairseq_cli.train is imported) and warnings
        importlib.import_module("fairseq_cli.train")
        logging.getLogger().setLevel(logging.WARNING)
        warnings.filterwarnings("ignore")
    device = torch.cuda.get_device_name() if on_gpu else "cpu"
    rows = []
    for backend in backends:
        runs = {}
        for precision in precisions:
            print(f"[precision] {backend} {precision}", flush=True)
            runs[precision] = train(data, precision, backend, args)
            rows.append({"backend": backend, "precision": precision,
                         **summarize(runs[precision], runs["fp32"], args.tolerance)})
            if args.json:  # after every run, so that a run cut short by a time limit still reports
                args.json.write_text(json.dumps({"device": device, "updates": args.updates,
                                                 "tolerance": args.tolerance, "rows": rows}, indent=2))

    print(f"\nfairseq-train, {args.updates} updates, srupp_lm d 512 d' 128 x 4, batch {BATCH}x{SEGMENT}, "
          f"{device}; tolerance {args.tolerance} nats on the mean of the last {LAST} losses")
    header = f"{'backend':>7} {'precision':>22} {'first':>6} {'final':>6} {'gap':>7} {'skipped':>7} " \
             f"{'state c':>8} {'s':>6}  ok"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['backend']:>7} {r['precision']:>22} {r['first_loss']:6.3f} {r['final_loss']:6.3f} "
              f"{r['gap']:7.4f} {r['skipped']:7d} {r['state_dtype']:>8} {r['seconds']:6.1f}  "
              f"{'ok' if r['ok'] else 'FAIL'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
