//! The finance pages in a real browser: calls priced by `tollgate process`,
//! `tollgate api` serving `/finance/cost`, `/finance/statement` and
//! `/finance/budgets/{id}`, Debian's headless Chromium running the page
//! script and Chart.js. Checks that the cost chart plotted a bar per priced
//! group, that every cost in the table is the CSV's string for that row,
//! that unpriced calls read "unpriced", and that a budget's burn-down chart
//! was drawn and its table holds the CSV's strings and the numbers this
//! test computes from the calls it produced; and that amounts read as
//! dollars and cents (exact on hover) and times in the browser's zone.
//! Saves screenshots under
//! `tests/artifacts/`.
//!
//! Chromium comes from `TOLLGATE_TEST_CHROMIUM`, else `/usr/bin/chromium`.

use crate::support;

/// A completed call of `team` on `model` now, a quarter of its input read
/// from the cache.
fn event(team: &str, model: &str, input: u64, output: u64) -> Event {
    let provider = if model.starts_with("claude") {
        "anthropic"
    } else {
        "openai"
    };
    let usage = support::events::usage(input, input / 4, 0, output, 0);
    support::events::call_event(team, provider, model, Utc::now(), usage, Outcome::Success)
}
use support::d;

use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rust_decimal::Decimal;
use support::chromium::{run_chromium, run_chromium_with_env, screenshot, text_of};
use support::{kafka_brokers, TestEnv};
use tollgate_contract::{Event, Outcome};

