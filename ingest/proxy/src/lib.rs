//! The Tollgate proxy: an OpenAI- and Anthropic-compatible HTTP endpoint
//! that authenticates clients with virtual keys, applies the gates (local
//! per-key rate limit, decisions from the compacted decisions topic),
//! forwards each call to the provider that serves its model, streams the
//! answer back untouched, and records every attempt as an `ai.call.*`
//! event (queued off the response path, spooled to disk while Kafka is away).
//!
//! Module map: [`config`] (the `[proxy]` section), [`auth`] (virtual keys),
//! [`credentials`] (what each provider is called with),
//! [`routing`] (model -> provider, aliases, fallbacks), [`decisions`] (the
//! decision cache), [`budget`] and [`estimate`] (budget reservations),
//! [`shares`] and [`membership`] (this proxy's share of budgets and rate
//! limits among the live proxies), [`tiers`] (rate-limit tiers),
//! [`forward`] (attempts, retries, fallbacks, relay), [`recovery`]
//! (learned order of retries and fallbacks), [`breaker`] (fleet and local
//! breakers), [`observe`]
//! (usage and TTFT from the bytes passing through), [`overhead`] (the
//! proxy's own time on a call, in `Server-Timing`), [`record`] (events),
//! [`emitter`] and [`spool`] (delivery to Kafka), [`wal`] (the
//! write-ahead log that makes a crash lose nothing), [`errors`] (the proxy's
//! own error replies), [`metrics`] (what `GET /metrics` reports, served by
//! the binary), [`trace`] (W3C trace context and the proxy's own spans).

pub mod auth;
pub mod breaker;
pub mod budget;
pub mod config;
pub mod credentials;
pub mod decisions;
pub mod emitter;
pub mod errors;
pub mod estimate;
pub mod forward;
pub mod membership;
pub mod metrics;
pub mod observe;
pub mod overhead;
pub mod prompt_tokens;
pub mod record;
pub mod recovery;
pub mod replay;
pub mod routing;
pub mod shares;
pub mod spool;
pub mod tiers;
pub mod trace;
pub mod wal;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use uuid::Uuid;

use tollgate_contract::SharedCatalog;

use self::auth::{KeyCache, VirtualKey};
use self::budget::BudgetLedger;
use self::config::{ProviderConfig, ProviderKind, ProxyConfig};
use self::decisions::DecisionCache;
use self::emitter::EventEmitter;
use self::errors::ProxyError;
use self::metrics::ProxyMetrics;
use self::observe::Dialect;
use self::record::{CallContext, GATE};
use self::routing::{Route, RouteTable};
use tollgate_contract::decisions::{budget_subject, Action, Subjects};
use tollgate_contract::{Operation, Outcome};
use tollgate_control::config::KafkaConfig;
use tollgate_control::http_server;
use tollgate_control::kafka::EventProducer;

/// The client-facing routes and what they map to upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    /// OpenAI's Responses API (`/v1/responses`): OpenAI's errors, its own
    /// body and stream events (see [`observe`]).
    Responses,
    Completions,
    Embeddings,
    Messages,
}

impl Endpoint {
    pub fn dialect(self) -> Dialect {
        match self {
            Endpoint::Messages => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    pub fn kind(self) -> ProviderKind {
        match self {
            Endpoint::Messages => ProviderKind::Anthropic,
            _ => ProviderKind::Openai,
        }
    }

    /// Path appended to the provider's `base_url`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Responses => "/responses",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
        }
    }

    fn operation(self) -> Operation {
        match self {
            // A response is a chat turn (OpenTelemetry's GenAI conventions
            // name both `chat`).
            Endpoint::ChatCompletions | Endpoint::Responses => Operation::Chat,
            Endpoint::Completions => Operation::Completion,
            Endpoint::Embeddings => Operation::Embedding,
            Endpoint::Messages => Operation::Messages,
        }
    }

    fn can_stream(self) -> bool {
        self != Endpoint::Embeddings
    }
}

/// One upstream provider: its settings and HTTP client (its credential is
/// in [`credentials::ProviderCredentials`]).
pub struct Upstream {
    pub name: String,
    pub config: ProviderConfig,
    pub client: reqwest::Client,
}

