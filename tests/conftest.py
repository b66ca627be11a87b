"""Shared test helpers: seeding, the `cuda` marker, tiny corpora and fairseq command runners."""
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_srupp")
BIN = Path(sys.executable).parent


def cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and CuPy (run scripts/gpu/gpu_check.sh there)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seeded, and one intra-op thread: the tests' tensors are tiny, and thread start-up on a busy
    2-core machine costs far more than it gains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    yield
    torch.set_num_threads(threads)


def fairseq_cmd(tool: str, *args: str, stdin: str = None, check: bool = True,
                timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a fairseq console tool (fairseq-train, fairseq-eval-lm, ...) of this interpreter's
    environment; returns the completed process with stdout+stderr in .stdout."""
    exe = BIN / tool
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m",
                                           "fairseq_cli." + tool.split("-", 1)[1].replace("-", "_")]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd + [str(a) for a in args], input=stdin, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return proc


def write_corpus(folder: Path, symbols: str, lines: dict, seed: int = 0) -> None:
    """Random text of space-separated `symbols`: lines[split] lines per split, with a little
    structure (runs of repeated patterns) so a model can learn something."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    patterns = [" ".join(rng.choice(symbols) for _ in range(rng.randint(3, 6))) for _ in range(8)]
    for split, n in lines.items():
        with open(folder / f"{split}.txt", "w") as f:
            for _ in range(n):
                f.write(" ".join(rng.choice(patterns) for _ in range(rng.randint(2, 8))) + "\n")


def binarize(text_dir: Path, dest: Path) -> Path:
    fairseq_cmd("fairseq-preprocess", "--only-source", "--trainpref", text_dir / "train.txt",
                "--validpref", text_dir / "valid.txt", "--testpref", text_dir / "test.txt",
                "--destdir", dest, "--workers", "1")
    return dest


@pytest.fixture(scope="session")
def char_data(tmp_path_factory) -> Path:
    """A tiny binarized character-level corpus (26 letters)."""
    root = tmp_path_factory.mktemp("char")
    write_corpus(root / "text", "abcdefghijklmnopqrstuvwxyz", {"train": 300, "valid": 30, "test": 30})
    return binarize(root / "text", root / "bin")


@pytest.fixture(scope="session")
def word_data(tmp_path_factory) -> Path:
    """A tiny binarized word-level corpus with a vocabulary of about 300 words."""
    root = tmp_path_factory.mktemp("word")
    words = [f"w{i}" for i in range(300)]
    rng = random.Random(1)
    (root / "text").mkdir(parents=True)
    for split, n in {"train": 400, "valid": 40, "test": 40}.items():
        with open(root / "text" / f"{split}.txt", "w") as f:
            for _ in range(n):
                # Zipf-like draws so the adaptive clusters see frequent and rare words
                f.write(" ".join(words[min(int(rng.paretovariate(1.0)) - 1, 299)]
                                 for _ in range(rng.randint(5, 20))) + "\n")
    return binarize(root / "text", root / "bin")


def make_dictionary(num_symbols: int):
    """A fairseq Dictionary with the 4 specials and `num_symbols` more."""
    from fairseq.data import Dictionary

    dictionary = Dictionary()
    for i in range(num_symbols):
        dictionary.add_symbol(f"s{i}")
    return dictionary


class DictionaryTask:
    """The two attributes a language model's build_model reads from a task."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


def build_model(arch: str = "srupp_lm", num_symbols: int = 30, *flags: str):
    """Build a model through fairseq's option parser and registry, as fairseq-train does."""
    from fairseq import models, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        "/nonexistent", "--user-dir", USER_DIR, "--task", "language_modeling",
        "--arch", arch, *flags])
    cfg = convert_namespace_to_omegaconf(args)
    return models.build_model(cfg.model, DictionaryTask(make_dictionary(num_symbols)))
