//! A stand-in for upstream LLM providers, speaking the OpenAI
//! (`/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`, `/v1/models`)
//! and Anthropic (`/v1/messages`) wire formats, streaming (SSE) and not. It is the only test
//! double the proxy's tests use: everything else is real.
//!
//! What it answers is deterministic so tests can know exact figures:
//! - input tokens = the number of whitespace-separated words in the prompt
//!   (every message's text, plus `system` for Anthropic; the Responses API's
//!   `input` text or items and its `instructions`; at least 1);
//! - output tokens = header `x-mock-output-tokens`, else `max_tokens` /
//!   `max_completion_tokens` / `max_output_tokens`, else the configured
//!   default (16); at most 4096;
//! - cached input tokens = header `x-mock-cached-tokens`, else input / 4;
//! - cache-write tokens (Anthropic) = header `x-mock-cache-write-tokens`, else 0;
//! - reasoning tokens = header `x-mock-reasoning-tokens`, else output / 2 for
//!   models named `o1*`, `o3*`, `o4*` and for Anthropic requests with
//!   `thinking.type = "enabled"`, else 0 (Anthropic reports them as
//!   `usage.output_tokens_details.thinking_tokens`, part of `output_tokens`).
//!
//! The reply text is output-tokens words from a fixed list, one word per
//! streamed chunk. Latency: time to first token and the gap between tokens
//! come from configurable distributions (headers `x-mock-ttft-ms`,
//! `x-mock-inter-token-ms` override them per request); `x-mock-headers-ms`
//! holds a stream's response headers back.
//!
//! Failures are chosen per request with
//! `x-mock-fail: 429|500|503|529|timeout|malformed|disconnect|stream_error`
//! or by a model name containing `fail-<mode>`; a 429 carries `retry-after`
//! (`x-mock-retry-after`, default 1), `retry-after-ms` when
//! `x-mock-retry-after-ms` asks for it, and rate-limit headers. With `x-mock-scenario: <id>`
//! and `x-mock-fail-times: n` only the scenario's first n requests fail.
//! `GET /mock/scenarios/<id>` reports how many requests a scenario saw and the
//! headers of the last one (so tests can count retries and check what a proxy
//! forwarded).
//!
//! Real error bodies: `x-mock-error-shape: <shape>` (or `x-mock-fail: <shape>`,
//! or `fail-<shape>` in the model name) answers with one of [`ErrorShape`]'s
//! provider replies (`openai_tpm`, `openai_rpm`, `openai_quota`,
//! `openai_context_length`, `openai_server_error_request_id`,
//! `anthropic_overloaded`, `anthropic_rate_limit`, `anthropic_prompt_too_long`,
//! `anthropic_api_error`), with its status and fresh ids and numbers each time.
//!
//! A model that fails until told otherwise (to drive a breaker through its
//! cycle): `PUT /mock/faults/<model>` with `{"fail": "<mode or shape>"}` makes
//! every request for that model fail so, whatever its headers say;
//! `DELETE /mock/faults/<model>` lets it recover. `GET /mock/faults/<model>`
//! reports the fault and how many requests named that model.

// Handlers return `Result<_, Response>` so an early reply is one `?`; the
// size of `Response` does not matter at a mock's request rates.
#![allow(clippy::result_large_err)]

mod errors;
mod latency;
mod wire;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::channel::mpsc;
use futures::SinkExt;
use serde_json::{json, Value};

pub use errors::{Dialect, ErrorShape, FailMode, RetryHint};
pub use latency::LatencyDist;

/// Longest reply, in tokens.
pub const MAX_OUTPUT_TOKENS: u64 = 4096;
/// How long a `timeout` failure keeps the request open before giving up.
const TIMEOUT_HOLD: Duration = Duration::from_secs(120);

/// How the mock behaves when a request does not say otherwise.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Time from the request to the first token.
    pub ttft: LatencyDist,
    /// Time between two tokens.
    pub inter_token: LatencyDist,
    /// Output tokens when neither the request nor a header says.
    pub default_output_tokens: u64,
    /// When set, requests must carry this key (`Authorization: Bearer` for
    /// OpenAI routes, `x-api-key` for Anthropic) or get a 401.
    pub api_key: Option<String>,
    /// Models listed by `GET /v1/models`.
    pub models: Vec<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            ttft: LatencyDist::Fixed(Duration::from_millis(20)),
            inter_token: LatencyDist::Fixed(Duration::from_millis(2)),
            default_output_tokens: 16,
            api_key: None,
            models: vec![
                "gpt-4o-mini".into(),
                "gpt-4o".into(),
                "o3-mini".into(),
                "text-embedding-3-small".into(),
            ],
        }
    }
}

