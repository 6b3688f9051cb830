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

pub(super) fn enroll(args: EnrollArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "enroll …") {
        return code;
    }
    if let Some(path) = &args.offline_response {
        return enroll_offline_response(&config.state_dir, path);
    }
    let token = match gantry_shared::protocol::enroll::JoinToken::parse(
        args.token.as_deref().unwrap_or_default(),
    ) {
        Ok(token) => token,
        Err(e) => {
            report("--token: ", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let name = args.name.unwrap_or_else(default_node_name);
    if let Some(path) = &args.offline_request {
        return enroll_offline_request(&config.state_dir, &token, &name, path);
    }
    let Some(controller) = args.controller else {
        eprintln!(
            "error: --controller is needed (or --offline-request for a node that cannot reach it)"
        );
        return ExitCode::from(2);
    };
    let runtime = match command_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        report(
            &format!("cannot create {}: ", config.state_dir.display()),
            &e,
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    match runtime.block_on(crate::identity::enroll(
        &config.state_dir,
        controller,
        &token,
        &name,
    )) {
        Ok(identity) => {
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn enroll_offline_request(
    state_dir: &std::path::Path,
    token: &gantry_shared::protocol::enroll::JoinToken,
    name: &str,
    out: &std::path::Path,
) -> ExitCode {
    let result = std::fs::create_dir_all(state_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            crate::identity::offline_request(state_dir, token, name)
                .map_err(|e| gantry_shared::bundle::outcome::error_chain(&e))
        })
        .and_then(|request| {
            let mut bytes = serde_json::to_vec_pretty(&request).expect("request serializes");
            bytes.push(b'\n');
            std::fs::write(out, bytes).map_err(|e| format!("cannot write {}: {e}", out.display()))
        });
    match result {
        Ok(()) => {
            println!(
                "request     {} (node {name}; the node key stays in {})\nnext        carry it to the controller: gantry token redeem {} --out RESPONSE\n            then here: gantry-agent enroll --offline-response RESPONSE",
                out.display(),
                crate::identity::identity_dir(state_dir).display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn enroll_offline_response(state_dir: &std::path::Path, path: &std::path::Path) -> ExitCode {
    let response = std::fs::read(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|bytes| {
            serde_json::from_slice::<gantry_shared::protocol::enroll::OfflineResponse>(&bytes)
                .map_err(|e| format!("{} is not an enrollment response: {e}", path.display()))
        });
    let installed = response.and_then(|response| {
        crate::identity::offline_install(state_dir, &response)
            .map_err(|e| gantry_shared::bundle::outcome::error_chain(&e))
    });
    match installed {
        Ok(identity) => {
            println!(
                "enrolled    as {} (by file; controller {})\nidentity    {} (the key never left this node)\nnext        gantry-agent run",
                identity.enrollment.name,
                identity.enrollment.controller,
                crate::identity::identity_dir(state_dir).display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub(super) fn renew(args: RenewArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "renew …") {
        return code;
    }
    let identity = match crate::identity::load(&config.state_dir) {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            eprintln!("error: this node is not enrolled; enroll it first (gantry-agent enroll)");
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            report("", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Some(out) = &args.files.offline_request {
        let request = match crate::renewal::offline_request(&identity, crate::api::now_ms()) {
            Ok(request) => request,
            Err(e) => {
                report("", &e);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let mut bytes = serde_json::to_vec_pretty(&request).expect("request serializes");
        bytes.push(b'\n');
        if let Err(e) = std::fs::write(out, bytes) {
            report(&format!("cannot write {}: ", out.display()), &e);
            return ExitCode::from(EXIT_FAILURE);
        }
        println!(
            "request     {} (signed by the node key; the key stays here)\nnext        on the controller: gantry fleet renew {} --out RESPONSE; then gantry-agent renew --offline-response RESPONSE",
            out.display(),
            out.display()
        );
        return ExitCode::SUCCESS;
    }
    let Some(path) = &args.files.offline_response else {
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            report(&format!("cannot read {}: ", path.display()), &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match crate::renewal::offline_install(
        &config.state_dir,
        &identity,
        &bytes,
        std::time::SystemTime::now(),
    ) {
        Ok(renewed) => {
            let until = renewed.enrollment.certificate_expires_at_ms.map_or_else(
                || "?".to_owned(),
                |ms| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                    .to_string()
                },
            );
            println!(
                "renewed     {} (certificate valid until {until}); a running agent uses it from its next connection",
                renewed.enrollment.name
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            println!("certificate NOT renewed; the node's identity is unchanged");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
