//! The wire protocol between agents, admins and the controller.
//!
//! # Transport
//!
//! QUIC with TLS 1.3, ALPN [`ALPN`] (`gantry/1`). Agents and admins present client
//! certificates issued by the fleet CA; the only exchange allowed without one is
//! [`enroll`], on a connection the agent authenticates by the controller certificate
//! pinned in its join token. The identity behind a request is always the one of the
//! connection's certificate, never a name inside a message.
//!
//! # Exchanges
//!
//! Every exchange is one bidirectional stream: the client writes one request frame and
//! finishes its side; the server writes one response frame and finishes. The one
//! exception is a node's bundle fetch, whose response frame is followed by raw bytes
//! ([`delivery`]). Streams are
//! independent: a malformed or oversized frame fails its own stream (the server answers
//! with [`Response::Error`] where it can), and the connection's other streams go on.
//!
//! # Frames
//!
//! ```text
//! +----------------------+---------------------------------------------+
//! | length: u32, big end.| JSON: {"v": 1, "msg": {"<kind>": {...}}}    |
//! +----------------------+---------------------------------------------+
//! ```
//!
//! `length` counts the JSON bytes and is at most [`MAX_FRAME`]. `v` is the protocol
//! version ([`VERSION`]); a peer refuses frames of another major version with a clear
//! error. Messages are externally tagged enums; unknown *fields* are ignored so peers of
//! a newer minor revision interoperate, and an unknown *kind* is answered with an error
//! on that stream only.

pub mod admin;
pub mod audit;
pub mod delivery;
pub mod enroll;
pub mod heartbeat;
pub mod monitoring;
pub mod rollout;
pub mod telemetry;

use serde::{Deserialize, Serialize};

/// ALPN protocol identifier.
pub const ALPN: &[u8] = b"gantry/1";
/// Protocol version carried in every frame.
pub const VERSION: u32 = 1;
/// Largest frame accepted, in bytes of JSON.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// The server name the controller's certificate is issued for.
pub const CONTROLLER_SERVER_NAME: &str = "gantry-controller";

/// QUIC application close codes the controller closes a connection with: the agent
/// tells a refusal from a network failure by these, never by the reason text.
pub mod close {
    /// The certificate is unknown to this controller.
    pub const UNKNOWN_CERTIFICATE: u32 = 1;
    /// The certificate was revoked: the node must enroll again.
    pub const REVOKED: u32 = 2;
    /// The controller is shutting down; reconnect later.
    pub const SHUTDOWN: u32 = 3;
    /// The controller cannot serve the connection now (its store failed); reconnect
    /// later. Never a verdict on the certificate.
    pub const UNAVAILABLE: u32 = 4;
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    Oversized { size: usize, max: usize },
    #[error("frame is truncated: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("frame has {extra} bytes after its end")]
    Trailing { extra: usize },
    #[error("frame speaks protocol version {found}; this side speaks {VERSION}")]
    Version { found: u32 },
    #[error("frame is not a valid message: {0}")]
    Malformed(String),
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    msg: &'a T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    v: u32,
    msg: T,
}

/// Encodes `msg` as one frame: length prefix and JSON envelope.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, &EnvelopeOut { v: VERSION, msg })
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let size = out.len() - 4;
    if size > MAX_FRAME {
        return Err(FrameError::Oversized {
            size,
            max: MAX_FRAME,
        });
    }
    out[..4].copy_from_slice(&(size as u32).to_be_bytes());
    Ok(out)
}

/// The length a frame header announces, checked against [`MAX_FRAME`].
pub fn frame_length(header: [u8; 4]) -> Result<usize, FrameError> {
    let size = u32::from_be_bytes(header) as usize;
    if size > MAX_FRAME {
        return Err(FrameError::Oversized {
            size,
            max: MAX_FRAME,
        });
    }
    Ok(size)
}

/// Decodes the JSON body of one frame (without its length prefix).
pub fn decode_body<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, FrameError> {
    // One pass in the common case; the version is probed separately only when the
    // message does not parse, so a frame of another version is named as such.
    match serde_json::from_slice::<EnvelopeIn<T>>(body) {
        Ok(envelope) if envelope.v == VERSION => Ok(envelope.msg),
        Ok(envelope) => Err(FrameError::Version { found: envelope.v }),
        Err(e) => match serde_json::from_slice::<VersionOnly>(body) {
            Ok(version) if version.v != VERSION => Err(FrameError::Version { found: version.v }),
            _ => Err(FrameError::Malformed(e.to_string())),
        },
    }
}

