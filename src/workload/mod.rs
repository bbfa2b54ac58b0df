//! Simulated AI-call traffic: a fixed cast of tenants and models and a seeded
//! generator of realistic events (log-normal latencies, TTFT for streams,
//! token counts, a few percent errors of several kinds, a latency incident).
//! Used by `tollgate simulate`, `tollgate bench` and the tests.

pub mod cast;
pub mod generator;
pub mod proxy_calls;

pub use generator::{Workload, WorkloadSpec};
