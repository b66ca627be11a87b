"""How a data folder's symbols encode text: the record that binds a model to its text encoders.

A record is a small JSON-able dict:
  {"level": "bytes"}                          character data, one symbol per UTF-8 byte
  {"level": "words", "moses_lang": "en", "bpe_codes": "bpecodes", "bpe_codes_sha256": "..."}
                                              Moses-tokenized words (escaping off), BPE sub-words
                                              when bpe_codes is set (a file of the data folder)
The word preparation command writes it as DATA/text_encoding.json; character folders need no
file (their dictionary holds only byte symbols). Standard library only.
"""
import hashlib
import json
import os
from typing import Iterable, Optional

from .byte_codec import END_OF_LINE, is_byte_symbol

FILE_NAME = "text_encoding.json"
BYTES = {"level": "bytes"}
SPECIAL_SYMBOLS = ("<s>", "<pad>", END_OF_LINE, "<unk>")


def is_byte_vocabulary(symbols: Iterable[str]) -> bool:
    """Whether every symbol but fairseq's specials and padding fillers (madeupwordNNNN) is a byte
    symbol "0".."255" (and there is at least one)."""
    seen = False
    for symbol in symbols:
        if symbol in SPECIAL_SYMBOLS or symbol.startswith("madeupword"):
            continue
        if not is_byte_symbol(symbol):
            return False
        seen = True
    return seen


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def word_record(lang: str, codes_file: Optional[str], folder: str) -> dict:
    """The record of a word-level folder; codes_file is a file name inside `folder` (or None)."""
    record = {"level": "words", "moses_lang": lang, "bpe_codes": codes_file}
    if codes_file is not None:
        record["bpe_codes_sha256"] = sha256_of(os.path.join(folder, codes_file))
    return record


def write(folder: str, record: dict) -> None:
    with open(os.path.join(folder, FILE_NAME), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")


def read(folder: str, symbols: Iterable[str]) -> Optional[dict]:
    """The folder's record: its text_encoding.json, else BYTES for a byte vocabulary, else None
    (word symbols of unknown origin: text must be given already tokenized)."""
    path = os.path.join(folder, FILE_NAME)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("level") not in ("bytes", "words"):
            raise ValueError(f"{path}: 'level' must be 'bytes' or 'words', got "
                             f"{record.get('level')!r}")
        return record
    return dict(BYTES) if is_byte_vocabulary(symbols) else None
