//! `tollgate bench ingest --events N`.
//!
//! 1. Creates a throw-away namespace (topics `tollgate.bench.<id>.*`, ClickHouse
//!    database `tollgate_bench_<id>`, consumer groups `tollgate-bench-<id>` and
//!    `tollgate-bench-<id>-audit`, so running processors elsewhere neither
//!    share its partitions nor stop its migration) and
//!    migrates it by running `tollgate migrate` as a child process.
//! 2. Starts `tollgate process` as a child process on that namespace, so its
//!    memory can be measured on its own.
//! 3. Produces N simulated events with the same producer the ingest API uses.
//!    With `--rate`, it produces at that steady rate instead of as fast as
//!    Kafka acknowledges.
//! 4. Samples ClickHouse's row count and the processor's RSS (every 250 ms,
//!    100 ms with `--rate`) until all N rows are visible, then prints
//!    producer rate, end-to-end throughput, visibility lag (`visibility`),
//!    consumer lag over time and peak RSS.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use tollgate_control::kafka::EventProducer;

use super::figures::{self as measure, Figures};
use super::process_stats::{self, has_exited, peak_rss_kib, rss_kib, CpuMeter};
use super::visibility::{visibility_lag, Produced, VisibilityLag, Visible};
use crate::cmd::simulate::{chunks, progress_bar};
use crate::config::Config;
use crate::workload::{Workload, WorkloadSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Number of events to produce.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Events handed to the producer at a time.
    #[arg(long, default_value_t = 5_000)]
    pub chunk: usize,
    /// Give up waiting for ClickHouse after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Keep the bench database and topics afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the generated workload: the same seed, the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Processors started, in one consumer group (they share the events
    /// topic's partitions; the RSS figures are the first one's).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub processors: u16,
    /// Produce at this steady rate (events/s, open loop: a chunk is sent
    /// when it is due, whether or not the previous one was acknowledged)
    /// instead of as fast as Kafka acknowledges. For the visibility-lag
    /// goal: `--rate 50000 --events 15000000` is 5 minutes at 50k/s.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
}

/// The processes whose CPU the run measures, by the names it prints.
const PROCESSOR: &str = "processor";
const CLICKHOUSE: &str = "ClickHouse";

/// One sample of the pipeline's progress.
struct Sample {
    at: Duration,
    produced: u64,
    stored: u64,
    rss_kib: u64,
}

/// A throw-away namespace of `config` (topics, database, consumer group)
/// named after the time, migrated.
pub(super) fn bench_namespace(config: &Config) -> anyhow::Result<(String, Config)> {
    let id = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let mut bench = config.clone();
    bench.kafka.events_topic = format!("tollgate.bench.{id}.events");
    bench.kafka.dlq_topic = format!("tollgate.bench.{id}.events.dlq");
    bench.kafka.decisions_topic = format!("tollgate.bench.{id}.decisions");
    bench.kafka.audit_checkpoints_topic = format!("tollgate.bench.{id}.audit.checkpoints");
    bench.clickhouse.database = format!("tollgate_bench_{id}");
    bench.processor.group_id = format!("tollgate-bench-{id}");
    bench.audit.group_id = format!("tollgate-bench-{id}-audit");
    eprintln!(
        "bench: namespace {id} (topic {}, database {})",
        bench.kafka.events_topic, bench.clickhouse.database
    );
    let status = tollgate(&overrides(&bench), &["migrate"])
        .stdout(Stdio::null())
        .status()
        .context("cannot run tollgate migrate")?;
    anyhow::ensure!(
        status.success(),
        "tollgate migrate failed for the bench namespace"
    );
    Ok((id, bench))
}

