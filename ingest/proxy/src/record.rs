//! Turning what the proxy saw of a call into `ai.call.*` events: the tenant
//! comes from the virtual key, bodies appear only as SHA-256 digests, and
//! every upstream attempt is one event (same `call_id`, `attempt` counting
//! from 1; a fallback model gets a new `call_id` with `fallback_of`).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{SubsecRound, Utc};
use opentelemetry::trace::{SpanId, TraceId};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth::VirtualKey;
use super::trace::{AttemptTrace, ClientParent};
use tollgate_contract::signature::{
    mask, signature, signature_of_template, ErrorInput, SignatureId,
};
use tollgate_contract::{
    Call, Event, EventKind, Operation, Outcome, ProviderError, Recovery, Usage, SCHEMA_VERSION,
};

const TAG_HEADER_PREFIX: &str = "x-tollgate-tag-";
const MAX_TAGS: usize = 16;

/// What is known about a call before it is forwarded.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub key: VirtualKey,
    pub call_id: String,
    /// The trace id the client gave in `x-tollgate-trace-id` (it wins
    /// over the W3C trace id for `call.trace_id`).
    pub explicit_trace_id: Option<String>,
    /// The client's valid W3C `traceparent`, if any.
    pub client_parent: Option<ClientParent>,
    pub requested_model: String,
    pub operation: Operation,
    pub stream: bool,
    pub prompt_sha256: String,
    pub tags: BTreeMap<String, String>,
    /// The call's budget reservation, released when the last clone of the
    /// context is dropped (after the call's last event is charged).
    pub budget: Option<std::sync::Arc<super::budget::Reservation>>,
    /// The call's hold on its rate-limit tiers, settled with the tokens its
    /// attempts used when the last clone of the context is dropped.
    pub rate: Option<std::sync::Arc<super::tiers::RateHold>>,
}

/// How one attempt (or refusal) ended.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The id of the attempt's event, fixed when the attempt starts so the
    /// write-ahead log's `started` record and the final event share it.
    pub event_id: Uuid,
    pub call_id: String,
    pub fallback_of: String,
    pub provider: String,
    pub model: String,
    pub attempt: u16,
    pub duration: Duration,
    pub ttft: Option<Duration>,
    pub usage: Usage,
    pub usage_estimated: bool,
    pub outcome: Outcome,
    pub http_status: u16,
    pub error: Option<ProviderError>,
    pub response_sha256: Option<String>,
    /// The attempt's place in the call (`docs/error-patterns.md`,
    /// "Recovery facts"); `None` on a gate's refusal.
    pub recovery: Option<Recovery>,
    /// The span that made the attempt (none on a gate's refusal: the
    /// event then names the client's span).
    pub trace: AttemptTrace,
    /// The model the provider's answer names, for the proxy's span.
    pub response_model: Option<String>,
    /// When the attempt ended, if its event is produced later (a failed
    /// attempt's waits for the backoff before the next, to know whether it
    /// is the call's last): `occurred_at` is when the call finished, not
    /// when its event was made. `None`: now.
    pub ended_at: Option<chrono::DateTime<Utc>>,
}

impl AttemptRecord {
    /// The signature of this attempt's error (computed once, then kept on
    /// the error, where the event carries it).
    pub fn signature(&mut self) -> Option<SignatureId> {
        let provider = &self.provider;
        let status = self.http_status;
        let error = self.error.as_mut()?;
        if error.signature.is_none() {
            error.signature = Some(signature(&ErrorInput::from_call(provider, status, error)).id);
        }
        error.signature
    }
}

impl CallContext {
    pub fn new(
        key: VirtualKey,
        headers: &HeaderMap,
        operation: Operation,
        requested_model: &str,
        stream: bool,
        body: &[u8],
    ) -> Self {
        Self {
            key,
            call_id: Uuid::now_v7().to_string(),
            explicit_trace_id: explicit_trace_id(headers),
            client_parent: ClientParent::from_headers(headers),
            requested_model: requested_model.to_string(),
            operation,
            stream,
            prompt_sha256: sha256_hex(body),
            tags: tags(headers),
            budget: None,
            rate: None,
        }
    }

    /// A record for the first attempt of this call, to be filled in.
    pub fn attempt(&self, provider: &str, model: &str) -> AttemptRecord {
        AttemptRecord {
            event_id: Uuid::now_v7(),
            call_id: self.call_id.clone(),
            fallback_of: String::new(),
            provider: provider.to_string(),
            model: model.to_string(),
            attempt: 1,
            duration: Duration::ZERO,
            ttft: None,
            usage: Usage::default(),
            usage_estimated: false,
            outcome: Outcome::Success,
            http_status: 0,
            error: None,
            response_sha256: None,
            recovery: None,
            trace: AttemptTrace::default(),
            response_model: None,
            ended_at: None,
        }
    }

