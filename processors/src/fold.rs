//! The seam between the generic consumer loop ([`crate::consumer`]) and what
//! one fold does with events: [`Fold`] maps an event to a row, says which
//! ClickHouse partition the row lands in, inserts a batch, and names the
//! table whose `(kafka_partition, kafka_offset)` columns hold its progress.
//! The consumer owns everything else (batching, resume, retries, commits).
//!
//! Two folds exist: [`CallsFold`] (the `calls` facts table) and
//! [`crate::audit::AuditFold`] (the `audit_chain` hash chain). Each runs in
//! its own consumer group, so each keeps its own progress.

use std::future::Future;

use chrono::{DateTime, Utc};
use clickhouse::Client;
use tollgate_contract::{Event, Rejection};

use crate::calls_sink::{self, call_row, CallRow, PartitionClock, PartitionKey};
use crate::cost::{price_row, SharedCatalog};
use crate::progress::Progress;

/// A row that knows the Kafka position it came from.
pub trait Positioned {
    /// `(kafka_partition, kafka_offset)`.
    fn position(&self) -> (i32, i64);
}

impl Positioned for CallRow {
    fn position(&self) -> (i32, i64) {
        (self.kafka_partition, self.kafka_offset)
    }
}

/// Where a message came from, for folds that need more than the event.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta<'a> {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka message key (the team id for `tollgate.events`).
    pub key: Option<&'a [u8]>,
}

/// One fold of the event stream into one ClickHouse table.
pub trait Fold: Send {
    type Row: Positioned + Send + Sync;

    /// Name in log lines.
    fn name(&self) -> &'static str;

    /// The table whose rows carry this fold's Kafka positions.
    fn table(&self) -> &'static str;

    /// Whether this fold sends messages it cannot use to the dead-letter
    /// topic. Only one fold per topic should, or each dead letter is written
    /// once per fold.
    fn dead_letters(&self) -> bool;

    /// Map one event to its row; `Ok(None)` when the fold has no row for it,
    /// `Err` when the event cannot be stored (dead-lettered, or skipped when
    /// [`Fold::dead_letters`] is false).
    fn row(
        &mut self,
        event: &Event,
        message: MessageMeta<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Self::Row>, Rejection>;

    /// The ClickHouse table partition `row` lands in (an insert is atomic
    /// only within one).
    fn partition_key(&self, row: &Self::Row) -> PartitionKey;

    /// Insert rows in the order given (Kafka order within each partition).
    fn insert(
        &self,
        client: &Client,
        rows: &[Self::Row],
    ) -> impl Future<Output = clickhouse::error::Result<()>> + Send;

    /// Partitions whose resume positions were just read: load whatever state
    /// the fold keeps per partition before their first row is made.
    fn load_partitions(
        &mut self,
        _client: &Client,
        _partitions: &[i32],
    ) -> impl Future<Output = clickhouse::error::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Partitions revoked or newly assigned: forget their state (rows made
    /// but not inserted are dropped by the consumer too).
    fn forget_partitions(&mut self, _partitions: &[i32]) {}

    /// Every row made so far is stored. `last` is true at shutdown.
    fn flushed(&mut self, _client: &Client, _last: bool) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The `calls` facts table (see [`crate::calls_sink`]), each row priced by
/// the cost fold (see [`crate::cost`]) before it is batched.
#[derive(Clone)]
pub struct CallsFold {
    pub clock: PartitionClock,
    pub prices: SharedCatalog,
    /// Recorded after every insert (see [`crate::progress`]).
    pub progress: Progress,
}

impl Fold for CallsFold {
    type Row = CallRow;

    fn name(&self) -> &'static str {
        "calls"
    }

    fn table(&self) -> &'static str {
        "calls"
    }

    fn dead_letters(&self) -> bool {
        true
    }

    fn row(
        &mut self,
        event: &Event,
        message: MessageMeta<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<CallRow>, Rejection> {
        let mut row = call_row(event, message.partition, message.offset, now)?;
        if let Some(row) = row.as_mut() {
            price_row(row, &self.prices.current());
        }
        Ok(row)
    }

    fn partition_key(&self, row: &CallRow) -> PartitionKey {
        self.clock.key(row.occurred_at)
    }

    async fn insert(&self, client: &Client, rows: &[CallRow]) -> clickhouse::error::Result<()> {
        calls_sink::insert(client, rows).await?;
        // The rows are stored whatever happens next. A progress row that
        // cannot be written only makes the recorded progress lag until the
        // next insert (see crate::progress): logged, not retried.
        if let Err(err) = self
            .progress
            .record(client, rows.iter().map(Positioned::position))
            .await
        {
            tracing::warn!(%err, "cannot record fold progress; budget settlement lags until the next insert");
        }
        Ok(())
    }
}
