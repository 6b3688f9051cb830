//! The uplink: the node's connection to its controller.
//!
//! The agent always dials out (it works behind NAT). It connects with mutual TLS, sends a
//! heartbeat every interval, and drains the buffer in order: one batch in flight, the
//! oldest records first; the controller's acknowledgement deletes exactly the records it
//! stored. A lost acknowledgement means the batch is sent again, which the controller
//! recognizes by (node, sequence). When the connection fails the agent reconnects with
//! exponential backoff and full jitter, up to `max_backoff`.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_shared::protocol::telemetry::{Batch, Record};
use gantry_shared::protocol::{Request, Response, close, heartbeat};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::identity::NodeIdentity;

const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A drain of more than this gives its memory back once the buffer is empty.
const GIVE_BACK_AFTER: usize = 4 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Uplink settings.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// The controllers to connect to, tried in turn (at least one; all of one IP
    /// version): when one does not answer, the next gets the attempt at once, and only a
    /// round in which none answered waits out the backoff.
    pub controllers: Vec<SocketAddr>,
    pub heartbeat: Duration,
    pub max_backoff: Duration,
    pub batch_records: usize,
    pub batch_bytes: usize,
    /// The node's latest health, sent in every heartbeat.
    pub health: crate::health::SharedHealth,
    /// Where assigned bundles go and how they are checked.
    pub delivery: crate::delivery::DeliveryConfig,
    /// Delivery state, reported in every heartbeat.
    pub bundles: crate::delivery::SharedBundles,
    /// The served models, whose figures every heartbeat carries for rollout gates.
    pub models: Option<std::sync::Arc<crate::serving::Models>>,
}

/// Sizes telemetry batches from the throughput the link showed: each batch aims at about
/// [`Pacer::TARGET`] on the wire, so a slow, lossy link carries small batches that each
/// arrive and are acknowledged, and a fast one large ones. It starts small on every
/// connection, grows at most twofold a batch, and shrinks at once.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    budget: usize,
    max: usize,
}

impl Pacer {
    const TARGET: Duration = Duration::from_secs(2);
    const MIN: usize = 16 << 10;
    /// Slowest throughput a batch is given time for before the call gives up.
    const FLOOR_BYTES_PER_S: u64 = 4 << 10;

    fn new(max: usize) -> Self {
        Self {
            budget: (64 << 10).min(max),
            max,
        }
    }

    /// Learns from a batch of `bytes` acknowledged after `took`.
    fn acknowledged(&mut self, bytes: usize, took: Duration) {
        let rate = bytes as f64 / took.as_secs_f64().max(0.001);
        let wanted = (rate * Self::TARGET.as_secs_f64()) as usize;
        // A batch smaller than its budget says nothing about a larger one.
        let grown = if bytes * 2 >= self.budget {
            wanted.min(self.budget * 2)
        } else {
            wanted.min(self.budget)
        };
        self.budget = grown.clamp(Self::MIN, self.max);
    }

    /// A batch that could not be delivered: try a quarter of it next.
    fn failed(&mut self) {
        self.budget = (self.budget / 4).max(Self::MIN);
    }

    /// How long a batch of `bytes` may take before the call gives up.
    fn ceiling(bytes: usize) -> Duration {
        CALL_TIMEOUT + Duration::from_secs(bytes as u64 / Self::FLOOR_BYTES_PER_S)
    }
}

/// What `/metrics` and `status` show about the uplink.
#[derive(Debug, Clone, Default)]
pub struct UplinkStatus {
    pub controller: Option<SocketAddr>,
    pub node: Option<String>,
    pub connected: bool,
    pub last_ack_ms: Option<u64>,
    pub last_error: Option<String>,
    pub connects_total: u64,
    /// When the node certificate in use expires (Unix ms), when known.
    pub certificate_expires_at_ms: Option<u64>,
}

/// Shared uplink status.
pub type SharedStatus = Arc<Mutex<UplinkStatus>>;