/// Drop the namespace's database and topics.
pub(super) async fn drop_namespace(
    clickhouse: &clickhouse::Client,
    bench: &Config,
) -> anyhow::Result<()> {
    let database = &bench.clickhouse.database;
    let cluster = &bench.clickhouse.cluster;
    let (databases, on_cluster) = if cluster.is_empty() {
        (vec![database.clone()], String::new())
    } else {
        // On a cluster: the read tables first (they point at the facts), then
        // every replica's copy of the facts.
        (
            vec![format!("{database}_dist"), database.clone()],
            format!(" ON CLUSTER {cluster}"),
        )
    };
    for database in databases {
        clickhouse
            .query(&format!("DROP DATABASE IF EXISTS {database}{on_cluster}"))
            .execute()
            .await
            .with_context(|| format!("cannot drop the bench database {database}"))?;
    }
    tollgate_processors::topics::delete_topics(&bench.kafka).await?;
    Ok(())
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<Figures> {
    let (id, bench) = bench_namespace(config)?;
    let overrides = overrides(&bench);

    let log_path = std::env::temp_dir().join(format!("tollgate-bench-{id}-process.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut processors = Vec::new();
    for _ in 0..args.processors {
        processors.push(ProcessorChild(
            // A free port for its /metrics: a configured one may be the
            // running demo's.
            tollgate(&overrides, &["process", "--metrics-listen", "127.0.0.1:0"])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log.try_clone()?))
                .spawn()
                .context("cannot start tollgate process")?,
        ));
    }
    let pid = processors.first().map(|p| p.0.id()).unwrap_or(0);
    let pids: Vec<u32> = processors.iter().map(|p| p.0.id()).collect();
    let clickhouse = tollgate_control::clickhouse::client(&bench.clickhouse);
    let producer = EventProducer::new(&bench.kafka)?;

    // The broker and the server the bench talks to, found by their ports
    // (absent when they run elsewhere or as another user).
    let broker = process_stats::port_of(&bench.kafka.brokers).and_then(process_stats::listener);
    let server = process_stats::port_of(&bench.clickhouse.url).and_then(process_stats::listener);
    let cpu = CpuMeter::start(&[
        (PROCESSOR, Some(pid)),
        (CLICKHOUSE, server),
        ("Kafka broker", broker),
    ]);
    let started = Instant::now();
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let produced = produced.clone();
        let clickhouse = clickhouse.clone();
        let total = args.events;
        let deadline = Duration::from_secs(args.timeout_secs);
        let every = Duration::from_millis(if args.rate.is_some() { 100 } else { 250 });
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let stored = clickhouse
                    .query("SELECT count() FROM calls")
                    .fetch_one::<u64>()
                    .await
                    .unwrap_or(0);
                samples.push(Sample {
                    at: started.elapsed(),
                    produced: produced.load(std::sync::atomic::Ordering::Relaxed),
                    stored,
                    rss_kib: rss_kib(pid).unwrap_or(0),
                });
                // Every processor gone (a start-up error): nothing more
                // will arrive, so the bench says so now rather than wait
                // out its timeout.
                let exited = !pids.is_empty() && pids.iter().all(|p| has_exited(*p));
                if stored >= total || exited || started.elapsed() > deadline {
                    return (samples, exited);
                }
                tokio::time::sleep(every).await;
            }
        })
    };

    let bar = progress_bar(args.events, "produce");
    let workload = Workload::new(WorkloadSpec::new(
        args.events,
        chrono::Duration::minutes(60),
        args.seed,
    ))?;
    let chunk_size = args.chunk.max(1);
    let mut due = Vec::new();
    let mut sends = Vec::new();
    let mut failed = 0u64;
    let mut through = 0u64;
    for (i, chunk) in chunks(workload, chunk_size).enumerate() {
        // The sampler is done before every event is sent only when every
        // processor exited or the time ran out: stop producing then.
        if sampler.is_finished() {
            break;
        }
        let at = match args.rate {
            Some(rate) => {
                let at = Duration::from_secs_f64((i * chunk_size) as f64 / rate as f64);
                tokio::time::sleep_until((started + at).into()).await;
                at
            }
            None => started.elapsed(),
        };
        through += chunk.len() as u64;
        due.push(Produced { due: at, through });
        let producer = producer.clone();
        let produced = produced.clone();
        let bar = bar.clone();
        let send = async move {
            let results = producer.send_batch(&chunk).await;
            produced.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            bar.inc(chunk.len() as u64);
            results.iter().filter(|r| r.is_err()).count() as u64
        };
        if args.rate.is_some() {
            // Open loop: the next chunk does not wait for this one's acks.
            sends.push(tokio::spawn(send));
        } else {
            failed += send.await;
        }
    }
    for send in sends {
        failed += send.await?;
    }
    bar.finish();
    let produce_time = started.elapsed();
    anyhow::ensure!(
        failed == 0,
        "{failed} events were not acknowledged by Kafka"
    );

    let (samples, exited) = sampler.await?;
    let end_to_end = samples.last().map(|s| s.at).unwrap_or_default();
    let stored = samples.last().map(|s| s.stored).unwrap_or(0);
    let peak_rss = peak_rss_kib(pid).unwrap_or(0);
    let cpu = cpu.used();
    for processor in &mut processors {
        processor.stop();
    }

    let visible: Vec<Visible> = samples
        .iter()
        .map(|s| Visible {
            at: s.at,
            rows: s.stored,
        })
        .collect();
    let lag = visibility_lag(&due, &visible);
    print_report(&args, produce_time, end_to_end, stored, peak_rss, &samples);
    print_cpu(&cpu, stored);
    print_visibility(&args, &lag);
    if stored < args.events {
        eprintln!(
            "bench: only {stored} of {} events reached ClickHouse; processor log: {}",
            args.events,
            log_path.display()
        );
    }
    if !args.keep {
        drop_namespace(&clickhouse, &bench).await?;
    }
    anyhow::ensure!(
        stored >= args.events || !exited,
        "every processor exited before the events were stored ({stored} of {}); its log {} ends:\n{}",
        args.events,
        log_path.display(),
        log_tail(&log_path, 5)
    );
    anyhow::ensure!(
        stored >= args.events,
        "pipeline did not deliver every event within {} s",
        args.timeout_secs
    );
    Ok(run_figures(stored, end_to_end, peak_rss, &cpu))
}

