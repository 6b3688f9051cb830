//! Payload capture for retraining loops: a sample of a served model's requests and the
//! answers they got, sent to the controller through the telemetry buffer for
//! `gantry capture export`. Off unless `[monitoring.models.NAME]` sets `capture_rate`.
//!
//! - Sampling is systematic: with rate `r`, the model's `n`-th request is captured when
//!   `⌊n·r⌋` passes a whole number, so exactly `r` of its requests are, with no
//!   generator. A request counts once its inputs are checked; one that then fails is
//!   not captured.
//! - Inputs named in `capture_redact` are left out of every pair (and named in it as
//!   redacted). A name that is not an input of the served version stops capture for it,
//!   counted and logged: a misspelt name never lets the data through.
//! - A pair waits in memory (at most [`PENDING_BYTES`] for all models) until the
//!   recorder's next append puts it in the buffer as an event record; a crash loses the
//!   pairs waiting (at most one sample interval's). A pair over
//!   [`MAX_PAIR_BYTES`] is not captured.
//! - `capture_max_bytes` bounds what a model's pairs hold in the buffer before the
//!   controller has them (offline, this is what they may take of the disk): past it,
//!   pairs are not captured, and are counted.
//!
//! Every request not captured for one of these reasons is counted per model.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;

use gantry_shared::bundle::manifest::Tensor;
use gantry_shared::monitoring::capture::{CapturedPair, CapturedTensor, MAX_PAIR_BYTES};
use gantry_shared::protocol::telemetry::RecordClass;
use gantry_shared::telemetry::Event;

use crate::buffer::{Buffer, BufferError, NewRecord};

/// Most bytes of pairs waiting for the recorder, all models together.
pub const PENDING_BYTES: u64 = 32 << 20;

/// How an event record of a capture starts (serde writes the tag first).
const CAPTURE_PREFIX: &[u8] = br#"{"kind":"capture""#;

/// Validated capture settings of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSettings {
    /// Share of requests captured, in (0, 1].
    pub rate: f64,
    /// Most bytes the model's pairs hold in the buffer, unsent.
    pub max_bytes: u64,
    /// Inputs left out of every pair.
    pub redact: Vec<String>,
}

/// Why requests were not captured, and what was, since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CaptureCounters {
    pub captured: u64,
    pub captured_bytes: u64,
    /// Over `capture_max_bytes` held in the buffer.
    pub capped: u64,
    /// The pair was over [`MAX_PAIR_BYTES`].
    pub too_large: u64,
    /// The recorder was behind ([`PENDING_BYTES`] waiting).
    pub queue_full: u64,
    /// A redacted name is not an input of the served version.
    pub misconfigured: u64,
    /// Bytes of the model's pairs in the buffer, not yet acknowledged.
    pub held_bytes: u64,
}

/// A model's capture settings and counters, as `status` shows them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CaptureStatus {
    pub rate: f64,
    pub max_bytes: u64,
    pub redacted: Vec<String>,
    #[serde(flatten)]
    pub counters: CaptureCounters,
}

#[derive(Debug)]
struct Waiting {
    model: String,
    at_ms: u64,
    body: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    /// Answered requests per model, for sampling.
    requests: BTreeMap<String, u64>,
    waiting: VecDeque<Waiting>,
    waiting_bytes: u64,
    /// (sequence, model, bytes) of pairs in the buffer, oldest first.
    ledger: VecDeque<(u64, String, u64)>,
    counters: BTreeMap<String, CaptureCounters>,
}

impl State {
    /// Counts a pair of `model` the buffer holds under `seq` until it is pruned.
    fn hold(&mut self, seq: u64, model: String, bytes: u64) {
        self.counters.entry(model.clone()).or_default().held_bytes += bytes;
        self.ledger.push_back((seq, model, bytes));
    }
}

/// Pairs taken for one buffer append.
#[derive(Debug)]
pub struct Taken(Vec<Waiting>);

