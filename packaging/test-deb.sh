#!/usr/bin/env bash
# Installs the Debian packages on this machine for real and checks every state a
# platform engineer meets: lintian; install (users, directories, conffiles, units,
# manual pages); the quick start with the packaged binaries as their service users
# (controller init and serve, a node enrolled, a bundle imported and answering through
# the packaged ONNX Runtime); an upgrade that keeps the operator's configuration and the
# node's state; remove; purge. Needs root; leaves a host that already has Gantry
# packages alone; puts the host back as it found it (packages, users, directories).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

if [ "$(id -u)" != 0 ]; then
    echo "test-deb: SKIPPED: installing packages needs root (sudo packaging/test-deb.sh)"
    exit 0
fi
if dpkg-query -W -f='${db:Status-Status}\n' gantry gantry-agent gantry-agent-cuda 2>/dev/null | grep -qv '^not-installed$'; then
    echo "test-deb: SKIPPED: Gantry packages are already on this host; refusing to touch them"
    exit 0
fi
for dir in /var/lib/gantry /var/lib/gantry-controller /etc/gantry; do
    if [ -e "$dir" ]; then
        echo "test-deb: SKIPPED: $dir exists on this host; refusing to touch it"
        exit 0
    fi
done

source scripts/tools.sh lintian
# What is checked is the packaged layout: nothing may point the binaries elsewhere.
unset GANTRY_ONNXRUNTIME GANTRY_AGENT_CONFIG GANTRY_DIR GANTRY_IDENTITY
work="$(mktemp -d)"
pids=()
users_before=$(getent passwd gantry gantry-controller | cut -d: -f1 || true)
export DEBIAN_FRONTEND=noninteractive
apt_get=(apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    dpkg --purge gantry-agent-cuda gantry gantry-agent >/dev/null 2>&1 || true
    rm -rf /var/lib/gantry /var/lib/gantry-controller /etc/gantry "$work"
    for user in gantry gantry-controller; do
        if ! grep -qx "$user" <<<"$users_before" && getent passwd "$user" >/dev/null; then
            deluser --quiet --system "$user" >/dev/null 2>&1 || true
        fi
    done
}
trap cleanup EXIT

step() { printf '\n== test-deb: %s\n' "$*"; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
# expect DESCRIPTION ACTUAL WANTED
expect() { [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; echo "ok  $1: $2"; }
present() { [ -e "$1" ] || fail "$1 is missing"; echo "ok  present: $1"; }
absent() { [ ! -e "$1" ] || fail "$1 is still there"; echo "ok  absent: $1"; }
status_of() { # "ii VERSION", "rc VERSION", or "none" once purged
    local status
    status=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$1" 2>/dev/null | tr -s ' ') || true
    case "$status" in ""|un*) echo none ;; *) echo "$status" ;; esac
}
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
# as_user USER COMMAND...: the command as a service user would run it. Background
# processes call setpriv directly, so that $! is the process itself.
as_user() { local user="$1"; shift; setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"; }
# signed_sample GANTRY DIR VERSION: with that gantry binary, a key, a signed trust
# policy naming it (DIR/trust.json) and the sample model signed by it
# (DIR/tiny-linear.gbundle), readable by the service users.
signed_sample() {
    local gantry="$1" dir="$2" version="$3"
    mkdir -p "$dir"
    "$gantry" keygen --out "$dir/ml.key" >/dev/null
    "$gantry" policy create --key "ml=$dir/ml.key.pub" --threshold 1 --out "$dir/trust.json" >/dev/null
    "$gantry" policy sign "$dir/trust.json" --key "$dir/ml.key" >/dev/null
    "$gantry" bundle create --model testdata/models/tiny_linear.onnx --golden testdata/models/tiny_linear.golden.json \
        --name tiny-linear --version "$version" --out "$dir/tiny-linear.gbundle" >/dev/null
    "$gantry" bundle sign "$dir/tiny-linear.gbundle" --key "$dir/ml.key" >/dev/null
    chmod 0755 "$work" "$dir"
    chmod 0644 "$dir/tiny-linear.gbundle"
}
infer() { # ADDRESS: tiny-linear's answer to [1, 2, 3, 4] there
    python3 - "$1" <<'PY'
import json, sys, urllib.request
body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
req = urllib.request.Request(f"http://{sys.argv[1]}/v2/models/tiny-linear/infer", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=10))["outputs"][0]["data"])
PY
}
# serve_and_check LIBRARY PLACEMENT AGENT...: the agent (AGENT... is how it starts,
# up to `run`'s own options) serves tiny-linear 1.1.0 with LIBRARY, placed as the
# pattern PLACEMENT says, and answers through it.
serves_v110() { gantry_status | grep -q 'serving tiny-linear 1.1.0'; }
serve_and_check() {
    local library="$1" placement="$2"; shift 2
    "$@" --simulate-gpus 1 --metrics-listen "$metrics" --inference-listen "$inference" \
        --kernel-log "" --interval 1s 2>"$work/agent-cuda.log" &
    local pid=$!
    wait_for "the agent serves tiny-linear 1.1.0" serves_v110
    local status
    status=$(gantry_status)
    grep -qF "models run in ONNX Runtime $library" <<<"$status" || { echo "$status"; fail "the agent did not serve with $library"; }
    grep -q "$placement" <<<"$status" || { echo "$status"; fail "the model was not placed as '$placement'"; }
    echo "ok  served with $library: $(grep -m 1 "$placement" <<<"$status" | sed 's/^ *//')"
    expect "inference through $library" "$(infer "$inference")" "[-3.5, 14.0]"
    kill -TERM "$pid"
    wait "$pid" || fail "the agent did not stop cleanly on SIGTERM"
}
# Where the node has NVIDIA's driver the GPU build serves on CUDA; else on the CPU, with
# the reason.
if [ -e /usr/lib/x86_64-linux-gnu/libcuda.so.1 ] || [ -e /usr/lib64/libcuda.so.1 ]; then
    on_gpu_build="serving tiny-linear 1.1.0 .* on cuda:"
