//! The latency fold: `latency_minute_hist`, per minute × org × team ×
//! provider × model, the call count, errors, and a sample and histogram of
//! durations and times to first token. ClickHouse folds it from every
//! insert into `calls` through `latency_minute_hist_mv`
//! (`migrations/clickhouse/0026_latency_minute_hist.sql`), in the same
//! insert, so it shares the calls fold's effectively-once position; the
//! percentiles are read by `tollgate_queries`.
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
        migrations: &["0026_latency_minute_hist.sql"],
    },
    catalog: Vec::new,
};
