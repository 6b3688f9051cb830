//! QUIC plumbing for the fleet protocol (`gantry_shared::protocol`): endpoints with the
//! fleet's transport settings, frames on streams, one-stream request/response calls, and
//! the raw byte streams that follow a bundle fetch's header.
//! The protocol itself — messages, framing rules, versions — lives in `gantry-shared`.
//!
//! It is also the one home of the host helpers both binaries use: atomic file replace
//! ([`atomic`]), the clock ([`clock`]), shutdown signals ([`signals`]), the
//! panic policy for daemon tasks ([`supervisor`]), logging set-up
//! ([`logging`]), a command's error and exit code ([`command`]), regular-file opening
//! ([`files`]), systemd notification ([`notify`]) and the service directory's owner
//! ([`service_dir`]), and trust policy and bundle file checks ([`trust`]).

#![forbid(unsafe_code)]

pub mod atomic;
pub mod clock;
pub mod command;
pub mod files;
pub mod logging;
pub mod notify;
pub mod service_dir;
pub mod signals;
pub mod supervisor;
pub mod trust;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gantry_shared::protocol::{self, CONTROLLER_SERVER_NAME, FrameError, Request, Response};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream};

/// A fresh ECDSA P-256 key pair, made where it will be used (a node, an admin's
/// machine): (PKCS#8 private key PEM, public key as the hexadecimal uncompressed point).
/// Only the public half is ever sent.
pub fn new_key_pair() -> Result<(String, String), NetError> {
    let key = rcgen::KeyPair::generate().map_err(|e| NetError::Tls(e.to_string()))?;
    Ok((
        key.serialize_pem(),
        gantry_shared::bundle::signing::to_hex(key.public_key_raw()),
    ))
}

/// The public key of a private key (PKCS#8 PEM), as [`new_key_pair`] writes it.
pub fn public_key_of(key_pem: &str) -> Result<String, NetError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| NetError::Tls(e.to_string()))?;
    Ok(gantry_shared::bundle::signing::to_hex(key.public_key_raw()))
}

/// Signs `message` with a node's or admin's private key (PKCS#8 PEM, P-256): an ECDSA
/// signature over SHA-256, ASN.1 DER encoded.
pub fn sign(key_pem: &str, message: &[u8]) -> Result<Vec<u8>, NetError> {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| NetError::Tls(e.to_string()))?;
    let rng = ring::rand::SystemRandom::new();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der(), &rng)
            .map_err(|e| NetError::Tls(format!("the key is not a P-256 key: {e}")))?;
    pair.sign(&rng, message)
        .map(|sig| sig.as_ref().to_vec())
        .map_err(|_| NetError::Tls("signing failed".to_owned()))
}

/// Whether `signature` (as [`sign`] makes it) over `message` verifies with the public key
/// `public_key_hex` (the uncompressed P-256 point, hex, as [`new_key_pair`] gives it).
pub fn verify(public_key_hex: &str, message: &[u8], signature: &[u8]) -> bool {
    let Some(point) = gantry_shared::bundle::signing::from_hex(public_key_hex) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(message, signature)
        .is_ok()
}

