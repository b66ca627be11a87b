# shellcheck shell=bash disable=SC2034  # (LAUNCH, DIST, EVAL_* are read by the sourcing script)
# Shared helpers of scripts/recipes/train_*.sh and scripts/recipes/eval_*.sh. Source it; don't run it.
#
# Environment understood by every recipe:
#   PYTHON       interpreter with torch + fairseq (default: python3; the repo's .venv if active)
#   USER_DIR     the fairseq_srupp package folder (default: this repo's fairseq_srupp/)
#   DRY_RUN=1    print the command and exit (no GPU needed; NGPUS defaults to 8 then)
# Training only:
#   SAVE_DIR     checkpoint folder (default: checkpoints/<recipe>_<variant>)
#   NGPUS        GPUs per node (default: all visible to torch)
#   NNODES       number of nodes (default 1); with NNODES > 1 also NODE_RANK (0..NNODES-1),
#                MASTER_ADDR, MASTER_PORT (default 29500) and LAUNCHER (torchrun | fairseq)
#   UPDATE_FREQ  gradient accumulation (default 1); see "Fewer GPUs" in the recipe headers
#   BATCH_SIZE   streams per GPU (default: the global streams / (world size * UPDATE_FREQ))

RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="$(basename "$0")"
PYTHON="${PYTHON:-python3}"
USER_DIR="${USER_DIR:-$(cd "$RECIPE_DIR/../../fairseq_srupp" && pwd)}"

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

log() {
  echo "[$PROG] $*" >&2
}

# check_uint NAME VALUE
check_uint() {
  [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got '$2'"
}

# check_data DIR PREPARE_HINT SPLIT...: DIR is fairseq-preprocess output holding the splits.
check_data() {
  local dir="$1" hint="$2" split
  shift 2
  [ -n "$dir" ] || die "no data folder given; $hint"
  [ -d "$dir" ] || die "data folder not found: $dir; $hint"
  [ -s "$dir/dict.txt" ] || die "$dir has no dict.txt: pass the fairseq-preprocess output folder (OUT/data-bin of the prepare script); $hint"
  for split in "$@"; do
    if [ ! -s "$dir/$split.bin" ] || [ ! -s "$dir/$split.idx" ]; then
      die "$dir has no $split.bin/$split.idx; $hint"
    fi
  done
}

# check_python: PYTHON imports fairseq and the plugin folder exists.
check_python() {
  [ -f "$USER_DIR/__init__.py" ] || die "USER_DIR=$USER_DIR is not the fairseq_srupp package folder"
  [ "${DRY_RUN:-0}" = 1 ] && return 0
  "$PYTHON" -c 'import fairseq, torch' >/dev/null 2>&1 \
    || die "$PYTHON cannot import torch and fairseq: activate the environment (scripts/setup_env.sh) or set PYTHON"
}

# gpus_per_node: NGPUS, else the number of GPUs torch sees (8 in a dry run).
gpus_per_node() {
  if [ -n "${NGPUS:-}" ]; then
    check_uint NGPUS "$NGPUS"
    echo "$NGPUS"
  elif [ "${DRY_RUN:-0}" = 1 ]; then
    echo 8
  else
    "$PYTHON" -c 'import torch; print(torch.cuda.device_count())'
  fi
}

# setup_parallel GLOBAL_STREAMS GLOBAL_VALID_STREAMS: sets WORLD, BATCH, VALID_BATCH, UPDATE_FREQ,
# LAUNCH (array: the command prefix that runs fairseq_cli.train) and DIST (array: the
# --distributed-* options).
setup_parallel() {
  local global="$1" valid="$2" gpus nnodes
  gpus="$(gpus_per_node)"
  [ "$gpus" -ge 1 ] || die "no CUDA GPU visible: these recipes train on GPUs (set NGPUS, or DRY_RUN=1 to print the command)"
  nnodes="${NNODES:-1}"
  check_uint NNODES "$nnodes"
  [ "$nnodes" -ge 1 ] || die "NNODES must be >= 1"
  WORLD=$((gpus * nnodes))
  UPDATE_FREQ="${UPDATE_FREQ:-1}"
  check_uint UPDATE_FREQ "$UPDATE_FREQ"
  [ "$UPDATE_FREQ" -ge 1 ] || die "UPDATE_FREQ must be >= 1"
  if [ -n "${BATCH_SIZE:-}" ]; then
    check_uint BATCH_SIZE "$BATCH_SIZE"
    BATCH="$BATCH_SIZE"
  else
    [ $((global % (WORLD * UPDATE_FREQ))) -eq 0 ] \
      || die "the authors' $global streams do not split evenly over $WORLD GPUs x UPDATE_FREQ=$UPDATE_FREQ; set BATCH_SIZE (streams per GPU) yourself"
    BATCH=$((global / (WORLD * UPDATE_FREQ)))
  fi
  [ "$BATCH" -ge 1 ] || die "BATCH_SIZE must be >= 1"
  if [ $((BATCH * WORLD * UPDATE_FREQ)) -ne "$global" ]; then
    log "warning: $BATCH streams x $WORLD GPUs x update-freq $UPDATE_FREQ != the authors' $global streams per update"
  fi
  VALID_BATCH=$((valid / WORLD))
  [ "$VALID_BATCH" -ge 1 ] || VALID_BATCH=1
  DIST=(--distributed-world-size "$WORLD")
  LAUNCH=("$PYTHON" -m fairseq_cli.train)
  if [ "$nnodes" -gt 1 ]; then
    [ -n "${MASTER_ADDR:-}" ] || die "NNODES=$nnodes needs MASTER_ADDR (the address of node 0)"
    [ -n "${NODE_RANK:-}" ] || die "NNODES=$nnodes needs NODE_RANK (0..$((nnodes - 1)) on each node)"
    check_uint NODE_RANK "$NODE_RANK"
    [ "$NODE_RANK" -lt "$nnodes" ] || die "NODE_RANK must be below NNODES=$nnodes"
    local port="${MASTER_PORT:-29500}"
    case "${LAUNCHER:-torchrun}" in
      torchrun)
        LAUNCH=("$PYTHON" -m torch.distributed.run --nnodes "$nnodes" --nproc_per_node "$gpus"
                --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR" --master_port "$port"
                -m fairseq_cli.train) ;;
      fairseq)
        DIST+=(--distributed-init-method "tcp://$MASTER_ADDR:$port"
               --distributed-rank $((NODE_RANK * gpus))) ;;
      *) die "LAUNCHER must be torchrun or fairseq, got '${LAUNCHER}'" ;;
    esac
  fi
  log "$WORLD GPU(s) ($nnodes node(s) x $gpus): --batch-size $BATCH --update-freq $UPDATE_FREQ" \
      "($((BATCH * WORLD * UPDATE_FREQ)) streams per update; the authors: $global)," \
      "--batch-size-valid $VALID_BATCH"
}

