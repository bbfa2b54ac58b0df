//! Budget burn-down: the running period of one budget cut into buckets
//! (days of a monthly budget, hours of a daily one), each with the spend in
//! it, the cumulative spend, what remains of the limit, the ideal line (the
//! limit spread evenly over the period) and, from the current bucket on, the
//! forecast at the burn rate so far.
//!
//! This module owns the two spend statements (days from the cost rollup
//! with the subject's column, which is what the budget watcher judges; hours from the facts,
//! `calls` plus `cost_adjustments`, because the rollup has no hours) and
//! the pure assembly [`assemble`]. Every number is an exact decimal, rounded
//! once to 12 places where a division makes it non-terminating; the last
//! forecast is the budget status's `forecast_usd` and the last cumulative
//! its `spend_usd`, so the burn-down and the budgets report agree.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::table::{usd, usd_or_empty, Table};
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};
use tollgate_contract::cost::{from_mantissa, round};
use tollgate_control::budgets::{status_of, Budget, BudgetStatus, Period, SubjectKind};

/// The size of a burn-down bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Monthly budgets: one point per UTC day.
    Day,
    /// Daily budgets: one point per hour.
    Hour,
}

impl Step {
    pub fn of(period: Period) -> Self {
        match period {
            Period::Daily => Self::Hour,
            Period::Monthly => Self::Day,
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::Day => 86_400,
            Self::Hour => 3_600,
        }
    }
}

/// One bucket of the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BurndownPoint {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Spend in this bucket; `None` for buckets that have not begun.
    pub spend_usd: Option<Decimal>,
    /// Spend from the start of the period to the end of this bucket (for
    /// the current bucket: so far); `None` for buckets that have not begun.
    pub cumulative_usd: Option<Decimal>,
    /// Limit minus cumulative spend (negative once overspent).
    pub remaining_usd: Option<Decimal>,
    /// Limit x the fraction of the period elapsed at the end of the bucket.
    pub ideal_usd: Decimal,
    /// Spend at the end of this bucket at the burn rate so far; from the
    /// current bucket on, `None` before it.
    pub forecast_usd: Option<Decimal>,
}

/// The burn-down of one budget's running period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Burndown {
    /// The budget with the spend of its period, percent, state and
    /// period-end forecast, as in the budgets report.
    #[serde(flatten)]
    pub status: BudgetStatus,
    /// The time the report was computed for (whole minutes).
    pub as_of: DateTime<Utc>,
    pub step: Step,
    pub points: Vec<BurndownPoint>,
}

/// The clock of a burn-down: `now` cut to the whole minute, so a page and
/// its CSV asked for in the same minute show the same forecast. Buckets
/// start on whole hours, so the cut never moves `now` into another bucket.
pub fn clock(now: DateTime<Utc>) -> DateTime<Utc> {
    let secs = now.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0).unwrap_or(now)
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

fn overflow(detail: &str) -> ReadModelError {
    ReadModelError::UnexpectedRow {
        query: "budgets.burndown",
        detail: format!("{detail} does not fit a decimal"),
    }
}

