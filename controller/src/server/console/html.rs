//! HTML building blocks of the console: escaping, the page frame, tables, badges,
//! forms and figures. Every text that came from a node, a bundle or a person goes
//! through [`esc`].

use std::fmt::Write as _;

use super::session::Session;

/// `text` safe inside HTML text and attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for a path segment or a query value.
pub(super) fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The sections of the console, in the order of its navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Fleet,
    Rollouts,
    Models,
    Kpis,
    Audit,
}

const SECTIONS: [(Section, &str, &str); 5] = [
    (Section::Fleet, "/", "Fleet"),
    (Section::Rollouts, "/rollouts", "Rollouts"),
    (Section::Models, "/models", "Models"),
    (Section::Kpis, "/kpis", "KPIs"),
    (Section::Audit, "/audit", "Audit"),
];

/// A whole page: the frame around `main`, which the live script swaps in place.
pub(super) fn page(title: &str, section: Option<Section>, session: &Session, main: &str) -> String {
    let mut nav = String::new();
    for (s, href, label) in SECTIONS {
        let current = if Some(s) == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Gantry</title><link rel=\"stylesheet\" href=\"/assets/console.css\">\
<script src=\"/assets/console.js\" defer></script></head><body>\
<header><a class=\"brand\" href=\"/\">Gantry</a><nav>{nav}</nav>\
<form class=\"who\" method=\"post\" action=\"/logout\"><span>{admin} · {role}</span>\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Sign out</button></form></header>\
<main data-live=\"5000\">{main}</main></body></html>\n",
        title = esc(title),
        admin = esc(&session.grant.admin),
        role = session.grant.role.as_str(),
        csrf = esc(&session.csrf),
    )
}

/// A page for someone not signed in (sign-in and refusals).
pub(super) fn bare_page(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Gantry</title><link rel=\"stylesheet\" href=\"/assets/console.css\"></head><body>\
<header><a class=\"brand\" href=\"/\">Gantry</a></header><main class=\"narrow\">{main}</main></body></html>\n",
        title = esc(title),
    )
}

/// A state word as a coloured badge (healthy, degraded, unhealthy, rolling …).
pub(super) fn badge(state: &str) -> String {
    let class = match state {
        "healthy" | "succeeded" | "ok" | "connected" | "intact" | "restored" => "good",
        "degraded" | "paused" | "pending" | "baking" | "rolling" | "cordoned" | "silent" => "warn",
        "unhealthy" | "rolling-back" | "rolled-back" | "failing" | "refused" | "broken"
        | "revoked" | "aborted" => "bad",
        _ => "plain",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(state))
}

/// A form that posts one action, with the session's CSRF token; `confirm` asks first.
pub(super) fn action(
    path: &str,
    label: &str,
    session: &Session,
    confirm: Option<&str>,
    danger: bool,
) -> String {
    let confirm = confirm.map_or_else(String::new, |c| format!(" data-confirm=\"{}\"", esc(c)));
    let class = if danger { " class=\"danger\"" } else { "" };
    format!(
        "<form class=\"action\" method=\"post\" action=\"{}\"{confirm}>\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><button{class}>{}</button></form>",
        esc(path),
        esc(&session.csrf),
        esc(label)
    )
}

/// A table: head cells, then rows of already-rendered cells.
pub(super) fn table(head: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", esc(empty));
    }
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// Summary figures in a row of cards.
pub(super) fn cards(items: &[(&str, String)]) -> String {
    let mut out = String::from("<div class=\"cards\">");
    for (label, value) in items {
        let _ = write!(
            out,
            "<div class=\"card\"><div class=\"value\">{value}</div><div class=\"label\">{}</div></div>",
            esc(label)
        );
    }
    out.push_str("</div>");
    out
}

/// Links to the other pages of a list; `href(page)` makes each page's address.
pub(super) fn pager(page: usize, pages: usize, href: impl Fn(usize) -> String) -> String {
    if pages <= 1 {
        return String::new();
    }
    let mut out = String::from("<nav class=\"pager\">");
    if page > 1 {
        let _ = write!(out, "<a href=\"{}\">← previous</a>", esc(&href(page - 1)));
    }
    let _ = write!(out, "<span>page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(out, "<a href=\"{}\">next →</a>", esc(&href(page + 1)));
    }
    out.push_str("</nav>");
    out
}

/// A time as UTC, to the second.
pub(super) fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// How long ago `at_ms` was, shortly, with the exact time on hover.
pub(super) fn ago(now_ms: u64, at_ms: u64) -> String {
    let s = now_ms.saturating_sub(at_ms) / 1000;
    let text = if s < 60 {
        format!("{s} s ago")
    } else if s < 3600 {
        format!("{} min ago", s / 60)
    } else if s < 86_400 {
        format!("{} h ago", s / 3600)
    } else {
        format!("{} d ago", s / 86_400)
    };
    format!("<time title=\"{}\">{text}</time>", time(at_ms))
}

/// A span of seconds, shortly.
pub(super) fn span(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else if seconds < 172_800.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} d", seconds / 86_400.0)
    }
}

/// Bytes in binary units.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)] // for display
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An optional figure, or an em dash.
pub(super) fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| v.to_string())
}

/// Labels as small chips.
pub(super) fn labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut out = String::new();
    for (k, v) in labels {
        let _ = write!(out, "<span class=\"chip\">{}={}</span>", esc(k), esc(v));
    }
    out
}

/// A notice above a page's content (the result of an action).
pub(super) fn notice(text: &str, good: bool) -> String {
    format!(
        "<p class=\"notice {}\" role=\"status\">{}</p>",
        if good { "good" } else { "bad" },
        esc(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        let row = table(&["node"], &[vec![esc("<b>")]], "none");
        assert!(row.contains("&lt;b&gt;") && !row.contains("<b>"));
    }

    #[test]
    fn names_are_percent_encoded_in_addresses() {
        assert_eq!(url("gpu-01"), "gpu-01");
        assert_eq!(url("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(80 * 1024 * 1024 * 1024), "80.0 GiB");
        assert_eq!(span(30.0), "30 s");
        assert_eq!(span(600.0), "10.0 min");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert!(ago(125_000, 5_000).contains(">2 min ago<"));
    }

    #[test]
    fn a_pager_links_only_to_pages_that_exist() {
        assert_eq!(pager(1, 1, |p| format!("/?page={p}")), "");
        let first = pager(1, 3, |p| format!("/?page={p}"));
        assert!(first.contains("/?page=2") && !first.contains("previous"));
        let last = pager(3, 3, |p| format!("/?page={p}"));
        assert!(last.contains("/?page=2") && !last.contains("next"));
    }
}
