//! The OpenTelemetry instrumentations teams already run, as real clients
//! of `tollgate ingest`'s OTLP receiver (`docs/otlp.md`): for each of
//! `opentelemetry-instrumentation-openai-v2` (the current release, and an
//! older one that writes `gen_ai.system`), OpenLIT (`openlit`) and
//! OpenLLMetry (`traceloop-sdk`), a Python program of
//! `tests/otlp_clients/` instruments the official `openai` SDK, calls
//! `tollgate mock-upstream` directly (not through the proxy) and exports
//! its spans to ingest, over OTLP/HTTP and over OTLP/gRPC, streamed and
//! not. Each call must then be one `calls` row with the trace and span id
//! the program printed, the tokens the mock reported, the model, and the
//! catalog's exact price; the program's own parent span and any HTTP span
//! the library adds are not calls.
//!
//! The programs run in one venv per library, made by `dev/stack up`
//! (`TOLLGATE_TEST_OTLP_VENVS` points elsewhere).

use crate::support;
use support::{d, TestEnv};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{json, Value};

/// The mock's figures for the programs' one request: the prompt
/// (`instrumented_call.PROMPT`) is 10 words, `--max-tokens` 7 asks for 7
/// output tokens, and the mock reads a quarter of the input (2) from its
/// cache.
const INPUT_TOKENS: u64 = 10;
const OUTPUT_TOKENS: u64 = 7;
const CACHED_TOKENS: u64 = 2;
const MODEL: &str = "gpt-4o-mini";
/// The mock's time to first token: a streamed call's TTFT is at least
/// this, and so is every call's duration.
const MOCK_TTFT_MS: u64 = 150;
/// How long one program may take: a Python start, one call and an export
/// take a few seconds, more on a busy machine; a program stuck for 90 s
/// prints its threads' stacks and exits by itself (`instrumented_call`).
const PROGRAM_DEADLINE: Duration = Duration::from_secs(120);
/// gpt-4o-mini in the default catalog (`migrations/prices/`), USD per token.
const INPUT_PRICE: &str = "0.00000015";
const CACHED_INPUT_PRICE: &str = "0.000000075";
const OUTPUT_PRICE: &str = "0.0000006";

/// One instrumentation library and what it puts on its spans (the
/// "what the libraries send" table of `docs/otlp.md`): only what a library
/// sends can reach the call.
struct Library {
    /// The venv's name under the venvs directory.
    venv: &'static str,
    /// The program under `tests/otlp_clients/`.
    program: &'static str,
    /// Sends the cached input tokens the mock reported.
    sends_cached_tokens: bool,
    /// Says whether the call was streamed.
    sends_stream_flag: bool,
    /// Records a streamed call's time to first token.
    sends_ttft: bool,
    /// Reports its own price of the call (`gen_ai.usage.cost`), as this
    /// decimal text.
    reported_cost: Option<&'static str>,
}

const OPENAI_V2: Library = Library {
    venv: "openai-v2",
    program: "openai_v2_client.py",
    sends_cached_tokens: false,
    sends_stream_flag: false,
    sends_ttft: false,
    reported_cost: None,
};

/// An older release of openai-v2 (2.1b0), which names the provider
/// `gen_ai.system` (semantic conventions up to 1.36): the older attribute
/// names, from a real client.
const OPENAI_V2_LEGACY: Library = Library {
    venv: "openai-v2-legacy",
    ..OPENAI_V2
};

/// OpenLIT prices the call itself from `openlit_pricing.json` (the
/// catalog's list prices, but without the cached-input discount).
const OPENLIT: Library = Library {
    venv: "openlit",
    program: "openlit_client.py",
    sends_cached_tokens: true,
    sends_stream_flag: true,
    sends_ttft: true,
    reported_cost: Some("0.0000057"),
};

const TRACELOOP: Library = Library {
    venv: "traceloop",
    program: "traceloop_client.py",
    sends_cached_tokens: true,
    sends_stream_flag: true,
    // From the first `gen_ai.content.completion.chunk` span event.
    sends_ttft: true,
    reported_cost: None,
};

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http,
    Grpc,
}

/// Ingest (OTLP/HTTP on its listener, OTLP/gRPC on a port of its own),
/// the processors and the mock upstream, in an environment of their own.
struct Rig {
    env: TestEnv,
    grpc_port: u16,
    mock_port: u16,
    ingest_key: String,
}

