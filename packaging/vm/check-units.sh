#!/bin/bash
# Runs inside the VM that packaging/test-systemd-vm.sh boots, with systemd as PID 1:
# installs the packages and checks the units as systemd runs them. Every result line
# starts with "VMTEST"; the last is "VMTEST PASSED" or "VMTEST FAILED: why".
set -uo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "VMTEST $*"; }
fail() { say "FAILED: $*"; journalctl --no-pager -n 60 -u gantry-agent -u gantry-controller | sed 's/^/VMTEST journal: /'; systemctl poweroff --no-block; exit 1; }
prop() { systemctl show -P "$2" "$1"; }
wait_for() { # DESCRIPTION SECONDS COMMAND...
    local what="$1" seconds="$2"; shift 2
    for _ in $(seq 1 $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    fail "$what (waited ${seconds}s)"
}
as_user() { local user="$1"; shift; runuser -u "$user" -- "$@"; }

say "systemd $(systemctl --version | head -n 1 | cut -d' ' -f2), kernel $(uname -r)"
dpkg -i /root/debs/gantry-agent_*.deb /root/debs/gantry_*.deb >/root/install.log 2>&1 || { cat /root/install.log; fail "dpkg -i"; }

# The agent: enabled and started by the package, ready once serving (Type=notify).
[ "$(systemctl is-enabled gantry-agent)" = enabled ] || fail "gantry-agent is not enabled after install"
wait_for "gantry-agent active after install" 20 systemctl is-active --quiet gantry-agent
say "ok  gantry-agent enabled and started by the package: $(prop gantry-agent ActiveState)/$(prop gantry-agent SubState), status: $(prop gantry-agent StatusText)"
journalctl --no-pager -u gantry-agent | grep -q "NVML is not available" || fail "no NVML message without a driver"
say "ok  without a driver the agent says so and runs: $(journalctl --no-pager -o cat -u gantry-agent | grep -m1 'NVML is not available' | cut -c1-110)"

# The controller: skipped, not failed, until `gantry init`.
[ "$(prop gantry-controller ConditionResult)" = no ] || fail "gantry-controller started before init"
systemctl is-failed --quiet gantry-controller && fail "gantry-controller failed before init"
say "ok  gantry-controller skipped until init (ConditionResult=no, not failed)"
as_user gantry-controller gantry init --dir /var/lib/gantry-controller --listen 127.0.0.1:7443 >/dev/null
systemctl start gantry-controller || fail "gantry-controller start"
say "ok  gantry-controller: $(prop gantry-controller ActiveState)/$(prop gantry-controller SubState), status: $(prop gantry-controller StatusText)"
export GANTRY_IDENTITY=/var/lib/gantry-controller/admin.identity
token=$(gantry token create --labels vm=yes --ttl 10m) || fail "token create"
as_user gantry gantry-agent enroll --controller 127.0.0.1:7443 --token "$token" --name vm-node >/dev/null || fail "enroll"

# A model, verified and activated before the agent restarts into its sandbox.
gantry keygen --out /root/ml.key >/dev/null
gantry policy create --key ml=/root/ml.key.pub --threshold 1 --out /root/trust.json >/dev/null
gantry policy sign /root/trust.json --key /root/ml.key >/dev/null
install -o gantry -g gantry -m 0640 /root/trust.json /var/lib/gantry/trust.json
gantry bundle create --model /root/model/tiny_linear.onnx --golden /root/model/tiny_linear.golden.json \
    --name tiny-linear --version 1.0.0 --out /tmp/tiny.gbundle >/dev/null
gantry bundle sign /tmp/tiny.gbundle --key /root/ml.key >/dev/null
chmod 0644 /tmp/tiny.gbundle
as_user gantry gantry-agent import /tmp/tiny.gbundle | grep -q '^activated' || fail "import"

# Simulated GPUs (a drop-in), and a short watchdog for the test (a unit drop-in).
printf '[nvml.simulate]\ngpus = 2\n' > /etc/gantry/agent.d/50-simulate.toml
mkdir -p /etc/systemd/system/gantry-agent.service.d
printf '[Service]\nWatchdogSec=6s\n' > /etc/systemd/system/gantry-agent.service.d/50-test.conf
systemctl daemon-reload
systemctl restart gantry-agent || fail "restart gantry-agent"
say "ok  restarted with simulated GPUs: $(prop gantry-agent StatusText)"
wait_for "vm-node connected with 2 GPUs" 20 sh -c "gantry fleet ls | grep -E '^vm-node +connected +[a-z]+ +2 '"
say "ok  $(gantry fleet ls | grep '^vm-node' | tr -s ' ')"
gantry-agent status | sed -n '/^health/,/^node/p' | sed 's/^/VMTEST status: /'
if journalctl --no-pager -u gantry-agent | grep -q "kernel log not readable"; then
    fail "the agent cannot read /dev/kmsg inside its unit"
fi
say "ok  the kernel log is readable inside the unit (XIDs from both NVML and /dev/kmsg)"

# ONNX Runtime inside the hardened sandbox (system-call filter, MemoryDenyWriteExecute, …).
body='{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
wait_for "the model answers" 20 curl -sf -o /dev/null http://127.0.0.1:8000/v2/health/ready
answer=$(curl -sf -H 'Content-Type: application/json' -d "$body" http://127.0.0.1:8000/v2/models/tiny-linear/infer) || fail "inference request"
case "$answer" in *'[-3.5,14.0]'*) ;; *) fail "inference answered $answer";; esac
say "ok  inference inside the unit's sandbox: $answer"
if journalctl --no-pager -k | grep -q 'audit.*SECCOMP'; then
    say "note: seccomp denials logged: $(journalctl --no-pager -k | grep 'SECCOMP' | head -n 3 | tr '\n' ' ')"
