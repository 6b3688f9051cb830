//! The fleet CLI's connection to the controller: mutual TLS with the admin identity file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use gantry_shared::protocol::admin::{Cordon, NodeDetail, NodeLatest, NodeSummary, Role};
use gantry_shared::protocol::audit::{Report, Verification};
use gantry_shared::protocol::delivery::BundleInfo;
use gantry_shared::protocol::rollout::Kpis;
use gantry_shared::protocol::{ErrorCode, Request, Response, admin, enroll};

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
    #[error("the controller answered `{call}` with something unexpected (a different version?)")]
    Unexpected { call: &'static str },
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

    /// Any admin call; the typed methods below are the usual way in.
    pub async fn call(&self, request: admin::Request) -> Result<admin::Response, ClientError> {
        let call = request.name();
        match self.raw(&Request::Admin(request)).await? {
            Response::Admin(response) => Ok(response),
            Response::Error(e) => Err(ClientError::Refused {
                code: e.code,
                message: e.message,
            }),
            _ => Err(ClientError::Unexpected { call }),
        }
    }
}

/// A join token (`token create`).
#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    pub expires_at_ms: u64,
}

/// A new admin certificate (`admin add`, `admin rotate`).
#[derive(Debug, Clone)]
pub struct AdminCertificate {
    pub name: String,
    pub role: Role,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub expires_at_ms: Option<u64>,
}

/// An enrollment by file (`token redeem`).
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub response: enroll::Response,
    pub controller_certificate_pem: String,
    pub controller_signature: String,
}

/// A telemetry export taken in (`telemetry import`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub node: String,
    pub from_seq: u64,
    pub to_seq: u64,
    pub records: u64,
    pub stored: u64,
    pub duplicates: u64,
}

/// One method per admin call, each returning what that call answers; any other answer
/// is [`ClientError::Unexpected`] naming the call.
impl AdminClient {
    async fn answer<T>(
        &self,
        request: admin::Request,
        pick: impl FnOnce(admin::Response) -> Option<T>,
    ) -> Result<T, ClientError> {
        let call = request.name();
        pick(self.call(request).await?).ok_or(ClientError::Unexpected { call })
    }

    pub async fn token_create(
        &self,
        labels: BTreeMap<String, String>,
        ttl_s: u64,
    ) -> Result<Token, ClientError> {
        self.answer(admin::Request::TokenCreate { labels, ttl_s }, |r| match r {
            admin::Response::Token {
                token,
                expires_at_ms,
            } => Some(Token {
                token,
                expires_at_ms,
            }),
            _ => None,
        })
        .await
    }

    pub async fn token_redeem(&self, request: enroll::Request) -> Result<Redeemed, ClientError> {
        self.answer(
            admin::Request::TokenRedeem(Box::new(request)),
            |r| match r {
                admin::Response::Redeemed {
                    response,
                    controller_certificate_pem,
                    controller_signature,
                } => Some(Redeemed {
                    response: *response,
                    controller_certificate_pem,
                    controller_signature,
                }),
                _ => None,
            },
        )
        .await
    }

    pub async fn fleet_list(&self) -> Result<Vec<NodeSummary>, ClientError> {
        self.answer(admin::Request::FleetList, |r| match r {
            admin::Response::Nodes(nodes) => Some(nodes),
            _ => None,
        })
        .await
    }

    pub async fn fleet_show(&self, node: String) -> Result<NodeDetail, ClientError> {
        self.answer(admin::Request::FleetShow { node }, |r| match r {
            admin::Response::Node(detail) => Some(*detail),
            _ => None,
        })
        .await
    }

    pub async fn fleet_top(&self) -> Result<Vec<NodeLatest>, ClientError> {
        self.answer(admin::Request::FleetTop, |r| match r {
            admin::Response::Top(nodes) => Some(nodes),
            _ => None,
        })
        .await
    }

    /// Revokes a node; answers its name.
    pub async fn node_revoke(&self, node: String) -> Result<String, ClientError> {
        self.answer(admin::Request::NodeRevoke { node }, |r| match r {
            admin::Response::Revoked { node } => Some(node),
            _ => None,
        })
        .await
    }

    /// Cordons a node; answers its cordon.
    pub async fn node_cordon(
        &self,
        node: String,
        reason: String,
    ) -> Result<Option<Cordon>, ClientError> {
        self.answer(admin::Request::NodeCordon { node, reason }, |r| match r {
            admin::Response::Cordoned { cordon, .. } => Some(cordon),
            _ => None,
        })
        .await
    }

    pub async fn node_uncordon(&self, node: String) -> Result<(), ClientError> {
        self.answer(admin::Request::NodeUncordon { node }, |r| match r {
            admin::Response::Cordoned { .. } => Some(()),
            _ => None,
        })
        .await
    }

    pub async fn node_renew(
        &self,
        request: enroll::RenewRequest,
    ) -> Result<enroll::Response, ClientError> {
        self.answer(admin::Request::NodeRenew(Box::new(request)), |r| match r {
            admin::Response::NodeRenewed(response) => Some(*response),
            _ => None,
        })
        .await
    }

