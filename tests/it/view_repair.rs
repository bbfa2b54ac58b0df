//! The latency and error-pattern views after a failed insert that stored
//! its rows after all (docs/processor.md, "Effectively-once", step 7),
//! against real Kafka and ClickHouse: a view that throws for one team makes
//! every insert of its batch fail after `calls` holds it, so no view of
//! that insert sees the batch. The processor repairs the tables from
//! `calls`, and each must then hold, for that team, exactly what its view
//! made of the same calls of another team inserted normally. Then the same
//! rows leave the tables as a server that died after answering would leave
//! them, and `tollgate rollups check --repair` puts them back.

use crate::support;

use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use support::errors::{attempt, failed_with, shape_signature, Shape, SHAPES};
use support::events::{call_event, usage};
use support::TestEnv;
use tollgate_contract::{Event, Outcome};
use uuid::Uuid;

/// The workload of one team: timed calls (some streamed), failures of two
/// shapes, and calls recovered on their third attempt, over three minutes.
fn workload(team: &str, start: DateTime<Utc>) -> Vec<Event> {
    let minute = |i: usize| start + chrono::Duration::seconds(i64::try_from(i % 180).unwrap());
    let mut events = Vec::new();
    for i in 0..40 {
        let mut e = call_event(
            team,
            "openai",
            "gpt-4o",
            minute(i * 5),
            usage(1000 + i as u64, 0, 0, 50, 0),
            Outcome::Success,
        );
        let call = e.call.as_mut().unwrap();
        call.duration_ms = 40 + u32::try_from(i * i * 13).unwrap();
        if i % 2 == 0 {
            call.stream = true;
            call.ttft_ms = Some(7 + u32::try_from(i * 11).unwrap());
        }
        events.push(e);
    }
    for i in 0..12 {
        let shape = &SHAPES[i % 2];
        let mut e = failed_with(team, shape, "Too many requests, slow down", minute(i * 17));
        e.call.as_mut().unwrap().duration_ms = 300 + u32::try_from(i).unwrap();
        events.push(e);
    }
    let overloaded = Shape {
        name: "overloaded",
        provider: "anthropic",
        model: "claude-a",
        status: 529,
        error_type: "overloaded_error",
        message: |_| String::new(),
    };
    let sig = shape_signature(&overloaded, "Overloaded");
    let from = ("anthropic", "claude-a");
    for i in 0..5 {
        let at = minute(100 + i);
        let mut first = failed_with(team, &overloaded, "Overloaded", at);
        first.call.as_mut().unwrap().duration_ms = 90;
        let mut second = failed_with(team, &overloaded, "Overloaded", at);
        let call = second.call.as_mut().unwrap();
        call.model = "claude-b".into();
        call.duration_ms = 120;
        let mut third = call_event(
            team,
            "openai",
            "gpt-4o",
            at,
            usage(2000, 0, 0, 100, 0),
            Outcome::Success,
        );
        third.call.as_mut().unwrap().duration_ms = 700 + u32::try_from(i).unwrap();
        events.push(attempt(first, 1, 0, sig, from, false));
        events.push(attempt(second, 2, 100, sig, from, false));
        events.push(attempt(third, 3, 250, sig, from, true));
    }
    events
}

/// `events` as another team's, each a new event and call.
fn as_team(events: &[Event], team: &str) -> Vec<Event> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.event_id = Uuid::now_v7();
            e.team_id = team.into();
            e.user_id = format!("{team}-user");
            e.api_key_id = format!("{team}-key");
            if let Some(call) = e.call.as_mut() {
                call.call_id = Uuid::now_v7().to_string();
            }
            e
        })
        .collect()
}

async fn produce(env: &TestEnv, events: &[Event]) {
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
        .collect();
    support::kafka::produce_all(&env.events_topic, &messages).await;
}

