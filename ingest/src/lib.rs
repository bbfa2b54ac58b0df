//! Tollgate ingest: the Kafka producer that puts events on `tollgate.events`,
//! API-key authentication, the price store (PostgreSQL) and the HTTP batch
//! ingest endpoint. The records they carry are defined in
//! `tollgate-contract` (`ingest/contract/`); the proxy, which builds on
//! these, is `tollgate-proxy` (`ingest/proxy/`).

pub mod config;
pub mod error;
pub mod http;
pub mod keys;
pub mod postgres;
pub mod price_store;
pub mod producer;

pub use error::{Fault, IngestError};