pub struct ProxyState {
    pub config: ProxyConfig,
    pub routes: RouteTable,
    pub keys: KeyCache,
    pub decisions: Arc<DecisionCache>,
    /// This proxy's own breakers (`proxy.breaker`).
    pub breakers: breaker::LocalBreakers,
    pub limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
    pub emitter: EventEmitter,
    pub upstreams: HashMap<String, Upstream>,
    /// The credential each provider is called with (stored ones reloaded
    /// when they change).
    pub credentials: Arc<credentials::ProviderCredentials>,
    pub metrics: Arc<ProxyMetrics>,
    /// The price catalog, for budget reservations (kept fresh from
    /// PostgreSQL like the processors' copy).
    pub prices: SharedCatalog,
    /// Where the proxy's own spans go (`telemetry.otlp_endpoint`); `None`:
    /// no spans, the client's trace headers pass through unchanged.
    pub spans: Option<trace::SpanExport>,
    /// This proxy's share of budgets and rate limits.
    pub shares: Arc<shares::Shares>,
    /// The rate-limit tiers and this proxy's counts.
    pub tiers: Arc<tiers::RateTiers>,
}

impl ProxyState {
    /// Emit the event of one attempt, first charging its exact cost to the
    /// call's budget reservation.
    pub async fn emit_attempt(&self, ctx: &CallContext, mut record: record::AttemptRecord) {
        let trace = record.trace.clone();
        let response_model = record.response_model.take();
        let event = ctx.event(record);
        trace.finish(&event, response_model.as_deref());
        if let Some(reservation) = &ctx.budget {
            if let Some(cost) = estimate::event_cost(&event, &self.prices.current()) {
                reservation.charge(event.event_id, cost, event.occurred_at);
            }
        }
        if let (Some(hold), Some(call)) = (&ctx.rate, &event.call) {
            hold.used(
                call.usage
                    .input_tokens
                    .saturating_add(call.usage.output_tokens),
            );
        }
        self.emitter.emit(event).await;
    }
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyStartError {
    #[error("invalid [proxy] configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("cannot read the write-ahead log in {dir}: {source}")]
    WalRecovery {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] tollgate_control::ControlError),
    #[error("decisions: {0}")]
    Decisions(String),
    #[error("provider credentials: {0}")]
    Credentials(String),
}

/// A running proxy's background parts, to stop in order at shutdown.
pub struct ProxyRuntime {
    pub state: Arc<ProxyState>,
    pub emitter_task: JoinHandle<()>,
    pub decisions_task: JoinHandle<()>,
    pub producer: EventProducer,
    /// Stops the price catalog and provider credential refreshers and the
    /// rate-limit reloads.
    pub prices_task: tokio_util::sync::CancellationToken,
    /// Stops the membership renewals; the task then leaves the live set
    /// (await it at shutdown, after the last response).
    pub membership_stop: tokio_util::sync::CancellationToken,
    pub membership_task: Option<JoinHandle<()>>,
    /// Resolves once the write-ahead log has stopped (after the emitter
    /// task and every relay are done with it); `None` without a log.
    pub wal_stopped: Option<wal::WalStopped>,
}

fn build_upstreams(config: &ProxyConfig) -> Result<HashMap<String, Upstream>, ProxyStartError> {
    if config.providers.is_empty() {
        return Err(ProxyStartError::Config(
            "no providers: add a [proxy.providers.<name>] section with kind, base_url, models (see docs/proxy.md)".into(),
        ));
    }
    routing::check(config).map_err(ProxyStartError::Config)?;
    let mut out = HashMap::new();
    for (name, provider) in &config.providers {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(provider.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                ProxyStartError::Config(format!(
                    "proxy.providers.{name}: cannot build an HTTP client: {e}"
                ))
            })?;
        out.insert(
            name.clone(),
            Upstream {
                name: name.clone(),
                config: provider.clone(),
                client,
            },
        );
    }
    Ok(out)
}

