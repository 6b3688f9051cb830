//! The audit log: the chain's status and head, the auditor's report per node and per
//! bundle with its flags, and the report as a file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use gantry_shared::protocol::admin;

use super::html::{self, Section, esc};
use super::session::Session;
use super::{PageError, Rendered, Shared};

const DAY_MS: u64 = 86_400_000;

/// Nodes shown per page of the report's node table.
const NODES_PAGE: usize = 50;

/// The report over the last `days` (from the query, 30 by default).
async fn report(
    shared: &Arc<Shared>,
    session: &Session,
    query: &HashMap<String, String>,
) -> Result<(u64, Box<gantry_shared::protocol::audit::Report>), PageError> {
    let days: u64 = query
        .get("days")
        .and_then(|d| d.parse().ok())
        .unwrap_or(30)
        .clamp(1, 3650);
    let now = gantry_net::clock::now_ms();
    match super::ask(
        shared,
        session,
        admin::Request::AuditReport {
            from_ms: now.saturating_sub(days * DAY_MS),
            to_ms: now,
            silence_ms: 3_600_000,
        },
    )
    .await?
    {
        admin::Response::AuditReport(r) => Ok((days, r)),
        _ => Err(PageError::Unavailable("unexpected answer".to_owned())),
    }
}

pub(super) async fn render(
    shared: &Arc<Shared>,
    session: &Session,
    query: &HashMap<String, String>,
) -> Rendered {
    let (days, r) = report(shared, session, query).await?;
    let chain = &r.chain;
    let mut main = String::from("<h1>Audit</h1>");
    match &chain.first_break {
        None => {
            let _ = write!(
                main,
                "<p>{} {} entries; head entry {} <span class=\"mono\">{}</span></p>",
                html::badge("intact"),
                chain.entries,
                chain.head_seq,
                esc(&chain.head_hash)
            );
        }
        Some(b) => {
            let _ = write!(
                main,
                "<p>{} at entry {}: {} (intact up to entry {} <span class=\"mono\">{}</span>)</p>",
                html::badge("broken"),
                b.seq,
                esc(&b.problem),
                chain.head_seq,
                esc(&chain.head_hash)
            );
        }
    }
    let _ = write!(
        main,
        "<p class=\"sub\">The report over the last {days} days. <a href=\"/audit/report.json?days={days}\" download>Download the signed report (JSON)</a>; check it with <code>gantry audit verify-report FILE</code></p>"
    );
    main.push_str("<h2>Flags</h2>");
    let flags: Vec<Vec<String>> = r
        .flags
        .iter()
        .map(|f| {
            vec![
                format!("<span class=\"badge bad\">{}</span>", esc(&f.kind)),
                esc(&f.subject),
                esc(&f.message),
            ]
        })
        .collect();
    main.push_str(&html::table(
        &["flag", "subject", "finding"],
        &flags,
        "Nothing flagged: everything that ran was signed and valid under the policy of its time.",
    ));
    main.push_str("<h2>Nodes</h2>");
    // Nodes with something to look at first (a bundle whose signatures were not valid,
    // refusals, silent periods), then by name; a page at a time on a large fleet.
    let mut nodes: Vec<(&String, &gantry_shared::protocol::audit::NodeReport)> =
        r.nodes.iter().collect();
    nodes.sort_by_key(|(name, n)| {
        let notable = n.ran.iter().any(|i| !i.signatures_valid)
            || !n.refused.is_empty()
            || !n.silent.is_empty();
        (!notable, name.as_str())
    });
    let pages = nodes.len().div_ceil(NODES_PAGE).max(1);
    let page = query
        .get("nodes")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .skip((page - 1) * NODES_PAGE)
        .take(NODES_PAGE)
        .map(|(name, n)| {
            let ran = n
                .ran
                .iter()
                .map(|i| {
                    format!(
                        "{} {} from {}{} (signed by {}{})",
                        esc(&i.name),
                        esc(&i.version),
                        html::time(i.from_ms),
                        i.to_ms
                            .map_or_else(String::new, |t| format!(" to {}", html::time(t))),
                        esc(&i.signers.join(", ")),
                        if i.signatures_valid {
                            ""
                        } else {
                            "; NOT VALID"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            vec![
                format!("<a href=\"/nodes/{}\">{}</a>", html::url(name), esc(name)),
                ran,
                n.refused.len().to_string(),
                n.silent.len().to_string(),
            ]
        })
        .collect();
    main.push_str(&html::table(
        &["node", "ran", "refusals", "silent periods"],
        &rows,
        "No node in this span.",
    ));
    main.push_str(&html::pager(page, pages, |p| {
        format!("/audit?days={days}&nodes={p}")
    }));
    main.push_str("<h2>Bundles</h2>");
    let bundles: Vec<Vec<String>> = r
        .bundles
        .iter()
        .map(|(id, b)| {
            let mut nodes: Vec<&str> = b.ran_on.iter().map(|(n, _, _)| n.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            vec![
                format!(
                    "<span class=\"mono\" title=\"{}\">{}</span>",
                    esc(id),
                    esc(super::fleet::short(id))
                ),
                format!("{} {}", esc(&b.name), esc(&b.version)),
                format!(
                    "{}{}",
                    esc(&b.signers.join(", ")),
                    if b.signatures_valid {
                        ""
                    } else {
                        " (NOT VALID)"
                    }
                ),
                format!(
                    "{} by {}",
                    b.pushed_at_ms.map_or_else(|| "—".to_owned(), html::time),
                    esc(&b.pushed_by)
                ),
                if nodes.len() > 6 {
                    format!(
                        "{}, … {} nodes in all",
                        esc(&nodes[..5].join(", ")),
                        nodes.len()
                    )
                } else {
                    esc(&nodes.join(", "))
                },
            ]
        })
        .collect();
    main.push_str(&html::table(
        &["bundle", "model", "signed by", "pushed", "ran on"],
        &bundles,
        "No bundle in this span.",
    ));
    log(shared, session, query, &mut main).await?;
    Ok(("Audit".to_owned(), Some(Section::Audit), main))
}

/// Entries shown per page of the log.
const LOG_PAGE: u32 = 50;

/// The log itself, newest first, searchable by actor, action or subject, a page at a
/// time (`before` is the oldest sequence number the previous page showed).
async fn log(
    shared: &Arc<Shared>,
    session: &Session,
    query: &HashMap<String, String>,
    main: &mut String,
) -> Result<(), PageError> {
    let filter = query.get("q").map_or("", |q| q.trim()).to_owned();
    let before = query.get("before").and_then(|b| b.parse().ok());
    let admin::Response::AuditEntries(entries) = super::ask(
        shared,
        session,
        admin::Request::AuditEntries {
            before_seq: before,
            limit: LOG_PAGE,
            filter: filter.clone(),
        },
    )
    .await?
    else {
        return Err(PageError::Unavailable("unexpected answer".to_owned()));
    };
    let _ = write!(
        main,
        "<h2 id=\"log\">Log</h2><form class=\"search\" method=\"get\" action=\"/audit#log\">\
<input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"actor, action or subject\" aria-label=\"search the log\"> \
<button>Search</button></form>",
        esc(&filter)
    );
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut details = e.details.to_string();
            if details == "{}" || details == "null" {
                details.clear();
            }
            if details.len() > 240 {
                let mut cut = 240;
                while !details.is_char_boundary(cut) {
                    cut -= 1;
                }
                details.truncate(cut);
                details.push('…');
            }
            vec![
                e.seq.to_string(),
                format!("<span class=\"nw\">{}</span>", html::time(e.at_ms)),
                format!("<span class=\"nw\">{}</span>", esc(&e.actor)),
                format!("<code>{}</code>", esc(&e.action)),
                if e.subject.starts_with("sha256:") {
                    format!(
                        "<span class=\"mono\" title=\"{}\">{}</span>",
                        esc(&e.subject),
                        esc(super::fleet::short(&e.subject))
                    )
                } else {
                    esc(&e.subject)
                },
                format!("<span class=\"mono small wrap\">{}</span>", esc(&details)),
            ]
        })
        .collect();
    main.push_str(&html::table(
        &["entry", "at", "actor", "action", "subject", "details"],
        &rows,
        if filter.is_empty() {
            "No entry."
        } else {
            "No entry matches."
        },
    ));
    let newer = before.is_some();
    let older = entries.len() == LOG_PAGE as usize;
    if newer || older {
        main.push_str("<nav class=\"pager\">");
        if newer {
            let _ = write!(
                main,
                "<a href=\"/audit?q={}#log\">newest</a> ",
                html::url(&filter)
            );
        }
        if let (true, Some(last)) = (older, entries.last()) {
            let _ = write!(
                main,
                "<a href=\"/audit?q={}&amp;before={}#log\">older entries</a>",
                html::url(&filter),
                last.seq
            );
        }
        main.push_str("</nav>");
    }
    Ok(())
}

/// The report as a file signed by the controller's key, named after when it was made;
/// `gantry audit verify-report FILE` proves it against the fleet's CA certificate.
pub(super) async fn download(
    shared: &Arc<Shared>,
    session: &Session,
    query: &HashMap<String, String>,
) -> Result<(String, String), PageError> {
    let (_, r) = report(shared, session, query).await?;
    let body = crate::audit::sign_report(
        &r,
        &shared.controller_key_pem,
        &shared.controller_certificate_pem,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot sign the audit report with the controller key (controller.key)");
        PageError::Unavailable(
            "The controller cannot sign the report with its key (controller.key); its log says why."
                .to_owned(),
        )
    })?;
    Ok((
        format!("gantry-audit-report-{}.signed.json", r.generated_at_ms),
        body,
    ))
}
