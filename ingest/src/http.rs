//! The HTTP batch ingest API: authenticates the caller, reads a bounded body,
//! validates every event on its own, produces the valid ones to Kafka and tells
//! the client, per event, what happened.
//!
//! Routes:
//! - `POST /v1/events`: `Authorization: Bearer <key>`; body a JSON array, a
//!   single JSON object, or NDJSON (`Content-Type: application/x-ndjson`).
//! - `GET /v1/schema`: the JSON Schema of one event.
//! - `GET /healthz`: `{"status":"ok"}`.
//! - `POST /v1/traces`: OTLP/HTTP traces (`crate::otlp`, `docs/otlp.md`).
//!
//! Response of `POST /v1/events` when the body could be split into events:
//!
//! ```json
//! {"accepted": 1, "rejected": 1, "failed": 0, "results": [
//!   {"index": 0, "status": "accepted", "event_id": "0190..."},
//!   {"index": 1, "status": "rejected", "event_id": "0190...", "field": "call.usage.input_tokens", "reason": "..."},
//!   {"index": 2, "status": "failed", "event_id": "0190...", "reason": "...", "retryable": true}
//! ]}
//! ```
//!
//! `index` is the 0-based position of the event in the body (blank NDJSON
//! lines do not count). `event_id` on a rejected item is echoed when the item
//! had one. "accepted" is reported only after Kafka acknowledged the event.
//! Status: 200 when at least one event was accepted (check `rejected` and
//! `failed`); 400 when none was valid (same body plus `"error"`); 503 with
//! `Retry-After` when none was accepted and at least one failed in Kafka (same
//! body plus `"error"` and `"retryable": true`). Errors about the request as a
//! whole are `{"error": "...", "field": "body"}` (400), 401 for a missing,
//! unknown or revoked key, 403 for a key whose role may not ingest, 413 (JSON,
//! naming the limit) for a body over `ingest.max_body_bytes`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::{Instrument, Level};
use uuid::Uuid;

use crate::config::IngestConfig;
use crate::error::IngestError;
use crate::metrics::{Api, IngestMetrics, Refusal};
use tollgate_contract::{
    check_item_count, event_schema, split_items, BatchItem, BodyFormat, Event, Limits, Rejection,
};
use tollgate_control::http_server::{
    self, is_body_timeout, ReadTimeouts, ServeOptions, DEFAULT_READ_TIMEOUTS,
};
use tollgate_control::kafka::{Delivered, EventProducer, ProduceError};
use tollgate_control::key_cache::{KeyCache, KeyCachePolicy};
use tollgate_control::keys::{ApiKey, KeyStore, TenantKey, INGEST_ROLES};
use tollgate_control::pipeline_health::Tally;

/// After a body went over the limit, keep reading (and discarding) at most
/// this much so the client sees the 413 instead of a reset connection.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
const MAX_DRAIN_TIME: Duration = Duration::from_secs(10);

/// What the ingest handlers share.
pub struct IngestState {
    pub keys: KeyStore,
    /// Keys verified recently (`ingest.key_cache_secs`), trusted through a
    /// PostgreSQL outage for `ingest.key_cache_stale_secs`, with the team
    /// and user they are scoped to (the OTLP receiver's tenant).
    pub verified_keys: KeyCache<TenantKey>,
    pub producer: EventProducer,
    pub limits: Limits,
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    /// Events answered `rejected` since the health sampler last took the
    /// count (`tollgate_control::pipeline_health`).
    pub rejected: Arc<Tally>,
    /// What `/metrics` reports about ingest (`crate::metrics`).
    pub metrics: Arc<IngestMetrics>,
    /// The OTLP trace receiver's counters and recent span ids.
    pub otlp: crate::otlp::OtlpReceiver,
    /// How long a client may take over its request (`ingest.body_read_timeout_secs`;
    /// the headers' is [`ReadTimeouts::headers`]'s default, see [`serve`]).
    pub read_timeouts: ReadTimeouts,
}

