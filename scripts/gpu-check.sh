#!/usr/bin/env bash
# The CUDA path, proved in one run (issue 16, item 4). On a machine with one
# NVIDIA GPU:
#   1. set-up with the CUDA libraries (LDC_VAE_CUDA=1 source scripts/setup.sh),
#      release build with --features cuda;
#   2. LDC-VAE at the paper's width (preset `mnist`) on the GPU: 300 joint steps
#      stopped at 200 and resumed, 100 sampler steps, a sample grid, an
#      evaluation with 500 FID images;
#   3. `bench --no-peers` on the GPU (LDC and RAE-L2 at the paper's width);
#   4. a CPU-trained RAE-L2 checkpoint evaluated on the CPU and on the GPU:
#      MSEs and FIDs within a relative tolerance (RAE-L2: deterministic encoder,
#      and its ex-post GMM samples on the CPU, so both devices see the same
#      latents; only float rounding differs);
#   5. a GPU run stopped and resumed against the same run uninterrupted: every
#      tensor of the two checkpoints within a relative tolerance.
# About 5 minutes of GPU time (most of it the set-up's download and the build).
#
#   scripts/gpu-check.sh [--dry-run] [--bin PATH] [--work DIR] [--data DIR] [--keep]
#
# --dry-run runs the same steps on the CPU at tiny sizes (width 1/16, a few
# steps, 4 FID images, no FID row in the bench): what tests/gpu_check.rs runs in the default suite.
# There both "devices" are the CPU, so every comparison must be bit-identical.
# --bin uses that ldc-vae binary instead of building one; with --dry-run it
# also skips the set-up (the binary carries its libtorch's path; the test
# suite that runs it has the set-up's environment already).
# --data is where MNIST is fetched to (default ./data) and read from
# (LDC_VAE_DATA); tests/gpu_check.rs passes a temporary folder.
#
# Tolerances on the GPU (override with GPU_CHECK_EVAL_TOL / GPU_CHECK_RESUME_TOL):
#   CPU vs GPU evaluation: 1e-3 relative on each MSE and FID (TF32 is turned
#   off, NVIDIA_TF32_OVERRIDE=0, so the two differ by float32 summation order);
#   stopped-and-resumed vs uninterrupted: 1e-4 relative per tensor (cuDNN may
#   pick non-deterministic backward algorithms, which libtorch's C API does
#   not let tch forbid; the script prints the largest difference, 0 = identical).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
BIN=""
WORK=""
DATA=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --bin) BIN="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    --data) DATA="$2"; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1m[gpu-check]\033[0m %s\n' "$*" >&2; }
T0=$SECONDS
declare -a SUMMARY
step() { local t=$SECONDS; say "$1"; shift; "$@"; SUMMARY+=("$(printf '%-58s %4d s' "$CUR" $((SECONDS - t)))"); }

if [ "$DRY" = 1 ]; then
  DEV=cpu; PRESET=mnist-cpu
  # Tiny: width 1/16 (the preset's), 2,000 training images, 12 joint steps.
  SIZE=(--set data.train_limit=2000 --set train.checkpoint_every=1000000)
  STEPS=12; STOP=8; POST=4; FID=4; EVAL_TOL=0; RESUME_TOL=0
  BENCH=(--no-paper --no-fid --models ldc --steps 1 --warmup 0 --rounds 1)
else
  DEV=cuda; PRESET=mnist
  SIZE=(--set train.checkpoint_every=1000000)
  STEPS=300; STOP=200; POST=100; FID=500
  EVAL_TOL="${GPU_CHECK_EVAL_TOL:-1e-3}"; RESUME_TOL="${GPU_CHECK_RESUME_TOL:-1e-4}"
  BENCH=(--models ldc,rae-l2 --rounds 3)
  export LDC_VAE_CUDA=1
fi

if [ "$DRY" = 0 ] || [ -z "$BIN" ]; then
  # shellcheck disable=SC1091
  source scripts/setup.sh
fi
if [ -z "$BIN" ]; then
  CUR="build (release${CARGO_FEATURES:+, $CARGO_FEATURES})"
  # shellcheck disable=SC2086
  step "$CUR" cargo build --release --quiet $CARGO_FEATURES
  BIN=target/release/ldc-vae
