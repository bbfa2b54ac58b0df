//! `tollgate process`: run the consumer folds chosen with `--folds` (names
//! from the fold registry, `tollgate_processors::folds::FOLDS`: `calls` with
//! its cost step, budget watcher, outbox relay and the error-pattern and
//! recovery learners, the `audit` chain, and the fleet-wide circuit
//! `breakers`), and retention under its lease (`[retention] interval_secs`)
//! until SIGTERM or ctrl-c, then flush each open batch, commit, and exit 0.
//! Each fold is its own consumer group with its own progress in ClickHouse;
//! a fold that fails stops the others. With `processor.metrics_listen` (or
//! `--metrics-listen`) it serves `GET /metrics` (`crate::metrics`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tollgate_processors::folds::{self, FoldContext};
use tollgate_processors::metrics::ProcessMetrics;
use tracing::info;

use crate::config::Config;
use crate::metrics::MetricsRegistry;

#[derive(clap::Args)]
pub struct Args {
    /// Folds to run, comma-separated: `calls` (facts table, with cost and the
    /// rollups its views feed), `audit` (hash chain), `breakers` (circuit
    /// breakers over every partition; every replica may run them, one
    /// publishes at a time through a lease, see docs/breakers.md).
    #[arg(long, value_delimiter = ',', default_value = "calls,audit,breakers")]
    folds: Vec<String>,
    /// Serve `GET /metrics` on this address; overrides
    /// `processor.metrics_listen` (`127.0.0.1:0`: a free port, logged).
    #[arg(long)]
    metrics_listen: Option<String>,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let chosen = folds::choose(&args.folds)?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "shutting down"),
        }
        on_signal.cancel();
    });
    let metrics = Arc::new(ProcessMetrics::default());
    let mut registry = MetricsRegistry::new("process");
    metrics.register(registry.section("process"));
    let listener = crate::metrics::listener::serve_configured(
        args.metrics_listen.as_deref(),
        config.processor.metrics_listen.as_deref(),
        "processor.metrics_listen",
        registry.into_exposition(),
        shutdown.clone(),
    )
    .await?;
    let context = Arc::new(FoldContext {
        kafka: config.kafka.clone(),
        clickhouse: config.clickhouse.clone(),
        postgres: config.postgres.clone(),
        processor: config.processor.clone(),
        audit: config.audit.clone(),
        breakers: config.breakers.clone(),
        metrics,
        shutdown: shutdown.clone(),
    });
    // Retention runs beside the folds under its lease; it never stops them.
    let retention = tokio::spawn(tollgate_processors::retention::run_periodically(
        config.clickhouse.clone(),
        config.postgres.clone(),
        config.retention.clone(),
        format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            std::process::id()
        ),
        shutdown.clone(),
    ));
    let running = chosen.into_iter().map(|(_, start)| {
        let running = start(context.clone());
        let shutdown = shutdown.clone();
        async move {
            let result = running.await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        }
    });
    let results = futures::future::join_all(running).await;
    shutdown.cancel();
    let _ = retention.await;
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    for result in results {
        result?;
    }
    Ok(())
}
