#!/usr/bin/env bash
# The README's main job: train LDC-VAE on MNIST with the CPU preset, evaluate
# it (FID, latent consistency, t-SNE, grids) and write the report.
# Resumable: a finished step is skipped, an interrupted training resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
RUN="${RUN:-runs/main-job}"
# On a GPU (LDC_VAE_CUDA=1): the paper's width (preset `mnist`, device cuda),
# shortened to GPU_EPOCHS joint epochs (default 10 of the paper's 100) and
# 2,000 sampler-only steps; FID on 10,000 images (the paper's protocol).
# Not yet timed on a GPU by this project. On the CPU: the 1/16-width preset.
TRAIN_SET=()
if [ "${LDC_VAE_CUDA:-0}" = "1" ]; then
  PRESET="${PRESET:-mnist}"
  TRAIN_SET=(--device cuda --set "train.epochs=${GPU_EPOCHS:-10}" --set ldc.sampler_refine_steps=2000)
  FID_SAMPLES="${FID_SAMPLES:-10000}"
else
  PRESET="${PRESET:-mnist-cpu}"
fi
# FID on 1,000 images (issue 14 judges the sampler against the ex-post GMM at
# 1,000+ images; KID and precision/recall need them too) keeps the job near 10
# minutes on 2 cores; `ldc-vae eval RUN --fid-samples 10000` for the paper's
# protocol. The report states the count used.
FID_SAMPLES="${FID_SAMPLES:-1000}"

log() { printf '\033[1m[main-job]\033[0m %s\n' "$*" >&2; }
# Wall time of each phase, printed at the end (the README's budget is for train + eval).
declare -A took
phase() { local t0=$SECONDS; "$@"; took[$CURRENT]=$((SECONDS - t0)); }

log "building (first time in a clone: 4-8 minutes on 2 cores; then seconds)"
CURRENT=build phase cargo build --release --quiet $CARGO_FEATURES
BIN=target/release/ldc-vae

log "data: MNIST"
CURRENT=data phase "$BIN" data fetch mnist

if [ -f "$RUN/summary.json" ]; then
  log "training already complete in $RUN (delete it to retrain)"
elif [ -f "$RUN/checkpoint.safetensors" ]; then
  log "resuming the interrupted training in $RUN"
  CURRENT=train phase "$BIN" train --resume "$RUN"
else
  log "training LDC-VAE, preset $PRESET, into $RUN"
  CURRENT=train phase "$BIN" train --preset "$PRESET" "${TRAIN_SET[@]}" --out "$RUN"
fi

log "evaluating $RUN"
CURRENT=eval phase "$BIN" eval "$RUN" --fid-samples "$FID_SAMPLES"

log "writing the report"
CURRENT=report phase "$BIN" report "$RUN" --out "$RUN/report"
log "time: build ${took[build]:-0} s, data ${took[data]:-0} s, train ${took[train]:-0} s, eval ${took[eval]:-0} s, report ${took[report]:-0} s"
log "done: open $RUN/report/report.html (Markdown twin: $RUN/report/report.md)"