impl Taken {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The event records to append, in order.
    pub fn records(&self) -> impl Iterator<Item = NewRecord> + '_ {
        self.0.iter().map(|w| NewRecord {
            class: RecordClass::Event,
            at_ms: w.at_ms,
            body: w.body.clone(),
        })
    }
}

#[derive(Debug)]
pub struct Captures {
    settings: BTreeMap<String, CaptureSettings>,
    state: Mutex<State>,
}

impl Captures {
    /// Capture for the models in `settings`; `None` when there are none.
    pub fn new(settings: BTreeMap<String, CaptureSettings>) -> Option<Self> {
        (!settings.is_empty()).then(|| Self {
            settings,
            state: Mutex::new(State::default()),
        })
    }

    /// Counts an answered request of `model`; whether it is one to capture.
    pub fn sample(&self, model: &str) -> bool {
        let Some(settings) = self.settings.get(model) else {
            return false;
        };
        let mut state = self.state.lock().expect("capture state");
        let n = state.requests.entry(model.to_owned()).or_default();
        *n += 1;
        let before = ((*n - 1) as f64 * settings.rate).floor();
        (*n as f64 * settings.rate).floor() > before
    }

    /// Captures a sampled request of `model` (served by `version`, bundle `bundle`) and
    /// its answer, unless a limit says otherwise (counted). Never waits for I/O.
    #[allow(clippy::too_many_arguments)]
    pub fn capture(
        &self,
        model: &str,
        version: &str,
        bundle: &str,
        id: Option<&str>,
        input_names: &[&str],
        inputs: &[(String, Tensor)],
        outputs: &[(String, Tensor)],
        at_ms: u64,
    ) {
        let Some(settings) = self.settings.get(model) else {
            return;
        };
        if let Some(missing) = settings
            .redact
            .iter()
            .find(|name| !input_names.contains(&name.as_str()))
        {
            let mut state = self.state.lock().expect("capture state");
            let c = state.counters.entry(model.to_owned()).or_default();
            if c.misconfigured == 0 {
                tracing::error!(model, version, input = %missing, "capture_redact names an input this model version does not have; nothing of it is captured until the setting is corrected");
            }
            c.misconfigured += 1;
            return;
        }
        let pair = CapturedPair {
            model: model.to_owned(),
            version: version.to_owned(),
            bundle: bundle.to_owned(),
            at_ms,
            id: id.map(str::to_owned),
            inputs: inputs
                .iter()
                .filter(|(name, _)| !settings.redact.contains(name))
                .map(|(name, t)| CapturedTensor::new(name, t))
                .collect(),
            outputs: outputs
                .iter()
                .map(|(name, t)| CapturedTensor::new(name, t))
                .collect(),
            redacted: settings.redact.clone(),
        };
        let body = serde_json::to_vec(&Event::Capture(Box::new(pair))).expect("pairs serialize");
        let size = body.len() as u64;
        let mut state = self.state.lock().expect("capture state");
        let waiting_for_model: u64 = state
            .waiting
            .iter()
            .filter(|w| w.model == model)
            .map(|w| w.body.len() as u64)
            .sum();
        let full = state.waiting_bytes + size > PENDING_BYTES;
        let c = state.counters.entry(model.to_owned()).or_default();
        if body.len() > MAX_PAIR_BYTES {
            if c.too_large == 0 {
                tracing::warn!(
                    model,
                    bytes = body.len(),
                    max = MAX_PAIR_BYTES,
                    "a sampled request is too large to capture (counted)"
                );
            }
            c.too_large += 1;
        } else if c.held_bytes + waiting_for_model + size > settings.max_bytes {
            if c.capped == 0 {
                tracing::warn!(
                    model,
                    max_bytes = settings.max_bytes,
                    "captured pairs waiting for the controller reached capture_max_bytes; sampled requests are counted, not captured, until it has them"
                );
            }
            c.capped += 1;
        } else if full {
            if c.queue_full == 0 {
                tracing::warn!(
                    model,
                    "the recorder is behind; sampled requests are counted, not captured, until it catches up"
                );
            }
            c.queue_full += 1;
        } else {
            c.captured += 1;
            c.captured_bytes += size;
            state.waiting_bytes += size;
            state.waiting.push_back(Waiting {
                model: model.to_owned(),
                at_ms,
                body,
            });
        }
    }

