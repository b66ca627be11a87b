"""The recipe driver: a corpus and a variant of recipes/tables.py -> the authors' fairseq-train run,
or their final evaluation with fairseq-eval-lm (scripts/recipes/recipe.py is its command line).

    recipe.py train DATASET [--variant V] DATA_BIN [extra fairseq-train options...]
    recipe.py eval  DATASET DATA_BIN CHECKPOINT [extra fairseq-eval-lm options...]

Extra options go to fairseq last, so they override the recipe. Environment: VARIANT (default of
--variant: base), ADAPTIVE (txl | fairseq; wikitext103 and lm1b), SAVE_DIR (default
checkpoints/<corpus>_<variant>), the GPU layout of recipes/parallel.py (NGPUS, NNODES, NODE_RANK,
MASTER_ADDR, MASTER_PORT, LAUNCHER, UPDATE_FREQ, BATCH_SIZE), and for eval SUBSET (test | valid;
default test), WINDOW (attention window = memory = segment; default the authors'), LOG (default
CHECKPOINT's folder/eval_<corpus>_<SUBSET>.log); PYTHON (the interpreter with torch and fairseq;
default python3), USER_DIR (the fairseq_srupp folder; default this package), DRY_RUN=1 (print the
command only; needs no GPU).
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
from typing import Callable, List, Mapping, Optional, Tuple

from .parallel import RecipeError, plan_parallel, read_uint, torch_gpu_count
from .tables import CORPORA, FAIRSEQ_ADAPTIVE_CRITERION, Corpus

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RESULT = re.compile(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)")


def check_data(corpus: Corpus, data: str, *splits: str) -> None:
    """DATA is fairseq-preprocess output holding the splits; else an error with the prepare hint."""
    hint = corpus.prepare_hint
    if not os.path.isdir(data):
        raise RecipeError(f"data folder not found: {data}; {hint}")
    if not _nonempty(os.path.join(data, "dict.txt")):
        raise RecipeError(f"{data} has no dict.txt: pass the fairseq-preprocess output folder "
                          f"(OUT/data-bin of the prepare script); {hint}")
    for split in splits:
        if not (_nonempty(os.path.join(data, split + ".bin"))
                and _nonempty(os.path.join(data, split + ".idx"))):
            raise RecipeError(f"{data} has no {split}.bin/{split}.idx; {hint}")


def _nonempty(path: str) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > 0


def check_python(env: Mapping[str, str], dry_run: bool) -> Tuple[str, str]:
    """(PYTHON, USER_DIR), checked: the plugin folder exists, PYTHON imports torch and fairseq."""
    python = env.get("PYTHON", "") or "python3"
    user_dir = env.get("USER_DIR", "") or PACKAGE_DIR
    if not os.path.isfile(os.path.join(user_dir, "__init__.py")):
        raise RecipeError(f"USER_DIR={user_dir} is not the fairseq_srupp package folder")
    if not dry_run and subprocess.run([python, "-c", "import fairseq, torch"],
                                      capture_output=True).returncode != 0:
        raise RecipeError(f"{python} cannot import torch and fairseq: activate the environment "
                          f"(scripts/setup_env.sh) or set PYTHON")
    return python, os.path.abspath(user_dir)


def train_command(corpus: Corpus, variant_name: str, data: str, extra: List[str],
                  env: Mapping[str, str], log: Callable[[str], None],
                  count: Callable[[str], int] = torch_gpu_count) -> List[str]:
    """The fairseq-train command of the authors' recipe for `corpus` / `variant_name`."""
    dry_run = env.get("DRY_RUN", "0") == "1"
    check_data(corpus, data, "train", "valid")
    _, user_dir = check_python(env, dry_run)
    variant = corpus.variants.get(variant_name)
    if variant is None:
        raise RecipeError(f"VARIANT (--variant) must be {_either(corpus.variants)} for "
                          f"{corpus.name}, got '{variant_name}'")
    arch, criterion = ["--arch", variant.arch], list(corpus.criterion)
    adaptive = env.get("ADAPTIVE", "")
    if adaptive and not variant.fairseq_adaptive:
        raise RecipeError(f"ADAPTIVE applies to the corpora with adaptive layers, not {corpus.name}; "
                          f"unset it")
    if adaptive not in ("", "txl", "fairseq"):
        raise RecipeError(f"ADAPTIVE must be txl or fairseq, got '{adaptive}'")
    if adaptive == "fairseq":
        arch, criterion = list(variant.fairseq_adaptive), list(FAIRSEQ_ADAPTIVE_CRITERION)
    save_dir = env.get("SAVE_DIR", "") or f"checkpoints/{corpus.save_name}_{variant_name}"
    par = plan_parallel(variant.streams, corpus.valid_streams, env, dry_run, log, count)
    log(par.summary)
    warmup = ["--warmup-updates", "16000"] + (["--warmup-from-zero"] if corpus.warmup_from_zero else [])
    return [*par.launch, data, "--user-dir", user_dir, "--task", "srupp_stream_lm", *arch,
            "--tokens-per-sample", str(variant.tokens), "--batch-size", str(par.batch),
            "--update-freq", str(par.update_freq), "--batch-size-valid", str(par.valid_batch),
            *criterion,
            "--optimizer", "radam", "--radam-betas", "(0.9, 0.999)", "--radam-eps", "1e-8",
            "--weight-decay", "0.1", "--lr", variant.lr, "--lr-scheduler", "srupp_cosine", *warmup,
            "--max-update", str(corpus.max_update),
            "--clip-norm", "1.0", "--amp", "--amp-batch-retries", "0", "--seed", "1234", *par.dist,
            "--validate-interval-updates", "8000", "--save-interval-updates", "8000",
            "--keep-interval-updates", "1", "--no-epoch-checkpoints",
            "--best-checkpoint-metric", "loss", "--log-format", "simple", "--log-interval", "200",
            "--save-dir", save_dir, *extra]