/// What each table holds for `team`, without the team's own columns, in
/// a stable order (the kept values sorted).
async fn tables_of(env: &TestEnv, team: &str) -> Vec<(&'static str, String)> {
    let statements = [
        (
            "latency_minute_buckets",
            "SELECT toUInt32(minute), provider, model, metric, bucket, sum(calls), sum(total_us) \
             FROM {db}.latency_minute_buckets WHERE team_id = 'TEAM' AND model != 'solo' \
             GROUP BY minute, provider, model, metric, bucket \
             ORDER BY minute, provider, model, metric, bucket FORMAT CSV",
        ),
        (
            "latency_minute_calls",
            "SELECT toUInt32(minute), provider, model, countMerge(calls), sumMerge(errors), \
             arraySort(groupArrayMerge(1000)(duration_sample)), sumMerge(ttft_calls), \
             arraySort(groupArrayIfMerge(1000)(ttft_sample)) \
             FROM {db}.latency_minute_calls WHERE team_id = 'TEAM' AND model != 'solo' \
             GROUP BY minute, provider, model ORDER BY minute, provider, model FORMAT CSV",
        ),
        (
            "error_patterns_minute",
            "SELECT toUInt32(minute), signature, provider, model, sum(failures), \
             sum(calls_recovered), sum(calls_failed) \
             FROM {db}.error_patterns_minute WHERE team_id = 'TEAM' AND model != 'solo' \
             GROUP BY minute, signature, provider, model \
             ORDER BY minute, signature, provider, model FORMAT CSV",
        ),
        (
            "error_recovery_minute",
            "SELECT toUInt32(minute), from_signature, from_provider, from_model, strategy, \
             provider, model, sum(attempts), sum(successes), sum(wait_ms), sum(duration_ms), \
             toString(sum(cost)) \
             FROM {db}.error_recovery_minute WHERE team_id = 'TEAM' \
             GROUP BY minute, from_signature, from_provider, from_model, strategy, provider, model \
             ORDER BY minute, from_signature, from_provider, from_model, strategy, provider, model \
             FORMAT CSV",
        ),
    ];
    let mut held = Vec::new();
    for (table, sql) in statements {
        held.push((table, env.ch(&sql.replace("TEAM", team)).await));
    }
    held
}

fn repaired_line<'a>(log: &'a str, table: &str) -> Option<&'a str> {
    log.lines().find(|l| {
        l.contains("view short of calls; repaired it")
            && (l.contains(&format!("table=\"{table}\"")) || l.contains(&format!("table={table} ")))
    })
}