impl Rig {
    async fn start(label: &str) -> Self {
        let mut env = TestEnv::new(label).await;
        let ingest_key = env.create_key("acme-otlp");
        crate::ingest_api::start_ingest(&mut env).await;
        // The OTLP/gRPC receiver's port, which the system picked.
        let grpc_port = support::listening_port(&env.log_path("ingest"), crate::support::PATIENCE);
        env.spawn("process", &["process"]);
        let mock_port = support::free_port();
        env.spawn(
            "mock",
            &[
                "mock-upstream",
                "--listen",
                &format!("127.0.0.1:{mock_port}"),
                "--ttft",
                &format!("fixed:{MOCK_TTFT_MS}"),
                "--inter-token",
                "fixed:5",
            ],
        );
        support::wait_http(
            &format!("http://127.0.0.1:{mock_port}/healthz"),
            crate::support::PATIENCE,
            &env.log_path("mock"),
        )
        .await;
        Self {
            env,
            grpc_port,
            mock_port,
            ingest_key,
        }
    }

    /// Run `library`'s program once against the mock; its report.
    fn run(&self, library: &Library, protocol: Protocol, stream: bool) -> Report {
        self.run_with(library, protocol, stream, &[])
    }

    /// [`Rig::run`] with more arguments for the program.
    fn run_with(
        &self,
        library: &Library,
        protocol: Protocol,
        stream: bool,
        extra: &[&str],
    ) -> Report {
        let wiring = Wiring {
            ingest_url: self.env.ingest_url(),
            grpc_port: self.grpc_port,
            ingest_key: self.ingest_key.clone(),
            base_url: format!("http://127.0.0.1:{}/v1", self.mock_port),
            api_key: "sk-mock".into(),
        };
        run_library(&self.env, &wiring, library, protocol, stream, extra)
    }
}

/// Where a library's program sends its spans (ingest, with a key) and its
/// call (the SDK's base URL and key: the mock, or the proxy).
struct Wiring {
    ingest_url: String,
    grpc_port: u16,
    ingest_key: String,
    base_url: String,
    api_key: String,
}

/// Run `library`'s program once; its report (the last line it printed).
fn run_library(
    env: &TestEnv,
    wiring: &Wiring,
    library: &Library,
    protocol: Protocol,
    stream: bool,
    extra: &[&str],
) -> Report {
    let endpoint = match protocol {
        Protocol::Http => wiring.ingest_url.clone(),
        Protocol::Grpc => format!("127.0.0.1:{}", wiring.grpc_port),
    };
    let protocol_name = match protocol {
        Protocol::Http => "http/protobuf",
        Protocol::Grpc => "grpc",
    };
    let python = venv_python(library.venv);
    let mut command = Command::new(&python);
    command
        .current_dir(programs_dir())
        .arg("-u")
        .arg(library.program)
        .args(["--endpoint", &endpoint, "--protocol", protocol_name])
        .args(["--ingest-key", &wiring.ingest_key])
        .args(["--mock-url", &wiring.base_url])
        .args(["--api-key", &wiring.api_key])
        .args(["--model", MODEL, "--max-tokens", &OUTPUT_TOKENS.to_string()])
        .args(["--service-name", &format!("shop-{}", library.venv)]);
    if stream {
        command.arg("--stream");
    }
    command.args(extra);
    let label = format!(
        "{} over {protocol:?}, stream {stream} {}",
        library.venv,
        extra.join(" ")
    );
    let output = env.dir.path().join(format!(
        "{}-{protocol:?}-{stream}{}",
        library.venv,
        extra.join("-")
    ));
    let (stdout_path, stderr_path) = (output.with_extension("out"), output.with_extension("err"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {} ({err}): `dev/stack up` makes the venvs of tests/otlp_clients",
                python.display()
            )
        });
    // A program that hangs (an exporter retrying forever) fails the
    // test instead of holding it.
    let deadline = Instant::now() + PROGRAM_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "{label}: {} {} ({status:?}; none: killed after {PROGRAM_DEADLINE:?}):\n{stdout}\n{stderr}\ningest log:\n{}\nmock log:\n{}",
        python.display(),
        library.program,
        std::fs::read_to_string(env.log_path("ingest")).unwrap_or_default(),
        std::fs::read_to_string(env.log_path("mock")).unwrap_or_default()
    );
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|err| panic!("{} printed no report ({err}):\n{stdout}", library.program));
    Report {
        label,
        stream,
        value: report,
    }
}

/// What a program printed about its call.
struct Report {
    label: String,
    stream: bool,
    value: Value,
}

impl Report {
    fn trace_id(&self) -> &str {
        self.value["trace_id"].as_str().unwrap()
    }

