"""The `srupp_stream_lm` task: language modeling over persistent streams (truncated BPTT).

Training, validation and `fairseq-eval-lm` read each split as B x world_size contiguous streams
(see `StreamBatches`). Batch i carries `segment_index` i in its net_input, which tells the SRU++
decoder to continue the state it carried from batch i - 1 (SPEC.md section 3.2).
"""
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.data import Dictionary, data_utils, iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import MISSING, DictConfig, open_dict

from .stream_dataset import PromptDataset, StreamBatches, TokenStream

logger = logging.getLogger(__name__)


@dataclass
class SRUppStreamLMConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={
        "help": "fairseq-preprocess output folder (dict.txt, train/valid/test); colon separated "
                "folders are used one per epoch, round robin"})
    tokens_per_sample: int = field(default=512, metadata={
        "help": "segment length T: tokens of each stream per batch (the authors' unroll size); "
                "the last batch of an epoch may be shorter. The number of streams per process "
                "is --batch-size (training), --batch-size-valid (validation during training, "
                "defaults to --batch-size) and --batch-size in fairseq-eval-lm"})
    eval_attn_window: int = field(default=0, metadata={
        "help": "if > 0, set the model's evaluation attention window (attn_window) to this many "
                "earlier positions (the authors' 3072 for enwik8, 2560 for wt103). When a trained "
                "model is loaded (fairseq-eval-lm, -generate, -interactive) mem_len is raised to "
                "it too; in fairseq-train --mem-len must already be >= it"})
    max_target_positions: Optional[int] = field(default=None, metadata={
        "help": "longest sequence the model accepts; None = no limit (a recurrence has no "
                "position table)"})


