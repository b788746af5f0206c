#!/usr/bin/env bash
# The README's test command: set-up (once), then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The PyTorch peer of tests/peer_equivalence.rs (created once, then reused).
ldc_vae_peers_venv
# Open MPI for the `mpi` feature's tests (tests/distributed.rs: mpirun -np 2).
ldc_vae_openmpi
# Test binaries run tests on parallel threads; one libtorch thread per test
# keeps them from fighting over the cores (OpenMP spin-waits make an
# oversubscribed 2-core machine many times slower).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# LDC_VAE_CUDA=1 (set before this script) builds the tests with `--features cuda`
# too: setup.sh sets CARGO_FEATURES accordingly.
# shellcheck disable=SC2086
cargo test --release --all-targets --features mpi $CARGO_FEATURES "$@"
