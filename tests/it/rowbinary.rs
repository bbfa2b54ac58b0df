//! The folds hold a batch as RowBinary bytes made when each row is made
//! (`tollgate_processors::rowbinary`) and insert those bytes as they are.
//! The `clickhouse` crate's typed insert is the reference: a row of
//! `calls` and one of `audit_chain` with every column set (long and
//! non-ASCII strings, arrays, extreme numbers) are stored once each way,
//! and ClickHouse reads back the same values. Real ClickHouse 18.16.

use tollgate_contract::audit::entry::EntryRow;
use tollgate_processors::clickhouse::{insert_encoded, insert_rows};
use tollgate_processors::folds::calls::rows::{call_record, CallRow};
use tollgate_processors::rowbinary::{column_list, insert_sql, EncodedRow};

use crate::support::TestEnv;

fn client(env: &TestEnv) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(crate::support::clickhouse_url())
        .with_database(&env.ch_database)
        .with_validation(false)
}

fn call() -> CallRow {
    let long = "ü".repeat(200); // 400 bytes: a two-byte length
    CallRow {
        event_id: "0190b3c4-0000-7000-8000-0000000000aa".into(),
        schema_version: 1,
        kind: "ai.call.failed".into(),
        occurred_at: 1_773_136_800,
        occurred_at_ms: 1_773_136_800_123,
        org_id: "org-ß".into(),
        team_id: "team\t\"quoted\"\n".into(),
        user_id: "user-1".into(),
        api_key_id: "key-1".into(),
        call_id: "call-1".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        provider: "openai".into(),
        model: "gpt-4o".into(),
        requested_model: "gpt-4o-latest".into(),
        attempt: u16::MAX,
        fallback_of: "call-0".into(),
        operation: "chat".into(),
        stream: 1,
        duration_ms: u32::MAX,
        has_ttft: 1,
        ttft_ms: 12,
        input_tokens: u64::MAX,
        input_tokens_estimated: 1,
        output_tokens: 1 << 40,
        cached_input_tokens: 3,
        cache_write_tokens: 4,
        reasoning_tokens: 5,
        images: 6,
        audio_ms: 7,
        outcome: "error".into(),
        http_status: 529,
        error_type: "overloaded_error".into(),
        error_message: long.clone(),
        cache_hit: 1,
        prompt_sha256: "a".repeat(64),
        response_sha256: "b".repeat(64),
        tag_keys: vec!["feature".into(), String::new(), long.clone()],
        tag_values: vec!["search".into(), "empty key".into(), "x".into()],
        reported_cost: "0.000123".into(),
        ingested_at: 1_773_136_801,
        kafka_partition: 3,
        kafka_offset: i64::MAX - 1,
        cost: -12_345_678_901_234_567_890_123_456_789,
        priced: 1,
        price_version: u64::MAX,
        priced_as: "openai/gpt-4o".into(),
        error_signature: 0xDEAD_BEEF_0000_0001,
        error_template: "overloaded <*>".into(),
        error_variables: vec!["529".into(), long],
        recovery_sequence: 2,
        recovery_wait_ms: 250,
        recovery_strategy: "fallback".into(),
        recovery_from_signature: 42,
        recovery_from_provider: "anthropic".into(),
        recovery_from_model: "claude".into(),
        last_attempt: 1,
    }
}

fn entry() -> EntryRow {
    EntryRow {
        chain_id: "team-a".into(),
        seq: u64::MAX,
        occurred_at: 1_773_136_800,
        occurred_at_ms: 1_773_136_800_123,
        event_id: "0190b3c4-0000-7000-8000-0000000000bb".into(),
        kind: "ai.call.completed".into(),
        org_id: "org-a".into(),
        team_id: "team-a".into(),
        user_id: "user-ü".into(),
        api_key_id: "key-1".into(),
        provider: "anthropic".into(),
        model: "claude".into(),
        outcome: "success".into(),
        decision: "allow".into(),
        decision_reason: "under budget".into(),
        event_json: format!("{{\"note\":\"{}\"}}", "é".repeat(300)),
        prev_hash: "0".repeat(64),
        entry_hash: "f".repeat(64),
        kafka_partition: i32::MAX,
        kafka_offset: 0,
        v: 2,
        salt: "c".repeat(64),
        personal_commitment: "d".repeat(64),
    }
}

/// Every column the row type `R` writes into `table`, as ClickHouse
/// prints it. Columns the server fills itself (`audit_chain.appended_at`,
/// `DEFAULT now()`) are left out: two inserts a second apart differ there.
async fn stored<R: clickhouse::Row>(env: &TestEnv, table: &str) -> String {
    let columns = column_list::<R>();
    env.ch(&format!("SELECT {columns} FROM {{db}}.{table} FORMAT TSV"))
        .await
}

#[tokio::test]
async fn encoded_rows_are_stored_as_the_typed_insert_stores_them() {
    let env = TestEnv::new("rowbinary").await;
    let ch = client(&env);
    for table in ["calls", "audit_chain"] {
        ch.query(&format!("CREATE TABLE typed_{table} AS {table}"))
            .execute()
            .await
            .unwrap();
    }

    let row = call();
    insert_rows(&ch, "typed_calls", std::slice::from_ref(&row), None)
        .await
        .unwrap();
    let record = call_record(&row).unwrap();
    insert_encoded(&ch, &insert_sql::<CallRow>("calls"), &[record], None)
        .await
        .unwrap();
    let typed = stored::<CallRow>(&env, "typed_calls").await;
    assert_eq!(typed.lines().count(), 1, "{typed}");
    assert!(typed.contains("-12345678901234567.890123456789"), "{typed}");
    assert_eq!(stored::<CallRow>(&env, "calls").await, typed);

    let row = entry();
    insert_rows(&ch, "typed_audit_chain", std::slice::from_ref(&row), None)
        .await
        .unwrap();
    let encoded = EncodedRow::new(&row, ()).unwrap();
    insert_encoded(
        &ch,
        &insert_sql::<EntryRow>("audit_chain"),
        &[encoded],
        None,
    )
    .await
    .unwrap();
    let typed = stored::<EntryRow>(&env, "typed_audit_chain").await;
    assert_eq!(typed.lines().count(), 1, "{typed}");
    assert!(typed.contains(&"f".repeat(64)), "{typed}");
    assert_eq!(stored::<EntryRow>(&env, "audit_chain").await, typed);
    // The server's own column is filled on both, within the last hour.
    for table in ["audit_chain", "typed_audit_chain"] {
        assert_eq!(
            env.ch(&format!(
                "SELECT count() FROM {{db}}.{table} WHERE appended_at > now() - 3600 FORMAT TSV"
            ))
            .await
            .trim(),
            "1",
            "{table}"
        );
    }

    // Many rows in one insert, across the 256 KiB chunks it is sent in.
    let rows: Vec<_> = (0..2_000)
        .map(|i| {
            let mut r = call();
            r.kafka_offset = i;
            r.event_id = format!("id-{i}");
            call_record(&r).unwrap()
        })
        .collect();
    assert!(rows.iter().map(|r| r.bytes().len()).sum::<usize>() > 3 * 256 * 1024);
    insert_encoded(&ch, &insert_sql::<CallRow>("calls"), &rows, None)
        .await
        .unwrap();
    assert_eq!(
        env.ch("SELECT count(), sum(kafka_offset), uniqExact(event_id) FROM {db}.calls WHERE kafka_offset < 2000 FORMAT TSV")
            .await
            .trim(),
        "2000\t1999000\t2000"
    );
}
