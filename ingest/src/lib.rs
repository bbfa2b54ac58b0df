//! Tollgate ingest: the event contract every other crate speaks, the Kafka
//! producer that puts events on `tollgate.events`, API-key authentication,
//! and the HTTP batch ingest endpoint.

pub mod config;
pub mod contract;
