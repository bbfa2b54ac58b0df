//! `tollgate rollups check [--from DAY] [--to DAY] [--repair]`: compare
//! every cost rollup with the facts it is folded from (`calls`,
//! `cost_adjustments`) over a day range, and with `--repair` insert the
//! difference so they agree (`tollgate_processors::cost::rollup_check`);
//! then the latency and error-pattern tables with `calls` the same way
//! (`tollgate_processors::folds::view_repair`). Exits 1 when a table
//! disagrees and was not repaired.

use anyhow::Context;
use chrono::{Days, NaiveDate, Utc};
use tollgate_control::clickhouse::client;
use tollgate_processors::cost::rollup_check::{self, Cells};
use tollgate_processors::folds::view_repair::{self, ViewTable};
use tollgate_processors::group_members;
use tollgate_processors::insert_fence::sync_replica_sql;

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum RollupsCommand {
    /// Compare the cost rollups with the calls and adjustments they sum,
    /// and the latency and error-pattern tables with the calls.
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
            .chain(view_repair::tables().iter().map(ViewTable::table))
        {
            client
                .query(&sync_replica_sql(&ch.database, table))
                .execute()
                .await
                .with_context(|| format!("cannot sync this replica's {table} at {}", ch.url))?;
        }
    }
    let views = view_repair::Scope::range(epoch(from), epoch(to));
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
    println!("rollups: latency and error-pattern tables against calls, the same days");
    for table in view_repair::tables() {
        let name = table.table();
        let found = view_repair::check(&client, &table, &views)
            .await
            .with_context(|| format!("cannot compare {name} with calls"))?;
        let Some(found) = found else {
            println!("rollups: {name} agrees with calls");
            continue;
        };
        // A covered table's check counts keys, a counted one's cells.
        let unit = if table.idempotent() {
            "key(s)"
        } else {
            "cell(s)"
        };
        if table.idempotent() {
            println!(
                "rollups: {name} disagrees on {} {unit}: missing, or their first or last seen \
                 not covering calls",
                found.cells
            );
        } else {
            println!(
                "rollups: {name} disagrees in {} cell(s): its {} are {} short of calls",
                found.cells, found.measure, found.calls
            );
        }
        if !args.repair {
            disagreeing.push(name);
            continue;
        }
        view_repair::repair(&client, &table, &views)
            .await
            .with_context(|| format!("cannot repair {name}"))?;
        match view_repair::check(&client, &table, &views).await? {
            None => println!(
                "rollups: {name} repaired: {} {unit} corrected, it agrees with calls",
                found.cells
            ),
            // A cell that holds part of its calls: its kept values cannot
            // be completed without counting the others twice.
            Some(after) if matches!(&table, ViewTable::Refolded(t) if t.counted.is_some()) => anyhow::bail!(
                "{name}: {} cell(s) missing whole were refolded from calls; {} cell(s) hold only \
                 part of their calls, and their kept values cannot be completed without counting \
                 the rest twice (their counts are {} short)",
                found.cells - after.cells,
                after.cells,
                after.calls
            ),
            Some(after) => anyhow::bail!(
                "{name} still disagrees in {} cell(s) after the repair (did something insert meanwhile?)",
                after.cells
            ),
        }
    }
    anyhow::ensure!(
        disagreeing.is_empty(),
        "{} disagree(s) with the facts; `tollgate rollups check --repair` with the same days \
         corrects them (docs/cost.md, \"Checking the rollups\")",
        disagreeing.join(", ")
    );
    Ok(())
}

/// The first second of `day`, UTC, as epoch seconds.
fn epoch(day: NaiveDate) -> u32 {
    let seconds = day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default();
    u32::try_from(seconds).unwrap_or(u32::MAX)
}
