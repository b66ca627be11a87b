"""Smoke test of the equal-time comparison (fairseq_srupp/comparison, scripts/bench/compare_small.py):
the five models at --size tiny with a budget of 2 seconds per model on a corpus of a few KB, then
the structure of its outputs."""
import csv
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq_srupp.comparison import commands, models, runner

from conftest import REPO

SCRIPT = REPO / "scripts" / "bench" / "compare_small.py"

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but they have an one you were her all she there would their we him been has when "
         "who will more no if out so said what up its about into than them can only other new "
         "some could time these two may then do first any my now such like our over man me even "
         "most made after also did many before must through back years where much your way well "
         "down should because each just those people how too little state good very make world").split()


def write_char_corpus(folder: Path, seed: int = 0) -> None:
    """English-like sentences in the enwik8-style character format (each UTF-8 byte as a
    decimal, one line per text line): about 6 KB of train text, 1 KB each of valid and test."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 70), ("valid", 12), ("test", 12)):
        with open(folder / f"{split}.txt", "w") as f:
            for _ in range(lines):
                words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
                sentence = " ".join(words).capitalize() + rng.choice([".", ".", "?", "!"])
                f.write(" ".join(str(b) for b in sentence.encode("utf-8")) + "\n")


def test_widths_match_parameters():
    """(d) and (e) land within 10% of (a) for every size table and a range of vocabularies."""
    for size in models.SIZES.values():
        for vocab in (32, 72, 104, 208, 264):
            plans = models.plan_sizes(size, vocab)
            target = plans["a"]["params"]
            for key in "de":
                assert abs(plans[key]["params"] / target - 1) <= models.PARAM_TOLERANCE, (size, vocab, key)


def test_watchdog_stops_an_overrunning_run(tmp_path):
    """A run that outlives its budget is stopped, and its lines arrive stamped as they come."""
    child = tmp_path / "child.py"
    child.write_text(
        "import json, time\n"
        "print('training on 1 devices (GPUs/TPUs)', flush=True)\n"
        "stats = {'valid_small_loss': '3.5', 'valid_small_num_updates': '7'}\n"
        "print('x | INFO | valid_small | ' + json.dumps(stats), flush=True)\n"
        "time.sleep(60)\n")
    tl = runner.TrainLog("valid_small")
    start = time.monotonic()
    rc = runner.run_streaming([sys.executable, str(child)], commands.tool_env(1), tmp_path / "run.log",
                              tl.on_line, lambda now: tl.t0 is not None and now - tl.t0 > 1.0)
    assert rc < 0 and time.monotonic() - start < 30
    assert tl.t0 is not None and tl.updates == 7 and tl.curve[0][1] == 3.5
    assert "watchdog" in (tmp_path / "run.log").read_text()


@pytest.mark.e2e
def test_compare_small_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    data = tmp_path / "text"
    write_char_corpus(data)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), "--size", "tiny",
         "--budget-seconds", "2", "--threads", "1", "--eval-jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=400, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-5000:]
    for name in ("srupp_k1", "srupp_last", "srupp_noattn", "transformer", "lstm"):
        assert name in proc.stdout  # the printed table

    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "models"}
    config = results["config"]
    assert config["size"] == "tiny" and config["budget_seconds"] == 2
    assert config["tokens_per_update"] == config["batch"] * config["tokens_per_sample"]
    models = {r["model"]: r for r in results["models"]}
    assert sorted(models) == ["a", "b", "c", "d", "e"]
    for key, r in models.items():
        for field in ("name", "params", "lr", "updates", "tokens", "wall_seconds",
                      "valid_bpc_curve", "final_valid_bpc", "test_bpc"):
            assert field in r, (key, field)
        assert "error" not in r, r["error"]
        # the parameter count fairseq logged equals the formula the widths were matched with
        assert r["params"] == r["params_expected"], key
        assert r["updates"] >= 1 and r["tokens"] >= 1
        assert r["wall_seconds"] > 0
        assert math.isfinite(r["test_bpc"]) and 0 < r["test_bpc"] < 10, (key, r["test_bpc"])
        curve = r["valid_bpc_curve"]
        assert curve and all(len(p) == 2 and math.isfinite(p[1]) for p in curve)
        assert [p[0] for p in curve] == sorted(p[0] for p in curve)
        assert r["final_valid_bpc"] == curve[-1][1]
    assert models["a"]["params"] > models["b"]["params"] > models["c"]["params"]
    for key in "de":
        assert abs(models[key]["params"] / models["a"]["params"] - 1) <= 0.10

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["a", "b", "c", "d", "e"]
    for column in ("model", "params", "updates", "tokens", "wall_seconds", "valid_bpc_curve",
                   "test_bpc"):
        assert column in rows[0], column
    for row in rows:
        assert math.isfinite(float(row["test_bpc"]))
        assert json.loads(row["valid_bpc_curve"])

    png = out / "valid_bpc.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["--models", "a,x"], ["--budget-seconds", "0"],
                                  ["--lr", "gru=1e-3"]])
def test_bad_arguments(tmp_path, argv):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout
