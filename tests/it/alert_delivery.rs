//! Alert delivery against real receivers (docs/alerting-delivery.md): a
//! webhook server in the test that verifies every signature and counts
//! notification ids, the dead-letter table in PostgreSQL, and the real
//! Prometheus Alertmanager started by `dev/stack up`
//! (`TOLLGATE_TEST_ALERTMANAGER`, default http://127.0.0.1:9095).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tollgate_contract::notification::{
    Notification, NotificationStatus, ReceiverKind, ReceiverTarget,
};
use tollgate_control::alert_deliveries::list_dead_letters;
use tollgate_processors::alerting::notify::{
    Delivery, DeliveryConfig, DeliveryOutcome, DeliveryResult, Dispatcher,
};
use uuid::Uuid;

use crate::support::webhook::{start_receiver, Behaviour};
use crate::support::{alertmanager_alerts, alertmanager_url, unique, TestEnv};

fn notification(
    rule_name: &str,
    org: &str,
    model: &str,
    status: NotificationStatus,
) -> Notification {
    let labels: BTreeMap<String, String> = [("provider", "openai"), ("model", model)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let annotations = [(
        "summary".to_string(),
        format!("{model} error rate above 5%"),
    )]
    .into_iter()
    .collect();
    let starts_at = Utc::now() - chrono::Duration::minutes(2);
    Notification::new(
        Uuid::from_u128(0x5eed),
        rule_name,
        org,
        status,
        labels,
        annotations,
        "critical",
        starts_at,
        (status == NotificationStatus::Resolved).then(Utc::now),
        format!("http://127.0.0.1:8081/sre/errors?model={model}&from=1700000000&to=1700003600"),
        "12.5",
    )
}

/// The same alert's resolution: same episode start, ends now.
fn resolve(n: &Notification) -> Notification {
    Notification::new(
        n.rule_id,
        n.rule_name.clone(),
        n.org_id.clone(),
        NotificationStatus::Resolved,
        n.labels.clone(),
        n.annotations.clone(),
        n.severity.clone(),
        n.starts_at,
        Some(Utc::now()),
        n.generator_url.clone(),
        n.value.clone(),
    )
}

fn fast_retries(max_attempts: usize) -> DeliveryConfig {
    DeliveryConfig {
        attempt_timeout: Duration::from_secs(2),
        max_attempts,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        queue_capacity: 16,
        outcome_capacity: 64,
        // The test's receivers listen on loopback.
        private_hosts: vec!["127.0.0.1".into()],
    }
}

/// Outcomes until `want` have arrived, or fail at the deadline.
async fn outcomes(
    rx: &mut mpsc::Receiver<DeliveryOutcome>,
    want: usize,
    deadline: Duration,
) -> Vec<(DeliveryOutcome, Instant)> {
    let until = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < want {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(outcome)) => got.push((outcome, Instant::now())),
            Ok(None) => panic!("outcome channel closed after {got:?}"),
            Err(_) => panic!(
                "only {} of {want} outcomes within {deadline:?}: {got:?}",
                got.len()
            ),
        }
    }
    got
}

