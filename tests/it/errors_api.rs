//! The Errors and Breakers reports end to end: failing and recovering call
//! attempts go through Kafka and `tollgate process` (the calls fold fills
//! the signature and recovery columns, the error-pattern views count them),
//! a learned merge and breaker transitions are written to their tables as
//! the learner and the breaker process would, and the API's JSON must give
//! the numbers computed here from the events: failures, recovered and
//! failed calls per pattern, the "new" mark, teams and keys, recovery
//! success rates, mean waits and exact added costs, breaker states and the
//! timeline. The CSVs hold the same values; bad parameters are 400s naming
//! them. `errors_pages_in_chromium` loads the pages in headless Chromium and
//! checks they show the API's numbers.

use crate::support;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use support::events::{call_event, usage};
use support::{d, TestEnv};
use tollgate_contract::signature::{signature, ErrorInput, SignatureId};
use tollgate_contract::{Event, EventKind, Outcome, ProviderError, Recovery, Strategy};

/// `tg-a` and `tg-b` of `testprov`, `tg-c` of `otherprov`: plain per-token
/// prices, so a failed attempt (no tokens) costs nothing.
const PRICES: &str = r#"{
  "tg-a": {"litellm_provider": "testprov", "effective_from": "2026-01-01T00:00:00Z",
           "input_cost_per_token": 1e-06, "output_cost_per_token": 3e-06},
  "tg-b": {"litellm_provider": "testprov", "effective_from": "2026-01-01T00:00:00Z",
           "input_cost_per_token": 2e-06, "output_cost_per_token": 4e-06},
  "tg-c": {"litellm_provider": "otherprov", "effective_from": "2026-01-01T00:00:00Z",
           "input_cost_per_token": 3e-07, "output_cost_per_token": 1.1e-06}
}"#;

/// The exact cost of a successful attempt (1,000 input and 500 output
/// tokens) per model, from `PRICES`.
fn success_cost(model: &str) -> Decimal {
    let (input, output) = match model {
        "tg-a" => ("0.000001", "0.000003"),
        "tg-b" => ("0.000002", "0.000004"),
        _ => ("0.0000003", "0.0000011"),
    };
    d(input) * Decimal::from(1_000) + d(output) * Decimal::from(500)
}

const OVERLOADED: (u16, &str) = (529, "overloaded_error");
const RATE_LIMIT: (u16, &str) = (429, "rate_limit_exceeded");

fn overloaded(i: usize) -> String {
    format!("Overloaded (request req_{i:04}abcdef)")
}

fn tokens_limit(i: usize) -> String {
    format!(
        "Rate limit reached for tg-a in organization org-{i:04}xyz on tokens per min (TPM): \
         Limit 30000, Used {}, Requested {}.",
        29_000 + i,
        1_000 + i
    )
}

fn requests_limit(i: usize) -> String {
    format!(
        "Rate limit reached for tg-a in organization org-{i:04}xyz on requests per min (RPM): \
         Limit 500, Used {}, Requested 1.",
        400 + i
    )
}

fn sig_of(provider: &str, (status, error_type): (u16, &str), message: &str) -> SignatureId {
    let error = ProviderError {
        error_type: error_type.into(),
        message: message.into(),
        signature: None,
    };
    signature(&ErrorInput::from_call(provider, status, &error)).id
}

