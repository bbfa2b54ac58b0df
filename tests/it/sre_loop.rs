//! The SRE loop of issue 12 end to end, every part a real process: the
//! proxy in front of the mock upstream, `tollgate process` (calls fold,
//! error-pattern views, learners, breakers) on a real Kafka and ClickHouse,
//! and the API. Decisions are not published by hand here: the processors
//! learn them from the proxy's own events.
//!
//! - learned recovery: model A fails with overload, fallback B fails too,
//!   fallback C succeeds; the recovery learner ranks C first and the proxy
//!   then goes A -> C; the Errors API shows the success rates the mock saw;
//! - the breaker cycle: a model failing 100% is taken out of rotation
//!   (time from the threshold-crossing failure to the first call that no
//!   longer tries it is printed), and comes back through half-open probes
//!   once it recovers.

use std::time::{Duration, Instant};

use chrono::DurationRound;
use serde_json::{json, Value};

use crate::proxy::{call, Proxy, UPSTREAM_KEY_VAR};
use tollgate_contract::signature::{signature, ErrorInput};

/// Providers of the OpenAI API that never retry, so every failure is one
/// attempt and every fallback is the proxy's choice.
fn providers(fallbacks: &str) -> String {
    format!(
        r#"fallbacks = {{ {fallbacks} }}
breaker = {{ failures = 0 }}

[proxy.providers.mocknr]
kind = "openai"
base_url = "@MOCK@"
api_key_env = "{UPSTREAM_KEY_VAR}"
models = ["nr-*"]
max_retries = 0
first_byte_timeout_ms = 3000

[proxy.providers.mockalt]
kind = "openai"
base_url = "@MOCK@"
api_key_env = "{UPSTREAM_KEY_VAR}"
models = ["alt-*"]
max_retries = 0
first_byte_timeout_ms = 3000
"#
    )
}

