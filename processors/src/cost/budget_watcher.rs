//! The budget watcher `tollgate process` runs next to the calls fold. After
//! every insert of the fold (and at least every [`WATCH_EVERY`]) it:
//!
//! 1. reads the fold progress ([`crate::progress::folded`]): the Kafka
//!    positions whose events are in the rollup;
//! 2. then reads each budget subject's spend for its running day / month
//!    from `cost_daily` (so that spend includes at least those events);
//! 3. publishes, per subject with a hard budget, one record on the compacted
//!    decisions topic keyed `budget/<kind>/<id>`: `deny` when any of its hard
//!    budgets is exhausted, else `allow`, both carrying the budget state
//!    (periods, limits, spend and the positions of step 1) that proxies
//!    reserve against (`docs/cost.md`, "Reserve and settle");
//! 4. warns once per budget, threshold and period with an
//!    `admin.budget.threshold` event, claimed and put in the admin outbox in
//!    one transaction (the outbox relay puts it on the events topic).
//!
//! A subject whose hard budgets are all gone gets a tombstone: subjects this
//! watcher published and no longer finds, and (so that a restarted watcher
//! lifts them too) subjects whose hard budget was deleted this month.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clickhouse::Client;
use rust_decimal::Decimal;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tollgate_contract::decisions::{
    budget_subject_words, Action, BudgetPeriod, BudgetState, Decision,
};
use tollgate_control::config::KafkaConfig;

use crate::clickhouse::within;
use crate::decisions::DecisionPublisher;
use crate::progress::{folded, Progress};
use tollgate_contract::admin::admin_event;
use tollgate_contract::admin::KIND_BUDGET_THRESHOLD;
use tollgate_control::budgets::admin::released_subjects;
use tollgate_control::budgets::{evaluate, spend, Budget, BudgetStore, Period, Spend, SubjectKind};

/// The longest the watcher waits between two reads of spend.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The shortest gap between two reads (inserts can come faster).
pub const MIN_GAP: Duration = Duration::from_millis(100);
/// A subject whose spend did not change is re-published at most this often
/// when the fold progressed, so proxies drop charges the spend now includes.
pub const REFRESH_UNCHANGED: Duration = Duration::from_secs(1);

/// The record for `subject` from its hard budgets with their spend.
pub fn subject_record(
    subject: &str,
    hard: &[(&Budget, Decimal)],
    folded: &BTreeMap<i32, i64>,
    now: DateTime<Utc>,
) -> Decision {
    let periods: Vec<BudgetPeriod> = hard
        .iter()
        .map(|(b, spent)| {
            let (start, end) = b.period.bounds(now);
            BudgetPeriod {
                period: b.period.name().to_string(),
                start,
                end,
                limit_usd: b.limit_usd,
                spent_usd: *spent,
            }
        })
        .collect();
    let exhausted: Vec<&BudgetPeriod> = periods
        .iter()
        .filter(|p| p.spent_usd >= p.limit_usd)
        .collect();
    let budget = Some(BudgetState {
        periods: periods.clone(),
        folded: folded.clone(),
        as_of: now,
    });
    // Deny until the latest end among the exhausted periods.
    match exhausted.iter().max_by_key(|p| p.end) {
        Some(until) => {
            let first = exhausted.first().copied().unwrap_or(until);
            let what = budget_subject_words(subject);
            Decision {
                subject: subject.to_string(),
                action: Action::Deny,
                reason: format!(
                    "{} budget of {} USD for {} exhausted (spent {} USD)",
                    first.period,
                    first.limit_usd.normalize(),
                    what,
                    first.spent_usd.round_dp(6).normalize()
                ),
                retry_after_secs: Some(
                    u64::try_from((until.end - now).num_seconds().max(1)).unwrap_or(1),
                ),
                reroute_to: None,
                valid_until: Some(until.end),
                budget,
                recovery: None,
                breaker: None,
            }
        }
        None => Decision {
            subject: subject.to_string(),
            action: Action::Allow,
            reason: "within budget".into(),
            retry_after_secs: None,
            reroute_to: None,
            valid_until: None,
            budget,
            recovery: None,
            breaker: None,
        },
    }
}

/// What was last published for a subject.
struct Published {
    /// The record without its positions and read time.
    content: serde_json::Value,
    folded: BTreeMap<i32, i64>,
    at: Instant,
}

fn content_of(record: &Decision) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let Some(budget) = value.get_mut("budget").and_then(|b| b.as_object_mut()) {
        budget.remove("folded");
        budget.remove("as_of");
    }
    value
}

/// Publishes budget decisions and threshold warnings.
pub struct BudgetWatcher {
    pub store: BudgetStore,
    pub client: Client,
    /// `clickhouse.query_timeout_secs` of its reads: a dead connection
    /// must not stop the budgets from being enforced.
    pub query_timeout: Option<Duration>,
    pub decisions: DecisionPublisher,
    pub progress: Progress,
    published: HashMap<String, Published>,
    /// Subjects this watcher has tombstoned (not repeated every check).
    released: HashSet<String>,
}

