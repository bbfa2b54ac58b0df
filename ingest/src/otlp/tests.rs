//! Unit tests of the GenAI mapping and the export plan, from hand-built
//! spans of both attribute generations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use tollgate_contract::{Event, EventKind, Limits, Operation, Outcome};

use super::genai::{map_span, span_event_id, SpanMapping, Tenant};
use super::partial::PartialSuccess;
use super::{plan_spans, SpanPlan};

const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
/// 2026-12-02T06:00:00Z in nanoseconds.
const START_NS: u64 = 1_796_191_200_000_000_000;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(START_NS as i64) + chrono::Duration::minutes(1)
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn strings(key: &str, values: &[&str]) -> KeyValue {
    kv(
        key,
        any_value::Value::ArrayValue(ArrayValue {
            values: values
                .iter()
                .map(|v| AnyValue {
                    value: Some(any_value::Value::StringValue((*v).into())),
                })
                .collect(),
        }),
    )
}

fn span(n: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0x10, n],
        name: "chat gpt-4o".into(),
        kind: 3,
        start_time_unix_nano: START_NS,
        end_time_unix_nano: START_NS + 1_250_000_000,
        attributes,
        ..Default::default()
    }
}

fn resource() -> Vec<KeyValue> {
    vec![
        s("service.name", "checkout"),
        s("deployment.environment.name", "prod"),
    ]
}

fn tenant() -> Tenant {
    Tenant {
        api_key_id: "0193a0a0-0000-7000-8000-000000000001".into(),
        org_id: Some("acme".into()),
        team_id: Some("search".into()),
        user_id: None,
    }
}

fn current_chat() -> Vec<KeyValue> {
    vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", "gpt-4o"),
        s("gen_ai.response.model", "gpt-4o-2024-08-06"),
        i("gen_ai.usage.input_tokens", 100),
        i("gen_ai.usage.output_tokens", 20),
        i("gen_ai.usage.cache_read.input_tokens", 40),
        strings("gen_ai.response.finish_reasons", &["stop"]),
    ]
}

/// [`current_chat`] less the attributes `drop` names.
fn chat_without(drop: impl Fn(&str) -> bool) -> Vec<KeyValue> {
    let mut attributes = current_chat();
    attributes.retain(|kv| !drop(&kv.key));
    attributes
}

fn older_chat() -> Vec<KeyValue> {
    vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.system", "openai"),
        s("gen_ai.request.model", "gpt-4o"),
        s("gen_ai.response.model", "gpt-4o-2024-08-06"),
        i("gen_ai.usage.prompt_tokens", 100),
        i("gen_ai.usage.completion_tokens", 20),
        i("gen_ai.usage.cache_read_input_tokens", 40),
        strings("gen_ai.response.finish_reasons", &["stop"]),
    ]
}

fn mapped(resource: &[KeyValue], span: &Span, tenant: &Tenant) -> Event {
    match map_span(resource, span, tenant).unwrap() {
        SpanMapping::Call(call) => call.validate(now(), &Limits::default()).unwrap(),
        other => panic!("not a call: {other:?}"),
    }
}

fn refusal(resource: &[KeyValue], span: &Span) -> tollgate_contract::Rejection {
    match map_span(resource, span, &tenant()) {
        Ok(SpanMapping::Call(call)) => call
            .validate(now(), &Limits::default())
            .expect_err("validation should refuse the span"),
        Ok(other) => panic!("not a call: {other:?}"),
        Err(rejection) => rejection,
    }
}