impl IngestState {
    /// `postgres_address` names PostgreSQL in errors (without a password).
    pub fn new(
        keys: KeyStore,
        producer: EventProducer,
        config: &IngestConfig,
        postgres_address: &str,
        proxies: crate::otlp::proxied::ProxyAddresses,
    ) -> Self {
        Self {
            keys,
            verified_keys: KeyCache::new(
                KeyCachePolicy::from_secs(config.key_cache_secs, config.key_cache_stale_secs),
                postgres_address,
            ),
            producer,
            limits: Limits {
                max_future_skew: chrono::Duration::seconds(config.max_future_skew_secs),
                max_age: chrono::Duration::days(config.max_age_days),
                ..Limits::default()
            },
            max_body_bytes: config.max_body_bytes,
            max_events_per_request: config.max_events_per_request,
            rejected: Arc::new(Tally::default()),
            metrics: Arc::new(IngestMetrics::default()),
            otlp: crate::otlp::OtlpReceiver::new(config.otlp_recent_spans, proxies),
            read_timeouts: ReadTimeouts::from_secs(0, config.body_read_timeout_secs),
        }
    }
}

/// The ingest API's routes, with request tracing.
pub fn ingest_router(state: Arc<IngestState>) -> Router {
    let limit = state.max_body_bytes;
    let read_timeouts = state.read_timeouts;
    let router = Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/traces", post(crate::otlp::http::post_traces))
        .route("/v1/schema", get(get_schema))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // `POST /v1/events` enforces the limit itself while streaming; this
        // covers any extractor added later, and the layer below turns any bare
        // 413 into JSON that names the limit.
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response_with_state(
            limit,
            json_payload_too_large,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        );
    // A client that stops sending its body is cut off
    // (`ingest.body_read_timeout_secs`): `read_body` answers 408.
    read_timeouts.bound_bodies(router)
}

/// Serve `router` on `listener` until `shutdown` completes, then finish the
/// requests in flight. A connection whose request headers take longer than
/// [`DEFAULT_READ_TIMEOUTS`]' 10 s is closed (`docs/ingest-api.md`, "Slow
/// clients").
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_timeouts(listener, router, DEFAULT_READ_TIMEOUTS, shutdown).await
}

/// [`serve`] with the headers' timeout of `timeouts` (the body's is the
/// router's, [`ingest_router`]).
pub async fn serve_with_timeouts(
    listener: tokio::net::TcpListener,
    router: Router,
    timeouts: ReadTimeouts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http_server::serve(
        listener,
        router,
        timeouts.headers,
        ServeOptions::default(),
        shutdown,
    )
    .await
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn get_schema() -> Json<Value> {
    Json(event_schema())
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no such route; the ingest API serves POST /v1/events, POST /v1/traces (OTLP), GET /v1/schema, GET /healthz" })),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": "method not allowed on this route" })),
    )
        .into_response()
}

async fn json_payload_too_large(State(limit): State<usize>, response: Response) -> Response {
    let answered = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // A JSON body, or OTLP/HTTP's protobuf `google.rpc.Status`, is
        // already the answer.
        .is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with("application/x-protobuf")
        });
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !answered {
        return IngestError::BodyTooLarge { limit }.into_response();
    }
    response
}

async fn post_events(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match authenticate(&state, &headers).await {
        Ok(key) => key,
        Err(err) => return refuse(&state, err),
    };
    let span = tracing::info_span!("ingest_batch", key = %key.prefix, key_org = key.org_id.as_deref().unwrap_or("*"));
    ingest_batch(&state, &key, &headers, body)
        .instrument(span)
        .await
}

