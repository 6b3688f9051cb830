//! `gantry serve`: the QUIC endpoint for agents and admins, the ingest writer, and the
//! federation `/metrics` endpoint.
//!
//! Each connection is identified once, from its client certificate's SHA-256 looked up
//! in the store: a certificate the store does not know, or a revoked one, gets the
//! connection closed with the reason; no certificate allows enrollment only. Each stream
//! is one request; a stream that fails (bad frame, refused request) fails alone.
//!
//! Telemetry goes through one writer thread that commits the batches of all
//! connections together (group commit) and acknowledges each batch only after its
//! transaction committed.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

mod admin;
mod console;
mod http;
mod ingest;
mod renew;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_shared::protocol::enroll::valid_node_name;
use gantry_shared::protocol::{
    self, ErrorCode, ErrorResponse, Request, Response, enroll, heartbeat, telemetry,
};
use gantry_shared::telemetry::Sample;
use quinn::{Connection, VarInt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, NewEntry};
use crate::ca::{self, Ca, PeerPublicKey};
use crate::home::{Home, HomeError};
use crate::store::{EnrollRefusal, Principal, Store, StoreError};

/// Close codes the controller uses.
pub use gantry_shared::protocol::close::{
    REVOKED as CLOSE_REVOKED, SHUTDOWN as CLOSE_SHUTDOWN, UNAVAILABLE as CLOSE_UNAVAILABLE,
    UNKNOWN_CERTIFICATE as CLOSE_UNKNOWN_CERTIFICATE,
};

/// How often retention is applied.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub home: Home,
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub retention: Duration,
    /// Start on a new, empty store when the initialized directory has none (`--new-store`):
    /// otherwise a missing or empty store is refused, since it holds the audit chain.
    pub new_store: bool,
    /// Certificate lifetimes and the renewal grace.
    pub certs: crate::certs::CertPolicy,
    /// The clock certificates are issued and renewals judged by.
    pub clock: crate::certs::Clock,
    /// Health checks whose unhealthy reasons cordon a node automatically.
    pub auto_cordon: crate::cordon::AutoCordon,
    /// The web console's address (loopback only), and how long its sessions last.
    pub console_listen: Option<SocketAddr>,
    pub console_session: Duration,
    /// Where to remote-write the fleet's telemetry, if anywhere.
    pub remote_write: Option<crate::export::Target>,
    /// Where to export it over OTLP/HTTP, if anywhere.
    pub otlp: Option<crate::export::Target>,
}

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(
        "the controller's {0} panicked (a bug; its log says where); it stopped so systemd restarts it whole"
    )]
    Panicked(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Bundles(#[from] crate::bundles::RepoError),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error(
        "the store {path} {problem}, but {dir} was initialized: the store holds the fleet's state and its audit chain. Restore it from a backup, or start over with an empty one with `gantry serve --new-store`"
    )]
    StoreMissing {
        path: std::path::PathBuf,
        dir: std::path::PathBuf,
        problem: &'static str,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: gantry_net::NetError,
    },
    #[error("cannot listen on {addr} for the console")]
    ConsoleListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for /metrics")]
    MetricsListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the controller knows live about a node. Heartbeats land here, not in the store:
/// they are frequent and only the latest matters; `last_seen` is stored when the node
/// disconnects.
#[derive(Debug, Default)]
struct Live {
    connections: Vec<Connection>,
    latest: Option<Arc<Sample>>,
    heartbeat: Option<crate::store::HeartbeatInfo>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    stored: AtomicU64,
    duplicates: AtomicU64,
    batches: AtomicU64,
    rejected_streams: AtomicU64,
}

