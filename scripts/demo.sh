#!/usr/bin/env bash
# Sets up what `gantry demo` needs on a fresh machine — ONNX Runtime's library from the
# PyPI wheel (downloaded once into .cache/), and a build of gantry, gantry-agent and the
# simulated NVML library — then runs it: an embedded controller and three agents on
# simulated GPUs over loopback; enrollment, a signed bundle, a canary rollout, an
# inference request, an automatic rollback, the fleet table and the audit report.
# Arguments go to `gantry demo` (see `gantry demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh onnxruntime
echo "demo: building gantry, gantry-agent and the simulated NVML library" >&2
cargo build --locked -p gantry-controller -p gantry-agent -p gantry-nvml-sim
exec ./target/debug/gantry demo "$@"
