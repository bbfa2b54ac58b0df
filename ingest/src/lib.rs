//! Tollgate ingest: the Kafka producer that puts events on `tollgate.events`,
//! API-key authentication, the price store (PostgreSQL), the HTTP batch
//! ingest endpoint, and the OpenAI/Anthropic-compatible proxy. The records
//! they carry are defined in `tollgate-contract` (`ingest/contract/`).

pub mod config;
pub mod error;
pub mod http;
pub mod keys;
pub mod postgres;
pub mod price_store;
pub mod producer;
pub mod proxy;

pub use error::{Fault, IngestError};
