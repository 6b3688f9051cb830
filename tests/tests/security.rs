//! Who may say what: each rejection the controller must make, tested over real QUIC.

use std::time::Duration;

use gantry_controller::home::AdminIdentity;
use gantry_shared::protocol::admin::{self, Role};
use gantry_shared::protocol::{ErrorCode, Request, Response, heartbeat};
use gantry_tests::{Agent, Controller, wait_for};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn controller_pin(controller: &Controller) -> String {
    let pem = std::fs::read_to_string(controller.home().join("controller.crt")).unwrap();
    gantry_controller::ca::pem_fingerprint(&pem).unwrap()
}

fn refused_code(response: Response) -> ErrorCode {
    match response {
        Response::Error(e) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn without_a_client_certificate_only_enrollment_is_possible() {
    let controller = Controller::start();
    let rt = runtime();
    rt.block_on(async {
        let tls = gantry_shared::tls::pinned_client_config(&controller_pin(&controller)).unwrap();
        let endpoint = gantry_net::client_endpoint(controller.addr, tls).unwrap();
        let conn = gantry_net::connect(&endpoint, controller.addr)
            .await
            .unwrap();
        let t = Duration::from_secs(5);
        let hb = gantry_net::call(&conn, &Request::Heartbeat(Box::default()), t)
            .await
            .unwrap();
        assert_eq!(refused_code(hb), ErrorCode::Unauthenticated);
        let ls = gantry_net::call(&conn, &Request::Admin(admin::Request::FleetList), t)
            .await
            .unwrap();
        assert_eq!(refused_code(ls), ErrorCode::Unauthenticated);
    });
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let controller = Controller::start();
    let other = Controller::start();
    let foreign = controller.call_as(&other.identity_path(), admin::Request::FleetList);
    assert!(
        foreign.is_err(),
        "a foreign CA's admin was let in: {foreign:?}"
    );
    assert!(
        controller
            .call_as(&controller.identity_path(), admin::Request::FleetList)
            .is_ok()
    );
}

#[test]
fn a_revoked_node_is_cut_off_and_stays_out() {
    let controller = Controller::start();
    let mut agent = Agent::enroll(
        &controller,
        "stolen",
        "[uplink]\nheartbeat = \"200ms\"\nmax_backoff = \"500ms\"\n",
    );
    agent.run("200ms");
    wait_for("the node to connect", Duration::from_secs(20), || {
        agent.buffer().and_then(|(_, _, c)| c.then_some(()))
    });
    let out = controller.cli_ok(&["fleet", "revoke", "stolen"]);
    assert!(out.contains("revoked"), "{out}");
    wait_for(
        "the agent to learn it is revoked",
        Duration::from_secs(20),
        || {
            agent
                .log
                .contains("the controller refuses this node's certificate")
                .then_some(())
        },
    );
    // It keeps trying, and every try is refused: three more refusals prove it stays out
    // (no test sleeps to show that something does not happen).
    let refused = controller.log.count("certificate revoked");
    wait_for(
        "the agent's next attempts to be refused too",
        Duration::from_secs(20),
        || (controller.log.count("certificate revoked") >= refused + 3).then_some(()),
    );
    assert_eq!(
        agent.buffer().map(|b| b.2),
        Some(false),
        "the revoked node stays disconnected"
    );
    assert!(controller.node("stolen").summary.revoked);
    assert!(controller.cli_ok(&["fleet", "ls"]).contains("revoked"));
    assert!(controller.log.contains("certificate revoked"));
}

#[test]
fn a_token_works_once_and_not_after_it_expires() {
    let controller = Controller::start();
    let first = Agent::enroll(&controller, "first", "");
    let token = controller.token("x=y");
    let second = Agent::enroll(&controller, "second", "");
    drop(first);
    // Reuse: `second` used a fresh token; reuse that token for a third node.
    let out = second.enroll_with(controller.addr, &token);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already enrolled"),
        "a node does not enroll twice"
    );

    let third = tempfile::tempdir().unwrap();
    let enroll = |token: &str, name: &str| {
        std::process::Command::new(gantry_tests::binary("gantry-agent"))
            .args(["enroll", "--config", "/dev/null", "--state-dir"])
            .arg(third.path().join(name))
            .args([
                "--controller",
                &controller.addr.to_string(),
                "--token",
                token,
                "--name",
                name,
            ])
            .output()
            .unwrap()
    };
    assert!(enroll(&token, "third").status.success());
    let reused = enroll(&token, "fourth");
    assert_eq!(reused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&reused.stderr)
            .contains("the join token was already used (by node third)"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );

    let short = controller
        .cli_ok(&["token", "create", "--ttl", "1s"])
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1500));
    let expired = enroll(&short, "late");
    assert_eq!(expired.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&expired.stderr).contains("the join token expired"),
        "{}",
        String::from_utf8_lossy(&expired.stderr)
    );

    let garbage = enroll("gantry-join-1.nope", "garbage");
    assert_eq!(garbage.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("not a Gantry join token"));
}