#[derive(Default)]
struct Scenario {
    requests: u64,
    last_headers: HashMap<String, String>,
}

/// Per model: the fault set by `PUT /mock/faults/<model>` and the requests seen.
#[derive(Default)]
struct ModelFault {
    fail: Option<FailMode>,
    requests: u64,
}

struct MockState {
    config: MockConfig,
    scenarios: Mutex<HashMap<String, Scenario>>,
    faults: Mutex<HashMap<String, ModelFault>>,
    next_id: AtomicU64,
}

/// The whole reply text of an answer with `output_tokens` tokens.
pub fn reply_text(output_tokens: u64) -> String {
    wire::reply_tokens(output_tokens).concat()
}

/// The mock's routes.
pub fn router(config: MockConfig) -> Router {
    let state = Arc::new(MockState {
        config,
        scenarios: Mutex::new(HashMap::new()),
        faults: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/messages", post(messages))
        .route("/mock/scenarios/{id}", get(scenario))
        .route(
            "/mock/faults/{model}",
            get(fault).put(set_fault).delete(clear_fault),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// Serve the mock on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: MockConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Responses are written in pieces (headers, then chunks): without
    // TCP_NODELAY, Nagle and the client's delayed ACK add ~40 ms per call.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Everything the mock decided about one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub fail: Option<FailMode>,
    pub retry_after: Option<String>,
    pub retry_after_ms: Option<String>,
    pub ttft: Duration,
    pub inter_token: Duration,
    /// How long a stream's response headers wait (`x-mock-headers-ms`,
    /// default 0: providers differ, some answer only with the first token).
    pub headers_delay: Duration,
}

impl Plan {
    /// The words of the reply, one per token.
    pub fn tokens(&self) -> Vec<String> {
        wire::reply_tokens(self.output_tokens)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header(headers, name).and_then(|v| v.trim().parse().ok())
}

fn header_ms(headers: &HeaderMap, name: &str) -> Option<Duration> {
    header_u64(headers, name).map(Duration::from_millis)
}

/// Count the request against its scenario (if any) and decide whether it fails.
fn choose_failure(state: &MockState, headers: &HeaderMap, model: &str) -> Option<FailMode> {
    let fault = {
        let mut faults = lock_faults(state);
        let entry = faults.entry(model.to_string()).or_default();
        entry.requests += 1;
        entry.fail
    };
    let requested = header(headers, "x-mock-fail")
        .and_then(FailMode::parse)
        .or_else(|| {
            header(headers, "x-mock-error-shape")
                .and_then(ErrorShape::parse)
                .map(FailMode::Shape)
        })
        .or_else(|| {
            model
                .split_once("fail-")
                .and_then(|(_, mode)| FailMode::parse(mode))
        });
    let Some(scenario_id) = header(headers, "x-mock-scenario") else {
        return fault.or(requested);
    };
    let count = {
        let mut scenarios = match state.scenarios.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let scenario = scenarios.entry(scenario_id.to_string()).or_default();
        scenario.requests += 1;
        scenario.last_headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        scenario.requests
    };
    match header_u64(headers, "x-mock-fail-times") {
        _ if fault.is_some() => fault,
        Some(times) if count > times => None,
        _ => requested,
    }
}

fn plan(state: &MockState, headers: &HeaderMap, body: &Value, dialect: Dialect) -> Plan {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let input_tokens = wire::count_input_words(body, dialect).max(1);
    let from_request = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .or_else(|| body.get("max_output_tokens"))
        .and_then(Value::as_u64);
    let output_tokens = header_u64(headers, "x-mock-output-tokens")
        .or(from_request)
        .unwrap_or(state.config.default_output_tokens)
        .min(MAX_OUTPUT_TOKENS);
    let cached_tokens = header_u64(headers, "x-mock-cached-tokens")
        .unwrap_or(input_tokens / 4)
        .min(input_tokens);
    let cache_write_tokens = header_u64(headers, "x-mock-cache-write-tokens")
        .unwrap_or(0)
        .min(input_tokens - cached_tokens);
    let thinking = dialect == Dialect::Anthropic
        && body.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled");
    let reasoning_default = if thinking || ["o1", "o3", "o4"].iter().any(|p| model.starts_with(p)) {
        output_tokens / 2
    } else {
        0
    };
    let reasoning_tokens = header_u64(headers, "x-mock-reasoning-tokens")
        .unwrap_or(reasoning_default)
        .min(output_tokens);
    let fail = choose_failure(state, headers, &model);
    Plan {
        retry_after: header(headers, "x-mock-retry-after").map(str::to_string),
        retry_after_ms: header(headers, "x-mock-retry-after-ms").map(str::to_string),
        ttft: header_ms(headers, "x-mock-ttft-ms").unwrap_or_else(|| state.config.ttft.sample()),
        headers_delay: header_ms(headers, "x-mock-headers-ms").unwrap_or_default(),
        inter_token: header_ms(headers, "x-mock-inter-token-ms")
            .unwrap_or_else(|| state.config.inter_token.sample()),
        model,
        input_tokens,
        output_tokens,
        cached_tokens,
        cache_write_tokens,
        reasoning_tokens,
        fail,
    }
}

fn authorized(state: &MockState, headers: &HeaderMap, dialect: Dialect) -> bool {
    let Some(want) = &state.config.api_key else {
        return true;
    };
    let got = match dialect {
        Dialect::OpenAi => header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")),
        Dialect::Anthropic => header(headers, "x-api-key"),
    };
    got == Some(want.as_str())
}

/// Parse the body as a JSON object or answer the provider's 400.
fn parse_body(body: &Bytes, dialect: Dialect) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(errors::invalid_json(dialect)),
    }
}

/// Common preamble of every POST route: auth, JSON, model, plan, and the
/// failures that happen before any byte of a reply.
async fn prepare(
    state: &MockState,
    headers: &HeaderMap,
    body: &Bytes,
    dialect: Dialect,
) -> Result<(Value, Plan), Response> {
    if !authorized(state, headers, dialect) {
        return Err(errors::unauthorized(dialect));
    }
    let value = parse_body(body, dialect)?;
    if value.get("model").and_then(Value::as_str).is_none() {
        return Err(errors::missing_field(dialect, "model"));
    }
    let plan = plan(state, headers, &value, dialect);
    match plan.fail {
        Some(FailMode::Status(status)) => Err(errors::status_error(
            dialect,
            status,
            RetryHint {
                seconds: plan.retry_after.as_deref(),
                millis: plan.retry_after_ms.as_deref(),
            },
        )),
        Some(FailMode::Shape(shape)) => Err(shape.response(RetryHint {
            seconds: plan.retry_after.as_deref(),
            millis: plan.retry_after_ms.as_deref(),
        })),
        Some(FailMode::Timeout) => {
            tokio::time::sleep(TIMEOUT_HOLD).await;
            Err(errors::status_error(dialect, 504, RetryHint::default()))
        }
        _ => Ok((value, plan)),
    }
}

type Chunk = Result<Bytes, std::io::Error>;

/// A streamed body fed by a task; `events` yields what to send and when;
/// `stream_error` is the provider's error event of a `stream_error` failure.
fn sse_response(
    plan: Plan,
    events: Vec<Bytes>,
    first_token_index: usize,
    fail: Option<FailMode>,
    stream_error: Bytes,
) -> Response {
    let (mut tx, rx) = mpsc::channel::<Chunk>(4);
    tokio::spawn(async move {
        let cut = events.len() / 2;
        for (i, event) in events.into_iter().enumerate() {
            if i == first_token_index {
                tokio::time::sleep(plan.ttft).await;
            } else if i > first_token_index && !plan.inter_token.is_zero() {
                tokio::time::sleep(plan.inter_token).await;
            }
            if fail == Some(FailMode::Disconnect) && i == cut {
                let _ = tx.send(Err(std::io::Error::other("mock disconnect"))).await;
                return;
            }
            if fail == Some(FailMode::StreamError) && i == cut {
                let _ = tx.send(Ok(stream_error)).await;
                return;
            }
            if fail == Some(FailMode::Malformed)
                && i == cut
                && tx
                    .send(Ok(Bytes::from_static(
                        b"data: {\"choices\": [{\"delta\": \n\n",
                    )))
                    .await
                    .is_err()
            {
                return;
            }
            if tx.send(Ok(event)).await.is_err() {
                return; // the client went away
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(rx))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A non-streamed JSON reply after the whole generation time, or the
/// malformed / cut-off variants.
async fn json_response(plan: &Plan, body: Value) -> Response {
    let total = plan.ttft + plan.inter_token * (plan.output_tokens.saturating_sub(1) as u32);
    tokio::time::sleep(total).await;
    match plan.fail {
        Some(FailMode::Malformed) => {
            let text = body.to_string();
            let cut = &text[..text.len() / 2];
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                cut.to_string(),
            )
                .into_response()
        }
        Some(FailMode::Disconnect) => {
            let text = body.to_string();
            let head = Bytes::from(text[..text.len() / 2].to_string());
            let chunks: Vec<Chunk> = vec![Ok(head), Err(std::io::Error::other("mock disconnect"))];
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        _ => Json(body).into_response(),
    }
}

async fn chat_completions(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, plan) = match prepare(&state, &headers, &body, Dialect::OpenAi).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let id = format!(
        "chatcmpl-mock{}",
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if stream {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let events = wire::openai_chunks(&id, &plan, include_usage);
        let fail = plan.fail;
        tokio::time::sleep(plan.headers_delay).await;
        sse_response(
            plan,
            events,
            0,
            fail,
            errors::stream_error_event(Dialect::OpenAi),
        )
    } else {
        let body = wire::openai_completion(&id, &plan);
        json_response(&plan, body).await
    }
}

async fn responses(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, plan) = match prepare(&state, &headers, &body, Dialect::OpenAi).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let id = format!(
        "resp_mock{:020}",
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let (events, first) = wire::responses_events(&id, &plan, &request);
        let fail = plan.fail;
        tokio::time::sleep(plan.headers_delay).await;
        let error = wire::responses_error_event(events.len() / 2);
        sse_response(plan, events, first, fail, error)
    } else {
        let body = wire::responses_object(&id, &plan, &request, true);
        json_response(&plan, body).await
    }
}

async fn embeddings(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, plan) = match prepare(&state, &headers, &body, Dialect::OpenAi).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let plan = Plan {
        output_tokens: 0,
        inter_token: Duration::ZERO,
        ..plan
    };
    let body = wire::openai_embeddings(&request, &plan);
    json_response(&plan, body).await
}

async fn models(State(state): State<Arc<MockState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers, Dialect::OpenAi) {
        return errors::unauthorized(Dialect::OpenAi);
    }
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock-upstream"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn messages(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, plan) = match prepare(&state, &headers, &body, Dialect::Anthropic).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    if request.get("max_tokens").and_then(Value::as_u64).is_none() {
        return errors::missing_field(Dialect::Anthropic, "max_tokens");
    }
    let id = format!(
        "msg_mock{:020}",
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if stream {
        let (events, first) = wire::anthropic_events(&id, &plan);
        let fail = plan.fail;
        tokio::time::sleep(plan.headers_delay).await;
        sse_response(
            plan,
            events,
            first,
            fail,
            errors::stream_error_event(Dialect::Anthropic),
        )
    } else {
        let body = wire::anthropic_message(&id, &plan);
        json_response(&plan, body).await
    }
}

async fn scenario(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Infallible> {
    let scenarios = match state.scenarios.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let (requests, headers) = scenarios
        .get(&id)
        .map(|s| (s.requests, s.last_headers.clone()))
        .unwrap_or_default();
    Ok(Json(json!({"requests": requests, "last_headers": headers})))
}

fn lock_faults(state: &MockState) -> std::sync::MutexGuard<'_, HashMap<String, ModelFault>> {
    match state.faults.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

async fn fault(State(state): State<Arc<MockState>>, Path(model): Path<String>) -> Json<Value> {
    let faults = lock_faults(&state);
    let (fail, requests) = faults
        .get(&model)
        .map(|f| (f.fail.map(|m| format!("{m:?}")), f.requests))
        .unwrap_or_default();
    Json(json!({"model": model, "fail": fail, "requests": requests}))
}

async fn set_fault(
    State(state): State<Arc<MockState>>,
    Path(model): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let Some(mode) = body
        .get("fail")
        .and_then(Value::as_str)
        .and_then(FailMode::parse)
    else {
        return (
            StatusCode::BAD_REQUEST,
            "`fail` must be a failure mode (429, 503, timeout, ...) or an error shape (openai_tpm, anthropic_overloaded, ...)",
        )
            .into_response();
    };
    lock_faults(&state).entry(model).or_default().fail = Some(mode);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_fault(State(state): State<Arc<MockState>>, Path(model): Path<String>) -> StatusCode {
    if let Some(f) = lock_faults(&state).get_mut(&model) {
        f.fail = None;
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> MockState {
        MockState {
            config: MockConfig::default(),
            scenarios: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    #[test]
    fn token_counts_follow_the_documented_rules() {
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two three"}]}
        ]});
        let p = plan(&state(), &HeaderMap::new(), &body, Dialect::OpenAi);
        assert_eq!(
            (p.input_tokens, p.output_tokens, p.cached_tokens),
            (5, 5, 1)
        );
        assert_eq!(p.reasoning_tokens, 0);
        assert_eq!(p.tokens().len(), 5);
        let body = json!({"model": "o3-mini", "messages": [{"role": "user", "content": "a b c d e f g h"}]});
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-output-tokens", "10".parse().unwrap());
        let p = plan(&state(), &headers, &body, Dialect::OpenAi);
        assert_eq!(
            (
                p.input_tokens,
                p.output_tokens,
                p.cached_tokens,
                p.reasoning_tokens
            ),
            (8, 10, 2, 5)
        );
        let body = json!({"model": "claude", "max_tokens": 3, "system": "x y", "messages": [{"role": "user", "content": "a b c"}]});
        let p = plan(&state(), &HeaderMap::new(), &body, Dialect::Anthropic);
        assert_eq!((p.input_tokens, p.output_tokens), (5, 3));
        let body = json!({"model": "claude", "max_tokens": 10, "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [{"role": "user", "content": "a"}]});
        let p = plan(&state(), &HeaderMap::new(), &body, Dialect::Anthropic);
        assert_eq!((p.output_tokens, p.reasoning_tokens), (10, 5));
        assert_eq!(
            wire::anthropic_message("m", &p)["usage"]["output_tokens_details"]["thinking_tokens"],
            5
        );
    }

    #[test]
    fn scenario_fails_only_the_first_n_requests() {
        let state = state();
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-fail", "500".parse().unwrap());
        headers.insert("x-mock-scenario", "s1".parse().unwrap());
        headers.insert("x-mock-fail-times", "2".parse().unwrap());
        let fails: Vec<bool> = (0..4)
            .map(|_| choose_failure(&state, &headers, "m").is_some())
            .collect();
        assert_eq!(fails, vec![true, true, false, false]);
        assert_eq!(
            choose_failure(&state, &HeaderMap::new(), "mock-fail-429"),
            Some(FailMode::Status(429))
        );
        let mut shape = HeaderMap::new();
        shape.insert("x-mock-error-shape", "openai_tpm".parse().unwrap());
        assert_eq!(
            choose_failure(&state, &shape, "m"),
            Some(FailMode::Shape(ErrorShape::OpenaiTpm))
        );
    }

    #[test]
    fn a_faulted_model_fails_whatever_the_headers_until_cleared() {
        let state = state();
        lock_faults(&state).entry("m".into()).or_default().fail =
            Some(FailMode::Shape(ErrorShape::AnthropicOverloaded));
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-scenario", "s".parse().unwrap());
        headers.insert("x-mock-fail-times", "0".parse().unwrap());
        assert!(choose_failure(&state, &headers, "m").is_some());
        assert!(choose_failure(&state, &HeaderMap::new(), "other").is_none());
        lock_faults(&state).get_mut("m").unwrap().fail = None;
        assert!(choose_failure(&state, &HeaderMap::new(), "m").is_none());
        assert_eq!(lock_faults(&state)["m"].requests, 2);
    }
}
