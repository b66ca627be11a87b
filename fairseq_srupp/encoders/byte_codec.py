"""UTF-8 text <-> the enwik8-format symbols of character-level data (standard library only).

Every byte of the UTF-8 text is one symbol, its decimal value ("T" -> "84", "é" -> "195 169");
a newline is the dictionary's end of line "</s>", as scripts/data/text_to_chars.py writes data
(one output line per text line; fairseq-preprocess appends </s> to each). The mapping has no
torch or fairseq import, so a runtime without them encodes text the same way.

    encode_text("Hé\\n")          -> "72 195 169 </s>"
    decode_symbols("72 195 169")   -> "Hé"
    decode_symbols("72 195")       -> "H\\ufffd"  (a sample cut inside a character)
"""
from typing import Iterable, List, Tuple, Union

END_OF_LINE = "</s>"
REPLACEMENT = "\ufffd"
_SYMBOLS = [str(i) for i in range(256)]
_VALUES = {s: i for i, s in enumerate(_SYMBOLS)}


def encode_text(text: str) -> str:
    """Text -> space-separated byte symbols, each newline as END_OF_LINE."""
    symbols = []
    for i, line in enumerate(text.split("\n")):
        if i:
            symbols.append(END_OF_LINE)
        symbols.extend(map(_SYMBOLS.__getitem__, line.encode("utf-8")))
    return " ".join(symbols)


def encode_line(line: str) -> str:
    """One line (no newline) -> "84 104 101"; "" -> ""."""
    return " ".join(map(_SYMBOLS.__getitem__, line.encode("utf-8")))


def symbols_to_bytes(symbols: Union[str, Iterable[str]]) -> Tuple[bytes, List[str]]:
    """Byte symbols (a string split on whitespace, or a sequence) -> (bytes, unknown), where
    END_OF_LINE becomes b"\\n" and every other symbol that is no byte value (e.g. <unk>) becomes
    U+FFFD's bytes and is listed in `unknown`, in order."""
    if isinstance(symbols, str):
        symbols = symbols.split()
    out = bytearray()
    unknown = []
    for symbol in symbols:
        value = _VALUES.get(symbol)
        if value is not None:
            out.append(value)
        elif symbol == END_OF_LINE:
            out.append(10)
        else:
            out += REPLACEMENT.encode("utf-8")
            unknown.append(symbol)
    return bytes(out), unknown


def decode_bytes(data: bytes) -> str:
    """UTF-8 bytes -> text; invalid bytes and a character cut at the end become U+FFFD (one per
    maximal invalid sequence), so a sample cut mid-character still decodes."""
    return data.decode("utf-8", errors="replace")


def decode_symbols(symbols: Union[str, Iterable[str]]) -> str:
    """Byte symbols -> text (the inverse of encode_text); see symbols_to_bytes for unknowns."""
    return decode_bytes(symbols_to_bytes(symbols)[0])


def is_byte_symbol(symbol: str) -> bool:
    """Whether `symbol` is one of the 256 byte symbols."""
    return symbol in _VALUES
