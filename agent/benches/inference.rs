//! The inference endpoint against bare ONNX Runtime, in the same run (DESIGN.md):
//!
//! 1. throughput with 1, 4 and 16 concurrent clients (target ≥ 90 % of bare ONNX Runtime
//!    at the same parallelism): `bench_compute` (a few ms per run), 4 sessions of one
//!    intra-op thread on both sides, HTTP with binary tensors;
//! 2. time added per request on a µs-scale model (`tiny_mlp`), sequential, over HTTP
//!    binary and over gRPC (target ≤ 50 µs): medians, beside a health call's round trip
//!    through the same server (what the transport alone costs on this host), as the
//!    host schedules the client and the agent and with both on one core;
//! 3. JSON against binary tensors for a 1 MiB tensor in and out (`identity_1m`);
//! 4. dynamic batching's gain: 16 clients of one row on `batch_mlp` served plainly and
//!    with a dynamic batcher (max 16 rows, 2 ms delay);
//! 5. drift monitoring's cost (target ≤ 2 % on a ms-scale model): the same model served
//!    with and without a reference profile, sequential medians, on `bench_compute` (one
//!    256-wide input, profiled by row means) and `tiny_mlp` (8 columns and 3 outputs,
//!    added µs); the profiler alone in-process per request; resident memory per
//!    profiled feature with full sketches.
//!
//! Bare: the same library, sessions on the same model, called in-process. Endpoint:
//! `gantry-agent run` serving the models imported as signed bundles, called over loopback
//! keep-alive connections. Rounds alternate between the two and the best of each is
//! kept, so the host's noise hits both alike. The clients share the host's cores with
//! the agent (and, bare, with the sessions): on a 2-core machine, the figures say so.
//!
//! Run: `scripts/bench.sh`, or `GANTRY_ONNXRUNTIME=… cargo bench -p gantry-agent --bench inference`
//! (`-- added` for one part: `throughput`, `added`, `json`, `batching`, `monitoring`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gantry_agent::inference::{self, Model, Threads};
use gantry_agent::serving::grpc_proto as proto;
use gantry_shared::bundle::manifest::{
    DriftMetric, DynamicBatching, FileEntry, Manifest, ModelEntry, Monitoring, Provenance,
    Requirements, Tensor,
};
use gantry_shared::bundle::policy::{SignedPolicy, TrustPolicy, TrustedKey};
use gantry_shared::bundle::{self, onnx, signing};
use gantry_shared::monitoring::profile::{Profile, ReferenceBuilder, Side, WindowProfiler};
use gantry_shared::tensor::TensorData;
use prost::Message as _;
use sha2::{Digest, Sha256};

const AGENT: &str = env!("CARGO_BIN_EXE_gantry-agent");
/// Alternating measurement rounds; the best of each side is reported.
const ROUNDS: u32 = 3;
/// Sessions on both sides of the throughput comparison.
const SESSIONS: usize = 4;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models")
}

fn manifest_for(model: &str, name: &str, requirements: Requirements) -> (Manifest, Vec<u8>) {
    let bytes = std::fs::read(models().join(format!("{model}.onnx"))).unwrap();
    let sig = onnx::read_signature(&bytes[..]).unwrap();
    let manifest = Manifest {
        schema: 1,
        name: name.into(),
        version: "1.0.0".into(),
        created_at: "2026-12-02T00:00:00Z".into(),
        files: vec![FileEntry {
            path: "model.onnx".into(),
            size: bytes.len() as u64,
            sha256: signing::to_hex(&Sha256::digest(&bytes)),
        }],
        model: ModelEntry {
            format: "onnx".into(),
            entry: "model.onnx".into(),
            inputs: sig.inputs,
            outputs: sig.outputs,
        },
        golden: vec![],
        provenance: Provenance::default(),
        requirements,
        monitoring: None,
        quality: None,
    };
    (manifest, bytes)
}

/// Where the benchmark's monitored bundles keep their reference profile.
const PROFILE_PATH: &str = "monitoring/reference-profile.json";

