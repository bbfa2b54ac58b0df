//! `tollgate bench proxy --rps R --duration D`: what the proxy adds.
//!
//! 1. Starts the mock upstream in this process (fixed time to first token,
//!    no per-token delay by default) and `tollgate proxy` as a child process
//!    (so its CPU and memory are its own), with a throw-away events topic
//!    `tollgate.bench.proxy.<id>.events` and spool directory, and a proxy key
//!    in the configured PostgreSQL (revoked at the end).
//! 2. Sends the same chat completion at R requests per second to the mock
//!    directly and through the proxy, interleaved, open loop, for D seconds
//!    (after a one-second warm-up that is not counted).
//! 3. Prints latency percentiles of both paths, the proxy's added latency
//!    (p50 and p99 differences), the proxy's own time as each response's
//!    `Server-Timing` told it (`overhead`, and the write-ahead log's `wal`
//!    within it), throughput, and the proxy's CPU time and RSS.
//!
//! With `--budget`, the bench key's team has a hard budget (a record on the
//! bench's own decisions topic `tollgate.bench.proxy.<id>.decisions`, with a
//! limit no run reaches), so every proxied call is estimated, reserved,
//! charged and released (`docs/cost.md`, "Reserve and settle").
//!
//! Nothing is asserted: the figures are for people and for `docs/proxy.md`.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tollgate_control::keys::KeyStore;
use tollgate_mock_upstream::{LatencyDist, MockConfig};
use tollgate_proxy::config::{Durability, ProviderConfig, ProviderKind};

use super::figures::{self as measure, Figures};
use super::process_stats::{cpu_seconds, peak_rss_kib, rss_kib};
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Requests per second on each path (direct and through the proxy).
    #[arg(long, default_value_t = 200)]
    pub rps: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The mock's time to first token, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub upstream_ms: u64,
    /// Stream the responses (SSE) instead of plain JSON.
    #[arg(long)]
    pub stream: bool,
    /// Output tokens per response.
    #[arg(long, default_value_t = 16)]
    pub tokens: u64,
    /// Give the bench team a hard budget, so every call takes the budget
    /// reservation path.
    #[arg(long)]
    pub budget: bool,
    /// The proxy's `proxy.durability` for the run: `fsync`, `batch` or
    /// `none` (default: the configured one).
    #[arg(long, value_parser = parse_durability)]
    pub durability: Option<Durability>,
    /// The proxy's `proxy.wal_fsync_interval_ms` for the run.
    #[arg(long)]
    pub wal_fsync_interval_ms: Option<u64>,
}

fn parse_durability(value: &str) -> Result<Durability, String> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| format!("{value:?} is not a durability: expected fsync, batch or none"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Proxy,
}

struct Sample {
    path: Path,
    latency: Duration,
    /// From sending to the first byte of the body: a stream's first token
    /// (the mock's first event carries it).
    first: Option<Duration>,
    ok: bool,
    /// The proxy's `Server-Timing` figures, in ms: `overhead` and `wal`.
    own: Option<(f64, f64)>,
}

/// The proxy's own time and its write-ahead log's part, from a response's
/// `Server-Timing` (`None` without the header: the direct path).
fn own_time(headers: &reqwest::header::HeaderMap) -> Option<(f64, f64)> {
    use tollgate_proxy::overhead::server_timing_figure as figure;
    let value = headers.get("server-timing")?.to_str().ok()?;
    Some((
        figure(value, "overhead")?,
        figure(value, "wal").unwrap_or(0.0),
    ))
}

/// The variable the bench's proxy reads the mock upstream's key from; not
/// `TOLLGATE_`-prefixed, since those are read as settings and an unknown
/// one is refused.
const BENCH_KEY_VAR: &str = "BENCH_UPSTREAM_KEY";

