//! Splitting a request body into items: a JSON array or NDJSON (one object per
//! line). A malformed line in NDJSON rejects only that line; a malformed JSON
//! array rejects the body, because its items cannot be told apart.

use serde_json::Value;

use super::validate::Rejection;

/// One item of a batch body, before validation.
#[derive(Debug)]
pub enum BatchItem {
    Json(Value),
    /// The item could not be parsed as JSON at all.
    Malformed(Rejection),
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
) -> Result<Vec<BatchItem>, Rejection> {
    let items = split_items(body, format)?;
    check_item_count(items.len(), max_items)?;
    Ok(items)
}

/// Split `body` into items, however many. `Err`: the body is malformed or
/// holds no item.
pub fn split_items(body: &[u8], format: BodyFormat) -> Result<Vec<BatchItem>, Rejection> {
    let items = match format {
        BodyFormat::JsonArray => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| Rejection::new("body", format!("malformed JSON: {e}")))?;
            match value {
                Value::Array(items) => items.into_iter().map(BatchItem::Json).collect::<Vec<_>>(),
                Value::Object(_) => vec![BatchItem::Json(value)],
                _ => {
                    return Err(Rejection::new(
                        "body",
                        "expected a JSON array of events or one event object",
                    ))
                }
            }
        }
        BodyFormat::Ndjson => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(n, line)| match serde_json::from_slice::<Value>(line) {
                Ok(v) => BatchItem::Json(v),
                Err(e) => BatchItem::Malformed(Rejection::new(
                    "event",
                    format!("malformed JSON on line {}: {e}", n + 1),
                )),
            })
            .collect(),
    };
    if items.is_empty() {
        return Err(Rejection::new("body", "no events in the request body"));
    }
    Ok(items)
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