    /// Takes every waiting pair for one buffer append.
    pub fn take(&self) -> Taken {
        let mut state = self.state.lock().expect("capture state");
        state.waiting_bytes = 0;
        Taken(state.waiting.drain(..).collect())
    }

    /// The append holding `taken` failed: its pairs wait again, ahead of newer ones.
    pub fn restore(&self, taken: Taken) {
        let mut state = self.state.lock().expect("capture state");
        for w in taken.0.into_iter().rev() {
            state.waiting_bytes += w.body.len() as u64;
            state.waiting.push_front(w);
        }
    }

    /// `taken` is in the buffer under `seqs` (its last records).
    pub fn appended(&self, taken: Taken, seqs: &Range<u64>) {
        let first = seqs.end - taken.0.len() as u64;
        let mut state = self.state.lock().expect("capture state");
        for (seq, w) in (first..).zip(taken.0) {
            let size = w.body.len() as u64;
            state.hold(seq, w.model, size);
        }
    }

    /// Forgets pairs the buffer no longer holds: every record before `first_held` is
    /// gone (acknowledged, or dropped by its limits); `None` when it holds none.
    pub fn prune(&self, first_held: Option<u64>) {
        let mut state = self.state.lock().expect("capture state");
        let State {
            ledger, counters, ..
        } = &mut *state;
        while let Some((seq, _, _)) = ledger.front() {
            if first_held.is_some_and(|first| *seq >= first) {
                break;
            }
            let (_, model, size) = ledger.pop_front().expect("checked");
            let c = counters.entry(model).or_default();
            c.held_bytes = c.held_bytes.saturating_sub(size);
        }
    }

    /// Counts the pairs already in `buffer` (from before a restart) against their
    /// models' `capture_max_bytes` (blocking).
    pub fn rebuild(&self, buffer: &Buffer) -> Result<(), BufferError> {
        let mut after = 0;
        loop {
            let records = buffer.read_after(after, 4_096, 16 << 20)?;
            let Some(last) = records.last() else {
                return Ok(());
            };
            after = last.seq;
            let mut state = self.state.lock().expect("capture state");
            for r in records {
                if r.class != RecordClass::Event || !r.body.starts_with(CAPTURE_PREFIX) {
                    continue;
                }
                let Ok(Event::Capture(pair)) = serde_json::from_slice::<Event>(&r.body) else {
                    continue;
                };
                state.hold(r.seq, pair.model, r.body.len() as u64);
            }
        }
    }

