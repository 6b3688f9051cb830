//! The audit log: an append-only, hash-chained record of every action on the fleet.
//!
//! # Entries
//!
//! Each entry holds a sequence number (1, 2, …, no gaps), the time, the actor (an admin,
//! a node, or `controller` for what the rollout engine does), the action
//! (`bundle.push`, `rollout.step`, `node.activated`, …), its subject and details. Its
//! `hash` is `SHA-256(prev ‖ body)`, where `prev` is the previous entry's hash (64 zero
//! digits for the first) and `body` the canonical JSON of the entry's fields other than
//! the two hashes (serde's field order; details are JSON objects with sorted keys). The
//! store keeps entries by sequence number and, in the same transaction, the head (last
//! sequence number and hash).
//!
//! # Verification
//!
//! [`verify`] walks the entries in order and names the first that breaks the chain: an
//! edited entry no longer hashes to its `hash`; a deleted or reordered one breaks the
//! sequence or the `prev` link; entries cut off the end no longer reach the stored head.
//! Whoever can rewrite the whole store can rewrite the chain with it: auditors record the
//! head that `gantry audit verify` prints, and a later head must extend it.
//!
//! This module is the chain's pure part — hashing, linking, verification and folding
//! entries into the auditor's report — with no store and no clock: the controller's
//! store feeds it entries and stamps times.

use std::collections::BTreeMap;

pub use crate::protocol::audit::{Break, Entry, Verification};
use crate::protocol::audit::{
    BundleReport, CordonRecord, Flag, Interval, Period, PolicyRecord, Refusal, RefusedUpload,
    Report,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the log last recorded of a node's bundles, and when the node said so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeBundleState {
    /// The bundle activated last, of any model.
    pub active: Option<String>,
    pub refused: Option<String>,
    /// The node's time of the last change recorded (a journal event older than it is
    /// history already told).
    pub at_ms: u64,
    /// Model name → its active bundle (empty in states recorded before nodes served
    /// several models: then `active` is the one model's).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
}

impl NodeBundleState {
    /// The same bundles, whenever reported.
    pub fn same(&self, other: &Self) -> bool {
        self.active == other.active && self.refused == other.refused && self.models == other.models
    }

    /// The bundle recorded active for `model`.
    pub fn active_of(&self, model: &str) -> Option<&String> {
        if self.models.is_empty() {
            return self.active.as_ref();
        }
        self.models.get(model)
    }

    /// The bundle `model` ran before, for an activation's `previous`: none for a model
    /// new to a state recorded before nodes served several models (its `active` was
    /// another model's).
    pub fn previous_of(&self, model: &str) -> Option<&String> {
        self.active_of(model)
            .filter(|_| !self.models.is_empty() || model.is_empty())
    }

    /// This state after `bundle` became active for `model` at `at_ms`.
    #[must_use]
    pub fn activated(&self, model: &str, bundle: &str, at_ms: u64) -> Self {
        let mut models = self.models.clone();
        models.insert(model.to_owned(), bundle.to_owned());
        Self {
            active: Some(bundle.to_owned()),
            refused: self.refused.clone(),
            at_ms,
            models,
        }
    }
}

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is hashed: every field but the hashes, in this order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    at_ms: u64,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    details: &'a serde_json::Value,
}

/// An action to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewEntry {
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: serde_json::Value,
}

impl NewEntry {
    /// An action taken at `at_ms`.
    pub fn at(
        at_ms: u64,
        actor: impl Into<String>,
        action: impl Into<String>,
        subject: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            at_ms,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            details,
        }
    }
}

/// The hash an entry with these fields and `prev` must carry.
pub fn entry_hash(prev: &str, seq: u64, new: &NewEntry) -> String {
    let body = Body {
        seq,
        at_ms: new.at_ms,
        actor: &new.actor,
        action: &new.action,
        subject: &new.subject,
        details: &new.details,
    };
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(serde_json::to_vec(&body).expect("audit body serializes"));
    format!("{:x}", hasher.finalize())
}

