#!/usr/bin/env bash
# Evaluate a Billion Word SRU++ checkpoint as the authors did: the test file (heldout-00000) as
# one stream (batch size 1) on one GPU in fp32, in segments of 96 tokens, each token attending to
# at most the 96 previous positions (the README evaluates with --eval_unroll_size 96), with the
# recurrent state carried through the whole file. Prints the word-level perplexity.
#
#   usage: scripts/recipes/eval_lm1b.sh DATA_BIN CHECKPOINT [extra fairseq-eval-lm options...]
#
# Expected test perplexity: base (328M) 25.1; large (465M, attention in layers 5 and 10) 23.5.
# The checkpoint may come from scripts/recipes/train_lm1b.sh or scripts/tools/convert_sru_checkpoint.py.
#
# Environment: SUBSET (test | valid), WINDOW (default 96), LOG, PYTHON, USER_DIR, DRY_RUN=1
# (see scripts/recipes/eval_enwik8.sh).
set -euo pipefail
# shellcheck source=scripts/recipes/train_eval_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/train_eval_common.sh"

[ $# -ge 2 ] || die "usage: $PROG DATA_BIN CHECKPOINT [extra fairseq-eval-lm options...]"
DATA="$1"
CKPT="$2"
shift 2
SUBSET="${SUBSET:-test}"
WINDOW="${WINDOW:-96}"
check_data "$DATA" \
  "prepare it with scripts/data/prepare_lm1b.sh 1-billion-word-language-modeling-benchmark-r13output OUT and pass OUT/data-bin" \
  "$SUBSET"
check_python
LOG="${LOG:-$(dirname "$CKPT")/eval_lm1b_$SUBSET.log}"
eval_lm "$DATA" "$CKPT" "$SUBSET" "$WINDOW" "$LOG" "$@"
[ "${DRY_RUN:-0}" = 1 ] && exit 0
echo "Billion Word $SUBSET: perplexity $EVAL_PPL (window $WINDOW; authors' test: base 25.1, large 23.5)"
