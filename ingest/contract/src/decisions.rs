//! The records on the compacted decisions topic (`kafka.decisions_topic`):
//! the processors (the budget watcher) publish them and the proxy enforces
//! them, so both sides read the one definition here. The record format is
//! documented in `docs/decisions.md`; reading and writing the topic lives
//! in the crates above.

use std::collections::BTreeMap;

use chrono::{DateTime, Months, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

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
}

impl Decision {
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.action != Action::Allow && self.valid_until.is_none_or(|until| now < until)
    }
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
