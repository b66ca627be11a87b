#!/usr/bin/env bash
# Train SRU++ on WikiText-103 with the authors' recipe (asappresearch/sru
# experiments/srupp_experiments/train_wt103.py; SPEC.md 3.1-3.4).
#
#   usage: scripts/recipes/train_wikitext103.sh DATA_BIN [extra fairseq-train options...]
#   e.g.   scripts/data/prepare_wikitext103.sh wikitext-103-v1.zip data/wt103
#          VARIANT=base scripts/recipes/train_wikitext103.sh data/wt103/data-bin
#          scripts/recipes/eval_wikitext103.sh data/wt103/data-bin checkpoints/wt103_base/checkpoint_best.pt
#
# Expected (test set, fairseq-eval-lm with a 2560-token attention window as in
# scripts/recipes/eval_wikitext103.sh; ANCHORS.md):
#   VARIANT   --arch                          d / d'       params  authors' test ppl  authors' cost
#   base      srupp_lm_wiki103_base_txl       3072 / 768   148M    18.3 (dev 17.5)    8 GPU-days
#   large     srupp_lm_wiki103_large_txl      5952 / 744   234M    17.1 (dev 16.4)    15 GPU-days
#   large_k5  srupp_lm_wiki103_large_k5_txl   5952 / 744   225M    17.3               11 GPU-days
#             (attention only in layers 5 and 10)
#   (the README's "large" command trained d=4096/d'=1024, 232M, 17.4: VARIANT=large plus
#    --hidden-dim 4096 --proj-dim 1024)
# fairseq's own Transformer (Baevski & Auli, transformer_lm_wiki103): 247M, 18.7 ppl, 22 GPU-days.
#
# The *_txl architectures are the authors' Transformer-XL style adaptive input/softmax (n_e 1024,
# div_val 4, cutoffs 19997/39997/199997, tables and projections tied, biases), trained with
# --criterion txl_adaptive_loss, which works with the default DDP backend. ADAPTIVE=fairseq uses
# fairseq's AdaptiveInput/AdaptiveSoftmax instead (srupp_lm_wiki103_{base,large}; +2-3% parameters,
# see docs/reproducing.md) with --criterion adaptive_loss, which needs --ddp-backend legacy_ddp.
#
# The authors' settings used here (8 GPUs): 10 layers, 1 head; 8 streams x 8 GPUs = 64 streams
# per update, segments (= memory) of 768 tokens (base) or 1024 (large); dropout 0.15 (base) / 0.2
# (large) on the embeddings, attention, layers and adaptive clusters; RAdam with decoupled weight
# decay 0.1 on all parameters; lr 3e-4 warmed up over 16k updates as lr*n/16k (this script starts
# at 0, unlike enwik8's (n+1)/16k: --warmup-from-zero), then a cosine over the global step to 0 at
# 400k updates; gradient norm clipped at 1.0; mixed precision (--amp; --amp-batch-retries 0 skips
# a batch whose gradients overflow, as torch's GradScaler does); seed 1234; dev every 8000
# updates, best checkpoint kept.
#
# Fewer GPUs and several nodes: as in scripts/recipes/train_enwik8.sh. With G GPUs each GPU gets 64/G
# streams and --update-freq 1, which keeps the authors' 64 streams and data order exactly;
# UPDATE_FREQ=k (64/(G*k) streams per GPU) trains on k times fewer, longer streams with k
# consecutive segments per update, which is not the authors' setup; try --checkpoint-activations
# first. Several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host [MASTER_PORT] [LAUNCHER=torchrun|fairseq].
#
# Environment: VARIANT (base | large | large_k5), ADAPTIVE (txl | fairseq), SAVE_DIR, NGPUS,
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, LAUNCHER, UPDATE_FREQ, BATCH_SIZE, PYTHON,
# USER_DIR, DRY_RUN=1: see scripts/recipes/train_eval_common.sh. Extra arguments go to fairseq-train last.
set -euo pipefail
# shellcheck source=scripts/recipes/train_eval_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/train_eval_common.sh"

[ $# -ge 1 ] || die "usage: $PROG DATA_BIN [extra fairseq-train options...]"
DATA="$1"
shift
check_data "$DATA" \
  "prepare it with scripts/data/prepare_wikitext103.sh wikitext-103-v1.zip OUT and pass OUT/data-bin" \
  train valid
check_python

VARIANT="${VARIANT:-base}"
ADAPTIVE="${ADAPTIVE:-txl}"
EXTRA_ARCH=()
case "$VARIANT" in
  base)     ARCH=srupp_lm_wiki103_base;  TOKENS=768 ;;
  large)    ARCH=srupp_lm_wiki103_large; TOKENS=1024 ;;
  large_k5) ARCH=srupp_lm_wiki103_large; TOKENS=1024; EXTRA_ARCH=(--attention-every 5) ;;
  *) die "VARIANT must be base, large or large_k5, got '$VARIANT'" ;;
esac
case "$ADAPTIVE" in
  txl)
    ARCH="${ARCH}_txl"
    if [ "$VARIANT" = large_k5 ]; then ARCH=srupp_lm_wiki103_large_k5_txl; EXTRA_ARCH=(); fi
    CRITERION=(--criterion txl_adaptive_loss) ;;
  fairseq)
    CRITERION=(--criterion adaptive_loss --ddp-backend legacy_ddp) ;;
  *) die "ADAPTIVE must be txl or fairseq, got '$ADAPTIVE'" ;;
esac
SAVE_DIR="${SAVE_DIR:-checkpoints/wt103_$VARIANT}"
setup_parallel 64 16  # the authors' periodic dev evaluation used 16 streams

run "${LAUNCH[@]}" "$DATA" \
  --user-dir "$USER_DIR" --task srupp_stream_lm --arch "$ARCH" "${EXTRA_ARCH[@]}" \
  --tokens-per-sample "$TOKENS" --batch-size "$BATCH" --update-freq "$UPDATE_FREQ" \
  --batch-size-valid "$VALID_BATCH" \
  "${CRITERION[@]}" \
  --optimizer radam --radam-betas '(0.9, 0.999)' --radam-eps 1e-8 --weight-decay 0.1 \
  --lr 3e-4 --lr-scheduler srupp_cosine --warmup-updates 16000 --warmup-from-zero \
  --max-update 400000 \
  --clip-norm 1.0 --amp --amp-batch-retries 0 --seed 1234 \
  "${DIST[@]}" \
  --validate-interval-updates 8000 --save-interval-updates 8000 --keep-interval-updates 1 \
  --no-epoch-checkpoints --best-checkpoint-metric loss \
  --log-format simple --log-interval 200 \
  --save-dir "$SAVE_DIR" \
  "$@"
