//! The overview: what anyone who signs in reads first (`/overview` and
//! `GET /api/v1/overview`), for every org or for one. Spend today and this
//! month, day by day, against the org's budgets; error rate and p95 latency
//! of the last hour against the same hour yesterday; the alerts firing now;
//! the budgets at 80 % or more of their limit; the newest error patterns.
//!
//! Each figure is read by the report that owns it (the cost report by day,
//! the latency report's totals, the errors report, the budgets' status, the
//! alert states), so the overview shows what those pages show; it sends no
//! SQL of its own. An org's overview lists the budgets that belong to the
//! org (`budgets.org_id`), as the budgets page does.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_control::alerts::state::AlertState;
use tollgate_control::budgets::{Budget, BudgetStatus, Period, SubjectKind};

use super::alert_timeline::current_alerts;
use super::cost::{CostDimension, CostQuery};
use super::errors::{ErrorsQuery, PatternSummary};
use super::latency::{LatencyFilters, LatencyQuery};
use super::{InvalidParameter, ReadModelError, ReadModels};

/// A budget is "near its limit" from this share of it used (percent).
pub const NEAR_LIMIT_PERCENT: u32 = 80;
/// How many error patterns the overview lists.
pub const NEWEST_PATTERNS: usize = 5;
/// The error patterns' window: failures of the last day.
pub const PATTERNS_WINDOW_HOURS: i64 = 24;

/// What the overview is asked for: its clock, for an org-scoped overview
/// the org, and the sections the caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeQuery {
    pub now: DateTime<Utc>,
    pub org: Option<String>,
    pub sections: Sections,
}

/// The overview's sections a caller may read: the same roles as the pages
/// each comes from (cost and budgets from finance's, errors and latency
/// from SRE's, alerts from the alert pages').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sections {
    pub cost: bool,
    pub health: bool,
    pub alerts: bool,
}

impl Sections {
    pub const ALL: Self = Self {
        cost: true,
        health: true,
        alerts: true,
    };
}

/// Spend of a period against the org's budget of that period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendFigure {
    /// Exact USD of the priced calls (0 with no calls).
    pub spend_usd: Decimal,
    /// Calls without a price, not in `spend_usd`.
    pub unpriced_calls: i64,
    /// The limit of the org's budget of this period (an org-scoped
    /// overview only; `None` without one).
    pub budget_usd: Option<Decimal>,
    /// `spend_usd` in percent of `budget_usd`, 2 places.
    pub percent: Option<Decimal>,
}

/// One UTC day of the running month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaySpend {
    pub day: NaiveDate,
    pub spend_usd: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spend {
    pub today: SpendFigure,
    pub month: SpendFigure,
    /// Every day of the month so far, including days without spend.
    pub days: Vec<DaySpend>,
}

/// Calls of one hour: how many failed and how slow they were.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourHealth {
    /// `[from, to)`, whole minutes.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub calls: u64,
    pub errors: u64,
    /// `errors / calls`; `None` without calls.
    pub error_rate: Option<f64>,
    /// Duration p95 in ms (exact up to 1,000 calls, see the latency
    /// report); `None` without calls.
    pub p95_ms: Option<f64>,
    /// Whether `p95_ms` is a histogram estimate.
    pub p95_estimate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// The last hour (to the next whole minute).
    pub now: HourHealth,
    /// The same hour yesterday.
    pub yesterday: HourHealth,
}

/// An alert firing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiringAlert {
    pub rule_id: i64,
    pub rule_name: String,
    pub org_id: String,
    pub severity: String,
    pub since: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    /// The value at the last evaluation, as text, and its unit.
    pub value: Option<String>,
    pub unit: String,
    /// The page that explains it.
    pub link: String,
}

/// `GET /api/v1/overview`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Home {
    pub now: DateTime<Utc>,
    /// The org the overview is scoped to; `None`: every org.
    pub org: Option<String>,
    /// `None` for a caller who may not read cost (as are the budgets).
    pub spend: Option<Spend>,
    /// `None` for a caller who may not read latency and errors (as are
    /// the error patterns).
    pub health: Option<Health>,
    /// `None` when the server runs without the alert store, or for a
    /// caller who may not read alerts.
    pub firing_alerts: Option<Vec<FiringAlert>>,
    /// Alerts pending (not firing yet), counted.
    pub pending_alerts: usize,
    /// Budgets at [`NEAR_LIMIT_PERCENT`] or more, most used first; `None`
    /// when the server runs without budgets.
    pub budgets_near_limit: Option<Vec<BudgetStatus>>,
    /// Patterns failing in the last [`PATTERNS_WINDOW_HOURS`] hours, the
    /// most recently first seen first, at most [`NEWEST_PATTERNS`].
    pub newest_patterns: Option<Vec<PatternSummary>>,
}

