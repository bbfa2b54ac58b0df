//! `tollgate process`: run the calls processor until SIGTERM or ctrl-c, then
//! flush the open batch, commit, and exit 0.

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: &Config) -> anyhow::Result<()> {
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
    tollgate_processors::consumer::run(
        &config.kafka,
        &config.clickhouse,
        &config.processor,
        shutdown,
    )
    .await?;
    Ok(())
}
