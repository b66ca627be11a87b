#!/usr/bin/env python3
"""Raw UTF-8 text -> a word-level fairseq data folder (Moses, optional subword-nmt BPE,
fairseq-preprocess): a thin wrapper of `srupp-prepare-text`
(fairseq_srupp/tools/prepare_text.py; `--help` for the options).

    python scripts/data/prepare_text.py --train train.txt --valid valid.txt --test test.txt \
        --destdir data-bin/mydata --bpe-merges 8000
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from fairseq_srupp.tools.prepare_text import cli_main  # noqa: E402  (the repository's package)

if __name__ == "__main__":
    sys.exit(cli_main())