/// The run's figures for `bench regression`.
fn run_figures(
    stored: u64,
    end_to_end: Duration,
    peak_rss_kib: u64,
    cpu: &[(String, f64)],
) -> Figures {
    let mut figures = Figures::default();
    figures.set(
        &measure::INGEST_RATE,
        stored as f64 / end_to_end.as_secs_f64().max(1e-9),
    );
    figures.set(&measure::INGEST_PEAK_RSS, peak_rss_kib as f64 / 1024.0);
    let per_event = |name: &str| {
        cpu.iter()
            .find(|(n, _)| n == name)
            .map(|(_, seconds)| seconds * 1e6 / stored.max(1) as f64)
    };
    if let Some(us) = per_event(PROCESSOR) {
        figures.set(&measure::INGEST_PROCESSOR_CPU, us);
    }
    if let Some(us) = per_event(CLICKHOUSE) {
        figures.set(&measure::INGEST_CLICKHOUSE_CPU, us);
    }
    figures
}

fn print_report(
    args: &Args,
    produce: Duration,
    end_to_end: Duration,
    stored: u64,
    peak_rss_kib: u64,
    samples: &[Sample],
) {
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!();
    println!("tollgate bench ingest");
    println!("  events                 {}", args.events);
    println!("  processors             {}", args.processors);
    println!(
        "  producer               {:>8.2} s  {:>10.0} events/s (acknowledged by Kafka, acks=all)",
        produce.as_secs_f64(),
        rate(args.events, produce)
    );
    println!("  end-to-end             {:>8.2} s  {:>10.0} events/s (first produce -> all rows visible in ClickHouse)", end_to_end.as_secs_f64(), rate(stored, end_to_end));
    println!(
        "  processor peak RSS     {:>8.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    println!("  consumer lag over time (produced - visible in ClickHouse):");
    println!(
        "  {:>8} {:>10} {:>10} {:>10} {:>10}",
        "t (s)", "produced", "stored", "lag", "RSS MiB"
    );
    let step = (samples.len() / 20).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i + 1 == samples.len() {
            println!(
                "  {:>8.2} {:>10} {:>10} {:>10} {:>10.1}",
                s.at.as_secs_f64(),
                s.produced,
                s.stored,
                s.produced.saturating_sub(s.stored),
                s.rss_kib as f64 / 1024.0
            );
        }
    }
}

