#!/usr/bin/env bash
# Train SRU++ on enwik8 with the authors' recipe (asappresearch/sru experiments/srupp_experiments
# train_enwik8.py; SPEC.md 3.2-3.4).
#
#   usage: scripts/recipes/train_enwik8.sh DATA_BIN [extra fairseq-train options...]
#   e.g.   scripts/data/prepare_enwik8.sh enwik8.zip data/enwik8
#          VARIANT=base scripts/recipes/train_enwik8.sh data/enwik8/data-bin
#          scripts/recipes/eval_enwik8.sh data/enwik8/data-bin checkpoints/enwik8_base/checkpoint_best.pt
#
# Expected (test set, fairseq-eval-lm as in scripts/recipes/eval_enwik8.sh; ANCHORS.md):
#   VARIANT   --arch                  d / d'      params  authors' test bpc   authors' cost
#   base      srupp_lm_enwik8_base    3072 / 768  108M    0.97 (README 0.974) 6 GPU-days (V100, fp16)
#   large     srupp_lm_enwik8_large   6016 / 752  195M    0.95 (README 0.953) 13 GPU-days
#   base, attention in 2 of 10 layers: VARIANT=base, then --attention-every 5: 98M, 0.98 bpc, 4 GPU-days
#   (the README's "large" command trained d=4096/d'=1024, 191M, 0.96: VARIANT=large plus
#    --hidden-dim 4096 --proj-dim 1024)
#
# The authors' settings used here (8 GPUs, all variants): 10 layers, 1 head, attention in every
# layer, memory = the previous 1024-token segment; RAdam with decoupled weight decay 0.1 on all
# parameters, betas (0.9, 0.999), eps 1e-8; lr warm-up over 16k updates (lr*(n+1)/16k), then a
# cosine over the global step down to 0 at 400k updates (--lr-scheduler srupp_cosine); gradient
# norm clipped at 1.0; mixed precision (--amp); seed 1234; dev evaluated every 8000 updates and
# the best checkpoint kept (--amp-batch-retries 0: a batch whose gradients overflow is skipped,
# as torch's GradScaler does, instead of being re-run). base: 4 streams x 8 GPUs = 32 streams
# of 1024 tokens per update, lr 3e-4, dropout 0.22. large: 8 x 8 = 64 streams, lr 4e-4,
# dropout 0.32.
#
# Fewer GPUs. The task cuts the training split into (streams per GPU) x (GPUs) contiguous streams,
# and every update takes the next 1024-token segment of each stream; the state (c and the
# attention memory) carries from one segment to the next. With G GPUs this script therefore
# keeps the authors' 32 (base) / 64 (large) streams by giving each GPU 32/G (64/G) of them with
# --update-freq 1: the same streams, the same segments in every update, the same data order as
# on 8 GPUs; only the memory per GPU grows (ANCHORS.md: 5.5 GB peak at 4 streams on an H100 for
# base, and activations grow with the number of streams). If that does not fit, UPDATE_FREQ=k
# gives each GPU 32/(G*k) streams and accumulates k batches per update. That is NOT the same
# training: there are k times fewer streams, each k times longer, and one update sums k
# consecutive segments of the same streams (correlated, where the authors' update sees 32
# unrelated positions of the corpus). It also carries the state from micro-batch to micro-batch
# inside an update. Prefer --checkpoint-activations (less memory, same math) before UPDATE_FREQ.
#
# Several nodes: run this script on every node with NNODES=N NODE_RANK=i MASTER_ADDR=host-of-node-0
# [MASTER_PORT=29500] (the batch is split over all N x NGPUS GPUs). LAUNCHER=torchrun (default)
# starts one process per GPU with torch.distributed.run; LAUNCHER=fairseq uses fairseq's own
# spawner: --distributed-init-method tcp://MASTER_ADDR:MASTER_PORT --distributed-rank
# NODE_RANK*NGPUS --distributed-world-size N*NGPUS.
#
# Environment: VARIANT (base | large), SAVE_DIR, NGPUS, NNODES, NODE_RANK, MASTER_ADDR,
# MASTER_PORT, LAUNCHER, UPDATE_FREQ, BATCH_SIZE, PYTHON, USER_DIR, DRY_RUN=1 (print the command
# only): see scripts/recipes/train_eval_common.sh. Extra arguments go to fairseq-train last, so they win.
set -euo pipefail
# shellcheck source=scripts/recipes/train_eval_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/train_eval_common.sh"

[ $# -ge 1 ] || die "usage: $PROG DATA_BIN [extra fairseq-train options...]"
DATA="$1"
shift
check_data "$DATA" "prepare it with scripts/data/prepare_enwik8.sh enwik8.zip OUT and pass OUT/data-bin" \
  train valid
check_python

VARIANT="${VARIANT:-base}"
case "$VARIANT" in
  base)  ARCH=srupp_lm_enwik8_base;  STREAMS=32; LR=3e-4 ;;
  large) ARCH=srupp_lm_enwik8_large; STREAMS=64; LR=4e-4 ;;
  *) die "VARIANT must be base or large, got '$VARIANT'" ;;
esac
SAVE_DIR="${SAVE_DIR:-checkpoints/enwik8_$VARIANT}"
setup_parallel "$STREAMS" 16  # the authors' periodic dev evaluation used 16 streams

run "${LAUNCH[@]}" "$DATA" \
  --user-dir "$USER_DIR" --task srupp_stream_lm --arch "$ARCH" \
  --tokens-per-sample 1024 --batch-size "$BATCH" --update-freq "$UPDATE_FREQ" \
  --batch-size-valid "$VALID_BATCH" \
  --criterion cross_entropy \
  --optimizer radam --radam-betas '(0.9, 0.999)' --radam-eps 1e-8 --weight-decay 0.1 \
  --lr "$LR" --lr-scheduler srupp_cosine --warmup-updates 16000 --max-update 400000 \
  --clip-norm 1.0 --amp --amp-batch-retries 0 --seed 1234 \
  "${DIST[@]}" \
  --validate-interval-updates 8000 --save-interval-updates 8000 --keep-interval-updates 1 \
  --no-epoch-checkpoints --best-checkpoint-metric loss \
  --log-format simple --log-interval 200 \
  --save-dir "$SAVE_DIR" \
  "$@"
