"""The authors' tensors -> our state_dict: the plan of keys, the checks, the reordering."""
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from .authors import PLAIN, AuthorsModel
from .errors import ConversionError, listing

UNMAPPED_LOGIT = -1.0e4


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
                              f"to: {listing(not_planned)}")
    missing = sorted(expected_src - set(authors.sd))
    if missing:
        raise ConversionError(f"--src is missing keys that --arch {arch} needs: {listing(missing)}")
    unexpected = sorted(set(authors.sd) - expected_src)
    if unexpected:
        raise ConversionError(f"--src has keys that --arch {arch} has no place for: "
                              f"{listing(unexpected)}")
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
                              f"{listing(misshapen)}")
    return new_state
