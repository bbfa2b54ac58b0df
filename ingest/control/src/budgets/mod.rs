//! Budgets: the PostgreSQL store (`budgets`, `budget_alerts`), the pure
//! evaluation of a budget against the spend of its period, its status for
//! reports, and the spend query. The [`the budget watcher of `tollgate process``] that
//! `tollgate process` runs turns them into decisions and warnings.
//!
//! Spend comes from the rollup, which every processor's inserts feed, so an
//! org whose teams land on different partitions (and processors) is judged
//! on its whole spend. See `docs/cost.md` for the bound on overrun.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use clickhouse::{Client, Row};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use tollgate_contract::cost::from_mantissa;
use tollgate_contract::decisions::budget_subject;

pub mod admin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    Org,
    Team,
    User,
    Key,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 4] = [Self::Org, Self::Team, Self::User, Self::Key];

    pub fn name(self) -> &'static str {
        match self {
            Self::Org => "org",
            Self::Team => "team",
            Self::User => "user",
            Self::Key => "key",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The rollup column; only these fixed strings reach SQL.
    fn column(self) -> &'static str {
        match self {
            Self::Org => "org_id",
            Self::Team => "team_id",
            Self::User => "user_id",
            Self::Key => "api_key_id",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }

    /// The instants `[start, end)` of the period containing `now`.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let (start, end) = self.window(now);
        let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
        (at(start), at(end))
    }

    /// The UTC days `[start, end)` of the period containing `now`.
    pub fn window(self, now: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
        let today = now.date_naive();
        match self {
            Self::Daily => (today, today.succ_opt().unwrap_or(today)),
            Self::Monthly => {
                let first = today.with_day(1).unwrap_or(today);
                (
                    first,
                    first.checked_add_months(Months::new(1)).unwrap_or(first),
                )
            }
        }
    }
}

/// One budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub id: i64,
    pub subject_kind: SubjectKind,
    pub subject_id: String,
    pub period: Period,
    pub limit_usd: Decimal,
    /// `true`: deny when exhausted; `false`: warn only.
    pub hard: bool,
    pub thresholds: Vec<i32>,
    /// The org the budget belongs to: its spend is that org's calls of the
    /// subject. `None` (a budget set without an org): the subject's calls
    /// in every org.
    pub org_id: Option<String>,
}

impl Budget {
    /// Whether the budget is `org`'s: set for it (`org_id`), or an org
    /// budget of `org` recorded without an org. A budget set without an
    /// org over a team, user or key counts that subject's calls in every
    /// org, so it is no one org's (only those who see every org read it).
    pub fn belongs_to(&self, org: &str) -> bool {
        match self.org_id.as_deref() {
            Some(owner) => owner == org,
            None => self.subject_kind == SubjectKind::Org && self.subject_id == org,
        }
    }

    /// The decision subject
    /// ([`tollgate_contract::decisions::budget_subject`]).
    pub fn subject(&self) -> String {
        budget_subject(
            self.subject_kind.name(),
            self.org_id.as_deref(),
            &self.subject_id,
        )
    }
}

/// A budget judged against the spend of its period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Thresholds (percent) reached, ascending.
    pub reached: Vec<i32>,
    /// A hard budget whose spend reached its limit.
    pub deny: bool,
}

/// Pure: which thresholds `spend` reaches and whether to deny.
pub fn evaluate(budget: &Budget, spend: Decimal) -> Evaluation {
    let mut reached: Vec<i32> = budget
        .thresholds
        .iter()
        .copied()
        .filter(|t| spend * Decimal::ONE_HUNDRED >= budget.limit_usd * Decimal::from(*t))
        .collect();
    reached.sort_unstable();
    reached.dedup();
    Evaluation {
        reached,
        deny: budget.hard && spend >= budget.limit_usd,
    }
}

/// The columns of a [`BudgetRow`].
pub(crate) const BUDGET_COLUMNS: &str =
    "id, subject_kind, subject_id, period, limit_usd, enforcement, thresholds, org_id";

/// Budget `id`, read on `conn` (a transaction's); `None`: no such budget.
pub async fn budget_by_id(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<Budget>> {
    let row: Option<BudgetRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(BudgetRow::into_budget))
}

#[derive(sqlx::FromRow)]
pub(crate) struct BudgetRow {
    id: i64,
    subject_kind: String,
    subject_id: String,
    period: String,
    limit_usd: Decimal,
    enforcement: String,
    thresholds: Vec<i32>,
    org_id: Option<String>,
}

