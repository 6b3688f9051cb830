#!/usr/bin/env bash
# Makes the outside tools the tests, demo and benchmarks use available, idempotently,
# without installing services: Debian packages are downloaded once into .cache/debs and
# unpacked under .cache/tools (no root needed when the package lists are present).
# Source it to get PATH set:  source scripts/tools.sh promtool [prometheus] [node-exporter]
# (lintian and dpkg-dev, which the packaging uses, are installed with apt as root).
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

# Tools that run from their installed place (lintian reads its data from /usr/share):
# installed with apt, which needs root. Package lists are refreshed only when needed.
gantry_apt_install() {
    local pkg="$1"
    if [ "$(id -u)" != 0 ]; then
        echo "tools: $pkg is not installed and installing it needs root: sudo apt-get install $pkg" >&2
        return 1
    fi
    echo "tools: installing Debian package $pkg" >&2
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg")
    if ! "${apt[@]}" >/dev/null 2>&1; then
        apt-get -q update >/dev/null
        "${apt[@]}" >/dev/null
    fi
}

# ONNX Runtime's shared library from the PyPI wheel (no build-time download: the agent
# loads it at run time), with its license and third-party notices for the packages.
# Exports GANTRY_ONNXRUNTIME with the library's path.
gantry_fetch_onnxruntime() {
    local version=1.31.1
    local target="$gantry_cache/tools/onnxruntime-$version"
    if [ ! -f "$target/libonnxruntime.so.$version" ] || [ ! -f "$target/ThirdPartyNotices.txt" ]; then
        local wheels="$gantry_cache/wheels"
        mkdir -p "$wheels"
        if ! compgen -G "$wheels/onnxruntime-$version-*.whl" >/dev/null; then
            echo "tools: downloading the onnxruntime==$version wheel" >&2
            python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "onnxruntime==$version" >&2
        fi
        mkdir -p "$target.tmp"
        python3 - "$(compgen -G "$wheels/onnxruntime-$version-*.whl" | head -n 1)" "$target.tmp" "$version" <<'PY'
import sys, zipfile
wheel, out, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name, file in [(f"onnxruntime/capi/libonnxruntime.so.{version}", f"libonnxruntime.so.{version}"),
                       ("onnxruntime/LICENSE", "LICENSE"),
                       ("onnxruntime/ThirdPartyNotices.txt", "ThirdPartyNotices.txt")]:
        with open(f"{out}/{file}", "wb") as f:
            f.write(z.read(name))
PY
        rm -rf "$target" && mv "$target.tmp" "$target"
    fi
    export GANTRY_ONNXRUNTIME="$target/libonnxruntime.so.$version"
}

# The CUDA build of ONNX Runtime (the onnxruntime-gpu wheel) with the CUDA runtime
# libraries its CUDA provider needs, from NVIDIA's wheels, in one directory as the
# gantry-agent-cuda package installs them; each wheel's license beside them. The GPU
# build links CUDA 13 (libcudart.so.13, libcublas.so.13): the versions are the ones its
# `cuda` and `cudnn` extras resolve to. Exports GANTRY_ONNXRUNTIME_CUDA with the library.
gantry_onnxruntime_cuda_wheels="onnxruntime-gpu==1.31.1 nvidia-cuda-runtime==13.5.37 nvidia-cublas==13.10.0.20 nvidia-curand==10.4.5.25 nvidia-cufft==12.5.0.14 nvidia-nvjitlink==13.5.37 nvidia-cuda-nvrtc==13.5.37 nvidia-cudnn-cu13==9.28.1.4"
gantry_fetch_onnxruntime_cuda() {
    local version=1.31.1
    local target="$gantry_cache/tools/onnxruntime-cuda-$version"
    if [ ! -f "$target/.ready" ] || [ "$(cat "$target/.ready")" != "$gantry_onnxruntime_cuda_wheels" ]; then
        local wheels="$gantry_cache/wheels"
        mkdir -p "$wheels"
        # shellcheck disable=SC2086 # the list is words on purpose
        if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --no-index --find-links "$wheels" -d "$wheels" $gantry_onnxruntime_cuda_wheels >/dev/null 2>&1; then
            echo "tools: downloading $gantry_onnxruntime_cuda_wheels (about 1.5 GB)" >&2
            # shellcheck disable=SC2086
            python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" $gantry_onnxruntime_cuda_wheels >&2
        fi
        rm -rf "$target.tmp"
        mkdir -p "$target.tmp/licenses"
        python3 - "$wheels" "$target.tmp" "$version" $gantry_onnxruntime_cuda_wheels <<'PY'
import glob, os, re, sys, zipfile
wheels, out, version, *wanted = sys.argv[1:]
for spec in wanted:
    name, pinned = spec.split("==")
    stem = re.sub(r"[-.]", "_", name)
    [wheel] = glob.glob(f"{wheels}/{stem}-{pinned}-*.whl")
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            base = os.path.basename(member)
            if name == "onnxruntime-gpu":
                keep = {f"onnxruntime/capi/libonnxruntime.so.{version}", "onnxruntime/capi/libonnxruntime_providers_shared.so",
                        "onnxruntime/capi/libonnxruntime_providers_cuda.so", "onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"}
                if member in keep:
                    dest = f"{out}/{base}"
                else:
                    continue
            elif member.endswith("/licenses/License.txt"):
                dest = f"{out}/licenses/{name}.txt"
            elif re.search(r"/lib/lib[^/]+\.so(\.[0-9.]+)?$", member) and not re.search(r"lib(nvblas|cufftw)", base):
                dest = f"{out}/{base}"
            else:
                continue
            with open(dest, "wb") as f:
                f.write(z.read(member))
PY
        echo "$gantry_onnxruntime_cuda_wheels" >"$target.tmp/.ready"
        rm -rf "$target" && mv "$target.tmp" "$target"
    fi
    export GANTRY_ONNXRUNTIME_CUDA="$target/libonnxruntime.so.$version"
}

