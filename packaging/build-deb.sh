#!/usr/bin/env bash
# Builds the Debian packages into target/debian/:
#   gantry-agent_<version>_<arch>.deb   the node agent, ONNX Runtime's library, the
#                                       simulated NVML library, its unit and configuration
#   gantry_<version>_<arch>.deb         the controller and fleet CLI, its unit and defaults
#   gantry-agent-cuda_<version>_<arch>.deb
#                                       with --cuda: ONNX Runtime's GPU build and the CUDA
#                                       runtime it needs, in /usr/lib/gantry/cuda
# Usage: packaging/build-deb.sh [--version VERSION] [--out DIR] [--cuda]
#   (default: the workspace's version, into target/debian)
# Needs dpkg-dev (dpkg-shlibdeps; installed if missing, as root) and fetches ONNX
# Runtime's wheel and help2man into .cache/ once; --cuda fetches the GPU build's wheels
# (about 1.5 GB, once).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
out="$root/target/debian"
cuda=false
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version="$2"; shift 2 ;;
        --out) out="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        --cuda) cuda=true; shift ;;
        *) echo "usage: packaging/build-deb.sh [--version VERSION] [--out DIR] [--cuda]" >&2; exit 2 ;;
    esac
done

source scripts/tools.sh onnxruntime help2man dpkg-dev
ort_dir="$(dirname "$GANTRY_ONNXRUNTIME")"
if [ ! -f "$ort_dir/ThirdPartyNotices.txt" ]; then
    # GANTRY_ONNXRUNTIME pointed elsewhere: the packages take the cached wheel's copy.
    unset GANTRY_ONNXRUNTIME
    source scripts/tools.sh onnxruntime
    ort_dir="$(dirname "$GANTRY_ONNXRUNTIME")"
fi
if $cuda; then
    source packaging/cuda-files.sh
fi

echo "build-deb: building release binaries" >&2
cargo build --release --locked -p gantry-agent -p gantry-controller -p gantry-nvml-sim

arch=$(dpkg --print-architecture)
stage="$root/target/debian-stage"
rm -rf "$stage"
mkdir -p "$stage"
# Reproducible: file times and the changelog date come from the last commit.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

# install_file MODE SRC DEST (DEST relative to the package root)
install_file() { install -D -m "$1" "$2" "$pkgroot/$3"; }
strip_file() { strip --remove-section=.comment --remove-section=.note --strip-unneeded "$pkgroot/$1"; }

# Package-wide documentation: copyright, changelog, the README.
docs() { # package
    local doc="$pkgroot/usr/share/doc/$1"
    install -d -m 0755 "$doc"
    install -m 0644 packaging/debian/copyright "$doc/copyright"
    sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$(date -R -u -d "@$SOURCE_DATE_EPOCH")/" \
        packaging/debian/changelog | gzip -9n > "$doc/changelog.gz"
    gzip -9n < README.md > "$doc/README.md.gz"
}

# manpage SECTION BINARY NAME EXAMPLE: a manual page from the binary's --help (help2man).
manpage() {
    local section="$1" binary="$2" name="$3"
    local include="$stage/see-also-$binary"
    printf '[SEE ALSO]\nEvery command has its own \\fB\\-\\-help\\fR, e.g. \\fB%s\\fR.\nThe full documentation: /usr/share/doc/%s/README.md.gz\n' \
        "$4" "$binary" > "$include"
    install -d -m 0755 "$pkgroot/usr/share/man/man$section"
    help2man --no-info --section "$section" --name "$name" --include "$include" \
        "target/release/$binary" | gzip -9n > "$pkgroot/usr/share/man/man$section/$binary.$section.gz"
}