/// Pure: the burn-down of `budget` at `now` from the spend per bucket
/// (keyed by the bucket's start in epoch seconds). Spend in buckets after
/// the current one (calls stamped slightly in the future) counts in the
/// current bucket, so the last cumulative is the period's whole spend.
pub fn assemble(
    budget: &Budget,
    now: DateTime<Utc>,
    spend_by_bucket: &BTreeMap<i64, Decimal>,
) -> Result<Burndown, ReadModelError> {
    let step = Step::of(budget.period);
    let (first_day, end_day) = budget.period.window(now);
    let (start, end) = (midnight(first_day), midnight(end_day));
    let step_secs = step.seconds();
    let total_secs = (end - start).num_seconds().max(step_secs);
    let buckets = total_secs / step_secs;
    let current = ((now - start).num_seconds() / step_secs).clamp(0, buckets - 1);
    let mut spend = vec![Decimal::ZERO; usize::try_from(buckets).unwrap_or(0)];
    for (bucket_start, amount) in spend_by_bucket {
        let offset = bucket_start - start.timestamp();
        if offset < 0 || offset >= total_secs {
            continue;
        }
        let i = usize::try_from((offset / step_secs).min(current)).unwrap_or(0);
        spend[i] = spend[i]
            .checked_add(*amount)
            .ok_or_else(|| overflow("the spend"))?;
    }
    let total = spend
        .iter()
        .try_fold(Decimal::ZERO, |a, s| a.checked_add(*s))
        .ok_or_else(|| overflow("the spend"))?;
    let status = status_of(budget, total, now);
    // As in `status_of`: elapsed time counted as at least an hour.
    let elapsed = tollgate_contract::cost::forecast_at_burn_rate(
        total,
        start,
        start + chrono::Duration::seconds(total_secs),
        now,
    )
    .elapsed_seconds;
    let limit = budget.limit_usd;
    let mut points = Vec::with_capacity(spend.len());
    let mut cumulative = Decimal::ZERO;
    for (i, bucket_spend) in (0i64..).zip(&spend) {
        let bucket_start = start + chrono::Duration::seconds(i * step_secs);
        let bucket_end = start + chrono::Duration::seconds((i + 1) * step_secs);
        let ideal = limit
            .checked_mul(Decimal::from(i + 1))
            .and_then(|x| x.checked_div(Decimal::from(buckets)))
            .map(|x| round(x).normalize())
            .ok_or_else(|| overflow("the ideal line"))?;
        let begun = i <= current;
        if begun {
            cumulative = cumulative
                .checked_add(*bucket_spend)
                .ok_or_else(|| overflow("the spend"))?;
        }
        let forecast = if i >= current {
            Some(
                total
                    .checked_mul(Decimal::from((i + 1) * step_secs))
                    .and_then(|x| x.checked_div(Decimal::from(elapsed)))
                    .map(round)
                    .ok_or_else(|| overflow("the forecast"))?,
            )
        } else {
            None
        };
        points.push(BurndownPoint {
            start: bucket_start,
            end: bucket_end,
            spend_usd: begun.then_some(*bucket_spend),
            cumulative_usd: begun.then_some(cumulative),
            remaining_usd: if begun {
                Some(
                    limit
                        .checked_sub(cumulative)
                        .ok_or_else(|| overflow("the remaining budget"))?,
                )
            } else {
                None
            },
            ideal_usd: ideal,
            forecast_usd: forecast,
        });
    }
    Ok(Burndown {
        status,
        as_of: now,
        step,
        points,
    })
}

/// The rollup or fact column of a budget subject; only these fixed strings
/// reach SQL.
fn subject_column(kind: SubjectKind) -> &'static str {
    match kind {
        SubjectKind::Org => "org_id",
        SubjectKind::Team => "team_id",
        SubjectKind::User => "user_id",
        SubjectKind::Key => "api_key_id",
    }
}

/// The calls a budget judges: its subject's, of its org when it has one
/// (`Budget::org_id`), as a condition and its binds.
fn subject_filter(kind: SubjectKind, org: Option<&str>, subject: &str) -> (String, Vec<SqlValue>) {
    let column = subject_column(kind);
    let mut binds = vec![SqlValue::Str(subject.to_string())];
    let condition = match org {
        Some(org) => {
            binds.push(SqlValue::Str(org.to_string()));
            format!("{column} = ? AND org_id = ?")
        }
        None => format!("{column} = ?"),
    };
    (condition, binds)
}