/// Chains `new` after the entry with sequence `last_seq` and hash `last_hash`.
pub fn chain(last_seq: u64, last_hash: &str, new: NewEntry) -> Entry {
    let seq = last_seq + 1;
    let hash = entry_hash(last_hash, seq, &new);
    Entry {
        seq,
        at_ms: new.at_ms,
        actor: new.actor,
        action: new.action,
        subject: new.subject,
        details: new.details,
        prev: last_hash.to_owned(),
        hash,
    }
}

/// Verifies the chain from its stored entries (in key order: `(key, bytes)`) against the
/// stored head `(seq, hash)`.
pub fn verify<E>(
    entries: impl Iterator<Item = Result<(u64, Vec<u8>), E>>,
    head: Option<(u64, String)>,
) -> Result<Verification, E> {
    let mut v = Verification {
        head_hash: GENESIS.to_owned(),
        ..Verification::default()
    };
    for item in entries {
        let (key, bytes) = item?;
        v.entries += 1;
        if v.first_break.is_none() {
            match check(&v, key, &bytes) {
                Ok(hash) => {
                    v.head_seq = key;
                    v.head_hash = hash;
                }
                Err(found) => v.first_break = Some(found),
            }
        }
    }
    if v.first_break.is_none()
        && let Some((seq, hash)) = head
        && (seq != v.head_seq || hash != v.head_hash)
    {
        let problem = if seq > v.head_seq {
            format!(
                "the log ends at entry {} but its recorded head is entry {seq}: entries {}..{seq} were cut off",
                v.head_seq,
                v.head_seq + 1
            )
        } else {
            format!(
                "the recorded head (entry {seq}, {hash}) is not the chain's end (entry {}, {})",
                v.head_seq, v.head_hash
            )
        };
        v.first_break = Some(Break {
            seq: seq.min(v.head_seq + 1),
            problem,
        });
    }
    Ok(v)
}

/// Checks the entry stored at `key` against the chain verified so far; returns its hash.
fn check(v: &Verification, key: u64, bytes: &[u8]) -> Result<String, Break> {
    let expected = v.head_seq + 1;
    let entry: Entry = serde_json::from_slice(bytes).map_err(|e| Break {
        seq: key,
        problem: format!("entry {key} is not a valid record: {e}"),
    })?;
    if key != expected || entry.seq != key {
        let problem = if key > expected {
            format!(
                "entries {expected}..{} are missing (deleted): entry {key} follows entry {}",
                key - 1,
                v.head_seq
            )
        } else {
            format!(
                "entry stored at {key} says it is entry {} (moved or reordered)",
                entry.seq
            )
        };
        return Err(Break {
            seq: expected.min(key),
            problem,
        });
    }
    if entry.prev != v.head_hash {
        return Err(Break {
            seq: key,
            problem: format!(
                "entry {key} does not follow entry {}: its prev is {}, entry {}'s hash is {} (inserted, removed or reordered)",
                v.head_seq, entry.prev, v.head_seq, v.head_hash
            ),
        });
    }
    let new = NewEntry {
        at_ms: entry.at_ms,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        subject: entry.subject.clone(),
        details: entry.details.clone(),
    };
    let hash = entry_hash(&entry.prev, entry.seq, &new);
    if hash != entry.hash {
        return Err(Break {
            seq: key,
            problem: format!(
                "entry {key} ({} {} by {}) was altered: its contents hash to {hash}, it records {}",
                entry.action, entry.subject, entry.actor, entry.hash
            ),
        });
    }
    Ok(entry.hash)
}

/// Builds the auditor's report over `[from_ms, to_ms]` from the entries in order, for a
/// chain that verified as `chain`. Intervals that overlap the range are reported whole.
#[derive(Debug)]
pub struct ReportBuilder {
    report: Report,
    silence_ms: u64,
    /// Bundle id → what its push recorded.
    pushed: BTreeMap<String, BundleReport>,
    /// (Node, model) → (bundle id, cause) of its latest assignment.
    assigned: BTreeMap<(String, String), (String, String)>,
    /// (Node, model) → its open interval.
    open: BTreeMap<(String, String), Interval>,
    /// Node → when it disconnected, while it is away.
    away: BTreeMap<String, u64>,
    /// Drift alerts and failed rollout gates in the range, in the log's order.
    drift: Vec<Flag>,
}

