//! The backtest's batched reads: the measurements of an error-rate or a
//! latency rule at every step of a backtest from one or two statements over
//! the whole period, instead of [`super::measure`]'s one or two statements
//! per step (1,441 steps for a day at one minute: 2,882 statements that
//! each scanned the month's `calls`, 15–38 s on the demo; docs/performance.md,
//! "The backtest in one read").
//!
//! The values are those [`super::measure`] gives at each step, exactly,
//! not estimates of them: every window is whole minutes ([`super::window`]),
//! so reading each minute's figures once and adding up a step's minutes
//! reads the same rows.
//!
//! - Error rate: calls and errors per minute from `latency_minute_calls`
//!   (the rows `errors_sql` merges), summed over each step's minutes.
//! - Latency: first calls per minute in `calls` and in the rollup (what
//!   `latency_source::choose` counts), so each step chooses its source as
//!   `measure` would. A step whose source is the calls (sorted or counted:
//!   the same order statistics of every value) is answered from the
//!   window's values counted per minute and distinct millisecond (a second
//!   statement), slid through the period in a multiset: the values at
//!   ranks `floor((n - 1) q)` and the next, in microseconds, are the ones
//!   the SQL subscripts (`Source::order_stats_at`), and the interpolation
//!   is `measure`'s own ([`super::latency`]). A step whose source is the
//!   rollups (a window over `clickhouse.latency_sort_max_calls` calls, or
//!   calls gone from `calls` that the rollups still count) is left to
//!   [`super::measure`], as is every step when that limit is 0, and every
//!   step read from the calls when they hold more than
//!   [`BATCH_MAX_CALLS`] over the period (the values are then not held in
//!   memory at once).
//!
//! Every other signal is measured step by step.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;

use tollgate_contract::alerts::{ErrorRateSignal, LatencyMetric, LatencySignal, Signal};

use super::{epoch, error_rate, latency, latency_filters, window, Measurement};
use crate::latency_source::{self, InWindow, Source};
use crate::{BoundSql, ReadModelError, ReadModels};

/// Most calls the batched latency read holds (counted per minute and
/// distinct value, so usually far fewer rows): above, the steps are
/// measured one by one, as before.
pub(crate) const BATCH_MAX_CALLS: u64 = 4_000_000;

/// The measurement of each of `instants` that one batched read can give
/// (`None`: measure that step with [`super::measure`]).
pub(super) async fn measure_steps(
    models: &ReadModels,
    org_id: &str,
    signal: &Signal,
    instants: &[DateTime<Utc>],
) -> Result<Vec<Option<Measurement>>, ReadModelError> {
    let (Some(first), Some(last)) = (instants.first(), instants.last()) else {
        return Ok(Vec::new());
    };
    match signal {
        Signal::ErrorRate(s) => {
            let span = (
                window(*first, s.window_secs).0,
                window(*last, s.window_secs).1,
            );
            let sql = error_minutes_sql(org_id, s, span);
            let rows: Vec<ErrorMinute> = fetch_all(models, &sql).await?;
            Ok(error_rates(&rows, s, instants))
        }
        Signal::Latency(s) => latencies(models, org_id, s, instants).await,
        _ => Ok(vec![None; instants.len()]),
    }
}

async fn fetch_all<T>(models: &ReadModels, sql: &BoundSql) -> Result<Vec<T>, ReadModelError>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    models
        .bounded(sql.query(models.client()).fetch_all::<T>())
        .await
        .map_err(|e| models.classify(sql.name, e))
}

/// The minute (epoch minutes) of a whole-minute instant.
fn minute_of(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().div_euclid(60)).unwrap_or(0)
}

/// A step's window as `[first minute, end minute)`.
fn minutes(at: DateTime<Utc>, window_secs: u32) -> ((DateTime<Utc>, DateTime<Utc>), (u32, u32)) {
    let w = window(at, window_secs);
    (w, (minute_of(w.0), minute_of(w.1)))
}

/// Sums over ranges of minutes: `(minute, running totals)` sorted by
/// minute.
struct Running<const N: usize> {
    minutes: Vec<u32>,
    /// `totals[i]`: the sums over every minute before `minutes[i]`;
    /// one more entry than `minutes`.
    totals: Vec<[u64; N]>,
}

