//! `tollgate bench reports --calls N`: how fast every report and page a
//! user opens answers over N calls (docs/performance.md, "Reports at
//! scale").
//!
//! 1. Creates a throw-away ClickHouse database and PostgreSQL database
//!    (`tollgate_bench_reports_<id>`) and migrates both.
//! 2. Generates N calls inside ClickHouse (`INSERT … SELECT FROM numbers`,
//!    in chunks) spread evenly over `--days` days: 10 orgs, 50 teams (5 per
//!    org), 2,000 users and 200 keys (each of one team), 4 providers, 8
//!    models, 4 % failed with one of 6 provider errors (their signatures and
//!    templates computed by the processor's own `signature`), token counts,
//!    durations with a tail, a `feature` tag. The inserts go into `calls`,
//!    so the rollups (`cost_daily`, `cost_daily_by_team`, `cost_daily_by_user`, `cost_daily_by_key`, `cost_daily_tags`, `latency_minute_hist`, `latency_minute_buckets`,
//!    the error-pattern views) are filled by the same materialized views the
//!    processor's inserts go through. One audit entry per call goes into
//!    `audit_chain` (chain = team, as the audit fold keys it).
//! 3. Stores budgets (every org monthly, every team monthly, 50 users
//!    daily) in PostgreSQL.
//! 4. Checks the data: `calls` holds N rows, the cost rollup sums to the
//!    calls' cost, and the cost and latency reports served by the api agree
//!    with the calls (the run fails otherwise).
//! 5. Starts `tollgate api` as a child with an admin key and times every
//!    report, page and CSV export: `--warmups` requests, then `--requests`
//!    timed ones, sequentially; prints p50/p95/max per endpoint and flags
//!    those over the goal (p95 < 150 ms).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use tollgate_contract::signature::{signature, ErrorInput};
use tollgate_control::budgets::admin::BudgetSpec;
use tollgate_control::budgets::{BudgetStore, Period, SubjectKind};

use super::figures::{self as measure, Figures};
use super::ingest::{overrides, tollgate};
use crate::cmd::simulate::progress_bar;
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Calls to generate.
    #[arg(long, default_value_t = 10_000_000)]
    pub calls: u64,
    /// Days the calls are spread over, ending now (the latency report
    /// covers at most 31).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Timed requests per endpoint.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Untimed requests per endpoint before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmups: usize,
    /// Calls per generating insert.
    #[arg(long, default_value_t = 1_000_000)]
    pub chunk: u64,
    /// Keep the bench databases afterwards (their name is printed).
    #[arg(long)]
    pub keep: bool,
}

/// The goal: every endpoint answers within this at p95.
const GOAL: Duration = Duration::from_millis(150);

const ORGS: u64 = 10;
const TEAMS: u64 = 50;
const PROVIDERS: [&str; 4] = ["openai", "anthropic", "google", "bedrock"];
/// Model i goes with provider i / 2; input and output price per token in
/// 10^-12 USD (2,500,000 is $2.50 per million tokens). Cached input costs a
/// tenth of input.
const MODELS: [(&str, u64, u64); 8] = [
    ("gpt-4o", 2_500_000, 10_000_000),
    ("gpt-4o-mini", 150_000, 600_000),
    ("claude-sonnet-4", 3_000_000, 15_000_000),
    ("claude-haiku-4", 800_000, 4_000_000),
    ("gemini-2.5-pro", 1_250_000, 10_000_000),
    ("gemini-2.5-flash", 300_000, 2_500_000),
    ("titan-text", 500_000, 1_500_000),
    ("llama-3-70b", 720_000, 720_000),
];
const FEATURES: [&str; 4] = ["chat", "search", "summarize", "agent"];
/// `(error_type, http_status, message)`: `{v}` is a number that varies
/// from call to call.
const ERRORS: [(&str, u16, &str); 6] = [
    (
        "rate_limit_exceeded",
        429,
        "Rate limit reached for requests per min: limit {v}, used {v}",
    ),
    (
        "server_error",
        500,
        "The server had an error while processing request {v}",
    ),
    ("timeout", 0, "upstream timed out after {v} ms"),
    ("overloaded_error", 529, "Overloaded"),
    (
        "invalid_request_error",
        400,
        "max_tokens: {v} is greater than the maximum allowed",
    ),
    (
        "context_length_exceeded",
        400,
        "This model's maximum context length is 128000 tokens; you requested {v} tokens",
    ),
];
/// Two values of `{v}` the signature must mask alike.
const PROBES: [&str; 2] = ["7777", "104"];

