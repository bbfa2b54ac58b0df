//! `tollgate retention run [--dry-run] [--json]`: enforce the `[retention]`
//! section once, now — drop every partition of a retained table whose rows
//! are all older than the table's days (`tollgate_processors::retention`;
//! `docs/processor.md`, "Retention"). For cron, or to see with `--dry-run`
//! what `tollgate process` would drop.

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum RetentionCommand {
    /// Drop the partitions past retention (or, with --dry-run, list them).
    Run {
        /// Print what would be dropped; drop nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: RetentionCommand, config: &Config) -> anyhow::Result<()> {
    let RetentionCommand::Run { dry_run, json } = command;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let outcomes =
        tollgate_processors::retention::run(&config.clickhouse, &config.retention, now, dry_run)
            .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dry_run": dry_run,
                "tables": outcomes,
            }))?
        );
        return Ok(());
    }
    let verb = if dry_run { "would drop" } else { "dropped" };
    let mut partitions = 0usize;
    let mut rows = 0u64;
    for table in &outcomes {
        for p in &table.dropped {
            println!(
                "{}: {verb} partition {} ({} rows, newest {})",
                table.table, p.partition_id, p.rows, p.newest
            );
            partitions += 1;
            rows += p.rows;
        }
        println!(
            "{}: keeps {} days, {} partition(s) kept",
            table.table, table.days, table.kept
        );
    }
    println!(
        "retention{}: {verb} {partitions} partition(s), {rows} rows",
        if dry_run {
            " (dry run, nothing dropped)"
        } else {
            ""
        }
    );
    Ok(())
}
