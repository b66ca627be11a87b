"""fairseq-srupp: the SRU++ language model (Lei 2021) as a fairseq plugin.

`fairseq-train --user-dir /path/to/fairseq_srupp ...` imports this package, which registers
the `srupp_lm` model and its architectures, the `srupp_stream_lm` task, the optimizer and the
`srupp_bytes` text encoder. Nothing here touches CUDA. Without fairseq installed, `fairseq_srupp.modules` (the SRU++ layer and the
recurrence op) and `fairseq_srupp.cuda` still import.
"""
import importlib.util

__version__ = "0.1.0"

if importlib.util.find_spec("fairseq") is not None:
    from . import criterions, models, optim, tasks  # noqa: F401  (fairseq registrations)
    from .encoders import srupp_bytes  # noqa: F401