fn print_cpu(used: &[(String, f64)], events: u64) {
    println!("  CPU during the run (this bench itself, the producer, not counted):");
    for (name, seconds) in used {
        println!(
            "  {name:<22} {seconds:>8.2} s  {:>10.1} µs per event",
            seconds * 1e6 / events.max(1) as f64
        );
    }
}

fn print_visibility(args: &Args, lag: &VisibilityLag) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let paced = match args.rate {
        Some(rate) => format!("produced at a steady {rate} events/s"),
        None => "produced as fast as Kafka acknowledged: the backlog counts".into(),
    };
    println!("  visibility lag (due to be produced -> row visible in ClickHouse; {paced}):");
    println!(
        "  {:>10} {:>10} {:>10} {:>10}",
        "p50 ms", "p99 ms", "max ms", "unseen"
    );
    println!(
        "  {:>10.0} {:>10.0} {:>10.0} {:>10}",
        ms(lag.p50),
        ms(lag.p99),
        ms(lag.max),
        lag.unseen
    );
}

/// `TOLLGATE_*` variables that point a child at the bench namespace.
pub(super) fn overrides(config: &Config) -> Vec<(String, String)> {
    vec![
        (
            "TOLLGATE_KAFKA__BROKERS".into(),
            config.kafka.brokers.clone(),
        ),
        (
            "TOLLGATE_KAFKA__EVENTS_TOPIC".into(),
            config.kafka.events_topic.clone(),
        ),
        (
            "TOLLGATE_KAFKA__DLQ_TOPIC".into(),
            config.kafka.dlq_topic.clone(),
        ),
        (
            "TOLLGATE_KAFKA__DECISIONS_TOPIC".into(),
            config.kafka.decisions_topic.clone(),
        ),
        (
            "TOLLGATE_KAFKA__AUDIT_CHECKPOINTS_TOPIC".into(),
            config.kafka.audit_checkpoints_topic.clone(),
        ),
        (
            "TOLLGATE_CLICKHOUSE__URL".into(),
            config.clickhouse.url.clone(),
        ),
        (
            "TOLLGATE_CLICKHOUSE__DATABASE".into(),
            config.clickhouse.database.clone(),
        ),
        (
            "TOLLGATE_PROCESSOR__GROUP_ID".into(),
            config.processor.group_id.clone(),
        ),
        (
            "TOLLGATE_AUDIT__GROUP_ID".into(),
            config.audit.group_id.clone(),
        ),
        ("TOLLGATE_POSTGRES__URL".into(), config.postgres.url.clone()),
    ]
}

pub(super) fn tollgate(overrides: &[(String, String)], args: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tollgate"));
    let mut cmd = Command::new(exe);
    cmd.args(args).envs(overrides.iter().cloned());
    cmd
}

/// The processor child: SIGTERM on stop (graceful), killed if dropped.
pub(super) struct ProcessorChild(pub(super) Child);

impl ProcessorChild {
    pub(super) fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let _ = self.0.wait();
        }
    }
}

impl Drop for ProcessorChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last `lines` lines of the file at `path` (empty when unreadable).
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
