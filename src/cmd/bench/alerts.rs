//! `tollgate bench alerts --calls N --rules R`: how long one evaluation of
//! R alert rules takes over N calls (docs/alerting.md, "Evaluating at
//! scale").
//!
//! 1. Creates a throw-away ClickHouse database and PostgreSQL database
//!    (`tollgate_bench_alerts_<id>`) and migrates both.
//! 2. Generates N calls inside ClickHouse (`INSERT … SELECT FROM numbers`,
//!    in chunks, through the same materialized views the processor's
//!    inserts go through) spread over the last 24 hours: 10 orgs, 50 teams,
//!    200 keys, 4 providers, 8 models, 5 % failed with one of 7 error
//!    patterns, three feature tags.
//! 3. Stores R rules cycling through every signal kind that reads
//!    ClickHouse (error rate, latency and TTFT percentiles, spend of org,
//!    team, key and tag, spend rate, new error pattern, breaker opened).
//! 4. Runs the evaluator's own `evaluate` (measure every rule, step and
//!    persist each, fenced) `--rounds` times and prints each round's time
//!    against the evaluation interval, then the time of one measurement
//!    per signal kind.
//! 5. Backtests one error-rate, one latency and one TTFT rule over the 24
//!    hours at one minute (`alert_signals::backtest`, the API's and the rule
//!    page's), and the same steps measured one by one with `measure`, eight
//!    at a time (how the backtest read until 2026-12-07), checks both give
//!    the same series and prints both times.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tollgate_contract::alerts::RuleSpec;
use tollgate_control::alerts::AlertStore;
use tollgate_queries::alert_signals::{backtest, measure, steps, BacktestPoint, SignalSources};
use tollgate_queries::ReadModels;

use crate::cmd::simulate::progress_bar;
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Calls to generate.
    #[arg(long, default_value_t = 10_000_000)]
    pub calls: u64,
    /// Rules to evaluate.
    #[arg(long, default_value_t = 1_000)]
    pub rules: usize,
    /// Evaluations to time.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Calls per generating insert.
    #[arg(long, default_value_t = 1_000_000)]
    pub chunk: u64,
    /// Keep the bench databases afterwards.
    #[arg(long)]
    pub keep: bool,
}

const PROVIDERS: [&str; 4] = ["openai", "anthropic", "google", "bedrock"];
const MODELS: [&str; 8] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet-4",
    "claude-haiku-4",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "titan-text",
    "llama-3-70b",
];

/// Calls `offset .. offset + count` of `total`, spread evenly over the 24
/// hours before `end` (epoch seconds). Model i goes with provider i / 2.
pub fn generate_sql(offset: u64, count: u64, total: u64, end: i64) -> String {
    let start = end - 86_400;
    let models = MODELS.map(|m| format!("'{m}'")).join(", ");
    let providers = PROVIDERS.map(|p| format!("'{p}'")).join(", ");
    format!(
        "INSERT INTO calls (event_id, schema_version, kind, occurred_at, occurred_at_ms, \
           org_id, team_id, user_id, api_key_id, call_id, provider, model, requested_model, attempt, \
           operation, duration_ms, has_ttft, ttft_ms, input_tokens, output_tokens, outcome, http_status, \
           error_type, error_message, tag_keys, tag_values, ingested_at, kafka_partition, kafka_offset, \
           cost, priced, error_signature, error_template) \
         SELECT toString(n) AS event_id, toUInt16(1), \
           if(n % 20 = 0, 'ai.call.failed', 'ai.call.completed') AS kind, \
           toDateTime({start} + intDiv(n * 86400, {total}), 'UTC') AS at, \
           toUInt64(({start} + intDiv(n * 86400, {total})) * 1000), \
           concat('org-', toString(n % 10)), concat('team-', toString(n % 50)), \
           concat('user-', toString(n % 1000)), concat('key-', toString(n % 200)), toString(n), \
           arrayElement([{providers}], intDiv(n % 8, 2) + 1), arrayElement([{models}], n % 8 + 1), \
           arrayElement([{models}], n % 8 + 1), toUInt16(1), 'chat', \
           toUInt32(200 + (n * 7919) % 3000), toUInt8(1), toUInt32(50 + (n * 104729) % 900), \
           toUInt64(1000), toUInt64(500), if(n % 20 = 0, 'error', 'success'), \
           toUInt16(if(n % 20 = 0, 429 + (n % 3) * 36, 200)), if(n % 20 = 0, 'rate_limit', ''), \
           if(n % 20 = 0, concat('limit reached for ', toString(n % 7)), ''), \
           ['feature'], [arrayElement(['chat', 'search', 'summarize'], n % 3 + 1)], \
           toDateTime({end}, 'UTC'), toInt32(0), toInt64(n), \
           toDecimal128('0.002', 12), toUInt8(1), toUInt64(if(n % 20 = 0, 1 + n % 7, 0)), \
           if(n % 20 = 0, 'limit reached for <num>', '') \
         FROM (SELECT number + {offset} AS n FROM system.numbers LIMIT {count})"
    )
}

