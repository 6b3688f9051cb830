//! Cordoning: a cordoned node takes no new rollouts (what it runs stays, and rollouts
//! already holding it go on), until an operator uncordons it. Operators cordon by hand
//! (`gantry fleet cordon`); the controller cordons on its own when a heartbeat carries an
//! unhealthy reason of a check the operator chose (`gantry serve --auto-cordon`, by
//! default `gpu.xid`, which the agent makes unhealthy only for critical XIDs). It never
//! uncordons on its own: a GPU that threw a critical XID wants a person to look at it.
//! Every change is written with its audit entry in one transaction.

use gantry_shared::health::{Health, HealthState};
use gantry_shared::protocol::admin::Cordon;

/// Who cordons automatically.
pub const AUTOMATIC_BY: &str = "controller";

/// A name in `--auto-cordon` that is not a health check's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a health check name like gpu.xid, gpu.lost or gpu.ecc (or say none)")]
pub struct BadCheckName(pub String);

/// The checks whose unhealthy reasons cordon a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoCordon {
    checks: Vec<String>,
}

impl AutoCordon {
    /// Parses `gpu.xid,gpu.lost`, or `none`.
    pub fn parse(text: &str) -> Result<Self, BadCheckName> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") || text.is_empty() {
            return Ok(Self::default());
        }
        let mut checks = Vec::new();
        for check in text.split(',').map(str::trim) {
            let valid = !check.is_empty()
                && check.contains('.')
                && check
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
            if !valid {
                return Err(BadCheckName(check.to_owned()));
            }
            checks.push(check.to_owned());
        }
        Ok(Self { checks })
    }

    pub fn is_off(&self) -> bool {
        self.checks.is_empty()
    }

    pub fn checks(&self) -> &[String] {
        &self.checks
    }

    /// The cordon a heartbeat's health calls for, if any.
    pub fn judge(&self, health: &Health, now_ms: u64) -> Option<Cordon> {
        let reason = health
            .reasons
            .iter()
            .find(|r| r.state == HealthState::Unhealthy && self.checks.contains(&r.check))?;
        Some(Cordon {
            reason: format!("automatic, {}: {}", reason.check, reason.describe()),
            by: AUTOMATIC_BY.to_owned(),
            at_ms: now_ms,
            automatic: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use gantry_shared::health::{Action, Cause, Remedy};

    use super::*;

    fn health(check: &str, state: HealthState) -> Health {
        let mut h = Health::default();
        h.add(
            check,
            state,
            "GPU 1 reported XID 79 (GPU has fallen off the bus)",
            Remedy::new(Cause::Hardware, Action::RebootNode),
        );
        h
    }

    #[test]
    fn critical_xids_cordon_by_default_and_lesser_findings_do_not() {
        let rules = AutoCordon::parse("gpu.xid").unwrap();
        let cordon = rules
            .judge(&health("gpu.xid", HealthState::Unhealthy), 5)
            .unwrap();
        assert!(cordon.automatic);
        assert_eq!(cordon.by, "controller");
        assert!(cordon.reason.contains("XID 79"), "{}", cordon.reason);
        assert!(cordon.reason.contains("reboot"), "{}", cordon.reason);
        // A non-critical XID is only degraded.
        assert_eq!(
            rules.judge(&health("gpu.xid", HealthState::Degraded), 5),
            None
        );
        assert_eq!(
            rules.judge(&health("gpu.ecc", HealthState::Unhealthy), 5),
            None
        );
    }

    #[test]
    fn operators_choose_the_checks_or_none() {
        let rules = AutoCordon::parse("gpu.ecc, gpu.lost").unwrap();
        assert!(
            rules
                .judge(&health("gpu.ecc", HealthState::Unhealthy), 1)
                .is_some()
        );
        assert!(
            rules
                .judge(&health("gpu.xid", HealthState::Unhealthy), 1)
                .is_none()
        );
        let off = AutoCordon::parse("none").unwrap();
        assert!(off.is_off());
        assert!(
            off.judge(&health("gpu.xid", HealthState::Unhealthy), 1)
                .is_none()
        );
        assert!(AutoCordon::parse("gpu.xid,Rm -rf").is_err());
        assert!(AutoCordon::parse("xid").is_err());
    }
}