/// State shared by every connection.
struct Shared {
    store: Arc<Store>,
    ca: Ca,
    controller_fingerprint: String,
    /// The controller's certificate, for nodes enrolling by file to check against their
    /// token's pin.
    controller_certificate_pem: String,
    /// Signs enrollments by file (`gantry token redeem`), proving they come from here.
    controller_key_pem: String,
    certs: crate::certs::CertPolicy,
    clock: crate::certs::Clock,
    live: Mutex<HashMap<String, Live>>,
    ingest: ingest::Handle,
    counters: Counters,
    /// Remote-write's and OTLP export's figures, for those that are on.
    remote_write: Option<Arc<crate::export::Counters>>,
    otlp: Option<Arc<crate::export::Counters>>,
    bundles: Arc<crate::bundles::BundleRepo>,
    rollouts: crate::rollouts::Engine,
    /// Node → `(active, refused)` as last written to the audit log.
    audited_bundles: Arc<Mutex<HashMap<String, audit::NodeBundleState>>>,
    auto_cordon: crate::cordon::AutoCordon,
    /// Nodes cordoned, as stored: heartbeats check here before cordoning automatically.
    cordoned: Arc<Mutex<std::collections::HashSet<String>>>,
    /// The web console's sign-in codes and sessions, when it is served.
    console: Option<console::Gate>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Runs the controller until `shutdown` is cancelled. `ready` receives the bound QUIC
/// (and `/metrics`) addresses once both listen.
pub async fn serve(
    config: ServeConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<(SocketAddr, Option<SocketAddr>)>>,
) -> Result<(), ServeError> {
    config.home.check_initialized()?;
    let home = &config.home;
    let store_path = home.store_path();
    if config.new_store {
        tracing::warn!(path = %store_path.display(), "starting with a new store if there is none (--new-store)");
    } else {
        #[allow(clippy::disallowed_methods)] // at start, before anything is served
        let problem = match std::fs::metadata(&store_path) {
            Err(_) => Some("is missing"),
            Ok(meta) if meta.len() == 0 => Some("is empty"),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            return Err(ServeError::StoreMissing {
                path: store_path,
                dir: home.dir.clone(),
                problem,
            });
        }
    }
    let store = Arc::new(Store::open(&store_path)?);
    let ca = Ca::load(&home.dir)?;
    let cert_pem = home.read("controller.crt")?;
    let key_pem = home.read("controller.key")?;
    let tls = gantry_shared::tls::server_config(ca.cert_pem(), &cert_pem, &key_pem)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let controller_fingerprint =
        ca::pem_fingerprint(&cert_pem).map_err(|e| ServeError::Tls(e.to_string()))?;
    let endpoint =
        gantry_net::server_endpoint(config.listen, tls).map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let local = endpoint.local_addr().map_err(|e| ServeError::Listen {
        addr: config.listen,
        source: gantry_net::NetError::Endpoint(e),
    })?;

    let bundles = Arc::new(crate::bundles::BundleRepo::open(
        home.dir.join("bundles"),
        home.path("trust.json"),
        Arc::clone(&store),
    )?);
    let tracker = gantry_net::supervisor::Supervisor::new(shutdown.clone());
    let (ingest, ingest_thread) = ingest::spawn(Arc::clone(&store));
    let rollouts = crate::rollouts::Engine::open(&store, Arc::clone(&bundles))?;
    let console_listener = match config.console_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::ConsoleListen { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServeError::ConsoleListen { addr, source })?;
            Some((listener, bound))
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        ca,
        controller_fingerprint,
        controller_certificate_pem: cert_pem.clone(),
        controller_key_pem: key_pem,
        certs: config.certs,
        clock: config.clock,
        live: Mutex::new(HashMap::new()),
        ingest,
        counters: Counters::default(),
        remote_write: config
            .remote_write
            .as_ref()
            .map(|_| Arc::new(crate::export::Counters::default())),
        otlp: config
            .otlp
            .as_ref()
            .map(|_| Arc::new(crate::export::Counters::default())),
        bundles,
        rollouts,
        audited_bundles: Arc::default(),
        auto_cordon: config.auto_cordon,
        cordoned: Arc::default(),
        console: console_listener.as_ref().map(|(_, bound)| console::Gate {
            url: format!("http://{bound}"),
            sessions: console::session::Sessions::new(config.console_session),
        }),
    });
    load_latest(&shared);
    if shared.auto_cordon.is_off() {
        tracing::info!("automatic cordoning is off (--auto-cordon none)");
    } else {
        tracing::info!(checks = ?shared.auto_cordon.checks(), "nodes are cordoned automatically on unhealthy reasons of these checks");
    }
    audit_trust_policy(&store, &home.path("trust.json"));

    let metrics_addr = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::MetricsListen { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServeError::MetricsListen { addr, source })?;
            tracker.spawn(
                "metrics endpoint",
                http::serve(listener, Arc::clone(&shared), shutdown.clone()),
            );
            Some(bound)
        }
        None => None,
    };
    if let Some((listener, bound)) = console_listener {
        tracing::info!(addr = %bound, "console listening; sign in with `gantry console login`");
        tracker.spawn(
            "console",
            console::serve(listener, Arc::clone(&shared), shutdown.clone()),
        );
    }
    if let (Some(target), Some(counters)) = (config.remote_write.clone(), &shared.remote_write) {
        tracker.spawn(
            "remote-write",
            crate::export::run(
                Arc::clone(&store),
                crate::export::remote_write::RemoteWrite {
                    labels: target.labels.clone(),
                },
                target,
                Arc::clone(counters),
                shutdown.clone(),
            ),
        );
    }
    if let (Some(target), Some(counters)) = (config.otlp.clone(), &shared.otlp) {
        tracker.spawn(
            "OTLP export",
            crate::export::run(
                Arc::clone(&store),
                crate::export::otlp::Otlp {
                    attributes: target.labels.clone(),
                },
                target,
                Arc::clone(counters),
                shutdown.clone(),
            ),
        );
    }
    tracker.spawn(
        "retention",
        retention_loop(Arc::clone(&shared), config.retention, shutdown.clone()),
    );
    tracker.spawn(
        "rollout engine",
        rollout_loop(Arc::clone(&shared), shutdown.clone()),
    );

    tracing::info!(addr = %local, metrics = ?metrics_addr, dir = %home.dir.display(), "controller listening");
    if let Some(ready) = ready {
        let _ = ready.send((local, metrics_addr));
    }
    let notifier = gantry_net::notify::Notifier::from_env().map(Arc::new);
    if let Some(notifier) = &notifier {
        notifier.ready(&format!("listening on {local}"));
        if let Some(every) = gantry_net::notify::watchdog_interval() {
            // Pinged from the runtime that serves connections: a stuck runtime stops it.
            let notifier = Arc::clone(notifier);
            let stop = shutdown.clone();
            tracker.spawn("watchdog", async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(every) => notifier.watchdog(),
                    }
                }
            });
        }
    }

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let shared = Arc::clone(&shared);
                tracker.spawn("connection", async move {
                    match incoming.await {
                        Ok(conn) => serve_connection(shared, conn).await,
                        Err(e) => tracing::debug!(error = %e, "handshake failed"),
                    }
                });
            }
        }
    }

    tracing::info!("controller stopping");
    if let Some(notifier) = &notifier {
        notifier.stopping();
    }
    endpoint.close(
        VarInt::from_u32(CLOSE_SHUTDOWN),
        b"controller shutting down",
    );
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections did not finish within 5 s of shutdown");
    }
    drop(shared);
    ingest_thread.stop();
    endpoint.wait_idle().await;
    if let Some(task) = tracker.panicked() {
        return Err(ServeError::Panicked(task));
    }
    tracing::info!("controller stopped");
    Ok(())
}

fn load_latest(shared: &Shared) {
    let Ok(nodes) = shared.store.nodes() else {
        return;
    };
    shared.cordoned.lock().expect("cordoned").extend(
        nodes
            .iter()
            .filter(|n| n.cordon.is_some())
            .map(|n| n.name.clone()),
    );
    let mut live = shared.live.lock().expect("live map");
    for node in nodes {
        if let Ok(Some(body)) = shared.store.latest_metrics(&node.name)
            && let Ok(sample) = serde_json::from_slice::<Sample>(&body)
        {
            live.entry(node.name.clone()).or_default().latest = Some(Arc::new(sample));
        }
    }
}