/// What the overview reads outside ClickHouse (PostgreSQL), read by the
/// caller: the budgets and the alert states of the overview's org (every
/// org's without one), or `None` when the server runs without them.
pub struct Stored<'a> {
    pub budgets: Option<&'a [Budget]>,
    pub alert_states: Option<&'a [AlertState]>,
}

/// The last hour ending at the next whole minute, and the same hour a day
/// earlier.
pub fn hours(now: DateTime<Utc>) -> [(DateTime<Utc>, DateTime<Utc>); 2] {
    let secs = now.timestamp();
    let to_secs = secs.div_euclid(60) * 60 + if secs.rem_euclid(60) > 0 { 60 } else { 0 };
    let to = DateTime::from_timestamp(to_secs, 0).unwrap_or(now);
    let from = to - Duration::hours(1);
    let day = Duration::days(1);
    [(from, to), (from - day, to - day)]
}

fn filters(org: &Option<String>) -> LatencyFilters {
    LatencyFilters {
        org: org.clone(),
        ..LatencyFilters::default()
    }
}

fn hour_query(
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    org: &Option<String>,
) -> Result<LatencyQuery, InvalidParameter> {
    LatencyQuery::new(from, to, Some(3_600), vec![], filters(org))
}

/// The running month `[first day, tomorrow)` by day, of the org.
fn month_query(query: &HomeQuery) -> Result<CostQuery, InvalidParameter> {
    let today = query.now.date_naive();
    let first = today.with_day(1).unwrap_or(today);
    let filters = query
        .org
        .iter()
        .map(|org| (CostDimension::Org, org.clone()))
        .collect();
    CostQuery::new(
        first,
        today.succ_opt().unwrap_or(today),
        vec![CostDimension::Day],
        filters,
    )
}

fn patterns_query(query: &HomeQuery) -> ErrorsQuery {
    let [(_, to), _] = hours(query.now);
    ErrorsQuery {
        from: to - Duration::hours(PATTERNS_WINDOW_HOURS),
        to,
        bucket_secs: 3_600,
        filters: filters(&query.org),
    }
}

fn hour_health(
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    report: &super::LatencyReport,
) -> HourHealth {
    let total = report.groups.first().map(|g| &g.total);
    HourHealth {
        from,
        to,
        calls: total.map_or(0, |t| t.count),
        errors: total.map_or(0, |t| t.errors),
        error_rate: total.filter(|t| t.count > 0).map(|t| t.error_rate),
        p95_ms: total.map(|t| t.duration_ms.p95),
        p95_estimate: total.is_some_and(|t| t.duration_ms.is_estimate()),
    }
}

/// Spend of the month by day, today's, and the org's budgets of each period.
pub fn spend(query: &HomeQuery, report: &super::cost::CostReport, budgets: &[Budget]) -> Spend {
    let today = query.now.date_naive();
    let mut days = Vec::new();
    let mut day = report.from;
    while day < report.to {
        let spend_usd = report
            .groups
            .iter()
            .filter(|g| g.key.get("day").map(String::as_str) == Some(day.to_string().as_str()))
            .filter_map(|g| g.totals.cost)
            .sum();
        days.push(DaySpend { day, spend_usd });
        day = match day.succ_opt() {
            Some(next) => next,
            None => break,
        };
    }
    let today_totals = report
        .groups
        .iter()
        .find(|g| g.key.get("day").map(String::as_str) == Some(today.to_string().as_str()))
        .map(|g| &g.totals);
    let limit = |period: Period| {
        let org = query.org.as_deref()?;
        budgets
            .iter()
            .find(|b| {
                b.subject_kind == SubjectKind::Org && b.subject_id == org && b.period == period
            })
            .map(|b| b.limit_usd)
    };
    let figure = |spend_usd: Decimal, unpriced_calls: i64, budget_usd: Option<Decimal>| {
        let percent = budget_usd.filter(|l| !l.is_zero()).map(|l| {
            let mut p = (spend_usd * Decimal::ONE_HUNDRED / l).round_dp(2);
            p.rescale(2);
            p
        });
        SpendFigure {
            spend_usd,
            unpriced_calls,
            budget_usd,
            percent,
        }
    };
    Spend {
        today: figure(
            today_totals.and_then(|t| t.cost).unwrap_or_default(),
            today_totals.map_or(0, |t| t.unpriced_calls),
            limit(Period::Daily),
        ),
        month: figure(
            report.total.cost.unwrap_or_default(),
            report.total.unpriced_calls,
            limit(Period::Monthly),
        ),
        days,
    }
}

