//! `tollgate ingest`: serve the HTTP batch ingest API. Connects to PostgreSQL
//! (API keys) and Kafka (events topic) first and refuses to start, with an
//! error naming the address, when either is unreachable. Stops accepting
//! connections on SIGTERM or Ctrl-C, finishes requests in flight and flushes
//! the producer. Serves `GET /metrics` (`crate::metrics`) beside the API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tollgate_contract::alerts::PipelineMetric;
use tollgate_control::kafka::EventProducer;
use tollgate_control::keys::KeyStore;
use tollgate_control::pipeline_health::{Sample, Sampling, Tally};
use tollgate_ingest::http::{ingest_router, serve, IngestState};

use crate::config::Config;
use crate::metrics::MetricsRegistry;

/// Write the count of rejected events to ClickHouse's `pipeline_health`
/// every `ingest.health_sample_secs` (not at all when 0). Ingest uses no
/// other ClickHouse table; the samples go there directly, not through
/// Kafka, so that they describe ingest even while Kafka is down. A
/// ClickHouse that does not answer costs a warning per interval, never a
/// request (`tollgate_control::pipeline_health`).
fn start_health_sampler(config: &Config, rejected: Arc<Tally>) -> Option<Sampling> {
    Sampling::start(
        &config.clickhouse,
        "ingest",
        config.ingest.health_sample_secs,
        move || {
            let n = rejected.take();
            async move { vec![Sample::whole(PipelineMetric::RejectedIngest, n)] }
        },
    )
}

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; overrides `ingest.listen`.
    #[arg(long)]
    listen: Option<String>,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let producer = EventProducer::new(&config.kafka)?;
    match producer.check_connected(Duration::from_secs(10)).await? {
        true => {
            tracing::info!(brokers = %producer.brokers(), topic = %producer.topic(), "kafka reachable")
        }
        false => tracing::warn!(
            brokers = %producer.brokers(),
            topic = %producer.topic(),
            "events topic does not exist yet; events will fail until it does (run `tollgate migrate`)"
        ),
    }
    let state = IngestState::new(
        KeyStore::new(pool.clone()),
        producer.clone(),
        &config.ingest,
    );
    let sampler = start_health_sampler(config, state.rejected.clone());
    let mut registry = MetricsRegistry::new("ingest");
    state.metrics.register(registry.section("ingest"));
    let http = registry.http();
    let exposition = registry.into_exposition();
    let app = http.measure(ingest_router(state).route("/metrics", exposition.route()));
    let listen = args.listen.as_deref().unwrap_or(&config.ingest.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (ingest.listen)"))?;
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string()),
        max_body_bytes = config.ingest.max_body_bytes,
        "ingest API listening"
    );
    serve(listener, app, super::shutdown::shutdown_signal())
        .await
        .context("ingest HTTP server failed")?;
    tracing::info!("shutting down: flushing events still in flight");
    producer.flush(Duration::from_secs(10))?;
    if let Some(sampler) = sampler {
        // One last sample, so the rejections of the last interval are kept.
        sampler.finish().await;
    }
    pool.close().await;
    Ok(())
}