else
    on_gpu_build="  not on cuda: no NVIDIA driver on this node: libcuda.so.1"
fi
metrics="127.0.0.1:$(free_port SOCK_STREAM)"
inference="127.0.0.1:$(free_port SOCK_STREAM)"
wait_for() { # DESCRIPTION COMMAND...
    local what="$1"; shift
    for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    fail "$what"
}

step "building version 0.1.0~test1 and 0.1.0~test2 (with gantry-agent-cuda)"
v1=0.1.0~test1
v2=0.1.0~test2
packaging/build-deb.sh --version "$v1" --out "$work/$v1" >/dev/null
packaging/build-deb.sh --version "$v2" --out "$work/$v2" --cuda >/dev/null
ls -l "$work/$v1" "$work/$v2"

step "the tarballs for other hosts, unpacked under a prefix of their own"
tarballs=$(packaging/build-tarball.sh --cuda 2>/dev/null | tail -n 2)
mkdir -p "$work/opt"
tar -C "$work/opt" -xzf "$(head -n 1 <<<"$tarballs")"
expect "gantry-agent from the tarball" "$("$work/opt/usr/bin/gantry-agent" --version)" "gantry-agent 0.1.0"
expect "gantry from the tarball" "$("$work/opt/usr/bin/gantry" --version)" "gantry 0.1.0"
# Its libraries are found under its own prefix: the golden vectors of a bundle run in
# the tarball's ONNX Runtime (nothing is installed under /usr yet).
absent /usr/lib/gantry
signed_sample "$work/opt/usr/bin/gantry" "$work/tar" 0.0.1
"$work/opt/usr/bin/gantry-agent" import "$work/tar/tiny-linear.gbundle" --state-dir "$work/tar-state" --trust "$work/tar/trust.json" \
    | grep -q '^activated' || fail "the tarball's agent did not import a bundle with its own ONNX Runtime"
echo "ok  the tarball's agent ran the golden vectors in its own ONNX Runtime"
# The CUDA component, unpacked under the same prefix: that agent takes its GPU build.
tar -C "$work/opt" -xzf "$(tail -n 1 <<<"$tarballs")"
"$work/opt/usr/bin/gantry" bundle create --model testdata/models/tiny_linear.onnx --golden testdata/models/tiny_linear.golden.json \
    --name tiny-linear --version 1.1.0 --execution-provider cuda,cpu --out "$work/tar/cuda.gbundle" >/dev/null
"$work/opt/usr/bin/gantry" bundle sign "$work/tar/cuda.gbundle" --key "$work/tar/ml.key" >/dev/null
"$work/opt/usr/bin/gantry-agent" import "$work/tar/cuda.gbundle" --state-dir "$work/tar-state" --trust "$work/tar/trust.json" \
    | grep -q '^activated' || fail "the tarball's GPU build did not import a bundle"
gantry_status() { "$work/opt/usr/bin/gantry-agent" status --agent "$metrics"; }
serve_and_check "$work/opt/usr/lib/gantry/cuda/libonnxruntime.so.1.31.1" "$on_gpu_build" \
    "$work/opt/usr/bin/gantry-agent" run --state-dir "$work/tar-state"

