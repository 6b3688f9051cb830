#!/usr/bin/env bash
# The units under a real systemd: boots a Debian 12 virtual machine with systemd as
# PID 1, installs the packages there and runs packaging/vm/check-units.sh in it — the
# package enables and starts the agent; the controller waits for `gantry init`; readiness
# through Type=notify; ONNX Runtime answering inside the unit's sandbox; a hung sampler
# restarted by the watchdog; a clean stop; `systemd-analyze security` online.
# Needs root (skipped, saying so, without it); installs debootstrap and qemu-system-x86
# with apt; the Debian 12 root file system is made once into .cache/vm. The machine is
# emulated (TCG), which works on any host, nested virtualization included.
# Usage: packaging/test-systemd-vm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

if [ "$(id -u)" != 0 ]; then echo "test-systemd-vm: SKIPPED: needs root"; exit 0; fi
source scripts/tools.sh
command -v debootstrap >/dev/null || gantry_apt_install debootstrap
command -v qemu-system-x86_64 >/dev/null || gantry_apt_install qemu-system-x86

cache="$root/.cache/vm"
base="$cache/bookworm-rootfs.tar"
if [ ! -f "$base" ]; then
    echo "test-systemd-vm: making the Debian 12 root file system (once)" >&2
    mkdir -p "$cache"
    rm -rf "$cache/rootfs"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,linux-image-cloud-amd64,adduser,curl,libstdc++6,procps,kmod,udev \
        bookworm "$cache/rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log"; exit 1; }
    tar -C "$cache/rootfs" -cf "$base.tmp" . && mv "$base.tmp" "$base"
    rm -rf "$cache/rootfs"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
packaging/build-deb.sh --out "$work/debs" >/dev/null
mkdir "$work/rootfs"
tar -C "$work/rootfs" -xf "$base"
install -d "$work/rootfs/root/debs" "$work/rootfs/root/model"
cp "$work/debs"/*.deb "$work/rootfs/root/debs/"
cp testdata/models/tiny_linear.onnx testdata/models/tiny_linear.golden.json "$work/rootfs/root/model/"
install -m 0755 packaging/vm/check-units.sh "$work/rootfs/root/check-units.sh"
echo "/dev/vda / ext4 rw 0 1" > "$work/rootfs/etc/fstab"
echo gantry-vm > "$work/rootfs/etc/hostname"
cat > "$work/rootfs/etc/systemd/system/check-units.service" <<'UNIT'
[Unit]
Description=Gantry unit checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/root/check-units.sh 2>&1 | tee /root/check-units.log'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
UNIT
# The console is the checks' alone: no login prompt on it.
ln -sf /dev/null "$work/rootfs/etc/systemd/system/serial-getty@ttyS0.service"
mkdir -p "$work/rootfs/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/check-units.service "$work/rootfs/etc/systemd/system/multi-user.target.wants/check-units.service"
kernel=$(ls "$work/rootfs"/boot/vmlinuz-* | head -n 1)
initrd=$(ls "$work/rootfs"/boot/initrd.img-* | head -n 1)
cp "$kernel" "$work/vmlinuz" && cp "$initrd" "$work/initrd"
mkfs.ext4 -q -L root -d "$work/rootfs" "$work/disk.img" 3G
rm -rf "$work/rootfs"

echo "test-systemd-vm: booting (emulated, 2 CPUs, 2 GiB)" >&2
timeout 900 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 -nographic -no-reboot \
    -kernel "$work/vmlinuz" -initrd "$work/initrd" \
    -append "root=/dev/vda rw console=ttyS0 edd=off quiet systemd.show_status=0" \
    -drive "file=$work/disk.img,format=raw,if=virtio" -nic none >"$work/console.log" 2>&1 || true
# The checks' own log, read back from the disk image (complete even if the console lost lines).
debugfs -R "cat /root/check-units.log" "$work/disk.img" 2>/dev/null | tr -d '\r' >"$work/check-units.log" || true
grep -a '^VMTEST' "$work/check-units.log" || grep -a '^VMTEST' "$work/console.log" | tr -d '\r' || true
if grep -aq '^VMTEST PASSED' "$work/check-units.log" "$work/console.log"; then
    echo "test-systemd-vm: all checks passed"
else
    echo "test-systemd-vm: FAILED (console tail follows)" >&2
    grep -av '^VMTEST' "$work/check-units.log" | tail -n 30 >&2
    tail -n 20 "$work/console.log" >&2
    exit 1
fi