/// One error shape for one provider, as the processor stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorShape {
    pub signature: u64,
    pub template: String,
    /// The masked parts as SQL expressions of `var` (a String).
    pub variables_sql: String,
}

/// The signature, template and variables of every error of [`ERRORS`] on
/// every provider, in `provider * ERRORS.len() + error` order, by the
/// processor's `signature`. Fails when `{v}` is not masked alike for every
/// value (the generated rows would then not be what the processor writes).
pub fn error_shapes() -> anyhow::Result<Vec<ErrorShape>> {
    let mut shapes = Vec::new();
    for provider in PROVIDERS {
        for (error_type, http_status, message) in ERRORS {
            let [a, b] = PROBES.map(|v| {
                signature(&ErrorInput {
                    provider,
                    http_status,
                    error_type,
                    message: &message.replace("{v}", v),
                })
            });
            anyhow::ensure!(
                a.id == b.id && a.template == b.template,
                "the signature of `{message}` depends on its number"
            );
            let mut variables = Vec::new();
            for (x, y) in a.variables.iter().zip(&b.variables) {
                anyhow::ensure!(
                    x.text.replace(PROBES[0], PROBES[1]) == y.text,
                    "`{message}` masks `{}` and `{}` differently",
                    x.text,
                    y.text
                );
                variables.push(with_var(&x.text, PROBES[0]));
            }
            anyhow::ensure!(a.variables.len() == b.variables.len());
            shapes.push(ErrorShape {
                signature: a.id.0,
                template: a.template,
                variables_sql: format!("[{}]", variables.join(", ")),
            });
        }
    }
    Ok(shapes)
}

/// `text` as a SQL expression with every `marker` replaced by the String
/// `var` (18.16's `replaceAll` takes only constants).
fn with_var(text: &str, marker: &str) -> String {
    let parts: Vec<String> = text.split(marker).map(sql_string).collect();
    if parts.len() == 1 {
        return parts.concat();
    }
    format!("concat({})", parts.join(", var, "))
}

/// `multiIf(index = 0, a, index = 1, b, …, last)` over `choices`.
fn choose(index: &str, choices: &[String]) -> String {
    match choices.split_last() {
        None => "''".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => {
            let arms: Vec<String> = rest
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{index} = {i}, {c}"))
                .collect();
            format!("multiIf({}, {last})", arms.join(", "))
        }
    }
}

fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn sql_array<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> String) -> String {
    format!(
        "[{}]",
        items.into_iter().map(f).collect::<Vec<_>>().join(", ")
    )
}

