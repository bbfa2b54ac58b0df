//! `tollgate ingest`'s OTLP trace receiver against real Kafka, ClickHouse
//! and PostgreSQL (`docs/otlp.md`): GenAI spans sent as OTLP/HTTP protobuf,
//! OTLP/JSON and OTLP/gRPC become calls priced from the catalog, in the
//! latency report and in the audit chain; an exporter's retry is not
//! counted twice; hostile requests get clear errors and cost no other span.

use crate::support;

use chrono::Utc;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use support::{d, TestEnv};

/// A started `tollgate ingest` (HTTP and gRPC) and `tollgate process`.
struct Receiver {
    env: TestEnv,
    http: reqwest::Client,
    key: String,
    grpc_port: u16,
}

impl Receiver {
    async fn start(label: &str) -> Self {
        let mut env = TestEnv::new(label).await;
        crate::ingest_api::start_ingest(&mut env).await;
        let grpc_port = support::listening_port(&env.log_path("ingest"), crate::support::PATIENCE);
        env.spawn("process", &["process"]);
        let key = env
            .run(&[
                "keys", "create", "--name", "otel", "--org", "acme", "--team", "search",
            ])
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_string();
        Self {
            env,
            http: reqwest::Client::new(),
            key,
            grpc_port,
        }
    }

    async fn post(
        &self,
        content_type: &str,
        body: Vec<u8>,
        key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/traces", self.env.ingest_url()))
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.unwrap()
    }

