#!/usr/bin/env bash
# Builds target/gantry-agent-<version>-<arch>.tar.gz for hosts without Debian packages.
# Unpack with `tar -C / -xzf …`: it holds usr/bin/gantry-agent, the simulated NVML in
# usr/lib/gantry, the systemd unit, an example /etc/gantry/agent.toml and the README.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p gantry-agent -p gantry-nvml-sim
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
name="gantry-agent-$version-$(uname -m)"
root="target/$name"
rm -rf "$root"
install -D -m 0755 target/release/gantry-agent "$root/usr/bin/gantry-agent"
install -D -m 0644 target/release/libgantry_nvml_sim.so "$root/usr/lib/gantry/libgantry_nvml_sim.so"
install -D -m 0644 systemd/gantry-agent.service "$root/lib/systemd/system/gantry-agent.service"
install -D -m 0644 packaging/agent.toml "$root/etc/gantry/agent.toml"
install -D -m 0644 README.md "$root/usr/share/doc/gantry-agent/README.md"
tar -C "$root" --owner=0 --group=0 -czf "target/$name.tar.gz" .
echo "target/$name.tar.gz"
