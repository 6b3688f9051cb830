//! `gantry-agent export-telemetry` and `gantry-agent status`.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn export_telemetry(args: &ExportArgs) -> CommandResult {
    let config = load_with_state_dir(&args.config, args.state_dir.clone())?;
    export(args, &config).inspect_err(|_| println!("nothing exported"))
}

fn export(args: &ExportArgs, config: &config::Config) -> CommandResult {
    let identity = crate::identity::load(&config.state_dir)
        .map_err(CommandError::from_error)?
        .ok_or_else(|| CommandError::from_error(crate::export::ExportBuildError::NotEnrolled))?;
    let addr = args.agent.unwrap_or(config.metrics_listen);
    let max_records = args.max_records.unwrap_or(usize::MAX);
    let runtime = command_runtime()?;
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
            let buffer =
                crate::buffer::Buffer::open(&config.state_dir.join("buffer.redb"), config.buffer)
                    .map_err(CommandError::from_error)?;
            crate::export::build(
                &buffer,
                Some(&identity),
                None,
                args.after_seq,
                max_records,
                gantry_net::clock::now_ms(),
            )
            .map_err(CommandError::from_error)?
            .0
        }
        Err(e) => return Err(CommandError::from_error(e)),
    };
    gantry_net::atomic::write_bytes(&args.out, 0o644, &bytes)
        .map_err(|e| CommandError::failure(format!("cannot write {}", args.out.display()), e))?;
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
        Err(e) => {
            return Err(CommandError::failure(
                "the export just written does not read back",
                e,
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(args: &StatusArgs) -> CommandResult {
    let addr = match args.agent {
        Some(addr) => addr,
        None => {
            config::load(args.config.config.as_deref(), &Overrides::default())
                .map_err(CommandError::config)?
                .metrics_listen
        }
    };
    let runtime = command_runtime()?;
    if args.json {
        let body = runtime
            .block_on(crate::status::fetch_raw(addr, "/v1/status", args.timeout))
            .map_err(CommandError::from_error)?;
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(ExitCode::SUCCESS);
    }
    let status = runtime
        .block_on(crate::status::fetch(addr, args.timeout))
        .map_err(CommandError::from_error)?;
    print!(
        "{}",
        crate::status::render_table(&status, gantry_net::clock::now_ms())
    );
    Ok(ExitCode::SUCCESS)
}