/// Reconnection waits: exponential from [`FIRST_BACKOFF`] up to the configured maximum,
/// each a random share of the current step (full jitter, at least 5 %), so a fleet that
/// lost its controller does not come back in one wave.
#[derive(Debug, Clone)]
struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            step: FIRST_BACKOFF.min(max),
            max,
        }
    }

    /// The wait before the next attempt; the step after it doubles, up to the maximum.
    fn next_wait(&mut self) -> Duration {
        let wait = self.step.mul_f64(random_share());
        self.step = (self.step * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits little again.
    fn reset(&mut self) {
        self.step = FIRST_BACKOFF.min(self.max);
    }
}

/// When a session's heartbeats are due: the first at once, then `every` after the last
/// one was answered (a slow controller is not sent a second before the first returns),
/// between batches and while the buffer is empty alike.
#[derive(Debug)]
struct HeartbeatSchedule {
    every: Duration,
    next: tokio::time::Instant,
}

impl HeartbeatSchedule {
    fn new(every: Duration) -> Self {
        Self {
            every,
            next: tokio::time::Instant::now(),
        }
    }

    fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next
    }

    /// A heartbeat was answered just now.
    fn sent(&mut self) {
        self.next = tokio::time::Instant::now() + self.every;
    }

    /// When the session must wake for the next one.
    fn next(&self) -> tokio::time::Instant {
        self.next
    }
}

/// A uniformly random share in [0.05, 1].
fn random_share() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    fraction.max(0.05)
}

/// A call of the uplink failed.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error(transparent)]
    Net(#[from] gantry_net::NetError),
    #[error("{call} refused by the controller: {message}")]
    Refused { call: &'static str, message: String },
    #[error("unexpected answer to {0}")]
    Unexpected(&'static str),
    #[error("the controller acknowledged through {acked} for a batch ending at {last}")]
    WrongAck { acked: u64, last: u64 },
    #[error("cannot drop unsendable buffered records")]
    Buffer(#[source] crate::buffer::BufferError),
    #[error("a buffer task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("the node identity cannot be used for TLS; re-enroll the node")]
    Identity(#[source] gantry_shared::tls::TlsError),
}

impl UplinkError {
    /// Whether the next connection may succeed where this one failed: network trouble
    /// and a controller that answered out of turn, not a refusal or a broken identity.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Net(e) => e.is_transient(),
            Self::WrongAck { .. } | Self::Unexpected(_) => true,
            Self::Refused { .. } | Self::Buffer(_) | Self::Task(_) | Self::Identity(_) => false,
        }
    }
}

/// Why the controller refused this node's connection, from the close it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Closed with [`close::REVOKED`]: re-enroll the node.
    Revoked,
    /// Closed with [`close::UNKNOWN_CERTIFICATE`].
    UnknownCertificate,
    /// The TLS handshake was ended with a `certificate_expired` alert: renew by proof.
    Expired,
}

/// TLS alert `certificate_expired` (RFC 8446), as QUIC carries it in a crypto error.
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;

impl Refusal {
    /// The refusal a connection's end says, if it was one.
    pub fn of(error: &quinn::ConnectionError) -> Option<Self> {
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => {
                match u32::try_from(close.error_code.into_inner()).ok()? {
                    close::REVOKED => Some(Self::Revoked),
                    close::UNKNOWN_CERTIFICATE => Some(Self::UnknownCertificate),
                    _ => None,
                }
            }
            // The controller's TLS stack ends the handshake with the alert (the peer's
            // close), or this side's does on the alert it received.
            quinn::ConnectionError::ConnectionClosed(close)
                if close.error_code
                    == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_EXPIRED) =>
            {
                Some(Self::Expired)
            }
            quinn::ConnectionError::TransportError(e)
                if e.code == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_EXPIRED) =>
            {
                Some(Self::Expired)
            }
            _ => None,
        }
    }
}

