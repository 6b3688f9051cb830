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
        remote_write_ca,
        remote_write_cert,
        remote_write_key,
        otlp,
        otlp_attributes,
        otlp_ca,
        otlp_cert,
        otlp_key,
        clock_offset,
    } = args;
    let remote_write = export_target(
        ExportFlags {
            flag: "--remote-write",
            url: &remote_write,
            labels: &remote_write_labels,
            ca: remote_write_ca,
            cert: remote_write_cert,
            key: remote_write_key,
        },
        rw::DEFAULT_PATH,
        rw::EXAMPLE,
    )?;
    let otlp = export_target(
        ExportFlags {
            flag: "--otlp",
            url: &otlp,
            labels: &otlp_attributes,
            ca: otlp_ca,
            cert: otlp_cert,
            key: otlp_key,
        },
        otlp_export::DEFAULT_PATH,
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

/// The system's CA bundle (Debian's ca-certificates), for https:// receivers given no CA.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An export's flags as given.
struct ExportFlags<'a> {
    flag: &'static str,
    url: &'a str,
    labels: &'a str,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The export target the flags name, with its TLS files read (`None` when the URL is "").
fn export_target(
    flags: ExportFlags<'_>,
    default_path: &str,
    example: &'static str,
) -> Result<Option<crate::export::Target>, CommandError> {
    let ExportFlags {
        flag,
        url,
        labels,
        ca,
        cert,
        key,
    } = flags;
    let refused = |e: &dyn std::fmt::Display| CommandError::config(format!("{flag}: {e}"));
    if url.trim().is_empty() {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err(CommandError::config(format!(
                "{flag}-ca, -cert and -key are for an https:// {flag} URL, and none is given"
            )));
        }
        return Ok(None);
    }
    let target = crate::export::Target::parse(url, default_path, labels, example)
        .map_err(|e| refused(&e))?;
    if !target.is_https() {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err(CommandError::config(format!(
                "{flag} {url}: {flag}-ca, -cert and -key are for an https:// URL; this one is plain HTTP"
            )));
        }
        return Ok(Some(target));
    }
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path).map_err(|e| {
            CommandError::config(format!(
                "{flag}: cannot read the {what} {}: {e}",
                path.display()
            ))
        })
    };
    let ca = match &ca {
        Some(path) => read(path, "CA file")?,
        None => read(
            std::path::Path::new(SYSTEM_CA_BUNDLE),
            &format!(
                "system CA bundle (install ca-certificates, or give the receiver's CA with {flag}-ca)"
            ),
        )?,
    };
    let client = match (&cert, &key) {
        (Some(cert), Some(key)) => {
            Some((read(cert, "client certificate")?, read(key, "client key")?))
        }
        (None, None) => None,
        _ => {
            return Err(CommandError::config(format!(
                "{flag}-cert and {flag}-key go together: give both, or neither"
            )));
        }
    };
    target
        .with_tls(&crate::export::TlsPem { ca, client })
        .map(Some)
        .map_err(|e| refused(&e))
}