def _unwrap(model):
    """The model inside DDP / legacy-DDP / proxy wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def reset_stream_state(model, mode: Optional[str] = None) -> None:
    """Forget the state the decoder carries between segments ("train", "eval" or both); models
    without carried state are left alone."""
    decoder = getattr(_unwrap(model), "decoder", None)
    if hasattr(decoder, "reset_stream_state"):
        decoder.reset_stream_state(mode)


@register_task("srupp_stream_lm", dataclass=SRUppStreamLMConfig)
class SRUppStreamLMTask(FairseqTask):
    """Ordered, contiguous streams with next-token targets across segment boundaries."""

    def __init__(self, cfg: SRUppStreamLMConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary

    @classmethod
    def setup_task(cls, cfg: SRUppStreamLMConfig, **kwargs):
        paths = utils.split_paths(cfg.data)
        if not paths:
            raise ValueError("srupp_stream_lm needs a data folder (fairseq-preprocess output)")
        dictionary = Dictionary.load(os.path.join(paths[0], "dict.txt"))
        logger.info(f"dictionary: {len(dictionary)} types")
        return cls(cfg, dictionary)

    @property
    def source_dictionary(self) -> Dictionary:
        return self.dictionary

    @property
    def target_dictionary(self) -> Dictionary:
        return self.dictionary

    # ------------------------------------------------------------------ model
    def build_model(self, cfg, from_checkpoint: bool = False):
        window = self.cfg.eval_attn_window
        if window > 0:
            if getattr(cfg, "attn_window", None) is None or getattr(cfg, "mem_len", None) is None:
                raise ValueError("--eval-attn-window needs a model with attn_window and mem_len "
                                 "(srupp_lm)")
            if cfg.mem_len < window and not from_checkpoint:
                raise ValueError(
                    f"--eval-attn-window {window} needs --mem-len >= {window} in fairseq-train "
                    f"(got {cfg.mem_len}); raise --mem-len, or set the window only when "
                    f"evaluating (fairseq-eval-lm --eval-attn-window {window})"
                )
            with open_dict(cfg) if isinstance(cfg, DictConfig) else nullcontext():
                cfg.attn_window = window
                if cfg.mem_len < window:
                    logger.info(f"--eval-attn-window {window}: mem_len {cfg.mem_len} -> {window}")
                    cfg.mem_len = window
        return super().build_model(cfg, from_checkpoint)

    def begin_epoch(self, epoch, model):
        """A training epoch starts every stream afresh."""
        reset_stream_state(model)

    def begin_valid_epoch(self, epoch, model):
        """Validation starts from zero state; the training streams keep theirs, so training
        resumes where it was after a mid-epoch validation (as the authors' scripts do)."""
        reset_stream_state(model, "eval")

    # ------------------------------------------------------------------ data
    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        split_path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        lines = data_utils.load_indexed_dataset(split_path, self.dictionary, combine=combine)
        if lines is None:
            raise FileNotFoundError(f"dataset not found: {split} ({split_path})")
        self.datasets[split] = TokenStream(lines)
        logger.info(f"{split}: {len(self.datasets[split])} tokens in {len(lines)} lines")

    def dataset(self, split: str):
        if split not in self.datasets:
            raise KeyError(f"dataset not loaded: {split}")
        return self.datasets[split]

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1,
                           num_shards=1, shard_id=0, num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False,
                           grouped_shuffling=False, update_epoch_batch_itr=False):
        """Stream splits: one batch per segment, in order, max_sentences streams per shard
        (each shard's batches are already its own, so the iterator itself is not sharded).
        Prompts for generation go through fairseq's usual batching."""
        if not isinstance(dataset, TokenStream):
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch,
                data_buffer_size, disable_iterator_cache, skip_remainder_batch,
                grouped_shuffling, update_epoch_batch_itr,
            )
        if max_sentences is None:
            raise ValueError(
                "srupp_stream_lm needs --batch-size (the number of parallel streams per process; "
                "--batch-size-valid for validation); --max-tokens alone does not set it"
            )
        batches = StreamBatches(dataset, max_sentences, self.cfg.tokens_per_sample,
                                self.dictionary.pad(), self.dictionary.eos(), num_shards,
                                shard_id)
        return iterators.EpochBatchIterator(
            dataset=batches,
            collate_fn=batches.collater,
            batch_sampler=[[i] for i in range(len(batches))],
            seed=seed,
            num_workers=num_workers,
            epoch=epoch,
            buffer_size=data_buffer_size,
            disable_shuffling=True,
            skip_remainder_batch=skip_remainder_batch,
        )

    def eval_lm_dataloader(self, dataset, max_tokens: Optional[int] = 36000,
                           batch_size: Optional[int] = None, max_positions: Optional[int] = None,
                           num_shards: int = 1, shard_id: int = 0, num_workers: int = 1,
                           data_buffer_size: int = 10, context_window: int = 0):
        """The ordered stream batches: SequenceScorer calls the model on them in order, so the
        decoder carries its state from each segment to the next."""
        if context_window > 0:
            raise ValueError(
                "srupp_stream_lm carries the recurrent state and attention memory from segment to "
                "segment, so --context-window is not used: drop it (set the attention span with "
                "--eval-attn-window). For stateless evaluation with a context window use "
                "--task language_modeling --context-window N"
            )
        return self.get_batch_iterator(
            dataset, max_sentences=batch_size, num_shards=num_shards, shard_id=shard_id,
            num_workers=num_workers, data_buffer_size=data_buffer_size,
        ).next_epoch_itr(shuffle=False)

    # ------------------------------------------------------------------ generation
    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """Prompts, one per line. fairseq's language_modeling task passes them through
        TokenBlockDataset(break_mode="eos"), whose numpy code (np.compat) fails under numpy 2;
        each prompt already is one line, so PromptDataset only strips encode_line's </s>."""
        return PromptDataset(src_tokens, self.dictionary.pad(), self.dictionary.eos())

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Generate from </s> (as the language_modeling task does) with the prompt as forced
        prefix: prefix_tokens when given (fairseq-generate --prefix-size), else src_tokens without
        its first column when that is all </s> (always so for PromptDataset). A prompt is cut at
        its first </s>, since the generator would end the hypothesis there."""
        if constraints is not None:
            raise NotImplementedError("srupp_stream_lm does not support constrained generation")
        eos, pad = self.dictionary.eos(), self.dictionary.pad()
        prefix = prefix_tokens
        if prefix is None:
            prefix = sample["net_input"]["src_tokens"]
            if prefix.shape[1] > 0 and prefix[:, 0].eq(eos).all():
                prefix = prefix[:, 1:]
        prefix = prefix.masked_fill(prefix.eq(eos).cumsum(dim=1).gt(0), pad)
        with torch.no_grad():
            return generator.generate(models, sample, prefix_tokens=prefix, bos_token=eos)