/// Calls `offset .. offset + count` of `total`, spread evenly from `start`
/// over `span_secs` seconds (epoch seconds; `end` is the ingestion time).
pub fn generate_calls_sql(
    offset: u64,
    count: u64,
    total: u64,
    start: i64,
    span_secs: i64,
    shapes: &[ErrorShape],
) -> String {
    let providers = sql_array(PROVIDERS, sql_string);
    let models = sql_array(MODELS, |(m, _, _)| sql_string(m));
    let input_prices = sql_array(MODELS, |(_, i, _)| i.to_string());
    let output_prices = sql_array(MODELS, |(_, _, o)| o.to_string());
    let features = sql_array(FEATURES, sql_string);
    let types = sql_array(ERRORS, |(t, _, _)| sql_string(t));
    let statuses = sql_array(ERRORS, |(_, s, _)| s.to_string());
    let messages: Vec<String> = ERRORS.iter().map(|(_, _, m)| with_var(m, "{v}")).collect();
    let messages = choose("e", &messages);
    let signatures = sql_array(shapes, |s| s.signature.to_string());
    let templates = sql_array(shapes, |s| sql_string(&s.template));
    let variables: Vec<String> = shapes.iter().map(|s| s.variables_sql.clone()).collect();
    let variables = choose(&format!("intDiv(m, 2) * {} + e", ERRORS.len()), &variables);
    let errors = ERRORS.len();
    let end = start + span_secs;
    // h: one 64-bit hash per call; its digits drive the independent
    // choices (model, failure, error, tokens). Ids are nested: team t of
    // org t % 10, user u and key k of team u % 50 and k % 50.
    format!(
        "INSERT INTO calls (event_id, schema_version, kind, occurred_at, occurred_at_ms, \
           org_id, team_id, user_id, api_key_id, call_id, trace_id, provider, model, requested_model, \
           attempt, operation, stream, duration_ms, has_ttft, ttft_ms, input_tokens, output_tokens, \
           cached_input_tokens, outcome, http_status, error_type, error_message, tag_keys, tag_values, \
           ingested_at, kafka_partition, kafka_offset, cost, priced, price_version, \
           error_signature, error_template, error_variables) \
         SELECT event_id, toUInt16(1), if(failed, 'ai.call.failed', 'ai.call.completed'), \
           toDateTime(at_ms / 1000, 'UTC'), at_ms, \
           concat('org-', toString(t % {ORGS})), concat('team-', toString(t)), \
           concat('user-', toString((intHash32(n) % 40) * {TEAMS} + t)), \
           concat('key-', toString((intDiv(intHash32(n), 40) % 4) * {TEAMS} + t)), \
           event_id, lower(hex(MD5(event_id))), \
           arrayElement({providers}, intDiv(m, 2) + 1), arrayElement({models}, m + 1), \
           arrayElement({models}, m + 1), toUInt16(1), 'chat', toUInt8(n % 2), \
           toUInt32(150 + intHash32(n + 1) % 2500 + if(intHash32(n + 2) % 100 = 0, 20000, 0)), \
           toUInt8(n % 2 = 1 AND NOT failed), \
           toUInt32(if(n % 2 = 1 AND NOT failed, 40 + intHash32(n + 3) % 600, 0)), \
           input, output, cached, if(failed, 'error', 'success'), \
           toUInt16(if(failed, arrayElement({statuses}, e + 1), 200)), \
           if(failed, arrayElement({types}, e + 1), ''), \
           if(failed, {messages}, ''), \
           ['feature'], [arrayElement({features}, intDiv(h, 7) % 4 + 1)], \
           toDateTime({end}, 'UTC'), toInt32(t % 6), toInt64(n), \
           toDecimal128((input - cached) * arrayElement({input_prices}, m + 1) \
             + cached * intDiv(arrayElement({input_prices}, m + 1), 10) \
             + output * arrayElement({output_prices}, m + 1), 12) / toUInt64(1000000000000), \
           toUInt8(1), toUInt64(1), \
           toUInt64(if(failed, arrayElement({signatures}, intDiv(m, 2) * {errors} + e + 1), 0)), \
           if(failed, arrayElement({templates}, intDiv(m, 2) * {errors} + e + 1), ''), \
           if(failed, {variables}, emptyArrayString()) \
         FROM (SELECT n, toString(n) AS event_id, n % {TEAMS} AS t, intHash64(n) AS h, h % 8 AS m, \
             intDiv(h, 8) % 100 < 4 AS failed, intDiv(h, 800) % {errors} AS e, \
             toString(100 + intDiv(h, 4800) % 9000) AS var, \
             toUInt64(({start} * 1000) + intDiv(n * {span_ms}, {total})) AS at_ms, \
             toUInt64(if(failed, 0, 50 + intDiv(h, 48000) % 4000)) AS input, \
             toUInt64(if(failed, 0, 10 + intDiv(h, 192000000) % 1200)) AS output, \
             toUInt64(if(n % 3 = 0, intDiv(input, 4), 0)) AS cached \
           FROM (SELECT number + {offset} AS n FROM system.numbers LIMIT {count}))",
        span_ms = span_secs * 1000,
    )
}

