"""Optimizers and learning-rate schedules of the plugin, registered with fairseq on import."""
if __name__ == "optim":  # fairseq imported this folder itself through --user-dir
    raise ImportError("--user-dir must name the fairseq_srupp package folder, not its optim/ "
                      "sub-folder: --user-dir /path/to/fairseq_srupp")
# registers --optimizer radam and --lr-scheduler srupp_cosine
from . import radam, srupp_cosine  # noqa: F401,E402