/// How often active rollouts are moved on.
const ROLLOUT_TICK: Duration = Duration::from_millis(250);

/// Drives the rollout engine until `shutdown`.
async fn rollout_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(ROLLOUT_TICK) => {}
        }
        if !shared.rollouts.has_running() {
            continue;
        }
        let Some(nodes) = node_views(&shared).await else {
            continue;
        };
        let ticking = Arc::clone(&shared);
        // The engine writes assignments and the store: off the async workers.
        let _ = blocking(move || ticking.rollouts.tick(&nodes, gantry_net::clock::now_ms())).await;
    }
}

/// What the rollout engine sees of every node: stored labels, the live heartbeat (or the
/// one stored at the last disconnect).
async fn node_views(shared: &Arc<Shared>) -> Option<BTreeMap<String, crate::rollouts::NodeView>> {
    let store = Arc::clone(&shared.store);
    let nodes = match blocking(move || store.nodes()).await? {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the nodes for rollouts");
            return None;
        }
    };
    let live = shared.live.lock().expect("live map");
    Some(
        nodes
            .into_iter()
            .map(|n| {
                let heartbeat = live
                    .get(&n.name)
                    .and_then(|l| l.heartbeat.clone())
                    .or_else(|| (n.heartbeat.at_ms > 0).then_some(n.heartbeat));
                let view = crate::rollouts::NodeView {
                    labels: n.labels,
                    revoked: n.revoked,
                    cordoned: n.cordon.is_some(),
                    heartbeat,
                };
                (n.name, view)
            })
            .collect(),
    )
}

async fn retention_loop(shared: Arc<Shared>, retention: Duration, shutdown: CancellationToken) {
    // The exports that are on, and the figures their losses are counted in.
    let exports: Vec<(crate::store::Export, Arc<crate::export::Counters>)> = [
        (crate::store::Export::RemoteWrite, &shared.remote_write),
        (crate::store::Export::Otlp, &shared.otlp),
    ]
    .into_iter()
    .filter_map(|(export, counters)| Some((export, Arc::clone(counters.as_ref()?))))
    .collect();
    // A short retention is applied often enough to hold (a tenth of it, at least 1 s).
    let every = RETENTION_EVERY
        .min(retention / 10)
        .max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let cutoff = gantry_net::clock::now_ms().saturating_sub(retention.as_millis() as u64);
        let store = Arc::clone(&shared.store);
        let asked: Vec<crate::store::Export> = exports.iter().map(|(e, _)| *e).collect();
        let expired = match tokio::task::spawn_blocking(move || {
            let windows = store.expire_model_windows(cutoff)?;
            if windows > 0 {
                tracing::info!(windows, "drift windows older than the retention deleted");
            }
            store.apply_retention(cutoff, &asked)
        })
        .await
        {
            Ok(Ok(expired)) => expired,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "applying telemetry retention failed");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "retention task failed");
                continue;
            }
        };
        if expired.deleted > 0 {
            tracing::info!(
                records = expired.deleted,
                "telemetry older than the retention deleted"
            );
        }
        for ((export, lost), (_, counters)) in expired.unexported.iter().zip(&exports) {
            if *lost > 0 {
                tracing::error!(?export, records = lost, retention = ?retention, "retention deleted telemetry this export had not delivered: its receiver has been failing for longer than the retention (see the export's last_success_timestamp_seconds); raise --retention or fix the receiver");
                counters
                    .records_expired
                    .fetch_add(*lost, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The principal behind a connection: `None` when it presented no certificate.
/// The connection's principal, from its certificate (looked up on a blocking thread).
async fn identify(shared: &Shared, conn: &Connection) -> Result<Option<Principal>, (u32, String)> {
    let Some(identity) = conn.peer_identity() else {
        return Ok(None);
    };
    let Ok(certs) = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>() else {
        return Ok(None);
    };
    let Some(cert) = certs.first() else {
        return Ok(None);
    };
    let fingerprint = gantry_shared::tls::fingerprint(cert);
    let store = Arc::clone(&shared.store);
    let lookup = match blocking(move || store.identity(&fingerprint)).await {
        Some(Ok(Some(record))) => Lookup::Found(record),
        Some(Ok(None)) => Lookup::Unknown,
        Some(Err(e)) => {
            tracing::error!(error = %e, "identity lookup failed");
            Lookup::Unanswered
        }
        None => Lookup::Unanswered,
    };
    admit(lookup)
}

/// What the store says of a connection's certificate.
#[derive(Debug)]
enum Lookup {
    Found(crate::store::IdentityRecord),
    Unknown,
    /// The store could not say.
    Unanswered,
}

/// The connection's verdict from its certificate's record. A store that could not say
/// closes the connection as "unavailable" (reconnect later), never as a verdict on the
/// certificate.
fn admit(lookup: Lookup) -> Result<Option<Principal>, (u32, String)> {
    match lookup {
        Lookup::Found(record) if record.revoked => {
            Err((CLOSE_REVOKED, "certificate revoked".to_owned()))
        }
        Lookup::Found(record) => Ok(Some(record.principal)),
        Lookup::Unknown => Err((
            CLOSE_UNKNOWN_CERTIFICATE,
            "certificate unknown to this controller".to_owned(),
        )),
        Lookup::Unanswered => Err((
            CLOSE_UNAVAILABLE,
            "the controller cannot look up identities now; reconnect later".to_owned(),
        )),
    }
}

async fn serve_connection(shared: Arc<Shared>, conn: Connection) {
    let remote = conn.remote_address();
    let principal = match identify(&shared, &conn).await {
        Ok(p) => p,
        Err((code, reason)) => {
            tracing::warn!(%remote, reason, "connection refused");
            conn.close(VarInt::from_u32(code), reason.as_bytes());
            return;
        }
    };
    if let Some(Principal::Node { name }) = &principal {
        tracing::info!(node = %name, %remote, "node connected");
        record_audit(
            &shared,
            crate::audit::entry(
                format!("node {name}"),
                "node.connect",
                name,
                audit::details([("remote", serde_json::json!(remote.to_string()))]),
            ),
        )
        .await;
        shared
            .live
            .lock()
            .expect("live map")
            .entry(name.clone())
            .or_default()
            .connections
            .push(conn.clone());
    }
    let principal = Arc::new(principal);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let shared = Arc::clone(&shared);
                let principal = Arc::clone(&principal);
                tokio::spawn(async move {
                    serve_stream(&shared, principal.as_ref().as_ref(), send, recv).await;
                });
            }
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "connection ended");
                break;
            }
        }
    }
    if let Some(Principal::Node { name }) = principal.as_ref() {
        tracing::info!(node = %name, %remote, "node disconnected");
        record_audit(
            &shared,
            crate::audit::entry(
                format!("node {name}"),
                "node.disconnect",
                name,
                audit::details([("remote", serde_json::json!(remote.to_string()))]),
            ),
        )
        .await;
        if let Some(live) = shared.live.lock().expect("live map").get_mut(name) {
            live.connections
                .retain(|c| c.stable_id() != conn.stable_id());
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorResponse::new(code, message))
}

