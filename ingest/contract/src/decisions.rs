//! The records on the compacted decisions topic (`kafka.decisions_topic`):
//! the processors (the budget watcher) publish them and the proxy enforces
//! them, so both sides read the one definition here. The record format is
//! documented in `docs/decisions.md`; reading and writing the topic lives
//! in the crates above.

use std::collections::BTreeMap;

use chrono::{DateTime, Months, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::event::Strategy;
use crate::signature::SignatureId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
    Throttle,
    Reroute,
}

/// One record on the decisions topic (the message key is `subject`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub subject: String,
    pub action: Action,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reroute_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    /// `budget/<kind>/<id>` records: the subject's hard budgets and their
    /// spend, for the proxy's reservations (see [`BudgetState`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetState>,
    /// `recovery/<provider>/<model>/<signature>` records from the recovery
    /// learner: the order in which to try what the operator allows after a
    /// call on that model failed with that signature ([`RecoveryPlan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryPlan>,
    /// `circuit/<provider>` and `circuit/<provider>/<model>` records from
    /// the breaker: its state ([`BreakerState`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerState>,
}

impl Decision {
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.action != Action::Allow && self.valid_until.is_none_or(|until| now < until)
    }
}

/// The subject of the learned recovery for calls on `provider`/`model`
/// failing with `signature`.
pub fn recovery_subject(provider: &str, model: &str, signature: SignatureId) -> String {
    format!("recovery/{provider}/{model}/{signature}")
}

/// The subject of the breaker of `provider` (`model` empty) or of one of its
/// models.
pub fn circuit_subject(provider: &str, model: &str) -> String {
    if model.is_empty() {
        format!("circuit/{provider}")
    } else {
        format!("circuit/{provider}/{model}")
    }
}

/// The learned order of recovery strategies for one (provider, model,
/// signature): best first by the lower bound of a Wilson interval on their
/// success rate, only strategies with enough samples
/// (`docs/error-patterns.md`, "Learned recovery"). The proxy reorders its
/// own candidates by it and never tries anything its configuration does not
/// list or the key may not use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPlan {
    pub signature: SignatureId,
    /// Provider and model of the failed attempt.
    pub provider: String,
    pub model: String,
    pub order: Vec<RankedStrategy>,
    /// When the learner read the counts.
    pub as_of: DateTime<Utc>,
}

/// One strategy of a [`RecoveryPlan`] with the evidence for its rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedStrategy {
    pub strategy: Strategy,
    /// Where the attempt goes (for `retry`, the failed provider and model).
    pub provider: String,
    pub model: String,
    pub attempts: u64,
    pub successes: u64,
    /// Lower bound of the 95% Wilson interval of `successes / attempts`.
    pub lower_bound: f64,
    /// Mean wait before the attempt, milliseconds.
    #[serde(default)]
    pub mean_wait_ms: u64,
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// The breaker part of a `circuit/…` decision. `open`: the proxy takes the
/// provider (or model) out of its candidates (the decision's `reroute_to`,
/// then its configured fallbacks in learned order; `deny` with
/// `retry_after_secs` when none is left). `half_open`: each proxy sends at
/// most `probes_per_proxy` calls of this `generation` to it, the rest as
/// when open. `closed`: nothing to enforce (action `allow`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerState {
    pub state: CircuitState,
    /// When the breaker entered `state`.
    pub since: DateTime<Utc>,
    /// Counts one open/half-open episode, so that proxies start a new probe
    /// count for each half-open period.
    pub generation: u64,
    #[serde(default)]
    pub probes_per_proxy: u32,
    /// Calls and failures in the window that decided the last transition.
    #[serde(default)]
    pub calls: u64,
    #[serde(default)]
    pub failures: u64,
    /// The failure signature seen most in that window: the proxy orders its
    /// fallbacks by the learned recovery for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureId>,
}

/// The decision subject of the hard budgets of subject `kind`/`id`
/// (`org`, `team`, `user`, `key`) belonging to `org`:
///
/// - an org's own budgets: `budget/org/<org>`;
/// - a team's, user's or key's budgets of one org:
///   `budget/in/<org>/<kind>/<id>`, the org with `%` and `/` percent-encoded
///   (so the org ends at the next `/` whatever the ids hold, and no subject
///   of this form can be spelled by the older one below, whose second part
///   is always a kind);
/// - a budget set without an org (before budgets belonged to orgs, or by
///   `tollgate budgets set` without `--org`): `budget/<kind>/<id>`, which
///   applies to that id in every org.
pub fn budget_subject(kind: &str, org: Option<&str>, id: &str) -> String {
    match org {
        _ if kind == "org" => format!("budget/org/{id}"),
        Some(org) => format!(
            "budget/in/{}/{kind}/{id}",
            org.replace('%', "%25").replace('/', "%2F")
        ),
        None => format!("budget/{kind}/{id}"),
    }
}

