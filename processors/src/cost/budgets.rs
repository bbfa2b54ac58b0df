//! Budgets: the PostgreSQL store (`budgets`, `budget_alerts`), the pure
//! evaluation of a budget against the spend of its period, and the
//! [`BudgetWatcher`] that `tollgate process` runs: it reads each budget
//! subject's spend for the running day / month from the `cost_daily` rollup,
//! publishes `deny` (hard budget exhausted) and `allow` decisions on the
//! compacted `tollgate.decisions` topic keyed `budget/<kind>/<id>`, and
//! warns once per threshold and period with an `admin.budget.threshold`
//! event on the events topic.
//!
//! Spend comes from the rollup, which every processor's inserts feed, so an
//! org whose teams land on different partitions (and processors) is judged
//! on its whole spend. See `docs/cost.md` for the bound on overrun.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use clickhouse::{Client, Row};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_ingest::config::KafkaConfig;
use tollgate_ingest::producer::EventProducer;

use super::admin::admin_event;
use super::fold::from_mantissa;

/// Kind of the event recording a budget change.
pub const KIND_BUDGET_SET: &str = "admin.budget.set";
/// Kind of the warning event.
pub const KIND_BUDGET_THRESHOLD: &str = "admin.budget.threshold";
/// How often the watcher reads spend.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

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
}

impl Budget {
    /// The decision subject (`budget/team/<id>`, see `docs/decisions.md`).
    pub fn subject(&self) -> String {
        format!("budget/{}/{}", self.subject_kind.name(), self.subject_id)
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

/// The decision record for `budget` (see `docs/decisions.md`).
pub fn decision(
    budget: &Budget,
    spend: Decimal,
    deny: bool,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let (_, end) = budget.period.window(now);
    let end_at = end.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
    if deny {
        json!({
            "subject": budget.subject(),
            "action": "deny",
            "reason": format!(
                "{} budget of {} USD for {} {} exhausted (spent {} USD)",
                budget.period.name(), budget.limit_usd, budget.subject_kind.name(), budget.subject_id, spend.round_dp(6)
            ),
            "retry_after_secs": (end_at - now).num_seconds().max(1),
            "valid_until": end_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    } else {
        json!({ "subject": budget.subject(), "action": "allow", "reason": "within budget" })
    }
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
        })
    }
}

/// Budgets in PostgreSQL. Creating, replacing and deleting (each with its
/// admin event in the outbox) is in `super::budget_admin`.
#[derive(Clone)]
pub struct BudgetStore {
    pool: PgPool,
}

impl BudgetStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn all(&self) -> sqlx::Result<Vec<Budget>> {
        let rows: Vec<BudgetRow> = sqlx::query_as(
            "SELECT id, subject_kind, subject_id, period, limit_usd, enforcement, thresholds FROM budgets ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(BudgetRow::into_budget)
            .collect())
    }

    /// The pool, for budget administration (`super::budget_admin`).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Record that `threshold` was reached in the period starting
    /// `period_start`; `false` when it was recorded before (by this or
    /// another processor).
    pub async fn claim_alert(
        &self,
        budget_id: i64,
        period_start: NaiveDate,
        threshold: i32,
        spend: Decimal,
    ) -> sqlx::Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO budget_alerts (budget_id, period_start, threshold, spend_usd) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(budget_id)
        .bind(period_start)
        .bind(threshold)
        .bind(spend)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }
}

/// Spend per subject of one kind over UTC days `[from, to)`.
fn spend_sql(kind: SubjectKind) -> String {
    format!(
        "SELECT toString({}) AS subject, sum(cost) AS s_cost FROM cost_daily \
         WHERE day >= toDate(?) AND day < toDate(?) GROUP BY subject",
        kind.column()
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
    subject: String,
    s_cost: i128,
}

pub(crate) async fn spend(
    client: &Client,
    kind: SubjectKind,
    (from, to): (NaiveDate, NaiveDate),
) -> clickhouse::error::Result<HashMap<String, Decimal>> {
    let rows: Vec<SpendRow> = client
        .query(&spend_sql(kind))
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.subject, from_mantissa(r.s_cost)?)))
        .collect())
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
    /// Spend in percent of the limit, 2 decimal places.
    pub percent: Decimal,
    /// `ok`, `warning` (a threshold below 100 % reached) or `exhausted`.
    pub state: &'static str,
    /// Spend at the end of the period at the burn rate so far (elapsed
    /// time counted as at least one hour).
    pub forecast_usd: Decimal,
}

/// Pure: the status of `budget` with `spend` at `now`.
pub fn status_of(budget: &Budget, spend: Decimal, now: DateTime<Utc>) -> BudgetStatus {
    let (start, end) = budget.period.window(now);
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
    let total = (at(end) - at(start)).num_seconds().max(1);
    let elapsed = (now - at(start)).num_seconds().clamp(3_600, total);
    let forecast = super::fold::round(spend * Decimal::from(total) / Decimal::from(elapsed));
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
    BudgetStatus {
        subject: budget.subject(),
        budget: budget.clone(),
        period_start: start,
        period_end: end,
        spend_usd: spend,
        percent,
        state,
        forecast_usd: forecast,
    }
}

