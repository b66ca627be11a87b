"""Recurrent state carried between consecutive segments of a stream."""
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor


@dataclass
class LayerState:
    """State of one SRU++ layer.

    c:      (B, d) cell state after the last position seen, float32.
    memory: (M, B, d) inputs of this layer at the last M positions (attention layers), or None.
    kv:     (M, B, 2d') instead of memory in inference (no gradients): the keys and values of
            those positions, projected once instead of at every step or segment; or None.
    """

    c: Tensor
    memory: Optional[Tensor] = None
    kv: Optional[Tensor] = None

    def detach(self) -> "LayerState":
        return LayerState(self.c.detach(), _detach(self.memory), _detach(self.kv))

    def index_select(self, order: Tensor) -> "LayerState":
        """Reorder the batch (beam search): c on dim 0, memory and kv on dim 1."""
        return LayerState(self.c.index_select(0, order), _select(self.memory, order),
                          _select(self.kv, order))


def _detach(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach()


def _select(t: Optional[Tensor], order: Tensor) -> Optional[Tensor]:
    return None if t is None else t.index_select(1, order)


StreamState = List[LayerState]


def detach_state(state: StreamState) -> StreamState:
    return [s.detach() for s in state]


def reorder_state(state: StreamState, order: Tensor) -> StreamState:
    return [s.index_select(order) for s in state]


class StreamSlot:
    """The carried state of one mode (training or evaluation) of a decoder.

    `advance(segment_index)` returns the state to start segment `segment_index` from; `commit`
    stores the state after it. Segment 0 starts from zeros. When the same segment index comes
    twice in a row (fairseq retries a batch after an fp16 overflow or an OOM), the second run
    starts from the same state as the first, so the stream never advances twice.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.state: Optional[StreamState] = None
        self.segment_index: Optional[int] = None
        self.state_in: Optional[StreamState] = None
        self.layout: Optional[tuple] = None

    def advance(self, segment_index: int, batch_size: int, device: torch.device,
                dtype: torch.dtype) -> Optional[StreamState]:
        """State to start `segment_index` from; None (zeros) at a stream's start or when the
        batch size, device or dtype differ from the previous segment's."""
        layout = (batch_size, device, dtype)
        if segment_index == self.segment_index and layout == self.layout:
            start = self.state_in
        elif segment_index == 0 or layout != self.layout:
            start = None
        else:
            start = self.state
        self.segment_index = segment_index
        self.state_in = start
        self.layout = layout
        return start

    def commit(self, state: StreamState) -> None:
        self.state = detach_state(state)
