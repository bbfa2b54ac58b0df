//! Tollgate ingest: the event contract every other crate speaks, the Kafka
//! producer that puts events on `tollgate.events`, API-key authentication,
//! the HTTP batch ingest endpoint, and the OpenAI/Anthropic-compatible proxy.

pub mod config;
pub mod contract;
pub mod error;
pub mod http;
pub mod keys;
pub mod postgres;
pub mod producer;
pub mod proxy;

pub use error::{Fault, IngestError};