fi
[ -x "$BIN" ] || { echo "gpu-check: no binary at $BIN" >&2; exit 1; }
if [ "$DEV" = cuda ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
fi

if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/ldc-vae-gpu-check.XXXXXX"); fi
mkdir -p "$WORK"
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
say "work folder $WORK (device $DEV, preset $PRESET, binary $BIN)"
DATA="${DATA:-data}"
"$BIN" data fetch mnist --dir "$DATA" >/dev/null
export LDC_VAE_DATA="$DATA"

# 2. train (stopped, resumed), sample, evaluate.
A="$WORK/ldc"
COMMON=(--preset "$PRESET" --device "$DEV" "${SIZE[@]}" --set train.max_steps=$STEPS --set ldc.sampler_refine_steps=$POST)
CUR="train ldc ($PRESET on $DEV): $STOP of $STEPS steps, stop"
step "$CUR" "$BIN" train "${COMMON[@]}" --stop-after $STOP --out "$A"
CUR="resume to $STEPS steps + $POST sampler steps"
step "$CUR" "$BIN" train --resume "$A"
[ -f "$A/summary.json" ] || { echo "gpu-check: the resumed run did not finish ($A/summary.json missing)" >&2; exit 1; }
CUR="sample a 64-image grid"
step "$CUR" "$BIN" sample "$A" --n 64 --out "$A/grid.png"
CUR="eval ($FID FID images, on $DEV)"
step "$CUR" "$BIN" eval "$A" --fid-samples $FID --no-tsne >/dev/null

# 3. bench, ours only.
CUR="bench --no-peers ($DEV)"
step "$CUR" "$BIN" bench --no-peers --preset "$PRESET" --set device=$DEV "${BENCH[@]}" --out "$WORK/bench.md"
cat "$WORK/bench.md" >&2

# 4. one CPU-trained checkpoint, evaluated on both devices.
C="$WORK/rae-cpu"
CUR="train rae-l2 on the CPU (mnist-cpu, $STEPS steps)"
step "$CUR" "$BIN" train --preset mnist-cpu --model rae-l2 --device cpu "${SIZE[@]}" --set train.max_steps=$STEPS --out "$C"
CUR="eval the CPU checkpoint on the CPU"
step "$CUR" "$BIN" eval "$C" --fid-samples $FID --no-tsne --device cpu >/dev/null
cp "$C/eval.json" "$WORK/eval-on-cpu.json"
CUR="eval the CPU checkpoint on $DEV"
step "$CUR" "$BIN" eval "$C" --fid-samples $FID --no-tsne --device $DEV >/dev/null
cp "$C/eval.json" "$WORK/eval-on-device.json"
say "CPU vs $DEV evaluation of one checkpoint (tolerance $EVAL_TOL relative)"
python3 scripts/compare_runs.py eval "$WORK/eval-on-cpu.json" "$WORK/eval-on-device.json" "$EVAL_TOL"

# 5. stopped and resumed == uninterrupted, on the device.
HALF=$((STEPS / 2))
R1=(--preset "$PRESET" --device "$DEV" "${SIZE[@]}" --set train.max_steps=$HALF --skip-post)
CUR="uninterrupted: $HALF steps on $DEV"
step "$CUR" "$BIN" train "${R1[@]}" --out "$WORK/whole"
CUR="the same, stopped after $((HALF / 2)) and resumed"
step "$CUR" "$BIN" train "${R1[@]}" --stop-after $((HALF / 2)) --out "$WORK/split"
"$BIN" train --resume "$WORK/split" --skip-post
say "stopped-and-resumed vs uninterrupted checkpoints (tolerance $RESUME_TOL relative)"
python3 scripts/compare_runs.py ckpt "$WORK/whole/checkpoint.safetensors" "$WORK/split/checkpoint.safetensors" "$RESUME_TOL"

say "all checks passed on $DEV in $((SECONDS - T0)) s:"
printf '  %s\n' "${SUMMARY[@]}" >&2
echo "gpu-check: ok ($DEV, $((SECONDS - T0)) s)"