#[test]
fn current_attributes_become_a_call_event() {
    let event = mapped(&resource(), &span(1, current_chat()), &tenant());
    assert_eq!(event.kind, EventKind::CallCompleted);
    assert_eq!(
        (
            event.org_id.as_str(),
            event.team_id.as_str(),
            event.user_id.as_str()
        ),
        ("acme", "search", "")
    );
    assert_eq!(event.api_key_id, tenant().api_key_id);
    assert_eq!(
        event.occurred_at.to_rfc3339(),
        "2026-12-02T06:00:01.250+00:00"
    );
    let call = event.call.as_ref().unwrap();
    assert_eq!(call.provider, "openai");
    assert_eq!(call.model, "gpt-4o-2024-08-06");
    assert_eq!(call.requested_model, "gpt-4o");
    assert_eq!(call.operation, Operation::Chat);
    assert_eq!(call.duration_ms, 1250);
    assert_eq!(call.ttft_ms, None);
    assert!(!call.stream);
    assert_eq!(
        (
            call.usage.input_tokens,
            call.usage.output_tokens,
            call.usage.cached_input_tokens
        ),
        (100, 20, 40)
    );
    assert_eq!(call.outcome, Outcome::Success);
    assert_eq!(call.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(call.span_id, "0000000000001001");
    assert_eq!(
        call.call_id,
        "4bf92f3577b34da6a3ce929d0e0e4736-0000000000001001"
    );
    assert_eq!(event.tags["service"], "checkout");
    assert_eq!(event.tags["environment"], "prod");
    assert_eq!(event.tags["finish_reasons"], "stop");
    assert_eq!(event.tags["source"], "otlp");
}

#[test]
fn older_attribute_names_give_the_same_event() {
    let older_resource = vec![
        s("service.name", "checkout"),
        s("deployment.environment", "prod"),
    ];
    let current = mapped(&resource(), &span(1, current_chat()), &tenant());
    let older = mapped(&older_resource, &span(1, older_chat()), &tenant());
    assert_eq!(older, current);
}

#[test]
fn current_names_win_when_both_generations_are_present() {
    let mut attrs = current_chat();
    attrs.extend([
        s("gen_ai.system", "azure.ai.openai"),
        i("gen_ai.usage.prompt_tokens", 999),
        i("gen_ai.usage.completion_tokens", 999),
        i("gen_ai.usage.cache_read_input_tokens", 99),
    ]);
    let mut resource = resource();
    resource.push(s("deployment.environment", "staging"));
    let event = mapped(&resource, &span(1, attrs), &tenant());
    let call = event.call.unwrap();
    assert_eq!(call.provider, "openai");
    assert_eq!(
        (
            call.usage.input_tokens,
            call.usage.output_tokens,
            call.usage.cached_input_tokens
        ),
        (100, 20, 40)
    );
    assert_eq!(event.tags["environment"], "prod");
}

#[test]
fn traceloop_and_openlit_names_are_understood() {
    // OpenLLMetry (Traceloop): llm.request.type, a capitalised gen_ai.system,
    // cache writes under its own name, streaming flag.
    let traceloop = vec![
        s("llm.request.type", "chat"),
        s("gen_ai.system", "Anthropic"),
        s("gen_ai.request.model", "claude-sonnet-4-5"),
        i("gen_ai.usage.prompt_tokens", 1000),
        i("gen_ai.usage.completion_tokens", 50),
        i("gen_ai.usage.cache_read_input_tokens", 600),
        i("gen_ai.usage.cache_creation_input_tokens", 300),
        kv("llm.is_streaming", any_value::Value::BoolValue(true)),
    ];
    let call = mapped(&[], &span(2, traceloop), &tenant()).call.unwrap();
    assert_eq!(call.provider, "anthropic");
    assert_eq!(call.model, "claude-sonnet-4-5");
    assert!(call.stream);
    assert_eq!(
        (
            call.usage.input_tokens,
            call.usage.cached_input_tokens,
            call.usage.cache_write_tokens
        ),
        (1000, 600, 300)
    );
    // OpenLIT: time to first token in seconds, cost as a double.
    let mut openlit = older_chat();
    openlit.push(kv(
        "gen_ai.server.time_to_first_token",
        any_value::Value::DoubleValue(0.3125),
    ));
    openlit.push(kv(
        "gen_ai.usage.cost",
        any_value::Value::DoubleValue(0.00045),
    ));
    let event = mapped(&[], &span(3, openlit), &tenant());
    assert_eq!(event.reported_cost.as_deref(), Some("0.00045"));
    let call = event.call.unwrap();
    assert_eq!(call.ttft_ms, Some(312));
    assert!(call.stream);
}

#[test]
fn failures_carry_outcome_error_type_and_status() {
    let mut attrs = current_chat();
    attrs.retain(|kv| !kv.key.starts_with("gen_ai.usage"));
    attrs.push(s("error.type", "429"));
    let mut failed = span(4, attrs);
    failed.status = Some(Status {
        message: "Rate limit reached for gpt-4o".into(),
        code: StatusCode::Error as i32,
    });
    let event = mapped(&[], &failed, &tenant());
    assert_eq!(event.kind, EventKind::CallFailed);
    let call = event.call.unwrap();
    assert_eq!(call.outcome, Outcome::RateLimited);
    assert_eq!(call.http_status, 429);
    let error = call.error.unwrap();
    assert_eq!(error.error_type, "429");
    assert_eq!(error.message, "Rate limit reached for gpt-4o");

    // Status ERROR alone (no error.type): a failed call of type "error";
    // a timeout by its error.type.
    let mut status_only = span(5, current_chat());
    status_only.status = Some(Status {
        message: "x".repeat(5000),
        code: StatusCode::Error as i32,
    });
    let call = mapped(&[], &status_only, &tenant()).call.unwrap();
    assert_eq!(call.outcome, Outcome::Error);
    let error = call.error.unwrap();
    assert_eq!(error.error_type, "error");
    assert_eq!(error.message.len(), 2048, "a long status message is cut");
    let mut timeout = current_chat();
    timeout.push(s("error.type", "openai.APITimeoutError"));
    let call = mapped(&[], &span(6, timeout), &tenant()).call.unwrap();
    assert_eq!(call.outcome, Outcome::Timeout);
    assert_eq!(call.http_status, 0, "a timeout has no status");

    // No status attribute: the SDK's exception says it, by its class or
    // by its message ("Error code: 503 - {...}" in the Python SDKs).
    for (seq, error_type, message, status) in [
        (7, "RateLimitError", "Rate limit reached", 429),
        (8, "openai.NotFoundError", "The model does not exist", 404),
        (
            9,
            "InternalServerError",
            "Error code: 503 - {'error': {}}",
            503,
        ),
        (
            10,
            "APIStatusError",
            "Error code: 529 - {'type': 'error'}",
            529,
        ),
        (11, "APIConnectionError", "Connection error.", 0),
        (12, "InternalServerError", "Error code: 2xx", 0),
    ] {
        let mut attrs = current_chat();
        attrs.retain(|kv| !kv.key.starts_with("gen_ai.usage"));
        attrs.push(s("error.type", error_type));
        let mut failed = span(seq, attrs);
        failed.status = Some(Status {
            message: message.into(),
            code: StatusCode::Error as i32,
        });
        let call = mapped(&[], &failed, &tenant()).call.unwrap();
        assert_eq!(call.http_status, status, "{error_type}: {message}");
    }
}

#[test]
fn tenant_comes_from_the_key_and_user_attributes_fill_in() {
    let mut attrs = current_chat();
    attrs.push(s("enduser.id", "alice"));
    attrs.push(s("tollgate.team_id", "other-team"));
    // The key names a team: it wins; it names no user: enduser.id is used.
    let event = mapped(&[], &span(7, attrs.clone()), &tenant());
    assert_eq!(
        (event.team_id.as_str(), event.user_id.as_str()),
        ("search", "alice")
    );
    // A key with a user wins over the attribute.
    let with_user = Tenant {
        user_id: Some("bob".into()),
        team_id: None,
        ..tenant()
    };
    let event = mapped(&[], &span(7, attrs.clone()), &with_user);
    assert_eq!(
        (event.team_id.as_str(), event.user_id.as_str()),
        ("other-team", "bob")
    );
    // No team anywhere: unassigned, as the proxy records it.
    let event = mapped(&[], &span(7, current_chat()), &with_user);
    assert_eq!(event.team_id, "unassigned");
    // An org-scoped key cannot send another org's spans.
    let mut other_org = current_chat();
    other_org.push(s("tollgate.org_id", "globex"));
    let rejection = refusal(&[], &span(8, other_org));
    assert_eq!(rejection.field, "tollgate.org_id");
    assert!(
        rejection
            .reason
            .contains("only send spans for org \"acme\""),
        "{}",
        rejection.reason
    );
}

#[test]
fn non_genai_and_agent_spans_are_not_calls() {
    let http = span(9, vec![s("http.request.method", "GET"), s("url.path", "/")]);
    assert!(matches!(
        map_span(&[], &http, &tenant()).unwrap(),
        SpanMapping::NotGenAi
    ));
    let agent = span(
        10,
        vec![
            s("gen_ai.operation.name", "invoke_agent"),
            s("gen_ai.provider.name", "openai"),
            i("gen_ai.usage.input_tokens", 500),
        ],
    );
    assert!(matches!(
        map_span(&[], &agent, &tenant()).unwrap(),
        SpanMapping::NotModelCall
    ));
    for (op, want) in [
        ("text_completion", Operation::Completion),
        ("generate_content", Operation::Chat),
        ("embeddings", Operation::Embedding),
    ] {
        let mut attrs = current_chat();
        attrs[0] = s("gen_ai.operation.name", op);
        let call = mapped(&[], &span(11, attrs), &tenant()).call.unwrap();
        assert_eq!(call.operation, want, "{op}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_attribute() {
    let with = |extra: KeyValue| {
        let mut attrs = current_chat();
        attrs.retain(|kv| kv.key != extra.key);
        attrs.push(extra);
        span(12, attrs)
    };
    let huge = "m".repeat(1 << 20);
    let r = refusal(&[], &with(s("gen_ai.response.model", &huge)));
    assert_eq!(r.field, "gen_ai.response.model");
    assert!(
        r.reason.contains("at most 256") && r.reason.contains("call.model"),
        "{}",
        r.reason
    );
    let r = refusal(&[], &with(i("gen_ai.usage.input_tokens", -3)));
    assert_eq!(r.field, "gen_ai.usage.input_tokens");
    assert!(r.reason.contains("negative"), "{}", r.reason);
    let r = refusal(&[], &with(s("gen_ai.usage.output_tokens", "lots")));
    assert_eq!(r.field, "gen_ai.usage.output_tokens");
    // Cached tokens are a part of the input: more cached than input is
    // another convention, refused rather than guessed.
    let r = refusal(&[], &with(i("gen_ai.usage.cache_read.input_tokens", 101)));
    assert_eq!(r.field, "gen_ai.usage.cache_read.input_tokens");
    assert!(
        r.reason.contains("call.usage.cached_input_tokens"),
        "{}",
        r.reason
    );
    let r = refusal(&[s("service.name", &huge)], &span(12, current_chat()));
    assert_eq!(r.field, "service.name");
    let mut no_ids = span(12, current_chat());
    no_ids.span_id = vec![0; 8];
    assert_eq!(refusal(&[], &no_ids).field, "span_id");
    let no_provider = chat_without(|key| key == "gen_ai.provider.name");
    assert_eq!(
        refusal(&[], &span(12, no_provider)).field,
        "gen_ai.provider.name"
    );
    // The control plane's org is not a client's to claim, even with a key
    // of every org.
    let every_org = Tenant {
        org_id: None,
        ..tenant()
    };
    let r = match map_span(
        &[s("tollgate.org_id", "_tollgate")],
        &span(12, current_chat()),
        &every_org,
    ) {
        Ok(SpanMapping::Call(call)) => call
            .validate(now(), &Limits::default())
            .expect_err("the control plane's org is refused"),
        other => panic!("not a refused call: {other:?}"),
    };
    assert_eq!(r.field, "tollgate.org_id");
    assert!(r.reason.contains("reserved"), "{}", r.reason);
}

#[test]
fn event_ids_are_uuid7_from_trace_and_span() {
    let a = mapped(&[], &span(13, current_chat()), &tenant());
    let again = mapped(&[], &span(13, current_chat()), &tenant());
    let other = mapped(&[], &span(14, current_chat()), &tenant());
    assert_eq!(a.event_id, again.event_id);
    assert_ne!(a.event_id, other.event_id);
    assert_eq!(a.event_id.get_version_num(), 7);
    // The UUIDv7 time is the span's end.
    let (secs, nanos) = a.event_id.get_timestamp().unwrap().to_unix();
    assert_eq!((secs, nanos / 1_000_000), (1_796_191_201, 250));
    assert_ne!(
        span_event_id("acme", &TRACE, &[1; 8], 5),
        span_event_id("globex", &TRACE, &[1; 8], 5)
    );
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn a_call_through_the_proxy_is_passed_over_even_when_its_attributes_would_be_refused() {
    let proxies = super::proxied::ProxyAddresses::parse(&["127.0.0.1:8082".into()]).unwrap();
    let through = |mut attributes: Vec<KeyValue>| {
        attributes.push(s("server.address", "127.0.0.1"));
        attributes.push(i("server.port", 8082));
        attributes
    };
    // No provider: refused if it were billed here; the proxy has the call.
    let no_provider = chat_without(|key| key == "gen_ai.provider.name");
    let req = request(vec![
        span(40, through(current_chat())),
        span(41, through(no_provider)),
        span(42, current_chat()),
        span(43, through(vec![s("db.system.name", "postgresql")])),
    ]);
    let plan = plan_spans(&req, &tenant(), now(), &Limits::default(), &proxies);
    assert_eq!(plan.proxied, 2);
    assert!(plan.refused.is_empty(), "{:?}", plan.refused);
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.not_genai, 1);
}

/// The plan of `req` for the test tenant now, default limits, no proxy
/// addresses.
fn planned(req: &ExportTraceServiceRequest) -> SpanPlan {
    plan_spans(
        req,
        &tenant(),
        now(),
        &Limits::default(),
        &Default::default(),
    )
}

#[test]
fn a_span_sent_twice_without_usage_is_refused_not_warned_of_twice() {
    let no_usage = chat_without(|key| key.starts_with("gen_ai.usage."));
    let req = request(vec![span(50, no_usage.clone()), span(50, no_usage)]);
    let plan = planned(&req);
    assert_eq!(plan.refused.len(), 1);
    assert_eq!(plan.without_usage, vec![0]);
}

#[test]
fn a_successful_call_without_usage_is_taken_and_warned_of() {
    let no_usage = chat_without(|key| key.starts_with("gen_ai.usage."));
    let req = request(vec![span(30, current_chat()), span(31, no_usage)]);
    let plan = planned(&req);
    assert_eq!(plan.events.len(), 2);
    assert_eq!(plan.without_usage, vec![1]);
    // Tagged, so the cost report tells its zero cost from a price.
    assert_eq!(
        plan.events[1].tags.get("usage").map(String::as_str),
        Some("missing")
    );
    assert_eq!(plan.events[0].tags.get("usage"), None);
    let partial = PartialSuccess::from_refusals(plan.spans, &plan.refused)
        .warn_without_usage(&plan.without_usage);
    let answer = partial.response().partial_success.unwrap();
    assert_eq!(answer.rejected_spans, 0);
    assert_eq!(
        answer.error_message,
        "warning: 1 successful model-call span(s) carried no token usage (gen_ai.usage.input_tokens, gen_ai.usage.output_tokens) and were stored with zero tokens and zero cost: span 1"
    );
}

#[test]
fn a_plan_keeps_good_spans_beside_refused_and_dropped_ones() {
    let mut huge = current_chat();
    huge[2] = s("gen_ai.request.model", &"x".repeat(100_000));
    let req = request(vec![
        span(20, current_chat()),
        span(21, vec![s("db.system.name", "postgresql")]),
        span(22, huge),
        span(23, older_chat()),
        span(20, current_chat()),
    ]);
    let plan = planned(&req);
    assert_eq!(plan.spans, 5);
    assert_eq!(plan.events.len(), 2);
    assert_eq!(plan.not_genai, 1);
    assert_eq!(plan.refused.len(), 2);
    assert_eq!(plan.refused[0].index, 2);
    assert_eq!(plan.refused[0].rejection.field, "gen_ai.request.model");
    assert_eq!(plan.refused[1].rejection.field, "span_id");
    let partial = PartialSuccess::from_refusals(plan.spans, &plan.refused);
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.starts_with(
            "2 of 5 spans rejected: span 2 (trace 4bf92f3577b34da6a3ce929d0e0e4736, span 0000000000001016): gen_ai.request.model: 100000 characters, at most 256 allowed (call.requested_model)"
        ),
        "{}",
        partial.error_message
    );
    assert!(partial.error_message.len() < 1000);
    assert_eq!(
        PartialSuccess::from_refusals(3, &[])
            .response()
            .partial_success,
        None
    );
}

#[test]
fn otlp_json_with_hex_ids_and_string_integers_decodes() {
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"scope":{"name":"opentelemetry.instrumentation.openai_v2"},"spans":[{
        "traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00000000000010ff",
        "name":"chat gpt-4o","kind":3,
        "startTimeUnixNano":"1796191200000000000","endTimeUnixNano":"1796191200500000000",
        "attributes":[
          {"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},
          {"key":"gen_ai.system","value":{"stringValue":"openai"}},
          {"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},
          {"key":"gen_ai.usage.input_tokens","value":{"intValue":"12"}},
          {"key":"gen_ai.usage.output_tokens","value":{"intValue":7}}],
        "status":{"code":1}}]}]}]}"#;
    let req: ExportTraceServiceRequest = serde_json::from_str(body).unwrap();
    let plan = planned(&req);
    assert!(plan.refused.is_empty(), "{:?}", plan.refused);
    let call = plan.events[0].call.as_ref().unwrap();
    assert_eq!(call.span_id, "00000000000010ff");
    assert_eq!((call.usage.input_tokens, call.usage.output_tokens), (12, 7));
    assert_eq!(call.duration_ms, 500);
}

