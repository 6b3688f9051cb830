//! `gantry bundle`: `create`, `sign`, `verify`, `inspect` and `export` on files;
//! `push`, `import`, `ls` and `assign` on the controller.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `bundle push`, or `bundle import` (the same upload, recorded as an import).
async fn upload(args: PushArgs, import: bool) -> Result<(), CommandError> {
    let client = connect(&args.admin).await?;
    let info = if import {
        crate::push::import(&client, &args.bundle).await?
    } else {
        crate::push::push(&client, &args.bundle).await?
    };
    if args.json {
        print_json(&info);
    } else if import {
        println!(
            "imported {} {} ({} bytes)\nid: {}",
            info.name, info.version, info.size, info.id
        );
    } else {
        println!(
            "pushed {} {} ({} bytes)\nid: {}\nassign it with: gantry bundle assign {} --node NODE",
            info.name, info.version, info.size, info.id, info.id
        );
    }
    Ok(())
}

/// `bundle push`, `import`, `ls` and `assign`: calls on the controller.
pub(super) async fn remote(command: RemoteBundleCommand) -> CommandResult {
    match command {
        RemoteBundleCommand::Push(args) => upload(args, false).await?,
        RemoteBundleCommand::Import(args) => upload(args, true).await?,
        RemoteBundleCommand::Ls { admin, json } => {
            let bundles = connect(&admin).await?.bundle_list().await?;
            if json {
                print_json(&bundles);
            } else {
                print!("{}", crate::push::render_list(&bundles));
            }
        }
        RemoteBundleCommand::Assign { id, nodes, admin } => {
            let (id, nodes, model) = connect(&admin).await?.bundle_assign(id, nodes).await?;
            println!(
                "assigned {id} to {} as their model {model:?}; their other models are unchanged",
                nodes.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bundle create`, `sign`, `verify`, `inspect` and `export`: files only.
pub(super) fn local(command: LocalBundleCommand) -> CommandResult {
    match command {
        LocalBundleCommand::Create(args) => {
            let files = args
                .files
                .iter()
                .map(|spec| {
                    if let Some((local, inside)) = spec.split_once('=') {
                        (PathBuf::from(local), inside.to_owned())
                    } else {
                        let local = PathBuf::from(spec);
                        let inside = local
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        (local, inside)
                    }
                })
                .collect();
            let req = CreateRequest {
                model: args.model,
                name: args.name,
                version: args.version,
                files,
                golden: args.golden,
                provenance_file: args.provenance,
                source_revision: args.source_revision,
                training_data_digest: args.training_data_digest,
                params: args.params,
                metrics: args.metrics,
                min_gpu_memory_bytes: args.min_gpu_memory,
                execution_providers: args.execution_providers,
                instances: args.instances.unwrap_or(0),
                intra_op_threads: args.intra_op_threads.unwrap_or(0),
                inter_op_threads: args.inter_op_threads.unwrap_or(0),
                dynamic_batching: args.max_batch_size.map(|max_batch_size| {
                    let micros =
                        |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_micros() as u64);
                    gantry_shared::bundle::manifest::DynamicBatching {
                        max_batch_size,
                        max_queue_delay_us: micros(args.max_queue_delay),
                        preferred_batch_sizes: args.preferred_batch_sizes.clone(),
                        max_queue_size: args.max_queue_size.unwrap_or(0),
                        queue_timeout_us: micros(args.queue_timeout),
                    }
                }),
                reference_data: args.reference_data,
                drift_metric: args.drift_metric,
                drift_threshold: args.drift_threshold,
                task: args.task,
                prediction_output: args.prediction_output.clone(),
                out: args.out.clone(),
            };
            let id = bundle_cmd::create(&req)?;
            println!("created     {} (unsigned)", args.out.display());
            println!("id          {id}");
            println!(
                "next        gantry bundle sign {} --key KEY",
                args.out.display()
            );
        }
        LocalBundleCommand::Sign { bundle, key, out } => {
            match bundle_cmd::sign(&bundle, &key, out.as_deref())? {
                SignOutcome::Added { key_id, signatures } => {
                    println!(
                        "signed      {} by key {key_id} ({signatures} signature(s) now)",
                        out.as_ref().unwrap_or(&bundle).display()
                    );
                }
                SignOutcome::AlreadySigned { key_id } => {
                    println!(
                        "unchanged   {} already carries a signature by key {key_id}",
                        bundle.display()
                    );
                }
            }
        }
        LocalBundleCommand::Verify {
            bundle,
            trust,
            at,
            json,
        } => {
            let outcome = bundle_cmd::verify(&bundle, &trust, at.unwrap_or_else(SystemTime::now))?;
            if json {
                print_json(&outcome);
            } else {
                print!("{}", outcome.render_text());
            }
            if !outcome.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        LocalBundleCommand::Export { bundle, out, dir } => {
            let exported = crate::bundle_cmd::export(&dir.dir, &bundle, &out)?;
            println!(
                "exported    {} {} {}\nfile        {} ({} bytes)\nsignatures  {} valid under {}\nnext        carry it in; `gantry-agent import {}` verifies it offline",
                exported.name,
                exported.version,
                exported.id,
                out.display(),
                exported.size,
                exported.signers.join(", "),
                dir.dir.join("trust.json").display(),
                out.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            );
        }
        LocalBundleCommand::Inspect { bundle, json } => {
            let inspection = bundle_cmd::inspect(&bundle)?;
            if json {
                print_json(&inspection);
            } else {
                print!("{}", bundle_cmd::render_inspection(&inspection));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
