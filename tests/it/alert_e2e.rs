//! Issue 13's alert end to end, every part a real process: the mock
//! upstream, the proxy, `tollgate process`, the API and `tollgate alerts
//! evaluate`, with the real Prometheus Alertmanager as the receiver. A
//! rule made through the API fires when the mock starts failing a model
//! and resolves when it recovers; Alertmanager's own API shows the alert
//! with its labels, annotations, link and start, then no longer; the
//! ClickHouse timeline has the firing and the resolved transition.
//!
//! Signals read whole minutes (the window ends at the start of the current
//! minute), so firing waits for the first failing minute to close and
//! resolving for the first clean one: the test polls with deadlines of a
//! few minutes and prints how long each took.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use serde_json::{json, Value};

use crate::proxy::{Proxy, UPSTREAM_KEY_VAR};
use crate::sre_loop::set_fault;
use crate::support::{alertmanager_alerts, alertmanager_url, unique};

const PROVIDER: &str = "mockalert";
const MODEL: &str = "alrt-e2e";
const ORG: &str = "acme";
const PUBLIC_URL: &str = "https://tollgate.example";

/// One provider that never retries and no local breaker, so every call is
/// one attempt on the model and, while the mock fails it, one failure
/// (no fleet breaker either: `process` runs the calls folds only). The
/// evaluator runs every second.
fn config() -> String {
    format!(
        r#"breaker = {{ failures = 0 }}

[proxy.providers.{PROVIDER}]
kind = "openai"
base_url = "@MOCK@"
api_key_env = "{UPSTREAM_KEY_VAR}"
models = ["alrt-*"]
max_retries = 0
first_byte_timeout_ms = 3000

[alerting]
interval_secs = 1
lease_intervals = 3
public_url = "{PUBLIC_URL}"
receiver_private_hosts = ["127.0.0.1"]
"#
    )
}

