//! Tollgate processors: the write path. The Kafka consumer runtime that
//! folds events into ClickHouse (calls with their cost, the rollups fed from
//! them, the audit chain), ClickHouse migrations and Kafka topic set-up,
//! repricing, and the budget watcher that publishes gating decisions. The
//! read side is `tollgate-queries` (`api/queries/`), the control plane
//! `tollgate-control` (`ingest/control/`).

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
pub mod resume;
pub mod topics;

pub use error::{Error, Fault, Result};
