//! `tollgate rollups check [--from DAY] [--to DAY] [--repair]`: compare
//! every cost rollup with the facts it is folded from (`calls`,
//! `cost_adjustments`) over a day range, and with `--repair` insert the
//! difference so they agree (`tollgate_processors::cost::rollup_check`);
//! then the latency and error-pattern tables with `calls` the same way
//! (`tollgate_processors::folds::view_repair`). Exits 1 when a table
//! disagrees and was not repaired, 2 on a usage error, 3 when it could not
//! check (`super::exit_status`).

use anyhow::Context;
use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use tollgate_control::clickhouse::client;
use tollgate_processors::cost::rollup_check::{self, Cells};
use tollgate_processors::folds::view_repair::{self, ViewTable};
use tollgate_processors::group_members;
use tollgate_processors::insert_fence::sync_replica_sql;

use super::exit_status::{self, Tag};
use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum RollupsCommand {
    /// Compare the cost rollups with the calls and adjustments they sum,
    /// and the latency and error-pattern tables with the calls.
    Check(CheckArgs),
}

#[derive(clap::Args)]
#[command(after_help = exit_status::help_table(
    "and a table disagrees with the facts (and was not repaired, or still disagrees after --repair)",
    "",
))]
pub struct CheckArgs {
    /// First day checked (UTC, `YYYY-MM-DD`, or an RFC 3339 time at
    /// midnight UTC); default: 31 days ago. From 1970-01-01 to 2105-12-31,
    /// the days ClickHouse's `DateTime` holds.
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    from: Option<NaiveDate>,
    /// Day after the last one checked (UTC, exclusive; the same forms);
    /// default: tomorrow.
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    to: Option<NaiveDate>,
    /// Insert the difference into each rollup that disagrees. Refused while
    /// a processor runs (an insert half visible would be counted twice);
    /// do not run `tollgate reprice` meanwhile either.
    #[arg(long)]
    repair: bool,
}

pub async fn run(command: RollupsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        // Every error not tagged a usage error means the check could not
        // be made.
        RollupsCommand::Check(args) => check(args, config).await.not_checked(),
    }
}

/// The first and last days ClickHouse's `DateTime` holds whole (it counts
/// seconds from 1970 in 32 unsigned bits, up to 2106-02-07); a day outside
/// them would be compared as some other day, and the check would find
/// nothing to disagree about.
const FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(day) => day,
    None => NaiveDate::MIN,
};
const LAST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(2105, 12, 31) {
    Some(day) => day,
    None => NaiveDate::MAX,
};

/// `--from` and `--to`: a UTC day as `YYYY-MM-DD`, or a time that is
/// midnight UTC (RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` in UTC as
/// `verify-audit` takes it), within [`FIRST_DAY`]..=[`LAST_DAY`]. The
/// rollups hold whole days: another time of day is refused rather than
/// rounded either way.
fn parse_day(text: &str) -> Result<NaiveDate, String> {
    let text = text.trim();
    let form = "use a UTC day, YYYY-MM-DD (e.g. 2026-12-01), or an RFC 3339 time at midnight UTC \
                (2026-12-01T00:00:00Z)";
    let midnight = |time: NaiveDateTime| {
        if time.time() == NaiveTime::MIN {
            Ok(time.date())
        } else {
            Err(format!(
                "`{text}` is not midnight UTC: the rollups are checked by whole UTC days; give the \
                 day, {}",
                time.date()
            ))
        }
    };
    let looks_like_a_day = |t: &str| {
        let b = t.as_bytes();
        b.len() >= 10
            && b[4] == b'-'
            && b[7] == b'-'
            && [0, 1, 2, 3, 5, 6, 8, 9]
                .iter()
                .all(|&i| b[i].is_ascii_digit())
    };
    let day = if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        day
    } else if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        midnight(time.with_timezone(&Utc).naive_utc())?
    } else if let Some(time) = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    {
        midnight(time)?
    } else if looks_like_a_day(text)
        && (text.len() == 10 || text.as_bytes().get(10) == Some(&b'T'))
        && NaiveDate::parse_from_str(&text[..10], "%Y-%m-%d").is_err()
    {
        return Err(format!("`{text}` is not a day of the calendar; {form}"));
    } else {
        return Err(format!("`{text}` is not a day; {form}"));
    };
    if day < FIRST_DAY {
        return Err(format!(
            "`{text}` is before {FIRST_DAY}, the first day ClickHouse's DateTime holds \
             (days from {FIRST_DAY} to {LAST_DAY} can be checked)"
        ));
    }
    if day > LAST_DAY {
        return Err(format!(
            "`{text}` is after {LAST_DAY}, the last day ClickHouse's DateTime holds \
             (days from {FIRST_DAY} to {LAST_DAY} can be checked)"
        ));
    }
    Ok(day)
}