fn boolean(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

fn seconds(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

#[test]
fn an_explicit_stream_flag_wins_and_only_streamed_calls_have_a_ttft() {
    // OpenLIT: a TTFT on a call it says was not streamed is the whole call's.
    let mut attributes = current_chat();
    attributes.push(boolean("gen_ai.request.stream", false));
    attributes.push(seconds("gen_ai.server.time_to_first_token", 1.2));
    let call = mapped(&resource(), &span(1, attributes), &tenant())
        .call
        .unwrap();
    assert!(!call.stream);
    assert_eq!(call.ttft_ms, None);

    // Without a flag, a TTFT says the call streamed.
    let mut attributes = current_chat();
    attributes.push(seconds("gen_ai.server.time_to_first_token", 0.25));
    let call = mapped(&resource(), &span(2, attributes), &tenant())
        .call
        .unwrap();
    assert!(call.stream);
    assert_eq!(call.ttft_ms, Some(250));
}

#[test]
fn traceloops_stream_flag_and_first_chunk_give_stream_and_ttft() {
    let mut attributes = current_chat();
    attributes.push(boolean("gen_ai.is_streaming", true));
    let mut streamed = span(3, attributes);
    let chunk = |after_ms: u64| opentelemetry_proto::tonic::trace::v1::span::Event {
        time_unix_nano: START_NS + after_ms * 1_000_000,
        name: "gen_ai.content.completion.chunk".into(),
        ..Default::default()
    };
    // Out of order on purpose: the earliest chunk is the first token.
    streamed.events = vec![chunk(190), chunk(183), chunk(200)];
    let call = mapped(&resource(), &streamed, &tenant()).call.unwrap();
    assert!(call.stream);
    assert_eq!(call.ttft_ms, Some(183));
    // A chunk event before the span's start is passed over (a trial's
    // lost the TTFT altogether): the first one after the start counts.
    let mut early = streamed.clone();
    early
        .events
        .push(opentelemetry_proto::tonic::trace::v1::span::Event {
            time_unix_nano: START_NS - 400 * 1_000_000,
            name: "gen_ai.content.completion.chunk".into(),
            ..Default::default()
        });
    let call = mapped(&resource(), &early, &tenant()).call.unwrap();
    assert_eq!(call.ttft_ms, Some(183));

    // Not streamed: chunk events (there are none in practice) give no TTFT.
    let mut attributes = current_chat();
    attributes.push(boolean("gen_ai.is_streaming", false));
    let mut plain = span(4, attributes);
    plain.events = vec![chunk(100)];
    let call = mapped(&resource(), &plain, &tenant()).call.unwrap();
    assert!(!call.stream);
    assert_eq!(call.ttft_ms, None);
}

#[test]
fn span_counters_are_exposed_by_outcome() {
    let counters = super::SpanCounters::default();
    counters.received.inc_by(5);
    counters.dropped_not_genai.inc_by(2);
    counters.accepted.inc_by(3);
    let mut registry = prometheus_client::registry::Registry::with_prefix("tollgate_ingest");
    counters.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "tollgate_ingest_otlp_spans_total{outcome=\"received\"} 5",
        "tollgate_ingest_otlp_spans_total{outcome=\"dropped_not_genai\"} 2",
        "tollgate_ingest_otlp_spans_total{outcome=\"accepted\"} 3",
        "tollgate_ingest_otlp_spans_total{outcome=\"retried\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

/// The mapping builds the contract's `Event` itself, with no JSON between;
/// the processors read it back from the JSON it is produced as. Each shape
/// of mapped call (every usage count, a failure with its error, a stream
/// with its TTFT, a reported cost, every tag) must read back as the same
/// event, or a field the mapping fills would mean one thing here and
/// another there.
#[test]
fn mapped_events_read_back_from_their_json_unchanged() -> Result<(), Box<dyn std::error::Error>> {
    let mut every_count = current_chat();
    every_count.push(i("gen_ai.usage.cache_creation.input_tokens", 7));
    every_count.push(i("gen_ai.usage.reasoning.output_tokens", 9));
    every_count.push(seconds("gen_ai.usage.cost", 0.001_25));
    every_count.push(s("enduser.id", "u-1"));
    let mut failed = span(4, current_chat());
    failed.attributes.push(s("error.type", "429"));
    failed.status = Some(Status {
        message: "Rate limit reached \"quoted\" \u{1F600}".into(),
        code: StatusCode::Error as i32,
    });
    let mut streamed = current_chat();
    streamed.push(seconds("gen_ai.server.time_to_first_token", 0.25));
    let mut untenanted = older_chat();
    untenanted.push(s("tollgate.org_id", "globex"));
    untenanted.push(s("tollgate.team_id", "search"));
    let cases = [
        (span(1, every_count), tenant()),
        (failed, tenant()),
        (span(2, streamed), tenant()),
        (span(3, untenanted), Tenant::default()),
    ];
    let events: Vec<Event> = cases
        .iter()
        .map(|(span, tenant)| mapped(&resource(), span, tenant))
        .collect();
    // What the cases are meant to cover is there.
    let every = &events[0];
    assert_eq!(
        every.call.as_ref().map(|call| call.usage.reasoning_tokens),
        Some(9)
    );
    assert_eq!(every.reported_cost.as_deref(), Some("0.00125"));
    assert_eq!(
        every.tags.get("environment").map(String::as_str),
        Some("prod")
    );
    for event in &events {
        let json = serde_json::to_vec(event)?;
        let back = tollgate_contract::parse_event_json(&json, now(), &Limits::default())
            .map_err(|e| format!("{}: {e:?}", String::from_utf8_lossy(&json)))?;
        assert_eq!(&back, event, "{}", String::from_utf8_lossy(&json));
    }
    Ok(())
}

#[test]
fn a_repeated_attribute_is_refused_by_name() {
    let mut attributes = current_chat();
    attributes.push(i("gen_ai.usage.input_tokens", 999_999));
    let refused = refusal(&resource(), &span(1, attributes));
    assert_eq!(refused.field, "gen_ai.usage.input_tokens");
    assert!(refused.reason.contains("more than once"), "{refused}");
    let mut repeated = resource();
    repeated.push(s("service.name", "other"));
    let refused = refusal(&repeated, &span(1, current_chat()));
    assert_eq!(refused.field, "service.name");
    assert!(refused.reason.contains("resource"), "{refused}");
}
