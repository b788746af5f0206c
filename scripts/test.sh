#!/usr/bin/env bash
# The README's test command: set-up (once), then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --release --all-targets "$@"