    /// `call.trace_id` and `call.span_id` of an attempt made by the span
    /// `made_by` (the proxy's span, or the client's): the explicit trace
    /// id wins, and the span id is given only when the trace id is the
    /// span's, so the two always name one span.
    fn trace_ids(&self, made_by: Option<(TraceId, SpanId)>) -> (String, String) {
        let made_by = made_by.or(self.client_parent.map(|c| (c.trace_id, c.span_id)));
        match (&self.explicit_trace_id, made_by) {
            (Some(explicit), Some((trace, span))) if *explicit == trace.to_string() => {
                (explicit.clone(), span.to_string())
            }
            (Some(explicit), _) => (explicit.clone(), String::new()),
            (None, Some((trace, span))) => (trace.to_string(), span.to_string()),
            (None, None) => (String::new(), String::new()),
        }
    }

    pub fn event(&self, mut record: AttemptRecord) -> Event {
        // Every error the proxy records carries its signature; computed
        // here, off the success path, for errors found after the attempt
        // loop (a stream cut, a gate's refusal).
        record.signature();
        let kind = match record.outcome {
            Outcome::Success => EventKind::CallCompleted,
            Outcome::Blocked => EventKind::CallBlocked,
            _ => EventKind::CallFailed,
        };
        let mut tags = self.tags.clone();
        if record.usage_estimated {
            tags.insert("usage".into(), "estimated".into());
        }
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let (trace_id, span_id) = self.trace_ids(record.trace.ids);
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: record.event_id,
            kind,
            occurred_at: record.ended_at.unwrap_or_else(Utc::now).trunc_subsecs(3),
            org_id: self.key.org_id.clone(),
            team_id: self.key.team_id.clone(),
            user_id: self.key.user_id.clone(),
            api_key_id: self.key.id.to_string(),
            call: Some(Call {
                call_id: record.call_id,
                trace_id,
                span_id,
                provider: record.provider,
                model: record.model,
                requested_model: self.requested_model.clone(),
                attempt: record.attempt,
                fallback_of: record.fallback_of,
                operation: self.operation,
                stream: self.stream,
                duration_ms: millis(record.duration),
                ttft_ms: record.ttft.map(millis),
                usage: record.usage,
                outcome: record.outcome,
                http_status: record.http_status,
                error: record.error,
                cache_hit: false,
                prompt_sha256: Some(self.prompt_sha256.clone()),
                response_sha256: record.response_sha256,
                recovery: record.recovery,
            }),
            admin: None,
            tags,
            reported_cost: None,
        }
    }
}

/// The error type of an attempt the proxy forwarded but never saw end
/// (it crashed or lost power): the event its write-ahead log replays.
pub const INTERRUPTED: &str = "proxy_interrupted";

/// The message of an [`INTERRUPTED`] error.
const INTERRUPTED_MESSAGE: &str = "the proxy stopped (crash or power loss) after forwarding this attempt and before it ended; the provider may have served and billed it; the input is the proxy's estimate";

/// The masked template of [`INTERRUPTED_MESSAGE`]. Every forwarded attempt
/// writes its interrupted event ahead, so the constant message is masked
/// once here instead of once per call.
static INTERRUPTED_TEMPLATE: LazyLock<String> =
    LazyLock::new(|| mask(INTERRUPTED_MESSAGE).template);

impl CallContext {
    /// The event a replay of the write-ahead log emits for `record`'s
    /// attempt if it never ends: `ai.call.failed`, outcome `error`, error
    /// [`INTERRUPTED`], HTTP status 0, the prompt's estimated input
    /// (`input_estimate`, as for a stream that lost its usage) and no
    /// output, marked estimated; the last attempt of its call. It carries
    /// the attempt's event id, so it and the final event are never both
    /// delivered.
    pub fn interrupted(&self, record: &AttemptRecord, input_estimate: u64) -> Event {
        let mut record = record.clone();
        record.outcome = Outcome::Error;
        record.http_status = 0;
        record.duration = Duration::ZERO;
        record.ttft = None;
        record.usage = Usage {
            input_tokens: input_estimate,
            input_tokens_estimated: true,
            ..Usage::default()
        };
        record.usage_estimated = true;
        record.response_sha256 = None;
        let mut error = super::observe::provider_error(INTERRUPTED, INTERRUPTED_MESSAGE);
        error.signature = Some(signature_of_template(
            &record.provider,
            0,
            INTERRUPTED,
            &INTERRUPTED_TEMPLATE,
        ));
        record.error = Some(error);
        if let Some(r) = record.recovery.as_mut() {
            r.last = true;
        }
        self.event(record)
    }
}

/// `provider` of events for calls a gate refused before any provider was chosen.
pub const GATE: &str = "tollgate";

