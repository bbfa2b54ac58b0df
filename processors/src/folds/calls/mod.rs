//! The calls fold: every `ai.call.*` event on `tollgate.events` becomes one
//! row of the `calls` facts table, priced by the cost step before it is
//! batched; ClickHouse's views fold the same insert into the latency and
//! cost rollups ([`super::latency`], [`super::cost_rollup`]). This fold
//! dead-letters what no fold can use.
//!
//! - [`rows`]: the pure part, event and Kafka position to a priced row;
//! - [`cost`]: the cost step the pure part applies;
//! - [`pattern`]: the error-pattern and recovery columns the pure part fills;
//! - [`crate::recent_events`]: the window of recent event ids that keeps
//!   copies out (shared with the breakers);
//! - [`sink`]: the insert into `calls` and the `fold_progress` write;
//! - [`fold`]: the two joined for the consumer runtime.
//!
//! Started with it, in the same process: the price catalog kept fresh from
//! PostgreSQL, the budget watcher (reads the rollup after each recorded
//! insert), the outbox relay (publishes admin events), and the
//! error-patterns fold's pattern and recovery learners
//! ([`crate::patterns`], [`crate::recovery`]), and the pipeline-health
//! sampler ([`crate::health`]: this fold's consumer lag and dead letters).

pub mod cost;
pub mod fold;
pub mod pattern;
pub mod rows;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tollgate_contract::catalog::SharedCatalog;
use tollgate_control::budgets::BudgetStore;
use tollgate_control::clickhouse::client;
use tollgate_control::kafka::EventProducer;
use tollgate_control::outbox::OutboxRelay;
use tollgate_control::prices::read::keep_fresh;
use tollgate_control::prices::store::PriceStore;
use tracing::{info, warn};

use super::{FoldContext, FoldEntry, Running, Runs};
use crate::clickhouse::error as ch_error;
use crate::consumer::{run_fold_reporting, Counters, Reporting};
use crate::cost::budget_watcher::BudgetWatcher;
use crate::error::{Error, Result};
use crate::health::ConsumerHealth;
use crate::progress::Progress;
use fold::CallsFold;
use rows::PartitionClock;
use sink::ClickHouseCallsSink;

pub const NAME: &str = "calls";

/// The registry's line for this fold.
pub const FOLD: FoldEntry = FoldEntry {
    name: NAME,
    description: "every call event as one priced row of the calls facts table",
    runs: Runs::Consumer(start),
    catalog,
};

/// Whether the `calls` table exists.
const HAS_CALLS_SQL: &str =
    "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'calls'";

/// Every query the calls fold sends at run time, named, for the SQL
/// compatibility check (the resume query is shown for partitions 0 and 1).
/// The insert is `INSERT INTO calls(<CallRow fields>) FORMAT RowBinary`.
pub fn catalog() -> Vec<(String, String)> {
    let mut statements = vec![
        ("processor.has_calls".into(), HAS_CALLS_SQL.into()),
        (
            "processor.occurred_at_type".into(),
            sink::OCCURRED_AT_TYPE_SQL.into(),
        ),
        (
            "processor.server_timezone".into(),
            sink::SERVER_TIMEZONE_SQL.into(),
        ),
        (
            "processor.stored_offsets".into(),
            crate::resume::stored_offsets_sql(&[0, 1]),
        ),
        (
            "processor.recent_event_ids".into(),
            sink::recent_event_ids_sql(&[(0, 41), (1, -1)]),
        ),
        (
            "processor.running_inserts".into(),
            crate::insert_fence::RUNNING_INSERTS_SQL.replace('?', "'tollgate-db/tollgate '"),
        ),
        (
            "processor.inserts_still_running".into(),
            crate::insert_fence::STILL_RUNNING_SQL
                .replace('?', "['00000000-0000-0000-0000-000000000000']"),
        ),
    ];
    statements.extend(crate::progress::catalog());
    statements.extend(tollgate_control::pipeline_health::catalog());
    statements
}

fn start(context: Arc<FoldContext>) -> Running {
    Box::pin(async move { run_with_cost(&context).await })
}

/// Start the cost step's companions, run the fold until shutdown, then let
/// the outbox relay finish a drain in progress.
async fn run_with_cost(context: &FoldContext) -> Result<Counters> {
    let progress = Progress::new(&context.kafka.events_topic);
    let (prices, relay) = start_cost(context, progress.clone()).await?;
    let result = run(context, prices, progress).await;
    // The relay stops with the processor: on an error, stop everything.
    context.shutdown.cancel();
    // Let a drain in progress finish: cut short, it could publish rows
    // without marking them, and they would be published again.
    let wait = Duration::from_millis(context.kafka.message_timeout_ms) + Duration::from_secs(5);
    if tokio::time::timeout(wait, relay).await.is_err() {
        warn!("outbox relay did not stop in time");
    }
    result
}

