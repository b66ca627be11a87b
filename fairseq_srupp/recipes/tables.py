"""The authors' recipes as data: one table per corpus, one row per model variant.

Sources: asappresearch/sru experiments/srupp_experiments (train_enwik8.py, train_wt103.py,
train_lm1b.py) and its README; SPEC.md 3.1-3.4. The driver (recipes/driver.py) turns a row into
the fairseq-train and fairseq-eval-lm commands. Settings shared by every recipe (RAdam with
decoupled weight decay 0.1, betas (0.9, 0.999), eps 1e-8, srupp_cosine with 16k warm-up updates,
clip 1.0, --amp --amp-batch-retries 0, seed 1234, dev and a checkpoint every 8000 updates) are in
driver.train_command. Expected results and costs: docs/reproducing.md.
"""
from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Variant:
    """One model size of a corpus."""

    arch: str  # --arch of the authors' layout (the *_txl ones: their adaptive input/softmax)
    streams: int  # streams per update over all GPUs (the authors': 8 GPUs x streams per GPU)
    tokens: int  # --tokens-per-sample = the attention memory of the previous segment
    lr: str  # --lr, as written in the command
    # ADAPTIVE=fairseq: --arch on fairseq's AdaptiveInput/AdaptiveSoftmax and its extra options;
    # () where the corpus has no adaptive layers (enwik8)
    fairseq_adaptive: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Corpus:
    """A corpus: where its data comes from, how it trains, how it is evaluated."""

    name: str  # the driver's DATASET argument
    title: str  # as printed in the evaluation's result line
    save_name: str  # checkpoints/<save_name>_<variant>
    raw_input: str  # what its prepare script (scripts/data/prepare_<name>.sh) takes
    variants: Dict[str, Variant]
    criterion: Tuple[str, ...]  # for the variants' own --arch
    valid_streams: int  # streams of the authors' periodic dev evaluation
    max_update: int
    warmup_from_zero: bool  # lr*n/16k (WikiText-103) instead of lr*(n+1)/16k
    eval_window: int  # the authors' final evaluation: attention window = memory = segment
    eval_metric: str  # "bpc" (fairseq's base-2 loss, bits per byte) or "perplexity"
    authors_test: str  # the authors' test results, printed beside ours

    @property
    def prepare_hint(self) -> str:
        return (f"prepare it with scripts/data/prepare_{self.name}.sh {self.raw_input} OUT and pass "
                f"OUT/data-bin")


def _adaptive(arch: str, streams: int, tokens: int, lr: str, fairseq: Tuple[str, ...] = ()) -> Variant:
    """A variant with the authors' adaptive layers (arch *_txl) and, for ADAPTIVE=fairseq, the
    same model on fairseq's (default: the arch without _txl; else fairseq = arch, options...)."""
    return Variant(arch, streams, tokens, lr, ("--arch", *(fairseq or (arch[:-len("_txl")],))))


TXL_CRITERION = ("--criterion", "txl_adaptive_loss")
# ADAPTIVE=fairseq: fairseq's adaptive_loss refuses the default DDP backend
FAIRSEQ_ADAPTIVE_CRITERION = ("--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp")

CORPORA: Dict[str, Corpus] = {c.name: c for c in (
    # enwik8: plain byte embedding and output layer; attention in every layer. Expected test bpc:
    # base 0.97 (README 0.974), large 0.95 (0.953); base --attention-every 5: 98M, 0.98.
    Corpus("enwik8", "enwik8", "enwik8", "enwik8.zip", {
        "base": Variant("srupp_lm_enwik8_base", 32, 1024, "3e-4"),
        "large": Variant("srupp_lm_enwik8_large", 64, 1024, "4e-4"),
    }, ("--criterion", "cross_entropy"), valid_streams=16, max_update=400000,
        warmup_from_zero=False, eval_window=3072, eval_metric="bpc",
        authors_test="base 0.974, large 0.953"),
    # WikiText-103: Transformer-XL adaptive input/softmax (n_e 1024, div_val 4, cutoffs
    # 19997/39997/199997, tables and projections tied). Expected test ppl: base 18.3 (dev 17.5),
    # large 17.1 (dev 16.4), large_k5 (attention in layers 5 and 10) 17.3.
    Corpus("wikitext103", "WikiText-103", "wt103", "wikitext-103-v1.zip", {
        "base": _adaptive("srupp_lm_wiki103_base_txl", 64, 768, "3e-4"),
        "large": _adaptive("srupp_lm_wiki103_large_txl", 64, 1024, "3e-4"),
        "large_k5": _adaptive("srupp_lm_wiki103_large_k5_txl", 64, 1024, "3e-4",
                              fairseq=("srupp_lm_wiki103_large", "--attention-every", "5")),
    }, TXL_CRITERION, valid_streams=16, max_update=400000, warmup_from_zero=True,
        eval_window=2560, eval_metric="perplexity",
        authors_test="base 18.3, large 17.1, large k=5 17.3"),
    # One Billion Word: adaptive input/softmax (cutoffs 59998/159998, tables tied, projections
    # not tied); no embedding or attention dropout. Expected test ppl: base 25.1, large
    # (attention in layers 5 and 10) 23.5. Unlike the authors, the training text is read in file
    # order and each epoch starts the streams from zero state (docs/reproducing.md).
    Corpus("lm1b", "Billion Word", "lm1b", "1-billion-word-language-modeling-benchmark-r13output", {
        "base": _adaptive("srupp_lm_lm1b_base_txl", 1024, 64, "2e-4"),
        "large": _adaptive("srupp_lm_lm1b_large_txl", 1536, 64, "2e-4"),
    }, TXL_CRITERION, valid_streams=8, max_update=800000, warmup_from_zero=False,
        eval_window=96, eval_metric="perplexity", authors_test="base 25.1, large 23.5"),
)}