#[test]
fn roles_bound_what_admins_may_do() {
    let controller = Controller::start();
    let dir = tempfile::tempdir().unwrap();
    for role in ["viewer", "operator"] {
        let path = dir.path().join(format!("{role}.identity"));
        controller.cli_ok(&[
            "admin",
            "add",
            &format!("{role}-1"),
            "--role",
            role,
            "--out",
            path.to_str().unwrap(),
        ]);
        let as_role = |args: &[&str]| {
            std::process::Command::new(gantry_tests::binary("gantry"))
                .args(args)
                .env("GANTRY_IDENTITY", &path)
                .output()
                .unwrap()
        };
        let ls = as_role(&["fleet", "ls"]);
        assert!(ls.status.success(), "a {role} reads the fleet");
        for call in [&["token", "create"][..], &["fleet", "revoke", "any"][..]] {
            let out = as_role(call);
            assert_eq!(out.status.code(), Some(1), "{role} {call:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("needs the admin role")
                    && stderr.contains(&format!("{role}-1 has {role}")),
                "{stderr}"
            );
        }
        let identity = AdminIdentity::load(&path).unwrap();
        assert_eq!(identity.role, role.parse::<Role>().unwrap());
    }
    assert!(
        controller.log.contains("admin call refused"),
        "refusals are logged"
    );
}

