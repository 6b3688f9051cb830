#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), starting from the seeds here.
# Needs cargo-fuzz: cargo install cargo-fuzz --locked
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    echo "== $target (${seconds}s)"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$seconds"
done
