//! Tollgate processors: the write path. The Kafka consumer runtime
//! ([`consumer`], generic over a [`fold::Fold`]) and the folds it runs
//! ([`folds`]: calls with their cost, the latency and cost rollups fed from
//! them, the audit chain, and the one registry of them), ClickHouse
//! migrations and Kafka topic set-up, repricing, and the budget watcher that
//! publishes gating decisions, and the fleet-wide circuit breakers
//! ([`breakers`]), and alert delivery ([`alerting`]); what `/metrics`
//! reports about all of it ([`metrics`]). The
//! read side is `tollgate-queries` (`api/queries/`), the control plane
//! `tollgate-control` (`ingest/control/`).

pub mod alerting;
pub mod batch;
pub mod breakers;
pub mod clickhouse;
pub mod cluster_ddl;
pub mod config;
pub mod consumer;
pub mod cost;
pub mod decisions;
pub mod distributed_tables;
pub mod dlq;
pub mod error;
pub mod fold;
pub mod folds;
pub mod group_members;
pub mod health;
pub mod insert_fence;
pub mod metrics;
pub mod migrations;
pub mod patterns;
pub mod progress;
pub mod recent_events;
pub mod recovery;
pub mod resume;
pub mod retention;
pub mod rowbinary;
pub mod stall;
pub mod topics;

pub use error::{Error, Fault, Result};