/// One audit entry per call of `offset .. offset + count` (the calls
/// generated by [`generate_calls_sql`]): chain = the org's chain of the
/// team (`org-N/team-M`, as `tollgate_contract::audit::chain_id` names it;
/// the generated org ids need no encoding), seq = the call's place in its
/// team (each team belongs to one org). The hashes are a stand-in
/// (SHA-256 of chain and seq), not a chain a verifier accepts: this bench
/// times the search, not the verification (`bench`'s audit figures do).
pub fn generate_audit_sql(offset: u64, count: u64) -> String {
    let end = offset + count;
    format!(
        "INSERT INTO audit_chain (chain_id, seq, occurred_at, occurred_at_ms, event_id, kind, \
           org_id, team_id, user_id, api_key_id, provider, model, outcome, decision, decision_reason, \
           event_json, prev_hash, entry_hash, kafka_partition, kafka_offset, v, salt, personal_commitment) \
         SELECT concat(org_id, '/', team_id), intDiv(toUInt64(kafka_offset), {TEAMS}) + 1 AS seq, occurred_at, occurred_at_ms, \
           event_id, kind, org_id, team_id, user_id, api_key_id, provider, model, outcome, '', '', \
           concat('{{\"event_id\":\"', event_id, '\",\"kind\":\"', kind, '\",\"org_id\":\"', org_id, \
             '\",\"team_id\":\"', team_id, '\",\"user_id\":\"', user_id, '\",\"api_key_id\":\"', api_key_id, \
             '\",\"provider\":\"', provider, '\",\"model\":\"', model, '\",\"outcome\":\"', outcome, \
             '\",\"input_tokens\":', toString(input_tokens), ',\"output_tokens\":', toString(output_tokens), \
             ',\"duration_ms\":', toString(duration_ms), '}}'), \
           if(seq = 1, '{genesis}', lower(hex(SHA256(concat(team_id, '/', toString(seq - 1)))))), \
           lower(hex(SHA256(concat(team_id, '/', toString(seq))))), kafka_partition, kafka_offset, \
           toUInt8(1), '', '' \
         FROM calls WHERE kafka_offset >= {offset} AND kafka_offset < {end}",
        genesis = "0".repeat(64),
    )
}

/// The generators' statements for the SQL catalog (`tollgate sql-catalog`).
pub fn catalog() -> anyhow::Result<Vec<(String, String)>> {
    let shapes = error_shapes()?;
    Ok(vec![
        (
            "bench.reports.generate_calls".into(),
            generate_calls_sql(0, 1_000, 1_000, 1_793_440_800, 30 * 86_400, &shapes),
        ),
        (
            "bench.reports.generate_audit".into(),
            generate_audit_sql(0, 1_000),
        ),
        ("bench.reports.merges_running".into(), MERGES_RUNNING.into()),
    ])
}

/// The merges ClickHouse is running in the bench database.
const MERGES_RUNNING: &str = "SELECT count() FROM system.merges WHERE database = currentDatabase()";

/// How long the bench waits for ClickHouse to merge what it generated
/// before it times the endpoints anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);

/// Polls, half a second apart, without a merge that count as settled.
const SETTLE_QUIET_POLLS: u32 = 10;

