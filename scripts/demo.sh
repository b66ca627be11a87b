#!/usr/bin/env bash
# The README's demo, on a fresh machine, CPU only (about 15 minutes on 2 cores, 5 of them training):
#   1. install what is missing (scripts/setup_env.sh: ./.venv, torch, fairseq, this package),
#   2. prepare the shipped public-domain corpus (data/demo): as enwik8-style bytes (DEMO_LEVEL=char)
#      or, with DEMO_LEVEL=word, as Moses-tokenized words with 6000 subword-nmt BPE merges
#      (srupp-prepare-text), and binarize it,
#   3. train the small `srupp_lm` with fairseq-train and the stream task (state carried between
#      segments), for DEMO_MINUTES of wall-clock time, with a progress display (word level: with
#      fairseq's adaptive input and adaptive softmax),
#   4. evaluate on test with fairseq-eval-lm (state carried through the test set): bits per
#      character, or perplexity per BPE token and per word,
#   5. sample a few lines of text (srupp-sample: raw text in and out).
#
# Environment: DEMO_LEVEL (char or word, default char), DEMO_DIR (default ./work/demo), DEMO_MINUTES
# (default 5), DEMO_THREADS (torch threads, default: all cores). Rerunning skips the data
# preparation and trains a new model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO_DIR="${DEMO_DIR:-$ROOT/work/demo}"
MINUTES="${DEMO_MINUTES:-5}"
LEVEL="${DEMO_LEVEL:-char}"
case "$LEVEL" in
  char|word) ;;
  *) echo "demo.sh: error: DEMO_LEVEL must be char or word, got '$LEVEL'" >&2; exit 1 ;;
esac
START=$(date +%s)
stamp() { echo "[demo $(( $(date +%s) - START ))s] $*"; }

source "$ROOT/scripts/setup_env.sh"
BIN="$(dirname "$PY")"
USER_DIR="$ROOT/fairseq_srupp"
export OMP_NUM_THREADS="${DEMO_THREADS:-$(nproc)}" PYTHONWARNINGS=ignore

stamp "preparing the demo corpus in $DEMO_DIR"
PYTHON="$PY" FAIRSEQ_PREPROCESS="$BIN/fairseq-preprocess" bash "$ROOT/scripts/data/prepare_demo.sh" "$DEMO_DIR"
if [ "$LEVEL" = char ]; then
  DATA="$DEMO_DIR/data-bin"
  CKPT="$DEMO_DIR/checkpoints"
  MODEL_FLAGS=()
else
  DATA="$DEMO_DIR/word/data-bin"
  CKPT="$DEMO_DIR/word/checkpoints"
  if [ ! -f "$DATA/text_encoding.json" ]; then
    stamp "word level: Moses tokenization, 6000 BPE merges, fairseq-preprocess (srupp-prepare-text)"
    rm -rf "$DATA"
    "$PY" -m fairseq_srupp.tools.prepare_text --train "$DEMO_DIR/raw/train.txt" \
      --valid "$DEMO_DIR/raw/valid.txt" --test "$DEMO_DIR/raw/test.txt" --destdir "$DATA" \
      --lang en --bpe-merges 6000 --workers 2 2>/dev/null
  fi
  # fairseq's adaptive input and softmax: clusters of 1000, 3000 and the rest of the sub-words
  MODEL_FLAGS=(--adaptive-input --adaptive-input-dim 512 --adaptive-input-cutoff 1000,4000
               --adaptive-softmax-cutoff 1000,4000 --tie-adaptive-weights --tie-adaptive-proj
               --criterion adaptive_loss --ddp-backend legacy_ddp)
fi
rm -rf "$CKPT"

stamp "training srupp_lm ($LEVEL level) for $MINUTES minutes (fairseq-train, CPU)"
hours=$("$PY" -c "print($MINUTES / 60)")
# the settings of docs/comparison.md (its learning-rate sweep for this model and corpus): Adam,
# constant 4e-3 after 30 warm-up updates, no dropout for a run this short, 16 x 256 tokens per update
"$BIN/fairseq-train" "$DATA" --user-dir "$USER_DIR" --task srupp_stream_lm --arch srupp_lm \
    "${MODEL_FLAGS[@]}" --dropout 0 --attention-dropout 0 --embed-dropout 0 \
    --tokens-per-sample 256 --batch-size 16 --batch-size-valid 16 --max-valid-steps 20 \
    --optimizer adam --adam-betas '(0.9, 0.98)' --lr 4e-3 --lr-scheduler fixed --warmup-updates 30 \
    --clip-norm 1.0 --stop-time-hours "$hours" --max-epoch "$([ "$LEVEL" = char ] && echo 1 || echo 20)" \
    --save-dir "$CKPT" --no-epoch-checkpoints --cpu --num-workers 0 --seed 1 \
    --log-format simple --log-interval 25

stamp "evaluating on test (fairseq-eval-lm, state carried across segments)"
eval_lm() {  # eval_lm LOG [more options]: test loss in bits per token
  local log="$1"; shift
  "$BIN/fairseq-eval-lm" "$DATA" --path "$CKPT/checkpoint_last.pt" --user-dir "$USER_DIR" \
      --task srupp_stream_lm --gen-subset test --batch-size 8 --tokens-per-sample 512 --cpu \
      --num-workers 0 "$@" >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
  local loss
  loss=$(sed -n 's/.*Loss (base 2): \([0-9.]*\).*/\1/p' "$log" | tail -n 1)
  [ -n "$loss" ] || { tail -n 30 "$log" >&2; echo "eval-lm printed no loss" >&2; exit 1; }
  echo "$loss"
}
if [ "$LEVEL" = char ]; then
  bpc=$(eval_lm "$DEMO_DIR/eval_test.log")
  result="test bits per character: $bpc"
else
  bits=$(eval_lm "$DEMO_DIR/word/eval_test.log")
  # --post-process '@@ ': sub-word scores summed into words, so the perplexity is per (Moses) word
  word_bits=$(eval_lm "$DEMO_DIR/word/eval_test_words.log" --post-process '@@ ')
  result=$("$PY" -c "print(f'test perplexity: {2 ** $bits:.1f} per BPE token, {2 ** $word_bits:.1f} per word')")
fi

stamp "sampling (srupp-sample, top-10)"
"$PY" "$ROOT/scripts/tools/sample_text.py" --data "$DATA" --path "$CKPT/checkpoint_last.pt" \
    --prompt "The Lord is " --num-samples 3 --max-tokens "$([ "$LEVEL" = char ] && echo 160 || echo 40)" --cpu

stamp "done"
echo "$result   (checkpoint: $CKPT/checkpoint_last.pt)"