async fn ingest_batch(
    state: &IngestState,
    key: &ApiKey,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let bytes = match read_body(body, headers, state.max_body_bytes)
        .await
        .and_then(|raw| crate::content_encoding::decode(headers, raw, state.max_body_bytes))
    {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::info!(%err, "request body refused");
            return refuse(state, err);
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let items = split_items(&bytes, BodyFormat::from_content_type(content_type))
        .map_err(|r| (Refusal::Malformed, r))
        .and_then(|items| {
            check_item_count(items.len(), state.max_events_per_request)
                .map(|()| items)
                .map_err(|r| (Refusal::TooManyEvents, r))
        });
    let items = match items {
        Ok(items) => items,
        Err((refusal, rejection)) => {
            tracing::info!(field = %rejection.field, reason = %rejection.reason, bytes = bytes.len(), "request body unusable");
            let err = IngestError::refused(refusal, rejection.field, rejection.reason);
            return refuse(state, err);
        }
    };
    let sender = key.id.to_string();
    let plan = plan_batch(
        items,
        key.org_id.as_deref(),
        &sender,
        Utc::now(),
        &state.limits,
    );
    let deliveries = produce(state, &plan.events).await;
    let (status, response) = plan.finish(deliveries);
    // Events the client sent that were refused as bad (the `rejected` items
    // of a 200 or 400 answer). A body refused whole (401, 403, 413, or not
    // splittable into events) has no events to count: `refuse` counts the
    // request by its reason instead.
    state.rejected.add(response.rejected as u64);
    state
        .metrics
        .events(response.accepted, response.rejected, response.failed);
    for result in &response.results {
        if let ItemOutcome::Rejected { field, .. } = &result.outcome {
            state.metrics.rejected(Api::Events, field);
        }
    }
    tracing::info!(
        status = status.as_u16(),
        accepted = response.accepted,
        rejected = response.rejected,
        failed = response.failed,
        bytes = bytes.len(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "ingest batch"
    );
    let mut http = (status, Json(response)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        http.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    http
}

/// Answer a `POST /v1/events` refused whole, counted by its reason.
fn refuse(state: &IngestState, err: IngestError) -> Response {
    state.metrics.refused(Api::Events, err.refusal());
    err.into_response()
}

/// Produce `events`, or, while the producer knows no broker is reachable,
/// fail each at once (retryable) instead of queueing it: the client gets
/// its 503 with `Retry-After` now rather than after
/// `kafka.message_timeout_ms`.
pub(crate) async fn produce(
    state: &IngestState,
    events: &[Event],
) -> Vec<Result<Delivered, ProduceError>> {
    if events.is_empty() {
        return Vec::new();
    }
    if let Err(err) = state.producer.ensure_reachable() {
        let refused = ProduceError {
            reason: err.to_string(),
            retryable: true,
        };
        return vec![Err(refused); events.len()];
    }
    state.producer.send_batch(events).await
}

/// The key behind `Authorization: Bearer <secret>`, if it may ingest.
async fn authenticate(state: &IngestState, headers: &HeaderMap) -> Result<ApiKey, IngestError> {
    Ok(verify_secret(state, bearer_token(headers)).await?.key)
}

/// The token of `Authorization: Bearer <token>`, when there is one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
}

/// The key a presented secret belongs to, with its team and user, if it
/// may ingest: from the cache of verified keys, else PostgreSQL. While
/// PostgreSQL does not answer, a key verified within
/// `ingest.key_cache_stale_secs` keeps working and any other gets a 503
/// (never a 401: the key may well be valid).
pub(crate) async fn verify_secret(
    state: &IngestState,
    secret: Option<&str>,
) -> Result<TenantKey, IngestError> {
    let secret = secret.ok_or(IngestError::MissingApiKey)?;
    let verified = state
        .verified_keys
        .get(secret, || state.keys.verify_with_tenant(secret))
        .await
        .map_err(|err| match err.fault() {
            tollgate_contract::Fault::External => IngestError::KeysUnavailable {
                reason: err.to_string(),
            },
            _ => IngestError::Control(err),
        })?
        .ok_or(IngestError::InvalidApiKey)?;
    if !verified.key.may_ingest() {
        return Err(IngestError::Forbidden {
            prefix: verified.key.prefix,
            role: verified.key.role,
            allowed: INGEST_ROLES.join(", "),
        });
    }
    Ok(verified)
}

/// Read at most `limit` bytes. Over the limit, the rest is drained (bounded)
/// before answering 413, unless the client waits for `100 Continue` and has
/// not sent the body yet.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, IngestError> {
    let too_large = IngestError::BodyTooLarge { limit };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if declared.is_some_and(|n| n > limit)
        && (expects_continue || declared.is_some_and(|n| n > MAX_DRAIN_BYTES))
    {
        return Err(too_large);
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            if is_body_timeout(&err) {
                return IngestError::BodyReadTimeout;
            }
            IngestError::bad_request("body", format!("could not read the request body: {err}"))
        })?;
        if buf.len() + chunk.len() > limit {
            let mut seen = buf.len() + chunk.len();
            drop(buf);
            let deadline = tokio::time::Instant::now() + MAX_DRAIN_TIME;
            while seen <= MAX_DRAIN_BYTES {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(more))) => seen += more.len(),
                    _ => break,
                }
            }
            return Err(too_large);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// What became of one item of the body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ItemOutcome {
    Accepted {
        event_id: Uuid,
    },
    Rejected {
        #[serde(skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        field: String,
        reason: String,
    },
    Failed {
        event_id: Uuid,
        reason: String,
        retryable: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemResult {
    pub index: usize,
    #[serde(flatten)]
    pub outcome: ItemOutcome,
}

/// Body of the `POST /v1/events` response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    pub accepted: usize,
    pub rejected: usize,
    pub failed: usize,
    pub results: Vec<ItemResult>,
}

