#!/usr/bin/env bash
# The main job on one machine, as far as Gantry goes today: a controller and two agents
# with simulated GPUs on loopback. The agents enroll with single-use tokens, stream their
# telemetry over QUIC with mutual TLS, and the fleet shows up in `gantry fleet`; then a
# GPU overheats and another falls off the bus (XID 79), and both the node and the fleet
# report it. Everything runs in a temporary directory and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }

step "Building gantry, gantry-agent and the simulated NVML library"
cargo build --locked -p gantry-controller -p gantry-agent -p gantry-nvml-sim
gantry=./target/debug/gantry
agent=./target/debug/gantry-agent

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

controller="127.0.0.1:$(free_port SOCK_DGRAM)"
fleet_metrics="127.0.0.1:$(free_port SOCK_STREAM)"
export GANTRY_IDENTITY="$work/ctl/admin.identity"

step "gantry init: the fleet CA, the controller certificate, the first admin"
"$gantry" init --dir "$work/ctl" --listen "$controller"

step "gantry serve: QUIC on $controller, fleet /metrics on http://$fleet_metrics/metrics"
"$gantry" serve --dir "$work/ctl" --listen "$controller" --metrics-listen "$fleet_metrics" 2> "$work/controller.log" &
pids+=($!)
for _ in $(seq 1 100); do "$gantry" fleet ls >/dev/null 2>&1 && break; sleep 0.1; done

start_agent() { # name gpus model
    local name=$1 dir="$work/$1" port
    mkdir -p "$dir"
    printf '[uplink]\nheartbeat = "1s"\nmax_backoff = "2s"\n' > "$dir/agent.toml"
    local token
    token=$("$gantry" token create --labels "gpu=$3,hall=a" --ttl 10m 2>/dev/null)
    echo "token for $name: ${token:0:40}… (single use, pins the controller certificate)"
    "$agent" enroll --config "$dir/agent.toml" --state-dir "$dir/state" --controller "$controller" --token "$token" --name "$name"
    port=$(free_port SOCK_STREAM)
    echo "127.0.0.1:$port" > "$dir/metrics.addr"
    "$agent" run --config "$dir/agent.toml" --state-dir "$dir/state" --simulate-gpus "$2" --simulate-model "$3" \
        --interval 1s --metrics-listen "127.0.0.1:$port" --kernel-log "" 2> "$dir/agent.log" &
    pids+=($!)
}

step "Two nodes enroll (the node key is made on the node and never sent) and start"
start_agent gpu-node-1 8 h100
start_agent gpu-node-2 4 a100
sleep 4

step "gantry fleet ls"
"$gantry" fleet ls

step "gantry fleet top --once: every GPU in the fleet"
"$gantry" fleet top --once

step "Injecting faults on gpu-node-1: GPU 3 overheats, GPU 5 falls off the bus (XID 79)"
control="$work/gpu-node-1/state/nvml-sim.json"
cat > "$control.tmp" <<'JSON'
{ "devices": { "3": { "overheat": true }, "5": { "lost": true } },
  "xid_events": [ { "gpu": 5, "code": 79 } ] }
JSON
mv "$control.tmp" "$control"
sleep 3

step "gantry-agent status on gpu-node-1"
"$agent" status --agent "$(cat "$work/gpu-node-1/metrics.addr")"

step "gantry fleet top --once: the fleet sees it too"
"$gantry" fleet top --once

step "What Prometheus federates from the controller (node-labelled, dcgm-exporter names)"
python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" "http://$fleet_metrics/metrics" | grep -E '^(DCGM_FI_DEV_GPU_TEMP\{node="gpu-node-1",gpu="3"|gantry_gpu_lost\{node="gpu-node-1",gpu="5"|gantry_gpu_xid_errors_total|gantry_controller_(records_stored_total|connected_nodes))' || true

step "What the node logged"
grep -E 'XID|fallen off the bus|connected to the controller' "$work/gpu-node-1/agent.log" | sed 's/^/  /' || true

step "Stopping the agents and the controller (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
echo "demo finished: everything stopped cleanly"
