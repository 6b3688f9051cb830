//! Fetching the bundle the controller assigns to this node.
//!
//! Heartbeat replies name the desired bundle. When it differs from the active one, the
//! bundle is fetched over the same QUIC connection in chunks into
//! `<state_dir>/downloads/<file sha256>.partial` — a broken transfer resumes from the
//! bytes already there — its file digest is checked, and the bundle store then verifies it
//! against the node's own trust policy, runs its golden vectors and only then activates it.
//! A bundle that fails is never activated, is not fetched again until the controller
//! assigns something else (or the agent restarts), and the reason goes to the log and the
//! next heartbeat.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gantry_shared::protocol::delivery::{
    self, CHUNK_SIZE, ChunkRequest, Desired, FailedBundle, NodeBundles,
};
use gantry_shared::protocol::{Request, Response};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::bundle::store::BundleStore;

const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunk requests outstanding at once during a transfer.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Delivery state, reported in heartbeats and `status`.
pub type SharedBundles = Arc<Mutex<NodeBundles>>;

/// Where bundles come from and how they are checked.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub state_dir: PathBuf,
    pub trust_policy: PathBuf,
    pub onnxruntime: PathBuf,
}

/// The active bundle id as the store records it.
pub fn active_id(store: &BundleStore) -> Option<String> {
    store
        .current()
        .ok()?
        .active
        .map(|hex| format!("sha256:{hex}"))
}

