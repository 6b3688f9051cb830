//! The node's identity: enrollment with a join token, and the files it leaves.
//!
//! `<state_dir>/identity/` (mode 0700) holds `node.key` (0600; made here, never sent),
//! `node.crt` (the certificate naming the node), `ca.crt` (the fleet CA, which verifies
//! the controller from then on) and `enrollment.json` (name, controller address, labels),
//! written last: its presence marks a complete enrollment.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_shared::protocol::enroll::{self, JoinToken};
use gantry_shared::protocol::{ErrorCode, Request, Response};
use serde::{Deserialize, Serialize};

const ENROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// Enrollment failures. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this node is already enrolled as {name:?} with {controller}; remove {dir} to enroll again"
    )]
    AlreadyEnrolled {
        name: String,
        controller: SocketAddr,
        dir: PathBuf,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the node identity in {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the node identity in {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "cannot reach the controller at {addr} (is the address right, and does the token come from that controller?)"
    )]
    Net {
        addr: SocketAddr,
        #[source]
        source: gantry_net::NetError,
    },
    #[error("the controller refused the enrollment: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the controller answered the enrollment with something unexpected")]
    Unexpected,
    #[error("{0}")]
    Offline(String),
}

/// The enrollment record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub name: String,
    pub controller: SocketAddr,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub enrolled_at_ms: u64,
    /// When `node.crt` expires (Unix ms); absent for certificates issued before they had
    /// lifetimes, which the agent renews at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_at_ms: Option<u64>,
    /// When `node.crt` became valid (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_issued_at_ms: Option<u64>,
}

/// Everything needed to connect as this node.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub enrollment: Enrollment,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn identity_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

/// The node's identity, or `None` when it has not enrolled.
pub fn load(state_dir: &Path) -> Result<Option<NodeIdentity>, IdentityError> {
    let dir = identity_dir(state_dir);
    let marker = dir.join("enrollment.json");
    let text = match std::fs::read(&marker) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IdentityError::Read {
                path: marker,
                source,
            });
        }
    };
    let enrollment: Enrollment =
        serde_json::from_slice(&text).map_err(|e| IdentityError::Invalid {
            path: marker.clone(),
            message: e.to_string(),
        })?;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| IdentityError::Read { path, source })
    };
    Ok(Some(NodeIdentity {
        enrollment,
        ca_pem: read("ca.crt")?,
        cert_pem: read("node.crt")?,
        key_pem: read("node.key")?,
    }))
}