/// Load the price catalog (kept fresh in the background), start the
/// budget watcher and the outbox relay (publishes admin events committed by
/// the API, the CLI or the watcher); returns the catalog the calls fold
/// prices rows with, and the relay's task.
async fn start_cost(
    context: &FoldContext,
    progress: Progress,
) -> Result<(SharedCatalog, JoinHandle<()>)> {
    let pool = tollgate_control::postgres::connect(&context.postgres).await?;
    let store = PriceStore::new(pool.clone());
    let catalog = store.catalog().await.map_err(|e| {
        Error::setup(
            "cannot load the price catalog from postgres (run `tollgate migrate` first)",
            e,
        )
    })?;
    info!(versions = catalog.len(), "price catalog loaded");
    context.metrics.set_price_versions(catalog.len());
    let prices = SharedCatalog::new(catalog);
    let metrics = context.metrics.clone();
    tokio::spawn(keep_fresh(
        store.pool().clone(),
        prices.clone(),
        context.shutdown.clone(),
        move |versions| metrics.set_price_versions(versions),
    ));
    let watcher = BudgetWatcher::new(
        BudgetStore::new(pool.clone()),
        client(&context.clickhouse),
        &context.kafka,
        progress,
    )
    .map_err(|e| Error::setup("cannot create the budget decision producer", e))?
    .queries_timing_out(context.clickhouse.query_timeout());
    tokio::spawn(watcher.run(context.shutdown.clone()));
    // The error-patterns fold's learners read what this fold's views write.
    crate::patterns::PatternLearner::start(context)?;
    crate::recovery::RecoveryLearner::start(context)?;
    let producer = EventProducer::new(&context.kafka)
        .map_err(|e| Error::setup("cannot create the outbox producer", e))?;
    let relay = tokio::spawn(OutboxRelay::new(pool, producer).run(context.shutdown.clone()));
    Ok((prices, relay))
}

/// Run the calls fold until shutdown is cancelled; then flush the open
/// batch, commit, and return what was done. Every row is priced from
/// `prices`; every insert is recorded in `progress`.
pub async fn run(
    context: &FoldContext,
    prices: SharedCatalog,
    progress: Progress,
) -> Result<Counters> {
    let ch = &context.clickhouse;
    let client = client(ch);
    let (clock, timezone) = sink::partition_clock(&client).await.map_err(|e| {
        ch_error(
            ch,
            "cannot read the calls table (is the server running? `dev/stack up` starts one)",
            e,
        )
    })?;
    let has_calls: u64 = client
        .query(HAS_CALLS_SQL)
        .fetch_one()
        .await
        .map_err(|e| ch_error(ch, "cannot read system.tables", e))?;
    if has_calls == 0 {
        return Err(Error::Config(format!(
            "clickhouse database {} at {} has no calls table; run `tollgate migrate` first",
            ch.database, ch.url
        )));
    }
    if clock == PartitionClock::Other {
        warn!(
            %timezone,
            "calls.occurred_at is partitioned in a non-UTC timezone; rows within 14 h of a month boundary are inserted one per batch"
        );
    }
    info!(%timezone, "calls are partitioned by month in this timezone");
    let sink = if ch.cluster.is_empty() {
        ClickHouseCallsSink::new(client, progress)
    } else {
        ClickHouseCallsSink::new(client, progress).replicated(&ch.database)
    }
    .timing_out(ch.insert_timeout());
    let metrics = context.metrics.fold(FOLD.name);
    let fold = CallsFold::new(clock, prices, sink).remembering(
        context.processor.recent_event_ids_per_partition,
        metrics.events_repeated.clone(),
    );
    // The calls fold is the one that dead-letters and whose lag is the
    // pipeline's: it reports both to `pipeline_health`.
    let health = Arc::new(ConsumerHealth::default());
    crate::health::start(
        &context.kafka,
        ch,
        &context.processor.group_id,
        Duration::from_secs(context.processor.health_sample_secs),
        health.clone(),
        metrics.consumer_lag.clone(),
        context.shutdown.clone(),
    )?;
    let reporting = Reporting {
        health: Some(health),
        metrics,
    };
    run_fold_reporting(
        fold,
        &context.kafka,
        ch,
        &context.processor,
        &context.processor.group_id,
        reporting,
        context.shutdown.clone(),
    )
    .await
}