#[tokio::test]
async fn a_failed_insert_stored_without_its_views_leaves_no_latency_or_pattern_short() {
    let env = TestEnv::new("view_repair").await;
    let prices = env.dir.path().join("prices.json");
    std::fs::write(
        &prices,
        r#"{"gpt-4o": {"litellm_provider": "openai", "effective_from": "2026-01-01T00:00:00Z",
                       "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05}}"#,
    )
    .unwrap();
    let out = env
        .tollgate(&["prices", "import", prices.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    crate::processor::break_views_for_team(&env, "team-boom").await;
    let start = (Utc::now() - chrono::Duration::minutes(10))
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let control = workload("team-ok", start);
    let n = control.len() as u64;

    // The control team first, stored with its views.
    produce(&env, &control).await;
    let mut processor = env.spawn_child("process", &["process", "--folds", "calls"]);
    let calls = "SELECT count() FROM {db}.calls";
    assert_eq!(env.wait_for_count(calls, n, support::PATIENCE).await, n);

    // The same calls for team-boom, and one failure of a shape nobody else
    // has (its catalog row comes only from the repair).
    let mut boom = as_team(&control, "team-boom");
    let solo = Shape {
        name: "solo",
        provider: "solo-provider",
        model: "solo",
        status: 418,
        error_type: "teapot",
        message: |_| String::new(),
    };
    boom.push(failed_with("team-boom", &solo, "I'm a teapot", start));
    produce(&env, &boom).await;
    let want = 2 * n + 1;
    assert_eq!(
        env.wait_for_count(calls, want, support::PATIENCE).await,
        want,
        "log:\n{}",
        crate::processor::log_of(&env, "process")
    );
    let log =
        crate::processor::wait_for_log(&env, "process", "view short of calls; repaired it").await;
    assert!(
        log.contains("failed insert was stored after all"),
        "log:\n{log}"
    );
    assert!(!log.contains("view still disagrees"), "log:\n{log}");

    // Each counted table was short of the whole batch (its first sum):
    // 40 + 12 + 15 timed calls and the solo failure in
    // `latency_minute_calls`; in the buckets the streamed 20 count once
    // more (their time to first token); failures: 12, 2 × 5 first and
    // second attempts, the solo one; recovery attempts: 2 × 5.
    for (table, short) in [
        ("latency_minute_calls", 68),
        ("latency_minute_buckets", 88),
        ("error_patterns_minute", 23),
        ("error_recovery_minute", 10),
    ] {
        let line = repaired_line(&log, table)
            .unwrap_or_else(|| panic!("{table} not repaired; log:\n{log}"));
        assert!(line.contains(&format!("short={short}")), "{line}");
    }

    // Repaired, each table holds for team-boom what its views made of the
    // same calls of team-ok.
    let ok_tables = tables_of(&env, "team-ok").await;
    let repaired = tables_of(&env, "team-boom").await;
    for ((table, want), (_, got)) in ok_tables.iter().zip(&repaired) {
        assert!(want.lines().count() > 1, "{table} is empty:\n{want}");
        assert_eq!(got, want, "{table}");
    }
    let recovered_cost = env
        .ch("SELECT toString(sum(cost)) FROM {db}.error_recovery_minute WHERE team_id = 'team-boom' AND successes > 0")
        .await;
    // 5 × (2000 × 0.0000025 + 100 × 0.00001) = 0.03.
    assert_eq!(recovered_cost.trim(), "0.030000000000");

    // The solo failure: its minute, its pattern, and its catalog row.
    assert_eq!(
        env.ch(
            "SELECT countMerge(calls), sumMerge(errors) FROM {db}.latency_minute_calls \
             WHERE model = 'solo' FORMAT CSV"
        )
        .await,
        "1,1\n"
    );
    let signature = env
        .ch("SELECT error_signature FROM {db}.calls WHERE model = 'solo'")
        .await;
    let signature = signature.trim();
    assert_ne!(signature, "0");
    assert_eq!(
        env.ch(&format!(
            "SELECT sum(failures) FROM {{db}}.error_patterns_minute WHERE signature = {signature}"
        ))
        .await
        .trim(),
        "1"
    );
    assert_eq!(
        env.ch(&format!(
            "SELECT provider, http_status, error_type, toUInt32(minMerge(first_seen)) \
             FROM {{db}}.error_pattern_catalog WHERE signature = {signature} \
             GROUP BY provider, http_status, error_type FORMAT CSV"
        ))
        .await,
        format!("\"solo-provider\",418,\"teapot\",{}\n", start.timestamp())
    );

    support::signal(processor.id(), "TERM");
    let status = crate::processor::wait_exit(&mut processor, Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");

    // Offline: the team's rows leave the four counted tables (as if the
    // server had died after answering the insert), and `tollgate rollups
    // check` finds and repairs them, to the same rows as the other team's.
    let counted = [
        "latency_minute_buckets",
        "latency_minute_calls",
        "error_patterns_minute",
        "error_recovery_minute",
    ];
    for table in counted {
        env.ch(&format!(
            "ALTER TABLE {{db}}.{table} DELETE WHERE team_id = 'team-boom'"
        ))
        .await;
    }
    // The catalog has no team: every pattern leaves it.
    let catalog = "SELECT signature, provider, http_status, error_type, template, \
                   toUInt32(minMerge(first_seen)), toUInt32(maxMerge(last_seen)) \
                   FROM {db}.error_pattern_catalog \
                   GROUP BY signature, provider, http_status, error_type, template \
                   ORDER BY signature, provider, http_status, error_type, template FORMAT CSV";
    let patterns = env.ch(catalog).await;
    let kinds = patterns.lines().count();
    assert!(kinds >= 2, "{patterns}");
    env.ch("ALTER TABLE {db}.error_pattern_catalog DELETE WHERE signature != 0")
        .await;
    let pending = format!(
        "SELECT count() FROM system.mutations WHERE database = '{}' AND is_done = 0",
        env.ch_database
    );
    let waited = std::time::Instant::now();
    while env.ch(&pending).await.trim() != "0" {
        assert!(waited.elapsed() < support::PATIENCE, "mutations not done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let day = start.date_naive();
    let (from, to) = (day.to_string(), (day + chrono::Days::new(2)).to_string());
    let check = |extra: &[&str]| {
        let mut args = vec!["rollups", "check", "--from", &from, "--to", &to];
        args.extend(extra);
        let out = env.tollgate(&args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = check(&[]);
    assert!(!ok, "{text}");
    for table in counted {
        assert!(text.contains(&format!("{table} disagrees in")), "{text}");
    }
    assert!(
        text.contains(
            "latency_minute_calls disagrees in 9 cell(s): its calls are 68 short of calls"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "error_pattern_catalog disagrees on {kinds} key(s): missing"
        )),
        "{text}"
    );
    let (ok, text) = check(&["--repair"]);
    assert!(ok, "{text}");
    assert_eq!(text.matches("repaired:").count(), 5, "{text}");
    assert!(
        text.contains(&format!(
            "error_pattern_catalog repaired: {kinds} key(s) corrected"
        )),
        "{text}"
    );
    let (ok, text) = check(&[]);
    assert!(ok, "{text}");
    assert_eq!(text.matches("agrees with calls").count(), 5, "{text}");
    assert_eq!(env.ch(catalog).await, patterns, "the catalog, refolded");
    let repaired = tables_of(&env, "team-boom").await;
    for ((table, want), (_, got)) in ok_tables.iter().zip(&repaired) {
        assert_eq!(got, want, "{table}, repaired offline");
    }
}
