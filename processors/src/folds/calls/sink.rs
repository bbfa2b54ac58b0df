//! The calls fold's sink: every write the fold makes. A batch of rows goes
//! into `calls` (ClickHouse writes the latency, error-pattern and cost
//! rollups through their views in the same insert), and then the highest
//! offset per Kafka partition goes into `fold_progress` (see
//! [`crate::progress`] for why the order matters to budgets).
//!
//! [`CallsSink`] is tied to rows, not to a client: [`ClickHouseCallsSink`]
//! is production, [`MemoryCallsSink`] keeps both writes in memory for tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use clickhouse::Client;

use tracing::{error, warn};

use super::rows::{column_timezone, CallMeta, CallRecord, CallRow, PartitionClock};
use crate::clickhouse::insert_encoded;
use crate::cost::rollup_check::{self, BatchCells};
use crate::fold::SinkError;
use crate::folds::view_repair;
use crate::insert_fence::sync_replica_sql;
use crate::progress::Progress;
use crate::recent_events::RecentEvents;

/// Where the calls fold writes.
pub trait CallsSink: Send + Sync {
    /// Insert `rows` into `calls` in one request, in the order given.
    fn insert_calls(
        &self,
        rows: &[CallRecord],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// `calls` holds `rows` (a failed insert stored them after all), but
    /// the views of that insert may have missed them: check the cost
    /// rollups, the latency and the error-pattern tables of their cells
    /// against `calls` and repair what disagrees.
    fn level_rollups(
        &self,
        rows: &[CallRecord],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Record that every position up to `highest` (partition -> offset) is
    /// folded, then wake whoever waits for it.
    fn record_progress(
        &self,
        highest: &BTreeMap<i32, i64>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Read the event ids stored in `calls` after each `(partition,
    /// offset)` of `after` into `into`, partition by partition in offset
    /// order (streamed: one id in memory at a time); returns how many.
    fn recent_event_ids(
        &self,
        after: &[(i32, i64)],
        into: &mut RecentEvents,
    ) -> impl Future<Output = Result<usize, SinkError>> + Send;
}

/// An event id stored in `calls`, with its Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
struct StoredId {
    kafka_partition: i32,
    event_id: String,
}

/// The statement of [`CallsSink::recent_event_ids`].
pub fn recent_event_ids_sql(after: &[(i32, i64)]) -> String {
    let within = after
        .iter()
        .map(|(p, o)| format!("(kafka_partition = {p} AND kafka_offset > {o})"))
        .collect::<Vec<_>>()
        .join(" OR ");
    format!(
        "SELECT kafka_partition, event_id FROM calls WHERE {within} ORDER BY kafka_partition, kafka_offset"
    )
}

/// Production: RowBinary inserts into ClickHouse.
#[derive(Clone)]
pub struct ClickHouseCallsSink {
    client: Client,
    /// `INSERT INTO calls(<CallRow's fields>) FORMAT RowBinary`.
    insert_sql: String,
    progress: Progress,
    /// On a cluster, the database whose facts and rollups this replica
    /// syncs before it compares them.
    replicated: Option<String>,
    /// `clickhouse.insert_timeout_secs` of its inserts.
    insert_timeout: Option<std::time::Duration>,
}

impl ClickHouseCallsSink {
    pub fn new(client: Client, progress: Progress) -> Self {
        Self {
            client,
            insert_sql: crate::rowbinary::insert_sql::<CallRow>("calls"),
            progress,
            replicated: None,
            insert_timeout: None,
        }
    }

    /// Inserts wait at most `timeout` (`clickhouse.insert_timeout_secs`).
    pub fn timing_out(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.insert_timeout = timeout;
        self
    }

    /// The tables of `database` are replicated (`clickhouse.cluster` set).
    pub fn replicated(mut self, database: &str) -> Self {
        self.replicated = Some(database.to_string());
        self
    }
}

impl CallsSink for ClickHouseCallsSink {
    async fn insert_calls(&self, rows: &[CallRecord]) -> Result<(), SinkError> {
        insert_encoded(&self.client, &self.insert_sql, rows, self.insert_timeout).await?;
        Ok(())
    }

    async fn level_rollups(&self, rows: &[CallRecord]) -> Result<(), SinkError> {
        let Some(cells) =
            BatchCells::of(rows.iter().map(|r| (&*r.meta.team_id, r.meta.occurred_at)))
        else {
            return Ok(());
        };
        let Some(batch) = view_repair::Scope::of(rows.iter().map(|r| {
            (
                &*r.meta.team_id,
                r.meta.occurred_at,
                r.meta.kafka_partition,
                r.meta.kafka_offset,
            )
        })) else {
            return Ok(());
        };
        let views = view_repair::tables();
        if let Some(database) = &self.replicated {
            // Another replica may hold parts of these cells this one has
            // not fetched yet (a previous owner wrote through it).
            for table in ["calls", "cost_adjustments"]
                .into_iter()
                .chain(rollup_check::checked().map(|r| r.table))
                .chain(views.iter().map(view_repair::ViewTable::table))
            {
                self.client
                    .query(&sync_replica_sql(database, table))
                    .execute()
                    .await?;
            }
        }
        let (found, still) = rollup_check::level(&self.client, &cells).await?;
        for d in &found {
            warn!(
                table = d.table,
                cells = d.cells,
                calls = d.calls,
                cost = %d.cost,
                teams = ?cells.teams,
                from = %cells.from,
                to = %cells.to,
                "a failed insert left this cost rollup short of calls; repaired it"
            );
        }
        for table in still {
            error!(
                table,
                teams = ?cells.teams,
                from = %cells.from,
                to = %cells.to,
                "cost rollup still disagrees with calls after its repair (was `tollgate reprice` running?); `tollgate rollups check` shows it"
            );
        }
        let (found, still) = view_repair::level(&self.client, &views, &batch).await?;
        for d in &found {
            warn!(
                table = d.table,
                cells = d.cells,
                short = d.calls,
                of = d.measure,
                teams = ?cells.teams,
                from = batch.from,
                to = batch.to,
                "a failed insert left this view short of calls; repaired it"
            );
        }
        for table in still {
            error!(
                table,
                teams = ?cells.teams,
                from = batch.from,
                to = batch.to,
                "view still disagrees with calls after its repair (short by more than the failed insert's rows, or holding more than calls)"
            );
        }
        Ok(())
    }

    async fn record_progress(&self, highest: &BTreeMap<i32, i64>) -> Result<(), SinkError> {
        self.progress
            .record(&self.client, highest, self.insert_timeout)
            .await?;
        Ok(())
    }

    async fn recent_event_ids(
        &self,
        after: &[(i32, i64)],
        into: &mut RecentEvents,
    ) -> Result<usize, SinkError> {
        if after.is_empty() {
            return Ok(0);
        }
        let mut cursor = self
            .client
            .query(&recent_event_ids_sql(after))
            .fetch::<StoredId>()?;
        let mut read = 0;
        while let Some(id) = cursor.next().await? {
            into.restore(id.kafka_partition, [id.event_id.as_str()]);
            read += 1;
        }
        Ok(read)
    }
}

/// What a [`MemoryCallsSink`] holds.
#[derive(Debug, Default)]
pub struct StoredCalls {
    pub calls: Vec<CallRecord>,
    /// Highest recorded offset per partition.
    pub progress: BTreeMap<i32, i64>,
    /// Every write in order: `calls` or `progress`.
    pub writes: Vec<&'static str>,
    /// Fail the next this many `calls` inserts.
    pub fail_inserts: usize,
    /// Fail every progress write while set.
    pub fail_progress: bool,
    /// Rows whose rollups were leveled, in order.
    pub leveled: Vec<CallRecord>,
}

/// Test double: both writes in memory, failures on request.
#[derive(Debug, Clone, Default)]
pub struct MemoryCallsSink(pub Arc<Mutex<StoredCalls>>);

impl MemoryCallsSink {
    pub fn stored(&self) -> MutexGuard<'_, StoredCalls> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CallsSink for MemoryCallsSink {
    async fn insert_calls(&self, rows: &[CallRecord]) -> Result<(), SinkError> {
        let mut stored = self.stored();
        if stored.fail_inserts > 0 {
            stored.fail_inserts -= 1;
            return Err(SinkError::Unavailable("calls insert".into()));
        }
        stored.calls.extend_from_slice(rows);
        stored.writes.push("calls");
        Ok(())
    }

    async fn level_rollups(&self, rows: &[CallRecord]) -> Result<(), SinkError> {
        let mut stored = self.stored();
        stored.leveled.extend_from_slice(rows);
        stored.writes.push("level");
        Ok(())
    }

    async fn record_progress(&self, highest: &BTreeMap<i32, i64>) -> Result<(), SinkError> {
        let mut stored = self.stored();
        if stored.fail_progress {
            return Err(SinkError::Unavailable("progress write".into()));
        }
        for (partition, offset) in highest {
            let slot = stored.progress.entry(*partition).or_insert(*offset);
            *slot = (*slot).max(*offset);
        }
        stored.writes.push("progress");
        Ok(())
    }

    async fn recent_event_ids(
        &self,
        after: &[(i32, i64)],
        into: &mut RecentEvents,
    ) -> Result<usize, SinkError> {
        let stored = self.stored();
        let mut rows: Vec<&CallMeta> = stored
            .calls
            .iter()
            .map(|r| &r.meta)
            .filter(|r| {
                after
                    .iter()
                    .any(|&(p, o)| r.kafka_partition == p && r.kafka_offset > o)
            })
            .collect();
        rows.sort_by_key(|r| (r.kafka_partition, r.kafka_offset));
        for row in &rows {
            into.restore(row.kafka_partition, [&*row.event_id]);
        }
        Ok(rows.len())
    }
}

/// Type of `calls.occurred_at` (it may name a timezone).
pub const OCCURRED_AT_TYPE_SQL: &str =
    "SELECT type FROM system.columns WHERE database = currentDatabase() AND table = 'calls' AND name = 'occurred_at'";
/// The server's timezone.
pub const SERVER_TIMEZONE_SQL: &str = "SELECT timezone()";

/// Ask ClickHouse which timezone `calls.occurred_at` is evaluated in: the
/// column's own (`DateTime('UTC')`) or else the server's.
pub async fn partition_clock(
    client: &Client,
) -> clickhouse::error::Result<(PartitionClock, String)> {
    let column_type: Option<String> = client.query(OCCURRED_AT_TYPE_SQL).fetch_optional().await?;
    if let Some(tz) = column_type.as_deref().and_then(column_timezone) {
        return Ok((PartitionClock::from_timezone(&tz), tz));
    }
    let tz: String = client.query(SERVER_TIMEZONE_SQL).fetch_one().await?;
    Ok((PartitionClock::from_timezone(&tz), tz))
}