async fn dom_of(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = url.to_string();
    let path = profile.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || run_chromium(&url, &path, &["--dump-dom"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finance_pages_in_chromium_match_the_csv() {
    let mut env = TestEnv::new("finance_page").await;
    // Default catalog (seeded by migrate) prices gpt-4o and claude-haiku-4-5;
    // `unknown-model` has no price.
    let events = vec![
        event("team-a", "gpt-4o", 12_000, 800),
        event("team-a", "claude-haiku-4-5", 3_000, 300),
        event("team-b", "gpt-4o", 1_000, 100),
        event("team-b", "unknown-model", 1_000, 100),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    for e in &events {
        let payload = serde_json::to_vec(e).unwrap();
        producer
            .send(
                FutureRecord::to(&env.events_topic)
                    .key(&e.team_id)
                    .payload(&payload),
                crate::support::PATIENCE,
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    env.spawn("process", &["process"]);
    assert_eq!(
        env.wait_for_count("SELECT count() FROM {db}.calls", 4, Duration::from_secs(60))
            .await,
        4
    );
    env.wait_for_cost_rollup().await;
    env.start_api().await;

    let query = "group_by=model";
    let csv = text_at(format!("{}/finance/cost.csv?{query}", env.api_url())).await;
    let url = format!("{}/finance/cost?{query}", env.api_url());
    let dom = dom_of(&url).await;
    // The chart drew one bar per priced model.
    let tag = &dom[dom.find("<canvas id=\"cost-chart\"").expect("cost chart")..];
    let tag = &tag[..tag.find('>').unwrap()];
    assert!(tag.contains("data-points=\"2\""), "{tag}");
    // Every CSV row's cost is in the table (to the cent, every digit on
    // hover), unpriced shown as such.
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{csv}");
    let costs: Vec<String> = table_rows(&dom, "cost-table")
        .iter()
        .map(|row| exact_of(row.last().unwrap()))
        .collect();
    for line in &lines {
        let cost = line.rsplit(',').next().unwrap();
        assert!(
            costs.iter().any(|c| c == cost),
            "page lacks {cost}: {costs:?}; csv:\n{csv}"
        );
    }
    assert!(
        dom.contains(">unpriced</span></td>"),
        "unknown-model shows as unpriced"
    );
    screenshot(&url, "finance_cost.png").await;

    let month = Utc::now().format("%Y-%m").to_string();
    let url = format!(
        "{}/finance/statement?team=team-a&month={month}",
        env.api_url()
    );
    let dom = dom_of(&url).await;
    let csv = text_at(format!(
        "{}/finance/statement.csv?team=team-a&month={month}",
        env.api_url()
    ))
    .await;
    let total = csv
        .lines()
        .last()
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(element_exact(&dom, "statement-total"), total, "{dom}");
    assert!(
        dom.contains("0.0000025"),
        "unit price of gpt-4o input on the statement"
    );
    assert!(
        dom.contains("statement-forecast"),
        "the running month has a forecast"
    );
    screenshot(&url, "finance_statement.png").await;
}

/// The body of a GET of `url`.
async fn text_at(url: impl reqwest::IntoUrl) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The JSON body of a GET of `url`.
async fn json_at(url: impl reqwest::IntoUrl) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Run `tollgate args` to its end; it must succeed.
fn tollgate_ok(env: &TestEnv, args: &[&str]) {
    let out = env.tollgate(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Import the price of `tg-burn`: 0.001 USD per input token.
fn import_burn_price(env: &TestEnv) {
    let prices = env.dir.path().join("burn.json");
    std::fs::write(
        &prices,
        r#"{"tg-burn": {"litellm_provider": "testprov", "effective_from": "2025-01-01T00:00:00Z",
                        "input_cost_per_token": 0.001}}"#,
    )
    .unwrap();
    tollgate_ok(env, &["prices", "import", prices.to_str().unwrap()]);
}

/// A completed call of `team` on `tg-burn` (0.001 USD per input token) at
/// `at`.
fn burn_call(team: &str, at: DateTime<Utc>, input: u64) -> Event {
    let mut e = event(team, "tg-burn", input, 0);
    e.occurred_at = at;
    let call = e.call.as_mut().unwrap();
    call.provider = "testprov".into();
    call.usage.cached_input_tokens = 0;
    e
}

/// The rows of the table `id` in a dumped DOM, as cell texts.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}"));
    let table = &dom[start..];
    let table = &table[..table.find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let cell = &cell[cell.find('>').unwrap() + 1..];
                    cell[..cell.find("</td>").unwrap()].to_string()
                })
                .collect()
        })
        .collect()
}

/// The attribute `name` of the element whose tag starts with `prefix`.
fn attribute(dom: &str, prefix: &str, name: &str) -> String {
    let tag = &dom[dom.find(prefix).unwrap_or_else(|| panic!("no {prefix}"))..];
    let tag = &tag[..tag.find('>').unwrap()];
    let value = &tag[tag
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + name.len()
        + 2..];
    value[..value.find('"').unwrap()].to_string()
}

/// What the burn-down must show for a budget of `limit` over
/// `[start, start + buckets * step)` with `calls` (time, cost) at `as_of`,
/// computed here: per bucket (spend, cumulative, remaining) until the
/// current bucket, the ideal line, and the forecast from the current
/// bucket on.
#[allow(clippy::type_complexity)]
fn expected_burndown(
    limit: Decimal,
    start: DateTime<Utc>,
    step_secs: i64,
    buckets: i64,
    calls: &[(DateTime<Utc>, Decimal)],
    as_of: DateTime<Utc>,
) -> Vec<Vec<Option<Decimal>>> {
    let round = |x: Decimal| {
        x.round_dp_with_strategy(12, rust_decimal::RoundingStrategy::MidpointNearestEven)
    };
    let current = (as_of - start).num_seconds() / step_secs;
    let total: Decimal = calls.iter().map(|(_, c)| *c).sum();
    let elapsed = (as_of - start)
        .num_seconds()
        .clamp(3_600, buckets * step_secs);
    let mut cumulative = Decimal::ZERO;
    (0..buckets)
        .map(|i| {
            let from = start + chrono::Duration::seconds(i * step_secs);
            let to = from + chrono::Duration::seconds(step_secs);
            let spend: Decimal = calls
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(_, c)| *c)
                .sum();
            let begun = i <= current;
            cumulative += spend;
            let ideal = round(limit * Decimal::from(i + 1) / Decimal::from(buckets));
            let forecast = (i >= current).then(|| {
                round(total * Decimal::from((i + 1) * step_secs) / Decimal::from(elapsed))
            });
            vec![
                begun.then_some(spend),
                begun.then_some(cumulative),
                begun.then_some(limit - cumulative),
                Some(ideal),
                forecast,
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_burndown_in_chromium_matches_the_calls() {
    let mut env = TestEnv::new("finance_burndown").await;
    import_burn_price(&env);
    let ok = |args: &[&str]| tollgate_ok(&env, args);
    ok(&[
        "budgets", "set", "--kind", "team", "--id", "team-m", "--limit", "10",
    ]);
    ok(&[
        "budgets", "set", "--kind", "team", "--id", "team-d", "--limit", "2", "--period", "daily",
        "--soft",
    ]);

    // Calls spread over the running month (team-m) and day (team-d), none
    // in the future; team-z has no budget.
    let now = Utc::now();
    let today = now.date_naive();
    let day_start = today.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let month_start = today
        .with_day(1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let spread = |start: DateTime<Utc>| {
        let span = (now - start).num_seconds();
        [0, span / 2, span - 1].map(|s| (start + chrono::Duration::seconds(s)).min(now))
    };
    let monthly: Vec<(DateTime<Utc>, u64)> = spread(month_start)
        .into_iter()
        .zip([1000, 2000, 500])
        .collect();
    let daily: Vec<(DateTime<Utc>, u64)> =
        spread(day_start).into_iter().zip([100, 200, 300]).collect();
    let mut events: Vec<Event> = monthly
        .iter()
        .map(|(t, n)| burn_call("team-m", *t, *n))
        .chain(daily.iter().map(|(t, n)| burn_call("team-d", *t, *n)))
        .collect();
    events.push(burn_call("team-z", now, 4000));
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
        .collect();
    support::kafka::produce_all(&env.events_topic, &messages).await;
    env.spawn("process", &["process"]);
    let n = events.len() as u64;
    let sql = "SELECT sum(calls) FROM {db}.cost_daily";
    assert_eq!(env.wait_for_count(sql, n, Duration::from_secs(60)).await, n);
    env.start_api().await;
    let api = env.api_url();

    let statuses: serde_json::Value = json_at(format!("{api}/api/v1/finance/budgets")).await;
    let id_of = |subject: &str| {
        statuses
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subject"] == subject)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (monthly_id, daily_id) = (id_of("budget/team/team-m"), id_of("budget/team/team-d"));
    // The budgets page links each budget to its burn-down.
    let list = text_at(format!("{api}/finance/budgets")).await;
    for id in [monthly_id, daily_id] {
        assert!(
            list.contains(&format!("href=\"/finance/budgets/{id}\"")),
            "{list}"
        );
    }
    // Unknown and malformed ids.
    let missing = reqwest::get(format!("{api}/api/v1/finance/budgets/999999/burndown"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = reqwest::get(format!("{api}/api/v1/finance/budgets/x1/burndown"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<serde_json::Value>().await.unwrap()["parameter"],
        "id"
    );
    assert_eq!(
        reqwest::get(format!("{api}/finance/budgets/999999"))
            .await
            .unwrap()
            .status(),
        404
    );

    let days_in_month = (month_start
        .date_naive()
        .checked_add_months(chrono::Months::new(1))
        .unwrap()
        - month_start.date_naive())
    .num_days();
    let cost = |calls: &[(DateTime<Utc>, u64)]| -> Vec<(DateTime<Utc>, Decimal)> {
        calls
            .iter()
            .map(|(t, n)| (*t, Decimal::from(*n) * d("0.001")))
            .collect()
    };
    for (id, limit, start, step, buckets, calls, name) in [
        (
            monthly_id,
            d("10"),
            month_start,
            86_400,
            days_in_month,
            cost(&monthly),
            "monthly",
        ),
        (
            daily_id,
            d("2"),
            day_start,
            3_600,
            24,
            cost(&daily),
            "daily",
        ),
    ] {
        let url = format!("{api}/finance/budgets/{id}");
        let csv_url = format!("{api}/api/v1/finance/budgets/{id}/burndown?format=csv");
        // The forecast moves once a minute: read the page and the CSV
        // again if a minute turned between the two.
        let mut attempt = 0;
        let (dom, csv) = loop {
            attempt += 1;
            let dom = dom_of(&url).await;
            let csv = text_at(&csv_url).await;
            let rows = exact_rows(&dom, "burndown-table");
            let csv_rows: Vec<Vec<String>> = csv
                .lines()
                .skip(1)
                .map(|l| l.split(',').map(str::to_string).collect())
                .collect();
            if rows == csv_rows || attempt == 3 {
                assert_eq!(rows, csv_rows, "{name}: the page's table is the CSV");
                break (dom, csv);
            }
        };
        // The chart: Chart.js holds a chart for the canvas, one point per
        // bucket, and the canvas is not blank.
        let canvas = "<canvas id=\"burndown-chart\"";
        assert_eq!(attribute(&dom, canvas, "data-chart"), "ready", "{name}");
        assert_eq!(
            attribute(&dom, canvas, "data-points"),
            buckets.to_string(),
            "{name}"
        );
        let painted: u64 = attribute(&dom, canvas, "data-painted-pixels")
            .parse()
            .unwrap();
        assert!(painted > 2_000, "{name}: {painted} painted pixels");
        // The numbers: what this test computes from its calls.
        let as_of: DateTime<Utc> = element_exact(&dom, "as-of").parse().unwrap();
        assert!(as_of <= Utc::now() && Utc::now() - as_of < chrono::Duration::minutes(3));
        let want = expected_burndown(limit, start, step, buckets, &calls, as_of);
        let rows = exact_rows(&dom, "burndown-table");
        assert_eq!(rows.len(), want.len(), "{name}: one row per bucket");
        for (i, (row, want)) in rows.iter().zip(&want).enumerate() {
            let start_i = start + chrono::Duration::seconds(i as i64 * step);
            assert_eq!(
                row[0],
                start_i.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "{name} row {i}"
            );
            let got: Vec<Option<Decimal>> = row[2..]
                .iter()
                .map(|c| (!c.is_empty()).then(|| d(c)))
                .collect();
            assert_eq!(&got, want, "{name} row {i}: {row:?}");
        }
        // The last cumulative is the budget's spend; the last forecast is
        // the budgets report's forecast.
        let json: serde_json::Value =
            json_at(format!("{api}/api/v1/finance/budgets/{id}/burndown")).await;
        let spent: Decimal = calls.iter().map(|(_, c)| *c).sum();
        assert_eq!(d(json["spend_usd"].as_str().unwrap()), spent, "{name}");
        assert_eq!(json["step"], if step == 3_600 { "hour" } else { "day" });
        let points = json["points"].as_array().unwrap();
        let last = points.last().unwrap();
        assert_eq!(last["forecast_usd"], json["forecast_usd"], "{name}");
        let current = points
            .iter()
            .rfind(|p| !p["cumulative_usd"].is_null())
            .unwrap();
        assert_eq!(d(current["cumulative_usd"].as_str().unwrap()), spent);
        assert!(csv.lines().count() == points.len() + 1, "{name}");
        screenshot(&url, &format!("finance_burndown_{name}.png")).await;
    }
}

/// One call for the overview test: `input` tokens of which `cached` were
/// read from the provider's cache, at `at`.
#[allow(clippy::too_many_arguments)]
fn spender_call(
    team: &str,
    user: &str,
    key: &str,
    model: &str,
    at: DateTime<Utc>,
    input: u64,
    cached: u64,
    output: u64,
) -> Event {
    let mut e = event(team, model, input, output);
    e.occurred_at = at;
    e.user_id = user.into();
    e.api_key_id = key.into();
    let call = e.call.as_mut().unwrap();
    call.provider = "testprov".into();
    call.usage.cached_input_tokens = cached;
    e
}

/// The test's own price table: (input, cache read, output) per token of
/// `tg-ov` before the running month (v1) and from its first day (v2), and
/// of `tg-nc` (no cache-read price: cached tokens pay the input price);
/// `tg-none` has no price.
fn ov_price(model: &str, this_month: bool) -> Option<(Decimal, Option<Decimal>, Decimal)> {
    match (model, this_month) {
        ("tg-ov", false) => Some((d("0.000002"), Some(d("0.0000005")), d("0.000008"))),
        ("tg-ov", true) => Some((d("0.000003"), Some(d("0.000001")), d("0.00001"))),
        ("tg-nc", _) => Some((d("0.000001"), None, d("0.000002"))),
        _ => None,
    }
}

/// What the processor must charge for `e` (`None`: unpriced) and what its
/// cached tokens saved, by the formula in docs/cost.md.
fn ov_cost(e: &Event, month_start: DateTime<Utc>) -> Option<(Decimal, Decimal)> {
    let call = e.call.as_ref().unwrap();
    let (input, read, output) = ov_price(&call.model, e.occurred_at >= month_start)?;
    let u = &call.usage;
    let cached = Decimal::from(u.cached_input_tokens);
    let plain = Decimal::from(u.input_tokens - u.cached_input_tokens);
    let cost =
        plain * input + cached * read.unwrap_or(input) + Decimal::from(u.output_tokens) * output;
    let saved = read.map(|r| cached * (input - r)).unwrap_or_default();
    Some((cost, saved))
}

/// The exact value a cell shows: a `<time>`'s `datetime`, the tooltip of
/// a formatted number (`title`, which holds every digit; token counts
/// without their separators and unit), else the cell's text. What the CSV
/// holds for the same cell.
fn exact_of(cell: &str) -> String {
    let attr = |name: &str| {
        let at = cell.find(&format!("{name}=\""))? + name.len() + 2;
        let value = &cell[at..];
        Some(value[..value.find('"')?].to_string())
    };
    if cell.contains("<time") {
        return attr("datetime").unwrap();
    }
    if cell.contains("<span class=\"money unpriced\"") {
        return "unpriced".into();
    }
    if cell.contains("<span class=\"count\"") {
        return attr("title")
            .unwrap()
            .trim_end_matches(" tokens")
            .replace(',', "");
    }
    if cell.contains("<span") {
        return attr("title").unwrap();
    }
    text_of(cell).replace(',', "")
}

/// [`exact_of`] of every cell of table `id`'s body.
fn exact_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    table_rows(dom, id)
        .iter()
        .map(|row| row.iter().map(|c| exact_of(c)).collect())
        .collect()
}

/// [`exact_of`] the content of the element with id `id` in a dumped DOM.
fn element_exact(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &dom[at..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    // Up to the element's own end: its content is at most one formatted
    // value.
    let end = ["</p>", "</dd>", "</strong>"]
        .iter()
        .filter_map(|t| rest.find(t))
        .min()
        .unwrap();
    exact_of(&rest[..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_overview_in_chromium_matches_hand_computed_figures() {
    let mut env = TestEnv::new("finance_overview").await;
    let now = Utc::now();
    let today = now.date_naive();
    let month_start = today
        .with_day(1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let prev_month = month_start.date_naive() - chrono::Months::new(1);
    // v1 of tg-ov and tg-nc from 2025; v2 of tg-ov from the first of the
    // running month.
    let prices = env.dir.path().join("overview.json");
    std::fs::write(
        &prices,
        r#"{"tg-ov": {"litellm_provider": "testprov", "effective_from": "2025-01-01T00:00:00Z",
                      "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
                      "cache_read_input_token_cost": 5e-07},
            "tg-nc": {"litellm_provider": "testprov", "effective_from": "2025-01-01T00:00:00Z",
                      "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
    )
    .unwrap();
    let v2 = env.dir.path().join("overview-v2.json");
    std::fs::write(
        &v2,
        format!(
            r#"{{"tg-ov": {{"litellm_provider": "testprov", "effective_from": "{}",
                          "input_cost_per_token": 3e-06, "output_cost_per_token": 1e-05,
                          "cache_read_input_token_cost": 1e-06}}}}"#,
            month_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .unwrap();
    for file in [&prices, &v2] {
        tollgate_ok(&env, &["prices", "import", file.to_str().unwrap()]);
    }

    // Ten days before the running month (v1) and half-way through it so
    // far (v2); never in the future.
    let before = month_start - chrono::Duration::days(10);
    let during = (month_start + (now - month_start) / 2).min(now);
    let events = vec![
        // 6000×0.000002 + 4000×0.0000005 + 1000×0.000008 = 0.022; saves 4000×0.0000015
        spender_call("team-a", "u1", "k1", "tg-ov", before, 10_000, 4_000, 1_000),
        // 10000×0.000003 + 10000×0.000001 + 2000×0.00001 = 0.06; saves 10000×0.000002
        spender_call("team-a", "u1", "k2", "tg-ov", during, 20_000, 10_000, 2_000),
        // 30000×0.000003 + 1000×0.00001 = 0.1
        spender_call("team-a", "u2", "k2", "tg-ov", during, 30_000, 0, 1_000),
        // 50000×0.000001 + 5000×0.000002 = 0.06; no cache-read price: saves 0
        spender_call("team-a", "u3", "k3", "tg-nc", during, 50_000, 20_000, 5_000),
        // 5000×0.0000005 = 0.0025; saves 5000×0.0000015
        spender_call("team-b", "u4", "k3", "tg-ov", before, 5_000, 5_000, 0),
        // 0.004 each: a tie, ordered by id
        spender_call("team-b", "u5", "k4", "tg-ov", during, 1_000, 0, 100),
        spender_call("team-b", "u6", "k4", "tg-ov", during, 1_000, 0, 100),
        spender_call("team-a", "u8", "k1", "tg-ov", during, 2_000, 1_000, 0),
        // unpriced
        spender_call("team-b", "u7", "k5", "tg-none", during, 1_000, 0, 0),
    ];
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
        .collect();
    support::kafka::produce_all(&env.events_topic, &messages).await;
    env.spawn("process", &["process"]);
    let n = events.len() as u64;
    let sql = "SELECT sum(calls) FROM {db}.cost_daily";
    assert_eq!(env.wait_for_count(sql, n, Duration::from_secs(60)).await, n);
    env.start_api().await;
    let api = env.api_url();

    // The hand computation, per spender, from the test's own prices.
    let costs: Vec<Option<(Decimal, Decimal)>> =
        events.iter().map(|e| ov_cost(e, month_start)).collect();
    assert_eq!(costs[0], Some((d("0.022"), d("0.006"))));
    assert_eq!(costs[3], Some((d("0.06"), d("0"))));
    let spend_of = |pick: &dyn Fn(&Event) -> bool| -> Decimal {
        events
            .iter()
            .zip(&costs)
            .filter(|(e, _)| pick(e))
            .filter_map(|(_, c)| c.map(|c| c.0))
            .sum()
    };

    let tomorrow = today.succ_opt().unwrap();
    // (query, top users, top keys): ids and costs computed above.
    type Spenders = Vec<(&'static str, &'static str)>;
    let cases: Vec<(String, Spenders, Spenders)> = vec![
        // From the first of the previous month through today, all teams.
        (
            format!("from={prev_month}&to={tomorrow}"),
            vec![
                ("u2", "0.1"),
                ("u1", "0.082"),
                ("u3", "0.06"),
                ("u5", "0.004"),
                ("u6", "0.004"),
            ],
            vec![
                ("k2", "0.16"),
                ("k3", "0.0625"),
                ("k1", "0.026"),
                ("k4", "0.008"),
                ("k5", "unpriced"),
            ],
        ),
        // One team: its four users, its three keys.
        (
            format!("from={prev_month}&to={tomorrow}&team=team-a&group_by=model"),
            vec![
                ("u2", "0.1"),
                ("u1", "0.082"),
                ("u3", "0.06"),
                ("u8", "0.004"),
            ],
            vec![("k2", "0.16"), ("k3", "0.06"), ("k1", "0.026")],
        ),
        // The previous month only: no forecast.
        (
            format!("from={prev_month}&to={}", month_start.date_naive()),
            vec![("u1", "0.022"), ("u4", "0.0025")],
            vec![("k1", "0.022"), ("k3", "0.0025")],
        ),
    ];
    for (query, users, keys) in cases {
        let asked_at = Utc::now();
        let json: serde_json::Value =
            json_at(format!("{api}/api/v1/reports/cost/overview?{query}")).await;
        let answered_at = Utc::now();
        // The spenders: order, ids and exact costs.
        for (field, want) in [("top_users", &users), ("top_keys", &keys)] {
            let dim = if field == "top_users" { "user" } else { "key" };
            let got: Vec<(String, String)> = json[field]
                .as_array()
                .unwrap_or_else(|| panic!("{query}: no {field}: {json}"))
                .iter()
                .map(|g| {
                    let cost = match g["cost"].as_str() {
                        Some(c) => d(c).normalize().to_string(),
                        None => "unpriced".into(),
                    };
                    (g["key"][dim].as_str().unwrap().to_string(), cost)
                })
                .collect();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(id, c)| (id.to_string(), c.to_string()))
                .collect();
            assert_eq!(got, want, "{query}: {field}");
        }
        // Savings, forecast and total from the test's own arithmetic over
        // the calls the period and filters cover.
        let team = query
            .split('&')
            .find_map(|p| p.strip_prefix("team="))
            .map(str::to_string);
        let to_day = if query.contains(&format!("to={tomorrow}")) {
            tomorrow
        } else {
            month_start.date_naive()
        };
        let covered = |e: &Event| {
            e.occurred_at.date_naive() < to_day && team.as_deref().is_none_or(|t| e.team_id == t)
        };
        let savings: Decimal = events
            .iter()
            .zip(&costs)
            .filter(|(e, _)| covered(e))
            .filter_map(|(_, c)| c.map(|c| c.1))
            .sum();
        assert_eq!(
            d(json["cache_savings"].as_str().unwrap()),
            savings,
            "{query}: {json}"
        );
        let total = spend_of(&|e| covered(e));
        assert_eq!(d(json["total"]["cost"].as_str().unwrap()), total, "{query}");
        let api_today: chrono::NaiveDate = json["today"].as_str().unwrap().parse().unwrap();
        if to_day == tomorrow {
            let so_far = spend_of(&|e| covered(e) && e.occurred_at >= month_start);
            let days_in_month = (month_start
                .date_naive()
                .checked_add_months(chrono::Months::new(1))
                .unwrap()
                - month_start.date_naive())
            .num_days();
            // The burn rate over the month's seconds, as a monthly budget
            // forecasts it: elapsed from the first of the month to the
            // minute the overview was computed in (at least an hour).
            let f = &json["forecast"];
            let elapsed = f["elapsed_seconds"].as_i64().unwrap();
            let since_first = |t: DateTime<Utc>| {
                let minute = t.timestamp() - t.timestamp().rem_euclid(60);
                (minute - month_start.timestamp()).max(3_600)
            };
            assert_eq!(elapsed % 60, 0, "whole minutes: {f}");
            assert!(
                since_first(asked_at) <= elapsed && elapsed <= since_first(answered_at),
                "{query}: {f}"
            );
            assert!(asked_at.date_naive() <= api_today && api_today <= answered_at.date_naive());
            let forecast = (so_far * Decimal::from(days_in_month * 86_400)
                / Decimal::from(elapsed))
            .round_dp_with_strategy(12, rust_decimal::RoundingStrategy::MidpointNearestEven);
            assert_eq!(d(f["cost_so_far"].as_str().unwrap()), so_far, "{query}");
            assert_eq!(d(f["cost"].as_str().unwrap()), forecast, "{query}: {f}");
            assert_eq!(f["days_in_month"], days_in_month);
            assert_eq!(f["month_seconds"], days_in_month * 86_400);
        } else {
            assert!(json["forecast"].is_null(), "{query}: {json}");
        }

        // The CSV (API and page route alike) and the page: the same strings.
        let csv = text_at(format!(
            "{api}/api/v1/reports/cost/overview?{query}&format=csv"
        ))
        .await;
        let page_csv = text_at(format!("{api}/finance/cost/top.csv?{query}")).await;
        assert_eq!(csv, page_csv, "{query}");
        assert_eq!(csv.lines().count(), 1 + users.len() + keys.len(), "{csv}");
        let url = format!("{api}/finance/cost?{query}");
        let dom = dom_of(&url).await;
        // The tooltips hold the CSV's form of an amount (all 12 decimals);
        // the JSON keeps each value's own scale: compared as decimals.
        let exact = |id: &str| {
            let text = element_exact(&dom, id);
            assert_eq!(
                text.split_once('.').map(|(_, f)| f.len()),
                Some(12),
                "{id}: {text}"
            );
            d(&text)
        };
        assert_eq!(
            exact("overview-total"),
            d(json["total"]["cost"].as_str().unwrap()),
            "{query}"
        );
        assert_eq!(
            exact("overview-savings"),
            d(json["cache_savings"].as_str().unwrap()),
            "{query}"
        );
        // The forecast moves once a minute: the page's, drawn between the
        // JSON read above and one read now, is one of the two.
        let again: serde_json::Value =
            json_at(format!("{api}/api/v1/reports/cost/overview?{query}")).await;
        match json["forecast"]["cost"].as_str() {
            Some(f) => {
                let shown = exact("overview-forecast");
                let later = d(again["forecast"]["cost"].as_str().unwrap());
                assert!(
                    shown == d(f) || shown == later,
                    "{query}: {shown} not {f} nor {later}"
                );
            }
            None => assert_eq!(element_exact(&dom, "overview-forecast"), "—", "{query}"),
        }
        for (dim, table) in [("user", "top-users"), ("key", "top-keys")] {
            let rows = exact_rows(&dom, table);
            let csv_rows: Vec<Vec<String>> = csv
                .lines()
                .skip(1)
                .filter(|l| l.starts_with(&format!("{dim},")))
                .map(|l| l.split(',').skip(1).map(str::to_string).collect())
                .collect();
            assert_eq!(rows, csv_rows, "{query}: page table {table} is the CSV");
        }
        // The top user's link drills into that user's spend by model.
        let (top_user, top_cost) = users[0];
        let href = format!("user={top_user}&amp;group_by=model\"");
        assert!(dom.contains(&href), "{query}: no drill-down {href}");
        let drill = query
            .split('&')
            .filter(|p| !p.starts_with("group_by="))
            .collect::<Vec<_>>()
            .join("&");
        let report: serde_json::Value = json_at(format!(
            "{api}/api/v1/reports/cost?{drill}&user={top_user}&group_by=model"
        ))
        .await;
        assert_eq!(
            d(report["total"]["cost"].as_str().unwrap()),
            d(top_cost),
            "{query}"
        );
    }
    screenshot(
        &format!("{api}/finance/cost?from={prev_month}&to={tomorrow}"),
        "finance_cost_overview.png",
    )
    .await;

    // A tag report has no spenders; its overview still answers.
    let json: serde_json::Value = json_at(format!(
        "{api}/api/v1/reports/cost/overview?group_by=tag:feature"
    ))
    .await;
    assert!(
        json["top_users"].is_null() && json["top_keys"].is_null(),
        "{json}"
    );
    assert_eq!(json["tag_key"], "feature");
}

/// The `<time>` element in `html` (the first one): its `datetime`, its
/// `title` and its text.
fn time_element(html: &str) -> (String, String, String) {
    let tag = &html[html.find("<time").expect("a <time> element")..];
    let attr = |name: &str| {
        let open = &tag[..tag.find('>').unwrap()];
        let at = open
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("no {name} in {open}"))
            + name.len()
            + 2;
        open[at..at + open[at..].find('"').unwrap()].to_string()
    };
    let text = &tag[tag.find('>').unwrap() + 1..];
    let text = text[..text.find("</time>").unwrap()].to_string();
    (attr("datetime"), attr("title"), text)
}

/// A known amount on the cost page and a budget's burn-down, read in
/// Chromium running in New York: money as dollars and cents with
/// thousands separators and every stored digit on hover, tokens in
/// millions, and times rewritten from UTC into the browser's zone (the
/// UTC time kept on hover; the page without scripts says UTC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_and_times_read_as_people_read_them_in_chromium() {
    let mut env = TestEnv::new("finance_format").await;
    import_burn_price(&env);
    tollgate_ok(
        &env,
        &[
            "budgets", "set", "--kind", "team", "--id", "team-f", "--limit", "30000",
        ],
    );
    // 25,355,377 input tokens at 0.001 USD: 25355.377 USD.
    let call = burn_call("team-f", Utc::now(), 25_355_377);
    support::kafka::produce_all(
        &env.events_topic,
        &[(call.team_id.clone(), serde_json::to_vec(&call).unwrap())],
    )
    .await;
    env.spawn("process", &["process"]);
    let sql = "SELECT sum(calls) FROM {db}.cost_daily";
    assert_eq!(env.wait_for_count(sql, 1, Duration::from_secs(60)).await, 1);
    env.start_api().await;
    let api = env.api_url();

    // The CSV keeps every digit; the page shows dollars and cents with
    // the CSV's value on hover.
    let csv = text_at(format!("{api}/finance/cost.csv?group_by=team")).await;
    let exact = csv.lines().nth(1).unwrap().rsplit(',').next().unwrap();
    assert!(exact.parse::<Decimal>().is_ok(), "{csv}");
    assert_eq!(d(exact), d("25355.377"), "{csv}");
    assert!(exact.len() > "25355.377".len(), "stored digits: {csv}");
    let dom = dom_of(&format!("{api}/finance/cost?group_by=team")).await;
    let row = &table_rows(&dom, "cost-table")[0];
    assert_eq!(
        row.last().unwrap(),
        &format!("<span class=\"money\" title=\"{exact}\">$25,355.38</span>")
    );
    assert!(
        row.contains(&"<span class=\"count\" title=\"25,355,377 tokens\">25.4M</span>".into()),
        "{row:?}"
    );
    assert_eq!(element_exact(&dom, "overview-total"), exact);

    // The burn-down: the spend in dollars, the times in New York.
    let statuses: serde_json::Value = json_at(format!("{api}/api/v1/finance/budgets")).await;
    let id = statuses[0]["id"].as_i64().unwrap();
    let url = format!("{api}/finance/budgets/{id}");
    let without_js = text_at(&url).await;
    // Without scripts: UTC, the time in the text and on hover.
    let (datetime, title, utc_text) =
        time_element(&without_js[without_js.find("id=\"as-of\"").unwrap()..]);
    let at: DateTime<Utc> = datetime.parse().unwrap();
    assert_eq!(utc_text, at.format("%Y-%m-%d %H:%M UTC").to_string());
    assert_eq!(title, at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let profile = tempfile::tempdir().unwrap();
    let path = profile.path().to_path_buf();
    let page = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_chromium_with_env(&page, &path, &["--dump-dom"], &[("TZ", "America/New_York")])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    let summary = &dom[dom.find("id=\"budget-summary\"").unwrap()..];
    assert!(
        summary.contains(&format!(
            "<dt>spent</dt><dd><span class=\"money\" title=\"{exact}\">$25,355.38</span></dd>"
        )),
        "{summary}"
    );
    assert!(
        summary.contains(
            "<dt>limit</dt><dd><span class=\"money\" title=\"30000.000000000000\">$30,000.00</span></dd>"
        ),
        "{summary}"
    );
    let (datetime, title, local) = time_element(&dom[dom.find("id=\"as-of\"").unwrap()..]);
    let at: DateTime<Utc> = datetime.parse().unwrap();
    assert_eq!(title, at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    // New York is UTC-5 in winter (EST), UTC-4 in summer (EDT).
    let (clock, zone) = local.rsplit_once(' ').unwrap();
    let offset = match zone {
        "EST" => -5,
        "EDT" => -4,
        other => panic!("not New York time: {local} ({other})"),
    };
    let shown = chrono::NaiveDateTime::parse_from_str(clock, "%Y-%m-%d %H:%M").unwrap();
    assert_eq!(
        shown - chrono::Duration::hours(offset),
        at.naive_utc()
            .with_second(0)
            .unwrap()
            .with_nanosecond(0)
            .unwrap(),
        "{local} is {datetime} in New York"
    );
    assert!(!local.ends_with(" UTC"), "{local}");
    // Every bucket's times were rewritten, none left in UTC.
    let table = &dom[dom.find("id=\"burndown-table\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains("<time"), "{table}");
    assert!(!table.contains(" UTC</time>"), "{table}");
}

/// The `layout` step results of `outcome`, in order.
fn layouts(outcome: &support::browser::Outcome) -> Vec<serde_json::Value> {
    outcome.all("layout").into_iter().cloned().collect()
}

/// The finance pages on a phone (390 × 844) and the statement on a
/// laptop (1366 × 768), in Chromium: on a phone no page is wider than the
/// screen, Sign out is drawn inside the dark header and visible, a
/// budget's subject, spent, limit and state are on screen, a burn-down
/// date is one line; the statement's lines fit a 1366 px screen without
/// scrolling; the total card names the unpriced call the total leaves
/// out; a day picked as From and Through in the cost form is that day; a
/// team without calls gets a notice, not a $0.00 statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finance_pages_fit_a_phone_and_say_what_they_read() {
    use support::browser::{run_in, Step};
    let mut env = TestEnv::new("finance_phone").await;
    import_burn_price(&env);
    tollgate_ok(
        &env,
        &[
            "budgets", "set", "--kind", "team", "--id", "team-p", "--limit", "30",
        ],
    );
    let now = Utc::now();
    let mut unpriced = event("team-p", "unknown-model", 1_000, 100);
    unpriced.occurred_at = now;
    let events = [
        burn_call("team-p", now, 4_000),
        burn_call("team-p", now, 1_000),
        unpriced,
    ];
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
        .collect();
    support::kafka::produce_all(&env.events_topic, &messages).await;
    env.spawn("process", &["process"]);
    let sql = "SELECT sum(calls) FROM {db}.cost_daily";
    assert_eq!(env.wait_for_count(sql, 3, Duration::from_secs(60)).await, 3);
    env.start_api().await;
    let api = env.api_url();
    let statuses: serde_json::Value = json_at(format!("{api}/api/v1/finance/budgets")).await;
    let budget = statuses[0]["id"].as_i64().unwrap();
    let today = now.date_naive();
    let month = now.format("%Y-%m").to_string();

    // A phone.
    let pages = [
        "/finance/cost".to_string(),
        format!("/finance/statement?team=team-p&month={month}"),
        "/finance/budgets".to_string(),
        format!("/finance/budgets/{budget}"),
    ];
    let mut steps = Vec::new();
    for page in &pages {
        steps.push(Step::Goto(format!("{api}{page}")));
        steps.push(Step::Layout(
            ".sign-out button".into(),
            Some("header".into()),
        ));
    }
    steps.push(Step::Goto(format!("{api}/finance/budgets")));
    for label in ["subject", "spent", "limit", "state"] {
        steps.push(Step::Layout(
            format!("#budgets-table tbody tr td[data-label={label}]"),
            None,
        ));
    }
    steps.push(Step::Goto(format!("{api}/finance/budgets/{budget}")));
    steps.push(Step::Layout("#burndown-table tbody tr td".into(), None));
    steps.push(Step::Layout(
        "#burndown-table tbody tr td:nth-child(3)".into(),
        None,
    ));
    let phone = run_in(&steps, (390, 844)).await.expect_ok();
    let found = layouts(&phone);
    for (page, at) in pages.iter().zip(&found) {
        assert_eq!(at["found"], true, "{page}: no Sign out: {at}");
        assert!(
            at["scroll_width"].as_f64() <= at["viewport_width"].as_f64(),
            "{page} is wider than a phone: {at}"
        );
        assert_eq!(
            at["inside"], true,
            "{page}: Sign out outside the header: {at}"
        );
        assert_eq!(at["visible"], true, "{page}: Sign out not visible: {at}");
    }
    for at in &found[pages.len()..pages.len() + 4] {
        assert_eq!(at["visible"], true, "a budget's column is off screen: {at}");
    }
    // A date of the burn-down is one line, as high as an amount's cell.
    let (date, amount) = (&found[pages.len() + 4], &found[pages.len() + 5]);
    assert!(
        date["box"]["height"].as_f64().unwrap() <= amount["box"]["height"].as_f64().unwrap() + 1.0,
        "a burn-down date wraps: {date} against {amount}"
    );

    // A laptop: the statement's lines fit; one day picked in the form;
    // the unpriced call named; a team without calls.
    let tomorrow = today.succ_opt().unwrap();
    let day_total: serde_json::Value = json_at(format!(
        "{api}/api/v1/reports/cost/overview?from={today}&to={tomorrow}"
    ))
    .await;
    let steps = vec![
        Step::Goto(format!("{api}/finance/statement?team=team-p&month={month}")),
        Step::Layout(".table-scroll:has(#statement-table)".into(), None),
        Step::ExpectText("1 unpriced call not in the total".into()),
        Step::Goto(format!("{api}/finance/cost")),
        Step::ExpectText("3 calls · 1 unpriced call not in the total".into()),
        Step::SetValue("input[name=from]".into(), today.to_string()),
        Step::SetValue("input[name=through]".into(), today.to_string()),
        Step::Click("form.filters button[type=submit]".into(), true),
        Step::Location,
        Step::Read("#cost-period".into()),
        Step::Read("#overview-total .money".into()),
        Step::Goto(format!(
            "{api}/finance/statement?team=team-none&month={month}"
        )),
        Step::Location,
        Step::ExpectText(format!("No calls for team team-none in any org in {month}")),
    ];
    let laptop = run_in(&steps, (1366, 768)).await.expect_ok();
    let table = &layouts(&laptop)[0];
    assert!(
        table["scroll_width_of"].as_f64() <= table["client_width_of"].as_f64(),
        "the statement's lines need scrolling at 1366 px: {table}"
    );
    let locations = laptop.all("location");
    assert_eq!(locations[0]["status"], 200, "{:?}", locations[0]);
    let reads = laptop.all("read");
    let period = reads[0]["text"].as_str().unwrap();
    assert!(
        period.starts_with(&format!(
            "{today} · 1 UTC day: {today} 00:00 to {tomorrow} 00:00 UTC"
        )),
        "{period}"
    );
    assert_eq!(
        d(reads[1]["attributes"]["title"].as_str().unwrap_or_default()),
        d(day_total["total"]["cost"].as_str().unwrap()),
        "{:?}",
        reads[1]
    );
    assert_eq!(locations[1]["status"], 200, "{:?}", locations[1]);
}
