//! The audit search's ordered index (`audit_search`, migration 0038)
//! against real ClickHouse: the search through it returns exactly what the
//! scan of `audit_chain` it replaced returned, page by page along a cursor
//! walk (several orgs, teams, users, kinds, outcomes and decisions, four
//! entries per millisecond so ties are broken by chain and seq), with the
//! same next cursors and entries per day; and the migration's backfill
//! indexes every entry stored before it exactly once, also when it is
//! applied again or after an interruption that left the view in place.
//! (The index after ingest by the processor, and after erasure: the
//! `erasure` module.)

use crate::cost::forget_migration;
use crate::support;

use support::TestEnv;
use tollgate_contract::audit::entry::EntryRow;
use tollgate_queries::audit::search::{self, Cursor, SearchQuery};

/// The search statement before the index (migration 0038): the page read
/// straight from `audit_chain`. Kept here as the reference the index must
/// match.
const SCAN_SQL: &str = "SELECT chain_id, seq, occurred_at, occurred_at_ms, event_id, kind, org_id, team_id, user_id, api_key_id, provider, model, outcome, decision, decision_reason, event_json, prev_hash, entry_hash, kafka_partition, kafka_offset, v, salt, personal_commitment FROM audit_chain WHERE (? = '' OR org_id = ?) AND (? = '' OR team_id = ?) AND (? = '' OR user_id = ?) AND (? = '' OR api_key_id = ?) AND (? = '' OR model = ?) AND (? = '' OR provider = ?) AND (? = '' OR outcome = ?) AND (? = '' OR decision = ?) AND (? = '' OR kind = ?) AND occurred_at_ms >= ? AND occurred_at_ms < ? AND (occurred_at_ms > ? OR (occurred_at_ms = ? AND (chain_id > ? OR (chain_id = ? AND seq > ?)))) ORDER BY occurred_at_ms, chain_id, seq LIMIT ?";

/// The entries per day before the index.
const SCAN_DAYS_SQL: &str = "SELECT toUInt32(intDiv(occurred_at_ms, 86400000)) AS day, count() AS entries FROM audit_chain WHERE (? = '' OR org_id = ?) AND (? = '' OR team_id = ?) AND (? = '' OR user_id = ?) AND (? = '' OR api_key_id = ?) AND (? = '' OR model = ?) AND (? = '' OR provider = ?) AND (? = '' OR outcome = ?) AND (? = '' OR decision = ?) AND (? = '' OR kind = ?) AND occurred_at_ms >= ? AND occurred_at_ms < ? GROUP BY day ORDER BY day";

/// 2026-03-01 00:00 UTC.
const BASE_MS: u64 = 1_772_323_200_000;

/// `count` entries numbered from `offset`: six chains (team-0..5, org
/// `org-(team % 3)`), seq in chain order, four entries per millisecond
/// step of 97 s (so a page boundary often falls inside a tie), seven users,
/// three kinds, outcomes, decisions, models, providers and keys cycling at
/// different periods.
fn entries_sql(db: &str, offset: u64, count: u64) -> String {
    format!(
        "INSERT INTO {db}.audit_chain (chain_id, seq, occurred_at, occurred_at_ms, event_id, kind, org_id, \
           team_id, user_id, api_key_id, provider, model, outcome, decision, decision_reason, event_json, \
           prev_hash, entry_hash, kafka_partition, kafka_offset, v, salt, personal_commitment) \
         SELECT concat('team-', toString(n % 6)) AS chain, intDiv(n, 6) + 1, \
           toDateTime(intDiv(ms, 1000)), ms, concat('e-', toString(n)), \
           ['ai.call.completed', 'ai.call.failed', 'admin.key.created'][n % 3 + 1], \
           concat('org-', toString(n % 6 % 3)), chain, concat('user-', toString(n % 7)), \
           concat('key-', toString(n % 4)), ['openai', 'anthropic'][n % 2 + 1], \
           ['gpt-4o', 'claude', 'mini', 'large', 'small'][n % 5 + 1], \
           ['success', 'error'][intDiv(n, 3) % 2 + 1], ['', 'allow', 'deny'][n % 11 % 3 + 1], '', \
           concat('{{\"n\":', toString(n), '}}'), '', lower(hex(SHA256(toString(n)))), 0, toInt64(n), \
           toUInt8(2), 'salt', '' \
         FROM (SELECT number + {offset} AS n, {BASE_MS} + intDiv(number + {offset}, 4) * 97000 AS ms \
               FROM system.numbers LIMIT {count})"
    )
}

