//! Tollgate's control plane: PostgreSQL and what lives in it — the pool
//! ([`postgres`]), API keys ([`keys`]), the versioned price catalog
//! ([`prices`]: reading and keeping a copy fresh, adding versions, the
//! LiteLLM import format), budgets ([`budgets`]: the store, administration,
//! evaluation against spend), alerting's rules, silences and receivers
//! ([`alerts`]) and the outbox of `admin.*` events with its
//! relay ([`outbox`]).
//!
//! It also holds the connection settings every role shares ([`config`]),
//! the idempotent Kafka producer of events ([`kafka`], which the outbox
//! relay, the ingest endpoint and the proxy use) and the ClickHouse client
//! constructor ([`clickhouse`]), so the crates above it — ingest, proxy,
//! processors, queries — need nothing but the contract and this crate.

pub mod alerts;
pub mod budgets;
pub mod clickhouse;
pub mod config;
pub mod error;
pub mod kafka;
pub mod keys;
pub mod lease;
pub mod outbox;
pub mod postgres;
pub mod prices;

pub use error::ControlError;
