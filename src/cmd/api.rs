//! `tollgate api`: serve the JSON report API (`tollgate-api`) and the
//! dashboards (`tollgate-dashboards`), two sibling routers merged here, on
//! `[api] listen` until SIGTERM or ctrl-c, after checking that ClickHouse
//! answers and is migrated (so a bad address fails at start, not on the
//! first page view). `GET /metrics` (`crate::metrics`) is one of its routes.

use anyhow::Context;
use tollgate_access::{Access, Gate, Routes, StoreAuthenticator};
use tollgate_api::providers::ProviderAdmin;
use tollgate_api::ApiState;
use tollgate_control::accounts::{AccountStore, SessionStore};
use tollgate_control::budgets::BudgetStore;
use tollgate_control::keys::KeyStore;
use tollgate_control::outbox::OutboxRelay;
use tollgate_control::prices::admin::PriceAdmin;
use tollgate_control::prices::store::PriceStore;
use tollgate_control::provider_credentials::{CredentialStore, Keyring};
use tollgate_control::sso_logins::SsoLoginStore;
use tollgate_dashboards::sign_in_sso;
use tollgate_dashboards::sign_in_sso::config::SsoSettings;
use tollgate_queries::{ReadModelError, ReadModels};

use crate::config::Config;
use crate::metrics::{Exposition, MetricsRegistry};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; overrides `[api] listen`.
    #[arg(long)]
    listen: Option<String>,
}

/// Every route the server answers, API and pages, with its access rule,
/// and `GET /metrics` (public, like any Prometheus target: it holds no
/// org's data, only counts of requests by route).
pub fn every_route(
    state: ApiState,
    pages: tollgate_dashboards::PageServices,
    metrics: &Exposition,
) -> Routes {
    let read_models = state.read_models.clone();
    tollgate_api::routes(state)
        .merge(tollgate_dashboards::routes(read_models, pages))
        .merge(Routes::new().route("/metrics", Access::public(), metrics.route()))
}

