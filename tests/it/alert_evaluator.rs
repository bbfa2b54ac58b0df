//! The alert evaluator against real Kafka, ClickHouse, PostgreSQL, a
//! signature-verifying webhook and the real Alertmanager:
//!
//! - driven at fixed instants over calls with a known error-rate episode,
//!   it goes pending, firing and resolved at the same instants as the
//!   backtest, writes each transition once to the ClickHouse timeline, and
//!   each receiver gets the firing and the resolved notification exactly
//!   once (Alertmanager shows the alert, then not); flapping input shorter
//!   than `for` never fires;
//! - a silence mutes the webhook while it holds and its end resumes it;
//! - an evaluator that dies between recording a transition and publishing
//!   it loses nothing: its successor (a higher fencing token, after the
//!   lease expires) publishes it once, and the dead one's fence is refused;
//! - a rule deleted while firing resolves at the next evaluation;
//! - as processes: of two `tollgate alerts evaluate`, one is active; a
//!   kill -9 of it while its webhook request is in flight hands over to the
//!   other, which re-sends that notification with the same id; in all one
//!   firing and one resolved notification id, and the timeline and Kafka
//!   hold one event per transition;
//! - `tollgate alerts evaluate --metrics-listen` serves its own `/metrics`:
//!   it holds the lease, its successful rounds count up and say when the
//!   last one ended, and a rule created while it runs is measured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tollgate_alerting::{AlertingConfig, Evaluator};
use tollgate_contract::alerts::receiver::ReceiverSpec;
use tollgate_contract::alerts::{RuleSpec, SilenceSpec};
use tollgate_contract::{Outcome, ProviderError};
use tollgate_control::alerts::{AlertRule, AlertStore, Receiver};
use tollgate_control::config::ClickHouseConfig;
use tollgate_processors::alerting::notify::DeliveryConfig;
use tollgate_queries::alert_signals::{backtest, SignalSources};
use tollgate_queries::ReadModels;

use crate::support::events::{call_event, usage};
use crate::support::kafka::read_records;
use crate::support::webhook::{start_receiver, Behaviour, Received, SECRET};
use crate::support::{
    alertmanager_alerts, alertmanager_url, clickhouse_url, listening_port, unique, TestEnv,
};

/// 2026-11-30T10:00:00Z: minute m of the data is [BASE + m min, + 1 min).
const BASE: i64 = 1_796_032_800;

const PRICES: &str = r#"{
  "tg-eval": {"litellm_provider": "evalprov", "effective_from": "2026-01-01T00:00:00Z",
              "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
  "tg-flap": {"litellm_provider": "flapprov", "effective_from": "2026-01-01T00:00:00Z",
              "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}
}"#;

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(BASE + minutes * 60, 0).unwrap()
}

/// Ten calls a minute from `start` for `minutes` minutes on evalprov/tg-eval,
/// each 0.002 USD; in the minutes `failing`, calls 0..5 fail (50 %).
fn calls(start: DateTime<Utc>, minutes: i64, failing: &[i64]) -> Vec<tollgate_contract::Event> {
    calls_of("evalprov", "tg-eval", start, minutes, failing)
}

