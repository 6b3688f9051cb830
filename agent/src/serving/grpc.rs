//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` from the
//! protocol's standard `grpc_service.proto` (with Triton's extensions), so that
//! `tritonclient.grpc` works unchanged. The protos are compiled at build time without a
//! system `protoc` (`build.rs`).
//!
//! Inference goes through the same checks and sessions as HTTP (`Slot::run`); inputs come
//! as `raw_input_contents` (one per input, little-endian, as Triton's clients send them)
//! or typed `contents`, and outputs go back as `raw_output_contents`. What the endpoint
//! does not do (shared memory, loading models by hand, traces, log settings) answers
//! `UNIMPLEMENTED` with the reason.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use gantry_shared::bundle::manifest::{DType, ExecutionProvider, TensorSpec};
use gantry_shared::oip::{
    ApiError, Chosen, ErrorKind, Input, Request, RequestedOutput, protocol_shape,
};
use gantry_shared::tensor::{TensorData, datatype_name, parse_datatype};
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status};

use super::stats::{InferenceStats, Phase};
use super::{Loaded, Models, Slot};

/// The code generated from `proto/grpc_service.proto` and `proto/model_config.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub
)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::{infer_parameter::ParameterChoice, model_infer_response};

/// Serves gRPC on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    models: Arc<Models>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = GrpcInferenceServiceServer::new(Service { models })
        .max_decoding_message_size(super::MAX_BODY)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a response's frames (headers, data, trailers) wait
            // on the client's delayed acknowledgement: milliseconds per call.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await
}

#[derive(Debug)]
struct Service {
    models: Arc<Models>,
}

fn status(e: ApiError) -> Status {
    let code = match e.kind {
        ErrorKind::BadRequest => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
        ErrorKind::Unsupported => tonic::Code::Unimplemented,
    };
    Status::new(code, e.message)
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not provided by this endpoint"))
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<proto::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|s| proto::model_metadata_response::TensorMetadata {
            name: s.name.clone(),
            datatype: datatype_name(s.dtype).to_owned(),
            shape: protocol_shape(&s.shape),
        })
        .collect()
}

