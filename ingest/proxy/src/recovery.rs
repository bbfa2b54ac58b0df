//! Learned recovery, proxy side: after an attempt on a provider/model
//! failed with a signature, the recovery learner's plan for that
//! (provider, model, signature) says which of the call's remaining options
//! worked best. The proxy only reorders what it would have tried anyway
//! (a retry of the same model, the configured fallbacks the key may use);
//! it never adds an option. Pure code.

use tollgate_contract::decisions::RecoveryPlan;

/// Reorder `options` best first by `plan`: the options the plan ranks come
/// first, in the plan's order; the others keep their configured order
/// after them. `target` names an option's provider and model (for a retry,
/// the failed provider and model, as the plan's `retry` entries do).
pub fn order_by_plan<T>(
    options: &mut [T],
    plan: Option<&RecoveryPlan>,
    target: impl Fn(&T) -> (&str, &str),
) {
    let Some(plan) = plan else {
        return;
    };
    let rank = |option: &T| {
        let (provider, model) = target(option);
        plan.order
            .iter()
            .position(|r| r.provider == provider && r.model == model)
            .unwrap_or(usize::MAX)
    };
    // A stable sort: equal ranks (the unranked) keep their configured order.
    options.sort_by_cached_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use tollgate_contract::decisions::RankedStrategy;
    use tollgate_contract::event::Strategy;
    use tollgate_contract::signature::SignatureId;

    fn ranked(strategy: Strategy, provider: &str, model: &str) -> RankedStrategy {
        RankedStrategy {
            strategy,
            provider: provider.into(),
            model: model.into(),
            attempts: 20,
            successes: 19,
            lower_bound: 0.8,
            mean_wait_ms: 0,
        }
    }

    #[test]
    fn ranked_options_first_in_plan_order_the_rest_as_configured() {
        let plan = RecoveryPlan {
            signature: SignatureId(1),
            provider: "p".into(),
            model: "a".into(),
            order: vec![
                ranked(Strategy::FallbackProvider, "q", "c"),
                ranked(Strategy::Retry, "p", "a"),
                // Not an option of this call: ignored, never added.
                ranked(Strategy::FallbackModel, "p", "z"),
            ],
            as_of: Utc::now(),
        };
        let mut options = vec![("p", "a"), ("p", "b"), ("q", "c"), ("p", "d")];
        order_by_plan(&mut options, Some(&plan), |o| (o.0, o.1));
        assert_eq!(options, [("q", "c"), ("p", "a"), ("p", "b"), ("p", "d")]);
        let mut unchanged = vec![("p", "b"), ("p", "d")];
        order_by_plan(&mut unchanged, Some(&plan), |o| (o.0, o.1));
        assert_eq!(unchanged, [("p", "b"), ("p", "d")]);
        order_by_plan(&mut unchanged, None, |o| (o.0, o.1));
        assert_eq!(unchanged, [("p", "b"), ("p", "d")]);
    }
}