fn client(env: &TestEnv) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(support::clickhouse_url())
        .with_database(&env.ch_database)
        .with_validation(false)
}

fn query(pairs: &[(&str, &str)], limit: u64) -> SearchQuery {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("limit".to_string(), limit.to_string())])
        .collect();
    SearchQuery::from_pairs(&pairs).unwrap()
}

fn bind_filters(mut q: clickhouse::query::Query, query: &SearchQuery) -> clickhouse::query::Query {
    for value in &query.filters {
        q = q.bind(value.as_str()).bind(value.as_str());
    }
    q.bind(query.from_ms.unwrap_or(0))
        .bind(query.to_ms.unwrap_or(u64::MAX))
}

/// One page of `query` by the scan: rows and the next cursor, as the search
/// computed them before the index.
async fn scan_page(
    ch: &clickhouse::Client,
    query: &SearchQuery,
) -> (Vec<EntryRow>, Option<String>) {
    let cursor = query.cursor.clone().unwrap_or_default();
    let mut rows: Vec<EntryRow> = bind_filters(ch.query(SCAN_SQL), query)
        .bind(cursor.occurred_at_ms)
        .bind(cursor.occurred_at_ms)
        .bind(cursor.chain_id.as_str())
        .bind(cursor.chain_id.as_str())
        .bind(cursor.seq)
        .bind(query.limit + 1)
        .fetch_all()
        .await
        .unwrap();
    let more = rows.len() as u64 > query.limit;
    rows.truncate(query.limit as usize);
    let next = rows.last().filter(|_| more).map(|row| {
        Cursor {
            occurred_at_ms: row.occurred_at_ms,
            chain_id: row.chain_id.clone(),
            seq: row.seq,
        }
        .encode()
    });
    (rows, next)
}

/// Walk `query` to its end through the index and through the scan side by
/// side; every page must be the same. Returns (pages, entries).
async fn walk_both(ch: &clickhouse::Client, mut query: SearchQuery, label: &str) -> (usize, usize) {
    let (mut pages, mut entries) = (0, 0);
    loop {
        let page = search::search(ch, &query).await.unwrap();
        let (want, want_next) = scan_page(ch, &query).await;
        assert_eq!(page.entries, want, "{label}, page {pages}");
        assert_eq!(page.next_cursor, want_next, "{label}, page {pages}");
        pages += 1;
        entries += want.len();
        match page.next_cursor {
            Some(next) => query.cursor = Some(Cursor::decode(&next).unwrap()),
            None => break,
        }
    }
    // The entries per day, from the index, as from the chain.
    query.cursor = None;
    let days = search::daily_counts(ch, &query).await.unwrap();
    let want: Vec<(u32, u64)> = bind_filters(ch.query(SCAN_DAYS_SQL), &query)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(days, want, "{label}: entries per day");
    assert_eq!(
        days.iter().map(|(_, n)| *n as usize).sum::<usize>(),
        entries,
        "{label}: days"
    );
    (pages, entries)
}

#[tokio::test]
async fn search_through_the_index_pages_exactly_like_the_scan_of_the_chain() {
    let env = TestEnv::new("audit_index_pages").await;
    env.ch(&entries_sql(&env.ch_database, 0, 3000)).await;
    env.ch(&format!(
        "INSERT INTO {db}.audit_chain (chain_id, seq, occurred_at, occurred_at_ms, org_id, team_id, event_id) \
         SELECT concat(toString(number % 3), '-', arrayStringConcat(arrayMap(i -> 'x', range(248)))) AS chain, intDiv(number, 3) + 1, \
           toDateTime(intDiv({BASE_MS}, 1000) + number), {BASE_MS} + number * 1000, 'org-long', chain, \
           concat('long-', toString(number)) \
         FROM system.numbers LIMIT 1200",
        db = env.ch_database
    ))
    .await;
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.audit_search").await,
        4200
    );
    let ch = client(&env);
    // 3000 entries over 3000 / 4 steps of 97 s: about 20 hours from BASE.
    let from = (BASE_MS + 3 * 3_600_000).to_string();
    let to = (BASE_MS + 9 * 3_600_000 + 97_000).to_string();
    let cases: Vec<(&str, SearchQuery, usize)> = vec![
        ("org-0", query(&[("org", "org-0")], 97), 1000),
        (
            "org-1, user-2, 6 h",
            query(
                &[
                    ("org", "org-1"),
                    ("user", "user-2"),
                    ("from", &from),
                    ("to", &to),
                ],
                7,
            ),
            0,
        ),
        (
            "org-2, kind, outcome",
            query(
                &[
                    ("org", "org-2"),
                    ("kind", "admin.key.created"),
                    ("outcome", "error"),
                ],
                13,
            ),
            0,
        ),
        ("every org, team-3", query(&[("team", "team-3")], 64), 500),
        (
            "org-0, decision, model, provider, key",
            query(
                &[
                    ("org", "org-0"),
                    ("decision", "deny"),
                    ("model", "gpt-4o"),
                    ("provider", "openai"),
                    ("key", "key-0"),
                ],
                3,
            ),
            0,
        ),
        ("everything", query(&[], 1000), 4200),
        ("nothing", query(&[("org", "org-9")], 10), 0),
        // Chain ids of 250 bytes: a page of 1000 is read in several runs.
        ("long chain ids", query(&[("org", "org-long")], 1000), 1200),
    ];
    for (label, q, exact) in cases {
        let (pages, entries) = walk_both(&ch, q, label).await;
        if exact > 0 {
            assert_eq!(entries, exact, "{label}");
        }
        if label != "nothing" {
            assert!(entries > 0, "{label}: the case matches nothing");
        }
        assert!(pages >= 1, "{label}");
    }
    // A walk of many small pages.
    let (pages, _) = walk_both(
        &ch,
        query(&[("org", "org-1"), ("user", "user-2")], 7),
        "org-1, user-2",
    )
    .await;
    assert!(pages > 5, "{pages} pages");
}

