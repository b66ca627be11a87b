"""Running fairseq-train under a watchdog, reading its json log, and the test evaluation."""
import json
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .commands import REPO, eval_command, log, tool_env, train_command
from .models import MODELS

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
