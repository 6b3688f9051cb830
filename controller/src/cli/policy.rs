//! `gantry policy`: create, sign, inspect and verify trust policies (files only).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `policy` command.
pub(super) fn run(command: PolicyCommand) -> CommandResult {
    match command {
        PolicyCommand::Create {
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
        } => {
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
        PolicyCommand::Sign { policy, key } => {
            let (key_id, count) = policy_cmd::sign(&policy, &key)?;
            println!(
                "signed      {} by key {key_id} ({count} signature(s) now)",
                policy.display()
            );
        }
        PolicyCommand::Inspect { policy, json } => {
            let inspection = policy_cmd::inspect(&policy)?;
            if json {
                print_json(&inspection);
            } else {
                print!("{}", policy_cmd::render_inspection(&inspection));
            }
        }
        PolicyCommand::Verify { policy, trust } => {
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
