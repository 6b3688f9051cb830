//! Readable forms of `gantry fleet ls | show | top`.

use std::fmt::Write as _;

use gantry_shared::protocol::admin::{NodeDetail, NodeLatest, NodeSummary};
use gantry_shared::telemetry::{GpuState, Sample};

fn ago(now_ms: u64, at_ms: Option<u64>) -> String {
    match at_ms {
        None => "never".to_owned(),
        Some(at) => {
            let secs = now_ms.saturating_sub(at) / 1000;
            humantime::format_duration(std::time::Duration::from_secs(secs)).to_string() + " ago"
        }
    }
}

fn labels(summary: &NodeSummary) -> String {
    summary
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn state(summary: &NodeSummary) -> String {
    let link = if summary.revoked {
        "revoked"
    } else if summary.connected {
        "connected"
    } else {
        "offline"
    };
    if summary.cordon.is_some() && !summary.revoked {
        format!("{link},cordoned")
    } else {
        link.to_owned()
    }
}

pub fn render_list(nodes: &[NodeSummary], now_ms: u64) -> String {
    let mut out = format!(
        "{:<24} {:<19} {:<10} {:>4} {:>10} {:<14} {}\n",
        "NODE", "STATE", "HEALTH", "GPUS", "RECORDS", "LAST SEEN", "LABELS"
    );
    for n in nodes {
        let _ = writeln!(
            out,
            "{:<24} {:<19} {:<10} {:>4} {:>10} {:<14} {}",
            n.name,
            state(n),
            n.health.map_or("-", |h| h.as_str()),
            n.gpus,
            n.records_stored,
            ago(now_ms, n.last_seen_ms),
            labels(n)
        );
    }
    if nodes.is_empty() {
        out.push_str("(no nodes enrolled; `gantry token create` makes a join token)\n");
    }
    out
}

pub fn render_show(d: &NodeDetail, now_ms: u64) -> String {
    let s = &d.summary;
    let mut out = String::new();
    let _ = writeln!(out, "node        {}", s.name);
    let _ = writeln!(out, "state       {}", state(s));
    let _ = writeln!(out, "labels      {}", labels(s));
    if let Some(c) = &s.cordon {
        let _ = writeln!(
            out,
            "cordoned    {} by {}: {} (no new rollouts; `gantry fleet uncordon {}` lifts it)",
            ago(now_ms, Some(c.at_ms)),
            c.by,
            c.reason,
            s.name
        );
    }
    let _ = writeln!(out, "enrolled    {}", ago(now_ms, Some(s.enrolled_at_ms)));
    let _ = writeln!(out, "last seen   {}", ago(now_ms, s.last_seen_ms));
    if let Some(health) = &d.health {
        let _ = writeln!(out, "health      {}", health.state.as_str());
        for r in &health.reasons {
            let _ = writeln!(
                out,
                "  {:<9} {}: {}",
                r.state.as_str(),
                r.check,
                r.describe()
            );
        }
    }
    let b = &d.bundles;
    let _ = writeln!(out, "bundle      {}", b.active.as_deref().unwrap_or("-"));
    let mut names: Vec<&str> = b.models.iter().map(|m| m.name.as_str()).collect();
    names.extend(d.assigned.iter().map(|a| a.model.as_str()));
    names.sort_unstable();
    names.dedup();
    for name in names {
        let served = b.models.iter().find(|m| m.name == name);
        let active = served.and_then(|m| m.active.as_deref());
        let mut line = format!(
            "  model     {}: {} (previous {})",
            if name.is_empty() { "-" } else { name },
            active.unwrap_or("-"),
            served.and_then(|m| m.previous.as_deref()).unwrap_or("-")
        );
        match d.assigned.iter().find(|a| a.model == name) {
            Some(want) if Some(want.id.as_str()) == active => line.push_str(", as assigned"),
            Some(want) => {
                let _ = write!(line, ", assigned {} (not active yet)", want.id);
            }
            None => line.push_str(", not assigned by the controller"),
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(id) = &b.downloading {
        let _ = writeln!(out, "  fetching  {id}: {} bytes", b.downloaded_bytes);
    }
    for f in b.refusals() {
        let _ = writeln!(out, "  REFUSED   {}: {}", f.id, f.reason);
    }
    let _ = writeln!(
        out,
        "agent       {}",
        if d.agent_version.is_empty() {
            "-"
        } else {
            &d.agent_version
        }
    );
    let _ = writeln!(
        out,
        "telemetry   {} records stored, through sequence {}",
        s.records_stored, s.last_seq
    );
    let _ = writeln!(
        out,
        "buffered    {} records on the node; dropped {} metrics, {} events",
        d.buffered_on_node, d.dropped_metrics, d.dropped_events
    );
    if let Some(sample) = &d.latest {
        out.push('\n');
        out.push_str(&gpu_rows(&s.name, sample, true));
    }
    out
}

fn gpu_rows(node: &str, sample: &Sample, header: bool) -> String {
    let mut out = String::new();
    if header {
        let _ = writeln!(
            out,
            "{:<20} {:>3} {:<24} {:>5} {:>13} {:>5} {:>8} {:>4}",
            "NODE", "GPU", "NAME", "UTIL%", "MEM GiB", "TEMP", "POWER W", "XID"
        );
    }
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    for gpu in &sample.gpus {
        let f = &gpu.fields;
        let mut name = gpu.identity.name.clone();
        name.truncate(24);
        let xid = sample
            .xids
            .iter()
            .find(|x| x.gpu == Some(gpu.identity.index))
            .map_or(0, |x| x.by_code.values().sum::<u64>());
        let (util, mem, temp, power) = if gpu.state == GpuState::Ok {
            (
                f.gpu_util_percent.map_or("-".into(), |v| v.to_string()),
                match (f.fb_used_bytes, f.fb_total_bytes) {
                    (Some(u), Some(t)) => format!("{:.1}/{:.1}", gib(u), gib(t)),
                    _ => "-".into(),
                },
                f.temperature_c.map_or("-".into(), |v| v.to_string()),
                f.power_usage_mw
                    .map_or("-".into(), |v| (v / 1000).to_string()),
            )
        } else {
            ("LOST".into(), "-".into(), "-".into(), "-".into())
        };
        let _ = writeln!(
            out,
            "{node:<20} {:>3} {name:<24} {util:>5} {mem:>13} {temp:>5} {power:>8} {xid:>4}",
            gpu.identity.index
        );
    }
    out
}

pub fn render_top(nodes: &[NodeLatest]) -> String {
    let mut out = format!(
        "{:<20} {:>3} {:<24} {:>5} {:>13} {:>5} {:>8} {:>4}\n",
        "NODE", "GPU", "NAME", "UTIL%", "MEM GiB", "TEMP", "POWER W", "XID"
    );
    for n in nodes {
        match &n.sample {
            Some(sample) if !sample.gpus.is_empty() => {
                out.push_str(&gpu_rows(&n.node, sample, false));
            }
            Some(_) => {
                let _ = writeln!(out, "{:<20} (no GPUs)", n.node);
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<20} (no telemetry yet{})",
                    n.node,
                    if n.connected { "" } else { "; offline" }
                );
            }
        }
    }
    out
}
