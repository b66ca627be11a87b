"""Text <-> dictionary ids for an exported model (standard library only).

`bytes`: UTF-8 bytes as the enwik8-format decimal symbols, newline = </s> (the byte codec of
fairseq_srupp.encoders); `words`: whitespace-separated symbols, newline = </s> (text must be
tokenized as the training data was). Symbols outside the dictionary become <unk> and are listed.
"""
from typing import Dict, List, Sequence, Tuple

from fairseq_srupp.encoders.byte_codec import END_OF_LINE, decode_symbols, encode_text

ENCODERS = ("bytes", "words")


class Codec:
    def __init__(self, encoder: str, symbols: Sequence[str], special_ids: Dict[str, int]):
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r} in the manifest; one of {ENCODERS}")
        self.encoder = encoder
        self.symbols = list(symbols)
        self.ids = {s: i for i, s in enumerate(self.symbols)}
        self.eos = special_ids["eos"]
        self.unk = special_ids["unk"]

    def encode(self, text: str) -> Tuple[List[int], List[str]]:
        """text -> (ids, symbols not in the dictionary, in order; each became <unk>)."""
        if self.encoder == "bytes":
            symbols = encode_text(text).split()
        else:
            symbols = []
            for i, line in enumerate(text.split("\n")):
                if i:
                    symbols.append(END_OF_LINE)
                symbols.extend(line.split())
        unknown = [s for s in symbols if s not in self.ids]
        return [self.ids.get(s, self.unk) for s in symbols], unknown

    def decode(self, ids: Sequence[int]) -> str:
        symbols = [self.symbols[i] for i in ids]
        if self.encoder == "bytes":
            return decode_symbols(symbols)
        lines, line = [], []
        for s in symbols:
            if s == END_OF_LINE:
                lines.append(" ".join(line))
                line = []
            else:
                line.append(s)
        return "\n".join(lines + [" ".join(line)])
