//! Turns published telemetry snapshots into buffer records: one metrics record per
//! sample, plus an event record for every change worth keeping longest — new XIDs, a GPU
//! changing state, NVML appearing or disappearing.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::sync::Arc;

use gantry_shared::protocol::telemetry::RecordClass;
use gantry_shared::telemetry::{Event, GpuState, Sample};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, NewRecord};
use crate::telemetry::SnapshotReceiver;

/// The records one new sample produces, given the previous one.
pub fn records_for(previous: Option<&Sample>, sample: &Sample) -> Vec<NewRecord> {
    let at_ms = sample.taken_at_ms;
    let mut events = Vec::new();
    for xid in &sample.xids {
        let before = previous.and_then(|p| p.xids.iter().find(|x| x.pci_bus_id == xid.pci_bus_id));
        for (&code, &count) in &xid.by_code {
            let seen = before
                .and_then(|b| b.by_code.get(&code))
                .copied()
                .unwrap_or(0);
            if count > seen {
                events.push(Event::Xid {
                    pci_bus_id: xid.pci_bus_id.clone(),
                    gpu: xid.gpu,
                    code,
                    count: count - seen,
                });
            }
        }
    }
    for gpu in &sample.gpus {
        let before = previous.and_then(|p| {
            p.gpus
                .iter()
                .find(|g| g.identity.index == gpu.identity.index)
        });
        let changed = match before {
            Some(b) => b.state != gpu.state,
            None => gpu.state != GpuState::Ok,
        };
        if changed {
            events.push(Event::GpuState {
                gpu: gpu.identity.index,
                uuid: gpu.identity.uuid.clone(),
                state: gpu.state.clone(),
            });
        }
    }
    if let Some(p) = previous
        && p.nvml.is_available() != sample.nvml.is_available()
    {
        events.push(Event::Nvml {
            available: sample.nvml.is_available(),
        });
    }
    let mut records: Vec<NewRecord> = events
        .iter()
        .map(|e| NewRecord {
            class: RecordClass::Event,
            at_ms,
            body: serde_json::to_vec(e).expect("events serialize"),
        })
        .collect();
    records.push(NewRecord {
        class: RecordClass::Metrics,
        at_ms,
        body: serde_json::to_vec(sample).expect("samples serialize"),
    });
    records
}

/// What the health checks read and where their verdict goes, after each sample.
#[derive(Debug)]
pub struct Judge {
    pub health: crate::health::SharedHealth,
    pub models: Arc<crate::serving::Models>,
    pub monitor: crate::health::Monitor,
}

/// What the node's own journal watches: the store's active bundle (whatever switched
/// it — delivery, a local import, a rollback) and delivery's refusals. Their changes go
/// into the buffer as event records, so they reach the controller's audit log through
/// the uplink or a telemetry export.
#[derive(Debug, Clone)]
pub struct Journal {
    pub store: crate::bundle::store::BundleStore,
    pub bundles: crate::delivery::SharedBundles,
}

/// Closed drift windows kept while the buffer cannot be written (a day of 5-minute
/// windows for one model).
const MAX_PENDING_WINDOWS: usize = 288;

fn log_window(window: &gantry_shared::monitoring::ModelWindow) {
    let drifted = window.drifted();
    if drifted.is_empty() {
        tracing::info!(model = %window.model, version = %window.version, rows = window.profile.rows, features_scored = window.drift.len(), "drift window closed: within the threshold");
    } else {
        let features: Vec<String> = drifted.iter().map(|f| f.label()).collect();
        tracing::warn!(model = %window.model, version = %window.version, rows = window.profile.rows, metric = window.metric.as_str(), threshold = window.threshold, features = %features.join(", "), "drift window closed: features drifted from the reference");
    }
}