/// Why a session with the controller ended.
#[derive(Debug)]
enum SessionEnd {
    /// The agent is stopping.
    Stopping,
    /// Closed on purpose: the certificate's renewal time came, or it was just renewed
    /// and the next connection presents the new one.
    Renewing,
    /// The connection ended: lost, or closed by the controller.
    Closed(quinn::ConnectionError),
    /// A call on it failed.
    Failed(UplinkError),
}

impl From<UplinkError> for SessionEnd {
    fn from(error: UplinkError) -> Self {
        match error {
            UplinkError::Net(gantry_net::NetError::Connection { source, .. }) => {
                Self::Closed(source)
            }
            other => Self::Failed(other),
        }
    }
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stopping => f.write_str("agent stopping"),
            Self::Renewing => f.write_str("reconnecting for the node certificate's renewal"),
            Self::Closed(e) => write!(f, "{e}"),
            Self::Failed(e) => write!(f, "{e}"),
        }
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d.max(Duration::from_secs(1))).await,
        None => std::future::pending().await,
    }
}

fn endpoint_for(
    controller: SocketAddr,
    identity: &NodeIdentity,
) -> Result<quinn::Endpoint, UplinkError> {
    let tls =
        gantry_shared::tls::client_config(&identity.ca_pem, &identity.cert_pem, &identity.key_pem)
            .map_err(UplinkError::Identity)?;
    Ok(gantry_net::client_endpoint(controller, tls)?)
}

/// Renews an expired certificate by proof of possession; the identity as it then is.
async fn renew_expired(
    config: &UplinkConfig,
    controller: SocketAddr,
    identity: &NodeIdentity,
    status: &SharedStatus,
    refusal_logged: &mut bool,
) -> Option<NodeIdentity> {
    let now = std::time::SystemTime::now();
    let result =
        match crate::renewal::by_proof(identity, controller, gantry_net::clock::now_ms()).await {
            Ok(answer) => {
                crate::renewal::install_blocking(&config.delivery.state_dir, identity, answer, now)
                    .await
            }
            Err(e) => Err(e),
        };
    match result {
        Ok(renewed) => {
            tracing::info!(node = %renewed.enrollment.name, expires_at_ms = ?renewed.enrollment.certificate_expires_at_ms, "expired node certificate renewed by proof of possession");
            status
                .lock()
                .expect("uplink status")
                .certificate_expires_at_ms = renewed.enrollment.certificate_expires_at_ms;
            Some(renewed)
        }
        Err(e) if e.is_transient() => {
            tracing::debug!(error = %e, "cannot renew the expired certificate yet");
            status.lock().expect("uplink status").last_error = Some(e.to_string());
            None
        }
        Err(e) => {
            let error = gantry_shared::bundle::outcome::error_chain(&e);
            if *refusal_logged {
                tracing::debug!(error = %error, "the expired node certificate is still refused");
            } else {
                tracing::error!(error = %error, "the node certificate expired and cannot be renewed; telemetry stays in the buffer (renew by file with `gantry-agent renew --offline-request`, or enroll again)");
                *refusal_logged = true;
            }
            status.lock().expect("uplink status").last_error = Some(e.to_string());
            None
        }
    }
}

