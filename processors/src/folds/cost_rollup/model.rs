//! The cost rollup fold's pure Rust model: what `cost_daily_mv` and
//! `cost_daily_tags_mv` compute from the `calls` rows the processor stores,
//! with the processor's skipping of messages at or below the stored Kafka
//! position, and what `cost_adjustments_mv` and `cost_adjustments_tags_mv`
//! add for repricing. It exists so the properties "totals over any
//! dimension equal the sum of per-call costs, whatever the delivery order
//! and however often a message is delivered" and "per tag, the tag rollup
//! equals the effective cost of the calls carrying that tag, also after
//! repricing" can be checked without a server (see the tests); ClickHouse
//! runs the same grouping in SQL (`migrations/clickhouse/0021_cost_daily.sql`,
//! `0023_cost_daily_tags.sql`, `0037_cost_daily_by_team.sql`: the cells
//! without user and key, [`CostRollup::by_team_cells`], and
//! `0039_cost_daily_by_user_and_key.sql`: [`CostRollup::by_user_cells`] and
//! [`CostRollup::by_key_cells`]).

use std::collections::BTreeMap;

use tollgate_contract::is_billable;

use crate::cost::reprice::AdjustmentRow;
use crate::folds::calls::rows::CallRow;
use crate::resume::ResumePositions;

/// The rollup's key: UTC day (days since the epoch) × org × team × user ×
/// key × provider × model × price version.
pub type RollupKey = (i64, String, String, String, String, String, String, u64);

/// The rollup's sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupSums {
    pub calls: i64,
    pub unpriced_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Mantissa at scale 12.
    pub cost: i128,
}

/// The tag rollup's key: UTC day × org × team × tag key × tag value ×
/// provider × model × price version.
pub type TagRollupKey = (i64, String, String, String, String, String, String, u64);

/// The rollups being folded, and the positions already stored.
#[derive(Debug, Default)]
pub struct CostRollup {
    pub cells: BTreeMap<RollupKey, RollupSums>,
    /// One cell per tag of a call (`ARRAY JOIN tag_keys, tag_values`);
    /// untagged calls have none.
    pub tag_cells: BTreeMap<TagRollupKey, RollupSums>,
    positions: ResumePositions,
}

impl RollupSums {
    fn add(&mut self, other: &RollupSums) {
        self.calls += other.calls;
        self.unpriced_calls += other.unpriced_calls;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost += other.cost;
    }
}

impl CostRollup {
    /// [`Self::cells`] summed over the dimensions `keep` empties.
    fn summed(&self, keep: impl Fn(&RollupKey) -> RollupKey) -> BTreeMap<RollupKey, RollupSums> {
        let mut out: BTreeMap<RollupKey, RollupSums> = BTreeMap::new();
        for (k, sums) in &self.cells {
            out.entry(keep(k)).or_default().add(sums);
        }
        out
    }

    /// The cells of `cost_daily_by_team` (0037): [`Self::cells`] summed
    /// over user and key, in the same key shape with both empty.
    pub fn by_team_cells(&self) -> BTreeMap<RollupKey, RollupSums> {
        self.summed(|k| {
            (
                k.0,
                k.1.clone(),
                k.2.clone(),
                String::new(),
                String::new(),
                k.5.clone(),
                k.6.clone(),
                k.7,
            )
        })
    }

    /// The cells of `cost_daily_by_user` (0039): [`Self::cells`] summed
    /// over key, provider, model and price version, in the same key shape
    /// with those empty (version 0).
    pub fn by_user_cells(&self) -> BTreeMap<RollupKey, RollupSums> {
        self.summed(|k| {
            (
                k.0,
                k.1.clone(),
                k.2.clone(),
                k.3.clone(),
                String::new(),
                String::new(),
                String::new(),
                0,
            )
        })
    }

    /// The cells of `cost_daily_by_key` (0039): [`Self::cells`] summed
    /// over user, provider, model and price version, in the same key shape
    /// with those empty (version 0).
    pub fn by_key_cells(&self) -> BTreeMap<RollupKey, RollupSums> {
        self.summed(|k| {
            (
                k.0,
                k.1.clone(),
                k.2.clone(),
                String::new(),
                k.4.clone(),
                String::new(),
                String::new(),
                0,
            )
        })
    }

