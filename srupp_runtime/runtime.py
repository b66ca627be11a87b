"""Score and generate with an exported SRU++ step (onnxruntime, numpy)."""
import json
import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnxruntime as ort

from .codec import Codec

MANIFEST_FORMAT = "srupp-export"
MANIFEST_VERSION = 1
State = Tuple[np.ndarray, np.ndarray, np.ndarray]  # c, kv, position


def load(folder: str, threads: Optional[int] = None) -> "SRUppRuntime":
    return SRUppRuntime(folder, threads)


class SRUppRuntime:
    """An exported model (a `srupp-export` folder) on onnxruntime's CPU provider; `threads`
    sets its intra-op threads (default: onnxruntime's)."""

    def __init__(self, folder: str, threads: Optional[int] = None):
        path = os.path.join(folder, "manifest.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} has no manifest.json: export the model first, "
                                    f"srupp-export CHECKPOINT {folder} --data DATA")
        with open(path, encoding="utf-8") as f:
            self.manifest = manifest = json.load(f)
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
            raise ValueError(f"{path} is not a version {MANIFEST_VERSION} {MANIFEST_FORMAT} "
                             f"manifest; export the model again with this version's srupp-export")
        with open(os.path.join(folder, manifest["files"]["symbols"]), encoding="utf-8") as f:
            symbols = [line.rstrip("\n") for line in f]
        self.special_ids = manifest["special_ids"]
        self.codec = Codec(manifest["encoder"], symbols, self.special_ids)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(folder, manifest["files"]["step_onnx"]),
                                            options, providers=["CPUExecutionProvider"])
        self.input_names = manifest["step"]["input_order"]
        self.batch = manifest["step"]["batch"]
        # tokens the model should never emit: padding and the unused begin-of-sentence
        self.banned = [self.special_ids["pad"], self.special_ids["bos"]]

    # ------------------------------------------------------------------ steps
    def initial_state(self, batch_size: int = 1) -> State:
        if self.batch != "dynamic" and batch_size != self.batch:
            raise ValueError(f"the model was exported for batch size {self.batch}; pass that, or "
                             f"export again with --batch-size 0 (symbolic)")
        shapes = self.manifest["step"]["inputs"]
        c = np.zeros([batch_size if n == "batch" else n for n in shapes["c"][:-1]], np.float32)
        kv = np.zeros([batch_size if n == "batch" else n for n in shapes["kv"][:-1]], np.float32)
        return c, kv, np.zeros(1, np.int64)

    def step(self, tokens: np.ndarray, state: State) -> Tuple[np.ndarray, State]:
        """tokens (B,) ids -> log-probs (B, V) of the next token and the new state."""
        feed = dict(zip(self.input_names, (tokens.astype(np.int64).reshape(-1, 1), *state)))
        log_probs, c, kv, position = self.session.run(None, feed)
        return log_probs, (c, kv, position)

    def feed(self, ids: List[int]) -> Tuple[np.ndarray, State, List[np.ndarray]]:
        """Run </s> and then `ids` (batch 1); returns the last log-probs (V,), the state and the
        log-probs after every input."""
        state = self.initial_state(1)
        history = []
        for token in [self.special_ids["eos"]] + list(ids):
            log_probs, state = self.step(np.array([token]), state)
            history.append(log_probs[0])
        return history[-1], state, history

    # ------------------------------------------------------------------ user API
    def score(self, text: str) -> Dict:
        """Log-probs (natural log) of each symbol of `text` after </s> and the symbols before it:
        {"symbols", "log_probs", "total", "bits_per_symbol", "unknown"}."""
        ids, unknown = self.codec.encode(text)
        if not ids:
            raise ValueError("score: the text has no symbols to score")
        _, _, history = self.feed(ids[:-1])
        log_probs = [float(h[i]) for h, i in zip(history, ids)]
        total = sum(log_probs)
        return {"symbols": [self.codec.symbols[i] for i in ids], "log_probs": log_probs,
                "total": total, "bits_per_symbol": -total / len(ids) / math.log(2),
                "unknown": unknown}

    def generate(self, text: str, max_tokens: int = 100, top_k: int = 0,
                 temperature: float = 1.0, seed: Optional[int] = None) -> str:
        """The continuation of `text`: `max_tokens` symbols sampled with `temperature` from the
        `top_k` most likely (0 = all); temperature 0 or top_k 1 is greedy."""
        prompt, _ = self.codec.encode(text)
        return self.codec.decode(self.generate_ids(prompt, max_tokens, top_k, temperature, seed))

    def generate_ids(self, prompt: List[int], max_tokens: int, top_k: int = 0,
                     temperature: float = 1.0, seed: Optional[int] = None) -> List[int]:
        if max_tokens < 0 or top_k < 0 or temperature < 0:
            raise ValueError(f"generate: max_tokens, top_k and temperature must be >= 0, got "
                             f"{max_tokens}, {top_k}, {temperature}")
        rng = np.random.default_rng(seed)
        log_probs, state, _ = self.feed(prompt)
        out: List[int] = []
        for _ in range(max_tokens):
            token = self._pick(log_probs, top_k, temperature, rng)
            out.append(token)
            step_log_probs, state = self.step(np.array([token]), state)
            log_probs = step_log_probs[0]
        return out

    def _pick(self, log_probs: np.ndarray, top_k: int, temperature: float,
              rng: np.random.Generator) -> int:
        scores = log_probs.astype(np.float64)
        scores[self.banned] = -np.inf
        if temperature == 0 or top_k == 1:
            return int(np.argmax(scores))
        scores = scores / temperature
        if 0 < top_k < scores.shape[0]:
            kth = np.partition(scores, -top_k)[-top_k]
            scores[scores < kth] = -np.inf
        probs = np.exp(scores - scores.max())
        return int(rng.choice(scores.shape[0], p=probs / probs.sum()))
