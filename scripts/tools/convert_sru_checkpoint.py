#!/usr/bin/env python3
"""Convert an SRU++ language-model checkpoint of the authors (asappresearch/sru,
experiments/srupp_experiments: enwik8, WikiText-103, Billion Word) into a fairseq checkpoint of
the `srupp_lm` model of fairseq_srupp.

    python scripts/tools/convert_sru_checkpoint.py --src wt103_large.pt --src-vocab wt103_vocab.txt \\
        --dict data-bin/wikitext-103/dict.txt --arch srupp_lm_wiki103_large_txl --out srupp.pt
    fairseq-eval-lm data-bin/wikitext-103 --path srupp.pt --user-dir fairseq_srupp ...

Architectures: enwik8 -> srupp_lm_enwik8_base / srupp_lm_enwik8_large (plain embedding and output
layer); WikiText-103 -> srupp_lm_wiki103_{base,large,large_k5}_txl; Billion Word ->
srupp_lm_lm1b_{base,large}_txl (Transformer-XL style adaptive input/softmax). Other sizes:
--model-overrides '{"hidden_dim": 16, ...}' (any srupp_lm option; applied after the arch).

--src: the authors' state_dict (torch.load(weights_only=True)), or a dict holding it under
'model' or 'state_dict'; a 'module.' prefix on every key is removed.
--src-vocab: the authors' symbols in id order, one per line ("symbol" or "symbol count"; the
first field is used). For enwik8 the symbols are the byte values as decimal strings in
increasing order (np.unique over the file), e.g. "9", "10", "32", ...
--dict: the fairseq dictionary (dict.txt; fairseq adds <s>, <pad>, </s>, <unk> as ids 0-3).

What is mapped (SPEC.md 1.10):
  rnn.rnn_lst.{i}.weight_c / bias          -> decoder.layers.{i}.weight_c / bias (same layout)
  rnn.rnn_lst.{i}.scale_x                  dropped (must be 1.0: rescale=False)
  ...transform_module.{alpha, linear1, linear2, layer_norm}  -> decoder.layers.{i}.transform.*
  ...transform_module.linear3 (attention) / linear2 (projected): the authors' U rows are
      interleaved per unit (j*3 + m); ours are planes (m*d + j): new[m*d + j] = old[j*3 + m]
  rnn.rnn_lst.{i}.layer_norm.*             -> decoder.layers.{i}.layer_norm.* (cell LN, if used)
  enwik8: embedding_layer.weight, output_layer.{weight,bias}
      -> decoder.embed_tokens.weight, decoder.output_projection.{weight,bias}, rows reordered
  TXL: output_layer.out_layers.{c}.{weight,bias} -> decoder.txl_softmax.out_layers.{c}.* and the
      tied tables decoder.embed_tokens.emb_layers.{c}; output_layer.out_projs.{c} ->
      decoder.txl_softmax.out_projs.{c} (and decoder.embed_tokens.emb_projs.{c} when tied);
      embedding_layer.emb_projs.{c}: with tied projections (WikiText-103) a duplicate that must
      equal out_projs.{c} and is dropped; untied (Billion Word) -> decoder.embed_tokens.emb_projs.

Symbols. Authors' and fairseq symbols are matched by name, except: fairseq's end-of-line </s> is
the authors' --eos-symbol (default: "10", the newline byte, for enwik8; else the first of
<eos>, <S>, </s> in --src-vocab) and fairseq's <unk> is the authors' --unk-symbol (default:
<unk> or <UNK> if present).
  * Fairseq symbols without an authors' symbol (<s>, <pad>, madeupword*, <unk> if unmatched) are
    embedded as zeros and get a log-probability of about -1e4: enwik8 output rows get weight 0
    and bias -1e4 (exp underflows to exactly 0, so the other symbols' log-probs are unchanged);
    the TXL layers return UNMAPPED_LOG_PROB (-1e4) for them.
  * Authors' symbols missing from --dict: when exactly one is missing and fairseq's <unk> has
    no authors' symbol, it becomes <unk> (this is what fairseq-preprocess turned it into, e.g.
    an enwik8 byte that is not in train). Otherwise, with the TXL layout they keep their rows
    but no dictionary id reaches them: every other symbol keeps its exact log-probability and
    their mass is unreachable (a warning; e.g. </S> of Billion Word, whose vocab-to-dict
    dictionary drops it). With the enwik8 layout this is an error unless
    --allow-missing-symbols, which drops their rows (the softmax then renormalises).
The TXL rows are not reordered: a cluster holds fixed authors' ids, and a dictionary sorted by
fairseq (count, then alphabetically) does not keep every cluster contiguous. Instead the
converted model keeps the authors' ids (txl_vocab_size = the authors' vocabulary size) and a
token_map buffer from dictionary ids to them.

The output is a fairseq checkpoint whose cfg comes from fairseq's own option parser (--arch,
--task, --user-dir), so fairseq-eval-lm, fairseq-interactive and the hub API load it with
--user-dir pointing at fairseq_srupp. cfg.task.data is --data (default: the folder of --dict).
Errors (exit status 1) name the option to fix: unknown/missing/misshapen keys, an --arch whose
sizes differ from the checkpoint, a --src-vocab of the wrong size.
"""
import argparse
import ast
import json
import os
import re
import sys
import warnings
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNMAPPED_LOGIT = -1.0e4
PLAIN, TXL = "enwik8 (plain embedding / output layer)", "Transformer-XL adaptive"

