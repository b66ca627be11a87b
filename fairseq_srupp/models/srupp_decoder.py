"""The SRU++ decoder: embedding -> SRU++ layers -> output layer, with carried stream state."""
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.models import FairseqIncrementalDecoder
from fairseq.modules import AdaptiveSoftmax
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from torch import Tensor, nn

from ..modules import SRUppLayer, TXLAdaptiveLogSoftmax, compile_layer
from .config import attention_layers, parse_cutoffs
from .stream_state import LayerState, StreamSlot, StreamState, reorder_state

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


class SRUppDecoder(FairseqIncrementalDecoder):
    """Stacks SRU++ layers over token embeddings.

    Stateless by default: every call starts from zero state, which is what fairseq's stock
    `language_modeling` task needs. When the task passes `segment_index` (the `srupp_stream_lm`
    task does), consecutive segments continue the same streams and the decoder carries each
    layer's c and attention memory (one slot for training, one for evaluation). Incremental
    decoding keeps the same state in fairseq's `incremental_state`.
    """

    def __init__(self, cfg, dictionary, embed_tokens: nn.Module):
        super().__init__(dictionary)
        self.cfg = cfg
        self.embed_tokens = embed_tokens
        self.padding_idx = dictionary.pad()
        d = cfg.hidden_dim
        self.attention_flags = attention_layers(cfg.num_layers, cfg.attention_every,
                                                cfg.attention_last)
        self.layers = nn.ModuleList()
        for i, use_attention in enumerate(self.attention_flags):
            layer = SRUppLayer(
                d, d, cfg.proj_dim, cfg.attention_heads, use_attention, cfg.dropout,
                cfg.attention_dropout, cfg.highway_bias, cfg.cell_layer_norm,
                not cfg.no_attn_layer_norm, recurrence_dropout=i < cfg.num_layers - 1,
            )
            if getattr(cfg, "compile", False):  # absent in older checkpoints
                compile_layer(layer)
            if cfg.checkpoint_activations or cfg.offload_activations:  # offloading implies it
                layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
            self.layers.append(layer)
        self.adaptive_softmax = None
        self.output_projection = None
        self.txl_softmax = None  # Transformer-XL style log-softmax tied to embed_tokens
        softmax_cutoffs = parse_cutoffs(cfg.adaptive_softmax_cutoff, "adaptive-softmax-cutoff",
                                        len(dictionary))
        if cfg.txl_adaptive:
            self.txl_softmax = TXLAdaptiveLogSoftmax(embed_tokens, cfg.txl_tie_proj,
                                                     cfg.txl_dropout)
        elif softmax_cutoffs is not None:
            self.adaptive_softmax = AdaptiveSoftmax(
                len(dictionary), d, softmax_cutoffs, cfg.adaptive_softmax_dropout,
                factor=cfg.adaptive_softmax_factor,
                adaptive_inputs=embed_tokens if cfg.tie_adaptive_weights else None,
                tie_proj=cfg.tie_adaptive_proj,
            )
        else:
            self.output_projection = nn.Linear(d, len(dictionary))
            bound = math.sqrt(3.0 / d)
            nn.init.uniform_(self.output_projection.weight, -bound, bound)
            nn.init.zeros_(self.output_projection.bias)
            if cfg.share_input_output_embed:
                self.output_projection.weight = embed_tokens.weight
        self.stream_slots = {"train": StreamSlot(), "eval": StreamSlot()}

    # ---------------------------------------------------------------- stream state
    def reset_stream_state(self, mode: Optional[str] = None) -> None:
        """Forget the carried state of `mode` ("train" or "eval"), or of both modes when None.
        The stream task resets both at each training epoch and only "eval" at each validation,
        so training continues its streams after a mid-epoch validation."""
        if mode is not None and mode not in self.stream_slots:
            raise ValueError(f"mode must be one of {sorted(self.stream_slots)} or None, "
                             f"got {mode!r}")
        for name, slot in self.stream_slots.items():
            if mode is None or name == mode:
                slot.reset()

    def _mode(self) -> str:
        return "train" if self.training else "eval"

    def _attn_window(self) -> Optional[int]:
        return self.cfg.attn_window if (not self.training and self.cfg.attn_window > 0) else None

    def check_window_is_served(self) -> None:
        """With carried state, the memory must cover the evaluation attention window."""
        if self.cfg.attn_window > self.cfg.mem_len:
            raise ValueError(
                f"attn_window={self.cfg.attn_window} needs mem_len >= attn_window, but mem_len="
                f"{self.cfg.mem_len}: the carried memory must cover the window. Pass "
                f"--model-overrides '{{\"mem_len\": {self.cfg.attn_window}}}' when evaluating "
                f"(--mem-len {self.cfg.attn_window} in fairseq-train), or lower attn_window"
            )

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out=None,
        incremental_state: Optional[IncrementalState] = None,
        features_only: bool = False,
        segment_index: Optional[int] = None,
        src_lengths=None,
        **unused,
    ) -> Tuple[Tensor, Dict[str, List]]:
        """prev_output_tokens (B, T) -> logits (B, T, V) (features (B, T, d) with an adaptive
        softmax or features_only) and an extra dict."""
        if incremental_state is not None:
            state = self.get_incremental_state(incremental_state, "stream")
            stored = None if state is None else self._unpack(state)
            if stored is not None:
                prev_output_tokens = prev_output_tokens[:, -1:]
            x, new_state = self.extract_features(prev_output_tokens, stored, carry=True)
            self.set_incremental_state(incremental_state, "stream", self._pack(new_state))
        elif segment_index is not None and self.cfg.carry_state:
            self.check_window_is_served()
            slot = self.stream_slots[self._mode()]
            start = slot.advance(int(segment_index), prev_output_tokens.shape[0],
                                 prev_output_tokens.device, self._activation_dtype())
            x, new_state = self.extract_features(prev_output_tokens, start, carry=True)
            slot.commit(new_state)
        else:
            x, _ = self.extract_features(prev_output_tokens, None, carry=False)
        x = x.transpose(0, 1)
        if not features_only:
            x = self.output_layer(x)
        return x, {"attn": [None], "inner_states": None}

    def _activation_dtype(self) -> torch.dtype:
        return next(self.embed_tokens.parameters()).dtype

    def extract_features(
        self, tokens: Tensor, state: Optional[StreamState], carry: bool
    ) -> Tuple[Tensor, Optional[StreamState]]:
        """tokens (B, T), state from the previous segment or None -> features (T, B, d) and,
        when `carry`, the state after the last position (memory trimmed to mem_len)."""
        mask_pad = tokens.eq(self.padding_idx).t()
        mask_pad = mask_pad if mask_pad.any() else None
        x = self.embed_tokens(tokens.t())
        check_finite = getattr(self.cfg, "check_finite", False)  # absent in older checkpoints
        if check_finite:
            self._check_finite(x, "the token embeddings (embed_tokens)")
        x = F.dropout(x, self.cfg.embed_dropout, self.training)
        window = self._attn_window()
        cached = carry and self._caches_projections()
        new_state: List[LayerState] = []
        for i, layer in enumerate(self.layers):
            layer_state = None if state is None else state[i]
            c0 = None if layer_state is None else layer_state.c
            if cached:
                kv = self._cached_kv(i, layer_state)
                h, c_last, kv = layer.forward_cached(x, c0, kv, mask_pad, window)
                next_state = LayerState(c_last, kv=self._trim_memory(i, kv))
            else:
                memory = self._uncached_memory(layer_state)
                h, c_last = layer(x, c0, memory, mask_pad, window)
                next_state = LayerState(c_last, self._next_memory(i, memory, x))
            if check_finite:
                self._check_finite(h, f"the output of SRU++ layer {i + 1} (of {len(self.layers)})")
            if carry:
                new_state.append(next_state)
            x = h
        x = F.dropout(x, self.cfg.dropout, self.training)
        return x, (new_state if carry else None)

    def _check_finite(self, x: Tensor, where: str) -> None:
        """--check-finite: raise if x (any shape) holds NaN or Inf; `where` names the module."""
        if not torch.isfinite(x).all():
            mode = "training" if self.training else "evaluation"
            raise FloatingPointError(
                f"non-finite values (NaN/Inf) in {where} during {mode}; its inputs were finite, "
                f"so the cause is this module: check its weights in the checkpoint, and in "
                f"training lower --lr, set --clip-norm or train in float32 instead of --fp16"
            )

    def _next_memory(self, i: int, memory: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
        """The last mem_len inputs of layer i, (M, B, d); None for layers without attention."""
        kept = self.cfg.mem_len - x.shape[0]  # rows of the old memory still inside the window
        if memory is None or kept <= 0:  # x alone covers it: a view, no copy
            return self._trim_memory(i, x)
        return self._trim_memory(i, torch.cat([memory[-kept:], x], dim=0))

    def _trim_memory(self, i: int, joined: Optional[Tensor]) -> Optional[Tensor]:
        """The last mem_len rows of `joined` (S, B, *) for attention layer i, else None."""
        if not self.attention_flags[i] or self.cfg.mem_len == 0:
            return None
        return joined[-self.cfg.mem_len:]

    # ---------------------------------------------------------------- inference cache
    def _caches_projections(self) -> bool:
        """In inference (eval mode, no gradients) attention layers carry their memory's keys
        and values instead of its inputs, so each position is projected once; training
        re-projects the memory with the current weights (the authors' recipe)."""
        return not self.training and not torch.is_grad_enabled()

    def _cached_kv(self, i: int, layer_state: Optional[LayerState]) -> Optional[Tensor]:
        """The keys and values (M, B, 2d') of layer i's carried memory, projected now when the
        state holds the inputs (it was carried by a pass with gradients)."""
        if layer_state is None:
            return None
        if layer_state.kv is None and layer_state.memory is not None:
            return self.layers[i].project_memory(layer_state.memory)
        return layer_state.kv

    def _uncached_memory(self, layer_state: Optional[LayerState]) -> Optional[Tensor]:
        if layer_state is not None and layer_state.kv is not None:
            raise RuntimeError(
                "the carried state holds projected attention keys/values from an inference pass "
                "(eval mode under torch.no_grad()), which a pass with gradients cannot continue: "
                "run this pass under torch.no_grad() too, or start afresh with "
                "model.reset_stream_state() (or a new incremental_state)")
        return None if layer_state is None else layer_state.memory

    def output_layer(self, features: Tensor) -> Tensor:
        """features (B, T, d) -> logits (B, T, V); identity with an adaptive softmax."""
        if self.adaptive_softmax is not None or self.txl_softmax is not None:
            return features
        return self.output_projection(features)

    def get_normalized_probs(self, net_output, log_probs: bool, sample=None) -> Tensor:
        """(Log-)probabilities (B, T, V); with --txl-adaptive net_output[0] holds features."""
        if self.txl_softmax is not None:
            out = self.txl_softmax.log_prob(net_output[0])
            return out if log_probs else out.exp_()
        return super().get_normalized_probs(net_output, log_probs, sample)

    def max_positions(self) -> int:
        """A recurrence has no position limit; the task's limit applies when it sets one."""
        return self.cfg.max_target_positions or int(1e6)

    # ---------------------------------------------------------------- incremental decoding
    def _pack(self, state: StreamState) -> Dict[str, Optional[Tensor]]:
        packed: Dict[str, Optional[Tensor]] = {}
        for i, s in enumerate(state):
            packed[f"c{i}"] = s.c
            packed[f"memory{i}"] = s.memory
            packed[f"kv{i}"] = s.kv
        return packed

    def _unpack(self, packed: Dict[str, Optional[Tensor]]) -> StreamState:
        return [LayerState(packed[f"c{i}"], packed[f"memory{i}"], packed.get(f"kv{i}"))
                for i in range(len(self.layers))]

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        packed = self.get_incremental_state(incremental_state, "stream")
        if packed is not None:
            state = reorder_state(self._unpack(packed), new_order)
            self.set_incremental_state(incremental_state, "stream", self._pack(state))
