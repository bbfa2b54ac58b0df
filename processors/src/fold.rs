//! The seam between the generic consumer runtime ([`crate::consumer`]) and
//! one fold ([`crate::folds`]). The runtime owns consuming, batching,
//! resume positions, retries and commits; a [`Fold`] owns what is particular
//! to one fold, in two parts that every fold lays out the same way:
//!
//! - a *pure part* (`folds/<name>/rows.rs`) that turns an event and its
//!   Kafka position into rows: no I/O, no async, no clock of its own;
//! - a *sink* (`folds/<name>/sink.rs`): a small trait over the fold's rows
//!   with the ClickHouse implementation and an in-memory fake, which owns
//!   every write the fold makes (its table, and its progress or
//!   checkpoints), so none hides behind the runtime's insert.
//!
//! `folds/<name>/fold.rs` joins the two into the [`Fold`] the runtime runs.

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use tollgate_contract::{Event, Rejection};

/// A row that knows the Kafka position it came from.
pub trait Positioned {
    /// `(kafka_partition, kafka_offset)`.
    fn position(&self) -> (i32, i64);
}

/// A bare Kafka position `(partition, offset)`.
impl Positioned for (i32, i64) {
    fn position(&self) -> (i32, i64) {
        *self
    }
}

/// Where a message came from: its Kafka position and key.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta<'a> {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka message key (the team id for `tollgate.events`).
    pub key: Option<&'a [u8]>,
}

/// Which ClickHouse table partition a row lands in, as far as the processor
/// can tell. An insert is atomic only within one partition, so a batch never
/// mixes two [`PartitionKey::Month`]s and an [`PartitionKey::Uncertain`] row
/// is always inserted alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey {
    /// `YYYYMM` (or 0 for a table with a single partition).
    Month(u32),
    /// Near a month boundary in a server timezone we cannot evaluate: the
    /// row may land in either month.
    Uncertain,
}

/// Why a sink could not write or read. The runtime retries either way; the
/// variant only tells the log line what failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::error::Error),
    /// The anchor topic did not acknowledge a checkpoint.
    #[error("anchor: {0}")]
    Anchor(String),
    /// An in-memory sink told to fail (tests).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// One fold of the event stream into one ClickHouse table.
pub trait Fold: Send {
    type Row: Positioned + Send + Sync;

    /// Name in log lines (the registry's name, see [`crate::folds`]).
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

    /// Rows a failed insert stored after all (found in [`Fold::table`] by
    /// their positions when the insert was retried, every insert running
    /// then having ended): record what [`Fold::store`] records after its
    /// rows, and bring level whatever ClickHouse writes in the same insert
    /// and may have missed (a materialized view's part). An error is
    /// retried.
    fn stored_after_failure(
        &mut self,
        _rows: &[Self::Row],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// The ClickHouse table partition `row` lands in.
    fn partition_key(&self, row: &Self::Row) -> PartitionKey;

    /// Store rows in the order given (Kafka order within each partition),
    /// with whatever the fold records after them.
    fn store(&mut self, rows: &[Self::Row]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Partitions whose resume positions were just read (partition ->
    /// highest offset stored in [`Fold::table`], `None`: nothing stored):
    /// load whatever state the fold keeps per partition before their first
    /// row is made.
    fn load_partitions(
        &mut self,
        _stored: &HashMap<i32, Option<i64>>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Partitions revoked or newly assigned: forget their state (rows made
    /// but not inserted are dropped by the consumer too).
    fn forget_partitions(&mut self, _partitions: &[i32]) {}

    /// Every row made so far is stored. `last` is true at shutdown.
    fn flushed(&mut self, _last: bool) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// When the fold wants [`Fold::flushed`] although no message came and
    /// no batch is open (an interval of its own: the audit fold's
    /// checkpoints); `None`: only after batches.
    fn idle_due(&self) -> Option<std::time::Instant> {
        None
    }
}
