#!/usr/bin/env bash
# The main job on one machine: a controller and three agents with simulated GPUs on
# loopback. The agents enroll with single-use tokens and stream their telemetry over QUIC
# with mutual TLS; a model is signed, pushed and rolled out through a canary step; an
# agent answers an inference request; a second rollout whose canary's GPU falls off the
# bus (XID 79) is rolled back automatically; the KPIs and the audit log show both.
# Everything runs in a temporary directory and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }

step "Fetching ONNX Runtime's library (cached) and building gantry, gantry-agent and the simulated NVML library"
source scripts/tools.sh onnxruntime
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

step "The ML team's signing key and the trust policy every node (and the controller) checks bundles against"
"$gantry" keygen --out "$work/ml.key"
"$gantry" policy create --key "ml=$work/ml.key.pub" --threshold 1 --out "$work/trust.json" >/dev/null
"$gantry" policy sign "$work/trust.json" --key "$work/ml.key" >/dev/null
cp "$work/trust.json" "$work/ctl/trust.json"
echo "trust.json: key ml, 1 signature needed"

start_agent() { # name gpus model
    local name=$1 dir="$work/$1" port
    mkdir -p "$dir"
    port=$(free_port SOCK_STREAM)
    echo "127.0.0.1:$port" > "$dir/infer.addr"
    printf '[uplink]\nheartbeat = "500ms"\nmax_backoff = "2s"\n[trust]\npolicy = "%s"\n[inference]\nonnxruntime = "%s"\nlisten = "127.0.0.1:%s"\n[health]\nxid_window = "5s"\n' \
        "$work/trust.json" "$GANTRY_ONNXRUNTIME" "$port" > "$dir/agent.toml"
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

step "Three nodes enroll (the node key is made on the node and never sent) and start"
start_agent gpu-node-1 8 h100
start_agent gpu-node-2 4 h100
start_agent gpu-node-3 4 a100
sleep 4

step "gantry fleet ls"
"$gantry" fleet ls

step "gantry fleet top --once: every GPU in the fleet"
"$gantry" fleet top --once

models=testdata/models
bundle() { # version
    "$gantry" bundle create --model $models/tiny_linear.onnx --golden $models/tiny_linear.golden.json \
        --name tiny-linear --version "$1" --source-revision demo --out "$work/tiny-linear-$1.gbundle" >/dev/null
    "$gantry" bundle sign "$work/tiny-linear-$1.gbundle" --key "$work/ml.key" >/dev/null
}
wait_rollout() { # id state
    for _ in $(seq 1 240); do
        "$gantry" rollout status "$1" --json | grep -q "\"state\": \"$2\"" && return 0
        sleep 0.5
    done
    echo "rollout $1 did not become $2" >&2
    "$gantry" rollout status "$1" >&2
    return 1
}

step "A model bundle: created, signed, verified, pushed (the controller checks it against its trust policy)"
bundle 1.0.0
bundle 2.0.0
"$gantry" bundle verify "$work/tiny-linear-1.0.0.gbundle" --trust "$work/trust.json" | head -n 3
"$gantry" bundle push "$work/tiny-linear-1.0.0.gbundle"
"$gantry" bundle push "$work/tiny-linear-2.0.0.gbundle"
"$gantry" bundle ls

step "gantry rollout start tiny-linear@1.0.0 --steps 1,100% --bake 3s: a canary first, then the rest"
"$gantry" rollout start tiny-linear@1.0.0 --selector gpu=h100 --steps 1,100% --bake 3s | head -n 2
wait_rollout r1 baking
"$gantry" rollout status r1
wait_rollout r1 succeeded
"$gantry" rollout status r1 | tail -n 6

step "An inference request to gpu-node-1 over KServe v2 (x = [1, 2, 3, 4])"
python3 - "$(cat "$work/gpu-node-1/infer.addr")" <<'PY'
import json, sys, urllib.request
body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
req = urllib.request.Request(f"http://{sys.argv[1]}/v2/models/tiny-linear/infer", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(req))
out = answer["outputs"][0]
print(f"model {answer['model_name']} {answer['model_version']}: {out['name']} = {out['data']} (shape {out['shape']})")
PY

step "gantry rollout start tiny-linear@2.0.0 — and the canary's GPU 5 falls off the bus (XID 79) while it bakes"
"$gantry" rollout start tiny-linear@2.0.0 --selector gpu=h100 --steps 1,100% --bake 20s | head -n 2
wait_rollout r2 baking
canary=$("$gantry" rollout status r2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["touched"][0]["node"])')
echo "canary: $canary"
control="$work/$canary/state/nvml-sim.json"
cat > "$control.tmp" <<'JSON'
{ "devices": { "5": { "lost": true } }, "xid_events": [ { "gpu": 5, "code": 79 } ] }
JSON
mv "$control.tmp" "$control"
wait_rollout r2 rolling-back
"$gantry" rollout status r2
echo "(the GPU is reset; the canary comes back healthy on its previous bundle)"
echo '{ "devices": { "5": { "lost": false } } }' > "$control.tmp" && mv "$control.tmp" "$control"
wait_rollout r2 rolled-back
"$gantry" rollout status r2 | tail -n 5
"$gantry" fleet show "$canary" | grep -iE 'bundle|health' || true

step "gantry report kpis: deployment frequency, lead time, change failure rate, time to recovery"
"$gantry" report kpis --window 1h

step "gantry audit verify: every action above is in a hash-chained log"
"$gantry" audit verify

step "gantry audit report: what ran on $canary, signed by whom, put there by what (excerpt)"
"$gantry" audit report --since 1h | sed -n "/^### $canary/,/^### /p" | head -n 12

step "Injecting a fault on gpu-node-3 (no rollout there): GPU 3 overheats"
control="$work/gpu-node-3/state/nvml-sim.json"
echo '{ "devices": { "3": { "overheat": true } } }' > "$control.tmp" && mv "$control.tmp" "$control"
sleep 3

step "gantry-agent status on gpu-node-3"
"$agent" status --agent "$(cat "$work/gpu-node-3/metrics.addr")"

step "gantry fleet top --once: the fleet sees it too"
"$gantry" fleet top --once

step "What Prometheus federates from the controller (node-labelled, dcgm-exporter names)"
python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" "http://$fleet_metrics/metrics" | grep -E '^(DCGM_FI_DEV_GPU_TEMP\{node="gpu-node-3",gpu="3"|gantry_gpu_xid_errors_total|gantry_controller_(records_stored_total|connected_nodes))' || true

step "What the canary logged"
grep -E 'XID|fallen off the bus|activated|model loaded' "$work/$canary/agent.log" | sed 's/^/  /' || true

step "Stopping the agents and the controller (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
echo "demo finished: everything stopped cleanly"
