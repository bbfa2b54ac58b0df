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
            println!("clickhouse: applied {name} ({statements} statements)")
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
    let url = &config.postgres.url;
    let shown = redact(url);
    println!("postgres: {shown}");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to postgres at {shown} (is it running? `dev/stack up` starts one)"
            )
        })?;
    let migrator = sqlx::migrate!("./migrations/postgres");
    migrator
        .run(&pool)
        .await
        .with_context(|| format!("postgres migrations failed at {shown}"))?;
    for migration in migrator.iter() {
        println!(
            "postgres: {} {} applied",
            migration.version, migration.description
        );
    }
    pool.close().await;
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