impl<const N: usize> Running<N> {
    fn new(mut rows: Vec<(u32, [u64; N])>) -> Self {
        rows.sort_by_key(|(m, _)| *m);
        let mut totals = vec![[0; N]];
        let mut sum = [0_u64; N];
        for (_, r) in &rows {
            for (s, v) in sum.iter_mut().zip(r) {
                *s += v;
            }
            totals.push(sum);
        }
        Self {
            minutes: rows.into_iter().map(|(m, _)| m).collect(),
            totals,
        }
    }

    /// The sums over the minutes in `[from, to)`.
    fn over(&self, (from, to): (u32, u32)) -> [u64; N] {
        let a = self.minutes.partition_point(|m| *m < from);
        let b = self.minutes.partition_point(|m| *m < to);
        let mut out = [0; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.totals[b][i] - self.totals[a][i];
        }
        out
    }
}

// ---------------------------------------------------------------- error rate

#[derive(Debug, Row, Deserialize)]
struct ErrorMinute {
    m: u32,
    call_count: u64,
    error_count: u64,
}

/// `errors_sql`'s figures per minute over `span`.
fn error_minutes_sql(
    org: &str,
    s: &ErrorRateSignal,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    super::calls_and_errors_sql(
        "alert_signals.backtest.errors",
        true,
        org,
        [s.provider.as_deref(), s.model.as_deref(), s.team.as_deref()],
        window,
    )
}

fn error_rates(
    rows: &[ErrorMinute],
    s: &ErrorRateSignal,
    instants: &[DateTime<Utc>],
) -> Vec<Option<Measurement>> {
    let running = Running::new(
        rows.iter()
            .map(|r| (r.m, [r.call_count, r.error_count]))
            .collect(),
    );
    instants
        .iter()
        .map(|at| {
            let (w, range) = minutes(*at, s.window_secs);
            let [calls, errors] = running.over(range);
            Some(error_rate(errors, calls, s.above_percent, w))
        })
        .collect()
}

// ---------------------------------------------------------------- latency

/// One row of [`latency_minutes_sql`]: `src` 0 counts `calls`, 1 the
/// rollup.
#[derive(Debug, Row, Deserialize)]
struct SourceMinute {
    src: u8,
    m: u32,
    n: u64,
}

/// One row of [`latency_values_sql`]: `n` values `v` (ms) in minute `m`.
#[derive(Debug, Row, Deserialize)]
struct ValueMinute {
    m: u32,
    v: u32,
    n: u64,
}