/// Set everything up: upstream clients and their credentials (stored ones
/// decrypted with `keyring`), the emitter (spool replay first), the
/// decision cache (read to the end of the topic). With `spans`, each
/// upstream attempt is a span of the proxy's own ([`trace`]).
pub async fn start(
    config: &ProxyConfig,
    kafka: &KafkaConfig,
    pool: sqlx::PgPool,
    keyring: Option<tollgate_control::provider_credentials::Keyring>,
    spans: Option<trace::SpanExport>,
) -> Result<ProxyRuntime, ProxyStartError> {
    let upstreams = build_upstreams(config)?;
    let metrics = Arc::new(ProxyMetrics::default());
    let credentials =
        credentials::ProviderCredentials::load(config, pool.clone(), keyring, metrics.clone())
            .await?;
    let producer = EventProducer::new(&KafkaConfig {
        message_timeout_ms: config.kafka_timeout_ms,
        ..kafka.clone()
    })?;
    config.shares.validate().map_err(ProxyStartError::Config)?;
    config.tiers.validate().map_err(ProxyStartError::Config)?;
    let shares = match config.budgets.share {
        Some(share)
            if share <= rust_decimal::Decimal::ZERO || share > rust_decimal::Decimal::ONE =>
        {
            return Err(ProxyStartError::Config(format!(
                "proxy.budgets.share must be in (0, 1], got {share}"
            )));
        }
        Some(share) => shares::Shares::fixed(share),
        None => shares::Shares::derived(),
    };
    let shares = Arc::new(shares.reporting_in(metrics.share.clone(), metrics.live_proxies.clone()));
    let membership_stop = tokio_util::sync::CancellationToken::new();
    let membership_task = if shares.is_fixed() {
        None
    } else {
        let membership = tollgate_control::proxy_members::Membership::new(
            membership::holder_name(),
            Duration::from_millis(config.shares.lease_ms),
        );
        // The first refresh before serving: alone, the share is whole at once.
        if let Err(err) = membership::refresh(&membership, &pool, &shares).await {
            ProxyMetrics::inc(&metrics.membership_failures);
            tracing::warn!(%err, "cannot join the live proxies yet; calls against hard budgets are refused until this proxy has a share");
        }
        tracing::info!(holder = %membership.holder, share = %shares.current(), live = shares.live(), "joined the live proxies");
        Some(tokio::spawn(membership::keep_renewed(
            membership,
            pool.clone(),
            shares.clone(),
            Duration::from_millis(config.shares.renew_ms),
            metrics.membership_failures.clone(),
            membership_stop.clone(),
        )))
    };
    let budgets = Arc::new(
        BudgetLedger::new(shares.clone())
            .counting_open_in(metrics.budget_reservations_open.clone()),
    );
    let tiers = Arc::new(tiers::RateTiers::new(
        shares.clone(),
        Arc::new(tollgate_control::rate_limit_windows::WindowPool::new(
            pool.clone(),
        )),
        Duration::from_millis(config.tiers.claim_wait_ms),
        tiers::ClaimCounters {
            refusals: metrics.rate_limit_refusals.clone(),
            claims: metrics.rate_limit_claims.clone(),
            failures: metrics.rate_limit_claim_failures.clone(),
            timeouts: metrics.rate_limit_claim_timeouts.clone(),
        },
    ));
    tiers::load(
        &tiers,
        &tollgate_control::rate_limits::RateLimitStore::new(pool.clone()),
    )
    .await;
    let spool = spool::Spool::open(Path::new(&config.spool_dir))?;
    let wal_dir = Path::new(&config.spool_dir).join("wal");
    // What a crashed run left is read before this run's writer starts; with
    // durability "none" it is still recovered (then no new log is kept).
    let recovered =
        wal::recover::read(&wal_dir).map_err(|source| ProxyStartError::WalRecovery {
            dir: wal_dir.display().to_string(),
            source,
        })?;
    let wal = match config.durability {
        config::Durability::None => None,
        durability => Some(wal::Wal::start(
            &wal_dir,
            wal::WalSettings {
                durability,
                fsync_interval: Duration::from_millis(config.wal_fsync_interval_ms),
                segment_bytes: wal::SEGMENT_BYTES,
            },
            metrics.clone(),
        )?),
    };
    let wal_stopped = wal.as_ref().map(wal::Wal::stopped);
    let delivery = emitter::Delivery {
        producer: producer.clone(),
        spool,
        wal,
        recovered,
        kafka: kafka.clone(),
    };
    let (emitter, emitter_task) = emitter::start(
        delivery,
        config.event_queue,
        metrics.clone(),
        budgets.clone(),
    );
    let (decisions, decisions_task) = decisions::start(
        kafka,
        Duration::from_secs(config.decisions_load_secs),
        metrics.clone(),
        budgets,
    )
    .await
    .map_err(ProxyStartError::Decisions)?;
    let catalog = match tollgate_control::prices::read::load_catalog(&pool).await {
        Ok(catalog) => catalog,
        Err(err) => {
            tracing::warn!(%err, "cannot load the price catalog; budget reservations estimate 0, and unpriced models are not refused, until it loads");
            tollgate_contract::PriceCatalog::default()
        }
    };
    tracing::info!(
        versions = catalog.len(),
        "price catalog loaded for budget reservations"
    );
    let prices = SharedCatalog::new(catalog);
    let prices_task = tokio_util::sync::CancellationToken::new();
    tokio::spawn(tollgate_control::prices::read::keep_fresh(
        pool.clone(),
        prices.clone(),
        prices_task.clone(),
        |_| {},
    ));
    tokio::spawn(credentials.clone().keep_fresh(
        pool.clone(),
        Duration::from_secs(config.credentials_refresh_secs.max(1)),
        prices_task.clone(),
    ));
    tokio::spawn(tiers::keep_fresh(
        tiers.clone(),
        pool.clone(),
        Duration::from_millis(config.tiers.refresh_ms),
        prices_task.clone(),
    ));
    let limiter = NonZeroU32::new(config.rate_limit.requests_per_second).map(|rps| {
        let burst = NonZeroU32::new(config.rate_limit.burst).unwrap_or(rps);
        RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))
    });
    let state = Arc::new(ProxyState {
        config: config.clone(),
        routes: RouteTable::new(config),
        keys: KeyCache::new(
            pool,
            tollgate_control::key_cache::KeyCachePolicy::from_secs(
                config.key_cache_secs,
                config.key_cache_stale_secs,
            ),
        ),
        decisions,
        breakers: breaker::LocalBreakers::new(config.breaker.clone()),
        limiter,
        emitter,
        upstreams,
        credentials,
        metrics,
        prices,
        spans,
        shares,
        tiers,
    });
    Ok(ProxyRuntime {
        state,
        emitter_task,
        decisions_task,
        producer,
        prices_task,
        membership_stop,
        membership_task,
        wal_stopped,
    })
}

