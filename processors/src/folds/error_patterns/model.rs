//! The error-patterns fold's pure Rust model: what the views of
//! `migrations/clickhouse/0031_error_patterns.sql` compute from the `calls`
//! rows the processor stores (`error_patterns_failures_mv`,
//! `error_patterns_endings_mv`, `error_pattern_catalog_mv`,
//! `error_recovery_minute_mv`), with the processor's skipping of messages at
//! or below the stored Kafka position. It exists so that what the views
//! count is written down once in Rust and checked two ways: its properties
//! without a server (the tests below: every failure, every call ending and
//! every recovery attempt counted once, whatever the delivery order and
//! however often a message is delivered), and its equality with the views
//! on the same random rows (`tests/it/fold_models.rs`).

use std::collections::BTreeMap;

use crate::folds::calls::rows::CallRow;
use crate::resume::ResumePositions;

/// `error_patterns_minute`'s key: minute (epoch seconds) × signature × org
/// × team × key × provider × model.
pub type MinuteKey = (u32, u64, String, String, String, String, String);

/// `error_patterns_minute`'s sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteSums {
    pub failures: u64,
    pub calls_recovered: u64,
    pub calls_failed: u64,
}

/// `error_pattern_catalog`'s key: signature × provider × HTTP status ×
/// error type × template.
pub type CatalogKey = (u64, String, u16, String, String);

/// First and last seen (epoch seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub first: u32,
    pub last: u32,
}

/// `error_recovery_minute`'s key, in its table order: failed signature ×
/// failed provider × failed model × strategy × target provider × target
/// model × minute × org × team.
pub type RecoveryKey = (
    u64,
    String,
    String,
    String,
    String,
    String,
    u32,
    String,
    String,
);

/// `error_recovery_minute`'s sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverySums {
    pub attempts: u64,
    pub successes: u64,
    pub wait_ms: u64,
    pub duration_ms: u64,
    /// Mantissa at scale 12.
    pub cost: i128,
}

/// The three tables being folded, and the positions already stored.
#[derive(Debug, Default)]
pub struct ErrorPatterns {
    pub minutes: BTreeMap<MinuteKey, MinuteSums>,
    pub catalog: BTreeMap<CatalogKey, Seen>,
    pub recovery: BTreeMap<RecoveryKey, RecoverySums>,
    positions: ResumePositions,
}

fn minute(occurred_at: u32) -> u32 {
    occurred_at - occurred_at % 60
}

/// A provider's answer, as the views see it: a completed or failed attempt
/// (not a gate's refusal, not a start or a first token).
fn is_answer(kind: &str) -> bool {
    kind == "ai.call.completed" || kind == "ai.call.failed"
}

impl ErrorPatterns {
    /// Fold one delivered row; `false` when its position is already stored
    /// (a redelivery), which the processor skips.
    pub fn apply(&mut self, row: &CallRow) -> bool {
        if !self
            .positions
            .first_delivery(row.kafka_partition, row.kafka_offset)
        {
            return false;
        }
        let at = minute(row.occurred_at);
        let success = row.outcome == "success";

        // error_patterns_failures_mv and error_pattern_catalog_mv.
        if row.kind == "ai.call.failed" && row.error_signature != 0 {
            self.cell(at, row.error_signature, row, (&row.provider, &row.model))
                .failures += 1;
            let key = (
                row.error_signature,
                row.provider.clone(),
                row.http_status,
                row.error_type.clone(),
                row.error_template.clone(),
            );
            let seen = self.catalog.entry(key).or_insert(Seen {
                first: row.occurred_at,
                last: row.occurred_at,
            });
            seen.first = seen.first.min(row.occurred_at);
            seen.last = seen.last.max(row.occurred_at);
        }

        // error_patterns_endings_mv: a call's ending counts for the
        // signature of its first failure (or of its only attempt).
        let recovering = row.recovery_from_signature != 0;
        if row.last_attempt == 1 && is_answer(&row.kind) && (recovering || row.error_signature != 0)
        {
            let (signature, provider, model) = if recovering {
                (
                    row.recovery_from_signature,
                    &row.recovery_from_provider,
                    &row.recovery_from_model,
                )
            } else {
                (row.error_signature, &row.provider, &row.model)
            };
            let cell = self.cell(at, signature, row, (provider, model));
            if success {
                cell.calls_recovered += 1;
            } else {
                cell.calls_failed += 1;
            }
        }

        // error_recovery_minute_mv.
        if recovering && is_answer(&row.kind) {
            let key = (
                row.recovery_from_signature,
                row.recovery_from_provider.clone(),
                row.recovery_from_model.clone(),
                row.recovery_strategy.clone(),
                row.provider.clone(),
                row.model.clone(),
                at,
                row.org_id.clone(),
                row.team_id.clone(),
            );
            let sums = self.recovery.entry(key).or_default();
            sums.attempts += 1;
            sums.successes += u64::from(success);
            sums.wait_ms += u64::from(row.recovery_wait_ms);
            sums.duration_ms += u64::from(row.duration_ms);
            sums.cost += row.cost;
        }
        true
    }