impl BudgetRow {
    /// The budget (`None` for a kind the table's check would not allow).
    pub(crate) fn into_budget(self) -> Option<Budget> {
        Some(Budget {
            id: self.id,
            subject_kind: SubjectKind::parse(&self.subject_kind)?,
            subject_id: self.subject_id,
            period: match self.period.as_str() {
                "daily" => Period::Daily,
                _ => Period::Monthly,
            },
            limit_usd: self.limit_usd,
            hard: self.enforcement == "hard",
            thresholds: self.thresholds,
            org_id: self.org_id,
        })
    }
}

/// Budgets in PostgreSQL. Creating, replacing and deleting (each with its
/// admin event in the outbox) is in [`admin`].
#[derive(Clone)]
pub struct BudgetStore {
    pool: PgPool,
}

impl BudgetStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn all(&self) -> sqlx::Result<Vec<Budget>> {
        let rows: Vec<BudgetRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(BudgetRow::into_budget)
            .collect())
    }

    /// The budgets `org`'s people see (every budget for `None`), and the
    /// org of each (`None`: no org recorded).
    pub async fn in_org(&self, org: Option<&str>) -> sqlx::Result<Vec<Budget>> {
        let all = self.all().await?;
        Ok(all
            .into_iter()
            .filter(|b| org.is_none_or(|org| b.belongs_to(org)))
            .collect())
    }

    /// Budget `id`; `None`: no such budget.
    pub async fn get(&self, id: i64) -> sqlx::Result<Option<Budget>> {
        let mut conn = self.pool.acquire().await?;
        budget_by_id(&mut conn, id).await
    }

    /// The org budget `id` belongs to: `Ok(None)` no such budget,
    /// `Ok(Some(None))` a budget without an org.
    pub async fn org_of(&self, id: i64) -> sqlx::Result<Option<Option<String>>> {
        sqlx::query_scalar("SELECT org_id FROM budgets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The pool, for budget administration ([`admin`]).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Spend per org and subject of one kind over UTC days `[from, to)`.
/// Org and team spend read the rollup without user and key, user and key
/// spend the rollup per user or per key ([`crate::cost_rollup`]).
fn spend_sql(kind: SubjectKind) -> String {
    let column = kind.column();
    format!(
        "SELECT toString(org_id) AS org, toString({column}) AS subject, sum(cost) AS s_cost FROM {} \
         WHERE day >= toDate(?) AND day < toDate(?) GROUP BY org, subject",
        crate::cost_rollup::table_for(["org_id", column])
    )
}

/// The spend statements, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    SubjectKind::ALL
        .iter()
        .map(|k| {
            let q = Client::default()
                .query(&spend_sql(*k))
                .bind("2026-03-01")
                .bind("2026-04-01");
            (
                format!("budgets.spend.{}", k.name()),
                q.sql_display().to_string(),
            )
        })
        .collect()
}

#[derive(Debug, Row, Deserialize)]
struct SpendRow {
    org: String,
    subject: String,
    s_cost: i128,
}

/// The spend of every subject of one kind in one period, per org.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spend {
    /// (org, subject id) -> spend.
    by_org: HashMap<(String, String), Decimal>,
}

impl Spend {
    pub fn new(by_org: impl IntoIterator<Item = ((String, String), Decimal)>) -> Self {
        Self {
            by_org: by_org.into_iter().collect(),
        }
    }

    /// What `budget` has spent: its org's calls of its subject, or the
    /// subject's calls in every org for a budget without an org.
    pub fn of(&self, budget: &Budget) -> Decimal {
        match budget.org_id.as_deref() {
            Some(org) => self
                .by_org
                .get(&(org.to_string(), budget.subject_id.clone()))
                .copied()
                .unwrap_or_default(),
            None => self
                .by_org
                .iter()
                .filter(|((_, subject), _)| *subject == budget.subject_id)
                .map(|(_, spent)| *spent)
                .sum(),
        }
    }
}

/// The spend of every subject of `kind` in the period `[from, to)`, per
/// org, from the cost rollup ([`crate::cost_rollup`] chooses which).
pub async fn spend(
    client: &Client,
    kind: SubjectKind,
    (from, to): (NaiveDate, NaiveDate),
) -> clickhouse::error::Result<Spend> {
    let rows: Vec<SpendRow> = client
        .query(&spend_sql(kind))
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await?;
    Ok(Spend::new(rows.into_iter().filter_map(|r| {
        Some(((r.org, r.subject), from_mantissa(r.s_cost)?))
    })))
}