/// Wait until ClickHouse has run no merge in the bench database for
/// [`SETTLE_QUIET_POLLS`] polls in a row (it schedules merges a few
/// seconds after the parts arrive), at most [`SETTLE_LIMIT`]: endpoints timed while the
/// generated parts are still being merged share the two cores with those
/// merges and moved by a third between runs of 10M calls
/// (docs/performance.md, "The latency report's statements side by
/// side"). Returns how long it waited, and whether the merges ended.
async fn settle(ch: &clickhouse::Client) -> anyhow::Result<(Duration, bool)> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_prefix("merging");
    let style =
        indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    spinner.set_style(style);
    let started = Instant::now();
    let mut quiet_polls = 0;
    let settled = loop {
        let running: u64 = ch
            .query(MERGES_RUNNING)
            .fetch_one()
            .await
            .context("reading system.merges")?;
        quiet_polls = if running == 0 { quiet_polls + 1 } else { 0 };
        if quiet_polls >= SETTLE_QUIET_POLLS {
            break true;
        }
        if started.elapsed() >= SETTLE_LIMIT {
            break false;
        }
        spinner.set_message(format!(
            "waiting for ClickHouse to merge the generated parts: {running} merge(s) running"
        ));
        spinner.tick();
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    spinner.finish_and_clear();
    Ok((started.elapsed(), settled))
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<Figures> {
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    anyhow::ensure!(args.days > 0, "--days must be at least 1");
    anyhow::ensure!(args.requests > 0, "--requests must be at least 1");
    let databases = super::databases::BenchDatabases::create(config, "reports").await?;
    let result = generate_and_time(&args, &databases.config).await;
    if !args.keep {
        databases.drop_both().await?;
    }
    result
}

/// The generated window: `[start, start + span)`, epoch seconds.
struct Window {
    start: i64,
    span_secs: i64,
}

impl Window {
    fn end(&self) -> i64 {
        self.start + self.span_secs
    }

    fn at(secs: i64) -> anyhow::Result<DateTime<Utc>> {
        DateTime::from_timestamp(secs, 0).context("a time out of range")
    }
}

async fn generate_and_time(args: &Args, bench: &Config) -> anyhow::Result<Figures> {
    let ch = tollgate_control::clickhouse::client(&bench.clickhouse);
    // Ends at the last whole minute, so that "the last N days" of a page
    // holds the newest calls.
    let now = Utc::now().timestamp() / 60 * 60;
    let window = Window {
        start: now - i64::from(args.days) * 86_400,
        span_secs: i64::from(args.days) * 86_400,
    };
    let shapes = error_shapes()?;
    let bar = progress_bar(args.calls, "calls");
    let generating = Instant::now();
    let mut offset = 0;
    while offset < args.calls {
        let count = args.chunk.max(1).min(args.calls - offset);
        ch.query(&generate_calls_sql(
            offset,
            count,
            args.calls,
            window.start,
            window.span_secs,
            &shapes,
        ))
        .execute()
        .await
        .context("generating calls")?;
        ch.query(&generate_audit_sql(offset, count))
            .execute()
            .await
            .context("generating audit entries")?;
        offset += count;
        bar.set_position(offset);
    }
    bar.finish();
    let generated = generating.elapsed();
    let (merging, merged) = settle(&ch).await?;

    let pool = tollgate_control::postgres::connect(&bench.postgres).await?;
    let budget_ids = store_budgets(&BudgetStore::new(pool.clone())).await?;

    let mut api = ApiChild::start(bench).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = api.base.clone();
    let key = admin_key(bench)?;
    let get = |path: String| {
        let request = client.get(format!("{base}{path}")).bearer_auth(&key);
        async move {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?.to_vec();
            anyhow::Ok((status, body))
        }
    };

    let checks = check_consistency(&ch, &window, args.calls, &get).await?;
    let endpoints = endpoints(&window, &budget_ids)?;
    let mut rows = Vec::new();
    for endpoint in &endpoints {
        let mut times = Vec::new();
        let mut failure = None;
        let mut bytes = 0;
        for i in 0..args.warmups + args.requests {
            let started = Instant::now();
            let (status, body) = get(endpoint.path.clone()).await?;
            let took = started.elapsed();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                failure = Some(format!(
                    "{status}: {}",
                    text.chars().take(200).collect::<String>()
                ));
                break;
            }
            bytes = body.len();
            if i >= args.warmups {
                times.push(took);
            }
        }
        times.sort();
        rows.push((endpoint, times, bytes, failure));
    }
    api.stop();

    println!();
    println!("tollgate bench reports");
    println!(
        "  calls        {} over {} days, with as many audit entries (generated in {:.1} s)",
        args.calls,
        args.days,
        generated.as_secs_f64()
    );
    if merged {
        println!(
            "  merged       ClickHouse merged the generated parts in {:.1} s; every endpoint was timed after",
            merging.as_secs_f64()
        );
    } else {
        println!(
            "  merged       ClickHouse was still merging after {:.0} s; the endpoints were timed while it merged",
            merging.as_secs_f64()
        );
    }
    println!("  budgets      {}", budget_ids.len());
    for check in &checks {
        println!("  check        {check}");
    }
    println!(
        "  requests     {} timed per endpoint after {} warm-ups, one at a time; goal p95 < {} ms",
        args.requests,
        args.warmups,
        GOAL.as_millis()
    );
    println!();
    println!(
        "  {:<46} {:>9} {:>9} {:>9} {:>10}",
        "endpoint", "p50 ms", "p95 ms", "max ms", "bytes"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut over = Vec::new();
    for (endpoint, times, bytes, failure) in &rows {
        if let Some(failure) = failure {
            println!("  {:<46} FAILED {failure}", endpoint.name);
            over.push(endpoint.name);
            continue;
        }
        let p95 = percentile(times, 95);
        let flag = if p95 > GOAL { "OVER GOAL" } else { "" };
        if p95 > GOAL {
            over.push(endpoint.name);
        }
        println!(
            "  {:<46} {:>9.1} {:>9.1} {:>9.1} {:>10}  {flag}",
            endpoint.name,
            ms(percentile(times, 50)),
            ms(p95),
            ms(times.last().copied().unwrap_or_default()),
            bytes
        );
    }
    println!();
    println!(
        "  {} of {} endpoints meet p95 < {} ms",
        rows.len() - over.len(),
        rows.len(),
        GOAL.as_millis()
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, _, _, f)| f.is_some())
        .map(|(e, _, _, _)| e.name)
        .collect();
    anyhow::ensure!(failed.is_empty(), "endpoints failed: {}", failed.join(", "));
    let mut p95s: Vec<Duration> = rows
        .iter()
        .map(|(_, times, _, _)| percentile(times, 95))
        .collect();
    p95s.sort_unstable();
    let mut figures = Figures::default();
    if let (Some(slowest), Some(median)) = (p95s.last(), p95s.get(p95s.len() / 2)) {
        figures.set(&measure::REPORTS_SLOWEST_P95, ms(*slowest));
        figures.set(&measure::REPORTS_MEDIAN_P95, ms(*median));
    }
    Ok(figures)
}

