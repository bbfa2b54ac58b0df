//! One audit chain entry: the [`EntryRow`] stored in `audit_chain`, the pure
//! mapping from an event to its entry fields, and the canonical form that is
//! hashed: `entry_hash = SHA-256(prev_hash ‖ canonical_entry(entry))`.
//! `docs/audit.md` specifies the same form for auditors; a unit test pins
//! it to RFC 8785 (JCS) as implemented by `serde_jcs`.

use crate::event::Event;
use crate::kind::EventKind;
use crate::validate::Rejection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the canonical entry form (the `v` member).
pub const ENTRY_VERSION: u64 = 1;

/// The hash before the first entry of every chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// One row of `audit_chain` (see `migrations/clickhouse/0003_audit_chain.sql`).
/// Hashes are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clickhouse-rows", derive(clickhouse::Row))]
pub struct EntryRow {
    pub chain_id: String,
    pub seq: u64,
    pub occurred_at: u32,
    pub occurred_at_ms: u64,
    pub event_id: String,
    pub kind: String,
    pub org_id: String,
    pub team_id: String,
    pub user_id: String,
    pub api_key_id: String,
    pub provider: String,
    pub model: String,
    pub outcome: String,
    pub decision: String,
    pub decision_reason: String,
    pub event_json: String,
    pub prev_hash: String,
    pub entry_hash: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// The fields of an entry that come from the event alone (no chain position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFields {
    pub occurred_at_ms: u64,
    pub event_id: String,
    pub kind: String,
    pub org_id: String,
    pub team_id: String,
    pub user_id: String,
    pub api_key_id: String,
    pub provider: String,
    pub model: String,
    pub outcome: String,
    pub decision: String,
    pub decision_reason: String,
    pub event_json: String,
}

/// Map an event to its entry fields. The event is stored in its RFC 8785
/// canonical JSON, so its hash does not depend on how the emitter spelled it.
pub fn entry_fields(event: &Event) -> Result<EntryFields, Rejection> {
    let occurred_at_ms = u64::try_from(event.occurred_at.timestamp_millis())
        .ok()
        .filter(|ms| *ms / 1000 <= u64::from(u32::MAX))
        .ok_or_else(|| {
            Rejection::new(
                "occurred_at",
                "outside the range ClickHouse DateTime can store (1970 to 2105)",
            )
        })?;
    let event_json = serde_jcs::to_string(event)
        .map_err(|e| Rejection::new("event", format!("cannot canonicalize: {e}")))?;
    let call = event.call.as_ref();
    let (decision, decision_reason) = if event.kind == EventKind::CallBlocked {
        let reason = call
            .and_then(|c| c.error.as_ref())
            .map(|e| {
                if e.message.is_empty() {
                    e.error_type.clone()
                } else {
                    format!("{}: {}", e.error_type, e.message)
                }
            })
            .unwrap_or_default();
        ("deny".to_string(), reason)
    } else {
        (String::new(), String::new())
    };
    Ok(EntryFields {
        occurred_at_ms,
        event_id: event.event_id.to_string(),
        kind: event.kind.to_string(),
        org_id: event.org_id.clone(),
        team_id: event.team_id.clone(),
        user_id: event.user_id.clone(),
        api_key_id: event.api_key_id.clone(),
        provider: call.map(|c| c.provider.clone()).unwrap_or_default(),
        model: call.map(|c| c.model.clone()).unwrap_or_default(),
        outcome: call
            .map(|c| c.outcome.as_str().to_string())
            .unwrap_or_default(),
        decision,
        decision_reason,
        event_json,
    })
}

/// Chain the fields after `prev` as entry `seq` of `chain_id`.
pub fn chain_entry(
    fields: EntryFields,
    chain_id: &str,
    seq: u64,
    prev: &[u8; 32],
    partition: i32,
    offset: i64,
) -> (EntryRow, [u8; 32]) {
    let mut row = EntryRow {
        chain_id: chain_id.to_string(),
        seq,
        occurred_at: u32::try_from(fields.occurred_at_ms / 1000).unwrap_or(u32::MAX),
        occurred_at_ms: fields.occurred_at_ms,
        event_id: fields.event_id,
        kind: fields.kind,
        org_id: fields.org_id,
        team_id: fields.team_id,
        user_id: fields.user_id,
        api_key_id: fields.api_key_id,
        provider: fields.provider,
        model: fields.model,
        outcome: fields.outcome,
        decision: fields.decision,
        decision_reason: fields.decision_reason,
        event_json: fields.event_json,
        prev_hash: hex::encode(prev),
        entry_hash: String::new(),
        kafka_partition: partition,
        kafka_offset: offset,
    };
    let hash = entry_hash(prev, &row);
    row.entry_hash = hex::encode(hash);
    (row, hash)
}

