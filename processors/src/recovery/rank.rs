//! Ranking recovery strategies: pure, so the numbers are checked without a
//! server. `docs/error-patterns.md`, "Learned recovery", says why the lower
//! bound of a Wilson interval and why a minimum number of samples.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use tollgate_contract::decisions::RankedStrategy;
use tollgate_contract::Strategy;

/// The standard normal quantile of 97.5%: a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Lower bound of the 95% Wilson score interval of `successes` out of
/// `attempts`:
///
/// ```text
/// (p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n),  p = successes/n
/// ```
///
/// 0 without attempts or without successes. A few lucky successes rank below a long record of
/// slightly fewer: 1 of 1 gives 0.21, 95 of 100 gives 0.89.
pub fn wilson_lower_bound(successes: u64, attempts: u64) -> f64 {
    if attempts == 0 || successes == 0 {
        // Exactly 0 (the formula leaves a rounding residue of ~1e-17).
        return 0.0;
    }
    let n = attempts as f64;
    let p = (successes.min(attempts)) as f64 / n;
    let z2 = Z_95 * Z_95;
    let centre = p + z2 / (2.0 * n);
    let margin = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - margin) / (1.0 + z2 / n)).max(0.0)
}

/// The failure a plan is for: provider, model and signature of the failed
/// attempt.
pub type PlanKey = (String, String, u64);

/// One strategy's record in the window, as `error_recovery_minute` sums it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub from_provider: String,
    pub from_model: String,
    pub from_signature: u64,
    pub strategy: Strategy,
    pub provider: String,
    pub model: String,
    pub attempts: u64,
    pub successes: u64,
    /// Sum of the waits before the attempts, milliseconds.
    pub wait_ms: u64,
}

/// Per failure, its strategies with at least `min_samples` attempts, best
/// first: by the Wilson lower bound, then more attempts, then strategy
/// (retry before another model before another provider), provider and
/// model, so that equal evidence always gives the same order. A failure
/// with no strategy that qualifies has no plan. Several tallies of one
/// strategy are added up first.
pub fn rank(tallies: &[Tally], min_samples: u64) -> BTreeMap<PlanKey, Vec<RankedStrategy>> {
    type Target = (Strategy, String, String);
    let mut sums: BTreeMap<PlanKey, BTreeMap<Target, (u64, u64, u64)>> = BTreeMap::new();
    for t in tallies {
        let key = (
            t.from_provider.clone(),
            t.from_model.clone(),
            t.from_signature,
        );
        let target = (t.strategy, t.provider.clone(), t.model.clone());
        let s = sums.entry(key).or_default().entry(target).or_default();
        s.0 += t.attempts;
        s.1 += t.successes;
        s.2 += t.wait_ms;
    }
    sums.into_iter()
        .filter_map(|(key, targets)| {
            let mut order: Vec<RankedStrategy> = targets
                .into_iter()
                .filter(|(_, (attempts, _, _))| *attempts >= min_samples.max(1))
                .map(
                    |((strategy, provider, model), (attempts, successes, wait))| RankedStrategy {
                        strategy,
                        provider,
                        model,
                        attempts,
                        successes,
                        lower_bound: wilson_lower_bound(successes, attempts),
                        mean_wait_ms: wait / attempts,
                    },
                )
                .collect();
            order.sort_by(better);
            (!order.is_empty()).then_some((key, order))
        })
        .collect()
}

fn better(a: &RankedStrategy, b: &RankedStrategy) -> Ordering {
    b.lower_bound
        .total_cmp(&a.lower_bound)
        .then_with(|| b.attempts.cmp(&a.attempts))
        .then_with(|| a.strategy.cmp(&b.strategy))
        .then_with(|| a.provider.cmp(&b.provider))
        .then_with(|| a.model.cmp(&b.model))
}

