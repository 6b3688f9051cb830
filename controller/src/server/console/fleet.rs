//! The fleet page: every node with its health and reasons, GPUs live, models; searched
//! by name or label, filtered by state, aggregated and paged on the server so a fleet of
//! ten thousand nodes answers in one small page.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use gantry_shared::health::{Health, HealthState};

use super::html::{self, Section, esc};
use super::{PageError, Rendered, Shared};

/// Nodes per page.
const PAGE: usize = 50;

/// One node as the fleet page shows it.
#[derive(Debug)]
struct Row {
    name: String,
    labels: BTreeMap<String, String>,
    connected: bool,
    revoked: bool,
    last_seen_ms: Option<u64>,
    health: Option<Health>,
    cordon: Option<String>,
    gpus: usize,
    util: Option<f64>,
    temp_max: Option<u32>,
    fb_used: u64,
    fb_total: u64,
    /// (model, active bundle id)
    models: Vec<(String, String)>,
}

impl Row {
    /// The word the page and its filter use: a state, or why there is none.
    fn state(&self) -> &'static str {
        if self.revoked {
            "revoked"
        } else if !self.connected {
            "silent"
        } else {
            self.health.as_ref().map_or("unknown", |h| h.state.as_str())
        }
    }

    /// Worst first: revoked and silent nodes, then unhealthy, degraded, healthy.
    fn rank(&self) -> u8 {
        match self.state() {
            "unhealthy" => 0,
            "silent" => 1,
            "degraded" => 2,
            "unknown" => 3,
            "healthy" => 4,
            _ => 5,
        }
    }

    /// Whether every word of the search matches: `key=value` a label, else a part of the
    /// name or of a label value.
    fn matches(&self, words: &[String]) -> bool {
        words.iter().all(|w| match w.split_once('=') {
            Some((k, v)) => self
                .labels
                .get(k)
                .is_some_and(|l| l.eq_ignore_ascii_case(v)),
            None => {
                self.name.to_lowercase().contains(w)
                    || self.labels.values().any(|l| l.to_lowercase().contains(w))
            }
        })
    }
}

/// Every node's row, from the store and the controller's live view.
async fn rows(shared: &Arc<Shared>) -> Result<Vec<Row>, PageError> {
    let store = Arc::clone(&shared.store);
    let nodes = super::super::blocking(move || store.nodes())
        .await
        .ok_or_else(|| PageError::Unavailable("the store task failed".to_owned()))?
        .map_err(|e| PageError::Unavailable(format!("the controller store failed: {e}")))?;
    let live = shared.live.lock().expect("live map");
    Ok(nodes
        .into_iter()
        .map(|n| {
            let entry = live.get(&n.name);
            let heartbeat = entry.and_then(|l| l.heartbeat.as_ref());
            let sample = entry.and_then(|l| l.latest.as_deref());
            let gpus = sample.map_or(&[][..], |s| s.gpus.as_slice());
            let utils: Vec<u32> = gpus
                .iter()
                .filter_map(|g| g.fields.gpu_util_percent)
                .collect();
            #[allow(clippy::cast_precision_loss)] // a mean for display
            let util = (!utils.is_empty())
                .then(|| f64::from(utils.iter().sum::<u32>()) / utils.len() as f64);
            Row {
                connected: entry.is_some_and(|l| !l.connections.is_empty()),
                revoked: n.revoked,
                last_seen_ms: heartbeat.map(|h| h.at_ms).or(n.last_seen_ms),
                health: heartbeat.and_then(|h| h.health.clone()),
                cordon: n.cordon.map(|c| c.reason),
                gpus: gpus.len(),
                util,
                temp_max: gpus.iter().filter_map(|g| g.fields.temperature_c).max(),
                fb_used: gpus.iter().filter_map(|g| g.fields.fb_used_bytes).sum(),
                fb_total: gpus.iter().filter_map(|g| g.fields.fb_total_bytes).sum(),
                models: heartbeat
                    .map(|h| {
                        h.bundles
                            .models
                            .iter()
                            .filter_map(|m| Some((m.name.clone(), m.active.clone()?)))
                            .collect()
                    })
                    .unwrap_or_default(),
                labels: n.labels,
                name: n.name,
            }
        })
        .collect())
}

/// Bundle id → `name version`, for the models column.
pub(super) async fn bundle_names(shared: &Arc<Shared>) -> HashMap<String, (String, String)> {
    let store = Arc::clone(&shared.store);
    super::super::blocking(move || store.bundle_infos())
        .await
        .and_then(Result::ok)
        .unwrap_or_default()
        .into_iter()
        .map(|b| (b.id, (b.name, b.version)))
        .collect()
}

