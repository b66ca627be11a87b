"""Named SRU++ architectures with the authors' sizes (SPEC.md section 3.4).

The dataclass defaults are the small `srupp_lm`. Each architecture fills only the options the
user did not give on the command line: the SRU++ body of its corpus and size (_BODIES), then, for
WikiText-103 and Billion Word, the adaptive input/softmax: fairseq's AdaptiveInput/AdaptiveSoftmax
(srupp_lm_<corpus>_<size>, --criterion adaptive_loss) or the authors' Transformer-XL layout
(srupp_lm_<corpus>_<size>_txl, --criterion txl_adaptive_loss): the exact layout of the released
checkpoints (SPEC.md 1.10, 3.1), loadable with srupp-convert-checkpoint
(scripts/tools/convert_sru_checkpoint.py).
"""
from typing import Optional

from fairseq.models import register_model_architecture
from fairseq.utils import safe_getattr


def _defaults(args, **values) -> None:
    for name, value in values.items():
        setattr(args, name, safe_getattr(args, name, value))


def _body(d: int, dp: int, dropout: float, mem_len: int, attention_dropout: Optional[float] = None,
          **more) -> dict:
    """10 SRU++ layers of width d (projection d'); one dropout for layers, attention and
    embedding unless attention_dropout is given."""
    return dict(hidden_dim=d, proj_dim=dp, num_layers=10, **more, dropout=dropout,
                attention_dropout=dropout if attention_dropout is None else attention_dropout,
                embed_dropout=dropout, mem_len=mem_len)


_BODIES = {
    "enwik8_base": _body(3072, 768, 0.22, mem_len=1024),
    "enwik8_large": _body(6016, 752, 0.32, mem_len=1024),
    "wiki103_base": _body(3072, 768, 0.15, mem_len=768),
    "wiki103_large": _body(5952, 744, 0.2, mem_len=1024),
    "lm1b_base": _body(4096, 1024, 0.05, mem_len=64, attention_dropout=0.0),
    "lm1b_large": _body(7616, 1024, 0.1, mem_len=64, attention_dropout=0.0, attention_every=5),
}


def _fairseq_adaptive(corpus: str, dropout: float) -> dict:
    """fairseq's AdaptiveInput/AdaptiveSoftmax with the corpus' cutoffs (n_e 1024, factor 4)."""
    cutoffs = {"wiki103": "20000,40000,200000", "lm1b": "60000,160000"}[corpus]
    head = dict(adaptive_input=True, adaptive_input_dim=1024, adaptive_input_factor=4,
                adaptive_input_cutoff=cutoffs, adaptive_softmax_cutoff=cutoffs,
                adaptive_softmax_factor=4, tie_adaptive_weights=True,
                tie_adaptive_proj=corpus == "wiki103")
    if corpus == "wiki103":  # the authors' cluster dropout; Billion Word has none
        head["adaptive_softmax_dropout"] = dropout
    return head


def _txl_adaptive(corpus: str, dropout: float) -> dict:
    """The authors' adaptive input/softmax: tied tables, projections tied only on WikiText-103."""
    wiki = corpus == "wiki103"
    return dict(txl_adaptive=True, txl_cutoffs="19997,39997,199997" if wiki else "59998,159998",
                txl_embed_dim=1024, txl_div_val=4, txl_tie_proj=wiki,
                txl_dropout=dropout if wiki else 0.0)


def _register(name: str, *presets: dict) -> None:
    def architecture(args):
        for values in presets:
            _defaults(args, **values)

    architecture.__name__ = name
    register_model_architecture("srupp_lm", name)(architecture)


def _register_all() -> None:
    for size, body in _BODIES.items():
        corpus = size.split("_")[0]
        if corpus == "enwik8":  # plain byte embedding and output layer
            _register(f"srupp_lm_{size}", body)
            continue
        _register(f"srupp_lm_{size}", body, _fairseq_adaptive(corpus, body["dropout"]))
        _register(f"srupp_lm_{size}_txl", body, _txl_adaptive(corpus, body["dropout"]))
    # WikiText-103 large with attention only in layers 5 and 10 (paper Table 3, k = 5)
    large = _BODIES["wiki103_large"]
    _register("srupp_lm_wiki103_large_k5_txl", dict(attention_every=5), large,
              _txl_adaptive("wiki103", large["dropout"]))


_register_all()