    /// The span the library made for the model call: the one with GenAI
    /// attributes.
    fn call_span_id(&self) -> &str {
        let spans = self.value["spans"].as_array().unwrap();
        let calls: Vec<&Value> = spans
            .iter()
            .filter(|s| s["attributes"].get("gen_ai.operation.name").is_some())
            .collect();
        assert_eq!(calls.len(), 1, "{}: one GenAI span: {spans:#?}", self.label);
        calls[0]["span_id"].as_str().unwrap()
    }

    fn reported_usage(&self, field: &str) -> u64 {
        self.value["reply"]["usage"][field].as_u64().unwrap()
    }
}

fn programs_dir() -> PathBuf {
    crate::support::repo_root().join("tests/otlp_clients")
}

fn venv_python(venv: &str) -> PathBuf {
    let venvs = std::env::var("TOLLGATE_TEST_OTLP_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
            cache.join("tollgate/otlp-venvs")
        });
    venvs.join(venv).join("bin/python")
}

/// The catalog's price of one call of the mock's figures.
fn expected_cost(cached: u64) -> Decimal {
    Decimal::from(INPUT_TOKENS - cached) * d(INPUT_PRICE)
        + Decimal::from(cached) * d(CACHED_INPUT_PRICE)
        + Decimal::from(OUTPUT_TOKENS) * d(OUTPUT_PRICE)
}