    /// `admin add` and `admin rotate`: both answer a certificate.
    pub async fn admin_certificate(
        &self,
        request: admin::Request,
    ) -> Result<AdminCertificate, ClientError> {
        self.answer(request, |r| match r {
            admin::Response::AdminAdded {
                name,
                role,
                certificate_pem,
                ca_pem,
                expires_at_ms,
            } => Some(AdminCertificate {
                name,
                role,
                certificate_pem,
                ca_pem,
                expires_at_ms,
            }),
            _ => None,
        })
        .await
    }

    /// One chunk of a push at `offset` (`u64::MAX` with no data asks what is held);
    /// answers the bytes the controller holds.
    pub async fn bundle_upload(
        &self,
        file_sha256: String,
        size: u64,
        offset: u64,
        data: String,
    ) -> Result<u64, ClientError> {
        let request = admin::Request::BundleUpload {
            file_sha256,
            size,
            offset,
            data,
        };
        self.answer(request, |r| match r {
            admin::Response::Uploaded { received } => Some(received),
            _ => None,
        })
        .await
    }

    pub async fn bundle_commit(
        &self,
        file_sha256: String,
        import: bool,
    ) -> Result<BundleInfo, ClientError> {
        self.answer(
            admin::Request::BundleCommit {
                file_sha256,
                import,
            },
            |r| match r {
                admin::Response::Pushed(info) => Some(*info),
                _ => None,
            },
        )
        .await
    }

    pub async fn bundle_list(&self) -> Result<Vec<BundleInfo>, ClientError> {
        self.answer(admin::Request::BundleList, |r| match r {
            admin::Response::Bundles(bundles) => Some(bundles),
            _ => None,
        })
        .await
    }

    /// Assigns a bundle; answers its id, the nodes and the model it is theirs for.
    pub async fn bundle_assign(
        &self,
        id: String,
        nodes: Vec<String>,
    ) -> Result<(String, Vec<String>, String), ClientError> {
        self.answer(admin::Request::BundleAssign { id, nodes }, |r| match r {
            admin::Response::Assigned { id, nodes, model } => Some((id, nodes, model)),
            _ => None,
        })
        .await
    }

    /// Takes in a telemetry export (the file, base64).
    pub async fn telemetry_import(&self, file: String) -> Result<Imported, ClientError> {
        self.answer(admin::Request::TelemetryImport { file }, |r| match r {
            admin::Response::TelemetryImported {
                node,
                from_seq,
                to_seq,
                records,
                stored,
                duplicates,
            } => Some(Imported {
                node,
                from_seq,
                to_seq,
                records,
                stored,
                duplicates,
            }),
            _ => None,
        })
        .await
    }

    pub async fn report_kpis(&self, window_ms: u64) -> Result<Kpis, ClientError> {
        self.answer(admin::Request::ReportKpis { window_ms }, |r| match r {
            admin::Response::Kpis(kpis) => Some(*kpis),
            _ => None,
        })
        .await
    }

    pub async fn model_drift(
        &self,
        model: &str,
        version: Option<&str>,
        since_ms: u64,
        period_ms: u64,
    ) -> Result<gantry_shared::protocol::monitoring::DriftReport, ClientError> {
        let request = admin::Request::ModelDrift {
            model: model.to_owned(),
            version: version.map(str::to_owned),
            since_ms,
            period_ms,
        };
        self.answer(request, |r| match r {
            admin::Response::Drift(report) => Some(*report),
            _ => None,
        })
        .await
    }

    /// A page of model `model`'s captured pairs after `after`.
    /// A one-time console sign-in: `(link, code, expires_at_ms)`.
    pub async fn console_login(&self) -> Result<(String, String, u64), ClientError> {
        self.answer(admin::Request::ConsoleLogin, |r| match r {
            admin::Response::ConsoleLogin {
                url,
                code,
                expires_at_ms,
            } => Some((url, code, expires_at_ms)),
            _ => None,
        })
        .await
    }

    pub async fn capture_page(
        &self,
        model: &str,
        version: Option<&str>,
        after: Option<gantry_shared::protocol::monitoring::CaptureCursor>,
    ) -> Result<gantry_shared::protocol::monitoring::CapturePage, ClientError> {
        let request = admin::Request::CaptureExport {
            model: model.to_owned(),
            version: version.map(str::to_owned),
            after,
        };
        self.answer(request, |r| match r {
            admin::Response::Captures(page) => Some(*page),
            _ => None,
        })
        .await
    }

    pub async fn model_quality(
        &self,
        model: &str,
        version: Option<&str>,
        since_ms: u64,
        period_ms: u64,
    ) -> Result<gantry_shared::protocol::monitoring::QualityReport, ClientError> {
        let request = admin::Request::ModelQuality {
            model: model.to_owned(),
            version: version.map(str::to_owned),
            since_ms,
            period_ms,
        };
        self.answer(request, |r| match r {
            admin::Response::Quality(report) => Some(*report),
            _ => None,
        })
        .await
    }

    pub async fn audit_verify(&self) -> Result<Verification, ClientError> {
        self.answer(admin::Request::AuditVerify, |r| match r {
            admin::Response::AuditVerified(v) => Some(v),
            _ => None,
        })
        .await
    }

    pub async fn audit_report(
        &self,
        from_ms: u64,
        to_ms: u64,
        silence_ms: u64,
    ) -> Result<Report, ClientError> {
        let request = admin::Request::AuditReport {
            from_ms,
            to_ms,
            silence_ms,
        };
        self.answer(request, |r| match r {
            admin::Response::AuditReport(report) => Some(*report),
            _ => None,
        })
        .await
    }
}
