//! The trace context of a proxied call (W3C Trace Context): the client's
//! `traceparent` read and checked as the specification says (an invalid
//! one is ignored, never an error), the proxy's own span for each upstream
//! attempt in the OpenTelemetry GenAI conventions when spans are exported,
//! and the `traceparent` the provider receives.
//!
//! Without span export the proxy is invisible to tracing: the client's
//! headers reach the provider unchanged and the events record the client's
//! span as the one that made the call. With export, each attempt is a span
//! of kind client, a child of the client's span (or the root of a trace of
//! its own when the client sent none), the provider sees that span as its
//! parent, and the events record it. Spans are handed to the SDK's batch
//! processor, which exports them from its own thread: nothing on the
//! request path waits for the tracing backend.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

use tollgate_contract::{Event, Operation};

use crate::config::ProviderKind;

/// The span the client's `traceparent` names: the parent of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl ClientParent {
    /// The client's parent from its headers; `None` when there is no
    /// `traceparent`, more than one, or it is invalid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all("traceparent").iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        parse_traceparent(value.to_str().ok()?)
    }
}

/// A W3C `traceparent` (Trace Context level 1, "traceparent Header"):
/// `version-traceid-parentid-flags` in lowercase hex. Version `ff` is
/// invalid; version `00` is exactly 55 characters; a later version may be
/// longer, with a `-` after the flags, and is read as version 00. All-zero
/// trace or parent ids are invalid.
pub fn parse_traceparent(value: &str) -> Option<ClientParent> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = value.get(0..2)?;
    if !lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && bytes.len() != 55 {
        return None;
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (value.get(3..35)?, value.get(36..52)?, value.get(53..55)?);
    if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(ClientParent {
        trace_id,
        span_id,
        // Only the sampled bit is defined; the others are not passed on.
        flags: TraceFlags::new(flags) & TraceFlags::SAMPLED,
    })
}

fn lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where the proxy's spans go: the tracer of the binary's OTLP exporter.
#[derive(Clone)]
pub struct SpanExport {
    tracer: Arc<BoxedTracer>,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanExport")
    }
}

impl SpanExport {
    pub fn new(tracer: BoxedTracer) -> Self {
        Self {
            tracer: Arc::new(tracer),
        }
    }
}

/// What an upstream attempt needs to be traced: which model of which
/// provider is asked, and where.
pub struct AttemptTarget<'a> {
    pub operation: Operation,
    pub provider: &'a str,
    pub kind: ProviderKind,
    pub model: &'a str,
    pub base_url: &'a str,
}

/// The trace of one upstream attempt: the ids its event records, and the
/// proxy's span while the attempt runs (export only).
#[derive(Clone, Default)]
pub struct AttemptTrace {
    /// The trace and span that made the attempt: the proxy's span when
    /// exporting, else the client's parent.
    pub ids: Option<(TraceId, SpanId)>,
    /// The proxy's span, ended (and so exported) with the attempt's event.
    span: Option<Arc<Mutex<Option<BoxedSpan>>>>,
}

impl std::fmt::Debug for AttemptTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptTrace")
            .field("ids", &self.ids)
            .field("exported", &self.span.is_some())
            .finish()
    }
}

impl AttemptTrace {
    /// Start tracing an attempt. With `export`, a span of kind client
    /// begins now, and `headers` (those sent upstream) carry it as the
    /// provider's parent; otherwise they are left as the client sent them.
    pub fn start(
        export: Option<&SpanExport>,
        client: Option<ClientParent>,
        target: &AttemptTarget<'_>,
        headers: &mut HeaderMap,
    ) -> Self {
        let Some(export) = export else {
            return Self {
                ids: client.map(|c| (c.trace_id, c.span_id)),
                span: None,
            };
        };
        let parent = match client {
            Some(c) => {
                let state = client_trace_state(headers);
                Context::new().with_remote_span_context(SpanContext::new(
                    c.trace_id, c.span_id, c.flags, true, state,
                ))
            }
            None => {
                // A new trace: the client's trace state (if any) belongs
                // to a trace the proxy could not read.
                headers.remove("tracestate");
                Context::new()
            }
        };
        let operation = operation_name(target.operation);
        let (address, port) = server_address(target.base_url);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", provider_name(target.kind)),
            KeyValue::new("gen_ai.request.model", target.model.to_string()),
            KeyValue::new("tollgate.provider", target.provider.to_string()),
        ];
        if let Some(address) = address {
            attributes.push(KeyValue::new("server.address", address));
        }
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let span = export
            .tracer
            .span_builder(Cow::Owned(format!("{operation} {}", target.model)))
            .with_kind(SpanKind::Client)
            .with_start_time(SystemTime::now())
            .with_attributes(attributes)
            .start_with_context(export.tracer.as_ref(), &parent);
        let context = span.span_context().clone();
        if let Ok(value) = HeaderValue::from_str(&format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )) {
            headers.insert("traceparent", value);
        }
        Self {
            ids: Some((context.trace_id(), context.span_id())),
            span: Some(Arc::new(Mutex::new(Some(span)))),
        }
    }

    /// End the proxy's span (if any) with what the attempt's event says.
    pub fn finish(&self, event: &Event, response_model: Option<&str>) {
        let Some(slot) = &self.span else {
            return;
        };
        let Some(mut span) = slot.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let Some(call) = &event.call else {
            span.end();
            return;
        };
        let model = response_model.unwrap_or(&call.model).to_string();
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        span.set_attributes([
            KeyValue::new("gen_ai.response.model", model),
            KeyValue::new("gen_ai.usage.input_tokens", to_i64(call.usage.input_tokens)),
            KeyValue::new(
                "gen_ai.usage.output_tokens",
                to_i64(call.usage.output_tokens),
            ),
            KeyValue::new("tollgate.call_id", call.call_id.clone()),
            KeyValue::new("tollgate.attempt", i64::from(call.attempt)),
            KeyValue::new("tollgate.outcome", call.outcome.as_str()),
        ]);
        if call.http_status != 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(call.http_status),
            ));
        }
        if let Some(error) = &call.error {
            span.set_attribute(KeyValue::new("error.type", error.error_type.clone()));
            span.set_status(Status::error(error.message.clone()));
        }
        span.end();
    }
}

