"""Transformer-XL style adaptive input and adaptive log-softmax, as in the authors' WikiText-103
and Billion Word SRU++ models (SPEC.md sections 1.9, 1.10, 3.1 and pitfall 11).

The vocabulary is split by `cutoffs` into clusters: cluster 0 (the head's shortlist) holds ids
[0, cutoffs[0]), cluster c holds ids [cutoffs[c-1], cutoffs[c]), the last one ends at the
vocabulary size. Cluster c has width d_c = embed_dim // div_val**c (embed_dim is the authors'
n_e) and a projection of shape (hidden_dim, d_c).

Input:   e(w) = proj_c @ dropout(table_c[w - start_c])          (no sqrt(d) scaling)
Output:  head = W_0 dropout(h @ proj_0) + b_0,  W_0: (cutoffs[0] + n_clusters, d_0)
         tail_c = W_c dropout(h @ proj_c) + b_c, W_c: (size_c, d_c)
         log p(w) = log_softmax(head)[w]                                  for w in the shortlist
         log p(w) = log_softmax(head)[head_size - c] + log_softmax(tail_c)[w - start_c]   else
The cluster logits are the LAST head columns in REVERSE order: cluster c (1-based) is head column
head_size - c. The embedding tables ARE the output weights (table_c = W_c; table 0 therefore has
n_clusters extra rows that only the head uses). The projections are shared (WikiText-103) or
separate (Billion Word).

Optional `token_map` (both modules): for a converted checkpoint whose symbol order differs from
the dictionary's, ids seen from outside (dictionary ids) are mapped to the layer's own ids; -1
marks a dictionary symbol the layer does not know: it is embedded as zeros and gets the log-prob
UNMAPPED_LOG_PROB. Cluster membership is fixed by the checkpoint, so the rows cannot simply be
reordered (a dictionary sorted differently does not keep every cluster contiguous).

No fairseq imports here.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNMAPPED_LOG_PROB = -1.0e4


def _upcast(x: Tensor) -> Tensor:
    """At least float32 (float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def map_ids(token_map: Optional[Tensor], ids: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """Dictionary ids (any shape) -> the layers' ids (unknown ones as 0) and a bool mask of the known
    ones (None without a token_map, where every id is known)."""
    if token_map is None:
        return ids, None
    mapped = token_map[ids]
    return mapped.clamp(min=0), mapped.ge(0)


def txl_cluster_dims(embed_dim: int, div_val: int, n_clusters: int) -> List[int]:
    """Width of each cluster's table: embed_dim // div_val**c for c = 0 .. n_clusters."""
    return [embed_dim // (div_val ** c) for c in range(n_clusters + 1)]


def _check_layout(vocab_size: int, embed_dim: int, cutoffs: Sequence[int], div_val: int) -> None:
    cutoffs = list(cutoffs)
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])) or (cutoffs and cutoffs[0] <= 0):
        raise ValueError(f"TXL cutoffs must be positive and increasing, got {cutoffs}")
    if cutoffs and cutoffs[-1] >= vocab_size:
        raise ValueError(f"TXL cutoffs {cutoffs} must all be below the vocabulary size "
                         f"({vocab_size})")
    if div_val < 1:
        raise ValueError(f"TXL div_val must be >= 1, got {div_val}")
    dims = txl_cluster_dims(embed_dim, div_val, len(cutoffs))
    if min(dims) < 1:
        raise ValueError(f"TXL embed_dim {embed_dim} with div_val {div_val} and {len(cutoffs)} "
                         f"cutoffs gives a cluster of width 0 ({dims}); raise embed_dim or lower "
                         f"div_val")


