//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! on `ingest.otlp_grpc_listen` (default port 4317), with the key in the
//! `authorization: Bearer <key>` (or `x-api-key`) metadata, gzip accepted,
//! messages up to `ingest.max_body_bytes`. Errors are gRPC statuses with
//! the message the HTTP transport gives: `UNAUTHENTICATED`,
//! `PERMISSION_DENIED`, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED` (a
//! message over the limit too, which tonic alone would answer
//! `OUT_OF_RANGE`, a code OTLP clients retry), `UNAVAILABLE` (retry).
//!
//! The service is the generated `TraceService` trait served through its own
//! codec ([`CountingCodec`]) rather than the generated server's: like the
//! HTTP transport, it counts the spans and elements of a message on the
//! wire (`precount.rs`) before decoding it, so a message of millions of
//! empty spans is refused without being decoded.

use std::sync::{Arc, OnceLock};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::http::{grpc_code, presented_key};
use super::{check_counts, export, precount, ExportError};
use crate::error::IngestError;
use crate::http::{verify_secret, IngestState};
use crate::metrics::{Api, Refusal};

/// The gRPC trace service over the ingest state the HTTP routes share.
pub struct OtlpTraceService {
    state: Arc<IngestState>,
}

/// Why this call was refused, as our codec or handler knew it; empty when
/// tonic refused it first (the call's status code says why, then:
/// [`refusal_of_code`]).
type RefusalSlot = Arc<OnceLock<Refusal>>;

/// The reason of a refusal known only by its gRPC code.
fn refusal_of_code(code: tonic::Code) -> Refusal {
    match code {
        tonic::Code::Unauthenticated => Refusal::Unauthenticated,
        tonic::Code::PermissionDenied => Refusal::Forbidden,
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => Refusal::TooLarge,
        tonic::Code::Unimplemented => Refusal::UnsupportedEncoding,
        tonic::Code::Unavailable => Refusal::Unavailable,
        // tonic's own INTERNAL answers are protocol errors of the sender
        // (a compressed flag without an encoding, a body it cannot inflate).
        _ => Refusal::Malformed,
    }
}

/// The gRPC status a finished call's response head carries (a refusal is
/// answered trailers-only, its `grpc-status` among the headers).
fn status_code_of<B>(response: &http::Response<B>) -> Option<tonic::Code> {
    let code = response.headers().get("grpc-status")?.to_str().ok()?;
    code.parse::<i32>().ok().map(tonic::Code::from_i32)
}

/// A gRPC message over `ingest.max_body_bytes`, as the codec never saw it.
fn too_large(max_message_bytes: usize) -> Status {
    Status::resource_exhausted(format!(
        "body: the gRPC message is larger than ingest.max_body_bytes ({max_message_bytes} bytes)"
    ))
}

fn status_of(err: &IngestError) -> Status {
    let message = match err {
        IngestError::BadRequest { field, reason, .. } => format!("{field}: {reason}"),
        other => other.to_string(),
    };
    Status::new(grpc_code(err.status_code()), message)
}

impl OtlpTraceService {
    /// Export one request; a refusal's reason goes to `refused`.
    async fn export_noting(
        &self,
        request: Request<ExportTraceServiceRequest>,
        refused: &RefusalSlot,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let refuse = |err: IngestError| {
            tracing::info!(%err, "otlp grpc export refused");
            let _ = refused.set(err.refusal());
            status_of(&err)
        };
        let headers = request.metadata().clone().into_headers();
        let key = verify_secret(&self.state, presented_key(&headers))
            .await
            .map_err(refuse)?;
        match export(&self.state, Api::OtlpGrpc, &key, request.get_ref()).await {
            Ok(partial) => Ok(Response::new(partial.response())),
            Err(ExportError::Ingest(err)) => Err(refuse(err)),
            Err(err @ ExportError::Unavailable { .. }) => {
                let _ = refused.set(Refusal::Unavailable);
                Err(Status::unavailable(err.to_string()))
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for OtlpTraceService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.export_noting(request, &RefusalSlot::default()).await
    }
}

/// Protobuf for the trace service, counting a request on the wire before
/// decoding it.
#[derive(Debug, Clone)]
pub struct CountingCodec {
    max_spans: usize,
    refused: RefusalSlot,
}

impl Codec for CountingCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = ExportTraceServiceRequest;
    type Encoder = ResponseEncoder;
    type Decoder = CountingCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.clone()
    }
}

impl Decoder for CountingCodec {
    type Item = ExportTraceServiceRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        let malformed = |err: &dyn std::fmt::Display| {
            let _ = self.refused.set(Refusal::Malformed);
            Status::invalid_argument(format!(
                "body: not a valid OTLP protobuf ExportTraceServiceRequest: {err}"
            ))
        };
        let counts = precount::protobuf(&bytes).map_err(|err| malformed(&err))?;
        check_counts(counts, self.max_spans).map_err(|err| {
            let _ = self.refused.set(err.refusal());
            status_of(&err)
        })?;
        ExportTraceServiceRequest::decode(bytes)
            .map(Some)
            .map_err(|err| malformed(&err))
    }
}

/// Protobuf encoding of the answer.
#[derive(Debug, Clone, Copy)]
pub struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|err| Status::internal(format!("cannot encode the answer: {err}")))
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC server of the trace service: `Export`, through [`CountingCodec`].
#[derive(Clone)]
pub struct TraceServer {
    service: Arc<OtlpTraceService>,
    max_message_bytes: usize,
    max_spans: usize,
}

impl NamedService for TraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct ExportMethod {
    service: Arc<OtlpTraceService>,
    refused: RefusalSlot,
}

impl UnaryService<ExportTraceServiceRequest> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<ExportTraceServiceRequest>) -> Self::Future {
        let (service, refused) = (self.service.clone(), self.refused.clone());
        Box::pin(async move { service.export_noting(request, &refused).await })
    }
}

impl<B> Service<http::Request<B>> for TraceServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented("this server receives OTLP traces only").into_http())
            });
        }
        let server = self.clone();
        Box::pin(async move {
            let refused = RefusalSlot::default();
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(CountingCodec {
                max_spans: server.max_spans,
                refused: refused.clone(),
            })
            .apply_compression_config(gzip, gzip)
            .apply_max_message_size_config(Some(server.max_message_bytes), None);
            let metrics = server.service.state.metrics.clone();
            let method = ExportMethod {
                service: server.service,
                refused: refused.clone(),
            };
            let mut response = grpc.unary(method, request).await;
            // tonic answers a message over its limit OUT_OF_RANGE, which
            // OTLP clients retry: answer what the HTTP transport's 413 is,
            // RESOURCE_EXHAUSTED without RetryInfo (not retried), naming
            // the limit.
            if status_code_of(&response) == Some(tonic::Code::OutOfRange) && refused.get().is_none()
            {
                response = too_large(server.max_message_bytes).into_http();
            }
            // Every refusal is counted here, once: by the reason the codec
            // or the handler noted, else by the code tonic answered.
            if let Some(code) = status_code_of(&response).filter(|c| *c != tonic::Code::Ok) {
                let reason = refused.get().copied().unwrap_or(refusal_of_code(code));
                metrics.refused(Api::OtlpGrpc, reason);
            }
            Ok(response)
        })
    }
}

/// Serve the trace service on `listener` until `shutdown` completes.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: Arc<IngestState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let server = TraceServer {
        max_message_bytes: state.max_body_bytes,
        max_spans: state.max_events_per_request,
        service: Arc::new(OtlpTraceService { state }),
    };
    tonic::transport::Server::builder()
        .add_service(server)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
