//! `tollgate process`: run the calls processor until SIGTERM or ctrl-c, then
//! flush the open batch, commit, and exit 0. Loads the price catalog from
//! PostgreSQL first (the cost fold needs it) and keeps it fresh, and runs
//! the budget watcher (decisions on `tollgate.decisions`).

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tollgate_processors::cost::budgets::{BudgetStore, BudgetWatcher};
use tollgate_processors::cost::store::{keep_fresh, PriceStore};
use tollgate_processors::cost::SharedCatalog;
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
    let pool = tollgate_ingest::postgres::connect(&config.postgres).await?;
    let store = PriceStore::new(pool.clone());
    let catalog = store.catalog().await.with_context(|| {
        "cannot load the price catalog from postgres (run `tollgate migrate` first)"
    })?;
    info!(versions = catalog.len(), "price catalog loaded");
    let prices = SharedCatalog::new(catalog);
    tokio::spawn(keep_fresh(store, prices.clone(), shutdown.clone()));
    let watcher = BudgetWatcher::new(
        BudgetStore::new(pool),
        tollgate_processors::clickhouse::client(&config.clickhouse),
        &config.kafka,
    )
    .context("cannot create the budget decision producer")?;
    tokio::spawn(watcher.run(shutdown.clone()));
    tollgate_processors::consumer::run(
        &config.kafka,
        &config.clickhouse,
        &config.processor,
        prices,
        shutdown,
    )
    .await?;
    Ok(())
}
