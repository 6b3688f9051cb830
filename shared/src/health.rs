//! Node health: healthy, degraded or unhealthy, with the reasons. Evaluated by the agent
//! from its own readings, shown in `status` and on `/metrics`, and sent in every heartbeat
//! (rollout gates read it there).

use serde::{Deserialize, Serialize};

pub use crate::xid::{Action, Cause, Remedy};

/// Overall state, ordered from best to worst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The check, e.g. `gpu.ecc`, `gpu.xid`, `node.disk`.
    pub check: String,
    pub state: HealthState,
    pub message: String,
    /// Likely cause and what to do; absent only in reports of older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
}

impl Reason {
    /// The message with its remedy, for tables.
    pub fn describe(&self) -> String {
        match self.remedy {
            Some(remedy) => format!("{} ({})", self.message, remedy.describe()),
            None => self.message.clone(),
        }
    }
}

/// The node's health at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    pub state: HealthState,
    pub reasons: Vec<Reason>,
}

impl Health {
    /// Adds a finding with its likely cause and action; the overall state is the worst
    /// finding's.
    pub fn add(
        &mut self,
        check: &str,
        state: HealthState,
        message: impl Into<String>,
        remedy: Remedy,
    ) {
        self.state = self.state.max(state);
        self.reasons.push(Reason {
            check: check.to_owned(),
            state,
            message: message.into(),
            remedy: Some(remedy),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_finding_wins() {
        let mut h = Health::default();
        assert_eq!(h.state, HealthState::Healthy);
        let hw = Remedy::new(Cause::Hardware, Action::InspectHardware);
        h.add("gpu.thermal", HealthState::Degraded, "GPU 1 throttles", hw);
        h.add(
            "gpu.ecc",
            HealthState::Unhealthy,
            "GPU 2 has uncorrectable errors",
            Remedy::new(Cause::Hardware, Action::ResetGpu),
        );
        h.add(
            "node.memory",
            HealthState::Degraded,
            "low memory",
            Remedy::new(Cause::Host, Action::CheckHost),
        );
        assert_eq!(h.state, HealthState::Unhealthy);
        assert_eq!(h.reasons.len(), 3);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["state"], "unhealthy");
        assert_eq!(json["reasons"][1]["remedy"]["action"], "reset_gpu");
        assert_eq!(
            h.reasons[1].describe(),
            "GPU 2 has uncorrectable errors (likely hardware: drain the GPU and reset it (nvidia-smi -r))"
        );
    }

    #[test]
    fn reasons_from_older_agents_without_a_remedy_still_parse() {
        let json = r#"{"state":"degraded","reasons":[{"check":"gpu.xid","state":"degraded","message":"m"}]}"#;
        let h: Health = serde_json::from_str(json).unwrap();
        assert_eq!(h.reasons[0].remedy, None);
        assert_eq!(h.reasons[0].describe(), "m");
    }
}
