//! Forwarding one call upstream: the attempt loop (retries with exponential
//! backoff and jitter, only for connect errors, 429 and 5xx, and only before
//! any byte reached the client; fallback models after that), and the relay
//! that passes the response through chunk by chunk while an [`Observer`]
//! reads usage and time to first token, then emits the call's event once the
//! body ends or the client goes away.
//!
//! The exchange with the provider runs in a task of its own
//! ([`forward_detached`]), not in the client's request handler: when a client
//! gives up, axum drops its handler, and an attempt the provider already
//! received (and bills) must still end in an event. A client that is gone
//! gets no further attempt; the one in flight is finished (a non-streamed
//! answer is read to its end for the usage, a stream is dropped so the
//! provider stops generating) and recorded as `cancelled`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::config::WalUnwritable;
use super::errors::ProxyError;
use super::estimate;
use super::metrics::ProxyMetrics;
use super::observe::{self, Dialect, Observer};
use super::overhead::Waits;
use super::record::{AttemptRecord, CallContext};
use super::routing::Route;
use super::trace::{AttemptTarget, AttemptTrace};
use super::{breaker, recovery, Endpoint, ProxyState, Upstream};
use tollgate_contract::signature::SignatureId;
use tollgate_contract::{Outcome, Recovery, Strategy};

/// Error bodies read from upstream are cut at this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Client headers never sent upstream: hop-by-hop, credentials (ours, in
/// any header a provider's SDK puts one: Azure OpenAI's `api-key` and
/// Gemini's `x-goog-api-key` too, which a trial's client sent beside its
/// `authorization` with its Tollgate key in it) and our settings, encodings the observer could not read, and the account the
/// provider bills: with `OpenAI-Organization` or `OpenAI-Project` a client
/// would pick which of the operator's organizations or projects its calls
/// are charged to (a trial's reached the provider beside the operator's
/// key).
const DROPPED_REQUEST_HEADERS: [&str; 19] = [
    "host",
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "accept-encoding",
    "cookie",
    "expect",
    "openai-organization",
    "openai-project",
];

/// Upstream response headers passed to the client.
fn keep_response_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "cache-control"
            | "retry-after"
            | "retry-after-ms"
            | "x-should-retry"
            | "x-request-id"
            | "request-id"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("openai-")
        || name.starts_with("anthropic-")
}