pub async fn run(args: Args, config: &Config) -> anyhow::Result<Figures> {
    anyhow::ensure!(
        args.rps > 0 && args.duration > 0,
        "--rps and --duration must be positive"
    );
    let id = format!("{:08x}", rand::random::<u32>());
    let work = std::env::temp_dir().join(format!("tollgate-bench-proxy-{id}"));
    std::fs::create_dir_all(&work)?;

    // Upstream stand-in, in process.
    let mock_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mock_addr = mock_listener.local_addr()?;
    let mock_config = MockConfig {
        ttft: LatencyDist::Fixed(Duration::from_millis(args.upstream_ms)),
        inter_token: LatencyDist::Fixed(Duration::ZERO),
        default_output_tokens: args.tokens,
        api_key: Some("sk-bench".into()),
        ..MockConfig::default()
    };
    let (stop_mock, mock_stopped) = tokio::sync::oneshot::channel::<()>();
    let mock = tokio::spawn(tollgate_mock_upstream::serve(
        mock_listener,
        mock_config,
        async {
            let _ = mock_stopped.await;
        },
    ));

    // A proxy key in the control plane.
    crate::cmd::migrate::migrate_postgres(config).await?;
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let keys = KeyStore::new(pool.clone());
    let key = keys
        .create(&format!("bench-proxy-{id}"), Some("bench"), "proxy")
        .await?;
    tollgate_proxy::auth::set_scope(&pool, key.id, Some("bench"), Some("bench"), &[]).await?;

    // The proxy, as a child process with its own config file.
    let proxy_port = free_port()?;
    let mut proxy_config = config.clone();
    proxy_config.kafka.events_topic = format!("tollgate.bench.proxy.{id}.events");
    proxy_config.kafka.decisions_topic = format!("tollgate.bench.proxy.{id}.decisions");
    if args.budget {
        publish_budget(&proxy_config.kafka).await?;
    }
    proxy_config.proxy.listen = format!("127.0.0.1:{proxy_port}");
    proxy_config.proxy.spool_dir = work.join("spool").display().to_string();
    proxy_config.proxy.decisions_load_secs = 5;
    proxy_config.proxy.rate_limit.requests_per_second = 0;
    if let Some(durability) = args.durability {
        proxy_config.proxy.durability = durability;
    }
    if let Some(ms) = args.wal_fsync_interval_ms {
        proxy_config.proxy.wal_fsync_interval_ms = ms;
    }
    proxy_config.proxy.providers.clear();
    // Named like the vendor so the default price catalog prices its calls.
    proxy_config.proxy.providers.insert(
        "openai".into(),
        ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: format!("http://{mock_addr}/v1"),
            // From the child's environment: a stored credential would
            // replace the control plane's real `openai` one.
            api_key_env: Some(BENCH_KEY_VAR.into()),
            models: vec!["gpt-4o-mini".into()],
            ..ProviderConfig::default()
        },
    );
    let config_path = work.join("tollgate.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&proxy_config).context("writing the proxy's config")?,
    )?;
    let log_path = work.join("proxy.log");
    let mut child = ChildGuard(
        Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&config_path)
            .arg("proxy")
            .env_remove("TOLLGATE_CONFIG")
            .env(BENCH_KEY_VAR, "sk-bench")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log_path)?))
            .spawn()
            .context("starting tollgate proxy")?,
    );
    let pid = child.0.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let proxy_url = format!("http://127.0.0.1:{proxy_port}");
    wait_up(&client, &format!("{proxy_url}/healthz"), &log_path).await?;
    eprintln!("bench proxy: mock upstream at {mock_addr}, proxy pid {pid} at {proxy_url}, events topic {}", proxy_config.kafka.events_topic);

    let body = json!({
        "model": "gpt-4o-mini",
        "stream": args.stream,
        "messages": [{"role": "user", "content": "measure the proxy with a prompt of a dozen words or so please"}],
    });
    let targets = [
        (
            Path::Direct,
            format!("http://{mock_addr}/v1/chat/completions"),
            "sk-bench".to_string(),
        ),
        (
            Path::Proxy,
            format!("{proxy_url}/v1/chat/completions"),
            key.secret.clone(),
        ),
    ];

    eprintln!("bench proxy: warm-up 1 s");
    load(&client, &targets, &body, args.rps, Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let samples = load(
        &client,
        &targets,
        &body,
        args.rps,
        Duration::from_secs(args.duration),
    )
    .await;
    let wall = started.elapsed();
    let cpu_after = cpu_seconds(pid);
    let rss_kib = rss_kib(pid);
    let peak_kib = peak_rss_kib(pid);
    let wal = wal_figures(&client, &format!("{proxy_url}/metrics")).await;

    eprintln!(
        "bench proxy: durability {:?}, wal_fsync_interval_ms {}, spool and log in {} (the disk is what fsync measures)",
        proxy_config.proxy.durability,
        proxy_config.proxy.wal_fsync_interval_ms,
        work.display()
    );
    if let Some((records, fsyncs)) = wal {
        println!(
            "write-ahead log (whole run, warm-up included): {records} records, {fsyncs} fsyncs, {:.1} records per fsync",
            records as f64 / fsyncs.max(1) as f64
        );
    }
    let figures = report(
        &args,
        &samples,
        wall,
        cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        rss_kib,
        peak_kib,
    );

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while matches!(child.0.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    drop(child);
    keys.revoke(&key.prefix).await?;
    pool.close().await;
    let _ = stop_mock.send(());
    let _ = mock.await;
    for topic in [
        &proxy_config.kafka.events_topic,
        &proxy_config.kafka.decisions_topic,
    ] {
        delete_topic(&proxy_config.kafka.brokers, topic).await;
    }
    // A clean stop leaves the log's spare segment (zeros), never a segment.
    let wal_left =
        tollgate_proxy::wal::segments(&work.join("spool/wal")).is_ok_and(|s| !s.is_empty());
    if work.join("spool/events.ndjson").exists() || wal_left {
        eprintln!(
            "bench proxy: events were left in the spool or the write-ahead log (was kafka reachable?); kept {} (proxy.log there)",
            work.display()
        );
    } else if let Err(err) = std::fs::remove_dir_all(&work) {
        eprintln!("bench proxy: cannot remove {}: {err}", work.display());
    }
    Ok(figures)
}

/// A hard daily budget for team `bench` that no run can use up, on the
/// bench's decisions topic (created by the broker on first write).
async fn publish_budget(kafka: &tollgate_control::config::KafkaConfig) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let now = chrono::Utc::now();
    let start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    let record = json!({
        "subject": "budget/team/bench", "action": "allow", "reason": "bench",
        "budget": {"periods": [{"period": "daily", "start": start, "end": start + chrono::Duration::days(1),
                                "limit_usd": "1000000000", "spent_usd": "0"}],
                   "folded": {}, "as_of": now}
    })
    .to_string();
    // Like every producer of ours: idempotent, acks=all.
    let producer: FutureProducer =
        tollgate_control::kafka::idempotent_producer_config(kafka, "tollgate-bench-proxy")
            .create()?;
    producer
        .send(
            FutureRecord::to(&kafka.decisions_topic)
                .key("budget/team/bench")
                .payload(&record),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("cannot publish the bench budget: {e}"))?;
    eprintln!(
        "bench proxy: hard budget for team bench on {}",
        kafka.decisions_topic
    );
    Ok(())
}

