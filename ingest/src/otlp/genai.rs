//! The GenAI span → call event mapping: which spans are model calls, and
//! which attribute fills which event field when both the current
//! OpenTelemetry GenAI semantic conventions (`gen_ai.provider.name`,
//! `gen_ai.usage.input_tokens`, ...) and the older names (`gen_ai.system`,
//! `gen_ai.usage.prompt_tokens`, up to semconv 1.36) or an
//! instrumentation's own names (OpenLIT, OpenLLMetry/Traceloop) are
//! present. Every list below is in order of precedence: the first present
//! attribute wins. `docs/otlp.md` has the same table for users.
//!
//! Pure: a span and its resource in, an event or the reason it is not one
//! out. The event is built as the contract's `Event` (no JSON tree between:
//! every value already has the field's type), and validation is the
//! contract's `check_event`, the checks the JSON API runs after reading an
//! item; its rejection of an event field is reported under the attribute
//! that filled the field.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use sha2::{Digest, Sha256};
use tollgate_contract::{
    check_event, Call, Event, EventKind, Limits, Operation, Outcome, Rejection, Usage,
    SCHEMA_VERSION,
};
use uuid::Uuid;

use super::attributes::{preview, Attributes};
use super::sdk_error;

pub const OPERATION: &[&str] = &["gen_ai.operation.name", "llm.request.type"];
pub const PROVIDER: &[&str] = &["gen_ai.provider.name", "gen_ai.system"];
pub const REQUEST_MODEL: &[&str] = &["gen_ai.request.model"];
pub const RESPONSE_MODEL: &[&str] = &["gen_ai.response.model"];
pub const INPUT_TOKENS: &[&str] = &[
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
];
pub const OUTPUT_TOKENS: &[&str] = &[
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
];
pub const CACHED_INPUT_TOKENS: &[&str] = &[
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
];
pub const CACHE_WRITE_TOKENS: &[&str] = &[
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
];
pub const REASONING_TOKENS: &[&str] = &[
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
];
pub const FINISH_REASONS: &[&str] = &["gen_ai.response.finish_reasons"];
pub const STREAM: &[&str] = &[
    "gen_ai.request.stream",
    "gen_ai.request.is_stream",
    "gen_ai.is_streaming",
    "llm.is_streaming",
];
/// The span event Traceloop records per streamed chunk: the first one is at
/// the first token, the only time-to-first-token Traceloop sends.
pub const FIRST_CHUNK_EVENT: &str = "gen_ai.content.completion.chunk";
pub const TTFT_SECONDS: &[&str] = &["gen_ai.server.time_to_first_token"];
pub const ERROR_TYPE: &[&str] = &["error.type"];
pub const HTTP_STATUS: &[&str] = &["http.response.status_code"];
pub const REPORTED_COST: &[&str] = &["gen_ai.usage.cost"];
/// Span first, then resource.
pub const USER: &[&str] = &["enduser.id", "user.id"];
pub const TEAM: &[&str] = &["tollgate.team_id"];
pub const ORG: &[&str] = &["tollgate.org_id"];
/// Resource only.
pub const SERVICE: &[&str] = &["service.name"];
pub const ENVIRONMENT: &[&str] = &["deployment.environment.name", "deployment.environment"];

/// Tenant fields of an event when neither the key nor the span names one
/// (as for the proxy's keys).
pub const UNASSIGNED: &str = "unassigned";

/// Who sent the spans: the ingest key and the tenant it is scoped to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    pub api_key_id: String,
    pub org_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
}

/// What a span is to Tollgate.
#[derive(Debug)]
pub enum SpanMapping {
    /// A model call: the event to validate and produce.
    Call(Box<MappedCall>),
    /// No GenAI attributes: an HTTP handler, a database query, ...
    NotGenAi,
    /// A GenAI span that is not itself a model call (`invoke_agent`,
    /// `execute_tool`, a workflow): its model calls are spans of their own,
    /// and counting the agent's usage too would bill it twice.
    NotModelCall,
}

