#!/usr/bin/env python3
"""Sample text from an SRU++ checkpoint: a thin wrapper of `srupp-sample`
(fairseq_srupp/tools/sample_text.py; `--help` for the options).

    python scripts/tools/sample_text.py --data data-bin/demo --path checkpoints/demo/checkpoint_best.pt \
        --prompt "The " --num-samples 3 --max-tokens 200 --cpu
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from fairseq_srupp.tools.sample_text import cli_main  # noqa: E402  (the repository's package)

if __name__ == "__main__":
    sys.exit(cli_main())