_LAYER_KEY = re.compile(
    r"rnn\.rnn_lst\.(\d+)\.(weight_c|bias|scale_x|layer_norm\.(?:weight|bias)|"
    r"transform_module\.(?:alpha|linear[123]\.weight|layer_norm\.(?:weight|bias)))$")
_TXL_KEY = re.compile(
    r"(output_layer\.out_layers\.(\d+)\.(?:weight|bias)|output_layer\.out_projs\.(\d+)|"
    r"embedding_layer\.emb_projs\.(\d+))$")
_PLAIN_KEYS = ("embedding_layer.weight", "output_layer.weight", "output_layer.bias")


class ConversionError(ValueError):
    """A problem with the user's inputs; the message names the option to fix."""


def _import_plugin():
    try:
        import fairseq_srupp  # noqa: F401
    except ImportError:
        sys.path.insert(0, REPO_ROOT)
        import fairseq_srupp  # noqa: F401
    return os.path.dirname(os.path.abspath(fairseq_srupp.__file__))


def _listing(items, limit: int = 20) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# ------------------------------------------------------------------------------ authors' side
def load_authors_state_dict(path: str) -> "OrderedDict[str, torch.Tensor]":
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConversionError(f"--src {path}: file not found") from None
    except Exception as e:  # noqa: BLE001  (pickle errors of many kinds)
        raise ConversionError(f"--src {path}: cannot be read with torch.load(weights_only=True): "
                              f"{type(e).__name__}: {e}") from None
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict) and not isinstance(obj.get(wrapper), torch.Tensor):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"--src {path}: expected a state_dict (a dict of tensors), got "
                              f"{type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"--src {path}: entries that are not tensors: {_listing(bad)}")
    if all(k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return OrderedDict(obj)


class AuthorsModel:
    """What the authors' state_dict holds, read without assuming an architecture."""

    def __init__(self, sd: Dict[str, torch.Tensor]):
        self.sd = sd
        self.layers: Dict[int, Dict[str, torch.Tensor]] = {}
        self.out_layers: Dict[int, Dict[str, torch.Tensor]] = {}
        self.out_projs: Dict[int, torch.Tensor] = {}
        self.emb_projs: Dict[int, torch.Tensor] = {}
        unknown = []
        for key, value in sd.items():
            m = _LAYER_KEY.match(key)
            if m:
                self.layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
                continue
            m = _TXL_KEY.match(key)
            if m:
                if m.group(2) is not None:
                    self.out_layers.setdefault(int(m.group(2)), {})[key.rsplit(".", 1)[1]] = value
                elif m.group(3) is not None:
                    self.out_projs[int(m.group(3))] = value
                else:
                    self.emb_projs[int(m.group(4))] = value
                continue
            if key in _PLAIN_KEYS:
                continue
            unknown.append(key)
        if unknown:
            raise ConversionError(
                f"--src has keys that no SRU++ language model of the authors has: "
                f"{_listing(unknown)} (expected rnn.rnn_lst.*, embedding_layer.*, output_layer.*)")
        txl = bool(self.out_layers or self.out_projs or self.emb_projs)
        plain = any(k in sd for k in _PLAIN_KEYS)
        if txl and plain:
            raise ConversionError("--src mixes the enwik8 keys (embedding_layer.weight, "
                                  "output_layer.weight) with adaptive-softmax keys "
                                  "(output_layer.out_layers.*); it is not one of the authors' LMs")
        self.layout = TXL if txl else PLAIN

    # sizes read from whatever keys are present (missing keys are reported later)
    def num_layers(self) -> int:
        return max(self.layers) + 1 if self.layers else 0

    def _first(self, name: str, dim: int) -> Optional[int]:
        for i in sorted(self.layers):
            t = self.layers[i].get(name)
            if t is not None and t.dim() > dim:
                return t.shape[dim]
        return None

    def hidden_dim(self) -> Optional[int]:
        two_d = self._first("weight_c", 0) or self._first("bias", 0)
        return None if two_d is None else two_d // 2

    def proj_dim(self) -> Optional[int]:
        return self._first("transform_module.linear1.weight", 0)

    def has_attention(self, i: int) -> bool:
        keys = self.layers.get(i, {})
        return "transform_module.alpha" in keys or "transform_module.linear3.weight" in keys

    def txl_sizes(self) -> Tuple[List[int], List[int]]:
        """(rows, widths) of out_layers.{c}.weight (from the bias when the weight is missing)."""
        rows, widths = [], []
        for c in range(max(self.out_layers) + 1 if self.out_layers else 0):
            entry = self.out_layers.get(c, {})
            w, b = entry.get("weight"), entry.get("bias")
            rows.append(w.shape[0] if w is not None else (b.shape[0] if b is not None else -1))
            proj = self.out_projs.get(c, self.emb_projs.get(c))
            widths.append(w.shape[1] if w is not None and w.dim() == 2 else
                          (proj.shape[1] if proj is not None and proj.dim() == 2 else -1))
        return rows, widths

    def vocab_size(self) -> int:
        if self.layout == PLAIN:
            for key in _PLAIN_KEYS:
                if key in self.sd:
                    return self.sd[key].shape[0]
            return -1
        rows, _ = self.txl_sizes()
        return sum(rows) - (len(rows) - 1)


# ------------------------------------------------------------------------------ fairseq side
def _parse_overrides(text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConversionError(f"--model-overrides must be a JSON (or Python) dict, got "
                                  f"{text!r}") from None
    if not isinstance(value, dict):
        raise ConversionError(f"--model-overrides must be a dict, got {text!r}")
    return value


def build_cfg(arch: str, overrides: dict, task: str, data: str, plugin_dir: str,
              txl_vocab_size: Optional[int] = None):
    """The full fairseq config of --arch (+ overrides), made by fairseq's option parser."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models import ARCH_MODEL_REGISTRY

    from fairseq_srupp.models.config import SRUppLMConfig
    from fairseq_srupp.models.srupp_lm import SRUppLanguageModel

    if ARCH_MODEL_REGISTRY.get(arch) is not SRUppLanguageModel:
        known = sorted(a for a, m in ARCH_MODEL_REGISTRY.items() if m is SRUppLanguageModel)
        raise ConversionError(f"--arch {arch!r} is not an srupp_lm architecture; one of "
                              f"{', '.join(known)}")
    fields = set(SRUppLMConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConversionError(f"--model-overrides: unknown srupp_lm options {unknown}")
    parser = options.get_training_parser()
    argv = [data, "--task", task, "--arch", arch, "--user-dir", plugin_dir]
    try:
        args = options.parse_args_and_arch(parser, argv)
    except SystemExit:
        raise ConversionError(f"fairseq could not parse --arch {arch} --task {task} (see the "
                              f"message above)") from None
    for name, value in overrides.items():
        setattr(args, name, value)
    if txl_vocab_size is not None:
        args.txl_vocab_size = txl_vocab_size
    args.criterion = "txl_adaptive_loss" if getattr(args, "txl_adaptive", False) else "cross_entropy"
    return convert_namespace_to_omegaconf(args)


class _DictionaryTask:
    """The part of a fairseq task that build_model reads."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


# ------------------------------------------------------------------------------ checks
def check_architecture(authors: AuthorsModel, mcfg, arch: str) -> None:
    """Sizes of the checkpoint vs the architecture; errors name --arch."""
    from fairseq_srupp.models.config import attention_layers, parse_cutoffs

    def fail(what: str) -> None:
        raise ConversionError(f"--arch {arch} does not match --src: {what}. Pick the matching "
                              f"architecture or fix it with --model-overrides")

    txl = bool(getattr(mcfg, "txl_adaptive", False))
    if authors.layout == TXL and not txl:
        fail("the checkpoint has the Transformer-XL adaptive input/softmax (WikiText-103 / "
             "Billion Word), the architecture does not; use an srupp_lm_*_txl architecture")
    if authors.layout == PLAIN and (txl or mcfg.adaptive_input or mcfg.adaptive_softmax_cutoff):
        fail("the checkpoint has a plain embedding and output layer (enwik8), the architecture an "
             "adaptive one; use srupp_lm_enwik8_base / srupp_lm_enwik8_large")
    if authors.layout == PLAIN and mcfg.share_input_output_embed:
        fail("the authors' enwik8 embedding and output layer are not tied; drop "
             "share_input_output_embed")
    n = authors.num_layers()
    if n != mcfg.num_layers:
        fail(f"the checkpoint has {n} SRU++ layers, the architecture num_layers={mcfg.num_layers}")
    d = authors.hidden_dim()
    if d is not None and d != mcfg.hidden_dim:
        fail(f"the checkpoint has hidden size d={d}, the architecture hidden_dim={mcfg.hidden_dim}")
    p = authors.proj_dim()
    if p is not None and p != mcfg.proj_dim:
        fail(f"the checkpoint has projection size d'={p}, the architecture proj_dim={mcfg.proj_dim}")
    flags = attention_layers(mcfg.num_layers, mcfg.attention_every, mcfg.attention_last)
    theirs = [authors.has_attention(i) for i in range(n)]
    if theirs != flags:
        def where(fl):
            return [i + 1 for i, f in enumerate(fl) if f]
        fail(f"attention layers (1-based) differ: checkpoint {where(theirs)}, architecture "
             f"{where(flags)} (attention_every / attention_last)")
    cell_ln = any(k.startswith("layer_norm.") for layer in authors.layers.values() for k in layer)
    if cell_ln != (mcfg.cell_layer_norm != "none"):
        fail(f"the checkpoint {'has' if cell_ln else 'has no'} cell-level layer norm "
             f"(rnn.rnn_lst.*.layer_norm), the architecture cell_layer_norm={mcfg.cell_layer_norm}")
    attn_ln = any(k.startswith("transform_module.layer_norm.") for layer in authors.layers.values()
                  for k in layer)
    if authors.layers and attn_ln == bool(mcfg.no_attn_layer_norm):
        fail(f"the checkpoint {'has' if attn_ln else 'has no'} transform layer norm, the "
             f"architecture no_attn_layer_norm={mcfg.no_attn_layer_norm}")
    if authors.layout != TXL:
        return
    rows, widths = authors.txl_sizes()
    ours_cut = parse_cutoffs(mcfg.txl_cutoffs, "txl-cutoffs", 1 << 62) or []
    n_clusters = len(rows) - 1
    if n_clusters != len(ours_cut):
        fail(f"the checkpoint's adaptive softmax has {n_clusters} tail clusters, the architecture "
             f"txl_cutoffs={mcfg.txl_cutoffs!r} gives {len(ours_cut)}")
    theirs_cut, edge = [], rows[0] - n_clusters
    for r in rows[1:]:
        theirs_cut.append(edge)
        edge += r
    if theirs_cut != ours_cut:
        fail(f"the checkpoint's cutoffs are {','.join(map(str, theirs_cut))} (from the sizes of "
             f"output_layer.out_layers.*), the architecture txl_cutoffs={mcfg.txl_cutoffs!r}")
    dims = [mcfg.txl_embed_dim // mcfg.txl_div_val ** c for c in range(n_clusters + 1)]
    if [w for w in widths if w >= 0] != [w for w, x in zip(dims, widths) if x >= 0]:
        fail(f"the checkpoint's cluster widths are {widths}, the architecture's (txl_embed_dim="
             f"{mcfg.txl_embed_dim}, txl_div_val={mcfg.txl_div_val}) {dims}")
    for c, proj in authors.out_projs.items():
        if proj.dim() == 2 and proj.shape[0] != mcfg.hidden_dim:
            fail(f"output_layer.out_projs.{c} projects from {proj.shape[0]}, the architecture "
                 f"hidden_dim={mcfg.hidden_dim}")
    if mcfg.txl_tie_proj:
        for c, emb in authors.emb_projs.items():
            out = authors.out_projs.get(c)
            if out is not None and (emb.shape != out.shape or not torch.equal(emb, out)):
                fail(f"embedding_layer.emb_projs.{c} differs from output_layer.out_projs.{c}: the "
                     f"checkpoint has untied projections (the Billion Word layout), the "
                     f"architecture txl_tie_proj=True")


def read_vocab(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise ConversionError(f"--src-vocab {path}: file not found") from None
    except UnicodeDecodeError as e:
        raise ConversionError(f"--src-vocab {path}: not UTF-8 ({e})") from None
    if lines and lines[-1] == "":
        lines.pop()
    symbols = []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            raise ConversionError(f"--src-vocab {path}:{n}: empty line; one symbol per line")
        symbols.append(fields[0])
    dups = sorted(s for s, n in Counter(symbols).items() if n > 1)
    if dups:
        raise ConversionError(f"--src-vocab {path}: duplicate symbols {_listing(dups)}")
    return symbols


# ------------------------------------------------------------------------------ symbols
def map_symbols(vocab: List[str], dictionary, layout: str, eos_symbol: Optional[str],
                unk_symbol: Optional[str], allow_missing: bool,
                log) -> Tuple[List[int], List[str], str]:
    """Authors' id of every dictionary id (-1: none). Returns (f2a, dropped authors' symbols,
    a short summary)."""
    index = {s: i for i, s in enumerate(vocab)}
    if eos_symbol is None:
        candidates = ("10",) if layout == PLAIN else ("<eos>", "<S>", "</s>")
        eos_symbol = next((s for s in candidates if s in index), None)
        if eos_symbol is None:
            raise ConversionError(f"--src-vocab has none of {candidates} for fairseq's end-of-line "
                                  f"</s>; name it with --eos-symbol")
    elif eos_symbol not in index:
        raise ConversionError(f"--eos-symbol {eos_symbol!r} is not in --src-vocab")
    if unk_symbol is None:
        unk_symbol = next((s for s in ("<unk>", "<UNK>") if s in index), None)
    elif unk_symbol not in index:
        raise ConversionError(f"--unk-symbol {unk_symbol!r} is not in --src-vocab")
    specials = {dictionary.eos(): eos_symbol, dictionary.unk(): unk_symbol}
    role_of = {eos_symbol: dictionary.eos(), unk_symbol: dictionary.unk()}
    f2a = []
    for f in range(len(dictionary)):
        sym = specials[f] if f in specials else dictionary[f]
        a = index.get(sym) if sym is not None else None
        if a is not None and f not in specials and sym in role_of:
            raise ConversionError(
                f"--dict has the symbol {sym!r} (id {f}) that --src-vocab uses for fairseq's "
                f"{dictionary[role_of[sym]]}; pick another --eos-symbol / --unk-symbol")
        f2a.append(-1 if a is None else a)
    used = set(a for a in f2a if a >= 0)
    missing = [a for a in range(len(vocab)) if a not in used]
    unk = dictionary.unk()
    if len(missing) == 1 and f2a[unk] < 0:
        log(f"note: {vocab[missing[0]]!r} of --src-vocab is not in --dict; it becomes fairseq's "
            f"<unk> (as fairseq-preprocess made it)")
        f2a[unk] = missing.pop()
    dropped = [vocab[a] for a in missing]
    if dropped:
        what = f"{len(dropped)} symbols of --src-vocab are not in --dict: {_listing(dropped)}"
        if layout == PLAIN and not allow_missing:
            raise ConversionError(
                f"{what}. Their output rows have no dictionary id; dropping them renormalises the "
                f"softmax over the others. Use a dictionary that has them, or pass "
                f"--allow-missing-symbols to drop them")
        if layout == PLAIN:
            log(f"warning: {what}; their rows are dropped (the softmax renormalises)")
        else:
            log(f"warning: {what}; no dictionary id reaches them (the other symbols keep their "
                f"exact log-probabilities, the model's mass on these is unreachable)")
    unmapped = [dictionary[f] for f in range(len(dictionary)) if f2a[f] < 0]
    unk_is = vocab[f2a[unk]] if f2a[unk] >= 0 else None
    summary = (f"eos </s> = {eos_symbol!r}, unk <unk> = {unk_is!r}; "
               f"{len(unmapped)} dictionary symbols without an authors' symbol "
               f"({_listing(unmapped, 8)}); {len(dropped)} authors' symbols not in the dictionary")
    return f2a, dropped, summary


# ------------------------------------------------------------------------------ mapping
def _planes(w: torch.Tensor, d: int) -> torch.Tensor:
    """Authors' interleaved U rows (j*3 + m) -> our planes (m*d + j)."""
    return w.reshape(d, 3, w.shape[1]).transpose(0, 1).reshape(3 * d, w.shape[1])


def build_state(authors: AuthorsModel, model, mcfg, f2a: List[int], arch: str):
    """Our state_dict filled from the authors' tensors; errors list missing/misshapen keys."""
    ours = model.state_dict()
    d = mcfg.hidden_dim
    plan: Dict[str, Tuple[str, object]] = {}  # our key -> (authors' key, transform)
    expected_src = set()
    for i in range(mcfg.num_layers):
        src, dst = f"rnn.rnn_lst.{i}.", f"decoder.layers.{i}."
        if src + "scale_x" in authors.sd:  # a buffer, checked below and dropped
            expected_src.add(src + "scale_x")
        for name in ("weight_c", "bias"):
            plan[dst + name] = (src + name, None)
        if mcfg.cell_layer_norm != "none":
            for name in ("layer_norm.weight", "layer_norm.bias"):
                plan[dst + name] = (src + name, None)
        for key in ours:
            if key.startswith(dst + "transform."):
                name = key[len(dst + "transform."):]
                out_proj = name == ("linear3.weight" if authors.has_attention(i) else "linear2.weight")
                plan[key] = (src + "transform_module." + name, "planes" if out_proj else None)
    if authors.layout == PLAIN:
        plan["decoder.embed_tokens.weight"] = ("embedding_layer.weight", "rows0")
        plan["decoder.output_projection.weight"] = ("output_layer.weight", "rows0")
        plan["decoder.output_projection.bias"] = ("output_layer.bias", "rows_bias")
    else:
        for c in range(len(model.decoder.txl_softmax.out_layers)):
            table = f"output_layer.out_layers.{c}.weight"
            plan[f"decoder.txl_softmax.out_layers.{c}.weight"] = (table, None)
            plan[f"decoder.embed_tokens.emb_layers.{c}"] = (table, None)
            plan[f"decoder.txl_softmax.out_layers.{c}.bias"] = (
                f"output_layer.out_layers.{c}.bias", None)
            plan[f"decoder.txl_softmax.out_projs.{c}"] = (f"output_layer.out_projs.{c}", None)
            if mcfg.txl_tie_proj:
                plan[f"decoder.embed_tokens.emb_projs.{c}"] = (f"output_layer.out_projs.{c}", None)
                if f"embedding_layer.emb_projs.{c}" in authors.sd:
                    expected_src.add(f"embedding_layer.emb_projs.{c}")  # the duplicate, dropped
            else:
                plan[f"decoder.embed_tokens.emb_projs.{c}"] = (f"embedding_layer.emb_projs.{c}", None)
        plan["decoder.embed_tokens.token_map"] = (None, "token_map")
        plan["decoder.txl_softmax.token_map"] = (None, "token_map")
    expected_src.update(src for src, _ in plan.values() if src is not None)

    not_planned = [k for k in ours if k not in plan]
    if not_planned:  # an srupp_lm option the converter does not know
        raise ConversionError(f"--arch {arch}: the model has parameters that no authors' key maps "
                              f"to: {_listing(not_planned)}")
    missing = sorted(expected_src - set(authors.sd))
    if missing:
        raise ConversionError(f"--src is missing keys that --arch {arch} needs: {_listing(missing)}")
    unexpected = sorted(set(authors.sd) - expected_src)
    if unexpected:
        raise ConversionError(f"--src has keys that --arch {arch} has no place for: "
                              f"{_listing(unexpected)}")
    for i in range(mcfg.num_layers):
        scale = authors.sd.get(f"rnn.rnn_lst.{i}.scale_x", torch.ones(1))
        if not torch.all(scale == 1.0):
            raise ConversionError(f"--src rnn.rnn_lst.{i}.scale_x is {scale.tolist()}, not 1.0: a "
                                  f"model trained with rescale=True, which srupp_lm does not have")

    f2a_t = torch.tensor(f2a, dtype=torch.long)
    known = f2a_t.ge(0)
    new_state = OrderedDict()
    misshapen = []
    for key, target in ours.items():
        src, how = plan[key]
        if how == "token_map":
            new_state[key] = f2a_t.clone()
            continue
        value = authors.sd[src]
        if how == "planes":
            want = target.shape
            if value.shape != want:
                misshapen.append(f"{src} {tuple(value.shape)} (expected {tuple(want)})")
                continue
            value = _planes(value, d)
        elif how in ("rows0", "rows_bias"):
            want = (authors.vocab_size(),) + tuple(target.shape[1:])
            if tuple(value.shape) != want:
                misshapen.append(f"{src} {tuple(value.shape)} (expected {want})")
                continue
            rows = value.index_select(0, f2a_t.clamp(min=0)).to(target.dtype)
            fill = UNMAPPED_LOGIT if how == "rows_bias" else 0.0
            mask = known.view(-1, *([1] * (rows.dim() - 1)))
            value = torch.where(mask, rows, torch.full_like(rows, fill))
        elif value.shape != target.shape:
            misshapen.append(f"{src} {tuple(value.shape)} (expected {tuple(target.shape)})")
            continue
        new_state[key] = value.to(target.dtype).clone()
    if misshapen:
        raise ConversionError(f"--src has tensors of the wrong shape for --arch {arch}: "
                              f"{_listing(misshapen)}")
    return new_state


# ------------------------------------------------------------------------------ main
def convert(src: str, src_vocab: str, dict_path: str, arch: str, out: str,
            model_overrides: Optional[str] = None, task: str = "language_modeling",
            data: Optional[str] = None, eos_symbol: Optional[str] = None,
            unk_symbol: Optional[str] = None, allow_missing_symbols: bool = False,
            log=None) -> dict:
    """Convert; returns a summary dict. Raises ConversionError for bad inputs."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    plugin_dir = _import_plugin()
    from fairseq.data import Dictionary
    from fairseq.models import build_model
    from omegaconf import OmegaConf

    sd = load_authors_state_dict(src)
    authors = AuthorsModel(sd)
    overrides = _parse_overrides(model_overrides)
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
    model = build_model(cfg.model, _DictionaryTask(dictionary))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the top of this file for the mapping and the symbol rules.")
    p.add_argument("--src", required=True, help="the authors' checkpoint (a state_dict)")
    p.add_argument("--src-vocab", required=True, help="the authors' symbols in id order, one per line")
    p.add_argument("--dict", required=True, help="fairseq dictionary (dict.txt) of the data")
    p.add_argument("--arch", required=True,
                   help="srupp_lm architecture, e.g. srupp_lm_wiki103_large_txl")
    p.add_argument("--out", required=True, help="fairseq checkpoint to write")
    p.add_argument("--model-overrides", default=None,
                   help="JSON dict of srupp_lm options applied after --arch, e.g. "
                        "'{\"hidden_dim\": 16, \"num_layers\": 3}'")
    p.add_argument("--task", default="language_modeling",
                   help="task stored in the checkpoint (default: language_modeling)")
    p.add_argument("--data", default=None,
                   help="cfg.task.data stored in the checkpoint (default: the folder of --dict)")
    p.add_argument("--eos-symbol", default=None,
                   help="authors' symbol that becomes fairseq's </s> (default: 10 for enwik8, "
                        "else <eos> / <S> / </s>)")
    p.add_argument("--unk-symbol", default=None,
                   help="authors' symbol that becomes fairseq's <unk> (default: <unk> / <UNK>)")
    p.add_argument("--allow-missing-symbols", action="store_true",
                   help="enwik8 layout: drop authors' symbols that --dict lacks (renormalises)")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        convert(a.src, a.src_vocab, a.dict, a.arch, a.out, a.model_overrides, a.task, a.data,
                a.eos_symbol, a.unk_symbol, a.allow_missing_symbols)
    except ConversionError as e:
        print(f"convert_sru_checkpoint.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
