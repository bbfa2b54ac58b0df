//! `tollgate ingest`: serve the HTTP batch ingest API and the OTLP trace
//! receiver (OTLP/HTTP on the same listener, OTLP/gRPC on
//! `ingest.otlp_grpc_listen`; `docs/otlp.md`). Connects to PostgreSQL
//! (API keys) and Kafka (events topic) first and refuses to start, with an
//! error naming the address, when either is unreachable. Stops accepting
//! connections on SIGTERM or Ctrl-C, finishes requests in flight and flushes
//! the producer. Serves `GET /metrics` (`crate::metrics`) beside the API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tollgate_contract::alerts::PipelineMetric;
use tollgate_control::kafka::EventProducer;
use tollgate_control::keys::KeyStore;
use tollgate_control::pipeline_health::{Sample, Sampling, Tally};
use tollgate_ingest::http::{ingest_router, serve, IngestState};
use tollgate_ingest::otlp::grpc::serve_grpc;
use tollgate_ingest::otlp::proxied::ProxyAddresses;

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
    /// Address of the OTLP/gRPC receiver; overrides
    /// `ingest.otlp_grpc_listen` (empty: no gRPC receiver).
    #[arg(long)]
    otlp_grpc_listen: Option<String>,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    // Calls reported after the fact: the fleet breakers judge providers by
    // the proxies' own records only.
    let producer =
        EventProducer::new(&config.kafka)?.with_origin(tollgate_control::kafka::ORIGIN_REPORTED);
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
    let state = Arc::new(IngestState::new(
        KeyStore::new(pool.clone()),
        producer.clone(),
        &config.ingest,
        &tollgate_control::postgres::redact_url(&config.postgres.url),
        proxy_addresses(config)?,
    ));
    let sampler = start_health_sampler(config, state.rejected.clone());
    let mut registry = MetricsRegistry::new("ingest");
    let section = registry.section("ingest");
    state.metrics.register(section);
    state.otlp.counters.register(section);
    let http = registry.http();
    let exposition = registry.into_exposition();
    let app = http.measure(ingest_router(state.clone()).route("/metrics", exposition.route()));
    let listen = args.listen.as_deref().unwrap_or(&config.ingest.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (ingest.listen)"))?;
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string()),
        max_body_bytes = config.ingest.max_body_bytes,
        "ingest API listening"
    );
    let stop = CancellationToken::new();
    let grpc_listen = args
        .otlp_grpc_listen
        .as_deref()
        .unwrap_or(&config.ingest.otlp_grpc_listen);
    let grpc = if grpc_listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(grpc_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {grpc_listen} (ingest.otlp_grpc_listen; empty disables the OTLP/gRPC receiver)")
            })?;
        tracing::info!(
            address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| grpc_listen.to_string()),
            "otlp grpc receiver listening"
        );
        let stopped = stop.clone();
        Some(tokio::spawn(serve_grpc(
            listener,
            state.clone(),
            async move { stopped.cancelled().await },
        )))
    };
    let stopping = stop.clone();
    serve(listener, app, async move {
        super::shutdown::shutdown_signal().await;
        stopping.cancel();
    })
    .await
    .context("ingest HTTP server failed")?;
    stop.cancel();
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "otlp grpc receiver failed"),
            Err(err) => tracing::warn!(%err, "otlp grpc receiver task failed"),
        }
    }
    tracing::info!("shutting down: flushing events still in flight");
    producer.flush(Duration::from_secs(10))?;
    if let Some(sampler) = sampler {
        // One last sample, so the rejections of the last interval are kept.
        sampler.finish().await;
    }
    pool.close().await;
    Ok(())
}

/// The addresses whose model-call spans the OTLP receiver passes over
/// (`ingest.otlp_proxy_addresses`; when empty, `proxy.listen` if it names
/// a host: clients on this host reach the proxy there).
fn proxy_addresses(config: &Config) -> anyhow::Result<ProxyAddresses> {
    let mut entries = config.ingest.otlp_proxy_addresses.clone();
    if entries.is_empty() {
        if let Ok(listen) = config.proxy.listen.parse::<std::net::SocketAddr>() {
            if !listen.ip().is_unspecified() {
                entries.push(listen.to_string());
            }
            // A client on this host may name loopback either way.
            if listen.ip().is_loopback() {
                entries.push(format!("localhost:{}", listen.port()));
            }
        }
    }
    let proxies = ProxyAddresses::parse(&entries)?;
    tracing::info!(addresses = ?entries, "OTLP spans of calls through these proxies are passed over (the proxy records them)");
    Ok(proxies)
}
