"""srupp_stream_lm end to end, as subprocesses: fairseq-preprocess -> fairseq-train ->
fairseq-eval-lm (carried, stateless, windowed) -> fairseq-interactive / fairseq-generate /
scripts/tools/sample_text.py."""
import json
import math
import random
import re
import subprocess
import sys

import pytest

from conftest import REPO, USER_DIR, fairseq_cmd

sys.path.insert(0, str(REPO / "scripts" / "data"))
from text_to_chars import encode_line  # noqa: E402

pytestmark = pytest.mark.e2e
WORDS = "the cat and dog sat on a red mat while big birds sang songs".split()
TASK = ("--user-dir", USER_DIR, "--task", "srupp_stream_lm", "--cpu")


def byte_line(rng) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "."
    return encode_line(text.encode()).decode()


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory):
    """Enwik8-style data: every byte a decimal symbol, one line per sentence."""
    root = tmp_path_factory.mktemp("bytes")
    rng = random.Random(0)
    for split, n in {"train": 120, "valid": 12, "test": 12}.items():
        (root / f"{split}.txt").write_text("".join(byte_line(rng) + "\n" for _ in range(n)))
    fairseq_cmd("fairseq-preprocess", "--only-source", "--trainpref", root / "train.txt",
                "--validpref", root / "valid.txt", "--testpref", root / "test.txt",
                "--destdir", root / "bin", "--workers", "1")
    lines = (root / "test.txt").read_text().splitlines()
    return root / "bin", sum(len(line.split()) + 1 for line in lines)  # + </s> per line


@pytest.fixture(scope="module")
def trained(byte_data, tmp_path_factory):
    data, _ = byte_data
    save = tmp_path_factory.mktemp("ck")
    log = fairseq_cmd(
        "fairseq-train", data, *TASK, "--arch", "srupp_lm", "--hidden-dim", "32",
        "--proj-dim", "16", "--num-layers", "2", "--mem-len", "16", "--tokens-per-sample", "16",
        "--batch-size", "4", "--batch-size-valid", "2", "--optimizer", "adam", "--lr", "0.01",
        "--max-update", "40", "--validate-interval-updates", "20", "--num-workers", "1",
        "--seed", "1", "--save-dir", save, "--no-epoch-checkpoints", "--log-format", "json",
        "--log-interval", "5").stdout
    return save / "checkpoint_best.pt", log


def json_lines(log: str, tag: str):
    return [json.loads(line[line.index("{"):]) for line in log.splitlines()
            if f"| {tag} |" in line and "{" in line]


def test_training_loss_decreases_and_validation_uses_its_batch_size(trained):
    _, log = trained
    losses = [float(r["loss"]) for r in json_lines(log, "train_inner")]
    assert len(losses) >= 6 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.5, losses
    valid = json_lines(log, "valid")
    assert len(valid) >= 2  # mid-epoch (update 20) and at the end
    assert all(float(r["valid_bsz"]) == 2 and math.isfinite(float(r["valid_loss"])) for r in valid)


def eval_lm(data, ckpt, *flags):
    """(loss in bits, number of tokens scored) of fairseq-eval-lm on the test split."""
    proc = fairseq_cmd("fairseq-eval-lm", data, "--path", ckpt, *TASK, "--gen-subset", "test",
                       "--batch-size", "1", *flags)
    loss = float(re.search(r"Loss \(base 2\): ([0-9.]+)", proc.stdout).group(1))
    tokens = int(re.search(r"Evaluated ([0-9,]+) tokens", proc.stdout).group(1).replace(",", ""))
    return loss, tokens


def test_eval_lm_carried_stateless_and_windowed(byte_data, trained):
    data, n_tokens = byte_data
    ckpt, _ = trained
    whole = '{"mem_len": 100000}'  # memory covers the whole test split
    carried8 = eval_lm(data, ckpt, "--tokens-per-sample", "8", "--model-overrides", whole)
    carried40 = eval_lm(data, ckpt, "--tokens-per-sample", "40", "--model-overrides", whole)
    stateless = eval_lm(data, ckpt, "--tokens-per-sample", "8", "--model-overrides",
                        '{"carry_state": False}')
    window = eval_lm(data, ckpt, "--tokens-per-sample", "8", "--eval-attn-window", "6")
    overrides = eval_lm(data, ckpt, "--tokens-per-sample", "8", "--model-overrides",
                        '{"attn_window": 6, "mem_len": 6}')
    print(f"carried {carried8} {carried40} stateless {stateless} window {window} {overrides}")
    for loss, tokens in (carried8, carried40, stateless, window, overrides):
        assert tokens == n_tokens and math.isfinite(loss)  # every token scored once
    assert carried8[0] == pytest.approx(carried40[0], abs=2e-4)  # segment length is irrelevant
    assert stateless[0] > carried8[0]  # forgetting at every segment start hurts
    assert window[0] == overrides[0]  # --eval-attn-window == the model overrides


def test_interactive_and_generate_sample_with_a_prompt(byte_data, trained):
    data, _ = byte_data
    ckpt, _ = trained
    prompt = encode_line(b"the").decode()
    sampling = ("--sampling", "--sampling-topk", "10", "--beam", "1", "--seed", "2")
    # raw text in (the byte encoder recorded for byte data), byte symbols in the H- lines
    out = fairseq_cmd("fairseq-interactive", data, "--path", ckpt, *TASK, *sampling,
                      "--max-len-b", "50", stdin="the\nthe\n").stdout
    hyps = [line.split("\t")[2] for line in out.splitlines() if line.startswith("H-")]
    assert len(hyps) == 2 and all(h.startswith(prompt + " ") for h in hyps), out[-2000:]
    out = fairseq_cmd("fairseq-generate", data, "--path", ckpt, *TASK, *sampling,
                      "--gen-subset", "valid", "--tokens-per-sample", "16", "--batch-size", "2",
                      "--prefix-size", "4", "--max-len-b", "20").stdout
    assert sum(line.startswith("H-") for line in out.splitlines()) >= 2, out[-2000:]


def test_sample_text_script(byte_data, trained):
    data, _ = byte_data
    ckpt, _ = trained
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "tools" / "sample_text.py"), "--data",
                           str(data), "--path", str(ckpt), "--prompt", "the ", "--num-samples",
                           "2", "--max-bytes", "40", "--cpu"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    print("\n".join(lines))
    assert len(lines) == 2 and all(line.startswith("the ") for line in lines)
