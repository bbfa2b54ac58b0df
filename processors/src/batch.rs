//! The batching policy of the calls sink: when to cut a batch (rows, payload
//! bytes, age, or a change of ClickHouse partition), and which Kafka
//! positions a batch covers once it is inserted. Pure: no I/O, no clock of
//! its own (callers pass `now`), so every rule is unit-tested.
//!
//! A batch holds two things: the rows to insert, and per Kafka partition the
//! highest offset consumed while the batch was open (rows, but also messages
//! that were skipped, dead-lettered or have no row). After the insert is
//! acknowledged, `highest + 1` per partition is the offset to commit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::ProcessorConfig;
use crate::fold::{PartitionKey, Positioned};

/// Limits of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

impl From<&ProcessorConfig> for BatchPolicy {
    fn from(config: &ProcessorConfig) -> Self {
        Self {
            max_rows: config.batch_max_rows.max(1),
            max_bytes: config.batch_max_bytes.max(1),
            max_wait: Duration::from_millis(config.batch_max_wait_ms),
        }
    }
}

/// Rows waiting for one insert, and the Kafka positions they cover.
#[derive(Debug)]
pub struct Batch<R> {
    rows: Vec<R>,
    payload_bytes: usize,
    key: Option<PartitionKey>,
    /// Highest consumed offset per Kafka partition since the last flush.
    consumed: BTreeMap<i32, i64>,
    opened_at: Option<Instant>,
}

/// What a flushed batch hands over: rows to insert, then offsets to commit.
#[derive(Debug, PartialEq)]
pub struct Flushed<R> {
    pub rows: Vec<R>,
    /// Next offset to read per Kafka partition (`highest consumed + 1`).
    pub commit: BTreeMap<i32, i64>,
}

impl<R> Default for Batch<R> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            payload_bytes: 0,
            key: None,
            consumed: BTreeMap::new(),
            opened_at: None,
        }
    }
}

impl<R> Default for Flushed<R> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            commit: BTreeMap::new(),
        }
    }
}