# run CMD...: print the command; run it unless DRY_RUN=1.
run() {
  printf '%q ' "$@" >&2
  echo >&2
  [ "${DRY_RUN:-0}" = 1 ] && return 0
  "$@"
}

# eval_lm DATA CHECKPOINT SUBSET WINDOW LOG [extra fairseq-eval-lm args...]: the authors' final
# evaluation: one stream (batch size 1) on one GPU in fp32, segments of WINDOW tokens, each token
# attending to at most WINDOW earlier positions (attn_window), with WINDOW positions of memory.
eval_lm() {
  local data="$1" ckpt="$2" subset="$3" window="$4" logfile="$5"
  shift 5
  [ -f "$ckpt" ] || die "checkpoint not found: $ckpt"
  check_uint WINDOW "$window"
  local cmd=("$PYTHON" -m fairseq_cli.eval_lm "$data" --path "$ckpt" --user-dir "$USER_DIR"
             --task srupp_stream_lm --gen-subset "$subset" --batch-size 1
             --tokens-per-sample "$window" --distributed-world-size 1
             --model-overrides "{'attn_window': $window, 'mem_len': $window, 'carry_state': True}"
             "$@")
  printf '%q ' "${cmd[@]}" >&2
  echo >&2
  [ "${DRY_RUN:-0}" = 1 ] && return 0
  mkdir -p "$(dirname "$logfile")"
  "${cmd[@]}" 2>&1 | tee "$logfile"
  local line
  line="$(grep -E 'Loss \(base 2\): [0-9.]+, Perplexity: [0-9.]+' "$logfile" | tail -n 1)" \
    || die "fairseq-eval-lm printed no 'Loss (base 2)' line; see $logfile"
  EVAL_LOSS2="$(sed -E 's/.*Loss \(base 2\): ([0-9.]+).*/\1/' <<<"$line")"
  EVAL_PPL="$(sed -E 's/.*Perplexity: ([0-9.]+).*/\1/' <<<"$line")"
}