/// Every admin call, with harmless arguments, and the least role the product grants it:
/// viewers read; operators push, assign and roll out; admins manage tokens, nodes and
/// admins.
fn every_admin_call() -> Vec<(admin::Request, Role)> {
    use gantry_shared::protocol::rollout::Spec;
    let id = || "r999".to_owned();
    vec![
        (admin::Request::FleetList, Role::Viewer),
        (
            admin::Request::FleetShow {
                node: "none".into(),
            },
            Role::Viewer,
        ),
        (admin::Request::FleetTop, Role::Viewer),
        (
            admin::Request::TelemetryQuery {
                node: "none".into(),
                after_seq: 0,
                limit: 1,
            },
            Role::Viewer,
        ),
        (admin::Request::BundleList, Role::Viewer),
        (admin::Request::RolloutStatus { id: None }, Role::Viewer),
        (admin::Request::ReportKpis { window_ms: 1000 }, Role::Viewer),
        (admin::Request::AuditVerify, Role::Viewer),
        (
            admin::Request::AuditReport {
                from_ms: 0,
                to_ms: 1,
                silence_ms: 1,
            },
            Role::Viewer,
        ),
        (
            admin::Request::TelemetryImport {
                file: "bm90IGFuIGV4cG9ydA==".into(),
            },
            Role::Operator,
        ),
        (
            admin::Request::BundleUpload {
                file_sha256: "not-a-digest".into(),
                size: 1,
                offset: 0,
                data: String::new(),
            },
            Role::Operator,
        ),
        (
            admin::Request::BundleCommit {
                file_sha256: "not-a-digest".into(),
                import: false,
            },
            Role::Operator,
        ),
        (
            admin::Request::BundleAssign {
                id: "sha256:none".into(),
                nodes: Vec::new(),
            },
            Role::Operator,
        ),
        (
            admin::Request::RolloutStart(Box::new(Spec {
                bundle: "none@0".into(),
                ..Spec::default()
            })),
            Role::Operator,
        ),
        (admin::Request::RolloutPause { id: id() }, Role::Operator),
        (admin::Request::RolloutResume { id: id() }, Role::Operator),
        (admin::Request::RolloutAbort { id: id() }, Role::Operator),
        (admin::Request::RolloutRollback { id: id() }, Role::Operator),
        (
            admin::Request::TokenCreate {
                labels: std::collections::BTreeMap::new(),
                ttl_s: 0,
            },
            Role::Admin,
        ),
        (
            admin::Request::NodeRevoke {
                node: "none".into(),
            },
            Role::Admin,
        ),
        (
            admin::Request::TokenRedeem(Box::new(gantry_shared::protocol::enroll::Request {
                token_id: "none".into(),
                secret: "none".into(),
                node_name: "none".into(),
                public_key: "04".into(),
            })),
            Role::Admin,
        ),
        (
            admin::Request::AdminAdd {
                name: "x".into(),
                role: Role::Viewer,
                public_key: "not-a-key".into(),
            },
            Role::Admin,
        ),
        (
            admin::Request::NodeRenew(Box::new(gantry_shared::protocol::enroll::RenewRequest {
                node_name: "none".into(),
                certificate_sha256: "none".into(),
                at_ms: 0,
                signature: "00".into(),
            })),
            Role::Admin,
        ),
        (
            admin::Request::NodeCordon {
                node: "none".into(),
                reason: "maintenance".into(),
            },
            Role::Operator,
        ),
        (
            admin::Request::NodeUncordon {
                node: "none".into(),
            },
            Role::Operator,
        ),
        (
            // Any admin may rotate its own certificate; a bad key changes nothing.
            admin::Request::AdminRotate {
                public_key: "not-a-key".into(),
            },
            Role::Viewer,
        ),
        (
            admin::Request::ModelDrift {
                model: "none".into(),
                version: None,
                since_ms: 0,
                period_ms: 300_000,
            },
            Role::Viewer,
        ),
        (
            admin::Request::ModelQuality {
                model: "none".into(),
                version: None,
                since_ms: 0,
                period_ms: 3_600_000,
            },
            Role::Viewer,
        ),
        (
            admin::Request::CaptureExport {
                model: "none".into(),
                version: None,
                after: None,
            },
            Role::Operator,
        ),
        (
            admin::Request::AuditEntries {
                before_seq: None,
                limit: 10,
                filter: String::new(),
            },
            Role::Viewer,
        ),
        (admin::Request::ConsoleLogin, Role::Viewer),
    ]
}

/// Fails to compile when an admin call is added without a line in [`every_admin_call`].
fn listed(request: &admin::Request) -> bool {
    use admin::Request as R;
    match request {
        R::TokenCreate { .. }
        | R::TokenRedeem(_)
        | R::FleetList
        | R::FleetShow { .. }
        | R::FleetTop
        | R::TelemetryQuery { .. }
        | R::NodeRevoke { .. }
        | R::NodeCordon { .. }
        | R::NodeUncordon { .. }
        | R::AdminAdd { .. }
        | R::NodeRenew(_)
        | R::AdminRotate { .. }
        | R::BundleUpload { .. }
        | R::BundleCommit { .. }
        | R::BundleList
        | R::BundleAssign { .. }
        | R::RolloutStart(_)
        | R::RolloutStatus { .. }
        | R::RolloutPause { .. }
        | R::RolloutResume { .. }
        | R::RolloutAbort { .. }
        | R::RolloutRollback { .. }
        | R::ReportKpis { .. }
        | R::TelemetryImport { .. }
        | R::AuditVerify
        | R::AuditReport { .. }
        | R::ModelDrift { .. }
        | R::ModelQuality { .. }
        | R::CaptureExport { .. }
        | R::AuditEntries { .. }
        | R::ConsoleLogin => true,
    }
}

