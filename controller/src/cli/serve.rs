//! `gantry serve`: the controller daemon.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Runs the daemon until SIGTERM or SIGINT.
pub(super) async fn run(args: ServeArgs) -> CommandResult {
    use crate::export::{otlp as otlp_export, remote_write as rw};
    let ServeArgs {
        dir,
        listen,
        metrics_listen,
        retention,
        new_store,
        node_cert_lifetime,
        admin_cert_lifetime,
        renewal_grace,
        auto_cordon,
        console_listen,
        console_session,
        remote_write,
        remote_write_labels,
        otlp,
        otlp_attributes,
        clock_offset,
    } = args;
    let export = |flag: &str, url: &str, default_path: &str, labels: &str, example| {
        if url.trim().is_empty() {
            return Ok(None);
        }
        crate::export::Target::parse(url, default_path, labels, example)
            .map(Some)
            .map_err(|e| CommandError::config(format!("{flag}: {e}")))
    };
    let remote_write = export(
        "--remote-write",
        &remote_write,
        rw::DEFAULT_PATH,
        &remote_write_labels,
        rw::EXAMPLE,
    )?;
    let otlp = export(
        "--otlp",
        &otlp,
        otlp_export::DEFAULT_PATH,
        &otlp_attributes,
        otlp_export::EXAMPLE,
    )?;

    let auto_cordon = match crate::cordon::AutoCordon::parse(&auto_cordon) {
        Ok(rules) => rules,
        Err(e) => return Err(CommandError::config(format!("--auto-cordon: {e}"))),
    };
    let certs = crate::certs::CertPolicy {
        node_lifetime: node_cert_lifetime,
        admin_lifetime: admin_cert_lifetime,
        renewal_grace,
    };
    certs.validate().map_err(CommandError::config)?;
    gantry_net::service_dir::check_writer(&dir.dir, "gantry serve …")?;
    let metrics_listen = if metrics_listen.trim().is_empty() {
        None
    } else {
        Some(metrics_listen.trim().parse().map_err(|_| {
            CommandError::usage(format!(
                "--metrics-listen {metrics_listen:?} is not an address like 127.0.0.1:9401"
            ))
        })?)
    };
    let console_listen: Option<SocketAddr> = if console_listen.trim().is_empty() {
        None
    } else {
        let addr: SocketAddr = console_listen.trim().parse().map_err(|_| {
            CommandError::usage(format!(
                "--console-listen {console_listen:?} is not an address like 127.0.0.1:9402"
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(CommandError::config(format!(
                "--console-listen {addr}: the console serves plain HTTP, so it listens on loopback only (127.0.0.1 or [::1]); reach it from elsewhere through an SSH tunnel or a TLS reverse proxy on this host"
            )));
        }
        Some(addr)
    };
    let shutdown = CancellationToken::new();
    gantry_net::signals::cancel_on_signals(shutdown.clone())
        .map_err(|e| CommandError::failure("cannot install signal handlers", e))?;
    server::serve(
        ServeConfig {
            home: Home::new(dir.dir),
            listen,
            metrics_listen,
            retention,
            new_store,
            certs,
            clock: crate::certs::Clock {
                offset_ms: clock_offset,
            },
            auto_cordon,
            console_listen,
            console_session,
            remote_write,
            otlp,
        },
        shutdown,
        None,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
