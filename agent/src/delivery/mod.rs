//! Fetching the bundles the controller assigns to this node, one per model.
//!
//! Heartbeat replies name the desired bundle of each model assigned to the node. Each
//! that is not its model's active one is fetched in turn (one transfer at a time); the
//! bundle is fetched over the same QUIC connection, on one stream of raw bytes, into
//! `<state_dir>/downloads/<file sha256>.partial` — a broken transfer resumes from the
//! bytes already there — and the bundle store then verifies it against the node's own
//! trust policy (signatures over the manifest, every file's size and SHA-256: the one
//! pass over the bytes that decides; a corrupt or altered transfer fails there), runs its
//! golden vectors and only then activates it. A bundle that fails is never activated, is not
//! fetched again until the controller assigns something else (or the agent restarts),
//! and the reason goes to the log and the next heartbeat. A new assignment during a
//! transfer stops it (the partial file stays until another bundle's transfer starts).

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

mod download;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gantry_shared::protocol::delivery::{
    self, Desired, FailedBundle, FetchRequest, ModelBundles, NodeBundles, Transfer,
};
use gantry_shared::protocol::{Request, Response};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::download::{Download, Piece};
use crate::bundle::store::BundleStore;
use crate::inference::Hardware;

/// How long a transfer may go without a byte before it counts as broken.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes handed to the writer thread at a time.
const PIECE: usize = 1024 * 1024;
/// Pieces received ahead of the disk.
const WRITE_AHEAD: usize = 4;

/// Delivery state, reported in heartbeats and `status`.
pub type SharedBundles = Arc<Mutex<NodeBundles>>;

/// Where bundles come from and how they are checked.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub state_dir: PathBuf,
    pub trust_policy: PathBuf,
    pub onnxruntime: PathBuf,
    /// The sampler's readings: GPU memory decides whether a bundle can run on CUDA.
    pub snapshots: crate::telemetry::SnapshotReceiver,
}

/// The delivery state as heartbeats and `status` report it: the active bundle is read from
/// the store, which every activation and rollback writes first, so a report never lags the
/// model that serves. Reads a small file: call it off the async workers.
pub fn report(state: &SharedBundles, store: &BundleStore) -> NodeBundles {
    let current = store.current().unwrap_or_default();
    let id = |hex: &Option<String>| hex.as_ref().map(|hex| format!("sha256:{hex}"));
    let models: Vec<ModelBundles> = current
        .models
        .iter()
        .map(|(name, m)| ModelBundles {
            name: name.clone(),
            active: id(&m.active),
            previous: id(&m.previous),
        })
        .collect();
    let mut s = state.lock().expect("bundles");
    s.active = id(&current.last);
    s.models = models;
    if s.downloading.as_deref().is_some_and(|d| s.is_active(d)) {
        // Activated in the moment before the install task reports it.
        s.downloading = None;
    }
    s.clone()
}