fn write_file(path: &Path, mode: u32, contents: &[u8]) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Writes `contents` to `path` atomically (a crash leaves the old file or the new one).
fn replace_file(path: &Path, mode: u32, contents: &[u8]) -> Result<(), IdentityError> {
    gantry_net::atomic::write_bytes(path, mode, contents).map_err(|source| IdentityError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Installs a renewed certificate and the enrollment record that describes it, each
/// replaced atomically (certificate first: a crash between leaves an older expiry on
/// record, which only makes the agent renew again).
pub fn replace_certificate(
    state_dir: &Path,
    cert_pem: &str,
    enrollment: &Enrollment,
) -> Result<(), IdentityError> {
    let dir = identity_dir(state_dir);
    replace_file(&dir.join("node.crt"), 0o644, cert_pem.as_bytes())?;
    let mut marker = serde_json::to_vec_pretty(enrollment).expect("enrollment serializes");
    marker.push(b'\n');
    replace_file(&dir.join("enrollment.json"), 0o600, &marker)
}

/// A pending enrollment by file: the request is out, the key waits here.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    name: String,
    /// The controller certificate's SHA-256 from the token, to check the response.
    controller_sha256: String,
}

fn make_identity_dir(dir: &Path) -> Result<(), IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| IdentityError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Starts an enrollment by file, for a node that never reaches the controller: makes the
/// node key (kept here as `pending.key`, never sent) and returns the request to carry to
/// the controller (`gantry token redeem`).
pub fn offline_request(
    state_dir: &Path,
    token: &JoinToken,
    name: &str,
) -> Result<enroll::OfflineRequest, IdentityError> {
    let dir = identity_dir(state_dir);
    if let Some(existing) = load(state_dir)? {
        return Err(IdentityError::AlreadyEnrolled {
            name: existing.enrollment.name,
            controller: existing.enrollment.controller,
            dir,
        });
    }
    let (key_pem, public_key) = gantry_net::new_key_pair()
        .map_err(|e| IdentityError::Offline(format!("cannot make the node key: {e}")))?;
    make_identity_dir(&dir)?;
    write_file(&dir.join("pending.key"), 0o600, key_pem.as_bytes())?;
    let pending = Pending {
        name: name.to_owned(),
        controller_sha256: token.controller_sha256.clone(),
    };
    write_file(
        &dir.join("pending.json"),
        0o600,
        &serde_json::to_vec_pretty(&pending).expect("pending serializes"),
    )?;
    Ok(enroll::OfflineRequest {
        format: enroll::OFFLINE_REQUEST_FORMAT.to_owned(),
        request: enroll::Request {
            token_id: token.id.clone(),
            secret: token.secret.clone(),
            node_name: name.to_owned(),
            public_key,
        },
    })
}

/// Completes an enrollment by file with the controller's response: checks it answers
/// this node's pending request and comes from the controller the token pinned, then
/// installs the identity.
pub fn offline_install(
    state_dir: &Path,
    response: &enroll::OfflineResponse,
) -> Result<NodeIdentity, IdentityError> {
    let dir = identity_dir(state_dir);
    if let Some(existing) = load(state_dir)? {
        return Err(IdentityError::AlreadyEnrolled {
            name: existing.enrollment.name,
            controller: existing.enrollment.controller,
            dir,
        });
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|_| {
            IdentityError::Offline(format!(
                "no pending enrollment in {} (run `gantry-agent enroll --offline-request` first)",
                dir.display()
            ))
        })
    };
    let pending: Pending =
        serde_json::from_slice(&read("pending.json")?).map_err(|e| IdentityError::Invalid {
            path: dir.join("pending.json"),
            message: e.to_string(),
        })?;
    let key_pem = String::from_utf8(read("pending.key")?).map_err(|e| IdentityError::Invalid {
        path: dir.join("pending.key"),
        message: e.to_string(),
    })?;
    if response.format != enroll::OFFLINE_RESPONSE_FORMAT {
        return Err(IdentityError::Offline(
            "not an enrollment response from `gantry token redeem`".to_owned(),
        ));
    }
    if response.response.node_name != pending.name {
        return Err(IdentityError::Offline(format!(
            "the response enrolls {:?}, but this node asked to enroll as {:?}",
            response.response.node_name, pending.name
        )));
    }
    check_offline_response(response, &pending, &key_pem, std::time::SystemTime::now())?;
    let controller: SocketAddr = response.controller.parse().map_err(|_| {
        IdentityError::Offline(format!(
            "the response names no controller address ({:?})",
            response.controller
        ))
    })?;
    write_file(&dir.join("node.key"), 0o600, key_pem.as_bytes())?;
    write_file(
        &dir.join("node.crt"),
        0o644,
        response.response.certificate_pem.as_bytes(),
    )?;
    write_file(
        &dir.join("ca.crt"),
        0o644,
        response.response.ca_pem.as_bytes(),
    )?;
    let enrollment = Enrollment {
        name: response.response.node_name.clone(),
        controller,
        labels: response.response.labels.clone(),
        enrolled_at_ms: gantry_net::clock::now_ms(),
        certificate_expires_at_ms: response.response.certificate_expires_at_ms,
        certificate_issued_at_ms: response.response.certificate_issued_at_ms,
    };
    let mut marker = serde_json::to_vec_pretty(&enrollment).expect("enrollment serializes");
    marker.push(b'\n');
    write_file(&dir.join("enrollment.json"), 0o600, &marker)?;
    let _ = std::fs::remove_file(dir.join("pending.key"));
    let _ = std::fs::remove_file(dir.join("pending.json"));
    Ok(NodeIdentity {
        enrollment,
        ca_pem: response.response.ca_pem.clone(),
        cert_pem: response.response.certificate_pem.clone(),
        key_pem,
    })
}

