#!/usr/bin/env bash
# `ldc-vae bench` from a fresh clone: set-up (once), the peers' venv (once),
# a release build, then the benchmark; arguments go to `ldc-vae bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ldc_vae_peers_venv
cargo build --release $CARGO_FEATURES
exec target/release/ldc-vae bench "$@"