/// Back to the state before 0038 (`audit_search` and its view dropped, the
/// file forgotten).
async fn before_0038(env: &TestEnv) {
    for sql in [
        "DROP TABLE IF EXISTS {db}.audit_search_mv",
        "DROP TABLE IF EXISTS {db}.audit_search",
    ] {
        env.ch(sql).await;
    }
    forget_migration(env, 38).await;
}

fn migrate(env: &TestEnv, label: &str) {
    let out = env.tollgate(&["migrate"]).output().unwrap();
    assert!(
        out.status.success(),
        "migrate ({label}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (index rows, positions indexed more than once, entries whose row in the
/// index is missing or differs in any column).
pub(crate) async fn index_state(env: &TestEnv) -> (u64, u64, u64) {
    let rows = env.ch_u64("SELECT count() FROM {db}.audit_search").await;
    let doubled = env
        .ch_u64("SELECT count() FROM (SELECT chain_id, seq FROM {db}.audit_search GROUP BY chain_id, seq HAVING count() > 1)")
        .await;
    let columns = "org_id, occurred_at_ms, chain_id, seq, team_id, user_id, api_key_id, provider, model, outcome, decision, kind";
    let missing = env
        .ch_u64(&format!(
            "SELECT count() FROM {{db}}.audit_chain WHERE ({columns}) NOT IN (SELECT {columns} FROM {{db}}.audit_search)"
        ))
        .await;
    (rows, doubled, missing)
}

#[tokio::test]
async fn migration_0038_indexes_every_stored_entry_once() {
    let env = TestEnv::new("audit_index_backfill").await;
    before_0038(&env).await;
    let db = env.ch_database.clone();
    env.ch(&entries_sql(&db, 0, 1200)).await;
    // Applied, then applied again over a full index (as after a crash
    // before the file was recorded): every entry once.
    for round in 0..2 {
        migrate(&env, &format!("round {round}"));
        assert_eq!(index_state(&env).await, (1200, 0, 0), "round {round}");
        forget_migration(&env, 38).await;
    }
    // Interrupted after the view was created: entries appended meanwhile
    // reach the index through the view, and the backfill adds only the
    // ones stored before the view.
    before_0038(&env).await;
    let sql = include_str!("../../migrations/clickhouse/0038_audit_search.sql");
    for statement in &tollgate_processors::migrations::split_statements(sql)[..2] {
        env.ch(&statement
            .replace("audit_search", &format!("{db}.audit_search"))
            .replace("FROM audit_chain", &format!("FROM {db}.audit_chain")))
            .await;
    }
    env.ch(&entries_sql(&db, 1200, 300)).await;
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.audit_search").await,
        300,
        "the view indexes new entries"
    );
    migrate(&env, "after the interruption");
    assert_eq!(index_state(&env).await, (1500, 0, 0));
    // And the view stays: a new entry is indexed once.
    env.ch(&entries_sql(&db, 1500, 1)).await;
    assert_eq!(index_state(&env).await, (1501, 0, 0));
    let page = search::search(&client(&env), &query(&[("org", "org-0")], 1000))
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 501);
    assert_eq!(page.entries.last().unwrap().event_id, "e-1500");
}
