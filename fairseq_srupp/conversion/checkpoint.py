"""convert(): read the authors' checkpoint, map it, write a fairseq checkpoint of srupp_lm."""
import os
import sys
from typing import Optional

import torch

import fairseq_srupp

from .authors import PLAIN, TXL, AuthorsModel, load_authors_state_dict, read_vocab
from .errors import ConversionError
from .mapping import build_state
from .symbols import map_symbols
from .target import DictionaryTask, build_cfg, check_architecture, parse_overrides


def convert(src: str, src_vocab: str, dict_path: str, arch: str, out: str,
            model_overrides: Optional[str] = None, task: str = "language_modeling",
            data: Optional[str] = None, eos_symbol: Optional[str] = None,
            unk_symbol: Optional[str] = None, allow_missing_symbols: bool = False,
            log=None) -> dict:
    """Convert; returns a summary dict. Raises ConversionError for bad inputs."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    plugin_dir = os.path.dirname(os.path.abspath(fairseq_srupp.__file__))
    from fairseq.data import Dictionary
    from fairseq.models import build_model
    from omegaconf import OmegaConf

    sd = load_authors_state_dict(src)
    authors = AuthorsModel(sd)
    overrides = parse_overrides(model_overrides)
    data = os.path.abspath(data if data is not None else os.path.dirname(os.path.abspath(dict_path)))
    v_authors = authors.vocab_size()
    # the adaptive layers keep the authors' ids (txl_vocab_size + token_map; see the docstring)
    txl_vocab = v_authors if authors.layout == TXL and v_authors > 0 else None
    cfg = build_cfg(arch, overrides, task, data, plugin_dir, txl_vocab_size=txl_vocab)
    check_architecture(authors, cfg.model, arch)

    vocab = read_vocab(src_vocab)
    if len(vocab) != v_authors:
        where = "embedding/output layer" if authors.layout == PLAIN else "adaptive softmax"
        raise ConversionError(f"--src-vocab {src_vocab} has {len(vocab)} symbols, but the "
                              f"checkpoint's {where} has {v_authors}; pass the vocabulary the "
                              f"model was trained with")
    try:
        dictionary = Dictionary.load(dict_path)
    except FileNotFoundError:
        raise ConversionError(f"--dict {dict_path}: file not found") from None
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"--dict {dict_path}: not a fairseq dictionary ({e})") from None
    if os.path.basename(dict_path) != "dict.txt" or not os.path.exists(os.path.join(data, "dict.txt")):
        log(f"note: fairseq loads the dictionary from DATA/dict.txt; cfg.task.data is {data}")
    layout = authors.layout
    f2a, dropped, summary = map_symbols(vocab, dictionary, layout, eos_symbol, unk_symbol,
                                        allow_missing_symbols, log)
    model = build_model(cfg.model, DictionaryTask(dictionary))
    state = build_state(authors, model, cfg.model, f2a, arch)
    del sd, authors
    model.load_state_dict(state, strict=True)
    del state
    model_state = model.state_dict()  # tied tensors appear under each of their names
    info = {
        "source": os.path.abspath(src), "arch": arch, "layout": layout,
        "authors_vocab_size": v_authors, "dictionary_size": len(dictionary),
        "symbols": summary, "dropped_authors_symbols": len(dropped),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    checkpoint = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, enum_to_str=True),
        "model": model_state,
        "criterion": None,
        "optimizer_history": [{
            "criterion_name": "TXLAdaptiveLoss" if layout == TXL else "CrossEntropyCriterion",
            "optimizer_name": "none", "lr_scheduler_state": {"best": None}, "num_updates": 0,
        }],
        "task_state": {},
        "extra_state": {"converted_from_sru": info},
        "last_optimizer_state": None,
    }
    tmp = out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log(f"wrote {out}: {info['parameters']:,} parameters, {summary}")
    return info