fn config(loaded: &Loaded) -> proto::ModelConfig {
    let data_type = |dtype: DType| {
        proto::DataType::from_str_name(super::http::triton_type(dtype)).map_or(0, |t| t as i32)
    };
    let kind = match loaded.placement.provider {
        ExecutionProvider::Cuda => "KIND_GPU",
        ExecutionProvider::Cpu => "KIND_CPU",
    };
    let threads = loaded.execution.threads;
    let parameters = [
        ("intra_op_thread_count", threads.intra_op),
        ("inter_op_thread_count", threads.inter_op),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(key, n)| {
        (
            key.to_owned(),
            proto::ModelParameter {
                string_value: n.to_string(),
            },
        )
    })
    .collect();
    let skip = usize::from(loaded.batching.is_some());
    let dynamic_batching = loaded.batching.as_ref().map(|b| {
        proto::model_config::SchedulingChoice::DynamicBatching(proto::ModelDynamicBatching {
            preferred_batch_size: b
                .preferred_batch_sizes
                .iter()
                .map(|&p| i32::try_from(p).unwrap_or(i32::MAX))
                .collect(),
            max_queue_delay_microseconds: b.max_queue_delay_us,
            default_queue_policy: Some(proto::ModelQueuePolicy {
                default_timeout_microseconds: b.queue_timeout_us,
                max_queue_size: b.max_queue_size,
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    proto::ModelConfig {
        name: loaded.name.clone(),
        max_batch_size: loaded
            .batching
            .as_ref()
            .map_or(0, |b| i32::try_from(b.max_batch_size).unwrap_or(i32::MAX)),
        scheduling_choice: dynamic_batching,
        platform: "onnxruntime_onnx".to_owned(),
        backend: "onnxruntime".to_owned(),
        input: loaded
            .inputs
            .iter()
            .map(|s| proto::ModelInput {
                name: s.name.clone(),
                data_type: data_type(s.dtype),
                dims: protocol_shape(&s.shape[skip..]),
                ..Default::default()
            })
            .collect(),
        output: loaded
            .outputs
            .iter()
            .map(|s| proto::ModelOutput {
                name: s.name.clone(),
                data_type: data_type(s.dtype),
                dims: protocol_shape(&s.shape[skip..]),
                ..Default::default()
            })
            .collect(),
        instance_group: vec![proto::ModelInstanceGroup {
            name: loaded.name.clone(),
            kind: proto::model_instance_group::Kind::from_str_name(kind).map_or(0, |k| k as i32),
            count: i32::try_from(loaded.execution.instances).unwrap_or(i32::MAX),
            ..Default::default()
        }],
        parameters,
        ..Default::default()
    }
}

fn duration(phase: Phase) -> proto::StatisticDuration {
    proto::StatisticDuration {
        count: phase.count,
        ns: phase.ns,
    }
}

fn statistics(slot: &Slot, loaded: &Loaded) -> proto::ModelStatistics {
    let s = slot.stats();
    let InferenceStats {
        success,
        fail,
        queue,
        compute_input,
        compute_infer,
        compute_output,
        cache_hit,
        cache_miss,
    } = s.inference;
    proto::ModelStatistics {
        name: loaded.name.clone(),
        version: loaded.version.clone(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(proto::InferStatistics {
            success: Some(duration(success)),
            fail: Some(duration(fail)),
            queue: Some(duration(queue)),
            compute_input: Some(duration(compute_input)),
            compute_infer: Some(duration(compute_infer)),
            compute_output: Some(duration(compute_output)),
            cache_hit: Some(duration(cache_hit)),
            cache_miss: Some(duration(cache_miss)),
        }),
        batch_stats: s
            .batches
            .values()
            .map(|b| proto::InferBatchStatistics {
                batch_size: b.batch_size,
                compute_input: Some(duration(b.compute_input)),
                compute_infer: Some(duration(b.compute_infer)),
                compute_output: Some(duration(b.compute_output)),
            })
            .collect(),
        ..Default::default()
    }
}

/// A boolean request parameter; anything else is a bad request.
fn flag(
    parameters: &std::collections::HashMap<String, proto::InferParameter>,
    key: &str,
    whose: &str,
) -> Result<Option<bool>, ApiError> {
    match parameters
        .get(key)
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => Ok(None),
        Some(ParameterChoice::BoolParam(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad(format!(
            "{whose}: parameter {key:?} must be a boolean"
        ))),
    }
}

fn refuse_unsupported(
    parameters: &std::collections::HashMap<String, proto::InferParameter>,
    whose: &str,
) -> Result<(), ApiError> {
    gantry_shared::oip::refuse_unsupported(|k| parameters.contains_key(k), whose)
}

/// Typed `contents` as the element type `dtype`, range-checked (`int_contents` carries
/// INT8 and INT16 too, `uint_contents` UINT8 and UINT16).
fn from_contents(
    dtype: DType,
    c: proto::InferTensorContents,
    whose: &str,
) -> Result<TensorData, ApiError> {
    fn narrow<T: TryFrom<W>, W: Copy + std::fmt::Display>(
        values: Vec<W>,
        whose: &str,
        dtype: DType,
    ) -> Result<Vec<T>, ApiError> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                T::try_from(v).map_err(|_| {
                    ApiError::bad(format!(
                        "{whose}: element {i}: {v} is out of range for {}",
                        datatype_name(dtype)
                    ))
                })
            })
            .collect()
    }
    Ok(match dtype {
        DType::Bool => TensorData::Bool(c.bool_contents),
        DType::Uint8 => TensorData::Uint8(narrow(c.uint_contents, whose, dtype)?),
        DType::Uint16 => TensorData::Uint16(narrow(c.uint_contents, whose, dtype)?),
        DType::Uint32 => TensorData::Uint32(c.uint_contents),
        DType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DType::Int8 => TensorData::Int8(narrow(c.int_contents, whose, dtype)?),
        DType::Int16 => TensorData::Int16(narrow(c.int_contents, whose, dtype)?),
        DType::Int32 => TensorData::Int32(c.int_contents),
        DType::Int64 => TensorData::Int64(c.int64_contents),
        DType::Float32 => TensorData::Float32(c.fp32_contents),
        DType::Float64 => TensorData::Float64(c.fp64_contents),
        DType::String => TensorData::Bytes(c.bytes_contents),
        DType::Float16 | DType::Bfloat16 => {
            return Err(ApiError::bad(format!(
                "{whose}: {} travels only as raw_input_contents (the protocol has no typed field for it)",
                datatype_name(dtype)
            )));
        }
    })
}

/// A gRPC inference request as the transport-free [`Request`].
fn decode(r: proto::ModelInferRequest) -> Result<Request, ApiError> {
    refuse_unsupported(&r.parameters, "the request")?;
    let binary_output = flag(&r.parameters, "binary_data_output", "the request")?;
    let raw = r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(ApiError::bad(format!(
            "{} raw_input_contents for {} inputs; give one per input, or none",
            raw.len(),
            r.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for input in r.inputs {
        let whose = format!("input {:?}", input.name);
        refuse_unsupported(&input.parameters, &whose)?;
        let dtype = parse_datatype(&input.datatype).ok_or_else(|| {
            ApiError::bad(format!(
                "{whose}: datatype {:?} is not one the protocol names",
                input.datatype
            ))
        })?;
        let shape = input
            .shape
            .iter()
            .map(|&d| {
                u64::try_from(d)
                    .map_err(|_| ApiError::bad(format!("{whose}: dimension {d} is negative")))
            })
            .collect::<Result<Vec<u64>, _>>()?;
        let data = match (raw.next(), input.contents) {
            (Some(bytes), _) => TensorData::from_le_bytes(dtype, &bytes)
                .map_err(|e| ApiError::bad(format!("{whose}: {e}")))?,
            (None, Some(contents)) => from_contents(dtype, contents, &whose)?,
            (None, None) => TensorData::empty(dtype),
        };
        inputs.push(Input {
            name: input.name,
            shape,
            data,
        });
    }
    let mut outputs = Vec::with_capacity(r.outputs.len());
    for output in r.outputs {
        let whose = format!("output {:?}", output.name);
        refuse_unsupported(&output.parameters, &whose)?;
        outputs.push(RequestedOutput {
            name: output.name,
            binary: None,
        });
    }
    Ok(Request {
        id: (!r.id.is_empty()).then_some(r.id),
        inputs,
        outputs,
        binary_output: binary_output.unwrap_or(true),
    })
}

/// The answer: every output's bytes in `raw_output_contents`, in order.
fn encode(loaded: &Loaded, id: Option<String>, chosen: Vec<Chosen>) -> proto::ModelInferResponse {
    let mut raw = Vec::with_capacity(chosen.len());
    let outputs = chosen
        .into_iter()
        .map(|c| {
            let mut bytes = Vec::new();
            c.tensor.data.write_le_bytes(&mut bytes);
            raw.push(bytes);
            model_infer_response::InferOutputTensor {
                name: c.name,
                datatype: datatype_name(c.tensor.dtype()).to_owned(),
                shape: c
                    .tensor
                    .shape
                    .iter()
                    .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    proto::ModelInferResponse {
        model_name: loaded.name.clone(),
        model_version: loaded.version.clone(),
        id: id.unwrap_or_default(),
        outputs,
        raw_output_contents: raw,
        ..Default::default()
    }
}

impl Service {
    async fn infer(
        &self,
        request: proto::ModelInferRequest,
    ) -> Result<proto::ModelInferResponse, Status> {
        let started = Instant::now();
        let (slot, loaded) = self
            .models
            .find(&request.model_name, Some(&request.model_version))
            .map_err(status)?;
        let request = match decode(request) {
            Ok(request) => request,
            Err(e) => {
                slot.reject();
                return Err(status(e));
            }
        };
        let id = request.id.clone();
        let chosen = slot.run(&loaded, request, started).await.map_err(status)?;
        Ok(encode(&loaded, id, chosen))
    }
}

type ResponseStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ModelStreamInferResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: tonic::Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: tonic::Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        Ok(Response::new(proto::ServerReadyResponse {
            ready: self.models.any(),
        }))
    }

    async fn model_ready(
        &self,
        request: tonic::Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(proto::ModelReadyResponse {
            ready: self.models.find(&r.name, Some(&r.version)).is_ok(),
        }))
    }

    async fn server_metadata(
        &self,
        _: tonic::Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        Ok(Response::new(proto::ServerMetadataResponse {
            name: "gantry-agent".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: super::http::EXTENSIONS
                .iter()
                .map(|&e| e.to_owned())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: tonic::Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let (_, loaded) = self
            .models
            .find(&r.name, Some(&r.version))
            .map_err(status)?;
        Ok(Response::new(proto::ModelMetadataResponse {
            name: loaded.name.clone(),
            versions: vec![loaded.version.clone()],
            platform: "onnxruntime_onnx".to_owned(),
            inputs: tensor_metadata(&loaded.inputs),
            outputs: tensor_metadata(&loaded.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: tonic::Request<proto::ModelInferRequest>,
    ) -> Result<Response<proto::ModelInferResponse>, Status> {
        self.infer(request.into_inner()).await.map(Response::new)
    }

    type ModelStreamInferStream = ResponseStream;

    async fn model_stream_infer(
        &self,
        request: tonic::Request<tonic::Streaming<proto::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut requests = request.into_inner();
        let (send, receive) = tokio::sync::mpsc::channel(16);
        let service = Service {
            models: Arc::clone(&self.models),
        };
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let answer = match service.infer(request).await {
                    Ok(response) => proto::ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(response),
                    },
                    Err(e) => proto::ModelStreamInferResponse {
                        error_message: e.message().to_owned(),
                        infer_response: None,
                    },
                };
                if send.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receive),
        )))
    }

    async fn model_config(
        &self,
        request: tonic::Request<proto::ModelConfigRequest>,
    ) -> Result<Response<proto::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let (_, loaded) = self
            .models
            .find(&r.name, Some(&r.version))
            .map_err(status)?;
        Ok(Response::new(proto::ModelConfigResponse {
            config: Some(config(&loaded)),
        }))
    }

    async fn model_statistics(
        &self,
        request: tonic::Request<proto::ModelStatisticsRequest>,
    ) -> Result<Response<proto::ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let model_stats = if r.name.is_empty() {
            self.models
                .all()
                .iter()
                .filter_map(|slot| slot.get().map(|loaded| statistics(slot, &loaded)))
                .collect()
        } else {
            let (slot, loaded) = self
                .models
                .find(&r.name, Some(&r.version))
                .map_err(status)?;
            vec![statistics(&slot, &loaded)]
        };
        Ok(Response::new(proto::ModelStatisticsResponse {
            model_stats,
        }))
    }

    async fn repository_index(
        &self,
        request: tonic::Request<proto::RepositoryIndexRequest>,
    ) -> Result<Response<proto::RepositoryIndexResponse>, Status> {
        let ready_only = request.into_inner().ready;
        let models = self
            .models
            .index(ready_only)
            .into_iter()
            .map(|e| proto::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.to_owned(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(proto::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        _: tonic::Request<proto::RepositoryModelLoadRequest>,
    ) -> Result<Response<proto::RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented(super::http::BY_HAND))
    }

    async fn repository_model_unload(
        &self,
        _: tonic::Request<proto::RepositoryModelUnloadRequest>,
    ) -> Result<Response<proto::RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented(super::http::BY_HAND))
    }

    async fn system_shared_memory_status(
        &self,
        _: tonic::Request<proto::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<proto::SystemSharedMemoryStatusResponse>, Status> {
        Err(unsupported("system shared memory"))
    }

    async fn system_shared_memory_register(
        &self,
        _: tonic::Request<proto::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<proto::SystemSharedMemoryRegisterResponse>, Status> {
        Err(unsupported("system shared memory"))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: tonic::Request<proto::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<proto::SystemSharedMemoryUnregisterResponse>, Status> {
        Err(unsupported("system shared memory"))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: tonic::Request<proto::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<proto::CudaSharedMemoryStatusResponse>, Status> {
        Err(unsupported("CUDA shared memory"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: tonic::Request<proto::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<proto::CudaSharedMemoryRegisterResponse>, Status> {
        Err(unsupported("CUDA shared memory"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: tonic::Request<proto::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<proto::CudaSharedMemoryUnregisterResponse>, Status> {
        Err(unsupported("CUDA shared memory"))
    }

    async fn trace_setting(
        &self,
        _: tonic::Request<proto::TraceSettingRequest>,
    ) -> Result<Response<proto::TraceSettingResponse>, Status> {
        Err(unsupported("tracing"))
    }

    async fn log_settings(
        &self,
        _: tonic::Request<proto::LogSettingsRequest>,
    ) -> Result<Response<proto::LogSettingsResponse>, Status> {
        Err(unsupported("changing log settings (set GANTRY_LOG)"))
    }
}

#[cfg(test)]
mod tests {
    use super::proto::model_infer_request;
    use super::*;

    fn input(name: &str, datatype: &str, shape: Vec<i64>) -> model_infer_request::InferInputTensor {
        model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        }
    }

    #[test]
    fn raw_contents_must_be_one_per_input() {
        let request = proto::ModelInferRequest {
            inputs: vec![input("a", "FP32", vec![1]), input("b", "FP32", vec![1])],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        let e = decode(request).unwrap_err();
        assert!(
            e.message.contains("1 raw_input_contents for 2 inputs"),
            "{e}"
        );
    }

    #[test]
    fn typed_contents_are_range_checked_for_narrow_types() {
        let mut a = input("a", "INT8", vec![2]);
        a.contents = Some(proto::InferTensorContents {
            int_contents: vec![1, 300],
            ..Default::default()
        });
        let e = decode(proto::ModelInferRequest {
            inputs: vec![a],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.message,
            "input \"a\": element 1: 300 is out of range for INT8"
        );
    }

    #[test]
    fn negative_dimensions_and_unknown_datatypes_are_refused() {
        let e = decode(proto::ModelInferRequest {
            inputs: vec![input("a", "FP32", vec![-1])],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.message.contains("dimension -1 is negative"), "{e}");
        let e = decode(proto::ModelInferRequest {
            inputs: vec![input("a", "COMPLEX64", vec![1])],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.message.contains("\"COMPLEX64\""), "{e}");
    }

    #[test]
    fn raw_contents_decode_as_the_binary_extension_does() {
        let request = proto::ModelInferRequest {
            id: "7".into(),
            inputs: vec![input("a", "INT64", vec![2])],
            raw_input_contents: vec![[(1i64 << 60).to_le_bytes(), (-1i64).to_le_bytes()].concat()],
            outputs: vec![model_infer_request::InferRequestedOutputTensor {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let decoded = decode(request).unwrap();
        assert_eq!(decoded.id.as_deref(), Some("7"));
        assert_eq!(decoded.inputs[0].data, TensorData::Int64(vec![1 << 60, -1]));
        assert_eq!(decoded.outputs[0].name, "y");
    }
}