/// Serve `app` (the proxy's [`router`], with what the binary adds) on
/// `listener` until `shutdown` resolves; responses in flight are finished
/// first. A connection whose request headers take longer than 10 s is
/// closed (`tollgate_control::http_server`; the body's timeout is the
/// router's, `proxy.body_read_timeout_secs`). Responses are not bounded:
/// a stream may run for minutes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Responses are written in pieces (headers, then chunks): without
    // TCP_NODELAY, Nagle and the client's delayed ACK add ~40 ms per call.
    http_server::serve(
        listener,
        app,
        http_server::DEFAULT_READ_TIMEOUTS.headers,
        http_server::ServeOptions { nodelay: true },
        shutdown,
    )
    .await
}

/// What [`router`] serves (and `GET /metrics`, added by the binary), for
/// the answer to anything else.
pub const SERVED_ROUTES: &str = "POST /v1/chat/completions, POST /v1/responses, POST /v1/completions, POST /v1/embeddings, POST /v1/messages, GET /v1/models, GET /healthz and GET /metrics";

pub fn router(state: Arc<ProxyState>) -> Router {
    // Only reading the request is bounded; the streamed answers are not.
    let read_timeouts =
        http_server::ReadTimeouts::from_secs(0, state.config.body_read_timeout_secs);
    let router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|m: Method, u: Uri, h: HeaderMap| unknown_route(StatusCode::NOT_FOUND, m, u, h))
        .method_not_allowed_fallback(|m: Method, u: Uri, h: HeaderMap| {
            unknown_route(StatusCode::METHOD_NOT_ALLOWED, m, u, h)
        })
        .with_state(state);
    read_timeouts.bound_bodies(router)
}

/// Any other path (404) or method (405), in the dialect the client speaks
/// (an Anthropic client sends `anthropic-version`), naming what is served.
async fn unknown_route(
    status: StatusCode,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let dialect = if headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    ProxyError::unknown_route(status, method.as_str(), uri.path()).into_response(dialect)
}

async fn chat_completions(
    State(s): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(s, Endpoint::ChatCompletions, headers, body).await
}

async fn responses(State(s): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    handle(s, Endpoint::Responses, headers, body).await
}