/// `POST` `body` to the API with `key`; the created object under `field`.
async fn create(proxy: &Proxy, key: &str, path: &str, body: Value, field: &str) -> Value {
    let response = proxy
        .http
        .post(format!("{}{path}", proxy.env.api_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 201, "POST {path}: {text}");
    serde_json::from_str::<Value>(&text).unwrap()[field].clone()
}

/// The evaluator's log and the processor's, for a failure message.
fn logs(proxy: &Proxy) -> String {
    ["evaluate", "process"]
        .iter()
        .map(|label| {
            format!(
                "--- {label}:\n{}",
                std::fs::read_to_string(proxy.env.log_path(label)).unwrap_or_default()
            )
        })
        .collect()
}

/// Send chat calls through the proxy, a few a second, each answered with
/// a server error (`failing`) or 200, until the alerts Alertmanager lists
/// named `alertname` satisfy `done`; the last list seen. Panics after
/// `deadline`.
async fn call_until(
    proxy: &Proxy,
    key: &str,
    alertname: &str,
    failing: bool,
    deadline: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    let mut calls = 0u32;
    loop {
        let response = proxy.chat(key, MODEL, &[]).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        if failing {
            assert!(status.is_server_error(), "{status}: {body}");
        } else {
            assert_eq!(status, 200, "{body}");
        }
        calls += 1;
        let alerts = alertmanager_alerts(&alertmanager_url(), alertname).await;
        if done(&alerts) {
            return alerts;
        }
        assert!(
            started.elapsed() < deadline,
            "after {calls} {} calls in {deadline:?}, Alertmanager shows {alerts:#?}\n{}",
            if failing { "failing" } else { "successful" },
            logs(proxy)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn instant(text: &Value) -> DateTime<Utc> {
    text.as_str()
        .unwrap_or_else(|| panic!("not a time: {text}"))
        .parse()
        .unwrap()
}

/// The rule's transitions on the ClickHouse timeline, one per event id:
/// (at_ms, from, to, value, notification id).
async fn timeline(proxy: &Proxy, rule_id: i64) -> Vec<(i64, String, String, String, String)> {
    // ClickHouse 18.16 has no positional ORDER BY: order by the alias.
    let body = proxy
        .env
        .ch(&format!(
            "SELECT min(at_ms) AS t, any(from_state), any(to_state), any(value), any(notification_id) \
             FROM {{db}}.alert_transitions WHERE rule_id = {rule_id} GROUP BY event_id ORDER BY t FORMAT TSV"
        ))
        .await;
    body.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].to_string(),
                f[4].to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_failing_fires_an_alert_in_alertmanager_and_recovering_resolves_it() {
    let mut proxy = Proxy::start("alert_e2e", &config(), None).await;
    proxy.run_proxy().await;
    proxy.env.spawn("process", &["process", "--folds", "calls"]);
    proxy.env.start_api().await;
    proxy.env.spawn("evaluate", &["alerts", "evaluate"]);
    let caller = proxy.key(ORG, "search", "alice", None);
    let sre = proxy.env.create_key_with_role("sre", Some(ORG));

    let receiver = create(
        &proxy,
        &sre,
        "/api/v1/alerts/receivers",
        json!({"org_id": ORG, "name": unique("am"), "kind": "alertmanager", "url": alertmanager_url()}),
        "receiver",
    )
    .await;
    let alertname = unique("MockModelFailing");
    let rule = create(
        &proxy,
        &sre,
        "/api/v1/alerts/rules",
        json!({
            "org_id": ORG,
            "name": alertname,
            "signal": {"kind": "error_rate", "provider": PROVIDER, "model": MODEL,
                       "above_percent": "20", "window_secs": 60},
            "for_secs": 0,
            "severity": "critical",
            "labels": {"team": "search", "service": "chat"},
            "annotations": {"summary": "alrt-e2e fails more than 20 % of calls"},
            "receivers": [receiver["id"]]
        }),
        "rule",
    )
    .await;
    let rule_id = rule["id"].as_i64().unwrap();

    // The mock fails every call of the model: the first failing minute
    // that closes is 100 % errors.
    set_fault(&proxy, MODEL, Some("500")).await;
    let fault_on = Instant::now();
    let alerts = call_until(
        &proxy,
        &caller,
        &alertname,
        true,
        Duration::from_secs(240),
        // Just received, an alert is `unprocessed` until Alertmanager has
        // routed it.
        |alerts| alerts.iter().any(|a| a["status"]["state"] == "active"),
    )
    .await;
    let to_fire = fault_on.elapsed();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], alertname.as_str(), "{alert:#}");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["org"], ORG);
    assert_eq!(labels["team"], "search");
    assert_eq!(labels["service"], "chat");
    assert_eq!(
        labels["tollgate_rule_id"],
        uuid::Uuid::from_u64_pair(0, rule_id as u64).to_string()
    );
    assert_eq!(
        alert["annotations"]["summary"],
        "alrt-e2e fails more than 20 % of calls"
    );
    assert_eq!(alert["annotations"]["value"], "100.0000", "{alert:#}");
    assert_eq!(alert["annotations"]["unit"], "%", "{alert:#}");
    assert_eq!(
        alert["annotations"]["value_text"], "100.0000 %",
        "{alert:#}"
    );
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    // Fired at the evaluation that first read the failing minute; the link
    // is the Errors page over that minute.
    let starts_at = instant(&alert["startsAt"]);
    let read_to = starts_at
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(
        alert["generatorURL"],
        format!(
            "{PUBLIC_URL}/sre/errors?range=custom&from={}&to={}&org={ORG}&provider=mockalert&model=alrt-e2e",
            fmt(read_to - chrono::Duration::minutes(1)),
            fmt(read_to)
        )
    );
    assert!(
        starts_at <= Utc::now() && Utc::now() - starts_at < chrono::Duration::minutes(3),
        "startsAt {starts_at}"
    );

    // The mock recovers: the first clean minute that closes resolves it,
    // and Alertmanager no longer lists it as active.
    set_fault(&proxy, MODEL, None).await;
    let fault_off = Instant::now();
    call_until(
        &proxy,
        &caller,
        &alertname,
        false,
        Duration::from_secs(240),
        |alerts| alerts.is_empty(),
    )
    .await;
    let to_resolve = fault_off.elapsed();
    println!(
        "alert e2e: fired {:.1} s after the upstream started failing, resolved {:.1} s after it recovered (evaluation every 1 s, 60 s window of whole minutes)",
        to_fire.as_secs_f64(),
        to_resolve.as_secs_f64()
    );

    // The timeline: firing (the transition Alertmanager was told of),
    // then resolved.
    let deadline = Instant::now() + crate::support::PATIENCE;
    let transitions = loop {
        let transitions = timeline(&proxy, rule_id).await;
        if transitions.len() >= 2 {
            break transitions;
        }
        assert!(
            Instant::now() < deadline,
            "timeline of rule {rule_id}: {transitions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let states: Vec<(&str, &str)> = transitions
        .iter()
        .map(|(_, from, to, _, _)| (from.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        states,
        [("inactive", "firing"), ("firing", "resolved")],
        "{transitions:?}"
    );
    let (fired_ms, _, _, value, notification_id) = &transitions[0];
    assert_eq!(*fired_ms, starts_at.timestamp_millis());
    assert_eq!(value, "100.0000");
    assert_eq!(
        alert["annotations"]["tollgate_notification_id"],
        notification_id.as_str()
    );
    assert!(transitions[1].0 > *fired_ms);
}
