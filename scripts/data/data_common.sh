# shellcheck shell=bash
# Shared helpers for scripts/data/prepare_*.sh. Source it; don't run it.
#
# Environment understood by every prepare_*.sh script:
#   PYTHON              interpreter for the helper scripts (default: python3)
#   FAIRSEQ_PREPROCESS  command that runs fairseq-preprocess (default: fairseq-preprocess
#                       on PATH, else "$PYTHON -m fairseq_cli.preprocess")
#   WORKERS             fairseq-preprocess --workers (default: per script)
#   FORCE=1             redo every step even when its stamp says it is done
#   BINARIZE=0          stop after writing the text (skip fairseq-preprocess), e.g. for
#                       the authors' own training scripts, which read the text files
#
# Steps are idempotent: each one writes to a temporary name, moves it into place
# when finished and records what it was built from in a ".prepared" stamp. A rerun
# with the same input and settings skips the step; a rerun with different input or
# settings rebuilds it.

# shellcheck disable=SC2034  # used by the scripts that source this file
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
PROG="$(basename "$0")"
export LC_ALL=C.UTF-8

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

log() {
  echo "[$PROG] $*" >&2
}

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"
}

# Sets the array PREPROCESS to the fairseq-preprocess command.
resolve_preprocess() {
  if [ -n "${FAIRSEQ_PREPROCESS:-}" ]; then
    read -r -a PREPROCESS <<<"$FAIRSEQ_PREPROCESS"
  elif command -v fairseq-preprocess >/dev/null 2>&1; then
    PREPROCESS=(fairseq-preprocess)
  elif "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("fairseq_cli") is None)' \
      >/dev/null 2>&1; then
    PREPROCESS=("$PYTHON" -m fairseq_cli.preprocess)
  else
    die "fairseq-preprocess not found: activate the virtualenv that has fairseq" \
        "(e.g. '. .venv/bin/activate'), or set FAIRSEQ_PREPROCESS to the command"
  fi
}

# lock_out_dir DIR: hold DIR/.lock until this script exits, so that two scripts preparing the same
# folder at once (two comparisons sharing a cache) take turns instead of writing the same .tmp
# folders. Needs flock (util-linux); without it the script runs unlocked.
lock_out_dir() {
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$1/.lock"
  if ! flock -n 9; then
    log "waiting for another script that prepares $1"
    flock 9
  fi
}

# stamp_ok DIR TEXT: DIR exists and was built from TEXT (and FORCE is not set).
stamp_ok() {
  [ "${FORCE:-0}" != 1 ] && [ -f "$1/.prepared" ] && [ "$(cat "$1/.prepared")" = "$2" ]
}

# finish_dir TMP DIR TEXT: stamp TMP with TEXT and move it to DIR (replacing DIR).
finish_dir() {
  printf '%s\n' "$3" >"$1/.prepared"
  rm -rf "$2"
  mv "$1" "$2"
}

# file_id PATH: a cheap identity of a file or folder (absolute path, size, mtime).
file_id() {
  local p
  p="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
  if [ -d "$1" ]; then
    echo "$p dir $(find "$1" -maxdepth 3 -type f -printf '%P %s %T@\n' | LC_ALL=C sort | cksum)"
  else
    echo "$p $(stat -c '%s %Y' "$1")"
  fi
}

# input_output USAGE ARG...: exactly two arguments, the input and OUT_DIR; sets IN and OUT.
input_output() {
  local usage="$1"
  shift
  [ $# -eq 2 ] || die "usage: $PROG $usage"
  IN="$1"
  OUT="$2"
}

# set_workers [DEFAULT]: WORKERS (fairseq-preprocess --workers), DEFAULT (nproc) when unset, checked.
set_workers() {
  WORKERS="${WORKERS:-${1:-$(nproc)}}"
  check_uint WORKERS "$WORKERS"
}

# check_uint NAME VALUE: VALUE is a non-negative integer.
check_uint() {
  [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got '$2'"
}

# binarize TEXT_DIR DEST_DIR STAMP [extra fairseq-preprocess args...]
# Runs fairseq-preprocess --only-source on TEXT_DIR/{train,valid,test}.txt into DEST_DIR
# unless DEST_DIR was already built with the same STAMP.
binarize() {
  local text="$1" dest="$2" stamp="$3"
  shift 3
  stamp="$stamp
preprocess: $*"
  if [ "${BINARIZE:-1}" = 0 ]; then
    log "skip: fairseq-preprocess (BINARIZE=0)"
    return 0
  fi
  if stamp_ok "$dest" "$stamp"; then
    log "skip: $dest is up to date"
    return 0
  fi
  resolve_preprocess
  rm -rf "$dest.tmp"
  log "fairseq-preprocess -> $dest"
  if ! "${PREPROCESS[@]}" --only-source \
      --trainpref "$text/train.txt" --validpref "$text/valid.txt" --testpref "$text/test.txt" \
      --destdir "$dest.tmp" --workers "$WORKERS" "$@" >&2; then
    die "fairseq-preprocess failed (command: ${PREPROCESS[*]}); see the messages above"
  fi
  for f in dict.txt train.bin train.idx valid.bin valid.idx test.bin test.idx; do
    [ -s "$dest.tmp/$f" ] || die "fairseq-preprocess did not write $dest.tmp/$f"
  done
  finish_dir "$dest.tmp" "$dest" "$stamp"
  log "dictionary: $(wc -l <"$dest/dict.txt") entries in $dest/dict.txt (+4 specials)"
}
