//! `gantry-agent enroll` (online, or by file) and `gantry-agent renew`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A DNS-label version of the host name: lowercase, other characters as '-'.
fn default_node_name() -> String {
    let host = crate::telemetry::host::hostname().to_ascii_lowercase();
    let mut name: String = host
        .split('.')
        .next()
        .unwrap_or("node")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "node".to_owned()
    } else {
        name
    }
}

pub(super) fn enroll(args: EnrollArgs) -> CommandResult {
    let config = load_with_state_dir(&args.config, args.state_dir)?;
    as_state_dir_owner(&config, "enroll …")?;
    if let Some(path) = &args.offline_response {
        return enroll_offline_response(&config.state_dir, path);
    }
    let token = gantry_shared::protocol::enroll::JoinToken::parse(
        args.token.as_deref().unwrap_or_default(),
    )
    .map_err(|e| CommandError::failure("--token", e))?;
    let name = args.name.unwrap_or_else(default_node_name);
    if let Some(path) = &args.offline_request {
        return enroll_offline_request(&config.state_dir, &token, &name, path);
    }
    let Some(controller) = args.controller else {
        return Err(CommandError::usage(
            "--controller is needed (or --offline-request for a node that cannot reach it)",
        ));
    };
    let runtime = command_runtime()?;
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        CommandError::failure(format!("cannot create {}", config.state_dir.display()), e)
    })?;
    let identity = runtime
        .block_on(crate::identity::enroll(
            &config.state_dir,
            controller,
            &token,
            &name,
        ))
        .map_err(CommandError::from_error)?;
    println!(
        "enrolled    as {} with {}",
        identity.enrollment.name, identity.enrollment.controller
    );
    if !identity.enrollment.labels.is_empty() {
        let labels: Vec<String> = identity
            .enrollment
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("labels      {}", labels.join(","));
    }
    println!(
        "identity    {} (the key never left this node)",
        crate::identity::identity_dir(&config.state_dir).display()
    );
    println!("next        gantry-agent run");
    Ok(ExitCode::SUCCESS)
}

fn enroll_offline_request(
    state_dir: &std::path::Path,
    token: &gantry_shared::protocol::enroll::JoinToken,
    name: &str,
    out: &std::path::Path,
) -> CommandResult {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| CommandError::failure(format!("cannot create {}", state_dir.display()), e))?;
    let request = crate::identity::offline_request(state_dir, token, name)
        .map_err(CommandError::from_error)?;
    write_json(out, &request)?;
    println!(
        "request     {} (node {name}; the node key stays in {})\nnext        carry it to the controller: gantry token redeem {} --out RESPONSE\n            then here: gantry-agent enroll --offline-response RESPONSE",
        out.display(),
        crate::identity::identity_dir(state_dir).display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn enroll_offline_response(state_dir: &std::path::Path, path: &std::path::Path) -> CommandResult {
    let bytes = std::fs::read(path)
        .map_err(|e| CommandError::failure(format!("cannot read {}", path.display()), e))?;
    let response =
        serde_json::from_slice::<gantry_shared::protocol::enroll::OfflineResponse>(&bytes)
            .map_err(|e| {
                CommandError::failure(
                    format!("{} is not an enrollment response", path.display()),
                    e,
                )
            })?;
    let identity =
        crate::identity::offline_install(state_dir, &response).map_err(CommandError::from_error)?;
    println!(
        "enrolled    as {} (by file; controller {})\nidentity    {} (the key never left this node)\nnext        gantry-agent run",
        identity.enrollment.name,
        identity.enrollment.controller,
        crate::identity::identity_dir(state_dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn renew(args: RenewArgs) -> CommandResult {
    let config = load_with_state_dir(&args.config, args.state_dir)?;
    as_state_dir_owner(&config, "renew …")?;
    let identity = crate::identity::load(&config.state_dir)
        .map_err(CommandError::from_error)?
        .ok_or_else(|| {
            CommandError::from_error(
                "this node is not enrolled; enroll it first (gantry-agent enroll)",
            )
        })?;
    if let Some(out) = &args.files.offline_request {
        let request = crate::renewal::offline_request(&identity, gantry_net::clock::now_ms())
            .map_err(CommandError::from_error)?;
        write_json(out, &request)?;
        println!(
            "request     {} (signed by the node key; the key stays here)\nnext        on the controller: gantry fleet renew {} --out RESPONSE; then gantry-agent renew --offline-response RESPONSE",
            out.display(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(path) = &args.files.offline_response else {
        return Err(CommandError::usage(
            "renew needs --offline-request FILE or --offline-response FILE",
        ));
    };
    let bytes = std::fs::read(path)
        .map_err(|e| CommandError::failure(format!("cannot read {}", path.display()), e))?;
    match crate::renewal::offline_install(
        &config.state_dir,
        &identity,
        &bytes,
        std::time::SystemTime::now(),
    ) {
        Ok(renewed) => {
            let until = renewed
                .enrollment
                .certificate_expires_at_ms
                .map_or_else(|| "?".to_owned(), gantry_net::clock::rfc3339);
            println!(
                "renewed     {} (certificate valid until {until}); a running agent uses it from its next connection",
                renewed.enrollment.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("certificate NOT renewed; the node's identity is unchanged");
            Err(CommandError::from_error(e))
        }
    }
}

/// Writes a request file for the other side of an air gap: pretty JSON, replaced at once.
fn write_json(out: &std::path::Path, value: &impl serde::Serialize) -> Result<(), CommandError> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("request serializes");
    bytes.push(b'\n');
    gantry_net::atomic::write_bytes(out, 0o644, &bytes)
        .map_err(|e| CommandError::failure(format!("cannot write {}", out.display()), e))
}
