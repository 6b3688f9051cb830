//! Loads the store's active bundle into the slot whenever it changes, and runs the
//! served model's golden vectors again on a schedule.

use std::sync::Arc;
use std::time::Duration;

use gantry_shared::bundle::manifest::Manifest;
use tokio_util::sync::CancellationToken;

use super::{Loaded, Pool, Slot, run_golden};
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
}

/// What the watcher needs besides the store and the slot.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// How often the served model's golden vectors run again.
    pub golden_every: Duration,
    /// The node's overrides of the bundle's sessions and threads.
    pub execution: ExecutionOverrides,
}

/// Loads bundle `digest` from `store`: every session, and its golden vectors.
fn load(
    store: &BundleStore,
    digest: &str,
    hardware: Hardware,
    overrides: ExecutionOverrides,
) -> Result<Loaded, LoadError> {
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
    Ok(Loaded {
        name: manifest.name,
        version: manifest.version,
        digest: digest.to_owned(),
        golden: Golden::read_all(&manifest.golden, &files)?,
        inputs: manifest.model.inputs,
        outputs: manifest.model.outputs,
        placement,
        execution,
        pool: Pool::new(sessions),
    })
}

/// Loads the store's active bundle into `slot` whenever it changes, until `shutdown`.
pub async fn watch_store(
    store: BundleStore,
    slot: Arc<Slot>,
    snapshots: crate::telemetry::SnapshotReceiver,
    settings: WatchSettings,
    shutdown: CancellationToken,
) {
    // Place the first model knowing the GPUs: the first sample comes within moments of
    // starting (without NVML it says so, and the model goes to the CPU).
    let mut first = snapshots.clone();
    let _ = tokio::time::timeout(Duration::from_secs(5), first.wait_for(Option::is_some)).await;
    let mut loaded_digest: Option<String> = None;
    let mut next_golden = tokio::time::Instant::now();
    loop {
        let reading = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.current()).await
        };
        let active = match reading {
            Ok(Ok(current)) => current.active,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the active bundle");
                loaded_digest.clone()
            }
            Err(e) => {
                tracing::warn!(error = %e, "the task reading the active bundle failed");
                loaded_digest.clone()
            }
        };
        if active != loaded_digest {
            match active.clone() {
                None => slot.set(None),
                Some(digest) => {
                    let store = store.clone();
                    let d = digest.clone();
                    let hardware = Hardware::from_snapshots(&snapshots);
                    let overrides = settings.execution;
                    let result =
                        tokio::task::spawn_blocking(move || load(&store, &d, hardware, overrides))
                            .await;
                    match result {
                        Ok(Ok(loaded)) => {
                            log_loaded(&loaded);
                            slot.set(Some(Arc::new(loaded)));
                            next_golden = tokio::time::Instant::now();
                        }
                        Ok(Err(e)) => {
                            tracing::error!(bundle = %digest, error = gantry_shared::bundle::outcome::error_chain(&e), "cannot load the active bundle's model; the previous model keeps serving");
                        }
                        Err(e) => tracing::error!(error = %e, "model loading task failed"),
                    }
                }
            }
            loaded_digest = active;
        }
        if let Some(loaded) = slot
            .get()
            .filter(|_| tokio::time::Instant::now() >= next_golden)
        {
            next_golden = tokio::time::Instant::now() + settings.golden_every;
            let checked = Arc::clone(&loaded);
            match tokio::task::spawn_blocking(move || run_golden(&checked)).await {
                Ok(Ok(())) => slot.set_golden(Ok(())),
                Ok(Err(e)) => {
                    tracing::error!(model = %loaded.name, version = %loaded.version, error = %e, "the served model fails its golden vectors");
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