/// The validated batch before it is produced: which items go to Kafka (in
/// `events`) and which were rejected, in body order.
#[derive(Debug)]
pub struct BatchPlan {
    items: Vec<Planned>,
    pub events: Vec<Event>,
}

#[derive(Debug)]
enum Planned {
    /// Index into `BatchPlan::events`.
    Produce(usize),
    Rejected {
        event_id: Option<String>,
        rejection: Rejection,
    },
}

/// Validate every item at `now`: contract, org scope of the key, and unique
/// `event_id` within the request; an event that names no `api_key_id` is
/// recorded under the sending key's id (`key_id`), as OTLP spans are.
/// Pure, so it is tested without servers.
pub fn plan_batch(
    items: Vec<BatchItem<'_>>,
    key_org: Option<&str>,
    key_id: &str,
    now: DateTime<Utc>,
    limits: &Limits,
) -> BatchPlan {
    let mut plan = BatchPlan {
        items: Vec::with_capacity(items.len()),
        events: Vec::with_capacity(items.len()),
    };
    let mut seen: HashSet<Uuid> = HashSet::with_capacity(items.len());
    for item in items {
        let checked = item.event(now, limits).and_then(|mut event| {
            if let Some(refusal) = tollgate_contract::admin::refused_at_the_edge(&event) {
                return Err(refusal);
            }
            if let Some(org) = key_org {
                if event.org_id != org {
                    return Err(Rejection::new(
                        "org_id",
                        format!(
                            "this API key may only send events for org {org:?}, not {:?}",
                            event.org_id
                        ),
                    ));
                }
            }
            if !seen.insert(event.event_id) {
                return Err(Rejection::new("event_id", "duplicate in this request"));
            }
            if event.api_key_id.is_empty() {
                event.api_key_id = key_id.to_string();
            }
            Ok(event)
        });
        match checked {
            Ok(event) => {
                plan.items.push(Planned::Produce(plan.events.len()));
                plan.events.push(event);
            }
            Err(rejection) => {
                tracing::debug!(index = plan.items.len(), field = %rejection.field, reason = %rejection.reason, "event rejected");
                plan.items.push(Planned::Rejected {
                    event_id: item.echoable_event_id(),
                    rejection,
                });
            }
        }
    }
    plan
}

