//! Tollgate processors: the Kafka consumer that folds events into ClickHouse,
//! and the read models the API queries.

pub mod config;
pub mod read_models;