/// Each model's active bundle (`sha256:<hex>`), by model name, as the store records it.
pub fn active_models(store: &BundleStore) -> std::collections::BTreeMap<String, String> {
    store
        .current()
        .map(|current| {
            current
                .models
                .into_iter()
                .filter_map(|(name, m)| Some((name, format!("sha256:{}", m.active?))))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether bundle `id` (`sha256:<hex>`) is the active bundle of its model in the store.
fn is_active(store: &BundleStore, id: &str) -> bool {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    store.current().is_ok_and(|c| c.is_active(hex))
}

/// Fetches and activates what `desired` names (one bundle per model), over `conn`, until
/// `stop`. Ends when the connection fails; the next connection's task resumes the
/// transfer.
pub async fn run(
    config: DeliveryConfig,
    conn: quinn::Connection,
    mut desired: watch::Receiver<Vec<Desired>>,
    state: SharedBundles,
    stop: CancellationToken,
) {
    let store = BundleStore::new(&config.state_dir);
    'assignments: loop {
        let wants = desired.borrow_and_update().clone();
        forget_refusals(&state, &wants);
        for want in &wants {
            let active = {
                let (store, id) = (store.clone(), want.id.clone());
                tokio::task::spawn_blocking(move || is_active(&store, &id))
                    .await
                    .unwrap_or_default()
            };
            let refused = state.lock().expect("bundles").refusal(&want.id).is_some();
            if active || refused {
                continue;
            }
            match fetch(&config, &conn, want, &state, &stop, &mut desired).await {
                Ok(Fetched::Complete(path)) => {
                    install(&config, &store, want, path, &state).await;
                }
                Ok(Fetched::Superseded) => {
                    tracing::info!(bundle = %want.id, model = %want.model, "assignment changed during the transfer; the partial download is kept");
                    state.lock().expect("bundles").downloading = None;
                    continue 'assignments;
                }
                Ok(Fetched::Stopped) => return,
                Err(e) if e.is_transient() => {
                    tracing::warn!(bundle = %want.id, reason = gantry_shared::bundle::outcome::error_chain(&e), "bundle transfer interrupted; it resumes on the next connection");
                    return;
                }
                Err(e) => refuse(
                    &state,
                    want,
                    gantry_shared::bundle::outcome::error_chain(&e),
                ),
            }
        }
        if *desired.borrow() != wants {
            // Assignments changed during a transfer that went on (another model's).
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = desired.changed() => if changed.is_err() { return },
        }
    }
}

/// How a transfer ended without an error.
enum Fetched {
    /// The whole file is there, to be verified.
    Complete(PathBuf),
    /// The controller assigned something else meanwhile.
    Superseded,
    /// The agent is stopping.
    Stopped,
}

/// Why a transfer stopped short. The transient kinds keep what was fetched and resume on
/// the next connection; the others remove the partial file and refuse the bundle, with
/// the reason in the next heartbeat (so it names no local path or OS detail beyond the
/// error's own text).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("the connection to the controller failed")]
    Net(#[from] gantry_net::NetError),
    #[error("the controller cannot serve the transfer now: {0}")]
    Unavailable(String),
    #[error("unexpected answer to a bundle fetch")]
    Unexpected,
    #[error("no bytes for {STALL_TIMEOUT:?}")]
    Stalled,
    #[error("the transfer broke off")]
    Broken(#[source] quinn::ReadError),
    #[error("the stream ended after {received} of {size} bytes")]
    Short { received: u64, size: u64 },
    #[error("the controller named a malformed file digest {0:?}")]
    MalformedDigest(String),
    #[error(
        "the controller offered bytes {offered}.. of a {offered_size}-byte file; asked for {asked}.. of the {size} bytes assigned"
    )]
    WrongRange {
        offered: u64,
        offered_size: u64,
        asked: u64,
        size: u64,
    },
    #[error("the controller refused the transfer: {0}")]
    Refused(String),
    #[error("the controller sent more than the {0} bytes announced; discarded")]
    Oversized(u64),
    #[error("a partial download was larger than the bundle; removed it")]
    OversizedPartial,
    #[error("cannot write the download")]
    Write(#[source] io::Error),
    #[error("the download writer failed")]
    Task(#[from] tokio::task::JoinError),
}

impl FetchError {
    /// Whether the next connection may finish the transfer from the bytes already there.
    fn is_transient(&self) -> bool {
        match self {
            Self::Net(_)
            | Self::Unavailable(_)
            | Self::Unexpected
            | Self::Stalled
            | Self::Broken(_)
            | Self::Short { .. } => true,
            Self::MalformedDigest(_)
            | Self::WrongRange { .. }
            | Self::Refused(_)
            | Self::Oversized(_)
            | Self::OversizedPartial
            | Self::Write(_)
            | Self::Task(_) => false,
        }
    }
}

fn refuse(state: &SharedBundles, want: &Desired, reason: String) {
    tracing::error!(bundle = %want.id, model = %want.model, reason, "assigned bundle NOT activated; the model's active bundle keeps serving");
    let refusal = FailedBundle {
        id: want.id.clone(),
        reason,
        model: want.model.clone(),
    };
    let mut s = state.lock().expect("bundles");
    s.downloading = None;
    forget_model_refusals(&mut s, want);
    s.refused.push(refusal.clone());
    s.failed = Some(refusal);
}

/// Forgets the refusals of `want` and of any other bundle of its model: a model's
/// newest outcome replaces the ones before.
fn forget_model_refusals(s: &mut NodeBundles, want: &Desired) {
    s.refused
        .retain(|f| f.id != want.id && (want.model.is_empty() || f.model != want.model));
}

/// Forgets the refusals of bundles no longer assigned, so a bundle assigned again later
/// is fetched again.
fn forget_refusals(state: &SharedBundles, wants: &[Desired]) {
    state
        .lock()
        .expect("bundles")
        .refused
        .retain(|f| wants.iter().any(|w| w.id == f.id));
}

/// Downloads the rest of `want` into `<state_dir>/downloads/<file sha256>.partial`.
/// The bytes stream from the controller to a writer thread that appends them; nothing in
/// them is trusted until the bundle store has verified the file.
async fn fetch(
    config: &DeliveryConfig,
    conn: &quinn::Connection,
    want: &Desired,
    state: &SharedBundles,
    stop: &CancellationToken,
    desired: &mut watch::Receiver<Vec<Desired>>,
) -> Result<Fetched, FetchError> {
    if !delivery::is_sha256_hex(&want.file_sha256) {
        return Err(FetchError::MalformedDigest(want.file_sha256.clone()));
    }
    let dir = config.state_dir.join("downloads");
    let path = dir.join(format!("{}.partial", want.file_sha256));
    let download = {
        let (path, keep) = (path.clone(), want.file_sha256.clone());
        tokio::task::spawn_blocking(move || {
            download::prepare(&dir, &keep)?;
            Download::open(&path)
        })
        .await?
        .map_err(FetchError::Write)?
    };
    let offset = download.len();
    if offset > want.size {
        discard(&path).await?;
        return Err(FetchError::OversizedPartial);
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
    let started = Instant::now();
    let request = Request::BundleFetch(FetchRequest {
        id: want.id.clone(),
        offset,
    });
    let (answer, mut recv) = gantry_net::open_download(conn, &request, STALL_TIMEOUT).await?;
    match answer {
        Response::BundleStream(h) if h.offset == offset && h.size == want.size => {}
        Response::BundleStream(h) => {
            return Err(FetchError::WrongRange {
                offered: h.offset,
                offered_size: h.size,
                asked: offset,
                size: want.size,
            });
        }
        Response::Error(e) if e.code.is_transient() => {
            return Err(FetchError::Unavailable(e.message));
        }
        Response::Error(e) => return Err(FetchError::Refused(e.message)),
        _ => return Err(FetchError::Unexpected),
    }

    let (pieces, rx) = mpsc::channel(WRITE_AHEAD);
    let (give_back, mut returned) = mpsc::unbounded_channel();
    let writer = {
        let state = Arc::clone(state);
        tokio::task::spawn_blocking(move || write_pieces(download, rx, &give_back, &state))
    };
    let mut received = offset;
    let ended: Result<Option<Fetched>, FetchError> = loop {
        let mut piece = returned.try_recv().unwrap_or_else(|_| Piece::new(PIECE));
        piece.clear();
        // Fill one piece, or stop at the end of the stream, a stall, a stop or a new
        // assignment. Reading is cancel-safe: a read that did not finish took nothing.
        let end = loop {
            let read = tokio::select! {
                () = stop.cancelled() => break Some(Ok(Some(Fetched::Stopped))),
                changed = desired.changed() => {
                    let same = changed.is_ok()
                        && desired.borrow().iter().any(|d| d.id == want.id);
                    if same { continue }
                    break Some(Ok(Some(Fetched::Superseded)));
                }
                read = tokio::time::timeout(STALL_TIMEOUT, recv.read(piece.space())) => read,
            };
            match read {
                Err(_) => break Some(Err(FetchError::Stalled)),
                Ok(Err(e)) => break Some(Err(FetchError::Broken(e))),
                Ok(Ok(None)) => break Some(Ok(None)),
                Ok(Ok(Some(n))) => {
                    piece.advance(n);
                    if received + piece.filled() as u64 > want.size {
                        break Some(Err(FetchError::Oversized(want.size)));
                    }
                    if piece.is_full() {
                        break None;
                    }
                }
            }
        };
        let refused = matches!(&end, Some(Err(e)) if !e.is_transient());
        if piece.filled() > 0 && !refused {
            received += piece.filled() as u64;
            if pieces.send(piece).await.is_err() {
                // The writer failed; its error is reported below.
                break Ok(None);
            }
        }
        if let Some(end) = end {
            break end;
        }
    };
    drop(pieces);
    let written = writer.await?;
    match ended {
        Ok(Some(fetched)) => return Ok(fetched),
        Err(e) if !e.is_transient() => {
            discard(&path).await?;
            return Err(e);
        }
        Err(transient) => return Err(transient),
        Ok(None) => {}
    }
    let (last_byte, synced) = match written {
        Ok(times) => times,
        Err(e) => {
            discard(&path).await?;
            return Err(FetchError::Write(e));
        }
    };
    if received < want.size {
        return Err(FetchError::Short {
            received,
            size: want.size,
        });
    }
    let transfer = Transfer {
        id: want.id.clone(),
        bytes: received - offset,
        seconds: last_byte.duration_since(started).as_secs_f64(),
        sync_seconds: synced.duration_since(last_byte).as_secs_f64(),
    };
    tracing::info!(
        bundle = %want.id,
        bytes = transfer.bytes,
        seconds = transfer.seconds,
        sync_seconds = transfer.sync_seconds,
        mib_per_s = transfer.mib_per_second(),
        "bundle transferred"
    );
    state.lock().expect("bundles").last_transfer = Some(transfer);
    Ok(Fetched::Complete(path))
}

/// Appends the pieces as they come, handing each buffer back, until the sender is done;
/// then syncs the file. Returns when the last byte was written and when it was synced.
fn write_pieces(
    mut download: Download,
    mut pieces: mpsc::Receiver<Piece>,
    give_back: &mpsc::UnboundedSender<Piece>,
    state: &SharedBundles,
) -> io::Result<(Instant, Instant)> {
    let mut last_byte = Instant::now();
    while let Some(piece) = pieces.blocking_recv() {
        download.append(piece.bytes())?;
        last_byte = Instant::now();
        state.lock().expect("bundles").downloaded_bytes = download.len();
        let _ = give_back.send(piece);
    }
    download.sync()?;
    Ok((last_byte, Instant::now()))
}

/// Removes a download that must not be resumed, on a blocking thread.
async fn discard(path: &Path) -> Result<(), FetchError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || download::discard(&path))
        .await?
        .map_err(FetchError::Write)
}

/// Verifies, golden-checks and activates the downloaded file through the bundle store.
async fn install(
    config: &DeliveryConfig,
    store: &BundleStore,
    want: &Desired,
    path: PathBuf,
    state: &SharedBundles,
) {
    let hardware = Hardware::from_snapshots(&config.snapshots);
    let (store, config, file) = (store.clone(), config.clone(), path.clone());
    let result = tokio::task::spawn_blocking(move || {
        store.import(
            &file,
            &config.trust_policy,
            &config.onnxruntime,
            hardware,
            SystemTime::now(),
        )
    })
    .await;
    // Whatever happened, the download has served its purpose: a refused bundle is not
    // fetched again, and an accepted one now lives in the store.
    if let Err(e) = discard(&path).await {
        tracing::warn!(path = %path.display(), error = gantry_shared::bundle::outcome::error_chain(&e), "cannot remove a finished download");
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
    tracing::info!(bundle = %id, model = %want.model, "assigned bundle verified and activated");
    let mut s = state.lock().expect("bundles");
    s.active = Some(id);
    s.downloading = None;
    s.failed = None;
    forget_model_refusals(&mut s, want);
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set files up on their own thread
mod tests {
    use super::*;

    #[test]
    fn network_trouble_resumes_later_and_a_bad_transfer_refuses_the_bundle() {
        let transient = [
            FetchError::Unavailable("restarting".into()),
            FetchError::Unexpected,
            FetchError::Stalled,
            FetchError::Short {
                received: 1,
                size: 2,
            },
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e}");
        }
        let refusing = [
            FetchError::MalformedDigest("../x".into()),
            FetchError::WrongRange {
                offered: 0,
                offered_size: 1,
                asked: 0,
                size: 2,
            },
            FetchError::Refused("not assigned".into()),
            FetchError::Oversized(10),
            FetchError::OversizedPartial,
            FetchError::Write(io::Error::from(io::ErrorKind::StorageFull)),
        ];
        for e in &refusing {
            assert!(!e.is_transient(), "{e}");
        }
        // What a heartbeat carries names the cause, not only the step.
        let reason = gantry_shared::bundle::outcome::error_chain(&FetchError::Write(
            io::Error::from(io::ErrorKind::StorageFull),
        ));
        assert!(
            reason.starts_with("cannot write the download: "),
            "{reason}"
        );
    }

    #[test]
    fn the_report_takes_the_active_bundle_from_the_store_and_ends_its_download() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path());
        let state = SharedBundles::default();
        let id = format!("sha256:{}", "a".repeat(64));
        state.lock().unwrap().downloading = Some(id.clone());
        assert_eq!(report(&state, &store).active, None);
        assert_eq!(
            report(&state, &store).downloading.as_deref(),
            Some(id.as_str())
        );

        // The store activated it (the install task has not said so yet).
        std::fs::create_dir_all(dir.path().join("bundles")).unwrap();
        std::fs::write(
            store.current_path(),
            format!(
                "{{\"models\": {{\"m\": {{\"active\": \"{0}\"}}}}, \"last\": \"{0}\"}}",
                "a".repeat(64)
            ),
        )
        .unwrap();
        let reported = report(&state, &store);
        assert_eq!(reported.active.as_deref(), Some(id.as_str()));
        assert_eq!(reported.models[0].name, "m");
        assert!(reported.is_active(&id));
        assert_eq!(
            reported.downloading, None,
            "no longer downloading once active"
        );
    }
}
