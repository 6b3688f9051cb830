//! The rollout engine: takes a bundle to the nodes a selector picks, step by step, and
//! rolls it back when a gate fails.
//!
//! # Cycle
//!
//! `gantry serve` calls [`Engine::tick`] a few times a second with a view of every node
//! (labels, latest heartbeat). For each active rollout:
//!
//! 1. **rolling** — the current step's nodes not yet touched are assigned the bundle
//!    (their previous assignment is recorded first); when every touched node reports the
//!    bundle active and passes the gates, the step starts **baking**.
//! 2. **baking** — gates are evaluated on the nodes' own reports on every tick; when the
//!    bake time is over, the next step starts, or the rollout has **succeeded**.
//! 3. a node counts against `max_unhealthy` when it is unhealthy, fails a model gate,
//!    refused the bundle, is silent for `silence_ms`, or has not run the bundle by
//!    `step_timeout_ms`. More than `max_unhealthy` such nodes fail the rollout: every
//!    touched node is assigned its previous bundle (**rolling back**), and once each runs
//!    it again and is not unhealthy, the rollout is **rolled back** (the recovery time is
//!    recorded for the KPIs).
//! 4. with `max_prediction_shift` or `max_quality_drop`, the canary is also compared
//!    with the nodes still on the bundle it replaced, over the windows since it started
//!    ([`compare`], read from the store before each decision); failing that comparison
//!    rolls back whatever `max_unhealthy` allows (it is a verdict on the bundle, not on
//!    one node).
//!
//! The decisions are made by [`advance`], a pure function of the rollout, the node views
//! and the time; the engine commits its assignments, the rollout record and their audit
//! entries in one store transaction, so a crash leaves all of them or none. Timers are
//! wall-clock instants in the stored record, so a restarted controller goes on where it
//! was, bake time included.
//!
//! A rollout is of one model (its bundle's name): it assigns, judges and rolls back that
//! model on its nodes and never touches their other models.
//!
//! **Invariant:** a (node, model) belongs to at most one active rollout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use gantry_shared::health::HealthState;
use gantry_shared::monitoring::quality::QualityMetric;
use gantry_shared::protocol::heartbeat::ModelReport;
use gantry_shared::protocol::rollout::{
    Comparison, Event, GateValues, Kpis, NodeState, Rollout, Spec, State, Touched,
};

use crate::audit::NewEntry;
use crate::bundles::{BundleRepo, RepoError};
use crate::store::{Assignment, HeartbeatInfo, Store, StoreError};

/// Events kept per rollout.
const MAX_EVENTS: usize = 200;

/// Why a rollout request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the engine knows of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub labels: BTreeMap<String, String>,
    pub revoked: bool,
    /// Cordoned nodes take no new rollouts.
    pub cordoned: bool,
    /// The latest heartbeat, live or as stored at the last disconnect.
    pub heartbeat: Option<HeartbeatInfo>,
}

/// An assignment change [`advance`] asks for, of the rollout's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Assign { bundle: String, nodes: Vec<String> },
    Unassign { nodes: Vec<String> },
}

/// Every rollout, the active ones driven by [`Engine::tick`].
#[derive(Debug)]
pub struct Engine {
    /// Where assignments and rollout records are committed, in the controller's store.
    bundles: Arc<BundleRepo>,
    /// Number → rollout; the store has the same, committed with each change.
    rollouts: Mutex<BTreeMap<u64, Rollout>>,
}

/// A rollout as `/metrics` shows it: what it takes where, how far it got, when it
/// failed or finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub id: String,
    pub model: String,
    pub version: String,
    pub state: State,
    /// The current step, from 1.
    pub step: usize,
    pub steps: usize,
    pub touched: usize,
    pub created_at_ms: u64,
    pub failed_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

impl Summary {
    fn of(r: &Rollout) -> Self {
        Self {
            id: r.id.clone(),
            model: r.bundle_name.clone(),
            version: r.bundle_version.clone(),
            state: r.state(),
            step: (r.step + 1).min(r.spec.steps.len().max(1)),
            steps: r.spec.steps.len(),
            touched: r.touched.len(),
            created_at_ms: r.created_at_ms,
            failed_at_ms: r.failed_at_ms,
            finished_at_ms: r.finished_at_ms,
        }
    }
}

fn number_of(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}