/// The `p`-th percentile of sorted `times` (nearest rank).
fn percentile(times: &[Duration], p: usize) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let rank = (times.len() * p).div_ceil(100).max(1);
    times[rank.min(times.len()) - 1]
}

/// Monthly budgets of every org and team, daily ones of 50 users; their
/// ids.
async fn store_budgets(store: &BudgetStore) -> anyhow::Result<Vec<i64>> {
    let mut specs = Vec::new();
    for org in 0..ORGS {
        specs.push((
            SubjectKind::Org,
            format!("org-{org}"),
            org,
            Period::Monthly,
            20_000,
        ));
    }
    for team in 0..TEAMS {
        specs.push((
            SubjectKind::Team,
            format!("team-{team}"),
            team % ORGS,
            Period::Monthly,
            3_000,
        ));
    }
    for user in 0..50 {
        specs.push((
            SubjectKind::User,
            format!("user-{user}"),
            user % ORGS,
            Period::Daily,
            5,
        ));
    }
    let mut ids = Vec::new();
    for (subject_kind, subject_id, org, period, limit) in specs {
        let spec = BudgetSpec {
            subject_kind,
            subject_id,
            period,
            limit_usd: Decimal::from(limit),
            hard: false,
            thresholds: vec![50, 80, 100],
            org_id: None,
        }
        .in_org(&format!("org-{org}"))?;
        ids.push(store.set(&spec, "bench").await?.budget.id);
    }
    Ok(ids)
}

/// One report, page or export as a user opens it.
struct Endpoint {
    name: &'static str,
    path: String,
}