/// `tollgate routes`: every route and who may use it, from the same
/// assembly the server uses (nothing is connected).
pub fn print_routes(config: &Config, json: bool) -> anyhow::Result<()> {
    let state = ApiState {
        read_models: ReadModels::new(&config.clickhouse),
        audit: Some(tollgate_api::audit::AuditState {
            clickhouse: tollgate_queries::client(&config.clickhouse),
            public_key: None,
            signer: None,
            keys: None,
            anchor: tollgate_queries::audit::anchor::AnchorSource::new(config.kafka.clone()),
        }),
        prices: None,
        keys: None,
        budgets: None,
        rate_limits: None,
        alerts: None,
        providers: None,
        erasure: None,
    };
    let pages = tollgate_dashboards::PageServices {
        audit: state.audit.clone(),
        ..Default::default()
    };
    let routes = every_route(state, pages, &MetricsRegistry::new("api").into_exposition());
    let rows: Vec<serde_json::Value> = routes
        .table()
        .iter()
        .map(|r| {
            let names = |roles: &[tollgate_access::Role]| -> Vec<&str> {
                roles.iter().map(|r| r.as_str()).collect()
            };
            serde_json::json!({
                "path": r.path,
                "public": r.access.public,
                "read": names(r.access.read),
                "write": names(r.access.write),
                "org": format!("{:?}", r.access.org).to_lowercase(),
                "methods": r.methods,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<48} {:<8} {:<40} WRITE", "PATH", "ORG", "READ");
        for r in &rows {
            let list = |v: &serde_json::Value| -> String {
                let items: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                if items.is_empty() {
                    "-".into()
                } else {
                    items.join(",")
                }
            };
            let read = if r["public"] == true {
                "(public)".to_string()
            } else {
                list(&r["read"])
            };
            println!(
                "{:<48} {:<8} {:<40} {}",
                r["path"].as_str().unwrap_or_default(),
                r["org"].as_str().unwrap_or_default(),
                read,
                list(&r["write"])
            );
        }
    }
    Ok(())
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let trace_links =
        tollgate_dashboards::trace_link::TraceLinks::new(config.api.trace_url.as_deref())?;
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
    // Single sign-on's settings are checked before anything listens.
    let sso_settings = config
        .auth
        .oidc
        .as_ref()
        .map(SsoSettings::from_config)
        .transpose()?;
    // The master key seals what `PUT /api/v1/admin/providers/...` stores;
    // a malformed one stops the server, a missing one only refuses those.
    let keyring = Keyring::from_environment(&config.secrets)?;
    let (prices, keys, budgets, alerts, people, sso_logins, relay, providers, erasure) =
        match tollgate_control::postgres::connect(&config.postgres).await {
            Ok(pool) => {
                let producer = tollgate_control::kafka::EventProducer::new(&config.kafka)?;
                let relay = OutboxRelay::new(pool.clone(), producer);
                (
                    Some(PriceAdmin {
                        store: PriceStore::new(pool.clone()),
                    }),
                    Some(KeyStore::new(pool.clone())),
                    Some(BudgetStore::new(pool.clone())),
                    Some(
                        tollgate_control::alerts::AlertStore::new(pool.clone())
                            .with_private_hosts(&config.alerting.receiver_private_hosts),
                    ),
                    Some((
                        AccountStore::new(pool.clone(), config.auth.clone()),
                        SessionStore::new(pool.clone(), config.auth.clone()),
                    )),
                    Some(SsoLoginStore::new(pool.clone())),
                    Some(tokio::spawn(relay.run(relay_stop.clone()))),
                    Some(ProviderAdmin {
                        store: CredentialStore::new(pool.clone()),
                        keyring,
                    }),
                    Some(tollgate_control::erasure::Eraser {
                        clickhouse: config.clickhouse.clone(),
                        kafka: config.kafka.clone(),
                        pool,
                        wait: std::time::Duration::from_secs(config.audit.erasure_wait_secs),
                    }),
                )
            }
            Err(err) => {
                tracing::warn!(%err, "postgres unreachable: serving without sign-in (every page and API route answers 503)");
                (None, None, None, None, None, None, None, None, None)
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
        anchor: tollgate_queries::audit::anchor::AnchorSource::new(config.kafka.clone()),
    };
    let state = ApiState {
        read_models,
        audit: Some(audit),
        prices,
        keys,
        rate_limits: budgets
            .as_ref()
            .map(|b| tollgate_control::rate_limits::RateLimitStore::new(b.pool().clone())),
        budgets,
        alerts,
        providers,
        erasure,
    };
    let gate = Gate::new(StoreAuthenticator {
        keys: state.keys.clone(),
        sessions: people.as_ref().map(|(_, sessions)| sessions.clone()),
    });
    let sso = match (sso_settings, &people, sso_logins) {
        (Some(settings), Some((accounts, sessions)), Some(logins)) => {
            Some(sign_in_sso::SingleSignOn {
                provider: sign_in_sso::provider::Provider::new(settings)
                    .context("cannot build the HTTP client for single sign-on")?,
                logins,
                accounts: accounts.clone(),
                sessions: sessions.clone(),
            })
        }
        (Some(_), _, _) => {
            tracing::warn!("single sign-on (`[auth.oidc]`) needs postgres: it is off");
            None
        }
        _ => None,
    };
    let services = tollgate_dashboards::PageServices {
        trace_links,
        prices: state.prices.as_ref().map(|p| p.store.clone()),
        budgets: state.budgets.clone(),
        audit: state.audit.clone(),
        alerts: state.alerts.clone(),
        keys: state.keys.clone(),
        accounts: people.as_ref().map(|(accounts, _)| accounts.clone()),
        sessions: people.map(|(_, sessions)| sessions),
        sso,
    };
    let mut registry = MetricsRegistry::new("api");
    let http = registry.http();
    let exposition = registry.into_exposition();
    // The browser headers outermost: the gate's refusals carry them too.
    let app = tollgate_access::with_browser_headers(
        tollgate_dashboards::with_navigation(
            every_route(state, services, &exposition).into_router(),
        )
        .layer(gate.layer()),
    )
    .layer(tower_http::trace::TraceLayer::new_for_http());
    let app = http.measure(app);
    // Slow clients are cut off as on the ingest API and the proxy
    // (`tollgate_control::http_server`): a connection whose request headers
    // take over 10 s is closed, a body that stops for 30 s is refused.
    let timeouts = tollgate_control::http_server::DEFAULT_READ_TIMEOUTS;
    tollgate_control::http_server::serve(
        listener,
        timeouts.bound_bodies(app),
        timeouts.headers,
        tollgate_control::http_server::ServeOptions::default(),
        super::shutdown::shutdown_signal(),
    )
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
