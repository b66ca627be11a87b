#!/usr/bin/env bash
# Prepare WikiText-103 (Merity et al. 2016, the tokenized "v1" release) for fairseq.
#
# Download (this script never downloads). Either of these gives the same zip:
#   wget https://wikitext.smerity.com/wikitext-103-v1.zip
#   wget https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip  # old URL (fairseq, Transformer-XL)
#
#   usage: scripts/data/prepare_wikitext103.sh wikitext-103-v1.zip|FOLDER OUT_DIR
#
# INPUT is the zip or a folder holding wiki.{train,valid,test}.tokens (the unzipped
# wikitext-103/). The raw release (wikitext-103-raw-v1, wiki.*.raw) is refused: the paper used
# the tokenized text with <unk>.
#
# Writes
#   OUT_DIR/text/{train,valid,test}.txt   the wiki.*.tokens files, renamed as in
#                                         Transformer-XL's getdata.sh (the SRU++ data layout)
#   OUT_DIR/data-bin/                     fairseq-preprocess --only-source output (the
#                                         command of fairseq's examples/language_model README):
#                                         the dictionary is built from train with all types kept
# Each line (also the empty ones) ends in fairseq's </s>, which plays the role of Transformer-XL's
# <eos>. The literal "<unk>" of the text maps to fairseq's <unk>. The paper setup's vocabulary has
# 267,735 types (<eos> and <unk> included), so fairseq's dictionary should have 267,744 entries
# (4 specials + 267,733 words + 7 madeupword paddings).
#
# Environment:
#   WT103_EXPECTED_LINES="1801350 3760 4358"   line counts of train/valid/test that the
#                        input must have ("none": no check; for tests with small files)
#   WORKERS (default: nproc), PYTHON, FAIRSEQ_PREPROCESS, FORCE: see scripts/data/data_common.sh
set -euo pipefail
# shellcheck source=scripts/data/data_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/data_common.sh"

input_output "wikitext-103-v1.zip|FOLDER OUT_DIR" "$@"
EXPECTED="${WT103_EXPECTED_LINES:-1801350 3760 4358}"
set_workers
SPLITS=(train valid test)
FIX="download wikitext-103-v1.zip again (see the header of $PROG) and pass the zip or its unzipped wikitext-103/ folder"

if [ "$EXPECTED" != none ]; then
  read -r -a EXP <<<"$EXPECTED"
  [ "${#EXP[@]}" -eq 3 ] || die "WT103_EXPECTED_LINES must be three numbers (train valid test) or 'none'"
  for n in "${EXP[@]}"; do check_uint WT103_EXPECTED_LINES "$n"; done
fi

[ -e "$IN" ] || die "input not found: $IN; $FIX"
mkdir -p "$OUT"
lock_out_dir "$OUT"
trap 'rm -rf "$OUT/text.tmp" "$OUT/data-bin.tmp"' EXIT
STAMP="wikitext-103 $(file_id "$IN")
expected_lines=$EXPECTED"

# check_lines DIR: DIR/{train,valid,test}.txt have the expected line counts.
check_lines() {
  local i n f
  for i in 0 1 2; do
    f="$1/${SPLITS[$i]}.txt"
    [ -s "$f" ] || die "$2: wiki.${SPLITS[$i]}.tokens is empty; $FIX"
    n="$(wc -l <"$f")"
    if [ "$EXPECTED" != none ] && [ "$n" != "${EXP[$i]}" ]; then
      die "$2: wiki.${SPLITS[$i]}.tokens has $n lines, expected ${EXP[$i]} (truncated, or not" \
          "WikiText-103 v1?); $FIX. Set WT103_EXPECTED_LINES=none to skip this check."
    fi
    log "${SPLITS[$i]}: $(wc -c <"$f") bytes, $n lines"
  done
}

if stamp_ok "$OUT/text" "$STAMP"; then
  log "skip: $OUT/text is up to date"
else
  rm -rf "$OUT/text.tmp" && mkdir -p "$OUT/text.tmp"
  if [ -d "$IN" ]; then
    for s in "${SPLITS[@]}"; do
      if [ ! -f "$IN/wiki.$s.tokens" ]; then
        if [ -f "$IN/wiki.$s.raw" ]; then
          die "$IN holds wiki.$s.raw: that is WikiText-103 *raw*; the paper used the tokenized" \
              "wikitext-103-v1.zip (wiki.*.tokens)"
        fi
        die "missing $IN/wiki.$s.tokens; $FIX"
      fi
    done
    for s in "${SPLITS[@]}"; do cp "$IN/wiki.$s.tokens" "$OUT/text.tmp/$s.txt"; done
  else
    "$PYTHON" "$SCRIPTS_DIR/data_utils.py" unzip --zip "$IN" --outdir "$OUT/text.tmp" \
      wiki.train.tokens wiki.valid.tokens wiki.test.tokens >/dev/null \
      || { rm -rf "$OUT/text.tmp"; die "cannot use $IN (see above); $FIX"; }
    for s in "${SPLITS[@]}"; do mv "$OUT/text.tmp/wiki.$s.tokens" "$OUT/text.tmp/$s.txt"; done
  fi
  check_lines "$OUT/text.tmp" "$IN"
  finish_dir "$OUT/text.tmp" "$OUT/text" "$STAMP"
fi

binarize "$OUT/text" "$OUT/data-bin" "$STAMP"
log "done: $OUT/data-bin"
