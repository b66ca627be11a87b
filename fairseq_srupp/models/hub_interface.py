"""Raw text in, raw text out: fairseq's GeneratorHubInterface for SRU++ language models.

    lm = SRUppLanguageModel.from_pretrained("checkpoints", "checkpoint_best.pt", "../data-bin")
    lm.sample("The Lord is ", sampling=True, sampling_topk=10, max_len_a=1, max_len_b=100)
    result = lm.score("A long text ...\\nmore lines\\n")
    bits_per_token = -result["positional_scores"].mean() / math.log(2)

The text encoders are the model's own (the byte encoder for character models, Moses +
subword-nmt for word models prepared by srupp-prepare-text; see the task's build_bpe), unless
from_pretrained is given tokenizer= / bpe= (checked against the model).
"""
import copy
import logging
import warnings
from contextlib import contextmanager
from typing import Dict, List, Optional, Union

import torch
from fairseq.hub_utils import GeneratorHubInterface
from fairseq.sequence_scorer import SequenceScorer
from omegaconf import open_dict
from torch import Tensor

from ..tasks.srupp_stream_lm import reset_stream_state
from ..tasks.text_encoders import unknown_symbols, warn_unknown


@contextmanager
def quiet_fairseq():
    """fairseq's and this package's INFO messages (and DataLoader's pin_memory warning) held
    back: importing fairseq sets the root logger to DEBUG (its text_to_speech task calls
    logging.basicConfig), so loading and sampling would otherwise print dozens of lines."""
    loggers = [logging.getLogger(name) for name in ("fairseq", "fairseq_srupp")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class SRUppHubInterface(GeneratorHubInterface):
    """score() carries the recurrent state and attention memory segment by segment through each
    text (the paper's evaluation protocol, equal to fairseq-eval-lm with srupp_stream_lm);
    sample() continues one-line prompts with fairseq's SequenceGenerator."""

    def __init__(self, cfg, task, models):
        without_encoders = copy.deepcopy(cfg)
        with open_dict(without_encoders):
            without_encoders.tokenizer = without_encoders.bpe = None
        super().__init__(without_encoders, task, models)
        self.cfg = cfg
        self.tokenizer = task.build_tokenizer(cfg.tokenizer)
        self.bpe = task.build_bpe(cfg.bpe)

    # ---------------------------------------------------------------- text <-> tokens
    def encode(self, sentence: str) -> torch.LongTensor:
        """Text -> tokens (N,): each line's symbols then </s>; a final newline ends the last
        line (it is not an extra empty line). Symbols outside the dictionary become <unk> and
        are reported."""
        if not isinstance(sentence, str):
            raise TypeError(f"expected text (str), got {type(sentence).__name__}")
        if not sentence:
            raise ValueError("the text is empty: give at least one character")
        lines = sentence.split("\n")
        if sentence.endswith("\n"):
            lines.pop()
        pieces, unknown = [], []
        for line in lines:
            symbols = self.apply_bpe(self.tokenize(line)).split()
            unknown += unknown_symbols(symbols, self.src_dict)
            pieces.append(self.binarize(" ".join(symbols)))
        warn_unknown(unknown, "the text")
        return torch.cat(pieces)

    def decode(self, tokens: torch.LongTensor) -> str:
        """Tokens -> text, each </s> a newline (a final </s> ends the text without one)."""
        tokens = tokens.tolist() if torch.is_tensor(tokens) else list(tokens)
        eos = self.tgt_dict.eos()
        if tokens and tokens[-1] == eos:
            tokens.pop()
        lines, line = [], []
        for token in tokens + [eos]:
            if token == eos:
                text = self.remove_bpe(self.tgt_dict.string(torch.tensor(line, dtype=torch.long)))
                lines.append(self.detokenize(text))
                line = []
            else:
                line.append(token)
        return "\n".join(lines)

    # ---------------------------------------------------------------- sampling
    def sample(self, sentences: Union[str, List[str]], beam: int = 1, verbose: bool = False,
               **kwargs) -> Union[str, List[str]]:
        """Continue each one-line prompt; returns prompt + continuation as text. Generation
        options as keyword arguments (fairseq's names): sampling=True, sampling_topk=K,
        sampling_topp=P, temperature=T, beam=N, max_len_a / max_len_b (length limit a * (prompt
        length + 1) + b tokens, prompt included), min_len, seed via torch.manual_seed."""
        for prompt in [sentences] if isinstance(sentences, str) else sentences:
            if isinstance(prompt, str) and "\n" in prompt:
                raise ValueError("a prompt is one line: the model's end of line </s> ends the "
                                 "generation; pass the text without newlines")
        with quiet_fairseq():
            return super().sample(sentences, beam, verbose, **kwargs)

    # ---------------------------------------------------------------- scoring
    def score(self, sentences: Union[str, List[str]], tokens_per_sample: Optional[int] = None,
              batch_size: int = 8) -> Union[Dict[str, Tensor], List[Dict[str, Tensor]]]:
        """Log-probabilities of every token of each text, the state carried from segment to
        segment of `tokens_per_sample` tokens (default: the task's --tokens-per-sample), the
        first token predicted from </s> as in fairseq-eval-lm. Texts are scored as independent
        rows, `batch_size` at a time. Each result: tokens (N,), positional_scores (N,) natural
        log-probabilities, score (their mean); bits per token = -score / ln 2, perplexity =
        exp(-score)."""
        if isinstance(sentences, str):
            return self.score([sentences], tokens_per_sample, batch_size)[0]
        segment_len = tokens_per_sample or self.task.cfg.tokens_per_sample
        if segment_len < 1 or batch_size < 1:
            raise ValueError(f"tokens_per_sample and batch_size must be >= 1, got "
                             f"{segment_len} and {batch_size}")
        encoded = [self.encode(text) for text in sentences]
        results = []
        for first in range(0, len(encoded), batch_size):
            rows = encoded[first:first + batch_size]
            for tokens, scores in zip(rows, self._score_rows(rows, segment_len)):
                results.append({"tokens": tokens, "positional_scores": scores,
                                "score": scores.mean()})
        return results

    @torch.no_grad()
    def _score_rows(self, rows: List[Tensor], segment_len: int) -> List[Tensor]:
        """Positional log-probabilities of each row (one text's tokens), batched as streams."""
        pad, eos = self.tgt_dict.pad(), self.tgt_dict.eos()
        length = max(len(r) for r in rows)
        src = torch.full((len(rows), length), pad, dtype=torch.long)
        tgt = src.clone()
        for i, tokens in enumerate(rows):
            src[i, 0] = eos
            src[i, 1:len(tokens)] = tokens[:-1]
            tgt[i, :len(tokens)] = tokens
        src, tgt = src.to(self.device), tgt.to(self.device)
        scorer = SequenceScorer(self.tgt_dict)
        for model in self.models:
            reset_stream_state(model, "eval")
        pieces = [[] for _ in rows]
        for index, start in enumerate(range(0, length, segment_len)):
            segment = src[:, start:start + segment_len]
            sample = {"net_input": {"src_tokens": segment, "src_lengths": segment.ne(pad).sum(1),
                                    "segment_index": index},
                      "target": tgt[:, start:start + segment_len]}
            for i, hypos in enumerate(scorer.generate(self.models, sample)):
                pieces[i].append(hypos[0]["positional_scores"].float().cpu())
        for model in self.models:
            reset_stream_state(model, "eval")
        return [torch.cat(p) for p in pieces]
