//! A request body read as one JSON object (an API's or a CLI file's),
//! every refusal naming the field as the JSON spells it (`reason`,
//! `signal.window_secs`, `matchers[2].value`) or `body` for the whole.

use serde::de::DeserializeOwned;

use crate::validate::{missing_field, strip_position, Rejection};

/// Parse `bytes` as one JSON object of type `T`, naming the field of any
/// problem: `body` for more than `max_bytes`, malformed JSON, a non-object
/// or trailing data; the field's dotted path when it is unknown, missing or
/// of the wrong type.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], max_bytes: usize) -> Result<T, Rejection> {
    if bytes.len() > max_bytes {
        return Err(Rejection::new(
            "body",
            format!("{} bytes; at most {max_bytes} accepted", bytes.len()),
        ));
    }
    // serde would also take a struct from an array of its fields in order.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Rejection::new("body", "expected a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if !inner.is_data() {
            let message = strip_position(&inner.to_string());
            return Rejection::new("body", format!("malformed JSON: {message}"));
        }
        refusal(&path, &inner, "body")
    })?;
    de.end()
        .map_err(|e| Rejection::new("body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The field a refusal at `path` (as `serde_path_to_error` spells it)
/// names, and its reason; `whole` when it names no member.
pub(crate) fn refusal(path: &str, inner: &serde_json::Error, whole: &str) -> Rejection {
    let message = strip_position(&inner.to_string());
    let top = path == "." || path.is_empty();
    let at = |name: &str| {
        if top {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = missing_field(&message) {
        return Rejection::new(at(&name), "missing required field");
    }
    // For unknown and duplicate fields the path already ends in the name.
    let named = |name: String| if top { name } else { path.to_string() };
    if let Some(name) = backticked_after(&message, "unknown field `") {
        let name: String = name.chars().take(64).collect();
        let reason: String = message.chars().take(300).collect();
        return Rejection::new(named(name), reason);
    }
    if let Some(name) = backticked_after(&message, "duplicate field `") {
        return Rejection::new(named(name), "given more than once");
    }
    // A member of a tagged object, named by its refusal
    // (`alerts::members`).
    if let Some((name, reason)) = message
        .strip_prefix('`')
        .and_then(|rest| rest.split_once("`: "))
    {
        return Rejection::new(at(name), reason);
    }
    Rejection::new(if top { whole } else { path }, message)
}

fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_string())
}