/// A budget with the spend of its running period, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetStatus {
    #[serde(flatten)]
    pub budget: Budget,
    pub subject: String,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub spend_usd: Decimal,
    /// The limit less the spend: below zero once overspent (a soft budget,
    /// or a hard one overrun by calls in flight).
    pub remaining_usd: Decimal,
    /// Spend in percent of the limit, 2 decimal places.
    pub percent: Decimal,
    /// `ok`, `warning` (a threshold below 100 % reached) or `exhausted`.
    pub state: &'static str,
    /// Spend at the end of the period at the burn rate so far
    /// ([`tollgate_contract::cost::forecast_at_burn_rate`]).
    pub forecast_usd: Decimal,
}

/// Pure: the status of `budget` with `spend` at `now`.
pub fn status_of(budget: &Budget, spend: Decimal, now: DateTime<Utc>) -> BudgetStatus {
    let (start, end) = budget.period.window(now);
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
    let forecast =
        tollgate_contract::cost::forecast_at_burn_rate(spend, at(start), at(end), now).forecast;
    let mut percent = (spend * Decimal::ONE_HUNDRED / budget.limit_usd).round_dp(2);
    percent.rescale(2);
    let evaluation = evaluate(budget, spend);
    let state = if spend >= budget.limit_usd {
        "exhausted"
    } else if evaluation.reached.is_empty() {
        "ok"
    } else {
        "warning"
    };
    // With the 12 places every amount has, whatever the operands' scales.
    let mut remaining = budget.limit_usd - spend;
    remaining.rescale(12);
    BudgetStatus {
        subject: budget.subject(),
        budget: budget.clone(),
        period_start: start,
        period_end: end,
        spend_usd: spend,
        remaining_usd: remaining,
        percent,
        state,
        forecast_usd: forecast,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn spend_reads_the_smallest_rollup_with_the_subject() {
        let from = |kind| {
            let sql = spend_sql(kind);
            let table = sql.split(" FROM ").nth(1).unwrap();
            table.split_whitespace().next().unwrap().to_string()
        };
        assert_eq!(from(SubjectKind::Org), "cost_daily_by_team");
        assert_eq!(from(SubjectKind::Team), "cost_daily_by_team");
        assert_eq!(from(SubjectKind::User), "cost_daily_by_user");
        assert_eq!(from(SubjectKind::Key), "cost_daily_by_key");
    }

    fn budget(hard: bool) -> Budget {
        Budget {
            id: 1,
            subject_kind: SubjectKind::Team,
            subject_id: "search".into(),
            period: Period::Monthly,
            limit_usd: "10".parse().unwrap(),
            hard,
            thresholds: vec![80, 50, 100],
            org_id: Some("acme".into()),
        }
    }

    #[test]
    fn spend_of_a_budget_is_its_orgs_or_every_orgs() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let spend = Spend::new([
            (("acme".to_string(), "search".to_string()), d("1.5")),
            (("globex".to_string(), "search".to_string()), d("2")),
            (("acme".to_string(), "other".to_string()), d("7")),
        ]);
        let mut b = budget(true);
        assert_eq!(spend.of(&b), d("1.5"));
        assert_eq!(b.subject(), "budget/in/acme/team/search");
        b.org_id = Some("initech".into());
        assert_eq!(spend.of(&b), Decimal::ZERO);
        b.org_id = None;
        assert_eq!(spend.of(&b), d("3.5"));
        assert_eq!(b.subject(), "budget/team/search");
    }

    #[test]
    fn thresholds_and_deny() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            evaluate(&budget(true), d("4.99")).reached,
            Vec::<i32>::new()
        );
        assert_eq!(evaluate(&budget(true), d("5")).reached, vec![50]);
        assert_eq!(
            evaluate(&budget(true), d("9.999999999999")).reached,
            vec![50, 80]
        );
        let full = evaluate(&budget(true), d("10"));
        assert_eq!((full.reached, full.deny), (vec![50, 80, 100], true));
        assert!(
            !evaluate(&budget(false), d("11")).deny,
            "soft budgets never deny"
        );
    }

    #[test]
    fn status_and_forecast() {
        let now = Utc.with_ymd_and_hms(2026, 3, 11, 0, 0, 0).unwrap(); // 10 of 31 days
        let s = status_of(&budget(true), "5".parse().unwrap(), now);
        assert_eq!(s.state, "warning");
        assert_eq!(s.percent.to_string(), "50.00");
        assert_eq!(s.forecast_usd, "15.5".parse::<Decimal>().unwrap());
        assert_eq!(
            status_of(&budget(true), "10".parse().unwrap(), now).state,
            "exhausted"
        );
        assert_eq!(
            status_of(&budget(true), "1".parse().unwrap(), now).state,
            "ok"
        );
    }
}