/// A refusal by a gate (decision, rate limit, allow-list): `ai.call.blocked`.
#[allow(clippy::too_many_arguments)]
pub fn blocked(
    ctx: &CallContext,
    provider: &str,
    model: &str,
    outcome: Outcome,
    http_status: u16,
    error_type: &str,
    reason: &str,
    elapsed: Duration,
) -> Event {
    let mut record = ctx.attempt(provider, model);
    record.outcome = outcome;
    record.http_status = http_status;
    record.duration = elapsed;
    record.error = Some(super::observe::provider_error(error_type, reason));
    let mut event = ctx.event(record);
    event.kind = EventKind::CallBlocked;
    event
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The trace id of `x-tollgate-trace-id` (printable ASCII, at most 128).
fn explicit_trace_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-tollgate-trace-id")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

/// Tags from `x-tollgate-tag-<name>: <value>` headers.
fn tags(headers: &HeaderMap) -> BTreeMap<String, String> {
    sort_tags(headers).0
}

/// The tags a request's headers give, and why each other tag header is
/// left out: a name or value out of bounds, a name given again (its first
/// value kept), more than [`MAX_TAGS`].
fn sort_tags(headers: &HeaderMap) -> (BTreeMap<String, String>, Vec<String>) {
    let mut kept = BTreeMap::new();
    let mut dropped = Vec::new();
    for (name, value) in headers {
        match tag(name, value) {
            None => {}
            Some(Err(why)) => dropped.push(why),
            Some(Ok((key, _))) if kept.contains_key(&key) => {
                dropped.push(format!("{key}: given more than once, the first value kept"));
            }
            Some(Ok((key, _))) if kept.len() >= MAX_TAGS => {
                dropped.push(format!("{key}: more than {MAX_TAGS} tags"));
            }
            Some(Ok((key, text))) => {
                kept.insert(key, text);
            }
        }
    }
    (kept, dropped)
}

/// A tag header's tag, or why it is left out; `None` for other headers.
fn tag(name: &HeaderName, value: &HeaderValue) -> Option<Result<(String, String), String>> {
    let key = name.as_str().strip_prefix(TAG_HEADER_PREFIX)?;
    let Ok(text) = value.to_str() else {
        return Some(Err(format!("{key}: the value is not visible ASCII")));
    };
    Some(if key.is_empty() || key.len() > 64 {
        Err(format!(
            "{}: a name of 1 to 64 characters",
            key.chars().take(64).collect::<String>()
        ))
    } else if text.len() > 256 {
        Err(format!(
            "{key}: a value of {} bytes, at most 256",
            text.len()
        ))
    } else if let Err(refused) = tollgate_contract::validate::check_tag(key, text) {
        Err(format!("{key}: the value {}", refused.reason))
    } else {
        Ok((key.to_string(), text.to_string()))
    })
}

/// The `x-tollgate-tags-dropped` answer header for a request whose tag
/// headers were not all recorded (too long, or more than [`MAX_TAGS`]):
/// the call goes on, and the client learns which tags its event lacks.
pub fn dropped_tags(headers: &HeaderMap) -> Option<HeaderValue> {
    let (_, dropped) = sort_tags(headers);
    if dropped.is_empty() {
        return None;
    }
    let text = format!("{} not recorded: {}", dropped.len(), dropped.join("; "));
    let text: String = text.chars().take(1024).collect();
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_left_out_are_named_in_the_answer() {
        let mut h = HeaderMap::new();
        for i in 0..18 {
            h.insert(
                HeaderName::from_bytes(format!("x-tollgate-tag-t{i:02}").as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        h.insert("x-tollgate-tag-long", "x".repeat(5000).parse().unwrap());
        assert_eq!(tags(&h).len(), MAX_TAGS);
        let said = dropped_tags(&h).unwrap();
        let said = said.to_str().unwrap();
        assert!(said.starts_with("3 not recorded: "), "{said}");
        assert!(
            said.contains("long: a value of 5000 bytes, at most 256"),
            "{said}"
        );
        assert!(said.contains("more than 16 tags"), "{said}");
        // A name given twice: its first value is kept, the other named.
        let mut twice = HeaderMap::new();
        twice.append("x-tollgate-tag-a", "one".parse().unwrap());
        twice.append("x-tollgate-tag-a", "two".parse().unwrap());
        assert_eq!(tags(&twice).get("a").map(String::as_str), Some("one"));
        let said = dropped_tags(&twice).unwrap();
        assert_eq!(
            said.to_str().unwrap(),
            "1 not recorded: a: given more than once, the first value kept"
        );
        // A tab is a header's visible ASCII but a control character to the
        // contract: left out and named, or the event would be dead-lettered
        // and the call never billed.
        let mut tab = HeaderMap::new();
        tab.insert("x-tollgate-tag-note", "a\tb".parse().unwrap());
        tab.insert("x-tollgate-tag-feature", "search".parse().unwrap());
        assert_eq!(tags(&tab).keys().collect::<Vec<_>>(), ["feature"]);
        assert_eq!(
            dropped_tags(&tab).unwrap().to_str().unwrap(),
            "1 not recorded: note: the value must not contain control characters"
        );
        let mut fine = HeaderMap::new();
        fine.insert("x-tollgate-tag-feature", "search".parse().unwrap());
        assert!(dropped_tags(&fine).is_none());
    }

    fn key() -> VirtualKey {
        VirtualKey {
            id: Uuid::now_v7(),
            prefix: "abcdefgh".into(),
            role: "proxy".into(),
            org_id: "acme".into(),
            team_id: "search".into(),
            user_id: "alice".into(),
            allowed_models: vec![],
        }
    }

    #[test]
    fn proxy_events_pass_the_ingest_contract() {
        let key = key();
        let mut headers = HeaderMap::new();
        headers.insert("x-tollgate-tag-feature", "search".parse().unwrap());
        headers.insert("x-tollgate-tag-note", "a\tb".parse().unwrap());
        let ctx = CallContext::new(key, &headers, Operation::Chat, "gpt-4o", true, b"{}");
        let mut record = ctx.attempt("openai", "gpt-4o-mini");
        record.ttft = Some(Duration::from_millis(12));
        record.duration = Duration::from_millis(40);
        record.usage_estimated = true;
        record.outcome = Outcome::Cancelled;
        record.http_status = 200;
        record.response_sha256 = Some(sha256_hex(b"x"));
        record.error = Some(crate::observe::provider_error(
            "upstream_disconnected",
            "connection closed before message completed",
        ));
        record.recovery = Some(Recovery {
            sequence: 2,
            wait_ms: 35,
            strategy: tollgate_contract::Strategy::FallbackModel,
            from_signature: Some(SignatureId(0x1234)),
            from_provider: "openai".into(),
            from_model: "gpt-4o".into(),
            last: true,
        });
        let blocked_event = blocked(
            &ctx,
            GATE,
            "gpt-4o",
            Outcome::Blocked,
            403,
            "denied",
            "budget",
            Duration::ZERO,
        );
        let interrupted = ctx.interrupted(&record, 123);
        assert_eq!(interrupted.event_id, record.event_id);
        assert_eq!(interrupted.kind, EventKind::CallFailed);
        let call = interrupted.call.as_ref().unwrap();
        assert_eq!(
            (call.outcome, call.http_status, call.usage.input_tokens),
            (Outcome::Error, 0, 123)
        );
        assert!(call.usage.input_tokens_estimated && call.recovery.as_ref().unwrap().last);
        let error = call.error.as_ref().unwrap();
        assert_eq!(error.error_type, INTERRUPTED);
        // Masked once, the same id as masking the message of this event.
        let masked_now = signature(&ErrorInput::from_call(&call.provider, 0, error)).id;
        assert_eq!(error.signature, Some(masked_now));
        let events = [ctx.event(record), blocked_event, interrupted];
        for event in &events {
            let error = event.call.as_ref().unwrap().error.as_ref().unwrap();
            assert!(error.signature.is_some(), "{error:?}");
        }
        for event in events {
            let value = serde_json::to_value(&event).unwrap();
            let parsed = tollgate_contract::parse_event(
                value,
                Utc::now(),
                &tollgate_contract::Limits::default(),
            );
            assert_eq!(parsed.map_err(|r| r.to_string()), Ok(event));
        }
    }

    #[test]
    fn trace_and_tags_come_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        h.insert("x-tollgate-tag-feature", "search".parse().unwrap());
        let ctx = CallContext::new(key(), &h, Operation::Chat, "gpt-4o", false, b"{}");
        let call = ctx.event(ctx.attempt("openai", "gpt-4o")).call.unwrap();
        assert_eq!(
            (call.trace_id.as_str(), call.span_id.as_str()),
            ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
        );
        assert_eq!(tags(&h).get("feature").map(String::as_str), Some("search"));
        // An explicit trace id wins; the client's span is not in that trace.
        h.insert("x-tollgate-trace-id", "run-42".parse().unwrap());
        let ctx = CallContext::new(key(), &h, Operation::Chat, "gpt-4o", false, b"{}");
        let call = ctx.event(ctx.attempt("openai", "gpt-4o")).call.unwrap();
        assert_eq!(
            (call.trace_id.as_str(), call.span_id.as_str()),
            ("run-42", "")
        );
        // An invalid traceparent is ignored.
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let ctx = CallContext::new(key(), &h, Operation::Chat, "gpt-4o", false, b"{}");
        let call = ctx.event(ctx.attempt("openai", "gpt-4o")).call.unwrap();
        assert_eq!((call.trace_id.as_str(), call.span_id.as_str()), ("", ""));
    }
}
