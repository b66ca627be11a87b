"""The authors' side: their state_dict (read without assuming an architecture) and vocabulary."""
import re
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from .errors import ConversionError, listing

PLAIN, TXL = "enwik8 (plain embedding / output layer)", "Transformer-XL adaptive"

_LAYER_KEY = re.compile(
    r"rnn\.rnn_lst\.(\d+)\.(weight_c|bias|scale_x|layer_norm\.(?:weight|bias)|"
    r"transform_module\.(?:alpha|linear[123]\.weight|layer_norm\.(?:weight|bias)))$")
_TXL_KEY = re.compile(
    r"(output_layer\.out_layers\.(\d+)\.(?:weight|bias)|output_layer\.out_projs\.(\d+)|"
    r"embedding_layer\.emb_projs\.(\d+))$")
PLAIN_KEYS = ("embedding_layer.weight", "output_layer.weight", "output_layer.bias")


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
        raise ConversionError(f"--src {path}: entries that are not tensors: {listing(bad)}")
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
            if key in PLAIN_KEYS:
                continue
            unknown.append(key)
        if unknown:
            raise ConversionError(
                f"--src has keys that no SRU++ language model of the authors has: "
                f"{listing(unknown)} (expected rnn.rnn_lst.*, embedding_layer.*, output_layer.*)")
        txl = bool(self.out_layers or self.out_projs or self.emb_projs)
        plain = any(k in sd for k in PLAIN_KEYS)
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
            for key in PLAIN_KEYS:
                if key in self.sd:
                    return self.sd[key].shape[0]
            return -1
        rows, _ = self.txl_sizes()
        return sum(rows) - (len(rows) - 1)


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
        raise ConversionError(f"--src-vocab {path}: duplicate symbols {listing(dups)}")
    return symbols