step "lintian (errors and warnings fail; each override in packaging/debian/*/lintian-overrides says why)"
lintian --fail-on error,warning --pedantic "$work/$v1"/*.deb
# The spelling check reads every byte of two gigabytes of NVIDIA's libraries for
# minutes, and what it finds there is overridden (byte sequences in compiled code).
lintian --fail-on error,warning --pedantic -X binaries/spelling "$work/$v2"/gantry-agent-cuda_*.deb
echo "ok  lintian: no errors or warnings"

step "install $v1"
"${apt_get[@]}" install --no-install-recommends "$work/$v1"/gantry-agent_*.deb "$work/$v1"/gantry_*.deb >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "apt-get install"; }
expect "gantry-agent package" "$(status_of gantry-agent)" "ii $v1"
expect "gantry package" "$(status_of gantry)" "ii $v1"
expect "gantry-agent --version" "$(gantry-agent --version)" "gantry-agent 0.1.0"
expect "gantry --version" "$(gantry --version)" "gantry 0.1.0"
expect "gantry user" "$(getent passwd gantry | cut -d: -f6,7)" "/var/lib/gantry:/usr/sbin/nologin"
expect "gantry-controller user" "$(getent passwd gantry-controller | cut -d: -f6,7)" "/var/lib/gantry-controller:/usr/sbin/nologin"
[ "$(id -u gantry)" -lt 1000 ] || fail "gantry is not a system user"
if getent group video >/dev/null; then
    id -nG gantry | grep -qw video || fail "gantry is not in the video group"
    echo "ok  gantry is in the video group (NVIDIA device nodes)"
fi
expect "/var/lib/gantry" "$(stat -c '%U:%G %a' /var/lib/gantry)" "gantry:gantry 750"
expect "/var/lib/gantry-controller" "$(stat -c '%U:%G %a' /var/lib/gantry-controller)" "gantry-controller:gantry-controller 700"
expect "gantry-agent conffiles" "$(dpkg-query -W -f='${Conffiles}' gantry-agent | awk '{print $1}' | xargs)" "/etc/gantry/agent.toml"
expect "gantry conffiles" "$(dpkg-query -W -f='${Conffiles}' gantry | awk '{print $1}' | xargs)" "/etc/default/gantry-controller"
for file in /lib/systemd/system/gantry-agent.service /lib/systemd/system/gantry-controller.service \
    /usr/lib/gantry/libonnxruntime.so.1.31.1 /usr/lib/gantry/libgantry_nvml_sim.so \
    /usr/share/man/man8/gantry-agent.8.gz /usr/share/man/man1/gantry.1.gz \
    /usr/share/doc/gantry-agent/copyright /usr/share/doc/gantry-agent/onnxruntime/ThirdPartyNotices.txt.gz \
    /usr/share/gantry/grafana/gantry-fleet-gpus.json /usr/share/gantry/grafana/gantry-serving-rollouts.json \
    /usr/share/gantry/prometheus/gantry-alerts.yml /usr/share/gantry/prometheus/gantry-alerts.test.yml; do
    present "$file"
done
if command -v promtool >/dev/null; then
    (cd /usr/share/gantry/prometheus && promtool test rules gantry-alerts.test.yml >"$work/promtool.log" 2>&1) \
        || { cat "$work/promtool.log"; fail "promtool test rules on the installed alerting rules"; }
    echo "ok  promtool test rules passes on /usr/share/gantry/prometheus"
fi
if command -v systemd-analyze >/dev/null; then
    verify=$(systemd-analyze verify /lib/systemd/system/gantry-agent.service /lib/systemd/system/gantry-controller.service 2>&1 || true)
    expect "systemd-analyze verify" "${verify:-clean}" "clean"
    for unit in gantry-agent gantry-controller; do
        echo "ok  systemd-analyze security $unit: $(systemd-analyze security --offline=true /lib/systemd/system/$unit.service 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p')"
    done
fi
[ -d /run/systemd/system ] || echo "note: systemd is not running here: the services were enabled, not started"

step "gantry demo, from the installed packages alone"
(cd / && gantry demo) >"$work/demo.log" 2>&1 || { tail -n 40 "$work/demo.log"; fail "gantry demo"; }
grep -q "gantry-agent  /usr/bin/gantry-agent" "$work/demo.log" || fail "the demo did not use the installed agent"
grep -q "ONNX Runtime  /usr/lib/gantry/libonnxruntime.so.1.31.1" "$work/demo.log" || fail "the demo did not use the packaged ONNX Runtime"
echo "ok  $(grep 'Demo finished' "$work/demo.log")"

step "the quick start, with the packaged binaries as their service users"
controller="127.0.0.1:$(free_port SOCK_DGRAM)"
refused=$(gantry init --dir /var/lib/gantry-controller --listen "$controller" 2>&1 || true)
grep -q "sudo -u gantry-controller gantry init" <<<"$refused" || fail "root's init was not refused: $refused"
echo "ok  gantry init as root is refused: it names sudo -u gantry-controller"
as_user gantry-controller gantry init --dir /var/lib/gantry-controller --listen "$controller"
expect "controller key" "$(stat -c '%U %a' /var/lib/gantry-controller/controller.key)" "gantry-controller 600"
setpriv --reuid=gantry-controller --regid=gantry-controller --init-groups -- gantry serve --dir /var/lib/gantry-controller --listen "$controller" --metrics-listen "" 2>"$work/controller.log" &
pids+=($!)
export GANTRY_IDENTITY=/var/lib/gantry-controller/admin.identity
wait_for "the controller answers" gantry fleet ls
token=$(gantry token create --labels gpu=sim,site=test --ttl 10m)
refused=$(gantry-agent enroll --controller "$controller" --token "$token" 2>&1 || true)
grep -q "sudo -u gantry gantry-agent enroll" <<<"$refused" || fail "root's enroll was not refused: $refused"
echo "ok  gantry-agent enroll as root is refused: it names sudo -u gantry"
as_user gantry gantry-agent enroll --controller "$controller" --token "$token" --name pkg-node

# A signed bundle, imported as the site operator of an air-gapped hall would, runs its
# golden vectors in the packaged ONNX Runtime before it is activated.
signed_sample gantry "$work/sample" 1.0.0
install -o gantry -g gantry -m 0640 "$work/sample/trust.json" /var/lib/gantry/trust.json
as_user gantry gantry-agent import "$work/sample/tiny-linear.gbundle"

setpriv --reuid=gantry --regid=gantry --init-groups -- gantry-agent run --simulate-gpus 2 --metrics-listen "$metrics" --inference-listen "$inference" \
    --kernel-log "" --interval 1s 2>"$work/agent.log" &
agent_pid=$!
pids+=($agent_pid)
wait_for "pkg-node is connected with 2 GPUs" sh -c "gantry fleet ls | grep -E '^pkg-node +connected +[a-z]+ +2 '"
gantry fleet ls
gantry-agent status --agent "$metrics" | head -n 3
expect "inference through the packaged ONNX Runtime" "$(infer "$inference")" "[-3.5, 14.0]"
kill -TERM "$agent_pid"
wait "$agent_pid" || fail "the agent did not stop cleanly on SIGTERM"
echo "ok  the agent stopped cleanly on SIGTERM"
node_state() { (cd /var/lib/gantry && md5sum identity/* trust.json | sort | md5sum | cut -c1-16); }
state_before=$(node_state)

step "upgrade to $v2, the operator's configuration changed"
echo '# changed by the operator' >> /etc/gantry/agent.toml
"${apt_get[@]}" install --no-install-recommends "$work/$v2"/gantry-agent_*.deb "$work/$v2"/gantry_*.deb >"$work/upgrade.log" 2>&1 \
    || { cat "$work/upgrade.log"; fail "apt-get install (upgrade)"; }
expect "gantry-agent package" "$(status_of gantry-agent)" "ii $v2"
expect "gantry package" "$(status_of gantry)" "ii $v2"
expect "the operator's change to agent.toml" "$(tail -n 1 /etc/gantry/agent.toml)" "# changed by the operator"
expect "the node's identity and trust policy (digest)" "$(node_state)" "$state_before"
expect "/var/lib/gantry after the upgrade" "$(stat -c '%U:%G %a' /var/lib/gantry)" "gantry:gantry 750"
expect "gantry-agent status after the upgrade" "$(as_user gantry gantry-agent --version)" "gantry-agent 0.1.0"
wait_for "the controller answers after the upgrade" gantry fleet ls

step "the GPU build: gantry-agent-cuda $v2"
expect "gantry-agent-cuda depends on its agent" \
    "$(dpkg-deb -f "$work/$v2"/gantry-agent-cuda_*.deb Depends | grep -o "gantry-agent (= [^)]*)")" "gantry-agent (= $v2)"
"${apt_get[@]}" install --no-install-recommends "$work/$v2"/gantry-agent-cuda_*.deb >"$work/cuda.log" 2>&1 \
    || { cat "$work/cuda.log"; fail "apt-get install gantry-agent-cuda"; }
expect "gantry-agent-cuda package" "$(status_of gantry-agent-cuda)" "ii $v2"
for file in /usr/lib/gantry/cuda/libonnxruntime.so.1.31.1 /usr/lib/gantry/cuda/libonnxruntime_providers_cuda.so \
    /usr/lib/gantry/cuda/libcudart.so.13 /usr/lib/gantry/cuda/libcublas.so.13 /usr/lib/gantry/cuda/libcudnn.so.9 \
    /usr/lib/gantry/libonnxruntime.so.1.31.1 /usr/share/doc/gantry-agent-cuda/copyright \
    /usr/share/doc/gantry-agent-cuda/licenses/nvidia-cudnn-cu13.txt.gz /usr/share/doc/gantry-agent-cuda/onnxruntime/ThirdPartyNotices.txt.gz; do
    present "$file"
done
# A bundle that prefers CUDA, then the CPU: served by the GPU build, on CUDA where the
# node has NVIDIA's driver, else on the CPU with the reason.
gantry bundle create --model testdata/models/tiny_linear.onnx --golden testdata/models/tiny_linear.golden.json \
    --name tiny-linear --version 1.1.0 --execution-provider cuda,cpu --out "$work/sample/cuda.gbundle" >/dev/null
gantry bundle sign "$work/sample/cuda.gbundle" --key "$work/sample/ml.key" >/dev/null
chmod 0644 "$work/sample/cuda.gbundle"
as_user gantry gantry-agent import "$work/sample/cuda.gbundle" | grep -q '^activated' || fail "the GPU build did not import the bundle"
echo "ok  the GPU build ran the golden vectors and activated the bundle"
gantry_status() { gantry-agent status --agent "$metrics"; }
as_gantry=(setpriv --reuid=gantry --regid=gantry --init-groups -- gantry-agent run)
serve_and_check /usr/lib/gantry/cuda/libonnxruntime.so.1.31.1 "$on_gpu_build" "${as_gantry[@]}"
"${apt_get[@]}" remove gantry-agent-cuda >"$work/cuda-remove.log" 2>&1 || { cat "$work/cuda-remove.log"; fail "apt-get remove gantry-agent-cuda"; }
expect "gantry-agent-cuda package" "$(status_of gantry-agent-cuda)" "rc $v2"
absent /usr/lib/gantry/cuda
expect "gantry-agent package" "$(status_of gantry-agent)" "ii $v2"
# Back on the CPU build, which has no CUDA provider: the same bundle serves on the CPU.
serve_and_check /usr/lib/gantry/libonnxruntime.so.1.31.1 "  not on cuda: .*without the CUDA provider" "${as_gantry[@]}"

step "remove"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
pids=()
as_user gantry-controller gantry audit verify --dir /var/lib/gantry-controller | head -n 1
"${apt_get[@]}" remove gantry-agent gantry >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "apt-get remove"; }
expect "gantry-agent package" "$(status_of gantry-agent)" "rc $v2"
expect "gantry package" "$(status_of gantry)" "rc $v2"
for file in /usr/bin/gantry-agent /usr/bin/gantry /usr/lib/gantry /lib/systemd/system/gantry-agent.service /lib/systemd/system/gantry-controller.service; do
    absent "$file"
done
for file in /etc/gantry/agent.toml /etc/default/gantry-controller /var/lib/gantry/identity /var/lib/gantry-controller/ca.key; do
    present "$file"
done

step "purge"
"${apt_get[@]}" purge gantry-agent-cuda gantry-agent gantry >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "apt-get purge"; }
expect "gantry-agent-cuda package" "$(status_of gantry-agent-cuda)" "none"
expect "gantry-agent package" "$(status_of gantry-agent)" "none"
expect "gantry package" "$(status_of gantry)" "none"
for file in /etc/gantry /etc/default/gantry-controller /var/lib/gantry; do
    absent "$file"
done
present /var/lib/gantry-controller/ca.key
grep -q "/var/lib/gantry-controller (fleet CA, store, audit log) is kept" "$work/purge.log" \
    || fail "the purge did not say that it kept the controller's directory"
echo "ok  the purge kept the controller's CA and audit log, and said so"
getent passwd gantry >/dev/null && getent passwd gantry-controller >/dev/null || fail "system users were removed"
echo "ok  the system users stay, as Debian does"

echo
echo "test-deb: all checks passed"