/// A reference profile for `manifest`'s model: 1000 rows of varied inputs and outputs
/// of the shapes the model declares (a batch of one).
fn reference_for(manifest: &Manifest) -> Profile {
    let mut builder = ReferenceBuilder::default();
    for (side, specs) in [
        (Side::Input, &manifest.model.inputs),
        (Side::Output, &manifest.model.outputs),
    ] {
        for spec in specs {
            let mut shape: Vec<u64> = spec
                .shape
                .iter()
                .map(|d| match d {
                    gantry_shared::bundle::manifest::Dim::Fixed(n) => *n,
                    gantry_shared::bundle::manifest::Dim::Named(_) => 1,
                })
                .collect();
            shape[0] = 1000;
            let n = shape.iter().product::<u64>() as usize;
            let data = TensorData::Float32(
                (0..n)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect(),
            );
            builder
                .add(side, &spec.name, &Tensor { shape, data }, None)
                .unwrap();
        }
    }
    builder.finish()
}

fn write_monitored_bundle(path: &Path, model: &str, name: &str) {
    let (mut manifest, bytes) = manifest_for(model, name, Requirements::default());
    let profile = reference_for(&manifest).to_vec();
    manifest.files.push(FileEntry {
        path: PROFILE_PATH.into(),
        size: profile.len() as u64,
        sha256: signing::to_hex(&Sha256::digest(&profile)),
    });
    manifest.monitoring = Some(Monitoring {
        reference_profile: PROFILE_PATH.into(),
        drift_metric: DriftMetric::Psi,
        drift_threshold: 0.25,
    });
    let manifest_bytes = manifest.to_bytes().unwrap();
    let sigs = vec![bundle::sign_manifest(&key(), &manifest_bytes)];
    let out = bundle::write(Vec::new(), &manifest_bytes, &sigs, &mut |entry| {
        let content = if entry.path == PROFILE_PATH {
            profile.clone()
        } else {
            bytes.clone()
        };
        Ok(Box::new(std::io::Cursor::new(content)))
    })
    .unwrap();
    std::fs::write(path, out).unwrap();
}

fn write_bundle(path: &Path, model: &str, name: &str, requirements: Requirements) {
    let (manifest, bytes) = manifest_for(model, name, requirements);
    let manifest_bytes = manifest.to_bytes().unwrap();
    let sigs = vec![bundle::sign_manifest(&key(), &manifest_bytes)];
    let out = bundle::write(Vec::new(), &manifest_bytes, &sigs, &mut |_| {
        Ok(Box::new(std::io::Cursor::new(bytes.clone())))
    })
    .unwrap();
    std::fs::write(path, out).unwrap();
}

fn write_policy(path: &Path) {
    let public = key().verifying_key();
    let mut policy = SignedPolicy::new(TrustPolicy {
        schema: 1,
        version: 1,
        threshold: 1,
        keys: vec![TrustedKey {
            id: signing::key_id(&public),
            name: "bench".into(),
            public_key: signing::to_hex(public.as_bytes()),
            not_before: None,
            not_after: None,
        }],
        revoked: vec![],
        golden: None,
    })
    .unwrap();
    policy.sign(&key()).unwrap();
    std::fs::write(path, policy.to_bytes()).unwrap();
}

/// A request body: JSON, or a JSON header with the tensor's bytes after it.
struct Body {
    bytes: Vec<u8>,
    header: Option<usize>,
}

fn body(shape: &[u64], values: &[f32], binary: bool) -> Body {
    let shape = format!("{shape:?}");
    if binary {
        let header = format!(
            r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"parameters":{{"binary_data_output":true}}}}"#,
            values.len() * 4
        );
        let mut bytes = header.clone().into_bytes();
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Body {
            bytes,
            header: Some(header.len()),
        }
    } else {
        let data: Vec<String> = values.iter().map(|v| f64::from(*v).to_string()).collect();
        Body {
            bytes: format!(
                r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"FP32","data":[{}]}}]}}"#,
                data.join(",")
            )
            .into_bytes(),
            header: None,
        }
    }
}

/// A keep-alive HTTP/1.1 client for one endpoint.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn post(&mut self, path: &str, body: &Body) -> (u16, Vec<u8>) {
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
            body.bytes.len()
        );
        if let Some(n) = body.header {
            let _ = write!(
                head,
                "Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {n}\r\n"
            );
        } else {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(&body.bytes).unwrap();
        self.response()
    }

    fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        self.writer.write_all(head.as_bytes()).unwrap();
        self.response()
    }

    fn response(&mut self) -> (u16, Vec<u8>) {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut answer = vec![0; length];
        self.reader.read_exact(&mut answer).unwrap();
        (status, answer)
    }
}

