#!/usr/bin/env bash
# Prepare enwik8 (Hutter Prize, first 10^8 bytes of an English Wikipedia XML dump) for
# fairseq, split as in the SRU++ paper (and Transformer-XL's prep_enwik8.py).
#
# Download (this script never downloads):
#   wget http://mattmahoney.net/dc/enwik8.zip        # unzips to the file enwik8
#
#   usage: scripts/data/prepare_enwik8.sh enwik8.zip|enwik8|FOLDER OUT_DIR
#
# INPUT is enwik8.zip, the unzipped enwik8 file (100,000,000 bytes), or a folder holding
# one of them. The split: test = the last 5,000,000 bytes, valid = the 5,000,000 bytes
# before them, train = the first 90,000,000 bytes (SRU++ train_enwik8.py read_corpus).
# Every byte becomes one symbol written as its decimal value (e.g. "60 109 101"); the newline
# byte stays the line break, so one output line is one text line and fairseq's per-line
# </s> is the newline symbol.
#
# Writes
#   OUT_DIR/text/{train,valid,test}.txt       char format (scripts/data/text_to_chars.py)
#   OUT_DIR/text/{train,valid,test}.txt.raw   the raw bytes of each split
#   OUT_DIR/text/summary.json                 sizes, sha256, distinct bytes per split
#   OUT_DIR/data-bin/                         fairseq-preprocess --only-source output;
#                                             the dictionary is built from train
# Environment (for tests with small synthetic files; defaults are the paper's):
#   ENWIK8_EXPECTED_BYTES=100000000   size check of the input (0: no check)
#   ENWIK8_VALID_BYTES=5000000  ENWIK8_TEST_BYTES=5000000
#   WORKERS (default: nproc), PYTHON, FAIRSEQ_PREPROCESS, FORCE: see scripts/data/data_common.sh
#
# How this differs from the authors' symbols: SRU++ maps the distinct byte values of the
# whole file to 0..V-1 (np.unique) and the newline is an ordinary symbol. Here the
# dictionary comes from train: the newline is </s>, fairseq adds <s>/<pad>/<unk>, and the
# size is padded to a multiple of 8. The symbol sequence is the same, one symbol per byte,
# with one exception: a split that does not end in a newline gets one extra </s> at its end
# (1 symbol in 5M). Bytes seen only in valid/test become <unk>; summary.json lists them
# ("bytes_not_in_train"). The authors read the file in text mode, so a CR byte would have
# been turned into a newline; summary.json reports "cr_bytes".
set -euo pipefail
# shellcheck source=scripts/data/data_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/data_common.sh"

input_output "enwik8.zip|enwik8|FOLDER OUT_DIR" "$@"
EXPECTED="${ENWIK8_EXPECTED_BYTES:-100000000}"
VALID="${ENWIK8_VALID_BYTES:-5000000}"
TEST="${ENWIK8_TEST_BYTES:-5000000}"
set_workers
for v in EXPECTED VALID TEST; do check_uint "$v" "${!v}"; done

FIX="download it with 'wget http://mattmahoney.net/dc/enwik8.zip' and pass enwik8.zip or the unzipped enwik8 file"
if [ -d "$IN" ]; then
  if [ -f "$IN/enwik8" ]; then IN="$IN/enwik8"
  elif [ -f "$IN/enwik8.zip" ]; then IN="$IN/enwik8.zip"
  else die "no enwik8 or enwik8.zip in folder $IN; $FIX"
  fi
fi
[ -e "$IN" ] || die "input not found: $IN; $FIX"
[ -f "$IN" ] || die "input is not a regular file: $IN; $FIX"
mkdir -p "$OUT"
lock_out_dir "$OUT"
trap 'rm -rf "$OUT/text.tmp" "$OUT/data-bin.tmp"' EXIT

STAMP="enwik8 $(file_id "$IN")
expected=$EXPECTED valid=$VALID test=$TEST"

if stamp_ok "$OUT/text" "$STAMP"; then
  log "skip: $OUT/text is up to date"
else
  rm -rf "$OUT/text.tmp" && mkdir -p "$OUT/text.tmp"
  log "checking and splitting $IN"
  "$PYTHON" "$SCRIPTS_DIR/data_utils.py" enwik8 --input "$IN" --outdir "$OUT/text.tmp" \
    --expected-bytes "$EXPECTED" --valid-bytes "$VALID" --test-bytes "$TEST" \
    >"$OUT/text.tmp/summary.json" || { rm -rf "$OUT/text.tmp"; exit 1; }
  finish_dir "$OUT/text.tmp" "$OUT/text" "$STAMP"
fi
"$PYTHON" - "$OUT/text/summary.json" <<'EOF' >&2
import json, sys
s = json.load(open(sys.argv[1]))
for k, v in s['splits'].items():
    print(f"[prepare_enwik8.sh] {k}: {v['bytes']} bytes, {v['lines']} lines, {v['symbols']} symbols")
print(f"[prepare_enwik8.sh] input sha256 {s['sha256']}; bytes only in valid/test: "
      f"{s['bytes_not_in_train']}; CR bytes: {s['cr_bytes']}")
EOF

binarize "$OUT/text" "$OUT/data-bin" "$STAMP"
log "done: $OUT/data-bin"
