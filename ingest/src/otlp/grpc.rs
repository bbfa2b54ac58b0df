//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! on `ingest.otlp_grpc_listen` (default port 4317), with the key in the
//! `authorization: Bearer <key>` (or `x-api-key`) metadata, gzip accepted,
//! messages up to `ingest.max_body_bytes`. Errors are gRPC statuses with
//! the message the HTTP transport gives: `UNAUTHENTICATED`,
//! `PERMISSION_DENIED`, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`,
//! `UNAVAILABLE` (retry).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::http::{grpc_code, presented_key};
use super::{export, ExportError};
use crate::error::IngestError;
use crate::http::{verify_secret, IngestState};

/// The gRPC trace service over the ingest state the HTTP routes share.
pub struct OtlpTraceService {
    state: Arc<IngestState>,
}

fn status_of(err: &IngestError) -> Status {
    let message = match err {
        IngestError::BadRequest { field, reason } => format!("{field}: {reason}"),
        other => other.to_string(),
    };
    Status::new(grpc_code(err.status_code()), message)
}

#[tonic::async_trait]
impl TraceService for OtlpTraceService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let key = verify_secret(&self.state.keys, presented_key(&headers))
            .await
            .map_err(|err| {
                tracing::info!(%err, "otlp grpc export refused");
                status_of(&err)
            })?;
        match export(&self.state, &key, request.get_ref()).await {
            Ok(partial) => Ok(Response::new(partial.response())),
            Err(ExportError::Ingest(err)) => {
                tracing::info!(%err, "otlp grpc export refused");
                Err(status_of(&err))
            }
            Err(err @ ExportError::Unavailable { .. }) => Err(Status::unavailable(err.to_string())),
        }
    }
}

/// Serve the trace service on `listener` until `shutdown` completes.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: Arc<IngestState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = state.max_body_bytes;
    let service = TraceServiceServer::new(OtlpTraceService { state })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
