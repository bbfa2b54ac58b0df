//! What the breaker publishes, built from a breaker's state. Pure.
//!
//! - the `circuit/<provider>[/<model>]` decision the proxy enforces
//!   ([`decision`]; `docs/breakers.md`, "Decisions");
//! - the learned fallback an open breaker names in `reroute_to`
//!   ([`learned_fallback`]);
//! - the `admin.breaker.transition` event and the `breaker_transitions` row
//!   of a transition ([`transition_event`], [`TransitionRow`]);
//! - the breaker a published decision records, read back after a restart
//!   ([`restored`]).

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Serialize;
use serde_json::json;
use tollgate_contract::admin::{admin_event, KIND_BREAKER_TRANSITION};
use tollgate_contract::decisions::{
    circuit_subject, Action, BreakerState, CircuitState, Decision, RecoveryPlan,
};
use tollgate_contract::{Event, Strategy};

use super::config::BreakersConfig;
use super::machine::{Breaker, Counts, Published, Transition};

/// The actor of the breaker's admin events.
pub const ACTOR: &str = "tollgate-processor";

/// Whole seconds from `now` to `until`, at least 1 (a `Retry-After` of 0
/// would invite an immediate retry into the same state).
fn secs_until(now: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    let ms = (until - now).num_milliseconds().max(0);
    u64::try_from((ms + 999) / 1000).unwrap_or(1).max(1)
}

/// The decision for `breaker` at `now`. `reason` is the last transition's;
/// `reroute_to` only matters while open.
pub fn decision(
    breaker: &Breaker,
    config: &BreakersConfig,
    now: DateTime<Utc>,
    reason: &str,
    reroute_to: Option<String>,
) -> Decision {
    let state = breaker.state();
    let evidence = breaker.evidence();
    let (action, retry_after_secs, reroute_to, valid_until) = match state {
        CircuitState::Closed => (Action::Allow, None, None, None),
        CircuitState::Open | CircuitState::HalfOpen => {
            let until = breaker.state_deadline(config).unwrap_or(now);
            (
                Action::Reroute,
                Some(secs_until(now, until)),
                if state == CircuitState::Open {
                    reroute_to
                } else {
                    None
                },
                Some(now + config.decision_ttl()),
            )
        }
    };
    Decision {
        subject: circuit_subject(&breaker.provider, &breaker.model),
        action,
        reason: reason.to_string(),
        retry_after_secs,
        reroute_to,
        valid_until,
        budget: None,
        recovery: None,
        breaker: Some(BreakerState {
            state,
            since: breaker.since(),
            generation: breaker.generation(),
            probes_per_proxy: if state == CircuitState::HalfOpen {
                config.probes_per_proxy
            } else {
                0
            },
            calls: evidence.calls,
            failures: evidence.failures,
            signature: evidence.top_signature(),
        }),
    }
}

/// The best learned fallback for an open breaker on `provider`/`model`
/// from the recovery plan of its most frequent failure: the first strategy
/// of the plan (best first) that goes somewhere else — not a retry on the
/// same model, not another model of a provider whose own breaker is open,
/// nothing `keeps_out` says is kept out itself. `None` when the plan has
/// none; the proxy then tries its configured fallbacks in order.
pub fn learned_fallback(
    plan: &RecoveryPlan,
    provider: &str,
    model: &str,
    keeps_out: impl Fn(&str, &str) -> bool,
) -> Option<String> {
    plan.order
        .iter()
        .filter(|s| {
            matches!(
                s.strategy,
                Strategy::FallbackModel | Strategy::FallbackProvider
            )
        })
        .filter(|s| !(s.provider == provider && (model.is_empty() || s.model == model)))
        .find(|s| !keeps_out(&s.provider, &s.model))
        .map(|s| s.model.clone())
}

/// The `admin.breaker.transition` event of a transition.
pub fn transition_event(t: &Transition) -> Event {
    admin_event(
        KIND_BREAKER_TRANSITION,
        ACTOR,
        json!({
            "provider": t.provider,
            "model": t.model,
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "generation": t.generation,
            "calls": t.calls,
            "failures": t.failures,
            "slow": t.slow,
            "signature": t.signature.map(|s| s.to_string()),
            "reason": t.reason,
        }),
    )
}

/// One row of `breaker_transitions` (migration 0031).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
pub struct TransitionRow {
    /// Seconds since the epoch (a `DateTime('UTC')` column).
    pub at: u32,
    pub at_ms: u64,
    pub provider: String,
    pub model: String,
    pub from_state: String,
    pub to_state: String,
    pub generation: u64,
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
    /// 0 when no failure had a signature.
    pub signature: u64,
    pub reason: String,
    /// The `admin.breaker.transition` event's id.
    pub event_id: String,
}

