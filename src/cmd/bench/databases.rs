//! A ClickHouse and a PostgreSQL database of one fresh name, migrated, for
//! the benches that generate data through both (`alerts`, `reports`),
//! dropped afterwards unless the run keeps them.

use std::process::Stdio;

use anyhow::Context;
use chrono::Utc;
use sqlx::Connection;

use super::ingest::{overrides, tollgate};
use crate::config::Config;

pub(super) struct BenchDatabases {
    /// `tollgate_bench_<kind>_<time>`: letters, digits and underscores.
    pub name: String,
    /// The configuration pointed at both databases.
    pub config: Config,
    admin: sqlx::PgConnection,
}

impl BenchDatabases {
    /// Create both databases, say their name on standard output and
    /// migrate them.
    pub async fn create(config: &Config, kind: &str) -> anyhow::Result<Self> {
        let id = Utc::now().format("%Y%m%d%H%M%S").to_string();
        let name = format!("tollgate_bench_{kind}_{id}");
        let mut bench = config.clone();
        bench.clickhouse.database = name.clone();
        // Consumer groups of its own: `migrate` refuses to backfill while
        // a member of the configured groups runs (the dev stack's
        // processors, another bench), and these databases have none.
        bench.processor.group_id = format!("tollgate-bench-{kind}-{id}");
        bench.audit.group_id = format!("tollgate-bench-{kind}-{id}-audit");
        let admin_url = config.postgres.url.clone();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("cannot reach PostgreSQL")?;
        // `name` is made of letters, digits and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .context("cannot create the bench PostgreSQL database")?;
        bench.postgres.url = match admin_url.rfind('/') {
            Some(i) => format!("{}/{name}", &admin_url[..i]),
            None => anyhow::bail!("postgres.url has no database part: {admin_url}"),
        };
        println!("bench: ClickHouse and PostgreSQL databases {name}");
        let databases = Self {
            name,
            config: bench,
            admin,
        };
        let migrated = tollgate(&overrides(&databases.config), &["migrate"])
            .stdout(Stdio::null())
            .status()
            .context("cannot run tollgate migrate");
        match migrated {
            Ok(status) if status.success() => Ok(databases),
            failed => {
                databases.drop_both().await?;
                match failed {
                    Err(err) => Err(err),
                    Ok(_) => anyhow::bail!("tollgate migrate failed for the bench databases"),
                }
            }
        }
    }

    /// Drop both databases.
    pub async fn drop_both(mut self) -> anyhow::Result<()> {
        let ch = tollgate_control::clickhouse::client(&self.config.clickhouse);
        ch.query(&format!("DROP DATABASE IF EXISTS {}", self.name))
            .execute()
            .await
            .context("cannot drop the bench ClickHouse database")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut self.admin)
        .await
        .context("cannot drop the bench PostgreSQL database")?;
        Ok(())
    }
}