    /// Fold one delivered row; `false` when its position is already stored
    /// (a redelivery), which the processor skips.
    pub fn apply(&mut self, row: &CallRow) -> bool {
        if !self
            .positions
            .first_delivery(row.kafka_partition, row.kafka_offset)
        {
            return false;
        }
        if !is_billable(&row.kind) {
            return true;
        }
        let key = (
            i64::from(row.occurred_at) / 86_400,
            row.org_id.clone(),
            row.team_id.clone(),
            row.user_id.clone(),
            row.api_key_id.clone(),
            row.provider.clone(),
            row.model.clone(),
            row.price_version,
        );
        let sums = RollupSums {
            calls: 1,
            unpriced_calls: i64::from(1 - row.priced.min(1)),
            input_tokens: i64::try_from(row.input_tokens).unwrap_or(i64::MAX),
            output_tokens: i64::try_from(row.output_tokens).unwrap_or(i64::MAX),
            cost: row.cost,
        };
        self.cells.entry(key).or_default().add(&sums);
        self.fold_tags(
            i64::from(row.occurred_at) / 86_400,
            (&row.org_id, &row.team_id),
            (&row.tag_keys, &row.tag_values),
            (&row.provider, &row.model, row.price_version),
            &sums,
        );
        true
    }

    /// Fold one `cost_adjustments` row (a reversal or posting by
    /// `tollgate reprice`) into both rollups.
    pub fn apply_adjustment(&mut self, row: &AdjustmentRow) {
        let day = i64::from(row.occurred_at) / 86_400;
        let sums = RollupSums {
            calls: i64::from(row.sign),
            unpriced_calls: i64::from(row.unpriced),
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cost: row.cost,
        };
        let key = (
            day,
            row.org_id.clone(),
            row.team_id.clone(),
            row.user_id.clone(),
            row.api_key_id.clone(),
            row.provider.clone(),
            row.model.clone(),
            row.price_version,
        );
        self.cells.entry(key).or_default().add(&sums);
        self.fold_tags(
            day,
            (&row.org_id, &row.team_id),
            (&row.tag_keys, &row.tag_values),
            (&row.provider, &row.model, row.price_version),
            &sums,
        );
    }

