//! A failed call as the provider SDKs' exceptions describe it, read from a
//! span's `error.type` and status message (`docs/otlp.md`, "Failed
//! calls"), so that a failure reported over OTLP records the error type,
//! message and HTTP status the proxy would have recorded from the
//! provider's answer, and joins the same error pattern:
//!
//! - the exception's class, however the instrumentation spells it
//!   (`RateLimitError`, `openai.RateLimitError`, `<class
//!   'openai.RateLimitError'>`): [`class_name`];
//! - the Python SDKs' message, `Error code: 429 - {'error': {...}}`: the
//!   status, and the provider's error body, a Python literal (the SDK
//!   formats the decoded JSON with `repr`), read by [`python_literal`];
//! - the HTTP status a class implies when the message gives none.

use serde_json::{Map, Number, Value};
use tollgate_contract::provider_error::{error_of_body, provider_error};
use tollgate_contract::ProviderError;

/// What a failed span's exception says.
#[derive(Debug, Clone, PartialEq)]
pub struct SdkFailure {
    /// 0 when neither the message nor the class gives one.
    pub http_status: u16,
    pub error: ProviderError,
}

/// Read a failed span's `error.type` (`None`: the span named none) and
/// status message.
pub fn read(error_type: Option<&str>, message: &str) -> SdkFailure {
    let class = error_type.map(class_name);
    let (status, body) = match python_sdk_message(message) {
        Some((status, body)) => (status, body),
        None => (0, None),
    };
    // The provider's own error, as the proxy reads it from the answer.
    let from_body = body.as_ref().and_then(error_of_body);
    let error = from_body.unwrap_or_else(|| provider_error(class.unwrap_or("error"), message));
    let http_status = match status {
        0 => class.map(status_of_class).unwrap_or(0),
        status => status,
    };
    SdkFailure { http_status, error }
}

/// The class of an exception without its module or Python's `<class '…'>`
/// wrapping: `<class 'openai.RateLimitError'>` → `RateLimitError`. Any
/// other text is returned trimmed.
pub fn class_name(error_type: &str) -> &str {
    let trimmed = error_type.trim();
    let inner = trimmed
        .strip_prefix("<class '")
        .and_then(|rest| rest.strip_suffix("'>"))
        .unwrap_or(trimmed);
    // Only a dotted identifier is a qualified class name; `error.type` may
    // also be a code (`rate_limit_exceeded`) or a status (`429`).
    let dotted = inner.contains('.')
        && inner
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_alphanumeric() || c == '_'));
    if dotted {
        inner.rsplit('.').next().unwrap_or(inner)
    } else {
        inner
    }
}

/// The HTTP status the OpenAI and Anthropic SDKs' exception classes stand
/// for (Python and JavaScript alike); 0 for a class of no fixed status (a
/// timeout, a connection error, a server error).
fn status_of_class(class: &str) -> u16 {
    match class {
        "BadRequestError" => 400,
        "AuthenticationError" => 401,
        "PermissionDeniedError" => 403,
        "NotFoundError" => 404,
        "ConflictError" => 409,
        "UnprocessableEntityError" => 422,
        "RateLimitError" => 429,
        _ => 0,
    }
}

/// The Python SDKs' `Error code: 429 - {...}`: the status, and the body
/// when the rest is a Python literal.
fn python_sdk_message(message: &str) -> Option<(u16, Option<Value>)> {
    let rest = message.trim_start().strip_prefix("Error code: ")?;
    let status = rest
        .get(..3)
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|c| (400..=599).contains(c))?;
    let body = rest
        .get(3..)
        .and_then(|tail| tail.strip_prefix(" - "))
        .and_then(python_literal);
    Some((status, body))
}

/// Deepest nesting [`python_literal`] reads; deeper input is not an error
/// body.
const MAX_DEPTH: usize = 16;

/// A Python literal as `repr` writes decoded JSON (dicts, lists, tuples,
/// strings in either quote, `None`, `True`, `False`, numbers), as JSON;
/// None unless the whole text is one such literal.
pub fn python_literal(text: &str) -> Option<Value> {
    let mut reader = Reader {
        chars: text.char_indices().peekable(),
        depth: 0,
    };
    let value = reader.value()?;
    reader.spaces();
    reader.chars.peek().is_none().then_some(value)
}

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    depth: usize,
}

