//! Compliance search over the audit chain against real ClickHouse and
//! PostgreSQL: chains with signed checkpoints are written straight into
//! `audit_chain` / `audit_checkpoints` (built with the fold's own
//! `chain_entry` and signer, so they are what the fold writes), then
//! `tollgate api` is asked for them. Checked: filters and time ranges,
//! cursor pagination (stable order, no duplicates or gaps), inclusion
//! proofs recomputed here independently (sha2 + ed25519-dalek from
//! docs/audit.md), entries past the last checkpoint reported as
//! unverifiable-yet, 400s naming the parameter, tenant isolation (401, 403,
//! 404) for search, entry, proof and export, and the compliance pages in
//! headless Chromium (screenshots under tests/artifacts/).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::chromium::signed_in_dom;
use support::TestEnv;
use tollgate_contract::audit::checkpoint::{ChainRef, CheckpointRow, CheckpointSigner};
use tollgate_contract::audit::entry::{chain_entry, EntryFields, EntryRow, Position, GENESIS};
use tollgate_contract::audit::merkle::Compact;

const SEED: &str = "4f1c0a7e3b9d2c8e5f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";

/// Time between two pairs of entries of a chain: 40 entries span two days.
const STEP_MS: u64 = 5_400_000;

/// `(chain, org, entries, checkpoint ends)`: the last entries of team-a1
/// and team-a2 are not covered by a checkpoint yet.
const CHAINS: [(&str, &str, u64, &[u64]); 3] = [
    ("team-a1", "org-a", 40, &[10, 20, 30]),
    ("team-a2", "org-a", 25, &[20]),
    ("team-b1", "org-b", 15, &[15]),
];

fn config() -> String {
    format!(
        "[audit]\ngroup_id = \"{}\"\nsigning_key = \"{SEED}\"\n",
        support::unique("audit_search")
    )
}

/// Write the chains of [`CHAINS`]; pairs of entries that share a
/// millisecond (so ordering ties are broken by chain and seq) every
/// [`STEP_MS`], starting at 01:00 UTC two days ago.
async fn seed(env: &TestEnv) -> (Vec<EntryRow>, Vec<CheckpointRow>) {
    let client = clickhouse::Client::default()
        .with_url(support::clickhouse_url())
        .with_database(&env.ch_database)
        .with_validation(false);
    let signer = CheckpointSigner::from_hex_seed(SEED).unwrap();
    let now = chrono::Utc::now().timestamp_millis() as u64;
    let base = now - now % 86_400_000 - 2 * 86_400_000 + 3_600_000;
    let mut rows = Vec::new();
    let mut checkpoints = Vec::new();
    for (c, (chain, org, n, ends)) in CHAINS.iter().enumerate() {
        let mut prev = GENESIS;
        let mut hashes = Vec::new();
        for seq in 1..=*n {
            let i = seq - 1;
            let blocked = i % 10 == 9;
            let model = ["gpt-4o", "claude-sonnet-4"][(i % 2) as usize];
            let event = serde_json::json!({"call": {"model": model}, "i": i, "chain": chain});
            let fields = EntryFields {
                occurred_at_ms: base + (i / 2) * STEP_MS,
                event_id: uuid::Uuid::now_v7().to_string(),
                kind: if blocked {
                    "ai.call.blocked"
                } else {
                    "ai.call.completed"
                }
                .into(),
                org_id: org.to_string(),
                team_id: chain.to_string(),
                user_id: format!("user-{}", i % 3),
                api_key_id: format!("key-{}", i % 2),
                provider: ["openai", "anthropic"][(i % 2) as usize].into(),
                model: model.into(),
                outcome: if blocked {
                    "blocked"
                } else if i % 5 == 4 {
                    "error"
                } else {
                    "success"
                }
                .into(),
                decision: if blocked { "deny" } else { "" }.into(),
                decision_reason: if blocked { "budget_exceeded" } else { "" }.into(),
                event_json: serde_json::to_string(&event).unwrap(),
            };
            let (row, hash) = chain_entry(
                fields,
                Position {
                    chain_id: chain,
                    seq,
                    partition: c as i32,
                    offset: seq as i64,
                },
                &prev,
                &rand::random(),
            );
            prev = hash;
            hashes.push(hash);
            rows.push(row);
        }
        let mut from = 1;
        let mut prefix = Compact::new();
        let chain_ref = ChainRef {
            chain_id: chain,
            org_id: org,
            team_id: chain,
        };
        for to in *ends {
            let segment = &hashes[(from - 1) as usize..*to as usize];
            checkpoints.push(
                signer
                    .checkpoint(chain_ref, from, segment, &mut prefix, base + to * 1000)
                    .unwrap(),
            );
            from = to + 1;
        }
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
    (rows, checkpoints)
}

/// A filter over seeded rows, the expectation for one search.
type RowFilter = Box<dyn Fn(&EntryRow) -> bool>;

async fn get(env: &TestEnv, path: &str, key: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", env.direct_api_url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get_json(env: &TestEnv, path: &str, key: &str) -> Value {
    let (status, body) = get(env, path, Some(key)).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Every page of a search, following `next_cursor`.
async fn all_pages(env: &TestEnv, query: &str, key: &str) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit/entries?{query}&cursor={c}"),
            None => format!("/api/v1/audit/entries?{query}"),
        };
        let page = get_json(env, &path, key).await;
        pages += 1;
        out.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (out, pages),
        }
        assert!(pages < 1000, "pagination does not end");
    }
}