/// A unary gRPC caller of `ModelInfer` over one HTTP/2 connection.
struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    send: h2::client::SendRequest<bytes::Bytes>,
}

impl GrpcClient {
    fn connect(port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let send = runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            tcp.set_nodelay(true).unwrap();
            let (send, connection) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(async move {
                let _ = connection.await;
            });
            send
        });
        Self { runtime, send }
    }

    fn infer(&mut self, request: &[u8]) -> Vec<u8> {
        self.call("ModelInfer", request)
    }

    /// A unary call of `method` with an encoded request; the encoded answer.
    fn call(&mut self, method: &str, request: &[u8]) -> Vec<u8> {
        let send = self.send.clone();
        let path = format!("/inference.GRPCInferenceService/{method}");
        self.runtime.block_on(async move {
            let mut send = send.ready().await.unwrap();
            let http = http::Request::post(path)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (response, mut stream) = send.send_request(http, false).unwrap();
            let mut framed = Vec::with_capacity(request.len() + 5);
            framed.push(0);
            framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
            framed.extend_from_slice(request);
            stream.send_data(framed.into(), true).unwrap();
            let mut body = response.await.unwrap().into_body();
            let mut answer = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                answer.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await.unwrap().unwrap_or_default();
            assert_eq!(
                trailers.get("grpc-status").map(http::HeaderValue::as_bytes),
                Some(&b"0"[..]),
                "{trailers:?}"
            );
            answer.split_off(5)
        })
    }
}

fn grpc_request(model: &str, shape: &[u64], values: &[f32]) -> Vec<u8> {
    proto::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: shape.iter().map(|&d| d.cast_signed()).collect(),
            ..Default::default()
        }],
        raw_input_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Bare sessions of `model`, shared by client threads as the agent shares its own.
fn bare_sessions(model: &str, sessions: usize) -> Arc<Vec<Mutex<Model>>> {
    let (manifest, _) = manifest_for(model, model, Requirements::default());
    Arc::new(
        (0..sessions)
            .map(|_| {
                Mutex::new(
                    Model::load(
                        &models().join(format!("{model}.onnx")),
                        &manifest.model,
                        &manifest.requirements,
                        inference::Hardware::default(),
                        Threads {
                            intra_op: 1,
                            inter_op: 0,
                        },
                    )
                    .unwrap(),
                )
            })
            .collect(),
    )
}

/// Requests per second of `clients` threads, each calling `call` for `time`.
fn throughput<C: Send + 'static>(
    clients: usize,
    time: Duration,
    make: impl Fn(usize) -> C,
    call: impl Fn(&mut C) + Send + Sync + Clone + 'static,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let mut state = make(i);
            let (done, stop, call) = (Arc::clone(&done), Arc::clone(&stop), call.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    call(&mut state);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    n as f64 / elapsed
}