async fn completions(State(s): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    handle(s, Endpoint::Completions, headers, body).await
}

async fn embeddings(State(s): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    handle(s, Endpoint::Embeddings, headers, body).await
}

async fn messages(State(s): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    handle(s, Endpoint::Messages, headers, body).await
}

async fn authenticate(state: &ProxyState, headers: &HeaderMap) -> Result<VirtualKey, ProxyError> {
    let secret = auth::presented_secret(headers).ok_or_else(ProxyError::missing_key)?;
    match state.keys.verify(secret).await {
        Ok(Some(key)) if key.may_use_proxy() => Ok(key),
        Ok(_) => Err(ProxyError::invalid_key()),
        Err(err) => {
            tracing::warn!(%err, "cannot verify a key");
            Err(ProxyError::unavailable(
                "cannot verify the API key right now (control plane unreachable)",
            ))
        }
    }
}

async fn models(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    let key = match authenticate(&state, &headers).await {
        Ok(key) => key,
        Err(err) => return err.into_response(Dialect::OpenAi),
    };
    let data: Vec<Value> = state
        .routes
        .listed_models(&state.prices.current(), chrono::Utc::now())
        .into_iter()
        .filter(|(m, _)| key.allows_model(m))
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

fn valid_model_name(model: &str) -> bool {
    // As the contract takes `call.model`: not blank, at most 256
    // characters, no control characters.
    !model.trim().is_empty() && model.len() <= 256 && !model.chars().any(char::is_control)
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        if http_server::is_body_timeout(&err) {
            ProxyError::body_read_timeout()
        } else {
            ProxyError::too_large(limit)
        }
    })
}

async fn handle(
    state: Arc<ProxyState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = state.metrics.clone();
    let mut clock = overhead::CallClock::start();
    let dropped_tags = record::dropped_tags(&headers);
    let mut response = handle_call(state, endpoint, headers, body, &mut clock).await;
    if let Some(dropped) = dropped_tags {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-tollgate-tags-dropped"), dropped);
    }
    let waits = response
        .extensions_mut()
        .remove::<overhead::Waits>()
        .unwrap_or_default();
    let own = clock.overhead(waits);
    metrics.overhead.observe(own);
    overhead::stamp(&mut response, own, waits);
    metrics.response(response.status().as_u16());
    response
}

