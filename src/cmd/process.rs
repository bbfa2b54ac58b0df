//! `tollgate process`: run the folds (`calls` with its cost fold and budget
//! watcher, the `audit` chain) until SIGTERM or ctrl-c, then flush each open
//! batch, commit, and exit 0. Each fold is its own consumer group with its
//! own progress in ClickHouse. The calls fold loads the price catalog from
//! PostgreSQL first and keeps it fresh; the budget watcher publishes
//! decisions on `tollgate.decisions`; the outbox relay publishes committed
//! admin events (`processors/src/outbox.rs`).

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tollgate_control::budgets::BudgetStore;
use tollgate_control::kafka::EventProducer;
use tollgate_control::outbox::OutboxRelay;
use tollgate_control::prices::read::keep_fresh;
use tollgate_control::prices::store::PriceStore;
use tollgate_processors::cost::budget_watcher::BudgetWatcher;
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
    let relay = std::sync::Mutex::new(None);
    let calls_fold = async {
        if calls {
            let progress = Progress::new(&config.kafka.events_topic);
            let (prices, relay_task) = start_cost_fold(config, progress.clone(), &shutdown).await?;
            if let Ok(mut slot) = relay.lock() {
                *slot = Some(relay_task);
            }
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
    shutdown.cancel();
    if let Some(relay) = relay.lock().ok().and_then(|mut r| r.take()) {
        // Let a drain in progress finish: cut short, it could publish rows
        // without marking them, and they would be published again.
        let wait = Duration::from_millis(config.kafka.message_timeout_ms) + Duration::from_secs(5);
        if tokio::time::timeout(wait, relay).await.is_err() {
            tracing::warn!("outbox relay did not stop in time");
        }
    }
    calls_result?;
    audit_result?;
    Ok(())
}

/// Load the price catalog (kept fresh in the background), start the
/// budget watcher and the outbox relay (publishes admin events committed by
/// the API, the CLI or the watcher); returns the catalog the calls fold
/// prices rows with, and the relay's task.
async fn start_cost_fold(
    config: &Config,
    progress: Progress,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SharedCatalog, tokio::task::JoinHandle<()>)> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
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
        BudgetStore::new(pool.clone()),
        tollgate_control::clickhouse::client(&config.clickhouse),
        &config.kafka,
        progress,
    )
    .context("cannot create the budget decision producer")?;
    tokio::spawn(watcher.run(shutdown.clone()));
    let relay = OutboxRelay::new(
        pool,
        EventProducer::new(&config.kafka).context("cannot create the outbox producer")?,
    );
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    Ok((prices, relay))
}