/// `SHA-256(prev ‖ canonical_entry(row))`; `row.prev_hash` and
/// `row.entry_hash` are not read.
pub fn entry_hash(prev: &[u8; 32], row: &EntryRow) -> [u8; 32] {
    let mut canonical = String::with_capacity(row.event_json.len() * 2 + 512);
    canonical_entry_into(row, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

/// The canonical JSON of an entry: RFC 8785 (JCS) of the object
/// `{api_key_id, chain_id, decision, decision_reason, event, event_id,
/// kafka_offset, kafka_partition, kind, model, occurred_at_ms, org_id,
/// outcome, provider, seq, team_id, user_id, v}`, where `event` is the
/// event's canonical JSON as a string. Written by hand (members in JCS order,
/// strings escaped as JCS does) because verification runs it a million
/// times; `matches_jcs` checks it against `serde_jcs`.
pub fn canonical_entry(row: &EntryRow) -> String {
    let mut out = String::with_capacity(row.event_json.len() * 2 + 512);
    canonical_entry_into(row, &mut out);
    out
}

fn canonical_entry_into(row: &EntryRow, out: &mut String) {
    use std::fmt::Write;
    out.push('{');
    let string = |out: &mut String, key: &str, value: &str, first: bool| {
        if !first {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        push_json_string(out, value);
    };
    string(out, "api_key_id", &row.api_key_id, true);
    string(out, "chain_id", &row.chain_id, false);
    string(out, "decision", &row.decision, false);
    string(out, "decision_reason", &row.decision_reason, false);
    string(out, "event", &row.event_json, false);
    string(out, "event_id", &row.event_id, false);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        ",\"kafka_offset\":{},\"kafka_partition\":{}",
        row.kafka_offset, row.kafka_partition
    );
    string(out, "kind", &row.kind, false);
    string(out, "model", &row.model, false);
    let _ = write!(out, ",\"occurred_at_ms\":{}", row.occurred_at_ms);
    string(out, "org_id", &row.org_id, false);
    string(out, "outcome", &row.outcome, false);
    string(out, "provider", &row.provider, false);
    let _ = write!(out, ",\"seq\":{}", row.seq);
    string(out, "team_id", &row.team_id, false);
    string(out, "user_id", &row.user_id, false);
    let _ = write!(out, ",\"v\":{ENTRY_VERSION}}}");
}

/// A JSON string as RFC 8785 writes it: `"` and `\` escaped, U+0008, U+0009,
/// U+000A, U+000C, U+000D as `\b \t \n \f \r`, other controls below U+0020
/// as `\u00xx` (lowercase hex), everything else as UTF-8.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let b = c as u32;
                out.push_str("\\u00");
                out.push(char::from(HEX[(b >> 4) as usize]));
                out.push(char::from(HEX[(b & 0xf) as usize]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parse a 64-character hex hash.
pub fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).ok()?;
    Some(out)
}

/// `occurred_at_ms` as the RFC 3339 time shown to people.
pub fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1,
            "event_id": "0190b3c4-0000-7000-8000-000000000000",
            "kind": kind,
            "occurred_at": "2026-03-10T10:00:00.123Z",
            "org_id": "o", "team_id": "t\u{1}\"\\é😀", "user_id": "u\n", "api_key_id": "k",
            "call": {"call_id": "c", "provider": "openai", "model": "m", "operation": "chat",
                     "duration_ms": 10, "outcome": "blocked",
                     "usage": {"audio_seconds": 1.5},
                     "error": {"type": "budget_exceeded", "message": "team over budget"}}
        }))
        .unwrap()
    }

    #[test]
    fn matches_jcs() {
        let fields = entry_fields(&event("ai.call.blocked")).unwrap();
        let (row, _) = chain_entry(fields, "t\u{7f}", 7, &GENESIS, 2, 99);
        let object = serde_json::json!({
            "api_key_id": row.api_key_id, "chain_id": row.chain_id, "decision": row.decision,
            "decision_reason": row.decision_reason, "event": row.event_json,
            "event_id": row.event_id, "kafka_offset": row.kafka_offset,
            "kafka_partition": row.kafka_partition, "kind": row.kind, "model": row.model,
            "occurred_at_ms": row.occurred_at_ms, "org_id": row.org_id,
            "outcome": row.outcome, "provider": row.provider, "seq": row.seq,
            "team_id": row.team_id, "user_id": row.user_id, "v": ENTRY_VERSION,
        });
        assert_eq!(
            canonical_entry(&row),
            serde_jcs::to_string(&object).unwrap()
        );
        assert_eq!(row.decision, "deny");
        assert_eq!(row.decision_reason, "budget_exceeded: team over budget");
        assert_eq!(row.occurred_at_ms, 1_773_136_800_123);
        assert!(row.event_json.contains("\"audio_seconds\":1.5"));
    }

    #[test]
    fn hash_links_and_depends_on_every_field() {
        let fields = entry_fields(&event("ai.call.completed")).unwrap();
        let (first, h1) = chain_entry(fields.clone(), "t", 1, &GENESIS, 0, 0);
        assert_eq!(first.prev_hash, "0".repeat(64));
        let (second, h2) = chain_entry(fields, "t", 2, &h1, 0, 1);
        assert_eq!(second.prev_hash, hex::encode(h1));
        assert_eq!(entry_hash(&h1, &second), h2);
        let mut edited = second.clone();
        edited.model = "other".into();
        assert_ne!(entry_hash(&h1, &edited), h2);
        assert_ne!(entry_hash(&GENESIS, &second), h2);
        assert_eq!(first.decision, "");
    }
}