/// The headers of a request to a provider: the client's, less what
/// [`DROPPED_REQUEST_HEADERS`] names, with the provider's `credential`.
pub fn upstream_headers(
    client: &HeaderMap,
    credential: Option<&SecretString>,
    dialect: Dialect,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in client {
        let n = name.as_str();
        if DROPPED_REQUEST_HEADERS.contains(&n) || n.starts_with("x-tollgate-") {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(credential) = credential {
        let credential = credential.expose_secret();
        let (name, value) = match dialect {
            Dialect::OpenAi => (
                "authorization",
                HeaderValue::from_str(&format!("Bearer {credential}")),
            ),
            Dialect::Anthropic => ("x-api-key", HeaderValue::from_str(credential)),
        };
        if let Ok(mut value) = value {
            // Kept out of HTTP/2 header compression tables and debug output.
            value.set_sensitive(true);
            out.insert(name, value);
        }
    }
    if dialect == Dialect::Anthropic && !out.contains_key("anthropic-version") {
        out.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    out
}

/// The body to send for `model`: the client's bytes when nothing changes,
/// otherwise re-encoded with the served model and (OpenAI streams) usage
/// reporting switched on.
fn upstream_body(request: &Value, original: &Bytes, model: &str, inject_usage: bool) -> Bytes {
    let same_model = request.get("model").and_then(Value::as_str) == Some(model);
    if same_model && !inject_usage {
        return original.clone();
    }
    let mut request = request.clone();
    request["model"] = Value::String(model.to_string());
    if inject_usage {
        match request
            .get_mut("stream_options")
            .and_then(Value::as_object_mut)
        {
            Some(options) => {
                options.insert("include_usage".into(), Value::Bool(true));
            }
            None => request["stream_options"] = serde_json::json!({"include_usage": true}),
        }
    }
    Bytes::from(serde_json::to_vec(&request).unwrap_or_else(|_| original.to_vec()))
}

/// Exponential backoff with jitter: uniform in [d/2, d] where d doubles per
/// attempt from `base`, capped at `max`; a longer Retry-After wins.
pub fn backoff(
    attempt: u16,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32 << u32::from(attempt.saturating_sub(1)).min(16));
    let capped = exp.min(max);
    let half = capped / 2;
    let span = (capped - half).as_millis() as u64;
    let jittered = half + Duration::from_millis(rand::random_range(0..=span));
    match retry_after {
        Some(ra) if ra > jittered => ra,
        _ => jittered,
    }
}

/// The provider's wait hint: `retry-after-ms` (OpenAI, Anthropic) when
/// present, else `retry-after` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| number("retry-after"))
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// A failure that can be answered to the client as is.
enum Failure {
    /// The provider answered with an error status.
    Http {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// No answer: connect error or timeout before the first byte.
    NoAnswer { timeout: bool, message: String },
}

/// An attempt's prompt as far as billing needs it when the provider's usage
/// report never comes: the byte bound of [`estimate::token_bound`], and for
/// a chat completion its body and model, counted exactly only then
/// ([`crate::prompt_tokens`]).
struct Prompt {
    bound: u64,
    chat: Option<(Bytes, String)>,
}

impl Prompt {
    fn tokens(&self) -> u64 {
        self.chat
            .as_ref()
            .and_then(|(body, model)| crate::prompt_tokens::chat_input(body, model))
            .unwrap_or(self.bound)
    }
}

/// What the client is told of a request that got no answer: whether the
/// provider could not be reached or dropped the connection, and the
/// innermost cause, without the provider's URL (reqwest's own message names
/// it: the client has no business with the upstream's address).
fn no_answer(err: &reqwest::Error, connect: bool) -> String {
    let what = if connect {
        "cannot reach the upstream provider"
    } else {
        "the upstream provider closed the connection without an answer"
    };
    match innermost_cause(err) {
        Some(cause) => format!("{what} ({cause})"),
        None => what.to_string(),
    }
}

/// `err`'s message and its innermost cause, for the attempt's event.
fn with_cause(err: &reqwest::Error) -> String {
    match innermost_cause(err) {
        Some(cause) => format!("{err}: {cause}"),
        None => err.to_string(),
    }
}

/// The innermost cause of `err` (reqwest's own message names the URL but
/// not why: "connection refused", "connection closed before message
/// completed"), when it has one.
fn innermost_cause(err: &reqwest::Error) -> Option<String> {
    let mut cause: &dyn std::error::Error = std::error::Error::source(err)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

impl Failure {
    /// The client's answer; `final_answer` when the proxy has decided the
    /// call is not worth another attempt (it retried already, or the
    /// provider may be billing a request that timed out), so the client's
    /// SDK must not multiply the attempts.
    fn into_response(self, dialect: Dialect, call_id: &str, final_answer: bool) -> Response {
        let mut response = match self {
            Failure::Http {
                status,
                headers,
                body,
            } => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                copy_headers(&headers, response.headers_mut());
                response
            }
            Failure::NoAnswer {
                timeout: true,
                message,
            } => ProxyError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("the upstream provider did not answer in time: {message}"),
            )
            .into_response(dialect),
            Failure::NoAnswer {
                timeout: false,
                message,
            } => ProxyError::new(StatusCode::BAD_GATEWAY, "api_error", message)
                // A wait hint only for what may be sent again: a client
                // reading Retry-After but not x-should-retry would resend
                // a request the provider may be billing.
                .retry_after((!final_answer).then_some(1))
                .into_response(dialect),
        };
        if let Ok(v) = HeaderValue::from_str(call_id) {
            response.headers_mut().insert("x-tollgate-call-id", v);
        }
        if final_answer {
            response.headers_mut().insert(
                super::errors::SHOULD_RETRY,
                HeaderValue::from_static("false"),
            );
        }
        response
    }
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if keep_response_header(name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// The error type of a 429 that is no rate limit but an exhausted quota
/// (OpenAI: "You exceeded your current quota"): not retried.
pub const QUOTA_EXHAUSTED: &str = "insufficient_quota";

/// Read an error body, bounded in size and time.
async fn read_error_body(response: reqwest::Response, limit: Duration) -> Bytes {
    let read = async {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            let room = MAX_ERROR_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Bytes::from(body)
    };
    tokio::time::timeout(limit, read).await.unwrap_or_default()
}

/// Forward the call from a task of its own and answer the client with what
/// it returns. If the client goes away first (this future is dropped), the
/// task learns it through a cancelled token and still records every attempt.
#[allow(clippy::too_many_arguments)]
pub async fn forward_detached(
    state: Arc<ProxyState>,
    ctx: CallContext,
    endpoint: Endpoint,
    client_headers: HeaderMap,
    request: Value,
    original: Bytes,
    route: Route,
    call_started: Instant,
) -> Response {
    let client_gone = CancellationToken::new();
    let guard = client_gone.clone().drop_guard();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut waits = Waits::default();
        let mut response = forward(
            state,
            ctx,
            endpoint,
            &client_headers,
            &request,
            &original,
            route,
            client_gone,
            call_started,
            &mut waits,
        )
        .await;
        response.extensions_mut().insert(waits);
        // Fails only when the client is gone; the relay notices that too.
        let _ = tx.send(response);
    });
    let response = match rx.await {
        Ok(response) => response,
        Err(_) => ProxyError::unavailable("the call ended without an answer (see the proxy log)")
            .into_response(endpoint.dialect()),
    };
    guard.disarm();
    response
}

/// Forward the call along `route` (then its fallbacks) and answer the client.
///
/// After each failure the next step is decided before the failed attempt's
/// event goes out, so that its `recovery.last` is true exactly when no
/// attempt follows: the options are a retry of the same model (retryable
/// failure, retries left, a wait the proxy accepts) and the configured
/// fallbacks not tried yet, ordered by the learned recovery plan for the
/// failure's signature, minus what a breaker takes out. A retry's event
/// waits for its backoff: a client that leaves meanwhile makes it the last.
/// What the call waits for is added to `waits` (see [`crate::overhead`]).
#[allow(clippy::too_many_arguments)]
async fn forward(
    state: Arc<ProxyState>,
    ctx: CallContext,
    endpoint: Endpoint,
    client_headers: &HeaderMap,
    request: &Value,
    original: &Bytes,
    route: Route,
    client_gone: CancellationToken,
    call_started: Instant,
    waits: &mut Waits,
) -> Response {
    let dialect = endpoint.dialect();
    // The prompt's size from the request, for attempts whose usage report
    // never arrives (the budget reservation's bound: never below the truth).
    let input_estimate = estimate::token_bound(
        request,
        original.len(),
        endpoint == Endpoint::Embeddings,
        state.config.budgets.default_max_tokens,
    )
    .input;
    let client_asked_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let inject_usage = endpoint == Endpoint::ChatCompletions && ctx.stream && !client_asked_usage;
    // The configured fallbacks this key may use, in configured order.
    let mut remaining: Vec<Route> = Vec::new();
    for model in state.routes.fallbacks(&route.model) {
        match state.routes.route(endpoint.kind(), model) {
            Some(r)
                if r != route
                    && !remaining.contains(&r)
                    && ctx.key.allows_model(&r.model)
                    && state.upstreams.contains_key(&r.provider) =>
            {
                remaining.push(r)
            }
            _ => {}
        }
    }
    let mut current = match breaker::admit(&state, &route) {
        Ok(()) => route.clone(),
        Err(skipped) => {
            ProxyMetrics::inc(&state.metrics.breaker_skips);
            let plan = skipped.signature.and_then(|s| {
                state
                    .decisions
                    .recovery_plan(&route.provider, &route.model, s)
            });
            recovery::order_by_plan(&mut remaining, plan.as_ref(), |r| {
                (r.provider.as_str(), r.model.as_str())
            });
            if let Some(to) = &skipped.reroute_to {
                let to = state.routes.resolve_alias(to);
                if let Some(i) = remaining.iter().position(|r| r.model == to) {
                    let target = remaining.remove(i);
                    remaining.insert(0, target);
                }
            }
            let options = remaining.iter().map(|r| (r.clone(), false)).collect();
            match choose_option(&state, options, &mut remaining) {
                Some((next, _)) => {
                    tracing::info!(call_id = %ctx.call_id, from = %route.model, to = %next.model, circuit = %skipped.subject, fleet = skipped.fleet, "breaker skipped the model");
                    next
                }
                None => {
                    let err = ProxyError::unavailable(format!(
                        "{} is out of rotation ({} breaker {} open) and no configured fallback is available",
                        route.model,
                        if skipped.fleet { "fleet" } else { "this proxy's" },
                        skipped.subject,
                    ))
                    .code("circuit_open")
                    .retry_after(Some(skipped.retry_after_secs.max(1)))
                    .final_answer();
                    return super::refuse(
                        &state,
                        &ctx,
                        &route,
                        Outcome::Blocked,
                        err,
                        call_started,
                        dialect,
                    )
                    .await;
                }
            }
        }
    };
    // The call's first attempt keeps the call's id, whichever model serves it.
    let mut template = ctx.attempt(&current.provider, &current.model);
    let mut attempt = 0u16;
    let mut sequence = 0u16;
    let mut first_failure: Option<(SignatureId, String, String)> = None;
    let mut previous_end: Option<Instant> = None;
    let mut final_failure: Option<(Failure, String, bool, bool)> = None;
    while let Some(upstream) = state.upstreams.get(&current.provider) {
        let credential = state.credentials.get(&upstream.name);
        let mut headers = upstream_headers(client_headers, credential.as_deref(), dialect);
        let body = upstream_body(request, original, &current.model, inject_usage);
        let url = format!(
            "{}{}",
            upstream.config.base_url.trim_end_matches('/'),
            endpoint.path()
        );
        let max_attempts = 1 + upstream.config.max_retries.min(10) as u16;
        let base = Duration::from_millis(upstream.config.backoff_base_ms);
        let max_backoff = Duration::from_millis(upstream.config.backoff_max_ms);
        let first_byte = Duration::from_millis(upstream.config.first_byte_timeout_ms);
        attempt += 1;
        sequence = sequence.saturating_add(1);
        let mut record = template.clone();
        record.event_id = Uuid::now_v7();
        record.attempt = attempt;
        let started = Instant::now();
        record.recovery = Some(recovery_facts(
            sequence,
            previous_end.map(|end| started.duration_since(end)),
            first_failure.as_ref(),
            &current,
        ));
        record.trace = AttemptTrace::start(
            state.spans.as_ref(),
            ctx.client_parent,
            &AttemptTarget {
                operation: ctx.operation,
                provider: &current.provider,
                kind: current.kind,
                model: &current.model,
                base_url: &upstream.config.base_url,
            },
            &mut headers,
        );
        let writing = Instant::now();
        let written = write_ahead(&state, &ctx, &record, input_estimate).await;
        waits.wal += writing.elapsed();
        if let Err(err) = written {
            return super::refuse(
                &state,
                &ctx,
                &current,
                Outcome::Blocked,
                err,
                call_started,
                dialect,
            )
            .await;
        }
        ProxyMetrics::inc(&state.metrics.upstream_attempts);
        if attempt > 1 {
            ProxyMetrics::inc(&state.metrics.retries);
        }
        let sent = upstream
            .client
            .post(&url)
            .headers(headers)
            .body(body.clone())
            .send();
        let sent_at = Instant::now();
        let result = tokio::time::timeout(first_byte, sent).await;
        waits.provider += sent_at.elapsed();
        let (failure, retryable, server_wait) = match result {
            Ok(Ok(response)) if response.status().is_success() => {
                state.breakers.success(&current.provider, &current.model);
                // Bytes go to the client from here on: nothing follows.
                if let Some(r) = record.recovery.as_mut() {
                    r.last = true;
                }
                return relay(
                    state.clone(),
                    ctx,
                    record,
                    upstream,
                    endpoint,
                    response,
                    inject_usage,
                    started,
                    client_gone,
                    Prompt {
                        bound: input_estimate,
                        chat: (endpoint == Endpoint::ChatCompletions)
                            .then(|| (body.clone(), current.model.clone())),
                    },
                );
            }
            Ok(Ok(response)) => {
                let status = response.status();
                let headers = response.headers().clone();
                let reading = Instant::now();
                let body = read_error_body(response, first_byte).await;
                waits.provider += reading.elapsed();
                record.http_status = status.as_u16();
                record.outcome = if status == StatusCode::TOO_MANY_REQUESTS {
                    Outcome::RateLimited
                } else if status == StatusCode::GATEWAY_TIMEOUT
                    || status == StatusCode::REQUEST_TIMEOUT
                {
                    Outcome::Timeout
                } else {
                    Outcome::Error
                };
                record.error =
                    Some(observe::error_from_body(dialect, &body).unwrap_or_else(|| {
                        observe::provider_error(
                            &format!("http_{}", status.as_u16()),
                            &String::from_utf8_lossy(&body[..body.len().min(512)]),
                        )
                    }));
                record.response_sha256 = Some(super::record::sha256_hex(&body));
                // An exhausted quota (OpenAI's `insufficient_quota`, a 429)
                // does not pass with a retry: it needs someone to pay. Its
                // retries only made more failures, which opened this
                // proxy's breaker for the model after two requests.
                let exhausted = record
                    .error
                    .as_ref()
                    .is_some_and(|e| e.error_type == QUOTA_EXHAUSTED);
                let retryable = (status == StatusCode::TOO_MANY_REQUESTS && !exhausted)
                    || status.is_server_error();
                let wait = retry_after(&headers);
                (
                    Failure::Http {
                        status,
                        headers,
                        body,
                    },
                    retryable,
                    wait,
                )
            }
            Ok(Err(err)) => {
                // reqwest reports a connect failure before anything was sent:
                // safe to retry. Anything else may have reached the provider.
                let connect = err.is_connect();
                record.outcome = Outcome::Error;
                record.error = Some(observe::provider_error(
                    if connect {
                        "connect_error"
                    } else {
                        "upstream_error"
                    },
                    // The URL for the SRE, and why (the client's answer
                    // leaves the URL out).
                    &with_cause(&err),
                ));
                (
                    Failure::NoAnswer {
                        timeout: false,
                        message: no_answer(&err, connect),
                    },
                    connect,
                    None,
                )
            }
            Err(_) => {
                record.outcome = Outcome::Timeout;
                record.error = Some(observe::provider_error(
                    "timeout",
                    &format!(
                        "no response headers within {} ms (first_byte_timeout_ms)",
                        first_byte.as_millis()
                    ),
                ));
                // Not retried: the provider may be working on (and billing) it.
                (
                    Failure::NoAnswer {
                        timeout: true,
                        message: format!("no response within {} ms", first_byte.as_millis()),
                    },
                    false,
                    None,
                )
            }
        };
        record.duration = started.elapsed();
        record.ended_at = Some(chrono::Utc::now());
        let ended = Instant::now();
        let signature = record.signature();
        // 429 and 5xx (the retryable statuses), timeouts, connect errors.
        let provider_failing = retryable || matches!(failure, Failure::NoAnswer { .. });
        if provider_failing {
            state
                .breakers
                .failure(&current.provider, &current.model, signature);
        } else {
            // It answered: the request was at fault, not the provider.
            state.breakers.success(&current.provider, &current.model);
        }
        if first_failure.is_none() {
            if let Some(sig) = signature {
                first_failure = Some((sig, current.provider.clone(), current.model.clone()));
            }
        }
        tracing::info!(call_id = %record.call_id, provider = %record.provider, model = %record.model, attempt, status = record.http_status, retryable, "upstream attempt failed");
        ProxyMetrics::inc(&state.metrics.upstream_failures);
        // Another model is worth trying after what retrying this one is
        // not: a timeout or a dropped connection (this model may still be
        // working on, and billing, the request; another model is a new
        // request), and the provider refusing its own credential (401,
        // 403: only another provider's model can help).
        let credential_refused = matches!(
            &failure,
            Failure::Http { status, .. }
                if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN
        );
        let falls_back = retryable || provider_failing || credential_refused;
        if credential_refused {
            // None of this provider's models will take its credential:
            // not now, nor after another provider's fallback fails.
            remaining.retain(|r| r.provider != current.provider);
        }
        // No answer that the proxy did not retry (a timeout, a connection
        // dropped after the request went out): the provider may be
        // billing it, so the client's SDK must not send it again either.
        let maybe_billed = matches!(failure, Failure::NoAnswer { .. }) && !retryable;
        final_failure = Some((failure, record.call_id.clone(), retryable, maybe_billed));
        let wait = backoff(attempt, base, max_backoff, server_wait);
        let next = if falls_back && !client_gone.is_cancelled() {
            let mut options: Vec<(Route, bool)> = Vec::with_capacity(remaining.len() + 1);
            let wait_ok = server_wait.is_none_or(|w| w <= max_backoff);
            if retryable && attempt < max_attempts && wait_ok {
                options.push((current.clone(), true));
            }
            options.extend(remaining.iter().map(|r| (r.clone(), false)));
            let configured_first = options.first().cloned();
            let plan = signature.and_then(|s| {
                state
                    .decisions
                    .recovery_plan(&current.provider, &current.model, s)
            });
            recovery::order_by_plan(&mut options, plan.as_ref(), |(r, _)| {
                (r.provider.as_str(), r.model.as_str())
            });
            if plan.is_some() && options.first() != configured_first.as_ref() {
                ProxyMetrics::inc(&state.metrics.recovery_reorders);
            }
            choose_option(&state, options, &mut remaining)
        } else {
            None
        };
        match next {
            None => {
                if let Some(r) = record.recovery.as_mut() {
                    r.last = true;
                }
                state.emit_attempt(&ctx, record).await;
                break;
            }
            Some((_, true)) => {
                // The event waits for the backoff: if the client leaves
                // meanwhile, this attempt is the call's last.
                let sleeping = Instant::now();
                let waited = tokio::select! {
                    () = tokio::time::sleep(wait) => true,
                    () = client_gone.cancelled() => false,
                };
                waits.provider += sleeping.elapsed();
                if let Some(r) = record.recovery.as_mut() {
                    r.last = !waited;
                }
                state.emit_attempt(&ctx, record).await;
                if !waited {
                    break;
                }
            }
            Some((next, false)) => {
                state.emit_attempt(&ctx, record).await;
                template = ctx.attempt(&next.provider, &next.model);
                template.call_id = Uuid::now_v7().to_string();
                template.fallback_of = ctx.call_id.clone();
                tracing::info!(call_id = %ctx.call_id, model = %next.model, "trying fallback model");
                ProxyMetrics::inc(&state.metrics.fallbacks);
                current = next;
                attempt = 0;
            }
        }
        previous_end = Some(ended);
    }
    match final_failure {
        Some((failure, call_id, retryable, maybe_billed)) => {
            // A request that may be billed is final at once; a retryable
            // failure once the proxy has retried it.
            let final_answer = maybe_billed || (retryable && sequence > 1);
            failure.into_response(dialect, &call_id, final_answer)
        }
        None => ProxyError::unavailable("no configured provider could take the call")
            .into_response(dialect),
    }
}

/// Write the attempt's `started` record to the write-ahead log before it
/// is forwarded (nothing to do without a log). When the log cannot be
/// written, `proxy.wal_unwritable` decides: refuse the call (the error to
/// answer) or forward it unprotected.
async fn write_ahead(
    state: &ProxyState,
    ctx: &CallContext,
    record: &AttemptRecord,
    input_estimate: u64,
) -> Result<(), ProxyError> {
    let Some(wal) = state.emitter.wal() else {
        return Ok(());
    };
    let Err(err) = wal.started(&ctx.interrupted(record, input_estimate)).await else {
        return Ok(());
    };
    match state.config.wal_unwritable {
        WalUnwritable::Serve => {
            ProxyMetrics::inc(&state.metrics.wal_unprotected_calls);
            tracing::warn!(call_id = %record.call_id, %err, "forwarding without a write-ahead record (proxy.wal_unwritable = serve)");
            Ok(())
        }
        WalUnwritable::Refuse => {
            ProxyMetrics::inc(&state.metrics.wal_refused_calls);
            Err(ProxyError::unavailable(format!(
                "the call cannot be recorded, so it is not forwarded: {err} (proxy.wal_unwritable = refuse)"
            ))
            .code("unrecordable")
            .retry_after(Some(1)))
        }
    }
}

/// The recovery facts of attempt `sequence` on `route`, after `wait`, in a
/// call whose first failed attempt (if any) was `first_failure`.
fn recovery_facts(
    sequence: u16,
    wait: Option<Duration>,
    first_failure: Option<&(SignatureId, String, String)>,
    route: &Route,
) -> Recovery {
    let wait_ms = wait.map_or(0, |w| u32::try_from(w.as_millis()).unwrap_or(u32::MAX));
    match first_failure {
        Some((signature, provider, model)) if sequence > 1 => Recovery {
            sequence,
            wait_ms: wait_ms.min(86_400_000),
            strategy: Strategy::between(provider, model, &route.provider, &route.model),
            from_signature: Some(*signature),
            from_provider: provider.clone(),
            from_model: model.clone(),
            last: false,
        },
        _ => Recovery {
            sequence: 1,
            wait_ms: 0,
            strategy: Strategy::First,
            from_signature: None,
            from_provider: String::new(),
            from_model: String::new(),
            last: false,
        },
    }
}

/// The first of `options` no breaker takes out (a probe slot is taken when
/// half-open). Fallbacks tried or skipped leave `remaining`.
fn choose_option(
    state: &ProxyState,
    options: Vec<(Route, bool)>,
    remaining: &mut Vec<Route>,
) -> Option<(Route, bool)> {
    for (route, retry) in options {
        if !retry {
            remaining.retain(|r| *r != route);
        }
        match breaker::admit(state, &route) {
            Ok(()) => return Some((route, retry)),
            Err(skipped) => {
                ProxyMetrics::inc(&state.metrics.breaker_skips);
                tracing::info!(provider = %route.provider, model = %route.model, circuit = %skipped.subject, fleet = skipped.fleet, "breaker skipped the model");
            }
        }
    }
    None
}

/// What served the call, on the answer: its call id, the provider and
/// model that answered (after aliases, reroutes and fallbacks), how many
/// attempts the call took, and for a fallback the call id its failed
/// attempts carry (as LiteLLM's `x-litellm-attempted-fallbacks` and
/// `x-litellm-model-id` tell a client what happened).
fn served_by(record: &AttemptRecord, headers: &mut HeaderMap) {
    let attempts = record
        .recovery
        .as_ref()
        .map_or(1, |r| r.sequence)
        .to_string();
    for (name, value) in [
        ("x-tollgate-call-id", record.call_id.as_str()),
        ("x-tollgate-provider", record.provider.as_str()),
        ("x-tollgate-model", record.model.as_str()),
        ("x-tollgate-attempts", attempts.as_str()),
        ("x-tollgate-fallback-of", record.fallback_of.as_str()),
    ] {
        if value.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// Answer the client with the upstream's successful response, streamed
/// through as it arrives; the event is emitted when the body is done.
#[allow(clippy::too_many_arguments)]
fn relay(
    state: Arc<ProxyState>,
    ctx: CallContext,
    record: AttemptRecord,
    upstream: &Upstream,
    endpoint: Endpoint,
    response: reqwest::Response,
    strip_usage_chunk: bool,
    started: Instant,
    client_gone: CancellationToken,
    prompt: Prompt,
) -> Response {
    let status = response.status();
    let mut out = Response::new(Body::empty());
    *out.status_mut() = status;
    copy_headers(response.headers(), out.headers_mut());
    served_by(&record, out.headers_mut());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let idle = Duration::from_millis(upstream.config.idle_timeout_ms);
    let stream = ctx.stream;
    tokio::spawn(async move {
        let mut observer = Observer::new(endpoint.dialect(), stream, strip_usage_chunk)
            .reading_responses(endpoint == Endpoint::Responses);
        let mut record = record;
        record.http_status = status.as_u16();
        let mut body = response.bytes_stream();
        let mut outcome = Outcome::Success;
        // The client went away. A stream is dropped at once so the provider
        // stops generating; a non-streamed answer is billed whole, so it is
        // read to its end (bounded by the idle timeout) for its usage.
        let mut gone = false;
        loop {
            tokio::select! {
                biased;
                () = client_left(&tx, &client_gone), if !gone => {
                    if stream {
                        outcome = Outcome::Cancelled;
                        break;
                    }
                    gone = true;
                }
                next = tokio::time::timeout(idle, body.next()) => match next {
                    Err(_) => {
                        outcome = Outcome::Timeout;
                        record.error = Some(observe::provider_error("timeout", &format!("upstream sent nothing for {} ms (idle_timeout_ms)", idle.as_millis())));
                        let _ = tx.send(Err(std::io::Error::other("upstream idle timeout"))).await;
                        break;
                    }
                    Ok(None) => {
                        let rest = observer.finish();
                        if !gone && !rest.is_empty() && tx.send(Ok(rest)).await.is_err() {
                            gone = true;
                        }
                        break;
                    }
                    Ok(Some(Err(err))) => {
                        outcome = Outcome::Error;
                        record.error = Some(observe::provider_error("upstream_disconnected", &with_cause(&err)));
                        let _ = tx.send(Err(std::io::Error::other("upstream connection lost"))).await;
                        break;
                    }
                    Ok(Some(Ok(chunk))) => {
                        let forward = observer.feed(&chunk);
                        if stream && record.ttft.is_none() && observer.saw_content {
                            record.ttft = Some(started.elapsed());
                        }
                        if !gone && !forward.is_empty() && tx.send(Ok(forward)).await.is_err() {
                            if stream {
                                outcome = Outcome::Cancelled;
                                break;
                            }
                            gone = true;
                        }
                    }
                }
            }
        }
        drop(tx);
        // A client that left after the provider's answer went bad (an SDK
        // raises on a chunk it cannot parse, or on an error event, and
        // hangs up) did not cancel a good call: the provider failed it.
        let provider_failed = observer.error.is_some() || observer.malformed;
        if outcome == Outcome::Success || (outcome == Outcome::Cancelled && provider_failed) {
            if let Some(err) = observer.error.take() {
                outcome = Outcome::Error;
                record.error = Some(err);
            } else if observer.malformed {
                outcome = Outcome::Error;
                record.error = Some(observe::provider_error(
                    "malformed_response",
                    "the provider's response could not be parsed",
                ));
            } else if stream && !observer.complete {
                outcome = Outcome::Error;
                record.error = Some(observe::provider_error(
                    "incomplete_stream",
                    "the stream ended without its end marker",
                ));
            } else if gone || client_gone.is_cancelled() {
                // Complete, but nobody received it.
                outcome = Outcome::Cancelled;
            }
        }
        let (mut usage, estimated) = observer.usage_so_far();
        if !observer.usage_reported {
            // The provider answered 2xx, so it read (and bills) the prompt,
            // but its count never came: a stream cancelled, cut or failed
            // before its usage chunk. Counted off the async threads (a long
            // prompt, and an encoding's first load, take milliseconds).
            let bound = prompt.bound;
            let input = tokio::task::spawn_blocking(move || prompt.tokens())
                .await
                .unwrap_or(bound);
            usage.input_tokens = usage.input_tokens.max(input);
            usage.input_tokens_estimated = true;
        }
        record.usage_estimated =
            (estimated && outcome != Outcome::Success) || usage.input_tokens_estimated;
        record.usage = usage;
        if outcome == Outcome::Cancelled {
            ProxyMetrics::inc(&state.metrics.cancelled);
        }
        record.outcome = outcome;
        record.duration = started.elapsed();
        record.response_sha256 = Some(observer.response_sha256());
        record.response_model = observer.response_model.take();
        tracing::debug!(call_id = %record.call_id, outcome = outcome.as_str(), "call finished");
        state.emit_attempt(&ctx, record).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    *out.body_mut() = Body::from_stream(body);
    out
}

/// Resolves once the client can no longer receive the answer: it left
/// before the response was handed over, or dropped the body while reading.
async fn client_left(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    client_gone: &CancellationToken,
) {
    tokio::select! {
        () = tx.closed() => {}
        () = client_gone.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_goes_in_the_dialect_s_header_marked_sensitive() {
        let mut client = HeaderMap::new();
        client.insert(
            "authorization",
            HeaderValue::from_static("Bearer tg_client"),
        );
        client.insert("x-trace", HeaderValue::from_static("1"));
        client.insert("openai-organization", HeaderValue::from_static("org-other"));
        client.insert("openai-project", HeaderValue::from_static("proj_other"));
        client.insert("api-key", HeaderValue::from_static("tg_client"));
        client.insert("x-goog-api-key", HeaderValue::from_static("tg_client"));
        let credential = SecretString::from("sk-provider");
        let openai = upstream_headers(&client, Some(&credential), Dialect::OpenAi);
        let auth = openai.get("authorization").unwrap();
        assert_eq!(auth, "Bearer sk-provider");
        assert!(auth.is_sensitive());
        assert_eq!(openai.get("x-trace").unwrap(), "1");
        assert!(!format!("{openai:?}").contains("sk-provider"));
        // The client does not choose the account the provider bills.
        assert!(openai.get("openai-organization").is_none());
        assert!(openai.get("openai-project").is_none());
        // Nor does the client's key go upstream in another SDK's header.
        assert!(!format!("{openai:?}").contains("tg_client"));
        let anthropic = upstream_headers(&client, Some(&credential), Dialect::Anthropic);
        assert_eq!(anthropic.get("x-api-key").unwrap(), "sk-provider");
        assert!(anthropic.get("authorization").is_none());
        // Without a credential the client's own key never goes upstream.
        let bare = upstream_headers(&client, None, Dialect::OpenAi);
        assert!(bare.get("authorization").is_none());
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for attempt in 1..8u16 {
            let d = backoff(attempt, base, max, None);
            let full = (base * 2u32.pow(u32::from(attempt) - 1)).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert_eq!(
            backoff(1, base, max, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn recovery_facts_relate_each_attempt_to_the_first_failure() {
        let route = |provider: &str, model: &str| Route {
            provider: provider.into(),
            kind: crate::config::ProviderKind::Openai,
            model: model.into(),
        };
        let first = recovery_facts(1, None, None, &route("p", "a"));
        assert_eq!(
            (
                first.sequence,
                first.strategy,
                first.wait_ms,
                first.from_signature
            ),
            (1, Strategy::First, 0, None)
        );
        let failed = (SignatureId(9), "p".to_string(), "a".to_string());
        for (target, strategy) in [
            (route("p", "a"), Strategy::Retry),
            (route("p", "b"), Strategy::FallbackModel),
            (route("q", "c"), Strategy::FallbackProvider),
        ] {
            let r = recovery_facts(3, Some(Duration::from_millis(42)), Some(&failed), &target);
            assert_eq!((r.sequence, r.strategy, r.wait_ms), (3, strategy, 42));
            assert_eq!(r.from_signature, Some(SignatureId(9)));
            assert_eq!(
                (r.from_provider.as_str(), r.from_model.as_str()),
                ("p", "a")
            );
            assert!(!r.last, "decided by the loop, not here");
        }
    }

    #[test]
    fn usage_injection_rewrites_only_when_needed() {
        let request = serde_json::json!({"model": "m", "stream": true});
        let original = Bytes::from(serde_json::to_vec(&request).unwrap());
        assert_eq!(upstream_body(&request, &original, "m", false), original);
        let injected: Value =
            serde_json::from_slice(&upstream_body(&request, &original, "m2", true)).unwrap();
        assert_eq!(injected["model"], "m2");
        assert_eq!(injected["stream_options"]["include_usage"], true);
    }
}