/// How a person reads a [`budget_subject`]: `team search of org acme`,
/// `org acme`, `team search` (every org).
pub fn budget_subject_words(subject: &str) -> String {
    let rest = subject.strip_prefix("budget/").unwrap_or(subject);
    if let Some(scoped) = rest.strip_prefix("in/") {
        if let Some((org, kind_id)) = scoped.split_once('/') {
            let org = org.replace("%2F", "/").replace("%25", "%");
            return format!("{} of org {org}", kind_id.replacen('/', " ", 1));
        }
    }
    rest.replacen('/', " ", 1)
}

/// What a request is about, for matching subjects.
#[derive(Debug, Clone, Copy)]
pub struct Subjects<'a> {
    pub key_id: &'a str,
    pub user_id: &'a str,
    pub team_id: &'a str,
    pub org_id: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
}

impl Subjects<'_> {
    /// Every subject spelling that applies to the request: the plain forms
    /// (`team/<id>`) and the category-prefixed ones of the design
    /// (`budget/team/<id>`, `ratelimit/key/<id>`, `circuit/<provider>/<model>`,
    /// `route/<model>`).
    pub fn candidates(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(20);
        for (kind, id) in [
            ("key", self.key_id),
            ("user", self.user_id),
            ("team", self.team_id),
            ("org", self.org_id),
        ] {
            if id.is_empty() {
                continue;
            }
            out.push(format!("{kind}/{id}"));
            out.push(format!("budget/{kind}/{id}"));
            if kind != "org" && !self.org_id.is_empty() {
                out.push(budget_subject(kind, Some(self.org_id), id));
            }
            out.push(format!("ratelimit/{kind}/{id}"));
        }
        out.push(format!("model/{}", self.model));
        out.push(format!("route/{}", self.model));
        out.push(format!("provider/{}", self.provider));
        out.push(format!("circuit/{}", self.provider));
        out.push(format!("circuit/{}/{}", self.provider, self.model));
        out
    }
}

/// One budget period of a subject, as published by the budget watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetPeriod {
    /// `daily` or `monthly` (UTC).
    pub period: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Decimal strings on the wire.
    pub limit_usd: Decimal,
    pub spent_usd: Decimal,
}

impl BudgetPeriod {
    /// This period as it stands at `now`: when `now` is past its end, the
    /// next period of the same length with nothing spent yet (the watcher
    /// publishes the new spend within a second; until then the proxy's own
    /// charges since the new start still count).
    pub fn at(&self, now: DateTime<Utc>) -> BudgetPeriod {
        let mut p = self.clone();
        let mut guard = 0;
        while now >= p.end && guard < 400 {
            let next_end = match p.period.as_str() {
                "daily" => p.end + chrono::Duration::days(1),
                _ => p.end.checked_add_months(Months::new(1)).unwrap_or(p.end),
            };
            if next_end <= p.end {
                break;
            }
            p.start = p.end;
            p.end = next_end;
            p.spent_usd = Decimal::ZERO;
            guard += 1;
        }
        p
    }
}

/// The budget part of a `budget/<kind>/<id>` decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    /// Every hard budget of the subject (a daily and a monthly one at most).
    pub periods: Vec<BudgetPeriod>,
    /// Events-topic partition -> highest offset whose cost is in `spent_usd`.
    #[serde(default)]
    pub folded: BTreeMap<i32, i64>,
    /// When the watcher read the spend.
    pub as_of: DateTime<Utc>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn budget_subjects_name_the_org_and_cannot_collide() {
        assert_eq!(
            budget_subject("org", Some("acme"), "acme"),
            "budget/org/acme"
        );
        assert_eq!(budget_subject("org", None, "acme"), "budget/org/acme");
        assert_eq!(
            budget_subject("team", Some("acme"), "search"),
            "budget/in/acme/team/search"
        );
        assert_eq!(budget_subject("team", None, "search"), "budget/team/search");
        // An org holding `/` cannot pass for another org and team.
        assert_ne!(
            budget_subject("team", Some("a/team"), "b"),
            budget_subject("team", Some("a"), "team/b")
        );
        assert_eq!(
            budget_subject("user", Some("a/b%"), "u"),
            "budget/in/a%2Fb%25/user/u"
        );
        for (subject, words) in [
            ("budget/org/acme", "org acme"),
            ("budget/in/acme/team/search", "team search of org acme"),
            ("budget/in/a%2Fb%25/user/u/v", "user u/v of org a/b%"),
            ("budget/team/search", "team search"),
        ] {
            assert_eq!(budget_subject_words(subject), words);
        }
    }

    #[test]
    fn candidates_hold_the_org_scoped_budget_subjects() {
        let subjects = Subjects {
            key_id: "k",
            user_id: "u",
            team_id: "t",
            org_id: "o",
            model: "m",
            provider: "p",
        };
        let candidates = subjects.candidates();
        for expected in [
            "budget/in/o/key/k",
            "budget/in/o/user/u",
            "budget/in/o/team/t",
            "budget/team/t",
            "budget/org/o",
        ] {
            assert!(
                candidates.iter().any(|c| c == expected),
                "{expected}: {candidates:?}"
            );
        }
        assert!(!candidates.iter().any(|c| c == "budget/in/o/org/o"));
    }
}