/// What identifies an order: the targets in rank order (counts and bounds
/// move with every call; a new decision is only worth it when the order
/// changes).
pub fn order_of(order: &[RankedStrategy]) -> Vec<(Strategy, String, String)> {
    order
        .iter()
        .map(|r| (r.strategy, r.provider.clone(), r.model.clone()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 5e-5, "got {got}, want {want}");
    }

    #[test]
    fn wilson_lower_bounds_match_published_values() {
        // 95% Wilson intervals as tabulated (e.g. Newcombe 1998, table I;
        // Wikipedia, "Binomial proportion confidence interval").
        close(wilson_lower_bound(5, 10), 0.2366);
        close(wilson_lower_bound(10, 10), 0.7225);
        assert_eq!(wilson_lower_bound(0, 10), 0.0);
        assert_eq!(wilson_lower_bound(0, 25), 0.0);
        close(wilson_lower_bound(81, 263), 0.2553);
        close(wilson_lower_bound(15, 148), 0.0624);
        // 1 of 1: 1 / (1 + z²).
        close(wilson_lower_bound(1, 1), 1.0 / (1.0 + Z_95 * Z_95));
        assert_eq!(wilson_lower_bound(0, 0), 0.0);
    }

    fn tally(strategy: Strategy, model: &str, attempts: u64, successes: u64) -> Tally {
        Tally {
            from_provider: "anthropic".into(),
            from_model: "a".into(),
            from_signature: 7,
            strategy,
            provider: if strategy == Strategy::FallbackProvider {
                "openai".into()
            } else {
                "anthropic".into()
            },
            model: model.into(),
            attempts,
            successes,
            wait_ms: attempts * 100,
        }
    }

    #[test]
    fn a_long_record_beats_a_lucky_streak_and_thin_evidence_is_left_out() {
        let plans = rank(
            &[
                tally(Strategy::FallbackModel, "b", 40, 2),
                tally(Strategy::FallbackProvider, "c", 40, 38),
                // 19 of 19, but below min_samples: not ranked.
                tally(Strategy::Retry, "a", 19, 19),
                // 20 of 20 (0.839) edges out 38 of 40 (0.835).
                tally(Strategy::FallbackModel, "d", 20, 20),
            ],
            20,
        );
        let order = &plans[&("anthropic".to_string(), "a".to_string(), 7)];
        let names: Vec<&str> = order.iter().map(|r| r.model.as_str()).collect();
        assert_eq!(names, ["d", "c", "b"]);
        close(order[0].lower_bound, 0.8389);
        assert_eq!(
            (order[1].attempts, order[1].successes, order[1].mean_wait_ms),
            (40, 38, 100)
        );
        // Below min_samples everywhere: no plan at all.
        assert!(rank(&[tally(Strategy::Retry, "a", 19, 19)], 20).is_empty());
        // With the minimum at 1, a lucky 3 of 3 (0.44) still ranks below
        // 90 of 100 (0.82).
        let plans = rank(
            &[
                tally(Strategy::Retry, "a", 3, 3),
                tally(Strategy::FallbackModel, "b", 100, 90),
            ],
            1,
        );
        let order = plans.values().next().unwrap();
        assert_eq!(order[0].model, "b");
    }

    #[test]
    fn ties_are_broken_the_same_way_whatever_the_input_order() {
        let tallies = vec![
            tally(Strategy::FallbackProvider, "c", 30, 15),
            tally(Strategy::FallbackModel, "z", 30, 15),
            tally(Strategy::FallbackModel, "b", 30, 15),
            tally(Strategy::Retry, "a", 30, 15),
            tally(Strategy::FallbackModel, "m", 60, 30),
        ];
        let mut reversed = tallies.clone();
        reversed.reverse();
        let a = rank(&tallies, 20);
        assert_eq!(a, rank(&reversed, 20));
        let order = order_of(a.values().next().unwrap());
        let names: Vec<(Strategy, &str)> = order.iter().map(|(s, _, m)| (*s, m.as_str())).collect();
        assert_eq!(
            names,
            [
                (Strategy::FallbackModel, "m"),
                (Strategy::Retry, "a"),
                (Strategy::FallbackModel, "b"),
                (Strategy::FallbackModel, "z"),
                (Strategy::FallbackProvider, "c"),
            ]
        );
    }

    #[test]
    fn tallies_of_one_strategy_add_up_before_the_minimum_applies() {
        let plans = rank(
            &[
                tally(Strategy::Retry, "a", 12, 10),
                tally(Strategy::Retry, "a", 8, 8),
            ],
            20,
        );
        let order = plans.values().next().unwrap();
        assert_eq!((order[0].attempts, order[0].successes), (20, 18));
    }
}