async fn handle_call(
    state: Arc<ProxyState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    clock: &mut overhead::CallClock,
) -> Response {
    let dialect = endpoint.dialect();
    let started = Instant::now();
    let key = match authenticate(&state, &headers).await {
        Ok(key) => key,
        Err(err) => return err.into_response(dialect),
    };
    let reading = Instant::now();
    let read = read_body(body, &headers, state.config.max_body_bytes).await;
    clock.client_sent(reading.elapsed());
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(err) => {
            // The rest of the body is not read: the connection cannot be reused.
            let mut response = err.into_response(dialect);
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let request: Value = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => v,
        Ok(_) => {
            return ProxyError::bad_request("the request body must be a JSON object")
                .into_response(dialect)
        }
        Err(err) => {
            return ProxyError::bad_request(format!("the request body is not valid JSON: {err}"))
                .into_response(dialect)
        }
    };
    let requested = match request.get("model") {
        Some(Value::String(m)) if valid_model_name(m) => m.clone(),
        Some(_) => {
            return ProxyError::bad_request(
                "`model` must be a string of 1 to 256 characters, not blank, without control characters",
            )
            .param("model")
            .into_response(dialect)
        }
        None => {
            return ProxyError::bad_request("missing `model`")
                .param("model")
                .into_response(dialect)
        }
    };
    if let Some(s) = request.get("stream") {
        if !s.is_boolean() && !s.is_null() {
            return ProxyError::bad_request("`stream` must be a boolean")
                .param("stream")
                .into_response(dialect);
        }
    }
    // A background response answers `queued` without usage; its usage
    // arrives only by polling `GET /v1/responses/{id}`, which is not
    // proxied, so the call could not be billed.
    if endpoint == Endpoint::Responses
        && request.get("background").and_then(Value::as_bool) == Some(true)
    {
        return ProxyError::bad_request(
            "`background: true` is not served through the proxy: a background response's usage \
             arrives only by polling GET /v1/responses/{id}, which the proxy does not serve, so \
             the call could not be billed; send it without `background`",
        )
        .param("background")
        .into_response(dialect);
    }
    let stream =
        endpoint.can_stream() && request.get("stream").and_then(Value::as_bool) == Some(true);
    let ctx = CallContext::new(
        key,
        &headers,
        endpoint.operation(),
        &requested,
        stream,
        &bytes,
    );
    let model = state.routes.resolve_alias(&requested).to_string();
    let Some(mut route) = state.routes.route(endpoint.kind(), &model) else {
        return ProxyError::unknown_model(&requested).into_response(dialect);
    };
    if !ctx.key.allows_model(&requested) && !ctx.key.allows_model(&model) {
        let err = ProxyError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("this key may not use the model {requested:?}"),
        )
        .code("model_not_allowed")
        .param("model");
        return refuse(
            &state,
            &ctx,
            &route,
            Outcome::Blocked,
            err,
            started,
            dialect,
        )
        .await;
    }
    if let Some(limiter) = &state.limiter {
        if let Err(not_until) = limiter.check_key(&ctx.key.id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let err = ProxyError::rate_limited(
                format!(
                    "rate limit of {} requests per second for this key exceeded (proxy.rate_limit)",
                    state.config.rate_limit.requests_per_second
                ),
                secs,
            );
            return refuse(
                &state,
                &ctx,
                &route,
                Outcome::RateLimited,
                err,
                started,
                dialect,
            )
            .await;
        }
    }
    let key_id = ctx.key.id.to_string();
    let subjects = Subjects {
        key_id: &key_id,
        user_id: &ctx.key.user_id,
        team_id: &ctx.key.team_id,
        org_id: &ctx.key.org_id,
        model: &route.model,
        provider: &route.provider,
    };
    if let Some(decision) = state.decisions.lookup(&subjects) {
        let reason = if decision.reason.is_empty() {
            format!(
                "{} by decision {}",
                action_word(decision.action),
                decision.subject
            )
        } else {
            decision.reason.clone()
        };
        match decision.action {
            Action::Deny => {
                let status = if decision.retry_after_secs.is_some() {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::FORBIDDEN
                };
                let err =
                    ProxyError::new(status, "tollgate_denied", format!("call denied: {reason}"))
                        .code("denied")
                        .retry_after(decision.retry_after_secs)
                        .final_answer();
                return refuse(
                    &state,
                    &ctx,
                    &route,
                    Outcome::Blocked,
                    err,
                    started,
                    dialect,
                )
                .await;
            }
            Action::Throttle => {
                let err = ProxyError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "tollgate_throttled",
                    format!("call throttled: {reason}"),
                )
                .code("throttled")
                .retry_after(Some(decision.retry_after_secs.unwrap_or(1)));
                return refuse(
                    &state,
                    &ctx,
                    &route,
                    Outcome::RateLimited,
                    err,
                    started,
                    dialect,
                )
                .await;
            }
            Action::Reroute => {
                let target = decision
                    .reroute_to
                    .clone()
                    .or_else(|| state.routes.fallbacks(&route.model).first().cloned());
                match target.and_then(|t| {
                    state
                        .routes
                        .route(endpoint.kind(), state.routes.resolve_alias(&t))
                }) {
                    Some(next) => {
                        tracing::info!(call_id = %ctx.call_id, from = %route.model, to = %next.model, subject = %decision.subject, "rerouted by decision");
                        route = next;
                    }
                    None => {
                        let err = ProxyError::unavailable(format!(
                            "{reason}; and no reroute target is configured for {}",
                            route.model
                        ));
                        return refuse(
                            &state,
                            &ctx,
                            &route,
                            Outcome::Blocked,
                            err,
                            started,
                            dialect,
                        )
                        .await;
                    }
                }
            }
            Action::Allow => {}
        }
    }
    let mut ctx = ctx;
    let bound = estimate::token_bound(
        &request,
        bytes.len(),
        endpoint == Endpoint::Embeddings,
        state.config.budgets.default_max_tokens,
    );
    if let Some(subject) = unpriced_under_budget(&state, &ctx, &route) {
        let err = ProxyError::new(
            StatusCode::FORBIDDEN,
            "tollgate_denied",
            format!(
                "call denied: the model {} of {} has no price in the catalog, so the hard budget of {} cannot bound what it spends (add a price: tollgate prices; or set proxy.budgets.refuse_unpriced = false)",
                route.model,
                route.provider,
                tollgate_contract::decisions::budget_subject_words(&subject),
            ),
        )
        .code("unpriced_model")
        .final_answer();
        ProxyMetrics::inc(&state.metrics.budget_refusals);
        return refuse(
            &state,
            &ctx,
            &route,
            Outcome::Blocked,
            err,
            started,
            dialect,
        )
        .await;
    }
    match admit_rate(&state, &ctx, &request, bound).await {
        Ok(hold) => ctx.rate = hold.map(Arc::new),
        Err(refusal) => {
            let mut err = ProxyError::rate_limited(refusal.reason(), refusal.retry_after_secs);
            if refusal.cause == tiers::Cause::TooLarge {
                // It would be refused in every window: no use waiting.
                err = err.retry_after(None).final_answer();
            }
            return refuse(
                &state,
                &ctx,
                &route,
                Outcome::RateLimited,
                err,
                started,
                dialect,
            )
            .await;
        }
    }
    match reserve_budget(&state, &ctx, endpoint, bound, &route) {
        Ok(reservation) => {
            if reservation.is_some() {
                ProxyMetrics::inc(&state.metrics.budget_reservations);
            }
            ctx.budget = reservation.map(Arc::new);
        }
        Err(shortfall) => {
            let retry = (shortfall.period_end - chrono::Utc::now())
                .num_seconds()
                .max(1);
            let err = ProxyError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tollgate_denied",
                format!("call denied: {}", shortfall.reason()),
            )
            .code("budget_exceeded")
            .retry_after(Some(u64::try_from(retry).unwrap_or(1)))
            .final_answer();
            ProxyMetrics::inc(&state.metrics.budget_refusals);
            return refuse(
                &state,
                &ctx,
                &route,
                Outcome::Blocked,
                err,
                started,
                dialect,
            )
            .await;
        }
    }
    forward::forward_detached(
        state.clone(),
        ctx,
        endpoint,
        headers,
        request,
        bytes,
        route,
        started,
    )
    .await
}