async fn serve_stream(
    shared: &Arc<Shared>,
    principal: Option<&Principal>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let response = match gantry_net::read_frame(&mut recv).await {
        Err(e @ gantry_net::NetError::Lost(_)) => {
            tracing::debug!(error = %e, "a stream ended with its connection before its request arrived");
            return;
        }
        Err(e) => {
            shared
                .counters
                .rejected_streams
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "malformed frame; closing its stream");
            error(ErrorCode::BadRequest, e.to_string())
        }
        Ok(body) => match protocol::decode_body::<Request>(&body) {
            Err(e) => {
                shared
                    .counters
                    .rejected_streams
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "request not understood; closing its stream");
                error(ErrorCode::BadRequest, e.to_string())
            }
            Ok(Request::BundleFetch(req)) => match principal {
                Some(Principal::Node { name }) => {
                    return bundle_fetch(shared, name, req, send).await;
                }
                Some(Principal::Admin { .. }) => {
                    error(ErrorCode::Forbidden, "admins do not fetch bundles")
                }
                None => unauthenticated(),
            },
            Ok(request) => handle(shared, principal, request).await,
        },
    };
    if let Err(e) = gantry_net::write_frame(&mut send, &response).await {
        tracing::debug!(error = %e, "could not answer on the stream");
    }
}

fn unauthenticated() -> Response {
    error(
        ErrorCode::Unauthenticated,
        "a client certificate from this fleet is required (enroll first)",
    )
}

