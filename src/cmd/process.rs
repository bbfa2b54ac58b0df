//! `tollgate process`: run the folds (`calls` with its cost fold and budget
//! watcher, the `audit` chain) until SIGTERM or ctrl-c, then flush each open
//! batch, commit, and exit 0. Each fold is its own consumer group with its
//! own progress in ClickHouse. The calls fold loads the price catalog from
//! PostgreSQL first and keeps it fresh; the budget watcher publishes
//! decisions on `tollgate.decisions`.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tollgate_processors::cost::budget_watcher::BudgetWatcher;
use tollgate_processors::cost::budgets::BudgetStore;
use tollgate_processors::cost::store::{keep_fresh, PriceStore};
use tollgate_processors::cost::SharedCatalog;
use tollgate_processors::progress::Progress;
use tracing::info;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Folds to run, comma-separated: `calls` (facts table), `audit` (hash chain).
    #[arg(long, value_delimiter = ',', default_value = "calls,audit")]
    folds: Vec<String>,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let (mut calls, mut audit) = (false, false);
    for fold in &args.folds {
        match fold.trim() {
            "calls" => calls = true,
            "audit" => audit = true,
            other => anyhow::bail!("unknown fold {other:?} in --folds (known: calls, audit)"),
        }
    }
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
    let calls_fold = async {
        if calls {
            let progress = Progress::new(&config.kafka.events_topic);
            let prices = start_cost_fold(config, progress.clone(), &shutdown).await?;
            let result = tollgate_processors::consumer::run(
                &config.kafka,
                &config.clickhouse,
                &config.processor,
                prices,
                progress,
                shutdown.clone(),
            )
            .await;
            if result.is_err() {
                shutdown.cancel();
            }
            result?;
        }
        anyhow::Ok(())
    };
    let audit_fold = async {
        if audit {
            let result = tollgate_processors::audit::run(
                &config.kafka,
                &config.clickhouse,
                &config.processor,
                &config.audit,
                shutdown.clone(),
            )
            .await;
            if result.is_err() {
                shutdown.cancel();
            }
            result?;
        }
        anyhow::Ok(())
    };
    let (calls_result, audit_result) = tokio::join!(calls_fold, audit_fold);
    calls_result?;
    audit_result?;
    Ok(())
}

/// Load the price catalog (kept fresh in the background) and start the
/// budget watcher; returns the catalog the calls fold prices rows with.
async fn start_cost_fold(
    config: &Config,
    progress: Progress,
    shutdown: &CancellationToken,
) -> anyhow::Result<SharedCatalog> {
    let pool = tollgate_ingest::postgres::connect(&config.postgres).await?;
    let store = PriceStore::new(pool.clone());
    let catalog = store
        .catalog()
        .await
        .context("cannot load the price catalog from postgres (run `tollgate migrate` first)")?;
    info!(versions = catalog.len(), "price catalog loaded");
    let prices = SharedCatalog::new(catalog);
    tokio::spawn(keep_fresh(
        store.pool().clone(),
        prices.clone(),
        shutdown.clone(),
    ));
    let watcher = BudgetWatcher::new(
        BudgetStore::new(pool),
        tollgate_processors::clickhouse::client(&config.clickhouse),
        &config.kafka,
        progress,
    )
    .context("cannot create the budget decision producer")?;
    tokio::spawn(watcher.run(shutdown.clone()));
    Ok(prices)
}
