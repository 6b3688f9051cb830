#!/usr/bin/env bash
# Runs the benchmarks for the figures in DESIGN.md, with their references installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh node-exporter onnxruntime prometheus python-clients
cargo bench -p gantry-agent --bench footprint --locked
cargo bench -p gantry-controller --bench verify --locked
cargo bench -p gantry-agent --bench buffer --locked
cargo bench -p gantry-controller --bench ingest --locked
cargo bench -p gantry-controller --bench rollout --locked
cargo bench -p gantry-controller --bench audit --locked
cargo bench -p gantry-controller --bench console --locked
cargo bench -p gantry-controller --bench remote_write --locked
cargo bench -p gantry-agent --bench inference --locked
cargo build --release --workspace --locked
cargo bench -p gantry-tests --bench delivery --locked
# Every fuzz target for 30 s from its seeds (cargo-fuzz: cargo install cargo-fuzz --locked).
if cargo fuzz --version >/dev/null 2>&1; then
    fuzz/run-all.sh 30
else
    echo "bench: fuzzing skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
fi
