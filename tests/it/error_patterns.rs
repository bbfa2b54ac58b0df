//! The error-patterns fold and its learners end to end, against real Kafka
//! and ClickHouse: error shapes produced to the events topic and folded by
//! `tollgate process` become one pattern each and are announced once; two
//! processors splitting the events, and a second pipeline fed the same
//! events in another order, agree on ids, counts and learned merges; the
//! recovery learner publishes a plan ranking the fallback that works first,
//! and nothing below the minimum of samples.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use support::errors::{
    attempt, failed, failed_with, messages, shape_signature, Shape, LATE_SHAPE, MERGED_FAMILY,
    SHAPES,
};
use support::kafka::{produce_all, read_records};
use support::TestEnv;
use tollgate_contract::signature::{CanonicalIds, Merge, SignatureId};
use tollgate_contract::{Event, Outcome, Usage};

/// Learners that look every 200 ms instead of every 5 s.
const FAST_LEARNERS: &str =
    "\n[processor.patterns]\nevery_ms = 200\n\n[processor.recovery]\nevery_ms = 200\n";

fn seeded() -> StdRng {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// `per_shape` failed calls of each shape, teams varied, over a few minutes.
fn shape_events(shapes: &[Shape], per_shape: usize, rng: &mut StdRng) -> Vec<Event> {
    let base = Utc::now() - chrono::Duration::minutes(10);
    let mut events = Vec::new();
    for (s, shape) in shapes.iter().enumerate() {
        for i in 0..per_shape {
            let at = base + chrono::Duration::seconds(i64::try_from(i * 7 + s).unwrap());
            events.push(failed(&format!("team-{}", i % 5), shape, rng, at));
        }
    }
    events
}

/// failures per signature in `error_patterns_minute`.
async fn failures_per_signature(env: &TestEnv) -> BTreeMap<u64, u64> {
    parse_pairs(
        &env.ch("SELECT signature, sum(failures) FROM {db}.error_patterns_minute GROUP BY signature FORMAT TabSeparated")
            .await,
    )
}

fn parse_pairs(body: &str) -> BTreeMap<u64, u64> {
    body.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// Poll until `error_patterns_minute` holds `total` failures.
async fn wait_for_failures(env: &TestEnv, total: u64) {
    let got = env
        .wait_for_count(
            "SELECT sum(failures) FROM {db}.error_patterns_minute",
            total,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(got, total, "the fold never counted every failure");
}

fn announcements(records: &[(String, serde_json::Value)]) -> Vec<serde_json::Value> {
    records
        .iter()
        .filter(|(_, v)| v["kind"] == "admin.error_pattern.new")
        .map(|(_, v)| v["admin"].clone())
        .collect()
}

/// Announced signatures, each with how often.
fn announced_counts(records: &[(String, serde_json::Value)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in announcements(records) {
        *out.entry(a["signature"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

#[tokio::test]
async fn each_error_shape_is_one_pattern_counted_and_announced_once() {
    let mut env = TestEnv::with_extra_config("patterns_shapes", FAST_LEARNERS).await;
    let mut rng = seeded();
    let per_shape = 12;
    let events = shape_events(&SHAPES, per_shape, &mut rng);
    // Every message of a shape differs (ids, numbers, durations)...
    for shape in &SHAPES {
        let texts: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e.call.as_ref())
            .filter(|c| {
                c.provider == shape.provider
                    && c.model == shape.model
                    && c.http_status == shape.status
            })
            .filter_map(|c| c.error.as_ref().map(|e| e.message.as_str()))
            .collect();
        if shape.name != "anthropic overloaded" {
            assert!(texts.len() > 1, "{}: {texts:?}", shape.name);
        }
    }
    let mut process = env.spawn_child("process", &["process"]);
    produce_all(&env.events_topic, &messages(&events)).await;
    wait_for_failures(&env, u64::try_from(SHAPES.len() * per_shape).unwrap()).await;

    // ...and each shape is one signature with all its failures.
    let counts = failures_per_signature(&env).await;
    let expected: BTreeMap<u64, u64> = SHAPES
        .iter()
        .map(|shape| {
            let sample = (shape.message)(&mut rng);
            (
                shape_signature(shape, &sample).0,
                u64::try_from(per_shape).unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, expected, "failures per signature");
    let catalog = env
        .ch("SELECT signature, uniqExact(template) FROM {db}.error_pattern_catalog GROUP BY signature FORMAT TabSeparated")
        .await;
    let catalog = parse_pairs(&catalog);
    assert_eq!(
        catalog.len(),
        SHAPES.len(),
        "one catalog entry per shape: {catalog:?}"
    );
    assert!(
        catalog.values().all(|n| *n == 1),
        "one template per signature"
    );

    // Every pattern is announced, on the events topic, as a valid admin event.
    let hex = |id: u64| SignatureId(id).to_string();
    let wanted: BTreeSet<String> = expected.keys().map(|id| hex(*id)).collect();
    let records = read_records(&env.events_topic, Duration::from_secs(60), |r| {
        announced_counts(r).len() >= SHAPES.len()
    })
    .await;
    let first_round = announced_counts(&records);
    assert_eq!(first_round.keys().cloned().collect::<BTreeSet<_>>(), wanted);
    for a in announcements(&records) {
        assert_eq!(a["actor"], "tollgate-processor");
        let sig = a["signature"].as_str().unwrap();
        // The announcement names its first failed call, never copies the
        // message (the caller's data, which erasure empties in `calls`).
        assert!(a.get("sample_message").is_none(), "{a}");
        let sample = events
            .iter()
            .find(|e| e.event_id.to_string() == a["sample_event_id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("sample event of {sig} is not one we sent: {a}"));
        let message = &sample
            .call
            .as_ref()
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .message;
        let shape = SHAPES
            .iter()
            .find(|s| hex(shape_signature(s, message).0) == sig)
            .unwrap_or_else(|| panic!("sample call of {sig} is not of its shape: {a}"));
        assert_eq!(a["provider"], shape.provider);
        assert_eq!(a["http_status"], shape.status);
        assert_eq!(a["error_type"], shape.error_type);
        assert!(a["template"].as_str().unwrap().len() > 3, "{a}");
        assert!(a["first_seen"].as_str().unwrap().ends_with('Z'), "{a}");
    }

    // A restart, then more of the same shapes and a new one: the new shape
    // is one new signature, announced; the old ones are not announced again.
    process.kill().unwrap();
    process.wait().unwrap();
    env.spawn("process-again", &["process"]);
    let mut later = shape_events(&SHAPES, 3, &mut rng);
    later.extend(shape_events(&[LATE_SHAPE], 5, &mut rng));
    produce_all(&env.events_topic, &messages(&later)).await;
    let total = SHAPES.len() * (per_shape + 3) + 5;
    wait_for_failures(&env, u64::try_from(total).unwrap()).await;
    let late = shape_signature(&LATE_SHAPE, &(LATE_SHAPE.message)(&mut rng));
    let counts = failures_per_signature(&env).await;
    assert_eq!(counts.len(), SHAPES.len() + 1);
    assert_eq!(counts.get(&late.0), Some(&5));
    let records = read_records(&env.events_topic, Duration::from_secs(60), |r| {
        announced_counts(r).contains_key(&late.to_string())
    })
    .await;
    assert!(announced_counts(&records).contains_key(&late.to_string()));
    // Give the learners many passes (every 200 ms) to announce again.
    let records = read_records(&env.events_topic, Duration::from_secs(3), |_| false).await;
    let counts = announced_counts(&records);
    assert_eq!(counts.len(), SHAPES.len() + 1, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "announced more than once: {counts:?}"
    );
}

/// Signature -> failures, and the learned merges resolved for every
/// signature, of one pipeline.
async fn outcome(env: &TestEnv) -> (BTreeMap<u64, u64>, BTreeMap<u64, (u64, Option<String>)>) {
    let counts = failures_per_signature(env).await;
    let merges: Vec<Merge> = env
        .ch("SELECT from_signature, into_signature, template FROM {db}.error_pattern_merges FORMAT TabSeparated")
        .await
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.splitn(3, '\t').collect();
            Merge {
                from: SignatureId(parts[0].parse().unwrap()),
                into: SignatureId(parts[1].parse().unwrap()),
                template: parts[2].to_string(),
            }
        })
        .collect();
    let canonical = CanonicalIds::new(&merges);
    let resolved = counts
        .keys()
        .map(|id| {
            let c = canonical.canonical(SignatureId(*id));
            (*id, (c.0, canonical.template(c).map(str::to_string)))
        })
        .collect();
    (counts, resolved)
}

/// Poll until every signature of the merged family resolves to one id.
async fn wait_for_family_merged(env: &TestEnv, family: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, resolved) = outcome(env).await;
        let roots: BTreeSet<u64> = family
            .iter()
            .filter_map(|id| resolved.get(id).map(|r| r.0))
            .collect();
        if roots.len() == 1 && family.iter().all(|id| resolved.contains_key(id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the family was never merged: {resolved:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn two_processors_and_another_order_agree_on_ids_counts_and_merges() {
    let mut rng = seeded();
    let mut events = shape_events(&SHAPES, 10, &mut rng);
    let family_shape = Shape {
        name: "model does not exist",
        provider: "openai",
        model: "gpt-4o",
        status: 404,
        error_type: "model_not_found",
        message: |_| String::new(),
    };
    let base = Utc::now() - chrono::Duration::minutes(5);
    for i in 0..12usize {
        let message = MERGED_FAMILY[i % MERGED_FAMILY.len()];
        let at = base + chrono::Duration::seconds(i64::try_from(i).unwrap());
        events.push(failed_with(
            &format!("team-{}", i % 4),
            &family_shape,
            message,
            at,
        ));
    }
    let family: Vec<u64> = MERGED_FAMILY
        .iter()
        .map(|m| shape_signature(&family_shape, m).0)
        .collect();
    let total = u64::try_from(events.len()).unwrap();

    // Pipeline A: two processors in one consumer group share the
    // partitions of a four-partition topic.
    let mut a = TestEnv::with_extra_config("patterns_two", FAST_LEARNERS).await;
    a.spawn("process-1", &["process"]);
    a.spawn("process-2", &["process"]);
    // Pipeline B: one processor, the same events in another order and
    // spread over the partitions differently (other partition keys).
    let mut b = TestEnv::with_extra_config("patterns_other", FAST_LEARNERS).await;
    b.spawn("process", &["process"]);
    let mut shuffled = events.clone();
    shuffled.shuffle(&mut rng);
    for e in &mut shuffled {
        e.team_id = format!("{}-b", e.team_id);
    }
    produce_all(&a.events_topic, &messages(&events)).await;
    produce_all(&b.events_topic, &messages(&shuffled)).await;
    wait_for_failures(&a, total).await;
    wait_for_failures(&b, total).await;
    wait_for_family_merged(&a, &family).await;
    wait_for_family_merged(&b, &family).await;

    let (counts_a, resolved_a) = outcome(&a).await;
    let (counts_b, resolved_b) = outcome(&b).await;
    assert_eq!(counts_a, counts_b, "failures per signature");
    assert_eq!(counts_a.len(), SHAPES.len() + MERGED_FAMILY.len());
    assert!(counts_a.values().all(|n| *n >= 4), "{counts_a:?}");
    assert_eq!(resolved_a, resolved_b, "canonical ids and templates");
    let root = family.iter().min().unwrap();
    for id in &family {
        assert_eq!(
            resolved_a[id],
            (
                *root,
                Some("The model <*> does not exist or you do not have access to it.".to_string())
            )
        );
    }
    for shape in &SHAPES {
        let id = shape_signature(shape, &(shape.message)(&mut rng)).0;
        assert_eq!(
            resolved_a[&id],
            (id, None),
            "{} is merged with nothing",
            shape.name
        );
    }
    // Both replicas of A learn; every pattern is announced.
    let records = read_records(&a.events_topic, Duration::from_secs(60), |r| {
        announced_counts(r).len() >= counts_a.len()
    })
    .await;
    assert_eq!(announced_counts(&records).len(), counts_a.len());
}

/// `n` calls of team `team` at `at`: the first attempt on anthropic/`model`
/// fails overloaded, the second on anthropic/claude-b fails too, the third
/// on openai/gpt-4o succeeds.
fn recovered_calls(team: &str, model: &str, n: usize, status: u16) -> (Vec<Event>, SignatureId) {
    let overloaded = Shape {
        name: "overloaded",
        provider: "anthropic",
        model: "claude-a",
        status,
        error_type: "overloaded_error",
        message: |_| String::new(),
    };
    let message = "Overloaded";
    let sig = shape_signature(&overloaded, message);
    let from = ("anthropic", model);
    let at = Utc::now() - chrono::Duration::minutes(2);
    let mut events = Vec::new();
    for _ in 0..n {
        let mut first = failed_with(team, &overloaded, message, at);
        first.call.as_mut().unwrap().model = model.into();
        let mut second = failed_with(team, &overloaded, message, at);
        second.call.as_mut().unwrap().model = "claude-b".into();
        let third = support::events::call_event(
            team,
            "openai",
            "gpt-4o",
            at,
            Usage::default(),
            Outcome::Success,
        );
        events.push(attempt(first, 1, 0, sig, from, false));
        events.push(attempt(second, 2, 100, sig, from, false));
        events.push(attempt(third, 3, 250, sig, from, true));
    }
    (events, sig)
}

#[tokio::test]
async fn the_recovery_learner_publishes_the_fallback_that_works_first() {
    let mut env = TestEnv::with_extra_config("recovery_learn", FAST_LEARNERS).await;
    env.spawn("process", &["process"]);
    // Enough calls on claude-a (25 >= min_samples 20), too few on claude-z.
    let (mut events, sig) = recovered_calls("team-r", "claude-a", 25, 529);
    let (few, sig_few) = recovered_calls("team-s", "claude-z", 19, 503);
    events.extend(few);
    produce_all(&env.events_topic, &messages(&events)).await;
    let attempts = env
        .wait_for_count(
            "SELECT sum(attempts) FROM {db}.error_recovery_minute",
            (25 + 19) * 2,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(attempts, (25 + 19) * 2);

    let subject = format!("recovery/anthropic/claude-a/{sig}");
    let few_subject = format!("recovery/anthropic/claude-z/{sig_few}");
    let is_final =
        |v: &serde_json::Value| v["recovery"]["order"].as_array().map(Vec::len) == Some(2);
    let records = read_records(&env.decisions_topic, Duration::from_secs(60), |r| {
        r.iter().any(|(k, v)| *k == subject && is_final(v))
    })
    .await;
    let (_, plan) = records
        .iter()
        .rev()
        .find(|(k, _)| *k == subject)
        .unwrap_or_else(|| panic!("no {subject} on the decisions topic: {records:?}"));
    assert_eq!(plan["subject"], subject);
    assert_eq!(plan["action"], "allow");
    let order = plan["recovery"]["order"].as_array().unwrap();
    assert_eq!(order[0]["strategy"], "fallback_provider");
    assert_eq!(
        (order[0]["provider"].as_str(), order[0]["model"].as_str()),
        (Some("openai"), Some("gpt-4o"))
    );
    assert_eq!(
        (
            order[0]["attempts"].as_u64(),
            order[0]["successes"].as_u64()
        ),
        (Some(25), Some(25))
    );
    assert_eq!(order[0]["mean_wait_ms"], 250);
    assert!(order[0]["lower_bound"].as_f64().unwrap() > 0.86);
    assert_eq!(order[1]["model"], "claude-b");
    assert_eq!(
        (
            order[1]["successes"].as_u64(),
            order[1]["lower_bound"].as_f64()
        ),
        (Some(0), Some(0.0))
    );
    assert_eq!(plan["recovery"]["signature"], sig.to_string());
    assert_eq!(plan["recovery"]["model"], "claude-a");

    // More calls that keep the order: nothing new is published; the
    // failure below min_samples never gets a plan.
    let published = records.iter().filter(|(k, _)| *k == subject).count();
    let (more, _) = recovered_calls("team-r", "claude-a", 5, 529);
    produce_all(&env.events_topic, &messages(&more)).await;
    env.wait_for_count(
        "SELECT sum(attempts) FROM {db}.error_recovery_minute",
        (30 + 19) * 2,
        Duration::from_secs(60),
    )
    .await;
    // Many learner passes (every 200 ms) over the whole topic.
    let records = read_records(&env.decisions_topic, Duration::from_secs(3), |_| false).await;
    assert_eq!(
        records.iter().filter(|(k, _)| *k == subject).count(),
        published
    );
    assert!(
        !records.iter().any(|(k, _)| *k == few_subject),
        "{few_subject} has 19 samples, below min_samples 20"
    );
}