/// Reserve the most this call can cost against every budget subject it
/// belongs to (see [`budget`]); `Ok(None)` when no subject has a hard budget.
fn reserve_budget(
    state: &ProxyState,
    ctx: &CallContext,
    endpoint: Endpoint,
    bound: estimate::TokenBound,
    route: &Route,
) -> Result<Option<budget::Reservation>, Box<budget::Shortfall>> {
    let ledger = &state.decisions.budgets;
    if !ledger.is_active() {
        return Ok(None);
    }
    let subjects = budget_subjects(ctx);
    let mut candidates = vec![(route.provider.clone(), route.model.clone())];
    for model in state.routes.fallbacks(&route.model) {
        if let Some(r) = state.routes.route(endpoint.kind(), model) {
            candidates.push((r.provider, r.model));
        }
    }
    let candidates: Vec<(&str, &str)> = candidates
        .iter()
        .map(|(p, m)| (p.as_str(), m.as_str()))
        .collect();
    let now = chrono::Utc::now();
    let amount = estimate::estimate(bound, &candidates, &state.prices.current(), now);
    ledger.reserve(&subjects, amount, now)
}

/// The hard budget a call to an unpriced model would escape
/// (`proxy.budgets.refuse_unpriced`): the routed model has no price now, and
/// one of the call's subjects has a hard budget. Fallbacks are priced when
/// they are tried; an unpriced one spends unseen (docs/cost.md).
fn unpriced_under_budget(state: &ProxyState, ctx: &CallContext, route: &Route) -> Option<String> {
    if !state.config.budgets.refuse_unpriced {
        return None;
    }
    let catalog = state.prices.current();
    // An empty catalog is one not loaded yet (PostgreSQL was unreachable
    // at start): every model would read as unpriced, and every budgeted
    // call be refused for good. Reservations estimate 0 until it loads.
    if catalog.is_empty() {
        return None;
    }
    if catalog
        .lookup(&route.provider, &route.model, chrono::Utc::now())
        .is_some()
    {
        return None;
    }
    let subjects = budget_subjects(ctx);
    state
        .decisions
        .budgets
        .hard_budget_of(&subjects)
        .map(str::to_string)
}

