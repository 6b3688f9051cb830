#!/usr/bin/env python3
"""Writes Gantry's Grafana dashboards into packaging/monitoring/grafana/ (installed as
/usr/share/gantry/grafana/): the source of truth is this file; edit it, run it, commit
both. `--check` exits 1 when the committed JSON differs from what this writes (the test
suite runs it).

  gantry-fleet-gpus.json        every node's GPUs, health, buffer and serving, from
                                each agent's /metrics (dcgm-exporter's field names)
  gantry-serving-rollouts.json  models served across the fleet, drift, rollouts and
                                the controller, from the controller's federation
                                /metrics (`gantry serve --metrics-listen`)

Both take a Prometheus data source as a variable, so they import into any Grafana
(9 or later) without editing.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "packaging" / "monitoring" / "grafana"

# The codes the agent's health check treats as critical (gantry_shared::xid); the test
# suite checks this list against the code.
CRITICAL_XIDS = "48|63|64|74|79|92|94|95|119|120"

DS = {"type": "prometheus", "uid": "${datasource}"}


class Board:
    def __init__(self):
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_height = 0

    def row(self, title):
        self.newline()
        self.panels.append({
            "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": [],
        })
        self.y += 1

    def newline(self):
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def place(self, w, h):
        if self.x + w > 24:
            self.newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def add(self, kind, title, description, targets, w, h, unit=None, extra=None):
        panel = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self.place(w, h),
            "targets": [
                dict({"datasource": DS, "refId": chr(ord("A") + i)}, **t)
                for i, t in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {},
        }
        if unit:
            panel["fieldConfig"]["defaults"]["unit"] = unit
        if extra:
            for key, value in extra.items():
                if key == "defaults":
                    panel["fieldConfig"]["defaults"].update(value)
                else:
                    panel[key] = value
        self.panels.append(panel)

    def stat(self, title, description, expr, unit=None, thresholds=None, w=4):
        defaults = {}
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute", "steps": [
                {"color": c, "value": v} for v, c in thresholds]}
            defaults["color"] = {"mode": "thresholds"}
        self.add("stat", title, description, [{"expr": expr, "instant": True}], w, 4,
                 unit, {"defaults": defaults, "options": {
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "colorMode": "background", "graphMode": "none", "textMode": "value"}})

    def series(self, title, description, targets, unit=None, w=8, h=8, stack=False):
        custom = {"lineWidth": 1, "fillOpacity": 10 if not stack else 60, "showPoints": "never"}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        self.add("timeseries", title, description,
                 [{"expr": e, "legendFormat": l} for e, l in targets], w, h, unit,
                 {"defaults": {"custom": custom}, "options": {
                     "legend": {"displayMode": "table", "placement": "bottom",
                                "calcs": ["lastNotNull", "max"]},
                     "tooltip": {"mode": "multi", "sort": "desc"}}})

    def table(self, title, description, expr, hide, rename, w=12, h=8):
        self.add("table", title, description,
                 [{"expr": expr, "instant": True, "format": "table"}], w, h, None,
                 {"transformations": [{"id": "organize", "options": {
                     "excludeByName": {k: True for k in hide},
                     "renameByName": rename}}]})


def variable(name, label, query, multi=True):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
        "refresh": 2, "sort": 1, "multi": multi, "includeAll": True,
        "allValue": ".*", "current": {"selected": True, "text": "All", "value": "$__all"},
    }


def dashboard(uid, title, description, board, variables, tags):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["gantry"] + tags,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "refresh": 1, "current": {},
        }] + variables},
        "panels": board.panels,
    }


def fleet_gpus():
    b = Board()
    sel = 'job=~"$job", instance=~"$instance"'
    gpu = f'{sel}, gpu=~"$gpu"'
    gpu_legend = "{{Hostname}} GPU {{gpu}}"

    b.row("Fleet")
    b.stat("Agents", "Agents scraped.", f"count(gantry_agent_info{{{sel}}})")
    b.stat("GPUs", "GPUs the agents see.", f"sum(gantry_agent_gpus{{{sel}}})")
    b.stat("Unhealthy nodes", "Agents whose health state is unhealthy.",
           f'count(gantry_agent_health{{{sel}, state="unhealthy"}} == 1) or vector(0)',
           thresholds=[(None, "green"), (1, "red")])
    b.stat("Degraded nodes", "Agents whose health state is degraded.",
           f'count(gantry_agent_health{{{sel}, state="degraded"}} == 1) or vector(0)',
           thresholds=[(None, "green"), (1, "orange")])
    b.stat("GPUs lost", "GPUs NVML reports fallen off the bus.",
           f"sum(gantry_gpu_lost{{{sel}}})", thresholds=[(None, "green"), (1, "red")])
    b.stat("Critical XIDs (24 h)", "Critical XID errors over the last day, every GPU.",
           f'sum(increase(gantry_gpu_xid_errors_total{{{sel}, xid=~"{CRITICAL_XIDS}"}}[24h]))',
           thresholds=[(None, "green"), (1, "red")])
    b.newline()
    b.table("Health findings", "Why a node is not healthy: the check, its likely cause and the action (empty when every node is healthy).",
            f"gantry_agent_health_reasons{{{sel}}}", ["Time", "Value", "__name__", "job"],
            {"instance": "node"}, w=24, h=6)

    b.row("GPUs")
    b.series("Utilisation", "GPU utilisation (DCGM_FI_DEV_GPU_UTIL).",
             [(f"DCGM_FI_DEV_GPU_UTIL{{{gpu}}}", gpu_legend)], "percent")
    b.series("Temperature", "GPU core and memory temperature.",
             [(f"DCGM_FI_DEV_GPU_TEMP{{{gpu}}}", gpu_legend),
              (f"DCGM_FI_DEV_MEMORY_TEMP{{{gpu}}}", gpu_legend + " memory")], "celsius")
    b.series("Power", "Power draw and the enforced limit.",
             [(f"DCGM_FI_DEV_POWER_USAGE{{{gpu}}}", gpu_legend),
              (f"DCGM_FI_DEV_ENFORCED_POWER_LIMIT{{{gpu}}}", gpu_legend + " limit")], "watt")
    b.series("Framebuffer used", "GPU memory in use (DCGM reports MiB).",
             [(f"DCGM_FI_DEV_FB_USED{{{gpu}}} * 1048576", gpu_legend)], "bytes")
    b.series("SM clock", "Streaming multiprocessor clock.",
             [(f"DCGM_FI_DEV_SM_CLOCK{{{gpu}}} * 1000000", gpu_legend)], "hertz")
    b.series("Tensor core activity", "Share of cycles the tensor pipes were busy (Hopper and later: GPM).",
             [(f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{gpu}}}", gpu_legend)], "percentunit")
    b.series("Memory bandwidth activity", "Share of cycles the device memory interface was busy.",
             [(f"DCGM_FI_PROF_DRAM_ACTIVE{{{gpu}}}", gpu_legend)], "percentunit")
    b.series("PCIe throughput", "PCIe bytes per second, sent and received.",
             [(f"DCGM_FI_PROF_PCIE_TX_BYTES{{{gpu}}}", gpu_legend + " tx"),
              (f"DCGM_FI_PROF_PCIE_RX_BYTES{{{gpu}}}", gpu_legend + " rx")], "Bps")
    b.series("NVLink bandwidth", "NVLink traffic, every link together.",
             [(f"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{{{gpu}}}", gpu_legend)], "short")

    b.row("Errors")
    b.series("XID errors", "XID errors per GPU and code over each interval.",
             [(f"sum by (Hostname, gpu, xid) (increase(gantry_gpu_xid_errors_total{{{gpu}}}[$__rate_interval]))",
               "{{Hostname}} GPU {{gpu}} XID {{xid}}")], "short")
    b.series("ECC errors (volatile)", "Single- and double-bit ECC errors since the last driver load.",
             [(f"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{gpu}}}", gpu_legend + " single-bit"),
              (f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{gpu}}}", gpu_legend + " double-bit")], "short")
    b.series("Row remapping", "Rows remapped for uncorrectable errors, remaps pending a reset, and failures.",
             [(f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{gpu}}}", gpu_legend + " remapped"),
              (f"DCGM_FI_DEV_ROW_REMAP_PENDING{{{gpu}}}", gpu_legend + " pending"),
              (f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{gpu}}}", gpu_legend + " failed")], "short")
    b.series("Clock throttle reasons", "NVML's clocks-event bitmask: 0x4 power cap, 0x20 software thermal, 0x40 hardware thermal, 0x8 hardware slowdown.",
             [(f"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{{{gpu}}}", gpu_legend)], "short")
    b.series("PCIe replays", "PCIe replays per second (a rising rate points at the slot or riser).",
             [(f"rate(DCGM_FI_DEV_PCIE_REPLAY_COUNTER{{{gpu}}}[$__rate_interval])", gpu_legend)], "short")
    b.series("GPUs up", "Whether each GPU answers NVML.",
             [(f"gantry_gpu_up{{{gpu}}}", gpu_legend)], "short")

    b.row("Serving on the node")
    b.series("Inference requests", "Requests per second, by model and outcome.",
             [(f"sum by (instance, model, outcome) (rate(gantry_agent_inference_requests_total{{{sel}}}[$__rate_interval]))",
               "{{instance}} {{model}} {{outcome}}")], "reqps")
    b.series("Latency", "Median and 99th percentile of each model's latest 1024 successful requests.",
             [(f"gantry_agent_inference_latency_p50_seconds{{{sel}}}", "{{instance}} {{model}} p50"),
              (f"gantry_agent_inference_latency_p99_seconds{{{sel}}}", "{{instance}} {{model}} p99")], "s")
    b.series("Drift", "Each model's worst drift score in its latest window, and the bundle's threshold.",
             [(f"max by (instance, model) (gantry_agent_model_drift_score{{{sel}}})", "{{instance}} {{model}}"),
              (f"max by (model) (gantry_agent_model_drift_threshold{{{sel}}})", "{{model}} threshold")], "short")

    b.row("Agent")
    b.series("Buffered records", "Telemetry waiting in each agent's durable buffer (grows while the controller is unreachable).",
             [(f"gantry_agent_buffer_records{{{sel}}}", "{{instance}}")], "short")
    b.series("Oldest buffered record", "Age of the oldest record not yet delivered.",
             [(f"gantry_agent_buffer_oldest_age_seconds{{{sel}}}", "{{instance}}")], "s")
    b.series("Dropped records", "Records dropped to keep the buffer within its limits: lost to the controller.",
             [(f"sum by (instance, class) (increase(gantry_agent_buffer_dropped_total{{{sel}}}[$__rate_interval]))",
               "{{instance}} {{class}}")], "short")
    b.series("Uplink", "Whether the agent is connected to the controller.",
             [(f"gantry_agent_uplink_connected{{{sel}}}", "{{instance}}")], "short")
    b.series("Host CPU", "Share of the host's CPU time in use.",
             [(f"gantry_host_cpu_usage_ratio{{{sel}}}", "{{instance}}")], "percentunit")
    b.series("Host memory", "Host memory in use.",
             [(f"gantry_host_memory_used_bytes{{{sel}}}", "{{instance}}")], "bytes")

    return dashboard(
        "gantry-fleet-gpus", "Gantry: fleet GPUs",
        "Every node's GPUs (dcgm-exporter's fields), health, buffer and serving, from each gantry-agent's /metrics.",
        b,
        [variable("job", "Job", "label_values(gantry_agent_info, job)"),
         variable("instance", "Node", 'label_values(gantry_agent_info{job=~"$job"}, instance)'),
         variable("gpu", "GPU", 'label_values(DCGM_FI_DEV_GPU_UTIL{job=~"$job", instance=~"$instance"}, gpu)')],
        ["gpu", "dcgm"])


def serving_rollouts():
    b = Board()
    job = 'job=~"$job"'
    node = f'{job}, node=~"$node"'
    model = f'{node}, model=~"$model"'

    b.row("Fleet")
    b.stat("Connected nodes", "Nodes connected to the controller now.",
           f"sum(gantry_controller_connected_nodes{{{job}}})")
    b.stat("Known nodes", "Nodes with live state since the controller started.",
           f"sum(gantry_controller_known_nodes{{{job}}})")
    b.stat("Silent nodes", "Nodes the controller knows that are not connected.",
           f"count(gantry_node_connected{{{node}}} == 0) or vector(0)",
           thresholds=[(None, "green"), (1, "orange")])
    b.stat("Unhealthy nodes", "Nodes whose latest heartbeat says unhealthy.",
           f'count(gantry_node_health{{{node}, state="unhealthy"}} == 1) or vector(0)',
           thresholds=[(None, "green"), (1, "red")])
    b.stat("Active rollouts", "Rollouts rolling, baking, paused or rolling back.",
           f'sum(gantry_rollouts{{{job}, state=~"rolling|baking|paused|rolling-back"}})')
    b.stat("Rollouts failed (24 h)", "Rollouts a gate failed in the last day.",
           f"count(time() - gantry_rollout_failed_timestamp_seconds{{{job}}} < 86400) or vector(0)",
           thresholds=[(None, "green"), (1, "red")])
    b.newline()
    b.series("GPU utilisation per node", "Mean utilisation of each node's GPUs, from its latest sample at the controller.",
             [(f"avg by (node) (DCGM_FI_DEV_GPU_UTIL{{{node}}})", "{{node}}")], "percent", w=12)
    b.series("Node health", "Nodes in each health state.",
             [(f"sum by (state) (gantry_node_health{{{node}}})", "{{state}}")], "short", w=12, stack=True)

    b.row("Serving")
    b.series("Nodes per model version", "Nodes serving each bundle of a model: watch a rollout spread, or roll back.",
             [(f"count by (model, bundle) (gantry_node_model_info{{{model}}})", "{{model}} {{bundle}}")],
             "short", stack=True)
    b.series("Error ratio", "Failed share of each model's latest requests, per node.",
             [(f"gantry_node_model_error_ratio{{{model}}}", "{{node}} {{model}}")], "percentunit")
    b.series("Latency p99", "99th-percentile latency of each model's latest successful requests, per node.",
             [(f"gantry_node_model_latency_p99_seconds{{{model}}}", "{{node}} {{model}}")], "s")
    b.series("Golden vectors", "Whether each node's latest golden run matched (1) or not (0).",
             [(f"min by (model, node) (gantry_node_model_golden_ok{{{model}}})", "{{node}} {{model}}")], "short")
    b.series("Drift", "Each model's worst feature score in its latest window per node, and the threshold.",
             [(f"gantry_node_model_drift_worst{{{model}}}", "{{node}} {{model}} {{feature}}"),
              (f"max by (model) (gantry_node_model_drift_threshold{{{model}}})", "{{model}} threshold")], "short")
    b.series("Drifted features", "Features over the threshold in each node's latest window.",
             [(f"gantry_node_model_drifted_features{{{model}}}", "{{node}} {{model}}")], "short")

    b.row("Rollouts")
    b.table("Rollouts", "Every active rollout and the newest finished: model, version, state, step.",
            f"gantry_rollout_state{{{job}}}", ["Time", "Value", "__name__", "job", "instance"],
            {"rollout": "rollout", "model": "model", "version": "version", "state": "state"}, w=12)
    b.series("Rollouts by state", "How many rollouts are in each state.",
             [(f"sum by (state) (gantry_rollouts{{{job}}})", "{{state}}")], "short", w=12, stack=True)
    b.series("Nodes touched", "Nodes each rollout has assigned its bundle to.",
             [(f"gantry_rollout_nodes_touched{{{job}}}", "{{rollout}}")], "short", w=12)
    b.series("Rollout step", "Each rollout's current step of its steps.",
             [(f"gantry_rollout_step{{{job}}}", "{{rollout}} step"),
              (f"gantry_rollout_steps{{{job}}}", "{{rollout}} of")], "short", w=12)

    b.row("Controller")
    b.series("Telemetry stored", "Records stored per second, and duplicates received again and not stored twice.",
             [(f"sum(rate(gantry_controller_records_stored_total{{{job}}}[$__rate_interval]))", "stored"),
              (f"sum(rate(gantry_controller_records_duplicate_total{{{job}}}[$__rate_interval]))", "duplicates")], "short")
    b.series("Batches", "Telemetry batches stored per second.",
             [(f"sum(rate(gantry_controller_batches_total{{{job}}}[$__rate_interval]))", "batches")], "short")
    b.series("Refused streams", "Streams refused for a malformed frame or request (a bad or hostile client).",
             [(f"sum(increase(gantry_controller_rejected_streams_total{{{job}}}[$__rate_interval]))", "refused")], "short")

    return dashboard(
        "gantry-serving-rollouts", "Gantry: model serving and rollouts",
        "Models served across the fleet, drift, rollouts and the controller, from the controller's federation /metrics.",
        b,
        [variable("job", "Job", "label_values(gantry_controller_known_nodes, job)"),
         variable("node", "Node", 'label_values(gantry_node_connected{job=~"$job"}, node)'),
         variable("model", "Model", 'label_values(gantry_node_model_info{job=~"$job"}, model)')],
        ["models", "rollouts"])


def main():
    check = sys.argv[1:] == ["--check"]
    stale = []
    for name, board in [("gantry-fleet-gpus.json", fleet_gpus()),
                        ("gantry-serving-rollouts.json", serving_rollouts())]:
        text = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        path = OUT / name
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale, run scripts/grafana-dashboards.py: " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
