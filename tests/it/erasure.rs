//! Erasure of a person's data (`tollgate erase`, `POST
//! /api/v1/audit/erasures`; docs/audit.md, "Erasure"): after erasing a
//! user, no row of any table holds their id or personal fields, other
//! users' reports and every team total are unchanged, the whole chain
//! verifies (`tollgate verify-audit`) with the erasure recorded in it, and
//! tampering — an unrecorded erasure, an erased entry filled in again — is
//! still detected.

use chrono::Utc;
use serde_json::Value;
use tollgate_contract::Outcome;

use crate::audit_chain::{chain_break, verify_audit_with};
use crate::support::events::{call_event, usage};
use crate::support::{unique, TestEnv, PATIENCE};

const SEED: &str = "4f1c0a7e3b9d2c8e5f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";
const REASON: &str = "GDPR art. 17 request 2026-0042";

fn config() -> String {
    format!(
        "[audit]\ngroup_id = \"{}\"\nsigning_key = \"{SEED}\"\ncheckpoint_every = 4\ncheckpoint_interval_secs = 3600\n\n[processor]\ngroup_id = \"{}\"\nbatch_max_wait_ms = 200\n",
        unique("erasure_audit"),
        unique("erasure_processor")
    )
}

fn event(team: &str, user: &str, i: u64, outcome: Outcome) -> tollgate_contract::Event {
    let at = Utc::now() - chrono::Duration::minutes(30) + chrono::Duration::seconds(i as i64);
    let mut e = call_event(
        team,
        "openai",
        "gpt-4o",
        at,
        usage(100 + i, 0, 0, 10, 0),
        outcome,
    );
    e.user_id = user.into();
    e.tags.insert("feature".into(), "chat".into());
    let call = e.call.as_mut().unwrap();
    call.prompt_sha256 = Some(format!("{:064x}", i + 1));
    call.response_sha256 = Some(format!("{:064x}", i + 1000));
    if outcome != Outcome::Success {
        call.error = Some(
            serde_json::from_value(serde_json::json!({
                "type": "server_error",
                // Naming the user, as a provider's message may quote the
                // caller: the masked template keeps the name, in `calls`
                // and in the pattern catalog.
                "message": format!("upstream failed for {user} after {} ms", 100 + i),
            }))
            .unwrap(),
        );
    }
    e
}