/// A model call's event before validation, with the attribute each
/// validated field came from.
#[derive(Debug)]
pub struct MappedCall {
    event: Event,
    sources: BTreeMap<&'static str, &'static str>,
}

impl MappedCall {
    /// Whether the span carried a token count (input or output): a
    /// successful call without one is stored with zero tokens and cost.
    pub fn reports_usage(&self) -> bool {
        self.sources.contains_key("call.usage.input_tokens")
            || self.sources.contains_key("call.usage.output_tokens")
    }

    /// Validate the event with the contract at `now`; a rejected field is
    /// named by the attribute it came from, with the event field after it.
    pub fn validate(self, now: DateTime<Utc>, limits: &Limits) -> Result<Event, Rejection> {
        let Self { event, sources } = self;
        // The contract, then what no client may send (the events API's own
        // rule), each refusal named by the attribute the field came from.
        check_event(&event, now, limits)
            .and_then(
                |()| match tollgate_contract::admin::refused_at_the_edge(&event) {
                    Some(refusal) => Err(refusal),
                    None => Ok(()),
                },
            )
            .map(|()| event)
            .map_err(|rejection| match sources.get(rejection.field.as_str()) {
                Some(attribute) => Rejection::new(
                    *attribute,
                    format!("{} ({})", rejection.reason, rejection.field),
                ),
                None => rejection,
            })
    }
}

/// Which of `names` are present, and the first of them (the one used).
struct Chosen<'a> {
    attrs: Attributes<'a>,
    name: Option<&'static str>,
}

