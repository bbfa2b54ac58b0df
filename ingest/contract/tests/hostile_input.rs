//! The contract against the hostile trial's inputs (2026-12-07): repeated
//! keys, invisible and lookalike identifiers, leap seconds, RFC 7464
//! records, a byte order mark, values JSON cannot read and HTTP statuses
//! out of range. Each is refused naming the field and the reason, or read
//! as the client meant it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use tollgate_contract::admin::refused_at_the_edge;
use tollgate_contract::{
    parse_event_json, split_body, BodyFormat, Event, JsonEventError, Limits, Rejection,
};
use uuid::Uuid;

fn good_call() -> Value {
    json!({
        "schema_version": 1,
        "event_id": Uuid::now_v7(),
        "kind": "ai.call.completed",
        "occurred_at": (Utc::now() - Duration::seconds(3)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "org_id": "acme",
        "team_id": "search",
        "user_id": "alice",
        "call": {
            "call_id": "call-1", "provider": "openai", "model": "gpt-4o-mini",
            "operation": "chat", "duration_ms": 812, "outcome": "success", "http_status": 200,
            "usage": {"input_tokens": 10, "output_tokens": 5}
        },
        "tags": {"feature": "autocomplete"}
    })
}

fn read(text: &str) -> Result<Event, Rejection> {
    match parse_event_json(text.as_bytes(), Utc::now(), &Limits::default()) {
        Ok(event) => Ok(event),
        Err(JsonEventError::Invalid(rejection)) => Err(rejection),
        Err(JsonEventError::NotJson(err)) => Err(Rejection::new("event", err.to_string())),
    }
}

#[track_caller]
fn refused(text: &str, field: &str, reason: &str) {
    match read(text) {
        Ok(event) => panic!("accepted, expected a refusal of {field}: {event:?}"),
        Err(r) => {
            assert_eq!(r.field, field, "{r}");
            assert!(r.reason.contains(reason), "{r}");
        }
    }
}

/// `good_call` as text with `"<member>": <value>` replaced by `text`.
fn edited(find: &str, replace: &str) -> String {
    let text = good_call().to_string();
    assert!(text.contains(find), "{find} not in {text}");
    text.replacen(find, replace, 1)
}

#[test]
fn a_repeated_key_is_refused_by_its_path() {
    let text = edited(
        r#""input_tokens":10"#,
        r#""input_tokens":10,"input_tokens":999999"#,
    );
    refused(&text, "call.usage.input_tokens", "more than once");
    let text = edited(
        r#""user_id":"alice""#,
        r#""user_id":"alice","user_id":"bob""#,
    );
    refused(&text, "user_id", "more than once");
    let text = edited(
        r#""feature":"autocomplete""#,
        r#""feature":"autocomplete","feature":"chat""#,
    );
    refused(&text, "tags.feature", "more than once");
    // The others of a body are read on their own.
    let body = format!("[{}, {text}]", good_call());
    let items = split_body(body.as_bytes(), BodyFormat::JsonArray, 10).unwrap();
    assert!(items[0].event(Utc::now(), &Limits::default()).is_ok());
    let r = items[1].event(Utc::now(), &Limits::default()).unwrap_err();
    assert_eq!(r.field, "tags.feature");
}

#[test]
fn invisible_characters_and_edge_whitespace_in_identifiers_are_refused() {
    for (field, value, named) in [
        ("org_id", "\u{200b}", "U+200B"),
        ("team_id", "_tollgate\u{200b}", "U+200B"),
        ("user_id", "ali\u{202e}ecila", "U+202E"),
        ("user_id", "\u{feff}alice", "U+FEFF"),
        ("api_key_id", "k\u{2028}1", "U+2028"),
        ("team_id", " _tollgate", "whitespace"),
        ("user_id", "alice\u{00a0}", "whitespace"),
    ] {
        let mut event = good_call();
        event[field] = json!(value);
        refused(&event.to_string(), field, named);
    }
    let mut event = good_call();
    event["tags"] = json!({"feature\u{200d}": "x"});
    refused(&event.to_string(), "tags.feature\u{200d}", "U+200D");
    let mut event = good_call();
    event["tags"] = json!({"feature": "x\u{2066}"});
    refused(&event.to_string(), "tags.feature", "U+2066");
    // Letters of any script are names.
    let mut event = good_call();
    event["user_id"] = json!("Jürgen Ølsen 李");
    assert!(read(&event.to_string()).is_ok());
}

#[test]
fn the_control_plane_tenant_is_reserved_in_any_case() {
    for (field, id) in [("team_id", "_TOLLGATE"), ("org_id", "_Tollgate")] {
        let mut event = good_call();
        event[field] = json!(id);
        let event = read(&event.to_string()).unwrap();
        let refusal = refused_at_the_edge(&event).expect("refused");
        assert_eq!(refusal.field, field);
    }
}

#[test]
fn a_leap_second_is_refused() {
    let mut event = good_call();
    let now = Utc::now() - Duration::minutes(1);
    event["occurred_at"] = json!(now.format("%Y-%m-%dT%H:%M:60.000Z").to_string());
    refused(&event.to_string(), "occurred_at", "leap second");
}

#[test]
fn http_status_is_an_http_status_or_none() {
    for status in [1, 99, 600, 999] {
        let mut event = good_call();
        event["call"]["http_status"] = json!(status);
        refused(&event.to_string(), "call.http_status", "100 to 599");
    }
    for status in [0, 100, 200, 599] {
        let mut event = good_call();
        event["call"]["http_status"] = json!(status);
        assert!(read(&event.to_string()).is_ok(), "{status}");
    }
}

#[test]
fn values_json_cannot_read_name_their_member() {
    let text = edited(
        r#""output_tokens":5"#,
        r#""output_tokens":5,"audio_seconds":1e400"#,
    );
    refused(&text, "call.usage.audio_seconds", "number out of range");
    let text = edited(r#""user_id":"alice""#, r#""user_id":"al\ud800ice""#);
    refused(&text, "user_id", "surrogate pair");
    let text = edited(r#""schema_version":1"#, r#""schema_version":"1""#);
    refused(
        &text,
        "schema_version",
        "must be the integer 1, found a string",
    );
}

#[test]
fn a_byte_order_mark_and_json_seq_records_are_read() {
    let one = good_call().to_string();
    let body = format!("\u{feff}[{one}]");
    assert_eq!(
        split_body(body.as_bytes(), BodyFormat::JsonArray, 10)
            .unwrap()
            .len(),
        1
    );
    let two = good_call().to_string();
    let body = format!("\x1e{one}\n\x1e{two}\n");
    let items = split_body(body.as_bytes(), BodyFormat::Ndjson, 10).unwrap();
    assert_eq!(items.len(), 2);
    for item in &items {
        assert!(item.event(Utc::now(), &Limits::default()).is_ok());
    }
    // NDJSON still works.
    let body = format!("{one}\n{two}\n");
    assert_eq!(
        split_body(body.as_bytes(), BodyFormat::Ndjson, 10)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_malformed_array_names_the_item_of_the_fault() {
    let one = good_call().to_string();
    let bad = one.replacen(r#""duration_ms":812"#, r#""duration_ms":NaN"#, 1);
    let body = format!("[{one},\n{one},\n{bad}]");
    let err = split_body(body.as_bytes(), BodyFormat::JsonArray, 10).unwrap_err();
    assert_eq!(err.field, "body");
    assert!(err.reason.contains("item at index 2"), "{err}");
    // A raw newline inside a string of the second item.
    let bad = one.replacen("alice", "ali\nce", 1);
    let body = format!("[{one},{bad},{one}]");
    let err = split_body(body.as_bytes(), BodyFormat::JsonArray, 10).unwrap_err();
    assert!(err.reason.contains("item at index 1"), "{err}");
}