/// Renews a certificate two thirds through its life over the connection just made. The
/// new certificate is used from the next connection on.
async fn renew_online(
    config: &UplinkConfig,
    conn: &quinn::Connection,
    identity: &NodeIdentity,
    status: &SharedStatus,
) -> Option<NodeIdentity> {
    let now = std::time::SystemTime::now();
    let result = match crate::renewal::online(conn).await {
        Ok(answer) => {
            crate::renewal::install_blocking(&config.delivery.state_dir, identity, answer, now)
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(renewed) => {
            tracing::info!(node = %renewed.enrollment.name, expires_at_ms = ?renewed.enrollment.certificate_expires_at_ms, "node certificate renewed");
            status
                .lock()
                .expect("uplink status")
                .certificate_expires_at_ms = renewed.enrollment.certificate_expires_at_ms;
            Some(renewed)
        }
        Err(e) => {
            tracing::warn!(error = %gantry_shared::bundle::outcome::error_chain(&e), "cannot renew the node certificate; trying again on the next connection");
            None
        }
    }
}

/// Runs the uplink until `shutdown`.
pub async fn run(
    config: UplinkConfig,
    identity: NodeIdentity,
    buffer: Arc<Buffer>,
    appended: Arc<Notify>,
    status: SharedStatus,
    shutdown: CancellationToken,
) {
    let mut identity = identity;
    // One endpoint for every controller listed: they are all of the first one's IP version.
    let family = config.controllers[0];
    let mut endpoint = match endpoint_for(family, &identity) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            tracing::error!(error = %e, "the uplink cannot start; telemetry stays in the buffer");
            return;
        }
    };
    {
        let mut s = status.lock().expect("uplink status");
        s.controller = Some(family);
        s.node = Some(identity.enrollment.name.clone());
        s.certificate_expires_at_ms = identity.enrollment.certificate_expires_at_ms;
    }
    let mut backoff = Backoff::new(config.max_backoff);
    let mut reported = false;
    // Batch sizes follow the link, across reconnections.
    let mut pacer = Pacer::new(config.batch_bytes);
    // Set when the controller refused the certificate as expired although this node's
    // clock says otherwise: renew by proof all the same.
    let mut expired_by_controller = false;
    // A refused renewal is logged at ERROR once, not on every retry.
    let mut renewal_refused = false;
    // Which of the controllers is tried next, and how many in a row did not answer.
    let mut at = 0;
    let mut unanswered = 0;
    loop {
        let controller = config.controllers[at];
        let due = crate::renewal::due(&identity.enrollment, gantry_net::clock::now_ms());
        if due == crate::renewal::Due::Expired || expired_by_controller {
            if let Some(renewed) = renew_expired(
                &config,
                controller,
                &identity,
                &status,
                &mut renewal_refused,
            )
            .await
            {
                match endpoint_for(family, &renewed) {
                    Ok(fresh) => {
                        endpoint.close(0u32.into(), b"certificate renewed");
                        endpoint = fresh;
                        identity = renewed;
                        expired_by_controller = false;
                        backoff.reset();
                    }
                    Err(e) => tracing::error!(error = %e, "the renewed identity cannot be used"),
                }
            } else {
                let wait = backoff.next_wait();
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        }
        // A controller that is down does not answer at all: the handshake gives up at the
        // idle timeout; a loaded controller (or a slow link) gets that long to answer.
        let connect_timeout = gantry_net::IDLE_TIMEOUT + Duration::from_secs(1);
        let attempt =
            tokio::time::timeout(connect_timeout, gantry_net::connect(&endpoint, controller));
        let outcome = tokio::select! {
            () = shutdown.cancelled() => break,
            result = attempt => result.unwrap_or(Err(gantry_net::NetError::Timeout(connect_timeout))),
        };
        let mut renewed = None;
        match outcome {
            Ok(conn) => {
                tracing::info!(controller = %controller, node = %identity.enrollment.name, "connected to the controller");
                unanswered = 0;
                {
                    let mut s = status.lock().expect("uplink status");
                    s.controller = Some(controller);
                    s.connected = true;
                    s.connects_total += 1;
                    s.last_error = None;
                }
                reported = false;
                backoff.reset();
                if crate::renewal::due(&identity.enrollment, gantry_net::clock::now_ms())
                    == crate::renewal::Due::Soon
                {
                    renewed = renew_online(&config, &conn, &identity, &status).await;
                }
                // A connection outliving the renewal time is closed then, so that the
                // next one renews: a node that stays connected for weeks renews too.
                let renew_in = crate::renewal::renew_at(&identity.enrollment).map(|at| {
                    Duration::from_millis(at.saturating_sub(gantry_net::clock::now_ms()))
                });
                let end = if renewed.is_some() {
                    // Straight onto the new certificate, while the old one still works
                    // should anything be wrong with it.
                    conn.close(0u32.into(), b"reconnecting with the renewed certificate");
                    SessionEnd::Renewing
                } else {
                    tokio::select! {
                        end = session(&config, &conn, &buffer, &appended, &status, &mut pacer, &shutdown) => end,
                        () = sleep_or_never(renew_in) => {
                            conn.close(0u32.into(), b"renewing the node certificate");
                            SessionEnd::Renewing
                        }
                    }
                };
                status.lock().expect("uplink status").connected = false;
                let refusal = match &end {
                    SessionEnd::Closed(e) => Refusal::of(e),
                    _ => None,
                };
                let reason = end.to_string();
                match (&end, refusal) {
                    (SessionEnd::Stopping, _) => {
                        conn.close(0u32.into(), b"agent stopping");
                        break;
                    }
                    (SessionEnd::Renewing, _) => {
                        tracing::info!(controller = %controller, "reconnecting for the node certificate's renewal");
                    }
                    (_, Some(Refusal::Revoked | Refusal::UnknownCertificate)) => {
                        tracing::error!(controller = %controller, reason, "the controller refuses this node's certificate; re-enroll the node");
                    }
                    (_, Some(Refusal::Expired)) => {
                        tracing::warn!(controller = %controller, reason, "the controller says this node's certificate expired; renewing by proof of possession");
                        expired_by_controller = true;
                    }
                    (SessionEnd::Failed(e), None) if !e.is_transient() => {
                        tracing::error!(controller = %controller, reason, "the session failed and will fail again the same way until the cause is fixed; reconnecting, telemetry is buffered meanwhile");
                    }
                    (_, None) if config.controllers.len() > 1 => {
                        // It may be gone for good: the next in the list gets the first
                        // attempt, sparing a connect timeout on a dead one.
                        at = (at + 1) % config.controllers.len();
                        tracing::warn!(controller = %controller, next = %config.controllers[at], reason, "connection to the controller lost; trying the next of uplink.controllers, telemetry is buffered meanwhile");
                    }
                    (_, None) => {
                        tracing::warn!(controller = %controller, reason, "connection to the controller lost; reconnecting, telemetry is buffered meanwhile");
                    }
                }
                status.lock().expect("uplink status").last_error = Some(reason);
            }
            Err(e) => {
                let next = config.controllers[(at + 1) % config.controllers.len()];
                if reported {
                    tracing::debug!(controller = %controller, error = %e, "controller still unreachable");
                } else if next == controller {
                    tracing::warn!(controller = %controller, error = %e, "controller unreachable; telemetry is buffered and sent when it returns");
                    reported = true;
                } else {
                    tracing::warn!(controller = %controller, next = %next, error = %e, "controller unreachable; trying the next of uplink.controllers, telemetry is buffered meanwhile");
                    reported = true;
                }
                status.lock().expect("uplink status").last_error = Some(e.to_string());
                at = (at + 1) % config.controllers.len();
                unanswered += 1;
                if unanswered < config.controllers.len() {
                    // Another controller has not been tried since one last answered.
                    continue;
                }
                unanswered = 0;
            }
        }
        if let Some(renewed) = renewed {
            // The connection that carried the renewal is over: the next one presents the
            // new certificate.
            match endpoint_for(family, &renewed) {
                Ok(fresh) => {
                    endpoint.close(0u32.into(), b"certificate renewed");
                    endpoint = fresh;
                    identity = renewed;
                }
                Err(e) => tracing::error!(error = %e, "the renewed identity cannot be used"),
            }
        }
        let wait = backoff.next_wait();
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    endpoint.close(0u32.into(), b"agent stopping");
    tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle())
        .await
        .ok();
}