fn choose<'a>(attrs: Attributes<'a>, names: &[&'static str]) -> Chosen<'a> {
    Chosen {
        attrs,
        name: attrs.first_present(names),
    }
}

/// Map one span of a resource to what it is to Tollgate.
pub fn map_span(
    resource: &[KeyValue],
    span: &Span,
    tenant: &Tenant,
) -> Result<SpanMapping, Rejection> {
    let attrs = Attributes(&span.attributes);
    let resource = Attributes(resource);
    let operation = choose(attrs, OPERATION);
    let provider = choose(attrs, PROVIDER);
    let request_model = choose(attrs, REQUEST_MODEL);
    let response_model = choose(attrs, RESPONSE_MODEL);
    let has_model = request_model.name.is_some() || response_model.name.is_some();
    if operation.name.is_none() && !(provider.name.is_some() && has_model) {
        return Ok(SpanMapping::NotGenAi);
    }
    let operation = match operation.name {
        Some(name) => match attrs.string(name)? {
            Some(op) => match model_call_operation(op) {
                Some(op) => op,
                None => return Ok(SpanMapping::NotModelCall),
            },
            None => Operation::Other,
        },
        None => Operation::Other,
    };
    attrs.refuse_repeats("span")?;
    resource.refuse_repeats("resource")?;

    let mut sources: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    let trace_id = span_id_hex("trace_id", &span.trace_id, 16)?;
    let span_id = span_id_hex("span_id", &span.span_id, 8)?;

    let provider_name = provider.name.ok_or_else(|| {
        Rejection::new(
            PROVIDER[0],
            format!(
                "missing: a GenAI span needs the provider ({})",
                PROVIDER.join(" or ")
            ),
        )
    })?;
    let provider_value = attrs.string(provider_name)?.unwrap_or_default();
    sources.insert("call.provider", provider_name);
    let request = request_model
        .name
        .map(|n| request_model.attrs.string(n))
        .transpose()?
        .flatten();
    let response = response_model
        .name
        .map(|n| response_model.attrs.string(n))
        .transpose()?
        .flatten();
    let model = match (response, request) {
        (Some(m), _) => {
            sources.insert("call.model", RESPONSE_MODEL[0]);
            m
        }
        (None, Some(m)) => {
            sources.insert("call.model", REQUEST_MODEL[0]);
            m
        }
        (None, None) => {
            return Err(Rejection::new(
                RESPONSE_MODEL[0],
                "missing: a model call needs gen_ai.response.model or gen_ai.request.model",
            ))
        }
    };
    sources.insert("call.requested_model", REQUEST_MODEL[0]);

    let mut usage = Usage::default();
    for (count, field, names) in [
        (
            &mut usage.input_tokens,
            "call.usage.input_tokens",
            INPUT_TOKENS,
        ),
        (
            &mut usage.output_tokens,
            "call.usage.output_tokens",
            OUTPUT_TOKENS,
        ),
        (
            &mut usage.cached_input_tokens,
            "call.usage.cached_input_tokens",
            CACHED_INPUT_TOKENS,
        ),
        (
            &mut usage.cache_write_tokens,
            "call.usage.cache_write_tokens",
            CACHE_WRITE_TOKENS,
        ),
        (
            &mut usage.reasoning_tokens,
            "call.usage.reasoning_tokens",
            REASONING_TOKENS,
        ),
    ] {
        if let Some(name) = attrs.first_present(names) {
            if let Some(n) = attrs.count(name)? {
                *count = n;
                sources.insert(field, name);
            }
        }
    }

    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
    if end == 0 {
        return Err(Rejection::new(
            "end_time_unix_nano",
            "missing: the span has not ended",
        ));
    }
    if start == 0 || start > end {
        return Err(Rejection::new(
            "start_time_unix_nano",
            format!("must be set and not after end_time_unix_nano ({start} > {end})"),
        ));
    }
    let duration_ms = u32::try_from((end - start) / 1_000_000).map_err(|_| {
        Rejection::new(
            "end_time_unix_nano",
            "the span lasted longer than 2^32 ms (49 days)",
        )
    })?;
    sources.insert("call.duration_ms", "end_time_unix_nano");
    let end_ms = end / 1_000_000;
    let occurred_at = i64::try_from(end_ms)
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .ok_or_else(|| Rejection::new("end_time_unix_nano", format!("{end} is not a time")))?;
    sources.insert("occurred_at", "end_time_unix_nano");

    let ttft_ms = match attrs.first_present(TTFT_SECONDS) {
        Some(name) => attrs.number(name)?.map(|s| {
            sources.insert("call.ttft_ms", name);
            // Bounded by the check below (validation compares it with the
            // duration); floor, as the duration is.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let ms = (s * 1000.0).floor().min(f64::from(u32::MAX)) as u32;
            ms
        }),
        None => None,
    };
    // An explicit stream flag wins; without one, a time to first token
    // means the call streamed. A non-streamed call has no TTFT (the field
    // table: `call.ttft_ms` is a streamed call's), whatever the library
    // sends (OpenLIT sends one for every call, the whole call's).
    let stream = match attrs.first_present(STREAM) {
        Some(name) => attrs.boolean(name)?,
        None => None,
    }
    .unwrap_or(ttft_ms.is_some());
    let ttft_ms = if stream {
        ttft_ms.or_else(|| first_chunk_ms(span, &mut sources))
    } else {
        None
    };

    let status = span.status.as_ref();
    let status_error = status.is_some_and(|s| s.code == StatusCode::Error as i32);
    let error_type = match attrs.first_present(ERROR_TYPE) {
        Some(name) => attrs.string(name)?,
        None => None,
    };
    let http_status = match attrs.first_present(HTTP_STATUS) {
        Some(name) => match attrs.integer(name)? {
            Some(code) => u16::try_from(code)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    Rejection::new(name, format!("{code} is not an HTTP status code"))
                })?,
            None => 0,
        },
        None => 0,
    };
    // error.type may itself be the status code (the semantic conventions
    // allow it for HTTP errors).
    let http_status = match (http_status, error_type) {
        (0, Some(t)) => t
            .parse::<u16>()
            .ok()
            .filter(|c| (400..=599).contains(c))
            .unwrap_or(0),
        (code, _) => code,
    };
    let failed = status_error || error_type.is_some();
    let (http_status, kind, outcome, error) = if failed {
        // What the provider SDK's exception says: its class, however
        // spelled, and the provider's own error type, message and status
        // when its message carries the answer (`sdk_error`), so that error
        // patterns and the breakers' 429/5xx rule see what the proxy would
        // have recorded.
        let sdk = sdk_error::read(
            error_type,
            status.map(|s| s.message.as_str()).unwrap_or_default(),
        );
        let http_status = match http_status {
            0 => sdk.http_status,
            code => code,
        };
        sources.insert("call.error.type", ERROR_TYPE[0]);
        (
            http_status,
            EventKind::CallFailed,
            failure_outcome(error_type.unwrap_or_default(), http_status),
            Some(sdk.error),
        )
    } else {
        (
            http_status,
            EventKind::CallCompleted,
            Outcome::Success,
            None,
        )
    };

    let span_or_resource =
        |names: &[&'static str]| -> Result<Option<(&'static str, String)>, Rejection> {
            for source in [attrs, resource] {
                if let Some(name) = source.first_present(names) {
                    if let Some(v) = source.string(name)? {
                        return Ok(Some((name, v.to_string())));
                    }
                }
            }
            Ok(None)
        };
    let org_id = match (&tenant.org_id, span_or_resource(ORG)?) {
        (Some(key_org), Some((name, org))) if &org != key_org => {
            return Err(Rejection::new(
                name,
                format!(
                    "this API key may only send spans for org {key_org:?}, not {:?}",
                    preview(&org)
                ),
            ))
        }
        (Some(key_org), _) => key_org.clone(),
        (None, Some((name, org))) => {
            sources.insert("org_id", name);
            org
        }
        (None, None) => UNASSIGNED.to_string(),
    };

    // The key's team and user win; the attributes fill in what it lacks.
    let mut from_key_or = |key: &Option<String>,
                           found: Option<(&'static str, String)>,
                           field: &'static str,
                           otherwise: &str| match (key, found) {
        (Some(value), _) => value.clone(),
        (None, Some((name, value))) => {
            sources.insert(field, name);
            value
        }
        (None, None) => otherwise.to_string(),
    };
    let team_id = from_key_or(
        &tenant.team_id,
        span_or_resource(TEAM)?,
        "team_id",
        UNASSIGNED,
    );
    let user_id = from_key_or(&tenant.user_id, span_or_resource(USER)?, "user_id", "");
    let mut tags = BTreeMap::new();
    tags.insert("source".to_string(), "otlp".to_string());
    if let Some(name) = resource.first_present(SERVICE) {
        if let Some(service) = resource.string(name)? {
            tags.insert("service".to_string(), service.to_string());
            sources.insert("tags.service", name);
        }
    }
    if let Some(name) = resource.first_present(ENVIRONMENT) {
        if let Some(env) = resource.string(name)? {
            tags.insert("environment".to_string(), env.to_string());
            sources.insert("tags.environment", name);
        }
    }
    let reasons = attrs.strings(FINISH_REASONS[0])?;
    if !reasons.is_empty() {
        tags.insert("finish_reasons".to_string(), reasons.join(","));
        sources.insert("tags.finish_reasons", FINISH_REASONS[0]);
    }
    let reported_cost = match attrs.first_present(REPORTED_COST) {
        Some(name) => {
            sources.insert("reported_cost", name);
            attrs.number(name).ok().flatten().map(decimal_usd)
        }
        None => None,
    };

    let event = Event {
        schema_version: SCHEMA_VERSION,
        event_id: span_event_id(&org_id, &span.trace_id, &span.span_id, end_ms),
        kind,
        occurred_at,
        org_id,
        team_id,
        user_id,
        api_key_id: tenant.api_key_id.clone(),
        call: Some(Call {
            call_id: format!("{trace_id}-{span_id}"),
            trace_id,
            span_id,
            provider: provider_slug(provider_value),
            model: model.to_string(),
            requested_model: request.unwrap_or_default().to_string(),
            attempt: 1,
            fallback_of: String::new(),
            operation,
            stream,
            duration_ms,
            ttft_ms,
            usage,
            outcome,
            http_status,
            error,
            cache_hit: false,
            prompt_sha256: None,
            response_sha256: None,
            recovery: None,
        }),
        admin: None,
        tags,
        reported_cost,
    };
    Ok(SpanMapping::Call(Box::new(MappedCall { event, sources })))
}