/// Per minute of `span`, the calls `latency_source::calls_in_window_sql`
/// counts: in `calls` (`src` 0) and folded into the rollup (`src` 1).
fn latency_minutes_sql(filters: &[(&'static str, String)], span: (u64, u64)) -> BoundSql {
    let mut binds = Vec::new();
    let calls = Source::Calls.window(span, filters, &mut binds);
    let folded = Source::Rollups.window(span, filters, &mut binds);
    BoundSql {
        name: "alert_signals.backtest.calls_per_minute",
        template: format!(
            "SELECT toUInt8(0) AS src, toUInt32(intDiv(toUInt32(occurred_at), 60)) AS m, count() AS n \
             {calls} GROUP BY m \
             UNION ALL \
             SELECT toUInt8(1) AS src, toUInt32(intDiv(toUInt32(minute), 60)) AS m, countMerge(calls) AS n \
             {folded} GROUP BY m"
        ),
        binds,
    }
}

/// The values of `metric` in `calls` per minute of `span` and distinct
/// millisecond, with how many calls had each: the values
/// `Source::Calls`' statement sorts (terminal calls; for TTFT the streamed
/// ones).
fn latency_values_sql(
    metric: LatencyMetric,
    filters: &[(&'static str, String)],
    span: (u64, u64),
) -> BoundSql {
    let mut binds = Vec::new();
    let from_where = Source::Calls.window(span, filters, &mut binds);
    let (value, only) = match metric {
        LatencyMetric::Duration => ("duration_ms", ""),
        LatencyMetric::Ttft => ("ttft_ms", " AND has_ttft"),
    };
    BoundSql {
        name: match metric {
            LatencyMetric::Duration => "alert_signals.backtest.durations",
            LatencyMetric::Ttft => "alert_signals.backtest.ttfts",
        },
        template: format!(
            "SELECT toUInt32(intDiv(toUInt32(occurred_at), 60)) AS m, toUInt32({value}) AS v, count() AS n \
             {from_where}{only} GROUP BY m, v"
        ),
        binds,
    }
}

async fn latencies(
    models: &ReadModels,
    org_id: &str,
    s: &LatencySignal,
    instants: &[DateTime<Utc>],
) -> Result<Vec<Option<Measurement>>, ReadModelError> {
    let none = || vec![None; instants.len()];
    let limit = models.latency_sort_max_calls();
    if limit == 0 {
        // `measure` reads the rollups without counting.
        return Ok(none());
    }
    let (Some(first), Some(last)) = (instants.first(), instants.last()) else {
        return Ok(Vec::new());
    };
    let filters = latency_filters(
        org_id,
        s.provider.as_deref(),
        s.model.as_deref(),
        s.team.as_deref(),
    );
    let span = (
        epoch(window(*first, s.window_secs).0),
        epoch(window(*last, s.window_secs).1),
    );
    let sql = latency_minutes_sql(&filters, span);
    let rows: Vec<SourceMinute> = fetch_all(models, &sql).await?;
    let counts = Running::new(
        rows.iter()
            .map(|r| (r.m, if r.src == 0 { [r.n, 0] } else { [0, r.n] }))
            .collect(),
    );
    // Which steps `measure` would read from the calls.
    let from_calls: Vec<bool> = instants
        .iter()
        .map(|at| {
            let [calls, folded] = counts.over(minutes(*at, s.window_secs).1);
            let source = latency_source::source_for(
                InWindow { calls, folded },
                limit,
                models.latency_count_min_calls(),
            );
            source.exact_at_any_count()
        })
        .collect();
    // The minutes those steps read.
    let mut read: Option<(u32, u32)> = None;
    for (at, _) in instants.iter().zip(&from_calls).filter(|(_, c)| **c) {
        let (_, (a, b)) = minutes(*at, s.window_secs);
        read = Some(read.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
    }
    let Some(read) = read else {
        return Ok(none());
    };
    if counts.over(read)[0] > BATCH_MAX_CALLS {
        return Ok(none());
    }
    let sql = latency_values_sql(
        s.metric,
        &filters,
        (u64::from(read.0) * 60, u64::from(read.1) * 60),
    );
    let rows: Vec<ValueMinute> = fetch_all(models, &sql).await?;
    let mut by_minute: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for r in rows {
        by_minute.entry(r.m).or_default().push((r.v, r.n));
    }
    let q = f64::from(s.percentile) / 100.0;
    let mut slide = Slide::default();
    let mut out = Vec::with_capacity(instants.len());
    for (at, calls) in instants.iter().zip(from_calls) {
        if !calls {
            out.push(None);
            continue;
        }
        let (w, range) = minutes(*at, s.window_secs);
        slide.move_to(range, &by_minute);
        let count = slide.count;
        let stats = if count == 0 {
            Vec::new()
        } else {
            let last = count - 1;
            // As the SQL: toUInt64(floor(last * q)), least(k + 1, last).
            let k = (last as f64 * q).floor() as u64;
            let (lo, hi) = slide.at_ranks(k, (k + 1).min(last));
            vec![f64::from(lo) * 1000.0, f64::from(hi) * 1000.0]
        };
        out.push(Some(latency(
            count,
            &stats,
            q,
            s.percentile,
            s.above_ms,
            w,
        )?));
    }
    Ok(out)
}

/// The values of a window of minutes that only moves forward, counted per
/// distinct value.
#[derive(Default)]
struct Slide {
    /// The window held, `[from, to)` minutes.
    held: (u32, u32),
    values: BTreeMap<u32, u64>,
    count: u64,
}

impl Slide {
    fn add(&mut self, minute: &[(u32, u64)]) {
        for (v, n) in minute {
            *self.values.entry(*v).or_default() += n;
            self.count += n;
        }
    }

    fn remove(&mut self, minute: &[(u32, u64)]) {
        for (v, n) in minute {
            if let Some(held) = self.values.get_mut(v) {
                *held -= n;
                if *held == 0 {
                    self.values.remove(v);
                }
            }
            self.count -= n;
        }
    }

    /// Hold the minutes `[from, to)`, no earlier than those held.
    fn move_to(&mut self, (from, to): (u32, u32), by_minute: &BTreeMap<u32, Vec<(u32, u64)>>) {
        let (held_from, held_to) = self.held;
        if from >= held_to {
            self.values.clear();
            self.count = 0;
            for values in by_minute.range(from..to).map(|(_, v)| v) {
                self.add(values);
            }
        } else {
            for values in by_minute.range(held_from..from).map(|(_, v)| v) {
                self.remove(values);
            }
            for values in by_minute.range(held_to.max(from)..to).map(|(_, v)| v) {
                self.add(values);
            }
        }
        self.held = (from, to);
    }

    /// The values at ranks `lo <= hi` (from 0) of the sorted values held.
    fn at_ranks(&self, lo: u64, hi: u64) -> (u32, u32) {
        let mut below = 0_u64;
        let mut found_lo = None;
        for (v, n) in &self.values {
            below += n;
            if found_lo.is_none() && below > lo {
                found_lo = Some(*v);
            }
            if below > hi {
                return (found_lo.unwrap_or(*v), *v);
            }
        }
        let last = self.values.keys().next_back().copied().unwrap_or(0);
        (found_lo.unwrap_or(last), last)
    }
}

/// Sample statements for the SQL compatibility check.
pub(super) fn catalog(w: (DateTime<Utc>, DateTime<Utc>)) -> Vec<BoundSql> {
    let all = latency_filters("org-1", None, None, None);
    let some = latency_filters("org-1", Some("openai"), Some("gpt-4o"), Some("team-a"));
    let span = (epoch(w.0), epoch(w.1));
    let error_rate = |provider: Option<&str>, team: Option<&str>| ErrorRateSignal {
        provider: provider.map(str::to_string),
        model: None,
        team: team.map(str::to_string),
        above_percent: rust_decimal::Decimal::ONE,
        window_secs: 300,
    };
    vec![
        error_minutes_sql("org-1", &error_rate(None, None), w),
        error_minutes_sql("org-1", &error_rate(Some("openai"), Some("team-a")), w),
        latency_minutes_sql(&all, span),
        latency_minutes_sql(&some, span),
        latency_values_sql(LatencyMetric::Duration, &all, span),
        latency_values_sql(LatencyMetric::Ttft, &some, span),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The slide's order statistics are those of the window's values
    /// sorted, whichever way the window moved there.
    #[test]
    fn the_slide_holds_exactly_the_windows_values() {
        // Minute m holds the values (m * 7 + i) % 13 for i < m % 4 + 1.
        let mut by_minute: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
        for m in 0..60_u32 {
            if m % 9 == 4 {
                continue; // minutes without calls
            }
            let mut counted: BTreeMap<u32, u64> = BTreeMap::new();
            for i in 0..=(m % 4) {
                *counted.entry((m * 7 + i) % 13).or_default() += 1;
            }
            by_minute.insert(m, counted.into_iter().collect());
        }
        for (width, step) in [(1, 1), (5, 1), (5, 3), (2, 7), (10, 10)] {
            let mut slide = Slide::default();
            let mut from = 0;
            while from + width <= 70 {
                slide.move_to((from, from + width), &by_minute);
                let mut sorted: Vec<u32> = by_minute
                    .range(from..from + width)
                    .flat_map(|(_, vs)| {
                        vs.iter()
                            .flat_map(|(v, n)| std::iter::repeat_n(*v, *n as usize))
                    })
                    .collect();
                sorted.sort_unstable();
                assert_eq!(slide.count, sorted.len() as u64);
                for k in 0..sorted.len() {
                    let hi = (k + 1).min(sorted.len() - 1);
                    assert_eq!(
                        slide.at_ranks(k as u64, hi as u64),
                        (sorted[k], sorted[hi]),
                        "window {from}..{} rank {k}",
                        from + width
                    );
                }
                from += step;
            }
        }
    }

    #[test]
    fn running_sums_cover_the_minutes_of_a_range() {
        let r = Running::new(vec![(5, [1, 0]), (3, [2, 1]), (9, [4, 4])]);
        assert_eq!(r.over((0, 3)), [0, 0]);
        assert_eq!(r.over((3, 4)), [2, 1]);
        assert_eq!(r.over((3, 9)), [3, 1]);
        assert_eq!(r.over((4, 10)), [5, 4]);
        assert_eq!(r.over((10, 20)), [0, 0]);
    }
}
