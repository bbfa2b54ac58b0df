//! Tollgate processors: the Kafka consumer that folds events into ClickHouse
//! (calls, latency and cost), the audit chain, the price catalog, and the read
//! models the API queries, and the outbox that publishes control-plane
//! (`admin.*`) events.

pub mod audit;
pub mod batch;
pub mod calls_sink;
pub mod clickhouse;
pub mod config;
pub mod consumer;
pub mod cost;
pub mod dlq;
pub mod error;
pub mod fold;
pub mod migrations;
pub mod progress;
pub mod read_models;
pub mod resume;
pub mod topics;

pub use error::{Error, Fault, Result};
