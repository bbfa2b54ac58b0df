//! `tollgate budgets`: set and list spend budgets (PostgreSQL; each change is
//! also an `admin.budget.set` event). The processor's budget watcher
//! enforces them (see `docs/cost.md`).

use anyhow::Context;
use rust_decimal::Decimal;
use tollgate_ingest::producer::EventProducer;
use tollgate_processors::cost::admin::admin_event;
use tollgate_processors::cost::budgets::{BudgetStore, Period, SubjectKind, KIND_BUDGET_SET};

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum BudgetsCommand {
    /// Create or replace the budget of one subject and period.
    Set {
        /// `org`, `team`, `user` or `key`.
        #[arg(long)]
        kind: String,
        /// The org, team, user or API-key id.
        #[arg(long)]
        id: String,
        /// `daily` or `monthly` (UTC).
        #[arg(long, default_value = "monthly")]
        period: String,
        /// Limit in USD (exact decimal).
        #[arg(long)]
        limit: Decimal,
        /// Warn only; without it the budget is hard (calls are denied once
        /// it is exhausted).
        #[arg(long)]
        soft: bool,
        /// Warning thresholds in percent of the limit.
        #[arg(long, value_delimiter = ',', default_value = "50,80,100")]
        thresholds: Vec<i32>,
    },
    /// List budgets.
    List,
}

pub async fn run(command: BudgetsCommand, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_ingest::postgres::connect(&config.postgres).await?;
    let store = BudgetStore::new(pool);
    match command {
        BudgetsCommand::Set {
            kind,
            id,
            period,
            limit,
            soft,
            thresholds,
        } => {
            let kind = SubjectKind::parse(&kind)
                .with_context(|| format!("--kind {kind}: expected org, team, user or key"))?;
            let period = match period.as_str() {
                "daily" => Period::Daily,
                "monthly" => Period::Monthly,
                other => anyhow::bail!("--period {other}: expected daily or monthly"),
            };
            if limit <= Decimal::ZERO {
                anyhow::bail!("--limit must be positive");
            }
            if thresholds.iter().any(|t| *t <= 0 || *t > 1000) {
                anyhow::bail!("--thresholds are percentages between 1 and 1000");
            }
            let budget_id = store
                .set(kind, &id, period, limit, !soft, &thresholds)
                .await?;
            // A control-plane change: recorded on the events topic (and so in
            // the audit chain) like price changes.
            let event = admin_event(
                KIND_BUDGET_SET,
                "cli",
                serde_json::json!({
                    "budget_id": budget_id,
                    "subject": format!("budget/{}/{id}", kind.name()),
                    "period": period.name(),
                    "limit_usd": limit,
                    "enforcement": if soft { "soft" } else { "hard" },
                    "thresholds": thresholds,
                }),
            );
            let producer = EventProducer::new(&config.kafka)?;
            if let Some(Err(err)) = producer
                .send_batch(std::slice::from_ref(&event))
                .await
                .pop()
            {
                anyhow::bail!(
                    "budget {budget_id} is stored, but its admin event was not produced: {}",
                    err.reason
                );
            }
            println!(
                "budget {budget_id}: {} {} {id} {limit} USD ({})",
                period.name(),
                kind.name(),
                if soft { "soft" } else { "hard" }
            );
        }
        BudgetsCommand::List => {
            for b in store.all().await? {
                println!(
                    "{:>4}  {:<8} {:<24} {:<8} {:>14} USD  {}  thresholds {:?}",
                    b.id,
                    b.subject_kind.name(),
                    b.subject_id,
                    b.period.name(),
                    b.limit_usd,
                    if b.hard { "hard" } else { "soft" },
                    b.thresholds
                );
            }
        }
    }
    Ok(())
}