async fn check(args: CheckArgs, config: &Config) -> anyhow::Result<()> {
    let today = Utc::now().date_naive();
    let from = args
        .from
        .unwrap_or_else(|| today.checked_sub_days(Days::new(31)).unwrap_or(today));
    let to = args
        .to
        .unwrap_or_else(|| today.checked_add_days(Days::new(1)).unwrap_or(today));
    if from >= to {
        return Err(anyhow::anyhow!(
            "--from {from} must come before --to {to} (--to is the day after the last one checked)"
        ))
        .usage();
    }
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
        if after.cells != 0 {
            return Err(still_wrong(format!(
                "{} still disagrees in {} cell(s) after the repair (did something insert meanwhile?)",
                rollup.table, after.cells
            )));
        }
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
            Some(after) if matches!(&table, ViewTable::Refolded(t) if t.counted.is_some()) => {
                return Err(still_wrong(format!(
                    "{name}: {} cell(s) missing whole were refolded from calls; {} cell(s) hold \
                     only part of their calls, and their kept values cannot be completed without \
                     counting the rest twice (their counts are {} short)",
                    found.cells - after.cells,
                    after.cells,
                    after.calls
                )))
            }
            Some(after) => {
                return Err(still_wrong(format!(
                    "{name} still disagrees in {} cell(s) after the repair (did something insert \
                     meanwhile?)",
                    after.cells
                )))
            }
        }
    }
    if !disagreeing.is_empty() {
        return Err(exit_status::tagged(
            exit_status::FOUND_WRONG,
            anyhow::anyhow!(
                "{} disagree(s) with the facts; `tollgate rollups check --repair` with the same \
                 days corrects them (docs/cost.md, \"Checking the rollups\")",
                disagreeing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A table that still disagrees after its repair: checked, and found
/// wrong (exit 1).
fn still_wrong(message: String) -> anyhow::Error {
    exit_status::tagged(exit_status::FOUND_WRONG, anyhow::anyhow!(message))
}

/// The first second of `day`, UTC, as epoch seconds.
fn epoch(day: NaiveDate) -> u32 {
    let seconds = day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default();
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn days_come_as_dates_or_midnight_times() {
        assert_eq!(parse_day("2026-12-01"), Ok(day(2026, 12, 1)));
        assert_eq!(parse_day("2026-12-01T00:00:00Z"), Ok(day(2026, 12, 1)));
        assert_eq!(parse_day("2026-12-01T01:00:00+01:00"), Ok(day(2026, 12, 1)));
        assert_eq!(parse_day("2026-12-01T00:00"), Ok(day(2026, 12, 1)));
        assert_eq!(parse_day("1970-01-01"), Ok(FIRST_DAY));
        assert_eq!(parse_day("2105-12-31"), Ok(LAST_DAY));
    }

    /// A trial found `--from 1969-12-31` and `--from 0001-01-01` reporting
    /// every table in agreement, and "trailing input" or "input is out of
    /// range" for a time or an impossible date.
    #[test]
    fn days_clickhouse_cannot_hold_and_other_forms_are_refused_saying_why() {
        for (text, says) in [
            ("1969-12-31", "before 1970-01-01"),
            ("0001-01-01", "before 1970-01-01"),
            ("2106-01-01", "after 2105-12-31"),
            ("9999-12-31", "after 2105-12-31"),
            ("2026-02-30", "not a day of the calendar"),
            ("2026-12-01T10:00:00Z", "not midnight UTC"),
            ("yesterday", "use a UTC day, YYYY-MM-DD"),
            ("1733011200000", "use a UTC day, YYYY-MM-DD"),
        ] {
            let err = parse_day(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
    }
}