class TXLAdaptiveEmbedding(nn.Module):
    """Adaptive input (owner of the tables that the log-softmax ties to).

    Parameters: `emb_layers.{c}` (size_c, d_c) with size_0 = cutoffs[0] + n_clusters,
    `emb_projs.{c}` (hidden_dim, d_c). Init: tables U(+-sqrt(3 / hidden_dim)) (the authors'
    out_layers init), projections xavier_uniform.

    forward: tokens (any shape) -> (*tokens.shape, hidden_dim).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        cutoffs: Sequence[int],
        div_val: int = 4,
        dropout: float = 0.0,
        token_map_size: int = 0,
    ):
        super().__init__()
        _check_layout(vocab_size, embed_dim, cutoffs, div_val)
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.cutoffs = list(cutoffs)
        self.div_val = div_val
        self.dropout = dropout
        self.n_clusters = len(self.cutoffs)
        self.bounds = [0] + self.cutoffs + [vocab_size]
        self.dims = txl_cluster_dims(embed_dim, div_val, self.n_clusters)
        sizes = [hi - lo for lo, hi in zip(self.bounds, self.bounds[1:])]
        sizes[0] += self.n_clusters  # the head's cluster rows (used only by the log-softmax)
        self.emb_layers = nn.ParameterList(
            [nn.Parameter(torch.empty(n, d_c)) for n, d_c in zip(sizes, self.dims)])
        self.emb_projs = nn.ParameterList(
            [nn.Parameter(torch.empty(hidden_dim, d_c)) for d_c in self.dims])
        if token_map_size > 0:
            ids = torch.arange(token_map_size)  # identity where possible; a converter fills it
            self.register_buffer("token_map", ids.masked_fill(ids.ge(vocab_size), -1))
        else:
            self.token_map = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(3.0 / self.hidden_dim)
        for table in self.emb_layers:
            nn.init.uniform_(table, -bound, bound)
        for proj in self.emb_projs:
            nn.init.xavier_uniform_(proj)

    def forward(self, tokens: Tensor) -> Tensor:
        flat = tokens.reshape(-1)
        flat, known = map_ids(self.token_map, flat)
        out = None
        for c, (lo, hi) in enumerate(zip(self.bounds, self.bounds[1:])):
            inside = flat.ge(lo) & flat.lt(hi)
            rows = F.embedding((flat - lo).clamp(0, hi - lo - 1), self.emb_layers[c])
            rows = F.dropout(rows, self.dropout, self.training)
            part = F.linear(rows, self.emb_projs[c]) * inside.unsqueeze(1).to(rows.dtype)
            out = part if out is None else out + part
        if known is not None:
            out = out * known.unsqueeze(1).to(out.dtype)
        return out.view(*tokens.shape, self.hidden_dim)


class TXLAdaptiveLogSoftmax(nn.Module):
    """Adaptive log-softmax tied to a `TXLAdaptiveEmbedding` (same vocabulary layout).

    Parameters: `out_layers.{c}` Linear(d_c, size_c) with bias (weight = the embedding's table c),
    `out_projs.{c}` (hidden_dim, d_c): the embedding's projections when `tie_proj`, else its own
    (xavier_uniform). Biases start at 0.
    """

    def __init__(self, embedding: TXLAdaptiveEmbedding, tie_proj: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.vocab_size = embedding.vocab_size
        self.hidden_dim = embedding.hidden_dim
        self.cutoffs = list(embedding.cutoffs)
        self.bounds = list(embedding.bounds)
        self.n_clusters = embedding.n_clusters
        self.shortlist = self.bounds[1] if self.n_clusters else self.vocab_size
        self.head_size = self.shortlist + self.n_clusters
        self.dropout = dropout
        self.tie_proj = tie_proj
        self.out_layers = nn.ModuleList()
        for table in embedding.emb_layers:
            layer = nn.Linear(table.shape[1], table.shape[0])
            layer.weight = table
            nn.init.zeros_(layer.bias)
            self.out_layers.append(layer)
        if tie_proj:
            self.out_projs = nn.ParameterList(list(embedding.emb_projs))
        else:
            self.out_projs = nn.ParameterList(
                [nn.Parameter(torch.empty_like(p)) for p in embedding.emb_projs])
            for proj in self.out_projs:
                nn.init.xavier_uniform_(proj)
        if embedding.token_map is not None:
            self.register_buffer("token_map", embedding.token_map)
        else:
            self.token_map = None

    def _logits(self, hidden: Tensor, c: int) -> Tensor:
        projected = F.linear(hidden, self.out_projs[c].t())
        projected = F.dropout(projected, self.dropout, self.training)
        return self.out_layers[c](projected)

    def log_prob(self, hidden: Tensor) -> Tensor:
        """hidden (..., hidden_dim) -> log-probabilities (..., V), float32 (float64 for float64
        input), over the outside ids (the dictionary's when a token_map is set)."""
        shape = hidden.shape[:-1]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        head_lp = F.log_softmax(_upcast(self._logits(hidden, 0)), dim=-1)
        parts = [head_lp[:, :self.shortlist]]
        for c in range(1, self.n_clusters + 1):
            tail_lp = F.log_softmax(_upcast(self._logits(hidden, c)), dim=-1)
            col = self.head_size - c
            parts.append(head_lp[:, col:col + 1] + tail_lp)
        out = torch.cat(parts, dim=1)
        if self.token_map is not None:
            known = self.token_map.ge(0)
            out = out.index_select(1, self.token_map.clamp(min=0))
            out = out.masked_fill(~known, UNMAPPED_LOG_PROB)
        return out.view(*shape, out.shape[-1])

    def nll(self, hidden: Tensor, target: Tensor) -> Tensor:
        """Per-position negative log-likelihood (float32, or float64), shaped like `target`;
        computes each tail only on the positions whose target is in it."""
        shape = target.shape
        hidden = hidden.reshape(-1, hidden.shape[-1])
        target = target.reshape(-1)
        target, known = map_ids(self.token_map, target)
        head_lp = F.log_softmax(_upcast(self._logits(hidden, 0)), dim=-1)
        in_head = target.lt(self.shortlist)
        nll = -head_lp.gather(1, target.clamp(max=self.shortlist - 1).unsqueeze(1)).squeeze(1)
        nll = nll * in_head.to(nll.dtype)
        for c in range(1, self.n_clusters + 1):
            lo, hi = self.bounds[c], self.bounds[c + 1]
            rows = (target.ge(lo) & target.lt(hi)).nonzero().squeeze(1)
            # computed even for no rows, so every parameter takes part in the graph (DDP)
            tail_lp = F.log_softmax(_upcast(self._logits(hidden.index_select(0, rows), c)), dim=-1)
            picked = tail_lp.gather(1, (target.index_select(0, rows) - lo).unsqueeze(1)).squeeze(1)
            picked = picked + head_lp.index_select(0, rows)[:, self.head_size - c]
            nll = nll.index_add(0, rows, -picked)
        if known is not None:
            nll = torch.where(known, nll, nll.new_full((), -UNMAPPED_LOG_PROB))
        return nll.view(shape)
