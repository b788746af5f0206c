#!/usr/bin/env bash
# The README's main job: train LDC-VAE on MNIST with the CPU preset, evaluate
# it (FID, latent consistency, t-SNE, grids) and write the report.
# Resumable: a finished step is skipped, an interrupted training resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
RUN="${RUN:-runs/main-job}"
PRESET="${PRESET:-mnist-cpu}"

log() { printf '\033[1m[main-job]\033[0m %s\n' "$*" >&2; }

log "building (first time: ~2 minutes)"
cargo build --release --quiet $CARGO_FEATURES
BIN=target/release/ldc-vae

log "data: MNIST"
"$BIN" data fetch mnist

if [ -f "$RUN/summary.json" ]; then
  log "training already complete in $RUN (delete it to retrain)"
elif [ -f "$RUN/checkpoint.safetensors" ]; then
  log "resuming the interrupted training in $RUN"
  "$BIN" train --resume "$RUN"
else
  log "training LDC-VAE, preset $PRESET, into $RUN"
  "$BIN" train --preset "$PRESET" --out "$RUN"
fi

log "evaluating $RUN"
"$BIN" eval "$RUN"

log "writing the report"
"$BIN" report "$RUN" --out "$RUN/report"
log "done: open $RUN/report/report.html (Markdown twin: $RUN/report/report.md)"