/// The firing alerts among `states` (oldest episode first) and how many
/// are pending.
pub fn alerts(states: &[AlertState]) -> (Vec<FiringAlert>, usize) {
    let current = current_alerts(states);
    let pending = current.iter().filter(|a| a.state == "pending").count();
    let firing = current
        .into_iter()
        .filter(|a| a.state == "firing")
        .map(|a| FiringAlert {
            rule_id: a.rule_id,
            rule_name: a.rule_name,
            org_id: a.org_id,
            severity: a.severity.to_string(),
            since: a.since,
            fired_at: a.fired_at,
            value: a.value,
            unit: a.unit.to_string(),
            link: a.link,
        })
        .collect();
    (firing, pending)
}

/// The statuses at [`NEAR_LIMIT_PERCENT`] or more, most used first (then
/// by subject).
pub fn near_limit(statuses: Vec<BudgetStatus>) -> Vec<BudgetStatus> {
    let mut near: Vec<BudgetStatus> = statuses
        .into_iter()
        .filter(|s| s.percent >= Decimal::from(NEAR_LIMIT_PERCENT))
        .collect();
    near.sort_by(|a, b| {
        b.percent
            .cmp(&a.percent)
            .then_with(|| a.subject.cmp(&b.subject))
            .then_with(|| a.budget.period.name().cmp(b.budget.period.name()))
    });
    near
}

/// The newest patterns: the most recently first seen first (then the most
/// failures, then by id), at most [`NEWEST_PATTERNS`].
pub fn newest(mut patterns: Vec<PatternSummary>) -> Vec<PatternSummary> {
    patterns.sort_by(|a, b| {
        b.first_seen
            .cmp(&a.first_seen)
            .then(b.failures.cmp(&a.failures))
            .then(a.signature.cmp(&b.signature))
    });
    patterns.truncate(NEWEST_PATTERNS);
    patterns
}

