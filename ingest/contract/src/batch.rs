//! Splitting a request body into items: a JSON array or NDJSON (one object per
//! line). A malformed line in NDJSON rejects only that line; a malformed JSON
//! array rejects the body, because its items cannot be told apart.
//!
//! An item is kept as its JSON text in the body (a borrowed
//! [`RawValue`]), not as a [`Value`] tree: [`BatchItem::event`] decodes it
//! straight into an [`Event`] ([`parse_event_json`]), and only an item that
//! is refused is read as a [`Value`], to name the field.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;

use super::event::Event;
use super::validate::{parse_event_json, JsonEventError, Limits, Rejection};

/// One item of a batch body, before validation.
#[derive(Debug)]
pub enum BatchItem<'a> {
    /// The item's JSON text, as it stands in the body.
    Json(&'a RawValue),
    /// The item could not be parsed as JSON at all.
    Malformed(Rejection),
}

impl BatchItem<'_> {
    /// The event this item holds, validated at `now`: the answer of
    /// [`crate::parse_event`] on the item's JSON.
    pub fn event(&self, now: DateTime<Utc>, limits: &Limits) -> Result<Event, Rejection> {
        match self {
            BatchItem::Json(text) => {
                parse_event_json(text.get().as_bytes(), now, limits).map_err(|err| match err {
                    JsonEventError::Invalid(rejection) => rejection,
                    // Split as JSON, but not readable as a value (nested
                    // deeper than the parser's recursion limit).
                    JsonEventError::NotJson(err) => {
                        Rejection::new("event", format!("malformed JSON: {err}"))
                    }
                })
            }
            BatchItem::Malformed(rejection) => Err(rejection.clone()),
        }
    }

    /// The item's `event_id` as sent, when it is a short string worth
    /// echoing back beside a refusal (read as a [`Value`]: for refused
    /// items only).
    pub fn echoable_event_id(&self) -> Option<String> {
        let BatchItem::Json(text) = self else {
            return None;
        };
        let value: Value = serde_json::from_str(text.get()).ok()?;
        value
            .get("event_id")
            .and_then(Value::as_str)
            .filter(|id| id.len() <= 64 && !id.chars().any(char::is_control))
            .map(str::to_string)
    }
}

/// Body format, from the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    JsonArray,
    Ndjson,
}

impl BodyFormat {
    /// `application/x-ndjson`, `application/jsonl` and `application/json-seq`
    /// mean NDJSON; anything else is parsed as JSON (array or single object).
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        if ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq") {
            BodyFormat::Ndjson
        } else {
            BodyFormat::JsonArray
        }
    }
}

/// Split `body` into items. `Err` means the body as a whole is unusable:
/// malformed or empty ([`split_items`]), or more than `max_items` items
/// ([`check_item_count`]).
pub fn split_body(
    body: &[u8],
    format: BodyFormat,
    max_items: usize,
) -> Result<Vec<BatchItem<'_>>, Rejection> {
    let items = split_items(body, format)?;
    check_item_count(items.len(), max_items)?;
    Ok(items)
}

/// Split `body` into items. `Err`: the body is malformed or holds no item.
pub fn split_items(body: &[u8], format: BodyFormat) -> Result<Vec<BatchItem<'_>>, Rejection> {
    // A UTF-8 byte order mark some editors and Windows tools write first.
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    let items = match format {
        BodyFormat::JsonArray => {
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                serde_json::from_slice::<Vec<&RawValue>>(body)
                    .map_err(|err| malformed_array(body, &err))?
                    .into_iter()
                    .map(BatchItem::Json)
                    .collect::<Vec<_>>()
            } else {
                // One event object; malformed, or JSON of another type, else.
                let whole = serde_json::from_slice::<&RawValue>(body).map_err(malformed_body)?;
                if !whole.get().starts_with('{') {
                    return Err(Rejection::new(
                        "body",
                        "expected a JSON array of events or one event object",
                    ));
                }
                vec![BatchItem::Json(whole)]
            }
        }
        BodyFormat::Ndjson => body
            .split(|b| *b == b'\n')
            .map(record)
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(
                |(n, line)| match serde_json::from_slice::<&RawValue>(line) {
                    Ok(text) => BatchItem::Json(text),
                    Err(e) => BatchItem::Malformed(Rejection::new(
                        "event",
                        format!("malformed JSON on line {}: {e}", n + 1),
                    )),
                },
            )
            .collect(),
    };
    if items.is_empty() {
        return Err(Rejection::new("body", "no events in the request body"));
    }
    Ok(items)
}

fn malformed_body(err: serde_json::Error) -> Rejection {
    Rejection::new("body", format!("malformed JSON: {err}"))
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One line of an NDJSON body, or one record of RFC 7464's
/// `application/json-seq` (`0x1E` + JSON + newline): the leading record
/// separator is dropped.
fn record(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    match line
        .get(start..)
        .and_then(|rest| rest.strip_prefix(b"\x1e"))
    {
        Some(rest) => rest,
        None => line,
    }
}

/// A JSON array that does not parse: the body is refused whole (its items
/// cannot be told apart past the fault), naming the item the fault is in.
fn malformed_array(body: &[u8], err: &serde_json::Error) -> Rejection {
    match offset_of(body, err.line(), err.column()).and_then(|at| item_at(body, at)) {
        Some(index) => Rejection::new(
            "body",
            format!(
                "malformed JSON in the item at index {index} (0-based, as results count): {err}; \
                 the whole array is refused, since its items cannot be told apart past the fault"
            ),
        ),
        None => Rejection::new("body", format!("malformed JSON: {err}")),
    }
}

/// serde_json's 1-based line and column (in bytes) as an offset in `body`.
fn offset_of(body: &[u8], line: usize, column: usize) -> Option<usize> {
    let line_start = if line <= 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map(|(i, _)| i + 1)?
    };
    Some(line_start + column.saturating_sub(1))
}

/// The 0-based index of the top-level array item that byte `at` of `body`
/// falls in: the commas at depth 1 before it, outside strings.
fn item_at(body: &[u8], at: usize) -> Option<usize> {
    let (mut depth, mut index) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body.get(..at.min(body.len()))? {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => index += 1,
            _ => {}
        }
    }
    (depth >= 1).then_some(index)
}

/// Refuse a body of more than `max_items` items.
pub fn check_item_count(items: usize, max_items: usize) -> Result<(), Rejection> {
    if items > max_items {
        return Err(Rejection::new(
            "body",
            format!("{items} events in one request, at most {max_items} allowed"),
        ));
    }
    Ok(())
}
