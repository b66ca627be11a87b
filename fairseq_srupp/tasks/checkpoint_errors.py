"""Clear errors for checkpoint files fairseq cannot read.

fairseq reads every checkpoint (fairseq-eval-lm, -generate, -interactive, the hub API,
fairseq-train --restore-file) through `checkpoint_utils.load_checkpoint_to_cpu`, before any code of
the plugin runs. A truncated file fails there with torch's zip-reader error, and a `torch.save` of
something else (a bare state_dict, the authors' SRU++ checkpoint) with `KeyError: 'best_loss'`.
Importing the plugin wraps that function: when it fails, the file is looked at again and, if it is
unreadable or not a fairseq checkpoint, the error says so and how to fix it. Other failures, and
every successful load, pass through unchanged.
"""
import os
from typing import Optional

import torch
from fairseq import checkpoint_utils


class CheckpointFileError(ValueError):
    """A checkpoint file that is unreadable or not a fairseq checkpoint."""


def explain_unusable_checkpoint(path: str) -> Optional[str]:
    """Why the file at `path` cannot be a fairseq checkpoint, or None when it looks like one (or
    cannot be judged here: a missing file, a remote path, a weights_only refusal, which torch's own
    message explains)."""
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Weights only load failed" in str(error):
            return None
        first_sentence = str(error).splitlines()[0].split(". ")[0]
        return (f"cannot read the checkpoint {path} ({os.path.getsize(path)} bytes): it is "
                f"truncated or not a torch.save file ({type(error).__name__}: {first_sentence}). "
                f"Copy it again, or load another checkpoint of the run (checkpoint_last.pt, "
                f"checkpoint<epoch>.pt, checkpoint_best.pt)")
    if isinstance(state, dict) and "model" in state and ("cfg" in state or "args" in state):
        return None
    what = (f"a dict with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict)
            else f"a {type(state).__name__}")
    return (f"{path} is not a fairseq checkpoint: it holds {what}, while fairseq checkpoints hold "
            f"'model' (the weights) and 'cfg' (the options). Load checkpoints that fairseq-train "
            f"saved; convert the authors' SRU++ checkpoints (asappresearch/sru) with "
            f"scripts/tools/convert_sru_checkpoint.py")


def _wrap(load):
    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        try:
            return load(path, arg_overrides, load_on_all_ranks)
        except Exception as error:
            reason = explain_unusable_checkpoint(path)
            if reason is None:
                raise
            raise CheckpointFileError(reason) from error

    load_checkpoint_to_cpu.srupp_wrapped = load
    return load_checkpoint_to_cpu


if not hasattr(checkpoint_utils.load_checkpoint_to_cpu, "srupp_wrapped"):
    checkpoint_utils.load_checkpoint_to_cpu = _wrap(checkpoint_utils.load_checkpoint_to_cpu)
