//! The latency fold: per minute × org × team × provider × model,
//! `latency_minute_hist` holds the call count, errors, and the kept values
//! (up to 1000) of durations and times to first token;
//! `latency_minute_buckets` holds their log-linear histogram as plain rows
//! (metric × bucket → count, sum). ClickHouse folds both from every insert
//! into `calls` through `latency_minute_hist_calls_mv`,
//! `latency_minute_buckets_duration_mv` and `latency_minute_buckets_ttft_mv`
//! (`migrations/clickhouse/0026_latency_minute_hist.sql`, then
//! `0036_latency_minute_buckets.sql`, which replaced 0026's `sumMap`
//! histograms), in the same insert, so it shares the calls fold's
//! effectively-once position; the percentiles are read by
//! `tollgate_queries`.
//!
//! Rust keeps no model of it: the view is the fold.

use super::{FoldEntry, Runs};

pub const NAME: &str = "latency";

/// The registry's line for this fold.
pub const FOLD: FoldEntry = FoldEntry {
    name: NAME,
    description:
        "per-minute call counts, errors and duration histograms (a clickhouse view over calls)",
    runs: Runs::View {
        fed_by: super::calls::NAME,
        migrations: &[
            "0026_latency_minute_hist.sql",
            "0036_latency_minute_buckets.sql",
        ],
    },
    catalog: Vec::new,
};
