//! A controller that misbehaves during a bundle fetch, played by a stand-in QUIC server
//! with the controller's real certificate, against the agent's real delivery task
//! (`gantry_agent::delivery::run`). Each test is named after what the controller does;
//! in every case the agent must neither activate anything nor lose what it legitimately
//! received.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gantry_agent::delivery::{self, DeliveryConfig, SharedBundles};
use gantry_shared::protocol::delivery::{Desired, FetchRequest, StreamHeader};
use gantry_shared::protocol::{self, Request, Response};
use gantry_tests::Controller;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const SIZE: u64 = 40_000;

fn desired() -> Desired {
    Desired {
        id: format!("sha256:{}", "ab".repeat(32)),
        file_sha256: "cd".repeat(32),
        size: SIZE,
        model: "m".to_owned(),
    }
}

/// What the stand-in sends after reading a fetch request.
type Behaviour = fn(&FetchRequest) -> (Response, Vec<u8>);

struct Setup {
    runtime: tokio::runtime::Runtime,
    _controller: Controller,
    state_dir: tempfile::TempDir,
    server: quinn::Endpoint,
    client: quinn::Endpoint,
}

impl Setup {
    fn new() -> Self {
        let controller = Controller::start();
        let (server_tls, client_tls) = controller.tls_pair();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let entered = runtime.enter();
        let server =
            gantry_net::server_endpoint("127.0.0.1:0".parse().unwrap(), server_tls).unwrap();
        let addr = server.local_addr().unwrap();
        let client = gantry_net::client_endpoint(addr, client_tls).unwrap();
        drop(entered);
        Self {
            runtime,
            _controller: controller,
            state_dir: tempfile::tempdir().unwrap(),
            server,
            client,
        }
    }

    fn partial(&self) -> PathBuf {
        self.state_dir
            .path()
            .join("downloads")
            .join(format!("{}.partial", desired().file_sha256))
    }

    /// One connection: the stand-in answers each fetch with `behaviour`; the agent's
    /// delivery task runs until it ends by itself or `until` holds for its state. Returns
    /// the state and the offsets the agent asked for.
    async fn fetch(
        &self,
        behaviour: Behaviour,
        until: fn(&SharedBundles) -> bool,
    ) -> (SharedBundles, Vec<u64>) {
        let server = self.server.clone();
        let stand_in = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let mut offsets = Vec::new();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let body = gantry_net::read_frame(&mut recv).await.unwrap();
                let Ok(Request::BundleFetch(req)) = protocol::decode_body(&body) else {
                    panic!("the agent sent something other than a fetch");
                };
                offsets.push(req.offset);
                let (header, bytes) = behaviour(&req);
                send.write_all(&protocol::encode(&header).unwrap())
                    .await
                    .unwrap();
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
                let _ = send.stopped().await;
            }
            offsets
        });
        let addr = self.server.local_addr().unwrap();
        let conn = gantry_net::connect(&self.client, addr).await.unwrap();
        let config = DeliveryConfig {
            state_dir: self.state_dir.path().to_owned(),
            trust_policy: self.state_dir.path().join("trust.json"),
            onnxruntime: PathBuf::from("/nonexistent/libonnxruntime.so"),
            snapshots: watch::channel(None).1,
        };
        let (_tx, rx) = watch::channel(vec![desired()]);
        let state = SharedBundles::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(delivery::run(
            config,
            conn.clone(),
            rx,
            Arc::clone(&state),
            stop.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !task.is_finished() && !until(&state) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the delivery task neither ended nor reached the expected state: {:?}",
                state.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
        conn.close(0u32.into(), b"done");
        (state, stand_in.await.unwrap())
    }
}

fn refused(state: &SharedBundles) -> bool {
    state.lock().unwrap().failed.is_some()
}

fn never(_: &SharedBundles) -> bool {
    false
}

fn header(offset: u64, size: u64) -> Response {
    Response::BundleStream(StreamHeader { offset, size })
}

#[test]
fn controller_sending_more_bytes_than_announced_is_refused_and_the_download_discarded() {
    let setup = Setup::new();
    setup.runtime.block_on(async {
        let (state, _) = setup
            .fetch(
                |req| (header(req.offset, SIZE), vec![7u8; SIZE as usize + 1]),
                refused,
            )
            .await;
        let state = state.lock().unwrap();
        let failed = state.failed.as_ref().expect("refused");
        assert!(failed.reason.contains("more than"), "{}", failed.reason);
        assert!(state.active.is_none() && state.downloading.is_none());
    });
    assert!(!setup.partial().exists(), "the download was kept");
}

#[test]
fn controller_announcing_another_size_or_offset_is_refused_before_any_byte_is_kept() {
    for behaviour in [
        (|req: &FetchRequest| (header(req.offset, SIZE + 5), vec![1u8; 100])) as Behaviour,
        |req| (header(req.offset + 4096, SIZE), vec![1u8; 100]),
    ] {
        let setup = Setup::new();
        setup.runtime.block_on(async {
            let (state, _) = setup.fetch(behaviour, refused).await;
            let failed = state.lock().unwrap().failed.clone().expect("refused");
            assert!(failed.reason.contains("offered bytes"), "{}", failed.reason);
        });
        let kept = std::fs::metadata(setup.partial()).map_or(0, |m| m.len());
        assert_eq!(kept, 0, "bytes of a mismatched stream were kept");
    }
}

#[test]
fn controller_ending_the_stream_early_leaves_a_download_that_resumes() {
    let setup = Setup::new();
    setup.runtime.block_on(async {
        // The first connection delivers 10 000 bytes, then finishes the stream: a broken
        // transfer, not a refusal.
        let (state, offsets) = setup
            .fetch(|req| (header(req.offset, SIZE), vec![3u8; 10_000]), never)
            .await;
        assert_eq!(offsets, [0]);
        assert!(
            state.lock().unwrap().failed.is_none(),
            "a short stream must not count as a refusal"
        );
        assert_eq!(std::fs::metadata(setup.partial()).unwrap().len(), 10_000);

        // The next connection asks from the last whole block received.
        let (_, offsets) = setup
            .fetch(
                |req| {
                    (
                        header(req.offset, SIZE),
                        vec![3u8; (SIZE - req.offset) as usize],
                    )
                },
                refused,
            )
            .await;
        assert_eq!(offsets, [8192]);
    });
}

#[test]
fn controller_refusing_the_fetch_is_reported_with_its_reason() {
    let setup = Setup::new();
    setup.runtime.block_on(async {
        let (state, _) = setup
            .fetch(
                |_| {
                    (
                        Response::Error(protocol::ErrorResponse::new(
                            protocol::ErrorCode::NotFound,
                            "bundle is not assigned to node n1",
                        )),
                        Vec::new(),
                    )
                },
                refused,
            )
            .await;
        let failed = state.lock().unwrap().failed.clone().expect("refused");
        assert!(failed.reason.contains("not assigned"), "{}", failed.reason);
    });
}
