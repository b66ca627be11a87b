#!/usr/bin/env python3
"""The authors' SRU++ recipes: train a corpus/variant, or evaluate a checkpoint as they did.

    python scripts/recipes/recipe.py train enwik8 --variant base data/enwik8/data-bin
    python scripts/recipes/recipe.py eval  enwik8 data/enwik8/data-bin checkpoints/enwik8_base/checkpoint_best.pt

The tables and the driver are fairseq_srupp/recipes; `--help` lists the datasets and the
environment (DRY_RUN=1 prints the command only).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_srupp.recipes.driver import main  # noqa: E402  (the repository's package first)

if __name__ == "__main__":
    sys.exit(main(prog="recipe.py"))
