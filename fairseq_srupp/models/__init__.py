"""fairseq models of the plugin (fairseq also imports every file here from a --user-dir)."""
if __name__ == "models":  # fairseq imported this folder itself through --user-dir
    raise ImportError("--user-dir must name the fairseq_srupp package folder, not its "
                      "models/ sub-folder: --user-dir /path/to/fairseq_srupp")
from . import srupp_lm  # noqa: F401  (registers the model first)
from . import architectures  # noqa: F401  (then its named architectures)