/// The generator's statement for the SQL catalog (`tollgate sql-catalog`).
pub fn catalog() -> Vec<(String, String)> {
    vec![(
        "bench.alerts.generate_calls".into(),
        generate_sql(0, 1_000, 1_000, 1_796_032_800),
    )]
}

/// The i-th rule: every kind that reads ClickHouse, in turn.
fn rule(i: usize) -> serde_json::Value {
    let org = format!("org-{}", i % 10);
    let model = MODELS[i % MODELS.len()];
    let provider = PROVIDERS[(i % MODELS.len()) / 2];
    let team = format!("team-{}", i % 50);
    let signal = match i % 10 {
        0 => {
            json!({"kind": "error_rate", "provider": provider, "above_percent": "4", "window_secs": 300})
        }
        1 => {
            json!({"kind": "error_rate", "model": model, "team": team, "above_percent": "10", "window_secs": 900})
        }
        2 => {
            json!({"kind": "latency", "metric": "duration", "percentile": 95, "model": model, "above_ms": 3000, "window_secs": 300})
        }
        3 => {
            json!({"kind": "latency", "metric": "ttft", "percentile": 99, "team": team, "above_ms": 900, "window_secs": 600})
        }
        4 => {
            json!({"kind": "spend", "subject_kind": "org", "subject_id": org, "window_secs": 3600, "above_usd": "10"})
        }
        5 => {
            json!({"kind": "spend", "subject_kind": "team", "subject_id": team, "window_secs": 3600, "per_hour_above_usd": "1"})
        }
        6 => {
            json!({"kind": "spend", "subject_kind": "key", "subject_id": format!("key-{}", i % 200), "window_secs": 900, "above_usd": "1"})
        }
        7 => {
            json!({"kind": "spend", "subject_kind": "tag", "subject_id": "feature=search", "window_secs": 3600, "above_usd": "5"})
        }
        8 => json!({"kind": "new_error_pattern", "provider": provider}),
        _ => json!({"kind": "breaker_opened", "provider": provider}),
    };
    json!({
        "org_id": org, "name": format!("bench-rule-{i}"), "signal": signal,
        "for_secs": 120, "severity": "warning"
    })
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let databases = super::databases::BenchDatabases::create(config, "alerts").await?;
    let result = measure_round_trip(&args, &databases.config).await;
    if !args.keep {
        databases.drop_both().await?;
    }
    result
}

