//! `tollgate api`: serve the JSON report API (`tollgate-api`) and the
//! dashboards (`tollgate-dashboards`), two sibling routers merged here, on
//! `[api] listen` until SIGTERM or ctrl-c, after checking that ClickHouse
//! answers and is migrated (so a bad address fails at start, not on the
//! first page view).

use anyhow::Context;
use tollgate_api::ApiState;
use tollgate_control::budgets::BudgetStore;
use tollgate_control::keys::KeyStore;
use tollgate_control::outbox::OutboxRelay;
use tollgate_control::prices::admin::PriceAdmin;
use tollgate_control::prices::store::PriceStore;
use tollgate_queries::{ReadModelError, ReadModels};

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
    // Price and budget administration need PostgreSQL (catalog, budgets,
    // keys, the outbox); reports do not, so the server starts without it.
    // Changes commit with their admin events in the outbox; this server's
    // relay publishes them (so do processors' relays).
    let relay_stop = tokio_util::sync::CancellationToken::new();
    let (prices, keys, budgets, alerts, relay) = match tollgate_control::postgres::connect(
        &config.postgres,
    )
    .await
    {
        Ok(pool) => {
            let producer = tollgate_control::kafka::EventProducer::new(&config.kafka)?;
            let relay = OutboxRelay::new(pool.clone(), producer);
            (
                Some(PriceAdmin {
                    store: PriceStore::new(pool.clone()),
                }),
                Some(KeyStore::new(pool.clone())),
                Some(BudgetStore::new(pool.clone())),
                Some(tollgate_control::alerts::AlertStore::new(pool)),
                Some(tokio::spawn(relay.run(relay_stop.clone()))),
            )
        }
        Err(err) => {
            tracing::warn!(%err, "postgres unreachable: serving reports without price and budget administration and audit endpoints (503)");
            (None, None, None, None, None)
        }
    };
    let listen = args.listen.unwrap_or_else(|| config.api.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (`[api] listen`)"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, clickhouse = %config.clickhouse.url, "api listening");
    let signer = config.audit.signer()?;
    let audit = tollgate_api::audit::AuditState {
        clickhouse: tollgate_queries::client(&config.clickhouse),
        public_key: signer.as_ref().map(|s| s.public_key_hex().to_string()),
        signer,
        keys: keys.clone(),
    };
    let state = ApiState {
        read_models,
        audit: Some(audit),
        prices,
        keys,
        budgets,
        alerts,
    };
    let alerting = match (&state.alerts, &state.keys) {
        (Some(store), Some(keys)) => Some(tollgate_dashboards::AlertingPages {
            store: store.clone(),
            keys: keys.clone(),
        }),
        _ => None,
    };
    let pages = tollgate_dashboards::router_with(
        state.read_models.clone(),
        state.prices.as_ref().map(|p| p.store.clone()),
        state.budgets.clone(),
        state.audit.clone(),
        alerting,
    );
    let app = tollgate_api::router(state)
        .merge(pages)
        .layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, app)
        .with_graceful_shutdown(super::shutdown::shutdown_signal())
        .await
        .context("api server failed")?;
    relay_stop.cancel();
    if let Some(relay) = relay {
        // A drain in progress finishes (see `OutboxRelay::run`).
        let wait = std::time::Duration::from_millis(config.kafka.message_timeout_ms)
            + std::time::Duration::from_secs(5);
        if tokio::time::timeout(wait, relay).await.is_err() {
            tracing::warn!("outbox relay did not stop in time");
        }
    }
    tracing::info!("api stopped");
    Ok(())
}
