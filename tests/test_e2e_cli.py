"""fairseq-preprocess -> fairseq-train --user-dir -> fairseq-eval-lm, as subprocesses."""
import json
import math
import re

import pytest

from conftest import USER_DIR, fairseq_cmd

pytestmark = pytest.mark.e2e


def train_losses(log: str):
    """Training losses of the json log lines (train_inner every --log-interval updates)."""
    losses = []
    for line in log.splitlines():
        if "train_inner" in line and "{" in line:
            losses.append(float(json.loads(line[line.index("{"):])["loss"]))
    return losses


def eval_loss(log: str) -> float:
    return float(re.search(r"Loss \(base 2\): ([0-9.]+)", log).group(1))


def train_and_check_losses(data, save_dir, *model_options):
    """40 updates of a small srupp_lm (plus model_options); the training losses, which must be
    finite and fall by more than 0.5."""
    log = fairseq_cmd(
        "fairseq-train", data, "--user-dir", USER_DIR, "--task", "language_modeling",
        "--arch", "srupp_lm", "--hidden-dim", "64", "--proj-dim", "16", *model_options,
        "--tokens-per-sample", "64", "--batch-size", "8", "--optimizer", "adam", "--lr", "0.003",
        "--max-update", "40", "--cpu", "--num-workers", "0", "--seed", "1",
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "json",
        "--log-interval", "5").stdout
    losses = train_losses(log)
    assert len(losses) >= 6 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.5, losses
    return losses


def test_char_level_train_and_eval(char_data, tmp_path):
    losses = train_and_check_losses(char_data, tmp_path / "ck", "--num-layers", "3")
    ckpt = tmp_path / "ck" / "checkpoint_best.pt"
    plain = eval_loss(fairseq_cmd("fairseq-eval-lm", char_data, "--path", ckpt, "--user-dir",
                                  USER_DIR, "--tokens-per-sample", "64", "--cpu").stdout)
    windowed = eval_loss(fairseq_cmd("fairseq-eval-lm", char_data, "--path", ckpt, "--user-dir",
                                     USER_DIR, "--tokens-per-sample", "64", "--context-window",
                                     "32", "--cpu").stdout)
    assert math.isfinite(plain) and plain < losses[0]
    assert windowed < plain + 0.05  # seen context can only help a trained model (small margin)


def test_word_level_adaptive_input_and_softmax(word_data, tmp_path):
    losses = train_and_check_losses(
        word_data, tmp_path / "ck", "--num-layers", "2",
        "--adaptive-input", "--adaptive-input-cutoff", "20,100", "--adaptive-input-dim", "64",
        "--adaptive-softmax-cutoff", "20,100", "--tie-adaptive-weights", "--tie-adaptive-proj",
        "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp")
    result = eval_loss(fairseq_cmd("fairseq-eval-lm", word_data, "--path",
                                   tmp_path / "ck" / "checkpoint_best.pt", "--user-dir", USER_DIR,
                                   "--tokens-per-sample", "64", "--cpu").stdout)
    assert math.isfinite(result) and result < losses[0]
