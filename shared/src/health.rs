//! Node health: healthy, degraded or unhealthy, with the reasons. Evaluated by the agent
//! from its own readings, shown in `status` and on `/metrics`, and sent in every heartbeat
//! (rollout gates read it there).

use serde::{Deserialize, Serialize};

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
}

/// The node's health at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    pub state: HealthState,
    pub reasons: Vec<Reason>,
}

impl Health {
    /// Adds a finding; the overall state is the worst finding's.
    pub fn add(&mut self, check: &str, state: HealthState, message: impl Into<String>) {
        self.state = self.state.max(state);
        self.reasons.push(Reason {
            check: check.to_owned(),
            state,
            message: message.into(),
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
        h.add("gpu.thermal", HealthState::Degraded, "GPU 1 throttles");
        h.add(
            "gpu.ecc",
            HealthState::Unhealthy,
            "GPU 2 has uncorrectable errors",
        );
        h.add("node.memory", HealthState::Degraded, "low memory");
        assert_eq!(h.state, HealthState::Unhealthy);
        assert_eq!(h.reasons.len(), 3);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["state"], "unhealthy");
    }
}
