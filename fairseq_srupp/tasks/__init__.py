"""fairseq tasks of the plugin (fairseq also imports every file here from a --user-dir)."""
if __name__ == "tasks":  # fairseq imported this folder itself through --user-dir
    raise ImportError("--user-dir must name the fairseq_srupp package folder, not its "
                      "tasks/ sub-folder: --user-dir /path/to/fairseq_srupp")
from . import checkpoint_errors  # noqa: F401  (clear errors for unusable checkpoint files)
from . import srupp_stream_lm  # noqa: F401  (registers the task)