/// One connection's life: heartbeats and draining. Returns `None` on shutdown, else why
/// the connection ended.
async fn session(
    config: &UplinkConfig,
    conn: &quinn::Connection,
    buffer: &Arc<Buffer>,
    appended: &Notify,
    status: &SharedStatus,
    pacer: &mut Pacer,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let (desired_tx, desired_rx) = tokio::sync::watch::channel(Vec::new());
    let delivery_stop = shutdown.child_token();
    let _stop_delivery = delivery_stop.clone().drop_guard();
    tokio::spawn(crate::delivery::run(
        config.delivery.clone(),
        conn.clone(),
        desired_rx,
        Arc::clone(&config.bundles),
        delivery_stop,
    ));
    let mut heartbeats = HeartbeatSchedule::new(config.heartbeat);
    // Bytes sent since the buffer was last empty.
    let mut drained = 0;
    loop {
        if shutdown.is_cancelled() {
            return SessionEnd::Stopping;
        }
        if let Some(reason) = conn.close_reason() {
            return SessionEnd::Closed(reason);
        }
        if heartbeats.due() {
            if let Err(e) = send_heartbeat(conn, buffer, config, &desired_tx).await {
                return e.into();
            }
            heartbeats.sent();
        }
        let peeked = {
            let buffer = Arc::clone(buffer);
            let (records, bytes) = (config.batch_records, pacer.budget);
            tokio::task::spawn_blocking(move || buffer.peek(records, bytes)).await
        };
        let records = match peeked {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the telemetry buffer");
                Vec::new()
            }
            Err(e) => return SessionEnd::Failed(UplinkError::Task(e)),
        };
        if !records.is_empty() {
            drained += records.iter().map(|r| r.body.len()).sum::<usize>();
            if let Err(e) = send_batch(conn, buffer, records, status, pacer).await {
                return e.into();
            }
            continue;
        }
        if drained >= GIVE_BACK_AFTER {
            // A backlog just drained: its batches' memory goes back to the system.
            drained = 0;
            let _ = tokio::task::spawn_blocking(crate::memory::give_back).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return SessionEnd::Stopping,
            () = appended.notified() => {}
            () = tokio::time::sleep_until(heartbeats.next()) => {}
            reason = conn.closed() => return SessionEnd::Closed(reason),
        }
    }
}

