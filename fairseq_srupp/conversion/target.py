"""The fairseq side: the config of --arch (+ overrides) and its sizes checked against the checkpoint."""
import ast
import json
from typing import Optional

import torch

from .authors import PLAIN, TXL, AuthorsModel
from .errors import ConversionError


def parse_overrides(text: Optional[str]) -> dict:
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


class DictionaryTask:
    """The part of a fairseq task that build_model reads."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


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