/// Checks that an enrollment response by file comes from the controller the token pinned
/// and certifies this node's own key: the pinned certificate (public, so proving nothing
/// by itself), the controller's signature by that certificate's private key over the
/// response and this node's public key, and both the controller's and the node's
/// certificates issued by the CA the response names.
fn check_offline_response(
    response: &enroll::OfflineResponse,
    pending: &Pending,
    key_pem: &str,
    now: std::time::SystemTime,
) -> Result<(), IdentityError> {
    use gantry_shared::tls::{self, Role};
    let refuse = |why: String| IdentityError::Offline(why);
    let first = |pem: &str, what: &'static str| {
        tls::certificates_from_pem(pem, what)
            .ok()
            .and_then(|certs| certs.into_iter().next())
            .ok_or_else(|| refuse(format!("the response carries no readable {what}")))
    };
    let controller_cert = first(
        &response.controller_certificate_pem,
        "controller certificate",
    )?;
    if tls::fingerprint(&controller_cert) != pending.controller_sha256 {
        return Err(refuse(
            "the response does not come from the controller the join token names (its certificate does not match the token's pin)".to_owned(),
        ));
    }
    let public_key = gantry_net::public_key_of(key_pem)
        .map_err(|e| refuse(format!("cannot read the pending node key: {e}")))?;
    let message = enroll::offline_response_message(&public_key, &response.response);
    let signature = gantry_shared::bundle::signing::from_hex(&response.controller_signature)
        .ok_or_else(|| {
            refuse("the response's controller signature is not hexadecimal".to_owned())
        })?;
    tls::verify_signed_by(&controller_cert, "controller certificate", &message, &signature).map_err(
        |_| {
            refuse(
                "the response is not signed by the controller the join token names (a response built elsewhere, or altered on the way, or for another node key)"
                    .to_owned(),
            )
        },
    )?;
    let ca = &response.response.ca_pem;
    tls::verify_issued_by(ca, &controller_cert, Role::Controller, now).map_err(|e| {
        refuse(format!(
            "the pinned controller certificate does not chain to the CA in the response: {e}"
        ))
    })?;
    let node_cert = first(&response.response.certificate_pem, "node certificate")?;
    tls::verify_issued_by(ca, &node_cert, Role::Client, now).map_err(|e| {
        refuse(format!(
            "the node certificate in the response does not chain to the pinned controller's CA: {e}"
        ))
    })?;
    let probe = b"gantry offline enrollment key check";
    let proof = gantry_net::sign(key_pem, probe)
        .map_err(|e| refuse(format!("cannot use the pending node key: {e}")))?;
    tls::verify_signed_by(&node_cert, "node certificate", probe, &proof).map_err(|_| {
        refuse(
            "the node certificate in the response is for another key, not this node's".to_owned(),
        )
    })
}

/// Enrolls with the controller at `controller` using `token`, under `name`.
pub async fn enroll(
    state_dir: &Path,
    controller: SocketAddr,
    token: &JoinToken,
    name: &str,
) -> Result<NodeIdentity, IdentityError> {
    let dir = identity_dir(state_dir);
    if let Some(existing) = load(state_dir)? {
        return Err(IdentityError::AlreadyEnrolled {
            name: existing.enrollment.name,
            controller: existing.enrollment.controller,
            dir,
        });
    }
    let net = |source| IdentityError::Net {
        addr: controller,
        source,
    };
    let (key_pem, public_key) = gantry_net::new_key_pair().map_err(net)?;
    let tls = gantry_shared::tls::pinned_client_config(&token.controller_sha256)
        .map_err(|e| net(gantry_net::NetError::Tls(e.to_string())))?;
    let endpoint = gantry_net::client_endpoint(controller, tls).map_err(net)?;
    let conn = gantry_net::connect(&endpoint, controller)
        .await
        .map_err(net)?;
    let request = Request::Enroll(enroll::Request {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        node_name: name.to_owned(),
        public_key,
    });
    let response = gantry_net::call(&conn, &request, ENROLL_TIMEOUT)
        .await
        .map_err(net)?;
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    let answer = match response {
        Response::Enrolled(answer) => *answer,
        Response::Error(e) => {
            return Err(IdentityError::Refused {
                code: e.code,
                message: e.message,
            });
        }
        _ => return Err(IdentityError::Unexpected),
    };

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| IdentityError::Write {
            path: dir.clone(),
            source,
        })?;
    write_file(&dir.join("node.key"), 0o600, key_pem.as_bytes())?;
    write_file(
        &dir.join("node.crt"),
        0o644,
        answer.certificate_pem.as_bytes(),
    )?;
    write_file(&dir.join("ca.crt"), 0o644, answer.ca_pem.as_bytes())?;
    let enrollment = Enrollment {
        name: answer.node_name,
        controller,
        labels: answer.labels,
        enrolled_at_ms: gantry_net::clock::now_ms(),
        certificate_expires_at_ms: answer.certificate_expires_at_ms,
        certificate_issued_at_ms: answer.certificate_issued_at_ms,
    };
    let mut marker = serde_json::to_vec_pretty(&enrollment).expect("enrollment serializes");
    marker.push(b'\n');
    write_file(&dir.join("enrollment.json"), 0o600, &marker)?;
    Ok(NodeIdentity {
        enrollment,
        ca_pem: answer.ca_pem,
        cert_pem: answer.certificate_pem,
        key_pem,
    })
}
