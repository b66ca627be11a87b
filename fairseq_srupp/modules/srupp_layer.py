"""One SRU++ layer: transform the input to U, run the recurrence, highway to the output."""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .recurrence import sru_recurrence
from .srupp_transform import SRUppAttention, SRUppProjectedLinear

CELL_LAYER_NORM_CHOICES = ("none", "pre", "post")


class SRUppLayer(nn.Module):
    """SRU++ layer (SPEC.md section 1).

    U = transform(x) with shape (T, B, 3, d), then the recurrence gives
    h = x + m * r * (c - x). `use_attention` picks the attention transform, otherwise the
    projected linear one. `cell_layer_norm` is "none" (the authors' LMs), "pre" (LN on the
    transform's input; the skip keeps the raw x) or "post" (LN on h). `recurrence_dropout`
    False turns off the variational mask (the authors' last layer).

    Parameters: `weight_c` (2d,) = [v_f | v_r] ~ U(-1, 1); `bias` (2d,) = [b_f = 0 | b_r =
    highway_bias].
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        proj_dim: int,
        num_heads: int = 1,
        use_attention: bool = True,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        highway_bias: float = -2.0,
        cell_layer_norm: str = "none",
        attn_layer_norm: bool = True,
        recurrence_dropout: bool = True,
    ):
        super().__init__()
        if input_dim != hidden_dim:
            raise ValueError(
                f"SRU++ layers need input_dim == hidden_dim (the skip term adds x to c); "
                f"got {input_dim} and {hidden_dim}"
            )
        if cell_layer_norm not in CELL_LAYER_NORM_CHOICES:
            raise ValueError(
                f"cell_layer_norm must be one of {CELL_LAYER_NORM_CHOICES}, got {cell_layer_norm!r}"
            )
        self.hidden_dim = hidden_dim
        self.highway_bias = highway_bias
        self.dropout = dropout
        self.recurrence_dropout = recurrence_dropout
        self.cell_layer_norm = cell_layer_norm
        self.use_attention = use_attention
        if use_attention:
            self.transform = SRUppAttention(
                input_dim, proj_dim, 3 * hidden_dim, num_heads, dropout, attention_dropout,
                attn_layer_norm,
            )
        else:
            self.transform = SRUppProjectedLinear(
                input_dim, proj_dim, 3 * hidden_dim, dropout, attn_layer_norm
            )
        self.weight_c = nn.Parameter(torch.empty(2 * hidden_dim))
        self.bias = nn.Parameter(torch.empty(2 * hidden_dim))
        self.layer_norm = nn.LayerNorm(hidden_dim) if cell_layer_norm != "none" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight_c, -1.0, 1.0)
        with torch.no_grad():
            self.bias.zero_()
            self.bias[self.hidden_dim:] = self.highway_bias
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()
        self.transform.reset_parameters()

    def _dropout_mask(self, x: Tensor) -> Optional[Tensor]:
        """Variational mask (B, d), shared over time, scaled by 1/(1-p); None when off."""
        if not (self.dropout > 0 and self.recurrence_dropout and self.training):  # fewest guards first
            return None
        keep = 1.0 - self.dropout
        mask = x.new_empty(x.shape[1], self.hidden_dim, dtype=torch.float32).bernoulli_(keep)
        return mask.div_(keep)

    def forward(
        self,
        x: Tensor,
        c0: Optional[Tensor] = None,
        memory: Optional[Tensor] = None,
        mask_pad: Optional[Tensor] = None,
        attn_window: Optional[int] = None,
    ) -> Tuple[Tensor, Tensor]:
        """x (T, B, d), c0 (B, d) or None, memory (M, B, d) = earlier inputs of this layer or
        None, mask_pad (T, B) bool or None -> h (T, B, d), c_last (B, d) in float32."""
        transform_in = x if self.cell_layer_norm != "pre" else self.layer_norm(x)
        if memory is not None and self.cell_layer_norm == "pre":
            memory = self.layer_norm(memory)
        key_padding = _key_padding(mask_pad, 0 if memory is None else memory.shape[0])
        u = self.transform(transform_in, memory, key_padding, attn_window)
        return self._recur(u, x, c0, mask_pad)

    def project_memory(self, memory: Tensor) -> Tensor:
        """memory (M, B, d) = earlier inputs of this attention layer -> their keys and values
        (M, B, 2d'), what `forward_cached` keeps instead of the inputs."""
        if self.cell_layer_norm == "pre":
            memory = self.layer_norm(memory)
        return self.transform.project_memory(memory)

    def forward_cached(
        self,
        x: Tensor,
        c0: Optional[Tensor] = None,
        kv_memory: Optional[Tensor] = None,
        mask_pad: Optional[Tensor] = None,
        attn_window: Optional[int] = None,
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """`forward` for inference with the memory's attention keys and values already
        projected: x (T, B, d), c0 (B, d) or None, kv_memory (M, B, 2d') or None, mask_pad (T, B)
        or None -> h (T, B, d), c_last (B, d) and the keys and values of [memory; x]
        (M + T, B, 2d'), None for a layer without attention."""
        transform_in = x if self.cell_layer_norm != "pre" else self.layer_norm(x)
        kv = None
        if self.use_attention:
            key_padding = _key_padding(mask_pad, 0 if kv_memory is None else kv_memory.shape[0])
            u, kv = self.transform.forward_cached(transform_in, kv_memory, key_padding,
                                                  attn_window)
        else:
            u = self.transform(transform_in)
        h, c_last = self._recur(u, x, c0, mask_pad)
        return h, c_last, kv

    def _recur(self, u: Tensor, x: Tensor, c0: Optional[Tensor],
               mask_pad: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """U (T, B, 3d) -> h (T, B, d) and c_last (B, d) through the recurrence."""
        T, B, _ = x.shape
        u = u.view(T, B, 3, self.hidden_dim)
        h, c_last = sru_recurrence(
            u, x.to(u.dtype), self.weight_c, self.bias, c0, mask_pad, self._dropout_mask(x)
        )
        if self.cell_layer_norm == "post":
            h = self.layer_norm(h)
        return h, c_last


def _key_padding(mask_pad: Optional[Tensor], memory_len: int) -> Optional[Tensor]:
    """mask_pad (T, B) or None -> (memory_len + T, B) bool (memory is never padding) or None."""
    if mask_pad is None:
        return None
    return torch.cat([mask_pad.new_zeros(memory_len, mask_pad.shape[1]), mask_pad], dim=0)


# Every SRU++ layer shares one code object, so dynamo's per-code cache holds the graphs of all of them: per
# layer kind (attention or not, recurrence dropout or not) the first segment (no state yet), later segments,
# a shorter last segment (after which the length is dynamic), and the same in evaluation. Dynamo's default of
# 8 would silently send the rest to eager.
RECOMPILE_LIMIT = 32
COMPILE_BACKEND = "inductor"  # tests swap in "aot_eager" (the same capture, no C++ build)


def compile_layer(layer: SRUppLayer) -> SRUppLayer:
    """Compiles `layer`'s forward (training, and inference with gradients) and forward_cached (inference
    under torch.no_grad(): validation, fairseq-eval-lm, generation) in place with torch.compile (inductor,
    fullgraph: a graph break is an error, not a silent slowdown); each compiles on its first call. Layers
    of one configuration share their compiled code (their parameters are graph inputs). Raises dynamo's
    recompile limit to RECOMPILE_LIMIT (it is global). Returns the layer."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    layer.forward = torch.compile(layer.forward, backend=COMPILE_BACKEND, fullgraph=True)
    layer.forward_cached = torch.compile(layer.forward_cached, backend=COMPILE_BACKEND, fullgraph=True)
    return layer
