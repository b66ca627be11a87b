"""The recipe driver (fairseq_srupp/recipes, scripts/recipes/recipe.py): the commands it builds
from the tables, its GPU arithmetic, its errors, and an evaluation run against a stand-in
interpreter that prints fairseq-eval-lm's result line."""
import os
import stat
import subprocess
import sys

import pytest

from fairseq_srupp.recipes import CORPORA, RecipeError, eval_command, main, train_command

from conftest import REPO


@pytest.fixture
def data_bin(tmp_path):
    d = tmp_path / "data-bin"
    d.mkdir()
    (d / "dict.txt").write_text("a 1\n")
    for split in ("train", "valid", "test"):
        (d / f"{split}.bin").write_bytes(b"x")
        (d / f"{split}.idx").write_bytes(b"x")
    return str(d)


def _train(corpus, variant, data, logs=None, extra=(), **env):
    env = {"DRY_RUN": "1", "PYTHON": "py", **env}
    return train_command(CORPORA[corpus], variant, data, list(extra), env,
                         (logs if logs is not None else []).append)


def _opt(cmd, name):
    return cmd[cmd.index(name) + 1]


@pytest.mark.parametrize("corpus,variant,arch,batch,tokens,lr", [
    ("enwik8", "base", "srupp_lm_enwik8_base", 4, 1024, "3e-4"),
    ("enwik8", "large", "srupp_lm_enwik8_large", 8, 1024, "4e-4"),
    ("wikitext103", "base", "srupp_lm_wiki103_base_txl", 8, 768, "3e-4"),
    ("wikitext103", "large_k5", "srupp_lm_wiki103_large_k5_txl", 8, 1024, "3e-4"),
    ("lm1b", "large", "srupp_lm_lm1b_large_txl", 192, 64, "2e-4"),
])
def test_train_command_per_variant(data_bin, corpus, variant, arch, batch, tokens, lr):
    cmd = _train(corpus, variant, data_bin, extra=["--max-update", "7"])
    assert cmd[:4] == ["py", "-m", "fairseq_cli.train", data_bin]
    assert _opt(cmd, "--arch") == arch and _opt(cmd, "--lr") == lr
    assert _opt(cmd, "--batch-size") == str(batch)  # the authors' streams over 8 GPUs (dry run)
    assert _opt(cmd, "--tokens-per-sample") == str(tokens)
    assert _opt(cmd, "--save-dir") == f"checkpoints/{CORPORA[corpus].save_name}_{variant}"
    assert ("--warmup-from-zero" in cmd) == (corpus == "wikitext103")
    assert cmd[-2:] == ["--max-update", "7"]  # extra options last, so they win


def test_gpus_nodes_and_accumulation(data_bin):
    logs = []
    cmd = _train("enwik8", "large", data_bin, logs, NGPUS="2", UPDATE_FREQ="4")
    assert _opt(cmd, "--batch-size") == "8" and _opt(cmd, "--update-freq") == "4"
    assert "64 streams per update" in logs[0]
    cmd = _train("lm1b", "base", data_bin, NGPUS="4", NNODES="2", NODE_RANK="1", MASTER_ADDR="h")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"] and _opt(cmd, "--node_rank") == "1"
    assert _opt(cmd, "--batch-size") == "128" and _opt(cmd, "--distributed-world-size") == "8"
    cmd = _train("lm1b", "base", data_bin, NGPUS="4", NNODES="2", NODE_RANK="1", MASTER_ADDR="h",
                 LAUNCHER="fairseq", BATCH_SIZE="3")
    assert _opt(cmd, "--distributed-rank") == "4" and _opt(cmd, "--batch-size") == "3"
    assert _opt(cmd, "--distributed-init-method") == "tcp://h:29500"
    cmd = _train("wikitext103", "large_k5", data_bin, ADAPTIVE="fairseq")
    assert _opt(cmd, "--arch") == "srupp_lm_wiki103_large" and _opt(cmd, "--attention-every") == "5"
    assert _opt(cmd, "--criterion") == "adaptive_loss" and _opt(cmd, "--ddp-backend") == "legacy_ddp"


@pytest.mark.parametrize("variant,env,words", [
    ("huge", {}, "VARIANT (--variant) must be base or large for enwik8"),
    ("base", {"ADAPTIVE": "fairseq"}, "ADAPTIVE applies to the corpora with adaptive layers"),
    ("base", {"UPDATE_FREQ": "3"}, "set BATCH_SIZE"),
    ("base", {"NGPUS": "x"}, "NGPUS must be a non-negative integer"),
    ("base", {"NNODES": "2", "NODE_RANK": "0"}, "needs MASTER_ADDR"),
    ("base", {"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h"}, "NODE_RANK must be below"),
    ("base", {"USER_DIR": "/nonexistent"}, "is not the fairseq_srupp package folder"),
])
def test_train_errors_name_the_fix(data_bin, variant, env, words):
    with pytest.raises(RecipeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _train("enwik8", variant, data_bin, **env)


def test_missing_data_names_the_prepare_script(tmp_path):
    with pytest.raises(RecipeError, match="scripts/data/prepare_wikitext103.sh"):
        _train("wikitext103", "base", str(tmp_path / "none"))


def test_eval_runs_and_reports(data_bin, tmp_path, capsys):
    ckpt = tmp_path / "run" / "checkpoint_best.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    fake = tmp_path / "python"  # stands in for the interpreter with fairseq: one result line
    fake.write_text("#!/bin/sh\necho 'INFO | fairseq_cli.eval_lm | Loss (base 2): 1.0312, "
                    "Perplexity: 2.04'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PYTHON": str(fake), "SUBSET": "valid"}
    cmd, logfile, subset, window = eval_command(CORPORA["enwik8"], data_bin, str(ckpt), [], env)
    assert (subset, window) == ("valid", 3072) and logfile.endswith("run/eval_enwik8_valid.log")
    assert "{'attn_window': 3072, 'mem_len': 3072, 'carry_state': True}" in cmd
    assert main(["eval", "enwik8", data_bin, str(ckpt)], env) == 0
    assert "enwik8 valid: 1.0312 bpc (window 3072" in capsys.readouterr().out
    assert "Loss (base 2): 1.0312" in open(logfile).read()
    assert main(["eval", "lm1b", data_bin, str(ckpt)], {**env, "WINDOW": "128"}) == 0
    assert "Billion Word valid: perplexity 2.04 (window 128" in capsys.readouterr().out
    fake.write_text("#!/bin/sh\necho nothing\n")
    assert main(["eval", "lm1b", data_bin, str(ckpt)], env) == 1
    assert "printed no 'Loss (base 2)' line" in capsys.readouterr().err


def test_script_dry_run(data_bin):
    """scripts/recipes/recipe.py: the driver's command line; DRY_RUN=1 prints the command."""
    env = {**os.environ, "DRY_RUN": "1", "VARIANT": "large"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "recipes" / "recipe.py"), "train",
                           "wikitext103", data_bin, "--seed", "5"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--arch srupp_lm_wiki103_large_txl" in proc.stderr and proc.stderr.rstrip().endswith(
        "--seed 5")
