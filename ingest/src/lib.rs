//! Tollgate ingest: the HTTP batch ingest endpoint (`POST /v1/events`) and
//! the OTLP trace receiver (`otlp`: `POST /v1/traces`, gRPC). The
//! records it accepts are defined in `tollgate-contract` (`ingest/contract/`);
//! API keys and the event producer are the control plane's
//! (`tollgate-control`, `ingest/control/`); the other HTTP edge, the proxy,
//! is `tollgate-proxy` (`ingest/proxy/`).

pub mod config;
mod content_encoding;
pub mod error;
pub mod http;
pub mod metrics;
pub mod otlp;

pub use error::{Fault, IngestError};
