//! `tollgate budgets`: set, delete and list spend budgets (PostgreSQL; each
//! change is also an `admin.budget.set` / `admin.budget.deleted` event,
//! through the outbox). The processor's budget watcher enforces them (see
//! `docs/cost.md`).

use tollgate_control::budgets::admin::{budget_json, BudgetSpec, InvalidBudget};
use tollgate_control::budgets::{BudgetStore, SubjectKind};
use tollgate_control::keys::KeyStore;

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
        /// The org the team, user or key belongs to: the budget judges that
        /// org's calls of it. Without it, a team or user budget judges the
        /// id's calls in every org (ids are per org, so another org's team
        /// of the same name counts too); a key budget is its key's org's.
        /// Implied for `--kind org`.
        #[arg(long)]
        org: Option<String>,
        /// `daily` or `monthly` (UTC).
        #[arg(long, default_value = "monthly")]
        period: String,
        /// Limit in USD (exact decimal, e.g. 500 or 12.5).
        #[arg(long, allow_hyphen_values = true)]
        limit: String,
        /// Warn only; without it the budget is hard (calls are denied once
        /// it is exhausted).
        #[arg(long)]
        soft: bool,
        /// Warning thresholds in percent of the limit.
        #[arg(long, value_delimiter = ',', default_value = "50,80,100",
              allow_negative_numbers = true, value_parser = whole_percent)]
        thresholds: Vec<i64>,
    },
    /// Delete a budget (see `budgets list` for ids).
    Delete {
        /// The budget's id, the first column of `budgets list`.
        #[arg(long)]
        id: i64,
    },
    /// List budgets.
    List {
        /// One JSON object per line (the admin API's shape).
        #[arg(long)]
        json: bool,
    },
}

/// One `--thresholds` value: a whole percent (its range is the budget
/// rule's to check).
fn whole_percent(text: &str) -> Result<i64, String> {
    text.trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{text}` is not a whole percent of the limit"))
}

/// The flag that carries an API body field.
fn flag(err: &InvalidBudget) -> &str {
    match err.field.as_str() {
        "subject_kind" => "--kind",
        "subject_id" => "--id",
        "limit_usd" => "--limit",
        "enforcement" => "--soft",
        "thresholds" => "--thresholds",
        "period" => "--period",
        other => other,
    }
}

pub async fn run(command: BudgetsCommand, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let store = BudgetStore::new(pool.clone());
    match command {
        BudgetsCommand::Set {
            kind,
            id,
            org,
            period,
            limit,
            soft,
            thresholds,
        } => {
            let mut spec = BudgetSpec::parse(
                &kind,
                &id,
                &period,
                &limit,
                if soft { "soft" } else { "hard" },
                Some(&thresholds),
            )
            .map_err(|e| anyhow::anyhow!("{}: {}", flag(&e), e.reason))?;
            if let Some(org) = &org {
                spec = spec
                    .in_org(org)
                    .map_err(|e| anyhow::anyhow!("--org: {}", e.reason))?;
            }
            let spec = spec
                .naming_key(&KeyStore::new(pool.clone()))
                .await?
                .map_err(|e| anyhow::anyhow!("{}: {}", flag(&e), e.reason))?;
            // The budget and its admin.budget.set event commit together.
            let set = store.set(&spec, "cli").await?;
            let b = &set.budget;
            println!(
                "budget {}: {} {} {}{} {} USD ({}){}",
                b.id,
                b.period.name(),
                b.subject_kind.name(),
                b.subject_id,
                match (&b.org_id, b.subject_kind) {
                    (_, SubjectKind::Org) => String::new(),
                    (Some(org), _) => format!(" of org {org}"),
                    (None, _) => " (in every org)".to_string(),
                },
                b.limit_usd,
                if b.hard { "hard" } else { "soft" },
                if set.previous.is_some() {
                    " (replaced)"
                } else {
                    ""
                }
            );
            super::outbox::publish_now(config, &pool, &[set.event]).await;
        }
        BudgetsCommand::Delete { id } => {
            let Some(deleted) = store.delete(id, "cli").await? else {
                anyhow::bail!("--id {id}: no such budget (see `tollgate budgets list`)");
            };
            println!(
                "budget {id} deleted: {}",
                serde_json::to_string(&budget_json(&deleted.budget))?
            );
            super::outbox::publish_now(config, &pool, &[deleted.event]).await;
        }
        BudgetsCommand::List { json } => {
            for b in store.all().await? {
                if json {
                    println!("{}", serde_json::to_string(&budget_json(&b))?);
                    continue;
                }
                println!(
                    "{:>4}  {:<16} {:<8} {:<24} {:<8} {:>14} USD  {}  thresholds {:?}",
                    b.id,
                    b.org_id.as_deref().unwrap_or("(every org)"),
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
