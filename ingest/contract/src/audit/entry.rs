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

/// Version of the canonical entry form new entries are written in (the `v`
/// member and column): 2 commits to the personal fields (`user_id` and the
/// event) through a salted hash, so they can be erased and the entry still
/// verifies. Version 1 (entries written before) hashes them directly.
pub const ENTRY_VERSION: u8 = 2;

/// The version 1 form: `user_id` and `event` hashed as they are.
pub const ENTRY_VERSION_PLAIN: u8 = 1;

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
    /// Version of the canonical form: 1 (personal fields hashed directly)
    /// or 2 (through `personal_commitment`). Absent in exports made before
    /// version 2: 1.
    #[serde(default = "plain_version")]
    pub v: u8,
    /// Version 2: 32 random bytes (hex) that `personal_commitment` is salted
    /// with; empty once the entry's personal fields are erased (and for v1).
    #[serde(default)]
    pub salt: String,
    /// Version 2: hex SHA-256(salt ‖ personal canonical JSON); what the
    /// entry hash commits to instead of `user_id` and `event_json`.
    #[serde(default)]
    pub personal_commitment: String,
}

fn plain_version() -> u8 {
    ENTRY_VERSION_PLAIN
}

impl EntryRow {
    /// Whether this is a version 2 entry whose personal fields were erased
    /// (its salt is gone; what it committed to can no longer be recomputed).
    pub fn is_erased(&self) -> bool {
        self.v >= ENTRY_VERSION && self.salt.is_empty()
    }
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
    let event_json = super::canonical::to_canonical_json(event)
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
        ("deny".to_string(), without_user(&reason, &event.user_id))
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

/// `reason` with the user id written [`USER_IN_REASON`] where it names
/// the entry's user: as the proxy's reasons do, `user <id>` followed by the
/// end of a word (`daily budget of 1 USD for user carol of org acme
/// exhausted`), and, for a [`distinctive_id`], the id as a word anywhere
/// (`Budget exhausted for jane-doe`, a reporter's own wording). The
/// decision reason is hashed into the entry as it is, outside the salted
/// commitment erasure empties: with the id in it, an erased person would
/// stay searchable in the chain for good. The entry's `user_id` says who.
/// A short or numeric id is masked only in the phrase (`1` in `budget of 1
/// USD` is left as it is). Other spellings of a person (a name, an email)
/// cannot be recognised: keep them out of reported error messages.
pub fn without_user(reason: &str, user_id: &str) -> String {
    if user_id.is_empty() {
        return reason.to_string();
    }
    let phrased = mask_words(
        reason,
        &format!("{USER_WORD}{user_id}"),
        |c| c.is_alphanumeric(),
        &format!("{USER_WORD}{USER_IN_REASON}"),
    );
    if !distinctive_id(user_id) {
        return phrased;
    }
    mask_words(&phrased, user_id, continues_an_id, USER_IN_REASON)
}

/// `text` with every occurrence of `word` that starts and ends a word
/// written `mask`; a word starts after a character `joins` refuses.
fn mask_words(text: &str, word: &str, joins: impl Fn(char) -> bool, mask: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (before, from) = rest.split_at(at);
        let after = &from[word.len()..];
        out.push_str(before);
        let starts_word = !before.chars().next_back().is_some_and(&joins);
        if starts_word && ends_a_word(after) {
            out.push_str(mask);
        } else {
            out.push_str(word);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Whether a user id is unlikely to be an ordinary word or number of a
/// reason, so [`without_user`] masks it wherever it stands as a word: at
/// least four characters, a letter, and a digit or one of `-_@.`
/// (`u-123`, `jane.doe@example.com`, `trialcomp-person-3`; not `1`,
/// `1234`, nor `acme`, `team` or `daily`, which a reason may hold as
/// words of its own and whose masking would be chained for good).
pub fn distinctive_id(user_id: &str) -> bool {
    user_id.chars().count() >= 4
        && user_id.chars().any(char::is_alphabetic)
        && user_id
            .chars()
            .any(|c| c.is_ascii_digit() || matches!(c, '-' | '_' | '@' | '.'))
}

/// Whether a reason holding `user_id` as a word anywhere may name the
/// person, for counting what an erasure cannot empty (erasure's
/// `reason_pattern`): four characters or more with a letter. Wider than
/// [`distinctive_id`]: a count that says too much is honest, a mask that
/// takes too much is not.
pub fn may_name(user_id: &str) -> bool {
    user_id.chars().count() >= 4 && user_id.chars().any(char::is_alphabetic)
}

/// A character an id goes on with, either side of it.
fn continues_an_id(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '@' | '.')
}

/// How the proxy's reasons name a user: `user <id>`.
const USER_WORD: &str = "user ";

/// Whether `after` (the text after an id) ends the id: its end, or a
/// character that no id goes on with (a `.` only when no letter or digit
/// follows it: `carol.` ends a sentence, `carol.smith` is another id).
pub fn ends_a_word(after: &str) -> bool {
    let mut chars = after.chars();
    match chars.next() {
        None => true,
        Some('.') => !chars.next().is_some_and(char::is_alphanumeric),
        Some(c) => !(c.is_alphanumeric() || matches!(c, '_' | '-' | '@')),
    }
}

/// What a decision reason says in place of the user id.
pub const USER_IN_REASON: &str = "<user>";

/// Where an entry sits: its chain, position and Kafka message.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub chain_id: &'a str,
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
}

/// Chain the fields after `prev` as entry `seq` of `chain_id`, in the
/// current form (version 2) with `salt` (32 random bytes the caller draws
/// for each entry: the commitment must not be guessable from a user id).
pub fn chain_entry(
    fields: EntryFields,
    at: Position<'_>,
    prev: &[u8; 32],
    salt: &[u8; 32],
) -> (EntryRow, [u8; 32]) {
    let (chain_id, seq, partition, offset) = (at.chain_id, at.seq, at.partition, at.offset);
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
        prev_hash: const_hex::encode(prev),
        entry_hash: String::new(),
        kafka_partition: partition,
        kafka_offset: offset,
        v: ENTRY_VERSION,
        salt: const_hex::encode(salt),
        personal_commitment: String::new(),
    };
    row.personal_commitment = personal_commitment(salt, &row.user_id, &row.event_json);
    // The commitment was just computed from this salt: what
    // `effective_commitment` would recompute and compare.
    let mut canonical = String::with_capacity(512);
    canonical_entry_with(&row, &row.personal_commitment, &mut canonical);
    let hash = hash_canonical(prev, &canonical);
    row.entry_hash = const_hex::encode(hash);
    (row, hash)
}

