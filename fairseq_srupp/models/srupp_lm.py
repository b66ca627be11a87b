"""The `srupp_lm` fairseq model: an SRU++ language model (Lei 2021)."""
import logging
import math
from contextlib import nullcontext
from typing import Dict

import torch
from fairseq.models import FairseqLanguageModel, register_model
from fairseq.modules import AdaptiveInput
from torch import Tensor, nn

from ..modules import TXLAdaptiveEmbedding
from .config import SRUppLMConfig, parse_cutoffs, txl_vocab_size, validate_config
from .srupp_decoder import SRUppDecoder

logger = logging.getLogger(__name__)


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


def check_checkpoint_shapes(saved: Dict[str, Tensor], own: Dict[str, Tensor],
                            dictionary_size: int) -> None:
    """Raise ValueError when tensors of a checkpoint (`saved`) and of the model built for it
    (`own`) differ in shape. When every difference is in the first dimension and by the same
    amount, the vocabulary is what differs: every table with one row per symbol has V - k rows
    (k = 0, or a cutoff of the adaptive layers), so the checkpoint's dictionary has
    dictionary_size + (saved rows - own rows) symbols."""
    clashes = [(name, tuple(value.shape), tuple(own[name].shape))
               for name, value in saved.items()
               if name in own and torch.is_tensor(value) and value.shape != own[name].shape]
    if not clashes:
        return
    name, saved_shape, own_shape = clashes[0]
    example = f"{name} is {saved_shape} in the checkpoint and {own_shape} here"
    row_gaps = {s[0] - o[0] if len(s) == len(o) > 0 and s[1:] == o[1:] else None
                for _, s, o in clashes}
    if len(row_gaps) == 1 and None not in row_gaps:
        trained_size = dictionary_size + row_gaps.pop()
        raise ValueError(
            f"the checkpoint was trained with a dictionary of {trained_size} symbols, but the "
            f"dictionary here (dict.txt of the data folder) has {dictionary_size} ({example}). "
            f"Use the data folder the model was trained on, or binarize new text with the "
            f"training dictionary: fairseq-preprocess --only-source --srcdict TRAINING_DATA/"
            f"dict.txt ..."
        )
    raise ValueError(
        f"the checkpoint does not fit this srupp_lm: {len(clashes)} tensors differ in shape, "
        f"e.g. {example}. It was trained with other model options (--hidden-dim, --proj-dim, "
        f"--attention-heads, ...): drop --model-overrides that change them (and in "
        f"fairseq-train --restore-file, use the --arch and options it was trained with)"
    )


@register_model("srupp_lm", dataclass=SRUppLMConfig)
class SRUppLanguageModel(FairseqLanguageModel):
    """SRU++ language model: embedding -> SRU++ layers -> (adaptive) softmax."""

    @classmethod
    def build_model(cls, cfg, task):
        dictionary = task.target_dictionary
        validate_config(cfg, len(dictionary))
        return cls(SRUppDecoder(cfg, dictionary, build_embedding(cfg, dictionary)))

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """fairseq's loading, after a check that every tensor the checkpoint shares with this
        model has this model's shape (torch's own error names no cause)."""
        check_checkpoint_shapes(state_dict, self.state_dict(), len(self.decoder.dictionary))
        return super().load_state_dict(state_dict, strict, model_cfg, args)

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt",
                        data_name_or_path=".", quiet=True, **kwargs):
        """A trained model with raw-text `score` and `sample` (SRUppHubInterface).

        model_name_or_path: the checkpoint folder; checkpoint_file: its file name(s), colon
        separated for an ensemble; data_name_or_path: the data folder (dict.txt), relative to
        the checkpoint folder when it starts with "."; further keyword arguments override the
        checkpoint's options (e.g. tokens_per_sample=..., bpe=..., cpu=True). This package is
        imported already, so user_dir is not needed. The loaded configuration is logged at
        DEBUG level; quiet=True also holds back fairseq's INFO messages while loading."""
        from fairseq import hub_utils

        from .hub_interface import SRUppHubInterface, quiet_fairseq

        with quiet_fairseq() if quiet else nullcontext():
            loaded = hub_utils.from_pretrained(model_name_or_path, checkpoint_file,
                                               data_name_or_path, archive_map=cls.hub_models(),
                                               **kwargs)
            logger.debug(loaded["args"])
        return SRUppHubInterface(loaded["args"], loaded["task"], loaded["models"])

    def reset_stream_state(self, mode=None) -> None:
        """Forget the state carried between segments: of "train", of "eval", or of both (None)."""
        self.decoder.reset_stream_state(mode)
