//! The fleet CLI's connection to the controller: mutual TLS with the admin identity file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_shared::protocol::{ErrorCode, Request, Response, admin};

use crate::home::{ADMIN_IDENTITY, AdminIdentity, DEFAULT_DIR, HomeError};

/// How long one admin call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("cannot reach the controller at {addr}")]
    Net {
        addr: SocketAddr,
        #[source]
        source: gantry_net::NetError,
    },
    #[error("the controller refused: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the controller answered with something unexpected")]
    Unexpected,
}

/// The identity file to use: `--identity`, else `GANTRY_IDENTITY`, else the default
/// controller directory's.
pub fn identity_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("GANTRY_IDENTITY").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(DEFAULT_DIR).join(ADMIN_IDENTITY))
}

/// A connected admin.
#[derive(Debug)]
pub struct AdminClient {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    addr: SocketAddr,
}

impl AdminClient {
    pub async fn connect(
        identity: &AdminIdentity,
        controller: Option<SocketAddr>,
    ) -> Result<Self, ClientError> {
        let addr = controller.unwrap_or(identity.controller);
        let net = |source| ClientError::Net { addr, source };
        let tls = gantry_shared::tls::client_config(
            &identity.ca_pem,
            &identity.cert_pem,
            &identity.key_pem,
        )
        .map_err(|e| net(gantry_net::NetError::Tls(e.to_string())))?;
        let endpoint = gantry_net::client_endpoint(addr, tls).map_err(net)?;
        let conn = gantry_net::connect(&endpoint, addr).await.map_err(net)?;
        Ok(Self {
            _endpoint: endpoint,
            conn,
            addr,
        })
    }

    /// Sends any request (tests use it to exercise the protocol's edges).
    pub async fn raw(&self, request: &Request) -> Result<Response, ClientError> {
        gantry_net::call(&self.conn, request, CALL_TIMEOUT)
            .await
            .map_err(|source| ClientError::Net {
                addr: self.addr,
                source,
            })
    }

    pub async fn call(&self, request: admin::Request) -> Result<admin::Response, ClientError> {
        match self.raw(&Request::Admin(request)).await? {
            Response::Admin(response) => Ok(response),
            Response::Error(e) => Err(ClientError::Refused {
                code: e.code,
                message: e.message,
            }),
            _ => Err(ClientError::Unexpected),
        }
    }
}