/// Decodes one complete frame (length prefix included) held in `bytes`.
pub fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, FrameError> {
    let header: [u8; 4] =
        bytes
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or(FrameError::Truncated {
                have: bytes.len(),
                need: 4,
            })?;
    let size = frame_length(header)?;
    let body = &bytes[4..];
    if body.len() < size {
        return Err(FrameError::Truncated {
            have: body.len(),
            need: size,
        });
    }
    if body.len() > size {
        return Err(FrameError::Trailing {
            extra: body.len() - size,
        });
    }
    decode_body(body)
}

/// Every request a client can make.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Enroll(enroll::Request),
    Heartbeat(Box<heartbeat::Request>),
    Telemetry(telemetry::Batch),
    Admin(admin::Request),
    /// Node: the bundle the controller assigned to it, from an offset; answered by a
    /// [`Response::BundleStream`] header and raw bytes (see [`delivery`]).
    BundleFetch(delivery::FetchRequest),
    /// Node, over its mutual-TLS connection: a new certificate for its key, before the
    /// current one expires. Answered by [`Response::Renewed`].
    Renew,
    /// A node whose certificate expired (no client certificate on the connection):
    /// renewal by proof of possession of its key, within the controller's grace period.
    RenewExpired(enroll::RenewRequest),
}

/// Every response the controller sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Enrolled(Box<enroll::Response>),
    Renewed(Box<enroll::Response>),
    Heartbeat(heartbeat::Response),
    Telemetry(telemetry::Ack),
    Admin(admin::Response),
    BundleStream(delivery::StreamHeader),
    Error(ErrorResponse),
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
}

/// Why a request was refused; drives the client's retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or message was not understood.
    BadRequest,
    /// The connection has no (valid) identity for this request.
    Unauthenticated,
    /// The identity's role does not allow this request.
    Forbidden,
    /// The thing named does not exist.
    NotFound,
    /// The request conflicts with current state (a name already taken, a used token).
    Conflict,
    /// The controller failed; retrying later may succeed.
    Unavailable,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable)
    }
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request::Heartbeat(Box::new(heartbeat::Request {
            buffered_records: 3,
            ..Default::default()
        }));
        let bytes = encode(&req).unwrap();
        let back: Request = decode(&bytes).unwrap();
        assert!(matches!(back, Request::Heartbeat(h) if h.buffered_records == 3));
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            frame_length(header),
            Err(FrameError::Oversized { .. })
        ));
    }

    #[test]
    fn truncated_and_trailing_frames_are_refused() {
        let bytes = encode(&Request::Heartbeat(Box::default())).unwrap();
        assert!(matches!(
            decode::<Request>(&bytes[..bytes.len() - 1]),
            Err(FrameError::Truncated { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(b' ');
        assert!(matches!(
            decode::<Request>(&longer),
            Err(FrameError::Trailing { extra: 1 })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_kinds_refused() {
        let body = br#"{"v":1,"future":true,"msg":{"heartbeat":{"buffered_records":1,"new_field":[1,2]}}}"#;
        assert!(matches!(
            decode_body::<Request>(body),
            Ok(Request::Heartbeat(_))
        ));
        let body = br#"{"v":1,"msg":{"teleport":{}}}"#;
        assert!(matches!(
            decode_body::<Request>(body),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn other_versions_are_named() {
        let body = br#"{"v":2,"msg":{"heartbeat":{}}}"#;
        assert!(matches!(
            decode_body::<Request>(body),
            Err(FrameError::Version { found: 2 })
        ));
    }

    #[test]
    fn unknown_error_codes_decode() {
        let body = br#"{"v":1,"msg":{"error":{"code":"new_code","message":"m"}}}"#;
        let resp: Response = decode_body(body).unwrap();
        assert!(matches!(
            resp,
            Response::Error(ErrorResponse {
                code: ErrorCode::Unknown,
                ..
            })
        ));
    }
}
