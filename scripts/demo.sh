#!/usr/bin/env bash
# The README's demo, on a fresh machine, CPU only (about 15 minutes on 2 cores, 5 of them training):
#   1. install what is missing (scripts/setup_env.sh: ./.venv, torch, fairseq, this package),
#   2. prepare the shipped public-domain corpus (data/demo) as enwik8-style bytes and binarize it,
#   3. train the small `srupp_lm` with fairseq-train and the stream task (state carried between
#      segments), for DEMO_MINUTES of wall-clock time, with a progress display,
#   4. evaluate test bits per character with fairseq-eval-lm (state carried through the test set),
#   5. sample a few lines of text with fairseq-interactive.
#
# Environment: DEMO_DIR (default ./work/demo), DEMO_MINUTES (default 5), DEMO_THREADS (torch threads,
# default: all cores). Rerunning skips the data preparation and trains a new model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO_DIR="${DEMO_DIR:-$ROOT/work/demo}"
MINUTES="${DEMO_MINUTES:-5}"
START=$(date +%s)
stamp() { echo "[demo $(( $(date +%s) - START ))s] $*"; }

source "$ROOT/scripts/setup_env.sh"
BIN="$(dirname "$PY")"
USER_DIR="$ROOT/fairseq_srupp"
export OMP_NUM_THREADS="${DEMO_THREADS:-$(nproc)}" PYTHONWARNINGS=ignore

stamp "preparing the demo corpus in $DEMO_DIR"
PYTHON="$PY" FAIRSEQ_PREPROCESS="$BIN/fairseq-preprocess" bash "$ROOT/scripts/data/prepare_demo.sh" "$DEMO_DIR"
DATA="$DEMO_DIR/data-bin"
CKPT="$DEMO_DIR/checkpoints"
rm -rf "$CKPT"

stamp "training srupp_lm for $MINUTES minutes (fairseq-train, CPU)"
hours=$("$PY" -c "print($MINUTES / 60)")
# the settings of docs/comparison.md (its learning-rate sweep for this model and corpus): Adam,
# constant 4e-3 after 30 warm-up updates, no dropout for a run this short, 16 x 256 tokens per update
"$BIN/fairseq-train" "$DATA" --user-dir "$USER_DIR" --task srupp_stream_lm --arch srupp_lm \
    --dropout 0 --attention-dropout 0 --embed-dropout 0 \
    --tokens-per-sample 256 --batch-size 16 --batch-size-valid 16 --max-valid-steps 20 \
    --optimizer adam --adam-betas '(0.9, 0.98)' --lr 4e-3 --lr-scheduler fixed --warmup-updates 30 \
    --clip-norm 1.0 --stop-time-hours "$hours" --max-epoch 1 \
    --save-dir "$CKPT" --no-epoch-checkpoints --cpu --num-workers 0 --seed 1 \
    --log-format simple --log-interval 25

stamp "evaluating on test (fairseq-eval-lm, state carried across segments)"
eval_log="$DEMO_DIR/eval_test.log"
"$BIN/fairseq-eval-lm" "$DATA" --path "$CKPT/checkpoint_last.pt" --user-dir "$USER_DIR" \
    --task srupp_stream_lm --gen-subset test --batch-size 8 --tokens-per-sample 512 --cpu \
    --num-workers 0 >"$eval_log" 2>&1 || { tail -n 30 "$eval_log"; exit 1; }
bpc=$(sed -n 's/.*Loss (base 2): \([0-9.]*\).*/\1/p' "$eval_log" | tail -n 1)
[ -n "$bpc" ] || { tail -n 30 "$eval_log"; echo "eval-lm printed no loss" >&2; exit 1; }

stamp "sampling (fairseq-interactive, top-10)"
"$PY" "$ROOT/scripts/tools/sample_text.py" --data "$DATA" --path "$CKPT/checkpoint_last.pt" \
    --prompt "The Lord is " --num-samples 3 --max-bytes 160 --cpu

stamp "done"
echo "test bits per character: $bpc   (checkpoint: $CKPT/checkpoint_last.pt)"
