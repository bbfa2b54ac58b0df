//! `tollgate migrate`: create the ClickHouse database and apply its
//! migrations, apply the PostgreSQL migrations, create the Kafka topics, and
//! import the default price catalog. Safe to re-run; prints one line per step.

use anyhow::Context;
use tollgate_processors::group_members;
use tollgate_processors::migrations::{self, Outcome};
use tollgate_processors::topics;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Only PostgreSQL's migrations (the control plane: keys, people,
    /// prices, budgets, alerting), nothing else.
    #[arg(long)]
    postgres_only: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    if args.postgres_only {
        migrate_postgres(config).await?;
        println!("migrate: done (postgresql only)");
        return Ok(());
    }
    migrate_clickhouse(config).await?;
    migrate_postgres(config).await?;
    create_topics(config).await?;
    let prices = super::prices::import_default(config)
        .await
        .context("cannot import the default price catalog")?;
    super::prices::report("prices (default catalog)", &prices);
    println!("migrate: done");
    Ok(())
}

async fn migrate_clickhouse(config: &Config) -> anyhow::Result<()> {
    let ch = &config.clickhouse;
    println!("clickhouse: {} database {}", ch.url, ch.database);
    refuse_backfills_while_folds_run(config).await?;
    migrations::migrate(ch, |outcome| match outcome {
        Outcome::Applied { name, statements } => {
            println!("clickhouse: applied {name} ({statements} statement(s))")
        }
        Outcome::AlreadyApplied { name } => println!("clickhouse: {name} already applied"),
    })
    .await
    .with_context(|| {
        format!(
            "clickhouse migrations failed (database {} at {})",
            ch.database, ch.url
        )
    })?;
    Ok(())
}

/// A pending migration that backfills (`Migration::backfills`) copies rows
/// from tables the folds write; a fold inserting meanwhile is counted twice
/// or missed. Such files are applied only while the folds' consumer groups
/// have no member (docs/deployment.md, "Upgrades and migrations").
async fn refuse_backfills_while_folds_run(config: &Config) -> anyhow::Result<()> {
    let backfilling: Vec<String> = migrations::pending(&config.clickhouse)
        .await?
        .into_iter()
        .filter(migrations::Migration::backfills)
        .map(|m| m.name)
        .collect();
    if backfilling.is_empty() {
        return Ok(());
    }
    let running = group_members::running(&config.kafka, &fold_groups(config))
        .await
        .context("cannot tell whether processors are running before a backfilling migration")?;
    if running.is_empty() {
        println!(
            "clickhouse: {} backfill(s) from stored rows; no processor is running",
            backfilling.join(", ")
        );
        return Ok(());
    }
    anyhow::bail!(
        "not applying {}: it backfills from tables the processors write, and processors are running \
         (consumer group {}). Stop every `tollgate process` (their events wait in Kafka), run \
         `tollgate migrate` again, then start the new version. A processor killed without stopping \
         stays a member until processor.session_timeout_ms has passed.",
        backfilling.join(", "),
        running.join("; consumer group ")
    )
}

/// The consumer groups of the folds that write ClickHouse's facts and
/// rollups (the calls fold with its views, the audit fold).
pub fn fold_groups(config: &Config) -> [String; 2] {
    [
        config.processor.group_id.clone(),
        config.audit.group_id.clone(),
    ]
}

/// Apply `migrations/postgres` (embedded at compile time) with sqlx.
pub async fn migrate_postgres(config: &Config) -> anyhow::Result<()> {
    use sqlx::Connection;
    let url = &config.postgres.url;
    let shown = tollgate_control::postgres::redact_url(url);
    println!("postgres: {shown}");
    let mut conn = sqlx::PgConnection::connect(url).await.with_context(|| {
        format!("cannot connect to postgres at {shown} (is it running? `dev/stack up` starts one)")
    })?;
    // Versions applied before this run; the table does not exist on a new database.
    let before: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    let migrator = sqlx::migrate!("./migrations/postgres");
    migrator
        .run(&mut conn)
        .await
        .with_context(|| format!("postgres migrations failed at {shown}"))?;
    for migration in migrator.iter() {
        let what = if before.contains(&migration.version) {
            "already applied"
        } else {
            "applied"
        };
        println!(
            "postgres: {} {} {what}",
            migration.version, migration.description
        );
    }
    conn.close().await?;
    Ok(())
}

async fn create_topics(config: &Config) -> anyhow::Result<()> {
    let kafka = &config.kafka;
    println!("kafka: {}", kafka.brokers);
    for topic in topics::create_topics(kafka).await? {
        let what = if topic.created {
            "created"
        } else {
            "already exists"
        };
        println!(
            "kafka: topic {} {what} ({} partitions wanted, {} replicas)",
            topic.name, topic.partitions, topic.replicas
        );
        if let Some(factor) = kafka.replication_factor {
            if topic.replicas < usize::from(factor) {
                println!(
                    "kafka: WARNING topic {} has {} replicas, fewer than kafka.replication_factor ({factor}): \
                     it was created before; add replicas with kafka-reassign-partitions (docs/deployment.md)",
                    topic.name, topic.replicas
                );
            }
        }
    }
    Ok(())
}