impl ReportBuilder {
    pub fn new(
        from_ms: u64,
        to_ms: u64,
        silence_ms: u64,
        chain: Verification,
        generated_at_ms: u64,
    ) -> Self {
        Self {
            report: Report {
                from_ms,
                to_ms,
                generated_at_ms,
                chain,
                ..Report::default()
            },
            silence_ms,
            pushed: BTreeMap::new(),
            assigned: BTreeMap::new(),
            open: BTreeMap::new(),
            away: BTreeMap::new(),
            drift: Vec::new(),
        }
    }

    fn in_range(&self, from: u64, to: Option<u64>) -> bool {
        from <= self.report.to_ms && to.is_none_or(|to| to >= self.report.from_ms)
    }

    fn close(&mut self, node: &str, model: &str, at_ms: u64) {
        if let Some(mut interval) = self.open.remove(&(node.to_owned(), model.to_owned())) {
            interval.to_ms = Some(at_ms);
            if self.in_range(interval.from_ms, interval.to_ms) {
                self.report
                    .nodes
                    .entry(node.to_owned())
                    .or_default()
                    .ran
                    .push(interval);
            }
        }
    }

    /// The model an entry about `bundle` on `node` concerns: as the entry names it
    /// (entries written since nodes serve several models do), else the pushed bundle's
    /// name, else the one model the node has run (older single-model entries).
    fn model_of(&self, e: &Entry, node: Option<&str>, bundle: &str) -> String {
        if let Some(model) = e.details["model"].as_str().filter(|m| !m.is_empty()) {
            return model.to_owned();
        }
        if let Some(pushed) = self.pushed.get(bundle).filter(|p| !p.name.is_empty()) {
            return pushed.name.clone();
        }
        let mut open = self.open.keys().filter(|(n, _)| Some(n.as_str()) == node);
        match (open.next(), open.next()) {
            (Some((_, model)), None) => model.clone(),
            _ => String::new(),
        }
    }