fn endpoints(window: &Window, budget_ids: &[i64]) -> anyhow::Result<Vec<Endpoint>> {
    let end = Window::at(window.end())?;
    let start = Window::at(window.start)?;
    let last_day = Window::at(window.end() - 86_400)?;
    let from = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let week_from =
        Window::at(window.end() - 7 * 86_400)?.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let day_from = last_day.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cost_from = start.date_naive();
    let cost_to = end.date_naive().succ_opt().context("a date out of range")?;
    let month = format!("{:04}-{:02}", last_day.year(), last_day.month());
    let budget = budget_ids.get(ORGS as usize).copied().unwrap_or_default();
    let cost = |group: &str| format!("from={cost_from}&to={cost_to}&group_by={group}");
    let list = [
        (
            "latency report, 24 h",
            format!("/api/v1/reports/latency?from={day_from}&to={to}"),
        ),
        (
            "latency report, 30 d",
            format!("/api/v1/reports/latency?from={from}&to={to}"),
        ),
        (
            "latency report, 30 d by team",
            format!("/api/v1/reports/latency?from={from}&to={to}&group_by=team"),
        ),
        ("latency page, 24 h", "/sre/latency?range=24h".to_string()),
        ("latency page, 7 d", "/sre/latency?range=7d".to_string()),
        (
            "slowest calls CSV, 24 h",
            "/sre/latency/slowest.csv?range=24h".to_string(),
        ),
        (
            "cost report by team",
            format!("/api/v1/reports/cost?{}", cost("team")),
        ),
        (
            "cost report by model",
            format!("/api/v1/reports/cost?{}", cost("provider,model")),
        ),
        (
            "cost report by user",
            format!("/api/v1/reports/cost?{}", cost("user")),
        ),
        (
            "cost report by tag",
            format!("/api/v1/reports/cost?{}", cost("tag:feature")),
        ),
        ("cost overview", "/api/v1/reports/cost/overview".to_string()),
        ("cost page", format!("/finance/cost?{}", cost("team"))),
        ("cost CSV", format!("/finance/cost.csv?{}", cost("team"))),
        (
            "top spenders CSV",
            format!("/finance/cost/top.csv?{}", cost("team")),
        ),
        (
            "statement",
            format!("/api/v1/finance/statement?team=team-1&month={month}"),
        ),
        (
            "statement page",
            format!("/finance/statement?team=team-1&month={month}"),
        ),
        (
            "statement CSV",
            format!("/finance/statement.csv?team=team-1&month={month}"),
        ),
        ("budgets", "/api/v1/finance/budgets".to_string()),
        ("budgets page", "/finance/budgets".to_string()),
        ("budgets CSV", "/finance/budgets.csv".to_string()),
        (
            "budget burndown",
            format!("/api/v1/finance/budgets/{budget}/burndown"),
        ),
        ("budget page", format!("/finance/budgets/{budget}")),
        (
            "audit search, org",
            "/api/v1/audit/entries?org=org-1".to_string(),
        ),
        (
            "audit search, org + user, 7 d",
            format!("/api/v1/audit/entries?org=org-1&user=user-1&from={week_from}&to={to}"),
        ),
        (
            "audit search page",
            "/compliance/search?org=org-1".to_string(),
        ),
        (
            "errors report, 24 h",
            format!("/api/v1/reports/errors?from={day_from}&to={to}"),
        ),
        (
            "errors report, 7 d",
            format!("/api/v1/reports/errors?from={week_from}&to={to}"),
        ),
        ("errors page, 24 h", "/sre/errors?range=24h".to_string()),
        ("errors page, 7 d", "/sre/errors?range=7d".to_string()),
        ("overview", "/api/v1/overview?org=org-1".to_string()),
        ("overview page", "/overview?org=org-1".to_string()),
    ];
    Ok(list
        .into_iter()
        .map(|(name, path)| Endpoint { name, path })
        .collect())
}