/// The client's `tracestate`, kept as the parent's state (the proxy adds
/// no entry of its own); empty when absent or unreadable.
fn client_trace_state(headers: &HeaderMap) -> TraceState {
    let joined: Vec<&str> = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if joined.is_empty() {
        return TraceState::NONE;
    }
    joined
        .join(",")
        .parse::<TraceState>()
        .unwrap_or(TraceState::NONE)
}

/// `gen_ai.operation.name` of an operation (GenAI semantic conventions).
pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Chat | Operation::Messages => "chat",
        Operation::Completion => "text_completion",
        Operation::Embedding => "embeddings",
        other => other.as_str(),
    }
}

/// `gen_ai.provider.name`: the well-known value of the provider's API.
fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
    }
}

/// `server.address` and `server.port` of a base URL.
fn server_address(base_url: &str) -> (Option<String>, Option<u16>) {
    let Some((_, rest)) = base_url.split_once("://") else {
        return (None, None);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()),
        _ => (authority, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ((!host.is_empty()).then(|| host.to_string()), port)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_gives_trace_parent_and_sampled_flag() {
        let p = parse_traceparent(VALID).unwrap();
        assert_eq!(p.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(p.span_id.to_string(), "b7ad6b7169203331");
        assert!(p.flags.is_sampled());
        let unsampled = parse_traceparent(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.flags.is_sampled());
        // A later version may carry more fields after the flags.
        let future = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-ever";
        assert_eq!(parse_traceparent(future).unwrap(), p);
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            // version ff, uppercase, too long for version 00, too short
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-00",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            // all-zero ids
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            // wrong separators, non-hex
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn two_traceparent_headers_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", VALID.parse().unwrap());
        assert!(ClientParent::from_headers(&headers).is_some());
        headers.append("traceparent", VALID.parse().unwrap());
        assert_eq!(ClientParent::from_headers(&headers), None);
    }

    #[test]
    fn without_export_the_client_span_made_the_call_and_headers_stay() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", VALID.parse().unwrap());
        headers.insert("tracestate", "vendor=x".parse().unwrap());
        let before = headers.clone();
        let target = AttemptTarget {
            operation: Operation::Chat,
            provider: "mockai",
            kind: ProviderKind::Openai,
            model: "gpt-4o",
            base_url: "http://127.0.0.1:9/v1",
        };
        let client = ClientParent::from_headers(&headers);
        let trace = AttemptTrace::start(None, client, &target, &mut headers);
        assert_eq!(headers, before);
        let (trace_id, span_id) = trace.ids.unwrap();
        assert_eq!(
            (trace_id.to_string(), span_id.to_string()),
            (
                "0af7651916cd43dd8448eb211c80319c".to_string(),
                "b7ad6b7169203331".to_string()
            )
        );
    }

    #[test]
    fn gen_ai_names() {
        assert_eq!(operation_name(Operation::Messages), "chat");
        assert_eq!(operation_name(Operation::Completion), "text_completion");
        assert_eq!(operation_name(Operation::Embedding), "embeddings");
        assert_eq!(
            server_address("https://api.openai.com/v1"),
            (Some("api.openai.com".into()), None)
        );
        assert_eq!(
            server_address("http://127.0.0.1:8088/v1"),
            (Some("127.0.0.1".into()), Some(8088))
        );
        assert_eq!(
            server_address("http://[::1]:80/v1"),
            (Some("::1".into()), Some(80))
        );
    }
}