#[test]
fn every_admin_call_is_checked_against_the_callers_role() {
    let controller = Controller::start();
    let dir = tempfile::tempdir().unwrap();
    let calls = every_admin_call();
    assert_eq!(calls.len(), 31, "one line per admin call");
    for (request, least) in &calls {
        assert!(listed(request));
        assert_eq!(request.required_role(), *least, "{}", request.name());
    }
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let path = dir.path().join(format!("{}.identity", role.as_str()));
        controller.cli_ok(&[
            "admin",
            "add",
            &format!("{}-2", role.as_str()),
            "--role",
            role.as_str(),
            "--out",
            path.to_str().unwrap(),
        ]);
        for (request, least) in &calls {
            let name = request.name();
            let answer = controller.call_as(&path, request.clone());
            let forbidden = matches!(
                &answer,
                Err(gantry_controller::client::ClientError::Refused {
                    code: ErrorCode::Forbidden,
                    ..
                })
            );
            assert_eq!(
                forbidden,
                role < *least,
                "{} calling `{name}` (needs {}): {answer:?}",
                role.as_str(),
                least.as_str()
            );
            if let Err(gantry_controller::client::ClientError::Refused { message, .. }) = &answer
                && forbidden
            {
                assert!(
                    message.contains(&format!("needs the {} role", least.as_str())),
                    "{message}"
                );
            }
        }
    }
}

#[test]
fn a_node_cannot_make_admin_calls_or_speak_for_another() {
    let controller = Controller::start();
    let agent = Agent::enroll(&controller, "honest", "");
    let id = agent.state_dir().join("identity");
    let read = |f: &str| std::fs::read_to_string(id.join(f)).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let tls = gantry_shared::tls::client_config(
            &read("ca.crt"),
            &read("node.crt"),
            &read("node.key"),
        )
        .unwrap();
        let endpoint = gantry_net::client_endpoint(controller.addr, tls).unwrap();
        let conn = gantry_net::connect(&endpoint, controller.addr)
            .await
            .unwrap();
        let t = Duration::from_secs(5);
        let r = gantry_net::call(&conn, &Request::Admin(admin::Request::FleetList), t)
            .await
            .unwrap();
        assert_eq!(refused_code(r), ErrorCode::Forbidden);
        // A heartbeat is recorded for the certificate's node; no message field can name another.
        let r = gantry_net::call(
            &conn,
            &Request::Heartbeat(Box::new(heartbeat::Request {
                buffered_records: 42,
                ..Default::default()
            })),
            t,
        )
        .await
        .unwrap();
        assert!(matches!(r, Response::Heartbeat(_)));
    });
    assert_eq!(controller.node("honest").buffered_on_node, 42);
}

#[test]
fn a_malformed_frame_fails_only_its_own_stream() {
    let controller = Controller::start();
    let identity = AdminIdentity::load(&controller.identity_path()).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let tls = gantry_shared::tls::client_config(
            &identity.ca_pem,
            &identity.cert_pem,
            &identity.key_pem,
        )
        .unwrap();
        let endpoint = gantry_net::client_endpoint(controller.addr, tls).unwrap();
        let conn = gantry_net::connect(&endpoint, controller.addr)
            .await
            .unwrap();
        for garbage in [
            &[0xff, 0xff, 0xff, 0xff][..],
            b"\x00\x00\x00\x05hello",
            b"\x00\x00\x00\x02{}",
            b"\x00\x00",
        ] {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(garbage).await.unwrap();
            send.finish().unwrap();
            let body = gantry_net::read_frame(&mut recv)
                .await
                .expect("the controller answers the bad stream");
            let response: Response = gantry_shared::protocol::decode_body(&body).unwrap();
            assert_eq!(refused_code(response), ErrorCode::BadRequest, "{garbage:?}");
        }
        // The same connection still works.
        let ok = gantry_net::call(
            &conn,
            &Request::Admin(admin::Request::FleetList),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(matches!(ok, Response::Admin(admin::Response::Nodes(_))));
    });
    assert!(controller.log.contains("malformed frame"));
}