/// A receiver reaches private addresses only on the hosts the operator
/// listed: one at a loopback address (written as such, or a name that
/// resolves to it) is dead-lettered without a request, naming why; listed,
/// the same receiver is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_reach_private_addresses_only_on_listed_hosts() {
    let (target, received) = start_receiver(Behaviour {
        fail_first: 0,
        then_status: 204,
        delay: Duration::ZERO,
    })
    .await;
    let unlisted = DeliveryConfig {
        private_hosts: Vec::new(),
        ..fast_retries(2)
    };
    let (dispatcher, mut rx) = Dispatcher::new(unlisted, None).unwrap();
    let by_name = ReceiverTarget {
        id: Uuid::now_v7(),
        url: target.url.replace("127.0.0.1", "localhost"),
        ..target.clone()
    };
    for t in [&target, &by_name] {
        let n = notification("errors", "acme", "m1", NotificationStatus::Firing);
        dispatcher.enqueue(t, Delivery::single(n)).await.unwrap();
    }
    let got = outcomes(&mut rx, 2, crate::support::PATIENCE).await;
    for (outcome, _) in &got {
        let DeliveryResult::DeadLettered { error, .. } = &outcome.result else {
            panic!("{outcome:?}");
        };
        assert!(error.contains("not a public address"), "{error}");
        assert!(error.contains("alerting.receiver_private_hosts"), "{error}");
    }
    assert_eq!(received.lock().unwrap().requests, 0);

    let (listed, mut rx) = Dispatcher::new(fast_retries(2), None).unwrap();
    let n = notification("errors", "acme", "m2", NotificationStatus::Firing);
    listed.enqueue(&target, Delivery::single(n)).await.unwrap();
    let got = outcomes(&mut rx, 1, crate::support::PATIENCE).await;
    assert_eq!(got[0].0.result, DeliveryResult::Delivered { attempts: 1 });
    assert_eq!(received.lock().unwrap().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_500s_until_a_2xx_and_every_signature_verifies() {
    let (target, received) = start_receiver(Behaviour {
        fail_first: 3,
        then_status: 204,
        delay: Duration::ZERO,
    })
    .await;
    let (dispatcher, mut rx) = Dispatcher::new(fast_retries(6), None).unwrap();
    let sent: Vec<Notification> = ["m1", "m2"]
        .iter()
        .map(|m| notification("errors", "acme", m, NotificationStatus::Firing))
        .collect();
    for n in &sent {
        dispatcher
            .enqueue(&target, Delivery::single(n.clone()))
            .await
            .unwrap();
    }
    let got = outcomes(&mut rx, 2, crate::support::PATIENCE).await;
    // The first delivery took the three 500s: four attempts, then the second
    // went through at once (same worker, in order).
    assert_eq!(got[0].0.result, DeliveryResult::Delivered { attempts: 4 });
    assert_eq!(got[0].0.notification_ids, vec![sent[0].id]);
    assert_eq!(got[1].0.result, DeliveryResult::Delivered { attempts: 1 });
    let received = received.lock().unwrap();
    assert_eq!(received.requests, 5);
    assert!(
        received.bad_signatures.is_empty(),
        "{:?}",
        received.bad_signatures
    );
    // Each id acknowledged exactly once; nothing marked delivered before a 2xx.
    assert_eq!(received.accepted.len(), 2);
    assert!(received.accepted.values().all(|&times| times == 1));
    for n in &sent {
        assert!(received.accepted.contains_key(&n.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_dead_lettered_while_another_gets_its_notifications_on_time() {
    let env = TestEnv::new("alert_delivery").await;
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    // Always 500, and slowly: every attempt takes 400 ms.
    let (broken, _) = start_receiver(Behaviour {
        fail_first: usize::MAX,
        then_status: 200,
        delay: Duration::from_millis(400),
    })
    .await;
    // Refuses for good: one attempt, no retries.
    let (refusing, _) = start_receiver(Behaviour {
        fail_first: 0,
        then_status: 404,
        delay: Duration::ZERO,
    })
    .await;
    let (healthy, received) = start_receiver(Behaviour {
        fail_first: 0,
        then_status: 200,
        delay: Duration::ZERO,
    })
    .await;
    let org = unique("org");
    let (dispatcher, mut rx) = Dispatcher::new(fast_retries(4), Some(pool.clone())).unwrap();
    let started = Instant::now();
    let to_broken = notification("errors", &org, "broken", NotificationStatus::Firing);
    let to_refusing = notification("errors", &org, "refusing", NotificationStatus::Firing);
    // The broken receiver is queued first, with several deliveries.
    dispatcher
        .enqueue(&broken, Delivery::single(to_broken.clone()))
        .await
        .unwrap();
    for m in ["b2", "b3"] {
        dispatcher
            .enqueue(
                &broken,
                Delivery::single(notification("errors", &org, m, NotificationStatus::Firing)),
            )
            .await
            .unwrap();
    }
    dispatcher
        .enqueue(&refusing, Delivery::single(to_refusing.clone()))
        .await
        .unwrap();
    let healthy_sent: Vec<Notification> = (0..5)
        .map(|i| notification("errors", &org, &format!("h{i}"), NotificationStatus::Firing))
        .collect();
    for n in &healthy_sent {
        dispatcher
            .enqueue(&healthy, Delivery::single(n.clone()))
            .await
            .unwrap();
    }
    let got = outcomes(&mut rx, 9, Duration::from_secs(60)).await;
    let healthy_done = got
        .iter()
        .filter(|(o, _)| o.receiver_id == healthy.id)
        .map(|(_, at)| at.duration_since(started))
        .max()
        .unwrap();
    let first_broken = got
        .iter()
        .find(|(o, _)| o.receiver_id == broken.id)
        .map(|(_, at)| at.duration_since(started))
        .unwrap();
    println!("healthy receiver done after {healthy_done:?}; broken receiver's first dead letter after {first_broken:?}");
    // The healthy receiver is not behind the broken one's 4 × 400 ms plus
    // backoff for even one delivery, let alone three: all five of its
    // deliveries land before the broken receiver's first dead letter. (An
    // order, not a time limit: a loaded machine slows both alike.)
    assert!(
        first_broken > healthy_done,
        "healthy receiver done after {healthy_done:?}, not before the broken one's first dead letter ({first_broken:?})"
    );
    assert_eq!(received.lock().unwrap().accepted.len(), 5);
    for (outcome, _) in &got {
        match outcome.receiver_id {
            id if id == healthy.id => {
                assert_eq!(outcome.result, DeliveryResult::Delivered { attempts: 1 })
            }
            id if id == broken.id => assert!(
                matches!(&outcome.result, DeliveryResult::DeadLettered { attempts: 4, error } if error.contains("500")),
                "{outcome:?}"
            ),
            _ => assert!(
                matches!(&outcome.result, DeliveryResult::DeadLettered { attempts: 1, error } if error.contains("404")),
                "{outcome:?}"
            ),
        }
    }
    // What the Alerts page lists: newest first, this org only.
    let letters = list_dead_letters(&pool, Some(&org), 50).await.unwrap();
    assert_eq!(letters.len(), 4, "{letters:?}");
    let first = letters
        .iter()
        .find(|l| l.delivery_id == to_broken.id)
        .expect("broken receiver's first delivery is dead-lettered");
    assert_eq!(first.receiver_id, broken.id);
    assert_eq!(first.receiver_kind, "webhook");
    assert_eq!(first.notification_ids, vec![to_broken.id]);
    assert_eq!(first.attempts, 4);
    assert!(first.last_error.contains("500"), "{}", first.last_error);
    let payload: Vec<Notification> = serde_json::from_str(&first.payload).unwrap();
    assert_eq!(payload, vec![to_broken.clone()]);
    let refused = letters
        .iter()
        .find(|l| l.delivery_id == to_refusing.id)
        .unwrap();
    assert_eq!(refused.attempts, 1);
    assert!(letters.windows(2).all(|w| w[0].failed_at >= w[1].failed_at));
    assert!(list_dead_letters(&pool, Some("another-org"), 50)
        .await
        .unwrap()
        .is_empty());
    dispatcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_a_firing_alert_with_its_labels_then_resolves_it() {
    let am = alertmanager_url();
    let target = ReceiverTarget {
        id: Uuid::now_v7(),
        kind: ReceiverKind::Alertmanager,
        url: am.clone(),
        secret: None,
    };
    let (dispatcher, mut rx) = Dispatcher::new(fast_retries(3), None).unwrap();
    let rule = unique("ErrorRate");
    let firing = notification(&rule, "acme", "gpt-4o", NotificationStatus::Firing);
    dispatcher
        .enqueue(&target, Delivery::single(firing.clone()))
        .await
        .unwrap();
    let got = outcomes(&mut rx, 1, crate::support::PATIENCE).await;
    assert_eq!(got[0].0.result, DeliveryResult::Delivered { attempts: 1 });

    let deadline = Instant::now() + crate::support::PATIENCE;
    let alert = loop {
        let alerts = alertmanager_alerts(&am, &rule).await;
        if let Some(alert) = alerts.into_iter().next() {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "alert {rule} never appeared in {am}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], rule.as_str());
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["org"], "acme");
    assert_eq!(labels["tollgate_rule_id"], firing.rule_id.to_string());
    assert_eq!(labels["provider"], "openai");
    assert_eq!(labels["model"], "gpt-4o");
    assert_eq!(
        alert["annotations"]["summary"],
        "gpt-4o error rate above 5%"
    );
    assert_eq!(alert["annotations"]["value"], "12.5");
    assert_eq!(
        alert["annotations"]["tollgate_notification_id"],
        firing.id.to_string()
    );
    assert_eq!(alert["generatorURL"], firing.generator_url.as_str());
    let starts: chrono::DateTime<Utc> = alert["startsAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        starts.timestamp_millis(),
        firing.starts_at.timestamp_millis()
    );

    let resolved = resolve(&firing);
    assert_eq!(resolved.fingerprint, firing.fingerprint);
    assert_ne!(resolved.id, firing.id);
    dispatcher
        .enqueue(&target, Delivery::single(resolved))
        .await
        .unwrap();
    outcomes(&mut rx, 1, crate::support::PATIENCE).await;
    let deadline = Instant::now() + crate::support::PATIENCE;
    while !alertmanager_alerts(&am, &rule).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "alert {rule} still active after resolve"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
