"""fairseq command lines of the comparison, and the environment they run in."""
import os
import sys
from pathlib import Path
from typing import Dict, List


PACKAGE = Path(__file__).resolve().parents[1]  # fairseq_srupp: the --user-dir
REPO = PACKAGE.parent  # the subprocesses' working folder; scripts/data/prepare_demo.sh
USER_DIR = PACKAGE
BIN = Path(sys.executable).parent


def log(msg: str) -> None:
    print(f"[compare_small] {msg}", file=sys.stderr, flush=True)


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