    fn cell(
        &mut self,
        at: u32,
        signature: u64,
        row: &CallRow,
        (provider, model): (&str, &str),
    ) -> &mut MinuteSums {
        let key = (
            at,
            signature,
            row.org_id.clone(),
            row.team_id.clone(),
            row.api_key_id.clone(),
            provider.to_string(),
            model.to_string(),
        );
        self.minutes.entry(key).or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    prop_compose! {
        /// One attempt: any kind, outcome, signature and recovery facts,
        /// from a small set of values so that cells collide.
        pub fn arb_row()(
            kind in 0..6u8, success in any::<bool>(), sig in 0..4u64, from in 0..3u64,
            last in any::<bool>(), secs in 0..600u32, team in 0..2u8, model in 0..3u8,
            strategy in 0..3u8, wait in 0..5000u32, duration in 1..3000u32,
            cost in 0..1_000_000i128, partition in 0..3i32,
        ) -> CallRow {
            let kind = ["ai.call.completed", "ai.call.failed", "ai.call.failed",
                        "ai.call.blocked", "ai.call.started", "ai.call.completed"][usize::from(kind)];
            let success = success && kind != "ai.call.failed";
            let error_signature = if kind == "ai.call.failed" { sig } else { 0 };
            CallRow {
                kind: kind.into(),
                occurred_at: 1_772_323_200 + secs,
                org_id: "o".into(),
                team_id: format!("t{team}"),
                api_key_id: format!("k{team}"),
                provider: if model == 2 { "anthropic" } else { "openai" }.into(),
                model: format!("m{model}"),
                outcome: if success { "success" } else { "error" }.into(),
                http_status: if success { 200 } else { 429 },
                error_type: if error_signature == 0 { String::new() } else { format!("type{sig}") },
                error_template: if error_signature == 0 { String::new() } else { format!("template {sig}") },
                error_signature,
                duration_ms: duration,
                cost,
                recovery_sequence: if from == 0 { 1 } else { 2 },
                recovery_wait_ms: if from == 0 { 0 } else { wait },
                recovery_strategy: if from == 0 { "first" } else { ["retry", "fallback_model", "fallback_provider"][usize::from(strategy)] }.into(),
                recovery_from_signature: from,
                recovery_from_provider: if from == 0 { String::new() } else { "openai".into() },
                recovery_from_model: if from == 0 { String::new() } else { "m0".into() },
                last_attempt: u8::from(last),
                kafka_partition: partition,
                ..CallRow::default()
            }
        }
    }

    /// Number messages per partition in arrival order.
    fn number(rows: Vec<CallRow>) -> Vec<CallRow> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        rows.into_iter()
            .map(|mut r| {
                let o = next.entry(r.kafka_partition).or_insert(0);
                r.kafka_offset = *o;
                *o += 1;
                r
            })
            .collect()
    }

    /// Deliver the partitions interleaved by `seed` (order kept within a
    /// partition), then every partition again from its start (a crash
    /// before any commit).
    fn deliver(rows: &[CallRow], seed: u64) -> ErrorPatterns {
        let mut queues: BTreeMap<i32, Vec<&CallRow>> = BTreeMap::new();
        for r in rows {
            queues.entry(r.kafka_partition).or_default().push(r);
        }
        let mut queues: Vec<Vec<&CallRow>> = queues.into_values().collect();
        for q in &mut queues {
            let again = q.clone();
            q.extend(again);
        }
        let mut model = ErrorPatterns::default();
        let mut cursors = vec![0usize; queues.len()];
        let mut rng = seed;
        loop {
            let open: Vec<usize> = (0..queues.len())
                .filter(|i| cursors[*i] < queues[*i].len())
                .collect();
            if open.is_empty() {
                return model;
            }
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let q = open[(rng >> 33) as usize % open.len()];
            model.apply(queues[q][cursors[q]]);
            cursors[q] += 1;
        }
    }