    fn fold_tags(
        &mut self,
        day: i64,
        (org, team): (&str, &str),
        (keys, values): (&[String], &[String]),
        (provider, model, version): (&str, &str, u64),
        sums: &RollupSums,
    ) {
        for (tag_key, tag_value) in keys.iter().zip(values) {
            let key = (
                day,
                org.to_string(),
                team.to_string(),
                tag_key.clone(),
                tag_value.clone(),
                provider.to_string(),
                model.to_string(),
                version,
            );
            self.tag_cells.entry(key).or_default().add(sums);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashMap;

    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use super::*;
    use crate::cost::prices::{PriceCatalog, PriceVersion};
    use crate::folds::calls::cost::{call_cost, price_row, to_mantissa, usage_of_row};

    fn catalog() -> PriceCatalog {
        let v = |id, model: &str, from_day, input: &str, output: &str, read: Option<&str>| {
            PriceVersion {
                id,
                provider: "p".into(),
                model: model.into(),
                effective_from: Utc.with_ymd_and_hms(2026, 3, from_day, 0, 0, 0).unwrap(),
                input_per_token: input.parse().unwrap(),
                output_per_token: output.parse().unwrap(),
                cache_read_per_token: read.map(|r| r.parse().unwrap()),
                cache_write_per_token: None,
                reasoning_per_token: None,
                per_image: Decimal::ZERO,
                per_audio_second: Decimal::ZERO,
                per_request: "0.0001".parse().unwrap(),
                tiers: Vec::new(),
                source: "t".into(),
                note: String::new(),
            }
        };
        PriceCatalog::new([
            v(1, "a", 1, "0.0000025", "0.00001", Some("0.00000125")),
            v(2, "a", 3, "0.000003", "0.00001", None),
            v(3, "b", 1, "0.00000015", "0.0000006", None),
            v(4, "b", 2, "0.0000000000015", "0.0000000000007", None),
        ])
    }

    prop_compose! {
        fn arb_row()(
            team in 0..4u8, user in 0..3u8, model in 0..3u8, secs in 0..(5 * 86_400u32),
            input in 0..100_000u64, cached_pct in 0..=100u64, output in 0..50_000u64,
            kind in 0..10u8, partition in 0..3i32,
            tags in 0..5u8, feature in 0..3u8, variant in 0..2u8,
        ) -> CallRow {
            let start = 1_772_323_200u32; // 2026-03-01T00:00:00Z
            let occurred_at = start + secs;
            // None, one or two tags, in key order (tags are a map).
            let (tag_keys, tag_values): (Vec<String>, Vec<String>) = match tags {
                1 => (vec!["feature".into()], vec![format!("f{feature}")]),
                2 => (vec!["feature".into(), "variant".into()], vec![format!("f{feature}"), format!("v{variant}")]),
                3 => (vec!["variant".into()], vec![format!("v{variant}")]),
                _ => (vec![], vec![]),
            };
            CallRow {
                event_id: String::new(),
                schema_version: 1,
                kind: match kind { 0 => "ai.call.failed", 1 => "ai.call.blocked", 2 => "ai.call.started", _ => "ai.call.completed" }.into(),
                occurred_at,
                occurred_at_ms: u64::from(occurred_at) * 1000,
                org_id: "o".into(),
                team_id: format!("t{team}"),
                user_id: format!("u{user}"),
                api_key_id: format!("k{team}{user}"),
                call_id: String::new(),
                trace_id: String::new(),
                span_id: String::new(),
                provider: "p".into(),
                model: ["a", "b", "unpriced"][usize::from(model)].into(),
                requested_model: String::new(),
                attempt: 1,
                fallback_of: String::new(),
                operation: "chat".into(),
                stream: 0,
                duration_ms: 1,
                has_ttft: 0,
                ttft_ms: 0,
                input_tokens: input,
                input_tokens_estimated: 0,
                output_tokens: output,
                cached_input_tokens: input * cached_pct / 100,
                cache_write_tokens: 0,
                reasoning_tokens: 0,
                images: 0,
                audio_ms: 0,
                outcome: "success".into(),
                http_status: 200,
                error_type: String::new(),
                error_message: String::new(),
                cache_hit: 0,
                prompt_sha256: String::new(),
                response_sha256: String::new(),
                tag_keys,
                tag_values,
                reported_cost: String::new(),
                ingested_at: 0,
                kafka_partition: partition,
                kafka_offset: 0,
                cost: 0,
                priced: 0,
                price_version: 0,
                priced_as: String::new(),
                ..CallRow::default()
            }
        }
    }

    /// Group `f(row)` -> sum of cost over unique billable calls, or over
    /// the rollup's cells.
    fn by<K: Ord>(rows: &[CallRow], f: impl Fn(&CallRow) -> K) -> BTreeMap<K, (i128, i64)> {
        let mut out = BTreeMap::new();
        for r in rows.iter().filter(|r| is_billable(&r.kind)) {
            let e = out.entry(f(r)).or_insert((0, 0));
            e.0 += r.cost;
            e.1 += 1;
        }
        out
    }

    /// Number messages per partition in arrival order and price each.
    fn number_and_price(rows: Vec<CallRow>, catalog: &PriceCatalog) -> Vec<CallRow> {
        let mut next: HashMap<i32, i64> = HashMap::new();
        rows.into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                let o = next.entry(r.kafka_partition).or_insert(0);
                r.kafka_offset = *o;
                *o += 1;
                r.event_id = format!("e{i}");
                price_row(&mut r, catalog);
                r
            })
            .collect()
    }

    /// Deliver `calls`: partitions interleaved at random (order kept within
    /// a partition, as Kafka does), plus replays of a partition from some
    /// offset (a crash before the commit). Returns the rollup and how many
    /// rows it applied.
    fn deliver(calls: &[CallRow], seed: u64, replays: &[(i32, usize)]) -> (CostRollup, usize) {
        let mut per_partition: BTreeMap<i32, Vec<CallRow>> = BTreeMap::new();
        for r in calls {
            per_partition
                .entry(r.kafka_partition)
                .or_default()
                .push(r.clone());
        }
        let mut queues: Vec<Vec<CallRow>> = per_partition.values().cloned().collect();
        for (p, from) in replays {
            if let Some(list) = per_partition.get(p) {
                let from = (*from).min(list.len());
                if let Some(q) = queues
                    .iter_mut()
                    .find(|q| q.first().map(|r| r.kafka_partition) == Some(*p))
                {
                    q.extend(list[from..].iter().cloned());
                }
            }
        }
        let mut rng = seed;
        let mut rollup = CostRollup::default();
        let mut cursors = vec![0usize; queues.len()];
        let mut applied = 0;
        loop {
            let open: Vec<usize> = (0..queues.len())
                .filter(|i| cursors[*i] < queues[*i].len())
                .collect();
            if open.is_empty() {
                break;
            }
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let q = open[(rng >> 33) as usize % open.len()];
            if rollup.apply(&queues[q][cursors[q]]) {
                applied += 1;
            }
            cursors[q] += 1;
        }
        (rollup, applied)
    }

