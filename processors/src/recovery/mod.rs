//! The recovery learner: per failure (provider, model and signature of a
//! call's first failed attempt), which recovery strategy gets calls
//! through, published as `recovery/<provider>/<model>/<signature>` records
//! on the compacted decisions topic for the proxy to order its retries and
//! fallbacks by. It runs with the calls fold (started beside it, like the
//! budget watcher), every `processor.recovery.every_ms`:
//!
//! 1. read `error_recovery_minute` over the last
//!    `processor.recovery.window_secs` ([`TALLIES_SQL`]);
//! 2. rank each failure's strategies ([`rank::rank`]: Wilson lower bound,
//!    at least `processor.recovery.min_samples` attempts);
//! 3. publish a failure's record when its order changed since this
//!    learner last published it, and a tombstone when it has no strategy
//!    left that qualifies.

pub mod rank;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tollgate_contract::decisions::{
    recovery_subject, Action, Decision, RankedStrategy, RecoveryPlan,
};
use tollgate_contract::signature::SignatureId;
use tollgate_contract::Strategy;
use tracing::{info, warn};

use crate::clickhouse::within;
use crate::config::RecoveryConfig;
use crate::decisions::DecisionPublisher;
use crate::error::{Error, Result};
use crate::folds::FoldContext;
use rank::{order_of, rank, Tally};

/// Every strategy's record since `?` (epoch seconds).
pub const TALLIES_SQL: &str =
    "SELECT from_provider, from_model, from_signature, strategy, provider, model, \
     sum(attempts) AS n_attempts, sum(successes) AS n_successes, sum(wait_ms) AS total_wait \
     FROM error_recovery_minute WHERE minute >= toDateTime(?) \
     GROUP BY from_provider, from_model, from_signature, strategy, provider, model";

#[derive(Debug, Row, Deserialize)]
struct TallyRow {
    from_provider: String,
    from_model: String,
    from_signature: u64,
    strategy: String,
    provider: String,
    model: String,
    n_attempts: u64,
    n_successes: u64,
    total_wait: u64,
}

/// The decision for one failure's ranked strategies (action `allow`: a
/// plan orders what the proxy may try, it never refuses a call).
pub fn plan_record(
    (provider, model, signature): &rank::PlanKey,
    order: Vec<RankedStrategy>,
    now: DateTime<Utc>,
) -> Decision {
    let signature = SignatureId(*signature);
    let reason = match order.first() {
        Some(best) => format!(
            "after {signature} on {provider}/{model}: {} to {}/{} first ({} of {} succeeded)",
            best.strategy.as_str(),
            best.provider,
            best.model,
            best.successes,
            best.attempts
        ),
        None => String::new(),
    };
    Decision {
        subject: recovery_subject(provider, model, signature),
        action: Action::Allow,
        reason,
        retry_after_secs: None,
        reroute_to: None,
        valid_until: None,
        budget: None,
        recovery: Some(RecoveryPlan {
            signature,
            provider: provider.clone(),
            model: model.clone(),
            order,
            as_of: now,
        }),
        breaker: None,
    }
}

/// The learner of one processor.
pub struct RecoveryLearner {
    client: Client,
    /// `clickhouse.query_timeout_secs` of its reads.
    query_timeout: Option<Duration>,
    decisions: DecisionPublisher,
    config: RecoveryConfig,
    /// Subject -> the order last published by this learner.
    published: HashMap<String, Vec<(Strategy, String, String)>>,
}

