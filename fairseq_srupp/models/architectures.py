"""Named SRU++ architectures with the authors' sizes (SPEC.md section 3.4).

The dataclass defaults are the small `srupp_lm`. Each function here fills only the options the
user did not give on the command line.
"""
from fairseq.models import register_model_architecture
from fairseq.utils import safe_getattr


def _defaults(args, **values) -> None:
    for name, value in values.items():
        setattr(args, name, safe_getattr(args, name, value))


def _adaptive(args, cutoffs: str, untied_proj: bool = False) -> None:
    _defaults(args, adaptive_input=True, adaptive_input_dim=1024, adaptive_input_factor=4,
              adaptive_input_cutoff=cutoffs, adaptive_softmax_cutoff=cutoffs,
              adaptive_softmax_factor=4, tie_adaptive_weights=True,
              tie_adaptive_proj=not untied_proj)


@register_model_architecture("srupp_lm", "srupp_lm_enwik8_base")
def srupp_lm_enwik8_base(args):
    _defaults(args, hidden_dim=3072, proj_dim=768, num_layers=10, dropout=0.22,
              attention_dropout=0.22, embed_dropout=0.22, mem_len=1024)


@register_model_architecture("srupp_lm", "srupp_lm_enwik8_large")
def srupp_lm_enwik8_large(args):
    _defaults(args, hidden_dim=6016, proj_dim=752, num_layers=10, dropout=0.32,
              attention_dropout=0.32, embed_dropout=0.32, mem_len=1024)


@register_model_architecture("srupp_lm", "srupp_lm_wiki103_base")
def srupp_lm_wiki103_base(args):
    _defaults(args, hidden_dim=3072, proj_dim=768, num_layers=10, dropout=0.15,
              attention_dropout=0.15, embed_dropout=0.15, adaptive_softmax_dropout=0.15,
              mem_len=768)
    _adaptive(args, "20000,40000,200000")


@register_model_architecture("srupp_lm", "srupp_lm_wiki103_large")
def srupp_lm_wiki103_large(args):
    _defaults(args, hidden_dim=5952, proj_dim=744, num_layers=10, dropout=0.2,
              attention_dropout=0.2, embed_dropout=0.2, adaptive_softmax_dropout=0.2,
              mem_len=1024)
    _adaptive(args, "20000,40000,200000")


@register_model_architecture("srupp_lm", "srupp_lm_lm1b_base")
def srupp_lm_lm1b_base(args):
    _defaults(args, hidden_dim=4096, proj_dim=1024, num_layers=10, dropout=0.05,
              attention_dropout=0.0, embed_dropout=0.05, mem_len=64)
    _adaptive(args, "60000,160000", untied_proj=True)


@register_model_architecture("srupp_lm", "srupp_lm_lm1b_large")
def srupp_lm_lm1b_large(args):
    _defaults(args, hidden_dim=7616, proj_dim=1024, num_layers=10, attention_every=5,
              dropout=0.1, attention_dropout=0.0, embed_dropout=0.1, mem_len=64)
    _adaptive(args, "60000,160000", untied_proj=True)


# ------------------------------------------------------------------------------------------------
# The same models with the authors' Transformer-XL style adaptive input/softmax (--txl-adaptive):
# the exact layout of the released WikiText-103 / Billion Word checkpoints (SPEC.md 1.10, 3.1),
# loadable with scripts/tools/convert_sru_checkpoint.py. Train them with --criterion txl_adaptive_loss.

def _txl(args, cutoffs: str, tie_proj: bool, dropout: float) -> None:
    _defaults(args, txl_adaptive=True, txl_cutoffs=cutoffs, txl_embed_dim=1024, txl_div_val=4,
              txl_tie_proj=tie_proj, txl_dropout=dropout)


@register_model_architecture("srupp_lm", "srupp_lm_wiki103_base_txl")
def srupp_lm_wiki103_base_txl(args):
    _defaults(args, hidden_dim=3072, proj_dim=768, num_layers=10, dropout=0.15,
              attention_dropout=0.15, embed_dropout=0.15, mem_len=768)
    _txl(args, "19997,39997,199997", tie_proj=True, dropout=0.15)


@register_model_architecture("srupp_lm", "srupp_lm_wiki103_large_txl")
def srupp_lm_wiki103_large_txl(args):
    _defaults(args, hidden_dim=5952, proj_dim=744, num_layers=10, dropout=0.2,
              attention_dropout=0.2, embed_dropout=0.2, mem_len=1024)
    _txl(args, "19997,39997,199997", tie_proj=True, dropout=0.2)


@register_model_architecture("srupp_lm", "srupp_lm_wiki103_large_k5_txl")
def srupp_lm_wiki103_large_k5_txl(args):
    _defaults(args, attention_every=5)
    srupp_lm_wiki103_large_txl(args)


@register_model_architecture("srupp_lm", "srupp_lm_lm1b_base_txl")
def srupp_lm_lm1b_base_txl(args):
    _defaults(args, hidden_dim=4096, proj_dim=1024, num_layers=10, dropout=0.05,
              attention_dropout=0.0, embed_dropout=0.05, mem_len=64)
    _txl(args, "59998,159998", tie_proj=False, dropout=0.0)


@register_model_architecture("srupp_lm", "srupp_lm_lm1b_large_txl")
def srupp_lm_lm1b_large_txl(args):
    _defaults(args, hidden_dim=7616, proj_dim=1024, num_layers=10, attention_every=5,
              dropout=0.1, attention_dropout=0.0, embed_dropout=0.1, mem_len=64)
    _txl(args, "59998,159998", tie_proj=False, dropout=0.0)
