//! `tollgate rollups check [--from DAY] [--to DAY] [--repair]`: compare
//! every cost rollup with the facts it is folded from (`calls`,
//! `cost_adjustments`) over a day range, and with `--repair` insert the
//! difference so they agree (`tollgate_processors::cost::rollup_check`).
//! Exits 1 when a rollup disagrees and was not repaired.

use anyhow::Context;
use chrono::{Days, NaiveDate, Utc};
use tollgate_control::clickhouse::client;
use tollgate_processors::cost::rollup_check::{self, Cells};
use tollgate_processors::group_members;
use tollgate_processors::insert_fence::sync_replica_sql;

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum RollupsCommand {
    /// Compare the cost rollups with the calls and adjustments they sum.
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// First day checked (UTC, `YYYY-MM-DD`); default: 31 days ago.
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Day after the last one checked (UTC, exclusive); default: tomorrow.
    #[arg(long)]
    to: Option<NaiveDate>,
    /// Insert the difference into each rollup that disagrees. Refused while
    /// a processor runs (an insert half visible would be counted twice);
    /// do not run `tollgate reprice` meanwhile either.
    #[arg(long)]
    repair: bool,
}

pub async fn run(command: RollupsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        RollupsCommand::Check(args) => check(args, config).await,
    }
}

async fn check(args: CheckArgs, config: &Config) -> anyhow::Result<()> {
    let today = Utc::now().date_naive();
    let from = args
        .from
        .unwrap_or_else(|| today.checked_sub_days(Days::new(31)).unwrap_or(today));
    let to = args
        .to
        .unwrap_or_else(|| today.checked_add_days(Days::new(1)).unwrap_or(today));
    anyhow::ensure!(from < to, "--from {from} must come before --to {to}");
    if args.repair {
        let running = group_members::running(&config.kafka, &super::migrate::fold_groups(config))
            .await
            .context("cannot tell whether processors are running before a repair")?;
        anyhow::ensure!(
            running.is_empty(),
            "not repairing while processors run (consumer group {}): an insert they are making \
             could be counted twice. Stop every `tollgate process`, repair, start them again \
             (their events wait in Kafka).",
            running.join("; consumer group ")
        );
    }
    let ch = &config.clickhouse;
    let client = client(ch);
    if !ch.cluster.is_empty() {
        // This replica must hold every part the others wrote before its
        // sums stand for the cluster's.
        for table in ["calls", "cost_adjustments"]
            .into_iter()
            .chain(rollup_check::checked().map(|r| r.table))
        {
            client
                .query(&sync_replica_sql(&ch.database, table))
                .execute()
                .await
                .with_context(|| format!("cannot sync this replica's {table} at {}", ch.url))?;
        }
    }
    let (from, to) = (from.to_string(), to.to_string());
    println!(
        "rollups: cost rollups against calls and cost_adjustments, days [{from}, {to}) (database {} at {})",
        ch.database, ch.url
    );
    let mut disagreeing = Vec::new();
    for rollup in rollup_check::checked() {
        let found = rollup_check::check(&client, rollup, Cells::All, &from, &to)
            .await
            .with_context(|| format!("cannot compare {} with the facts", rollup.table))?;
        if found.cells == 0 {
            println!("rollups: {} agrees with the facts", rollup.table);
            continue;
        }
        println!(
            "rollups: {} disagrees in {} cell(s): the facts have {} call(s) and {} USD more than it",
            rollup.table, found.cells, found.calls, found.cost
        );
        if !args.repair {
            disagreeing.push(rollup.table);
            continue;
        }
        rollup_check::repair(&client, rollup, Cells::All, &from, &to)
            .await
            .with_context(|| format!("cannot repair {}", rollup.table))?;
        let after = rollup_check::check(&client, rollup, Cells::All, &from, &to).await?;
        anyhow::ensure!(
            after.cells == 0,
            "{} still disagrees in {} cell(s) after the repair (did something insert meanwhile?)",
            rollup.table,
            after.cells
        );
        println!(
            "rollups: {} repaired: {} cell(s) corrected, it agrees with the facts",
            rollup.table, found.cells
        );
    }
    anyhow::ensure!(
        disagreeing.is_empty(),
        "{} disagree(s) with the facts; `tollgate rollups check --repair` with the same days \
         corrects them (docs/cost.md, \"Checking the rollups\")",
        disagreeing.join(", ")
    );
    Ok(())
}