/// Requests the mock saw for `model`.
async fn requests(proxy: &Proxy, model: &str) -> u64 {
    proxy
        .http
        .get(format!(
            "http://127.0.0.1:{}/mock/faults/{model}",
            proxy.mock_port
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["requests"]
        .as_u64()
        .unwrap()
}

pub(crate) async fn set_fault(proxy: &Proxy, model: &str, fail: Option<&str>) {
    let url = format!("http://127.0.0.1:{}/mock/faults/{model}", proxy.mock_port);
    let response = match fail {
        Some(mode) => proxy.http.put(url).json(&json!({ "fail": mode })).send(),
        None => proxy.http.delete(url).send(),
    }
    .await
    .unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
}

/// One chat call that must succeed (through a fallback if need be).
async fn ok_call(proxy: &Proxy, key: &str, model: &str) {
    let response = proxy.chat(key, model, &[]).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
}

async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Model A fails with Anthropic-style overload, fallback B with OpenAI's
/// 500, C works. Until the learner has `min_samples` of each, calls go
/// A -> B -> C; then the learner publishes C first and calls go A -> C,
/// and B is no longer asked. The Errors API's recovery table has the
/// counts the mock saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_learns_from_the_processors_which_fallback_works() {
    const A: &str = "nr-a-fail-anthropic_overloaded";
    const B: &str = "nr-b-fail-openai_server_error_request_id";
    const C: &str = "alt-c";
    let config = format!(
        "{}\n[processor.recovery]\nevery_ms = 300\nmin_samples = 5\n[processor.patterns]\nevery_ms = 300\n",
        providers(&format!(r#""{A}" = ["{B}", "{C}"]"#))
    );
    let mut proxy = Proxy::start("sre_learn", &config, None).await;
    proxy.run_proxy().await;
    // Calls fold, views and learners; no breaker (it would take A out).
    proxy.env.spawn("process", &["process", "--folds", "calls"]);
    proxy.env.start_api().await;
    let key = proxy.key("acme", "search", "alice", None);

    // Learning: every call tries all three.
    for _ in 0..6 {
        ok_call(&proxy, &key, A).await;
    }
    assert_eq!(
        (
            requests(&proxy, A).await,
            requests(&proxy, B).await,
            requests(&proxy, C).await
        ),
        (6, 6, 6)
    );

    // Once the plan is out, a call goes A -> C. Calls made before the
    // proxy has it still ask B; poll until one call does not.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut calls = 6u64;
    loop {
        let before = requests(&proxy, B).await;
        ok_call(&proxy, &key, A).await;
        calls += 1;
        if requests(&proxy, B).await == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy still asks B after {calls} calls: no learned plan within 60 s (processor log: {})",
            std::fs::read_to_string(proxy.env.log_path("process")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it stays so.
    let b_asked = requests(&proxy, B).await;
    for _ in 0..3 {
        ok_call(&proxy, &key, A).await;
        calls += 1;
    }
    assert_eq!(requests(&proxy, B).await, b_asked, "B asked again");
    let (a_asked, c_asked) = (requests(&proxy, A).await, requests(&proxy, C).await);
    assert_eq!((a_asked, c_asked), (calls, calls));

    // The last call's events: A first, then C as sequence 2.
    let events = proxy.events((a_asked + b_asked + c_asked) as usize);
    let last_c = events.iter().rev().find(|e| call(e)["model"] == C).unwrap();
    assert_eq!(call(last_c)["recovery"]["sequence"], 2, "{last_c:#}");
    assert_eq!(call(last_c)["recovery"]["strategy"], "fallback_provider");
    let a_event = events.iter().find(|e| call(e)["model"] == A).unwrap();
    let error: tollgate_contract::ProviderError =
        serde_json::from_value(call(a_event)["error"].clone()).unwrap();
    let sig = signature(&ErrorInput::from_call(
        "mocknr",
        call(a_event)["http_status"].as_u64().unwrap() as u16,
        &error,
    ))
    .id
    .to_string();

    // The Errors API: A's pattern with every call recovered, and the
    // recovery table with the mock's counts.
    let url = format!(
        "{}/api/v1/reports/errors/{sig}?from={}&to={}",
        proxy.env.api_url(),
        (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        (chrono::Utc::now() + chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M:%SZ"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = get_json(&url).await;
        if report["pattern"]["calls_recovered"] == calls {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the Errors API never showed {calls} recovered calls: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(report["pattern"]["failures"], a_asked, "{report:#}");
    assert_eq!(report["pattern"]["calls_failed"], 0);
    let row = |model: &str| {
        report["recovery"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == model)
            .unwrap_or_else(|| panic!("no recovery row for {model}: {report:#}"))
            .clone()
    };
    let (b, c) = (row(B), row(C));
    assert_eq!(
        (b["attempts"].as_u64(), b["successes"].as_u64()),
        (Some(b_asked), Some(0))
    );
    assert_eq!(
        (c["attempts"].as_u64(), c["successes"].as_u64()),
        (Some(c_asked), Some(c_asked))
    );
    assert_eq!(
        (b["strategy"].as_str(), c["strategy"].as_str()),
        (Some("fallback_model"), Some("fallback_provider"))
    );
    assert_eq!(c["success_rate"], 1.0);
    assert_eq!(b["success_rate"], 0.0);
}

/// A model failing every call is taken out of rotation by the fleet
/// breaker, calls go to its fallback, and it comes back through half-open
/// probes once it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_is_taken_out_and_brought_back_by_the_fleet_breaker() {
    const A: &str = "nr-breaker-a";
    const C: &str = "alt-breaker-c";
    let config = format!(
        "{}\n[breakers]\nminimum_calls = 20\nopen_secs = 2\nhalf_open_probes = 2\nprobes_per_proxy = 2\nmax_wait_in_half_open_secs = 10\nper_provider = false\n",
        providers(&format!(r#""{A}" = ["{C}"]"#))
    );
    let mut proxy = Proxy::start("sre_breaker", &config, None).await;
    proxy.run_proxy().await;
    proxy
        .env
        .spawn("process", &["process", "--folds", "calls,breakers"]);
    let key = proxy.key("acme", "search", "alice", None);
    // The breaker judges from the end of the topic and publishes once it
    // holds the lease: wait for both.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(proxy.env.log_path("process"))
        .unwrap_or_default()
        .contains("breaker lease acquired")
    {
        assert!(
            Instant::now() < deadline,
            "the breaker never took its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_fault(&proxy, A, Some("529")).await;
    let failed_before = requests(&proxy, A).await;
    // Each call fails on A and is served by C; the 20th failure (20 calls
    // in the window, all failed) crosses the threshold.
    let mut crossed = false;
    let mut first_skip_sent = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first_skip_sent.is_none() {
        let before = requests(&proxy, A).await;
        let sent = chrono::Utc::now();
        ok_call(&proxy, &key, A).await;
        let after = requests(&proxy, A).await;
        if after == before {
            assert!(crossed, "A skipped before 20 failures");
            first_skip_sent = Some(sent);
        }
        crossed |= after - failed_before >= 20;
        assert!(Instant::now() < deadline, "A never taken out of rotation");
    }
    // From the threshold-crossing failure (the 20th failed attempt's event,
    // stamped when the proxy saw the failure) to the first call that
    // skipped A.
    let asked = requests(&proxy, A).await + requests(&proxy, C).await;
    let events = proxy.events(asked as usize);
    let mut failures: Vec<chrono::DateTime<chrono::Utc>> = events
        .iter()
        .filter(|e| call(e)["model"] == A && e["kind"] == "ai.call.failed")
        .map(|e| e["occurred_at"].as_str().unwrap().parse().unwrap())
        .collect();
    failures.sort();
    assert_eq!(
        failures.len() as u64,
        requests(&proxy, A).await - failed_before
    );
    let elapsed = first_skip_sent.unwrap() - failures[19];
    println!(
        "breaker: {} ms from the threshold-crossing failure to the first call that skipped the model ({} failed attempts reached A; goal < 1000 ms)",
        elapsed.num_milliseconds(),
        failures.len()
    );

    // Recovery: half-open lets probes through, they succeed, it closes and
    // A serves again.
    set_fault(&proxy, A, None).await;
    let served_before = requests(&proxy, A).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_a_row = 0;
    while in_a_row < 5 {
        let before = requests(&proxy, A).await;
        ok_call(&proxy, &key, A).await;
        if requests(&proxy, A).await > before {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        assert!(
            Instant::now() < deadline,
            "A never came back (asked {} times since it recovered)",
            requests(&proxy, A).await - served_before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let transitions = proxy
        .env
        .ch(&format!(
            "SELECT from_state, to_state FROM {{db}}.breaker_transitions WHERE model = '{A}' ORDER BY at_ms FORMAT TSV"
        ))
        .await;
    let transitions: Vec<&str> = transitions.lines().collect();
    assert_eq!(
        transitions,
        vec!["closed\topen", "open\thalf_open", "half_open\tclosed"],
        "breaker_transitions"
    );
}

/// Every real error shape of the mock, with ids, numbers and waits that
/// vary per request, plus a timeout and a disconnect, goes through the
/// proxy, the processor and the Errors API as exactly one pattern each; a
/// shape first seen after the others is the only one marked new in a
/// window that starts after the others were first seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_real_error_shape_is_one_pattern_and_a_new_shape_is_marked_new() {
    use tollgate_mock_upstream::ErrorShape;
    let mut proxy = Proxy::start("sre_shapes", &providers(""), None).await;
    proxy.run_proxy().await;
    proxy.env.spawn("process", &["process", "--folds", "calls"]);
    proxy.env.start_api().await;
    let key = proxy.key("acme", "search", "alice", None);

    let mut models: Vec<String> = ErrorShape::ALL
        .iter()
        .map(|shape| format!("nr-{}-fail-{}", shape.name().replace('_', ""), shape.name()))
        .collect();
    models.push("nr-cut-fail-disconnect".into());
    models.push("nr-slow-fail-timeout".into());
    let (late, early) = models.split_last().unwrap();
    let mut expected_failures = 0u64;
    for model in early {
        let calls = if model.contains("timeout") { 2 } else { 3 };
        for _ in 0..calls {
            // A disconnect comes after a 200 status line: read to the end.
            let _ = proxy.chat(&key, model, &[]).await.bytes().await;
            expected_failures += 1;
        }
    }
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let report_url = |from: chrono::DateTime<chrono::Utc>| {
        format!(
            "{}/api/v1/reports/errors?from={}&to={}",
            proxy.env.api_url(),
            fmt(from),
            fmt(chrono::Utc::now() + chrono::Duration::minutes(5))
        )
    };
    let wait_for = |url: String, patterns: usize, failures: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report = get_json(&url).await;
            let got: u64 = report["patterns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["failures"].as_u64().unwrap())
                .sum();
            if got == failures {
                assert_eq!(
                    report["patterns"].as_array().unwrap().len(),
                    patterns,
                    "{report:#}"
                );
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "want {failures} failures: {report:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let report = wait_for(report_url(hour_ago), early.len(), expected_failures).await;
    for pattern in report["patterns"].as_array().unwrap() {
        let model = pattern["models"][0].as_str().unwrap();
        let want = if model.contains("timeout") { 2 } else { 3 };
        assert_eq!(pattern["failures"], want, "{pattern:#}");
        assert_eq!(pattern["calls_failed"], want, "{pattern:#}");
        assert_eq!(
            pattern["models"].as_array().unwrap().len(),
            1,
            "{pattern:#}"
        );
        assert_eq!(pattern["new"], true, "{pattern:#}");
    }

    // A window that starts after every early pattern was first seen: the
    // late shape is new there, the others not. Report windows start on a
    // whole minute, so the second round waits for the next one.
    let now = chrono::Utc::now();
    let after_early =
        now.duration_trunc(chrono::Duration::minutes(1)).unwrap() + chrono::Duration::minutes(1);
    while chrono::Utc::now() < after_early {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for model in models.iter() {
        let calls = if model.contains("timeout") { 2 } else { 3 };
        for _ in 0..calls {
            let _ = proxy.chat(&key, model, &[]).await.bytes().await;
        }
    }
    let late_calls = if late.contains("timeout") { 2 } else { 3 };
    let report = wait_for(
        report_url(after_early),
        models.len(),
        expected_failures + late_calls,
    )
    .await;
    for pattern in report["patterns"].as_array().unwrap() {
        let is_late = pattern["models"][0] == late.as_str();
        assert_eq!(pattern["new"], is_late, "{pattern:#}");
    }
    // And over the whole hour the early shapes count both rounds.
    wait_for(
        report_url(hour_ago),
        models.len(),
        2 * expected_failures + late_calls,
    )
    .await;
}
