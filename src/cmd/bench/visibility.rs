//! Visibility lag of a paced `bench ingest --rate`: how long an event took
//! from the moment it was due to be produced until its row could be read
//! in ClickHouse.
//!
//! Rows carry no time of their insert, so the lag is read off two
//! cumulative curves: the events produced by time `t` (the schedule: a
//! chunk counts from the instant it was due, so a producer that falls
//! behind adds to the lag) and the rows visible by time `t` (ClickHouse's
//! `count()`, sampled). The `k`-th event produced is taken as visible when
//! the visible count reaches `k`: the horizontal distance between the two
//! curves. Partitions are consumed in parallel, so a given event may
//! become visible before or after the `k`-th row; the distribution over
//! all events is what this measures, to the sampling interval (the
//! crossing is interpolated linearly between two samples).

use std::time::Duration;

/// A chunk handed to the producer: due at `due`, and the events produced
/// in total once it was (this chunk included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Produced {
    pub due: Duration,
    pub through: u64,
}

/// A sample of the rows visible in ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Visible {
    pub at: Duration,
    pub rows: u64,
}

/// The visibility lag over a run, weighted by events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct VisibilityLag {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Events whose row was never seen (the run timed out first).
    pub unseen: u64,
}

/// When the visible count first reached `k`, interpolated between the two
/// samples around the crossing; `None` if it never did.
fn crossing(visible: &[Visible], k: u64) -> Option<Duration> {
    let after = visible.partition_point(|v| v.rows < k);
    let at = visible.get(after)?;
    let Some(before) = after.checked_sub(1).and_then(|i| visible.get(i)) else {
        return Some(at.at);
    };
    let span = at.rows - before.rows;
    let fraction = (k - before.rows) as f64 / span as f64;
    Some(before.at + (at.at - before.at).mul_f64(fraction))
}

/// The lag of every chunk (its last event's), weighted by its events.
/// `visible` must be in time order; its counts never go down.
pub(super) fn visibility_lag(produced: &[Produced], visible: &[Visible]) -> VisibilityLag {
    let mut lags: Vec<(Duration, u64)> = Vec::with_capacity(produced.len());
    let mut unseen = 0;
    let mut before = 0;
    for chunk in produced {
        let events = chunk.through - before;
        before = chunk.through;
        match crossing(visible, chunk.through) {
            Some(at) => lags.push((at.saturating_sub(chunk.due), events)),
            None => unseen += events,
        }
    }
    lags.sort_by_key(|(lag, _)| *lag);
    let seen: u64 = lags.iter().map(|(_, n)| n).sum();
    let rank = |p: f64| {
        // The smallest lag at or above which p % of the seen events lie.
        let wanted = ((seen as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut running = 0;
        for (lag, n) in &lags {
            running += n;
            if running >= wanted {
                return *lag;
            }
        }
        Duration::ZERO
    };
    VisibilityLag {
        p50: rank(50.0),
        p99: rank(99.0),
        max: lags.last().map(|(lag, _)| *lag).unwrap_or_default(),
        unseen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn produced(chunks: &[(u64, u64)]) -> Vec<Produced> {
        chunks
            .iter()
            .map(|&(due, through)| Produced {
                due: ms(due),
                through,
            })
            .collect()
    }

    fn visible(samples: &[(u64, u64)]) -> Vec<Visible> {
        samples
            .iter()
            .map(|&(at, rows)| Visible { at: ms(at), rows })
            .collect()
    }

    #[test]
    fn a_chunk_is_visible_where_the_count_crosses_its_last_event() {
        // 100 events due at 0 ms; 0 rows at 500 ms, 200 rows at 1500 ms:
        // the 100th row is read at 1000 ms.
        let lag = visibility_lag(
            &produced(&[(0, 100)]),
            &visible(&[(0, 0), (500, 0), (1500, 200)]),
        );
        assert_eq!(lag.p50, ms(1000));
        assert_eq!(lag.max, ms(1000));
        assert_eq!(lag.unseen, 0);
    }

    #[test]
    fn percentiles_weigh_chunks_by_their_events() {
        // 98 events with a lag of 100 ms, 1 with 200 ms and 1 with 3 s.
        let chunks = produced(&[(0, 98), (1000, 99), (2000, 100)]);
        let samples = visible(&[(100, 98), (1200, 99), (5000, 100)]);
        let lag = visibility_lag(&chunks, &samples);
        assert_eq!(lag.p50, ms(100));
        assert_eq!(lag.p99, ms(200));
        assert_eq!(lag.max, ms(3000));
    }

    #[test]
    fn events_never_seen_are_counted_apart() {
        let lag = visibility_lag(
            &produced(&[(0, 10), (100, 30)]),
            &visible(&[(50, 0), (400, 10), (900, 25)]),
        );
        assert_eq!(lag.unseen, 20);
        assert_eq!(lag.p99, ms(400));
    }

    #[test]
    fn rows_already_there_at_the_first_sample_lag_until_that_sample() {
        let lag = visibility_lag(&produced(&[(0, 5)]), &visible(&[(300, 5)]));
        assert_eq!(lag.p50, ms(300));
    }

    #[test]
    fn a_producer_behind_its_schedule_adds_to_the_lag() {
        // Due at 0 ms; its rows were visible at 2 s however late it was sent.
        let lag = visibility_lag(&produced(&[(0, 10)]), &visible(&[(1000, 0), (2000, 10)]));
        assert_eq!(lag.max, ms(2000));
    }
}