impl TransitionRow {
    pub fn new(t: &Transition, event_id: &str) -> Self {
        Self {
            at: u32::try_from(t.at.timestamp()).unwrap_or(0),
            at_ms: u64::try_from(t.at.timestamp_millis()).unwrap_or(0),
            provider: t.provider.clone(),
            model: t.model.clone(),
            from_state: t.from.as_str().to_string(),
            to_state: t.to.as_str().to_string(),
            generation: t.generation,
            calls: t.calls,
            failures: t.failures,
            slow: t.slow,
            signature: t.signature.map_or(0, |s| s.0),
            reason: t.reason.clone(),
            event_id: event_id.to_string(),
        }
    }
}

/// Provider and model of a `circuit/…` subject (models may hold `/`,
/// providers do not).
pub fn parse_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("circuit/")?;
    let (provider, model) = rest.split_once('/').unwrap_or((rest, ""));
    (!provider.is_empty()).then_some((provider, model))
}

/// The state a published `circuit/…` decision records, to carry on with
/// (after a restart, or mirroring the replica that publishes): its state
/// and episode while the decision holds at `now`, else closed since `now`
/// with its generation (so generations never repeat).
pub fn published_state(decision: &Decision, now: DateTime<Utc>) -> Option<Published> {
    let (provider, model) = parse_subject(&decision.subject)?;
    let state = decision.breaker.as_ref()?;
    let holds = decision.valid_until.is_none_or(|until| now < until);
    let (kind, since) = if holds {
        (state.state, state.since)
    } else {
        (CircuitState::Closed, now)
    };
    Some(Published {
        provider: provider.to_string(),
        model: model.to_string(),
        state: kind,
        since,
        generation: state.generation,
        evidence: Counts::recorded(state.calls, state.failures, state.signature),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{Duration, TimeZone};
    use tollgate_contract::decisions::RankedStrategy;
    use tollgate_contract::signature::SignatureId;

    use super::super::machine::CallOutcome;
    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn open_breaker() -> (Breaker, Transition) {
        let c = BreakersConfig::default();
        let mut b = Breaker::new("openai", "gpt-4o", t0());
        let mut last = None;
        for i in 0..20 {
            let at = t0() + Duration::milliseconds(i);
            let o = CallOutcome {
                failed: i % 4 != 0,
                slow: false,
                signature: Some(SignatureId(0x2a)),
                started_at: at,
            };
            last = b.observe(&o, at, &c).or(last);
        }
        (b, last.unwrap())
    }

    #[test]
    fn open_is_a_reroute_with_the_time_left_and_a_bounded_validity() {
        let c = BreakersConfig::default();
        let (b, t) = open_breaker();
        let now = t.at + Duration::milliseconds(10_500);
        let d = decision(&b, &c, now, &t.reason, Some("gpt-4o-mini".into()));
        let wire = serde_json::to_value(&d).unwrap();
        assert_eq!(
            wire,
            json!({
                "subject": "circuit/openai/gpt-4o",
                "action": "reroute",
                "reason": "15 of 20 calls failed (75%, threshold 50%) in the last 60 s; open for 30 s",
                "retry_after_secs": 20,
                "reroute_to": "gpt-4o-mini",
                "valid_until": (now + Duration::seconds(120)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                "breaker": {
                    "state": "open",
                    "since": t.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    "generation": 1,
                    "probes_per_proxy": 0,
                    "calls": 20,
                    "failures": 15,
                    "signature": "000000000000002a"
                }
            })
        );
        // It parses back as the contract's record.
        let back: Decision = serde_json::from_value(wire).unwrap();
        assert_eq!(back, d);
        // Past its end it says 1 second, not 0.
        let late = decision(&b, &c, t.at + Duration::seconds(31), "", None);
        assert_eq!(late.retry_after_secs, Some(1));
        assert_eq!(late.reroute_to, None);
    }

    #[test]
    fn half_open_carries_probes_per_proxy_and_closed_is_allow() {
        let c = BreakersConfig::default();
        let (mut b, t) = open_breaker();
        let half = b.tick(t.at + Duration::seconds(30), &c).unwrap();
        let d = decision(&b, &c, half.at, &half.reason, Some("ignored".into()));
        assert_eq!(d.action, Action::Reroute);
        assert_eq!(d.reroute_to, None);
        assert_eq!(d.retry_after_secs, Some(30));
        assert_eq!(d.valid_until, Some(half.at + Duration::seconds(120)));
        let state = d.breaker.unwrap();
        assert_eq!(
            (
                state.state,
                state.generation,
                state.probes_per_proxy,
                state.since
            ),
            (CircuitState::HalfOpen, 1, 2, half.at)
        );
        let closed = b.tick(half.at + Duration::seconds(30), &c).unwrap();
        let d = decision(&b, &c, closed.at, &closed.reason, None);
        assert_eq!(d.action, Action::Allow);
        assert_eq!(
            (d.retry_after_secs, d.valid_until, d.reroute_to),
            (None, None, None)
        );
        let state = d.breaker.unwrap();
        assert_eq!(
            (state.state, state.generation, state.calls),
            (CircuitState::Closed, 1, 0)
        );
        assert!(!decision(&b, &c, closed.at, "", None).in_force(closed.at));
    }

    fn ranked(strategy: Strategy, provider: &str, model: &str) -> RankedStrategy {
        RankedStrategy {
            strategy,
            provider: provider.into(),
            model: model.into(),
            attempts: 50,
            successes: 45,
            lower_bound: 0.8,
            mean_wait_ms: 0,
        }
    }

    #[test]
    fn the_learned_fallback_skips_retries_and_what_is_kept_out() {
        let plan = RecoveryPlan {
            signature: SignatureId(1),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            order: vec![
                ranked(Strategy::Retry, "openai", "gpt-4o"),
                ranked(Strategy::FallbackModel, "openai", "gpt-4o-mini"),
                ranked(Strategy::FallbackProvider, "anthropic", "claude-sonnet"),
            ],
            as_of: t0(),
        };
        let none = |_: &str, _: &str| false;
        assert_eq!(
            learned_fallback(&plan, "openai", "gpt-4o", none).as_deref(),
            Some("gpt-4o-mini")
        );
        let mini_open = |p: &str, m: &str| p == "openai" && m == "gpt-4o-mini";
        assert_eq!(
            learned_fallback(&plan, "openai", "gpt-4o", mini_open).as_deref(),
            Some("claude-sonnet")
        );
        // The provider's own breaker: nothing of that provider.
        assert_eq!(
            learned_fallback(&plan, "openai", "", none).as_deref(),
            Some("claude-sonnet")
        );
        let everything = |_: &str, _: &str| true;
        assert_eq!(
            learned_fallback(&plan, "openai", "gpt-4o", everything),
            None
        );
    }

    #[test]
    fn transitions_become_an_event_and_a_row_that_agree() {
        let (_, t) = open_breaker();
        let event = transition_event(&t);
        assert_eq!(event.kind.as_str(), "admin.breaker.transition");
        let admin = event.admin.clone().unwrap();
        assert_eq!(
            admin,
            json!({
                "actor": "tollgate-processor",
                "provider": "openai",
                "model": "gpt-4o",
                "from": "closed",
                "to": "open",
                "generation": 1,
                "calls": 20,
                "failures": 15,
                "slow": 0,
                "signature": "000000000000002a",
                "reason": t.reason,
            })
        );
        // The event passes the contract's own validation.
        let value = serde_json::to_value(&event).unwrap();
        tollgate_contract::validate::parse_event(value, Utc::now(), &Default::default()).unwrap();
        let row = TransitionRow::new(&t, &event.event_id.to_string());
        assert_eq!(
            (row.from_state.as_str(), row.to_state.as_str()),
            ("closed", "open")
        );
        assert_eq!((row.calls, row.failures, row.signature), (20, 15, 0x2a));
        assert_eq!(row.at_ms, u64::try_from(t.at.timestamp_millis()).unwrap());
        assert_eq!(row.event_id, event.event_id.to_string());
    }

    #[test]
    fn subjects_and_published_states_read_back() {
        assert_eq!(parse_subject("circuit/openai"), Some(("openai", "")));
        assert_eq!(
            parse_subject("circuit/together/meta-llama/Llama-3-70b"),
            Some(("together", "meta-llama/Llama-3-70b"))
        );
        assert_eq!(parse_subject("budget/team/x"), None);
        assert_eq!(parse_subject("circuit/"), None);
        let c = BreakersConfig::default();
        let (b, t) = open_breaker();
        let d = decision(&b, &c, t.at, &t.reason, None);
        let back = published_state(&d, t.at + Duration::seconds(5)).unwrap();
        assert_eq!(
            (back.state, back.since, back.generation, back.model.as_str()),
            (CircuitState::Open, t.at, 1, "gpt-4o")
        );
        assert_eq!((back.evidence.calls, back.evidence.failures), (20, 15));
        assert_eq!(back.evidence.top_signature(), Some(SignatureId(0x2a)));
        let mut all = super::super::machine::Breakers::new();
        all.adopt(back, t.at);
        let adopted = all.get("openai", "gpt-4o").unwrap();
        assert_eq!(
            (adopted.state(), adopted.generation()),
            (CircuitState::Open, 1)
        );
        // A lapsed decision comes back closed, keeping its generation.
        let late = t.at + Duration::seconds(121);
        let back = published_state(&d, late).unwrap();
        assert_eq!(
            (back.state, back.since, back.generation),
            (CircuitState::Closed, late, 1)
        );
    }
}
