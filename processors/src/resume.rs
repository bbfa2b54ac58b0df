//! Where each Kafka partition resumes, as recorded in ClickHouse itself.
//!
//! Every `calls` row carries the Kafka partition and offset it came from, and
//! rows of one partition are inserted in offset order, each insert atomic (a
//! batch never spans two table partitions). So `max(kafka_offset)` of a
//! partition is exactly the last message whose effect is stored, whatever
//! happened to Kafka's committed offset: messages at or below it are skipped.

use std::collections::HashMap;

use clickhouse::{Client, Row};
use serde::Deserialize;

/// Known resume positions of the partitions this consumer owns.
#[derive(Debug, Default)]
pub struct ResumePositions {
    /// Partition -> highest offset stored in ClickHouse (`None`: nothing stored).
    known: HashMap<i32, Option<i64>>,
}

impl ResumePositions {
    pub fn new() -> Self {
        Self::default()
    }

    /// `None` when the partition must be looked up first.
    pub fn get(&self, partition: i32) -> Option<Option<i64>> {
        self.known.get(&partition).copied()
    }

    /// Whether the message at `offset` is already stored.
    pub fn is_stored(&self, partition: i32, offset: i64) -> bool {
        matches!(self.known.get(&partition), Some(Some(max)) if offset <= *max)
    }

    pub fn set(&mut self, partition: i32, stored: Option<i64>) {
        self.known.insert(partition, stored);
    }

    /// After an insert: everything up to `offset` is stored. Only known
    /// partitions move; an unknown one is still looked up on its next message.
    pub fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(stored) = self.known.get_mut(&partition) {
            *stored = Some(stored.map_or(offset, |s| s.max(offset)));
        }
    }

    /// A message delivered at `offset` of `partition`, one at a time, as
    /// the fold models see them (`folds/*/model.rs`): `false` when it is
    /// already stored (a redelivery the processor skips); else it now counts
    /// as stored.
    pub fn first_delivery(&mut self, partition: i32, offset: i64) -> bool {
        if self.get(partition).is_none() {
            self.set(partition, None);
        }
        if self.is_stored(partition, offset) {
            return false;
        }
        self.advance(partition, offset);
        true
    }

    /// Forget partitions after a rebalance: they are looked up again on their
    /// next message, because another consumer may have stored more meanwhile.
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.known.remove(p);
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct StoredMax {
    kafka_partition: i32,
    max_offset: i64,
}

/// The SQL that reads resume positions (also listed for the compatibility check).
pub fn stored_offsets_sql(partitions: &[i32]) -> String {
    stored_offsets_sql_in("calls", partitions)
}

/// Like [`stored_offsets_sql`] for any table whose rows carry
/// `kafka_partition` and `kafka_offset` (each fold keeps its own progress).
pub fn stored_offsets_sql_in(table: &str, partitions: &[i32]) -> String {
    let list = partitions
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT kafka_partition, max(kafka_offset) AS max_offset FROM {table} WHERE kafka_partition IN ({list}) GROUP BY kafka_partition"
    )
}

/// Highest stored offset per partition; partitions with no rows map to `None`.
pub async fn stored_offsets(
    client: &Client,
    partitions: &[i32],
) -> clickhouse::error::Result<HashMap<i32, Option<i64>>> {
    stored_offsets_in(client, "calls", partitions).await
}

/// Like [`stored_offsets`] for `table`.
pub async fn stored_offsets_in(
    client: &Client,
    table: &str,
    partitions: &[i32],
) -> clickhouse::error::Result<HashMap<i32, Option<i64>>> {
    let mut out: HashMap<i32, Option<i64>> = partitions.iter().map(|p| (*p, None)).collect();
    if partitions.is_empty() {
        return Ok(out);
    }
    let rows: Vec<StoredMax> = client
        .query(&stored_offsets_sql_in(table, partitions))
        .fetch_all()
        .await?;
    for row in rows {
        out.insert(row.kafka_partition, Some(row.max_offset));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_only_what_is_stored() {
        let mut r = ResumePositions::new();
        assert_eq!(r.get(0), None);
        assert!(!r.is_stored(0, 0));
        r.set(0, Some(41));
        r.set(1, None);
        assert!(r.is_stored(0, 41));
        assert!(!r.is_stored(0, 42));
        assert!(!r.is_stored(1, 0));
        assert_eq!(r.get(1), Some(None));
        r.advance(1, 7);
        assert!(r.is_stored(1, 7));
        r.advance(1, 3);
        assert!(r.is_stored(1, 7));
        r.advance(9, 3);
        assert_eq!(r.get(9), None);
        r.forget(&[0]);
        assert_eq!(r.get(0), None);
    }

    #[test]
    fn sql_lists_partitions() {
        assert!(stored_offsets_sql(&[0, 3]).contains("IN (0, 3)"));
    }
}