/// Spend per UTC day of one subject (of `org`, or of every org) from the
/// rollup: `[subject, from, to)`.
fn days_sql(
    kind: SubjectKind,
    org: Option<&str>,
    subject: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> BoundSql {
    let column = subject_column(kind);
    let (condition, mut binds) = subject_filter(kind, org, subject);
    binds.push(SqlValue::Str(from.to_string()));
    binds.push(SqlValue::Str(to.to_string()));
    BoundSql {
        name: "budgets.burndown.days",
        template: format!(
            "SELECT toString(day) AS bucket, sum(cost) AS s_cost FROM {} \
             WHERE {condition} AND day >= toDate(?) AND day < toDate(?) \
             GROUP BY bucket ORDER BY bucket",
            tollgate_control::cost_rollup::table_for(["org_id", column])
        ),
        binds,
    }
}

/// Spend per hour of one subject from the facts (billable calls plus
/// repricing adjustments): the rollup has days only.
fn hours_sql(kind: SubjectKind, org: Option<&str>, subject: &str, from: u32, to: u32) -> BoundSql {
    let (condition, subject_binds) = subject_filter(kind, org, subject);
    let window = [
        SqlValue::UInt(u64::from(from)),
        SqlValue::UInt(u64::from(to)),
    ];
    let binds = [subject_binds.as_slice(), &window, &subject_binds, &window].concat();
    BoundSql {
        name: "budgets.burndown.hours",
        template: format!(
            "SELECT toUInt32(intDiv(toUInt32(occurred_at), 3600) * 3600) AS bucket, sum(c) AS s_cost FROM ( \
               SELECT occurred_at, cost AS c FROM calls \
               WHERE {condition} AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
               AND kind IN ('ai.call.completed', 'ai.call.failed') \
               UNION ALL \
               SELECT occurred_at, cost AS c FROM cost_adjustments \
               WHERE {condition} AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
             ) GROUP BY bucket ORDER BY bucket"
        ),
        binds,
    }
}

#[derive(Debug, Row, Deserialize)]
struct DayRow {
    bucket: String,
    s_cost: i128,
}

#[derive(Debug, Row, Deserialize)]
struct HourRow {
    bucket: u32,
    s_cost: i128,
}

fn cost_of(query: &'static str, mantissa: i128) -> Result<Decimal, ReadModelError> {
    from_mantissa(mantissa).ok_or_else(|| ReadModelError::UnexpectedRow {
        query,
        detail: format!("cost mantissa {mantissa} is out of range"),
    })
}

fn epoch(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX)
}

pub(crate) async fn run(
    models: &ReadModels,
    budget: &Budget,
    now: DateTime<Utc>,
) -> Result<Burndown, ReadModelError> {
    let (from, to) = budget.period.window(now);
    let mut spend = BTreeMap::new();
    match Step::of(budget.period) {
        Step::Day => {
            let sql = days_sql(
                budget.subject_kind,
                budget.org_id.as_deref(),
                &budget.subject_id,
                from,
                to,
            );
            let rows: Vec<DayRow> = models
                .bounded(sql.query(models.client()).fetch_all::<DayRow>())
                .await
                .map_err(|e| models.classify(sql.name, e))?;
            for row in rows {
                let day = NaiveDate::parse_from_str(&row.bucket, "%Y-%m-%d").map_err(|e| {
                    ReadModelError::UnexpectedRow {
                        query: sql.name,
                        detail: format!("day `{}`: {e}", row.bucket),
                    }
                })?;
                spend.insert(midnight(day).timestamp(), cost_of(sql.name, row.s_cost)?);
            }
        }
        Step::Hour => {
            let sql = hours_sql(
                budget.subject_kind,
                budget.org_id.as_deref(),
                &budget.subject_id,
                epoch(midnight(from)),
                epoch(midnight(to)),
            );
            let rows: Vec<HourRow> = models
                .bounded(sql.query(models.client()).fetch_all::<HourRow>())
                .await
                .map_err(|e| models.classify(sql.name, e))?;
            for row in rows {
                spend.insert(i64::from(row.bucket), cost_of(sql.name, row.s_cost)?);
            }
        }
    }
    assemble(budget, now, &spend)
}

