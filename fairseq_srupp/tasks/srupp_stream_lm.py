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
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.tasks import FairseqTask, register_task
from omegaconf import MISSING, DictConfig, open_dict

from ..encoders import text_encoding
from . import text_encoders
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


PREPROCESS_HINT = "fairseq-preprocess --only-source --trainpref TEXT/train.txt --validpref " \
                  "TEXT/valid.txt --testpref TEXT/test.txt --destdir {folder}"


def load_dictionary(folder: str) -> Dictionary:
    """dict.txt of a fairseq-preprocess output folder, with errors that say how to make one."""
    path = os.path.join(folder, "dict.txt")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"srupp_stream_lm: the data folder {folder} does not exist; pass the --destdir of "
            f"fairseq-preprocess, e.g. {PREPROCESS_HINT.format(folder=folder)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"srupp_stream_lm: {folder} has no dict.txt, so it is not fairseq-preprocess output "
            f"(text must be binarized first): {PREPROCESS_HINT.format(folder=folder)}")
    try:
        dictionary = Dictionary.load(path)
    except Exception as error:  # fairseq's message does not name the file
        reason = " ".join(str(error).split())
        raise ValueError(
            f"srupp_stream_lm: cannot read {path} ({reason}); each line must be '<symbol> "
            f"<count>' as fairseq-preprocess writes it: rebuild the folder with "
            f"{PREPROCESS_HINT.format(folder=folder)}") from error
    logger.info(f"dictionary: {len(dictionary)} types")
    return dictionary


def binarize_hint(folder: str, split: str) -> str:
    """The fairseq-preprocess command that writes `split` into `folder` with its dictionary."""
    pref = {"train": "--trainpref", "valid": "--validpref", "test": "--testpref"}.get(split)
    hint = (f"fairseq-preprocess --only-source --srcdict {folder}/dict.txt "
            f"{pref or '--testpref'} TEXT/{split}.txt --destdir {folder}")
    return hint if pref else f"{hint}, then rename its test.idx/.bin to {split}.idx/.bin"


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
        task = cls(cfg, load_dictionary(paths[0]))
        record = text_encoding.read(paths[0], task.dictionary.symbols)
        if record is not None:
            if record.get("bpe_codes"):
                record["bpe_codes_path"] = os.path.abspath(os.path.join(paths[0],
                                                                        record["bpe_codes"]))
            task.state.merge_state_dict({"text_encoding": record})  # saved in checkpoints
        return task

    @property
    def text_encoding(self) -> Optional[dict]:
        """How the symbols encode text (fairseq_srupp.encoders.text_encoding): the record of
        the loaded checkpoint's task state, else the data folder's; None when unknown."""
        return self.state.state_dict.get("text_encoding")

    def build_tokenizer(self, args):
        """--tokenizer if given (checked against the model's text encoding), else the model's
        own (Moses for word-level data prepared by srupp-prepare-text)."""
        return text_encoders.build_tokenizer(self.text_encoding, args)

    def build_bpe(self, args):
        """--bpe if given (checked against the model's text encoding), else the model's own:
        the byte encoder for character models, subword-nmt with the data's codes for BPE words."""
        return text_encoders.build_bpe(self.text_encoding, args,
                                       utils.split_paths(self.cfg.data)[0])

    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        """fairseq-interactive's prompts, one per input line; an empty one is an error and
        symbols outside the dictionary are reported (they are fed as <unk>)."""
        tokens = []
        for line in lines:
            symbols = encode_fn(line).split()
            if not symbols:
                raise ValueError("an input line is empty: every line is a prompt to continue, "
                                 "give it at least one character or word")
            text_encoders.warn_unknown(
                text_encoders.unknown_symbols(symbols, self.dictionary), f"prompt {line[:40]!r}")
            tokens.append(self.dictionary.encode_line(" ".join(symbols),
                                                      add_if_not_exist=False).long())
        return tokens, [t.numel() for t in tokens]

    @property
    def source_dictionary(self) -> Dictionary:
        return self.dictionary

    @property
    def target_dictionary(self) -> Dictionary:
        return self.dictionary

    # ------------------------------------------------------------------ model
    def build_model(self, cfg, from_checkpoint: bool = False):
        """The model of `cfg` (a checkpoint's cfg.model when loading). Models whose class has no
        `reset_stream_state` cannot carry state across segments and are refused; with a carried
        state, the evaluation window is checked here, before any data is read."""
        name = getattr(cfg, "_name", None) or getattr(cfg, "arch", None)
        model_class = ARCH_MODEL_REGISTRY.get(name) or MODEL_REGISTRY.get(name)
        if model_class is not None and not hasattr(model_class, "reset_stream_state"):
            raise ValueError(
                f"srupp_stream_lm feeds each stream segment after segment and needs a model that "
                f"carries its state between them (srupp_lm and its architectures), but the model "
                f"(--arch, or the checkpoint's) is {name} ({model_class.__name__}); use "
                f"--task language_modeling for it")
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
        model = super().build_model(cfg, from_checkpoint)
        if getattr(cfg, "carry_state", False):
            model.decoder.check_window_is_served()
        return model

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
        folder = paths[(epoch - 1) % len(paths)]
        split_path = os.path.join(folder, split)
        try:
            lines = data_utils.load_indexed_dataset(split_path, self.dictionary, combine=combine)
        except Exception as error:  # e.g. struct.error from a truncated .idx
            raise ValueError(
                f"srupp_stream_lm: cannot read the binarized split {split_path}.idx/.bin "
                f"({error}); the files are damaged or not fairseq-preprocess output: binarize "
                f"the split again, {binarize_hint(folder, split)}") from error
        if lines is None:
            missing = [f"{split}{ext}" for ext in (".idx", ".bin")
                       if not os.path.exists(split_path + ext)]
            raise FileNotFoundError(
                f"srupp_stream_lm: {folder} has no binarized '{split}' split (missing: "
                f"{', '.join(missing) or 'a readable ' + split + '.idx/.bin pair'}). Binarize "
                f"it: {binarize_hint(folder, split)}; or choose another split (--valid-subset, "
                f"--gen-subset) or --disable-validation")
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
