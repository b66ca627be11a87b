"""One generation step of a trained SRU++ decoder with static shapes (for torch.export and ONNX).

The state is three tensors of fixed size:
    c         (N, B, d)        float32, each layer's cell state
    kv        (A, S, B, 2d')   float32, each attention layer's keys and values of the last S
                               positions, in a ring: position p lives in slot p % S
    position  (1,)             int64, tokens consumed so far
with N layers, A = max(attention layers, 1) (a model without attention carries one unused
buffer) and S = max(min(mem_len, attn_window or mem_len), 1). Attention has no positional
encoding, so the order of keys within the ring does not matter; slots not yet written are
masked. One step computes what the cached incremental decoder computes for one token: the
recurrence with elementwise ops, attention over the ring and the new position.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn

from .vocab_layers import StaticEmbedding, StaticLogSoftmax

STEP_INPUTS = ("tokens", "c", "kv", "position")
STEP_OUTPUTS = ("log_probs", "c_out", "kv_out", "position_out")


def memory_size(cfg) -> int:
    """Earlier positions one attention query sees in incremental decoding."""
    return min(cfg.mem_len, cfg.attn_window) if cfg.attn_window > 0 else cfg.mem_len


class SRUppStep(nn.Module):
    """forward(tokens (B, 1) int64, c, kv, position) -> (log_probs (B, V) float32, c, kv,
    position + 1); shares its parameters with `decoder` (an SRUppDecoder in eval mode)."""

    def __init__(self, decoder):
        super().__init__()
        if decoder.training:
            raise ValueError("SRUppStep needs the decoder in eval mode (model.eval()): it has no "
                             "dropout")
        cfg = decoder.cfg
        self.layers = decoder.layers
        self.embed = StaticEmbedding(decoder.embed_tokens)
        self.log_softmax = StaticLogSoftmax(decoder)
        self.attention_flags: List[bool] = list(decoder.attention_flags)
        self.hidden_dim = cfg.hidden_dim
        self.proj_dim = cfg.proj_dim
        self.num_heads = cfg.attention_heads
        self.memory_len = memory_size(cfg)
        self.ring_size = max(self.memory_len, 1)
        self.num_kv = max(sum(self.attention_flags), 1)
        self.eval()

    def initial_state(self, batch_size: int) -> Tuple[Tensor, Tensor, Tensor]:
        """Zero state (c, kv, position) for `batch_size` rows."""
        c = torch.zeros(len(self.layers), batch_size, self.hidden_dim)
        kv = torch.zeros(self.num_kv, self.ring_size, batch_size, 2 * self.proj_dim)
        return c, kv, torch.zeros(1, dtype=torch.long)

    def forward(self, tokens: Tensor, c: Tensor, kv: Tensor,
                position: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.embed(tokens[:, 0]).float()  # (B, d)
        slots = torch.arange(self.ring_size, device=tokens.device)
        valid = slots < position.clamp(max=self.memory_len)  # (S,) written slots
        write = (slots == position % self.ring_size).view(-1, 1, 1)
        c_out, kv_out = [], []
        a = 0
        for i, layer in enumerate(self.layers):
            t = layer.layer_norm(x) if layer.cell_layer_norm == "pre" else x
            if self.attention_flags[i]:
                u, kv_new = self._attention(layer.transform, t, kv[a], valid)
                kv_out.append(torch.where(write, kv_new.unsqueeze(0), kv[a]))
                a += 1
            else:
                u = layer.transform(t.unsqueeze(0))[0]
            h, c_new = _recurrence_step(u, x, c[i], layer.weight_c, layer.bias, self.hidden_dim)
            if layer.cell_layer_norm == "post":
                h = layer.layer_norm(h)
            c_out.append(c_new)
            x = h
        log_probs = self.log_softmax(x)
        kv_next = torch.stack(kv_out) if kv_out else kv
        return log_probs, torch.stack(c_out), kv_next, position + 1

    def _attention(self, attn, t: Tensor, ring: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor]:
        """t (B, d) -> U (B, 3d) and this position's [K | V] (B, 2d'); ring (S, B, 2d')."""
        B = t.shape[0]
        H = self.num_heads
        q = attn.linear1(t)  # (B, d')
        kv_new = attn.linear2(q)
        k_new, v_new = kv_new.chunk(2, dim=-1)
        k_ring, v_ring = ring.chunk(2, dim=-1)
        qh = q.view(B, H, -1) * (self.proj_dim // H) ** -0.5
        ring_scores = torch.einsum("bhe,sbhe->bhs", qh, k_ring.reshape(-1, B, H, qh.shape[-1]))
        ring_scores = ring_scores.masked_fill(~valid, float("-inf"))
        self_score = (qh * k_new.view(B, H, -1)).sum(-1, keepdim=True)
        probs = torch.cat([ring_scores, self_score], dim=-1).softmax(dim=-1)
        attn_ring = torch.einsum("bhs,sbhe->bhe", probs[..., :-1],
                                 v_ring.reshape(-1, B, H, qh.shape[-1]))
        mixed = (attn_ring + probs[..., -1:] * v_new.view(B, H, -1)).reshape(B, -1)
        out = q + attn.alpha * mixed
        if attn.layer_norm is not None:
            out = attn.layer_norm(out)
        return attn.linear3(out), kv_new


def _recurrence_step(u: Tensor, x: Tensor, c: Tensor, weight_c: Tensor, bias: Tensor,
                     d: int) -> Tuple[Tensor, Tensor]:
    """One time step of the SRU recurrence (recurrence_ref): u (B, 3d), x and c (B, d) ->
    h (B, d), c (B, d)."""
    u0, u1, u2 = u.view(-1, 3, d).unbind(1)
    v_f, v_r = weight_c.view(2, d)
    b_f, b_r = bias.view(2, d)
    f = torch.sigmoid(u1 + v_f * c + b_f)
    r = torch.sigmoid(u2 + v_r * c + b_r)
    c_new = (c - u0) * f + u0
    return x + r * (c_new - x), c_new
