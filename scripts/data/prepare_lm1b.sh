#!/usr/bin/env bash
# Prepare the One Billion Word benchmark (Chelba et al. 2013, LM1B) for fairseq, with the
# splits Transformer-XL and SRU++ used.
#
# Download (this script never downloads), as in Transformer-XL's getdata.sh:
#   wget http://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-r13output.tar.gz
#   tar xzf 1-billion-word-language-modeling-benchmark-r13output.tar.gz
#   wget https://github.com/rafaljozefowicz/lm/raw/master/1b_word_vocab.txt   # optional, see LM1B_VOCAB
#
#   usage: scripts/data/prepare_lm1b.sh INPUT_DIR OUT_DIR
#
# INPUT_DIR is the extracted 1-billion-word-language-modeling-benchmark-r13output folder,
# or a folder that contains it. The script reads
#   training-monolingual.tokenized.shuffled/news.en-000NN-of-00100   (99 shards, 00001-00099)
#   heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050
# and writes
#   OUT_DIR/text/train.txt   all training shards concatenated in name order (one sentence per line)
#   OUT_DIR/text/valid.txt   heldout-00000 (as Transformer-XL's getdata.sh does)
#   OUT_DIR/text/test.txt    heldout-00000 as well: Transformer-XL and SRU++ report test
#                            perplexity on it, and it is also their validation file
#   OUT_DIR/text/dict.txt    (with LM1B_VOCAB) the vocabulary in fairseq's "word count" format
#   OUT_DIR/data-bin/        fairseq-preprocess --only-source output
#
# The dictionary:
#   LM1B_VOCAB=path/to/1b_word_vocab.txt   the authors' vocabulary (about 793K words,
#                      the Transformer-XL setup). It is converted with
#                      `scripts/data/data_utils.py vocab-to-dict` and passed as --srcdict. The markers
#                      <S>, </S> and <UNK> are dropped, because fairseq's </s> (the end of every
#                      line) and <unk> take their roles. Word order and counts are kept.
#   unset:             fairseq-preprocess builds the dictionary from train, keeping words
#                      seen at least LM1B_THRESHOLD times (default 3; the benchmark's own
#                      vocabulary kept the words seen 3 or more times).
#
# How this relates to the authors' stream: Transformer-XL/SRU++ wrap each sentence as
# "<S> w1 ... wn <S>" and drop the closing <S> from the inputs, so the stream reads
# "<S> a1 .. an <S> b1 .." and predicts a1 .. an, <S>, b1 ..: n+1 targets per sentence. Here
# each line ends in </s>, so the stream "a1 .. an </s> b1 .." predicts the same n+1 targets
# per sentence, with </s> in the role of <S>. The authors shuffled the sentences within each shard
# and the shard order during training. Here train.txt keeps the file order, and shuffling is
# left to the training task.
#
# Environment:
#   LM1B_VOCAB, LM1B_THRESHOLD (see above)
#   LM1B_VALID=news.en.heldout-00000-of-00050   heldout file used as valid; test stays heldout-00000
#   LM1B_EXPECTED_SHARDS=99   number of training shards the input must have (0: no check)
#   WORKERS (default: nproc), PYTHON, FAIRSEQ_PREPROCESS, FORCE: see scripts/data/data_common.sh
set -euo pipefail
# shellcheck source=scripts/data/data_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/data_common.sh"

input_output "INPUT_DIR OUT_DIR" "$@"
R13=1-billion-word-language-modeling-benchmark-r13output
VOCAB="${LM1B_VOCAB:-}"
THRESHOLD="${LM1B_THRESHOLD:-3}"
VALID_NAME="${LM1B_VALID:-news.en.heldout-00000-of-00050}"
TEST_NAME=news.en.heldout-00000-of-00050
SHARDS="${LM1B_EXPECTED_SHARDS:-99}"
set_workers
for v in THRESHOLD SHARDS; do check_uint "$v" "${!v}"; done
FIX="download and extract $R13.tar.gz (see the header of $PROG) and pass the extracted folder"