async fn measure_round_trip(args: &Args, bench: &Config) -> anyhow::Result<()> {
    let ch = tollgate_control::clickhouse::client(&bench.clickhouse);
    let end = Utc::now().timestamp() / 60 * 60;
    let bar = progress_bar(args.calls, "calls");
    let generating = Instant::now();
    let mut offset = 0;
    while offset < args.calls {
        let count = args.chunk.max(1).min(args.calls - offset);
        ch.query(&generate_sql(offset, count, args.calls, end))
            .execute()
            .await
            .context("generating calls")?;
        offset += count;
        bar.set_position(offset);
    }
    bar.finish();
    let generated = generating.elapsed();

    let pool = tollgate_control::postgres::connect(&bench.postgres).await?;
    let store = AlertStore::new(pool.clone());
    // A spend rule on a key names a key of its org (the store refuses
    // others): the keys the rules name, created in the bench's database.
    // The generated calls carry `key-N` ids, so these rules read no spend;
    // the query they run is the same.
    let keys = tollgate_control::keys::KeyStore::new(pool.clone());
    let mut key_ids: BTreeMap<String, String> = BTreeMap::new();
    let bar = progress_bar(args.rules as u64, "rules");
    let mut kinds: BTreeMap<&'static str, Vec<RuleSpec>> = BTreeMap::new();
    for i in 0..args.rules {
        let mut body = rule(i);
        if body["signal"]["subject_kind"] == "key" {
            let name = body["signal"]["subject_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let org = body["org_id"].as_str().unwrap_or_default().to_string();
            let id = match key_ids.get(&name) {
                Some(id) => id.clone(),
                None => {
                    let created = keys.create(&name, Some(&org), "proxy").await?;
                    key_ids.insert(name.clone(), created.id.to_string());
                    created.id.to_string()
                }
            };
            body["signal"]["subject_id"] = id.into();
        }
        let spec: RuleSpec = serde_json::from_value(body)?;
        store.create_rule(&spec, "bench").await?;
        let kind = spec.signal.kind();
        let same = kinds.entry(kind).or_default();
        if same.len() < 20 {
            same.push(spec);
        }
        bar.inc(1);
    }
    bar.finish();

    let mut evaluator = tollgate_alerting::Evaluator::new(
        bench.alerting.clone(),
        pool.clone(),
        &bench.clickhouse,
        format!("bench-{}", std::process::id()),
    )?;
    let fence = evaluator.acquire().await?;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let started = Instant::now();
        let stepped = evaluator.evaluate(&fence, Utc::now()).await?;
        let took = started.elapsed();
        let transitions = stepped
            .iter()
            .filter(|(_, s)| s.transition.is_some())
            .count();
        eprintln!(
            "bench: round {round}: {} rules in {:.2} s ({transitions} transitions)",
            stepped.len(),
            took.as_secs_f64()
        );
        rounds.push(took);
    }

    let read = ReadModels::new(&bench.clickhouse);
    let sources = SignalSources {
        read: &read,
        budgets: None,
    };
    let mut per_kind = Vec::new();
    for (kind, specs) in &kinds {
        let mut times = Vec::new();
        for spec in specs {
            let started = Instant::now();
            measure(sources, &spec.org_id, &spec.signal, Utc::now()).await?;
            times.push(started.elapsed());
        }
        times.sort();
        per_kind.push((*kind, times));
    }

    // The backtest of the first rules of the kinds it reads at once,
    // against the same steps measured one by one.
    let mut backtests = Vec::new();
    let shapes = [
        ("error_rate", 0, "error rate"),
        ("latency", 0, "latency p95"),
        ("latency", 1, "TTFT p99"),
    ];
    let to = DateTime::from_timestamp(end, 0).unwrap_or_default();
    let from = to - chrono::Duration::hours(24);
    for (kind, i, label) in shapes {
        let Some(spec) = kinds.get(kind).and_then(|specs| specs.get(i)) else {
            continue;
        };
        let started = Instant::now();
        let batched = backtest(sources, spec, from, to, 60)
            .await?
            .map_err(|e| anyhow::anyhow!("backtest range: {e}"))?;
        let batched_took = started.elapsed();
        let started = Instant::now();
        let instants = steps(from, to, 60).map_err(|e| anyhow::anyhow!("{e}"))?;
        let by_step: Vec<BacktestPoint> = futures::stream::iter(instants)
            .map(|at| async move {
                let measurement = measure(sources, &spec.org_id, &spec.signal, at).await?;
                Ok::<_, tollgate_queries::ReadModelError>(BacktestPoint { at, measurement })
            })
            .buffered(8)
            .try_collect()
            .await?;
        let by_step_took = started.elapsed();
        anyhow::ensure!(
            batched.series == by_step,
            "the backtest of {label} differs from measuring its steps one by one"
        );
        backtests.push((label, batched.series.len(), batched_took, by_step_took));
    }

    let interval = Duration::from_secs(bench.alerting.interval_secs);
    println!();
    println!("tollgate bench alerts");
    println!(
        "  calls                  {} over 24 h (generated in {:.1} s)",
        args.calls,
        generated.as_secs_f64()
    );
    println!(
        "  rules                  {} (concurrency {})",
        args.rules, bench.alerting.concurrency
    );
    println!("  evaluation interval    {} s", interval.as_secs());
    for (i, took) in rounds.iter().enumerate() {
        println!(
            "  evaluation {:<2}          {:>8.2} s  {:>8.0} rules/s  {:>5.1} % of the interval",
            i + 1,
            took.as_secs_f64(),
            args.rules as f64 / took.as_secs_f64().max(1e-9),
            100.0 * took.as_secs_f64() / interval.as_secs_f64()
        );
    }
    println!(
        "  one measurement per signal kind (sequential, {} rules each at most):",
        20
    );
    println!("  {:<20} {:>10} {:>10}", "kind", "p50 ms", "max ms");
    for (kind, times) in &per_kind {
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  {:<20} {:>10.1} {:>10.1}",
            kind,
            times.get(times.len() / 2).map(ms).unwrap_or(0.0),
            times.last().map(ms).unwrap_or(0.0)
        );
    }
    println!("  backtest over 24 h at 60 s (one rule each; the same series both ways):");
    println!(
        "  {:<20} {:>6} {:>12} {:>16}",
        "rule", "steps", "batched s", "step by step s"
    );
    for (label, n, batched, by_step) in &backtests {
        println!(
            "  {:<20} {:>6} {:>12.3} {:>16.3}",
            label,
            n,
            batched.as_secs_f64(),
            by_step.as_secs_f64()
        );
    }
    Ok(())
}