fi

# The watchdog: a GPU hangs in an NVML call, the sampler stops, systemd restarts the agent.
restarts=$(prop gantry-agent NRestarts)
pid=$(prop gantry-agent MainPID)
as_user gantry sh -c 'echo "{\"devices\": {\"0\": {\"hang\": true}}}" > /var/lib/gantry/nvml-sim.json.new && mv /var/lib/gantry/nvml-sim.json.new /var/lib/gantry/nvml-sim.json'
wait_for "a watchdog restart" 40 sh -c "[ \$(systemctl show -P NRestarts gantry-agent) -gt $restarts ]"
journalctl --no-pager -u gantry-agent | grep -q "Watchdog timeout" || fail "no watchdog timeout in the journal"
say "ok  hung sampler: $(journalctl --no-pager -o cat -u gantry-agent | grep -m1 'Watchdog timeout'); restarted (NRestarts $restarts -> $(prop gantry-agent NRestarts), main PID $pid -> $(prop gantry-agent MainPID))"
as_user gantry sh -c 'echo "{\"devices\": {\"0\": {\"hang\": false}}}" > /var/lib/gantry/nvml-sim.json.new && mv /var/lib/gantry/nvml-sim.json.new /var/lib/gantry/nvml-sim.json'
wait_for "gantry-agent active after the GPU recovers" 40 sh -c "systemctl is-active --quiet gantry-agent && gantry-agent status >/dev/null"
settled=$(prop gantry-agent NRestarts)
sleep 8
[ "$(prop gantry-agent NRestarts)" = "$settled" ] || fail "the agent keeps restarting after the GPU recovered"
say "ok  the GPU recovers: active, no further restarts ($(prop gantry-agent StatusText))"

# A clean stop on SIGTERM: buffer flushed, exit 0, well within TimeoutStopSec.
start=$(date +%s%N)
systemctl stop gantry-agent
took_ms=$((($(date +%s%N) - start) / 1000000))
[ "$(prop gantry-agent Result)" = success ] || fail "agent stop result $(prop gantry-agent Result)"
[ "$(prop gantry-agent ExecMainStatus)" = 0 ] || fail "agent exit status $(prop gantry-agent ExecMainStatus)"
say "ok  gantry-agent stopped in ${took_ms} ms: Result=success, exit 0; last words: $(journalctl --no-pager -o cat -u gantry-agent | grep -v '^Stopp' | tail -n 1 | cut -c1-120)"
systemctl stop gantry-controller
[ "$(prop gantry-controller Result)" = success ] || fail "controller stop result $(prop gantry-controller Result)"
say "ok  gantry-controller stopped: Result=success"

for unit in gantry-agent gantry-controller; do
    say "security $unit: $(systemd-analyze security $unit 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p')"
done
say "PASSED"
systemctl poweroff --no-block
