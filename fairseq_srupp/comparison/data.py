"""The comparison's data: one binarized folder with train, valid, test and valid_small; and the
warm-up that builds the SRU++ recurrence backend before any timed run."""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .commands import REPO, log, tool_cmd, tool_env


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