# Triton's own Python clients (tritonclient[http,grpc]), Python ONNX Runtime, Selenium
# for the console's browser tests and the OpenTelemetry protobuf definitions for the
# OTLP receiver, in a virtual environment under .cache, from wheels downloaded once into
# .cache/wheels.
# Exports GANTRY_PYTHON with the environment's interpreter.
gantry_fetch_python_clients() {
    local venv="$gantry_cache/venv"
    local wheels="$gantry_cache/wheels"
    local wanted="tritonclient[http,grpc]==2.73.0 onnxruntime==1.31.1 numpy==2.4.6 scikit-learn==1.8.0 selenium==4.51.0 opentelemetry-proto==1.45.2"
    if [ ! -f "$venv/.ready" ] || [ "$(cat "$venv/.ready")" != "$wanted" ]; then
        mkdir -p "$wheels"
        # shellcheck disable=SC2086 # the list is words on purpose
        if ! python3 -m pip download --quiet --only-binary=:all: --no-index --find-links "$wheels" -d "$wheels" $wanted >/dev/null 2>&1; then
            echo "tools: downloading $wanted" >&2
            # shellcheck disable=SC2086
            python3 -m pip download --quiet --only-binary=:all: -d "$wheels" $wanted >&2
        fi
        # Built in place (a venv's scripts name its path); .ready marks it complete.
        rm -rf "$venv"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install --quiet --no-index --find-links "$wheels" $wanted >&2
        echo "$wanted" >"$venv/.ready"
    fi
    export GANTRY_PYTHON="$venv/bin/python"
}

for tool in "$@"; do
    case "$tool" in
        promtool)
            command -v promtool >/dev/null 2>&1 || gantry_fetch_deb prometheus ;;
        prometheus)
            command -v prometheus >/dev/null 2>&1 || gantry_fetch_deb prometheus ;;
        onnxruntime)
            [ -n "${GANTRY_ONNXRUNTIME:-}" ] && [ -f "$GANTRY_ONNXRUNTIME" ] || gantry_fetch_onnxruntime ;;
        onnxruntime-cuda)
            [ -n "${GANTRY_ONNXRUNTIME_CUDA:-}" ] && [ -f "$GANTRY_ONNXRUNTIME_CUDA" ] || gantry_fetch_onnxruntime_cuda ;;
        lintian)
            command -v lintian >/dev/null 2>&1 || gantry_apt_install lintian ;;
        dpkg-dev)
            command -v dpkg-shlibdeps >/dev/null 2>&1 || gantry_apt_install dpkg-dev ;;
        help2man)
            command -v help2man >/dev/null 2>&1 || gantry_fetch_deb help2man ;;
        python-clients)
            [ -n "${GANTRY_PYTHON:-}" ] && [ -x "$GANTRY_PYTHON" ] || gantry_fetch_python_clients ;;
        chromium)
            # Debian's browser and its WebDriver, for the console's browser tests.
            command -v chromium >/dev/null 2>&1 || gantry_apt_install chromium
            command -v chromedriver >/dev/null 2>&1 || gantry_apt_install chromium-driver
            export GANTRY_CHROMIUM="$(command -v chromium)" GANTRY_CHROMEDRIVER="$(command -v chromedriver)" ;;
        node-exporter)
            command -v prometheus-node-exporter >/dev/null 2>&1 || gantry_fetch_deb prometheus-node-exporter ;;
        *)
            echo "tools: unknown tool $tool" >&2; exit 2 ;;
    esac
done