fn log_quality(window: &gantry_shared::monitoring::quality::QualityWindow) {
    for v in &window.versions {
        let m = v.stats.metrics();
        let figures: Vec<String> = m
            .present()
            .iter()
            .map(|(metric, value)| format!("{} {value:.4}", metric.as_str()))
            .collect();
        tracing::info!(model = %window.model, version = %v.version, rows = m.rows, figures = %figures.join(", "), "feedback window closed");
    }
    let f = &window.feedback;
    if f.late + f.duplicate + f.unknown + f.invalid > 0 {
        tracing::warn!(model = %window.model, late = f.late, duplicate = f.duplicate, unknown = f.unknown, invalid = f.invalid, "feedback that joined no prediction");
    }
}

fn event_record(at_ms: u64, event: &Event) -> NewRecord {
    NewRecord {
        class: RecordClass::Event,
        at_ms,
        body: serde_json::to_vec(event).expect("events serialize"),
    }
}

/// Appends every new snapshot to the buffer until `shutdown`; wakes the uplink after
/// each append.
pub async fn run(
    buffer: Arc<Buffer>,
    mut snapshots: SnapshotReceiver,
    appended: Arc<Notify>,
    judge: Judge,
    journal: Journal,
    shutdown: CancellationToken,
) {
    let Judge {
        health,
        models,
        mut monitor,
    } = judge;
    let mut previous: Option<Sample> = None;
    // Why the buffer cannot be written, while it cannot.
    let mut failing: Option<String> = None;
    // Model → the active bundle last journaled.
    let mut journaled_active = std::collections::BTreeMap::new();
    let mut journaled_refusal: Option<String> = None;
    // Closed drift windows not yet in the buffer (kept until an append succeeds).
    let mut windows: Vec<NewRecord> = Vec::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let mut records = records_for(previous.as_ref(), &snapshot.sample);
        let now = snapshot.sample.taken_at_ms;
        let refusal = journal.bundles.lock().expect("bundles").failed.clone();
        if let Some(failed) = refusal.filter(|f| journaled_refusal.as_ref() != Some(&f.id)) {
            records.push(event_record(
                now,
                &Event::BundleRefused {
                    bundle: failed.id.clone(),
                    reason: failed.reason,
                },
            ));
            journaled_refusal = Some(failed.id);
        }
        for slot in models.all() {
            let Some(loaded) = slot.get() else { continue };
            let Some(window) = loaded.monitor.as_ref().and_then(|m| m.close_if_due(now)) else {
                continue;
            };
            log_window(&window);
            if windows.len() >= MAX_PENDING_WINDOWS {
                tracing::error!(model = %window.model, "the buffer has not been writable for {MAX_PENDING_WINDOWS} drift windows; the oldest is dropped");
                windows.remove(0);
            }
            windows.push(event_record(
                now,
                &Event::ModelWindow(Box::new((*window).clone())),
            ));
        }
        let pending_windows = windows.len();
        records.extend(windows.iter().cloned());
        let buffer = Arc::clone(&buffer);
        let store = journal.store.clone();
        let before = journaled_active.clone();
        let feedback = models.feedback().cloned();
        let capture = models.capture().cloned();
        let appended_with = tokio::task::spawn_blocking(move || {
            // Feedback windows come from the prediction store's log, which keeps them
            // until they are in the buffer.
            let closed = feedback.as_ref().and_then(|f| match f.close(now) {
                Ok(closed) => Some((f, closed)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the feedback log; its windows close later");
                    None
                }
            });
            if let Some((_, closed)) = &closed {
                for window in &closed.windows {
                    log_quality(window);
                    records.push(event_record(
                        now,
                        &Event::ModelQuality(Box::new(window.clone())),
                    ));
                }
            }
            // current.json is a file: read here, off the async workers.
            let active = crate::delivery::active_models(&store);
            for (model, bundle) in &active {
                if before.get(model) != Some(bundle) {
                    let event = Event::BundleActivated {
                        bundle: bundle.clone(),
                        model: model.clone(),
                    };
                    records.push(event_record(now, &event));
                }
            }
            // Captured pairs go last, so their sequence numbers are the range's last.
            let taken = capture.as_ref().map(|c| c.take());
            if let Some(taken) = &taken {
                records.extend(taken.records());
            }
            let result = buffer.append(&records, now);
            if let (Some(c), Some(taken)) = (&capture, taken) {
                match &result {
                    Ok(seqs) => c.appended(taken, seqs),
                    Err(_) => c.restore(taken),
                }
                match buffer.first_seq() {
                    Ok(first) => c.prune(first),
                    Err(e) => tracing::debug!(error = %e, "cannot read the buffer's oldest record"),
                }
            }
            if result.is_ok()
                && let Some((f, closed)) = &closed
                && let Err(e) = f.consume(closed)
            {
                // The windows are buffered; closing them again gives the same windows,
                // which the controller stores once.
                tracing::warn!(error = %e, "cannot delete buffered feedback from its log");
            }
            (result, active)
        })
        .await;
        let result = match appended_with {
            Ok((result, active)) => {
                if result.is_ok() {
                    journaled_active = active;
                }
                Ok(result)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(Ok(_)) => {
                windows.drain(..pending_windows);
                if failing.take().is_some() {
                    tracing::info!("telemetry buffer writable again");
                }
                appended.notify_one();
            }
            Ok(Err(e)) => {
                if failing.is_none() {
                    tracing::error!(error = %e, "cannot write the telemetry buffer; samples are dropped (and counted) until it recovers");
                }
                failing = Some(e.to_string());
            }
            Err(e) => tracing::error!(error = %e, "the buffer task failed"),
        }
        let served = models.health();
        let evaluated = monitor.evaluate(
            &snapshot.sample,
            failing.as_deref(),
            &served,
            std::time::Instant::now(),
        );
        *health.lock().expect("health") = evaluated;
        previous = Some(snapshot.sample.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gantry_shared::telemetry::{
        GpuFields, GpuIdentity, GpuReading, HostReading, NvmlStatus, XidCounts,
    };

    use super::*;

    fn sample(lost: bool, xid79: u64) -> Sample {
        Sample {
            taken_at_ms: 1,
            nvml: NvmlStatus::Available {
                driver_version: None,
                library: "x".into(),
            },
            gpus: vec![GpuReading {
                identity: GpuIdentity {
                    index: 0,
                    uuid: "GPU-0".into(),
                    name: "n".into(),
                    pci_bus_id: "00000000:18:00.0".into(),
                },
                state: if lost { GpuState::Lost } else { GpuState::Ok },
                fields: GpuFields::default(),
                mig: Vec::new(),
            }],
            xids: if xid79 == 0 {
                vec![]
            } else {
                vec![XidCounts {
                    pci_bus_id: "00000000:18:00.0".into(),
                    gpu: Some(0),
                    last: 79,
                    by_code: BTreeMap::from([(79, xid79)]),
                }]
            },
            host: HostReading::default(),
        }
    }

    fn classes(records: &[NewRecord]) -> Vec<RecordClass> {
        records.iter().map(|r| r.class).collect()
    }

    #[test]
    fn a_steady_sample_is_one_metrics_record() {
        assert_eq!(
            classes(&records_for(Some(&sample(false, 0)), &sample(false, 0))),
            vec![RecordClass::Metrics]
        );
    }

    #[test]
    fn new_xids_and_state_changes_become_events() {
        let records = records_for(Some(&sample(false, 0)), &sample(true, 2));
        assert_eq!(
            classes(&records),
            vec![RecordClass::Event, RecordClass::Event, RecordClass::Metrics]
        );
        let xid: Event = serde_json::from_slice(&records[0].body).unwrap();
        assert!(matches!(
            xid,
            Event::Xid {
                code: 79,
                count: 2,
                ..
            }
        ));
        // The same counts again are not new events.
        assert_eq!(
            classes(&records_for(Some(&sample(true, 2)), &sample(true, 2))),
            vec![RecordClass::Metrics]
        );
    }
}
