#!/usr/bin/env bash
# Prepare the shipped demo corpus (data/demo, see data/demo/PROVENANCE.md) as
# enwik8-style character data and binarize it for fairseq.
#
#   usage: scripts/data/prepare_demo.sh OUT_DIR
#
# Writes
#   OUT_DIR/raw/{train,valid,test}.txt    the decompressed text (train possibly cut)
#   OUT_DIR/text/{train,valid,test}.txt   char format: each byte as its decimal value,
#                                         one line per text line (scripts/data/text_to_chars.py)
#   OUT_DIR/data-bin/                     fairseq-preprocess --only-source output
#                                         (dictionary built from train)
# Environment:
#   DEMO_TRAIN_BYTES=N   use only the longest prefix of whole train lines with <= N bytes
#                        (fast demos and tests); unset = the whole ~5 MB train split
#   WORKERS=2            fairseq-preprocess --workers
#   PYTHON, FAIRSEQ_PREPROCESS, FORCE: see scripts/data/data_common.sh
# Rerunning skips the steps already done with the same input and settings.
#
# Then, e.g.:
#   fairseq-train OUT_DIR/data-bin --user-dir fairseq_srupp --task language_modeling ...
set -euo pipefail
# shellcheck source=scripts/data/data_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/data_common.sh"

[ $# -eq 1 ] || die "usage: $PROG OUT_DIR"
OUT="$1"
set_workers 2
DEMO_DIR="$SCRIPTS_DIR/../../data/demo"
TRAIN_BYTES="${DEMO_TRAIN_BYTES:-}"
if [ -n "$TRAIN_BYTES" ]; then
  check_uint DEMO_TRAIN_BYTES "$TRAIN_BYTES"
  [ "$TRAIN_BYTES" -gt 0 ] || die "DEMO_TRAIN_BYTES must be positive"
fi
need_cmd xz "install xz-utils"
need_cmd sha256sum "install coreutils"
for s in train valid test; do
  [ -f "$DEMO_DIR/$s.txt.xz" ] || die "missing $DEMO_DIR/$s.txt.xz (run from a complete checkout)"
done
mkdir -p "$OUT"
lock_out_dir "$OUT"
trap 'rm -rf "$OUT/raw.tmp" "$OUT/text.tmp" "$OUT/data-bin.tmp"' EXIT

STAMP="demo $(cd "$DEMO_DIR" && sha256sum train.txt.xz valid.txt.xz test.txt.xz | cut -c1-16 | tr '\n' ' ')
train_bytes=${TRAIN_BYTES:-all}"

# 1) decompress (and cut train)
if stamp_ok "$OUT/raw" "$STAMP"; then
  log "skip: $OUT/raw is up to date"
else
  rm -rf "$OUT/raw.tmp" && mkdir -p "$OUT/raw.tmp"
  for s in train valid test; do
    xz -dc "$DEMO_DIR/$s.txt.xz" >"$OUT/raw.tmp/$s.txt" || die "cannot decompress $DEMO_DIR/$s.txt.xz"
  done
  if [ -n "$TRAIN_BYTES" ]; then
    mv "$OUT/raw.tmp/train.txt" "$OUT/raw.tmp/train.full.txt"
    "$PYTHON" "$SCRIPTS_DIR/data_utils.py" head --input "$OUT/raw.tmp/train.full.txt" \
      --output "$OUT/raw.tmp/train.txt" --max-bytes "$TRAIN_BYTES" >/dev/null
    rm "$OUT/raw.tmp/train.full.txt"
  fi
  finish_dir "$OUT/raw.tmp" "$OUT/raw" "$STAMP"
fi

# 2) char format
if stamp_ok "$OUT/text" "$STAMP"; then
  log "skip: $OUT/text is up to date"
else
  rm -rf "$OUT/text.tmp" && mkdir -p "$OUT/text.tmp"
  for s in train valid test; do
    "$PYTHON" "$SCRIPTS_DIR/text_to_chars.py" --quiet \
      --input "$OUT/raw/$s.txt" --output "$OUT/text.tmp/$s.txt"
  done
  finish_dir "$OUT/text.tmp" "$OUT/text" "$STAMP"
fi
for s in train valid test; do
  log "$s: $(wc -c <"$OUT/raw/$s.txt") bytes, $(wc -l <"$OUT/raw/$s.txt") lines"
done

# 3) binarize
binarize "$OUT/text" "$OUT/data-bin" "$STAMP"
log "done: $OUT/data-bin"
