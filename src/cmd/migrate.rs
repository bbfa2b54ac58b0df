//! `tollgate migrate`: apply the schema migrations. For now only PostgreSQL
//! (`migrations/postgres`, embedded at build time); safe to re-run.

use anyhow::Context;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: &Config) -> anyhow::Result<()> {
    migrate_postgres(config).await
}

/// Apply `migrations/postgres` to `postgres.url`.
pub async fn migrate_postgres(config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_ingest::postgres::connect(&config.postgres).await?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .context("applying PostgreSQL migrations")?;
    tracing::info!(
        postgres = %tollgate_ingest::postgres::redact_url(&config.postgres.url),
        "postgresql migrations applied"
    );
    pool.close().await;
    Ok(())
}