    async fn post_protobuf(
        &self,
        request: &ExportTraceServiceRequest,
    ) -> ExportTraceServiceResponse {
        let response = self
            .post(
                "application/x-protobuf",
                request.encode_to_vec(),
                Some(&self.key),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/x-protobuf");
        ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap()
    }

    async fn post_json(&self, request: &ExportTraceServiceRequest) -> Value {
        let response = self
            .post(
                "application/json",
                serde_json::to_vec(request).unwrap(),
                Some(&self.key),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn grpc(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let mut client =
            TraceServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc_port))
                .await
                .unwrap()
                .max_encoding_message_size(64 << 20);
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.key).parse().unwrap(),
        );
        client
            .export(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Wait until `calls` holds `want` rows matching `condition`.
    async fn wait_calls(&self, condition: &str, want: u64) -> u64 {
        self.env
            .wait_for_count(
                &format!("SELECT count() FROM {{db}}.calls WHERE {condition}"),
                want,
                crate::support::PATIENCE,
            )
            .await
    }

    fn logs(&self) -> String {
        ["ingest", "process"]
            .iter()
            .map(|l| std::fs::read_to_string(self.env.log_path(l)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A span of a fresh trace that ended a moment ago and lasted `ms`.
fn span(ms: u64, attributes: Vec<KeyValue>) -> Span {
    let end = u64::try_from(Utc::now().timestamp_nanos_opt().unwrap()).unwrap();
    Span {
        trace_id: rand::random::<[u8; 16]>().to_vec(),
        span_id: rand::random::<[u8; 8]>().to_vec(),
        name: "chat".into(),
        kind: 3,
        start_time_unix_nano: end - ms * 1_000_000,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "checkout"),
                    s("deployment.environment.name", "test"),
                ],
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

/// A chat span in the current conventions.
fn chat(model: &str, input: i64, cached: i64, output: i64) -> Vec<KeyValue> {
    vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", model),
        s("gen_ai.response.model", model),
        i("gen_ai.usage.input_tokens", input),
        i("gen_ai.usage.cache_read.input_tokens", cached),
        i("gen_ai.usage.output_tokens", output),
    ]
}

fn span_hex(span: &Span) -> String {
    hex::encode(&span.span_id)
}

/// An HTTP server span: not GenAI, dropped.
fn http_span() -> Span {
    span(
        5,
        vec![s("http.request.method", "POST"), s("url.path", "/cart")],
    )
}

#[tokio::test]
async fn protobuf_json_and_grpc_spans_become_priced_calls_in_reports_and_audit() {
    let mut rx = Receiver::start("otlp_paths").await;
    // Protobuf: the current names, a dated response model (priced as its
    // family gpt-4o).
    let mut proto_attrs = chat("gpt-4o", 1000, 400, 200);
    proto_attrs[3] = s("gen_ai.response.model", "gpt-4o-2024-08-06");
    let proto_span = span(1200, proto_attrs);
    // JSON: the older names (gen_ai.system, prompt/completion tokens).
    let json_span = span(
        800,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.system", "openai"),
            s("gen_ai.request.model", "gpt-4o-mini"),
            i("gen_ai.usage.prompt_tokens", 1000),
            i("gen_ai.usage.completion_tokens", 100),
        ],
    );
    let grpc_span = span(400, chat("gpt-4o", 10, 0, 10));

    let answer = rx
        .post_protobuf(&request(vec![proto_span.clone(), http_span()]))
        .await;
    assert_eq!(answer.partial_success, None);
    let answer = rx
        .post_json(&request(vec![json_span.clone(), http_span()]))
        .await;
    assert!(answer.get("partialSuccess").is_none(), "{answer}");
    let answer = rx
        .grpc(request(vec![grpc_span.clone(), http_span()]))
        .await
        .unwrap();
    assert_eq!(answer.partial_success, None);

    let got = rx.wait_calls("1", 3).await;
    assert_eq!(got, 3, "logs:\n{}", rx.logs());
    // Each call with its tokens, model and the catalog's price:
    // gpt-4o 2.5e-6 in, 1.25e-6 cached in, 1e-5 out; gpt-4o-mini 1.5e-7 in,
    // 6e-7 out.
    for (span, model, input, cached, output, duration, cost) in [
        (
            &proto_span,
            "gpt-4o-2024-08-06",
            1000,
            400,
            200,
            1200,
            "0.004",
        ),
        (&json_span, "gpt-4o-mini", 1000, 0, 100, 800, "0.00021"),
        (&grpc_span, "gpt-4o", 10, 0, 10, 400, "0.000125"),
    ] {
        let row = rx
            .env
            .ch(&format!(
                "SELECT model, input_tokens, cached_input_tokens, output_tokens, duration_ms, toString(cost), priced, trace_id, org_id, team_id, provider \
                 FROM {{db}}.calls WHERE span_id = '{}' FORMAT TSV",
                span_hex(span)
            ))
            .await;
        let cols: Vec<&str> = row.trim().split('\t').collect();
        assert_eq!(cols.len(), 11, "{row:?}");
        assert_eq!(cols[0], model);
        assert_eq!(
            (cols[1], cols[2], cols[3], cols[4]),
            (
                input.to_string().as_str(),
                cached.to_string().as_str(),
                output.to_string().as_str(),
                duration.to_string().as_str()
            ),
            "{row}"
        );
        assert_eq!(d(cols[5]), d(cost), "{model}: {row}");
        assert_eq!(cols[6], "1", "priced");
        assert_eq!(cols[7], hex::encode(&span.trace_id));
        assert_eq!((cols[8], cols[9], cols[10]), ("acme", "search", "openai"));
    }
    let tags = rx
        .env
        .ch(&format!(
            "SELECT tag_keys, tag_values FROM {{db}}.calls WHERE span_id = '{}' FORMAT TSV",
            span_hex(&proto_span)
        ))
        .await;
    assert!(
        tags.contains("service") && tags.contains("checkout"),
        "{tags}"
    );

    // The audit chain holds the three events.
    let audited = rx
        .env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_chain WHERE kind = 'ai.call.completed'",
            3,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(audited, 3, "logs:\n{}", rx.logs());

    // The latency report counts them per model.
    rx.env.start_api().await;
    let from = (Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (Utc::now() + chrono::Duration::minutes(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let report = rx
        .env
        .latency_report_counting(
            &[
                ("from", from.as_str()),
                ("to", to.as_str()),
                ("group_by", "model"),
            ],
            3,
        )
        .await;
    let groups = report["groups"].as_array().unwrap();
    let count_of = |model: &str| {
        groups
            .iter()
            .find(|g| g["key"]["model"] == model)
            .map(|g| g["total"]["count"].as_u64().unwrap())
    };
    assert_eq!(count_of("gpt-4o-2024-08-06"), Some(1), "{report}");
    assert_eq!(count_of("gpt-4o-mini"), Some(1), "{report}");
    assert_eq!(count_of("gpt-4o"), Some(1), "{report}");
}

#[tokio::test]
async fn an_exporters_retry_of_the_same_spans_is_not_counted_twice() {
    let rx = Receiver::start("otlp_retry").await;
    let first = request(vec![
        span(100, chat("gpt-4o", 50, 0, 5)),
        span(100, chat("gpt-4o", 60, 0, 6)),
    ]);
    let ids: Vec<String> = first.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(span_hex)
        .collect();
    rx.post_protobuf(&first).await;
    // The exporter did not see the answer and sends the same spans again,
    // over both transports.
    rx.post_protobuf(&first).await;
    rx.grpc(first.clone()).await.unwrap();
    // A later span of the same team: once it is stored, any copy of the
    // first spans (same partition, earlier offsets) would be too.
    let marker = span(100, chat("gpt-4o", 1, 0, 1));
    rx.post_protobuf(&request(vec![marker.clone()])).await;
    let got = rx
        .wait_calls(&format!("span_id = '{}'", span_hex(&marker)), 1)
        .await;
    assert_eq!(got, 1, "logs:\n{}", rx.logs());
    let copies = rx
        .env
        .ch_u64(&format!(
            "SELECT count() FROM {{db}}.calls WHERE span_id IN ('{}', '{}')",
            ids[0], ids[1]
        ))
        .await;
    assert_eq!(copies, 2, "each retried span once");
    assert_eq!(
        rx.env
            .ch_u64("SELECT sum(input_tokens) FROM {db}.calls")
            .await,
        111
    );
}

#[tokio::test]
async fn hostile_otlp_gets_clear_errors_and_loses_nothing_else() {
    let rx = Receiver::start("otlp_hostile").await;
    let good = request(vec![span(10, chat("gpt-4o", 7, 0, 7))]);

    // Wrong content type: 415 naming the accepted ones.
    let response = rx
        .post("text/plain", good.encode_to_vec(), Some(&rx.key))
        .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("application/x-protobuf or application/json"),
        "{body}"
    );
    // A content encoding other than gzip: 415 naming it, as /v1/events.
    let response = rx
        .http
        .post(format!("{}/v1/traces", rx.env.ingest_url()))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .bearer_auth(&rx.key)
        .body(good.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let status =
        tollgate_ingest::otlp::http::RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert!(
        status.message.contains("\"br\" is not supported"),
        "{}",
        status.message
    );
    // A body over ingest.max_body_bytes (5 MiB): 413.
    let response = rx
        .post("application/x-protobuf", vec![0u8; 6 << 20], Some(&rx.key))
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // No key: 401, for HTTP and gRPC.
    let response = rx
        .post("application/json", serde_json::to_vec(&good).unwrap(), None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", rx.grpc_port))
        .await
        .unwrap();
    let status = client.export(good.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // Truncated protobuf: 400 saying so, as a google.rpc.Status.
    let bytes = good.encode_to_vec();
    let response = rx
        .post(
            "application/x-protobuf",
            bytes[..bytes.len() - 9].to_vec(),
            Some(&rx.key),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status =
        tollgate_ingest::otlp::http::RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert!(status.message.contains("truncated"), "{}", status.message);
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);

    // OTLP/JSON that cannot be decoded: 400 naming the member where it
    // stopped (a trial's batch of hundreds was refused as `body`, at a
    // column number).
    let mut json = serde_json::to_value(request(vec![
        span(11, chat("gpt-4o", 7, 0, 7)),
        span(12, chat("gpt-4o", 7, 0, 7)),
    ]))
    .unwrap();
    json["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = "zz00000000000001".into();
    let response = rx
        .post(
            "application/json",
            serde_json::to_vec(&json).unwrap(),
            Some(&rx.key),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["field"], "resourceSpans[0].scopeSpans[0].spans[1].spanId",
        "{body}"
    );

    // 100 000 spans in one request: the request limit, before decoding.
    let many = request((0..100_000).map(|_| Span::default()).collect());
    let response = rx
        .post(
            "application/x-protobuf",
            many.encode_to_vec(),
            Some(&rx.key),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status =
        tollgate_ingest::otlp::http::RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert!(
        status
            .message
            .contains("100000 spans in one request, at most 10000"),
        "{}",
        status.message
    );
    // The same over gRPC: counted before decoding too.
    let status = rx.grpc(many.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("100000 spans in one request"),
        "{status:?}"
    );
    // 100 000 real GenAI spans over gRPC: refused whole (too large or too
    // many), never a crash.
    let many_calls = request(
        (0..100_000)
            .map(|_| span(1, chat("gpt-4o", 1, 0, 1)))
            .collect(),
    );
    let status = rx.grpc(many_calls).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    // A gRPC message over ingest.max_body_bytes is RESOURCE_EXHAUSTED, as
    // the HTTP transport's 413 (OUT_OF_RANGE, tonic's own, is retried by
    // OTLP clients), naming the limit.
    let mut oversized = chat("gpt-4o", 7, 0, 7);
    oversized.push(s("gen_ai.input.messages", &"c".repeat(6 << 20)));
    let status = rx
        .grpc(request(vec![span(1, oversized)]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            tonic::Code::ResourceExhausted,
            "body: the gRPC message is larger than ingest.max_body_bytes (5242880 bytes)"
        ),
        "{status:?}"
    );
    let many_calls_reason = if status.code() == tonic::Code::InvalidArgument {
        "too_many_spans"
    } else {
        "too_large"
    };

    // Huge attribute values: a mapped one refuses its span only, naming
    // the attribute; an unmapped one (message content) is ignored.
    let mut huge_model = chat("gpt-4o", 3, 0, 3);
    huge_model[2] = s("gen_ai.request.model", &"m".repeat(1 << 20));
    let mut huge_content = chat("gpt-4o", 5, 0, 5);
    huge_content.push(s("gen_ai.input.messages", &"c".repeat(1 << 20)));
    let mixed = request(vec![
        span(10, chat("gpt-4o", 11, 0, 1)),
        span(10, huge_model),
        span(10, huge_content),
        http_span(),
        span(10, chat("gpt-4o", 13, 0, 1)),
    ]);
    let answer = rx.post_protobuf(&mixed).await;
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .starts_with("1 of 5 spans rejected: span 1 (")
            && partial
                .error_message
                .contains("gen_ai.request.model: 1048576 characters, at most 256 allowed"),
        "{}",
        partial.error_message
    );
    // The same in OTLP/JSON: the partial success in JSON.
    let mut json_huge = chat("gpt-4o", 3, 0, 3);
    json_huge[4] = i("gen_ai.usage.input_tokens", -1);
    let answer = rx
        .post_json(&request(vec![
            span(10, json_huge),
            span(10, chat("gpt-4o", 17, 0, 1)),
        ]))
        .await;
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 1, "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("gen_ai.usage.input_tokens: must not be negative"),
        "{answer}"
    );
    rx.post_protobuf(&good).await;

    // `/metrics` counts every request refused whole by API and reason, and
    // each refused span by the field its refusal names.
    let grpc_too_many = if many_calls_reason == "too_many_spans" {
        2
    } else {
        1
    };
    let mut refused = vec![
        ("otlp_http", "unsupported_media_type", 1),
        ("otlp_http", "unsupported_encoding", 1),
        ("otlp_http", "too_large", 1),
        ("otlp_http", "unauthenticated", 1),
        ("otlp_http", "malformed", 2),
        ("otlp_http", "too_many_spans", 1),
        ("otlp_grpc", "unauthenticated", 1),
        ("otlp_grpc", "too_many_spans", grpc_too_many),
    ];
    // The oversized message, and the 100 000 calls when they were too large.
    refused.push((
        "otlp_grpc",
        "too_large",
        if many_calls_reason == "too_large" {
            2
        } else {
            1
        },
    ));
    let metrics = rx
        .http
        .get(format!("{}/metrics", rx.env.ingest_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut want: Vec<String> = refused
        .iter()
        .map(|(api, reason, n)| {
            format!(
                "tollgate_ingest_rejected_requests_total{{api=\"{api}\",reason=\"{reason}\"}} {n}"
            )
        })
        .collect();
    want.sort();
    let mut got: Vec<String> = metrics
        .lines()
        // Every reason is exposed at zero from the start; these are counted.
        .filter(|l| l.starts_with("tollgate_ingest_rejected_requests_total{") && !l.ends_with(" 0"))
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, want, "{metrics}");
    for line in [
        "tollgate_ingest_rejected_events_total{api=\"otlp_http\",field=\"gen_ai.request.model\"} 1",
        "tollgate_ingest_rejected_events_total{api=\"otlp_http\",field=\"gen_ai.usage.input_tokens\"} 1",
        "tollgate_ingest_otlp_spans_total{outcome=\"rejected\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing:\n{metrics}");
    }
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("tollgate_ingest_rejected_events_total{"))
            .count(),
        2,
        "{metrics}"
    );

    // Nothing else lost, nothing extra: the good spans, exactly. The last
    // one shares the partition (the team) with the others, so once it is
    // stored every earlier one is.
    let last = span_hex(&good.resource_spans[0].scope_spans[0].spans[0]);
    let got = rx.wait_calls(&format!("span_id = '{last}'"), 1).await;
    assert_eq!(got, 1, "logs:\n{}", rx.logs());
    assert_eq!(rx.env.ch_u64("SELECT count() FROM {db}.calls").await, 5);
    assert_eq!(
        rx.env
            .ch_u64("SELECT sum(input_tokens) FROM {db}.calls")
            .await,
        11 + 5 + 13 + 17 + 7
    );
}