impl Reader<'_> {
    fn spaces(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }

    fn peek(&mut self) -> Option<char> {
        self.spaces();
        self.chars.peek().map(|(_, c)| *c)
    }

    fn expect(&mut self, want: char) -> Option<()> {
        (self.peek()? == want).then(|| {
            self.chars.next();
        })
    }

    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            '{' => self.nested(|r| r.dict()),
            '[' => self.nested(|r| r.sequence('[', ']')),
            '(' => self.nested(|r| r.sequence('(', ')')),
            '\'' | '"' => self.string().map(Value::String),
            _ => self.word(),
        }
    }

    fn nested(&mut self, read: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    fn dict(&mut self) -> Option<Value> {
        self.expect('{')?;
        let mut map = Map::new();
        if self.peek()? == '}' {
            self.chars.next();
            return Some(Value::Object(map));
        }
        loop {
            let key = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.expect(':')?;
            let value = self.value()?;
            map.insert(key, value);
            match self.peek()? {
                ',' => {
                    self.chars.next();
                    if self.peek()? == '}' {
                        self.chars.next();
                        return Some(Value::Object(map));
                    }
                }
                '}' => {
                    self.chars.next();
                    return Some(Value::Object(map));
                }
                _ => return None,
            }
        }
    }

    fn sequence(&mut self, open: char, close: char) -> Option<Value> {
        self.expect(open)?;
        let mut items = Vec::new();
        loop {
            if self.peek()? == close {
                self.chars.next();
                return Some(Value::Array(items));
            }
            items.push(self.value()?);
            match self.peek()? {
                ',' => {
                    self.chars.next();
                }
                c if c == close => {}
                _ => return None,
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let (_, quote) = self.chars.next()?;
        let mut out = String::new();
        loop {
            let (_, c) = self.chars.next()?;
            match c {
                c if c == quote => return Some(out),
                '\\' => {
                    let (_, escaped) = self.chars.next()?;
                    match escaped {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'x' => out.push(self.code_point(2)?),
                        'u' => out.push(self.code_point(4)?),
                        'U' => out.push(self.code_point(8)?),
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn code_point(&mut self, digits: usize) -> Option<char> {
        let mut n = 0u32;
        for _ in 0..digits {
            let (_, c) = self.chars.next()?;
            n = n * 16 + c.to_digit(16)?;
        }
        char::from_u32(n)
    }

    /// `None`, `True`, `False` or a number.
    fn word(&mut self) -> Option<Value> {
        let mut word = String::new();
        while let Some((_, c)) = self
            .chars
            .next_if(|(_, c)| c.is_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
        {
            word.push(c);
        }
        match word.as_str() {
            "None" => Some(Value::Null),
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            number => {
                if let Ok(n) = number.parse::<i64>() {
                    Some(Value::Number(n.into()))
                } else {
                    number
                        .parse::<f64>()
                        .ok()
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const QUOTA: &str = "Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check your plan and billing details.', 'type': 'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}";
    const RATE: &str = "Error code: 429 - {'error': {'message': \"Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.\", 'type': 'requests', 'param': None, 'code': 'rate_limit_exceeded'}}";
    const ANTHROPIC: &str = "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}, 'request_id': 'req_011'}";

    #[test]
    fn a_python_sdk_message_gives_the_providers_type_message_and_status() {
        let quota = read(Some("<class 'openai.RateLimitError'>"), QUOTA);
        assert_eq!(quota.http_status, 429);
        assert_eq!(quota.error.error_type, "insufficient_quota");
        assert_eq!(
            quota.error.message,
            "You exceeded your current quota, please check your plan and billing details."
        );
        // A rate limit is another failure than an exhausted quota.
        let rate = read(Some("RateLimitError"), RATE);
        assert_eq!(
            (rate.http_status, rate.error.error_type.as_str()),
            (429, "requests")
        );
        assert!(rate
            .error
            .message
            .starts_with("Rate limit reached for gpt-4o-mini"));
        let overloaded = read(Some("anthropic.InternalServerError"), ANTHROPIC);
        assert_eq!(
            (
                overloaded.http_status,
                overloaded.error.error_type.as_str(),
                overloaded.error.message.as_str()
            ),
            (529, "overloaded_error", "Overloaded")
        );
    }

    #[test]
    fn the_class_is_read_however_the_instrumentation_spells_it() {
        for spelled in [
            "RateLimitError",
            "openai.RateLimitError",
            "<class 'openai.RateLimitError'>",
            "  <class 'openai._exceptions.RateLimitError'> ",
        ] {
            assert_eq!(class_name(spelled), "RateLimitError", "{spelled}");
            let failure = read(Some(spelled), "rate limited");
            assert_eq!(
                (
                    failure.http_status,
                    failure.error.error_type.as_str(),
                    failure.error.message.as_str()
                ),
                (429, "RateLimitError", "rate limited"),
                "{spelled}"
            );
        }
        // Codes, statuses and prose are not classes.
        for kept in ["rate_limit_exceeded", "429", "timed out.", "a.b c"] {
            assert_eq!(class_name(kept), kept);
        }
        assert_eq!(read(None, "boom").error.error_type, "error");
        assert_eq!(
            read(Some("APITimeoutError"), "Request timed out.").http_status,
            0
        );
    }

    #[test]
    fn a_message_that_is_not_the_sdks_keeps_its_text() {
        // Status without a readable body: the status, the class and the
        // whole message.
        let cut = read(
            Some("openai.APIStatusError"),
            "Error code: 503 - {'error': {'message': 'cut",
        );
        assert_eq!(cut.http_status, 503);
        assert_eq!(cut.error.error_type, "APIStatusError");
        assert!(cut.error.message.starts_with("Error code: 503"));
        let html = read(
            Some("InternalServerError"),
            "Error code: 502 - <html>bad gateway</html>",
        );
        assert_eq!(
            (html.http_status, html.error.error_type.as_str()),
            (502, "InternalServerError")
        );
        assert_eq!(read(Some("X"), "Error code: 999 - {}").http_status, 0);
    }

    #[test]
    fn python_literals_read_as_json() {
        assert_eq!(
            python_literal(
                r#"{'a': [1, -2.5, None, True, False], "b": ('x', "it's"), 'c': {}, 'd': 'tab\there\x21\u00e9',}"#
            ),
            Some(
                json!({"a": [1, -2.5, null, true, false], "b": ["x", "it's"], "c": {}, "d": "tab\there!é"})
            )
        );
        assert_eq!(python_literal("'a\\'b'"), Some(json!("a'b")));
        for bad in [
            "",
            "{",
            "{'a' 1}",
            "{'a': 1} trailing",
            "[1 2]",
            "'open",
            "nonsense",
            "{'a': 1,,}",
        ] {
            assert_eq!(python_literal(bad), None, "{bad}");
        }
        // Hostile nesting is refused, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(python_literal(&deep), None);
        let shallow = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(python_literal(&shallow).is_some());
    }
}
