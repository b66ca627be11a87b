"""`--bpe srupp_bytes`: UTF-8 text <-> the byte symbols of character-level data, as a fairseq
BPE (fairseq-interactive, fairseq-generate and the hub apply it to their input and output)."""
from dataclasses import dataclass

from fairseq.data.encoders import register_bpe
from fairseq.dataclass import FairseqDataclass

from . import byte_codec


@dataclass
class SRUppBytesConfig(FairseqDataclass):
    pass


@register_bpe("srupp_bytes", dataclass=SRUppBytesConfig)
class SRUppBytes:
    """Text -> "84 104 101 </s> ..." (one symbol per UTF-8 byte, newline = </s>) and back."""

    def __init__(self, cfg=None):
        self.cfg = cfg

    def encode(self, x: str) -> str:
        return byte_codec.encode_text(x)

    def decode(self, x: str) -> str:
        return byte_codec.decode_symbols(x)
