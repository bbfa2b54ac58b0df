//! `tollgate api`: serve the JSON report API and the dashboards on
//! `[api] listen` until SIGTERM or ctrl-c, after checking that ClickHouse
//! answers and is migrated (so a bad address fails at start, not on the
//! first page view).

use anyhow::Context;
use tollgate_api::ApiState;
use tollgate_ingest::keys::KeyStore;
use tollgate_processors::cost::admin::PriceAdmin;
use tollgate_processors::cost::budgets::BudgetStore;
use tollgate_processors::cost::store::PriceStore;
use tollgate_processors::read_models::{ReadModelError, ReadModels};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; overrides `[api] listen`.
    #[arg(long)]
    listen: Option<String>,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let read_models = ReadModels::new(&config.clickhouse);
    if let Err(err) = read_models.check().await {
        let hint = match err {
            ReadModelError::Unavailable { .. } => {
                "is ClickHouse running? start the dev stack, or set `[clickhouse] url` \
                 (TOLLGATE_CLICKHOUSE__URL)"
            }
            ReadModelError::NotMigrated { .. } => {
                "run `tollgate migrate` with the same configuration, or check `[clickhouse] database`"
            }
            _ => "check the ClickHouse server log",
        };
        anyhow::bail!("{err}\nhint: {hint}");
    }
    // Price administration needs PostgreSQL (catalog, keys) and Kafka (admin
    // events); reports do not, so the server starts without them.
    let (prices, keys, budgets) = match tollgate_ingest::postgres::connect(&config.postgres).await {
        Ok(pool) => {
            let producer = tollgate_ingest::producer::EventProducer::new(&config.kafka)?;
            (
                Some(PriceAdmin {
                    store: PriceStore::new(pool.clone()),
                    producer: Some(producer),
                }),
                Some(KeyStore::new(pool.clone())),
                Some(BudgetStore::new(pool)),
            )
        }
        Err(err) => {
            tracing::warn!(%err, "postgres unreachable: serving reports without price administration and audit endpoints (503)");
            (None, None, None)
        }
    };
    let listen = args.listen.unwrap_or_else(|| config.api.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (`[api] listen`)"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, clickhouse = %config.clickhouse.url, "api listening");
    let audit = tollgate_api::audit::AuditState {
        clickhouse: config.clickhouse.clone(),
        public_key: config
            .audit
            .signer()?
            .map(|s| s.public_key_hex().to_string()),
        keys: keys.clone(),
    };
    let state = ApiState {
        read_models,
        audit: Some(audit),
        prices,
        keys,
        budgets,
    };
    tollgate_api::serve(listener, state, super::shutdown::shutdown_signal())
        .await
        .context("api server failed")?;
    tracing::info!("api stopped");
    Ok(())
}
