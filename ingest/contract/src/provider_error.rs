//! A provider's error as an event records it (`call.error`), made by the
//! proxy from a provider's answer and by the OTLP receiver from what an
//! instrumented SDK reported, alike, so that the same failure gets the same
//! error type and message, and so the same signature, whichever way it
//! came.

use serde_json::Value;

use crate::ProviderError;

/// Most characters of `call.error.type` the contract takes.
pub const MAX_ERROR_TYPE_CHARS: usize = 128;
/// Most characters of `call.error.message` the contract takes.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 2048;

/// `text` as the contract takes it: control characters (a provider's
/// multi-line message, a stray NUL) become spaces, and at most `max`
/// characters are kept (the contract counts characters, not bytes).
pub fn contract_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The error an event records, in the contract's bounds: a type of 1 to
/// 128 characters (`unknown` when the provider gave none) and a message of
/// at most 2048, neither with control characters. The processors
/// dead-letter an event outside them, which would leave a call the provider
/// bills unrecorded.
pub fn provider_error(error_type: &str, message: &str) -> ProviderError {
    let error_type = contract_text(error_type, MAX_ERROR_TYPE_CHARS);
    // The contract refuses a blank type as it refuses an empty one.
    let error_type = if error_type.trim().is_empty() {
        "unknown".to_string()
    } else {
        error_type
    };
    ProviderError {
        error_type,
        message: contract_text(message, MAX_ERROR_MESSAGE_CHARS),
        signature: None,
    }
}

/// The error of an OpenAI or Anthropic HTTP error body, `{"error": {...}}`
/// (Anthropic's wraps it as `{"type": "error", "error": {...}}`), as
/// [`error_of_object`] reads it. None when the body has no `error` object.
pub fn error_of_body(body: &Value) -> Option<ProviderError> {
    body.get("error")
        .filter(|err| err.is_object())
        .map(error_of_object)
}

/// A provider's error object, `{"type", "code", "message"}`: its type (the
/// signature's class, `docs/error-patterns.md`), the code only when there
/// is no type (OpenAI's `context_length_exceeded` comes with type
/// `invalid_request_error`, and its message tells it apart), and its
/// message.
pub fn error_of_object(err: &Value) -> ProviderError {
    let text = |field: &str| {
        err.get(field)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
    };
    let kind = text("type").or_else(|| text("code")).unwrap_or("unknown");
    let message = err.get("message").and_then(Value::as_str).unwrap_or("");
    provider_error(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_body_gives_its_type_else_its_code_and_its_message() {
        let openai = json!({"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
        let e = error_of_body(&openai).unwrap();
        assert_eq!(
            (e.error_type.as_str(), e.message.as_str()),
            ("insufficient_quota", "You exceeded your current quota.")
        );
        let coded = json!({"error": {"message": "m", "type": "", "code": "rate_limit_exceeded"}});
        assert_eq!(
            error_of_body(&coded).unwrap().error_type,
            "rate_limit_exceeded"
        );
        let anthropic = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(
            error_of_body(&anthropic).unwrap().error_type,
            "overloaded_error"
        );
        assert_eq!(error_of_body(&json!({"error": "text"})), None);
        assert_eq!(error_of_body(&json!({"detail": {}})), None);
        let bare = error_of_body(&json!({"error": {}})).unwrap();
        assert_eq!(
            (bare.error_type.as_str(), bare.message.as_str()),
            ("unknown", "")
        );
    }

    #[test]
    fn text_is_bounded_and_without_control_characters() {
        let e = provider_error(" \n", &format!("a\nb{}", "x".repeat(3000)));
        assert_eq!(e.error_type, "unknown");
        assert!(e.message.starts_with("a b"));
        assert_eq!(e.message.chars().count(), MAX_ERROR_MESSAGE_CHARS);
    }
}
