"""Boolean attention masks for segments that attend over carried memory."""
from typing import Optional

import torch
from torch import Tensor


def segment_attention_mask(
    query_len: int,
    memory_len: int,
    window: Optional[int],
    device: torch.device,
    key_padding: Optional[Tensor] = None,
) -> Tensor:
    """Which keys each query may see; True = allowed.

    Query i sits at position M + i of the concatenation [memory; current]. It sees every key at
    or before itself (causal); with `window` W it sees only keys j >= M + i - W (at most W + 1
    keys, the authors' "same length" evaluation mask). `window=None` means no limit.

    Returns (L, M + L) without `key_padding`; with `key_padding` (M + L, B) bool (True = pad) it
    returns (B, 1, L, M + L) where padded keys are hidden, except that a query always sees its
    own position, so a padded query never gets an empty row (and no NaN).
    """
    q = torch.arange(query_len, device=device).unsqueeze(1) + memory_len
    k = torch.arange(memory_len + query_len, device=device).unsqueeze(0)
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k >= q - window)
    if key_padding is None:
        return allowed
    allowed = (allowed.unsqueeze(0) & ~key_padding.t().unsqueeze(1)) | (k == q).unsqueeze(0)
    return allowed.unsqueeze(1)