    proptest! {
        #[test]
        fn every_failure_ending_and_recovery_attempt_counts_once_in_any_order(
            rows in prop::collection::vec(arb_row(), 0..120), seed in any::<u64>(),
        ) {
            let rows = number(rows);
            let model = deliver(&rows, seed);
            let failed = rows.iter().filter(|r| r.kind == "ai.call.failed" && r.error_signature != 0);
            let failures: u64 = model.minutes.values().map(|s| s.failures).sum();
            prop_assert_eq!(failures, failed.clone().count() as u64);
            let endings = rows.iter().filter(|r| {
                r.last_attempt == 1 && is_answer(&r.kind)
                    && (r.recovery_from_signature != 0 || r.error_signature != 0)
            });
            let ended: u64 = model.minutes.values().map(|s| s.calls_recovered + s.calls_failed).sum();
            prop_assert_eq!(ended, endings.clone().count() as u64);
            let recovered: u64 = model.minutes.values().map(|s| s.calls_recovered).sum();
            prop_assert_eq!(recovered, endings.filter(|r| r.outcome == "success").count() as u64);
            let attempts = rows.iter().filter(|r| r.recovery_from_signature != 0 && is_answer(&r.kind));
            let sums = model.recovery.values().fold(RecoverySums::default(), |a, s| RecoverySums {
                attempts: a.attempts + s.attempts,
                successes: a.successes + s.successes,
                wait_ms: a.wait_ms + s.wait_ms,
                duration_ms: a.duration_ms + s.duration_ms,
                cost: a.cost + s.cost,
            });
            prop_assert_eq!(sums.attempts, attempts.clone().count() as u64);
            prop_assert_eq!(sums.cost, attempts.clone().map(|r| r.cost).sum::<i128>());
            prop_assert_eq!(sums.wait_ms, attempts.map(|r| u64::from(r.recovery_wait_ms)).sum::<u64>());
            // Each signature's catalog rows span its failures' times.
            for r in rows.iter().filter(|r| r.kind == "ai.call.failed" && r.error_signature != 0) {
                let seen = model.catalog.iter()
                    .find(|(k, _)| k.0 == r.error_signature && k.1 == r.provider)
                    .map(|(_, s)| *s)
                    .unwrap();
                prop_assert!(seen.first <= r.occurred_at && r.occurred_at <= seen.last);
            }
            // Another delivery order gives the same tables.
            let other = deliver(&rows, seed ^ 0x5bd1e995);
            prop_assert_eq!(&model.minutes, &other.minutes);
            prop_assert_eq!(&model.catalog, &other.catalog);
            prop_assert_eq!(&model.recovery, &other.recovery);
        }
    }

    #[test]
    fn a_recovered_call_counts_for_its_first_failure_on_the_failed_model() {
        let first = CallRow {
            kind: "ai.call.failed".into(),
            occurred_at: 1_772_323_230,
            provider: "anthropic".into(),
            model: "a".into(),
            outcome: "error".into(),
            error_signature: 7,
            recovery_strategy: "first".into(),
            last_attempt: 0,
            ..CallRow::default()
        };
        let fallback = CallRow {
            kind: "ai.call.completed".into(),
            occurred_at: 1_772_323_261,
            provider: "openai".into(),
            model: "c".into(),
            outcome: "success".into(),
            recovery_sequence: 2,
            recovery_wait_ms: 100,
            recovery_strategy: "fallback_provider".into(),
            recovery_from_signature: 7,
            recovery_from_provider: "anthropic".into(),
            recovery_from_model: "a".into(),
            last_attempt: 1,
            kafka_offset: 1,
            ..CallRow::default()
        };
        let mut model = ErrorPatterns::default();
        assert!(model.apply(&first));
        assert!(model.apply(&fallback));
        assert!(!model.apply(&first), "a redelivery is skipped");
        let cells: Vec<_> = model.minutes.iter().collect();
        assert_eq!(cells.len(), 2, "{cells:?}");
        let (k0, s0) = cells[0];
        assert_eq!(
            (k0.0, k0.1, k0.5.as_str(), k0.6.as_str()),
            (1_772_323_200, 7, "anthropic", "a")
        );
        assert_eq!(
            *s0,
            MinuteSums {
                failures: 1,
                calls_recovered: 0,
                calls_failed: 0
            }
        );
        let (k1, s1) = cells[1];
        assert_eq!(
            (k1.0, k1.1, k1.5.as_str(), k1.6.as_str()),
            (1_772_323_260, 7, "anthropic", "a")
        );
        assert_eq!(
            *s1,
            MinuteSums {
                failures: 0,
                calls_recovered: 1,
                calls_failed: 0
            }
        );
        let (key, sums) = model.recovery.iter().next().unwrap();
        assert_eq!(
            (key.3.as_str(), key.4.as_str(), key.5.as_str()),
            ("fallback_provider", "openai", "c")
        );
        assert_eq!((sums.attempts, sums.successes, sums.wait_ms), (1, 1, 100));
    }
}