/// `tollgate erase` of org-1's user alice; its receipt.
fn erase_alice(env: &TestEnv) -> Value {
    let out = env
        .tollgate(&[
            "erase", "--org", "org-1", "--user", "alice", "--reason", REASON, "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "erase: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn mutate(env: &TestEnv, sql: &str, done: &str) {
    env.ch(sql).await;
    let got = env.wait_for_count(done, 1, PATIENCE).await;
    assert_eq!(got, 1, "mutation not applied: {sql}");
}

#[tokio::test]
async fn erasing_a_user_leaves_no_trace_and_the_chain_verifiable() {
    let mut env = TestEnv::with_extra_config("erasure", &config()).await;
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(event("team-a", "alice", i, Outcome::Success));
        events.push(event("team-a", "bob", 10 + i, Outcome::Success));
        let failed = if i == 2 {
            Outcome::Error
        } else {
            Outcome::Success
        };
        events.push(event("team-b", "alice", 20 + i, failed));
    }
    for i in 0..3 {
        let outcome = if i == 0 {
            Outcome::Error
        } else {
            Outcome::Success
        };
        events.push(event("team-b", "carol", 30 + i, outcome));
    }
    // A call of hers the proxy denied, its reason naming her as the
    // proxy's user-budget reasons do: the entry's decision reason, hashed
    // as it is outside the commitment erasure empties, says `<user>`.
    let mut denied = event("team-a", "alice", 40, Outcome::Blocked);
    denied.kind = tollgate_contract::EventKind::CallBlocked;
    denied.call.as_mut().unwrap().error = Some(
        serde_json::from_value(serde_json::json!({
            "type": "budget_exceeded",
            "message": "daily budget of 1 USD for user alice of org org-1 exhausted",
        }))
        .unwrap(),
    );
    events.push(denied);
    env.process_events(&events).await;
    let n = events.len() as u64;
    let chained = env
        .wait_for_count("SELECT count() FROM {db}.audit_chain", n, PATIENCE)
        .await;
    assert_eq!(chained, n);
    // The processor's inserts indexed every entry once (the view's part
    // lands a moment after the chain's).
    env.wait_for_count("SELECT count() FROM {db}.audit_search", n, PATIENCE)
        .await;
    assert_eq!(crate::audit_index::index_state(&env).await, (n, 0, 0));
    env.wait_for_cost_rollup().await;
    let totals = "SELECT team_id, sum(calls), sum(input_tokens), toString(sum(cost)) FROM {db}.cost_daily GROUP BY team_id ORDER BY team_id FORMAT TSV";
    let bob = "SELECT sum(calls), sum(input_tokens), toString(sum(cost)) FROM {db}.cost_daily WHERE user_id = 'bob' FORMAT TSV";
    let (totals_before, bob_before) = (env.ch(totals).await, env.ch(bob).await);
    assert!(bob_before.starts_with("5\t"), "{bob_before}");
    // The rollup per user (0039) holds the same totals, per team and bob's.
    let per_user = |sql: &str| sql.replace("{db}.cost_daily ", "{db}.cost_daily_by_user ");
    assert_eq!(env.ch(&per_user(totals)).await, totals_before);
    assert_eq!(env.ch(&per_user(bob)).await, bob_before);

    assert_eq!(
        env.ch("SELECT decision_reason FROM {db}.audit_chain WHERE decision = 'deny' FORMAT TSV")
            .await
            .trim(),
        "budget_exceeded: daily budget of 1 USD for user <user> of org org-1 exhausted"
    );
    // A misspelt id (ids are case-sensitive) or another org's: refused,
    // nothing recorded, rather than a receipt for nothing.
    for (org, user) in [("org-1", "Alice"), ("org-9", "alice")] {
        let out = env
            .tollgate(&["erase", "--org", org, "--user", user, "--reason", REASON])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("org {org} holds no data of user \"{user}\"")),
            "{err}"
        );
    }
    assert_eq!(
        env.ch_u64(
            "SELECT count() FROM {db}.audit_chain WHERE kind = 'admin.personal_data.erased'"
        )
        .await,
        0
    );

    // Her failure's template names her in the pattern catalog, as
    // carol's names carol.
    let named = |who: &str| {
        format!("SELECT count() FROM {{db}}.error_pattern_catalog WHERE position(template, '{who}') > 0")
    };
    for who in ["alice", "carol"] {
        env.wait_for_count(&named(who), 1, PATIENCE).await;
    }

    let receipt = erase_alice(&env);
    // The catalog's row of her template is gone, carol's stays, and the
    // catalog still covers every failure of `calls` (hers under the
    // emptied template): `rollups check` agrees.
    assert_eq!(
        receipt["tables"]["error_pattern_catalog.template"],
        serde_json::json!({"before": 1, "after": 0}),
        "{receipt}"
    );
    assert_eq!(env.ch_u64(&named("alice")).await, 0);
    assert_eq!(env.ch_u64(&named("carol")).await, 1);
    let day = Utc::now().date_naive();
    let (from, to) = (
        (day - chrono::Days::new(1)).to_string(),
        (day + chrono::Days::new(1)).to_string(),
    );
    let out = env
        .tollgate(&["rollups", "check", "--from", &from, "--to", &to])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("error_pattern_catalog agrees with calls"),
        "{text}"
    );
    assert_eq!(receipt["tables"]["calls"]["before"], 11);
    assert_eq!(receipt["tables"]["calls"]["after"], 0);
    assert_eq!(receipt["tables"]["audit_chain"]["before"], 11);
    assert_eq!(receipt["tables"]["audit_chain"]["after"], 0);
    assert_eq!(receipt["tables"]["audit_search"]["before"], 11);
    assert_eq!(receipt["tables"]["audit_search"]["after"], 0);
    // No decision reason names her, before or after.
    assert_eq!(
        receipt["tables"]["audit_chain.decision_reason"],
        serde_json::json!({"before": 0, "after": 0})
    );
    assert!(receipt["tables"]["cost_daily"]["before"].as_u64().unwrap() >= 2);
    assert_eq!(receipt["tables"]["cost_daily"]["after"], 0);
    assert!(
        receipt["tables"]["cost_daily_by_user"]["before"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_eq!(receipt["tables"]["cost_daily_by_user"]["after"], 0);
    let chains = receipt["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2, "{receipt}");
    // team-a's chain: 5 calls and the denied one; team-b's: 5.
    let erased: Vec<usize> = chains
        .iter()
        .map(|c| c["erased_seqs"].as_array().unwrap().len())
        .collect();
    assert_eq!(erased, [6, 5], "{receipt}");
    for c in chains {
        assert!(c["record_seq"].as_u64().unwrap() > 5, "{c}");
    }
    assert_eq!(receipt["kept_v1_entries"], Value::Array(Vec::new()));

    // No table holds alice's id: every MergeTree table with a user_id
    // column, as system.columns lists them.
    let tables = env
        .ch("SELECT name FROM system.tables WHERE database = '{db}' AND engine LIKE '%MergeTree' AND name IN (SELECT table FROM system.columns WHERE database = '{db}' AND name = 'user_id') ORDER BY name FORMAT TSV")
        .await;
    let tables: Vec<&str> = tables.lines().collect();
    assert_eq!(
        tables,
        [
            "audit_chain",
            "audit_search",
            "calls",
            "cost_adjustments",
            "cost_daily",
            "cost_daily_by_user"
        ]
    );
    for table in tables {
        assert_eq!(
            env.ch_u64(&format!(
                "SELECT count() FROM {{db}}.{table} WHERE user_id = 'alice'"
            ))
            .await,
            0,
            "{table}"
        );
    }
    // Nor anything else of hers: the chained events, prompt and response
    // hashes, the error message.
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.audit_chain WHERE positionCaseInsensitive(event_json, 'alice') > 0")
            .await,
        0
    );
    let ids: Vec<String> = events
        .iter()
        .filter(|e| e.user_id == "alice")
        .map(|e| format!("'{}'", e.event_id))
        .collect();
    let hers = format!("event_id IN ({})", ids.join(", "));
    assert_eq!(
        env.ch_u64(&format!("SELECT count() FROM {{db}}.calls WHERE {hers} AND user_id = '' AND prompt_sha256 = '' AND response_sha256 = '' AND error_message = ''"))
            .await,
        11
    );
    // Her failed call keeps its pattern's signature, not the message's
    // masked text or parts (a trial put the message back together from
    // them after an erasure).
    assert_eq!(
        env.ch_u64(&format!("SELECT count() FROM {{db}}.calls WHERE {hers} AND kind = 'ai.call.failed' AND error_signature != 0 AND error_template = '' AND empty(error_variables)"))
            .await,
        1
    );
    assert_eq!(
        env.ch_u64(&format!("SELECT count() FROM {{db}}.audit_chain WHERE {hers} AND user_id = '' AND event_json = '' AND salt = '' AND length(personal_commitment) = 64"))
            .await,
        11
    );
    // Other users and every total unchanged.
    assert_eq!(env.ch(bob).await, bob_before);
    assert_eq!(env.ch(totals).await, totals_before);
    assert_eq!(env.ch(&per_user(bob)).await, bob_before);
    assert_eq!(env.ch(&per_user(totals)).await, totals_before);

    // The erasure is in each chain, naming positions and reason, not her.
    let records = env
        .ch("SELECT chain_id, seq, event_json FROM {db}.audit_chain WHERE kind = 'admin.personal_data.erased' ORDER BY chain_id FORMAT JSONEachRow")
        .await;
    let records: Vec<Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    for (record, c) in records.iter().zip(chains) {
        assert_eq!(record["chain_id"], c["chain_id"]);
        let event: Value = serde_json::from_str(record["event_json"].as_str().unwrap()).unwrap();
        assert_eq!(event["admin"]["reason"], REASON);
        assert_eq!(event["admin"]["seqs"], c["erased_seqs"]);
        assert_eq!(event["admin"]["entry_hashes"], c["entry_hashes"]);
        // Her counts over every chain, in both records alike.
        assert_eq!(event["admin"]["tables"]["audit_chain"], 11, "{event}");
        assert_eq!(event["admin"]["tables"]["calls"], 11, "{event}");
        assert!(!record["event_json"].as_str().unwrap().contains("alice"));
    }
    // The search index matches the erased chain, row for row (her entries
    // under an empty user id), the two records included (and any entry
    // of the control plane's chain, such as a new error pattern).
    let entries = env.ch_u64("SELECT count() FROM {db}.audit_chain").await;
    assert!(entries >= n + 2, "{entries}");
    env.wait_for_count("SELECT count() FROM {db}.audit_search", entries, PATIENCE)
        .await;
    assert_eq!(crate::audit_index::index_state(&env).await, (entries, 0, 0));
    let her_positions =
        format!("(chain_id, seq) IN (SELECT chain_id, seq FROM {{db}}.audit_chain WHERE {hers})");
    assert_eq!(
        env.ch_u64(&format!(
            "SELECT count() FROM {{db}}.audit_search WHERE {her_positions} AND user_id = ''"
        ))
        .await,
        11
    );
    // The whole chain verifies.
    let (ok, report) = verify_audit_with(&env, "org-1", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["entries"], n + 2, "{report}");
    assert!(report["checkpoints"].as_u64().unwrap() >= 4, "{report}");
    // A second erasure of her finds nothing left, and says so.
    let again = env
        .tollgate(&[
            "erase", "--org", "org-1", "--user", "alice", "--reason", REASON,
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds no data of user \"alice\""));
    let check: Value = serde_json::from_str(&env.run(&[
        "erase", "--org", "org-1", "--user", "alice", "--check", "--json",
    ]))
    .unwrap();
    assert!(
        check.as_object().unwrap().values().all(|n| n == 0),
        "{check}"
    );

    // The API: the same erasure for carol, and its refusals.
    env.start_api().await;
    let http = reqwest::Client::new();
    let post = |body: Value, key: Option<String>| {
        let mut request = http
            .post(format!("{}/api/v1/audit/erasures", env.api_url()))
            .json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let other = env.create_key_with_role("compliance", Some("org-2"));
    let response = post(
        serde_json::json!({"org": "org-1", "user": "carol", "reason": REASON}),
        Some(other),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
    let response = post(
        serde_json::json!({"org": "org-1", "user": "carol", "reason": ""}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body.to_string().contains("reason"), "{body}");
    let compliance = env.create_key_with_role("compliance", Some("org-1"));
    // A body missing a member, or with one misspelt, is refused naming it.
    for (body, field) in [
        (
            serde_json::json!({"org": "org-1", "user": "carol"}),
            "reason",
        ),
        (
            serde_json::json!({"org": "org-1", "usr": "carol", "reason": REASON}),
            "usr",
        ),
        (
            serde_json::json!({"org": "org-1", "user": 7, "reason": REASON}),
            "user",
        ),
    ] {
        let response = post(body.clone(), Some(compliance.clone())).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let refused: Value = response.json().await.unwrap();
        assert_eq!(refused["field"], field, "{body}: {refused}");
    }
    let response = post(
        serde_json::json!({"org": "org-1", "user": "carol", "reason": REASON}),
        Some(compliance),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["tables"]["calls"]["before"], 3, "{receipt}");
    assert_eq!(receipt["tables"]["calls"]["after"], 0, "{receipt}");
    assert!(
        receipt["actor"].as_str().unwrap().starts_with("key:"),
        "{receipt}"
    );
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.calls WHERE user_id = 'carol'")
            .await,
        0
    );
    let (ok, report) = verify_audit_with(&env, "org-1", &[]);
    assert!(ok, "{report}");

    // Tampering is still caught: an entry of bob's erased without a
    // record, and one of alice's erased entries filled in again.
    let bob_seq = env
        .ch_u64("SELECT min(seq) FROM {db}.audit_chain WHERE user_id = 'bob'")
        .await;
    mutate(
        &env,
        &format!("ALTER TABLE {{db}}.audit_chain UPDATE user_id = '', event_json = '', salt = '' WHERE chain_id = 'org-1/team-a' AND seq = {bob_seq}"),
        &format!("SELECT count() FROM {{db}}.audit_chain WHERE chain_id = 'org-1/team-a' AND seq = {bob_seq} AND salt = ''"),
    )
    .await;
    let alice_seq = chains
        .iter()
        .find(|c| c["chain_id"] == "org-1/team-b")
        .unwrap()["erased_seqs"][1]
        .as_u64()
        .unwrap();
    mutate(
        &env,
        &format!("ALTER TABLE {{db}}.audit_chain UPDATE user_id = 'alice' WHERE chain_id = 'org-1/team-b' AND seq = {alice_seq}"),
        &format!("SELECT count() FROM {{db}}.audit_chain WHERE chain_id = 'org-1/team-b' AND seq = {alice_seq} AND user_id = 'alice'"),
    )
    .await;
    let (ok, report) = verify_audit_with(&env, "org-1", &[]);
    assert!(!ok, "{report}");
    assert_eq!(
        chain_break(&report, "org-1/team-a"),
        Some((bob_seq, "unrecorded_erasure".into())),
        "{report}"
    );
    assert_eq!(
        chain_break(&report, "org-1/team-b"),
        Some((alice_seq, "edited".into())),
        "{report}"
    );
}

/// A chain written before chains were per org is named by its team alone
/// (`team-old`). Erasing a person there records the erasure in that very
/// chain (the audit fold follows the record's `chain_id` to the team's old
/// chain, written from the same partition), not in the org's new chain of
/// the team, and the chain verifies with her entries erased.
#[tokio::test]
async fn an_erasure_in_a_chain_from_before_chains_were_per_org_is_recorded_there() {
    use tollgate_contract::audit::checkpoint::{ChainRef, CheckpointRow, CheckpointSigner};
    use tollgate_contract::audit::entry::{chain_entry, EntryFields, EntryRow, Position, GENESIS};
    use tollgate_contract::audit::merkle::Compact;

    let mut env = TestEnv::with_extra_config("erasure_legacy", &config()).await;
    let events: Vec<tollgate_contract::Event> = (0..5)
        .map(|i| {
            event(
                "team-old",
                ["alice", "bob"][i as usize % 2],
                i,
                Outcome::Success,
            )
        })
        .collect();
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
        .collect();
    crate::support::kafka::produce_all(&env.events_topic, &messages).await;
    let pid = env.spawn("process", &["process"]);
    let n = events.len() as u64;
    let chained = env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_chain WHERE chain_id = 'org-1/team-old'",
            n,
            PATIENCE,
        )
        .await;
    assert_eq!(chained, n);
    crate::audit_chain::stop(pid).await;

    // Rewrite the chain as the fold before this change named it: the same
    // events at the same Kafka positions, chained and checkpointed (every
    // 4, the rest at shutdown) under chain id `team-old`.
    let client = crate::audit_chain::audit_client(&env);
    let stored: Vec<EntryRow> = client
        .query("SELECT ?fields FROM audit_chain WHERE chain_id = 'org-1/team-old' ORDER BY seq")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(stored.len(), 5);
    let signer = CheckpointSigner::from_hex_seed(SEED).unwrap();
    let chain = ChainRef {
        chain_id: "team-old",
        org_id: "org-1",
        team_id: "team-old",
    };
    let (mut prev, mut prefix) = (GENESIS, Compact::new());
    let (mut rows, mut segment, mut checkpoints) =
        (Vec::new(), Vec::new(), Vec::<CheckpointRow>::new());
    for old in &stored {
        let fields = EntryFields {
            occurred_at_ms: old.occurred_at_ms,
            event_id: old.event_id.clone(),
            kind: old.kind.clone(),
            org_id: old.org_id.clone(),
            team_id: old.team_id.clone(),
            user_id: old.user_id.clone(),
            api_key_id: old.api_key_id.clone(),
            provider: old.provider.clone(),
            model: old.model.clone(),
            outcome: old.outcome.clone(),
            decision: old.decision.clone(),
            decision_reason: old.decision_reason.clone(),
            event_json: old.event_json.clone(),
        };
        let position = Position {
            chain_id: "team-old",
            seq: old.seq,
            partition: old.kafka_partition,
            offset: old.kafka_offset,
        };
        let (row, hash) = chain_entry(fields, position, &prev, &rand::random());
        rows.push(row);
        prev = hash;
        segment.push(hash);
        if segment.len() == 4 || old.seq == 5 {
            let from = old.seq + 1 - segment.len() as u64;
            checkpoints.push(
                signer
                    .checkpoint(chain, from, &segment, &mut prefix, 1)
                    .unwrap(),
            );
            segment.clear();
        }
    }
    for (sql, done) in [
        (
            "ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = 'org-1/team-old'",
            "SELECT count() = 0 FROM {db}.audit_chain WHERE chain_id = 'org-1/team-old'",
        ),
        (
            "ALTER TABLE {db}.audit_search DELETE WHERE chain_id = 'org-1/team-old'",
            "SELECT count() = 0 FROM {db}.audit_search WHERE chain_id = 'org-1/team-old'",
        ),
        (
            "ALTER TABLE {db}.audit_checkpoints DELETE WHERE chain_id = 'org-1/team-old'",
            "SELECT count() = 0 FROM {db}.audit_checkpoints WHERE chain_id = 'org-1/team-old'",
        ),
    ] {
        mutate(&env, sql, done).await;
    }
    let mut insert = client.insert::<EntryRow>("audit_chain").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let mut insert = client
        .insert::<CheckpointRow>("audit_checkpoints")
        .await
        .unwrap();
    for cp in &checkpoints {
        insert.write(cp).await.unwrap();
    }
    insert.end().await.unwrap();
    env.wait_for_count(
        "SELECT count() FROM {db}.audit_search WHERE chain_id = 'team-old'",
        n,
        PATIENCE,
    )
    .await;
    // The anchor topic still holds the rewritten chain's checkpoints under
    // its new name (a rewrite is what the anchor catches), so verification
    // here reads ClickHouse only.
    let (ok, report) = verify_audit_with(&env, "org-1", &["--no-anchor"]);
    assert!(ok, "{report}");

    env.spawn("process", &["process"]);
    let receipt = erase_alice(&env);
    assert_eq!(
        receipt["kept_v1_entries"],
        Value::Array(Vec::new()),
        "{receipt}"
    );
    let chains = receipt["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1, "{receipt}");
    assert_eq!(chains[0]["chain_id"], "team-old");
    assert_eq!(chains[0]["erased_seqs"], serde_json::json!([1, 3, 5]));
    assert_eq!(chains[0]["record_seq"], 6);
    // The record is the old chain's sixth entry; the org's new chain of the
    // team was never started.
    assert_eq!(
        env.ch("SELECT chain_id, seq, kind, org_id FROM {db}.audit_chain WHERE kind = 'admin.personal_data.erased' FORMAT TSV")
            .await
            .trim(),
        "team-old\t6\tadmin.personal_data.erased\torg-1"
    );
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.audit_chain WHERE chain_id = 'org-1/team-old'")
            .await,
        0
    );
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.audit_chain WHERE user_id = 'alice' OR positionCaseInsensitive(event_json, 'alice') > 0")
            .await,
        0
    );
    let (ok, report) = verify_audit_with(&env, "org-1", &["--no-anchor"]);
    assert!(ok, "{report}");
    let c = &report["chains"][0];
    assert_eq!(
        (&c["chain_id"], &c["entries"]),
        (&serde_json::json!("team-old"), &serde_json::json!(6)),
        "{report}"
    );
}
