//! `tollgate ingest`: serve the HTTP batch ingest API. Connects to PostgreSQL
//! (API keys) and Kafka (events topic) first and refuses to start, with an
//! error naming the address, when either is unreachable. Stops accepting
//! connections on SIGTERM or Ctrl-C, finishes requests in flight and flushes
//! the producer.

use std::time::Duration;

use anyhow::Context;
use tollgate_control::kafka::EventProducer;
use tollgate_control::keys::KeyStore;
use tollgate_ingest::http::{ingest_router, serve, IngestState};

use crate::config::Config;

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
    let listen = args.listen.as_deref().unwrap_or(&config.ingest.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (ingest.listen)"))?;
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string()),
        max_body_bytes = config.ingest.max_body_bytes,
        "ingest API listening"
    );
    serve(
        listener,
        ingest_router(state),
        super::shutdown::shutdown_signal(),
    )
    .await
    .context("ingest HTTP server failed")?;
    tracing::info!("shutting down: flushing events still in flight");
    producer.flush(Duration::from_secs(10))?;
    pool.close().await;
    Ok(())
}
