#!/usr/bin/env bash
# Evaluate an enwik8 SRU++ checkpoint as the authors did: the test split as one stream (batch
# size 1) on one GPU in fp32, in segments of 3072 bytes, each byte attending to at most the 3072
# previous positions (the README's "max attention window size 3072"), with the recurrent state
# carried through the whole split. fairseq reports the loss in base 2, which for bytes is bpc.
#
#   usage: scripts/recipes/eval_enwik8.sh DATA_BIN CHECKPOINT [extra fairseq-eval-lm options...]
#
# Expected test bpc (ANCHORS.md): base (108M) 0.97 (README 0.974); large (195M) 0.95 (README
# 0.953); base with attention in 2 of 10 layers (98M) 0.98.
# The checkpoint may come from scripts/recipes/train_enwik8.sh or from scripts/tools/convert_sru_checkpoint.py.
#
# Environment: SUBSET (test | valid; default test), WINDOW (default 3072: attention window =
# memory = segment length), LOG (default: CHECKPOINT's folder/eval_enwik8_SUBSET.log), PYTHON,
# USER_DIR, DRY_RUN=1. fairseq-eval-lm picks the first visible GPU (CUDA_VISIBLE_DEVICES); add
# --cpu to run without one (slow).
set -euo pipefail
# shellcheck source=scripts/recipes/train_eval_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/train_eval_common.sh"

[ $# -ge 2 ] || die "usage: $PROG DATA_BIN CHECKPOINT [extra fairseq-eval-lm options...]"
DATA="$1"
CKPT="$2"
shift 2
SUBSET="${SUBSET:-test}"
WINDOW="${WINDOW:-3072}"
check_data "$DATA" "prepare it with scripts/data/prepare_enwik8.sh enwik8.zip OUT and pass OUT/data-bin" \
  "$SUBSET"
check_python
LOG="${LOG:-$(dirname "$CKPT")/eval_enwik8_$SUBSET.log}"
eval_lm "$DATA" "$CKPT" "$SUBSET" "$WINDOW" "$LOG" "$@"
[ "${DRY_RUN:-0}" = 1 ] && exit 0
echo "enwik8 $SUBSET: $EVAL_LOSS2 bpc (window $WINDOW; authors' test: base 0.974, large 0.953)"