case "$IN" in
  *.tar.gz|*.tgz) die "$IN is the archive; extract it first (tar xzf $IN) and pass the $R13 folder" ;;
esac
[ -e "$IN" ] || die "input not found: $IN; $FIX"
[ -d "$IN" ] || die "input is not a folder: $IN; $FIX"
if [ ! -d "$IN/training-monolingual.tokenized.shuffled" ] && [ -d "$IN/$R13" ]; then
  IN="$IN/$R13"
fi
TRAIN_DIR="$IN/training-monolingual.tokenized.shuffled"
HELD_DIR="$IN/heldout-monolingual.tokenized.shuffled"
[ -d "$TRAIN_DIR" ] || die "missing folder $TRAIN_DIR; $FIX"
[ -d "$HELD_DIR" ] || die "missing folder $HELD_DIR; $FIX"
for f in "$HELD_DIR/$TEST_NAME" "$HELD_DIR/$VALID_NAME"; do
  [ -f "$f" ] || die "missing file $f; $FIX"
  [ -s "$f" ] || die "empty file $f; $FIX"
done
mapfile -t TRAIN_FILES < <(find "$TRAIN_DIR" -maxdepth 1 -type f -name 'news.en-*-of-*' | LC_ALL=C sort)
[ "${#TRAIN_FILES[@]}" -gt 0 ] || die "no training shards news.en-*-of-* in $TRAIN_DIR; $FIX"
if [ "$SHARDS" != 0 ] && [ "${#TRAIN_FILES[@]}" -ne "$SHARDS" ]; then
  die "$TRAIN_DIR has ${#TRAIN_FILES[@]} training shards, expected $SHARDS (incomplete" \
      "extraction?); $FIX. Set LM1B_EXPECTED_SHARDS=0 to skip this check."
fi
for f in "${TRAIN_FILES[@]}"; do [ -s "$f" ] || die "empty training shard $f; $FIX"; done
if [ -n "$VOCAB" ]; then
  [ -f "$VOCAB" ] || die "LM1B_VOCAB file not found: $VOCAB (wget https://github.com/rafaljozefowicz/lm/raw/master/1b_word_vocab.txt)"
fi

mkdir -p "$OUT"
lock_out_dir "$OUT"
trap 'rm -rf "$OUT/text.tmp" "$OUT/data-bin.tmp"' EXIT
STAMP="lm1b $(file_id "$IN")
valid=$VALID_NAME test=$TEST_NAME vocab=${VOCAB:+$(file_id "$VOCAB")}"

if stamp_ok "$OUT/text" "$STAMP"; then
  log "skip: $OUT/text is up to date"
else
  rm -rf "$OUT/text.tmp" && mkdir -p "$OUT/text.tmp"
  log "concatenating ${#TRAIN_FILES[@]} training shards"
  cat "${TRAIN_FILES[@]}" >"$OUT/text.tmp/train.txt"
  cp "$HELD_DIR/$VALID_NAME" "$OUT/text.tmp/valid.txt"
  cp "$HELD_DIR/$TEST_NAME" "$OUT/text.tmp/test.txt"
  if [ -n "$VOCAB" ]; then
    cp "$VOCAB" "$OUT/text.tmp/$(basename "$VOCAB")"
    "$PYTHON" "$SCRIPTS_DIR/data_utils.py" vocab-to-dict --input "$VOCAB" \
      --output "$OUT/text.tmp/dict.txt" >&2 || die "cannot convert $VOCAB (see above)"
  fi
  finish_dir "$OUT/text.tmp" "$OUT/text" "$STAMP"
fi
for s in train valid test; do
  log "$s: $(wc -c <"$OUT/text/$s.txt") bytes, $(wc -l <"$OUT/text/$s.txt") lines"
done

if [ -n "$VOCAB" ]; then
  binarize "$OUT/text" "$OUT/data-bin" "$STAMP" --srcdict "$OUT/text/dict.txt"
else
  binarize "$OUT/text" "$OUT/data-bin" "$STAMP" --thresholdsrc "$THRESHOLD"
fi
log "done: $OUT/data-bin"
