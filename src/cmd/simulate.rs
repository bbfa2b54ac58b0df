//! `tollgate simulate`: send realistic AI-call traffic to the ingest API, or
//! straight to Kafka with `--direct-kafka`, with a progress bar.

use std::time::Instant;

use anyhow::Context;
use chrono::Duration;
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tollgate_contract::Event;
use tollgate_control::kafka::EventProducer;

use crate::config::Config;
use crate::workload::{proxy_calls, Workload, WorkloadSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Number of events to send.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Spread `occurred_at` over this many minutes ending now.
    #[arg(long, default_value_t = 60)]
    pub span_minutes: i64,
    /// Random seed; the same seed sends the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Ingest API base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Ingest API key (`tollgate keys create`).
    #[arg(long, env = "TOLLGATE_INGEST_KEY")]
    pub key: Option<String>,
    /// Produce straight to `kafka.events_topic` instead of the ingest API
    /// (no API key needed; the events skip the HTTP edge).
    #[arg(long)]
    pub direct_kafka: bool,
    /// Make real calls through `tollgate proxy` at this URL instead (the proxy
    /// records each call itself; `--key` is then a proxy key). Only the
    /// OpenAI and Anthropic models of the simulated cast are sent.
    #[arg(long)]
    pub via_proxy: Option<String>,
    /// Events per request (or per producer batch).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

/// Where the events go.
enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        key: String,
    },
    Kafka(EventProducer),
    Proxy {
        client: reqwest::Client,
        base: String,
        key: String,
    },
}

impl Sink {
    /// Send one batch; returns (accepted, rejected).
    async fn send(&self, batch: &[Event]) -> anyhow::Result<(u64, u64)> {
        match self {
            Sink::Http { client, url, key } => post_batch(client, url, key, batch).await,
            Sink::Kafka(producer) => {
                let results = producer.send_batch(batch).await;
                let failed = results.iter().filter(|r| r.is_err()).count() as u64;
                if let Some(Err(err)) = results.iter().find(|r| r.is_err()) {
                    anyhow::bail!("{failed} events not acknowledged by Kafka, first: {err}");
                }
                Ok((batch.len() as u64, 0))
            }
            Sink::Proxy { client, base, key } => {
                let calls = batch
                    .iter()
                    .filter(|event| proxy_calls::is_routable(event))
                    .map(|event| proxy_calls::call(client, base, key, event));
                let mut made = 0;
                for result in futures::future::join_all(calls).await {
                    // Simulated failures come back as error statuses on purpose;
                    // only an unreachable proxy is an error here.
                    result?;
                    made += 1;
                }
                Ok((made, 0))
            }
        }
    }
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let sink = if args.direct_kafka {
        Sink::Kafka(EventProducer::new(&config.kafka)?)
    } else if let Some(base) = &args.via_proxy {
        let key = args
            .key
            .clone()
            .context("--key (a proxy key, role proxy) is required with --via-proxy")?;
        Sink::Proxy {
            client: reqwest::Client::new(),
            base: base.clone(),
            key,
        }
    } else {
        let key = args
            .key
            .clone()
            .context("--key (or TOLLGATE_INGEST_KEY) is required to send to the ingest API")?;
        let url = format!("{}/v1/events", args.target.trim_end_matches('/'));
        Sink::Http {
            client: reqwest::Client::new(),
            url,
            key,
        }
    };
    let spec = WorkloadSpec::new(
        args.events,
        Duration::minutes(args.span_minutes.max(1)),
        args.seed,
    );
    let workload = Workload::new(spec)?;
    let bar = progress_bar(args.events, "simulate");
    let started = Instant::now();
    let results = stream::iter(chunks(workload, args.batch.max(1)))
        .map(|batch| {
            let sink = &sink;
            let bar = bar.clone();
            async move {
                let outcome = sink.send(&batch).await;
                bar.inc(batch.len() as u64);
                outcome
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    bar.finish();
    let mut accepted = 0u64;
    let mut rejected = 0u64;
    for result in results {
        let (a, r) = result?;
        accepted += a;
        rejected += r;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {} events in {:.1} s ({:.0} events/s): {accepted} accepted (or calls made through the proxy), {rejected} rejected",
        args.events,
        secs,
        args.events as f64 / secs.max(1e-9)
    );
    if rejected > 0 {
        anyhow::bail!("{rejected} events were rejected by the ingest API");
    }
    Ok(())
}

/// POST one NDJSON batch; returns (accepted, rejected).
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    batch: &[Event],
) -> anyhow::Result<(u64, u64)> {
    let mut body = Vec::with_capacity(batch.len() * 900);
    for event in batch {
        serde_json::to_writer(&mut body, event)?;
        body.push(b'\n');
    }
    let response = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the ingest API at {url}: is `tollgate ingest` running?")
        })?;
    let status = response.status();
    let json: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("ingest API answered {status} without JSON"))?;
    if !status.is_success() {
        let first = json
            .get("results")
            .and_then(|r| r.as_array())
            .and_then(|r| {
                r.iter()
                    .find(|item| item.get("status").and_then(|s| s.as_str()) != Some("accepted"))
            })
            .map(|item| {
                format!(
                    "; first problem: {} {}",
                    item["field"].as_str().unwrap_or("event"),
                    item["reason"]
                )
            })
            .unwrap_or_default();
        let error = json
            .get("error")
            .map(ToString::to_string)
            .unwrap_or_else(|| json.to_string());
        anyhow::bail!("ingest API answered {status}: {error}{first}");
    }
    let count = |field: &str| {
        json.get(field)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Ok((count("accepted"), count("rejected")))
}

/// Split an iterator into vectors of at most `size` items.
pub fn chunks<I: Iterator>(iter: I, size: usize) -> impl Iterator<Item = Vec<I::Item>> {
    let mut iter = iter.peekable();
    std::iter::from_fn(move || {
        iter.peek()?;
        Some(iter.by_ref().take(size).collect())
    })
}

/// The project's progress bar look, shared by long-running commands.
pub fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar
}
