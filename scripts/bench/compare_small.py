#!/usr/bin/env python3
"""Equal-wall-clock comparison of SRU++ with fairseq's Transformer and LSTM language models:
the command line of fairseq_srupp/comparison (the protocol, the sizes and the outputs are in its
__init__.py and `--help`; the write-up is docs/comparison.md).

    python scripts/bench/compare_small.py --out runs/compare_cpu            # the demo corpus, CPU
    python scripts/bench/compare_small.py --data DIR --device cuda --out runs/compare_gpu
    python scripts/bench/compare_small.py --tune --max-update 480 --out runs/tune_cpu   # lr sweep
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_srupp.comparison.cli import main  # noqa: E402  (the repository's package first)

if __name__ == "__main__":
    sys.exit(main())