/// The canonical JSON of an entry's personal fields, RFC 8785:
/// `{"event":<event_json as a string>,"user_id":<user_id>}`.
pub fn personal_canonical(user_id: &str, event_json: &str) -> String {
    let mut out = String::with_capacity(event_json.len() * 2 + 64);
    out.push_str("{\"event\":");
    push_json_string(&mut out, event_json);
    out.push_str(",\"user_id\":");
    push_json_string(&mut out, user_id);
    out.push('}');
    out
}

/// `hex(SHA-256(salt ‖ UTF-8(personal_canonical(user_id, event_json))))`.
pub fn personal_commitment(salt: &[u8; 32], user_id: &str, event_json: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(personal_canonical(user_id, event_json).as_bytes());
    const_hex::encode(hasher.finalize())
}

/// What a version 2 entry's hash commits to in the `personal` member:
/// - not erased (a salt): the commitment recomputed from the salt, `user_id`
///   and `event_json`, which must equal the stored `personal_commitment`;
/// - erased (no salt): the stored `personal_commitment`, and `user_id` and
///   `event_json` must be empty.
///
/// Anything else (a malformed salt, a stored commitment that is not the
/// recomputed one, personal data left beside an erased salt) yields a value
/// no entry hash was computed over, so the entry reports `edited`.
pub fn effective_commitment(row: &EntryRow) -> String {
    const INCONSISTENT: &str = "inconsistent";
    if row.salt.is_empty() {
        return if row.user_id.is_empty() && row.event_json.is_empty() {
            row.personal_commitment.clone()
        } else {
            INCONSISTENT.to_string()
        };
    }
    let Some(salt) = parse_hash(&row.salt) else {
        return INCONSISTENT.to_string();
    };
    let recomputed = personal_commitment(&salt, &row.user_id, &row.event_json);
    if recomputed == row.personal_commitment {
        recomputed
    } else {
        INCONSISTENT.to_string()
    }
}