    /// Counters of every model captured for.
    pub fn counters(&self) -> BTreeMap<String, CaptureCounters> {
        let state = self.state.lock().expect("capture state");
        self.settings
            .keys()
            .map(|model| {
                (
                    model.clone(),
                    state.counters.get(model).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The settings of `model`, when captured.
    pub fn settings(&self, model: &str) -> Option<&CaptureSettings> {
        self.settings.get(model)
    }

    /// What `status` and `/metrics` show of `model`'s capture.
    pub fn status(&self, model: &str) -> Option<CaptureStatus> {
        let settings = self.settings.get(model)?;
        let state = self.state.lock().expect("capture state");
        Some(CaptureStatus {
            rate: settings.rate,
            max_bytes: settings.max_bytes,
            redacted: settings.redact.clone(),
            counters: state.counters.get(model).cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use gantry_shared::tensor::TensorData;

    use super::*;

    fn captures(rate: f64, max_bytes: u64, redact: &[&str]) -> Captures {
        Captures::new(BTreeMap::from([(
            "m".to_owned(),
            CaptureSettings {
                rate,
                max_bytes,
                redact: redact.iter().map(|s| (*s).to_owned()).collect(),
            },
        )]))
        .expect("one model")
    }

    fn tensor(values: Vec<f32>) -> Tensor {
        Tensor {
            shape: vec![1, values.len() as u64],
            data: TensorData::Float32(values),
        }
    }

    fn capture_one(c: &Captures, id: &str) {
        c.capture(
            "m",
            "1.0.0",
            "sha256:ab",
            Some(id),
            &["x", "secret"],
            &[
                ("x".to_owned(), tensor(vec![1.0, 2.0])),
                ("secret".to_owned(), tensor(vec![9.0])),
            ],
            &[("y".to_owned(), tensor(vec![0.5]))],
            7,
        );
    }

    #[test]
    fn systematic_sampling_captures_exactly_the_rate() {
        let c = captures(0.25, u64::MAX, &[]);
        let sampled: Vec<u64> = (1..=20).filter(|_| c.sample("m")).collect();
        assert_eq!(sampled.len(), 5);
        let all = captures(1.0, u64::MAX, &[]);
        assert!((0..10).all(|_| all.sample("m")));
        assert!(!all.sample("another model"));
        let third = captures(1.0 / 3.0, u64::MAX, &[]);
        assert_eq!((0..300).filter(|_| third.sample("m")).count(), 100);
    }

    #[test]
    fn redacted_inputs_are_left_out_and_named() {
        let c = captures(1.0, u64::MAX, &["secret"]);
        capture_one(&c, "r1");
        let taken = c.take();
        let record = taken.records().next().expect("one pair");
        let Event::Capture(pair) = serde_json::from_slice(&record.body).expect("an event") else {
            panic!("not a capture");
        };
        assert_eq!(pair.inputs.len(), 1);
        assert_eq!(pair.inputs[0].name, "x");
        assert_eq!(pair.redacted, vec!["secret".to_owned()]);
        assert_eq!(pair.id.as_deref(), Some("r1"));
        assert_eq!(
            pair.inputs[0].tensor().expect("decodes"),
            tensor(vec![1.0, 2.0])
        );
        assert!(record.body.starts_with(CAPTURE_PREFIX));
    }

    #[test]
    fn a_misspelt_redacted_name_captures_nothing_and_counts() {
        let c = captures(1.0, u64::MAX, &["secrets"]);
        capture_one(&c, "r1");
        assert!(c.take().is_empty());
        assert_eq!(c.counters()["m"].misconfigured, 1);
    }

    #[test]
    fn the_cap_counts_what_waits_and_what_the_buffer_holds_until_it_is_gone() {
        let c = captures(1.0, 1_000, &[]);
        for i in 0..10 {
            capture_one(&c, &format!("r{i}"));
        }
        let counters = c.counters()["m"].clone();
        assert!(
            counters.captured >= 1 && counters.capped >= 1,
            "{counters:?}"
        );
        assert_eq!(counters.captured + counters.capped, 10);
        assert!(counters.captured_bytes <= 1_000);
        let taken = c.take();
        let n = taken.0.len() as u64;
        c.appended(taken, &(10..10 + n));
        assert_eq!(c.counters()["m"].held_bytes, counters.captured_bytes);
        capture_one(&c, "again");
        assert_eq!(c.counters()["m"].capped, counters.capped + 1, "still held");
        c.prune(Some(10 + n));
        assert_eq!(c.counters()["m"].held_bytes, 0);
        capture_one(&c, "after the ack");
        assert_eq!(c.counters()["m"].captured, counters.captured + 1);
    }

    #[test]
    fn a_failed_append_keeps_the_pairs_in_order() {
        let c = captures(1.0, u64::MAX, &[]);
        capture_one(&c, "a");
        let taken = c.take();
        capture_one(&c, "b");
        c.restore(taken);
        let ids: Vec<String> = c
            .take()
            .records()
            .map(
                |r| match serde_json::from_slice(&r.body).expect("an event") {
                    Event::Capture(pair) => pair.id.expect("an id"),
                    _ => panic!("not a capture"),
                },
            )
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
