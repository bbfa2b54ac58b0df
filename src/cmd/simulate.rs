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
    /// How long, in seconds, each batch keeps being retried while the
    /// ingest API answers 503 or 429 (after its `Retry-After`), or fails
    /// some of its events as retryable; 0 gives up on the first such answer.
    #[arg(long, default_value_t = 300)]
    pub retry_for: u64,
}

/// Where the events go.
enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        key: String,
        retry: Retrying,
    },
    Kafka(EventProducer),
    Proxy {
        client: reqwest::Client,
        base: String,
        key: String,
    },
}

/// What batches came to.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Events the ingest API or Kafka took; calls the proxy answered 2xx.
    accepted: u64,
    /// Events the ingest API refused.
    rejected: u64,
    /// Calls the proxy answered with an error status (simulated failures,
    /// budgets and rate limits answer so on purpose).
    answered_error: u64,
    /// Events not sent as calls: the proxy routes no such provider.
    skipped: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.answered_error += other.answered_error;
        self.skipped += other.skipped;
    }
}

impl Sink {
    /// Send one batch.
    async fn send(&self, batch: &[Event]) -> anyhow::Result<Tally> {
        match self {
            Sink::Http {
                client,
                url,
                key,
                retry,
            } => {
                let (accepted, rejected) = post_batch(client, url, key, batch, retry).await?;
                Ok(Tally {
                    accepted,
                    rejected,
                    ..Tally::default()
                })
            }
            Sink::Kafka(producer) => {
                let results = producer.send_batch(batch).await;
                let failed = results.iter().filter(|r| r.is_err()).count() as u64;
                if let Some(Err(err)) = results.iter().find(|r| r.is_err()) {
                    anyhow::bail!("{failed} events not acknowledged by Kafka, first: {err}");
                }
                Ok(Tally {
                    accepted: batch.len() as u64,
                    ..Tally::default()
                })
            }
            Sink::Proxy { client, base, key } => {
                let routable: Vec<&Event> = batch
                    .iter()
                    .filter(|event| proxy_calls::is_routable(event))
                    .collect();
                let mut tally = Tally {
                    skipped: (batch.len() - routable.len()) as u64,
                    ..Tally::default()
                };
                let calls = routable
                    .into_iter()
                    .map(|event| proxy_calls::call(client, base, key, event));
                for result in futures::future::join_all(calls).await {
                    // Simulated failures come back as error statuses on purpose;
                    // only an unreachable proxy is an error here.
                    match result? {
                        proxy_calls::CallResult::Ok => tally.accepted += 1,
                        proxy_calls::CallResult::Failed(_) => tally.answered_error += 1,
                    }
                }
                Ok(tally)
            }
        }
    }
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let bar = progress_bar(args.events, "simulate");
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
            retry: Retrying {
                budget: std::time::Duration::from_secs(args.retry_for),
                bar: bar.clone(),
                waiting_since: std::sync::Mutex::new(None),
            },
        }
    };
    let spec = WorkloadSpec::new(
        args.events,
        Duration::minutes(args.span_minutes.max(1)),
        args.seed,
    );
    let workload = Workload::new(spec)?;
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
    let mut tally = Tally::default();
    for result in results {
        tally += result?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{}", summary(&sink, args.events, secs, tally));
    if tally.rejected > 0 {
        anyhow::bail!("{} events were rejected by the ingest API", tally.rejected);
    }
    Ok(())
}

/// The line `simulate` ends with: what became of every simulated event.
fn summary(sink: &Sink, events: u64, secs: f64, t: Tally) -> String {
    let secs = secs.max(1e-9);
    if let Sink::Proxy { .. } = sink {
        let made = t.accepted + t.answered_error;
        return format!(
            "made {made} calls through the proxy in {secs:.1} s ({:.0} calls/s) for {events} simulated events: \
             {} answered 2xx, {} an error status (simulated failures, budgets and rate limits answer so); \
             {} skipped: their provider is neither openai nor anthropic, the providers the proxy routes",
            made as f64 / secs,
            t.accepted,
            t.answered_error,
            t.skipped
        );
    }
    format!(
        "sent {events} events in {secs:.1} s ({:.0} events/s): {} accepted, {} rejected",
        events as f64 / secs,
        t.accepted,
        t.rejected
    )
}

