//! Tollgate ingest: the event contract every other crate speaks, the Kafka
//! producer that puts events on `tollgate.events`, API-key authentication,
//! and the HTTP batch ingest endpoint.

pub mod config;
pub mod contract;
pub mod error;
pub mod http;
pub mod keys;
pub mod postgres;
pub mod producer;

pub use error::{Fault, IngestError};
