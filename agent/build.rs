//! Compiles the Open Inference Protocol's gRPC service (`proto/grpc_service.proto`, the
//! protocol's standard file with Triton's extensions, and `proto/model_config.proto`)
//! with `protox`, a protobuf compiler in Rust: no system `protoc` is needed.

fn main() {
    let protos = ["proto/grpc_service.proto", "proto/model_config.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = match protox::compile(protos, ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(e) => panic!("cannot compile the gRPC protos: {e:?}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)
    {
        panic!("cannot generate the gRPC service: {e}");
    }
}
