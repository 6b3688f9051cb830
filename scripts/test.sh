#!/usr/bin/env bash
# Sets up and runs the whole test suite: unit tests, and end-to-end tests that start the
# real agent against the simulated NVML and check its output with promtool.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh promtool onnxruntime
echo "test: using $(command -v promtool) and $GANTRY_ONNXRUNTIME"
cargo build --workspace --locked
cargo test --workspace --locked