impl BatchPlan {
    /// Combine the plan with Kafka's answers (one per `events`, in order)
    /// into the HTTP status and body.
    pub fn finish(
        self,
        deliveries: Vec<Result<Delivered, ProduceError>>,
    ) -> (StatusCode, BatchResponse) {
        let mut response = BatchResponse {
            error: None,
            retryable: None,
            accepted: 0,
            rejected: 0,
            failed: 0,
            results: Vec::with_capacity(self.items.len()),
        };
        for (index, item) in self.items.into_iter().enumerate() {
            let outcome = match item {
                Planned::Rejected {
                    event_id,
                    rejection,
                } => {
                    response.rejected += 1;
                    ItemOutcome::Rejected {
                        event_id,
                        field: rejection.field,
                        reason: rejection.reason,
                    }
                }
                Planned::Produce(i) => {
                    let event_id = self.events.get(i).map(|e| e.event_id).unwrap_or_default();
                    match deliveries.get(i) {
                        Some(Ok(_)) => {
                            response.accepted += 1;
                            ItemOutcome::Accepted { event_id }
                        }
                        Some(Err(err)) => {
                            response.failed += 1;
                            ItemOutcome::Failed {
                                event_id,
                                reason: err.reason.clone(),
                                retryable: err.retryable,
                            }
                        }
                        None => {
                            response.failed += 1;
                            ItemOutcome::Failed {
                                event_id,
                                reason: "no delivery report from kafka".into(),
                                retryable: true,
                            }
                        }
                    }
                }
            };
            response.results.push(ItemResult { index, outcome });
        }
        let status = if response.accepted > 0 {
            StatusCode::OK
        } else if response.failed > 0 {
            response.error = Some(format!(
                "kafka did not acknowledge any of the {} valid events; retry later",
                response.failed
            ));
            response.retryable = Some(true);
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            response.error = Some(format!(
                "none of the {} events is valid; see results for the field and reason of each",
                response.rejected
            ));
            StatusCode::BAD_REQUEST
        };
        (status, response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use tollgate_contract::SCHEMA_VERSION;

    fn event(org: &str, id: Uuid) -> Value {
        json!({
            "schema_version": SCHEMA_VERSION,
            "event_id": id,
            "kind": "ai.call.completed",
            "occurred_at": Utc::now().to_rfc3339(),
            "org_id": org,
            "team_id": "team-a",
            "call": {
                "call_id": "c1", "provider": "openai", "model": "gpt-4o", "operation": "chat",
                "duration_ms": 120, "outcome": "success",
                "usage": {"input_tokens": 10, "output_tokens": 5}
            }
        })
    }

    /// The JSON texts of `values`, as a body holds its items.
    fn texts(values: Vec<Value>) -> Vec<Box<RawValue>> {
        values
            .iter()
            .map(|v| RawValue::from_string(v.to_string()).unwrap())
            .collect()
    }

    fn items(texts: &[Box<RawValue>]) -> Vec<BatchItem<'_>> {
        texts.iter().map(|t| BatchItem::Json(t)).collect()
    }

    #[test]
    fn an_event_without_api_key_id_is_the_sending_keys() {
        let mut named = event("acme", Uuid::now_v7());
        named["api_key_id"] = json!("reporter-says");
        let texts = texts(vec![event("acme", Uuid::now_v7()), named]);
        let plan = plan_batch(items(&texts), None, "k-1", Utc::now(), &Limits::default());
        let keys: Vec<&str> = plan.events.iter().map(|e| e.api_key_id.as_str()).collect();
        assert_eq!(keys, ["k-1", "reporter-says"]);
    }

    #[test]
    fn org_scoped_key_rejects_other_orgs_and_duplicates() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let texts = texts(vec![event("acme", a), event("other", b), event("acme", a)]);
        let plan = plan_batch(
            items(&texts),
            Some("acme"),
            "k-1",
            Utc::now(),
            &Limits::default(),
        );
        assert_eq!(plan.events.len(), 1);
        let (status, response) = plan.finish(vec![Ok(Delivered {
            partition: 0,
            offset: 7,
        })]);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (response.accepted, response.rejected, response.failed),
            (1, 2, 0)
        );
        assert_eq!(
            response.results[0].outcome,
            ItemOutcome::Accepted { event_id: a }
        );
        match &response.results[1].outcome {
            ItemOutcome::Rejected {
                field, event_id, ..
            } => {
                assert_eq!(field, "org_id");
                assert_eq!(event_id.as_deref(), Some(b.to_string().as_str()));
            }
            other => panic!("unexpected {other:?}"),
        }
        match &response.results[2].outcome {
            ItemOutcome::Rejected { field, reason, .. } => {
                assert_eq!(field, "event_id");
                assert_eq!(reason, "duplicate in this request");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn control_plane_events_and_its_org_are_refused() {
        let mut erasure = event("acme", Uuid::now_v7());
        erasure["kind"] = json!("admin.personal_data.erased");
        erasure.as_object_mut().unwrap().remove("call");
        erasure["admin"] = json!({"chain_id": "acme/team-a", "seqs": [4], "entry_hashes": ["00"]});
        let mut control_team = event("acme", Uuid::now_v7());
        control_team["team_id"] = json!("_tollgate");
        let texts = texts(vec![
            erasure,
            event("_tollgate", Uuid::now_v7()),
            control_team,
            event("acme", Uuid::now_v7()),
        ]);
        let plan = plan_batch(items(&texts), None, "k-1", Utc::now(), &Limits::default());
        assert_eq!(plan.events.len(), 1);
        let (_, response) = plan.finish(vec![Ok(Delivered {
            partition: 0,
            offset: 1,
        })]);
        let fields: Vec<&str> = response
            .results
            .iter()
            .filter_map(|r| match &r.outcome {
                ItemOutcome::Rejected { field, reason, .. } => {
                    assert!(
                        reason.contains("control-plane") || reason.contains("reserved"),
                        "{reason}"
                    );
                    Some(field.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(fields, ["kind", "org_id", "team_id"]);
    }

    #[test]
    fn unscoped_key_may_send_any_org() {
        let texts = texts(vec![
            event("acme", Uuid::now_v7()),
            event("other", Uuid::now_v7()),
        ]);
        let plan = plan_batch(items(&texts), None, "k-1", Utc::now(), &Limits::default());
        assert_eq!(plan.events.len(), 2);
    }

    #[test]
    fn all_failed_in_kafka_is_503_and_all_rejected_is_400() {
        let one = texts(vec![event("acme", Uuid::now_v7())]);
        let plan = plan_batch(items(&one), None, "k-1", Utc::now(), &Limits::default());
        let (status, response) = plan.finish(vec![Err(ProduceError {
            reason: "timed out".into(),
            retryable: true,
        })]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.failed, 1);
        assert_eq!(response.retryable, Some(true));
        let body = serde_json::to_value(&response).unwrap();
        assert_eq!(body["results"][0]["status"], "failed");
        assert_eq!(body["results"][0]["retryable"], true);

        let bad = texts(vec![json!({"schema_version": 2})]);
        let plan = plan_batch(items(&bad), None, "k-1", Utc::now(), &Limits::default());
        let (status, response) = plan.finish(vec![]);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(response.rejected, 1);
        assert!(response.error.is_some());
    }

    #[tokio::test]
    async fn bare_413_becomes_json_naming_the_limit() {
        let bare = StatusCode::PAYLOAD_TOO_LARGE.into_response();
        let response = json_payload_too_large(State(1234), bare).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("1234 bytes"),
            "{body}"
        );
        // OTLP/HTTP's protobuf status passes through, as do other responses.
        let protobuf = (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            vec![8u8, 8],
        )
            .into_response();
        let response = json_payload_too_large(State(1234), protobuf).await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-protobuf"
        );
        let ok = json_payload_too_large(State(1234), StatusCode::OK.into_response()).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[test]
    fn response_shape_is_stable() {
        let id = Uuid::now_v7();
        let text = texts(vec![event("acme", id)]);
        let plan = plan_batch(
            vec![
                BatchItem::Json(&text[0]),
                BatchItem::Malformed(Rejection::new("event", "malformed JSON on line 2")),
            ],
            None,
            "k-1",
            Utc::now(),
            &Limits::default(),
        );
        let (_, response) = plan.finish(vec![Ok(Delivered {
            partition: 1,
            offset: 2,
        })]);
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({
                "accepted": 1, "rejected": 1, "failed": 0,
                "results": [
                    {"index": 0, "status": "accepted", "event_id": id},
                    {"index": 1, "status": "rejected", "field": "event", "reason": "malformed JSON on line 2"}
                ]
            })
        );
    }
}