# control PACKAGE BINARY...: DEBIAN/ with control (dependencies from dpkg-shlibdeps;
# libraries the binaries link among themselves are found in the package's own
# directories), maintainer scripts, conffiles.
control() {
    local package="$1"; shift
    local work="$stage/shlibs-$package"
    mkdir -p "$work/debian"
    printf 'Source: gantry\n\nPackage: %s\nArchitecture: any\n' "$package" > "$work/debian/control"
    local shlibs libdirs
    libdirs=$(printf "$pkgroot/%s\n" "$@" | xargs -n 1 dirname | sort -u | paste -sd:)
    # shellcheck disable=SC2086 # options are words
    shlibs=$(cd "$work" && LD_LIBRARY_PATH="$libdirs" dpkg-shlibdeps ${shlibdeps_options:-} -O "${@/#/-e$pkgroot/}" 2>"$work/errors" | sed -n 's/^shlibs:Depends=//p') \
        || { cat "$work/errors" >&2; exit 1; }
    [ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies for $package" >&2; exit 1; }
    local size
    size=$(du -sk --apparent-size "$pkgroot" | cut -f1)
    install -d -m 0755 "$pkgroot/DEBIAN"
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@SHLIBS@/$shlibs/" \
        "packaging/debian/$package/control" > "$pkgroot/DEBIAN/control"
    for script in postinst prerm postrm; do
        if [ -f "packaging/debian/$package/$script" ]; then
            install -m 0755 "packaging/debian/$package/$script" "$pkgroot/DEBIAN/$script"
        fi
    done
    if [ -d "$pkgroot/etc" ]; then
        (cd "$pkgroot" && find etc -type f -printf '/%p\n' | sort) > "$pkgroot/DEBIAN/conffiles"
        [ -s "$pkgroot/DEBIAN/conffiles" ] || rm "$pkgroot/DEBIAN/conffiles"
    fi
    (cd "$pkgroot" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$pkgroot/DEBIAN/md5sums"
}

build() { # package [DPKG-DEB COMPRESSION OPTIONS]
    local package="$1"; shift
    find "$pkgroot" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +
    dpkg-deb --root-owner-group "${@:--Zxz}" --build "$pkgroot" "$out/${package}_${version}_${arch}.deb" >/dev/null
    echo "$out/${package}_${version}_${arch}.deb"
}

# gantry-agent
pkgroot="$stage/gantry-agent"
install_file 0755 target/release/gantry-agent usr/bin/gantry-agent
strip_file usr/bin/gantry-agent
install_file 0644 target/release/libgantry_nvml_sim.so usr/lib/gantry/libgantry_nvml_sim.so
strip_file usr/lib/gantry/libgantry_nvml_sim.so
install_file 0644 "$GANTRY_ONNXRUNTIME" "usr/lib/gantry/$(basename "$GANTRY_ONNXRUNTIME")"
install_file 0644 systemd/gantry-agent.service lib/systemd/system/gantry-agent.service
install_file 0644 packaging/agent.toml etc/gantry/agent.toml
install -d -m 0755 "$pkgroot/etc/gantry/agent.d"
install_file 0644 packaging/debian/gantry-agent/lintian-overrides usr/share/lintian/overrides/gantry-agent
docs gantry-agent
manpage 8 gantry-agent "Gantry node agent: GPU telemetry, signed model bundles, local inference" 'gantry-agent run \\-\\-help'
cat packaging/debian/copyright-onnxruntime >> "$pkgroot/usr/share/doc/gantry-agent/copyright"
install -d -m 0755 "$pkgroot/usr/share/doc/gantry-agent/onnxruntime"
gzip -9n < "$ort_dir/ThirdPartyNotices.txt" > "$pkgroot/usr/share/doc/gantry-agent/onnxruntime/ThirdPartyNotices.txt.gz"
chmod 0644 "$pkgroot/usr/share/doc/gantry-agent/onnxruntime/ThirdPartyNotices.txt.gz"
control gantry-agent usr/bin/gantry-agent usr/lib/gantry/libgantry_nvml_sim.so "usr/lib/gantry/$(basename "$GANTRY_ONNXRUNTIME")"
build gantry-agent

# gantry (controller and fleet CLI)
pkgroot="$stage/gantry"
install_file 0755 target/release/gantry usr/bin/gantry
strip_file usr/bin/gantry
install_file 0644 systemd/gantry-controller.service lib/systemd/system/gantry-controller.service
install_file 0644 packaging/gantry-controller.default etc/default/gantry-controller
install_file 0644 packaging/debian/gantry/lintian-overrides usr/share/lintian/overrides/gantry
# Grafana dashboards and Prometheus alerting rules (with their promtool unit tests).
for f in packaging/monitoring/grafana/*.json packaging/monitoring/prometheus/*.yml; do
    install_file 0644 "$f" "usr/share/gantry/${f#packaging/monitoring/}"
done
docs gantry
manpage 1 gantry "Gantry controller and fleet CLI" 'gantry rollout start \\-\\-help'
control gantry usr/bin/gantry
build gantry

# gantry-agent-cuda (the GPU build of ONNX Runtime and the CUDA runtime beside it)
if $cuda; then
    pkgroot="$stage/gantry-agent-cuda"
    install_file 0644 packaging/debian/gantry-agent-cuda/lintian-overrides usr/share/lintian/overrides/gantry-agent-cuda
    docs gantry-agent-cuda
    cuda_install "$pkgroot"
    mapfile -t libs < <(cd "$pkgroot" && printf '%s\n' usr/lib/gantry/cuda/lib*.so*)
    # The driver's libcuda.so.1 is the node's own, not a package dependency, and
    # dpkg-shlibdeps refuses a library it cannot find: the dependencies come from the
    # libraries that do not link it, once it is checked that those that do need nothing
    # more. The libraries link each other too (private, without shlibs information).
    plain=()
    for lib in "${libs[@]}"; do
        if readelf -d "$pkgroot/$lib" | grep -q 'Shared library: \[libcuda\.so\.1\]'; then continue; fi
        plain+=("$lib")
    done
    known=$( { printf '%s\n' "${libs[@]##*/}" libcuda.so.1; for lib in "${plain[@]}"; do readelf -d "$pkgroot/$lib"; done \
        | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'; } | sort -u)
    for lib in "${libs[@]}"; do
        readelf -d "$pkgroot/$lib" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | while read -r needed; do
            grep -qxF "$needed" <<<"$known" \
                || { echo "build-deb: $lib needs $needed, which no dependency covers" >&2; exit 1; }
        done
    done
    shlibdeps_options=--ignore-missing-info control gantry-agent-cuda "${plain[@]}"
    # Two gigabytes of libraries: fast compression (xz takes minutes and gains little).
    build gantry-agent-cuda -Zgzip -z1
fi
