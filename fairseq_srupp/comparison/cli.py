"""The comparison's command line (scripts/bench/compare_small.py): options, then the runs in order."""
import argparse
import json
import math
import os
import platform
import shlex
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

from . import __doc__ as _DOC
from .commands import eval_command, log, train_command
from .data import finish_warmup, prepare_data, start_warmup
from .models import LEARNING_RATES, MODELS, PARAM_TOLERANCE, SIZES, TUNE_GRID, plan_sizes
from .reports import print_table, write_reports
from .runner import evaluate, train_one


def parse_args(argv=None):
    summary, protocol = _DOC.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="compare_small.py", description=summary, epilog=protocol,
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
