//! The alert signals and the backtest against real Kafka, ClickHouse and
//! PostgreSQL: calls with known error rates, latencies and costs go through
//! `tollgate process`, and `measure` must give the figures a user computes
//! by hand (error rate in percent, p95 and p90 by type-7 interpolation,
//! exact spend and hourly rate), with the org scope, and unknown where there
//! is no data; a breaker opening and a new error pattern count in their
//! windows; a backtest over an error-rate episode longer than `for` goes
//! pending, firing and resolved at the right steps, and
//! `POST /api/v1/alerts/backtest` answers the same (JSON and CSV), with a 400
//! naming the field of a bad rule or range.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_contract::alert_lifecycle::{Observation, Transition};
use tollgate_contract::alerts::{
    BreakerSignal, BudgetForecastSignal, BudgetUsedSignal, ErrorPatternSignal, ErrorRateSignal,
    LatencyMetric, LatencySignal, RuleSpec, Signal, SpendSignal, SpendSubject,
};
use tollgate_contract::{Outcome, ProviderError};
use tollgate_control::config::ClickHouseConfig;
use tollgate_queries::alert_signals::{backtest, measure, Measurement, SignalSources};
use tollgate_queries::ReadModels;

use crate::support::events::{call_event, usage};
use crate::support::{clickhouse_url, d, TestEnv};

/// 2026-11-30T10:00:00Z: minute m of the data is [BASE + m min, + 1 min).
const BASE: i64 = 1_796_032_800;

const PRICES: &str = r#"{
  "tg-alert": {"litellm_provider": "alertprov", "effective_from": "2026-01-01T00:00:00Z",
               "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}
}"#;

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(BASE + minutes * 60, 0).unwrap()
}

/// Ten minutes of ten calls each of team `search` on alertprov/tg-alert:
/// call i of minute m lasts 100 + 10 m + i ms (100..=199 ms over all) and
/// costs 0.002 USD (1,000 input and 500 output tokens); in minutes 3 to 6
/// calls 0..5 fail (50 %) with one error, elsewhere none fails. The calls
/// of minute 0 carry the tag `feature=chat`.
fn events() -> Vec<tollgate_contract::Event> {
    let mut out = Vec::new();
    for m in 0..10_i64 {
        for i in 0..10_i64 {
            let fails = (3..=6).contains(&m) && i < 5;
            let outcome = if fails {
                Outcome::Error
            } else {
                Outcome::Success
            };
            let when = at(m) + chrono::Duration::seconds(i * 5);
            let mut e = call_event(
                "search",
                "alertprov",
                "tg-alert",
                when,
                usage(1_000, 0, 0, 500, 0),
                outcome,
            );
            if m == 0 {
                e.tags.insert("feature".into(), "chat".into());
            }
            let call = e.call.as_mut().unwrap();
            call.duration_ms = (100 + 10 * m + i) as u32;
            if fails {
                call.error = Some(ProviderError {
                    error_type: "server_error".into(),
                    message: "the upstream exploded".into(),
                    signature: None,
                });
            }
            out.push(e);
        }
    }
    out
}

