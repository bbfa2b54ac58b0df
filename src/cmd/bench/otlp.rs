//! `tollgate bench otlp --calls N`: the same N simulated calls sent to a
//! `tollgate ingest` child twice, first as JSON events (`POST /v1/events`),
//! then as OTLP/HTTP protobuf GenAI spans (`POST /v1/traces`), each timed
//! from its first request to the last row visible in ClickHouse, with
//! `tollgate process` running throughout. Both through the HTTP edge, so
//! the two figures differ only by the request format and its mapping.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{
    status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use sha2::{Digest, Sha256};
use tollgate_contract::{Event, Outcome};

use super::figures::{self as measure, Figures};
use super::ingest::{bench_namespace, drop_namespace, overrides, tollgate, ProcessorChild};
use super::process_stats::{cpu_seconds, peak_rss_kib};
use crate::cmd::simulate::chunks;
use crate::config::Config;
use crate::workload::{Workload, WorkloadSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Calls sent by each of the two formats.
    #[arg(long, default_value_t = 100_000)]
    pub calls: u64,
    /// Events (or spans) per request: OpenTelemetry SDKs send at most 512.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Give up waiting for ClickHouse after this many seconds (per format).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Keep the bench database and topics afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the generated workload: the same seed, the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One format's run.
struct Run {
    requests: Duration,
    end_to_end: Duration,
    stored: u64,
    ingest_rss_kib: u64,
    /// CPU seconds `tollgate ingest` used while the requests were answered.
    ingest_cpu_s: Option<f64>,
}

impl Run {
    /// The ingest process's CPU per call while the requests were answered.
    fn cpu_us_per_call(&self, calls: u64) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        self.ingest_cpu_s.map(|s| s * 1e6 / calls.max(1) as f64)
    }
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<Figures> {
    let (id, bench) = bench_namespace(config)?;
    let overrides = overrides(&bench);
    let log = |role: &str| std::env::temp_dir().join(format!("tollgate-bench-{id}-{role}.log"));
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut processor = ProcessorChild(
        tollgate(&overrides, &["process"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log("process"))?))
            .spawn()
            .context("cannot start tollgate process")?,
    );
    let mut ingest = ProcessorChild(
        tollgate(
            &overrides,
            &["ingest", "--listen", &listen, "--otlp-grpc-listen", ""],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log("ingest"))?))
        .spawn()
        .context("cannot start tollgate ingest")?,
    );
    let ingest_pid = ingest.0.id();
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let up = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(60),
            "tollgate ingest did not come up; log: {}",
            log("ingest").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = tollgate(
        &overrides,
        &[
            "keys",
            "create",
            "--name",
            &format!("bench-otlp-{id}"),
            "--role",
            "admin",
        ],
    )
    .stderr(Stdio::null())
    .output()
    .context("cannot run tollgate keys create")?;
    anyhow::ensure!(created.status.success(), "tollgate keys create failed");
    let secret = String::from_utf8_lossy(&created.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let clickhouse = tollgate_control::clickhouse::client(&bench.clickhouse);

    let events: Vec<Event> = Workload::new(WorkloadSpec::new(
        args.calls,
        chrono::Duration::minutes(60),
        args.seed,
    ))?
    .collect();
    let batch = args.batch.max(1);
    let json_bodies: Vec<(&'static str, Vec<u8>)> = chunks(events.iter(), batch)
        .map(|chunk| Ok(("application/json", serde_json::to_vec(&chunk)?)))
        .collect::<anyhow::Result<_>>()?;
    let otlp_bodies: Vec<(&'static str, Vec<u8>)> = chunks(events.iter(), batch)
        .map(|chunk| ("application/x-protobuf", request_of(&chunk).encode_to_vec()))
        .collect();
    drop(events);

    let sender = Sender {
        http: &http,
        secret: &secret,
        clickhouse: &clickhouse,
        concurrency: args.concurrency.max(1),
        timeout: Duration::from_secs(args.timeout_secs),
        ingest_pid,
    };
    eprintln!("bench: {} calls as JSON events", args.calls);
    let json = sender
        .send(&format!("{base}/v1/events"), json_bodies, args.calls)
        .await?;
    eprintln!("bench: {} calls as OTLP spans", args.calls);
    let otlp = sender
        .send(&format!("{base}/v1/traces"), otlp_bodies, 2 * args.calls)
        .await?;
    ingest.stop();
    processor.stop();
    let _ = tollgate(
        &overrides,
        &["keys", "revoke", secret.get(3..11).unwrap_or("")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status();

    print_report(&args, &json, &otlp);
    if !args.keep {
        drop_namespace(&clickhouse, &bench).await?;
    }
    anyhow::ensure!(
        json.stored >= args.calls && otlp.stored >= 2 * args.calls,
        "the pipeline did not store every call within {} s; logs: {}, {}",
        args.timeout_secs,
        log("ingest").display(),
        log("process").display()
    );
    let mut figures = Figures::default();
    for (measure, run) in [
        (&measure::INGEST_API_JSON_CPU, &json),
        (&measure::INGEST_API_OTLP_CPU, &otlp),
    ] {
        if let Some(cpu) = run.cpu_us_per_call(args.calls) {
            figures.set(measure, cpu);
        }
    }
    Ok(figures)
}

struct Sender<'a> {
    http: &'a reqwest::Client,
    secret: &'a str,
    clickhouse: &'a clickhouse::Client,
    concurrency: usize,
    timeout: Duration,
    ingest_pid: u32,
}

impl Sender<'_> {
    /// Post `bodies` to `url`, then wait until `calls` holds `want` rows.
    async fn send(
        &self,
        url: &str,
        bodies: Vec<(&'static str, Vec<u8>)>,
        want: u64,
    ) -> anyhow::Result<Run> {
        let started = Instant::now();
        let cpu_before = cpu_seconds(self.ingest_pid);
        let bar = crate::cmd::simulate::progress_bar(bodies.len() as u64, "requests");
        let mut answers = futures::stream::iter(bodies)
            .map(|(content_type, body)| async move {
                self.http
                    .post(url)
                    .bearer_auth(self.secret)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status())
            })
            .buffer_unordered(self.concurrency);
        while let Some(answer) = answers.next().await {
            let status = answer.context("request to tollgate ingest failed")?;
            anyhow::ensure!(status.is_success(), "tollgate ingest answered {status}");
            bar.inc(1);
        }
        bar.finish();
        let requests = started.elapsed();
        let ingest_cpu_s = cpu_seconds(self.ingest_pid)
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let mut stored = 0;
        while started.elapsed() < self.timeout {
            stored = self
                .clickhouse
                .query("SELECT count() FROM calls")
                .fetch_one::<u64>()
                .await
                .unwrap_or(0);
            if stored >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Run {
            requests,
            end_to_end: started.elapsed(),
            stored,
            ingest_rss_kib: peak_rss_kib(self.ingest_pid).unwrap_or(0),
            ingest_cpu_s,
        })
    }
}

fn print_report(args: &Args, json: &Run, otlp: &Run) {
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!();
    println!("tollgate bench otlp");
    println!(
        "  calls per format       {} ({} per request, {} requests in flight)",
        args.calls, args.batch, args.concurrency
    );
    println!(
        "  {:<22} {:>12} {:>14} {:>14} {:>18}",
        "format", "accepted/s", "end-to-end/s", "ingest RSS MiB", "ingest CPU µs/call"
    );
    for (name, run) in [
        ("JSON events /v1/events", json),
        ("OTLP spans /v1/traces", otlp),
    ] {
        let cpu = run
            .cpu_us_per_call(args.calls)
            .map_or_else(|| "-".to_string(), |us| format!("{us:.1}"));
        println!(
            "  {:<22} {:>12.0} {:>14.0} {:>14.1} {:>18}",
            name,
            rate(args.calls, run.requests),
            rate(args.calls, run.end_to_end),
            run.ingest_rss_kib as f64 / 1024.0,
            cpu
        );
    }
    println!("  (accepted/s: every request answered, Kafka acknowledged; end-to-end/s: first request -> last row visible in ClickHouse; RSS: ingest's peak so far; CPU: ingest's user + system time while the requests were answered, per call)");
}

fn string(key: &str, value: &str) -> KeyValue {
    value_of(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: u64) -> KeyValue {
    value_of(
        key,
        any_value::Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX)),
    )
}

fn value_of(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The simulated calls as GenAI spans in the current conventions, one
/// request.
fn request_of(events: &[&Event]) -> ExportTraceServiceRequest {
    let spans = events.iter().filter_map(|e| span_of(e)).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span_of(event: &Event) -> Option<Span> {
    let call = event.call.as_ref()?;
    let end = u64::try_from(event.occurred_at.timestamp_nanos_opt()?).ok()?;
    let start = end.saturating_sub(u64::from(call.duration_ms) * 1_000_000);
    let digest = Sha256::digest(event.event_id.as_bytes());
    let mut attributes = vec![
        string("gen_ai.operation.name", "chat"),
        string("gen_ai.provider.name", &call.provider),
        string("gen_ai.request.model", &call.model),
        string("gen_ai.response.model", &call.model),
        int("gen_ai.usage.input_tokens", call.usage.input_tokens),
        int("gen_ai.usage.output_tokens", call.usage.output_tokens),
        int(
            "gen_ai.usage.cache_read.input_tokens",
            call.usage.cached_input_tokens,
        ),
        string("tollgate.org_id", &event.org_id),
        string("tollgate.team_id", &event.team_id),
        string("enduser.id", &event.user_id),
    ];
    if let Some(ttft) = call.ttft_ms {
        attributes.push(value_of(
            "gen_ai.server.time_to_first_token",
            any_value::Value::DoubleValue(f64::from(ttft) / 1000.0),
        ));
    }
    let status = (call.outcome != Outcome::Success).then(|| {
        if let Some(error) = &call.error {
            attributes.push(string("error.type", &error.error_type));
        }
        Status {
            message: call
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            code: StatusCode::Error as i32,
        }
    });
    Some(Span {
        trace_id: digest[..16].to_vec(),
        span_id: digest[16..24].to_vec(),
        name: format!("chat {}", call.model),
        kind: 3,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status,
        ..Default::default()
    })
}
