"""Datasets of the `srupp_stream_lm` task: one contiguous token stream cut into parallel rows
(truncated back-propagation through time), and the prompts used for generation."""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils
from torch import Tensor


class TokenStream:
    """The lines of a binarized split read back as one contiguous token sequence.

    fairseq-preprocess stores one item per line, each ending with </s>. Concatenated, they give
    the stream of TokenBlockDataset(break_mode="none"): </s> stays an ordinary token (the newline
    of character-level data). Nothing is copied: `read` slices the lines it needs.
    """

    def __init__(self, lines):
        self.lines = lines
        self.offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lines.sizes, dtype=np.int64), out=self.offsets[1:])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, stop: int) -> Tensor:
        """Tokens [start, stop) of the stream, (stop - start,) int64."""
        pieces = []
        line = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = start
        while pos < stop:
            begin, end = int(self.offsets[line]), int(self.offsets[line + 1])
            pieces.append(self.lines[line][pos - begin:min(stop, end) - begin].long())
            pos, line = end, line + 1
        return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


class StreamBatches(torch.utils.data.Dataset):
    """The batches one data-parallel shard sees in an epoch; item i is the whole batch i.

    Let N be the stream's length and R = batch_size * num_shards. The N target positions are cut
    into R contiguous rows whose lengths differ by at most one (the first N % R rows are one
    longer); shard s owns rows [s * batch_size, (s + 1) * batch_size). A row predicts its tokens
    from the tokens one position earlier (</s> before the first token of the split, as fairseq's
    language_modeling task does), so every token of the split is a target exactly once per epoch,
    across segment boundaries too. Batch i holds positions [i * T, (i + 1) * T) of every row, so
    row r of batch i + 1 continues row r of batch i. There are ceil(L / T) batches for every shard
    (L = the longest row); the last one is shorter when L is not a multiple of T, and positions
    past the end of a row are pad in both input and target (nothing is dropped).

    Batch i: net_input = {src_tokens (B, T_i), src_lengths (B,), segment_index i}, target
    (B, T_i), ntokens = number of non-pad targets.
    """

    def __init__(self, stream: TokenStream, batch_size: int, segment_len: int, pad: int,
                 eos: int, num_shards: int = 1, shard_id: int = 0):
        if batch_size < 1:
            raise ValueError(f"the number of streams per shard (the batch size) must be >= 1, got "
                             f"{batch_size}")
        if segment_len < 1:
            raise ValueError(f"--tokens-per-sample must be >= 1, got {segment_len}")
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id {shard_id} is outside [0, {num_shards})")
        if len(stream) == 0:
            raise ValueError("the split is empty: there is nothing to cut into streams")
        self.stream = stream
        self.batch_size = batch_size
        self.segment_len = segment_len
        self.pad, self.eos = pad, eos
        self.first_row = shard_id * batch_size
        self.num_rows = batch_size * num_shards
        base, extra = divmod(len(stream), self.num_rows)
        rows = np.arange(self.num_rows + 1)
        # (R + 1,): row g predicts stream positions [row_starts[g], row_starts[g + 1])
        self.row_starts = rows * base + np.minimum(rows, extra)
        self.row_len = base + (extra > 0)

    def __len__(self) -> int:
        return -(-self.row_len // self.segment_len)

    def _row(self, g: int, lo: int, hi: int) -> Tuple[Tensor, Tensor]:
        """Positions [lo, hi) of row g as (input, target), each (hi - lo,) with pad past its end."""
        start = int(self.row_starts[g])
        a, b = start + lo, min(start + hi, int(self.row_starts[g + 1]))
        src = torch.full((hi - lo,), self.pad, dtype=torch.long)
        tgt = src.clone()
        if a < b:
            tokens = self.stream.read(max(a - 1, 0), b)
            if a == 0:
                tokens = torch.cat([tokens.new_tensor([self.eos]), tokens])
            src[:b - a] = tokens[:-1]
            tgt[:b - a] = tokens[1:]
        return src, tgt

    def __getitem__(self, i: int) -> Dict:
        lo = i * self.segment_len
        hi = min(lo + self.segment_len, self.row_len)
        rows = torch.arange(self.first_row, self.first_row + self.batch_size)
        src, tgt = (torch.stack(t) for t in zip(*(self._row(int(g), lo, hi) for g in rows)))
        return {
            "id": rows + i * self.num_rows,
            "nsentences": self.batch_size,
            "ntokens": int(tgt.ne(self.pad).sum()),
            "net_input": {"src_tokens": src, "src_lengths": src.ne(self.pad).sum(1),
                          "segment_index": i},
            "target": tgt,
        }

    def collater(self, items: List[Dict]) -> Dict:
        """Every item already is a batch (the iterator's batches are [[i]])."""
        (batch,) = items
        return batch


class PromptDataset(FairseqDataset):
    """Prompts for generation (fairseq-interactive, the hub API).

    Each prompt comes from Dictionary.encode_line, which appends </s>; that trailing </s> is
    removed (a prompt ending in </s> would end the generation at once). A batch holds
    src_tokens (B, 1 + L) = [</s>, prompt..., pad...] and target (B, 1 + L) = [prompt..., pad...].
    """

    def __init__(self, prompts: Sequence[Tensor], pad: int, eos: int):
        self.pad, self.eos = pad, eos
        self.prompts = []
        for p in prompts:
            while len(p) > 0 and p[-1] == eos:
                p = p[:-1]
            self.prompts.append(p.long())
        self.sizes = np.array([len(p) + 1 for p in self.prompts], dtype=np.int64)

    def __getitem__(self, index: int) -> Dict:
        return {"id": index, "prompt": self.prompts[index]}

    def __len__(self) -> int:
        return len(self.prompts)

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self.sizes[indices]

    def size(self, index: int) -> int:
        return int(self.sizes[index])

    def collater(self, samples: List[Dict]) -> Dict:
        if not samples:
            return {}
        eos = torch.tensor([self.eos])
        pad = torch.tensor([self.pad])
        src = data_utils.collate_tokens([torch.cat([eos, s["prompt"]]) for s in samples],
                                        self.pad)
        tgt = data_utils.collate_tokens([torch.cat([s["prompt"], pad]) for s in samples],
                                        self.pad)
        return {
            "id": torch.tensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": int(tgt.ne(self.pad).sum()),
            "net_input": {"src_tokens": src, "src_lengths": src.ne(self.pad).sum(1)},
            "target": tgt,
        }
