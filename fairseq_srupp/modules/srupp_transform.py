"""The two transforms that map an SRU++ layer's input to U (SPEC.md sections 1.2 and 1.3)."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_mask import segment_attention_mask


# PyTorch's fused attention kernels (flash, memory-efficient) serve heads up to this width well; the
# SRU++ LMs use one head of d' = 768, where the memory-efficient backward alone took 55% of a layer's
# time on an H200, so wider heads take two matmuls and a softmax instead.
FUSED_ATTENTION_MAX_HEAD_DIM = 256


def attend(q: Tensor, k: Tensor, v: Tensor, allowed: Optional[Tensor], causal: bool,
           dropout_p: float) -> Tensor:
    """softmax(q k^T / sqrt(e) masked) v for q (B, H, L, e), k and v (B, H, S, e); `allowed`
    (L, S) or (B, 1, L, S) bool (True = may attend), or None with `causal` (S == L)."""
    if q.shape[-1] <= FUSED_ATTENTION_MAX_HEAD_DIM:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=causal,
                                              dropout_p=dropout_p)
    if causal:
        allowed = segment_attention_mask(q.shape[2], 0, None, q.device)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    if dropout_p > 0:  # a Python branch: under torch.compile dropout_p may be symbolic
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs.to(v.dtype), v)


def _init_output_projection(linear: nn.Linear, dropout: float) -> None:
    """Xavier on the whole matrix, then scaled by sqrt(1 - dropout) as the authors do."""
    nn.init.xavier_uniform_(linear.weight)
    if dropout > 0:
        with torch.no_grad():
            linear.weight.mul_(math.sqrt(1.0 - dropout))


class SRUppAttention(nn.Module):
    """Single- or multi-head attention transform of SRU++.

    Z = W1 [memory; x] (d'), Q = Z of the current positions, [K | V] = W2 Z (K first),
    A = softmax(Q K^T / sqrt(head_dim) + causal mask) V, O = LN(Q + alpha * A) (post-norm),
    U = W3 dropout(O). No positional encoding. Memory is re-projected with the current weights.
    """

    def __init__(
        self,
        input_dim: int,
        proj_dim: int,
        output_dim: int,
        num_heads: int = 1,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        layer_norm: bool = True,
    ):
        super().__init__()
        if proj_dim % num_heads != 0:
            raise ValueError(
                f"proj_dim ({proj_dim}) must be divisible by the number of attention heads "
                f"({num_heads}); change --proj-dim or --attention-heads"
            )
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.linear1 = nn.Linear(input_dim, proj_dim, bias=False)
        self.linear2 = nn.Linear(proj_dim, 2 * proj_dim, bias=False)
        self.linear3 = nn.Linear(proj_dim, output_dim, bias=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.layer_norm = nn.LayerNorm(proj_dim) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)
        _init_output_projection(self.linear3, self.dropout)
        nn.init.zeros_(self.alpha)
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()

    def forward(
        self,
        x: Tensor,
        memory: Optional[Tensor] = None,
        key_padding: Optional[Tensor] = None,
        window: Optional[int] = None,
    ) -> Tensor:
        """x (L, B, d_in), memory (M, B, d_in) or None, key_padding (M + L, B) bool or None
        -> (L, B, d_out)."""
        M = 0 if memory is None else memory.shape[0]
        # memory and x projected apart: the concatenation copies d'-wide rows instead of d-wide ones, and
        # the backward computes no input gradient for the (detached) memory
        q = self.linear1(x)
        z = q if memory is None else torch.cat([self.linear1(memory), q], dim=0)
        k, v = self.linear2(z).chunk(2, dim=-1)
        return self._attend_and_project(z[M:], k, v, key_padding, window)

    def project_memory(self, memory: Tensor) -> Tensor:
        """memory (M, B, d_in) -> its keys and values [K | V] = W2 W1 memory (M, B, 2d')."""
        return self.linear2(self.linear1(memory))

    def forward_cached(
        self,
        x: Tensor,
        kv_memory: Optional[Tensor] = None,
        key_padding: Optional[Tensor] = None,
        window: Optional[int] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Inference with the memory's keys and values projected once (exact while the weights
        are fixed, as a Transformer's key/value cache): x (L, B, d_in), kv_memory (M, B, 2d')
        or None, key_padding (M + L, B) bool or None -> (L, B, d_out) and the keys and values
        of [memory; x] (M + L, B, 2d')."""
        q = self.linear1(x)
        kv_new = self.linear2(q)
        kv = kv_new if kv_memory is None else torch.cat([kv_memory, kv_new], dim=0)
        k, v = kv.chunk(2, dim=-1)
        return self._attend_and_project(q, k, v, key_padding, window), kv

    def _attend_and_project(self, q: Tensor, k: Tensor, v: Tensor,
                            key_padding: Optional[Tensor], window: Optional[int]) -> Tensor:
        """q (L, B, d') of the current positions, k and v (M + L, B, d') -> U (L, B, d_out)."""
        L, B, _ = q.shape
        M = k.shape[0] - L
        if M == 0 and window is None and key_padding is None:
            allowed, causal = None, True  # lets fused attention use its causal kernels
        else:
            allowed = segment_attention_mask(L, M, window, q.device, key_padding)
            causal = False

        def heads(t: Tensor) -> Tensor:  # (S, B, d') -> (B, H, S, d'/H)
            return t.reshape(t.shape[0], B, self.num_heads, -1).permute(1, 2, 0, 3)

        attn = attend(heads(q), heads(k), heads(v), allowed, causal,
                      self.attention_dropout if self.training else 0.0)
        attn = attn.permute(2, 0, 1, 3).reshape(L, B, -1)
        out = q + self.alpha * attn
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return self.linear3(F.dropout(out, self.dropout, self.training))


class SRUppProjectedLinear(nn.Module):
    """Transform of SRU++ layers without attention: U = W2 dropout(LN(W1 x))."""

    def __init__(self, input_dim: int, proj_dim: int, output_dim: int, dropout: float = 0.0,
                 layer_norm: bool = True):
        super().__init__()
        self.dropout = dropout
        self.linear1 = nn.Linear(input_dim, proj_dim, bias=False)
        self.linear2 = nn.Linear(proj_dim, output_dim, bias=False)
        self.layer_norm = nn.LayerNorm(proj_dim) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear1.weight)
        _init_output_projection(self.linear2, self.dropout)
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()

    def forward(self, x: Tensor, memory: Optional[Tensor] = None,
                key_padding: Optional[Tensor] = None, window: Optional[int] = None) -> Tensor:
        """x (L, B, d_in) -> (L, B, d_out); memory, padding and window are ignored."""
        z = self.linear1(x)
        if self.layer_norm is not None:
            z = self.layer_norm(z)
        return self.linear2(F.dropout(z, self.dropout, self.training))
