"""The decoder's input embedding and output log-softmax with static shapes, for export.

fairseq's AdaptiveInput selects each band's tokens with boolean indexing and its AdaptiveSoftmax
fills slices of a preallocated tensor; neither traces to a graph with static shapes. These
modules compute the same values from the same parameters without data-dependent shapes: every
band is looked up with clamped ids and masked (one token per row costs little), and the log-
probabilities are concatenated. The plain embedding and output layer, and the Transformer-XL
style layers (already static), are used as they are.
"""
import torch
import torch.nn.functional as F
from fairseq.modules import AdaptiveInput, AdaptiveSoftmax
from fairseq.modules.adaptive_softmax import TiedHeadModule
from torch import Tensor, nn

from ..modules import TXLAdaptiveEmbedding


class StaticEmbedding(nn.Module):
    """tokens (...) int64 -> embeddings (..., d) with the decoder's embedding parameters."""

    def __init__(self, embed_tokens: nn.Module):
        super().__init__()
        if not isinstance(embed_tokens, (nn.Embedding, AdaptiveInput, TXLAdaptiveEmbedding)):
            raise TypeError(f"cannot export the input embedding {type(embed_tokens).__name__}; "
                            f"supported: nn.Embedding, AdaptiveInput, TXLAdaptiveEmbedding")
        self.embed_tokens = embed_tokens

    def forward(self, tokens: Tensor) -> Tensor:
        embed = self.embed_tokens
        if not isinstance(embed, AdaptiveInput):
            return embed(tokens)
        out = None
        bounds = [0] + list(embed.cutoff)
        for band, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
            inside = (tokens.ge(lo) & tokens.lt(hi)).unsqueeze(-1)
            rows = embed.embeddings[band]((tokens - lo).clamp(0, hi - lo - 1))
            part = rows * inside.to(rows.dtype)
            out = part if out is None else out + part
        return out


class StaticLogSoftmax(nn.Module):
    """features (N, d) -> log-probabilities (N, V) in float32, as the decoder's
    get_normalized_probs computes them."""

    def __init__(self, decoder):
        super().__init__()
        self.output_projection = decoder.output_projection
        self.adaptive_softmax = decoder.adaptive_softmax
        self.txl_softmax = decoder.txl_softmax

    def forward(self, features: Tensor) -> Tensor:
        if self.txl_softmax is not None:
            return self.txl_softmax.log_prob(features.float())
        if self.adaptive_softmax is not None:
            return _adaptive_log_prob(self.adaptive_softmax, features).float()
        return F.log_softmax(self.output_projection(features).float(), dim=-1)


def _adaptive_log_prob(softmax: AdaptiveSoftmax, h: Tensor) -> Tensor:
    """fairseq's AdaptiveSoftmax.get_log_prob(h, None) without in-place slice writes:
    head log-probs for the shortlist, each tail's log-softmax plus its cluster's head log-prob."""
    head = softmax.head
    if isinstance(head, TiedHeadModule):
        head_logits = torch.cat([head.word_proj(h), head.class_proj(h)], dim=-1)
    else:
        head_logits = head(h)
    head_lp = F.log_softmax(head_logits, dim=-1)
    shortlist = softmax.cutoff[0]
    parts = [head_lp[:, :shortlist]]
    for i, tail in enumerate(softmax.tail):
        prior = head_lp[:, shortlist + i: shortlist + i + 1]
        parts.append(F.log_softmax(tail(h), dim=-1) + prior)
    return torch.cat(parts, dim=-1)