pub(super) async fn render(shared: &Arc<Shared>, query: &HashMap<String, String>) -> Rendered {
    let mut all = rows(shared).await?;
    let names = bundle_names(shared).await;
    let now = gantry_net::clock::now_ms();
    let search = query.get("q").map_or("", |q| q.trim());
    let words: Vec<String> = search.split_whitespace().map(str::to_lowercase).collect();
    let filter = query.get("state").map_or("", String::as_str);
    let page: usize = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);

    // Aggregates over the whole fleet, before the search narrows it.
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut gpus, mut cordoned, mut util_sum, mut util_n) = (0usize, 0usize, 0.0, 0usize);
    for r in &all {
        *counts.entry(r.state()).or_default() += 1;
        gpus += r.gpus;
        cordoned += usize::from(r.cordon.is_some());
        if let Some(u) = r.util {
            #[allow(clippy::cast_precision_loss)] // a mean for display
            let weight = r.gpus as f64;
            util_sum += u * weight;
            util_n += r.gpus;
        }
    }
    let count = |s: &str| counts.get(s).copied().unwrap_or(0);
    let total = all.len();
    #[allow(clippy::cast_precision_loss)] // a mean for display
    let mean_util = (util_n > 0).then(|| util_sum / util_n as f64);

    all.retain(|r| {
        r.matches(&words)
            && match filter {
                "" => true,
                "cordoned" => r.cordon.is_some(),
                state => r.state() == state,
            }
    });
    all.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.name.cmp(&b.name)));
    let matched = all.len();
    let pages = matched.div_ceil(PAGE).max(1);
    let page = page.min(pages);

    let mut main = String::new();
    main.push_str("<h1>Fleet</h1><p class=\"sub\">Every enrolled node, worst first. Live: this page updates itself every 5 s.</p>");
    main.push_str(&html::cards(&[
        ("nodes", total.to_string()),
        ("healthy", count("healthy").to_string()),
        ("degraded", count("degraded").to_string()),
        ("unhealthy", count("unhealthy").to_string()),
        ("silent", count("silent").to_string()),
        ("cordoned", cordoned.to_string()),
        ("GPUs", gpus.to_string()),
        (
            "mean GPU utilisation",
            mean_util.map_or_else(|| "—".to_owned(), |u| format!("{u:.0} %")),
        ),
    ]));
    let _ = write!(
        main,
        "<form class=\"search\" method=\"get\" action=\"/\">\
<input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"name, or label like zone=b\" aria-label=\"search nodes\">\
<select name=\"state\" aria-label=\"state\">",
        esc(search)
    );
    for (value, label) in [
        ("", "any state"),
        ("unhealthy", "unhealthy"),
        ("degraded", "degraded"),
        ("healthy", "healthy"),
        ("silent", "silent"),
        ("unknown", "unknown"),
        ("cordoned", "cordoned"),
        ("revoked", "revoked"),
    ] {
        let selected = if value == filter { " selected" } else { "" };
        let _ = write!(main, "<option value=\"{value}\"{selected}>{label}</option>");
    }
    main.push_str("</select><button>Search</button></form>");
    if !words.is_empty() || !filter.is_empty() {
        let _ = write!(
            main,
            "<p class=\"sub\">{matched} of {total} nodes match. <a href=\"/\">Show all</a></p>"
        );
    }

    let rows: Vec<Vec<String>> = all
        .iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .map(|r| {
            let mut health = html::badge(r.state());
            if let Some(h) = &r.health {
                for reason in h
                    .reasons
                    .iter()
                    .filter(|x| x.state != HealthState::Healthy)
                    .take(3)
                {
                    let _ = write!(
                        health,
                        "<div class=\"reason\">{}</div>",
                        esc(&reason.describe())
                    );
                }
            }
            if let Some(c) = &r.cordon {
                let _ = write!(
                    health,
                    "<div>{} <span class=\"reason\">{}</span></div>",
                    html::badge("cordoned"),
                    esc(c)
                );
            }
            let models = r
                .models
                .iter()
                .map(|(model, id)| match names.get(id) {
                    Some((name, version)) => format!("{} {}", esc(name), esc(version)),
                    None => format!(
                        "{} <span class=\"mono\">{}</span>",
                        esc(model),
                        esc(short(id))
                    ),
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let memory = if r.fb_total > 0 {
                format!(
                    "<span class=\"nw\">{} / {}</span>",
                    html::bytes(r.fb_used),
                    html::bytes(r.fb_total)
                )
            } else {
                "—".to_owned()
            };
            vec![
                format!(
                    "<a href=\"/nodes/{}\">{}</a>",
                    html::url(&r.name),
                    esc(&r.name)
                ),
                health,
                html::labels(&r.labels),
                r.gpus.to_string(),
                r.util
                    .map_or_else(|| "—".to_owned(), |u| format!("{u:.0} %")),
                html::opt(r.temp_max.map(|t| format!("{t} °C"))),
                memory,
                models,
                r.last_seen_ms
                    .map_or_else(|| "never".to_owned(), |at| html::ago(now, at)),
            ]
        })
        .collect();
    main.push_str(&html::table(
        &[
            "node",
            "health",
            "labels",
            "GPUs",
            "utilisation",
            "hottest",
            "GPU memory",
            "models",
            "last heartbeat",
        ],
        &rows,
        if total == 0 {
            "No node has enrolled yet: `gantry token create`, then `gantry-agent enroll` on a node."
        } else {
            "No node matches."
        },
    ));
    main.push_str(&html::pager(page, pages, |p| {
        format!(
            "/?q={}&state={}&page={p}",
            html::url(search),
            html::url(filter)
        )
    }));
    Ok(("Fleet".to_owned(), Some(Section::Fleet), main))
}

/// The first characters of a bundle id's digest.
pub(super) fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}
