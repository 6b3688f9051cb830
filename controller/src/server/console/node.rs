//! A node's page: its health with reasons and history, its GPUs now and over time from
//! the telemetry the controller stored, its XIDs, the models it serves and the bundles
//! it refused; operators can cordon and uncordon it here.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use gantry_shared::protocol::admin::{self, Role};
use gantry_shared::protocol::telemetry::RecordClass;
use gantry_shared::telemetry::{Event, Sample};

use super::chart::{self, Series};
use super::html::{self, Section, esc};
use super::session::Session;
use super::{PageError, Rendered, Shared};

/// Spans a node's charts can cover.
const SPANS: [(&str, u64); 4] = [
    ("10m", 600_000),
    ("1h", 3_600_000),
    ("6h", 21_600_000),
    ("24h", 86_400_000),
];

/// Points per line: enough for the chart's width.
const POINTS: usize = 240;

/// At most this many stored records are read for one page.
const MAX_RECORDS: usize = 50_000;

pub(super) async fn render(
    shared: &Arc<Shared>,
    session: &Session,
    name: &str,
    query: &HashMap<String, String>,
) -> Rendered {
    let admin::Response::Node(detail) = super::ask(
        shared,
        session,
        admin::Request::FleetShow {
            node: name.to_owned(),
        },
    )
    .await?
    else {
        return Err(PageError::Unavailable("unexpected answer".to_owned()));
    };
    let span_name = query.get("span").map_or("1h", String::as_str);
    let span_ms = SPANS
        .iter()
        .find(|(n, _)| *n == span_name)
        .map_or(3_600_000, |(_, ms)| *ms);
    let now = gantry_net::clock::now_ms();
    let since = now.saturating_sub(span_ms);

    let store = Arc::clone(&shared.store);
    let node = name.to_owned();
    let (records, changes) = super::super::blocking(move || {
        let records = store.recent_records(&node, MAX_RECORDS)?;
        let changes = store.health_changes(&node, 20)?;
        Ok::<_, crate::store::StoreError>((records, changes))
    })
    .await
    .ok_or_else(|| PageError::Unavailable("the store task failed".to_owned()))?
    .map_err(|e| PageError::Unavailable(format!("the controller store failed: {e}")))?;
    let in_span: Vec<_> = records.iter().filter(|(r, _)| r.at_ms >= since).collect();
    let metrics: Vec<_> = in_span
        .iter()
        .filter(|(r, _)| r.class == RecordClass::Metrics)
        .collect();
    let stride = metrics.len().div_ceil(POINTS).max(1);
    let mut samples: Vec<Sample> = metrics
        .iter()
        .step_by(stride)
        .filter_map(|(_, body)| serde_json::from_slice(body).ok())
        .collect();
    samples.reverse();
    let events: Vec<(u64, Event)> = in_span
        .iter()
        .filter(|(r, _)| r.class == RecordClass::Event)
        .filter_map(|(r, body)| Some((r.at_ms, serde_json::from_slice(body).ok()?)))
        .collect();
    let names = super::fleet::bundle_names(shared).await;
    let served = shared
        .live
        .lock()
        .expect("live map")
        .get(name)
        .and_then(|l| l.heartbeat.as_ref().map(|h| h.models.clone()))
        .unwrap_or_default();

    let s = &detail.summary;
    let mut main = String::new();
    let state = if s.revoked {
        "revoked".to_owned()
    } else if !s.connected {
        "silent".to_owned()
    } else {
        detail
            .health
            .as_ref()
            .map_or("unknown", |h| h.state.as_str())
            .to_owned()
    };
    let _ = write!(
        main,
        "<h1>{} {}</h1><p class=\"sub\">{}</p>",
        esc(name),
        html::badge(&state),
        html::labels(&s.labels)
    );
    let _ = write!(
        main,
        "<dl class=\"facts\"><dt>connected</dt><dd>{}</dd><dt>last heartbeat</dt><dd>{}</dd>\
<dt>agent</dt><dd>{}</dd><dt>enrolled</dt><dd>{}</dd><dt>records stored</dt><dd>{} (last sequence {})</dd>\
<dt>buffered on the node</dt><dd>{}</dd><dt>dropped on the node</dt><dd>{} metrics, {} events</dd></dl>",
        if s.connected { "yes" } else { "no" },
        s.last_seen_ms
            .map_or_else(|| "never".to_owned(), |at| html::ago(now, at)),
        esc(&detail.agent_version),
        html::time(s.enrolled_at_ms),
        s.records_stored,
        s.last_seq,
        detail.buffered_on_node,
        detail.dropped_metrics,
        detail.dropped_events,
    );

    // Cordon, with the form to change it.
    main.push_str("<h2>Rollouts</h2>");
    match &s.cordon {
        Some(c) => {
            let _ = write!(
                main,
                "<p>{} by {} {}: {}</p>",
                html::badge("cordoned"),
                esc(&c.by),
                html::ago(now, c.at_ms),
                esc(&c.reason)
            );
        }
        None => main.push_str("<p>Takes new rollouts.</p>"),
    }
    if session.grant.role >= Role::Operator {
        main.push_str("<div class=\"actions\">");
        if s.cordon.is_some() {
            main.push_str(&html::action(
                &format!("/nodes/{}/uncordon", html::url(name)),
                "Uncordon",
                session,
                None,
                false,
            ));
        } else {
            let _ = write!(
                main,
                "<form class=\"action\" method=\"post\" action=\"/nodes/{}/cordon\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"text\" class=\"reason\" name=\"reason\" placeholder=\"why (e.g. hardware check)\" aria-label=\"reason\" required> \
<button>Cordon</button></form>",
                html::url(name),
                esc(&session.csrf)
            );
        }
        main.push_str("</div>");
    }

    // Health now and its history.
    main.push_str("<h2>Health</h2>");
    match &detail.health {
        Some(h) if !h.reasons.is_empty() => {
            let rows: Vec<Vec<String>> = h
                .reasons
                .iter()
                .map(|r| {
                    vec![
                        html::badge(r.state.as_str()),
                        format!("<span class=\"mono\">{}</span>", esc(&r.check)),
                        esc(&r.message),
                        r.remedy
                            .map_or_else(|| "—".to_owned(), |m| esc(&m.describe())),
                    ]
                })
                .collect();
            main.push_str(&html::table(
                &["state", "check", "finding", "likely cause and action"],
                &rows,
                "",
            ));
        }
        Some(_) => main.push_str("<p>Every check passes.</p>"),
        None => main.push_str("<p class=\"empty\">No heartbeat with health yet.</p>"),
    }
    let history: Vec<Vec<String>> = changes
        .iter()
        .map(|(at, h)| {
            vec![
                html::time(*at),
                html::badge(h.state.as_str()),
                esc(&h
                    .reasons
                    .iter()
                    .map(|r| r.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")),
            ]
        })
        .collect();
    main.push_str("<h2>Health history</h2>");
    main.push_str(&html::table(
        &["since", "state", "reasons"],
        &history,
        "No change of health recorded yet.",
    ));

    // GPUs now.
    main.push_str("<h2>GPUs</h2>");
    let latest = detail.latest.as_ref();
    let gpu_rows: Vec<Vec<String>> = latest
        .map(|l| {
            l.gpus
                .iter()
                .map(|g| {
                    let f = &g.fields;
                    let xids: u64 = l
                        .xids
                        .iter()
                        .filter(|x| x.pci_bus_id == g.identity.pci_bus_id)
                        .flat_map(|x| x.by_code.values())
                        .sum();
                    vec![
                        g.identity.index.to_string(),
                        esc(&g.identity.name),
                        format!("<span class=\"mono\">{}</span>", esc(&g.identity.uuid)),
                        html::opt(f.gpu_util_percent.map(|u| format!("{u} %"))),
                        match (f.fb_used_bytes, f.fb_total_bytes) {
                            (Some(u), Some(t)) => {
                                format!("{} / {}", html::bytes(u), html::bytes(t))
                            }
                            _ => "—".to_owned(),
                        },
                        html::opt(f.temperature_c.map(|t| format!("{t} °C"))),
                        html::opt(
                            f.power_usage_mw
                                .map(|p| format!("{:.0} W", f64::from(p) / 1000.0)),
                        ),
                        html::opt(f.sm_clock_mhz.map(|c| format!("{c} MHz"))),
                        html::opt(f.ecc_dbe_volatile),
                        xids.to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    main.push_str(&html::table(
        &[
            "GPU",
            "model",
            "UUID",
            "utilisation",
            "memory",
            "temperature",
            "power",
            "SM clock",
            "ECC DBE",
            "XIDs",
        ],
        &gpu_rows,
        "No sample from this node yet.",
    ));

    // GPUs over time.
    let _ = write!(
        main,
        "<h2>Over the last {}</h2><p class=\"sub\">",
        esc(span_name)
    );
    for (n, _) in SPANS {
        let _ = write!(
            main,
            "<a href=\"/nodes/{}?span={n}\"{}>{n}</a> ",
            html::url(name),
            if n == span_name {
                " aria-current=\"page\""
            } else {
                ""
            }
        );
    }
    let _ = write!(
        main,
        "· {} samples from the controller's store</p><div class=\"grid2\">",
        metrics.len()
    );
    let per_gpu =
        |pick: &dyn Fn(&gantry_shared::telemetry::GpuFields) -> Option<f64>| -> Vec<Series> {
            let mut by_gpu: Vec<Series> = Vec::new();
            for sample in &samples {
                for g in &sample.gpus {
                    let Some(v) = pick(&g.fields) else { continue };
                    let i = g.identity.index as usize;
                    if by_gpu.len() <= i {
                        by_gpu.resize_with(i + 1, Series::default);
                    }
                    by_gpu[i].name = format!("GPU {i}");
                    by_gpu[i].points.push((sample.taken_at_ms, v));
                }
            }
            by_gpu.retain(|s| !s.points.is_empty());
            by_gpu
        };
    #[allow(clippy::cast_precision_loss)] // bytes for display
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    main.push_str(&chart::lines(
        "Utilisation",
        "%",
        &per_gpu(&|f| f.gpu_util_percent.map(f64::from)),
        Some((0.0, 100.0)),
    ));
    main.push_str(&chart::lines(
        "Temperature",
        "°C",
        &per_gpu(&|f| f.temperature_c.map(f64::from)),
        None,
    ));
    main.push_str(&chart::lines(
        "Power",
        "W",
        &per_gpu(&|f| f.power_usage_mw.map(|p| f64::from(p) / 1000.0)),
        None,
    ));
    main.push_str(&chart::lines(
        "Memory used",
        "GiB",
        &per_gpu(&|f| f.fb_used_bytes.map(gib)),
        Some((0.0, 0.0)),
    ));
    main.push_str("</div>");

    // XIDs.
    main.push_str("<h2>XID errors</h2><h3>Counts since the agent started</h3>");
    let totals: Vec<Vec<String>> = latest
        .map(|l| {
            l.xids
                .iter()
                .flat_map(|x| {
                    x.by_code
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(move |(code, n)| {
                            vec![
                                x.gpu.map_or_else(|| esc(&x.pci_bus_id), |g| g.to_string()),
                                code.to_string(),
                                esc(gantry_shared::xid::lookup(*code).name),
                                n.to_string(),
                            ]
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    main.push_str(&html::table(
        &["GPU", "XID", "meaning", "count"],
        &totals,
        "No XID error reported.",
    ));
    let recent_xids: Vec<Vec<String>> = events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Xid {
                gpu,
                code,
                count,
                pci_bus_id,
            } => Some(vec![
                html::time(*at),
                gpu.map_or_else(|| esc(pci_bus_id), |g| g.to_string()),
                code.to_string(),
                count.to_string(),
            ]),
            _ => None,
        })
        .take(50)
        .collect();
    if !recent_xids.is_empty() {
        main.push_str("<h3>As reported, newest first</h3>");
        main.push_str(&html::table(
            &["at", "GPU", "XID", "count"],
            &recent_xids,
            "",
        ));
    }

    // Models and bundles.
    main.push_str("<h2>Models</h2>");
    let label = |id: &str| match names.get(id) {
        Some((n, v)) => format!(
            "{} {} <span class=\"mono\">{}</span>",
            esc(n),
            esc(v),
            esc(super::fleet::short(id))
        ),
        None => format!(
            "<span class=\"mono\">{}</span>",
            esc(super::fleet::short(id))
        ),
    };
    let model_rows: Vec<Vec<String>> = detail
        .bundles
        .models
        .iter()
        .map(|m| {
            let report = served.iter().find(|r| Some(&r.bundle) == m.active.as_ref());
            let assigned = detail.assigned.iter().find(|d| {
                d.model == m.name || (d.model.is_empty() && Some(&d.id) == m.active.as_ref())
            });
            vec![
                format!(
                    "<a href=\"/models/{}\">{}</a>",
                    html::url(&m.name),
                    esc(&m.name)
                ),
                m.active.as_deref().map_or_else(|| "—".to_owned(), label),
                m.previous.as_deref().map_or_else(|| "—".to_owned(), label),
                match assigned {
                    Some(d) if Some(&d.id) == m.active.as_ref() => "as assigned".to_owned(),
                    Some(d) => format!("assigned {}", label(&d.id)),
                    None => "—".to_owned(),
                },
                report.map_or_else(|| "—".to_owned(), |r| esc(&r.execution_provider)),
                report.map_or_else(
                    || "—".to_owned(),
                    |r| {
                        format!(
                            "{:.2} % of {}",
                            r.recent_error_rate * 100.0,
                            r.recent_requests
                        )
                    },
                ),
                report
                    .and_then(|r| r.latency_p99_s)
                    .map_or_else(|| "—".to_owned(), |p| format!("{:.2} ms", p * 1000.0)),
                match report.and_then(|r| r.golden_ok) {
                    Some(true) => html::badge("ok"),
                    Some(false) => html::badge("failing"),
                    None => "—".to_owned(),
                },
            ]
        })
        .collect();
    main.push_str(&html::table(
        &[
            "model",
            "active",
            "previous",
            "assignment",
            "provider",
            "errors",
            "p99 latency",
            "golden",
        ],
        &model_rows,
        "This node serves no model.",
    ));
    if let Some(d) = &detail.bundles.downloading {
        let _ = write!(
            main,
            "<p>Fetching {} ({} so far).</p>",
            label(d),
            html::bytes(detail.bundles.downloaded_bytes)
        );
    }

    main.push_str("<h2>Refused bundles</h2>");
    let mut refusals: Vec<Vec<String>> = detail
        .bundles
        .refused
        .iter()
        .map(|f| {
            vec![
                "now".to_owned(),
                esc(&f.model),
                label(&f.id),
                esc(&f.reason),
            ]
        })
        .collect();
    refusals.extend(events.iter().filter_map(|(at, e)| match e {
        Event::BundleRefused { bundle, reason } => Some(vec![
            html::time(*at),
            String::new(),
            label(bundle),
            esc(reason),
        ]),
        _ => None,
    }));
    main.push_str(&html::table(
        &["at", "model", "bundle", "reason"],
        &refusals,
        "This node refused no bundle in this span.",
    ));
    Ok((name.to_owned(), Some(Section::Fleet), main))
}