async fn handle(shared: &Arc<Shared>, principal: Option<&Principal>, request: Request) -> Response {
    match (request, principal) {
        (Request::Enroll(req), None) => enroll(shared, req).await,
        (Request::Enroll(_), Some(_)) => error(
            ErrorCode::BadRequest,
            "this connection already has an identity; enroll without one",
        ),
        (Request::RenewExpired(req), _) => renew::by_proof(shared, &req, false)
            .await
            .map_or_else(|e| e, |r| Response::Renewed(Box::new(r))),
        (_, None) => unauthenticated(),
        (Request::Renew, Some(Principal::Node { name })) => renew::online(shared, name)
            .await
            .map_or_else(|e| e, |r| Response::Renewed(Box::new(r))),
        (Request::Renew, Some(Principal::Admin { .. })) => error(
            ErrorCode::BadRequest,
            "admins rotate their certificate with `gantry admin rotate`",
        ),
        (Request::Heartbeat(req), Some(Principal::Node { name })) => {
            heartbeat(shared, name, *req).await
        }
        (Request::Telemetry(batch), Some(Principal::Node { name })) => {
            ingest_batch(shared, name, batch).await
        }
        (Request::Admin(req), Some(Principal::Admin { name, role })) => {
            admin::handle(shared, name, *role, req).await
        }
        (Request::Heartbeat(_) | Request::Telemetry(_), Some(Principal::Admin { .. })) => {
            error(ErrorCode::Forbidden, "admins do not report telemetry")
        }
        (Request::BundleFetch(_), Some(_)) => error(
            ErrorCode::BadRequest,
            "bundle fetches are answered as streams",
        ),
        (Request::Admin(req), Some(Principal::Node { name })) => {
            tracing::warn!(node = %name, call = req.name(), "node attempted an admin call; refused");
            error(ErrorCode::Forbidden, "nodes cannot make admin calls")
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn enroll(shared: &Shared, req: enroll::Request) -> Response {
    if !valid_node_name(&req.node_name) {
        return error(
            ErrorCode::BadRequest,
            format!(
                "node name {:?} must be 1-63 lowercase letters, digits or '-'",
                req.node_name
            ),
        );
    }
    let key = match PeerPublicKey::from_hex(&req.public_key) {
        Ok(key) => key,
        Err(e) => return error(ErrorCode::BadRequest, e.to_string()),
    };
    let now_ms = shared.clock.now_ms();
    let validity = ca::Validity::starting(now_ms, shared.certs.node_lifetime);
    let cert_pem = match shared.ca.issue_node(&req.node_name, &key, validity) {
        Ok(pem) => pem,
        Err(e) => {
            tracing::error!(error = %e, "issuing a node certificate failed");
            return error(ErrorCode::Unavailable, "issuing the certificate failed");
        }
    };
    let Ok(fingerprint) = ca::pem_fingerprint(&cert_pem) else {
        return error(ErrorCode::Unavailable, "issuing the certificate failed");
    };
    let secret_sha256 =
        gantry_shared::bundle::signing::to_hex(&Sha256::digest(req.secret.as_bytes()));
    let store = Arc::clone(&shared.store);
    let (token_id, name) = (req.token_id.clone(), req.node_name.clone());
    let public_key = req.public_key.clone();
    let result = blocking(move || {
        store.enroll(
            &token_id,
            &secret_sha256,
            &name,
            &crate::store::IssuedCertificate {
                fingerprint: &fingerprint,
                public_key: &public_key,
                expires_at_ms: validity.not_after_ms,
            },
            now_ms,
        )
    })
    .await;
    match result {
        Some(Ok(node)) => {
            tracing::info!(node = %node.name, labels = ?node.labels, "node enrolled");
            record_audit(
                shared,
                crate::audit::entry(
                    format!("node {}", node.name),
                    "node.enroll",
                    &node.name,
                    audit::details([
                        ("token", serde_json::json!(req.token_id)),
                        ("labels", serde_json::json!(node.labels)),
                        ("certificate_sha256", serde_json::json!(node.fingerprint)),
                    ]),
                ),
            )
            .await;
            Response::Enrolled(Box::new(enroll::Response {
                node_name: node.name,
                certificate_pem: cert_pem,
                ca_pem: shared.ca.cert_pem().to_owned(),
                labels: node.labels,
                certificate_expires_at_ms: Some(validity.not_after_ms),
                certificate_issued_at_ms: Some(validity.not_before_ms),
            }))
        }
        Some(Err(EnrollRefusal::Store(e))) => {
            tracing::error!(error = %e, "enrollment failed in the store");
            error(
                ErrorCode::Unavailable,
                "the controller store failed; try again",
            )
        }
        Some(Err(refusal)) => {
            tracing::warn!(node = %req.node_name, token = %req.token_id, reason = %refusal, "enrollment refused");
            let code = match refusal {
                EnrollRefusal::NameTaken(_) | EnrollRefusal::TokenUsed { .. } => {
                    ErrorCode::Conflict
                }
                _ => ErrorCode::Unauthenticated,
            };
            error(code, refusal.to_string())
        }
        None => error(ErrorCode::Unavailable, "enrollment task failed"),
    }
}

/// A node's heartbeat: its bundle changes audited, an automatic cordon stored if its
/// health calls for one, then its live state updated and the desired bundle answered —
/// so whoever sees this heartbeat's health also sees the cordon it caused.
async fn heartbeat(shared: &Shared, name: &str, req: heartbeat::Request) -> Response {
    let now = gantry_net::clock::now_ms();
    let info = crate::store::HeartbeatInfo {
        at_ms: now,
        agent_version: req.agent_version,
        buffered_records: req.buffered_records,
        last_seq: req.last_seq,
        dropped_metrics: req.dropped_metrics,
        dropped_events: req.dropped_events,
        health: req.health,
        bundles: req.bundles,
        model: req.model,
        models: req.models,
    };
    audit_node_bundles(shared, name, &info.bundles);
    if let Some(health) = &info.health {
        auto_cordon(shared, name, health, now).await;
    }
    let before = {
        let mut live = shared.live.lock().expect("live map");
        let entry = live.entry(name.to_owned()).or_default();
        let before = entry
            .heartbeat
            .as_ref()
            .map_or(Before::Unseen, |h| Before::Seen(h.health.clone()));
        let health = info.health.clone();
        entry.heartbeat = Some(info);
        (before, health)
    };
    if let (before, Some(health)) = before {
        record_health_change(shared, name, now, before, health);
    }
    Response::Heartbeat(heartbeat::Response::new(now, shared.bundles.desired(name)))
}

/// The part of a node's health its history follows: the state and which checks give
/// which state (a reason's message may carry a changing figure).
fn health_key(
    h: &gantry_shared::health::Health,
) -> (
    gantry_shared::health::HealthState,
    Vec<(&str, gantry_shared::health::HealthState)>,
) {
    (
        h.state,
        h.reasons
            .iter()
            .map(|r| (r.check.as_str(), r.state))
            .collect(),
    )
}

/// Stores `health` in the node's health history when it differs from the health it had
/// before (`before`: the previous live heartbeat's, `None` when the controller has seen
/// none since it started, and then the newest stored change is compared). Off the async
/// workers, and not awaited: a failure is logged, the next change is stored anyway.
/// A node's health before a heartbeat.
#[derive(Debug)]
enum Before {
    /// No heartbeat since the controller started.
    Unseen,
    /// The previous heartbeat's (which may carry none).
    Seen(Option<gantry_shared::health::Health>),
}

fn record_health_change(
    shared: &Shared,
    name: &str,
    at_ms: u64,
    before: Before,
    health: gantry_shared::health::Health,
) {
    if let Before::Seen(Some(before)) = &before
        && health_key(before) == health_key(&health)
    {
        return;
    }
    let store = Arc::clone(&shared.store);
    let node = name.to_owned();
    tokio::task::spawn_blocking(move || {
        if matches!(before, Before::Unseen) {
            match store.health_changes(&node, 1) {
                Ok(last)
                    if last
                        .first()
                        .is_some_and(|(_, h)| health_key(h) == health_key(&health)) =>
                {
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "cannot read the node's health history");
                }
            }
        }
        if let Err(e) = store.put_health_change(&node, at_ms, &health) {
            tracing::error!(node = %node, error = %e, "cannot store a change of the node's health in its history");
        }
    });
}

/// Cordons a node whose heartbeat carries an unhealthy reason the operator chose, once:
/// the store write (with its audit entry) runs off the async workers, and a node already
/// cordoned, by hand or automatically, is left as it is.
async fn auto_cordon(
    shared: &Shared,
    name: &str,
    health: &gantry_shared::health::Health,
    now_ms: u64,
) {
    let Some(cordon) = shared.auto_cordon.judge(health, now_ms) else {
        return;
    };
    if !shared
        .cordoned
        .lock()
        .expect("cordoned")
        .insert(name.to_owned())
    {
        return;
    }
    let store = Arc::clone(&shared.store);
    let cordoned = Arc::clone(&shared.cordoned);
    let node = name.to_owned();
    let stored = blocking(move || {
        let reason = cordon.reason.clone();
        let result = store.cordon_node(&node, |current| {
            current.is_none().then(|| {
                let entry = crate::audit::entry(
                    crate::cordon::AUTOMATIC_BY,
                    "node.cordon",
                    &node,
                    serde_json::json!({ "reason": cordon.reason, "automatic": true }),
                );
                (Some(cordon), entry)
            })
        });
        match result {
            Ok(Some(_)) => {
                tracing::warn!(node = %node, reason = %reason,
                    "node cordoned automatically: it takes no new rollouts until `gantry fleet uncordon`");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(node = %node, error = %e, "cannot store an automatic cordon; the next heartbeat retries");
                cordoned.lock().expect("cordoned").remove(&node);
            }
        }
    })
    .await;
    if stored.is_none() {
        tracing::error!(
            node = name,
            "the task storing an automatic cordon failed; the next heartbeat retries"
        );
        shared.cordoned.lock().expect("cordoned").remove(name);
    }
}

/// Records in the audit log what a node reports about its bundles when it changed: an
/// activation (per model), or a refusal with the node's reason. The last recorded state
/// is kept per node in the store, so a restarted controller does not record it twice.
fn audit_node_bundles(
    shared: &Shared,
    name: &str,
    bundles: &gantry_shared::protocol::delivery::NodeBundles,
) {
    let mut models: std::collections::BTreeMap<String, String> = bundles
        .models
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.active.clone()?)))
        .collect();
    if models.is_empty()
        && let Some(active) = &bundles.active
    {
        // A node that serves one model and does not name it.
        models.insert(String::new(), active.clone());
    }
    let now = audit::NodeBundleState {
        active: bundles.active.clone(),
        refused: bundles.failed.as_ref().map(|f| f.id.clone()),
        at_ms: gantry_net::clock::now_ms(),
        models,
    };
    let known = shared
        .audited_bundles
        .lock()
        .expect("audited bundles")
        .get(name)
        .cloned();
    if known.is_some_and(|k| k.same(&now)) {
        return;
    }
    // Marked at once, so the heartbeats that follow while this is written do not queue
    // more writes; taken back if the write fails, so a later heartbeat retries.
    shared
        .audited_bundles
        .lock()
        .expect("audited bundles")
        .insert(name.to_owned(), now.clone());
    let store = Arc::clone(&shared.store);
    let cache = Arc::clone(&shared.audited_bundles);
    let (node, bundles) = (name.to_owned(), bundles.clone());
    // Off the async workers. The store compares with what it recorded last inside the
    // write transaction, so heartbeats racing here never record a change twice.
    tokio::task::spawn_blocking(move || {
        let change = |before: &audit::NodeBundleState| {
            if before.same(&now) {
                return None;
            }
            let mut entries = Vec::new();
            for (model, active) in &now.models {
                if before.active_of(model) != Some(active) {
                    entries.push(node_activated(
                        &node,
                        model,
                        active,
                        before.previous_of(model),
                        "heartbeat",
                    ));
                }
            }
            if now.refused != before.refused
                && let Some(failed) = &bundles.failed
            {
                entries.push(node_refused(&node, &failed.id, &failed.reason, "heartbeat"));
            }
            Some((now, entries))
        };
        if let Err(e) = store.audit_node_bundles(&node, change) {
            tracing::error!(node = %node, error = %e, "cannot append to the audit log");
            cache.lock().expect("audited bundles").remove(&node);
        }
    });
}