/// Fetches and activates what `desired` names, over `conn`, until `stop`. Ends when the
/// connection fails; the next connection's task resumes the transfer.
pub async fn run(
    config: DeliveryConfig,
    conn: quinn::Connection,
    mut desired: watch::Receiver<Option<Desired>>,
    state: SharedBundles,
    stop: CancellationToken,
) {
    let store = BundleStore::new(&config.state_dir);
    loop {
        let want = desired.borrow_and_update().clone();
        if let Some(want) = want {
            let active = active_id(&store);
            let failed = state
                .lock()
                .expect("bundles")
                .failed
                .as_ref()
                .is_some_and(|f| f.id == want.id);
            if active.as_deref() != Some(want.id.as_str()) && !failed {
                match fetch(&config, &conn, &want, &state, &stop).await {
                    Ok(Some(path)) => install(&config, &store, &want, path, &state).await,
                    Ok(None) => return,
                    Err(Fetch::Connection(reason)) => {
                        tracing::warn!(bundle = %want.id, reason, "bundle transfer interrupted; it resumes on the next connection");
                        return;
                    }
                    Err(Fetch::Refused(reason)) => refuse(&state, &want, reason),
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = desired.changed() => if changed.is_err() { return },
        }
    }
}

enum Fetch {
    /// The connection broke; keep what was fetched.
    Connection(String),
    /// The transfer cannot succeed as it is; the partial file was removed.
    Refused(String),
}

fn refuse(state: &SharedBundles, want: &Desired, reason: String) {
    tracing::error!(bundle = %want.id, reason, "assigned bundle NOT activated; the active model keeps serving");
    let mut s = state.lock().expect("bundles");
    s.downloading = None;
    s.failed = Some(FailedBundle {
        id: want.id.clone(),
        reason,
    });
}

/// Downloads the rest of `want`; returns the complete, digest-checked file.
async fn fetch(
    config: &DeliveryConfig,
    conn: &quinn::Connection,
    want: &Desired,
    state: &SharedBundles,
    stop: &CancellationToken,
) -> Result<Option<PathBuf>, Fetch> {
    let local = |e: io::Error| Fetch::Refused(format!("cannot write the download: {e}"));
    if !delivery::is_sha256_hex(&want.file_sha256) {
        return Err(Fetch::Refused(format!(
            "the controller named a malformed file digest {:?}",
            want.file_sha256
        )));
    }
    let dir = config.state_dir.join("downloads");
    fs::create_dir_all(&dir).map_err(local)?;
    let path = dir.join(format!("{}.partial", want.file_sha256));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(local)?;
    let mut offset = file.metadata().map_err(local)?.len();
    if offset > want.size {
        fs::remove_file(&path).map_err(local)?;
        return Err(Fetch::Refused(
            "a partial download was larger than the bundle; removed it".to_owned(),
        ));
    }
    {
        let mut s = state.lock().expect("bundles");
        s.downloading = Some(want.id.clone());
        s.downloaded_bytes = offset;
        s.resumed_at = offset;
    }
    if offset > 0 {
        tracing::info!(bundle = %want.id, offset, size = want.size, "resuming bundle transfer");
    } else {
        tracing::info!(bundle = %want.id, size = want.size, "fetching assigned bundle");
    }
    // Several chunks in flight hide the round trip; they are written in order.
    let mut in_flight = VecDeque::new();
    let mut requested = offset;
    while offset < want.size {
        if stop.is_cancelled() {
            return Ok(None);
        }
        while requested < want.size && in_flight.len() < CHUNKS_IN_FLIGHT {
            let request = Request::BundleChunk(ChunkRequest {
                id: want.id.clone(),
                offset: requested,
                len: CHUNK_SIZE as u32,
            });
            let conn = conn.clone();
            let call =
                tokio::spawn(async move { gantry_net::call(&conn, &request, CHUNK_TIMEOUT).await });
            in_flight.push_back(AbortOnDropHandle::new(call));
            requested += CHUNK_SIZE as u64;
        }
        let call = in_flight.pop_front().expect("a chunk is in flight");
        let answer = call
            .await
            .map_err(|e| Fetch::Connection(format!("chunk task failed: {e}")))?;
        let chunk = match answer {
            Ok(Response::BundleChunk(chunk)) if chunk.offset == offset => chunk,
            Ok(Response::Error(e)) if e.code.is_transient() => {
                return Err(Fetch::Connection(e.message));
            }
            Ok(Response::Error(e)) => {
                return Err(Fetch::Refused(format!(
                    "the controller refused the transfer: {}",
                    e.message
                )));
            }
            Ok(_) => {
                return Err(Fetch::Connection(
                    "unexpected answer to a chunk request".to_owned(),
                ));
            }
            Err(e) => return Err(Fetch::Connection(e.to_string())),
        };
        let bytes = delivery::decode(&chunk.data, CHUNK_SIZE).map_err(Fetch::Connection)?;
        let expected = (want.size - offset).min(CHUNK_SIZE as u64) as usize;
        if bytes.len() != expected {
            return Err(Fetch::Refused(format!(
                "the controller's copy does not match the announced size of {} bytes (chunk at {offset} has {} bytes, expected {expected})",
                want.size,
                bytes.len()
            )));
        }
        file.write_all(&bytes).map_err(local)?;
        offset += bytes.len() as u64;
        state.lock().expect("bundles").downloaded_bytes = offset;
    }
    file.sync_all().map_err(local)?;
    drop(file);
    let check = path.clone();
    let digest = tokio::task::spawn_blocking(move || -> io::Result<String> {
        let mut hasher = Sha256::new();
        io::copy(&mut File::open(&check)?, &mut hasher)?;
        Ok(format!("{:x}", hasher.finalize()))
    })
    .await
    .map_err(|e| Fetch::Refused(e.to_string()))?
    .map_err(local)?;
    if digest != want.file_sha256 {
        fs::remove_file(&path).map_err(local)?;
        return Err(Fetch::Refused(format!(
            "the transferred file hashes to {digest}, not {}; discarded",
            want.file_sha256
        )));
    }
    Ok(Some(path))
}

/// Verifies, golden-checks and activates the downloaded file through the bundle store.
async fn install(
    config: &DeliveryConfig,
    store: &BundleStore,
    want: &Desired,
    path: PathBuf,
    state: &SharedBundles,
) {
    let (store, config, file) = (store.clone(), config.clone(), path.clone());
    let result = tokio::task::spawn_blocking(move || {
        store.import(
            &file,
            &config.trust_policy,
            &config.onnxruntime,
            SystemTime::now(),
        )
    })
    .await;
    // Whatever happened, the download has served its purpose: a refused bundle is not
    // fetched again, and an accepted one now lives in the store.
    if let Err(e) = fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a finished download");
    }
    let imported = match result {
        Ok(Ok(imported)) => imported,
        Ok(Err(e)) => {
            return refuse(state, want, gantry_shared::bundle::outcome::error_chain(&e));
        }
        Err(e) => return refuse(state, want, format!("the install task failed: {e}")),
    };
    let Some(digest) = imported.activated else {
        let reason = imported.outcome.error.clone().unwrap_or_else(|| {
            let failed: Vec<String> = imported
                .golden
                .iter()
                .filter(|g| !g.passed)
                .map(|g| {
                    format!(
                        "golden vector {:?} failed: {}",
                        g.name,
                        g.error
                            .clone()
                            .unwrap_or_else(|| format!("max error {:.3e}", g.max_abs_error))
                    )
                })
                .collect();
            failed.join("; ")
        });
        return refuse(state, want, reason);
    };
    let id = format!("sha256:{digest}");
    if id != want.id {
        tracing::warn!(assigned = %want.id, activated = %id, "the activated bundle's id differs from the one assigned");
    }
    tracing::info!(bundle = %id, "assigned bundle verified and activated");
    let mut s = state.lock().expect("bundles");
    s.active = Some(id);
    s.downloading = None;
    s.failed = None;
}
