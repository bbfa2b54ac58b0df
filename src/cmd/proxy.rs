//! `tollgate proxy`: serve the OpenAI/Anthropic-compatible proxy. Connects
//! to PostgreSQL (virtual keys) first, opens the event spool, reads the
//! decisions topic to its end, then listens. On SIGTERM or Ctrl-C it stops
//! accepting connections, lets responses in flight finish, and waits for
//! every event to reach Kafka or the spool, and leaves the live proxies
//! (`docs/deployment.md, "Proxies"`). Serves `GET /metrics`
//! (`crate::metrics`) beside the proxy's routes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tollgate_contract::alerts::PipelineMetric;
use tollgate_control::pipeline_health::{Sample, Sampling};
use tollgate_control::provider_credentials::Keyring;
use tollgate_proxy as proxy;
use tollgate_proxy::metrics::ProxyMetrics;

use crate::config::Config;
use crate::metrics::MetricsRegistry;

/// Write the spool's depth to ClickHouse's `pipeline_health` every
/// `proxy.health_sample_secs` (not at all when 0): over ClickHouse's HTTP
/// interface, because the proxy spools exactly when Kafka is unreachable.
fn start_health_sampler(config: &Config, metrics: Arc<ProxyMetrics>) -> Option<Sampling> {
    Sampling::start(
        &config.clickhouse,
        "proxy",
        config.proxy.health_sample_secs,
        move || {
            let bytes = u64::try_from(metrics.spool_pending_bytes.get()).unwrap_or(0);
            async move { vec![Sample::whole(PipelineMetric::ProxySpoolDepth, bytes)] }
        },
    )
}

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; overrides `proxy.listen`.
    #[arg(long)]
    listen: Option<String>,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    // With an OTLP endpoint the proxy exports a span per upstream attempt
    // through the tracer provider `telemetry::init` installed.
    let spans =
        config.telemetry.otlp_endpoint.is_some().then(|| {
            proxy::trace::SpanExport::new(opentelemetry::global::tracer("tollgate-proxy"))
        });
    let keyring = Keyring::from_environment(&config.secrets)?;
    let runtime = proxy::start(&config.proxy, &config.kafka, pool.clone(), keyring, spans).await?;
    match runtime
        .producer
        .check_connected(Duration::from_secs(5))
        .await
    {
        Ok(true) => {
            tracing::info!(brokers = %runtime.producer.brokers(), topic = %runtime.producer.topic(), "kafka reachable")
        }
        Ok(false) => {
            tracing::warn!(topic = %runtime.producer.topic(), "events topic does not exist yet (run `tollgate migrate`); events are spooled until it does")
        }
        Err(err) => {
            tracing::warn!(%err, "kafka unreachable at start; events are spooled to {} until it answers", config.proxy.spool_dir)
        }
    }
    let listen = args.listen.as_deref().unwrap_or(&config.proxy.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (proxy.listen)"))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        providers = ?config.proxy.providers.keys().collect::<Vec<_>>(),
        spool = %config.proxy.spool_dir,
        "proxy listening"
    );
    let state = runtime.state.clone();
    let sampler = start_health_sampler(config, state.metrics.clone());
    let mut registry = MetricsRegistry::new("proxy");
    state.metrics.register(registry.section("proxy"));
    let http = registry.http();
    let exposition = registry.into_exposition();
    let app = http.measure(proxy::router(state).route("/metrics", exposition.route()));
    proxy::serve(listener, app, super::shutdown::shutdown_signal())
        .await
        .context("proxy HTTP server failed")?;
    tracing::info!("shutting down: waiting for events to reach kafka or the spool");
    runtime.decisions_task.abort();
    runtime.prices_task.cancel();
    // Every response is out: leave the live proxies, so the others take
    // this proxy's share at their next renewal instead of at its expiry.
    runtime.membership_stop.cancel();
    if let Some(task) = runtime.membership_task {
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("could not leave the live proxies within 5 s; the others take this proxy's share when its lease expires");
        }
    }
    // The router (and with it every emitter handle) is gone; relays still
    // running hold their own handles and finish first.
    drop(runtime.state);
    if tokio::time::timeout(Duration::from_secs(30), runtime.emitter_task)
        .await
        .is_err()
    {
        tracing::error!(
            "event emitter did not finish within 30 s; unsent events are in the spool or the log"
        );
    }
    // The emitter's end dropped the last handle on the log: its syncer
    // makes its last fsync and deletes what is done (a clean stop leaves no
    // segment for the next start to read and check on Kafka).
    if let Some(stopped) = runtime.wal_stopped {
        if tokio::time::timeout(Duration::from_secs(10), stopped.wait())
            .await
            .is_err()
        {
            tracing::warn!("the write-ahead log did not stop within 10 s; the next start reads what it left and checks it on Kafka");
        }
    }
    runtime.producer.flush(Duration::from_secs(5))?;
    if let Some(sampler) = sampler {
        // One last sample: the depth the spool is left with.
        sampler.finish().await;
    }
    pool.close().await;
    Ok(())
}
