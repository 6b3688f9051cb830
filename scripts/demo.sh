#!/usr/bin/env bash
# The main job on one machine, as far as Gantry goes today: builds the agent, runs it
# against 8 simulated H100 GPUs, shows its status and dcgm-exporter-compatible metrics,
# injects GPU faults (overheating, XID 79 "fallen off the bus") and shows the agent
# reporting them, then stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building gantry-agent and the simulated NVML library"
cargo build --locked -p gantry-agent -p gantry-nvml-sim

work="$(mktemp -d)"
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# dcgm-exporter's port when free, otherwise one the kernel picks.
port=9400
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
addr="127.0.0.1:$port"
control="$work/state/nvml-sim.json"
: > "$work/agent.toml"

step "Starting the agent: 8 simulated H100 GPUs, 1 s sampling, metrics on http://$addr/metrics"
./target/debug/gantry-agent run --config "$work/agent.toml" --simulate-gpus 8 --simulate-model h100 \
    --interval 1s --metrics-listen "$addr" --state-dir "$work/state" --kernel-log "" \
    2> "$work/agent.log" &
agent_pid=$!
for _ in $(seq 1 100); do
    if ./target/debug/gantry-agent status --agent "$addr" --json 2>/dev/null | grep -q '"gpus":\[{'; then
        break
    fi
    kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log"; echo "demo: the agent exited" >&2; exit 1; }
    sleep 0.1
done

step "gantry-agent status"
./target/debug/gantry-agent status --agent "$addr"

step "A few of the metrics Prometheus scrapes (dcgm-exporter names and labels)"
curl -fsS "http://$addr/metrics" | grep -E '^DCGM_FI_DEV_(GPU_UTIL|FB_USED|GPU_TEMP|POWER_USAGE)\{gpu="[01]"' || true

step "Injecting faults: GPU 3 overheats, GPU 5 falls off the bus (XID 79)"
cat > "$control.tmp" <<'JSON'
{ "devices": { "3": { "overheat": true }, "5": { "lost": true } },
  "xid_events": [ { "gpu": 5, "code": 79 } ] }
JSON
mv "$control.tmp" "$control"
sleep 2.5

step "gantry-agent status after the faults"
./target/debug/gantry-agent status --agent "$addr"

step "What Prometheus now sees"
curl -fsS "http://$addr/metrics" | grep -E '^(gantry_gpu_xid_errors_total|gantry_gpu_lost\{gpu="5"|DCGM_FI_DEV_GPU_TEMP\{gpu="3"|DCGM_FI_DEV_CLOCK_THROTTLE_REASONS\{gpu="3")' || true

step "What the agent logged"
grep -E 'XID|fallen off the bus' "$work/agent.log" | sed 's/^/  /' || true

step "Stopping the agent (SIGTERM)"
kill -TERM "$agent_pid"
wait "$agent_pid"
agent_pid=""
echo "demo finished: the agent stopped cleanly"
