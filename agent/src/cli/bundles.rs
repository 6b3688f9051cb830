//! `gantry-agent verify`, `import` (bundles and trust policies) and `rollback`.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn verify(args: &VerifyArgs) -> ExitCode {
    let config = match config::load(args.config.config.as_deref(), &Overrides::default()) {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    let policy = args.trust.clone().unwrap_or(config.trust_policy);
    let now = std::time::SystemTime::now();
    let (outcome, golden) = if args.golden {
        let library = args.onnxruntime.clone().unwrap_or(config.onnxruntime);
        match crate::bundle::verify_with_golden(&args.bundle, &policy, &library, now) {
            Ok(result) => result,
            Err(e) => {
                report("", &e);
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    } else {
        match crate::bundle::verify_file(&args.bundle, &policy, now) {
            Ok(outcome) => (outcome, Vec::new()),
            Err(e) => {
                report("", &e);
                return ExitCode::from(EXIT_FAILURE);
            }
        }
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
    if outcome.ok && golden_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// `import` of a trust-policy update.
fn import_policy(
    installed: &std::path::Path,
    update: &std::path::Path,
    file: std::fs::File,
) -> ExitCode {
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            println!(
                "trust policy NOT updated; {} is unchanged",
                installed.display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub(super) fn import(args: ImportArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "import …") {
        return code;
    }
    let policy = args.trust.unwrap_or(config.trust_policy);
    // One open, one read: what is checked is what is installed.
    let mut file = match crate::bundle::open_regular(&args.bundle) {
        Ok(file) => file,
        Err(e) => {
            report("", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match crate::bundle::policy_update::looks_like_policy(&mut file) {
        Ok(true) => return import_policy(&policy, &args.bundle, file),
        Ok(false) => {}
        Err(e) => {
            report(&format!("cannot read {}: ", args.bundle.display()), &e);
            return ExitCode::from(EXIT_FAILURE);
        }
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
    match store.import_file(file, &options) {
        Ok(imported) => {
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
                    "activated   sha256:{digest} (the previous bundle is kept for `gantry-agent rollback`)"
                );
                ExitCode::SUCCESS
            } else {
                println!(
                    "NOT ACTIVATED: the bundle failed a check; the active bundle is unchanged"
                );
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub(super) fn rollback(args: RollbackArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "rollback") {
        return code;
    }
    match crate::bundle::store::BundleStore::new(&config.state_dir).rollback() {
        Ok(current) => {
            println!("active      sha256:{}", current.active.unwrap_or_default());
            println!(
                "previous    sha256:{}",
                current.previous.unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
