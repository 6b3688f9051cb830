#!/usr/bin/env bash
# Builds target/gantry-<version>-<arch>.tar.gz for hosts without Debian packages: the
# same files as the gantry-agent and gantry packages, under one prefix. Unpacked with
# `tar -C / -xzf …` it installs to /usr, /lib/systemd/system and /etc; unpacked anywhere
# else (say /opt/gantry) the binaries find their libraries in <prefix>/usr/lib/gantry.
# What the packages' maintainer scripts do is then the operator's (README, "Other hosts").
# With --cuda, also target/gantry-cuda-<version>-<arch>.tar.gz: the gantry-agent-cuda
# package's files (ONNX Runtime's GPU build and its CUDA runtime in usr/lib/gantry/cuda),
# unpacked under the same prefix; the agent takes that build by default once it is there.
# Prints the tarballs' paths, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=false
case "${1:-}" in
    --cuda) cuda=true ;;
    "") ;;
    *) echo "usage: packaging/build-tarball.sh [--cuda]" >&2; exit 2 ;;
esac
source scripts/tools.sh onnxruntime
ort_dir="$(dirname "$GANTRY_ONNXRUNTIME")"
[ -f "$ort_dir/ThirdPartyNotices.txt" ] || { unset GANTRY_ONNXRUNTIME; source scripts/tools.sh onnxruntime; ort_dir="$(dirname "$GANTRY_ONNXRUNTIME")"; }
cargo build --release --locked -p gantry-agent -p gantry-controller -p gantry-nvml-sim
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
name="gantry-$version-$(uname -m)"
root="target/$name"
rm -rf "$root"
install -D -m 0755 target/release/gantry-agent "$root/usr/bin/gantry-agent"
install -D -m 0755 target/release/gantry "$root/usr/bin/gantry"
strip --strip-unneeded "$root/usr/bin/gantry-agent" "$root/usr/bin/gantry"
install -D -m 0644 target/release/libgantry_nvml_sim.so "$root/usr/lib/gantry/libgantry_nvml_sim.so"
install -D -m 0644 "$GANTRY_ONNXRUNTIME" "$root/usr/lib/gantry/$(basename "$GANTRY_ONNXRUNTIME")"
install -D -m 0644 systemd/gantry-agent.service "$root/lib/systemd/system/gantry-agent.service"
install -D -m 0644 systemd/gantry-controller.service "$root/lib/systemd/system/gantry-controller.service"
install -D -m 0644 packaging/agent.toml "$root/etc/gantry/agent.toml"
install -D -m 0644 packaging/gantry-controller.default "$root/etc/default/gantry-controller"
install -D -m 0644 README.md "$root/usr/share/doc/gantry/README.md"
cat packaging/debian/copyright packaging/debian/copyright-onnxruntime > "$root/usr/share/doc/gantry/copyright"
install -D -m 0644 "$ort_dir/ThirdPartyNotices.txt" "$root/usr/share/doc/gantry/onnxruntime/ThirdPartyNotices.txt"
tar -C "$root" --owner=0 --group=0 --sort=name -czf "target/$name.tar.gz" .
echo "target/$name.tar.gz"

if $cuda; then
    source packaging/cuda-files.sh
    name="gantry-cuda-$version-$(uname -m)"
    root="target/$name"
    rm -rf "$root"
    install -D -m 0644 packaging/debian/copyright "$root/usr/share/doc/gantry-agent-cuda/copyright"
    cuda_install "$root"
    # Two gigabytes of libraries: fast compression.
    tar -C "$root" --owner=0 --group=0 --sort=name -I 'gzip -1' -cf "target/$name.tar.gz" .
    echo "target/$name.tar.gz"
fi