def eval_command(corpus: Corpus, data: str, checkpoint: str, extra: List[str],
                 env: Mapping[str, str]) -> Tuple[List[str], str, str, int]:
    """The authors' final evaluation: one stream (batch 1) on one GPU in fp32, segments of WINDOW
    tokens, each attending to at most WINDOW earlier positions, the state carried through the
    split. Returns (command, log file, subset, window)."""
    dry_run = env.get("DRY_RUN", "0") == "1"
    subset = env.get("SUBSET", "") or "test"
    check_data(corpus, data, subset)
    python, user_dir = check_python(env, dry_run)
    if not os.path.isfile(checkpoint):
        raise RecipeError(f"checkpoint not found: {checkpoint}")
    window = read_uint(env, "WINDOW", corpus.eval_window)
    logfile = env.get("LOG", "") or os.path.join(os.path.dirname(checkpoint),
                                                 f"eval_{corpus.name}_{subset}.log")
    overrides = f"{{'attn_window': {window}, 'mem_len': {window}, 'carry_state': True}}"
    cmd = [python, "-m", "fairseq_cli.eval_lm", data, "--path", checkpoint, "--user-dir", user_dir,
           "--task", "srupp_stream_lm", "--gen-subset", subset, "--batch-size", "1",
           "--tokens-per-sample", str(window), "--distributed-world-size", "1",
           "--model-overrides", overrides, *extra]
    return cmd, logfile, subset, window


def run_logged(cmd: List[str], logfile: str) -> Tuple[str, str]:
    """Runs cmd, its output to the terminal and to logfile; (base-2 loss, perplexity) it printed."""
    os.makedirs(os.path.dirname(os.path.abspath(logfile)), exist_ok=True)
    result = None
    with open(logfile, "w") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            result = _RESULT.search(line) or result
    if proc.returncode != 0:
        raise RecipeError(f"fairseq-eval-lm failed (exit status {proc.returncode}); see {logfile}")
    if result is None:
        raise RecipeError(f"fairseq-eval-lm printed no 'Loss (base 2)' line; see {logfile}")
    return result.group(1), result.group(2)


def _either(names) -> str:
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="step", required=True)
    train = steps.add_parser("train", help="train with the authors' recipe")
    train.add_argument("--variant", default=None,
                       help="model size: base or large (wikitext103: also large_k5); default "
                            "$VARIANT, else base")
    evaluate = steps.add_parser("eval", help="the authors' final evaluation of a checkpoint")
    for sub in (train, evaluate):
        sub.add_argument("dataset", choices=sorted(CORPORA))
        sub.add_argument("data", help="the fairseq-preprocess folder (OUT/data-bin of the prepare "
                                      "script)")
    evaluate.add_argument("checkpoint")
    for sub in (train, evaluate):
        extra = sub.add_argument("extra", nargs=argparse.REMAINDER, metavar="FAIRSEQ_OPTION",
                                 help="more fairseq options, passed last")
        extra.required = False  # argparse would list it among the missing arguments
    return p


def main(argv: Optional[List[str]] = None, env: Optional[Mapping[str, str]] = None,
         prog: str = "recipe.py") -> int:
    env = dict(os.environ if env is None else env)
    a = _parser(prog).parse_args(argv)
    corpus = CORPORA[a.dataset]

    def log(msg: str) -> None:
        print(f"[{prog}] {msg}", file=sys.stderr)

    dry_run = env.get("DRY_RUN", "0") == "1"
    try:
        if a.step == "train":
            variant = a.variant or env.get("VARIANT", "") or "base"
            cmd = train_command(corpus, variant, a.data, a.extra, env, log)
            print(shlex.join(cmd), file=sys.stderr)
            return 0 if dry_run else subprocess.run(cmd).returncode
        cmd, logfile, subset, window = eval_command(corpus, a.data, a.checkpoint, a.extra, env)
        print(shlex.join(cmd), file=sys.stderr)
        if dry_run:
            return 0
        loss2, ppl = run_logged(cmd, logfile)
    except RecipeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    value = f"{loss2} bpc" if corpus.eval_metric == "bpc" else f"perplexity {ppl}"
    print(f"{corpus.title} {subset}: {value} (window {window}; authors' test: {corpus.authors_test})")
    return 0
