#!/usr/bin/env python3
"""Convert an SRU++ language-model checkpoint of the authors (asappresearch/sru) into a fairseq
checkpoint of `srupp_lm`: the command line of fairseq_srupp.conversion (also installed as the
console command `srupp-convert-checkpoint`; `--help` lists the mapping and the symbol rules).

    python scripts/tools/convert_sru_checkpoint.py --src wt103_large.pt --src-vocab wt103_vocab.txt \\
        --dict data-bin/wikitext-103/dict.txt --arch srupp_lm_wiki103_large_txl --out srupp.pt
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_srupp.conversion.cli import main  # noqa: E402  (the repository's package first)

if __name__ == "__main__":
    sys.exit(main(prog="convert_sru_checkpoint.py"))
