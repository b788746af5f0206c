#!/usr/bin/env bash
# Issue 27: what costs LDC-VAE against RAE-L2? Each variant of LDC-VAE's
# encoder training (one config key away from the `mnist-cpu` preset) is
# trained at each budget and scored on the 1,000 held-out validation images
# (`eval --on validation`), beside LDC-VAE and RAE-L2 (+ its GMM and the OT
# sampler) on the same budget. Resumable: finished runs and evaluations are
# kept. Results: `ldc-vae table OUT --on validation`; docs/LDC-ABLATION.md.
#
#   scripts/ldc-ablation.sh [EPOCHS...]        (default: 2 8)
#   OUT=runs/ldc-ablation SEED=0 VARIANTS="prior-w0 no-noise" scripts/ldc-ablation.sh 2
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# shellcheck disable=SC2086
cargo build --release --quiet $CARGO_FEATURES
BIN=target/release/ldc-vae
OUT="${OUT:-runs/ldc-ablation}"
SEED="${SEED:-0}"
EPOCHS=("$@")
[ ${#EPOCHS[@]} -eq 0 ] && EPOCHS=(2 8)

# name → the keys that make the variant (the reference rows first).
declare -A SETS=(
  [ldc]=""
  [rae-l2]="model=rae-l2 sampler.kind=ot"
  [prior-w0]="ldc.prior_weight=0"
  [prior-w0.1]="ldc.prior_weight=0.1"
  [prior-w3]="ldc.prior_weight=3"
  [prior-w10]="ldc.prior_weight=10"
  [sigma2-sqmean]="ldc.sigma2=batch_sq_mean"
  [sigma2-0.01]="ldc.sigma2=0.01"
  [score-bn-batch]="ldc.score_bn=batch"
  [particles-4]="ldc.particles_per_x=4"
  [noise-concat]="net.noise_join=concat"
  [noise-0.1]="ldc.noise_scale=0.1"
  [no-noise]="ldc.noise_scale=0"
  [no-repulsion]="ldc.stein_repulsion=false"
  [enc-lr-x0.3]="ldc.encoder_lr_scale=0.3"
  [enc-lr-x3]="ldc.encoder_lr_scale=3"
)
ORDER=(ldc rae-l2 prior-w0 prior-w0.1 prior-w3 prior-w10 sigma2-sqmean sigma2-0.01 score-bn-batch particles-4
       noise-concat noise-0.1 no-noise no-repulsion enc-lr-x0.3 enc-lr-x3)
read -r -a WANT <<< "${VARIANTS:-${ORDER[*]}}"

log() { printf '\033[1m[ablation]\033[0m %s\n' "$*" >&2; }
for e in "${EPOCHS[@]}"; do
  for v in "${WANT[@]}"; do
    [ -n "${SETS[$v]+x}" ] || { echo "error: unknown variant '$v' (known: ${ORDER[*]})" >&2; exit 2; }
    d="$OUT/e$e/$v"
    args=(--preset mnist-cpu --seed "$SEED" --set "train.epochs=$e")
    for kv in ${SETS[$v]}; do args+=(--set "$kv"); done
    if [ ! -f "$d/summary.json" ]; then
      if [ -f "$d/checkpoint.safetensors" ]; then
        log "e$e $v: resuming"; "$BIN" train --resume "$d"
      else
        log "e$e $v: training (${SETS[$v]:-the preset})"; "$BIN" train "${args[@]}" --out "$d"
      fi
    fi
    if [ ! -f "$d/eval-validation.json" ]; then
      log "e$e $v: evaluating on validation images"
      "$BIN" eval "$d" --on validation --fid-samples 1000 > /dev/null
    fi
  done
done
"$BIN" table "$OUT" --on validation