/// The data the reports read agrees with itself: N calls, the cost rollup
/// summing to the calls' cost, the cost and latency reports (as served)
/// agreeing with the calls. Returns one line per check; fails on a
/// mismatch.
async fn check_consistency<F, Fut>(
    ch: &clickhouse::Client,
    window: &Window,
    calls: u64,
    get: &F,
) -> anyhow::Result<Vec<String>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(reqwest::StatusCode, Vec<u8>)>>,
{
    let stored: u64 = ch
        .query("SELECT count() FROM calls")
        .fetch_one()
        .await
        .context("counting calls")?;
    anyhow::ensure!(stored == calls, "calls holds {stored} rows, not {calls}");
    let entries: u64 = ch
        .query("SELECT count() FROM audit_chain")
        .fetch_one()
        .await
        .context("counting audit entries")?;
    anyhow::ensure!(
        entries == calls,
        "audit_chain holds {entries} entries, not {calls}"
    );
    let calls_cost: String = ch
        .query("SELECT toString(sum(cost)) FROM calls")
        .fetch_one()
        .await
        .context("summing the calls' cost")?;
    let rollup_cost: String = ch
        .query("SELECT toString(sum(cost)) FROM cost_daily")
        .fetch_one()
        .await
        .context("summing cost_daily")?;
    let calls_cost: Decimal = calls_cost.parse()?;
    let rollup_cost: Decimal = rollup_cost.parse()?;
    anyhow::ensure!(
        calls_cost == rollup_cost,
        "cost_daily sums to {rollup_cost}, calls to {calls_cost}"
    );
    // Every narrower rollup sums to the same.
    for table in [
        tollgate_control::cost_rollup::COST_DAILY_BY_TEAM,
        tollgate_control::cost_rollup::COST_DAILY_BY_USER,
        tollgate_control::cost_rollup::COST_DAILY_BY_KEY,
    ] {
        let cost: String = ch
            .query(&format!("SELECT toString(sum(cost)) FROM {table}"))
            .fetch_one()
            .await
            .with_context(|| format!("summing {table}"))?;
        let cost: Decimal = cost.parse()?;
        anyhow::ensure!(
            cost == calls_cost,
            "{table} sums to {cost}, calls and cost_daily to {calls_cost}"
        );
    }

    let start = Window::at(window.start)?;
    let end = Window::at(window.end())?;
    let cost_to = end.date_naive().succ_opt().context("a date out of range")?;
    let (status, body) = get(format!(
        "/api/v1/reports/cost?from={}&to={cost_to}&group_by=",
        start.date_naive()
    ))
    .await?;
    anyhow::ensure!(status.is_success(), "cost report: {status}");
    let report: serde_json::Value = serde_json::from_slice(&body)?;
    let report_cost: Decimal = report["total"]["cost"]
        .as_str()
        .context("the cost report has no total.cost")?
        .parse()?;
    anyhow::ensure!(
        report_cost == calls_cost,
        "the cost report's total is {report_cost}, the calls' {calls_cost}"
    );

    // The latency report covers at most 31 days: the newest 31 of them.
    let from = Window::at(window.end() - window.span_secs.min(31 * 86_400))?;
    let in_range: u64 = ch
        .query("SELECT count() FROM calls WHERE occurred_at >= toDateTime(?, 'UTC')")
        .bind(from.timestamp())
        .fetch_one()
        .await
        .context("counting calls in the latency range")?;
    let (status, body) = get(format!(
        "/api/v1/reports/latency?from={}&to={}&group_by=",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ))
    .await?;
    anyhow::ensure!(status.is_success(), "latency report: {status}");
    let report: serde_json::Value = serde_json::from_slice(&body)?;
    let counted = report["groups"][0]["total"]["count"]
        .as_u64()
        .context("the latency report has no groups[0].total.count")?;
    anyhow::ensure!(
        counted == in_range,
        "the latency report counts {counted} calls, calls holds {in_range} in its range"
    );
    Ok(vec![
        format!("calls {stored} = audit entries {entries} = {calls} generated"),
        format!("cost report total {report_cost} = cost_daily {rollup_cost} = cost_daily_by_team, _by_user, _by_key = sum of calls.cost {calls_cost}"),
        format!("latency report count {counted} = calls in its range {in_range}"),
    ])
}

/// An admin key of every org, made with `tollgate keys create`.
fn admin_key(bench: &Config) -> anyhow::Result<String> {
    let out = tollgate(
        &overrides(bench),
        &[
            "keys",
            "create",
            "--name",
            "bench-reports",
            "--role",
            "admin",
        ],
    )
    .output()
    .context("cannot run tollgate keys create")?;
    anyhow::ensure!(
        out.status.success(),
        "tollgate keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .lines()
        .last()
        .map(|l| l.trim().to_string())
        .context("tollgate keys create printed no key")
}

/// `tollgate api` on a free port; killed when stopped or dropped.
struct ApiChild {
    child: Child,
    base: String,
}

impl ApiChild {
    async fn start(bench: &Config) -> anyhow::Result<Self> {
        let port = super::proxy::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let log: PathBuf =
            std::env::temp_dir().join(format!("tollgate-bench-reports-api-{port}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = tollgate(&overrides(bench), &["api", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .context("cannot start tollgate api")?;
        let api = Self {
            child,
            base: format!("http://{listen}"),
        };
        super::proxy::wait_up(
            &reqwest::Client::new(),
            &format!("{}/healthz", api.base),
            &log,
        )
        .await?;
        Ok(api)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ApiChild {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_number_independent_signature() {
        let shapes = error_shapes().unwrap();
        assert_eq!(shapes.len(), PROVIDERS.len() * ERRORS.len());
        assert!(shapes.iter().all(|s| s.signature != 0));
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let times: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&times, 50), Duration::from_millis(10));
        assert_eq!(percentile(&times, 95), Duration::from_millis(19));
        assert_eq!(percentile(&times[..1], 95), Duration::from_millis(1));
    }
}