/// Run `library` over both protocols, streamed and not, and check each
/// call in `calls`; every mismatch is collected, so one run names them all.
async fn library_calls_land_priced_with_their_trace(label: &str, library: &Library) {
    let rig = Rig::start(label).await;
    let mut reports = Vec::new();
    for protocol in [Protocol::Http, Protocol::Grpc] {
        for stream in [false, true] {
            reports.push(rig.run(library, protocol, stream));
        }
    }
    // What the mock reported to the SDK is what the test expects.
    for report in &reports {
        assert_eq!(
            (
                report.reported_usage("input_tokens"),
                report.reported_usage("output_tokens"),
                report.reported_usage("cached_input_tokens"),
            ),
            (INPUT_TOKENS, OUTPUT_TOKENS, CACHED_TOKENS),
            "{}: {}",
            report.label,
            report.value
        );
    }
    let traces: Vec<String> = reports
        .iter()
        .map(|r| format!("'{}'", r.trace_id()))
        .collect();
    let in_traces = format!("trace_id IN ({})", traces.join(", "));
    let want = reports.len() as u64;
    let got = rig
        .env
        .wait_for_count(
            &format!("SELECT count() FROM {{db}}.calls WHERE {in_traces}"),
            want,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(
        got,
        want,
        "calls of the traces never arrived; ingest log:\n{}\nprocess log:\n{}",
        std::fs::read_to_string(rig.env.log_path("ingest")).unwrap_or_default(),
        std::fs::read_to_string(rig.env.log_path("process")).unwrap_or_default()
    );
    let rows = rig
        .env
        .ch(&format!(
            "SELECT trace_id, span_id, kind, org_id, provider, model, requested_model, operation, \
             stream, duration_ms, has_ttft, ttft_ms, toUInt32(input_tokens) AS input, \
             toUInt32(output_tokens) AS output, toUInt32(cached_input_tokens) AS cached, priced, toString(cost) AS cost_text, reported_cost, \
             tag_values[indexOf(tag_keys, 'service')] AS service, \
             tag_values[indexOf(tag_keys, 'source')] AS source \
             FROM {{db}}.calls WHERE {in_traces} FORMAT JSONEachRow"
        ))
        .await;
    let rows: Vec<Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let mut wrong = Vec::new();
    for report in &reports {
        let mine: Vec<&Value> = rows
            .iter()
            .filter(|r| r["trace_id"] == report.trace_id())
            .collect();
        if mine.len() != 1 {
            wrong.push(format!(
                "{}: {} calls in trace {} (its parent and HTTP spans are not calls): {mine:?}",
                report.label,
                mine.len(),
                report.trace_id()
            ));
            continue;
        }
        let row = mine[0];
        let cached = if library.sends_cached_tokens {
            CACHED_TOKENS
        } else {
            0
        };
        let mut expect = |what: &str, got: &Value, want: Value| {
            if *got != want {
                wrong.push(format!("{}: {what} = {got}, want {want}", report.label));
            }
        };
        expect("span_id", &row["span_id"], report.call_span_id().into());
        expect("kind", &row["kind"], "ai.call.completed".into());
        expect("org_id", &row["org_id"], "acme-otlp".into());
        expect("provider", &row["provider"], "openai".into());
        expect("model", &row["model"], MODEL.into());
        expect("requested_model", &row["requested_model"], MODEL.into());
        expect("operation", &row["operation"], "chat".into());
        expect("input_tokens", &row["input"], INPUT_TOKENS.into());
        expect("output_tokens", &row["output"], OUTPUT_TOKENS.into());
        expect("cached_input_tokens", &row["cached"], cached.into());
        expect("priced", &row["priced"], 1.into());
        let cost: Decimal = row["cost_text"].as_str().unwrap().parse().unwrap();
        expect(
            "cost",
            &cost.normalize().to_string().into(),
            expected_cost(cached).normalize().to_string().into(),
        );
        expect(
            "reported_cost",
            &row["reported_cost"],
            library.reported_cost.unwrap_or_default().into(),
        );
        expect(
            "tag service",
            &row["service"],
            format!("shop-{}", library.venv).into(),
        );
        expect("tag source", &row["source"], "otlp".into());
        let streamed = report.stream && library.sends_stream_flag;
        expect("stream", &row["stream"], u8::from(streamed).into());
        // A time to first token only for a streamed call: a non-streamed
        // call has one token event, and its "TTFT" (the whole call) would
        // bend the SRE page's TTFT percentiles.
        let ttft = report.stream && library.sends_ttft;
        expect("has_ttft", &row["has_ttft"], u8::from(ttft).into());
        let duration = row["duration_ms"].as_u64().unwrap();
        let elapsed = report.value["elapsed_ms"].as_u64().unwrap();
        if duration < MOCK_TTFT_MS || duration > elapsed {
            wrong.push(format!(
                "{}: duration_ms = {duration}, want between the mock's TTFT ({MOCK_TTFT_MS}) and the call's wall time ({elapsed})",
                report.label
            ));
        }
        if ttft {
            let ttft_ms = row["ttft_ms"].as_u64().unwrap();
            // A library's clock can start after the request left (seen
            // under CPU pressure: openlit's 136 ms for the mock's 150 ms,
            // its start taken once the response headers were in), so the
            // floor is half the mock's delay: a TTFT, not a zero or the
            // time between two tokens.
            if ttft_ms < MOCK_TTFT_MS / 2 || ttft_ms > duration {
                wrong.push(format!(
                    "{}: ttft_ms = {ttft_ms}, want between half the mock's TTFT ({MOCK_TTFT_MS}) and duration_ms ({duration})",
                    report.label
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} call(s) in ClickHouse differ from what the library reported:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_v2_calls_land_priced_with_their_trace() {
    library_calls_land_priced_with_their_trace("otlp_openai_v2", &OPENAI_V2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_v2_legacy_calls_land_priced_with_their_trace() {
    library_calls_land_priced_with_their_trace("otlp_openai_v2_legacy", &OPENAI_V2_LEGACY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openlit_calls_land_priced_with_their_trace() {
    library_calls_land_priced_with_their_trace("otlp_openlit", &OPENLIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traceloop_calls_land_priced_with_their_trace() {
    library_calls_land_priced_with_their_trace("otlp_traceloop", &TRACELOOP).await;
}

/// One value of the ingest's span counter (`tollgate_ingest_otlp_spans_total`).
async fn spans_counted(ingest_url: &str, outcome: &str) -> u64 {
    let text = reqwest::get(format!("{ingest_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("tollgate_ingest_otlp_spans_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// An application whose instrumented client calls through the Tollgate
/// proxy and also exports its spans to ingest is billed once: the proxy
/// records each call, and ingest passes over the span of a call whose
/// server is the proxy (`proxy.listen` here, the default of
/// `ingest.otlp_proxy_addresses`), read from `server.address` and
/// `server.port` (openai-v2, OpenLIT) or `gen_ai.openai.api_base`
/// (Traceloop). A trial found every such call billed twice.
#[tokio::test(flavor = "multi_thread")]
async fn calls_through_the_proxy_are_billed_once_whatever_the_library_exports() {
    let mut proxy = crate::proxy::Proxy::start("otlp_through_proxy", "", None).await;
    let ingest_key = proxy.env.create_key("acme");
    crate::ingest_api::start_ingest(&mut proxy.env).await;
    let grpc_port =
        support::listening_port(&proxy.env.log_path("ingest"), crate::support::PATIENCE);
    let processor = proxy.spawn("process", &["process"]);
    proxy.children.push(processor);
    proxy.run_proxy().await;
    let wiring = Wiring {
        ingest_url: proxy.env.ingest_url(),
        grpc_port,
        ingest_key,
        base_url: format!("{}/v1", proxy.url()),
        api_key: proxy.key("acme", "shop", "shopper", None),
    };
    let libraries = [&OPENAI_V2, &OPENLIT, &TRACELOOP];
    for library in libraries {
        let report = run_library(&proxy.env, &wiring, library, Protocol::Http, false, &[]);
        assert_eq!(
            report.reported_usage("output_tokens"),
            OUTPUT_TOKENS,
            "{}: {}",
            report.label,
            report.value
        );
    }
    // Each program's export was answered before it exited: its spans are
    // counted, none produced.
    let n = libraries.len() as u64;
    assert_eq!(
        spans_counted(&wiring.ingest_url, "dropped_proxied").await,
        n,
        "ingest log:\n{}",
        std::fs::read_to_string(proxy.env.log_path("ingest")).unwrap_or_default()
    );
    assert_eq!(spans_counted(&wiring.ingest_url, "accepted").await, 0);
    let got = proxy
        .env
        .wait_for_count(
            "SELECT count() FROM {db}.calls WHERE org_id = 'acme'",
            n,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(got, n, "the proxy's calls");
    assert_eq!(
        proxy
            .env
            .ch_u64("SELECT count() FROM {db}.calls WHERE has(tag_values, 'otlp')")
            .await,
        0,
        "no call billed from a span"
    );
}

/// A failed call reported by an instrumented SDK records the provider's
/// error as the proxy would from the answer: its type, its message and its
/// status, read from the Python SDK's `Error code: 429 - {...}` (a trial
/// found every such failure one pattern of `<QUOTED>`s, an exhausted quota
/// and a rate limit together), and whichever way the library spells the
/// exception's class (`<class 'openai.RateLimitError'>` from openai-v2,
/// `RateLimitError` from its legacy release): the same failure is the same
/// pattern from both.
#[tokio::test(flavor = "multi_thread")]
async fn sdk_failures_record_the_providers_error_whatever_the_library() {
    let rig = Rig::start("otlp_sdk_failures").await;
    let mut reports = Vec::new();
    for library in [&OPENAI_V2, &OPENAI_V2_LEGACY] {
        for shape in ["openai_quota", "openai_rpm"] {
            let report = rig.run_with(
                library,
                Protocol::Http,
                false,
                &["--mock-error-shape", shape],
            );
            assert_eq!(
                (
                    &report.value["reply"]["error"]["class"],
                    &report.value["reply"]["error"]["status"]
                ),
                (&json!("RateLimitError"), &json!(429)),
                "{}: {}",
                report.label,
                report.value
            );
            reports.push((library.venv, shape, report));
        }
    }
    let traces: Vec<String> = reports
        .iter()
        .map(|(_, _, r)| format!("'{}'", r.trace_id()))
        .collect();
    let in_traces = format!("trace_id IN ({})", traces.join(", "));
    let want = reports.len() as u64;
    let got = rig
        .env
        .wait_for_count(
            &format!("SELECT count() FROM {{db}}.calls WHERE {in_traces}"),
            want,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(
        got,
        want,
        "ingest log:\n{}",
        std::fs::read_to_string(rig.env.log_path("ingest")).unwrap_or_default()
    );
    let rows: Vec<Value> = rig
        .env
        .ch(&format!(
            "SELECT trace_id, kind, outcome, http_status, error_type, error_message, \
             hex(error_signature) AS signature FROM {{db}}.calls WHERE {in_traces} FORMAT JSONEachRow"
        ))
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut signatures: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (venv, shape, report) in &reports {
        let row = rows
            .iter()
            .find(|r| r["trace_id"] == report.trace_id())
            .unwrap_or_else(|| panic!("{}: no call in {rows:?}", report.label));
        let (error_type, message_starts) = match *shape {
            "openai_quota" => ("insufficient_quota", "You exceeded your current quota"),
            _ => ("requests", "Rate limit reached for"),
        };
        assert_eq!(
            (
                &row["kind"],
                &row["outcome"],
                &row["http_status"],
                &row["error_type"]
            ),
            (
                &json!("ai.call.failed"),
                &json!("rate_limited"),
                &json!(429),
                &json!(error_type)
            ),
            "{venv} {shape}: {row}"
        );
        let message = row["error_message"].as_str().unwrap();
        assert!(
            message.starts_with(message_starts),
            "{venv} {shape}: {message}"
        );
        assert!(!message.contains("Error code"), "{venv} {shape}: {message}");
        signatures
            .entry(shape)
            .or_default()
            .insert(row["signature"].as_str().unwrap().to_string());
    }
    // One pattern per failure, the same from both libraries; two failures,
    // two patterns.
    assert_eq!(signatures["openai_quota"].len(), 1, "{signatures:?}");
    assert_eq!(signatures["openai_rpm"].len(), 1, "{signatures:?}");
    assert_ne!(signatures["openai_quota"], signatures["openai_rpm"]);
}
