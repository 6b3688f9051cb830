//! The commands that work on local files only: keys, bundles, trust policies.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn run(command: LocalCommand) -> CommandResult {
    match command {
        LocalCommand::Keygen { out } => {
            let key = keys::generate(&out)?;
            println!("key id      {}", key.key_id);
            println!(
                "private     {} (mode 0600; keep it secret)",
                key.private_path.display()
            );
            println!("public      {}", key.public_path.display());
        }
        LocalCommand::Policy(PolicyCommand::Create {
            from,
            version,
            threshold,
            keys,
            remove_keys,
            revoke,
            golden_min,
            golden_max_abs,
            golden_max_rel,
            no_golden_requirement,
            out,
        }) => {
            let policy = policy_cmd::create(&policy_cmd::CreateRequest {
                from,
                version,
                threshold,
                add_keys: keys,
                remove_keys,
                revoke,
                golden: policy_cmd::GoldenChoice {
                    min_vectors: golden_min,
                    max_abs_tolerance: golden_max_abs,
                    max_rel_tolerance: golden_max_rel,
                    none: no_golden_requirement,
                },
                out: out.clone(),
            })?;
            println!(
                "created     {} (version {}, {} key(s), threshold {}; unsigned)",
                out.display(),
                policy.version,
                policy.keys.len(),
                policy.threshold
            );
            println!(
                "next        gantry policy sign {} --key KEY   (by {} of the keys{})",
                out.display(),
                policy.threshold,
                if policy.version > 1 {
                    ", and by enough keys of the policy it replaces"
                } else {
                    ""
                }
            );
        }
        LocalCommand::Policy(PolicyCommand::Sign { policy, key }) => {
            let (key_id, count) = policy_cmd::sign(&policy, &key)?;
            println!(
                "signed      {} by key {key_id} ({count} signature(s) now)",
                policy.display()
            );
        }
        LocalCommand::Policy(PolicyCommand::Inspect { policy, json }) => {
            let inspection = policy_cmd::inspect(&policy)?;
            if json {
                print_json(&inspection);
            } else {
                print!("{}", policy_cmd::render_inspection(&inspection));
            }
        }
        LocalCommand::Init {
            dir,
            listen,
            admin_name,
            admin_cert_lifetime,
        } => {
            gantry_net::service_dir::check_writer(&dir.dir, "gantry init …")?;
            let identity =
                crate::home::Home::new(&dir.dir).init(listen, &admin_name, admin_cert_lifetime)?;
            println!(
                "initialized {} (fleet CA, controller certificate, store)",
                dir.dir.display()
            );
            println!(
                "admin       {} (mode 0600; the CLI reads it, or set GANTRY_IDENTITY)",
                identity.display()
            );
            println!(
                "next        gantry serve --dir {} --listen {listen}",
                dir.dir.display()
            );
        }
        LocalCommand::Policy(PolicyCommand::Verify { policy, trust }) => {
            let report = policy_cmd::verify(&policy, trust.as_deref(), SystemTime::now())?;
            match trust {
                Some(current) => println!(
                    "VERIFIED    {} is a valid update of {} ({report})",
                    policy.display(),
                    current.display()
                ),
                None => println!(
                    "VERIFIED    {} is signed by enough of its own keys ({report})",
                    policy.display()
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bundle create`, `sign`, `verify`, `inspect` and `export`: files only.
pub(super) fn bundle(command: LocalBundleCommand) -> CommandResult {
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