impl Engine {
    /// Loads every rollout from the store; the active ones go on from where they were.
    pub fn open(store: &Store, bundles: Arc<BundleRepo>) -> Result<Self, StoreError> {
        let rollouts: BTreeMap<u64, Rollout> = store.rollouts()?.into_iter().collect();
        for r in rollouts.values().filter(|r| r.state().is_active()) {
            tracing::info!(rollout = %r.id, state = r.state().as_str(), step = r.step + 1, "continuing rollout");
        }
        Ok(Self {
            bundles,
            rollouts: Mutex::new(rollouts),
        })
    }

    /// Starts a rollout of `spec` by `caller`.
    pub fn start(
        &self,
        spec: Spec,
        caller: &str,
        nodes: &BTreeMap<String, NodeView>,
        now_ms: u64,
    ) -> Result<Rollout, RolloutError> {
        if spec.steps.is_empty() {
            return Err(RolloutError::BadRequest(
                "name at least one step".to_owned(),
            ));
        }
        let info = self.bundles.find(&spec.bundle)?;
        let plan = plan(&spec.selector, nodes);
        let cordoned = cordoned_matches(&spec.selector, nodes);
        if plan.is_empty() {
            let why = if cordoned.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} cordoned node(s) match but take no new rollouts ({}): `gantry fleet uncordon NODE` first",
                    cordoned.len(),
                    cordoned
                        .iter()
                        .take(5)
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(RolloutError::BadRequest(format!(
                "no enrolled node matches the selector {}{why}",
                selector_text(&spec.selector)
            )));
        }
        if !cordoned.is_empty() {
            tracing::info!(selector = %selector_text(&spec.selector), cordoned = ?cordoned,
                "cordoned nodes left out of the rollout");
        }
        let mut rollouts = self.rollouts.lock().expect("rollouts");
        for other in rollouts
            .values()
            .filter(|r| r.state().is_active() && r.bundle_name == info.name)
        {
            let shared: Vec<&String> = plan.iter().filter(|n| other.plan.contains(n)).collect();
            if !shared.is_empty() {
                return Err(RolloutError::Conflict(format!(
                    "rollout {} ({}) still holds model {:?} on {} of these nodes ({}); abort it or wait for it to finish",
                    other.id,
                    other.state().as_str(),
                    info.name,
                    shared.len(),
                    shared
                        .iter()
                        .take(5)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let number = rollouts.keys().next_back().map_or(1, |n| n + 1);
        let mut rollout = Rollout {
            id: format!("r{number}"),
            bundle_id: info.id.clone(),
            bundle_name: info.name.clone(),
            bundle_version: info.version.clone(),
            pushed_at_ms: info.pushed_at_ms,
            created_by: caller.to_owned(),
            created_at_ms: now_ms,
            state: Some(State::Rolling),
            phase_started_ms: now_ms,
            plan,
            spec,
            ..Rollout::default()
        };
        let steps: Vec<String> = rollout.spec.steps.iter().map(ToString::to_string).collect();
        let message = format!(
            "started by {caller}: {}@{} to {}, steps {}",
            info.name,
            info.version,
            nodes_text(rollout.plan.len()),
            steps.join(",")
        );
        event(&mut rollout, now_ms, message);
        let actions = advance(
            &mut rollout,
            nodes,
            &|n, m| self.bundles.assigned(n, m),
            now_ms,
        );
        self.commit(number, &rollout, true, 0, caller, &actions)?;
        tracing::info!(rollout = %rollout.id, bundle = %rollout.bundle_id, nodes = rollout.plan.len(), admin = caller, "rollout started");
        rollouts.insert(number, rollout.clone());
        Ok(rollout)
    }

    /// One rollout, or all of them (newest first).
    pub fn status(&self, id: Option<&str>) -> Result<Vec<Rollout>, RolloutError> {
        let rollouts = self.rollouts.lock().expect("rollouts");
        match id {
            Some(id) => {
                let r = number_of(id)
                    .and_then(|n| rollouts.get(&n))
                    .ok_or_else(|| RolloutError::NotFound(format!("no rollout {id:?}")))?;
                Ok(vec![r.clone()])
            }
            None => Ok(rollouts.values().rev().cloned().collect()),
        }
    }

    /// How many rollouts are in each state, and the summaries of every active rollout
    /// and of the newest `recent` others (for `/metrics`, without copying events).
    pub fn summaries(&self, recent: usize) -> (BTreeMap<State, u64>, Vec<Summary>) {
        let rollouts = self.rollouts.lock().expect("rollouts");
        let mut counts = BTreeMap::new();
        let mut out = Vec::new();
        let mut others = 0;
        for r in rollouts.values().rev() {
            let state = r.state();
            *counts.entry(state).or_insert(0) += 1;
            if state.is_active() {
                out.push(Summary::of(r));
            } else if others < recent {
                others += 1;
                out.push(Summary::of(r));
            }
        }
        (counts, out)
    }

    /// An operator's pause, resume, abort or rollback.
    pub fn command(
        &self,
        id: &str,
        command: Command,
        caller: &str,
        nodes: &BTreeMap<String, NodeView>,
        now_ms: u64,
    ) -> Result<Rollout, RolloutError> {
        let mut rollouts = self.rollouts.lock().expect("rollouts");
        let number = number_of(id).filter(|n| rollouts.contains_key(n));
        let Some(number) = number else {
            return Err(RolloutError::NotFound(format!("no rollout {id:?}")));
        };
        let mut r = rollouts[&number].clone();
        let state = r.state();
        let refuse = |what: &str| {
            Err(RolloutError::Conflict(format!(
                "rollout {id} is {}; it cannot be {what}",
                state.as_str()
            )))
        };
        let mut actions = Vec::new();
        match command {
            Command::Pause => {
                if !matches!(state, State::Rolling | State::Baking) {
                    return refuse("paused");
                }
                r.paused_from = Some(state);
                r.state = Some(State::Paused);
                event(&mut r, now_ms, format!("paused by {caller}"));
            }
            Command::Resume => {
                if state != State::Paused {
                    return refuse("resumed");
                }
                r.state = Some(r.paused_from.take().unwrap_or(State::Rolling));
                r.phase_started_ms = now_ms;
                event(
                    &mut r,
                    now_ms,
                    format!("resumed by {caller}; the step's timers start again"),
                );
                actions = self.advance(&mut r, nodes, now_ms);
            }
            Command::Abort => {
                if !matches!(state, State::Rolling | State::Baking | State::Paused) {
                    return refuse("aborted");
                }
                r.state = Some(State::Aborted);
                r.finished_at_ms = Some(now_ms);
                let message = format!(
                    "aborted by {caller}; {} touched nodes keep the bundle",
                    r.touched.len()
                );
                event(&mut r, now_ms, message);
            }
            Command::Rollback => {
                if matches!(state, State::RollingBack | State::RolledBack) {
                    return refuse("rolled back again");
                }
                event(&mut r, now_ms, format!("rollback requested by {caller}"));
                actions = roll_back(&mut r, now_ms);
            }
        }
        self.commit(
            number,
            &r,
            true,
            rollouts[&number].events.len(),
            caller,
            &actions,
        )?;
        tracing::info!(rollout = %id, admin = caller, command = ?command, state = r.state().as_str(), "rollout command");
        rollouts.insert(number, r.clone());
        Ok(r)
    }

    /// Whether any rollout is rolling, baking or rolling back (the ones `tick` moves).
    pub fn has_running(&self) -> bool {
        self.rollouts
            .lock()
            .expect("rollouts")
            .values()
            .any(|r| r.state().is_active() && r.state() != State::Paused)
    }

    /// Moves every active rollout on.
    pub fn tick(&self, nodes: &BTreeMap<String, NodeView>, now_ms: u64) {
        let mut rollouts = self.rollouts.lock().expect("rollouts");
        for (&number, stored) in rollouts.iter_mut() {
            if !stored.state().is_active() || stored.state() == State::Paused {
                continue;
            }
            let mut r = stored.clone();
            let actions = self.advance(&mut r, nodes, now_ms);
            if r == *stored {
                continue;
            }
            let announce = r.state() != stored.state() || r.step != stored.step;
            // Gate values change on every tick; store them with the transitions, not each
            // time (the live copy serves `status`).
            let keep = announce || r.events.len() != stored.events.len();
            if let Err(e) = self.commit(
                number,
                &r,
                keep,
                stored.events.len(),
                "controller",
                &actions,
            ) {
                tracing::error!(rollout = %r.id, error = %e, "cannot store the rollout's step; retrying");
                continue;
            }
            if announce {
                log_transition(&r);
            }
            *stored = r;
        }
    }

    /// [`advance`] with the canary comparison read from the store, when `r`'s gates ask
    /// for one.
    fn advance(
        &self,
        r: &mut Rollout,
        nodes: &BTreeMap<String, NodeView>,
        now_ms: u64,
    ) -> Vec<Action> {
        let comparison = match compare::read(self.bundles.store(), r) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(rollout = %r.id, error = %e, "cannot read the windows the canary comparison needs; it is judged on the next tick");
                None
            }
        };
        advance_compared(
            r,
            nodes,
            &|n, m| self.bundles.assigned(n, m),
            comparison.as_ref(),
            now_ms,
        )
    }

    /// KPIs over rollouts started in `[now - window, now]`.
    pub fn kpis(&self, window_ms: u64, now_ms: u64) -> Kpis {
        let rollouts = self.rollouts.lock().expect("rollouts");
        kpis(rollouts.values(), now_ms.saturating_sub(window_ms), now_ms)
    }

    /// Commits `actions` (assignments), the rollout record when `keep` and the audit
    /// entries for both (events from `since` on, by `actor`) in one store transaction.
    fn commit(
        &self,
        number: u64,
        r: &Rollout,
        keep: bool,
        since: usize,
        actor: &str,
        actions: &[Action],
    ) -> Result<(), RepoError> {
        let changes: Vec<Assignment> = actions
            .iter()
            .flat_map(|action| {
                let (bundle, nodes) = match action {
                    Action::Assign { bundle, nodes } => (Some(bundle.clone()), nodes),
                    Action::Unassign { nodes } => (None, nodes),
                };
                nodes.iter().map(move |node| Assignment {
                    node: node.clone(),
                    model: r.bundle_name.clone(),
                    bundle: bundle.clone(),
                })
            })
            .collect();
        let entries = audit_entries(since, r, actor, actions);
        if changes.is_empty() && entries.is_empty() && !keep {
            return Ok(());
        }
        self.bundles
            .commit_assignments(&changes, keep.then_some((number, r)), entries)?;
        for action in actions {
            match action {
                Action::Assign { bundle, nodes } => {
                    tracing::info!(rollout = %r.id, %bundle, ?nodes, "assigned");
                }
                Action::Unassign { nodes } => {
                    tracing::info!(rollout = %r.id, ?nodes, "assignment removed");
                }
            }
        }
        Ok(())
    }
}

/// The audit entries for a rollout's events from `since` on and the assignments it made,
/// with `actor`.
fn audit_entries(since: usize, r: &Rollout, actor: &str, actions: &[Action]) -> Vec<NewEntry> {
    let assigner = if r.state() == State::RollingBack {
        format!("rollout {} rollback", r.id)
    } else {
        format!("rollout {}", r.id)
    };
    let mut entries: Vec<NewEntry> = actions
        .iter()
        .map(|action| {
            let (what, bundle, nodes) = match action {
                Action::Assign { bundle, nodes } => ("bundle.assign", bundle.as_str(), nodes),
                Action::Unassign { nodes } => ("bundle.unassign", "", nodes),
            };
            crate::audit::entry(
                &assigner,
                what,
                bundle,
                crate::audit::details([
                    ("nodes", serde_json::json!(nodes)),
                    ("model", serde_json::json!(r.bundle_name)),
                    ("rollout", serde_json::json!(r.id)),
                ]),
            )
        })
        .collect();
    for e in r.events.iter().skip(since) {
        let mut entry = crate::audit::entry(
            actor,
            format!("rollout.{}", r.state().as_str()),
            &r.id,
            crate::audit::details([
                ("bundle", serde_json::json!(r.bundle_id)),
                ("step", serde_json::json!(r.step + 1)),
                ("message", serde_json::json!(e.message)),
                ("failed_gates", serde_json::json!(r.failed_gates)),
            ]),
        );
        entry.at_ms = e.at_ms;
        entries.push(entry);
    }
    entries
}

/// An operator's command on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Abort,
    Rollback,
}

fn log_transition(r: &Rollout) {
    let message = r.events.last().map_or("", |e| e.message.as_str());
    match r.state() {
        State::RollingBack if r.failure.is_some() => {
            tracing::error!(rollout = %r.id, bundle = %r.bundle_id, message, "rollout FAILED a gate; rolling back");
        }
        state => {
            tracing::info!(rollout = %r.id, state = state.as_str(), step = r.step + 1, message, "rollout");
        }
    }
}

fn event(r: &mut Rollout, at_ms: u64, message: String) {
    if r.events.len() == MAX_EVENTS {
        r.events.remove(1);
    }
    r.events.push(Event { at_ms, message });
}

/// `1 node`, `25 nodes`.
pub fn nodes_text(n: usize) -> String {
    if n == 1 {
        "1 node".to_owned()
    } else {
        format!("{n} nodes")
    }
}

fn selector_text(selector: &BTreeMap<String, String>) -> String {
    if selector.is_empty() {
        return "(all nodes)".to_owned();
    }
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Cordoned, not revoked nodes the selector picks: left out of new rollouts.
fn cordoned_matches(
    selector: &BTreeMap<String, String>,
    nodes: &BTreeMap<String, NodeView>,
) -> Vec<String> {
    nodes
        .iter()
        .filter(|(_, v)| {
            v.cordoned
                && !v.revoked
                && selector
                    .iter()
                    .all(|(k, want)| v.labels.get(k) == Some(want))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The selected nodes in the order steps take them: grouped by their labels other than
/// the selector's, each group by name, and the groups interleaved, so every step spreads
/// over racks, zones or whatever else the labels tell apart.
pub fn plan(
    selector: &BTreeMap<String, String>,
    nodes: &BTreeMap<String, NodeView>,
) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for (name, view) in nodes {
        if view.revoked
            || view.cordoned
            || !selector.iter().all(|(k, v)| view.labels.get(k) == Some(v))
        {
            continue;
        }
        let mut key = String::new();
        for (k, v) in view
            .labels
            .iter()
            .filter(|(k, _)| !selector.contains_key(*k))
        {
            let _ = write!(key, "{k}={v},");
        }
        groups.entry(key).or_default().push(name);
    }
    let mut groups: Vec<Vec<&String>> = groups
        .into_values()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while groups.iter().any(|g| i < g.len()) {
        for g in &mut groups {
            if let Some(name) = g.get(i) {
                out.push((*name).clone());
            }
        }
        i += 1;
    }
    out
}

/// How one touched node looks and, when it counts against the gate, why and which gate.
struct Verdict {
    state: NodeState,
    why: String,
    /// `health`, `silence`, `refusal`, `error-rate`, `latency`, `golden`, `drift`,
    /// `quality`: what the audit log names for a failed rollout.
    gate: &'static str,
}

impl Verdict {
    fn ok(state: NodeState) -> Self {
        Self {
            state,
            why: String::new(),
            gate: "",
        }
    }

    fn failing(state: NodeState, gate: &'static str, why: String) -> Self {
        Self { state, why, gate }
    }
}

/// How one touched node looks, and why when it counts against the gate.
fn judge(r: &Rollout, t: &Touched, view: Option<&NodeView>, now_ms: u64) -> Verdict {
    let heartbeat = view.and_then(|v| v.heartbeat.as_ref());
    let last_heard = heartbeat.map_or(0, |h| h.at_ms);
    if now_ms.saturating_sub(last_heard.max(t.assigned_at_ms)) > r.spec.silence_ms {
        return Verdict::failing(
            NodeState::Silent,
            "silence",
            format!(
                "{}: no heartbeat for {} s",
                t.node,
                now_ms.saturating_sub(last_heard.max(t.assigned_at_ms)) / 1000
            ),
        );
    }
    let Some(h) = heartbeat else {
        return Verdict::ok(NodeState::Pending);
    };
    let unhealthy = h
        .health
        .as_ref()
        .filter(|health| health.state == HealthState::Unhealthy)
        .map(|health| {
            let reasons: Vec<&str> = health
                .reasons
                .iter()
                .filter(|x| x.state == HealthState::Unhealthy)
                .map(|x| x.message.as_str())
                .collect();
            format!("{}: unhealthy ({})", t.node, reasons.join("; "))
        });
    if r.state() == State::RollingBack {
        let back = match &t.previous {
            Some(previous) => h.bundles.is_active(previous),
            None => true,
        };
        return match (back, unhealthy) {
            (true, None) => Verdict::ok(NodeState::Restored),
            (_, Some(why)) => Verdict::failing(NodeState::Failing, "health", why),
            (false, None) => Verdict::ok(NodeState::Pending),
        };
    }
    if let Some(failed) = h.bundles.refusal(&r.bundle_id) {
        return Verdict::failing(
            NodeState::Refused,
            "refusal",
            format!("{}: refused the bundle ({})", t.node, failed.reason),
        );
    }
    if !h.bundles.is_active(&r.bundle_id) {
        return match unhealthy {
            Some(why) => Verdict::failing(NodeState::Failing, "health", why),
            None => Verdict::ok(NodeState::Pending),
        };
    }
    if let Some(why) = unhealthy {
        return Verdict::failing(NodeState::Failing, "health", why);
    }
    let gates = &r.spec.gates;
    if let Some(m) = h.model_for(&r.bundle_id) {
        if let Some(max) = gates.max_error_rate
            && m.recent_requests > 0
            && m.recent_error_rate > max
        {
            return Verdict::failing(
                NodeState::Failing,
                "error-rate",
                format!(
                    "{}: inference error rate {:.1} % over its last {} requests (gate {:.1} %)",
                    t.node,
                    m.recent_error_rate * 100.0,
                    m.recent_requests,
                    max * 100.0
                ),
            );
        }
        if let (Some(max), Some(p99)) = (gates.max_latency_p99_s, m.latency_p99_s)
            && p99 > max
        {
            return Verdict::failing(
                NodeState::Failing,
                "latency",
                format!(
                    "{}: p99 latency {:.1} ms (gate {:.1} ms)",
                    t.node,
                    p99 * 1e3,
                    max * 1e3
                ),
            );
        }
        if gates.golden && m.golden_ok == Some(false) {
            return Verdict::failing(
                NodeState::Failing,
                "golden",
                format!("{}: the served model fails its golden vectors", t.node),
            );
        }
        if let (Some(max), Some(drift)) = (gates.max_drift, &m.drift)
            && let Some((feature, score)) = drift.worst.as_ref().filter(|(_, s)| *s > max)
        {
            return Verdict::failing(
                NodeState::Failing,
                "drift",
                format!(
                    "{}: drift from the reference data: {feature} {} {score:.3} over {} rows (gate {max})",
                    t.node,
                    drift.metric.as_str(),
                    drift.rows
                ),
            );
        }
        if let Some(why) = quality_failure(&gates.min_quality, gates.min_quality_rows, m) {
            return Verdict::failing(NodeState::Failing, "quality", format!("{}: {why}", t.node));
        }
    }
    Verdict::ok(NodeState::Ok)
}

/// Why `m`'s production quality fails the gates, when it does: judged on the figures
/// since the node started serving the version, once `min_rows` feedback rows joined.
fn quality_failure(
    min_quality: &BTreeMap<QualityMetric, f64>,
    min_rows: u64,
    m: &ModelReport,
) -> Option<String> {
    let q = m.quality.as_ref()?;
    let figures = &q.cumulative;
    if min_quality.is_empty() || figures.rows < min_rows.max(1) {
        return None;
    }
    let failed: Vec<String> = min_quality
        .iter()
        .filter_map(|(metric, bound)| {
            let value = figures.get(*metric)?;
            (!metric.meets(value, *bound)).then(|| {
                format!(
                    "{} {value:.4} ({} {bound})",
                    metric.as_str(),
                    if metric.higher_is_better() {
                        "gate ≥"
                    } else {
                        "gate ≤"
                    }
                )
            })
        })
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "production quality below the gate over {} feedback rows: {}",
            figures.rows,
            failed.join(", ")
        )
    })
}

/// Moves `r` on by what the nodes report at `now_ms`; returns the assignment changes to
/// make. `assigned(node, model)` tells a node's current assignment for the rollout's
/// model, recorded as its previous bundle when the rollout touches it.
pub fn advance(
    r: &mut Rollout,
    nodes: &BTreeMap<String, NodeView>,
    assigned: &dyn Fn(&str, &str) -> Option<String>,
    now_ms: u64,
) -> Vec<Action> {
    advance_compared(r, nodes, assigned, None, now_ms)
}

/// [`advance`], with the canary's comparison with the nodes still on the previous
/// version ([`compare::read`]): a comparison gate it fails rolls the rollout back
/// whatever `max_unhealthy` allows.
pub fn advance_compared(
    r: &mut Rollout,
    nodes: &BTreeMap<String, NodeView>,
    assigned: &dyn Fn(&str, &str) -> Option<String>,
    comparison: Option<&Comparison>,
    now_ms: u64,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if r.state() == State::Rolling {
        let target = r.step_target();
        if r.touched.len() < target {
            let new: Vec<String> = r.plan[r.touched.len()..target].to_vec();
            for node in &new {
                r.touched.push(Touched {
                    node: node.clone(),
                    previous: assigned(node, &r.bundle_name).filter(|p| *p != r.bundle_id),
                    step: r.step,
                    assigned_at_ms: now_ms,
                });
            }
            actions.push(Action::Assign {
                bundle: r.bundle_id.clone(),
                nodes: new,
            });
        }
    }

    // Judge every touched node.
    let mut values = GateValues {
        at_ms: now_ms,
        ..GateValues::default()
    };
    let mut pending = Vec::new();
    for t in &r.touched {
        let Verdict { state, why, gate } = judge(r, t, nodes.get(&t.node), now_ms);
        let name = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *values.nodes.entry(name).or_default() += 1;
        if let Some(m) = nodes
            .get(&t.node)
            .and_then(|v| v.heartbeat.as_ref())
            .and_then(|h| h.model_for(&r.bundle_id))
        {
            values.max_error_rate = Some(
                values
                    .max_error_rate
                    .unwrap_or(0.0)
                    .max(m.recent_error_rate),
            );
            if let Some(p99) = m.latency_p99_s {
                values.max_latency_p99_s = Some(values.max_latency_p99_s.unwrap_or(0.0).max(p99));
            }
            if m.golden_ok == Some(false) {
                values.golden_failures += 1;
            }
            if let Some((feature, score)) = m.drift.as_ref().and_then(|d| d.worst.as_ref())
                && values.max_drift.is_none_or(|worst| *score > worst)
            {
                values.max_drift = Some(*score);
                values.max_drift_feature = Some(feature.clone());
            }
            if let Some(q) = &m.quality {
                let figures = &q.cumulative;
                values.min_quality_rows = Some(
                    values
                        .min_quality_rows
                        .map_or(figures.rows, |rows| rows.min(figures.rows)),
                );
                for metric in r.spec.gates.min_quality.keys() {
                    if let Some(value) = figures.get(*metric).filter(|_| figures.rows > 0) {
                        let worst = values.worst_quality.entry(*metric).or_insert(value);
                        if !metric.meets(value, *worst) {
                            *worst = value;
                        }
                    }
                }
            }
        }
        match state {
            NodeState::Failing | NodeState::Silent | NodeState::Refused => {
                if !values.failed_gates.iter().any(|g| g == gate) {
                    values.failed_gates.push(gate.to_owned());
                }
                values.failing.push(why);
            }
            NodeState::Pending => pending.push(t.node.clone()),
            NodeState::Ok | NodeState::Restored => {}
        }
    }

    match r.state() {
        State::RollingBack => {
            // The figures that failed the gate stay on show; what rolling back needs is
            // each touched node's state.
            r.gates.at_ms = values.at_ms;
            r.gates.nodes = values.nodes;
            r.gates.failing = values.failing;
            if pending.is_empty() && r.gates.failing.is_empty() {
                r.state = Some(State::RolledBack);
                r.recovered_at_ms = Some(now_ms);
                r.finished_at_ms = Some(now_ms);
                let took = r
                    .failed_at_ms
                    .map(|f| format!(" in {:.1} s", now_ms.saturating_sub(f) as f64 / 1e3))
                    .unwrap_or_default();
                event(
                    r,
                    now_ms,
                    format!(
                        "rolled back: {} back on the previous bundle{took}",
                        nodes_text(r.touched.len())
                    ),
                );
            }
        }
        State::Rolling | State::Baking => {
            let timed_out = now_ms.saturating_sub(r.phase_started_ms) > r.spec.step_timeout_ms;
            if r.state() == State::Rolling && timed_out {
                if !pending.is_empty() && !values.failed_gates.iter().any(|g| g == "timeout") {
                    values.failed_gates.push("timeout".to_owned());
                }
                for node in &pending {
                    values.failing.push(format!(
                        "{node}: not running the bundle after the step timeout"
                    ));
                }
            }
            let allowed = r.spec.gates.max_unhealthy as usize;
            let compared = comparison.and_then(|c| compare::failure(&r.spec.gates, c));
            values.comparison = comparison.cloned();
            if compared.is_some() {
                values.failed_gates.push("canary-comparison".to_owned());
            }
            r.gates = values;
            if let Some(why) = compared {
                let reason = format!("gate failed at step {}: {why}", r.step + 1);
                r.failure = Some(reason.clone());
                r.failed_gates.clone_from(&r.gates.failed_gates);
                r.failed_at_ms = Some(now_ms);
                event(r, now_ms, reason);
                actions.extend(roll_back(r, now_ms));
            } else if r.gates.failing.len() > allowed {
                let reason = format!(
                    "gate failed at step {} ({} of {} touched nodes count against it, {allowed} allowed): {}",
                    r.step + 1,
                    r.gates.failing.len(),
                    r.touched.len(),
                    r.gates.failing.join("; ")
                );
                r.failure = Some(reason.clone());
                r.failed_gates.clone_from(&r.gates.failed_gates);
                r.failed_at_ms = Some(now_ms);
                event(r, now_ms, reason);
                actions.extend(roll_back(r, now_ms));
            } else if r.state() == State::Rolling && (pending.is_empty() || timed_out) {
                r.state = Some(State::Baking);
                r.phase_started_ms = now_ms;
                event(
                    r,
                    now_ms,
                    format!(
                        "step {} ({}) runs the bundle; baking for {} s",
                        r.step + 1,
                        nodes_text(r.touched.len()),
                        r.spec.bake_ms / 1000
                    ),
                );
            } else if r.state() == State::Baking
                && now_ms.saturating_sub(r.phase_started_ms) >= r.spec.bake_ms
            {
                if r.step + 1 >= r.spec.steps.len() {
                    r.state = Some(State::Succeeded);
                    r.finished_at_ms = Some(now_ms);
                    event(
                        r,
                        now_ms,
                        format!("succeeded: {} run the bundle", nodes_text(r.touched.len())),
                    );
                } else {
                    r.step += 1;
                    r.state = Some(State::Rolling);
                    r.phase_started_ms = now_ms;
                    event(
                        r,
                        now_ms,
                        format!(
                            "step {} baked; step {} takes it to {}",
                            r.step,
                            r.step + 1,
                            nodes_text(r.step_target())
                        ),
                    );
                    actions.extend(advance_compared(r, nodes, assigned, comparison, now_ms));
                }
            }
        }
        State::Paused | State::Succeeded | State::Aborted | State::RolledBack => {}
    }
    actions
}

/// Sends every touched node back to its previous bundle.
fn roll_back(r: &mut Rollout, now_ms: u64) -> Vec<Action> {
    r.state = Some(State::RollingBack);
    r.phase_started_ms = now_ms;
    let mut by_previous: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for t in &r.touched {
        by_previous
            .entry(t.previous.clone())
            .or_default()
            .push(t.node.clone());
    }
    let mut actions = Vec::new();
    for (previous, nodes) in by_previous {
        if let Some(bundle) = previous {
            actions.push(Action::Assign { bundle, nodes });
        } else {
            let message = format!(
                "{} nodes had no previous bundle assigned; their assignment is removed and they keep what they run: {}",
                nodes.len(),
                nodes.join(", ")
            );
            event(r, now_ms, message);
            actions.push(Action::Unassign { nodes });
        }
    }
    actions
}

/// KPIs of the rollouts started in `[from_ms, to_ms]`, overall and per model.
pub fn kpis<'a>(rollouts: impl Iterator<Item = &'a Rollout>, from_ms: u64, to_ms: u64) -> Kpis {
    let rollouts: Vec<&Rollout> = rollouts
        .filter(|r| (from_ms..=to_ms).contains(&r.created_at_ms))
        .collect();
    let mut k = kpis_of(&rollouts, from_ms, to_ms);
    let mut by_model: BTreeMap<&str, Vec<&Rollout>> = BTreeMap::new();
    for r in &rollouts {
        by_model.entry(&r.bundle_name).or_default().push(r);
    }
    k.models = by_model
        .into_iter()
        .map(|(model, list)| (model.to_owned(), kpis_of(&list, from_ms, to_ms)))
        .collect();
    k
}