/// POST one NDJSON batch until every event is accepted or rejected;
/// returns (accepted, rejected). A 503 or 429 is retried after its
/// `Retry-After` (1 s when absent), and the events a 200 answered `failed`
/// (retryable) are sent again alone, so an accepted event is never sent
/// twice; after `retry.budget` of waiting, the last answer is the error.
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    batch: &[Event],
    retry: &Retrying,
) -> anyhow::Result<(u64, u64)> {
    let mut pending: Vec<&Event> = batch.iter().collect();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let started = Instant::now();
    loop {
        let answer = post_once(client, url, key, &pending).await?;
        accepted += answer.accepted;
        rejected += answer.rejected;
        let wait = match answer.outcome {
            Outcome::Done => {
                retry.resumed();
                return Ok((accepted, rejected));
            }
            Outcome::Retry { after, why, failed } => {
                if let Some(failed) = failed {
                    pending = failed
                        .iter()
                        .filter_map(|&i| pending.get(i).copied())
                        .collect();
                }
                if started.elapsed() + after > retry.budget {
                    anyhow::bail!(
                        "{why}; gave up after waiting {} s (--retry-for)",
                        started.elapsed().as_secs()
                    );
                }
                retry.waiting(&why, after);
                after
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// What one POST came to.
struct Answer {
    accepted: u64,
    rejected: u64,
    outcome: Outcome,
}

enum Outcome {
    Done,
    /// Send again after `after`: everything, or only the items at `failed`.
    Retry {
        after: std::time::Duration,
        why: String,
        failed: Option<Vec<usize>>,
    },
}

async fn post_once(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    events: &[&Event],
) -> anyhow::Result<Answer> {
    let mut body = Vec::with_capacity(events.len() * 900);
    for event in events {
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
    let retry_after = retry_after(response.headers());
    let json: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("ingest API answered {status} without JSON"))?;
    let count = |field: &str| {
        json.get(field)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let error = json
        .get("error")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| json.to_string());
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        return Ok(Answer {
            accepted: 0,
            rejected: 0,
            outcome: Outcome::Retry {
                after: retry_after.unwrap_or(std::time::Duration::from_secs(1)),
                why: format!("ingest API answered {status}: {error}"),
                failed: None,
            },
        });
    }
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
        anyhow::bail!("ingest API answered {status}: {error}{first}");
    }
    let results = json
        .get("results")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let failed: Vec<&serde_json::Value> = results
        .iter()
        .filter(|item| item.get("status").and_then(|s| s.as_str()) == Some("failed"))
        .collect();
    if let Some(item) = failed.iter().find(|item| item["retryable"] != true) {
        anyhow::bail!(
            "ingest API could not store event {} and says retrying cannot help: {}",
            item["event_id"],
            item["reason"]
        );
    }
    let outcome = if failed.is_empty() {
        Outcome::Done
    } else {
        Outcome::Retry {
            after: retry_after.unwrap_or(std::time::Duration::from_secs(1)),
            why: format!(
                "{} of {} events failed in the ingest API, first: {}",
                failed.len(),
                events.len(),
                failed[0]["reason"]
            ),
            failed: Some(
                failed
                    .iter()
                    .filter_map(|item| item["index"].as_u64())
                    .filter_map(|i| usize::try_from(i).ok())
                    .collect(),
            ),
        }
    };
    Ok(Answer {
        accepted: count("accepted"),
        rejected: count("rejected"),
        outcome,
    })
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Tollgate).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}

/// The retry budget of each batch, and the progress lines that say the
/// command is waiting (once when waiting starts, once when it ends).
struct Retrying {
    budget: std::time::Duration,
    bar: ProgressBar,
    waiting_since: std::sync::Mutex<Option<Instant>>,
}

impl Retrying {
    fn waiting(&self, why: &str, after: std::time::Duration) {
        let mut since = self.waiting_since.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_none() {
            *since = Some(Instant::now());
            // Printed even when the bar is hidden (stderr not a terminal).
            self.bar.suspend(|| {
                eprintln!(
                    "{why}; waiting as its Retry-After asks ({} s) and retrying for up to {} s",
                    after.as_secs(),
                    self.budget.as_secs()
                )
            });
        }
    }

    fn resumed(&self) {
        let mut since = self.waiting_since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = since.take() {
            self.bar.suspend(|| {
                eprintln!(
                    "the ingest API accepts events again after {:.1} s of waiting",
                    at.elapsed().as_secs_f64()
                )
            });
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_accounts_for_every_simulated_event() {
        let proxy = Sink::Proxy {
            client: reqwest::Client::new(),
            base: "http://127.0.0.1:1".into(),
            key: "k".into(),
        };
        let tally = Tally {
            accepted: 500,
            answered_error: 38,
            skipped: 62,
            ..Tally::default()
        };
        let line = summary(&proxy, 600, 10.0, tally);
        assert!(
            line.starts_with("made 538 calls through the proxy in 10.0 s (54 calls/s) for 600 simulated events: 500 answered 2xx, 38 an error status"),
            "{line}"
        );
        assert!(
            line.contains("; 62 skipped: their provider is neither openai nor anthropic"),
            "{line}"
        );
        let mut both = tally;
        both += Tally {
            rejected: 3,
            ..tally
        };
        assert_eq!(
            (
                both.accepted,
                both.rejected,
                both.answered_error,
                both.skipped
            ),
            (1000, 3, 76, 124)
        );
    }
}
