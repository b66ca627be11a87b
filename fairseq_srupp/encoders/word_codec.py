"""Word-level text <-> symbols: Moses tokenization (sacremoses) and subword-nmt BPE, with the
settings fairseq's `--tokenizer moses --moses-no-escape --bpe subword_nmt` apply at inference
(aggressive dash splits, no HTML escaping, separator "@@"). Needs sacremoses and subword-nmt;
no torch or fairseq import, so a runtime without them encodes text the same way.

    codec = WordCodec("en", "data-bin/bpecodes")
    codec.encode_line("It's well-known.")   -> "It 's well @-@ kno@@ wn ."
    codec.decode_line("It 's well @-@ kno@@ wn .") -> "It's well-known."
"""
import codecs
from typing import Optional

SEPARATOR = "@@"


class WordCodec:
    """One text line <-> space-separated word (or BPE sub-word) symbols."""

    def __init__(self, lang: str = "en", bpe_codes: Optional[str] = None,
                 separator: str = SEPARATOR):
        from sacremoses import MosesDetokenizer, MosesTokenizer

        self.tokenizer = MosesTokenizer(lang)
        self.detokenizer = MosesDetokenizer(lang)
        self.separator = separator
        self.bpe = None
        if bpe_codes is not None:
            from subword_nmt.apply_bpe import BPE

            with codecs.open(bpe_codes, encoding="utf-8") as codes:
                self.bpe = BPE(codes, separator=separator)

    def tokenize(self, line: str) -> str:
        """Moses tokenization, escaping off (so detokenization gives the text back)."""
        return self.tokenizer.tokenize(line, aggressive_dash_splits=True, return_str=True,
                                       escape=False)

    def apply_bpe(self, tokens: str) -> str:
        """Tokenized text -> BPE sub-words (unchanged without codes)."""
        return self.bpe.process_line(tokens) if self.bpe is not None else tokens

    def encode_line(self, line: str) -> str:
        return self.apply_bpe(self.tokenize(line))

    def decode_line(self, symbols: str) -> str:
        if self.bpe is not None:
            symbols = (symbols + " ").replace(self.separator + " ", "").rstrip()
        return self.detokenizer.detokenize(symbols.split())


def learn_bpe_codes(tokenized_train: str, codes_path: str, num_merges: int,
                    min_frequency: int = 2) -> None:
    """Learn `num_merges` subword-nmt merges on a tokenized training file, written to
    codes_path."""
    from subword_nmt.learn_bpe import learn_bpe

    with codecs.open(tokenized_train, encoding="utf-8") as fin, \
            codecs.open(codes_path, "w", encoding="utf-8") as fout:
        learn_bpe(fin, fout, num_merges, min_frequency=min_frequency)