/// Keep-alive on idle connections, so NAT bindings stay open and a dead peer is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A connection that heard nothing from its peer for this long is closed: a controller
/// killed or cut off is noticed within it. Five keep-alive rounds, each retried by QUIC's
/// loss recovery, so a lossy link (15 % of packets lost) does not drop a live connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Network failures. `is_transient` tells whether retrying later may help.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot set up the QUIC endpoint")]
    Endpoint(#[source] std::io::Error),
    #[error("TLS configuration is unusable: {0}")]
    Tls(String),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("the connection to {addr} failed")]
    Connection {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("the stream failed: {0}")]
    Stream(String),
    /// The connection under the stream was lost, or the peer reset the stream: not a
    /// malformed frame, nothing the peer sent was wrong.
    #[error("the stream ended with its connection: {0}")]
    Lost(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl NetError {
    /// Whether the same call may succeed later (network trouble, not a refusal).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connection { source, .. } => !matches!(
                source,
                quinn::ConnectionError::VersionMismatch | quinn::ConnectionError::TransportError(_)
            ),
            Self::Stream(_) | Self::Lost(_) | Self::Timeout(_) => true,
            Self::Endpoint(_) | Self::Tls(_) | Self::Connect { .. } | Self::Frame(_) => false,
        }
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("idle timeout fits")));
    t.max_concurrent_bidi_streams(256u32.into());
    t.stream_receive_window((8u32 << 20).into());
    t.send_window(32 << 20);
    // BBR paces by the bandwidth and round trip it measures instead of halving on every
    // loss: on a lossy hall uplink (random loss, jitter that reorders) loss-based control
    // collapses to a few packets per round trip, BBR keeps the link busy.
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    // Jitter reorders packets, as many as the rate times the jitter: declare a packet lost
    // by time (twice the round trip) rather than by how many later ones arrived first, so
    // late packets are not sent twice.
    t.packet_threshold(1000);
    t.time_threshold(2.0);
    Arc::new(t)
}

/// A client endpoint on an ephemeral port of the address family of `peer`.
pub fn client_endpoint(peer: SocketAddr, tls: rustls::ClientConfig) -> Result<Endpoint, NetError> {
    let bind: SocketAddr = if peer.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("static address");
    let mut endpoint = Endpoint::client(bind).map_err(NetError::Endpoint)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A server endpoint bound to `addr`.
pub fn server_endpoint(addr: SocketAddr, tls: rustls::ServerConfig) -> Result<Endpoint, NetError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Endpoint::server(config, addr).map_err(NetError::Endpoint)
}

/// Connects to the controller at `addr`.
pub async fn connect(endpoint: &Endpoint, addr: SocketAddr) -> Result<Connection, NetError> {
    let connecting = endpoint
        .connect(addr, CONTROLLER_SERVER_NAME)
        .map_err(|source| NetError::Connect { addr, source })?;
    connecting
        .await
        .map_err(|source| NetError::Connection { addr, source })
}

fn read_error(e: quinn::ReadExactError) -> NetError {
    use quinn::{ReadError, ReadExactError};
    match e {
        ReadExactError::ReadError(ReadError::ConnectionLost(lost)) => {
            NetError::Lost(lost.to_string())
        }
        ReadExactError::ReadError(ReadError::Reset(code)) => {
            NetError::Lost(format!("the peer reset the stream (code {code})"))
        }
        other => NetError::Stream(other.to_string()),
    }
}

/// Reads one frame's JSON body from `recv`, enforcing the size limit from the header.
pub async fn read_frame(recv: &mut RecvStream) -> Result<Vec<u8>, NetError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.map_err(read_error)?;
    let size = protocol::frame_length(header)?;
    let mut body = vec![0u8; size];
    recv.read_exact(&mut body).await.map_err(read_error)?;
    Ok(body)
}

/// Writes one frame and finishes the stream.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    msg: &T,
) -> Result<(), NetError> {
    let bytes = protocol::encode(msg)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| NetError::Stream(e.to_string()))?;
    send.finish().map_err(|e| NetError::Stream(e.to_string()))
}

/// One request on a new stream, and its response.
async fn exchange(conn: &Connection, request: &Request) -> Result<Response, NetError> {
    exchange_frame(conn, protocol::encode(request)?).await
}

/// One encoded request frame on a new stream, and its response.
async fn exchange_frame(conn: &Connection, frame: Vec<u8>) -> Result<Response, NetError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| NetError::Stream(e.to_string()))?;
    send.write_all(&frame)
        .await
        .map_err(|e| NetError::Stream(e.to_string()))?;
    drop(frame);
    send.finish().map_err(|e| NetError::Stream(e.to_string()))?;
    let body = read_frame(&mut recv).await?;
    Ok(protocol::decode_body(&body)?)
}