/// A streamed call's time to first token from its first chunk event, for
/// libraries that record chunks but no TTFT attribute (Traceloop): whole
/// milliseconds from the span's start, floored like the duration. Events
/// before the start (a clock step, a reused span) are passed over, not
/// taken as the first: the first chunk at or after the start counts.
fn first_chunk_ms(span: &Span, sources: &mut BTreeMap<&'static str, &'static str>) -> Option<u32> {
    let first = span
        .events
        .iter()
        .filter(|e| e.name == FIRST_CHUNK_EVENT && e.time_unix_nano >= span.start_time_unix_nano)
        .map(|e| e.time_unix_nano)
        .min()?;
    let ms = (first - span.start_time_unix_nano) / 1_000_000;
    let ms = u32::try_from(ms).ok()?;
    sources.insert("call.ttft_ms", FIRST_CHUNK_EVENT);
    Some(ms)
}

/// The operation of a model call; `None` for GenAI operations that are not
/// one (agents, tools, workflows).
pub fn model_call_operation(name: &str) -> Option<Operation> {
    match name {
        "chat" | "generate_content" => Some(Operation::Chat),
        "text_completion" | "completion" => Some(Operation::Completion),
        "embeddings" | "embedding" => Some(Operation::Embedding),
        "rerank" => Some(Operation::Other),
        _ => None,
    }
}

