"""SRU++ building blocks. Importable without fairseq (and without CuPy)."""
if __name__ == "modules":  # fairseq imported this folder itself through --user-dir
    raise ImportError("--user-dir must name the fairseq_srupp package folder, not its "
                      "modules/ sub-folder: --user-dir /path/to/fairseq_srupp")
from .attention_mask import segment_attention_mask
from .recurrence import sru_recurrence
from .recurrence_ref import sru_recurrence_ref
from .srupp_layer import CELL_LAYER_NORM_CHOICES, SRUppLayer, compile_layer
from .srupp_transform import SRUppAttention, SRUppProjectedLinear
from .txl_adaptive import UNMAPPED_LOG_PROB, TXLAdaptiveEmbedding, TXLAdaptiveLogSoftmax

__all__ = [
    "CELL_LAYER_NORM_CHOICES",
    "SRUppAttention",
    "SRUppLayer",
    "SRUppProjectedLinear",
    "TXLAdaptiveEmbedding",
    "TXLAdaptiveLogSoftmax",
    "UNMAPPED_LOG_PROB",
    "compile_layer",
    "segment_attention_mask",
    "sru_recurrence",
    "sru_recurrence_ref",
]
