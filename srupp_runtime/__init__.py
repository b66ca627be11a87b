"""Serving runtime for SRU++ LMs exported with `srupp-export` (numpy and onnxruntime only: no
torch, no fairseq).

    import srupp_runtime
    lm = srupp_runtime.load("exported/")
    lm.score("The cat")                       # per-token log-probs, total, bits per token
    lm.generate("The ", max_tokens=100, top_k=10, temperature=0.8, seed=0)

A separate top-level package because importing `fairseq_srupp` registers fairseq plugins; the
only thing used from it is its pure-Python byte codec (fairseq_srupp.encoders.byte_codec), which
imports nothing when fairseq is absent.
"""
from .codec import Codec
from .runtime import SRUppRuntime, load

__all__ = ["Codec", "SRUppRuntime", "load"]
