//! `gantry audit`: the chain's verification and the auditor's report, readable (the
//! report as Markdown) or as JSON.

use std::fmt::Write as _;
use std::path::Path;

use gantry_shared::protocol::audit::{Report, Verification};

use crate::home::Home;
use crate::store::{Store, StoreError};

/// Why the store could not be read directly.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(
        "cannot open the store {path}: {source} (a running `gantry serve` holds it; drop --dir to ask the controller, or point --dir at a copy)"
    )]
    Open {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Opens the store of the controller directory `dir` read-only, as evidence.
pub fn open_store(dir: &Path) -> Result<Store, OfflineError> {
    let path = Home::new(dir.to_owned()).store_path();
    Store::open_evidence(&path).map_err(|source| match source {
        StoreError::Engine(_) if Path::new(&path).is_file() => OfflineError::Open {
            path: path.display().to_string(),
            source,
        },
        other => OfflineError::Store(other),
    })
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// The verification, for people.
pub fn render_verification(v: &Verification) -> String {
    match &v.first_break {
        None => format!(
            "audit chain intact: {} entries\nhead        entry {} {}\n(record the head: a later verification must reach an entry that extends it)\n",
            v.entries, v.head_seq, v.head_hash
        ),
        Some(b) => format!(
            "audit chain BROKEN at entry {}: {}\nintact up to entry {} {}\n{} entries stored\n",
            b.seq, b.problem, v.head_seq, v.head_hash, v.entries
        ),
    }
}

/// The report as Markdown.
pub fn render_markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Gantry audit report\n");
    let _ = writeln!(
        out,
        "- range: {} to {}\n- generated: {}\n- chain: {} entries, head entry {} `{}` — {}\n",
        time(r.from_ms),
        time(r.to_ms),
        time(r.generated_at_ms),
        r.chain.entries,
        r.chain.head_seq,
        r.chain.head_hash,
        match &r.chain.first_break {
            None => "intact".to_owned(),
            Some(b) => format!("**BROKEN at entry {}**", b.seq),
        }
    );
    let _ = writeln!(out, "## Flags\n");
    if r.flags.is_empty() {
        let _ = writeln!(out, "None.\n");
    }
    for f in &r.flags {
        let _ = writeln!(out, "- **{}** {}: {}", f.kind, f.subject, f.message);
    }
    if !r.flags.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "## Trust policy of the controller\n");
    if r.policies.is_empty() {
        let _ = writeln!(out, "None recorded.\n");
    }
    for p in &r.policies {
        let _ = writeln!(
            out,
            "- from {}: `{}` version {}, {} of [{}]{}",
            time(p.from_ms),
            p.sha256,
            p.version.map_or_else(|| "?".to_owned(), |v| v.to_string()),
            p.threshold
                .map_or_else(|| "?".to_owned(), |t| t.to_string()),
            p.keys.join(", "),
            if p.revoked.is_empty() {
                String::new()
            } else {
                format!("; revoked {}", p.revoked.join(", "))
            }
        );
    }
    if !r.policies.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "## Nodes\n");
    for (node, n) in &r.nodes {
        let _ = writeln!(out, "### {node}\n");
        if let Some(at) = n.enrolled_at_ms {
            let _ = writeln!(out, "- enrolled {}", time(at));
        }
        if let Some(at) = n.revoked_at_ms {
            let _ = writeln!(out, "- revoked {}", time(at));
        }
        if !n.ran.is_empty() {
            let _ = writeln!(
                out,
                "\n| from | to | bundle | signed by | valid at push | put there by |\n| --- | --- | --- | --- | --- | --- |"
            );
            for i in &n.ran {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} {} `{}` | {} | {} | {} |",
                    time(i.from_ms),
                    i.to_ms.map_or_else(|| "now".to_owned(), time),
                    i.name,
                    i.version,
                    i.bundle,
                    if i.signers.is_empty() {
                        "—".to_owned()
                    } else {
                        i.signers.join(", ")
                    },
                    if i.signatures_valid { "yes" } else { "**no**" },
                    i.cause
                );
            }
        }
        for f in &n.refused {
            let _ = writeln!(
                out,
                "- refused `{}` at {}: {}",
                f.bundle,
                time(f.at_ms),
                f.reason
            );
        }
        for c in &n.cordons {
            let _ = writeln!(
                out,
                "- cordoned {} by {}{}: {}; {}",
                time(c.at_ms),
                c.by,
                if c.automatic { " (automatic)" } else { "" },
                c.reason,
                match (c.lifted_at_ms, &c.lifted_by) {
                    (Some(at), Some(by)) => format!("lifted {} by {by}", time(at)),
                    _ => "still cordoned".to_owned(),
                }
            );
        }
        for p in &n.silent {
            let _ = writeln!(
                out,
                "- silent from {} to {}",
                time(p.from_ms),
                p.to_ms.map_or_else(|| "now".to_owned(), time)
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Bundles\n");
    for (id, b) in &r.bundles {
        let _ = writeln!(
            out,
            "### {} {} `{id}`\n\n- {} {} by {}; signed by {}; valid under the controller's policy `{}`: {}",
            b.name,
            b.version,
            if b.via == "import" {
                "imported"
            } else {
                "pushed"
            },
            b.pushed_at_ms
                .map_or_else(|| "never (not pushed here)".to_owned(), time),
            if b.pushed_by.is_empty() {
                "—"
            } else {
                &b.pushed_by
            },
            if b.signers.is_empty() {
                "—".to_owned()
            } else {
                b.signers.join(", ")
            },
            if b.policy_sha256.is_empty() {
                "—"
            } else {
                &b.policy_sha256
            },
            if b.signatures_valid { "yes" } else { "**no**" }
        );
        for (node, from, to) in &b.ran_on {
            let _ = writeln!(
                out,
                "- ran on {node} from {} to {}",
                time(*from),
                to.map_or_else(|| "now".to_owned(), time)
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Refused pushes and imports\n");
    if r.refused_uploads.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        let _ = writeln!(
            out,
            "| at | by | how | file SHA-256 | reason |\n| --- | --- | --- | --- | --- |"
        );
        for u in &r.refused_uploads {
            let _ = writeln!(
                out,
                "| {} | {} | {} | `{}` | {} |",
                time(u.at_ms),
                u.by,
                u.via,
                if u.file_sha256.is_empty() {
                    "—"
                } else {
                    &u.file_sha256
                },
                u.reason.replace('|', "\\|")
            );
        }
        out.push('\n');
    }
    out
}