/// One attempt of a call.
struct Attempt {
    provider: &'static str,
    model: &'static str,
    /// `None`: success.
    error: Option<((u16, &'static str), String)>,
    strategy: Strategy,
    wait_ms: u32,
}

/// The events of one call of `team` at `at`: each attempt one event,
/// with its recovery facts.
fn call(team: &str, at: DateTime<Utc>, attempts: &[Attempt]) -> Vec<Event> {
    let first = &attempts[0];
    let first_sig = first
        .error
        .as_ref()
        .map(|(class, message)| sig_of(first.provider, *class, message));
    attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let outcome = if a.error.is_some() {
                Outcome::Error
            } else {
                Outcome::Success
            };
            let tokens = if a.error.is_some() {
                usage(0, 0, 0, 0, 0)
            } else {
                usage(1_000, 0, 0, 500, 0)
            };
            let at = at + chrono::Duration::milliseconds(i as i64 * 700);
            let mut event = call_event(team, a.provider, a.model, at, tokens, outcome);
            let c = event.call.as_mut().unwrap();
            c.duration_ms = 200;
            if let Some(((status, error_type), message)) = &a.error {
                c.http_status = *status;
                c.error = Some(ProviderError {
                    error_type: (*error_type).into(),
                    message: message.clone(),
                    signature: None,
                });
            }
            if attempts.len() > 1 {
                c.recovery = Some(Recovery {
                    sequence: (i + 1) as u16,
                    wait_ms: a.wait_ms,
                    strategy: a.strategy,
                    from_signature: if i == 0 { None } else { first_sig },
                    from_provider: if i == 0 {
                        String::new()
                    } else {
                        first.provider.into()
                    },
                    from_model: if i == 0 {
                        String::new()
                    } else {
                        first.model.into()
                    },
                    last: i + 1 == attempts.len(),
                });
            }
            event.kind = if a.error.is_some() {
                EventKind::CallFailed
            } else {
                EventKind::CallCompleted
            };
            event
        })
        .collect()
}

