"""The text encoders of an `srupp_stream_lm` task: built from the record of the model's text
encoding (fairseq_srupp.encoders.text_encoding, kept in the checkpoint's task state) when the
command line names none, and checked against it when it does."""
import copy
import logging
import os
from contextlib import nullcontext
from typing import List, Optional

from fairseq.data import Dictionary, encoders
from omegaconf import OmegaConf, open_dict

from ..encoders.text_encoding import sha256_of

logger = logging.getLogger(__name__)

WORD_FLAGS = "--tokenizer moses --moses-no-escape --bpe subword_nmt --bpe-codes DATA/bpecodes"


def _choice(args, kind: str) -> Optional[str]:
    """The registry name in a tokenizer/bpe config (DictConfig with _name, Namespace or None)."""
    if args is None:
        return None
    name = getattr(args, "_name", None)
    return name if name is not None else getattr(args, kind, None)


def _describe(record: Optional[dict]) -> str:
    if record is None:
        return "word symbols of unknown origin (no text_encoding.json)"
    if record["level"] == "bytes":
        return "character-level (byte symbols)"
    return "word-level" + (" with subword-nmt BPE" if record.get("bpe_codes") else "")


def build_tokenizer(record: Optional[dict], args):
    """fairseq's tokenizer for this model: args (--tokenizer) if given, checked against the
    record, else the recorded Moses tokenizer (word level) or none."""
    name = _choice(args, "tokenizer")
    level = record["level"] if record else None
    if name is None:
        if level != "words":
            return None
        return encoders.build_tokenizer(OmegaConf.create({
            "_name": "moses", "source_lang": record["moses_lang"],
            "target_lang": record["moses_lang"], "moses_no_escape": True}))
    if level == "bytes":
        raise ValueError(
            f"--tokenizer {name} was given, but the model is character-level (byte symbols): "
            f"its text needs no tokenizer; drop --tokenizer (the byte encoder is used by itself)")
    if name == "moses" and level == "words":
        if not getattr(args, "moses_no_escape", False):
            logger.warning("--tokenizer moses: the model was trained on text tokenized without "
                           "Moses escaping, so escaping is turned off (--moses-no-escape)")
            args = copy.deepcopy(args)
            with open_dict(args) if OmegaConf.is_config(args) else nullcontext():
                args.moses_no_escape = True
        lang = getattr(args, "source_lang", record["moses_lang"])
        if lang != record["moses_lang"]:
            logger.warning(f"--source-lang {lang}: the training text was tokenized with the "
                           f"Moses rules of '{record['moses_lang']}'")
    return encoders.build_tokenizer(args)


def _resolve_codes(record: dict, folder: str, given: Optional[str]) -> str:
    """The BPE codes file: `given` (--bpe-codes), else the data folder's, else the path recorded
    at training; checked against the checksum recorded at training."""
    candidates = [given] if given else [os.path.join(folder, record["bpe_codes"]),
                                        record.get("bpe_codes_path")]
    path = next((p for p in candidates if p and os.path.isfile(p)), None)
    if path is None:
        tried = ", ".join(p for p in candidates if p)
        raise FileNotFoundError(
            f"the BPE codes of this word-level model were not found (tried {tried}); pass the "
            f"codes file the data was prepared with: --bpe-codes DATA/{record['bpe_codes']}")
    expected = record.get("bpe_codes_sha256")
    if expected and sha256_of(path) != expected:
        raise ValueError(
            f"the BPE codes {path} are not the ones the model's data was prepared with "
            f"(sha256 differs from the training record); pass the codes file written beside "
            f"that data by srupp-prepare-text: --bpe-codes DATA/{record['bpe_codes']}")
    return path


def build_bpe(record: Optional[dict], args, folder: str):
    """fairseq's BPE for this model: args (--bpe) if given, checked against the record, else the
    recorded one (the byte encoder for character models, subword-nmt for BPE word models)."""
    name = _choice(args, "bpe")
    level = record["level"] if record else None
    if name is None:
        if level == "bytes":
            return encoders.build_bpe(OmegaConf.create({"_name": "srupp_bytes"}))
        if level == "words" and record.get("bpe_codes"):
            return encoders.build_bpe(OmegaConf.create({
                "_name": "subword_nmt", "bpe_codes": _resolve_codes(record, folder, None)}))
        return None
    if name == "srupp_bytes" and level != "bytes":
        raise ValueError(
            f"--bpe srupp_bytes was given, but the model's dictionary is {_describe(record)}, "
            f"not byte symbols: drop --bpe srupp_bytes"
            + (f" (its own encoders are used by default, or pass {WORD_FLAGS})"
               if level == "words" else ""))
    if name != "srupp_bytes" and level == "bytes":
        raise ValueError(
            f"--bpe {name} was given, but the model is character-level (byte symbols): drop "
            f"--bpe (or pass --bpe srupp_bytes), and --tokenizer")
    if name == "subword_nmt":
        given = getattr(args, "bpe_codes", None)
        if given in (None, "???"):
            raise ValueError("--bpe subword_nmt needs --bpe-codes: the codes file written beside "
                             "the data (DATA/bpecodes)")
        if level == "words" and record.get("bpe_codes"):
            _resolve_codes(record, folder, given)
        elif not os.path.isfile(given):
            raise FileNotFoundError(f"--bpe-codes {given}: no such file")
    return encoders.build_bpe(args)


def unknown_symbols(symbols: List[str], dictionary: Dictionary) -> List[str]:
    """The symbols that the dictionary maps to <unk>."""
    unk = dictionary.unk()
    return [s for s in symbols if dictionary.index(s) == unk]


def warn_unknown(unknown: List[str], where: str) -> None:
    """Report symbols fed to the model as <unk> (never dropped)."""
    if unknown:
        examples = ", ".join(repr(s) for s in sorted(set(unknown))[:5])
        logger.warning(f"{where}: {len(unknown)} symbol(s) are not in the dictionary and are fed "
                       f"to the model as <unk> ({examples})")