fn position(v: &Value) -> (u64, String, u64) {
    (
        v["occurred_at_ms"].as_u64().unwrap(),
        v["chain_id"].as_str().unwrap().to_string(),
        v["seq"].as_u64().unwrap(),
    )
}

fn sorted_positions(rows: &[&EntryRow]) -> Vec<(u64, String, u64)> {
    let mut out: Vec<_> = rows
        .iter()
        .map(|r| (r.occurred_at_ms, r.chain_id.clone(), r.seq))
        .collect();
    out.sort();
    out
}

fn h(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update([1u8]);
    d.update(left);
    d.update(right);
    d.finalize().into()
}

fn leaf(entry: &[u8; 32]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update([0u8]);
    d.update(entry);
    d.finalize().into()
}

/// RFC 6962 tree hash, written here from the RFC.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaf(&leaves[0]);
    }
    let mut k = 1;
    while k * 2 < leaves.len() {
        k *= 2;
    }
    node(&mth(&leaves[..k]), &mth(&leaves[k..]))
}

/// RFC 9162 section 2.1.3.2, written here from the RFC.
fn root_from_path(entry: &[u8; 32], index: u64, size: u64, path: &[[u8; 32]]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf(entry);
    for p in path {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(r)
}

fn public_key() -> VerifyingKey {
    ed25519_dalek::SigningKey::from_bytes(&h(SEED)).verifying_key()
}

/// The checkpoint's signature over its canonical message (docs/audit.md).
fn signature_ok(cp: &Value) -> bool {
    let message = format!(
        "{{\"chain_id\":{},\"created_at_ms\":{},\"from_seq\":{},\"head_hash\":{},\"merkle_root\":{},\"org_id\":{},\"public_key\":{},\"team_id\":{},\"to_seq\":{},\"tree_root\":{},\"type\":\"tollgate.audit.checkpoint\",\"v\":2}}",
        cp["chain_id"], cp["created_at_ms"], cp["from_seq"], cp["head_hash"], cp["merkle_root"], cp["org_id"], cp["public_key"], cp["team_id"], cp["to_seq"], cp["tree_root"]
    );
    let sig: [u8; 64] = hex::decode(cp["signature"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    public_key()
        .verify(message.as_bytes(), &Signature::from_bytes(&sig))
        .is_ok()
}

/// Check one result's proof independently; returns its status.
fn check_proof(entry: &Value, rows: &[EntryRow]) -> String {
    let result = &entry["proof"];
    let status = result["status"].as_str().unwrap().to_string();
    if status != "verified" {
        assert!(result["proof"].is_null(), "{entry}");
        return status;
    }
    let proof = &result["proof"];
    let cp = &result["checkpoint"];
    let chain = entry["chain_id"].as_str().unwrap();
    let seq = entry["seq"].as_u64().unwrap();
    let (from, to) = (
        cp["from_seq"].as_u64().unwrap(),
        cp["to_seq"].as_u64().unwrap(),
    );
    assert!(from <= seq && seq <= to, "{entry}");
    assert_eq!(proof["leaf_index"], seq - from);
    assert_eq!(proof["tree_size"], to - from + 1);
    let path: Vec<[u8; 32]> = proof["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| h(p.as_str().unwrap()))
        .collect();
    let root = root_from_path(
        &h(entry["entry_hash"].as_str().unwrap()),
        seq - from,
        to - from + 1,
        &path,
    )
    .expect("a well-formed path");
    assert_eq!(hex::encode(root), cp["merkle_root"].as_str().unwrap());
    // And the root is the one of the seeded segment.
    let segment: Vec<[u8; 32]> = rows
        .iter()
        .filter(|r| r.chain_id == chain && (from..=to).contains(&r.seq))
        .map(|r| h(&r.entry_hash))
        .collect();
    assert_eq!(
        hex::encode(mth(&segment)),
        cp["merkle_root"].as_str().unwrap()
    );
    assert!(signature_ok(cp), "checkpoint signature: {cp}");
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn search_filters_pagination_and_proofs() {
    let mut env = TestEnv::with_extra_config("audit_search", &config()).await;
    let (rows, _) = seed(&env).await;
    env.start_api().await;
    let admin = env.create_key_with_role("admin", None);

    // Every entry, seven at a time: stable order, no duplicate, no gap.
    let (all, pages) = all_pages(&env, "limit=7", &admin).await;
    assert_eq!(all.len(), rows.len());
    assert_eq!(pages, rows.len().div_ceil(7));
    let got: Vec<_> = all.iter().map(position).collect();
    let want = sorted_positions(&rows.iter().collect::<Vec<_>>());
    assert_eq!(got, want, "pages in (occurred_at_ms, chain, seq) order");
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>().len(),
        rows.len(),
        "no duplicates"
    );
    for entry in &all {
        let row = rows
            .iter()
            .find(|r| r.chain_id == entry["chain_id"] && r.seq == entry["seq"])
            .unwrap();
        assert_eq!(entry["entry_hash"], row.entry_hash.as_str());
    }

    // Filters, each against the same filter applied to the seeded rows.
    let from = rows.iter().map(|r| r.occurred_at_ms).min().unwrap() + 3 * STEP_MS;
    let to = from + 8 * STEP_MS;
    let cases: Vec<(String, RowFilter)> = vec![
        (
            "org=org-a".into(),
            Box::new(|r: &EntryRow| r.org_id == "org-a"),
        ),
        (
            "org=org-a&model=gpt-4o&user=user-1".into(),
            Box::new(|r: &EntryRow| {
                r.org_id == "org-a" && r.model == "gpt-4o" && r.user_id == "user-1"
            }),
        ),
        (
            "team=team-b1&outcome=error".into(),
            Box::new(|r: &EntryRow| r.team_id == "team-b1" && r.outcome == "error"),
        ),
        (
            "decision=deny".into(),
            Box::new(|r: &EntryRow| r.decision == "deny"),
        ),
        (
            "kind=ai.call.blocked&provider=anthropic".into(),
            Box::new(|r: &EntryRow| r.kind == "ai.call.blocked" && r.provider == "anthropic"),
        ),
        (
            "key=key-0&team=team-a2".into(),
            Box::new(|r: &EntryRow| r.api_key_id == "key-0" && r.team_id == "team-a2"),
        ),
        (
            format!("from={from}&to={to}"),
            Box::new(move |r: &EntryRow| r.occurred_at_ms >= from && r.occurred_at_ms < to),
        ),
    ];
    for (query, keep) in &cases {
        let (found, _) = all_pages(&env, &format!("{query}&limit=4"), &admin).await;
        let want = sorted_positions(&rows.iter().filter(|r| keep(r)).collect::<Vec<_>>());
        assert!(!want.is_empty(), "{query} matches seeded rows");
        assert_eq!(
            found.iter().map(position).collect::<Vec<_>>(),
            want,
            "{query}"
        );
    }
    // RFC 3339 times work too.
    let from_text = chrono::DateTime::from_timestamp_millis(from as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (found, _) = all_pages(&env, &format!("from={from_text}&to={to}"), &admin).await;
    let want = rows
        .iter()
        .filter(|r| r.occurred_at_ms >= from && r.occurred_at_ms < to)
        .count();
    assert_eq!(found.len(), want);

    // Bad parameters: 400 naming the parameter.
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("from=yesterday", "from"),
        ("from=2026-03-11&to=2026-03-10", "to"),
        ("cursor=zz", "cursor"),
        ("proof=maybe", "proof"),
        ("team=a&team=b", "team"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = get(
            &env,
            &format!("/api/v1/audit/entries?{query}"),
            Some(&admin),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
    let (status, body) = get(&env, "/api/v1/audit/entries/team-a1/abc", Some(&admin)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"parameter\":\"seq\""), "{body}");

    // Proofs: every covered entry's proof recomputes its signed checkpoint's
    // root; the entries after the last checkpoint are unverifiable yet.
    let (proven, _) = all_pages(&env, "proof=true&limit=50", &admin).await;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for entry in &proven {
        *statuses.entry(check_proof(entry, &rows)).or_default() += 1;
    }
    assert_eq!(
        statuses.get("verified"),
        Some(&(30 + 20 + 15)),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get("unverifiable_yet"),
        Some(&(10 + 5)),
        "{statuses:?}"
    );
    assert_eq!(statuses.len(), 2, "{statuses:?}");

    // One entry, with its proof.
    let one = get_json(&env, "/api/v1/audit/entries/team-a1/13", &admin).await;
    assert_eq!(one["seq"], 13);
    assert_eq!(check_proof(&one, &rows), "verified");
    assert_eq!(one["proof"]["proof"]["leaf_index"], 2);
    let pending = get_json(&env, "/api/v1/audit/entries/team-a2/22", &admin).await;
    assert_eq!(pending["proof"]["status"], "unverifiable_yet");
    let (status, _) = get(&env, "/api/v1/audit/entries/team-a1/999", Some(&admin)).await;
    assert_eq!(status, 404);

    // verify-audit over a time range: only the chains with entries in it
    // (team-a2 ends earlier than team-a1), each verified from seq 1.
    let late = rows
        .iter()
        .find(|r| r.chain_id == "team-a1" && r.seq == 35)
        .unwrap()
        .occurred_at_ms;
    let out = env
        .tollgate(&[
            "verify-audit",
            "--org",
            "org-a",
            "--from",
            &late.to_string(),
            "--json",
            // The seeded checkpoints went straight into ClickHouse, not
            // through the fold to the anchor.
            "--no-anchor",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let chains: Vec<&str> = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chain_id"].as_str().unwrap())
        .collect();
    assert_eq!(chains, ["team-a1"], "{report}");
    assert_eq!(report["entries"], 40);
    let out = env
        .tollgate(&["verify-audit", "--org", "org-a", "--from", "tomorrow"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));

    // Tampering shows: edit an entry's model in ClickHouse, its proof fails.
    env.ch("ALTER TABLE {db}.audit_chain UPDATE model = 'gpt-evil' WHERE chain_id = 'team-a1' AND seq = 5")
        .await;
    let start = Instant::now();
    loop {
        let edited = get_json(&env, "/api/v1/audit/entries/team-a1/5", &admin).await;
        if edited["model"] == "gpt-evil" {
            assert_eq!(edited["proof"]["status"], "failed", "{edited}");
            break;
        }
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "mutation not applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A covering checkpoint deleted while a later one stays: its entries
    // are not "not yet covered" (a trial's read so) but failed, naming the
    // missing checkpoint.
    env.ch("ALTER TABLE {db}.audit_checkpoints DELETE WHERE chain_id = 'team-a1' AND to_seq = 20")
        .await;
    let start = Instant::now();
    loop {
        let entry = get_json(&env, "/api/v1/audit/entries/team-a1/13", &admin).await;
        if entry["proof"]["status"] != "verified" {
            assert_eq!(entry["proof"]["status"], "failed", "{entry}");
            let detail = entry["proof"]["detail"].as_str().unwrap();
            assert!(detail.contains("yet one starts at seq 21"), "{detail}");
            break;
        }
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "mutation not applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn search_tenant_isolation_and_search_export() {
    let mut env = TestEnv::with_extra_config("audit_search_iso", &config()).await;
    let (rows, _) = seed(&env).await;
    env.start_api().await;
    let compliance_a = env.create_key_with_role("compliance", Some("org-a"));
    let compliance_all = env.create_key_with_role("compliance", None);
    let finance_a = env.create_key_with_role("finance", Some("org-a"));

    // Unauthenticated and wrong role.
    for path in [
        "/api/v1/audit/entries",
        "/api/v1/audit/entries/team-a1/1",
        "/api/v1/audit/export?org=org-a&from=0",
    ] {
        assert_eq!(get(&env, path, None).await.0, 401, "{path}");
        assert_eq!(get(&env, path, Some("tg_nope_x")).await.0, 401, "{path}");
        assert_eq!(get(&env, path, Some(&finance_a)).await.0, 403, "{path}");
    }
    // An org-scoped key sees its org only, with or without `org=`.
    let (mine, _) = all_pages(&env, "limit=100&proof=true", &compliance_a).await;
    assert_eq!(
        mine.len(),
        rows.iter().filter(|r| r.org_id == "org-a").count()
    );
    assert!(mine.iter().all(|e| e["org_id"] == "org-a"));
    for path in [
        "/api/v1/audit/entries?org=org-b",
        "/api/v1/audit/entries/team-b1/3",
        "/api/v1/audit/export?org=org-b&from=0",
        "/api/v1/audit/export?org=org-b",
    ] {
        let (status, body) = get(&env, path, Some(&compliance_a)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("entry_hash") && !body.contains("user-"),
            "{body}"
        );
    }
    // ...and another org's entry looks exactly like one that does not exist.
    let (_, other_org) = get(&env, "/api/v1/audit/entries/team-b1/3", Some(&compliance_a)).await;
    let (_, missing) = get(
        &env,
        "/api/v1/audit/entries/team-b1/3000",
        Some(&compliance_a),
    )
    .await;
    assert_eq!(
        other_org.replace(" 3 ", " N "),
        missing.replace(" 3000 ", " N ")
    );
    // An unscoped compliance key sees every org.
    let (everything, _) = all_pages(&env, "limit=100", &compliance_all).await;
    assert_eq!(everything.len(), rows.len());
    let b = get_json(&env, "/api/v1/audit/entries/team-b1/3", &compliance_all).await;
    assert_eq!(b["org_id"], "org-b");

    // Export of a search: only the org's matching entries, each with its
    // proof and the checkpoints they need; unverifiable ones marked.
    let (status, body) = get(
        &env,
        "/api/v1/audit/export?from=0&model=gpt-4o",
        Some(&compliance_a),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["scope"], "search");
    assert_eq!(lines[0]["org"], "org-a");
    let entries: Vec<&Value> = lines.iter().filter(|l| l["type"] == "entry").collect();
    let want = rows
        .iter()
        .filter(|r| r.org_id == "org-a" && r.model == "gpt-4o")
        .count();
    assert_eq!(entries.len(), want);
    let checkpoints: BTreeMap<(String, u64), &Value> = lines
        .iter()
        .filter(|l| l["type"] == "checkpoint")
        .map(|l| {
            (
                (
                    l["chain_id"].as_str().unwrap().to_string(),
                    l["to_seq"].as_u64().unwrap(),
                ),
                l,
            )
        })
        .collect();
    let mut unverifiable = 0;
    for entry in &entries {
        match entry["proof"]["status"].as_str().unwrap() {
            "verified" => {
                // The same nesting as the search API's `proof` member.
                assert_eq!(
                    entry["proof"]["checkpoint"]["to_seq"],
                    entry["proof"]["proof"]["checkpoint_to_seq"]
                );
                let proof = &entry["proof"]["proof"];
                let cp = checkpoints[&(
                    entry["chain_id"].as_str().unwrap().to_string(),
                    proof["checkpoint_to_seq"].as_u64().unwrap(),
                )];
                let wrapped = serde_json::json!({
                    "chain_id": entry["chain_id"], "seq": entry["seq"],
                    "entry_hash": entry["entry_hash"],
                    "proof": {"status": "verified", "proof": proof, "checkpoint": cp},
                });
                assert_eq!(check_proof(&wrapped, &rows), "verified");
            }
            "unverifiable_yet" => {
                assert!(entry["proof"]["proof"].is_null());
                unverifiable += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        unverifiable,
        5 + 3,
        "team-a1 31..40 and team-a2 21..25 with gpt-4o"
    );
    let footer = lines.last().unwrap();
    assert_eq!(footer["type"], "footer");
    assert_eq!(footer["unverifiable_yet"], unverifiable);
    assert!(!body.contains("org-b"));

    // The offline verifier of docs/audit.md agrees, when Python with
    // `cryptography` is available (dev/stack installs it into its venv).
    let python = std::env::var("TOLLGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/tollgate/venv/bin/python")
        });
    if python.exists() {
        let file = env.dir.path().join("search.ndjson");
        std::fs::write(&file, &body).unwrap();
        let out = Command::new(&python)
            .arg(crate::support::repo_root().join("docs/audit_verify.py"))
            .arg(&file)
            .args(["--public-key", &hex::encode(public_key().to_bytes())])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("team-a1 OK"), "{stdout}");
    } else {
        eprintln!(
            "skipping the Python verifier: {} not found",
            python.display()
        );
    }
}

// ------------------------------------------------------------ Chromium

/// The search page's "Entries" table as CSV (`/compliance/search.csv`):
/// every entry of the search (read a page at a time), in the order of the
/// JSON's pages, each row the seeded entry exactly, the caller's org only
/// (another org a 404, another role a 403).
#[tokio::test]
async fn search_csv_is_the_whole_search_in_the_callers_org() {
    let mut env = TestEnv::with_extra_config("audit_search_csv", &config()).await;
    let (rows, _) = seed(&env).await;
    env.start_api().await;
    let compliance_a = env.create_key_with_role("compliance", Some("org-a"));
    let finance_a = env.create_key_with_role("finance", Some("org-a"));
    let want: Vec<&EntryRow> = rows
        .iter()
        .filter(|r| r.org_id == "org-a" && r.model == "gpt-4o")
        .collect();
    assert!(want.len() > 5, "the seed has more than a page");

    // The page links its table's CSV with the search and page size.
    let (status, page) = get(
        &env,
        "/compliance/search?model=gpt-4o&limit=5",
        Some(&compliance_a),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let at = page.find("id=\"entries-csv\" href=\"").unwrap() + "id=\"entries-csv\" href=\"".len();
    let link = page[at..at + page[at..].find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert_eq!(
        link,
        "/compliance/search.csv?org=org-a&model=gpt-4o&limit=5"
    );
    let (status, csv) = get(&env, &link, Some(&compliance_a)).await;
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "chain_id,seq,occurred_at,org_id,team_id,user_id,api_key_id,provider,model,kind,outcome,decision,decision_reason,event_id,entry_hash"
    );
    // Every page of the JSON, row for row, and the seeded entries.
    let mut entries = Vec::new();
    let mut cursor = String::new();
    loop {
        let json = get_json(
            &env,
            &format!("/api/v1/audit/entries?model=gpt-4o&limit=5{cursor}"),
            &compliance_a,
        )
        .await;
        entries.extend(json["entries"].as_array().unwrap().iter().cloned());
        match json["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(entries.len(), want.len());
    assert_eq!(lines.len() - 1, want.len(), "{csv}");
    for (line, e) in lines[1..].iter().zip(&entries) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], e["chain_id"].as_str().unwrap(), "{line}");
        assert_eq!(cells[1], e["seq"].to_string(), "{line}");
        assert_eq!(cells[14], e["entry_hash"].as_str().unwrap(), "{line}");
        let seeded = want
            .iter()
            .find(|r| r.chain_id == cells[0] && r.seq.to_string() == cells[1])
            .unwrap_or_else(|| panic!("not seeded: {line}"));
        let at = chrono::DateTime::from_timestamp_millis(seeded.occurred_at_ms as i64).unwrap();
        assert_eq!(
            cells[2],
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        assert_eq!(
            [cells[3], cells[4], cells[8], cells[9], cells[10]],
            [
                seeded.org_id.as_str(),
                seeded.team_id.as_str(),
                seeded.model.as_str(),
                seeded.kind.as_str(),
                seeded.outcome.as_str()
            ]
        );
        assert_eq!(cells[13], seeded.event_id);
    }
    // The page shows the first five, each linking its entry with the
    // entry's org (which the entry page's navigation carries on).
    for line in &lines[1..6] {
        let cells: Vec<&str> = line.split(',').collect();
        assert!(
            page.contains(&format!(
                "/compliance/entries/{}/{}?org={}\"",
                cells[0], cells[1], cells[3]
            )),
            "{line}"
        );
    }
    // The same file whatever the page size; from a cursor, the rest.
    let (_, all) = get(
        &env,
        "/compliance/search.csv?model=gpt-4o&limit=1000",
        Some(&compliance_a),
    )
    .await;
    assert_eq!(all, csv);
    let at = page
        .find("id=\"next-page\" href=\"/compliance/search?")
        .expect("a next page")
        + "id=\"next-page\" href=\"/compliance/search?".len();
    let next = page[at..at + page[at..].find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(next.contains("cursor="), "{next}");
    let (_, rest) = get(
        &env,
        &format!("/compliance/search.csv?{next}"),
        Some(&compliance_a),
    )
    .await;
    assert_eq!(rest.lines().count() - 1, want.len() - 5, "{rest}");
    assert_eq!(rest.lines().nth(1), lines.get(6).copied());

    // Scoped as the page: another org is a 404, another role a 403.
    let (status, body) = get(
        &env,
        "/compliance/search.csv?org=org-b",
        Some(&compliance_a),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("team-b1"), "{body}");
    assert_eq!(
        get(&env, "/compliance/search.csv", Some(&finance_a))
            .await
            .0,
        403
    );
    // A bad parameter is named.
    let (status, body) = get(&env, "/compliance/search.csv?limit=x", Some(&compliance_a)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");
}

/// Log in through `/compliance/login?key=...&next=<page>` (sets the
/// HttpOnly cookie and redirects), dump the page's DOM and screenshot it.
async fn browse(env: &TestEnv, key: &str, page: &str, shot: &str) -> String {
    signed_in_dom(&env.direct_api_url(), key, page, shot).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_pages_in_chromium() {
    let mut env = TestEnv::with_extra_config("audit_pages", &config()).await;
    let (rows, _) = seed(&env).await;
    env.start_api().await;
    let compliance_a = env.create_key_with_role("compliance", Some("org-a"));
    let finance = env.create_key_with_role("finance", None);

    // Plain HTTP first: to the sign-in page without identity, 403 for
    // another role.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{}/compliance/search", env.direct_api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/login?next=%2Fcompliance%2Fsearch"
    );
    let r = http
        .get(format!("{}/compliance/search", env.direct_api_url()))
        .bearer_auth(&finance)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!(
            "{}/compliance/entries/team-b1/2",
            env.direct_api_url()
        ))
        .bearer_auth(&compliance_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another org's entry");
    let r = http
        .get(format!(
            "{}/compliance/export?model=gpt-4o",
            env.direct_api_url()
        ))
        .bearer_auth(&compliance_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let export = r.text().await.unwrap();
    assert!(export.contains("\"scope\":\"search\""), "{export}");
    assert!(!export.contains("org-b"));

    // The search page: results for the seeded data, chart drawn, pages.
    let dom = browse(
        &env,
        &compliance_a,
        "/compliance/search?limit=20",
        "compliance_search.png",
    )
    .await;
    assert_eq!(
        dom.matches("class=\"entry-row\"").count(),
        20,
        "20 rows on the first page"
    );
    assert!(dom.contains("id=\"next-page\""), "a next page link");
    assert!(!dom.contains("team-b1"), "org-a only");
    let points: u64 = dom
        .split("id=\"daily\"")
        .nth(1)
        .and_then(|rest| rest.split("data-points=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        points >= 2,
        "the entries-per-day chart plotted {points} days"
    );

    // The entry page shows a verified proof.
    let dom = browse(
        &env,
        &compliance_a,
        "/compliance/entries/team-a1/13",
        "compliance_entry.png",
    )
    .await;
    assert!(
        dom.contains("id=\"proof-status\" class=\"badge ok\">verified<"),
        "verified badge"
    );
    let path_items = dom
        .split("id=\"proof-path\"")
        .nth(1)
        .map(|rest| {
            rest.split("</ol>")
                .next()
                .unwrap_or("")
                .matches("<li>")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        path_items, 4,
        "a 10-leaf tree has a 4-hash audit path for leaf 2"
    );
    let row = rows
        .iter()
        .find(|r| r.chain_id == "team-a1" && r.seq == 13)
        .unwrap();
    assert!(dom.contains(&row.entry_hash));

    // The verification page says verified.
    let dom = browse(
        &env,
        &compliance_a,
        "/compliance/verify",
        "compliance_verify.png",
    )
    .await;
    assert!(
        dom.contains("data-org=\"org-a\" data-ok=\"true\""),
        "org-a verified"
    );
    assert!(
        dom.contains("verified 65 entries"),
        "headline with the count"
    );
    assert!(!dom.contains("org-b"));
}

// ------------------------------------------------- export and refusals

/// `GET /api/v1/audit/export` of whole chains is streamed (no
/// `content-length`, chunked: it was built whole in memory, first byte
/// after 85 s on 733 MB) and `verify-audit --export` verifies it; every
/// audit route and compliance page refuses, naming it, a parameter it
/// cannot honour (an export's `limit`, `cursor`, `proof`; an entry's
/// unknown ones), as a 400 page on the pages (the search answered 200,
/// a bad `seq` 404); too long a query string and too large a body are JSON
/// errors naming `query` and `body` (were an empty 414 and plain text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_and_audit_routes_refuse_what_they_cannot_honour() {
    let mut env = TestEnv::with_extra_config("audit_export_stream", &config()).await;
    let (rows, _) = seed(&env).await;
    env.start_api().await;
    let admin = env.create_key_with_role("admin", None);
    let http = reqwest::Client::new();

    let response = http
        .get(format!(
            "{}/api/v1/audit/export?org=org-a",
            env.direct_api_url()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "{:?}",
        response.headers()
    );
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let body = response.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["scope"], "chains");
    let entries = lines.iter().filter(|l| l["type"] == "entry").count();
    assert_eq!(
        entries,
        rows.iter().filter(|r| r.org_id == "org-a").count(),
        "every entry of org-a's chains"
    );
    assert_eq!(lines.last().unwrap()["type"], "footer");
    let file = env.dir.path().join("org-a.ndjson");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new(support::tollgate_bin())
        .args(["verify-audit", "--export", file.to_str().unwrap()])
        .args(["--public-key", &hex::encode(public_key().to_bytes())])
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The API: a 400 naming the parameter.
    for (path, parameter) in [
        ("/api/v1/audit/export?org=org-a&limit=5", "limit"),
        ("/api/v1/audit/export?org=org-a&proof=false", "proof"),
        ("/api/v1/audit/export?model=gpt-4o&cursor=zz", "cursor"),
        ("/api/v1/audit/entries/team-a1/13?foo=1", "foo"),
        ("/api/v1/audit/entries/team-a1/13?proof=false", "proof"),
        ("/api/v1/audit/public-key?foo=1", "foo"),
    ] {
        let (status, body) = get(&env, path, Some(&admin)).await;
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
    }
    // The pages: a 400 page naming it.
    for (path, parameter) in [
        ("/compliance/search?limit=abc", "limit"),
        ("/compliance/search?from=garbage", "from"),
        ("/compliance/search?bogus=1", "bogus"),
        ("/compliance/search?cursor=zz", "cursor"),
        ("/compliance/search?proof=true", "proof"),
        ("/compliance/search.csv?proof=true", "proof"),
        ("/compliance/export?limit=5", "limit"),
        ("/compliance/export?model=gpt-4o&proof=false", "proof"),
        ("/compliance/entries/team-a1/abc", "seq"),
        ("/compliance/entries/team-a1/13?foo=1", "foo"),
    ] {
        let (status, body) = get(&env, path, Some(&admin)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(&format!("`{parameter}`")), "{path}: {body}");
    }

    // Too large: JSON naming what.
    let long = format!("/api/v1/audit/entries?org={}", "a".repeat(20_000));
    let (status, body) = get(&env, &long, Some(&admin)).await;
    assert_eq!(status, 414, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["parameter"], "query", "{body}");
    let response = http
        .post(format!("{}/api/v1/audit/erasures", env.direct_api_url()))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"org\":\"org-a\",\"user\":\"u\",\"reason\":\"{}\"}}",
            "x".repeat(3 << 20)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "body", "{body}");
}

/// The compliance pages fit a phone (390 × 844) and a laptop (1366 × 768)
/// in Chromium (`tests/browser/page_widths.mjs`): the search's table
/// scrolls in its own region (the page was 1572 px wide at 390, its
/// Decision column past its panel at 1366), an entry's hashes and audit
/// path wrap (529 px), the verification's public key wraps (563 px).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_pages_fit_a_phone_and_a_laptop() {
    use crate::support::page_widths::{measure, misfits};
    const VIEWPORTS: [(u32, u32); 2] = [(390, 844), (1366, 768)];
    let mut env = TestEnv::with_extra_config("audit_layout", &config()).await;
    seed(&env).await;
    env.start_api().await;
    let base = env.api_url();
    let paths = [
        "/compliance/search?limit=20",
        "/compliance/entries/team-a1/13",
        "/compliance/verify",
    ];
    let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
    let answer = tokio::task::spawn_blocking(move || measure(&urls, &VIEWPORTS))
        .await
        .unwrap();
    let pages = answer["pages"].as_array().unwrap();
    assert_eq!(pages.len(), paths.len() * VIEWPORTS.len());
    for page in pages {
        assert!(
            page["document"]["scroll_width"].as_u64() <= page["viewport"]["width"].as_u64(),
            "{} at {}: the document is {} px wide",
            page["url"],
            page["viewport"]["width"],
            page["document"]["scroll_width"]
        );
    }
    let wrong = misfits(pages, &base);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