fn attempt(
    provider: &'static str,
    model: &'static str,
    error: Option<((u16, &'static str), String)>,
    strategy: Strategy,
    wait_ms: u32,
) -> Attempt {
    Attempt {
        provider,
        model,
        error,
        strategy,
        wait_ms,
    }
}

/// What the test computed from its events.
struct Expected {
    overloaded: SignatureId,
    tokens: SignatureId,
    requests: SignatureId,
    /// The canonical id of the merged rate-limit pattern.
    rate_limit: SignatureId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

struct Setup {
    env: TestEnv,
    want: Expected,
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The events (in the half hour before the current minute, plus one
/// rate-limit failure two days earlier), processed; a merge of the two
/// rate-limit shapes and breaker transitions written; the API started.
async fn setup(label: &str) -> Setup {
    let mut env = TestEnv::new(label).await;
    let path = env.dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    env.run(&["prices", "import", path.to_str().unwrap()]);

    let now = Utc::now();
    let minute = now
        - chrono::Duration::seconds(now.timestamp() % 60)
        - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos()));
    let base = minute - chrono::Duration::minutes(30);
    let from = base - chrono::Duration::minutes(5);
    let to = minute + chrono::Duration::minutes(1);
    let at = |s: i64| base + chrono::Duration::seconds(s);
    let over = |i| Some((OVERLOADED, overloaded(i)));
    let mut events = Vec::new();
    for i in 0..6 {
        // A overloaded, fallback B overloaded too, C of another provider works.
        events.extend(call(
            "team-a",
            at(i as i64 * 60),
            &[
                attempt("testprov", "tg-a", over(i), Strategy::First, 0),
                attempt(
                    "testprov",
                    "tg-b",
                    over(100 + i),
                    Strategy::FallbackModel,
                    0,
                ),
                attempt("otherprov", "tg-c", None, Strategy::FallbackProvider, 0),
            ],
        ));
    }
    for i in 0..4 {
        // A overloaded, a retry after 500 ms works.
        events.extend(call(
            "team-b",
            at(400 + i as i64 * 60),
            &[
                attempt("testprov", "tg-a", over(200 + i), Strategy::First, 0),
                attempt("testprov", "tg-a", None, Strategy::Retry, 500),
            ],
        ));
    }
    for i in 0..2 {
        // A overloaded, the retry after 1.5 s too: the call fails.
        events.extend(call(
            "team-b",
            at(700 + i as i64 * 60),
            &[
                attempt("testprov", "tg-a", over(300 + i), Strategy::First, 0),
                attempt("testprov", "tg-a", over(400 + i), Strategy::Retry, 1_500),
            ],
        ));
    }
    for i in 0..3 {
        // Single-attempt rate limits of team-a, two shapes.
        let message = if i < 2 {
            tokens_limit(i)
        } else {
            requests_limit(i)
        };
        events.extend(call(
            "team-a",
            at(900 + i as i64 * 60),
            &[attempt(
                "testprov",
                "tg-a",
                Some((RATE_LIMIT, message)),
                Strategy::First,
                0,
            )],
        ));
    }
    // Seen two days before: the rate limit is not new.
    events.extend(call(
        "team-c",
        base - chrono::Duration::days(2),
        &[attempt(
            "testprov",
            "tg-a",
            Some((RATE_LIMIT, tokens_limit(9))),
            Strategy::First,
            0,
        )],
    ));

    env.process_events(&events).await;
    // 12 + 4 + 4 overload failures, 4 rate limits.
    let failures = env
        .wait_for_count(
            "SELECT sum(failures) FROM {db}.error_patterns_minute",
            24,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(failures, 24);

    let overloaded = sig_of("testprov", OVERLOADED, &overloaded(0));
    let tokens = sig_of("testprov", RATE_LIMIT, &tokens_limit(0));
    let requests = sig_of("testprov", RATE_LIMIT, &requests_limit(2));
    assert_ne!(tokens, requests, "two shapes, two raw signatures");
    let (low, high) = if tokens < requests {
        (tokens, requests)
    } else {
        (requests, tokens)
    };
    env.ch(&format!(
        "INSERT INTO {{db}}.error_pattern_merges (from_signature, into_signature, template, learned_at) \
         VALUES ({}, {}, 'Rate limit reached for <ID> in organization <ID> on <*> per min <*>', now())",
        high.0, low.0
    ))
    .await;
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    let transitions = [
        (
            ms(base) + 300_250,
            "testprov",
            "tg-a",
            "closed",
            "open",
            1,
            20,
            12,
            overloaded.0,
            "failure rate 60% over 20 calls",
        ),
        (
            ms(base) + 330_250,
            "testprov",
            "tg-a",
            "open",
            "half_open",
            1,
            0,
            0,
            0,
            "30 s open",
        ),
        (
            ms(base) + 335_500,
            "testprov",
            "tg-a",
            "half_open",
            "closed",
            1,
            3,
            0,
            0,
            "3 of 3 probes succeeded",
        ),
        (
            ms(base) + 600_000,
            "otherprov",
            "",
            "closed",
            "open",
            4,
            40,
            30,
            0,
            "failure rate 75% over 40 calls",
        ),
        (
            ms(base - chrono::Duration::days(2)),
            "testprov",
            "tg-b",
            "closed",
            "open",
            2,
            25,
            25,
            0,
            "failure rate 100% over 25 calls",
        ),
    ];
    let rows: Vec<String> = transitions
        .iter()
        .map(|(at, p, m, f, t, g, calls, failures, sig, reason)| {
            format!(
                "(toDateTime(intDiv({at}, 1000)), {at}, '{p}', '{m}', '{f}', '{t}', {g}, {calls}, {failures}, 0, {sig}, '{reason}', '')"
            )
        })
        .collect();
    env.ch(&format!(
        "INSERT INTO {{db}}.breaker_transitions VALUES {}",
        rows.join(", ")
    ))
    .await;
    env.start_api().await;
    Setup {
        env,
        want: Expected {
            overloaded,
            tokens,
            requests,
            rate_limit: low,
            from,
            to,
        },
    }
}

async fn get(env: &TestEnv, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{}{path}", env.api_url()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn get_json(env: &TestEnv, path: &str) -> Value {
    let (status, body) = get(env, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A CSV (as the API writes it: RFC 4180, no quoted line breaks here) as
/// maps from column to cell.
fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    fn fields(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cell = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    cell.push('"');
                    chars.next();
                }
                '"' => quoted = !quoted,
                ',' if !quoted => out.push(std::mem::take(&mut cell)),
                c => cell.push(c),
            }
        }
        out.push(cell);
        out
    }
    let mut lines = text.lines();
    let header = fields(lines.next().unwrap());
    lines
        .map(|l| header.iter().cloned().zip(fields(l)).collect())
        .collect()
}

fn pattern(report: &Value, id: SignatureId) -> &Value {
    report["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["signature"] == id.to_string())
        .unwrap_or_else(|| panic!("no pattern {id} in {report:#}"))
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_breakers_reports_match_the_events() {
    let Setup { env, want } = setup("errors_api").await;
    let window = format!("from={}&to={}", rfc(want.from), rfc(want.to));

    // ---- the list
    let report = get_json(&env, &format!("/api/v1/reports/errors?{window}")).await;
    let patterns = report["patterns"].as_array().unwrap();
    assert_eq!(patterns.len(), 2, "two patterns: {report:#}");
    let over = &patterns[0];
    assert_eq!(over["signature"], want.overloaded.to_string());
    assert_eq!(
        over["members"],
        serde_json::json!([want.overloaded.to_string()])
    );
    assert_eq!(over["template"], "Overloaded (request <ID>)");
    assert_eq!(over["provider"], "testprov");
    assert_eq!(over["http_status"], 529);
    assert_eq!(over["models"], serde_json::json!(["tg-a", "tg-b"]));
    // Failed attempts: 6 x (A, B) + 4 x A + 2 x (A, A retry).
    assert_eq!(over["failures"], 6 * 2 + 4 + 2 * 2);
    assert_eq!(over["calls_recovered"], 6 + 4);
    assert_eq!(over["calls_failed"], 2);
    assert_eq!(over["new"], true, "first seen inside the window");
    assert_eq!(over["teams"]["count"], 2);
    assert_eq!(names(&over["teams"]["names"]), ["team-a", "team-b"]);
    assert_eq!(over["keys"]["count"], 2);
    let series_total: u64 = over["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["failures"].as_u64().unwrap())
        .sum();
    assert_eq!(series_total, 20, "the sparkline's buckets sum to the count");

    let rate = pattern(&report, want.rate_limit);
    let mut members = vec![want.tokens.to_string(), want.requests.to_string()];
    members.sort();
    assert_eq!(
        rate["members"],
        serde_json::json!(members),
        "merged into one pattern"
    );
    assert_eq!(
        rate["template"],
        "Rate limit reached for <ID> in organization <ID> on <*> per min <*>"
    );
    assert_eq!(
        rate["failures"], 3,
        "the failure two days before is outside"
    );
    assert_eq!(
        (
            rate["calls_recovered"].as_u64(),
            rate["calls_failed"].as_u64()
        ),
        (Some(0), Some(3))
    );
    assert_eq!(rate["new"], false, "seen two days before the window");
    let first_seen: DateTime<Utc> = rate["first_seen"].as_str().unwrap().parse().unwrap();
    assert!(
        first_seen < want.from - chrono::Duration::days(1),
        "{first_seen}"
    );
    assert_eq!(names(&rate["teams"]["names"]), ["team-a"]);
    assert_eq!(rate["keys"]["count"], 1);

    // Filters: team-b only hit the overload; provider otherprov never failed.
    let team_b = get_json(
        &env,
        &format!("/api/v1/reports/errors?{window}&team=team-b"),
    )
    .await;
    assert_eq!(team_b["patterns"].as_array().unwrap().len(), 1);
    assert_eq!(team_b["patterns"][0]["failures"], 4 + 2 * 2);
    let other = get_json(
        &env,
        &format!("/api/v1/reports/errors?{window}&provider=otherprov"),
    )
    .await;
    assert!(other["patterns"].as_array().unwrap().is_empty());

    // The CSV holds the same values.
    let (status, csv) = get(&env, &format!("/api/v1/reports/errors?{window}&format=csv")).await;
    assert_eq!(status, 200);
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), patterns.len());
    for (row, p) in rows.iter().zip(patterns) {
        assert_eq!(row["signature"], p["signature"].as_str().unwrap());
        assert_eq!(row["template"], p["template"].as_str().unwrap());
        for field in ["failures", "calls_recovered", "calls_failed", "http_status"] {
            assert_eq!(row[field], p[field].to_string(), "{field}");
        }
        assert_eq!(row["new"], p["new"].to_string());
        assert_eq!(row["teams"], p["teams"]["count"].to_string());
        assert_eq!(row["team_names"], names(&p["teams"]["names"]).join(";"));
        assert_eq!(row["first_seen"], p["first_seen"].as_str().unwrap());
    }

    // ---- the drill-down and what recovery worked
    let drill = get_json(
        &env,
        &format!("/api/v1/reports/errors/{}?{window}", want.overloaded),
    )
    .await;
    assert_eq!(drill["pattern"]["failures"], 20);
    let samples = drill["samples"].as_array().unwrap();
    assert!(!samples.is_empty() && samples.len() <= 5, "{samples:?}");
    for s in samples {
        let message = s["message"].as_str().unwrap();
        assert!(message.starts_with("Overloaded (request req_"), "{message}");
        let variables = names(&s["variables"]);
        assert_eq!(variables.len(), 1);
        assert!(message.contains(variables[0]), "{message} {variables:?}");
    }
    let recovery = drill["recovery"].as_array().unwrap();
    let by_target: Vec<(String, String, u64, u64)> = recovery
        .iter()
        .map(|r| {
            (
                r["strategy"].as_str().unwrap().to_string(),
                r["model"].as_str().unwrap().to_string(),
                r["attempts"].as_u64().unwrap(),
                r["successes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_target,
        vec![
            ("fallback_provider".into(), "tg-c".into(), 6, 6),
            ("retry".into(), "tg-a".into(), 6, 4),
            ("fallback_model".into(), "tg-b".into(), 6, 0),
        ],
        "ranked by success rate"
    );
    let row = |strategy: &str| recovery.iter().find(|r| r["strategy"] == strategy).unwrap();
    assert_eq!(row("fallback_provider")["success_rate"], 1.0);
    assert_eq!(row("retry")["success_rate"], 0.6667);
    assert_eq!(row("fallback_model")["success_rate"], 0.0);
    // Retries waited 500 ms (4x) and 1500 ms (2x).
    assert_eq!(row("retry")["mean_wait_ms"], 833.3);
    assert_eq!(row("fallback_provider")["added_latency_ms"], 200.0);
    let cost = |r: &Value| d(r["added_cost"].as_str().unwrap());
    assert_eq!(
        cost(row("fallback_provider")),
        success_cost("tg-c") * Decimal::from(6)
    );
    assert_eq!(cost(row("retry")), success_cost("tg-a") * Decimal::from(4));
    assert_eq!(cost(row("fallback_model")), Decimal::ZERO);
    let (status, csv) = get(
        &env,
        &format!(
            "/api/v1/reports/errors/{}?{window}&format=csv",
            want.overloaded
        ),
    )
    .await;
    assert_eq!(status, 200);
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), recovery.len());
    for (row, r) in rows.iter().zip(recovery) {
        assert_eq!(row["strategy"], r["strategy"].as_str().unwrap());
        assert_eq!(
            d(&row["added_cost_usd"]),
            d(r["added_cost"].as_str().unwrap())
        );
        for field in ["attempts", "successes"] {
            assert_eq!(row[field], r[field].to_string());
        }
        for field in ["success_rate", "mean_wait_ms", "added_latency_ms"] {
            assert_eq!(
                row[field].parse::<f64>().unwrap(),
                r[field].as_f64().unwrap(),
                "{field}"
            );
        }
    }
    // The sample messages' CSV (`table=samples`, the page's "Sample
    // messages"): the JSON's samples, newest first, field for field.
    let (status, csv) = get(
        &env,
        &format!(
            "/api/v1/reports/errors/{}?{window}&format=csv&table=samples",
            want.overloaded
        ),
    )
    .await;
    assert_eq!(status, 200, "{csv}");
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), samples.len(), "{csv}");
    for (row, s) in rows.iter().zip(samples) {
        for field in [
            "provider",
            "model",
            "team",
            "api_key",
            "error_type",
            "message",
            "template",
            "call_id",
            "trace_id",
            "span_id",
        ] {
            assert_eq!(row[field], s[field].as_str().unwrap(), "{field}: {csv}");
        }
        assert_eq!(row["signature"], want.overloaded.to_string());
        assert_eq!(row["http_status"], s["http_status"].to_string());
        assert_eq!(row["variables"], names(&s["variables"]).join(";"));
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(&row["occurred_at"]).unwrap(),
            chrono::DateTime::parse_from_rfc3339(s["occurred_at"].as_str().unwrap()).unwrap()
        );
        // To the millisecond the call was stored with.
        let stored_ms: i64 = env
            .ch(&format!(
                "SELECT occurred_at_ms FROM {{db}}.calls WHERE call_id = '{}' AND kind = 'ai.call.failed'",
                row["call_id"]
            ))
            .await
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(&row["occurred_at"])
                .unwrap()
                .timestamp_millis(),
            stored_ms,
            "{csv}"
        );
    }
    let (status, body) = get(
        &env,
        &format!(
            "/api/v1/reports/errors/{}?{window}&format=csv&table=members",
            want.overloaded
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("table"), "{body}");
    // A merged member's id opens its group.
    let other_member = if want.rate_limit == want.tokens {
        want.requests
    } else {
        want.tokens
    };
    let merged = get_json(
        &env,
        &format!("/api/v1/reports/errors/{other_member}?{window}"),
    )
    .await;
    assert_eq!(merged["pattern"]["signature"], want.rate_limit.to_string());
    assert_eq!(merged["pattern"]["failures"], 3);
    assert_eq!(merged["member_templates"].as_array().unwrap().len(), 2);
    let (status, body) = get(
        &env,
        &format!("/api/v1/reports/errors/00000000000000ab?{window}"),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // ---- breakers
    let breakers = get_json(&env, &format!("/api/v1/reports/breakers?{window}")).await;
    let states: Vec<(&str, &str, &str, u64)> = breakers["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["provider"].as_str().unwrap(),
                b["model"].as_str().unwrap(),
                b["state"].as_str().unwrap(),
                b["transitions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("otherprov", "", "open", 1),
            ("testprov", "tg-a", "closed", 3),
            ("testprov", "tg-b", "open", 0),
        ]
    );
    let timeline = breakers["transitions"].as_array().unwrap();
    let steps: Vec<(&str, &str)> = timeline
        .iter()
        .map(|t| {
            (
                t["from_state"].as_str().unwrap(),
                t["to_state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
            ("closed", "open")
        ]
    );
    assert_eq!(timeline[0]["failure_rate"], 0.6);
    assert_eq!(timeline[0]["signature"], want.overloaded.to_string());
    assert_eq!(timeline[1]["signature"], Value::Null);
    let at: DateTime<Utc> = timeline[0]["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(at.timestamp_millis() % 1_000, 250, "millisecond precision");
    let (_, csv) = get(
        &env,
        &format!("/api/v1/reports/breakers?{window}&format=csv"),
    )
    .await;
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), timeline.len());
    for (row, t) in rows.iter().zip(timeline) {
        let at: DateTime<Utc> = row["at"].parse().unwrap();
        assert_eq!(
            at,
            t["at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(row["to_state"], t["to_state"].as_str().unwrap());
        assert_eq!(row["failures"], t["failures"].to_string());
    }
    let (_, csv) = get(
        &env,
        &format!("/api/v1/reports/breakers?{window}&format=csv&table=states"),
    )
    .await;
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["state"], "open");
    assert_eq!(rows[2]["model"], "tg-b");
    let filtered = get_json(
        &env,
        &format!("/api/v1/reports/breakers?{window}&provider=otherprov"),
    )
    .await;
    assert_eq!(filtered["breakers"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["transitions"].as_array().unwrap().len(), 1);

    // ---- bad parameters name themselves
    for (path, parameter) in [
        ("/api/v1/reports/errors?bucket=7s", "bucket"),
        ("/api/v1/reports/errors?team=a&team=b", "team"),
        ("/api/v1/reports/errors?colour=red", "colour"),
        (
            "/api/v1/reports/errors?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "from",
        ),
        ("/api/v1/reports/errors/ABC?from=x", "signature"),
        (
            "/api/v1/reports/errors/00000000000000ab?format=pdf",
            "format",
        ),
        ("/api/v1/reports/breakers?org=o", "org"),
        ("/api/v1/reports/breakers?table=both", "table"),
    ] {
        let (status, body) = get(&env, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
    }
}

/// The cells of rows of `class` in the table with `id` of a DOM, by the
/// class of each cell: a DOM dump is regular enough to read by its markup.
fn dom_rows(dom: &str, table_id: &str, row_class: &str) -> Vec<String> {
    let start = dom
        .find(&format!("id=\"{table_id}\""))
        .unwrap_or_else(|| panic!("no table {table_id}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    table
        .split(&format!("<tr class=\"{row_class}\""))
        .skip(1)
        .map(|r| r[..r.find("</tr>").unwrap()].to_string())
        .collect()
}

/// The first element with `class` in `html`: its content, up to the
/// first end of a cell or span (a formatted value is one span).
fn cell_html(html: &str, class: &str) -> String {
    let at = html
        .find(&format!("class=\"{class}\""))
        .or_else(|| html.find(&format!(" {class}\"")))
        .unwrap_or_else(|| panic!("no {class} in {html}"));
    let rest = &html[at..];
    let open = rest.find('>').unwrap() + 1;
    let end = ["</td>", "</span>"]
        .iter()
        .filter_map(|t| rest[open..].find(t))
        .min()
        .unwrap();
    rest[open..open + end].to_string()
}

/// The text of the first element with `class` in `html` (markup inside
/// it dropped).
fn cell(html: &str, class: &str) -> String {
    support::chromium::text_of(&cell_html(html, class))
        .trim()
        .to_string()
}

/// A rate shown as a percentage: the exact value (six places) on hover,
/// the text rounded to two significant decimals at most.
fn assert_percent(html: &str, class: &str, rate: f64) {
    let inner = cell_html(html, class);
    let title = &inner[inner.find("title=\"").unwrap() + 7..];
    let title: f64 = title[..title.find("%\"").unwrap()].parse().unwrap();
    assert!((title - rate * 100.0).abs() < 1e-6, "{inner}");
    let shown: f64 = cell(html, class).trim_end_matches('%').parse().unwrap();
    assert!((shown - rate * 100.0).abs() <= 0.05, "{inner}");
}

fn plain(n: &Value) -> String {
    // The page writes thousands with commas.
    let n = n.as_u64().unwrap().to_string();
    let mut out = String::new();
    for (i, c) in n.chars().enumerate() {
        if i > 0 && (n.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn dump(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = support::chromium::run_chromium(url, profile.path(), &["--dump-dom"]);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_pages_in_chromium() {
    let Setup { env, want } = setup("errors_pages").await;
    let form_time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M").to_string();
    let form = format!(
        "range=custom&from={}&to={}",
        form_time(want.from),
        form_time(want.to)
    );
    let window = format!("from={}&to={}", rfc(want.from), rfc(want.to));
    let api = get_json(&env, &format!("/api/v1/reports/errors?{window}")).await;

    // The list.
    let url = format!("{}/sre/errors?{form}", env.api_url());
    let dom = tokio::task::spawn_blocking(move || dump(&url))
        .await
        .unwrap();
    let rows = dom_rows(&dom, "patterns", "pattern-row");
    let patterns = api["patterns"].as_array().unwrap();
    assert_eq!(rows.len(), patterns.len(), "one row per pattern");
    for (row, p) in rows.iter().zip(patterns) {
        let id = p["signature"].as_str().unwrap();
        assert!(row.contains(&format!("data-signature=\"{id}\"")), "{row}");
        assert_eq!(
            cell(row, "num failures"),
            plain(&p["failures"]),
            "{id} failures"
        );
        assert_eq!(
            cell(row, "num recovered"),
            plain(&p["calls_recovered"]),
            "{id}"
        );
        assert_eq!(cell(row, "num failed"), plain(&p["calls_failed"]), "{id}");
        assert_eq!(cell(row, "teams"), plain(&p["teams"]["count"]), "{id}");
        assert_eq!(cell(row, "keys"), plain(&p["keys"]["count"]), "{id}");
        assert_eq!(
            row.contains("badge new"),
            p["new"] == true,
            "{id} new mark: {row}"
        );
        let drawn = p["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["failures"].as_u64().unwrap() > 0)
            .count();
        assert!(
            row.contains(&format!("data-points=\"{drawn}\"")),
            "{id}: the sparkline draws every bucket with failures: {row}"
        );
    }

    // The drill-down's recovery table.
    let drill = get_json(
        &env,
        &format!("/api/v1/reports/errors/{}?{window}", want.overloaded),
    )
    .await;
    let url = format!("{}/sre/errors/{}?{form}", env.api_url(), want.overloaded);
    let dom = tokio::task::spawn_blocking(move || dump(&url))
        .await
        .unwrap();
    let rows = dom_rows(&dom, "recovery", "recovery-row");
    let recovery = drill["recovery"].as_array().unwrap();
    assert_eq!(rows.len(), recovery.len());
    for (row, r) in rows.iter().zip(recovery) {
        let strategy = r["strategy"].as_str().unwrap();
        assert!(
            row.contains(&format!("data-strategy=\"{strategy}\"")),
            "{row}"
        );
        assert_eq!(
            cell(row, "num attempts"),
            plain(&r["attempts"]),
            "{strategy}"
        );
        assert_eq!(
            cell(row, "num successes"),
            plain(&r["successes"]),
            "{strategy}"
        );
        assert_percent(row, "num success-rate", r["success_rate"].as_f64().unwrap());
        // Dollars and cents, every digit on hover.
        let exact = r["added_cost"].as_str().unwrap();
        assert!(
            row.contains(&format!("title=\"{exact}\"")),
            "{strategy}: {row}"
        );
        let cents = d(exact)
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        let shown = if cents.is_zero() && !d(exact).is_zero() {
            "<$0.01".to_string()
        } else {
            format!("${cents:.2}")
        };
        assert_eq!(cell(row, "num added-cost"), shown, "{strategy}");
    }
    assert!(dom.contains("data-points=\""), "the chart is drawn");
    assert!(
        dom_rows(&dom, "samples", "sample-row").len() == drill["samples"].as_array().unwrap().len()
    );
    // The sample messages link their CSV: the API's drill-down, same window.
    let at = dom.find("id=\"samples-csv-link\" href=\"").unwrap()
        + "id=\"samples-csv-link\" href=\"".len();
    let link = dom[at..at + dom[at..].find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(
        link.starts_with(&format!("/api/v1/reports/errors/{}?", want.overloaded))
            && link.ends_with("&format=csv&table=samples"),
        "{link}"
    );
    let (status, csv) = get(&env, &link).await;
    assert_eq!(status, 200, "{csv}");
    assert_eq!(
        csv_rows(&csv).len(),
        drill["samples"].as_array().unwrap().len(),
        "{csv}"
    );

    // Breakers.
    let breakers = get_json(&env, &format!("/api/v1/reports/breakers?{window}")).await;
    let url = format!("{}/sre/breakers?{form}", env.api_url());
    let dom = tokio::task::spawn_blocking(move || dump(&url))
        .await
        .unwrap();
    let rows = dom_rows(&dom, "breaker-states", "state-row");
    let states = breakers["breakers"].as_array().unwrap();
    assert_eq!(rows.len(), states.len());
    for (row, b) in rows.iter().zip(states) {
        assert!(
            row.contains(&format!(">{}<", b["state"].as_str().unwrap())),
            "{row}"
        );
        assert_eq!(cell(row, "num transitions"), plain(&b["transitions"]));
    }
    let rows = dom_rows(&dom, "breaker-transitions", "transition-row");
    let timeline = breakers["transitions"].as_array().unwrap();
    assert_eq!(rows.len(), timeline.len());
    for (row, t) in rows.iter().zip(timeline) {
        assert_eq!(cell(row, "num failures"), plain(&t["failures"]));
        assert_percent(row, "num failure-rate", t["failure_rate"].as_f64().unwrap());
    }
    assert!(
        dom.contains("data-rows=\"3\""),
        "a timeline strip per breaker, moved or not"
    );
    for (path, name) in [
        (format!("/sre/errors?{form}"), "sre_errors.png"),
        (
            format!("/sre/errors/{}?{form}", want.overloaded),
            "sre_error_pattern.png",
        ),
        (format!("/sre/breakers?{form}"), "sre_breakers.png"),
    ] {
        support::chromium::screenshot(&format!("{}{path}", env.api_url()), name).await;
    }
    // The navigation reaches the three SRE pages, keeping the window.
    let carried = format!(
        "range=custom&amp;from={}&amp;to={}",
        form_time(want.from).replace(':', "%3A"),
        form_time(want.to).replace(':', "%3A")
    );
    for href in ["/sre/latency", "/sre/errors", "/sre/breakers"] {
        assert!(
            dom.contains(&format!("href=\"{href}?{carried}\"")),
            "{href}?{carried}"
        );
    }
}