fn node_activated(
    node: &str,
    model: &str,
    bundle: &str,
    previous: Option<&String>,
    source: &str,
) -> NewEntry {
    crate::audit::entry(
        format!("node {node}"),
        "node.activated",
        node,
        audit::details([
            ("bundle", serde_json::json!(bundle)),
            ("model", serde_json::json!(model)),
            ("previous", serde_json::json!(previous)),
            ("source", serde_json::json!(source)),
        ]),
    )
}

fn node_refused(node: &str, bundle: &str, reason: &str, source: &str) -> NewEntry {
    crate::audit::entry(
        format!("node {node}"),
        "node.refused",
        node,
        audit::details([
            ("bundle", serde_json::json!(bundle)),
            ("reason", serde_json::json!(reason)),
            ("source", serde_json::json!(source)),
        ]),
    )
}

/// Records in the audit log the activations and refusals in a node's own journal (event
/// records that reached the controller through the uplink or a telemetry import), in
/// order, skipping what the log already holds from heartbeats or earlier deliveries.
/// Blocking: call it off the async workers.
fn audit_node_journal(
    store: &Store,
    node: &str,
    records: &[gantry_shared::protocol::telemetry::Record],
    source: &str,
) {
    use gantry_shared::protocol::telemetry::RecordClass;
    use gantry_shared::telemetry::Event;
    for r in records.iter().filter(|r| r.class == RecordClass::Event) {
        let Ok(event) = serde_json::from_str::<Event>(r.body.get()) else {
            continue;
        };
        let change = |before: &audit::NodeBundleState| {
            if r.at_ms <= before.at_ms {
                return None;
            }
            let (after, entry) = match &event {
                Event::BundleActivated { bundle, model }
                    if before.active_of(model) != Some(bundle) =>
                {
                    (
                        before.activated(model, bundle, r.at_ms),
                        node_activated(node, model, bundle, before.previous_of(model), source),
                    )
                }
                Event::BundleRefused { bundle, reason }
                    if before.refused.as_ref() != Some(bundle) =>
                {
                    (
                        audit::NodeBundleState {
                            refused: Some(bundle.clone()),
                            at_ms: r.at_ms,
                            ..before.clone()
                        },
                        node_refused(node, bundle, reason, source),
                    )
                }
                _ => return None,
            };
            let mut entry = entry;
            entry.at_ms = r.at_ms;
            Some((after, vec![entry]))
        };
        if let Err(e) = store.audit_node_bundles(node, change) {
            tracing::error!(node, error = %e, "cannot append the node's journal to the audit log");
        }
    }
}

