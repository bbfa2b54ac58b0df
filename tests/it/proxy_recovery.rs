//! The proxy's side of error patterns (issue 12): the recovery facts and
//! signatures on every attempt event, retries and fallbacks ordered by a
//! learned recovery plan, and the fleet and local breakers, against the
//! mock upstream's real error shapes and a real Kafka. Decisions are
//! published by hand here; the processors that publish them have tests of
//! their own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::proxy::{call, publish_decision, Proxy, UPSTREAM_KEY_VAR};
use tollgate_contract::signature::{signature, ErrorInput};
use tollgate_mock_upstream::ErrorShape;

/// Two providers of the OpenAI API that never retry (so every failure is
/// one attempt) and the chain A (fails, overloaded) -> B (fails, 500) -> C.
fn config(extra: &str) -> String {
    format!(
        r#"fallbacks = {{ "nr-a-fail-anthropic_overloaded" = ["nr-b-fail-openai_server_error_request_id", "alt-c"], "nr-open" = ["nr-other", "alt-x"], "nr-half" = ["alt-h"] }}
{extra}

[proxy.providers.mocknr]
kind = "openai"
base_url = "@MOCK@"
api_key_env = "{UPSTREAM_KEY_VAR}"
models = ["nr-*"]
max_retries = 0
first_byte_timeout_ms = 1500

[proxy.providers.mockalt]
kind = "openai"
base_url = "@MOCK@"
api_key_env = "{UPSTREAM_KEY_VAR}"
models = ["alt-*"]
max_retries = 0
first_byte_timeout_ms = 1500
"#
    )
}

const A: &str = "nr-a-fail-anthropic_overloaded";
const B: &str = "nr-b-fail-openai_server_error_request_id";
const C: &str = "alt-c";
/// No local breaker: these tests fail the same model on purpose.
const NO_LOCAL_BREAKER: &str = "breaker = { failures = 0 }";

fn recovery(event: &Value) -> &Value {
    &call(event)["recovery"]
}

/// The contract's signature of the event's error, as ingest checks it.
fn contract_signature(event: &Value) -> String {
    let c = call(event);
    let error: tollgate_contract::ProviderError =
        serde_json::from_value(c["error"].clone()).unwrap();
    signature(&ErrorInput::from_call(
        c["provider"].as_str().unwrap(),
        c["http_status"].as_u64().unwrap() as u16,
        &error,
    ))
    .id
    .to_string()
}

/// Every event passes ingest's validation (which recomputes the signature).
fn assert_valid(events: &[Value]) {
    for event in events {
        let parsed = tollgate_contract::parse_event(
            event.clone(),
            chrono::Utc::now(),
            &tollgate_contract::Limits::default(),
        );
        assert!(parsed.is_ok(), "{:?}: {event:#}", parsed.err());
    }
}