impl<R: Positioned> Batch<R> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a row with `key` may join this batch. When it may not, flush
    /// first: one insert must stay within one ClickHouse partition.
    pub fn admits(&self, key: PartitionKey) -> bool {
        match self.key {
            None => true,
            Some(PartitionKey::Uncertain) => false,
            Some(current) => current == key && key != PartitionKey::Uncertain,
        }
    }

    /// Add a row. The caller checked [`Batch::admits`].
    pub fn push_row(&mut self, row: R, key: PartitionKey, payload_bytes: usize, now: Instant) {
        let (partition, offset) = row.position();
        self.mark_consumed(partition, offset, now);
        self.key = Some(key);
        self.payload_bytes += payload_bytes;
        self.rows.push(row);
    }

    /// Record a message that needs no row (skipped, dead-lettered, admin):
    /// it is done as soon as everything before it in the batch is inserted.
    pub fn mark_consumed(&mut self, partition: i32, offset: i64, now: Instant) {
        let highest = self.consumed.entry(partition).or_insert(offset);
        *highest = (*highest).max(offset);
        self.opened_at.get_or_insert(now);
    }

    /// Cut now on rows or bytes.
    pub fn is_full(&self, policy: &BatchPolicy) -> bool {
        self.rows.len() >= policy.max_rows || self.payload_bytes >= policy.max_bytes
    }

    /// When the batch must be flushed by age; `None` when there is nothing to flush.
    pub fn deadline(&self, policy: &BatchPolicy) -> Option<Instant> {
        self.opened_at.map(|t| t + policy.max_wait)
    }

    pub fn is_empty(&self) -> bool {
        self.opened_at.is_none()
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Forget everything of `partitions` (revoked: another consumer will read
    /// them from the committed offset and skip what ClickHouse already has).
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        let before = self.rows.len();
        self.rows.retain(|r| !partitions.contains(&r.position().0));
        for p in partitions {
            self.consumed.remove(p);
        }
        if self.rows.is_empty() {
            self.key = None;
            self.payload_bytes = 0;
        }
        if self.consumed.is_empty() {
            self.opened_at = None;
        }
        before - self.rows.len()
    }

    /// Close the batch and start an empty one.
    pub fn take(&mut self) -> Flushed<R> {
        let taken = std::mem::take(self);
        Flushed {
            rows: taken.rows,
            commit: taken
                .consumed
                .into_iter()
                .map(|(p, o)| (p, o + 1))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folds::calls::rows::{call_row, CallRow};

    fn row(partition: i32, offset: i64) -> CallRow {
        let event: tollgate_contract::Event = serde_json::from_value(
            crate::consumer::tests::call_json("2026-03-10T10:00:00.000Z"),
        )
        .unwrap();
        call_row(&event, partition, offset, chrono::Utc::now())
            .unwrap()
            .unwrap()
    }

    fn policy() -> BatchPolicy {
        BatchPolicy {
            max_rows: 3,
            max_bytes: 1000,
            max_wait: Duration::from_millis(500),
        }
    }

    const MARCH: PartitionKey = PartitionKey::Month(202603);
    const APRIL: PartitionKey = PartitionKey::Month(202604);

    #[test]
    fn full_by_rows_or_bytes() {
        let now = Instant::now();
        let mut b = Batch::new();
        b.push_row(row(0, 1), MARCH, 10, now);
        b.push_row(row(0, 2), MARCH, 10, now);
        assert!(!b.is_full(&policy()));
        b.push_row(row(0, 3), MARCH, 10, now);
        assert!(b.is_full(&policy()));

        let mut b = Batch::new();
        b.push_row(row(0, 1), MARCH, 1000, now);
        assert!(b.is_full(&policy()));
    }

    #[test]
    fn deadline_starts_with_first_message_of_any_kind() {
        let now = Instant::now();
        let mut b = Batch::new();
        assert_eq!(b.deadline(&policy()), None);
        b.mark_consumed(1, 7, now);
        assert_eq!(
            b.deadline(&policy()),
            Some(now + Duration::from_millis(500))
        );
        b.push_row(row(0, 1), MARCH, 10, now + Duration::from_millis(100));
        assert_eq!(
            b.deadline(&policy()),
            Some(now + Duration::from_millis(500))
        );
    }

    #[test]
    fn one_clickhouse_partition_per_batch() {
        let now = Instant::now();
        let mut b = Batch::new();
        assert!(b.admits(MARCH));
        b.push_row(row(0, 1), MARCH, 10, now);
        assert!(b.admits(MARCH));
        assert!(!b.admits(APRIL));
        assert!(!b.admits(PartitionKey::Uncertain));
        // Messages without rows do not pin a partition.
        let mut b = Batch::<CallRow>::new();
        b.mark_consumed(0, 1, now);
        assert!(b.admits(APRIL));
        // An uncertain row is always alone.
        let mut b = Batch::new();
        assert!(b.admits(PartitionKey::Uncertain));
        b.push_row(row(0, 1), PartitionKey::Uncertain, 10, now);
        assert!(!b.admits(PartitionKey::Uncertain));
        assert!(!b.admits(MARCH));
    }

    #[test]
    fn take_commits_next_offset_per_partition() {
        let now = Instant::now();
        let mut b = Batch::new();
        b.push_row(row(0, 10), MARCH, 10, now);
        b.mark_consumed(0, 11, now);
        b.push_row(row(1, 5), MARCH, 10, now);
        b.mark_consumed(2, 99, now);
        let flushed = b.take();
        assert_eq!(flushed.rows.len(), 2);
        assert_eq!(flushed.commit, BTreeMap::from([(0, 12), (1, 6), (2, 100)]));
        assert!(b.is_empty());
        assert!(b.admits(APRIL));
        assert_eq!(b.take(), Flushed::<CallRow>::default());
    }

    #[test]
    fn revoked_partitions_are_dropped() {
        let now = Instant::now();
        let mut b = Batch::new();
        b.push_row(row(0, 10), MARCH, 10, now);
        b.push_row(row(1, 5), MARCH, 10, now);
        b.push_row(row(1, 6), MARCH, 10, now);
        assert_eq!(b.drop_partitions(&[1]), 2);
        assert_eq!(b.rows(), 1);
        let flushed = b.take();
        assert_eq!(flushed.commit, BTreeMap::from([(0, 11)]));

        b.push_row(row(1, 5), MARCH, 10, now);
        b.drop_partitions(&[1]);
        assert!(b.is_empty());
        assert!(b.admits(APRIL));
    }
}