/// The scopes a call is judged in, each with the org it is scoped to: its
/// org's own, and its key, user and team both in its org and in every org
/// (`None`), as budgets and rate limits are set.
fn org_scopes(ctx: &CallContext) -> Vec<(&'static str, Option<&str>, String)> {
    let org = Some(ctx.key.org_id.as_str()).filter(|o| !o.is_empty());
    let mut out = Vec::with_capacity(7);
    for (kind, id) in scopes(ctx) {
        if kind != "org" && org.is_some() {
            out.push((kind, org, id.clone()));
        }
        out.push((kind, None, id));
    }
    out
}

/// The budget subjects a call is judged against
/// ([`tollgate_contract::decisions::budget_subject`]).
fn budget_subjects(ctx: &CallContext) -> Vec<String> {
    org_scopes(ctx)
        .into_iter()
        .map(|(kind, org, id)| budget_subject(kind, org, &id))
        .collect()
}

/// The rate-limit scopes of a call ([`tiers::Scope`], ids as
/// [`tollgate_control::rate_limits::tier_id`]).
fn rate_scopes(ctx: &CallContext) -> Vec<tiers::Scope> {
    use tollgate_control::budgets::SubjectKind;
    use tollgate_control::rate_limits::tier_id;
    org_scopes(ctx)
        .into_iter()
        .filter_map(|(kind, org, id)| {
            SubjectKind::parse(kind).map(|subject| (kind, tier_id(subject, org, &id)))
        })
        .collect()
}

/// The key, user, team and org a call counts against (those it has).
fn scopes(ctx: &CallContext) -> Vec<tiers::Scope> {
    [
        ("key", ctx.key.id.to_string()),
        ("user", ctx.key.user_id.clone()),
        ("team", ctx.key.team_id.clone()),
        ("org", ctx.key.org_id.clone()),
    ]
    .into_iter()
    .filter(|(_, id)| !id.is_empty())
    .collect()
}

/// Count the call against its rate-limit tiers, reserving its token bound
/// (see [`tiers`]); `Ok(None)` when none of its scopes has a limit. Waits
/// only when this proxy has no allowance left for it (one claim, at most
/// `proxy.tiers.claim_wait_ms`).
async fn admit_rate(
    state: &Arc<ProxyState>,
    ctx: &CallContext,
    request: &Value,
    bound: estimate::TokenBound,
) -> Result<Option<tiers::RateHold>, tiers::RateRefusal> {
    if !state.tiers.is_active() {
        return Ok(None);
    }
    // What the request bounds: its input, and the output it asks for at
    // most. A call that sets no maximum takes its input only, and its
    // output counts when it ends (the hold settles to what it used): the
    // budget's default output (4096) is a guess, and held against a
    // minute's limit it refused short calls under a small limit in every
    // minute.
    let tokens = match estimate::asked_max_output(request) {
        Some(_) => bound.input.saturating_add(bound.output),
        None => bound.input,
    };
    state
        .tiers
        .admit(&rate_scopes(ctx), tokens, chrono::Utc::now())
        .await
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Allow => "allowed",
        Action::Deny => "denied",
        Action::Throttle => "throttled",
        Action::Reroute => "rerouted",
    }
}

/// Answer a refusal and record it as `ai.call.blocked` (off the response path).
async fn refuse(
    state: &Arc<ProxyState>,
    ctx: &CallContext,
    route: &Route,
    outcome: Outcome,
    err: ProxyError,
    started: Instant,
    dialect: Dialect,
) -> Response {
    let provider = if route.provider.is_empty() {
        GATE
    } else {
        route.provider.as_str()
    };
    let event = record::blocked(
        ctx,
        provider,
        &route.model,
        outcome,
        err.status.as_u16(),
        err.code.unwrap_or(err.kind),
        &err.message,
        started.elapsed(),
    );
    ProxyMetrics::inc(&state.metrics.blocked);
    let emitter = state.emitter.clone();
    tokio::spawn(async move { emitter.emit(event).await });
    tracing::info!(call_id = %ctx.call_id, status = err.status.as_u16(), reason = %err.message, "call refused");
    let mut response = err.into_response(dialect);
    // The refusal's event carries this id, as every answer's does.
    if let Ok(id) = axum::http::HeaderValue::from_str(&ctx.call_id) {
        response.headers_mut().insert("x-tollgate-call-id", id);
    }
    response
}