/// `SHA-256(prev ‖ canonical_entry(row))`; `row.prev_hash` and
/// `row.entry_hash` are not read.
pub fn entry_hash(prev: &[u8; 32], row: &EntryRow) -> [u8; 32] {
    // Version 2 commits to the event instead of holding it.
    let event = if row.v < ENTRY_VERSION {
        row.event_json.len() * 2
    } else {
        0
    };
    let mut canonical = String::with_capacity(event + 512);
    canonical_entry_into(row, &mut canonical);
    hash_canonical(prev, &canonical)
}

/// `SHA-256(prev ‖ canonical)`.
fn hash_canonical(prev: &[u8; 32], canonical: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

/// The canonical JSON of an entry: RFC 8785 (JCS) of the object
/// `{api_key_id, chain_id, decision, decision_reason, event, event_id,
/// kafka_offset, kafka_partition, kind, model, occurred_at_ms, org_id,
/// outcome, provider, seq, team_id, user_id, v}` for version 1, where
/// `event` is the event's canonical JSON as a string; for version 2 `event`
/// and `user_id` are replaced by `personal` ([`effective_commitment`]). Written by hand (members in JCS order,
/// strings escaped as JCS does) because verification runs it a million
/// times; `matches_jcs` checks it against `serde_jcs`.
pub fn canonical_entry(row: &EntryRow) -> String {
    let mut out = String::with_capacity(row.event_json.len() * 2 + 512);
    canonical_entry_into(row, &mut out);
    out
}

fn canonical_entry_into(row: &EntryRow, out: &mut String) {
    if row.v < ENTRY_VERSION {
        canonical_entry_with(row, "", out);
    } else {
        canonical_entry_with(row, &effective_commitment(row), out);
    }
}

/// [`canonical_entry`] with the version 2 `personal` member given
/// (`personal` is not read for version 1).
fn canonical_entry_with(row: &EntryRow, personal: &str, out: &mut String) {
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
    let plain = row.v < ENTRY_VERSION;
    if plain {
        string(out, "event", &row.event_json, false);
    }
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
    if !plain {
        string(out, "personal", personal, false);
    }
    string(out, "provider", &row.provider, false);
    let _ = write!(out, ",\"seq\":{}", row.seq);
    string(out, "team_id", &row.team_id, false);
    if plain {
        string(out, "user_id", &row.user_id, false);
    }
    // The row's own `v`: an entry whose version column was changed does not
    // hash as the one that was written.
    let _ = write!(out, ",\"v\":{}}}", row.v);
}

/// A JSON string as RFC 8785 writes it: `"` and `\` escaped, U+0008, U+0009,
/// U+000A, U+000C, U+000D as `\b \t \n \f \r`, other controls below U+0020
/// as `\u00xx` (lowercase hex), everything else as UTF-8.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    if has_control(s.as_bytes()) {
        push_escaped_bytewise(out, s);
    } else {
        // Only `"` and `\` are escaped then; memchr finds them a vector at a
        // time (an event's canonical JSON is mostly runs between quotes).
        let mut run = 0;
        for i in memchr::memchr2_iter(b'"', b'\\', s.as_bytes()) {
            out.push_str(&s[run..i]);
            out.push('\\');
            out.push(if s.as_bytes()[i] == b'"' { '"' } else { '\\' });
            run = i + 1;
        }
        out.push_str(&s[run..]);
    }
    out.push('"');
}

