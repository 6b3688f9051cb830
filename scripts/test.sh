#!/usr/bin/env bash
# Sets up and runs the whole test suite: unit tests, end-to-end tests that start real
# controllers and agents (simulated NVML, real ONNX Runtime, output checked with
# promtool, NVIDIA's GPU dashboards evaluated by a real Prometheus, Triton's own Python
# clients against a node, the web console in Debian's headless Chromium), then the Debian
# packages built, linted, installed, upgraded, removed and purged on this machine
# (packaging/test-deb.sh; as root, else skipped saying so).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh promtool prometheus onnxruntime onnxruntime-cuda python-clients chromium
echo "test: using $(command -v promtool), $(command -v prometheus), $GANTRY_ONNXRUNTIME, $GANTRY_ONNXRUNTIME_CUDA, $GANTRY_PYTHON and $GANTRY_CHROMIUM"
# Layers stay one-way: no module of a crate imports one that imports it back.
python3 scripts/module-cycles.py
cargo build --workspace --locked
cargo test --workspace --locked
# The fuzz targets live outside the workspace (they need libFuzzer): they must still
# build against today's code, so nothing they fuzz can drift away from them.
CARGO_TARGET_DIR="$PWD/target" cargo check --manifest-path fuzz/Cargo.toml --locked
packaging/test-deb.sh