/// How a drift window's event record is told apart without parsing every record.
const MODEL_WINDOW_KIND: &str = "\"kind\":\"model_window\"";
/// And a feedback window's.
const MODEL_QUALITY_KIND: &str = "\"kind\":\"model_quality\"";
/// And a captured pair's (serde writes the tag first).
const CAPTURE_PREFIX: &str = "{\"kind\":\"capture\"";

/// Whether an event record is a drift or feedback window.
fn is_model_window(r: &gantry_shared::protocol::telemetry::Record) -> bool {
    let body = r.body.get();
    r.class == gantry_shared::protocol::telemetry::RecordClass::Event
        && (body.starts_with(CAPTURE_PREFIX)
            || body.contains(MODEL_WINDOW_KIND)
            || body.contains(MODEL_QUALITY_KIND))
}

/// Keeps the drift and feedback windows among a node's event records (from the uplink or
/// a telemetry import) for `gantry model drift` and `gantry model quality`. Blocking: call it off the async workers.
fn keep_model_windows(
    store: &Store,
    node: &str,
    records: &[gantry_shared::protocol::telemetry::Record],
) {
    use gantry_shared::telemetry::Event;
    let mut quality = Vec::new();
    let mut captures = Vec::new();
    let windows: Vec<gantry_shared::monitoring::ModelWindow> = records
        .iter()
        .filter(|r| is_model_window(r))
        .filter_map(|r| match serde_json::from_str::<Event>(r.body.get()) {
            Ok(Event::ModelWindow(w)) => Some(*w),
            Ok(Event::ModelQuality(w)) => {
                quality.push(*w);
                None
            }
            Ok(Event::Capture(pair)) => {
                match pair.check() {
                    Ok(()) => captures.push((r.seq, *pair)),
                    Err(e) => {
                        tracing::warn!(node, seq = r.seq, error = %e, "a captured pair does not decode; it is stored as sent but not exported");
                    }
                }
                None
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(node, seq = r.seq, error = %e, "a drift or feedback window record does not read; it is stored as sent but not shown by `gantry model drift` or `quality`");
                None
            }
        })
        .collect();
    if !quality.is_empty()
        && let Err(e) = store.put_quality_windows(node, &quality)
    {
        tracing::error!(node, error = %e, "cannot keep the node's feedback windows; `gantry model quality` will miss them");
    }
    if let Err(e) = store.put_capture_labels(node, &quality) {
        tracing::error!(node, error = %e, "cannot keep the labels of captured requests; `gantry capture export` will miss them");
    }
    if !captures.is_empty()
        && let Err(e) = store.put_captures(node, &captures)
    {
        tracing::error!(node, error = %e, "cannot keep the node's captured pairs; `gantry capture export` will miss them");
    }
    let alert = |w: &gantry_shared::monitoring::ModelWindow, drifted: bool| {
        let features: Vec<serde_json::Value> = w
            .drifted()
            .iter()
            .map(|f| serde_json::json!({"feature": f.label(), "score": f.score(w.metric)}))
            .collect();
        let mut entry = crate::audit::entry(
            format!("node {node}"),
            if drifted {
                "model.drift"
            } else {
                "model.drift_cleared"
            },
            node,
            audit::details([
                ("model", serde_json::json!(w.model)),
                ("version", serde_json::json!(w.version)),
                ("bundle", serde_json::json!(w.bundle)),
                ("window_start_ms", serde_json::json!(w.start_ms)),
                ("window_end_ms", serde_json::json!(w.end_ms)),
                ("rows", serde_json::json!(w.profile.rows)),
                ("metric", serde_json::json!(w.metric.as_str())),
                ("threshold", serde_json::json!(w.threshold)),
                ("features", serde_json::json!(features)),
            ]),
        );
        entry.at_ms = w.end_ms;
        entry
    };
    match store.put_model_windows(node, &windows, alert) {
        Ok(0) => {}
        Ok(n) => tracing::info!(node, changes = n, "drift alerts recorded in the audit log"),
        Err(e) => tracing::error!(node, error = %e, "cannot keep the node's drift windows"),
    }
}

/// Records the controller's trust policy (`DIR/trust.json`) in the audit log when it is
/// not the one recorded last: at start and before each push, so the policy every push was
/// verified against is in the log. Blocking: call it at start or in `spawn_blocking`.
#[allow(clippy::disallowed_methods)]
fn audit_trust_policy(store: &Store, path: &std::path::Path) {
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let policy = gantry_shared::bundle::policy::SignedPolicy::parse(&bytes).ok();
    let entry = |previous: Option<&str>| {
        let p = policy
            .as_ref()
            .map(gantry_shared::bundle::policy::SignedPolicy::policy);
        crate::audit::entry(
            "controller",
            "policy.change",
            path.display().to_string(),
            audit::details([
                ("sha256", serde_json::json!(sha256)),
                ("previous_sha256", serde_json::json!(previous)),
                ("version", serde_json::json!(p.map(|p| p.version))),
                ("threshold", serde_json::json!(p.map(|p| p.threshold))),
                (
                    "keys",
                    serde_json::json!(p.map(|p| {
                        p.keys
                            .iter()
                            .map(|k| format!("{} ({})", k.name, k.id))
                            .collect::<Vec<_>>()
                    })),
                ),
                ("revoked", serde_json::json!(p.map(|p| p.revoked.clone()))),
            ]),
        )
    };
    match store.audit_policy(&sha256, entry) {
        Ok(true) => {
            tracing::info!(policy = %path.display(), sha256, "trust policy recorded in the audit log");
        }
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot append the trust policy to the audit log"),
    }
}

/// Records an action in the audit log, off the async workers. A failure is logged at
/// ERROR: the action itself already happened.
async fn record_audit(shared: &Shared, entry: NewEntry) {
    let store = Arc::clone(&shared.store);
    match blocking(move || store.append_audit(vec![entry])).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => tracing::error!(error = %e, "cannot append to the audit log"),
        None => tracing::error!("the audit task failed"),
    }
}

