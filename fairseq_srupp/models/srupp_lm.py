"""The `srupp_lm` fairseq model: an SRU++ language model (Lei 2021)."""
import math

import torch
from fairseq.models import FairseqLanguageModel, register_model
from fairseq.modules import AdaptiveInput
from torch import nn

from ..modules import TXLAdaptiveEmbedding
from .config import SRUppLMConfig, parse_cutoffs, txl_vocab_size, validate_config
from .srupp_decoder import SRUppDecoder


def build_embedding(cfg, dictionary) -> nn.Module:
    """Plain embedding initialised U(+-sqrt(3/d)) as the authors' enwik8 model, or fairseq's
    AdaptiveInput."""
    d = cfg.hidden_dim
    if getattr(cfg, "txl_adaptive", False):  # Transformer-XL style; the decoder ties its log-softmax to it
        vocab = txl_vocab_size(cfg, len(dictionary))
        return TXLAdaptiveEmbedding(
            vocab, cfg.txl_embed_dim, d,
            parse_cutoffs(cfg.txl_cutoffs, "txl-cutoffs", vocab) or [], cfg.txl_div_val,
            cfg.txl_dropout, token_map_size=len(dictionary) if cfg.txl_vocab_size > 0 else 0,
        )
    if cfg.adaptive_input:
        cutoffs = parse_cutoffs(cfg.adaptive_input_cutoff, "adaptive-input-cutoff", len(dictionary))
        return AdaptiveInput(len(dictionary), dictionary.pad(), cfg.adaptive_input_dim,
                             cfg.adaptive_input_factor, d, cutoffs)
    embedding = nn.Embedding(len(dictionary), d, padding_idx=dictionary.pad())
    bound = math.sqrt(3.0 / d)
    nn.init.uniform_(embedding.weight, -bound, bound)
    with torch.no_grad():
        embedding.weight[dictionary.pad()].zero_()
    return embedding


@register_model("srupp_lm", dataclass=SRUppLMConfig)
class SRUppLanguageModel(FairseqLanguageModel):
    """SRU++ language model: embedding -> SRU++ layers -> (adaptive) softmax."""

    @classmethod
    def build_model(cls, cfg, task):
        dictionary = task.target_dictionary
        validate_config(cfg, len(dictionary))
        return cls(SRUppDecoder(cfg, dictionary, build_embedding(cfg, dictionary)))

    def reset_stream_state(self, mode=None) -> None:
        """Forget the state carried between segments: of "train", of "eval", or of both (None)."""
        self.decoder.reset_stream_state(mode)
