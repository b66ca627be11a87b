"""The comparison's outputs: results.json, results.csv, valid_bpc.png and the printed table."""
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List

from .commands import log


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
