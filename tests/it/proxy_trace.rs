//! Trace ids through `tollgate proxy`, end to end: the client's W3C
//! `traceparent` reaches the provider (the mock upstream) and the call's
//! row in ClickHouse; with `telemetry.otlp_endpoint` set, the proxy exports
//! one GenAI span per upstream attempt as a child of the client's span, and
//! the processors export their batch and insert spans. The OTLP/HTTP
//! receiver here stands in for the user's tracing backend: it decodes what
//! the real exporter sends with `opentelemetry-proto`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::Value;

use crate::proxy::Proxy;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{CLIENT_SPAN}-01")
}

/// One span as the receiver got it: ids in hex, attributes as text or
/// integers.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    /// The `service.name` of the span's resource.
    service: String,
    scope: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, Attribute>,
}

#[derive(Debug, Clone, PartialEq)]
enum Attribute {
    Text(String),
    Int(i64),
    Other,
}

impl ReceivedSpan {
    fn text(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(Attribute::Text(t)) => Some(t),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(Attribute::Int(n)) => Some(*n),
            _ => None,
        }
    }
}

/// An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf).
struct OtlpReceiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

async fn receive(State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.clone()?.value)
            .map(|v| match v {
                AnyValue::StringValue(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            let scope_name = scope.scope.map(|s| s.name).unwrap_or_default();
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .into_iter()
                    .map(|kv| {
                        let value = match kv.value.and_then(|v| v.value) {
                            Some(AnyValue::StringValue(s)) => Attribute::Text(s),
                            Some(AnyValue::IntValue(n)) => Attribute::Int(n),
                            _ => Attribute::Other,
                        };
                        (kv.key, value)
                    })
                    .collect();
                received.push(ReceivedSpan {
                    service: service.clone(),
                    scope: scope_name.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    attributes,
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

impl OtlpReceiver {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, spans }
    }

    /// Wait until `want` spans match `pick`.
    async fn wait_for(
        &self,
        want: usize,
        pick: impl Fn(&ReceivedSpan) -> bool,
        log: impl Fn() -> String,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found: Vec<ReceivedSpan> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| pick(s))
                .cloned()
                .collect();
            if found.len() >= want {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {want} spans arrived: {found:#?}\nall: {:#?}\nlog:\n{}",
                found.len(),
                self.spans.lock().unwrap(),
                log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `(trace_id, span_id)` of every attempt of `call_id` in ClickHouse, by
/// attempt, once `want` attempts are there.
async fn stored_trace(proxy: &Proxy, call_id: &str, want: usize) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT trace_id, span_id FROM {}.calls WHERE call_id = '{call_id}' ORDER BY attempt FORMAT JSONEachRow",
        proxy.env.ch_database
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = crate::support::clickhouse_query(&sql).await;
        let rows: Vec<(String, String)> = out
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["trace_id"].as_str().unwrap().to_string(),
                    v["span_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if rows.len() >= want {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "call {call_id} never reached ClickHouse ({} of {want} rows); log:\n{}",
            rows.len(),
            std::fs::read_to_string(proxy.env.log_path("process")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn call_id(response: &reqwest::Response) -> String {
    response.headers()["x-tollgate-call-id"]
        .to_str()
        .unwrap()
        .to_string()
}

async fn start_proxy_and_processor(label: &str, extra: &str) -> Proxy {
    let mut proxy = Proxy::start(label, extra, None).await;
    let processor = proxy.spawn("process", &["process"]);
    proxy.children.push(processor);
    proxy.run_proxy().await;
    proxy
}

/// Without span export the proxy passes the client's trace headers on
/// unchanged and records the client's span as the one that made the call;
/// an invalid `traceparent` is ignored (the call succeeds, no ids).
#[tokio::test]
async fn the_clients_traceparent_reaches_the_upstream_and_clickhouse() {
    let mut proxy = start_proxy_and_processor("trace_pass", "").await;
    let key = proxy.key("acme", "traced", "tracer", None);
    let scenario = format!("trace-pass-{}", rand::random::<u32>());
    let tp = traceparent();
    let response = proxy
        .chat(
            &key,
            "gpt-4o-mini",
            &[
                ("traceparent", tp.as_str()),
                ("tracestate", "vendor=abc"),
                ("x-mock-scenario", scenario.as_str()),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let traced = call_id(&response);
    let seen = proxy.scenario(&scenario).await;
    assert_eq!(seen["last_headers"]["traceparent"], tp.as_str());
    assert_eq!(seen["last_headers"]["tracestate"], "vendor=abc");

    let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let response = proxy
        .chat(&key, "gpt-4o-mini", &[("traceparent", zero)])
        .await;
    assert_eq!(response.status(), 200, "an invalid traceparent is no error");
    let untraced = call_id(&response);

    assert_eq!(
        stored_trace(&proxy, &traced, 1).await,
        vec![(TRACE.to_string(), CLIENT_SPAN.to_string())]
    );
    assert_eq!(
        stored_trace(&proxy, &untraced, 1).await,
        vec![(String::new(), String::new())]
    );

    // The SRE latency page lists both among the window's slowest calls,
    // and its CSV carries the ids (read from ClickHouse 18.16).
    proxy.env.spawn("api", &["api"]);
    let api = proxy.env.api_url();
    let csv = proxy
        .http
        .get(format!("{api}/sre/latency/slowest.csv?range=1h"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |call: &str| {
        csv.lines()
            .find(|l| l.contains(call))
            .unwrap_or_else(|| panic!("{call} not in the CSV:\n{csv}"))
            .to_string()
    };
    assert!(
        line(&traced).ends_with(&format!(",{TRACE},{CLIENT_SPAN}")),
        "{csv}"
    );
    assert!(line(&untraced).ends_with(",,"), "{csv}");
    let page = proxy
        .http
        .get(format!("{api}/sre/latency?range=1h"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&traced) && html.contains(TRACE), "{html}");
}

/// With `telemetry.otlp_endpoint` the proxy's span of each attempt (from
/// service `tollgate-proxy`) is a child of the client's span, carries the GenAI attributes with the
/// mock's token counts, is the provider's parent, and is the span the
/// call's rows name; the processors' batch and insert spans arrive too,
/// from service `tollgate-process`.
#[tokio::test]
async fn the_proxy_exports_a_gen_ai_span_per_attempt_under_the_clients_span() {
    let receiver = OtlpReceiver::start().await;
    let extra = format!("\n[telemetry]\notlp_endpoint = \"{}\"\n", receiver.endpoint);
    let proxy = start_proxy_and_processor("trace_export", &extra).await;
    let key = proxy.key("acme", "traced", "tracer", None);
    let scenario = format!("trace-export-{}", rand::random::<u32>());
    let tp = traceparent();
    // The first attempt fails with a 500 and is retried: two attempts,
    // two spans, both children of the client's span.
    let response = proxy
        .chat(
            &key,
            "gpt-4o-mini",
            &[
                ("traceparent", tp.as_str()),
                ("tracestate", "vendor=abc"),
                ("x-mock-scenario", scenario.as_str()),
                ("x-mock-fail", "500"),
                ("x-mock-fail-times", "1"),
                ("x-mock-output-tokens", "3"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let call = call_id(&response);
    let body: Value = response.json().await.unwrap();
    let input_tokens = body["usage"]["prompt_tokens"].as_i64().unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3);

    let log = || proxy.log();
    let spans = receiver
        .wait_for(
            2,
            |s| s.scope == "tollgate-proxy" && s.trace_id == TRACE,
            log,
        )
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let by_attempt = |n: i64| {
        spans
            .iter()
            .find(|s| s.int("tollgate.attempt") == Some(n))
            .unwrap_or_else(|| panic!("no span of attempt {n}: {spans:#?}"))
    };
    let (failed, served) = (by_attempt(1), by_attempt(2));
    for span in [failed, served] {
        assert_eq!(span.service, "tollgate-proxy", "{span:#?}");
        assert_eq!(span.name, "chat gpt-4o-mini");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.parent_span_id, CLIENT_SPAN);
        assert_ne!(span.span_id, CLIENT_SPAN);
        assert_eq!(span.text("gen_ai.operation.name"), Some("chat"));
        assert_eq!(span.text("gen_ai.provider.name"), Some("openai"));
        assert_eq!(span.text("gen_ai.request.model"), Some("gpt-4o-mini"));
        assert_eq!(span.text("server.address"), Some("127.0.0.1"));
        assert_eq!(span.int("server.port"), Some(i64::from(proxy.mock_port)));
        assert_eq!(span.text("tollgate.call_id"), Some(call.as_str()));
    }
    assert_ne!(failed.span_id, served.span_id);
    assert_eq!(failed.int("http.response.status_code"), Some(500));
    assert!(failed.text("error.type").is_some(), "{failed:#?}");
    assert_eq!(served.text("error.type"), None);
    assert_eq!(served.text("gen_ai.response.model"), Some("gpt-4o-mini"));
    assert_eq!(served.int("gen_ai.usage.input_tokens"), Some(input_tokens));
    assert_eq!(served.int("gen_ai.usage.output_tokens"), Some(3));

    // The provider saw the proxy's span (of the attempt it answered) as
    // its parent, in the client's trace, with the client's trace state.
    let seen = proxy.scenario(&scenario).await;
    assert_eq!(
        seen["last_headers"]["traceparent"],
        format!("00-{TRACE}-{}-01", served.span_id).as_str()
    );
    assert_eq!(seen["last_headers"]["tracestate"], "vendor=abc");

    // Each attempt's row names its own span.
    assert_eq!(
        stored_trace(&proxy, &call, 2).await,
        vec![
            (TRACE.to_string(), failed.span_id.clone()),
            (TRACE.to_string(), served.span_id.clone()),
        ]
    );

    // The processors' own spans: a batch insert with its size and partitions.
    let process_log = || std::fs::read_to_string(proxy.env.log_path("process")).unwrap_or_default();
    let inserts = receiver
        .wait_for(
            1,
            |s| s.name == "insert" && s.text("tollgate.fold") == Some("calls"),
            process_log,
        )
        .await;
    let insert = &inserts[0];
    assert_eq!(insert.service, "tollgate-process", "{insert:#?}");
    assert!(
        insert.int("messaging.batch.message_count").unwrap_or(0) >= 1,
        "{insert:#?}"
    );
    assert!(
        insert.text("messaging.destination.partition.id").is_some(),
        "{insert:#?}"
    );
    assert_eq!(insert.text("db.collection.name"), Some("calls"));
}
