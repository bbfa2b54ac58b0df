//! `tollgate bench`: measurements that print their figures. Nothing here
//! asserts on speed; the numbers are for people and for the docs.

pub mod alerts;
mod audit;
mod databases;
mod figures;
mod ingest;
mod otlp;
mod process_stats;
mod proxy;
mod regression;
pub mod reports;
mod visibility;

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// End-to-end ingest: produce N events to Kafka and time until all are
    /// visible in ClickHouse, with consumer lag over time and the processor's
    /// peak RSS. Runs against a fresh topic and database it creates.
    Ingest(ingest::Args),
    /// OTLP against the JSON API: the same simulated calls through a
    /// `tollgate ingest` child as JSON events, then as OTLP/HTTP GenAI
    /// spans, each timed until every row is visible in ClickHouse.
    Otlp(otlp::Args),
    /// The proxy's added latency: the same requests to the mock upstream
    /// directly and through `tollgate proxy`, interleaved in one run, with
    /// the proxy's throughput, CPU and RSS.
    Proxy(proxy::Args),
    /// One alert evaluation of many rules over many calls: generates the
    /// calls in a fresh database, stores the rules and times the
    /// evaluator's `evaluate` against the evaluation interval.
    Alerts(alerts::Args),
    /// Audit verification: writes N chained entries with signed checkpoints
    /// into a fresh database and times `verify-audit`'s verification of them.
    Audit(audit::Args),
    /// Every report, page and CSV export over N generated calls, timed
    /// (p50/p95/max per endpoint against p95 < 150 ms).
    Reports(reports::Args),
    /// The small runs of `ingest`, `otlp`, `proxy` (JSON and streamed), `audit` and `reports` that the
    /// test suite takes on every change (about three minutes in a release
    /// build), compared figure by figure with a recorded baseline
    /// (`bench/baseline.json`). Prints and flags; never fails on a figure.
    Regression(regression::Args),
}

pub async fn run(command: BenchCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args, config).await.map(drop),
        BenchCommand::Otlp(args) => otlp::run(args, config).await.map(drop),
        BenchCommand::Proxy(args) => proxy::run(args, config).await.map(drop),
        BenchCommand::Alerts(args) => alerts::run(args, config).await,
        BenchCommand::Audit(args) => audit::run(args, config).await.map(drop),
        BenchCommand::Reports(args) => reports::run(args, config).await.map(drop),
        BenchCommand::Regression(args) => regression::run(args, config).await,
    }
}
