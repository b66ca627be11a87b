"""srupp-export on a fairseq-train checkpoint, and srupp_runtime serving it in a process where
torch and fairseq cannot be imported."""
import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import REPO, USER_DIR, fairseq_cmd
from fairseq_srupp.encoders.byte_codec import encode_line, encode_text
from fairseq_srupp.export.cli import load_model, set_window

pytestmark = pytest.mark.e2e
WORDS = "the cat and dog sat on a red mat while big birds sang songs".split()
WINDOW = 12
PROMPT = "the cat sat on"
GREEDY = 40


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, data, export folder) of a 2-layer byte-level model after a few updates."""
    root = tmp_path_factory.mktemp("serve")
    rng = random.Random(0)
    for split, n in {"train": 60, "valid": 6, "test": 6}.items():
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "."
                 for _ in range(n)]
        (root / f"{split}.txt").write_text("".join(encode_line(line) + "\n" for line in lines))
    fairseq_cmd("fairseq-preprocess", "--only-source", "--trainpref", root / "train.txt",
                "--validpref", root / "valid.txt", "--testpref", root / "test.txt",
                "--destdir", root / "bin", "--workers", "1")
    fairseq_cmd("fairseq-train", root / "bin", "--user-dir", USER_DIR, "--task", "srupp_stream_lm",
                "--cpu", "--arch", "srupp_lm", "--hidden-dim", "32", "--proj-dim", "16",
                "--num-layers", "2", "--mem-len", "16", "--tokens-per-sample", "16",
                "--batch-size", "4", "--optimizer", "adam", "--lr", "0.01", "--max-update", "5",
                "--disable-validation", "--num-workers", "0", "--seed", "1",
                "--save-dir", root / "ck", "--no-epoch-checkpoints")
    checkpoint = root / "ck" / "checkpoint_last.pt"
    out = root / "export"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "fairseq_srupp.export.cli", str(checkpoint),
                           str(out), "--data", str(root / "bin"), "--window", str(WINDOW)],
                          env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "srupp-export: wrote" in proc.stdout
    return checkpoint, root / "bin", out


# Makes torch and fairseq not importable, as in a serving environment without them: every
# finder on sys.meta_path answers "not found" for them.
RUNNER = textwrap.dedent("""
    import json, sys
    HIDDEN = ("torch", "fairseq")
    class Hide:
        def __init__(self, finder):
            self.finder = finder
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                return None
            return self.finder.find_spec(name, path, target)
    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
    try:
        import torch
        sys.exit("torch is still importable")
    except ModuleNotFoundError:
        pass
    import srupp_runtime
    lm = srupp_runtime.load(sys.argv[1], threads=1)
    prompt, _ = lm.codec.encode(sys.argv[2])
    result = {
        "score": lm.score(sys.argv[2]),
        "greedy": lm.generate_ids(prompt, int(sys.argv[3]), top_k=1),
        "sample": lm.generate(sys.argv[2], max_tokens=30, top_k=5, temperature=0.8, seed=0),
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN),
        "runtime": srupp_runtime.__file__,
    }
    print(json.dumps(result))
""")


def run_without_torch(folder, prompt: str, greedy: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(folder), prompt, str(greedy)],
                          env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def decoder_log_probs(model, ids):
    """The PyTorch incremental decoder's log-probs (T, V) after </s> + ids."""
    state, prefix, out = {}, torch.tensor([[model.decoder.dictionary.eos()]]), []
    with torch.no_grad():
        for t in range(len(ids) + 1):
            logits, _ = model.decoder(prefix, incremental_state=state)
            out.append(model.get_normalized_probs((logits[:, -1:], None), log_probs=True)[0, 0])
            if t < len(ids):
                prefix = torch.cat([prefix, torch.tensor([[ids[t]]])], dim=1)
    return torch.stack(out)


def test_manifest_describes_the_export(exported):
    _, _, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    for name in manifest["files"].values():
        assert (out / name).is_file(), name
    assert manifest["encoder"] == "bytes" and manifest["window"] == WINDOW
    assert manifest["model"]["attention_layers"] == [0, 1]
    symbols = (out / "symbols.txt").read_text().splitlines()
    assert len(symbols) == manifest["model"]["vocab_size"]
    assert symbols[manifest["special_ids"]["eos"]] == "</s>"
    program = torch.export.load(str(out / "scorer.pt2"))
    assert program.module()(torch.tensor([[2, 4, 5, 6]])).shape[:2] == (1, 4)


def test_runtime_without_torch_equals_pytorch(exported):
    checkpoint, data, out = exported
    result = run_without_torch(out, PROMPT, GREEDY)
    assert result["modules"] == [] and result["runtime"].startswith(str(REPO))
    model, dictionary = load_model(str(checkpoint), str(data))
    set_window(model.decoder, WINDOW)
    ids = [dictionary.index(s) for s in encode_text(PROMPT).split()]
    expected = decoder_log_probs(model, ids)
    score = result["score"]
    assert score["symbols"] == encode_text(PROMPT).split() and score["unknown"] == []
    got = np.array(score["log_probs"])
    want = expected[:-1].gather(1, torch.tensor(ids)[:, None])[:, 0].numpy()
    assert np.abs(got - want).max() < 1e-5
    # greedy continuation: the same tokens as PyTorch's incremental decoder
    tokens = list(ids)
    for _ in range(GREEDY):
        scores = decoder_log_probs(model, tokens)[-1]
        scores[[dictionary.pad(), dictionary.bos()]] = -float("inf")
        tokens.append(int(scores.argmax()))
    assert result["greedy"] == tokens[len(ids):]
    assert isinstance(result["sample"], str) and result["sample"]


def test_runtime_errors_name_the_fix(tmp_path):
    sys.path.insert(0, str(REPO))
    import srupp_runtime

    with pytest.raises(FileNotFoundError, match="srupp-export"):
        srupp_runtime.load(str(tmp_path))