async fn prepared(label: &str) -> (TestEnv, ReadModels) {
    let mut env = TestEnv::new(label).await;
    let path = env.dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    env.run(&["prices", "import", path.to_str().unwrap()]);
    env.process_events(&events()).await;
    let got = env
        .wait_for_count(
            "SELECT countMerge(calls) FROM {db}.latency_minute_calls",
            100,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(got, 100, "the latency rollup never caught up");
    assert_eq!(
        env.ch_u64("SELECT countIf(priced = 0) FROM {db}.calls")
            .await,
        0,
        "every call is priced"
    );
    // One breaker opens at minute 8, then goes half-open (not an opening).
    env.ch(&format!(
        "INSERT INTO {{db}}.breaker_transitions (at, at_ms, provider, model, from_state, to_state, generation, calls, failures, slow, signature, reason, event_id) VALUES \
         (toDateTime({o}), {o}000, 'alertprov', 'tg-alert', 'closed', 'open', 1, 10, 5, 0, 0, 'errors', 'e1'), \
         (toDateTime({h}), {h}000, 'alertprov', 'tg-alert', 'open', 'half_open', 1, 0, 0, 0, 0, 'cool-down', 'e2')",
        o = BASE + 8 * 60 + 10,
        h = BASE + 9 * 60 + 10,
    ))
    .await;
    let read = ReadModels::new(&ClickHouseConfig {
        url: clickhouse_url(),
        database: env.ch_database.clone(),
        ..ClickHouseConfig::default()
    });
    (env, read)
}

fn error_rate(above: &str, window_secs: u32) -> Signal {
    Signal::ErrorRate(ErrorRateSignal {
        provider: Some("alertprov".into()),
        model: None,
        team: None,
        above_percent: d(above),
        window_secs,
    })
}

async fn m(read: &ReadModels, org: &str, signal: &Signal, minutes: i64) -> Measurement {
    let sources = SignalSources {
        read,
        budgets: None,
    };
    measure(sources, org, signal, at(minutes)).await.unwrap()
}

fn value(m: &Measurement) -> Option<Decimal> {
    m.value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_measure_what_a_user_computes_and_the_backtest_replays_them() {
    let (mut env, read) = prepared("alert_signals").await;

    // Error rate at 10:05 over 5 min: minutes 0..=4, 50 calls, 10 failed.
    let at5 = m(&read, "org-1", &error_rate("20", 300), 5).await;
    assert_eq!(value(&at5), Some(d("20.0000")), "{at5:?}");
    assert_eq!(
        at5.observation,
        Observation::Clear,
        "20 % is not above 20 %"
    );
    let above = m(&read, "org-1", &error_rate("19.9999", 300), 5).await;
    assert_eq!(above.observation, Observation::Holds);
    // The minute in progress is not read: at 10:05:59 the window is the same.
    let sources = SignalSources {
        read: &read,
        budgets: None,
    };
    let late = measure(
        sources,
        "org-1",
        &error_rate("20", 300),
        at(5) + chrono::Duration::seconds(59),
    )
    .await
    .unwrap();
    assert_eq!(late.value, at5.value);
    // Another org sees none of it; no calls is no rate (not 0 %) and
    // nothing to alert on: clear, as when the traffic stops.
    let other = m(&read, "org-2", &error_rate("20", 300), 5).await;
    assert_eq!((other.value, other.observation), (None, Observation::Clear));
    let later = m(&read, "org-1", &error_rate("20", 300), 30).await;
    assert_eq!((later.value, later.observation), (None, Observation::Clear));

    // Latency over all ten minutes: 100 values 100..=199 ms.
    let latency = |metric, percentile, above_ms| {
        Signal::Latency(LatencySignal {
            metric,
            percentile,
            provider: None,
            model: Some("tg-alert".into()),
            team: Some("search".into()),
            above_ms,
            window_secs: 600,
        })
    };
    let p95 = m(
        &read,
        "org-1",
        &latency(LatencyMetric::Duration, 95, 194),
        10,
    )
    .await;
    // h = 99 x 0.95 = 94.05: 194 + 0.05 x (195 - 194).
    assert_eq!(value(&p95), Some(d("194.05")), "{p95:?}");
    assert_eq!(p95.observation, Observation::Holds);
    let p90 = m(
        &read,
        "org-1",
        &latency(LatencyMetric::Duration, 90, 190),
        10,
    )
    .await;
    assert_eq!(value(&p90), Some(d("189.1")), "{p90:?}");
    assert_eq!(p90.observation, Observation::Clear);
    let ttft = m(&read, "org-1", &latency(LatencyMetric::Ttft, 95, 1), 10).await;
    assert_eq!(
        (ttft.value, ttft.observation),
        (None, Observation::Clear),
        "no streamed call: no TTFT, nothing to alert on"
    );

    // Spend of the team over 10 minutes: 100 calls x 0.002 USD; 1.2 USD/h.
    let spend = |kind, id: &str, above: Option<&str>, rate: Option<&str>| {
        Signal::Spend(SpendSignal {
            subject_kind: kind,
            subject_id: id.into(),
            window_secs: 600,
            above_usd: above.map(d),
            per_hour_above_usd: rate.map(d),
        })
    };
    let team = m(
        &read,
        "org-1",
        &spend(SpendSubject::Team, "search", Some("0.199999999999"), None),
        10,
    )
    .await;
    assert_eq!(value(&team), Some(d("0.2")), "{team:?}");
    assert_eq!(team.observation, Observation::Holds);
    let rate = m(
        &read,
        "org-1",
        &spend(SpendSubject::Org, "org-1", None, Some("1.2")),
        10,
    )
    .await;
    assert_eq!(value(&rate), Some(d("1.2")), "{rate:?}");
    assert_eq!(rate.observation, Observation::Clear, "1.2 is not above 1.2");
    let tagged = m(
        &read,
        "org-1",
        &spend(SpendSubject::Tag, "feature=chat", Some("0.01"), None),
        10,
    )
    .await;
    assert_eq!(
        (tagged.value, tagged.observation),
        (Some(d("0.02")), Observation::Holds),
        "{tagged:?}"
    );
    let untagged = m(
        &read,
        "org-1",
        &spend(SpendSubject::Tag, "feature=search", Some("0.01"), None),
        10,
    )
    .await;
    assert_eq!(untagged.value, Some(Decimal::ZERO));
    let key = m(
        &read,
        "org-1",
        &spend(SpendSubject::Key, "search-key", Some("0.2"), None),
        10,
    )
    .await;
    assert_eq!(
        (key.value, key.observation),
        (Some(d("0.2")), Observation::Clear)
    );
    let foreign = m(
        &read,
        "org-2",
        &spend(SpendSubject::Team, "search", Some("0.1"), None),
        10,
    )
    .await;
    assert_eq!(
        (foreign.value, foreign.observation),
        (Some(Decimal::ZERO), Observation::Clear),
        "another org's rule does not see org-1's spend"
    );

    // A new error pattern: first seen at 10:03, counted for five minutes.
    let pattern = Signal::NewErrorPattern(ErrorPatternSignal {
        provider: Some("alertprov".into()),
    });
    assert_eq!(
        m(&read, "org-1", &pattern, 5).await.observation,
        Observation::Holds
    );
    assert_eq!(
        m(&read, "org-1", &pattern, 3).await.observation,
        Observation::Clear,
        "not yet seen in 09:58..10:03"
    );
    assert_eq!(
        m(&read, "org-1", &pattern, 20).await.observation,
        Observation::Clear
    );
    assert_eq!(
        m(&read, "org-2", &pattern, 5).await.observation,
        Observation::Clear,
        "org-2 never failed with it"
    );

    // The breaker opened at 10:08:10; the half-open move is not an opening.
    let breaker = |provider: &str| {
        Signal::BreakerOpened(BreakerSignal {
            provider: Some(provider.into()),
            model: None,
        })
    };
    let opened = m(&read, "org-1", &breaker("alertprov"), 10).await;
    assert_eq!(
        (opened.value, opened.observation),
        (Some(d("1")), Observation::Holds)
    );
    assert_eq!(
        m(&read, "org-1", &breaker("other"), 10).await.observation,
        Observation::Clear
    );
    assert_eq!(
        m(&read, "org-1", &breaker("alertprov"), 8)
            .await
            .observation,
        Observation::Clear,
        "at 10:08 the opening's minute has not ended"
    );

    // Budgets: a daily budget of 0.25 USD for org-1's team search; the
    // day's spend is 0.2 USD (80.00 %), and at 10:10 the day-end forecast
    // is 0.2 x 86,400 / 36,600 s, above the limit.
    env.wait_for_cost_rollup().await;
    let set_budget = |org: Option<&str>| {
        let mut args = vec![
            "--kind", "team", "--id", "search", "--limit", "0.25", "--period", "daily",
        ];
        args.extend(org.map(|org| ["--org", org]).into_iter().flatten());
        env.set_budget(&args)
    };
    let budget_id = set_budget(Some("org-1"));
    // The same team's budgets of another org, and of every org (set
    // without an org: it counts other orgs' calls), are no rule's of
    // org-1: unknown, as a budget that does not exist.
    let others = [set_budget(Some("org-2")), set_budget(None)];
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    let store = tollgate_control::budgets::BudgetStore::new(pool);
    let with_budgets = SignalSources {
        read: &read,
        budgets: Some(&store),
    };
    let used_of = |budget_id, above_percent| {
        Signal::BudgetUsed(BudgetUsedSignal {
            budget_id,
            above_percent,
        })
    };
    let used = |above_percent| used_of(budget_id, above_percent);
    let m80 = measure(with_budgets, "org-1", &used(80), at(10))
        .await
        .unwrap();
    assert_eq!(
        (m80.value, m80.observation),
        (Some(d("80.00")), Observation::Holds),
        "{m80:?}"
    );
    let m81 = measure(with_budgets, "org-1", &used(81), at(10))
        .await
        .unwrap();
    assert_eq!(m81.observation, Observation::Clear);
    let forecast = measure(
        with_budgets,
        "org-1",
        &Signal::BudgetForecast(BudgetForecastSignal { budget_id }),
        at(10),
    )
    .await
    .unwrap();
    assert_eq!(
        forecast.value,
        Some(tollgate_contract::cost::round(
            d("0.2") * Decimal::from(86_400) / Decimal::from(36_600)
        )),
        "{forecast:?}"
    );
    assert_eq!(forecast.observation, Observation::Holds);
    let missing = measure(
        with_budgets,
        "org-1",
        &Signal::BudgetForecast(BudgetForecastSignal {
            budget_id: budget_id + 1,
        }),
        at(10),
    )
    .await
    .unwrap();
    assert_eq!(missing.observation, Observation::Unknown);
    for other in others {
        let read = measure(with_budgets, "org-1", &used_of(other, 1), at(10))
            .await
            .unwrap();
        assert_eq!(read.observation, Observation::Unknown, "{read:?}");
        assert_eq!(read.value, None, "{read:?}");
        assert_eq!(
            read.detail,
            format!("no budget {other} of org org-1"),
            "{read:?}"
        );
    }
    assert_eq!(
        m(&read, "org-1", &used(80), 10).await.observation,
        Observation::Unknown,
        "without postgres a budget cannot be read"
    );

    // Every statement of the catalog (every shape: tag and key subjects,
    // filters present and absent) runs on this ClickHouse too.
    let catalog: Vec<Value> = serde_json::from_str(&env.run(&["sql-catalog"])).unwrap();
    let ours: Vec<&Value> = catalog
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("alert_signals."))
        .collect();
    assert!(ours.len() >= 10, "{ours:?}");
    for statement in ours {
        let res = reqwest::Client::new()
            .post(format!(
                "{}/?database={}",
                clickhouse_url(),
                env.ch_database
            ))
            .body(statement["sql"].as_str().unwrap().to_string())
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(
            status.is_success(),
            "{statement}: {}",
            res.text().await.unwrap()
        );
    }

    // Backtest: over 1 min windows the rate is 50 % in minutes 3..=6,
    // read at 10:04..=10:07; with for = 2 min: pending at 10:04, firing at
    // 10:06, resolved at 10:08. Steps with no calls are clear, with no value.
    let rule = RuleSpec::from_json(
        json!({
            "org_id": "org-1",
            "name": "alertprov failing",
            "signal": {"kind": "error_rate", "provider": "alertprov", "above_percent": "20", "window_secs": 60},
            "for_secs": 120,
            "severity": "critical"
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let result = backtest(sources, &rule, at(0), at(12), 60)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.series.len(), 13);
    let observations: Vec<Observation> = result
        .series
        .iter()
        .map(|p| p.measurement.observation)
        .collect();
    use Observation::{Clear as C, Holds as H};
    assert_eq!(observations, vec![C, C, C, C, H, H, H, H, C, C, C, C, C]);
    let valued: Vec<bool> = result
        .series
        .iter()
        .map(|p| p.measurement.value.is_some())
        .collect();
    assert_eq!(
        valued,
        [vec![false], vec![true; 10], vec![false; 2]].concat(),
        "{:?}",
        result.series
    );
    assert_eq!(
        result.transitions,
        vec![
            (at(4), Transition::Pending { since: at(4) }),
            (
                at(6),
                Transition::Firing {
                    since: at(4),
                    fired_at: at(6)
                }
            ),
            (
                at(8),
                Transition::Resolved {
                    since: at(4),
                    fired_at: at(6),
                    resolved_at: at(8)
                }
            ),
        ]
    );

    // The API answers the same, as JSON and CSV.
    env.start_api().await;
    let key = env.create_key_with_role("sre", Some("org-1"));
    let http = reqwest::Client::new();
    let post = |query: String, body: Value| {
        http.post(format!(
            "{}/api/v1/alerts/backtest?{query}",
            env.direct_api_url()
        ))
        .bearer_auth(&key)
        .json(&body)
        .send()
    };
    let window = "from=2026-11-30T10:00:00Z&to=2026-11-30T10:12:00Z&step_secs=60";
    let body = serde_json::to_value(&rule).unwrap();
    let res = post(window.into(), body.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    let got: Value = res.json().await.unwrap();
    assert_eq!(
        got["transitions"],
        serde_json::to_value(&result.transitions).unwrap()
    );
    assert_eq!(got["series"].as_array().unwrap().len(), 13);
    assert_eq!(got["series"][4]["value"], "50.0000");
    assert_eq!(got["series"][4]["observation"], "holds");
    assert_eq!(
        (
            &got["series"][0]["observation"],
            &got["series"][0]["value"],
            got["series"][0]["detail"]
                .as_str()
                .unwrap()
                .starts_with("no calls")
        ),
        (&json!("clear"), &Value::Null, true),
        "{}",
        got["series"][0]
    );
    let csv = post(format!("{window}&format=csv"), body.clone())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 14, "{csv}");
    assert!(
        lines[7].starts_with("2026-11-30T10:06:00Z,50.0000,holds,firing,"),
        "{csv}"
    );

    // Bad input is a 400 naming the field or parameter.
    let mut bad = body.clone();
    bad["signal"]["window_secs"] = json!(10);
    let res = post(window.into(), bad).await.unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert!(err.to_string().contains("signal.window_secs"), "{err}");
    let res = post(
        "from=2026-11-28T10:00:00Z&to=2026-11-30T10:00:00Z&step_secs=60".into(),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert!(err.to_string().contains("step_secs"), "{err}");
    // A key of another org cannot backtest org-1's rule.
    let other = env.create_key_with_role("sre", Some("org-2"));
    let res = http
        .post(format!(
            "{}/api/v1/alerts/backtest?{window}",
            env.direct_api_url()
        ))
        .bearer_auth(&other)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// Above 1,000 values the latency signal reads what the latency report
/// reads: from the minute rollups, the histogram (`latency_minute_buckets`):
/// the same p95 as the report's total of the same calls, marked an
/// estimate there, and within 1/256 of numpy's; from the calls themselves,
/// numpy's exactly, in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_above_the_exact_threshold_is_what_the_report_says() {
    use crate::latency_fixture::{call, type7, Call, ReportEnv, NEVER_COUNTED};
    // 1,800 calls over minutes 0..10, 1,200 of them streamed: both metrics
    // above the threshold.
    let calls: Vec<Call> = (0..1_800_u32)
        .map(|i| {
            let ms = 120 + (i * 7_919) % 40_000;
            call(
                "alertprov",
                "big",
                BASE + i64::from(i % 600),
                ms,
                (i % 3 != 0).then_some(ms / 5 + 13),
            )
        })
        .collect();
    // From the rollups, from the calls sorted, and from the calls counted
    // per value (the report and the signal alike).
    let default = ClickHouseConfig::default().latency_sort_max_calls;
    for (label, sort_max_calls, count_min_calls) in [
        ("alert_latency_hist", 0, NEVER_COUNTED),
        ("alert_latency_calls", default, NEVER_COUNTED),
        ("alert_latency_counted", default, 0),
    ] {
        let mut env = ReportEnv::new(label).await;
        if sort_max_calls == 0 {
            env.read_rollups_only();
        }
        env.count_from(count_min_calls);
        env.insert(&calls).await;
        env.start_api().await;
        let read = ReadModels::new(&ClickHouseConfig {
            url: clickhouse_url(),
            database: env.database.clone(),
            latency_sort_max_calls: sort_max_calls,
            latency_count_min_calls: count_min_calls,
            ..ClickHouseConfig::default()
        });
        let (status, report) = env
            .get_json(&format!(
                "/api/v1/reports/latency?from={}&to={}&group_by=&provider=alertprov&model=big",
                at(0).format("%Y-%m-%dT%H:%M:%SZ"),
                at(10).format("%Y-%m-%dT%H:%M:%SZ")
            ))
            .await;
        assert_eq!(status, 200, "{report}");
        let total = &report["groups"][0]["total"];
        let durations: Vec<f64> = calls.iter().map(|c| f64::from(c.duration_ms)).collect();
        let ttfts: Vec<f64> = calls
            .iter()
            .filter_map(|c| c.ttft_ms.map(f64::from))
            .collect();
        assert_eq!(ttfts.len(), 1_200);
        for (metric, field, values) in [
            (LatencyMetric::Duration, "duration_ms", durations),
            (LatencyMetric::Ttft, "ttft_ms", ttfts),
        ] {
            let signal = Signal::Latency(LatencySignal {
                metric,
                percentile: 95,
                provider: Some("alertprov".into()),
                model: Some("big".into()),
                team: Some("team-a".into()),
                above_ms: 1,
                window_secs: 600,
            });
            let got = m(&read, "org-1", &signal, 10).await;
            let p95 = total[field]["p95"].as_f64().unwrap();
            assert_eq!(
                value(&got),
                Some(d(&p95.to_string())),
                "{label} {field}: {got:?}"
            );
            let exact = type7(&values, 0.95);
            if sort_max_calls == 0 {
                assert_eq!(total[field]["method"], "histogram", "{total}");
                assert!(
                    (p95 - exact).abs() <= exact / 256.0 + 0.001,
                    "{field}: {p95} against numpy's {exact}"
                );
            } else {
                assert_eq!(total[field]["method"], "exact", "{total}");
                assert_eq!(p95, exact, "{field}: numpy's p95");
            }
        }
    }
}

/// The backtest reads an error-rate or latency rule's whole period at once
/// (`alert_signals` `batch`) and must give, at every step, exactly what
/// `measure` gives there (value, observation, detail), so the same
/// transitions: compared step by step over calls of uneven minutes (some
/// empty, some failed, TTFT on some), for durations and TTFT at several
/// percentiles and windows, with steps not on the minute and longer than
/// one, from the calls sorted, counted per value, with a limit that sends
/// the busier windows to the rollups (those steps measured one by one),
/// and from the rollups only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batched_backtest_is_measure_at_every_step() {
    use crate::latency_fixture::{call, Call, ReportEnv, NEVER_COUNTED};
    use futures::{StreamExt, TryStreamExt};
    use tollgate_contract::alert_lifecycle::{replay, Phase};
    use tollgate_queries::alert_signals::{steps, BacktestPoint};

    let mut calls: Vec<Call> = Vec::new();
    for m in 0..40_i64 {
        let n = (m * 13) % 37;
        for i in 0..n {
            let ms = 100 + ((i * 7_919 + m * 31) % 5_000) as u32;
            let mut c = call(
                "alertprov",
                "batch",
                BASE + m * 60 + (i * 59) / n.max(1),
                ms,
                (i % 2 == 0).then_some(ms / 7 + (i % 5) as u32),
            );
            c.error = m % 7 == 3 && i % 3 == 0;
            if c.error {
                c.kind = "ai.call.failed";
            }
            calls.push(c);
        }
    }
    let latency = |metric, percentile, above_ms, window_secs| {
        Signal::Latency(LatencySignal {
            metric,
            percentile,
            provider: Some("alertprov".into()),
            model: None,
            team: None,
            above_ms,
            window_secs,
        })
    };
    let signals = [
        latency(LatencyMetric::Duration, 95, 4_000, 300),
        latency(LatencyMetric::Duration, 50, 2_500, 60),
        latency(LatencyMetric::Ttft, 99, 600, 180),
        latency(LatencyMetric::Ttft, 90, 500, 900),
        error_rate("5", 120),
        error_rate("1", 600),
    ];
    let default = ClickHouseConfig::default().latency_sort_max_calls;
    let env = ReportEnv::new("alert_backtest_batch").await;
    env.insert(&calls).await;
    for (label, sort_max_calls, count_min_calls) in [
        ("sorted", default, NEVER_COUNTED),
        ("counted", default, 0),
        ("busy windows from the rollups", 60, NEVER_COUNTED),
        ("rollups only", 0, NEVER_COUNTED),
    ] {
        let read = ReadModels::new(&ClickHouseConfig {
            url: clickhouse_url(),
            database: env.database.clone(),
            latency_sort_max_calls: sort_max_calls,
            latency_count_min_calls: count_min_calls,
            ..ClickHouseConfig::default()
        });
        let sources = SignalSources {
            read: &read,
            budgets: None,
        };
        for signal in &signals {
            let rule = RuleSpec::from_json(
                json!({
                    "org_id": "org-1", "name": "batched", "signal": signal,
                    "for_secs": 120, "severity": "warning"
                })
                .to_string()
                .as_bytes(),
            )
            .unwrap();
            for (from, to, step) in [
                (at(-3), at(45), 60),
                (at(-2) + chrono::Duration::seconds(17), at(44), 150),
            ] {
                let got = backtest(sources, &rule, from, to, step)
                    .await
                    .unwrap()
                    .unwrap();
                let by_step: Vec<BacktestPoint> =
                    futures::stream::iter(steps(from, to, step).unwrap())
                        .map(|at| async move {
                            let measurement = measure(sources, "org-1", signal, at).await?;
                            Ok::<_, tollgate_queries::ReadModelError>(BacktestPoint {
                                at,
                                measurement,
                            })
                        })
                        .buffered(4)
                        .try_collect()
                        .await
                        .unwrap();
                assert_eq!(got.series, by_step, "{label}: {signal:?} every {step} s");
                let (_, transitions) = replay(
                    Phase::Inactive,
                    by_step.iter().map(|p| (p.at, p.measurement.observation)),
                    chrono::Duration::seconds(120),
                );
                assert_eq!(got.transitions, transitions, "{label}: {signal:?}");
                let valued = got
                    .series
                    .iter()
                    .filter(|p| p.measurement.value.is_some())
                    .count();
                assert!(
                    valued > got.series.len() / 2,
                    "{label}: {signal:?}: {valued} values"
                );
                assert!(
                    got.series
                        .iter()
                        .any(|p| p.measurement.observation == Observation::Holds),
                    "{label}: {signal:?} never holds"
                );
            }
        }
    }
}