/// Whether `bytes` hold a control character (below U+0020). The minimum of
/// each fixed-size chunk compiles to vector instructions; a byte-by-byte
/// search with an early exit would not.
fn has_control(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .any(|chunk| chunk.iter().fold(u8::MAX, |min, &b| min.min(b)) < 0x20)
}

/// [`push_json_string`]'s body for a string with control characters.
fn push_escaped_bytewise(out: &mut String, s: &str) {
    // Runs of characters written as they are go in whole; every character
    // that is escaped is ASCII, so a run never ends inside a UTF-8 sequence.
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            b if b < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        run = i + 1;
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escaped);
        }
    }
    out.push_str(&s[run..]);
}

/// Parse a 64-character hex hash (either case, nothing else: const-hex
/// would also take a `0x` prefix, which the length rules out).
pub fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    if hex_hash.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    const_hex::decode_to_slice(hex_hash, &mut out).ok()?;
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

    const SALT: [u8; 32] = [7; 32];

    /// The event's canonical JSON is `serde_jcs`'s, for events with
    /// floats, integers above 2^53, tags whose names sort differently in
    /// UTF-8 and UTF-16, control characters and an admin payload.
    #[test]
    fn event_json_is_serde_jcs_of_the_event() {
        let mut events = vec![event("ai.call.blocked"), event("ai.call.completed")];
        let mut tagged = event("ai.call.completed");
        tagged.tags = [
            ("\u{FF61}", "half-width"),
            ("\u{1F600}", "emoji"),
            ("b", "x\u{1}"),
            ("a", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(call) = tagged.call.as_mut() {
            call.usage.input_tokens = 9_007_199_254_740_993;
            call.usage.output_tokens = u64::MAX;
        }
        events.push(tagged);
        let mut admin = event("admin.price.added");
        admin.call = None;
        admin.admin = Some(serde_json::json!({"z": [1, 2.5, null], "a": {"é": true}}));
        events.push(admin);
        for e in &events {
            let fields = entry_fields(e).unwrap();
            assert_eq!(fields.event_json, serde_jcs::to_string(e).unwrap());
        }
        assert!(entry_fields(&events[2])
            .unwrap()
            .event_json
            .contains("\"input_tokens\":9007199254740992"));
    }

    fn at(chain_id: &str, seq: u64, partition: i32, offset: i64) -> Position<'_> {
        Position {
            chain_id,
            seq,
            partition,
            offset,
        }
    }

    /// Every ASCII character, alone and between runs, and multi-byte
    /// characters around escapes, written as RFC 8785 (and serde_json) do.
    #[test]
    fn strings_are_escaped_as_jcs_does() {
        let mut cases: Vec<String> = (0u8..0x80)
            .map(|b| format!("ab{}é😀{}", char::from(b), char::from(b)))
            .collect();
        cases.extend(["".into(), "\"".into(), "é\n😀\u{1f}".into(), "plain".into()]);
        for case in cases {
            let mut out = String::new();
            push_json_string(&mut out, &case);
            assert_eq!(out, serde_json::to_string(&case).unwrap(), "{case:?}");
        }
    }

    proptest::proptest! {
        /// Both paths (with and without control characters), any length
        /// (the control search works in chunks of 64 bytes), any text.
        #[test]
        fn any_string_is_escaped_as_jcs_does(
            text in "(\\PC|[\"\\\\/]){0,200}",
            control in proptest::option::of((0u8..0x20, 0usize..200)),
        ) {
            let mut case = text;
            if let Some((byte, at)) = control {
                let at = (0..=at.min(case.len())).rev().find(|i| case.is_char_boundary(*i)).unwrap_or(0);
                case.insert(at, char::from(byte));
            }
            let mut out = String::new();
            push_json_string(&mut out, &case);
            proptest::prop_assert_eq!(out, serde_json::to_string(&case).unwrap());
        }
    }

    #[test]
    fn hashes_parse_as_64_hex_digits_only() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_hash(&hex), Some([0xab; 32]));
        assert_eq!(parse_hash(&hex.to_uppercase()), Some([0xab; 32]));
        assert_eq!(parse_hash(&format!("0x{hex}")), None);
        assert_eq!(parse_hash(&format!("0x{}", &hex[2..])), None);
        assert_eq!(parse_hash(&hex[1..]), None);
        assert_eq!(parse_hash(&format!("{}g", &hex[1..])), None);
        assert_eq!(parse_hash(""), None);
    }

    #[test]
    fn matches_jcs() {
        let fields = entry_fields(&event("ai.call.blocked")).unwrap();
        let (row, _) = chain_entry(fields, at("t\u{7f}", 7, 2, 99), &GENESIS, &SALT);
        let personal = serde_jcs::to_string(&serde_json::json!({
            "user_id": row.user_id, "event": row.event_json,
        }))
        .unwrap();
        let mut salted = SALT.to_vec();
        salted.extend_from_slice(personal.as_bytes());
        assert_eq!(
            row.personal_commitment,
            hex::encode(Sha256::digest(&salted))
        );
        assert_eq!(row.salt, hex::encode(SALT));
        let object = serde_json::json!({
            "api_key_id": row.api_key_id, "chain_id": row.chain_id, "decision": row.decision,
            "decision_reason": row.decision_reason,
            "event_id": row.event_id, "kafka_offset": row.kafka_offset,
            "kafka_partition": row.kafka_partition, "kind": row.kind, "model": row.model,
            "occurred_at_ms": row.occurred_at_ms, "org_id": row.org_id,
            "outcome": row.outcome, "personal": row.personal_commitment,
            "provider": row.provider, "seq": row.seq,
            "team_id": row.team_id, "v": ENTRY_VERSION,
        });
        assert_eq!(
            canonical_entry(&row),
            serde_jcs::to_string(&object).unwrap()
        );
        // Version 1, as written before: user_id and the event hashed directly.
        let v1 = EntryRow {
            v: ENTRY_VERSION_PLAIN,
            salt: String::new(),
            personal_commitment: String::new(),
            ..row.clone()
        };
        let object = serde_json::json!({
            "api_key_id": v1.api_key_id, "chain_id": v1.chain_id, "decision": v1.decision,
            "decision_reason": v1.decision_reason, "event": v1.event_json,
            "event_id": v1.event_id, "kafka_offset": v1.kafka_offset,
            "kafka_partition": v1.kafka_partition, "kind": v1.kind, "model": v1.model,
            "occurred_at_ms": v1.occurred_at_ms, "org_id": v1.org_id,
            "outcome": v1.outcome, "provider": v1.provider, "seq": v1.seq,
            "team_id": v1.team_id, "user_id": v1.user_id, "v": 1,
        });
        assert_eq!(canonical_entry(&v1), serde_jcs::to_string(&object).unwrap());
        assert_eq!(row.decision, "deny");
        assert_eq!(row.decision_reason, "budget_exceeded: team over budget");
        assert_eq!(row.occurred_at_ms, 1_773_136_800_123);
        assert!(row.event_json.contains("\"audio_seconds\":1.5"));
    }

    #[test]
    fn a_decision_reason_does_not_name_the_user() {
        let mut blocked = event("ai.call.blocked");
        blocked.user_id = "carol".into();
        let call = blocked.call.as_mut().unwrap();
        call.error.as_mut().unwrap().message =
            "daily budget of 1 USD for user carol of org acme exhausted (spent 1.2 USD)".into();
        let fields = entry_fields(&blocked).unwrap();
        assert_eq!(
            fields.decision_reason,
            "budget_exceeded: daily budget of 1 USD for user <user> of org acme exhausted (spent 1.2 USD)"
        );
        // The proxy's phrase only, and the whole id: a bare id elsewhere,
        // or a longer id, stays.
        assert_eq!(
            without_user(
                "user carol, user carol-2, user xcarol, user carol. (user carol) user carol",
                "carol"
            ),
            "user <user>, user carol-2, user xcarol, user <user>. (user <user>) user <user>"
        );
        assert_eq!(
            without_user("budget of 1 USD for user 1 of org a", "1"),
            "budget of 1 USD for user <user> of org a"
        );
        assert_eq!(
            without_user("for user carol.smith", "carol"),
            "for user carol.smith"
        );
        // A distinctive id is masked as a word anywhere, in a reporter's
        // wording too; not inside another id. A plain word is not (user
        // `acme` of org `acme`).
        assert_eq!(without_user("superuser carol", "carol"), "superuser carol");
        assert_eq!(
            without_user("budget of org acme exhausted for user acme", "acme"),
            "budget of org acme exhausted for user <user>"
        );
        assert_eq!(
            without_user("superuser carol-1, carol-1.", "carol-1"),
            "superuser <user>, <user>."
        );
        assert_eq!(
            without_user(
                "Budget exhausted for Jane (trialcomp-person-3), trialcomp-person-3.",
                "trialcomp-person-3"
            ),
            "Budget exhausted for Jane (<user>), <user>."
        );
        assert_eq!(
            without_user("x-carol-1 carol-1.smith carol-1_b carol-12", "carol-1"),
            "x-carol-1 carol-1.smith carol-1_b carol-12"
        );
        // A short or numeric id only in the phrase.
        assert_eq!(
            without_user("budget of 1234 USD for user 1234", "1234"),
            "budget of 1234 USD for user <user>"
        );
        assert!(distinctive_id("u-12") && !distinctive_id("u-1") && !distinctive_id("12345"));
        assert!(!distinctive_id("acme") && may_name("acme") && !may_name("1234"));
        assert_eq!(without_user("no user here", ""), "no user here");
        assert_eq!(without_user("for user é", "é"), "for user <user>");
    }

    #[test]
    fn hash_links_and_depends_on_every_field() {
        let fields = entry_fields(&event("ai.call.completed")).unwrap();
        let (first, h1) = chain_entry(fields.clone(), at("t", 1, 0, 0), &GENESIS, &SALT);
        assert_eq!(first.prev_hash, "0".repeat(64));
        let (second, h2) = chain_entry(fields, at("t", 2, 0, 1), &h1, &[8; 32]);
        assert_eq!(second.prev_hash, hex::encode(h1));
        assert_eq!(entry_hash(&h1, &second), h2);
        let mut edited = second.clone();
        edited.model = "other".into();
        assert_ne!(entry_hash(&h1, &edited), h2);
        assert_ne!(entry_hash(&GENESIS, &second), h2);
        assert_eq!(first.decision, "");
        for edit in [
            |r: &mut EntryRow| r.user_id = "someone-else".into(),
            |r: &mut EntryRow| r.event_json.push(' '),
            |r: &mut EntryRow| r.salt = hex::encode([9u8; 32]),
            |r: &mut EntryRow| r.personal_commitment = "0".repeat(64),
            |r: &mut EntryRow| r.v = 1,
        ] {
            let mut edited = second.clone();
            edit(&mut edited);
            assert_ne!(entry_hash(&h1, &edited), h2);
        }
    }

    #[test]
    fn erased_entry_still_verifies_and_only_when_wholly_erased() {
        let fields = entry_fields(&event("ai.call.completed")).unwrap();
        let (row, hash) = chain_entry(fields, at("t", 1, 0, 0), &GENESIS, &SALT);
        let erased = EntryRow {
            user_id: String::new(),
            event_json: String::new(),
            salt: String::new(),
            ..row.clone()
        };
        assert!(erased.is_erased() && !row.is_erased());
        assert_eq!(entry_hash(&GENESIS, &erased), hash);
        // The salt gone but the data left, or the data changed: edited.
        let half = EntryRow {
            salt: String::new(),
            ..row.clone()
        };
        assert_ne!(entry_hash(&GENESIS, &half), hash);
        let mut forged = erased.clone();
        forged.model = "other".into();
        assert_ne!(entry_hash(&GENESIS, &forged), hash);
        let mut refilled = erased;
        refilled.user_id = "u\n".into();
        assert_ne!(entry_hash(&GENESIS, &refilled), hash);
    }
}
