"""The two transforms that map an SRU++ layer's input to U (SPEC.md sections 1.2 and 1.3)."""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_mask import segment_attention_mask


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
        L, B, _ = x.shape
        M = 0 if memory is None else memory.shape[0]
        z = self.linear1(x if memory is None else torch.cat([memory, x], dim=0))
        q = z[M:]
        k, v = self.linear2(z).chunk(2, dim=-1)
        if M == 0 and window is None and key_padding is None:
            allowed, causal = None, True  # lets SDPA pick its fused causal kernels
        else:
            allowed = segment_attention_mask(L, M, window, x.device, key_padding)
            causal = False

        def heads(t: Tensor) -> Tensor:  # (S, B, d') -> (B, H, S, d'/H)
            return t.reshape(t.shape[0], B, self.num_heads, -1).permute(1, 2, 0, 3)

        attn = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), attn_mask=allowed, is_causal=causal,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
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
