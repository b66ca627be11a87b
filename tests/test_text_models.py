"""Raw text in and out of tiny trained models: fairseq-interactive, the hub (score, sample),
carried scoring against fairseq-eval-lm, the word pipeline (srupp-prepare-text -> fairseq-train
with adaptive input/softmax -> fairseq-eval-lm -> fairseq-interactive), and bad input."""
import logging
import math
import random
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, USER_DIR, fairseq_cmd
from fairseq_srupp.models.srupp_lm import SRUppLanguageModel

pytestmark = pytest.mark.e2e

WORDS = ("The the Lord is good , and his mercy endureth for ever . café naïve über "
         "said he — well-known \" they shall not be ashamed ; but speak with joy !").split()
TINY = ["--arch", "srupp_lm", "--hidden-dim", "32", "--proj-dim", "8", "--num-layers", "2",
        "--tokens-per-sample", "32", "--batch-size", "4", "--optimizer", "adam", "--lr", "0.01",
        "--max-update", "15", "--cpu", "--num-workers", "0", "--seed", "1",
        "--no-epoch-checkpoints", "--log-format", "simple", "--disable-validation"]


def write_raw_text(folder, lines, seed):
    """Raw UTF-8 train/valid/test files of sentences from WORDS (with multi-byte characters
    and empty lines)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for split, n in lines.items():
        rows = []
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
            rows.append("" if i % 17 == 16 else " ".join(words).replace(" ,", ","))
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def run_python(*args, check=True):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def hypotheses(stdout):
    """The D- (detokenized) lines of fairseq-interactive, in order."""
    return [line.split("\t", 2)[2] for line in stdout.splitlines() if line.startswith("D-")]


@pytest.fixture(scope="module")
def char_model(tmp_path_factory):
    """(data folder, checkpoint, raw text folder) of a tiny character model trained with the
    stream task on text converted by scripts/data/text_to_chars.py."""
    root = tmp_path_factory.mktemp("char_text")
    raw = write_raw_text(root / "raw", {"train": 300, "valid": 20, "test": 30}, seed=3)
    (root / "chars").mkdir()
    for split in ("train", "valid", "test"):
        run_python(REPO / "scripts" / "data" / "text_to_chars.py", "--quiet", "--input",
                   raw / f"{split}.txt", "--output", root / "chars" / f"{split}.txt")
    fairseq_cmd("fairseq-preprocess", "--only-source", "--trainpref", root / "chars/train.txt",
                "--validpref", root / "chars/valid.txt", "--testpref", root / "chars/test.txt",
                "--destdir", root / "bin", "--workers", "1")
    fairseq_cmd("fairseq-train", root / "bin", "--user-dir", USER_DIR, "--task",
                "srupp_stream_lm", *TINY, "--save-dir", root / "ck")
    return root / "bin", root / "ck" / "checkpoint_last.pt", raw


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    """(data folder, checkpoint, raw folder, prepare log) of a tiny BPE word model with
    adaptive input and softmax, everything through the command-line tools."""
    root = tmp_path_factory.mktemp("word_text")
    raw = write_raw_text(root / "raw", {"train": 300, "valid": 20, "test": 30}, seed=4)
    log = run_python(REPO / "scripts" / "data" / "prepare_text.py", "--train", raw / "train.txt",
                     "--valid", raw / "valid.txt", "--test", raw / "test.txt", "--destdir",
                     root / "bin", "--bpe-merges", "40", "--lang", "en").stdout
    fairseq_cmd("fairseq-train", root / "bin", "--user-dir", USER_DIR, "--task",
                "srupp_stream_lm", *TINY, "--save-dir", root / "ck", "--adaptive-input",
                "--adaptive-input-dim", "32", "--adaptive-input-cutoff", "20,40",
                "--adaptive-softmax-cutoff", "20,40", "--tie-adaptive-weights",
                "--tie-adaptive-proj", "--criterion", "adaptive_loss", "--ddp-backend",
                "legacy_ddp")
    return root / "bin", root / "ck" / "checkpoint_last.pt", raw, log


def load(data, checkpoint, **overrides):
    return SRUppLanguageModel.from_pretrained(str(checkpoint.parent), checkpoint.name,
                                              str(data), **overrides)


def interactive(data, checkpoint, prompts, *flags, check=True):
    return fairseq_cmd("fairseq-interactive", data, "--user-dir", USER_DIR, "--task",
                       "srupp_stream_lm", "--path", checkpoint, "--cpu", "--beam", "1",
                       "--sampling", "--sampling-topk", "5", "--max-len-b", "20", *flags,
                       stdin="".join(p + "\n" for p in prompts), check=check)


# ---------------------------------------------------------------- character level
def test_interactive_prints_text_for_a_char_checkpoint(char_model):
    data, checkpoint, _ = char_model
    # (fairseq-interactive strips each input line: a prompt's trailing space is lost there)
    out = hypotheses(interactive(data, checkpoint, ["The Lord", "café"]).stdout)
    assert len(out) == 2 and out[0].startswith("The Lord") and out[1].startswith("café")
    assert not re.fullmatch(r"[\d ]+", out[0][len("The Lord"):])  # text, not byte codes


def test_hub_char_sample_and_score(char_model):
    data, checkpoint, _ = char_model
    lm = load(data, checkpoint)
    sampled = lm.sample(["The Lord ", "naïve"], sampling=True, sampling_topk=5, max_len_a=1,
                        max_len_b=15)
    assert sampled[0].startswith("The Lord ") and sampled[1].startswith("naïve")
    assert isinstance(lm.sample("he said", beam=2, max_len_a=1, max_len_b=5), str)
    short, longer = lm.score(["good", "good\nand good"])
    assert short["tokens"].tolist() == lm.encode("good").tolist()
    assert len(short["positional_scores"]) == 5  # 4 bytes and the end of line
    assert len(longer["positional_scores"]) == 14
    assert lm.decode(longer["tokens"]) == "good\nand good"
    assert (longer["positional_scores"] <= 0).all()


def test_carried_scoring_equals_fairseq_eval_lm(char_model):
    """The test split scored through the hub, 16-token segments with the state carried, gives
    the loss fairseq-eval-lm reports for it with the stream task at batch 1."""
    data, checkpoint, raw = char_model
    lm = load(data, checkpoint)
    result = lm.score((raw / "test.txt").read_text(encoding="utf-8"), tokens_per_sample=16)
    ours = -result["positional_scores"].double().mean().item() / math.log(2)
    log = fairseq_cmd("fairseq-eval-lm", data, "--path", checkpoint, "--user-dir", USER_DIR,
                      "--task", "srupp_stream_lm", "--gen-subset", "test", "--batch-size", "1",
                      "--tokens-per-sample", "16", "--cpu").stdout
    theirs = float(re.search(r"Loss \(base 2\): ([0-9.]+)", log).group(1))
    count = int(re.search(r"Evaluated ([0-9,]+) tokens", log).group(1).replace(",", ""))
    assert len(result["tokens"]) == count > 10 * 16
    assert abs(ours - theirs) < 1e-4, (ours, theirs)
    stateless = load(data, checkpoint, carry_state=False).score(
        (raw / "test.txt").read_text(encoding="utf-8"), tokens_per_sample=16)
    assert abs(-stateless["score"].item() / math.log(2) - ours) > 1e-3  # the state matters


def test_char_bad_input(char_model, caplog):
    data, checkpoint, _ = char_model
    lm = load(data, checkpoint)
    with pytest.raises(ValueError, match="empty"):
        lm.sample("")
    with pytest.raises(ValueError, match="one line"):
        lm.sample("two\nlines")
    with caplog.at_level(logging.WARNING):
        tokens = lm.encode("good Ж")  # its two bytes never occur in the training text
    assert "2 symbol(s) are not in the dictionary" in caplog.text
    assert (tokens == lm.tgt_dict.unk()).sum() == 2 and len(tokens) == 5 + 2 + 1
    with pytest.raises(ValueError, match="character-level"):
        load(data, checkpoint, bpe="subword_nmt", bpe_codes=str(checkpoint))
    proc = interactive(data, checkpoint, ["The"], "--tokenizer", "moses", check=False)
    assert proc.returncode != 0 and "needs no tokenizer" in proc.stdout
    proc = interactive(data, checkpoint, ["The", ""], check=False)
    assert proc.returncode != 0 and "an input line is empty" in proc.stdout


# ---------------------------------------------------------------- word level
def test_word_pipeline_end_to_end(word_model):
    data, checkpoint, _, log = word_model
    assert (data / "bpecodes").is_file() and "Dictionary:" in log
    eval_log = fairseq_cmd("fairseq-eval-lm", data, "--path", checkpoint, "--user-dir",
                           USER_DIR, "--task", "srupp_stream_lm", "--gen-subset", "test",
                           "--batch-size", "1", "--tokens-per-sample", "32", "--cpu").stdout
    loss = float(re.search(r"Loss \(base 2\): ([0-9.]+)", eval_log).group(1))
    assert math.isfinite(loss) and 2 ** loss < 200
    prompts = ["the Lord is good, and", "they shall not be well-known"]
    explicit = interactive(data, checkpoint, prompts, "--tokenizer", "moses",
                           "--moses-no-escape", "--bpe", "subword_nmt", "--bpe-codes",
                           data / "bpecodes", "--seed", "3").stdout
    recorded = interactive(data, checkpoint, prompts, "--seed", "3").stdout
    out = hypotheses(explicit)
    assert out == hypotheses(recorded) and len(out) == 2
    assert out[0].startswith("the Lord is good, and") and out[1].startswith(prompts[1])
    assert "@@" not in "".join(out) and "@-@" not in "".join(out)
    assert re.search(r"H-0\t\S+\t.* , ", explicit)  # the H line holds the tokenized symbols


def test_hub_word_sample_and_score(word_model):
    data, checkpoint, _, _ = word_model
    lm = load(data, checkpoint)
    text = lm.sample("the Lord is good, and", sampling=True, sampling_topk=5, max_len_a=1,
                     max_len_b=10)
    assert text.startswith("the Lord is good, and") and "@@" not in text
    result = lm.score(["they shall not be ashamed.", "café naïve"])
    assert all(len(r["positional_scores"]) == len(r["tokens"]) > 2 for r in result)
    assert lm.decode(result[0]["tokens"]) == "they shall not be ashamed."


def test_word_bad_input(word_model, tmp_path):
    data, checkpoint, raw, _ = word_model
    with pytest.raises(ValueError, match="not byte symbols"):
        load(data, checkpoint, bpe="srupp_bytes")
    other = tmp_path / "other_codes"
    other.write_text("#version: 0.2\nt h\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not the ones"):
        load(data, checkpoint, tokenizer="moses", bpe="subword_nmt", bpe_codes=str(other))
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    (moved / "bpecodes").unlink()
    (data / "bpecodes").rename(tmp_path / "hidden")
    try:
        with pytest.raises(FileNotFoundError, match="BPE codes"):
            load(moved, checkpoint)
    finally:
        (tmp_path / "hidden").rename(data / "bpecodes")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    proc = run_python(REPO / "scripts" / "data" / "prepare_text.py", "--train", latin1,
                      "--valid", raw / "valid.txt", "--test", raw / "test.txt", "--destdir",
                      tmp_path / "bin", check=False)
    assert proc.returncode == 1 and "latin1.txt line 2 is not UTF-8" in proc.stderr