/// A node's bundle fetch: the header frame, then the file's bytes from the requested
/// offset to its end, read off the async workers.
async fn bundle_fetch(
    shared: &Shared,
    name: &str,
    req: gantry_shared::protocol::delivery::FetchRequest,
    mut send: quinn::SendStream,
) {
    use gantry_shared::protocol::delivery::StreamHeader;
    let bundles = Arc::clone(&shared.bundles);
    let node = name.to_owned();
    let (id, offset) = (req.id.clone(), req.offset);
    let opened = blocking(move || bundles.open_for_node(&node, &req.id, req.offset)).await;
    let (file, size) = match opened {
        Some(Ok(opened)) => opened,
        failed => {
            let response = match failed {
                Some(Err(e)) => repo_error(&e),
                _ => error(ErrorCode::Unavailable, "the bundle task failed"),
            };
            if let Err(e) = gantry_net::write_frame(&mut send, &response).await {
                tracing::debug!(error = %e, "could not answer on the stream");
            }
            return;
        }
    };
    let header = Response::BundleStream(StreamHeader { offset, size });
    let header = match protocol::encode(&header) {
        Ok(bytes) => bytes,
        Err(e) => return tracing::error!(error = %e, "cannot encode a stream header"),
    };
    if send.write_all(&header).await.is_err() {
        return;
    }
    tracing::debug!(node = %name, bundle = %id, offset, size, "sending bundle");
    match gantry_net::send_file(send, file, size - offset).await {
        Ok(()) => tracing::info!(node = %name, bundle = %id, offset, size, "bundle sent"),
        Err(e) => {
            tracing::info!(node = %name, bundle = %id, error = %e, "bundle transfer broke off; the node resumes it");
        }
    }
}

/// A repository failure as the wire error a client can act on.
fn repo_error(e: &crate::bundles::RepoError) -> Response {
    use crate::bundles::RepoError;
    let code = match e {
        RepoError::BadRequest(_) | RepoError::Refused(_) => ErrorCode::BadRequest,
        RepoError::NotFound(_) => ErrorCode::NotFound,
        RepoError::Io { .. } | RepoError::Store(_) => {
            // The path and the OS error stay in the controller's log, off the wire.
            tracing::error!(
                error = gantry_shared::bundle::outcome::error_chain(e),
                "bundle repository failure"
            );
            return error(
                ErrorCode::Unavailable,
                "the controller's bundle repository failed; try again, or see the controller's log",
            );
        }
    };
    error(code, e.to_string())
}

async fn ingest_batch(shared: &Shared, name: &str, batch: telemetry::Batch) -> Response {
    if let Err(e) = batch.validate() {
        tracing::warn!(node = %name, error = %e, "telemetry batch refused");
        return error(ErrorCode::BadRequest, e.to_string());
    }
    let latest = batch
        .records
        .iter()
        .rev()
        .find(|r| r.class == telemetry::RecordClass::Metrics)
        .and_then(|r| serde_json::from_str::<Sample>(r.body.get()).ok());
    // The node's journal (bundle events), for the audit log once the batch is stored.
    let journal: Vec<telemetry::Record> = batch
        .records
        .iter()
        .filter(|r| r.class == telemetry::RecordClass::Event && r.body.get().contains("\"bundle_"))
        .cloned()
        .collect();
    let windows: Vec<telemetry::Record> = batch
        .records
        .iter()
        .filter(|r| is_model_window(r))
        .cloned()
        .collect();
    match shared.ingest.store(name.to_owned(), batch).await {
        Ok(stored) => {
            if !journal.is_empty() {
                let store = Arc::clone(&shared.store);
                let node = name.to_owned();
                let _ =
                    blocking(move || audit_node_journal(&store, &node, &journal, "journal")).await;
            }
            if !windows.is_empty() {
                let store = Arc::clone(&shared.store);
                let node = name.to_owned();
                let _ = blocking(move || keep_model_windows(&store, &node, &windows)).await;
            }
            shared.counters.batches.fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .stored
                .fetch_add(stored.stored, Ordering::Relaxed);
            shared
                .counters
                .duplicates
                .fetch_add(stored.duplicates, Ordering::Relaxed);
            if let Some(sample) = latest {
                shared
                    .live
                    .lock()
                    .expect("live map")
                    .entry(name.to_owned())
                    .or_default()
                    .latest = Some(Arc::new(sample));
            }
            Response::Telemetry(telemetry::Ack {
                through_seq: stored.through_seq,
                stored: stored.stored,
                duplicates: stored.duplicates,
            })
        }
        Err(message) => {
            tracing::error!(node = %name, error = %message, "storing telemetry failed");
            error(
                ErrorCode::Unavailable,
                "the controller could not store the batch; it will be retried",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revoked: bool) -> crate::store::IdentityRecord {
        crate::store::IdentityRecord {
            principal: Principal::Node { name: "n1".into() },
            issued_at_ms: 1,
            revoked,
            expires_at_ms: None,
        }
    }

    #[test]
    fn a_connection_is_admitted_refused_or_told_to_come_back_by_its_certificate_s_record() {
        assert!(matches!(
            admit(Lookup::Found(record(false))),
            Ok(Some(Principal::Node { name })) if name == "n1"
        ));
        assert_eq!(
            admit(Lookup::Found(record(true))).unwrap_err().0,
            CLOSE_REVOKED
        );
        assert_eq!(
            admit(Lookup::Unknown).unwrap_err().0,
            CLOSE_UNKNOWN_CERTIFICATE
        );
        // A store that cannot answer is no verdict on the certificate: a node told
        // "unknown" would be told to enroll again.
        let (code, reason) = admit(Lookup::Unanswered).unwrap_err();
        assert_eq!(code, CLOSE_UNAVAILABLE);
        assert!(reason.contains("reconnect later"), "{reason}");
    }
}
