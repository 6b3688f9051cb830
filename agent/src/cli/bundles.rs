//! `gantry-agent verify`, `import` (bundles and trust policies) and `rollback`.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn verify(args: &VerifyArgs) -> CommandResult {
    let config = config::load(args.config.config.as_deref(), &Overrides::default())
        .map_err(CommandError::config)?;
    let policy = args.trust.clone().unwrap_or(config.trust_policy);
    let now = std::time::SystemTime::now();
    let (outcome, golden) = if args.golden {
        let library = args.onnxruntime.clone().unwrap_or(config.onnxruntime);
        crate::bundle::verify_with_golden(&args.bundle, &policy, &library, now)
            .map_err(CommandError::from_error)?
    } else {
        let outcome = crate::bundle::verify_file(&args.bundle, &policy, now)
            .map_err(CommandError::from_error)?;
        (outcome, Vec::new())
    };
    let golden_ok = golden.iter().all(|g| g.passed);
    if args.json {
        let mut value = serde_json::to_value(&outcome).expect("outcome serializes");
        if args.golden {
            value["golden"] = serde_json::to_value(&golden).expect("results serialize");
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("outcome serializes")
        );
    } else {
        print!("{}", outcome.render_text());
        for g in &golden {
            match (&g.error, &g.first_mismatch) {
                (Some(error), _) => println!("golden      {}: FAILED: {error}", g.name),
                (None, Some((output, index, got, want))) => println!(
                    "golden      {}: FAILED: output {output:?} element {index} is {got}, expected {want} (max error {:.3e})",
                    g.name, g.max_abs_error
                ),
                (None, None) => println!(
                    "golden      {}: ok (max error {:.3e})",
                    g.name, g.max_abs_error
                ),
            }
        }
    }
    // The report above says why; the exit status says whether.
    Ok(if outcome.ok && golden_ok {
        ExitCode::SUCCESS
    } else {
        Exit::Failure.into()
    })
}

/// `import` of a trust-policy update.
fn import_policy(
    installed: &std::path::Path,
    update: &std::path::Path,
    file: std::fs::File,
) -> CommandResult {
    match crate::bundle::policy_update::install(
        installed,
        update,
        file,
        std::time::SystemTime::now(),
    ) {
        Ok(done) => {
            println!(
                "trust policy updated: version {} → {} ({}), authorized by {}",
                done.from_version,
                done.to_version,
                installed.display(),
                done.authorized_by.join(", ")
            );
            println!(
                "previous    {} (kept)",
                crate::bundle::policy_update::previous_path(installed).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!(
                "trust policy NOT updated; {} is unchanged",
                installed.display()
            );
            Err(CommandError::from_error(e))
        }
    }
}

pub(super) fn import(args: ImportArgs) -> CommandResult {
    let config = load_with_state_dir(&args.config, args.state_dir)?;
    as_state_dir_owner(&config, "import …")?;
    let policy = args.trust.unwrap_or(config.trust_policy);
    // One open, one read: what is checked is what is installed.
    let mut file = crate::bundle::open_regular(&args.bundle).map_err(CommandError::from_error)?;
    if crate::bundle::policy_update::looks_like_policy(&mut file)
        .map_err(|e| CommandError::failure(format!("cannot read {}", args.bundle.display()), e))?
    {
        return import_policy(&policy, &args.bundle, file);
    }
    let library = args.onnxruntime.unwrap_or(config.onnxruntime);
    let store = crate::bundle::store::BundleStore::new(&config.state_dir);
    let mut options = crate::bundle::store::ImportOptions::new(
        &policy,
        &library,
        crate::inference::Hardware::default(),
        std::time::SystemTime::now(),
    );
    options.allow_downgrade = args.allow_downgrade;
    let imported = store
        .import_file(file, &options)
        .map_err(CommandError::from_error)?;
    print!("{}", imported.outcome.render_text());
    for g in &imported.golden {
        let verdict = if g.passed {
            "ok".to_owned()
        } else {
            format!(
                "FAILED: {}",
                g.error
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", g.first_mismatch))
            )
        };
        println!(
            "golden      {}: {verdict} (max error {:.3e})",
            g.name, g.max_abs_error
        );
    }
    if let Some(digest) = imported.activated {
        println!(
            "activated   sha256:{digest} (the model's previous bundle is kept for `gantry-agent rollback`)"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("NOT ACTIVATED: the bundle failed a check; the active bundle is unchanged");
        Ok(Exit::Failure.into())
    }
}

pub(super) fn rollback(args: RollbackArgs) -> CommandResult {
    let config = load_with_state_dir(&args.config, args.state_dir)?;
    as_state_dir_owner(&config, "rollback")?;
    let (model, bundles) = crate::bundle::store::BundleStore::new(&config.state_dir)
        .rollback(args.model.as_deref())
        .map_err(CommandError::from_error)?;
    println!("model       {model}");
    println!("active      sha256:{}", bundles.active.unwrap_or_default());
    println!(
        "previous    sha256:{}",
        bundles.previous.unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