fn kpis_of(rollouts: &[&Rollout], from_ms: u64, to_ms: u64) -> Kpis {
    let mut k = Kpis {
        from_ms,
        to_ms,
        ..Kpis::default()
    };
    let mut lead = Vec::new();
    let mut recovery = Vec::new();
    let (mut succeeded, mut failed) = (0u32, 0u32);
    for r in rollouts {
        *k.rollouts.entry(r.state().as_str().to_owned()).or_default() += 1;
        if r.state() == State::Succeeded {
            succeeded += 1;
            if let Some(done) = r.finished_at_ms {
                lead.push(done.saturating_sub(r.pushed_at_ms) as f64 / 1e3);
            }
        }
        if let Some(failed_at) = r.failed_at_ms {
            failed += 1;
            if let Some(recovered) = r.recovered_at_ms {
                recovery.push(recovered.saturating_sub(failed_at) as f64 / 1e3);
            }
        }
    }
    let days = (to_ms.saturating_sub(from_ms) as f64 / 86_400_000.0).max(1.0 / 24.0);
    k.deployments_per_day = f64::from(succeeded) / days;
    lead.sort_by(f64::total_cmp);
    k.lead_time_median_s = lead.get(lead.len() / 2).copied();
    k.lead_time_max_s = lead.last().copied();
    if succeeded + failed > 0 {
        k.change_failure_rate = Some(f64::from(failed) / f64::from(succeeded + failed));
    }
    if !recovery.is_empty() {
        k.mttr_mean_s = Some(recovery.iter().sum::<f64>() / recovery.len() as f64);
        k.mttr_max_s = recovery.iter().copied().reduce(f64::max);
    }
    k
}

pub mod compare;

#[cfg(test)]
mod tests;