impl RecoveryLearner {
    pub fn new(
        client: Client,
        kafka: &tollgate_control::config::KafkaConfig,
        config: &RecoveryConfig,
    ) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let decisions = DecisionPublisher::new(kafka, "tollgate-recovery")
            .map_err(|e| Error::setup("cannot create the recovery decision producer", e))?;
        Ok(Self {
            client,
            query_timeout: None,
            decisions,
            config: config.clone(),
            published: HashMap::new(),
        })
    }

    /// Each read waits at most `limit` (`clickhouse.query_timeout_secs`).
    pub fn queries_timing_out(mut self, limit: Option<Duration>) -> Self {
        self.query_timeout = limit;
        self
    }

    /// Start the learner of `context` in the background, until shutdown.
    pub fn start(context: &FoldContext) -> Result<()> {
        let learner = Self::new(
            tollgate_control::clickhouse::client(&context.clickhouse),
            &context.kafka,
            &context.processor.recovery,
        )?
        .queries_timing_out(context.clickhouse.query_timeout());
        tokio::spawn(learner.run(context.shutdown.clone()));
        Ok(())
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.config.every_ms);
        loop {
            if let Err(err) = self.tick(Utc::now()).await {
                warn!(%err, "recovery learner pass failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One pass: read, rank, publish what changed.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> std::result::Result<(), String> {
        let window = i64::try_from(self.config.window_secs).unwrap_or(i64::MAX);
        let since = u32::try_from(now.timestamp().saturating_sub(window).max(0)).unwrap_or(0);
        let rows: Vec<TallyRow> = within(
            self.query_timeout,
            self.client.query(TALLIES_SQL).bind(since).fetch_all(),
        )
        .await
        .map_err(|e| format!("clickhouse: reading error_recovery_minute: {e}"))?;
        let tallies: Vec<Tally> = rows
            .into_iter()
            .filter_map(|r| {
                // `first` never recovers from anything; an unknown name is
                // a newer writer's, not ours to rank.
                let strategy: Strategy = r.strategy.parse().ok()?;
                (strategy != Strategy::First).then_some(Tally {
                    from_provider: r.from_provider,
                    from_model: r.from_model,
                    from_signature: r.from_signature,
                    strategy,
                    provider: r.provider,
                    model: r.model,
                    attempts: r.n_attempts,
                    successes: r.n_successes,
                    wait_ms: r.total_wait,
                })
            })
            .collect();
        let plans = rank(&tallies, self.config.min_samples);
        let mut current: BTreeMap<String, ()> = BTreeMap::new();
        for (key, order) in plans {
            let identity = order_of(&order);
            let record = plan_record(&key, order, now);
            current.insert(record.subject.clone(), ());
            if self.published.get(&record.subject) == Some(&identity) {
                continue;
            }
            let payload = serde_json::to_string(&record).map_err(|e| e.to_string())?;
            self.decisions
                .publish(&record.subject, Some(&payload))
                .await?;
            info!(subject = %record.subject, reason = %record.reason, "recovery plan published");
            self.published.insert(record.subject, identity);
        }
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|s| !current.contains_key(*s))
            .cloned()
            .collect();
        for subject in gone {
            self.decisions.publish(&subject, None).await?;
            info!(%subject, "recovery plan withdrawn (no strategy with enough samples in the window)");
            self.published.remove(&subject);
        }
        Ok(())
    }
}

/// The statements, with sample values, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    vec![(
        "recovery.tallies".into(),
        Client::default()
            .query(TALLIES_SQL)
            .bind(1_764_633_600u32)
            .sql_display()
            .to_string(),
    )]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_an_allow_record_keyed_by_its_subject() {
        let key = ("anthropic".to_string(), "claude-x".to_string(), 0xab);
        let order = rank(
            &[Tally {
                from_provider: "anthropic".into(),
                from_model: "claude-x".into(),
                from_signature: 0xab,
                strategy: Strategy::FallbackProvider,
                provider: "openai".into(),
                model: "gpt-4o".into(),
                attempts: 25,
                successes: 24,
                wait_ms: 2500,
            }],
            20,
        )
        .remove(&key)
        .unwrap();
        let now = DateTime::<Utc>::from_timestamp(1_764_633_600, 0).unwrap();
        let record = plan_record(&key, order, now);
        assert_eq!(
            record.subject,
            "recovery/anthropic/claude-x/00000000000000ab"
        );
        assert_eq!(record.action, Action::Allow);
        assert!(!record.in_force(now), "a plan never gates a call");
        let wire = serde_json::to_value(&record).unwrap();
        assert_eq!(wire["recovery"]["signature"], "00000000000000ab");
        assert_eq!(
            wire["recovery"]["order"][0]["strategy"],
            "fallback_provider"
        );
        assert_eq!(wire["recovery"]["order"][0]["model"], "gpt-4o");
        assert_eq!(wire["recovery"]["order"][0]["mean_wait_ms"], 100);
        let back: Decision = serde_json::from_value(wire).unwrap();
        assert_eq!(back, record);
    }
}