/// One request on a new stream, and its response, within `timeout`.
pub async fn call(
    conn: &Connection,
    request: &Request,
    timeout: Duration,
) -> Result<Response, NetError> {
    tokio::time::timeout(timeout, exchange(conn, request))
        .await
        .map_err(|_| NetError::Timeout(timeout))?
}

/// One request on a new stream, and its response, for as long as the connection makes
/// progress: the call fails when the peer acknowledged none of our packets for `stall`,
/// or at `ceiling` (a peer that is alive but never answers). On a slow, lossy link a
/// large request takes as long as it takes and is not abandoned half-way to be sent again
/// from scratch; a dead peer is noticed sooner by the connection's idle timeout.
pub async fn call_while_progressing(
    conn: &Connection,
    request: Request,
    stall: Duration,
    ceiling: Duration,
) -> Result<Response, NetError> {
    // Encoded, then dropped: a large request is not held twice while it travels.
    let frame = protocol::encode(&request)?;
    drop(request);
    let exchange = exchange_frame(conn, frame);
    tokio::pin!(exchange);
    let acks = || conn.stats().frame_rx.acks;
    let started = tokio::time::Instant::now();
    let (mut seen, mut since) = (acks(), started);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            _ = tick.tick() => {
                let now = acks();
                if now != seen {
                    (seen, since) = (now, tokio::time::Instant::now());
                } else if since.elapsed() >= stall {
                    return Err(NetError::Timeout(stall));
                }
                if started.elapsed() >= ceiling {
                    return Err(NetError::Timeout(ceiling));
                }
            }
        }
    }
}

/// One request on a new stream whose response frame is followed by raw bytes: the
/// response, read within `timeout`, and the stream to read those bytes from.
pub async fn open_download(
    conn: &Connection,
    request: &Request,
    timeout: Duration,
) -> Result<(Response, RecvStream), NetError> {
    let exchange = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| NetError::Stream(e.to_string()))?;
        write_frame(&mut send, request).await?;
        let body = read_frame(&mut recv).await?;
        Ok((protocol::decode_body(&body)?, recv))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| NetError::Timeout(timeout))?
}

/// Bytes read from disk per piece while sending a file.
const SEND_PIECE: usize = 1024 * 1024;
/// Pieces read ahead of the stream, so disk reads overlap sending.
const SEND_AHEAD: usize = 4;

/// Sends the next `len` bytes of `file` on `send` and finishes the stream. The file is
/// read on a blocking thread a few pieces ahead of the stream. On failure the stream is
/// reset, so the receiver sees a broken transfer, never a short one that looks complete.
pub async fn send_file(
    mut send: SendStream,
    file: std::fs::File,
    len: u64,
) -> Result<(), NetError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(SEND_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut file = file;
        let mut left = len;
        while left > 0 {
            let n = left.min(SEND_PIECE as u64) as usize;
            let mut piece = Vec::with_capacity(n);
            let read = match (&mut file).take(n as u64).read_to_end(&mut piece) {
                Ok(got) if got == n => Ok(bytes::Bytes::from(piece)),
                Ok(got) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ended {got} bytes into a {n}-byte piece"),
                )),
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
            left -= n as u64;
        }
    });
    let mut sent = 0u64;
    let result = async {
        while let Some(piece) = rx.recv().await {
            let piece =
                piece.map_err(|e| NetError::Stream(format!("cannot read the file: {e}")))?;
            sent += piece.len() as u64;
            send.write_chunk(piece)
                .await
                .map_err(|e| NetError::Stream(e.to_string()))?;
        }
        if sent == len {
            send.finish().map_err(|e| NetError::Stream(e.to_string()))
        } else {
            Err(NetError::Stream(format!(
                "the file ended after {sent} of {len} bytes"
            )))
        }
    }
    .await;
    if result.is_err() {
        let _ = send.reset(quinn::VarInt::from_u32(1));
    }
    drop(rx);
    let _ = reader.await;
    result
}