/// The median time of one call, over [`ROUNDS`] × `runs` calls: the host's hiccups
/// (a shared 2-core VM's are tens of µs) move a mean, not the typical call.
fn per_call(runs: u32, mut call: impl FnMut()) -> f64 {
    let mut times = Vec::with_capacity((ROUNDS * runs) as usize);
    for _ in 0..ROUNDS * runs {
        let started = Instant::now();
        call();
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let library = std::env::var_os("GANTRY_ONNXRUNTIME").map(PathBuf::from).expect(
        "GANTRY_ONNXRUNTIME is not set: run scripts/bench.sh, which fetches ONNX Runtime's library",
    );
    inference::init(&library).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_policy(&dir.path().join("trust.json"));
    let (port, grpc_port) = (free_port(), free_port());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[inference]\nonnxruntime = \"{}\"\nlisten = \"127.0.0.1:{port}\"\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\ninstances = {SESSIONS}\nintra_op_threads = 1\n[trust]\npolicy = \"{}\"\n[nvml]\nlibrary = \"/nonexistent/libnvidia-ml.so.1\"\n",
            library.display(),
            dir.path().join("trust.json").display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let batched = Requirements {
        dynamic_batching: Some(DynamicBatching {
            max_batch_size: 16,
            max_queue_delay_us: 2000,
            ..DynamicBatching::default()
        }),
        ..Requirements::default()
    };
    for (model, name, requirements) in [
        ("bench_compute", "bench-compute", Requirements::default()),
        ("tiny_mlp", "tiny-mlp", Requirements::default()),
        ("identity_1m", "identity-1m", Requirements::default()),
        ("batch_mlp", "batch-mlp", Requirements::default()),
        ("batch_mlp", "batch-mlp-batched", batched),
        (
            "bench_compute",
            "bench-compute-monitored",
            Requirements::default(),
        ),
        ("tiny_mlp", "tiny-mlp-monitored", Requirements::default()),
    ] {
        let file = dir.path().join(format!("{name}.gbundle"));
        if name.ends_with("-monitored") {
            write_monitored_bundle(&file, model, name);
        } else {
            write_bundle(&file, model, name, requirements);
        }
        let out = Command::new(AGENT)
            .arg("import")
            .arg(&file)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let mut agent: Child = Command::new(AGENT)
        .args([
            "run",
            "--kernel-log",
            "",
            "--metrics-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .env("GANTRY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served = TcpStream::connect(("127.0.0.1", port)).is_ok()
            && [
                "bench-compute",
                "tiny-mlp",
                "identity-1m",
                "batch-mlp",
                "batch-mlp-batched",
                "bench-compute-monitored",
                "tiny-mlp-monitored",
            ]
            .iter()
            .all(|m| {
                let probe = body(&[1, 1], &[0.0], false);
                let (status, _) =
                    Client::connect(port).post(&format!("/v2/models/{m}/infer"), &probe);
                // 400: the model serves and refused the probe's shape.
                status == 400
            });
        if served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint never served every model"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!();
    println!(
        "inference endpoint vs bare ONNX Runtime, same library, {cores} cores, best of {ROUNDS} alternating rounds"
    );

    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    if wanted("throughput") {
        throughput_section(port);
    }
    if wanted("added") {
        added_section(port, grpc_port, agent.id());
    }
    if wanted("json") {
        json_section(port);
    }
    if wanted("monitoring") {
        monitoring_section(port);
    }
    if wanted("batching") {
        batching_section(port);
    }

    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
}

/// Part 1, throughput at the same parallelism.
fn throughput_section(port: u16) {
    let compute_in = vec![1.0f32; 256];
    let compute = Arc::new(body(&[1, 256], &compute_in, true));
    println!();
    println!(
        "throughput, bench_compute, {SESSIONS} sessions x 1 intra-op thread, HTTP binary tensors (target >= 90 %)"
    );
    println!(
        "{:>8} {:>14} {:>14} {:>8}",
        "clients", "bare req/s", "endpoint req/s", "ratio"
    );
    let bare = bare_sessions("bench_compute", SESSIONS);
    let tensor = Tensor {
        shape: vec![1, 256],
        data: TensorData::Float32(compute_in.clone()),
    };
    for clients in [1usize, 4, 16] {
        let (mut best_bare, mut best_endpoint) = (0.0f64, 0.0f64);
        for _ in 0..ROUNDS {
            let (sessions, tensor) = (Arc::clone(&bare), tensor.clone());
            best_bare = best_bare.max(throughput(
                clients,
                Duration::from_secs(2),
                |i| i,
                move |i: &mut usize| {
                    sessions[*i % SESSIONS]
                        .lock()
                        .unwrap()
                        .run(vec![("x".to_owned(), tensor.clone())])
                        .unwrap();
                },
            ));
            let compute = Arc::clone(&compute);
            best_endpoint = best_endpoint.max(throughput(
                clients,
                Duration::from_secs(2),
                |_| Client::connect(port),
                move |c: &mut Client| {
                    assert_eq!(c.post("/v2/models/bench-compute/infer", &compute).0, 200);
                },
            ));
        }
        let ratio = best_endpoint / best_bare * 100.0;
        println!(
            "{clients:>8} {best_bare:>14.0} {best_endpoint:>14.0} {ratio:>7.1}% {}",
            if ratio >= 90.0 { "met" } else { "MISSED" }
        );
    }
}

/// Part 2, added time per request on a µs-scale model, beside what the transport alone
/// costs here (a health call: one loopback round trip through the same server). Twice:
/// as the host schedules it, and with the client and the agent on one core, where a
/// wake-up of the other side is a context switch rather than a wake-up of another core
/// (which a VM's halted vCPU makes tens of µs): the endpoint's own cost.
fn added_section(port: u16, grpc_port: u16, agent: u32) {
    println!();
    println!("added per request, tiny_mlp, sequential, medians (target <= 50 us)");
    let mlp_in: Vec<f32> = (0..8).map(|i| i as f32 / 8.0).collect();
    let bare = bare_sessions("tiny_mlp", 1);
    let mlp_tensor = Tensor {
        shape: vec![1, 8],
        data: TensorData::Float32(mlp_in.clone()),
    };
    let mut client = Client::connect(port);
    let mlp_binary = body(&[1, 8], &mlp_in, true);
    let mut grpc = GrpcClient::connect(grpc_port);
    let request = grpc_request("tiny-mlp", &[1, 8], &mlp_in);
    let answer = proto::ModelInferResponse::decode(&grpc.infer(&request)[..]).unwrap();
    assert_eq!(answer.raw_output_contents[0].len(), 12, "3 FP32 outputs");
    let live = proto::ServerLiveRequest::default().encode_to_vec();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for pinned in [false, true] {
        if pinned && !(pin(std::process::id(), "0") && pin(agent, "0")) {
            println!("  (not measured on one core: taskset could not pin the processes)");
            break;
        }
        let bare_s = per_call(2000, || {
            bare[0]
                .lock()
                .unwrap()
                .run(vec![("x".to_owned(), mlp_tensor.clone())])
                .unwrap();
        });
        let http_s = per_call(2000, || {
            assert_eq!(client.post("/v2/models/tiny-mlp/infer", &mlp_binary).0, 200);
        });
        let grpc_s = per_call(2000, || {
            grpc.infer(&request);
        });
        // The same servers answering health: a round trip without a model.
        let http_floor = per_call(2000, || {
            assert_eq!(client.get("/v2/health/live").0, 200);
        });
        let grpc_floor = per_call(2000, || {
            grpc.call("ServerLive", &live);
        });
        println!(
            "  {}: bare ONNX Runtime {:.1} us per run",
            if pinned {
                "client and agent on one core"
            } else {
                "as the host schedules them"
            },
            bare_s * 1e6
        );
        for (how, s, floor) in [
            ("HTTP binary", http_s, http_floor),
            ("gRPC", grpc_s, grpc_floor),
        ] {
            let added = (s - bare_s) * 1e6;
            println!(
                "    {how:<12} {:>7.1} us per request, {added:>6.1} us added {} (a health call's round trip: {:.1} us)",
                s * 1e6,
                if added <= 50.0 { "met" } else { "MISSED" },
                floor * 1e6
            );
        }
    }
    let all = format!("0-{}", cores - 1);
    pin(std::process::id(), &all);
    pin(agent, &all);
}

fn monitoring_section(port: u16) {
    println!();
    println!(
        "drift monitoring, the same model with and without a reference profile, sequential medians (target <= 2 %)"
    );
    let mut client = Client::connect(port);
    for (model, shape, runs) in [
        ("bench-compute", vec![1u64, 256], 300u32),
        ("tiny-mlp", vec![1, 8], 3000),
    ] {
        let n = shape.iter().product::<u64>() as usize;
        let values: Vec<f32> = (0..n).map(|i| ((i * 31) % 97) as f32 / 97.0).collect();
        let request = body(&shape, &values, true);
        let (plain_path, monitored_path) = (
            format!("/v2/models/{model}/infer"),
            format!("/v2/models/{model}-monitored/infer"),
        );
        // Alternate the two, so the host's noise hits both alike.
        let (mut plain, mut monitored) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS * 2 {
            plain.push(per_call(runs / 2, || {
                assert_eq!(client.post(&plain_path, &request).0, 200);
            }));
            monitored.push(per_call(runs / 2, || {
                assert_eq!(client.post(&monitored_path, &request).0, 200);
            }));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (p, m) = (median(&mut plain), median(&mut monitored));
        let added = (m - p) * 1e6;
        let share = (m - p) / p * 100.0;
        println!(
            "  {model:<14} {:>8.1} us plain, {:>8.1} us monitored: {added:>6.1} us added ({share:+.2} %){}",
            p * 1e6,
            m * 1e6,
            if model == "bench-compute" {
                if share <= 2.0 { " met" } else { " MISSED" }
            } else {
                ""
            }
        );
    }
    // The profiler alone, as the agent calls it per request (inputs, then outputs).
    for (model, width, outputs) in [("bench_compute", 256u64, 1u64), ("tiny_mlp", 8, 3)] {
        let (manifest, _) = manifest_for(model, model, Requirements::default());
        let reference = reference_for(&manifest);
        let mut profiler =
            WindowProfiler::new(&reference, |_, _| Some(TensorData::Float32(Vec::new())));
        let input = Tensor {
            shape: vec![1, width],
            data: TensorData::Float32((0..width).map(|i| i as f32 / width as f32).collect()),
        };
        let output = Tensor {
            shape: vec![1, outputs],
            data: TensorData::Float32(vec![0.5; outputs as usize]),
        };
        let (input_name, output_name) = (
            &manifest.model.inputs[0].name,
            &manifest.model.outputs[0].name,
        );
        let per = per_call(20_000, || {
            profiler.count_rows(1);
            profiler.observe(Side::Input, [(input_name.as_str(), &input)]);
            profiler.observe(Side::Output, [(output_name.as_str(), &output)]);
        });
        println!(
            "  profiler alone, {model}: {:.2} us per request of one row",
            per * 1e6
        );
    }
    // Memory: many numeric features, each fed values spread over six decades (so its
    // sketch holds many bins), measured as the growth of this process's resident set.
    let features = 2048usize;
    let data = Tensor {
        shape: vec![2000, 1],
        data: TensorData::Float32((0..2000).map(|i| 1e-3 * 1.007f32.powi(i)).collect()),
    };
    let before = resident_bytes();
    let mut profilers = Vec::with_capacity(features);
    for _ in 0..features {
        let mut b = ReferenceBuilder::default();
        b.add(Side::Input, "x", &data, None).unwrap();
        let reference = b.finish();
        let mut p = WindowProfiler::new(&reference, |_, _| Some(TensorData::Float32(Vec::new())));
        p.observe(Side::Input, [("x", &data)]);
        profilers.push((reference, p));
    }
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "  memory per profiled numeric feature (reference and window, full sketches): {:.1} KiB",
        grown as f64 / features as f64 / 1024.0
    );
    drop(profilers);
}

/// This process's resident memory, from /proc.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Sets every thread of process `pid` to run on `cpus` (taskset's list); whether it did.
fn pin(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Part 3, JSON against binary for a 1 MiB tensor, in and out.
fn json_section(port: u16) {
    let mut client = Client::connect(port);
    println!();
    println!("1 MiB FP32 tensor in and out (identity_1m), sequential");
    let big: Vec<f32> = (0..262_144).map(|i| (i as f32).sin()).collect();
    let (json_body, binary_body) = (
        body(&[1, 262_144], &big, false),
        body(&[1, 262_144], &big, true),
    );
    let json_s = per_call(10, || {
        assert_eq!(
            client.post("/v2/models/identity-1m/infer", &json_body).0,
            200
        );
    });
    let binary_s = per_call(10, || {
        assert_eq!(
            client.post("/v2/models/identity-1m/infer", &binary_body).0,
            200
        );
    });
    println!(
        "  JSON {:.1} ms ({} KiB request), binary {:.1} ms: binary is {:.1}x faster",
        json_s * 1e3,
        json_body.bytes.len() >> 10,
        binary_s * 1e3,
        json_s / binary_s
    );
}

/// Part 4, dynamic batching's gain.
fn batching_section(port: u16) {
    println!();
    println!("dynamic batching, batch_mlp, 16 clients of 1 row, {SESSIONS} sessions");
    let row: Vec<f32> = (0..512).map(|i| (i as f32 / 512.0) - 0.5).collect();
    let row_body = Arc::new(body(&[1, 512], &row, true));
    let mut rates = Vec::new();
    for model in ["batch-mlp", "batch-mlp-batched"] {
        let mut best = 0.0f64;
        for _ in 0..ROUNDS {
            let row_body = Arc::clone(&row_body);
            let path = format!("/v2/models/{model}/infer");
            best = best.max(throughput(
                16,
                Duration::from_secs(2),
                |_| Client::connect(port),
                move |c: &mut Client| assert_eq!(c.post(&path, &row_body).0, 200),
            ));
        }
        rates.push(best);
    }
    println!(
        "  plain {:.0} req/s, batched (max 16 rows, 2 ms delay) {:.0} req/s: {:.2}x",
        rates[0],
        rates[1],
        rates[1] / rates[0]
    );
}
