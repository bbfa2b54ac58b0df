//! `tollgate migrate`: create the ClickHouse database and apply its
//! migrations, apply the PostgreSQL migrations, and create the Kafka topics.
//! Safe to re-run; prints one line per step.

use anyhow::Context;
use tollgate_processors::migrations::{self, Outcome};
use tollgate_processors::topics;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: &Config) -> anyhow::Result<()> {
    migrate_clickhouse(config).await?;
    migrate_postgres(config).await?;
    create_topics(config).await?;
    println!("migrate: done");
    Ok(())
}

async fn migrate_clickhouse(config: &Config) -> anyhow::Result<()> {
    let ch = &config.clickhouse;
    println!("clickhouse: {} database {}", ch.url, ch.database);
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

/// Apply `migrations/postgres` (embedded at compile time) with sqlx.
pub async fn migrate_postgres(config: &Config) -> anyhow::Result<()> {
    use sqlx::Connection;
    let url = &config.postgres.url;
    let shown = redact(url);
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
            "kafka: topic {} {what} ({} partitions wanted)",
            topic.name, topic.partitions
        );
    }
    Ok(())
}

/// A URL with its password replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://tollgate:secret@127.0.0.1:5433/tollgate"),
            "postgres://tollgate:***@127.0.0.1:5433/tollgate"
        );
        assert_eq!(redact("postgres://127.0.0.1/db"), "postgres://127.0.0.1/db");
    }
}