async fn send_heartbeat(
    conn: &quinn::Connection,
    buffer: &Buffer,
    config: &UplinkConfig,
    desired: &tokio::sync::watch::Sender<Vec<gantry_shared::protocol::delivery::Desired>>,
) -> Result<(), UplinkError> {
    let health = &config.health;
    let bundles = {
        // current.json is a file: read on a blocking thread.
        let (shared, store) = (
            Arc::clone(&config.bundles),
            crate::bundle::store::BundleStore::new(&config.delivery.state_dir),
        );
        tokio::task::spawn_blocking(move || crate::delivery::report(&shared, &store)).await?
    };
    let stats = buffer.stats();
    let now = gantry_net::clock::now_ms();
    let models: Vec<heartbeat::ModelReport> = config
        .models
        .as_ref()
        .map(|models| models.health())
        .unwrap_or_default()
        .into_iter()
        .map(|m| heartbeat::ModelReport {
            name: m.name,
            bundle: format!("sha256:{}", m.bundle),
            execution_provider: m.execution_provider.to_owned(),
            recent_error_rate: m.recent_error_rate,
            recent_requests: m.recent_requests as u64,
            latency_p99_s: m.latency_p99,
            golden_ok: m.golden.as_ref().map(Result::is_ok),
            drift: m
                .drift
                .as_ref()
                .map(crate::serving::monitor::DriftVerdict::summary),
            quality: m.quality,
        })
        .collect();
    let request = Request::Heartbeat(Box::new(heartbeat::Request {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        buffered_records: stats.records,
        oldest_buffered_age_s: stats
            .oldest_at_ms
            .map_or(0, |at| now.saturating_sub(at) / 1000),
        last_seq: stats.last_seq,
        dropped_metrics: stats.dropped_metrics,
        dropped_events: stats.dropped_events,
        health: Some(health.lock().expect("health").clone()),
        bundles,
        model: models.first().cloned(),
        models,
    }));
    match gantry_net::call(conn, &request, CALL_TIMEOUT).await {
        Ok(Response::Heartbeat(reply)) => {
            let wanted = reply.wanted();
            desired.send_if_modified(|current| {
                let changed = *current != wanted;
                if changed {
                    *current = wanted;
                }
                changed
            });
            Ok(())
        }
        Ok(Response::Error(e)) => {
            tracing::warn!(code = ?e.code, message = %e.message, "heartbeat refused");
            if e.code.is_transient() {
                Ok(())
            } else {
                Err(UplinkError::Refused {
                    call: "a heartbeat",
                    message: e.message,
                })
            }
        }
        Ok(_) => Err(UplinkError::Unexpected("a heartbeat")),
        Err(e) => Err(e.into()),
    }
}

