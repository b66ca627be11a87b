"""fairseq criterions of the plugin, registered on import (fairseq does not auto-import them)."""
if __name__ == "criterions":  # imported as a top-level folder through --user-dir
    raise ImportError("--user-dir must name the fairseq_srupp package folder, not its criterions/ "
                      "sub-folder: --user-dir /path/to/fairseq_srupp")
from . import txl_adaptive_loss  # noqa: F401,E402  (registers --criterion txl_adaptive_loss)
