//! `gantry-agent export-telemetry` and `gantry-agent status`.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn export_telemetry(args: &ExportArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir.clone()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let fail = |context: &str, e: &(dyn std::error::Error + 'static)| {
        report(context, e);
        println!("nothing exported");
        ExitCode::from(EXIT_FAILURE)
    };
    let identity = match crate::identity::load(&config.state_dir) {
        Ok(Some(identity)) => identity,
        Ok(None) => return fail("", &crate::export::ExportBuildError::NotEnrolled),
        Err(e) => return fail("", &e),
    };
    let addr = args.agent.unwrap_or(config.metrics_listen);
    let max_records = args.max_records.unwrap_or(usize::MAX);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail("cannot start the async runtime: ", &e),
    };
    let path = format!(
        "/v1/telemetry-export?after_seq={}&max_records={max_records}",
        args.after_seq
    );
    let bytes = match runtime.block_on(crate::status::fetch_raw(
        addr,
        &path,
        Duration::from_secs(60),
    )) {
        Ok(bytes) => bytes.to_vec(),
        Err(crate::status::StatusError::Connect { .. }) => {
            // No agent running: its buffer is free to read.
            let buffer = match crate::buffer::Buffer::open(
                &config.state_dir.join("buffer.redb"),
                config.buffer,
            ) {
                Ok(buffer) => buffer,
                Err(e) => return fail("", &e),
            };
            match crate::export::build(
                &buffer,
                Some(&identity),
                None,
                args.after_seq,
                max_records,
                crate::api::now_ms(),
            ) {
                Ok((bytes, _)) => bytes,
                Err(e) => return fail("", &e),
            }
        }
        Err(e) => return fail("", &e),
    };
    let write = || -> std::io::Result<()> {
        let dir = args.out.parent().filter(|d| !d.as_os_str().is_empty());
        let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(std::path::Path::new(".")))?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&args.out).map(|_| ()).map_err(|e| e.error)
    };
    if let Err(e) = write() {
        return fail(&format!("cannot write {}: ", args.out.display()), &e);
    }
    let body = gantry_shared::telemetry_export::parse_envelope(&bytes)
        .and_then(|e| gantry_shared::telemetry_export::parse_body(&e.body));
    match body {
        Ok(body) if body.records.is_empty() => {
            println!(
                "nothing buffered after sequence {}; wrote an empty export to {}",
                args.after_seq,
                args.out.display()
            );
        }
        Ok(body) => {
            println!(
                "exported    {} records of node {}, sequences {}..={}\nfile        {} ({} bytes, signed by the node key)\nnext        carry it out and run `gantry telemetry import`; the next export starts with --after-seq {}",
                body.records.len(),
                body.node,
                body.from_seq,
                body.to_seq,
                args.out.display(),
                bytes.len(),
                body.to_seq
            );
        }
        Err(e) => return fail("the export just written does not read back: ", &e),
    }
    ExitCode::SUCCESS
}

pub(super) fn status(args: &StatusArgs) -> ExitCode {
    let addr = match args.agent {
        Some(addr) => addr,
        None => match config::load(args.config.config.as_deref(), &Overrides::default()) {
            Ok(config) => config.metrics_listen,
            Err(e) => return config_failure(&e),
        },
    };
    let runtime = match command_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if args.json {
        return match runtime.block_on(crate::status::fetch_raw(addr, "/v1/status", args.timeout)) {
            Ok(body) => {
                println!("{}", String::from_utf8_lossy(&body));
                ExitCode::SUCCESS
            }
            Err(e) => {
                report("", &e);
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    match runtime.block_on(crate::status::fetch(addr, args.timeout)) {
        Ok(status) => {
            print!(
                "{}",
                crate::status::render_table(&status, crate::api::now_ms())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
