//! `tollgate budgets`: set and list spend budgets (PostgreSQL). The
//! processor's budget watcher enforces them (see `docs/cost.md`).

use anyhow::Context;
use rust_decimal::Decimal;
use tollgate_processors::cost::budgets::{BudgetStore, Period, SubjectKind};

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