/// The burn-down's table (its CSV): one row per bucket; empty cells where
/// a value does not exist yet.
pub fn table(burndown: &Burndown) -> Table {
    let mut table = Table::new([
        "bucket_start",
        "bucket_end",
        "spend_usd",
        "cumulative_usd",
        "remaining_usd",
        "ideal_usd",
        "forecast_usd",
    ]);
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for p in &burndown.points {
        table.push([
            time(p.start),
            time(p.end),
            usd_or_empty(p.spend_usd),
            usd_or_empty(p.cumulative_usd),
            usd_or_empty(p.remaining_usd),
            usd(p.ideal_usd),
            usd_or_empty(p.forecast_usd),
        ]);
    }
    table
}

/// Sample statements for the SQL compatibility check.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap_or_default();
    let mut out = Vec::new();
    for kind in SubjectKind::ALL {
        for org in [Some("acme"), None] {
            out.push(days_sql(kind, org, "team-a", day(1), day(31)));
            out.push(hours_sql(kind, org, "team-a", 1_772_323_200, 1_772_409_600));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// `GET /api/v1/finance/budgets/{id}/burndown` of the sample, as JSON
    /// and CSV.
    #[test]
    fn json_and_csv_snapshots() {
        let burndown = crate::samples::burndown();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&burndown).unwrap());
        insta::assert_snapshot!("csv", table(&burndown).to_csv());
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn budget(period: Period, limit: &str) -> Budget {
        Budget {
            id: 7,
            subject_kind: SubjectKind::Team,
            subject_id: "search".into(),
            period,
            limit_usd: d(limit),
            hard: true,
            thresholds: vec![50, 80, 100],
            org_id: Some("acme".into()),
        }
    }

    fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, h, m, 0).unwrap()
    }

    #[test]
    fn monthly_budget_by_day() {
        let b = budget(Period::Monthly, "310");
        let now = at(11, 0, 0); // 10 of 31 days elapsed, in day 11
        let spend = BTreeMap::from([
            (at(1, 0, 0).timestamp(), d("10.000000000001")),
            (at(5, 0, 0).timestamp(), d("20")),
            (at(11, 0, 0).timestamp(), d("5")),
            // a call stamped in the future counts in the current bucket
            (at(12, 0, 0).timestamp(), d("1")),
            // outside the period: ignored
            (at(1, 0, 0).timestamp() - 86_400, d("1000")),
        ]);
        let r = assemble(&b, now, &spend).unwrap();
        assert_eq!(r.step, Step::Day);
        assert_eq!(r.points.len(), 31);
        assert_eq!(r.points[0].start, at(1, 0, 0));
        assert_eq!(
            r.points[30].end,
            Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(r.points[0].cumulative_usd, Some(d("10.000000000001")));
        assert_eq!(r.points[4].cumulative_usd, Some(d("30.000000000001")));
        assert_eq!(r.points[9].spend_usd, Some(Decimal::ZERO));
        let today = &r.points[10];
        assert_eq!(today.spend_usd, Some(d("6")));
        assert_eq!(today.cumulative_usd, Some(d("36.000000000001")));
        assert_eq!(today.remaining_usd, Some(d("273.999999999999")));
        assert!(r.points[11].cumulative_usd.is_none());
        assert!(r.points[11].remaining_usd.is_none());
        // Ideal: 310 / 31 = 10 a day.
        assert_eq!(r.points[0].ideal_usd, d("10"));
        assert_eq!(r.points[30].ideal_usd, d("310"));
        // Forecast from the current bucket on: spend / 10 days x days.
        assert!(r.points[9].forecast_usd.is_none());
        // 36.000000000001 x 1.1 = 39.6000000000011, rounded to 12 places.
        assert_eq!(today.forecast_usd, Some(d("39.600000000001")));
        assert_eq!(r.points[30].forecast_usd, Some(r.status.forecast_usd));
        assert_eq!(r.status.spend_usd, d("36.000000000001"));
        assert_eq!(r.status.forecast_usd, d("111.600000000003"));
    }

    #[test]
    fn daily_budget_by_hour_with_a_non_terminating_ideal() {
        let b = budget(Period::Daily, "1");
        let now = at(10, 0, 30); // within the first hour: elapsed counts as 1 h
        let spend = BTreeMap::from([(at(10, 0, 0).timestamp(), d("0.25"))]);
        let r = assemble(&b, now, &spend).unwrap();
        assert_eq!(r.step, Step::Hour);
        assert_eq!(r.points.len(), 24);
        // 1 / 24 rounded once to 12 places.
        assert_eq!(r.points[0].ideal_usd, d("0.041666666667"));
        assert_eq!(r.points[23].ideal_usd, d("1"));
        assert_eq!(
            r.points[11].ideal_usd.to_string(),
            "0.5",
            "no trailing zeros"
        );
        assert_eq!(r.points[0].forecast_usd, Some(d("0.25")));
        assert_eq!(r.points[23].forecast_usd, Some(d("6")));
        assert_eq!(r.status.forecast_usd, d("6"));
        assert_eq!(r.points[0].remaining_usd, Some(d("0.75")));
        let csv = table(&r).to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 25);
        assert_eq!(
            lines[1],
            "2026-03-10T00:00:00Z,2026-03-10T01:00:00Z,0.250000000000,0.250000000000,0.750000000000,0.041666666667,0.250000000000"
        );
        assert_eq!(
            lines[24],
            "2026-03-10T23:00:00Z,2026-03-11T00:00:00Z,,,,1.000000000000,6.000000000000"
        );
    }

    #[test]
    fn overspent_budget_has_negative_remaining() {
        let b = budget(Period::Daily, "1");
        let now = at(10, 12, 0);
        let spend = BTreeMap::from([(at(10, 3, 0).timestamp(), d("1.5"))]);
        let r = assemble(&b, now, &spend).unwrap();
        assert_eq!(r.points[12].remaining_usd, Some(d("-0.5")));
        assert_eq!(r.status.state, "exhausted");
        // 1.5 over 12 h -> 3 over 24 h.
        assert_eq!(r.points[23].forecast_usd, Some(d("3")));
    }

    #[test]
    fn clock_cuts_to_the_minute() {
        let t = Utc.with_ymd_and_hms(2026, 3, 10, 13, 59, 59).unwrap();
        assert_eq!(clock(t), at(10, 13, 59));
    }

    #[test]
    fn days_read_the_smallest_rollup_with_the_subject() {
        let (from, to) = (
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
        );
        let table = |kind| {
            let text = days_sql(kind, Some("o"), "s", from, to).text();
            let table = text.split(" FROM ").nth(1).unwrap();
            table.split(' ').next().unwrap().to_string()
        };
        assert_eq!(table(SubjectKind::Org), "cost_daily_by_team");
        assert_eq!(table(SubjectKind::Team), "cost_daily_by_team");
        assert_eq!(table(SubjectKind::User), "cost_daily_by_user");
        assert_eq!(table(SubjectKind::Key), "cost_daily_by_key");
    }

    #[test]
    fn sql_binds_the_subject() {
        let text = days_sql(
            SubjectKind::Org,
            None,
            "o' OR 1=1",
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
        )
        .text();
        assert!(text.contains(r"org_id = 'o\' OR 1=1'"), "{text}");
        let text = hours_sql(SubjectKind::Key, Some("acme"), "k", 10, 20).text();
        assert!(
            text.contains("api_key_id = 'k' AND org_id = 'acme' AND occurred_at >= toDateTime(10)"),
            "{text}"
        );
        assert_eq!(text.matches("org_id = 'acme'").count(), 2, "{text}");
    }
}
