//! `gantry capture export`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `capture` command.
pub(super) async fn run(command: CaptureCommand) -> CommandResult {
    match command {
        CaptureCommand::Export {
            name,
            out,
            version,
            admin,
            json,
        } => {
            let client = connect(&admin).await?;
            let mut pairs = Vec::new();
            let mut after = None;
            loop {
                let page = client
                    .capture_page(&name, version.as_deref(), after)
                    .await?;
                pairs.extend(page.pairs);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if pairs.is_empty() {
                return Err(CommandError::from_error(format!(
                    "the controller holds no captured pairs of {name}{}; is capture_rate set for it in the nodes' [monitoring.models.{name}], and have they reached the controller?",
                    version.map(|v| format!(" {v}")).unwrap_or_default()
                )));
            }
            let manifest = tokio::task::spawn_blocking(move || {
                crate::capture::write(&out, &name, &pairs).map(|m| (m, out))
            })
            .await
            .map_err(|e| CommandError::failure("the export failed", e))?
            .map_err(|e| CommandError::failure("cannot write the export", e))?;
            let (manifest, out) = manifest;
            if json {
                print_json(&manifest);
            } else {
                for f in &manifest.files {
                    println!(
                        "{}: {} pairs of {} {} ({} labeled) from {} node(s), {} to {}{}",
                        out.join(&f.file).display(),
                        f.pairs,
                        manifest.model,
                        f.version,
                        f.labeled,
                        f.nodes.len(),
                        gantry_net::clock::rfc3339(f.first_at_ms),
                        gantry_net::clock::rfc3339(f.last_at_ms),
                        if f.redacted.is_empty() {
                            String::new()
                        } else {
                            format!("; redacted: {}", f.redacted.join(", "))
                        }
                    );
                }
                println!("{}", out.join("manifest.json").display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