    /// Takes the next entry of the chain.
    pub fn add(&mut self, e: &Entry) {
        if e.at_ms > self.report.to_ms {
            return;
        }
        let text = |key: &str| e.details[key].as_str().unwrap_or_default().to_owned();
        let nodes = || -> Vec<String> {
            serde_json::from_value(e.details["nodes"].clone()).unwrap_or_default()
        };
        match e.action.as_str() {
            "bundle.push" | "bundle.import" => {
                let pushed = BundleReport {
                    name: text("name"),
                    version: text("version"),
                    pushed_at_ms: Some(e.at_ms),
                    pushed_by: e.actor.clone(),
                    via: if e.action == "bundle.import" {
                        "import"
                    } else {
                        "push"
                    }
                    .to_owned(),
                    signers: serde_json::from_value(e.details["signers"].clone())
                        .unwrap_or_default(),
                    signatures_valid: e.details["signatures_valid"].as_bool() == Some(true),
                    policy_sha256: text("policy_sha256"),
                    ran_on: Vec::new(),
                };
                self.pushed.entry(e.subject.clone()).or_insert(pushed);
            }
            "bundle.push_refused" | "bundle.import_refused" if e.at_ms >= self.report.from_ms => {
                let via = if e.action == "bundle.import_refused" {
                    "import"
                } else {
                    "push"
                };
                self.report.refused_uploads.push(RefusedUpload {
                    at_ms: e.at_ms,
                    by: e.actor.clone(),
                    via: via.to_owned(),
                    file_sha256: text("file_sha256"),
                    reason: text("reason"),
                });
            }
            "policy.change" => {
                self.report.policies.push(PolicyRecord {
                    from_ms: e.at_ms,
                    sha256: text("sha256"),
                    version: e.details["version"].as_u64(),
                    threshold: e.details["threshold"].as_u64().map(|t| t as u32),
                    keys: serde_json::from_value(e.details["keys"].clone()).unwrap_or_default(),
                    revoked: serde_json::from_value(e.details["revoked"].clone())
                        .unwrap_or_default(),
                });
            }
            "bundle.assign" => {
                let cause = if e.actor.starts_with("rollout ") {
                    e.actor.clone()
                } else {
                    format!("assigned by {}", e.actor)
                };
                let model = self.model_of(e, None, &e.subject);
                for node in nodes() {
                    self.assigned
                        .insert((node, model.clone()), (e.subject.clone(), cause.clone()));
                }
            }
            "node.enroll" => {
                self.report
                    .nodes
                    .entry(e.subject.clone())
                    .or_default()
                    .enrolled_at_ms = Some(e.at_ms);
            }
            "node.cordon" => {
                self.report
                    .nodes
                    .entry(e.subject.clone())
                    .or_default()
                    .cordons
                    .push(CordonRecord {
                        at_ms: e.at_ms,
                        by: e.actor.clone(),
                        reason: text("reason"),
                        automatic: e.details["automatic"].as_bool() == Some(true),
                        lifted_at_ms: None,
                        lifted_by: None,
                    });
            }
            "node.uncordon" => {
                if let Some(open) = self
                    .report
                    .nodes
                    .entry(e.subject.clone())
                    .or_default()
                    .cordons
                    .iter_mut()
                    .rev()
                    .find(|c| c.lifted_at_ms.is_none())
                {
                    open.lifted_at_ms = Some(e.at_ms);
                    open.lifted_by = Some(e.actor.clone());
                }
            }
            "node.revoke" => {
                self.report
                    .nodes
                    .entry(e.subject.clone())
                    .or_default()
                    .revoked_at_ms = Some(e.at_ms);
            }
            "node.activated" => {
                let bundle = text("bundle");
                let model = self.model_of(e, Some(&e.subject), &bundle);
                self.close(&e.subject, &model, e.at_ms);
                let key = (e.subject.clone(), model);
                let cause = match self.assigned.get(&key) {
                    Some((assigned, cause)) if *assigned == bundle => cause.clone(),
                    _ => "activated on the node (local import or rollback)".to_owned(),
                };
                let pushed = self.pushed.get(&bundle);
                let name = pushed
                    .map(|p| p.name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| key.1.clone());
                self.open.insert(
                    key,
                    Interval {
                        name,
                        version: pushed.map(|p| p.version.clone()).unwrap_or_default(),
                        signers: pushed.map(|p| p.signers.clone()).unwrap_or_default(),
                        signatures_valid: pushed.is_some_and(|p| p.signatures_valid),
                        policy_sha256: pushed.map(|p| p.policy_sha256.clone()).unwrap_or_default(),
                        bundle,
                        from_ms: e.at_ms,
                        to_ms: None,
                        cause,
                    },
                );
            }
            "node.refused" if e.at_ms >= self.report.from_ms => {
                self.report
                    .nodes
                    .entry(e.subject.clone())
                    .or_default()
                    .refused
                    .push(Refusal {
                        at_ms: e.at_ms,
                        bundle: text("bundle"),
                        reason: text("reason"),
                    });
            }
            "model.drift" if e.at_ms >= self.report.from_ms => {
                let features: Vec<String> = e.details["features"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        format!(
                            "{} {:.3}",
                            f["feature"].as_str().unwrap_or_default(),
                            f["score"].as_f64().unwrap_or(0.0)
                        )
                    })
                    .collect();
                self.drift.push(Flag {
                    kind: "model-drift".to_owned(),
                    subject: e.subject.clone(),
                    message: format!(
                        "{} {} {} drifted from its reference data (window ending at {} ms, {} above {}): {}",
                        e.subject,
                        text("model"),
                        text("version"),
                        e.details["window_end_ms"].as_u64().unwrap_or(e.at_ms),
                        text("metric"),
                        e.details["threshold"].as_f64().unwrap_or(0.0),
                        features.join(", ")
                    ),
                });
            }
            "rollout.rolling-back" if e.at_ms >= self.report.from_ms => {
                let gates: Vec<String> =
                    serde_json::from_value(e.details["failed_gates"].clone()).unwrap_or_default();
                let message = text("message");
                if !gates.is_empty() && message.starts_with("gate failed") {
                    let kind = if gates.iter().any(|g| g == "canary-comparison") {
                        "canary-comparison-failed"
                    } else if gates.iter().any(|g| g == "quality") {
                        "quality-gate-failed"
                    } else if gates.iter().any(|g| g == "drift") {
                        "drift-gate-failed"
                    } else {
                        "rollout-gate-failed"
                    };
                    self.drift.push(Flag {
                        kind: kind.to_owned(),
                        subject: e.subject.clone(),
                        message: format!(
                            "rollout {} of {} failed its {} gate{} and rolled back: {message}",
                            e.subject,
                            text("bundle"),
                            gates.join(", "),
                            if gates.len() == 1 { "" } else { "s" },
                        ),
                    });
                }
            }
            "node.disconnect" => {
                self.away.insert(e.subject.clone(), e.at_ms);
            }
            "node.connect" => {
                if let Some(since) = self.away.remove(&e.subject)
                    && e.at_ms.saturating_sub(since) > self.silence_ms
                    && self.in_range(since, Some(e.at_ms))
                {
                    self.report
                        .nodes
                        .entry(e.subject.clone())
                        .or_default()
                        .silent
                        .push(Period {
                            from_ms: since,
                            to_ms: Some(e.at_ms),
                        });
                }
            }
            _ => {}
        }
    }

    /// The report, with its flags.
    pub fn finish(mut self) -> Report {
        let open: Vec<((String, String), Interval)> =
            std::mem::take(&mut self.open).into_iter().collect();
        for ((node, _), interval) in open {
            if self.in_range(interval.from_ms, None) {
                self.report
                    .nodes
                    .entry(node)
                    .or_default()
                    .ran
                    .push(interval);
            }
        }
        let to = self.report.to_ms;
        for (node, since) in std::mem::take(&mut self.away) {
            if to.saturating_sub(since) > self.silence_ms {
                self.report
                    .nodes
                    .entry(node)
                    .or_default()
                    .silent
                    .push(Period {
                        from_ms: since,
                        to_ms: None,
                    });
            }
        }
        let mut bundles = self.pushed;
        let mut flags = Vec::new();
        flags.append(&mut self.drift);
        if let Some(b) = &self.report.chain.first_break {
            flags.push(Flag {
                kind: "chain-broken".to_owned(),
                subject: format!("entry {}", b.seq),
                message: format!(
                    "the audit chain is broken at entry {}: {} — nothing after it can be trusted",
                    b.seq, b.problem
                ),
            });
        }
        for (node, r) in &self.report.nodes {
            for i in &r.ran {
                bundles.entry(i.bundle.clone()).or_default().ran_on.push((
                    node.clone(),
                    i.from_ms,
                    i.to_ms,
                ));
                if !i.signatures_valid {
                    flags.push(Flag {
                        kind: "unverified-bundle".to_owned(),
                        subject: node.clone(),
                        message: format!(
                            "{node} ran {} without signatures verified by this controller (it was never pushed here)",
                            i.bundle
                        ),
                    });
                }
            }
            for p in &r.silent {
                flags.push(Flag {
                    kind: "silent-node".to_owned(),
                    subject: node.clone(),
                    message: format!(
                        "{node} had no connection for {} s{}",
                        p.to_ms.unwrap_or(to).saturating_sub(p.from_ms) / 1000,
                        if p.to_ms.is_none() {
                            " (and still has none)"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        bundles.retain(|_, b| !b.ran_on.is_empty() || b.pushed_at_ms.is_some_and(|at| at <= to));
        self.report.bundles = bundles;
        for u in &self.report.refused_uploads {
            flags.push(Flag {
                kind: format!("refused-{}", u.via),
                subject: u.by.clone(),
                message: format!(
                    "a bundle {} was refused at {}: {}",
                    u.via,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u.at_ms)
                    ),
                    u.reason.lines().last().unwrap_or_default()
                ),
            });
        }
        self.report.flags = flags;
        self.report
    }
}

/// Details as a JSON object from pairs, for call sites.
pub fn details<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> serde_json::Value {
    serde_json::Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<serde_json::Map<_, _>>(),
    )
}

/// Counts of entries per action, for summaries.
pub fn count_actions<'a>(entries: impl Iterator<Item = &'a Entry>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in entries {
        *out.entry(e.action.clone()).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out
                .last()
                .map_or((0, GENESIS.to_owned()), |e| (e.seq, e.hash.clone()));
            out.push(chain(
                seq,
                &hash,
                NewEntry {
                    at_ms: 1000 + i,
                    actor: "admin".into(),
                    action: "bundle.push".into(),
                    subject: format!("b{i}"),
                    details: details([("size", serde_json::json!(i))]),
                },
            ));
        }
        out
    }

    fn run(entries: &[Entry], head: Option<(u64, String)>) -> Verification {
        let items = entries
            .iter()
            .map(|e| Ok::<_, ()>((e.seq, serde_json::to_vec(e).unwrap())));
        verify(items, head).unwrap()
    }

    fn head(entries: &[Entry]) -> Option<(u64, String)> {
        entries.last().map(|e| (e.seq, e.hash.clone()))
    }

    #[test]
    fn an_intact_chain_verifies_to_its_head() {
        let entries = log(5);
        let v = run(&entries, head(&entries));
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.entries, v.head_seq), (5, 5));
        assert_eq!(v.head_hash, entries[4].hash);
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut entries = log(5);
        let h = head(&entries);
        entries[2].subject = "forged".into();
        let v = run(&entries, h);
        let b = v.first_break.unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.problem.contains("altered"), "{}", b.problem);
        assert_eq!(v.head_seq, 2, "the chain is intact up to entry 2");
    }

    #[test]
    fn an_edited_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let mut entries = log(5);
        let h = head(&entries);
        entries[2].subject = "forged".into();
        let new = NewEntry {
            at_ms: entries[2].at_ms,
            actor: entries[2].actor.clone(),
            action: entries[2].action.clone(),
            subject: entries[2].subject.clone(),
            details: entries[2].details.clone(),
        };
        entries[2].hash = entry_hash(&entries[2].prev, 3, &new);
        let b = run(&entries, h).first_break.unwrap();
        assert_eq!(b.seq, 4);
        assert!(
            b.problem.contains("does not follow entry 3"),
            "{}",
            b.problem
        );
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let mut entries = log(5);
        let h = head(&entries);
        entries.remove(1);
        let b = run(&entries, h).first_break.unwrap();
        assert_eq!(b.seq, 2);
        assert!(b.problem.contains("missing"), "{}", b.problem);
    }

    #[test]
    fn reordered_entries_are_named() {
        let mut entries = log(5);
        let h = head(&entries);
        // Swap the contents of entries 2 and 3, keys kept in order.
        let (a, b) = (entries[1].clone(), entries[2].clone());
        entries[1] = Entry { seq: 2, ..b };
        entries[2] = Entry { seq: 3, ..a };
        let br = run(&entries, h).first_break.unwrap();
        assert_eq!(br.seq, 2);
    }

    #[test]
    fn entries_cut_off_the_end_are_named() {
        let mut entries = log(5);
        let h = head(&entries);
        entries.truncate(3);
        let b = run(&entries, h).first_break.unwrap();
        assert_eq!(b.seq, 4);
        assert!(b.problem.contains("cut off"), "{}", b.problem);
    }

    fn entry(
        at_ms: u64,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Entry {
        Entry {
            at_ms,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            details,
            ..Entry::default()
        }
    }

    #[test]
    fn the_report_keeps_one_interval_per_model_on_a_node() {
        let push = |at, id: &str, name: &str| {
            entry(
                at,
                "alice",
                "bundle.push",
                id,
                details([("name", serde_json::json!(name))]),
            )
        };
        let activated = |at, bundle: &str, model: Option<&str>| {
            let mut d = details([("bundle", serde_json::json!(bundle))]);
            if let Some(model) = model {
                d["model"] = serde_json::json!(model);
            }
            entry(at, "node n1", "node.activated", "n1", d)
        };
        let entries = [
            push(1, "a1", "alpha"),
            push(2, "b1", "beta"),
            push(3, "a2", "alpha"),
            entry(
                4,
                "rollout r1",
                "bundle.assign",
                "a1",
                details([("nodes", serde_json::json!(["n1"]))]),
            ),
            // An entry from before nodes named the model: the pushed bundle's name tells.
            activated(10, "a1", None),
            activated(20, "b1", Some("beta")),
            activated(30, "a2", Some("alpha")),
        ];
        let mut b = ReportBuilder::new(0, 100, 1_000, Verification::default(), 100);
        for e in &entries {
            b.add(e);
        }
        let report = b.finish();
        let mut ran: Vec<(String, u64, Option<u64>)> = report.nodes["n1"]
            .ran
            .iter()
            .map(|i| (i.bundle.clone(), i.from_ms, i.to_ms))
            .collect();
        ran.sort();
        assert_eq!(
            ran,
            [
                ("a1".to_owned(), 10, Some(30)),
                ("a2".to_owned(), 30, None),
                ("b1".to_owned(), 20, None),
            ],
            "beta's activation does not end alpha's interval; alpha's next one does"
        );
        let a1 = report.nodes["n1"]
            .ran
            .iter()
            .find(|i| i.bundle == "a1")
            .unwrap();
        assert_eq!(
            (a1.name.as_str(), a1.cause.as_str()),
            ("alpha", "rollout r1")
        );
    }

    #[test]
    fn a_rollout_that_failed_its_quality_gate_is_flagged_naming_the_metric() {
        let rolling_back = |at, gates: serde_json::Value, message: &str| {
            entry(
                at,
                "controller",
                "rollout.rolling-back",
                "r7",
                details([
                    ("bundle", serde_json::json!("sha256:b")),
                    ("message", serde_json::json!(message)),
                    ("failed_gates", gates),
                ]),
            )
        };
        let entries = [
            rolling_back(
                5,
                serde_json::json!(["quality"]),
                "gate failed at step 1 (1 of 1 touched nodes count against it, 0 allowed): n1: production quality below the gate over 200 feedback rows: recall 0.6000 (gate ≥ 0.7)",
            ),
            // An operator's rollback is no gate failure.
            rolling_back(6, serde_json::json!([]), "rollback asked by alice"),
            rolling_back(
                7,
                serde_json::json!(["health"]),
                "gate failed at step 2: n2: unhealthy",
            ),
            rolling_back(
                8,
                serde_json::json!(["canary-comparison"]),
                "gate failed at step 1: the canary against the nodes still on the previous version: its accuracy 0.6000 against the previous version's 0.8500",
            ),
        ];
        let mut b = ReportBuilder::new(0, 100, 1_000, Verification::default(), 100);
        for e in &entries {
            b.add(e);
        }
        let flags = b.finish().flags;
        let kinds: Vec<&str> = flags.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "quality-gate-failed",
                "rollout-gate-failed",
                "canary-comparison-failed"
            ]
        );
        assert!(flags[2].message.contains("accuracy 0.6000"));
        assert!(
            flags[0].message.contains("recall 0.6000"),
            "{}",
            flags[0].message
        );
        assert!(
            flags[0].message.contains("quality gate"),
            "{}",
            flags[0].message
        );
    }
}