/// Remove one of the bench's throw-away topics (best effort).
async fn delete_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: Result<AdminClient<DefaultClientContext>, _> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    let Ok(admin) = admin else { return };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if let Err(err) = admin.delete_topics(&[topic], &options).await {
        eprintln!("bench proxy: could not delete topic {topic}: {err}");
    }
}

/// Kills the child if the bench stops early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) async fn wait_up(
    client: &reqwest::Client,
    url: &str,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the proxy did not come up in 60 s; log: {}", log.display())
}

/// Open-loop load: every 1/rps seconds one request per target, each in its
/// own task, so a slow answer does not slow the schedule.
async fn load(
    client: &reqwest::Client,
    targets: &[(Path, String, String)],
    body: &serde_json::Value,
    rps: u32,
    duration: Duration,
) -> Vec<Sample> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut flip = false;
    while start.elapsed() < duration {
        ticker.tick().await;
        flip = !flip;
        let order: Vec<&(Path, String, String)> = if flip {
            targets.iter().collect()
        } else {
            targets.iter().rev().collect()
        };
        for (path, url, key) in order {
            let (client, url, key, body, samples, path) = (
                client.clone(),
                url.clone(),
                key.clone(),
                body.clone(),
                samples.clone(),
                *path,
            );
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let (ok, own, first) =
                    match client.post(&url).bearer_auth(&key).json(&body).send().await {
                        Ok(response) => {
                            let status = response.status().is_success();
                            let own = own_time(response.headers());
                            let (read, first) = read_body(response, t).await;
                            (read && status, own, first)
                        }
                        Err(_) => (false, None, None),
                    };
                let latency = t.elapsed();
                if let Ok(mut s) = samples.lock() {
                    s.push(Sample {
                        path,
                        latency,
                        first,
                        ok,
                        own,
                    });
                }
            }));
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let done = samples.lock().map(|s| s.len()).unwrap_or(0);
            eprintln!(
                "  {:>3.0} s: {} requests sent, {} answered",
                start.elapsed().as_secs_f64(),
                tasks.len(),
                done
            );
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(samples)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default()
}