pub(crate) async fn run(
    models: &ReadModels,
    query: &HomeQuery,
    stored: Stored<'_>,
) -> Result<Home, ReadModelError> {
    let invalid = |e: InvalidParameter| ReadModelError::UnexpectedRow {
        query: "home",
        detail: e.reason,
    };
    let [now_hour, yesterday_hour] = hours(query.now);
    let month = month_query(query).map_err(invalid)?;
    let (now_q, yesterday_q) = (
        hour_query(now_hour, &query.org).map_err(invalid)?,
        hour_query(yesterday_hour, &query.org).map_err(invalid)?,
    );
    let patterns_q = patterns_query(query);
    let shows = query.sections;
    let cost = async {
        if !shows.cost {
            return Ok(None);
        }
        super::cost::run(models, &month).await.map(Some)
    };
    let hours = async {
        if !shows.health {
            return Ok(None);
        }
        let (now, yesterday, patterns) = tokio::try_join!(
            super::latency::run(models, &now_q),
            super::latency::run(models, &yesterday_q),
            super::errors::run(models, &patterns_q),
        )?;
        Ok(Some((now, yesterday, patterns)))
    };
    let (cost, hours) = tokio::try_join!(cost, hours)?;
    let budgets_near_limit = match stored.budgets.filter(|_| shows.cost) {
        None => None,
        Some(budgets) => Some(near_limit(models.budget_status(budgets, query.now).await?)),
    };
    let (firing_alerts, pending_alerts) = match stored.alert_states.filter(|_| shows.alerts) {
        Some(states) => {
            let (firing, pending) = alerts(states);
            (Some(firing), pending)
        }
        None => (None, 0),
    };
    let (health, newest_patterns) = match hours {
        Some((now_report, yesterday_report, patterns)) => (
            Some(Health {
                now: hour_health(now_hour, &now_report),
                yesterday: hour_health(yesterday_hour, &yesterday_report),
            }),
            Some(newest(patterns.patterns)),
        ),
        None => (None, None),
    };
    Ok(Home {
        now: query.now,
        org: query.org.clone(),
        spend: cost.map(|c| spend(query, &c, stored.budgets.unwrap_or_default())),
        health,
        firing_alerts,
        pending_alerts,
        budgets_near_limit,
        newest_patterns,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// `GET /api/v1/overview` of the sample.
    #[test]
    fn json_snapshot() {
        let home = crate::samples::home();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&home).unwrap());
    }

    #[test]
    fn hours_end_at_the_next_whole_minute() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 30, 15).unwrap();
        let [(from, to), (yf, yt)] = hours(now);
        assert_eq!(to, Utc.with_ymd_and_hms(2026, 12, 2, 10, 31, 0).unwrap());
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 12, 2, 9, 31, 0).unwrap());
        assert_eq!(yf, Utc.with_ymd_and_hms(2026, 12, 1, 9, 31, 0).unwrap());
        assert_eq!(yt, Utc.with_ymd_and_hms(2026, 12, 1, 10, 31, 0).unwrap());
        let on_minute = Utc.with_ymd_and_hms(2026, 12, 2, 10, 30, 0).unwrap();
        assert_eq!(hours(on_minute)[0].1, on_minute);
    }

    fn budget(kind: SubjectKind, id: &str, period: Period, limit: &str) -> Budget {
        Budget {
            id: 1,
            subject_kind: kind,
            subject_id: id.into(),
            period,
            limit_usd: limit.parse().unwrap(),
            hard: false,
            thresholds: vec![80],
            org_id: Some("acme".into()),
        }
    }

    #[test]
    fn month_by_day_with_the_orgs_budgets() {
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 8, 0, 0).unwrap();
        let query = HomeQuery {
            now,
            org: Some("org-a".into()),
            sections: Sections::ALL,
        };
        let q = month_query(&query).unwrap();
        assert_eq!(
            (q.from.to_string(), q.to.to_string()),
            ("2026-12-01".into(), "2026-12-04".into())
        );
        let group = |day: &str, cost: Option<&str>, unpriced| super::super::cost::CostGroup {
            key: [("day".to_string(), day.to_string())].into(),
            totals: super::super::cost::CostTotals {
                calls: 2,
                unpriced_calls: unpriced,
                cost: cost.map(|c| c.parse().unwrap()),
                ..Default::default()
            },
        };
        let report = super::super::cost::CostReport::of_groups(
            &q,
            vec![
                group("2026-12-01", Some("1.5"), 0),
                group("2026-12-03", Some("0.25"), 1),
            ],
        );
        let budgets = [
            budget(SubjectKind::Org, "org-a", Period::Daily, "1"),
            budget(SubjectKind::Org, "org-a", Period::Monthly, "7"),
            budget(SubjectKind::Org, "org-b", Period::Monthly, "1"),
            budget(SubjectKind::Team, "org-a", Period::Monthly, "1"),
        ];
        let s = spend(&query, &report, &budgets);
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(s.today.spend_usd, d("0.25"));
        assert_eq!(s.today.unpriced_calls, 1);
        assert_eq!(s.today.budget_usd, Some(d("1")));
        assert_eq!(s.today.percent.unwrap().to_string(), "25.00");
        assert_eq!(s.month.spend_usd, d("1.75"));
        assert_eq!(s.month.percent.unwrap().to_string(), "25.00");
        let days: Vec<String> = s
            .days
            .iter()
            .map(|d| format!("{} {}", d.day, d.spend_usd))
            .collect();
        assert_eq!(days, ["2026-12-01 1.5", "2026-12-02 0", "2026-12-03 0.25"]);
        // Every org: no single budget to compare against.
        let every_org = HomeQuery {
            org: None,
            ..query.clone()
        };
        let all = spend(&every_org, &report, &budgets);
        assert_eq!(all.month.budget_usd, None);
    }
}