/// Budget statuses as CSV (the budgets page shows the same strings).
pub fn to_csv(statuses: &[BudgetStatus]) -> String {
    let mut out = String::from(
        "subject,period,enforcement,limit_usd,spend_usd,percent,state,forecast_usd,period_start,period_end\n",
    );
    for s in statuses {
        let fields = [
            s.subject.clone(),
            s.budget.period.name().to_string(),
            if s.budget.hard { "hard" } else { "soft" }.to_string(),
            s.budget.limit_usd.to_string(),
            s.spend_usd.to_string(),
            s.percent.to_string(),
            s.state.to_string(),
            s.forecast_usd.to_string(),
            s.period_start.to_string(),
            s.period_end.to_string(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| crate::read_models::cost::csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// Publishes budget decisions and threshold warnings.
pub struct BudgetWatcher {
    pub store: BudgetStore,
    pub client: Client,
    pub decisions: FutureProducer,
    pub decisions_topic: String,
    pub events: EventProducer,
    /// The action last published per subject, to publish only changes.
    published: HashMap<String, bool>,
}

impl BudgetWatcher {
    pub fn new(
        store: BudgetStore,
        client: Client,
        kafka: &KafkaConfig,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let decisions: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("client.id", "tollgate-budgets")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()?;
        let events = EventProducer::new(kafka)
            .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
        Ok(Self {
            store,
            client,
            decisions,
            decisions_topic: kafka.decisions_topic.clone(),
            events,
            published: HashMap::new(),
        })
    }

    /// Check every budget every [`WATCH_EVERY`] until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(err) = self.check(Utc::now()).await {
                        tracing::warn!(%err, "budget check failed; retrying");
                    }
                }
            }
        }
    }

    /// One pass over every budget.
    pub async fn check(&mut self, now: DateTime<Utc>) -> Result<(), String> {
        let budgets = self
            .store
            .all()
            .await
            .map_err(|e| format!("postgres: {e}"))?;
        let mut spends: HashMap<(SubjectKind, Period), HashMap<String, Decimal>> = HashMap::new();
        for b in &budgets {
            let key = (b.subject_kind, b.period);
            if let std::collections::hash_map::Entry::Vacant(slot) = spends.entry(key) {
                let s = spend(&self.client, b.subject_kind, b.period.window(now))
                    .await
                    .map_err(|e| format!("clickhouse: {e}"))?;
                slot.insert(s);
            }
        }
        for b in &budgets {
            let spent = spends
                .get(&(b.subject_kind, b.period))
                .and_then(|m| m.get(&b.subject_id))
                .copied()
                .unwrap_or_default();
            let evaluation = evaluate(b, spent);
            let (period_start, _) = b.period.window(now);
            for t in &evaluation.reached {
                let claimed = self
                    .store
                    .claim_alert(b.id, period_start, *t, spent)
                    .await
                    .map_err(|e| format!("postgres: {e}"))?;
                if claimed {
                    let event = admin_event(
                        KIND_BUDGET_THRESHOLD,
                        "budgets",
                        json!({
                            "budget_id": b.id,
                            "subject": b.subject(),
                            "period": b.period.name(),
                            "period_start": period_start,
                            "threshold_percent": t,
                            "limit_usd": b.limit_usd,
                            "spend_usd": spent,
                            "enforcement": if b.hard { "hard" } else { "soft" },
                        }),
                    );
                    tracing::warn!(subject = %b.subject(), threshold = t, spend = %spent, limit = %b.limit_usd, "budget threshold reached");
                    if let Some(Err(err)) = self
                        .events
                        .send_batch(std::slice::from_ref(&event))
                        .await
                        .pop()
                    {
                        tracing::warn!(reason = %err.reason, "budget warning event not produced");
                    }
                }
            }
            if !b.hard {
                continue;
            }
            let subject = b.subject();
            if self.published.get(&subject) == Some(&evaluation.deny) {
                continue;
            }
            let record = decision(b, spent, evaluation.deny, now);
            let payload = record.to_string();
            self.decisions
                .send(
                    FutureRecord::to(&self.decisions_topic)
                        .key(&subject)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| format!("kafka: decision not published: {e}"))?;
            tracing::info!(%subject, deny = evaluation.deny, spend = %spent, "budget decision published");
            self.published.insert(subject, evaluation.deny);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn budget(hard: bool) -> Budget {
        Budget {
            id: 1,
            subject_kind: SubjectKind::Team,
            subject_id: "search".into(),
            period: Period::Monthly,
            limit_usd: "10".parse().unwrap(),
            hard,
            thresholds: vec![80, 50, 100],
        }
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

    #[test]
    fn decision_record() {
        let now = Utc.with_ymd_and_hms(2026, 3, 31, 23, 0, 0).unwrap();
        let r = decision(&budget(true), "10.5".parse().unwrap(), true, now);
        assert_eq!(r["subject"], "budget/team/search");
        assert_eq!(r["action"], "deny");
        assert_eq!(r["valid_until"], "2026-04-01T00:00:00Z");
        assert_eq!(r["retry_after_secs"], 3600);
        assert_eq!(Period::Daily.window(now).1.to_string(), "2026-04-01");
    }
}