    /// Per (tag key, tag value): (cost, calls) of the billable calls
    /// carrying that tag, each at `cost_of` it.
    fn by_tag(
        calls: &[CallRow],
        cost_of: impl Fn(usize) -> i128,
    ) -> BTreeMap<(String, String), (i128, i64)> {
        let mut out = BTreeMap::new();
        for (i, r) in calls
            .iter()
            .enumerate()
            .filter(|(_, r)| is_billable(&r.kind))
        {
            for (k, v) in r.tag_keys.iter().zip(&r.tag_values) {
                let e = out.entry((k.clone(), v.clone())).or_insert((0, 0));
                e.0 += cost_of(i);
                e.1 += 1;
            }
        }
        out
    }

    /// The tag rollup's cells summed per (tag key, tag value), without
    /// cells that net to nothing.
    fn tag_totals(rollup: &CostRollup) -> BTreeMap<(String, String), (i128, i64)> {
        let mut out: BTreeMap<(String, String), (i128, i64)> = BTreeMap::new();
        for (k, v) in &rollup.tag_cells {
            let e = out.entry((k.3.clone(), k.4.clone())).or_insert((0, 0));
            e.0 += v.cost;
            e.1 += v.calls;
        }
        out.retain(|_, v| *v != (0, 0));
        out
    }