/// The event provider for a semantic-conventions provider name: the name
/// the price catalog (LiteLLM's provider names) and the proxy use.
pub fn provider_slug(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let slug = match lower.as_str() {
        "azure.ai.openai" | "az.ai.openai" | "azure.ai.inference" | "az.ai.inference" => "azure",
        "aws.bedrock" => "bedrock",
        "gcp.gemini" | "gemini" | "gcp.gen_ai" | "google" => "google",
        "gcp.vertex_ai" | "vertex_ai" => "vertex_ai",
        "mistral_ai" => "mistral",
        "x_ai" | "xai" => "xai",
        "ibm.watsonx.ai" => "watsonx",
        other => other,
    };
    slug.to_string()
}

/// How a failed call failed, from `error.type` and the HTTP status.
fn failure_outcome(error_type: &str, http_status: u16) -> Outcome {
    let t = error_type.to_ascii_lowercase();
    if t.contains("timeout") || t.contains("timed_out") {
        Outcome::Timeout
    } else if http_status == 429 || t.contains("ratelimit") || t.contains("rate_limit") {
        Outcome::RateLimited
    } else if t.contains("cancel") {
        Outcome::Cancelled
    } else {
        Outcome::Error
    }
}

/// An OTLP trace or span id as lowercase hex; `len` bytes, not all zero.
fn span_id_hex(field: &str, bytes: &[u8], len: usize) -> Result<String, Rejection> {
    if bytes.len() != len || bytes.iter().all(|b| *b == 0) {
        return Err(Rejection::new(
            field,
            format!(
                "must be {len} bytes ({} hex digits in OTLP/JSON), not all zero; got {} bytes",
                len * 2,
                bytes.len()
            ),
        ));
    }
    Ok(hex::encode(bytes))
}

/// The event id of a span: a UUIDv7 whose time is the span's end and whose
/// other bits are a digest of (org, trace id, span id), so an exporter's
/// retry of the same span carries the same `event_id`.
pub fn span_event_id(org_id: &str, trace_id: &[u8], span_id: &[u8], end_ms: u64) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"tollgate.otlp.span\0")
        .chain_update(org_id.as_bytes())
        .chain_update([0u8])
        .chain_update(trace_id)
        .chain_update(span_id)
        .finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(end_ms, &random).into_uuid()
}

/// A USD amount as the contract's decimal string (at most 12 fractional
/// digits); negative amounts are not costs.
fn decimal_usd(amount: f64) -> String {
    let text = format!("{:.12}", amount.max(0.0));
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
