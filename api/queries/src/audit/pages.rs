//! Reading one chain's entries in seq order, a range of seqs per statement.
//!
//! Ranges are of seqs, not counts of rows, so the server's sort stays
//! within one range. A range that holds no entry is followed by a question
//! for the next seq present, and reading goes on from there: a chain with
//! a seq far beyond its others (a hostile or damaged row, up to
//! `u64::MAX`) costs a few statements, not one per empty range, and the
//! ranges never wrap around.
//!
//! The server still sorts each range: reading unsorted and sorting here
//! took a third of ClickHouse's CPU off verification but only 6 % off its
//! time, for three and a half times the verifier's memory
//! (`docs/performance.md`, "Audit verification without the server's
//! sort: measured, not kept").

use clickhouse::Client;

use super::verify::ENTRY_COLUMNS;

/// Seqs per statement.
pub const PAGE_SEQS: u64 = 250_000;

/// The entries of a chain in an inclusive seq range, in seq order.
pub fn entries_page_sql() -> String {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_chain WHERE chain_id = ? AND seq >= ? AND seq <= ? ORDER BY seq"
    )
}

/// How many entries of a chain have a seq at or above a bound, and the
/// lowest of those seqs (0 when there is none).
pub const NEXT_SEQ_SQL: &str =
    "SELECT count(), min(seq) FROM audit_chain WHERE chain_id = ? AND seq >= ?";

/// The seq ranges of a chain from seq 0 through its highest seq. Pure: the
/// caller reads each range and tells it where the next entry is when a
/// range was empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRanges {
    /// The first seq of the next range; `None` once past the last.
    next: Option<u64>,
    last: u64,
}

impl SeqRanges {
    /// Ranges up to and including seq `last` (the chain's `max(seq)`).
    pub fn new(last: u64) -> Self {
        Self {
            next: Some(0),
            last,
        }
    }

    /// The next inclusive range to read, `None` after the last.
    pub fn next_range(&mut self) -> Option<(u64, u64)> {
        let from = self.next.filter(|from| *from <= self.last)?;
        let through = from.saturating_add(PAGE_SEQS - 1).min(self.last);
        self.next = through.checked_add(1);
        Some((from, through))
    }

    /// The seq reading resumes at, after a range that held no entry
    /// (`None`: none is left).
    pub fn after_empty(&self) -> Option<u64> {
        self.next
    }

    /// Resume at `seq` ([`next_present`]'s answer); `None` ends the ranges.
    pub fn resume_at(&mut self, seq: Option<u64>) {
        // Never backwards: a range already read is not read again.
        self.next = match (self.next, seq) {
            (Some(next), Some(seq)) => Some(seq.max(next)),
            _ => None,
        };
    }
}

/// The lowest seq of `chain` at or above `from` that holds an entry.
pub async fn next_present(
    client: &Client,
    chain: &str,
    from: u64,
) -> clickhouse::error::Result<Option<u64>> {
    let (entries, seq): (u64, u64) = client
        .query(NEXT_SEQ_SQL)
        .bind(chain)
        .bind(from)
        .fetch_one()
        .await?;
    Ok((entries > 0).then_some(seq))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all(mut ranges: SeqRanges) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| ranges.next_range()).collect()
    }

    #[test]
    fn ranges_cover_zero_through_the_last_seq_once() {
        assert_eq!(all(SeqRanges::new(0)), [(0, 0)]);
        assert_eq!(
            all(SeqRanges::new(600_000)),
            [(0, 249_999), (250_000, 499_999), (500_000, 600_000)]
        );
    }

    #[test]
    fn the_highest_seq_there_is_ends_the_ranges_without_wrapping() {
        let mut ranges = SeqRanges::new(u64::MAX);
        assert_eq!(ranges.next_range(), Some((0, 249_999)));
        // Empty: the next entry is the last one.
        ranges.resume_at(Some(u64::MAX));
        assert_eq!(ranges.next_range(), Some((u64::MAX, u64::MAX)));
        assert_eq!(ranges.next_range(), None);
        assert_eq!(ranges.after_empty(), None);
    }

    #[test]
    fn resuming_skips_forward_only_and_none_ends() {
        let mut ranges = SeqRanges::new(10_000_000);
        ranges.next_range();
        ranges.resume_at(Some(7));
        assert_eq!(ranges.next_range(), Some((250_000, 499_999)));
        ranges.resume_at(Some(9_000_000));
        assert_eq!(ranges.next_range(), Some((9_000_000, 9_249_999)));
        ranges.resume_at(None);
        assert_eq!(ranges.next_range(), None);
    }
}