    /// A reversal (`n = -1`) or posting (`n = 1`) of `call` at `version`
    /// and `cost`, as `tollgate reprice` writes them.
    fn adjustment(call: &CallRow, n: i8, version: u64, unpriced: i8, cost: i128) -> AdjustmentRow {
        let t = |v: u64| i64::try_from(v).unwrap() * i64::from(n);
        AdjustmentRow {
            event_id: call.event_id.clone(),
            occurred_at: call.occurred_at,
            org_id: call.org_id.clone(),
            team_id: call.team_id.clone(),
            user_id: call.user_id.clone(),
            api_key_id: call.api_key_id.clone(),
            provider: call.provider.clone(),
            model: call.model.clone(),
            price_version: version,
            sign: n,
            unpriced,
            input_tokens: t(call.input_tokens),
            output_tokens: t(call.output_tokens),
            cached_input_tokens: t(call.cached_input_tokens),
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            images: 0,
            audio_ms: 0,
            cost,
            reprice_id: "r".into(),
            adjusted_at: 0,
            tag_keys: call.tag_keys.clone(),
            tag_values: call.tag_values.clone(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn tag_rollup_equals_tagged_spend_also_after_repricing(
            rows in prop::collection::vec(arb_row(), 1..60),
            seed in any::<u64>(),
            replays in prop::collection::vec((0..3i32, 0..60usize), 0..4),
            reprice in prop::collection::vec((any::<bool>(), 0..10_000_000_000i128), 60),
        ) {
            let calls = number_and_price(rows, &catalog());
            let (mut rollup, applied) = deliver(&calls, seed, &replays);
            prop_assert_eq!(applied, calls.len());
            // Per tag: the spend of the calls carrying it, nothing else.
            prop_assert_eq!(tag_totals(&rollup), by_tag(&calls, |i| calls[i].cost));
            // Untagged calls contribute nothing; a call with two tags
            // counts once under each key.
            let weighted: i128 = calls.iter().filter(|r| is_billable(&r.kind))
                .map(|r| r.cost * i128::try_from(r.tag_keys.len()).unwrap()).sum();
            prop_assert_eq!(rollup.tag_cells.values().map(|v| v.cost).sum::<i128>(), weighted);
            for key in ["feature", "variant"] {
                let tagged: i128 = calls.iter()
                    .filter(|r| is_billable(&r.kind) && r.tag_keys.iter().any(|k| k == key))
                    .map(|r| r.cost).sum();
                let in_rollup: i128 = rollup.tag_cells.iter().filter(|(k, _)| k.3 == key).map(|(_, v)| v.cost).sum();
                prop_assert_eq!(in_rollup, tagged, "key {}", key);
            }
            // Reprice some calls to a new version and cost: a reversal of
            // what is on record and a posting, both with the call's tags.
            let mut effective: Vec<i128> = calls.iter().map(|r| r.cost).collect();
            for (i, call) in calls.iter().enumerate().filter(|(_, r)| is_billable(&r.kind)) {
                let (change, new_cost) = reprice[i];
                if !change {
                    continue;
                }
                let unpriced = i8::from(call.priced == 0);
                rollup.apply_adjustment(&adjustment(call, -1, call.price_version, -unpriced, -call.cost));
                rollup.apply_adjustment(&adjustment(call, 1, 99, 0, new_cost));
                effective[i] = new_cost;
            }
            prop_assert_eq!(tag_totals(&rollup), by_tag(&calls, |i| effective[i]));
            let total: i128 = calls.iter().enumerate().filter(|(_, r)| is_billable(&r.kind)).map(|(i, _)| effective[i]).sum();
            prop_assert_eq!(rollup.cells.values().map(|v| v.cost).sum::<i128>(), total);
            // Repriced calls moved to version 99 in both rollups; the old
            // versions' call counts net out.
            let moved = |cells: &mut dyn Iterator<Item = (u64, i64)>| cells.filter(|(v, _)| *v == 99).map(|(_, c)| c).sum::<i64>();
            let repriced = calls.iter().enumerate().filter(|(i, r)| is_billable(&r.kind) && reprice[*i].0);
            let (plain, tagged) = repriced.fold((0i64, 0i64), |(p, t), (_, r)| (p + 1, t + i64::try_from(r.tag_keys.len()).unwrap()));
            prop_assert_eq!(moved(&mut rollup.cells.iter().map(|(k, v)| (k.7, v.calls))), plain);
            prop_assert_eq!(moved(&mut rollup.tag_cells.iter().map(|(k, v)| (k.7, v.calls))), tagged);
            // Unpriced counts stay non-negative in every cell.
            prop_assert!(rollup.tag_cells.values().all(|v| v.unpriced_calls >= 0 && v.unpriced_calls <= v.calls));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn rollup_totals_equal_sum_of_call_costs(
            rows in prop::collection::vec(arb_row(), 1..80),
            seed in any::<u64>(),
            replays in prop::collection::vec((0..3i32, 0..80usize), 0..6),
        ) {
            let catalog = catalog();
            let mut calls = number_and_price(rows, &catalog);
            // Each priced cost is the formula's.
            for r in &calls {
                if r.priced == 1 {
                    let at = Utc.timestamp_opt(i64::from(r.occurred_at), 0).unwrap();
                    let price = catalog.lookup(&r.provider, &r.model, at).unwrap();
                    prop_assert_eq!(r.cost, to_mantissa(call_cost(&usage_of_row(r), price).unwrap()));
                } else {
                    prop_assert_eq!(r.cost, 0);
                }
            }
            let (rollup, applied) = deliver(&calls, seed, &replays);
            prop_assert_eq!(applied, calls.len());
            // Every dimension: rollup sums == per-call sums.
            let cells: Vec<CallRow> = rollup.cells.iter().map(|(k, v)| {
                let mut r = calls[0].clone();
                r.kind = tollgate_contract::KIND_CALL_COMPLETED.into();
                r.occurred_at = u32::try_from(k.0 * 86_400).unwrap();
                r.org_id = k.1.clone(); r.team_id = k.2.clone(); r.user_id = k.3.clone();
                r.api_key_id = k.4.clone(); r.provider = k.5.clone(); r.model = k.6.clone();
                r.price_version = k.7; r.cost = v.cost; r.input_tokens = u64::try_from(v.calls).unwrap();
                r
            }).collect();
            let sum_cells = |f: &dyn Fn(&CallRow) -> String| {
                let mut out: BTreeMap<String, (i128, i64)> = BTreeMap::new();
                for c in &cells {
                    let e = out.entry(f(c)).or_insert((0, 0));
                    e.0 += c.cost;
                    e.1 += i64::try_from(c.input_tokens).unwrap();
                }
                out
            };
            type Dim = fn(&CallRow) -> String;
            let dims: [(&str, Dim); 8] = [
                ("day", |r| (r.occurred_at / 86_400).to_string()),
                ("org", |r| r.org_id.clone()),
                ("team", |r| r.team_id.clone()),
                ("user", |r| r.user_id.clone()),
                ("key", |r| r.api_key_id.clone()),
                ("provider", |r| r.provider.clone()),
                ("model", |r| r.model.clone()),
                ("price_version", |r| r.price_version.to_string()),
            ];
            calls.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            for (name, f) in dims {
                prop_assert_eq!(sum_cells(&f), by(&calls, f), "dimension {}", name);
            }
            let total: i128 = calls.iter().filter(|r| is_billable(&r.kind)).map(|r| r.cost).sum();
            prop_assert_eq!(rollup.cells.values().map(|v| v.cost).sum::<i128>(), total);
            // Unpriced calls are counted, not priced at zero.
            let unpriced = calls.iter().filter(|r| is_billable(&r.kind) && r.priced == 0).count();
            prop_assert_eq!(rollup.cells.values().map(|v| v.unpriced_calls).sum::<i64>(), i64::try_from(unpriced).unwrap());
        }
    }
}