async fn send_batch(
    conn: &quinn::Connection,
    buffer: &Arc<Buffer>,
    records: Vec<crate::buffer::Buffered>,
    status: &SharedStatus,
    pacer: &mut Pacer,
) -> Result<(), UplinkError> {
    let first = records[0].seq;
    let bytes: usize = records.iter().map(|r| r.body.len()).sum();
    let mut batch = Batch {
        records: Vec::with_capacity(records.len()),
    };
    let mut unsendable = Vec::new();
    for r in records {
        let body = String::from_utf8(r.body)
            .ok()
            .and_then(|text| RawValue::from_string(text).ok());
        if let Some(body) = body {
            batch.records.push(Record {
                seq: r.seq,
                at_ms: r.at_ms,
                class: r.class,
                body,
            });
        } else {
            unsendable.push(r.seq);
        }
    }
    if !unsendable.is_empty() {
        let (buffer, seqs) = (Arc::clone(buffer), unsendable.clone());
        match tokio::task::spawn_blocking(move || buffer.discard_unsendable(&seqs)).await {
            Ok(Ok(n)) => tracing::error!(
                dropped = n,
                seqs = ?unsendable,
                "buffered records are not JSON (damaged on disk); they cannot be sent and are dropped, counted in gantry_agent_buffer_dropped_total"
            ),
            Ok(Err(e)) => return Err(UplinkError::Buffer(e)),
            Err(e) => return Err(UplinkError::Task(e)),
        }
    }
    let Some(last) = batch.records.last().map(|r| r.seq) else {
        return Ok(());
    };
    let started = tokio::time::Instant::now();
    let answer = gantry_net::call_while_progressing(
        conn,
        Request::Telemetry(batch),
        CALL_TIMEOUT,
        Pacer::ceiling(bytes),
    )
    .await;
    match answer {
        Ok(Response::Telemetry(ack)) => {
            pacer.acknowledged(bytes, started.elapsed());
            if ack.through_seq != last {
                return Err(UplinkError::WrongAck {
                    acked: ack.through_seq,
                    last,
                });
            }
            let buffer = Arc::clone(buffer);
            match tokio::task::spawn_blocking(move || buffer.ack(last)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot delete acknowledged records; they will be sent again");
                }
                Err(e) => tracing::error!(error = %e, "buffer task failed"),
            }
            let link = conn.stats();
            tracing::debug!(
                first,
                last,
                bytes,
                next_budget = pacer.budget,
                udp_tx_bytes = link.udp_tx.bytes,
                udp_rx_bytes = link.udp_rx.bytes,
                sent_packets = link.path.sent_packets,
                lost_packets = link.path.lost_packets,
                stored = ack.stored,
                duplicates = ack.duplicates,
                "batch acknowledged"
            );
            status.lock().expect("uplink status").last_ack_ms = Some(gantry_net::clock::now_ms());
            Ok(())
        }
        Ok(Response::Error(e)) => {
            if e.code.is_transient() {
                tracing::warn!(message = %e.message, "the controller could not store a batch; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            } else {
                Err(UplinkError::Refused {
                    call: "a telemetry batch",
                    message: e.message,
                })
            }
        }
        Ok(_) => Err(UplinkError::Unexpected("a telemetry batch")),
        Err(e) => {
            pacer.failed();
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_maximum_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        let mut steps = Vec::new();
        for _ in 0..12 {
            let step = backoff.step;
            let wait = backoff.next_wait();
            assert!(
                wait >= step.mul_f64(0.05) && wait <= step,
                "{wait:?} is a share of {step:?}"
            );
            steps.push(step.as_millis());
        }
        assert_eq!(
            steps,
            [
                250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000
            ]
        );
        backoff.reset();
        assert_eq!(backoff.step, FIRST_BACKOFF);
        // A maximum below the first step caps it too.
        assert_eq!(
            Backoff::new(Duration::from_millis(100)).step.as_millis(),
            100
        );
    }

    #[test]
    fn waits_are_spread_so_a_fleet_does_not_return_in_one_wave() {
        let waits: Vec<Duration> = (0..200)
            .map(|_| Backoff::new(Duration::from_secs(1)).next_wait())
            .collect();
        let early = waits.iter().filter(|w| w.as_millis() < 125).count();
        assert!(
            (40..=160).contains(&early),
            "about half of 200 waits in the first half of the step: {early}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_are_due_at_once_then_every_interval_after_the_answer() {
        let mut schedule = HeartbeatSchedule::new(Duration::from_secs(10));
        assert!(schedule.due(), "the first heartbeat goes at once");
        // The controller takes 3 s to answer: the next is due 10 s after the answer.
        tokio::time::advance(Duration::from_secs(3)).await;
        schedule.sent();
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!schedule.due());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(schedule.due());
        // A session idle in `sleep_until(next)` wakes exactly then.
        schedule.sent();
        let woke = tokio::time::Instant::now();
        tokio::time::sleep_until(schedule.next()).await;
        assert_eq!(woke.elapsed(), Duration::from_secs(10));
        assert!(schedule.due());
    }

    fn application_close(code: u32) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(code),
            // The text says nothing the agent relies on.
            reason: b"certificate revoked, or is it".to_vec().into(),
        })
    }

    #[test]
    fn refusals_are_told_by_close_code_not_by_reason_text() {
        assert_eq!(
            Refusal::of(&application_close(close::REVOKED)),
            Some(Refusal::Revoked)
        );
        assert_eq!(
            Refusal::of(&application_close(close::UNKNOWN_CERTIFICATE)),
            Some(Refusal::UnknownCertificate)
        );
        assert_eq!(Refusal::of(&application_close(close::SHUTDOWN)), None);
        assert_eq!(Refusal::of(&application_close(0)), None);
        assert_eq!(Refusal::of(&quinn::ConnectionError::TimedOut), None);
        assert_eq!(Refusal::of(&quinn::ConnectionError::Reset), None);
    }

    #[test]
    fn an_expired_certificate_alert_from_the_controller_is_a_refusal_to_renew_for() {
        let expired = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_EXPIRED),
            frame_type: None,
            reason: Vec::new().into(),
        });
        assert_eq!(Refusal::of(&expired), Some(Refusal::Expired));
        let other_alert = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(42),
            frame_type: None,
            reason: b"certificate expired".to_vec().into(),
        });
        assert_eq!(
            Refusal::of(&other_alert),
            None,
            "the code decides, not the text"
        );
    }

    #[test]
    fn a_connection_lost_under_a_call_ends_the_session_as_closed() {
        let lost = UplinkError::Net(gantry_net::NetError::Connection {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: application_close(close::REVOKED),
        });
        match SessionEnd::from(lost) {
            SessionEnd::Closed(e) => assert_eq!(Refusal::of(&e), Some(Refusal::Revoked)),
            other => panic!("{other:?}"),
        }
        let refused = UplinkError::Refused {
            call: "a heartbeat",
            message: "no".into(),
        };
        assert!(matches!(SessionEnd::from(refused), SessionEnd::Failed(_)));
    }
}