/// Read a response's body to its end: whether it all came, and when its
/// first byte did (from `sent`).
async fn read_body(mut response: reqwest::Response, sent: Instant) -> (bool, Option<Duration>) {
    let mut first = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if first.is_none() && !chunk.is_empty() {
                    first = Some(sent.elapsed());
                }
            }
            Ok(None) => return (true, first),
            Err(_) => return (false, first),
        }
    }
}

/// The proxy's write-ahead log counters: records written and fsyncs.
async fn wal_figures(client: &reqwest::Client, url: &str) -> Option<(u64, u64)> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    let value = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((
        value("tollgate_proxy_wal_records_total")?,
        value("tollgate_proxy_wal_fsyncs_total")?,
    ))
}

fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(
    args: &Args,
    samples: &[Sample],
    wall: Duration,
    cpu_seconds: Option<f64>,
    rss_kib: Option<u64>,
    peak_kib: Option<u64>,
) -> Figures {
    let stats = |path: Path| {
        let mut lat: Vec<Duration> = samples
            .iter()
            .filter(|s| s.path == path && s.ok)
            .map(|s| s.latency)
            .collect();
        lat.sort_unstable();
        let errors = samples.iter().filter(|s| s.path == path && !s.ok).count();
        (lat, errors)
    };
    let (direct, direct_errors) = stats(Path::Direct);
    let (proxied, proxy_errors) = stats(Path::Proxy);
    println!();
    println!(
        "bench proxy: {} rps per path for {:.1} s, {} responses, mock time to first token {} ms, {} output tokens{}{}",
        args.rps,
        wall.as_secs_f64(),
        if args.stream { "streamed" } else { "JSON" },
        args.upstream_ms,
        args.tokens,
        if args.stream { " (SSE)" } else { "" },
        if args.budget {
            ", hard budget (every call reserved and settled)"
        } else {
            ""
        }
    );
    println!(
        "{:<8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "path", "ok", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, lat, errors) in [
        ("direct", &direct, direct_errors),
        ("proxy", &proxied, proxy_errors),
    ] {
        println!(
            "{:<8} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            lat.len(),
            errors,
            ms(percentile(lat, 50.0)),
            ms(percentile(lat, 90.0)),
            ms(percentile(lat, 99.0)),
            ms(lat.last().copied().unwrap_or_default())
        );
    }
    let added = |p: f64| ms(percentile(&proxied, p)) - ms(percentile(&direct, p));
    println!(
        "added by the proxy: p50 {:+.2} ms, p99 {:+.2} ms",
        added(50.0),
        added(99.0)
    );
    // A streamed run's figures have keys of their own: the regression run
    // takes both kinds, side by side.
    let mut figures = Figures::default();
    let (errors_measure, cpu_measure) = if args.stream {
        (&measure::PROXY_STREAM_ERRORS, &measure::PROXY_STREAM_CPU)
    } else {
        figures.set(&measure::PROXY_ADDED_P50, added(50.0));
        figures.set(&measure::PROXY_ADDED_P99, added(99.0));
        (&measure::PROXY_ERRORS, &measure::PROXY_CPU)
    };
    figures.set(errors_measure, proxy_errors as f64);
    if args.stream {
        let first = |path: Path| {
            let mut firsts: Vec<Duration> = samples
                .iter()
                .filter(|s| s.path == path && s.ok)
                .filter_map(|s| s.first)
                .collect();
            firsts.sort_unstable();
            firsts
        };
        let (direct, proxied) = (first(Path::Direct), first(Path::Proxy));
        let at = |firsts: &[Duration], p: f64| ms(percentile(firsts, p));
        println!(
            "time to first token: direct p50 {:.2} ms, p99 {:.2} ms; proxied p50 {:.2} ms, p99 {:.2} ms; added p50 {:+.2} ms, p99 {:+.2} ms",
            at(&direct, 50.0),
            at(&direct, 99.0),
            at(&proxied, 50.0),
            at(&proxied, 99.0),
            at(&proxied, 50.0) - at(&direct, 50.0),
            at(&proxied, 99.0) - at(&direct, 99.0),
        );
        if !direct.is_empty() && !proxied.is_empty() {
            figures.set(
                &measure::PROXY_STREAM_TTFT_ADDED_P50,
                at(&proxied, 50.0) - at(&direct, 50.0),
            );
        }
    }
    let own = |pick: fn((f64, f64)) -> f64| {
        let mut figures: Vec<f64> = samples
            .iter()
            .filter(|s| s.path == Path::Proxy && s.ok)
            .filter_map(|s| s.own.map(pick))
            .collect();
        figures.sort_unstable_by(f64::total_cmp);
        figures
    };
    let (overhead, wal) = (own(|o| o.0), own(|o| o.1));
    if !overhead.is_empty() && !args.stream {
        figures.set(&measure::PROXY_OWN_P50, percentile(&overhead, 50.0));
    }
    println!(
        "the proxy's own time (Server-Timing overhead, {} responses): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms; of it the write-ahead log: p50 {:.3} ms, p99 {:.3} ms",
        overhead.len(),
        percentile(&overhead, 50.0),
        percentile(&overhead, 90.0),
        percentile(&overhead, 99.0),
        overhead.last().copied().unwrap_or(0.0),
        percentile(&wal, 50.0),
        percentile(&wal, 99.0),
    );
    println!(
        "proxy throughput: {:.1} ok responses/s",
        proxied.len() as f64 / wall.as_secs_f64()
    );
    if let Some(cpu) = cpu_seconds {
        let calls = samples.iter().filter(|s| s.path == Path::Proxy).count();
        figures.set(cpu_measure, cpu * 1000.0 / calls.max(1) as f64);
        println!(
            "proxy CPU: {:.2} s over {:.1} s = {:.0}% of one core",
            cpu,
            wall.as_secs_f64(),
            100.0 * cpu / wall.as_secs_f64()
        );
    }
    if let (Some(rss), Some(peak)) = (rss_kib, peak_kib) {
        println!(
            "proxy RSS: {:.1} MiB now, {:.1} MiB peak",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    figures
}
