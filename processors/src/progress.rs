//! Fold progress: which events of the events topic are fully folded, facts
//! and every view fed by them (`cost_daily` above all).
//!
//! After an insert into `calls` returns, ClickHouse has written the
//! materialized views too; only then does the calls fold record, per Kafka
//! partition, the highest offset of the insert in `fold_progress`
//! (`migrations/clickhouse/0022_fold_progress.sql`). So whoever reads
//! [`folded`] first and the rollup second finds every event at or below
//! those offsets in the rollup. The budget watcher publishes the offsets with
//! each subject's spend, and the proxy uses them to tell which of its own
//! settled calls that spend already includes (`docs/cost.md`, "Reserve and
//! settle").
//!
//! A lost progress row (the processor died between the two inserts) only
//! makes the offsets lag: the proxy then counts a call twice for a while,
//! which errs on the side of the budget, never against it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Row, Serialize)]
struct ProgressRow<'a> {
    topic: &'a str,
    kafka_partition: i32,
    kafka_offset: u64,
    recorded_at: u32,
}

#[derive(Debug, Row, Deserialize)]
struct FoldedRow {
    kafka_partition: i32,
    max_offset: u64,
}

const FOLDED_SQL: &str = "SELECT kafka_partition, max(kafka_offset) AS max_offset \
     FROM fold_progress WHERE topic = ? GROUP BY kafka_partition";

/// Where the calls fold records its progress, and who wants to hear of it.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The events topic the offsets belong to.
    pub topic: String,
    /// Woken after every recorded insert (the budget watcher waits on it,
    /// so a crossing is judged as soon as it is in the rollup).
    pub stored: Arc<Notify>,
}

impl Progress {
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_string(),
            stored: Arc::new(Notify::new()),
        }
    }

    /// Record that every position up to `highest` (partition -> offset) is
    /// stored, then wake the listeners.
    pub async fn record(
        &self,
        client: &Client,
        highest: &BTreeMap<i32, i64>,
        timeout: Option<std::time::Duration>,
    ) -> clickhouse::error::Result<()> {
        if highest.is_empty() {
            return Ok(());
        }
        let now = u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX);
        let mut insert = client
            .insert::<ProgressRow<'_>>("fold_progress")
            .await?
            .with_timeouts(timeout, timeout);
        for (partition, offset) in highest {
            insert
                .write(&ProgressRow {
                    topic: &self.topic,
                    kafka_partition: *partition,
                    kafka_offset: u64::try_from(*offset).unwrap_or(0),
                    recorded_at: now,
                })
                .await?;
        }
        insert.end().await?;
        self.stored.notify_one();
        Ok(())
    }
}

/// The highest offset per partition among `positions` (partition, offset).
pub fn highest(positions: impl IntoIterator<Item = (i32, i64)>) -> BTreeMap<i32, i64> {
    let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset) in positions {
        let slot = highest.entry(partition).or_insert(offset);
        *slot = (*slot).max(offset);
    }
    highest
}

/// Per partition of `topic`, the highest offset whose event is in `calls`
/// and in every view fed by it.
pub async fn folded(client: &Client, topic: &str) -> clickhouse::error::Result<HashMap<i32, i64>> {
    let rows: Vec<FoldedRow> = client.query(FOLDED_SQL).bind(topic).fetch_all().await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.kafka_partition,
                i64::try_from(r.max_offset).unwrap_or(i64::MAX),
            )
        })
        .collect())
}

/// The statements, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    vec![
        (
            "progress.folded".into(),
            Client::default()
                .query(FOLDED_SQL)
                .bind("tollgate.events")
                .sql_display()
                .to_string(),
        ),
        (
            "progress.record".into(),
            "INSERT INTO fold_progress (topic, kafka_partition, kafka_offset, recorded_at) \
             VALUES ('tollgate.events', 0, 42, now())"
                .into(),
        ),
    ]
}
