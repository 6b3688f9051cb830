//! Loads each model's active bundle into its slot whenever the store changes, and runs
//! the served models' golden vectors again on a schedule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_shared::bundle::manifest::Manifest;
use tokio_util::sync::CancellationToken;

use super::{Loaded, Models, Pool, run_golden};
use crate::bundle::store::BundleStore;
use crate::inference::{Execution, ExecutionOverrides, Golden, Hardware, Model};

/// How often the store's active bundle is checked.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Why the active bundle's model could not be loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("cannot read the active bundle's manifest")]
    Manifest(#[source] crate::bundle::store::StoreError),
    #[error(transparent)]
    Model(#[from] crate::inference::InferenceError),
    #[error("cannot read its reference profile {path}: {message}")]
    Profile { path: String, message: String },
}

/// What the watcher needs besides the store and the slot.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// How often the served model's golden vectors run again.
    pub golden_every: Duration,
    /// The node's overrides of the bundle's sessions and threads.
    pub execution: ExecutionOverrides,
    /// Drift windows and thresholds.
    pub monitoring: super::monitor::MonitoringSettings,
    /// Where predictions are kept for feedback.
    pub feedback: Option<Arc<super::feedback::Feedback>>,
    /// Payload capture, when the node captures for any model.
    pub capture: Option<Arc<super::capture::Captures>>,
}

/// Loads bundle `digest` from `store`: every session, and its golden vectors.
fn load(
    store: &BundleStore,
    digest: &str,
    hardware: Hardware,
    settings: &WatchSettings,
) -> Result<Loaded, LoadError> {
    let overrides = settings.execution;
    let manifest: Manifest = store.manifest(digest).map_err(LoadError::Manifest)?;
    let files = store.bundle_dir(digest).join("files");
    let path = files.join(&manifest.model.entry);
    let execution = Execution::new(&manifest.requirements, overrides);
    let mut sessions = Vec::with_capacity(execution.instances);
    for _ in 0..execution.instances {
        sessions.push(Model::load(
            &path,
            &manifest.model,
            &manifest.requirements,
            hardware,
            execution.threads,
        )?);
    }
    let placement = sessions[0].placement().clone();
    let monitor = match &manifest.monitoring {
        None => None,
        Some(m) => {
            let path = files.join(&m.reference_profile);
            let profile_err = |message: String| LoadError::Profile {
                path: m.reference_profile.clone(),
                message,
            };
            // The file's digest was checked when the bundle was verified.
            #[allow(clippy::disallowed_methods)] // runs on a blocking thread
            let bytes = std::fs::read(&path).map_err(|e| profile_err(e.to_string()))?;
            let reference = gantry_shared::monitoring::profile::Profile::from_slice(&bytes)
                .map_err(|e| profile_err(e.to_string()))?;
            Some(super::monitor::ModelMonitor::new(
                &manifest.name,
                &manifest.version,
                digest,
                reference,
                m,
                &settings.monitoring,
                (&manifest.model.inputs, &manifest.model.outputs),
                gantry_net::clock::now_ms(),
            ))
        }
    };
    let capture = settings
        .capture
        .clone()
        .filter(|c| c.settings(&manifest.name).is_some());
    Ok(Loaded {
        name: manifest.name,
        version: manifest.version,
        digest: digest.to_owned(),
        golden: Golden::read_all(&manifest.golden, &files)?,
        inputs: manifest.model.inputs,
        outputs: manifest.model.outputs,
        placement,
        execution,
        batching: manifest.requirements.dynamic_batching,
        pool: Pool::new(sessions),
        batcher: std::sync::OnceLock::new(),
        monitor,
        quality: manifest
            .quality
            .clone()
            .zip(settings.feedback.clone())
            .map(|(spec, feedback)| super::Quality { spec, feedback }),
        capture,
    })
}

/// Loads each model's active bundle from the store into `models` whenever it changes,
/// until `shutdown`; runs every served model's golden vectors again on schedule.
pub async fn watch_store(
    store: BundleStore,
    models: Arc<Models>,
    snapshots: crate::telemetry::SnapshotReceiver,
    settings: WatchSettings,
    shutdown: CancellationToken,
) {
    // Place the first models knowing the GPUs: the first sample comes within moments of
    // starting (without NVML it says so, and the models go to the CPU).
    let mut first = snapshots.clone();
    let _ = tokio::time::timeout(Duration::from_secs(5), first.wait_for(Option::is_some)).await;
    // Per model, the bundle loaded (or tried: a bundle that failed is not retried until
    // the store names another).
    let mut loaded: BTreeMap<String, String> = BTreeMap::new();
    let mut next_golden: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        let reading = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.current()).await
        };
        let wanted: BTreeMap<String, String> = match reading {
            Ok(Ok(current)) => current
                .active()
                .map(|(name, digest)| (name.to_owned(), digest.to_owned()))
                .collect(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the active bundles");
                loaded.clone()
            }
            Err(e) => {
                tracing::warn!(error = %e, "the task reading the active bundles failed");
                loaded.clone()
            }
        };
        for (name, digest) in &wanted {
            if loaded.get(name) == Some(digest) {
                continue;
            }
            let (store, d) = (store.clone(), digest.clone());
            let hardware = Hardware::from_snapshots(&snapshots);
            let load_settings = settings.clone();
            let result =
                tokio::task::spawn_blocking(move || load(&store, &d, hardware, &load_settings))
                    .await;
            match result {
                Ok(Ok(model)) => {
                    log_loaded(&model);
                    models.put(Arc::new(model));
                    next_golden.insert(name.clone(), tokio::time::Instant::now());
                }
                Ok(Err(e)) => {
                    let reason = gantry_shared::bundle::outcome::error_chain(&e);
                    tracing::error!(model = %name, bundle = %digest, error = reason, "cannot load the model's active bundle; its previous bundle keeps serving, if it was loaded");
                    models.failed(name, reason);
                }
                Err(e) => tracing::error!(model = %name, error = %e, "model loading task failed"),
            }
            loaded.insert(name.clone(), digest.clone());
        }
        let gone: Vec<String> = loaded
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(model = %name, "model no longer active; it stops serving");
            models.remove(&name);
            loaded.remove(&name);
            next_golden.remove(&name);
        }
        for slot in models.all() {
            let Some(model) = slot.get() else { continue };
            let now = tokio::time::Instant::now();
            if next_golden.get(&model.name).is_some_and(|&at| now < at) {
                continue;
            }
            next_golden.insert(model.name.clone(), now + settings.golden_every);
            let checked = Arc::clone(&model);
            match tokio::task::spawn_blocking(move || run_golden(&checked)).await {
                Ok(Ok(())) => slot.set_golden(Ok(())),
                Ok(Err(e)) => {
                    tracing::error!(model = %model.name, version = %model.version, error = %e, "the served model fails its golden vectors");
                    slot.set_golden(Err(e));
                }
                Err(e) => tracing::error!(error = %e, "golden-vector task failed"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

fn log_loaded(loaded: &Loaded) {
    let provider = crate::inference::provider_name(loaded.placement.provider);
    let passed_over = loaded.placement.passed_over.join("; ");
    let instances = loaded.execution.instances;
    if loaded.placement.passed_over.is_empty() || !loaded.placement.listed {
        tracing::info!(bundle = %loaded.digest, model = %loaded.name, version = %loaded.version, provider, instances, passed_over, "model loaded and serving");
    } else {
        tracing::warn!(bundle = %loaded.digest, model = %loaded.name, version = %loaded.version, provider, instances, passed_over, "model loaded and serving, not on the provider the bundle prefers");
    }
}