impl BudgetWatcher {
    pub fn new(
        store: BudgetStore,
        client: Client,
        kafka: &KafkaConfig,
        progress: Progress,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            store,
            client,
            query_timeout: None,
            decisions: DecisionPublisher::new(kafka, "tollgate-budgets")?,
            progress,
            published: HashMap::new(),
            released: HashSet::new(),
        })
    }

    /// Each read waits at most `limit` (`clickhouse.query_timeout_secs`).
    pub fn queries_timing_out(mut self, limit: Option<Duration>) -> Self {
        self.query_timeout = limit;
        self
    }

    /// Check after every recorded insert (at most every [`MIN_GAP`]) and at
    /// least every [`WATCH_EVERY`], until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let stored = self.progress.stored.clone();
        loop {
            if let Err(err) = self.check(Utc::now()).await {
                tracing::warn!(%err, "budget check failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(MIN_GAP) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY - MIN_GAP) => {}
                () = stored.notified() => {}
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
        // Positions first, spend second: the spend includes every event at
        // or below these positions (see crate::progress).
        let folded: BTreeMap<i32, i64> = within(
            self.query_timeout,
            folded(&self.client, &self.progress.topic),
        )
        .await
        .map_err(|e| format!("clickhouse: {e}"))?
        .into_iter()
        .collect();
        let mut spends: HashMap<(SubjectKind, Period), Spend> = HashMap::new();
        for b in &budgets {
            let key = (b.subject_kind, b.period);
            if let std::collections::hash_map::Entry::Vacant(slot) = spends.entry(key) {
                let s = within(
                    self.query_timeout,
                    spend(&self.client, b.subject_kind, b.period.window(now)),
                )
                .await
                .map_err(|e| format!("clickhouse: {e}"))?;
                slot.insert(s);
            }
        }
        let mut hard: BTreeMap<String, Vec<(&Budget, Decimal)>> = BTreeMap::new();
        for b in &budgets {
            let spent = spends
                .get(&(b.subject_kind, b.period))
                .map(|s| s.of(b))
                .unwrap_or_default();
            self.warn_thresholds(b, spent, now).await?;
            if b.hard {
                hard.entry(b.subject()).or_default().push((b, spent));
            }
        }
        for (subject, list) in &hard {
            let record = subject_record(subject, list, &folded, now);
            let content = content_of(&record);
            let due = match self.published.get(subject) {
                None => true,
                Some(p) => {
                    p.content != content
                        || (p.folded != folded && p.at.elapsed() >= REFRESH_UNCHANGED)
                }
            };
            if !due {
                continue;
            }
            let payload = serde_json::to_string(&record).map_err(|e| e.to_string())?;
            self.publish(subject, Some(&payload)).await?;
            if self.published.get(subject).map(|p| &p.content) != Some(&content) {
                tracing::info!(%subject, action = ?record.action, "budget decision published");
            }
            self.published.insert(
                subject.clone(),
                Published {
                    content,
                    folded: folded.clone(),
                    at: Instant::now(),
                },
            );
            self.released.remove(subject);
        }
        let (month_start, _) = Period::Monthly.bounds(now);
        let deleted = self
            .store
            .deleted_hard_subjects(month_start)
            .await
            .map_err(|e| format!("postgres: {e}"))?;
        let candidates = self.published.keys().cloned().chain(deleted);
        for subject in released_subjects(&budgets, candidates) {
            if self.released.contains(&subject) {
                continue;
            }
            self.publish(&subject, None).await?;
            tracing::info!(%subject, "no hard budget left; decision removed");
            self.published.remove(&subject);
            self.released.insert(subject);
        }
        Ok(())
    }

    async fn publish(&self, subject: &str, payload: Option<&str>) -> Result<(), String> {
        self.decisions.publish(subject, payload).await
    }

    /// Warn once per threshold reached in the running period (across
    /// processors: the first to claim it in PostgreSQL enqueues the warning
    /// in the outbox, in the same transaction).
    async fn warn_thresholds(
        &self,
        b: &Budget,
        spent: Decimal,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let evaluation = evaluate(b, spent);
        let (period_start, _) = b.period.window(now);
        for t in &evaluation.reached {
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
            let claimed = self
                .store
                .claim_alert_with_event(b.id, period_start, *t, spent, &event)
                .await
                .map_err(|e| format!("postgres: {e}"))?;
            if claimed.is_some() {
                tracing::warn!(subject = %b.subject(), threshold = t, spend = %spent, limit = %b.limit_usd, "budget threshold reached");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn budget(period: Period, limit: &str) -> Budget {
        Budget {
            id: 1,
            subject_kind: SubjectKind::Team,
            subject_id: "search".into(),
            period,
            limit_usd: limit.parse().unwrap(),
            hard: true,
            thresholds: vec![50, 80, 100],
            org_id: Some("acme".into()),
        }
    }

    #[test]
    fn record_denies_until_the_latest_exhausted_period_ends() {
        let now = Utc.with_ymd_and_hms(2026, 3, 31, 23, 0, 0).unwrap();
        let daily = budget(Period::Daily, "1");
        let monthly = budget(Period::Monthly, "10");
        let folded: BTreeMap<i32, i64> = [(0, 41), (2, 7)].into_iter().collect();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let r = subject_record(
            "budget/in/acme/team/search",
            &[(&daily, d("0.5")), (&monthly, d("10.25"))],
            &folded,
            now,
        );
        assert_eq!(r.action, Action::Deny);
        assert_eq!(
            r.reason,
            "monthly budget of 10 USD for team search of org acme exhausted (spent 10.25 USD)"
        );
        assert_eq!(
            r.valid_until,
            Some(Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(r.retry_after_secs, Some(3600));
        let wire: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(wire["budget"]["periods"][0]["limit_usd"], "1");
        assert_eq!(wire["budget"]["periods"][1]["spent_usd"], "10.25");
        assert_eq!(wire["budget"]["folded"]["2"], 7);
        let ok = subject_record("budget/team/search", &[(&daily, d("0.5"))], &folded, now);
        assert_eq!((ok.action, ok.valid_until), (Action::Allow, None));
        // The content compared for re-publishing ignores positions.
        let later: BTreeMap<i32, i64> = [(0, 99)].into_iter().collect();
        let again = subject_record("budget/team/search", &[(&daily, d("0.5"))], &later, now);
        assert_eq!(content_of(&ok), content_of(&again));
    }
}