/// Requests the mock saw for `model`.
async fn model_requests(proxy: &Proxy, model: &str) -> u64 {
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

/// Every event so far, when they are the attempts the mock saw for
/// `models` plus `refusals` calls the proxy answered itself.
async fn events_now(proxy: &Proxy, models: &[&str], refusals: u64) -> Vec<Value> {
    let mut want = refusals;
    for model in models {
        want += model_requests(proxy, model).await;
    }
    let events = proxy.events(want as usize);
    assert_eq!(events.len() as u64, want, "{events:#?}");
    events
}

/// Poll `f` until it is true (every 100 ms, at most 20 s).
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + crate::support::PATIENCE;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_call_through_two_failures_carries_the_recovery_facts_of_the_docs_table() {
    let mut proxy = Proxy::start("recovery_facts", &config(NO_LOCAL_BREAKER), None).await;
    proxy.run_proxy().await;
    let key = proxy.key("acme", "facts", "ann", None);
    let response = proxy.chat(&key, A, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["model"], C);
    let events = proxy.events(3);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_valid(&events);
    let (a, b, c) = (&events[0], &events[1], &events[2]);
    assert_eq!(
        [a, b, c].map(|e| call(e)["model"].as_str().unwrap()),
        [A, B, C]
    );
    assert_eq!(
        [a, b, c].map(|e| e["kind"].as_str().unwrap()),
        ["ai.call.failed", "ai.call.failed", "ai.call.completed"]
    );
    let sig_a = call(a)["error"]["signature"].as_str().unwrap().to_string();
    assert_eq!(sig_a, contract_signature(a));
    assert_eq!(
        call(b)["error"]["signature"].as_str().unwrap(),
        contract_signature(b)
    );
    assert_ne!(call(b)["error"]["signature"], call(a)["error"]["signature"]);
    assert_eq!(
        *recovery(a),
        json!({"sequence": 1, "wait_ms": 0, "strategy": "first", "from_provider": "", "from_model": "", "last": false})
    );
    for (event, sequence, strategy, last) in [
        (b, 2, "fallback_model", false),
        (c, 3, "fallback_provider", true),
    ] {
        let r = recovery(event);
        assert_eq!(r["sequence"], sequence, "{r}");
        assert_eq!(r["strategy"], strategy, "{r}");
        assert_eq!(r["from_signature"], sig_a.as_str(), "{r}");
        assert_eq!(r["from_provider"], "mocknr", "{r}");
        assert_eq!(r["from_model"], A, "{r}");
        assert_eq!(r["last"], last, "{r}");
        assert_eq!(call(event)["requested_model"], A);
        assert_eq!(call(event)["fallback_of"], call(a)["call_id"]);
    }
    assert_eq!(call(c)["provider"], "mockalt");
    assert!(call(c).get("error").is_none());
}

#[tokio::test]
async fn a_retry_that_succeeds_records_its_wait_and_a_clean_call_is_first_and_last() {
    let mut proxy = Proxy::start("recovery_retry", NO_LOCAL_BREAKER, None).await;
    proxy.run_proxy().await;
    let key = proxy.key("acme", "retry", "ben", None);
    assert_eq!(proxy.chat(&key, "gpt-4o-mini", &[]).await.status(), 200);
    let scenario = crate::support::unique("retry");
    let headers = [
        ("x-mock-fail", "503"),
        ("x-mock-scenario", scenario.as_str()),
        ("x-mock-fail-times", "1"),
    ];
    assert_eq!(
        proxy.chat(&key, "gpt-4o-mini", &headers).await.status(),
        200
    );
    let events = proxy.events(3);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_valid(&events);
    assert_eq!(
        *recovery(&events[0]),
        json!({"sequence": 1, "wait_ms": 0, "strategy": "first", "from_provider": "", "from_model": "", "last": true})
    );
    let (failed, retried) = (&events[1], &events[2]);
    assert_eq!(recovery(failed)["last"], false);
    assert_eq!(call(failed)["http_status"], 503);
    let r = recovery(retried);
    assert_eq!(r["sequence"], 2, "{r}");
    assert_eq!(r["strategy"], "retry", "{r}");
    assert_eq!(r["last"], true, "{r}");
    assert_eq!(r["from_model"], "gpt-4o-mini", "{r}");
    assert_eq!(r["from_signature"], call(failed)["error"]["signature"]);
    // The backoff (backoff_base_ms 20: 10 to 20 ms) is in the wait.
    assert!(r["wait_ms"].as_u64().unwrap() >= 10, "{r}");
    assert_eq!(call(retried)["attempt"], 2);
    assert_eq!(call(retried)["call_id"], call(failed)["call_id"]);
    // `occurred_at` is when an attempt finished, not when its event was
    // made after the backoff: the retry starts (its end less its duration)
    // no earlier than the failure's end plus the wait (a trial's failed
    // attempt was stamped after the wait, 5 ms before the next one's end).
    let at = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["occurred_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let duration = |e: &Value| call(e)["duration_ms"].as_i64().unwrap();
    let wait = r["wait_ms"].as_i64().unwrap();
    assert!(
        at(retried) - duration(retried) + 2 >= at(failed) + wait,
        "failed ended {}, waited {wait} ms; the retry ended {} after {} ms",
        at(failed),
        at(retried),
        duration(retried)
    );
}

#[tokio::test]
async fn each_real_error_shape_keeps_one_signature_whatever_its_ids_and_numbers() {
    let mut proxy = Proxy::start("recovery_shapes", &config(NO_LOCAL_BREAKER), None).await;
    proxy.run_proxy().await;
    let key = proxy.key("acme", "shapes", "cat", None);
    const CALLS: usize = 3;
    for shape in ErrorShape::ALL {
        for _ in 0..CALLS {
            let response = proxy
                .chat(&key, "nr-shapes", &[("x-mock-error-shape", shape.name())])
                .await;
            assert_eq!(
                response.status().as_u16(),
                shape.status(),
                "{}",
                shape.name()
            );
        }
    }
    let want = ErrorShape::ALL.len() * CALLS;
    let events = proxy.events(want);
    assert_eq!(events.len(), want);
    assert_valid(&events);
    let mut by_shape: BTreeMap<&str, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        let shape = ErrorShape::ALL[i / CALLS].name();
        let c = call(event);
        assert_eq!(
            c["error"]["signature"].as_str().unwrap(),
            contract_signature(event)
        );
        let entry = by_shape.entry(shape).or_default();
        entry
            .0
            .insert(c["error"]["signature"].as_str().unwrap().to_string());
        entry
            .1
            .insert(c["error"]["message"].as_str().unwrap().to_string());
    }
    let mut all = BTreeSet::new();
    for (shape, (signatures, messages)) in &by_shape {
        assert_eq!(
            signatures.len(),
            1,
            "{shape}: {signatures:?} from {messages:#?}"
        );
        if messages
            .iter()
            .any(|m| m.chars().any(|c| c.is_ascii_digit()))
        {
            assert_eq!(
                messages.len(),
                CALLS,
                "{shape}: the mock must vary {messages:?}"
            );
        }
        all.extend(signatures.iter().cloned());
    }
    assert_eq!(
        all.len(),
        ErrorShape::ALL.len(),
        "shapes share a signature: {by_shape:#?}"
    );
    // OpenAI's context_length_exceeded keeps its type (invalid_request_error);
    // its message tells it apart.
    let context = &events[3 * CALLS];
    assert_eq!(call(context)["error"]["type"], "invalid_request_error");
    assert!(call(context)["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("This model's maximum context length is 128000 tokens."));
}

#[tokio::test]
async fn a_learned_plan_sends_the_next_calls_straight_to_the_fallback_that_worked() {
    let mut proxy = Proxy::start("recovery_learned", &config(NO_LOCAL_BREAKER), None).await;
    proxy.run_proxy().await;
    let key = proxy.key("acme", "learned", "dan", None);
    // Configured order: A, B, C.
    assert_eq!(proxy.chat(&key, A, &[]).await.status(), 200);
    let events = proxy.events(3);
    assert_eq!(call(&events[1])["model"], B);
    let sig_a = call(&events[0])["error"]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    // The learner found that C works for A's failure; B never does.
    let subject = format!("recovery/mocknr/{A}/{sig_a}");
    let plan = json!({"subject": subject, "action": "allow", "recovery": {
    "signature": sig_a, "provider": "mocknr", "model": A, "as_of": chrono::Utc::now(),
    "order": [
        {"strategy": "fallback_provider", "provider": "mockalt", "model": C, "attempts": 40, "successes": 40, "lower_bound": 0.91},
        // Not configured for A: never tried.
        {"strategy": "fallback_model", "provider": "mocknr", "model": "nr-elsewhere", "attempts": 40, "successes": 40, "lower_bound": 0.9}
    ]}});
    publish_decision(
        &proxy.brokers,
        &proxy.env.decisions_topic,
        &subject,
        Some(plan),
    )
    .await;
    let published = Instant::now();
    let (p, k) = (&proxy, &key);
    until("the plan reorders the fallbacks", || async move {
        let before = model_requests(p, B).await;
        assert_eq!(p.chat(k, A, &[]).await.status(), 200);
        model_requests(p, B).await == before
    })
    .await;
    println!(
        "learned order applied {} ms after publish",
        published.elapsed().as_millis()
    );
    // Once applied, it stays: A -> C directly.
    assert_eq!(proxy.chat(&key, A, &[]).await.status(), 200);
    let events = events_now(&proxy, &[A, B, C], 0).await;
    assert_valid(&events);
    let last_call: Vec<&Value> = events.iter().rev().take(2).rev().collect();
    assert_eq!(call(last_call[0])["model"], A);
    assert_eq!(call(last_call[1])["model"], C);
    let r = recovery(last_call[1]);
    assert_eq!(r["sequence"], 2, "{r}");
    assert_eq!(r["strategy"], "fallback_provider");
    assert_eq!(r["from_signature"], sig_a.as_str());
    assert_eq!(r["last"], true);
    assert_eq!(model_requests(&proxy, "nr-elsewhere").await, 0);
    assert!(proxy.metric("tollgate_proxy_recovery_reorders_total").await >= 2);
}

fn breaker_record(subject: &str, state: &str, generation: u64, probes: u32, extra: Value) -> Value {
    let mut record = json!({"subject": subject, "action": if state == "closed" { "allow" } else { "reroute" },
        "breaker": {"state": state, "since": chrono::Utc::now(), "generation": generation, "probes_per_proxy": probes, "calls": 40, "failures": 30}});
    if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    record
}

#[tokio::test]
async fn an_open_fleet_breaker_skips_its_model_for_a_fallback_or_answers_503() {
    let mut proxy = Proxy::start("recovery_open", &config(NO_LOCAL_BREAKER), None).await;
    proxy.run_proxy().await;
    let topic = proxy.env.decisions_topic.clone();
    let key = proxy.key("acme", "open", "eve", None);
    // Open, rerouting to the second fallback: it goes first.
    let subject = "circuit/mocknr/nr-open";
    let record = breaker_record(
        subject,
        "open",
        1,
        1,
        json!({"reroute_to": "alt-x", "retry_after_secs": 30}),
    );
    publish_decision(&proxy.brokers, &topic, subject, Some(record)).await;
    let (p, k) = (&proxy, &key);
    until("the open circuit reroutes", || async move {
        let response = p.chat(k, "nr-open", &[]).await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["model"] == "alt-x"
    })
    .await;
    // Nothing reaches the model once the decision is in.
    let before = model_requests(&proxy, "nr-open").await;
    assert_eq!(proxy.chat(&key, "nr-open", &[]).await.status(), 200);
    assert_eq!(model_requests(&proxy, "nr-open").await, before);
    assert_eq!(model_requests(&proxy, "nr-other").await, 0);
    let events = events_now(&proxy, &["nr-open", "alt-x"], 0).await;
    let served = events.last().unwrap();
    assert_eq!(call(served)["model"], "alt-x");
    assert_eq!(call(served)["requested_model"], "nr-open");
    assert_eq!(recovery(served)["sequence"], 1);
    assert_eq!(recovery(served)["strategy"], "first");
    assert_eq!(recovery(served)["last"], true);
    assert_eq!(call(served)["fallback_of"], "");

    // A model without fallbacks: 503 circuit_open with the decision's Retry-After.
    let subject = "circuit/mocknr/nr-alone";
    let record = breaker_record(subject, "open", 1, 1, json!({"retry_after_secs": 17}));
    publish_decision(&proxy.brokers, &topic, subject, Some(record)).await;
    let deadline = Instant::now() + crate::support::PATIENCE;
    let refused = loop {
        let response = proxy.chat(&key, "nr-alone", &[]).await;
        if response.status() == 503 {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "the open circuit refuses: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "17");
    // Fail fast: the SDKs would otherwise sleep and meet the breaker again.
    assert_eq!(refused.headers()["x-should-retry"], "false");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit_open", "{body}");
    let events = events_now(&proxy, &["nr-open", "alt-x", "nr-alone"], 1).await;
    let blocked = events.last().unwrap();
    assert_eq!(blocked["kind"], "ai.call.blocked");
    assert_eq!(call(blocked)["model"], "nr-alone");
    assert_eq!(call(blocked)["error"]["type"], "circuit_open");
    assert!(call(blocked)["error"]["message"]
        .as_str()
        .unwrap()
        .contains(subject));
    assert_valid(std::slice::from_ref(blocked));
}

#[tokio::test]
async fn a_half_open_fleet_breaker_lets_through_its_probes_per_generation() {
    let mut proxy = Proxy::start("recovery_half", &config(NO_LOCAL_BREAKER), None).await;
    proxy.run_proxy().await;
    let topic = proxy.env.decisions_topic.clone();
    let key = proxy.key("acme", "half", "fay", None);
    let subject = "circuit/mocknr/nr-half";
    // Open first, so that calls before the half-open record arrives do not
    // reach the model.
    let record = breaker_record(subject, "open", 1, 2, json!({}));
    publish_decision(&proxy.brokers, &topic, subject, Some(record)).await;
    let (p, k) = (&proxy, &key);
    until("the open circuit reroutes", || async move {
        let response = p.chat(k, "nr-half", &[]).await;
        response.json::<Value>().await.unwrap()["model"] == "alt-h"
    })
    .await;
    let base = model_requests(&proxy, "nr-half").await;
    for generation in 1..=2u64 {
        let record = breaker_record(subject, "half_open", generation, 2, json!({}));
        publish_decision(&proxy.brokers, &topic, subject, Some(record)).await;
        let probes = base + 2 * generation;
        let (p, k) = (&proxy, &key);
        until("the probes get through", || async move {
            assert_eq!(p.chat(k, "nr-half", &[]).await.status(), 200);
            model_requests(p, "nr-half").await >= probes
        })
        .await;
        // The generation's probes are used up: the rest go to the fallback.
        for _ in 0..5 {
            let response = proxy.chat(&key, "nr-half", &[]).await;
            assert_eq!(response.json::<Value>().await.unwrap()["model"], "alt-h");
        }
        assert_eq!(model_requests(&proxy, "nr-half").await, probes);
    }
    // Closed: every call reaches it again.
    let record = breaker_record(subject, "closed", 2, 2, json!({}));
    publish_decision(&proxy.brokers, &topic, subject, Some(record)).await;
    let (p, k) = (&proxy, &key);
    until("the closed circuit lets calls through", || async move {
        let response = p.chat(k, "nr-half", &[]).await;
        response.json::<Value>().await.unwrap()["model"] == "nr-half"
    })
    .await;
}

#[tokio::test]
async fn the_local_breaker_opens_after_consecutive_failures_and_a_probe_closes_it() {
    let mut proxy = Proxy::start(
        "recovery_local",
        &config("breaker = { failures = 3, open_ms = 700 }"),
        None,
    )
    .await;
    proxy.run_proxy().await;
    let key = proxy.key("acme", "local", "gus", None);
    let scenario = crate::support::unique("local");
    let headers = [
        ("x-mock-fail", "503"),
        ("x-mock-scenario", scenario.as_str()),
        ("x-mock-fail-times", "3"),
    ];
    for _ in 0..3 {
        assert_eq!(proxy.chat(&key, "nr-local", &headers).await.status(), 503);
    }
    assert_eq!(model_requests(&proxy, "nr-local").await, 3);
    // Open: refused by the proxy, the model sees nothing.
    let refused = proxy.chat(&key, "nr-local", &headers).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit_open", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("this proxy's breaker circuit/mocknr/nr-local"));
    assert_eq!(model_requests(&proxy, "nr-local").await, 3);
    // After open_ms one probe goes through; the model has recovered.
    let (p, k, h) = (&proxy, &key, &headers);
    until("the probe closes the breaker", || async move {
        p.chat(k, "nr-local", h).await.status() == 200
    })
    .await;
    for _ in 0..3 {
        assert_eq!(proxy.chat(&key, "nr-local", &headers).await.status(), 200);
    }
    assert_eq!(model_requests(&proxy, "nr-local").await, 7);
}
