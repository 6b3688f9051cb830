#!/usr/bin/env bash
# Makes the outside tools the tests, demo and benchmarks use available, idempotently,
# without installing services: Debian packages are downloaded once into .cache/debs and
# unpacked under .cache/tools (no root needed when the package lists are present).
# Source it to get PATH set:  source scripts/tools.sh promtool [node-exporter]
set -euo pipefail

gantry_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gantry_cache="$gantry_root/.cache"

gantry_fetch_deb() {
    local pkg="$1"
    local debs="$gantry_cache/debs"
    local lists="$gantry_cache/apt/lists"
    mkdir -p "$debs" "$lists/partial" "$gantry_cache/apt/archives/partial" "$gantry_cache/apt/cache"
    local apt_opts=(-q -o "Dir::State::Lists=$lists" -o "Dir::Cache=$gantry_cache/apt/cache"
        -o "Dir::Cache::Archives=$gantry_cache/apt/archives" -o Debug::NoLocking=1)
    if ! compgen -G "$debs/${pkg}_*.deb" >/dev/null; then
        echo "tools: downloading Debian package $pkg" >&2
        if ! (cd "$debs" && apt-get "${apt_opts[@]}" download "$pkg" >/dev/null 2>&1); then
            # A fresh cache has no package lists: fetch them into the cache, then retry.
            apt-get "${apt_opts[@]}" update >/dev/null
            (cd "$debs" && apt-get "${apt_opts[@]}" download "$pkg" >/dev/null)
        fi
    fi
    local target="$gantry_cache/tools/$pkg"
    if [ ! -d "$target" ]; then
        mkdir -p "$target.tmp"
        dpkg-deb -x "$(compgen -G "$debs/${pkg}_*.deb" | head -n 1)" "$target.tmp"
        mv "$target.tmp" "$target"
    fi
    export PATH="$target/usr/bin:$PATH"
}

for tool in "$@"; do
    case "$tool" in
        promtool)
            command -v promtool >/dev/null 2>&1 || gantry_fetch_deb prometheus ;;
        node-exporter)
            command -v prometheus-node-exporter >/dev/null 2>&1 || gantry_fetch_deb prometheus-node-exporter ;;
        *)
            echo "tools: unknown tool $tool" >&2; exit 2 ;;
    esac
done