fn calls_of(
    provider: &str,
    model: &str,
    start: DateTime<Utc>,
    minutes: i64,
    failing: &[i64],
) -> Vec<tollgate_contract::Event> {
    let mut out = Vec::new();
    for m in 0..minutes {
        for i in 0..10_i64 {
            let fails = failing.contains(&m) && i < 5;
            let when = start + chrono::Duration::seconds(m * 60 + i * 5);
            let outcome = if fails {
                Outcome::Error
            } else {
                Outcome::Success
            };
            let mut e = call_event(
                "search",
                provider,
                model,
                when,
                usage(1_000, 0, 0, 500, 0),
                outcome,
            );
            if fails {
                e.call.as_mut().unwrap().error = Some(ProviderError {
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

async fn prepared(label: &str, extra: &str, events: &[tollgate_contract::Event]) -> TestEnv {
    let mut env = TestEnv::with_extra_config(label, extra).await;
    let path = env.dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    env.run(&["prices", "import", path.to_str().unwrap()]);
    env.process_events(events).await;
    let want = events.len() as u64;
    let got = env
        .wait_for_count(
            "SELECT countMerge(calls) FROM {db}.latency_minute_calls",
            want,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(got, want, "the latency rollup never caught up");
    env
}

fn ch_config(env: &TestEnv) -> ClickHouseConfig {
    ClickHouseConfig {
        url: clickhouse_url(),
        database: env.ch_database.clone(),
        ..ClickHouseConfig::default()
    }
}

fn fast_delivery() -> DeliveryConfig {
    DeliveryConfig {
        attempt_timeout: Duration::from_secs(5),
        max_attempts: 3,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        // The webhook and the stack's Alertmanager listen on loopback.
        private_hosts: vec!["127.0.0.1".into()],
        ..DeliveryConfig::default()
    }
}

async fn webhook(store: &AlertStore, url: &str) -> Receiver {
    let spec: ReceiverSpec = serde_json::from_value(json!({
        "org_id": "org-1", "name": unique("hook"), "kind": "webhook", "url": url,
        "signing_secret": SECRET, "group_by": ["alertname"],
        "group_wait_secs": 0, "group_interval_secs": 1, "repeat_interval_secs": 86400
    }))
    .unwrap();
    store.create_receiver(&spec, "test").await.unwrap().value
}

async fn alertmanager(store: &AlertStore) -> Receiver {
    let spec: ReceiverSpec = serde_json::from_value(json!({
        "org_id": "org-1", "name": unique("am"), "kind": "alertmanager",
        "url": alertmanager_url()
    }))
    .unwrap();
    store.create_receiver(&spec, "test").await.unwrap().value
}

async fn rule(
    store: &AlertStore,
    name: &str,
    signal: Value,
    for_secs: u32,
    receivers: &[i64],
) -> AlertRule {
    let spec: RuleSpec = serde_json::from_value(json!({
        "org_id": "org-1", "name": name, "signal": signal, "for_secs": for_secs,
        "severity": "critical", "labels": {"team": "search"},
        "annotations": {"summary": "evalprov failing"}, "receivers": receivers
    }))
    .unwrap();
    store.create_rule(&spec, "test").await.unwrap().value
}

fn error_rate() -> Value {
    error_rate_of("evalprov")
}

fn error_rate_of(provider: &str) -> Value {
    json!({"kind": "error_rate", "provider": provider, "above_percent": "20", "window_secs": 60})
}

/// Renew the lease (a round may outlast its 3 s on a busy machine), then
/// run one round at `now`.
async fn renewed(ev: &mut Evaluator, fence: &tollgate_control::lease::Fence, now: DateTime<Utc>) {
    assert_eq!(&ev.acquire().await.unwrap(), fence, "the lease stays ours");
    ev.round(fence, now).await.unwrap();
}

/// Hand every delivery outcome to the evaluator until `want` came back.
async fn settle_outcomes(ev: &mut Evaluator, fence: &tollgate_control::lease::Fence, want: usize) {
    for n in 0..want {
        let outcome = tokio::time::timeout(crate::support::PATIENCE, ev.next_outcome())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {want} delivery outcomes came back"))
            .unwrap();
        assert!(
            matches!(
                outcome.result,
                tollgate_processors::alerting::notify::DeliveryResult::Delivered { .. }
            ),
            "{outcome:?}"
        );
        assert_eq!(&ev.acquire().await.unwrap(), fence, "the lease stays ours");
        ev.record_outcome(fence, &outcome).await.unwrap();
    }
}

/// (notification status, times accepted) of what the webhook got for
/// `rule_name`, with every signature valid.
fn statuses(received: &Arc<Mutex<Received>>, rule_name: &str) -> Vec<(String, usize)> {
    let r = received.lock().unwrap();
    assert!(r.bad_signatures.is_empty(), "{:?}", r.bad_signatures);
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for body in &r.bodies {
        for n in body["notifications"].as_array().unwrap() {
            if n["rule_name"] == rule_name {
                let id = n["id"].as_str().unwrap().to_string();
                seen.entry(id)
                    .or_insert_with(|| (n["status"].as_str().unwrap().to_string(), 0))
                    .1 += 1;
            }
        }
    }
    let mut out: Vec<(String, usize)> = seen.into_values().collect();
    out.sort();
    out
}

/// The rule's transitions on the ClickHouse timeline: (at, to_state,
/// silenced), one per event id.
async fn timeline(env: &TestEnv, rule_id: i64) -> Vec<(i64, String, u8)> {
    let body = env
        .ch(&format!(
            "SELECT intDiv(any(at_ms), 1000) AS t, any(to_state), any(silenced) FROM {{db}}.alert_transitions \
             WHERE rule_id = {rule_id} GROUP BY event_id ORDER BY t FORMAT TSV"
        ))
        .await;
    body.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluator_steps_like_the_backtest_notifies_once_and_survives_a_crash() {
    // evalprov fails in minutes 3..=6; flapprov every other minute.
    let mut events = calls(at(0), 10, &[3, 4, 5, 6]);
    events.extend(calls_of("flapprov", "tg-flap", at(0), 10, &[1, 3, 5, 7]));
    let env = prepared("alert_eval", "", &events).await;
    let pool = PgPool::connect(&env.pg_url).await.unwrap();
    let store = AlertStore::new(pool.clone()).with_private_hosts(&["127.0.0.1".into()]);
    let (hook, received) = start_receiver(Behaviour::default()).await;
    let hook = webhook(&store, &hook.url).await;
    let am = alertmanager(&store).await;
    let name = unique("EvalErrors");
    let first = rule(&store, &name, error_rate(), 60, &[hook.id, am.id]).await;
    let flap_name = unique("EvalFlapping");
    let flapping = rule(
        &store,
        &flap_name,
        error_rate_of("flapprov"),
        60,
        &[hook.id, am.id],
    )
    .await;
    let config = AlertingConfig {
        interval_secs: 1,
        ..AlertingConfig::default()
    };
    let mut ev = Evaluator::with_delivery(
        config.clone(),
        pool.clone(),
        &ch_config(&env),
        "evaluator-a".into(),
        fast_delivery(),
    )
    .unwrap();
    let fence = ev.acquire().await.unwrap();

    // Minutes 3..=6 fail 50 %: pending at 10:04 (minute 3 read), firing
    // at 10:05 (60 s later), resolved at 10:08 (minute 7 is clean).
    for minute in 1..=7 {
        renewed(&mut ev, &fence, at(minute)).await;
    }
    // Webhook: firing. Alertmanager: firing at 10:05, reminded at 10:06, 10:07.
    settle_outcomes(&mut ev, &fence, 4).await;
    assert_eq!(statuses(&received, &name), vec![("firing".into(), 1)]);
    let deadline = Instant::now() + crate::support::PATIENCE;
    let alert = loop {
        if let Some(a) = alertmanager_alerts(&alertmanager_url(), &name).await.pop() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["labels"]["team"], "search");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["value"], "50.0000");
    assert_eq!(alert["annotations"]["value_text"], "50.0000 %");
    assert_eq!(
        alert["generatorURL"],
        "/sre/errors?range=custom&from=2026-11-30T10:04:00Z&to=2026-11-30T10:05:00Z&org=org-1&provider=evalprov"
    );
    let starts: DateTime<Utc> = alert["startsAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(starts, at(5));

    for minute in 8..=10 {
        renewed(&mut ev, &fence, at(minute)).await;
    }
    settle_outcomes(&mut ev, &fence, 2).await;
    assert_eq!(
        statuses(&received, &name),
        vec![("firing".into(), 1), ("resolved".into(), 1)]
    );
    let deadline = Instant::now() + crate::support::PATIENCE;
    while !alertmanager_alerts(&alertmanager_url(), &name)
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "{name} still active in Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The timeline equals the backtest over the same instants.
    let read = ReadModels::new(&ch_config(&env));
    let sources = SignalSources {
        read: &read,
        budgets: None,
    };
    let replayed = backtest(sources, &first.spec, at(1), at(10), 60)
        .await
        .unwrap()
        .unwrap();
    let expected: Vec<(i64, String, u8)> = replayed
        .transitions
        .iter()
        .map(|(t, tr)| (t.timestamp(), tr.to_state().to_string(), 0))
        .collect();
    assert_eq!(
        expected,
        vec![
            (at(4).timestamp(), "pending".into(), 0),
            (at(5).timestamp(), "firing".into(), 0),
            (at(8).timestamp(), "resolved".into(), 0),
        ]
    );
    assert_eq!(timeline(&env, first.id).await, expected);
    assert_eq!(owed(&pool).await, 0, "everything published and settled");
    // Flapping input never holds for `for`: pending and back, never
    // firing, nobody notified.
    let flaps: Vec<String> = timeline(&env, flapping.id)
        .await
        .into_iter()
        .map(|(_, s, _)| s)
        .collect();
    assert_eq!(flaps, ["pending", "inactive"].repeat(4));
    assert!(statuses(&received, &flap_name).is_empty());
    assert!(alertmanager_alerts(&alertmanager_url(), &flap_name)
        .await
        .is_empty());
    store
        .delete_rule(Some("org-1"), flapping.id, None, "test")
        .await
        .unwrap();

    // A silence of the second rule: its transitions are recorded as
    // silenced and the webhook gets nothing while it holds; once it ends,
    // the firing alert goes out at the group's next interval.
    store
        .delete_rule(Some("org-1"), first.id, None, "test")
        .await
        .unwrap();
    let silenced_name = unique("EvalSilenced");
    let silenced = rule(&store, &silenced_name, error_rate(), 60, &[hook.id]).await;
    let silence: SilenceSpec = serde_json::from_value(json!({
        "org_id": "org-1",
        "matchers": [{"name": "alertname", "op": "=", "value": silenced_name}],
        "starts_at": at(0), "ends_at": Utc::now() + chrono::Duration::hours(1),
        "comment": "maintenance of evalprov"
    }))
    .unwrap();
    let silence = store.create_silence(&silence, "test").await.unwrap().value;
    for minute in 1..=6 {
        renewed(&mut ev, &fence, at(minute)).await;
    }
    assert!(statuses(&received, &silenced_name).is_empty());
    // The test's clock is at 10:06: let the silence end at 10:06:30.
    sqlx::query("UPDATE alert_silences SET ends_at = $1 WHERE id = $2")
        .bind(at(6) + chrono::Duration::seconds(30))
        .bind(silence.id)
        .execute(&pool)
        .await
        .unwrap();
    renewed(&mut ev, &fence, at(7)).await;
    settle_outcomes(&mut ev, &fence, 1).await;
    assert_eq!(
        statuses(&received, &silenced_name),
        vec![("firing".into(), 1)]
    );
    for minute in 8..=10 {
        renewed(&mut ev, &fence, at(minute)).await;
    }
    settle_outcomes(&mut ev, &fence, 1).await;
    assert_eq!(
        statuses(&received, &silenced_name),
        vec![("firing".into(), 1), ("resolved".into(), 1)]
    );
    assert_eq!(
        timeline(&env, silenced.id).await,
        vec![
            (at(4).timestamp(), "pending".into(), 0),
            (at(5).timestamp(), "firing".into(), 1),
            (at(8).timestamp(), "resolved".into(), 0),
        ]
    );

    // A crash between recording the firing transition and publishing it.
    store
        .delete_rule(Some("org-1"), silenced.id, None, "test")
        .await
        .unwrap();
    let crash_name = unique("EvalCrash");
    let crashed = rule(&store, &crash_name, error_rate(), 60, &[hook.id]).await;
    for minute in 1..=5 {
        assert_eq!(ev.acquire().await.unwrap(), fence);
        ev.evaluate(&fence, at(minute)).await.unwrap();
    }
    assert!(timeline(&env, crashed.id).await.is_empty());
    // The successor gets the lease once the dead one's expires.
    let mut successor = Evaluator::with_delivery(
        config,
        pool.clone(),
        &ch_config(&env),
        "evaluator-b".into(),
        fast_delivery(),
    )
    .unwrap();
    let deadline = Instant::now() + crate::support::PATIENCE;
    let fence_b = loop {
        if let Ok(f) = successor.acquire().await {
            break f;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fence_b.token, fence.token + 1);
    // The dead one's fence is refused: it can write nothing any more.
    assert!(ev.evaluate(&fence, at(6)).await.is_err());
    drop(ev);
    renewed(&mut successor, &fence_b, at(5)).await;
    settle_outcomes(&mut successor, &fence_b, 1).await;
    for minute in 6..=10 {
        renewed(&mut successor, &fence_b, at(minute)).await;
    }
    settle_outcomes(&mut successor, &fence_b, 1).await;
    assert_eq!(
        statuses(&received, &crash_name),
        vec![("firing".into(), 1), ("resolved".into(), 1)]
    );
    let states: Vec<String> = timeline(&env, crashed.id)
        .await
        .into_iter()
        .map(|(_, s, _)| s)
        .collect();
    assert_eq!(states, ["pending", "firing", "resolved"]);

    // A rule deleted while firing: its alert resolves at the next
    // evaluation, so the webhook is not left with one that fires forever.
    store
        .delete_rule(Some("org-1"), crashed.id, None, "test")
        .await
        .unwrap();
    let doomed_name = unique("EvalDeleted");
    let doomed = rule(&store, &doomed_name, error_rate(), 60, &[hook.id]).await;
    for minute in 1..=5 {
        renewed(&mut successor, &fence_b, at(minute)).await;
    }
    settle_outcomes(&mut successor, &fence_b, 1).await;
    store
        .delete_rule(Some("org-1"), doomed.id, None, "test")
        .await
        .unwrap();
    renewed(&mut successor, &fence_b, at(6)).await;
    settle_outcomes(&mut successor, &fence_b, 1).await;
    assert_eq!(
        statuses(&received, &doomed_name),
        vec![("firing".into(), 1), ("resolved".into(), 1)]
    );
    let states: Vec<(i64, String, u8)> = timeline(&env, doomed.id).await;
    assert_eq!(
        states.last(),
        Some(&(at(6).timestamp(), "resolved".into(), 0))
    );
}

/// Outbox rows not yet on the timeline or still owed to a receiver.
async fn owed(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM alert_outbox WHERE row_written_at IS NULL OR cardinality(pending_receivers) > 0",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn log_has(env: &TestEnv, label: &str, needle: &str) -> bool {
    std::fs::read_to_string(env.log_path(label))
        .unwrap_or_default()
        .contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_evaluators_is_active_and_a_kill_9_takeover_repeats_nothing() {
    // Twenty calls in the last few whole minutes: 0.04 USD of org-1, above
    // a 0.01 USD spend rule over 15 minutes from the first evaluation on.
    let now = Utc::now();
    let start = DateTime::from_timestamp(now.timestamp() / 60 * 60 - 240, 0).unwrap();
    let extra = "[alerting]\ninterval_secs = 1\nlease_intervals = 5\nreceiver_private_hosts = [\"127.0.0.1\"]\n";
    let env = prepared("alert_eval_proc", extra, &calls(start, 2, &[])).await;
    let pool = PgPool::connect(&env.pg_url).await.unwrap();
    let store = AlertStore::new(pool.clone()).with_private_hosts(&["127.0.0.1".into()]);
    // The webhook answers after 2 s, so the kill lands mid-notification.
    let (hook, received) = start_receiver(Behaviour {
        delay: Duration::from_secs(2),
        ..Behaviour::default()
    })
    .await;
    let hook = webhook(&store, &hook.url).await;
    let name = unique("SpendEval");
    let spend = |above: &str| {
        json!({"kind": "spend", "subject_kind": "org", "subject_id": "org-1",
               "window_secs": 900, "above_usd": above})
    };
    let watched = rule(&store, &name, spend("0.01"), 0, &[hook.id]).await;

    let mut a = env.spawn_child("eval-a", &["alerts", "evaluate"]);
    let mut b = env.spawn_child("eval-b", &["alerts", "evaluate"]);
    let active = "this evaluator is active";
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().arrived == 0 {
        assert!(
            Instant::now() < deadline,
            "never notified; logs:\n{}\n{}",
            std::fs::read_to_string(env.log_path("eval-a")).unwrap_or_default(),
            std::fs::read_to_string(env.log_path("eval-b")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a_active, b_active) = (
        log_has(&env, "eval-a", active),
        log_has(&env, "eval-b", active),
    );
    assert!(a_active != b_active, "exactly one evaluator is active");
    let (victim, standby, standby_label) = if a_active {
        (&mut a, &mut b, "eval-b")
    } else {
        (&mut b, &mut a, "eval-a")
    };
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(60);
    while !log_has(&env, standby_label, active) {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = killed_at.elapsed();
    println!(
        "evaluator takeover after kill -9: {:.1} s (lease ttl 5 s, interval 1 s)",
        takeover.as_secs_f64()
    );
    // The successor evaluates the firing rule at least twice: nothing new.
    let token: i64 = sqlx::query_scalar("SELECT token FROM leases WHERE name = 'alert-evaluator'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(token, 2);
    let first_eval: DateTime<Utc> = loop {
        let got: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT evaluated_at FROM alert_state WHERE rule_id = $1 AND fence_token = 2",
        )
        .bind(watched.id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(t) = got {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        let last: DateTime<Utc> =
            sqlx::query_scalar("SELECT evaluated_at FROM alert_state WHERE rule_id = $1")
                .bind(watched.id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if last > first_eval {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The successor re-sent the notification the kill interrupted, with
    // the same id: one firing notification, received once or twice.
    let deadline = Instant::now() + crate::support::PATIENCE;
    while owed(&pool).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the firing transition was never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let firing = statuses(&received, &name);
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].0, "firing");
    assert!((1..=2).contains(&firing[0].1), "{firing:?}");

    // Raise the threshold: the successor resolves it.
    store
        .update_rule(
            "org-1",
            watched.id,
            watched.version,
            &serde_json::from_value(json!({
                "org_id": "org-1", "name": name, "signal": spend("100"), "for_secs": 0,
                "severity": "critical", "labels": {"team": "search"},
                "annotations": {"summary": "evalprov failing"}, "receivers": [hook.id]
            }))
            .unwrap(),
            "test",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while statuses(&received, &name).len() < 2 {
        assert!(Instant::now() < deadline, "never resolved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = statuses(&received, &name);
    assert_eq!(
        all.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["firing", "resolved"]
    );
    assert_eq!(all[1].1, 1, "the resolved notification went out once");
    let states: Vec<String> = timeline(&env, watched.id)
        .await
        .into_iter()
        .map(|(_, s, _)| s)
        .collect();
    assert_eq!(states, ["firing", "resolved"]);
    // One admin event per transition on Kafka (the relay may repeat one
    // with the same event id after a crash: counted once).
    let events = read_records(&env.events_topic, crate::support::PATIENCE, |records| {
        records
            .iter()
            .filter(|(_, v)| v["kind"] == "admin.alert.transition")
            .count()
            >= 2
    })
    .await;
    let mut transitions: HashMap<String, String> = HashMap::new();
    for (_, v) in events
        .iter()
        .filter(|(_, v)| v["kind"] == "admin.alert.transition")
    {
        let alert = &v["admin"]["alert"];
        assert_eq!(alert["rule_id"], watched.id);
        transitions.insert(
            v["event_id"].as_str().unwrap().to_string(),
            alert["to"].as_str().unwrap().to_string(),
        );
    }
    let mut to: Vec<String> = transitions.into_values().collect();
    to.sort();
    assert_eq!(to, ["firing", "resolved"]);
    standby.kill().unwrap();
    standby.wait().unwrap();
}

/// Every sample of a `/metrics` text: the series as written (name and
/// labels) and its value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Scrape `url` until `done` accepts its samples, or panic after 60 s with
/// the last exposition and the evaluator's log.
async fn scrape_until(
    env: &TestEnv,
    url: &str,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    loop {
        if let Ok(answer) = reqwest::get(url).await {
            text = answer.text().await.unwrap_or_default();
            let samples = samples(&text);
            if done(&samples) {
                return samples;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never seen within 60 s; last /metrics:\n{text}\nlog:\n{}",
            std::fs::read_to_string(env.log_path("eval")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluator_serves_its_metrics() {
    let extra = "[alerting]\ninterval_secs = 1\nreceiver_private_hosts = [\"127.0.0.1\"]\n";
    let mut env = TestEnv::with_extra_config("alert_eval_metrics", extra).await;
    env.spawn(
        "eval",
        &["alerts", "evaluate", "--metrics-listen", "127.0.0.1:0"],
    );
    let port = listening_port(&env.log_path("eval"), Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let ok = "tollgate_alerts_evaluations_total{result=\"ok\"}";
    let first = scrape_until(&env, &url, "the lease and a successful round", |s| {
        s.get("tollgate_alerts_lease_held") == Some(&1.0) && s.get(ok).is_some_and(|&n| n >= 1.0)
    })
    .await;
    let version = env!("CARGO_PKG_VERSION");
    for series in [
        format!("tollgate_build_info{{role=\"alerts\",version=\"{version}\"}}"),
        "tollgate_alerts_evaluations_total{result=\"failed\"}".into(),
        "tollgate_alerts_notifications_total{result=\"delivered\"}".into(),
        "tollgate_alerts_notifications_total{result=\"dead_lettered\"}".into(),
        "tollgate_alerts_firing".into(),
    ] {
        assert!(first.contains_key(&series), "{series} missing: {first:?}");
    }
    assert_eq!(first["tollgate_alerts_rules"], 0.0, "{first:?}");
    // More rounds succeed, each setting when it ended.
    let rounds = first[ok];
    let later = scrape_until(&env, &url, "a later successful round", |s| {
        s.get(ok).is_some_and(|&n| n > rounds)
    })
    .await;
    let last = later["tollgate_alerts_last_evaluation_timestamp_seconds"];
    let age = Utc::now().timestamp_millis() as f64 / 1000.0 - last;
    assert!(
        (-5.0..60.0).contains(&age),
        "last evaluation {last} is {age} s old"
    );
    // A rule created now is measured at the next rounds.
    let pool = PgPool::connect(&env.pg_url).await.unwrap();
    let store = AlertStore::new(pool.clone()).with_private_hosts(&["127.0.0.1".into()]);
    rule(&store, &unique("Measured"), error_rate(), 60, &[]).await;
    let measured = scrape_until(&env, &url, "the new rule measured", |s| {
        s.get("tollgate_alerts_rules") == Some(&1.0)
    })
    .await;
    assert_eq!(measured["tollgate_alerts_firing"], 0.0, "{measured:?}");
    assert_eq!(measured["tollgate_alerts_lease_held"], 1.0, "{measured:?}");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert!(health.status().is_success(), "{health:?}");
}

/// A firing rule whose labels change ends the alert of its old labels
/// (resolved, on the timeline and in Alertmanager, which would otherwise
/// hold it until it timed out), and the alert of its new labels starts
/// over: firing at once here (`for` 0), as the failures go on.
#[tokio::test]
async fn relabelling_a_firing_rule_resolves_the_alert_of_its_old_labels() {
    let events = calls(at(0), 6, &[0, 1, 2, 3, 4, 5]);
    let env = prepared("alert_relabel", "", &events).await;
    let pool = PgPool::connect(&env.pg_url).await.unwrap();
    let store = AlertStore::new(pool.clone()).with_private_hosts(&["127.0.0.1".into()]);
    let am = alertmanager(&store).await;
    let name = unique("EvalRelabel");
    let first = rule(&store, &name, error_rate(), 0, &[am.id]).await;
    let config = AlertingConfig {
        interval_secs: 1,
        ..AlertingConfig::default()
    };
    let mut ev = Evaluator::with_delivery(
        config,
        pool.clone(),
        &ch_config(&env),
        "evaluator-relabel".into(),
        fast_delivery(),
    )
    .unwrap();
    let fence = ev.acquire().await.unwrap();
    renewed(&mut ev, &fence, at(2)).await;

    let mut spec = first.spec.clone();
    spec.labels.insert("team".into(), "search-2".into());
    store
        .update_rule("org-1", first.id, first.version, &spec, "test")
        .await
        .unwrap();
    renewed(&mut ev, &fence, at(3)).await;
    // At 10:03 the old labels' alert resolves and the new one fires (in
    // either order: one instant).
    let mut steps: Vec<(i64, String)> = timeline(&env, first.id)
        .await
        .into_iter()
        .map(|(t, to, _)| (t, to))
        .collect();
    steps.sort();
    assert_eq!(
        steps,
        [
            (at(2).timestamp(), "firing".to_string()),
            (at(3).timestamp(), "firing".to_string()),
            (at(3).timestamp(), "resolved".to_string()),
        ]
    );
    // Alertmanager holds the new labels' alert only.
    let deadline = Instant::now() + crate::support::PATIENCE;
    loop {
        let teams: Vec<String> = alertmanager_alerts(&alertmanager_url(), &name)
            .await
            .iter()
            .map(|a| a["labels"]["team"].as_str().unwrap_or_default().to_string())
            .collect();
        if teams == ["search-2"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} in Alertmanager: teams {teams:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
