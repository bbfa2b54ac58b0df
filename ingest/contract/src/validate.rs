//! Turning untrusted JSON into [`Event`]s: every rejection names the field (as
//! a dotted path) and the reason, so a client can fix exactly what is wrong.

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{Event, Usage, MAX_TOKENS_PER_CALL, SCHEMA_VERSION};

/// Why a value was refused: the field it came in and the reason, the one
/// shape every refusal of input takes — an event field (a dotted path such
/// as `call.usage.input_tokens`, or `event` when the whole item is wrong), a
/// request parameter (`tollgate_queries::InvalidParameter`), an API body
/// field (`tollgate_control::budgets::admin::InvalidBudget`, price
/// administration). Each edge words it for its caller (an ingest result, a
/// JSON error with `field` or `parameter`, a page, a CLI flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::error::Error for Rejection {}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Limits applied on top of the types.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far in the future `occurred_at` may be (clock skew allowance).
    pub max_future_skew: Duration,
    /// How old `occurred_at` may be.
    pub max_age: Duration,
    /// Most tags on one event.
    pub max_tags: usize,
    /// Whether the rules added after events were already on Kafka apply:
    /// identifiers without look-alike characters (format characters, edge
    /// whitespace; [`identifier`]), no leap second, an HTTP status in
    /// range (2026-12-07). The edges (ingest API, OTLP, the proxy) refuse
    /// such input with a clear error; the processors read what an older
    /// edge accepted, so a replay never dead-letters an event that was
    /// billed once.
    pub strict: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_future_skew: Duration::minutes(5),
            max_age: Duration::days(400),
            max_tags: 32,
            strict: true,
        }
    }
}

/// Validate one JSON value as an event at time `now`.
///
/// A value that reads as an event is read without tracking where in it the
/// reader is (`serde_path_to_error` allocates a path segment per member);
/// only a value that does not is read again with the path tracked, to name
/// the field. Both reads are the same `Deserialize`, so the answer is the same.
pub fn parse_event(value: Value, now: DateTime<Utc>, limits: &Limits) -> Result<Event, Rejection> {
    // `get` finds a member only in an object.
    let current_version = value
        .get("schema_version")
        .and_then(Value::as_u64)
        .is_some_and(|v| v == u64::from(SCHEMA_VERSION));
    if current_version {
        if let Ok(mut event) = Event::deserialize(&value) {
            as_read(&mut event);
            return check_event(&event, now, limits).map(|()| event);
        }
    }
    parse_event_tracked(value, now, limits)
}

/// [`parse_event`] with the path tracked: the field of a rejection.
fn parse_event_tracked(
    value: Value,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Event, Rejection> {
    if !value.is_object() {
        return Err(Rejection::new(
            "event",
            format!("expected a JSON object, found {}", json_type(&value)),
        ));
    }
    match value.get("schema_version") {
        None => return Err(Rejection::new("schema_version", "missing required field")),
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(other) if !other.is_number() => {
            return Err(Rejection::new(
                "schema_version",
                format!(
                    "must be the integer {SCHEMA_VERSION}, found {} {other}",
                    json_type(other)
                ),
            ))
        }
        Some(other) => {
            return Err(Rejection::new(
                "schema_version",
                format!("unsupported schema version {other}; this server accepts {SCHEMA_VERSION}"),
            ))
        }
    }
    let event: Event = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." || path.is_empty() {
            "event".to_string()
        } else {
            path
        };
        let inner = err.into_inner().to_string();
        // serde reports a missing field at the parent path; name the field itself.
        match missing_field(&inner) {
            Some(name) if field == "event" => Rejection::new(name, "missing required field"),
            Some(name) => Rejection::new(format!("{field}.{name}"), "missing required field"),
            // chrono's reasons ("input contains invalid characters",
            // "premature end of input") do not say what a time must be.
            None if field == "occurred_at" => Rejection::new(
                field,
                format!(
                    "{}: expected an RFC 3339 time with a UTC offset, such as \
                     2026-12-07T04:00:00Z or 2026-12-07T05:00:00+01:00",
                    strip_position(&inner)
                ),
            ),
            None => Rejection::new(field, strip_position(&inner)),
        }
    })?;
    let mut event = event;
    as_read(&mut event);
    check_event(&event, now, limits)?;
    Ok(event)
}

/// What reading an event makes of two things producers commonly send,
/// before it is checked (the proxy and the OTLP mapping do the same with
/// theirs): a control character in `call.error.message` (a provider's
/// multi-line message, a tab) is read as a space, and a call that was not
/// streamed has no `call.ttft_ms` (time to first token is a streamed
/// call's; the latency reports would count it among the streams').
fn as_read(event: &mut Event) {
    let Some(call) = event.call.as_mut() else {
        return;
    };
    if let Some(error) = call.error.as_mut() {
        if error.message.chars().any(char::is_control) {
            error.message = error
                .message
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
        }
    }
    if !call.stream {
        call.ttft_ms = None;
    }
}

/// Why [`parse_event_json`] refused a payload.
#[derive(Debug)]
pub enum JsonEventError {
    /// The payload is not JSON at all.
    NotJson(serde_json::Error),
    /// JSON, but not a valid event: the field and the reason.
    Invalid(Rejection),
}

/// Decode and validate one event from its JSON text, with exactly the
/// result of `parse_event(serde_json::from_slice(text)?, now, limits)`,
/// at a fraction of its cost for a valid event: the text is decoded straight
/// into [`Event`] (no [`Value`] tree, whose every key and string is an
/// allocation), and only a text that typed decoding refuses takes the
/// [`Value`] path, which names the field of the rejection.
///
/// Typed decoding accepts a few texts the [`Value`] path refuses, and those
/// are checked before it counts: a JSON array (serde reads a struct from a
/// sequence too) and a `schema_version` other than [`SCHEMA_VERSION`] (a
/// field of the struct, which the [`Value`] path checks first). Two
/// answers differ from the [`Value`] path's on purpose, because a [`Value`]
/// has lost what they need: a key given twice (a [`Value`] keeps the last)
/// is refused naming its path (`crate::duplicate_keys`), and a member JSON
/// cannot read (`1e400`, a lone surrogate escape) is named rather than
/// refusing the item as `event`.
pub fn parse_event_json(
    text: &[u8],
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Event, JsonEventError> {
    let is_object = text
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if is_object {
        if let Ok(mut event) = serde_json::from_slice::<Event>(text) {
            if event.schema_version == SCHEMA_VERSION {
                as_read(&mut event);
                return check_event(&event, now, limits)
                    .map(|()| event)
                    .map_err(JsonEventError::Invalid);
            }
        }
    }
    // A tree keeps the last of a repeated key: refuse it first, by its path.
    if let Some(path) = crate::duplicate_keys::first_repeated_key(text) {
        return Err(JsonEventError::Invalid(Rejection::new(
            path,
            crate::duplicate_keys::REPEATED,
        )));
    }
    let value: Value = match serde_json::from_slice(text) {
        Ok(value) => value,
        Err(err) => {
            return Err(match unreadable_member(text, &err) {
                Some(rejection) => JsonEventError::Invalid(rejection),
                None => JsonEventError::NotJson(err),
            })
        }
    };
    parse_event(value, now, limits).map_err(JsonEventError::Invalid)
}

/// The member of an event that JSON reading stopped at (`1e400` in
/// `call.usage.audio_seconds`, a lone surrogate escape in `user_id`),
/// found by reading `text` as the event with its path tracked: named only
/// when that reading stops with the same error.
fn unreadable_member(text: &[u8], err: &serde_json::Error) -> Option<Rejection> {
    let reason = strip_position(&err.to_string());
    let mut de = serde_json::Deserializer::from_slice(text);
    let typed = serde_path_to_error::deserialize::<_, Event>(&mut de).err()?;
    let path = typed.path().to_string();
    let same = strip_position(&typed.into_inner().to_string()) == reason;
    if !same || path.is_empty() || path == "." {
        return None;
    }
    // serde_json's words for a lone `\uD800`-`\uDFFF` escape.
    let reason = if reason.contains("surrogate") || reason.contains("hex escape") {
        format!(
            "{reason}: a \\u escape of U+D800 to U+DFFF must be half of a surrogate pair, \
             a string must be valid Unicode"
        )
    } else {
        reason
    };
    Some(Rejection::new(path, reason))
}

/// The checks of an event already read into its type: every rule of the
/// contract a type cannot state (UUIDv7, time window, lengths, ranges,
/// what a kind requires). [`parse_event`] runs them after reading; a
/// producer that builds an `Event` itself (the OTLP mapping) runs them
/// alone.
pub fn check_event(event: &Event, now: DateTime<Utc>, limits: &Limits) -> Result<(), Rejection> {
    if event.event_id.get_version_num() != 7 {
        return Err(Rejection::new(
            "event_id",
            format!(
                "must be a UUIDv7, got version {}",
                event.event_id.get_version_num()
            ),
        ));
    }
    // chrono reads a second of 60 as a leap second, which the stored time
    // (second 59) and its milliseconds (the next minute) read apart.
    if limits.strict && event.occurred_at.nanosecond() >= 1_000_000_000 {
        return Err(Rejection::new(
            "occurred_at",
            "a leap second (seconds 60) is not accepted: send the time as 59.999 or as the next minute's 00",
        ));
    }
    // The kind itself was checked when the event was read (`EventKind`).
    let is_call = event.kind.is_call();
    let is_admin = event.kind.is_admin();
    if event.occurred_at > now + limits.max_future_skew {
        return Err(Rejection::new(
            "occurred_at",
            format!(
                "{} is in the future (more than {} s after the server's clock {})",
                event.occurred_at.to_rfc3339(),
                limits.max_future_skew.num_seconds(),
                now.to_rfc3339()
            ),
        ));
    }
    if event.occurred_at < now - limits.max_age {
        return Err(Rejection::new(
            "occurred_at",
            format!(
                "{} is older than the {} day retention window",
                event.occurred_at.to_rfc3339(),
                limits.max_age.num_days()
            ),
        ));
    }
    let id: Checker = if limits.strict { identifier } else { text };
    id("org_id", &event.org_id, 1, 128)?;
    id("team_id", &event.team_id, 1, 128)?;
    id("user_id", &event.user_id, 0, 128)?;
    id("api_key_id", &event.api_key_id, 0, 128)?;
    if event.tags.len() > limits.max_tags {
        return Err(Rejection::new(
            "tags",
            format!(
                "{} tags, at most {} allowed",
                event.tags.len(),
                limits.max_tags
            ),
        ));
    }
    for (key, value) in &event.tags {
        tag(key, value, id)?;
    }
    if let Some(cost) = &event.reported_cost {
        if !is_decimal(cost) {
            return Err(Rejection::new(
                "reported_cost",
                "must be a non-negative decimal string of at most 26 integer and 12 fractional \
                 digits, such as \"0.0025\"",
            ));
        }
    }
    match (&event.call, is_call) {
        (None, true) => {
            return Err(Rejection::new(
                "call",
                format!("missing required field for kind {}", event.kind),
            ))
        }
        (Some(_), false) => {
            return Err(Rejection::new(
                "call",
                format!("not allowed for kind {}", event.kind),
            ))
        }
        _ => {}
    }
    match (&event.admin, is_admin) {
        (None, true) => {
            return Err(Rejection::new(
                "admin",
                format!("missing required field for kind {}", event.kind),
            ))
        }
        // A call event carrying an admin object would be chained and read
        // as an administrative change it is not.
        (Some(_), false) => {
            return Err(Rejection::new(
                "admin",
                format!(
                    "not allowed for kind {} (only admin.* events carry one)",
                    event.kind
                ),
            ))
        }
        _ => {}
    }
    if let Some(call) = &event.call {
        text("call.call_id", &call.call_id, 1, 128)?;
        text("call.trace_id", &call.trace_id, 0, 128)?;
        span_id(&call.span_id)?;
        text("call.provider", &call.provider, 1, 64)?;
        text("call.model", &call.model, 1, 256)?;
        text("call.requested_model", &call.requested_model, 0, 256)?;
        text("call.fallback_of", &call.fallback_of, 0, 128)?;
        if limits.strict && call.http_status != 0 && !(100..=599).contains(&call.http_status) {
            return Err(Rejection::new(
                "call.http_status",
                format!(
                    "{} is not an HTTP status: 100 to 599, or 0 when there was no answer",
                    call.http_status
                ),
            ));
        }
        if call.attempt == 0 {
            return Err(Rejection::new("call.attempt", "must be at least 1"));
        }
        if let Some(ttft) = call.ttft_ms {
            if ttft > call.duration_ms {
                return Err(Rejection::new(
                    "call.ttft_ms",
                    format!(
                        "{ttft} ms is longer than call.duration_ms {} ms",
                        call.duration_ms
                    ),
                ));
            }
        }
        check_token_counts(&call.usage)?;
        let usage = &call.usage;
        if usage.input_tokens_estimated && usage.input_tokens == 0 {
            // A flag without an estimate would hide a prompt billed at 0.
            return Err(Rejection::new(
                "call.usage.input_tokens_estimated",
                "is true but call.usage.input_tokens is 0: an estimated input must be the estimate",
            ));
        }
        if !(0.0..=86_400.0).contains(&usage.audio_seconds) || !usage.audio_seconds.is_finite() {
            return Err(Rejection::new(
                "call.usage.audio_seconds",
                "must be between 0 and 86400",
            ));
        }
        if let Some(error) = &call.error {
            text("call.error.type", &error.error_type, 1, 128)?;
            text("call.error.message", &error.message, 0, 2048)?;
            if let Some(claimed) = error.signature {
                let input = crate::signature::ErrorInput::from_call(
                    &call.provider,
                    call.http_status,
                    error,
                );
                let computed = crate::signature::signature(&input).id;
                if claimed != computed {
                    return Err(Rejection::new(
                        "call.error.signature",
                        format!(
                            "{claimed} is not the signature of this error ({computed} under {}); omit it to have it computed",
                            crate::signature::SIGNATURE_VERSION
                        ),
                    ));
                }
            }
        }
        if let Some(recovery) = &call.recovery {
            check_recovery(recovery)?;
        }
        for (field, digest) in [
            ("call.prompt_sha256", &call.prompt_sha256),
            ("call.response_sha256", &call.response_sha256),
        ] {
            if let Some(d) = digest {
                if d.len() != 64
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                {
                    return Err(Rejection::new(
                        field,
                        "must be 64 lowercase hex characters (SHA-256)",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The token convention (`docs/ingest-api.md`, "The numbers in an event"): every
/// count is at most [`MAX_TOKENS_PER_CALL`], cache reads and writes are
/// disjoint parts of the input, reasoning is part of the output. Sums stay
/// below the bound, so they cannot overflow either.
fn check_token_counts(usage: &Usage) -> Result<(), Rejection> {
    for (field, count) in [
        ("call.usage.input_tokens", usage.input_tokens),
        ("call.usage.output_tokens", usage.output_tokens),
        ("call.usage.cached_input_tokens", usage.cached_input_tokens),
        ("call.usage.cache_write_tokens", usage.cache_write_tokens),
        ("call.usage.reasoning_tokens", usage.reasoning_tokens),
    ] {
        if count > MAX_TOKENS_PER_CALL {
            return Err(Rejection::new(
                field,
                format!("{count} is more than one call can use (at most {MAX_TOKENS_PER_CALL})"),
            ));
        }
    }
    if usage.cached_input_tokens > usage.input_tokens {
        return Err(Rejection::new(
            "call.usage.cached_input_tokens",
            format!(
                "{} must not exceed call.usage.input_tokens {} (cache reads are part of the input)",
                usage.cached_input_tokens, usage.input_tokens
            ),
        ));
    }
    if usage.cached_input_tokens + usage.cache_write_tokens > usage.input_tokens {
        return Err(Rejection::new(
            "call.usage.cache_write_tokens",
            format!(
                "{} plus call.usage.cached_input_tokens {} must not exceed call.usage.input_tokens {} \
                 (cache writes are part of the input, apart from cache reads)",
                usage.cache_write_tokens, usage.cached_input_tokens, usage.input_tokens
            ),
        ));
    }
    if usage.reasoning_tokens > usage.output_tokens {
        return Err(Rejection::new(
            "call.usage.reasoning_tokens",
            format!(
                "{} must not exceed call.usage.output_tokens {} (reasoning is part of the output)",
                usage.reasoning_tokens, usage.output_tokens
            ),
        ));
    }
    Ok(())
}

pub(crate) fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), Rejection> {
    let len = value.chars().count();
    if len < min {
        return Err(Rejection::new(
            field,
            if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {min} characters")
            },
        ));
    }
    if len > max {
        return Err(Rejection::new(
            field,
            format!("{len} characters, at most {max} allowed"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::new(field, "must not contain control characters"));
    }
    // A required name of spaces only names nothing a person could tell
    // apart (an org " " beside an org "  ").
    if min >= 1 && value.trim().is_empty() {
        return Err(Rejection::new(field, "must not be blank (only whitespace)"));
    }
    Ok(())
}

/// One tag of an event: a key of 1 to 64 characters and a value of at most
/// 256, neither with control characters. The proxy judges the tags of its
/// headers by this too, so it never emits an event the processors would
/// dead-letter (a tab in a tag header did: the call went unbilled).
pub fn check_tag(key: &str, value: &str) -> Result<(), Rejection> {
    tag(key, value, identifier)
}

/// A check of one text field: its name, value, and least and most
/// characters ([`text`], or [`identifier`] at the edges).
type Checker = fn(&str, &str, usize, usize) -> Result<(), Rejection>;

/// One tag judged by `check`: a key of 1 to 64 characters and a value of
/// at most 256.
fn tag(key: &str, value: &str, check: Checker) -> Result<(), Rejection> {
    check("tags", key, 1, 64)
        .map_err(|r| Rejection::new(format!("tags.{key}"), format!("key {}", r.reason)))?;
    check(&format!("tags.{key}"), value, 0, 256)
}

/// An org, team or user id an API key is scoped to (`tollgate keys create
/// --org/--team/--user`, the admin API): every event the key's calls make
/// carries it, so it is judged as [`check_event`] judges those, and a call
/// is never billed under an id the processors would dead-letter.
pub fn check_scope_id(field: &str, value: &str) -> Result<(), Rejection> {
    identifier(field, value, 1, 128)
}

/// A name that identifies something (an org, team, user, key, a tag): a
/// [`text`] that also looks like what it is. Refused, naming the character
/// as U+XXXX: Unicode format characters (category Cf: zero-width spaces and
/// joiners, bidirectional controls such as U+202E, which shows `alice`
/// reversed on a page, the byte order mark), the line and paragraph
/// separators U+2028 and U+2029, and whitespace at either end. Each would
/// make two ids that read alike (`_tollgate` and `_tollgate\u{200b}`).
pub(crate) fn identifier(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), Rejection> {
    text(field, value, min, max)?;
    if value.is_ascii() {
        if value.starts_with(|c: char| c.is_ascii_whitespace())
            || value.ends_with(|c: char| c.is_ascii_whitespace())
        {
            return Err(Rejection::new(
                field,
                "must not begin or end with whitespace",
            ));
        }
        return Ok(());
    }
    if let Some(c) = value.chars().find(|c| is_invisible(*c)) {
        return Err(Rejection::new(
            field,
            format!(
                "must not contain U+{:04X}, an invisible formatting or separator character \
                 (zero-width, bidirectional control, byte order mark, line or paragraph separator)",
                u32::from(c)
            ),
        ));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(Rejection::new(
            field,
            "must not begin or end with whitespace",
        ));
    }
    Ok(())
}

/// A character of category Cf (format), or U+2028/U+2029.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
        || unicode_general_category::get_general_category(c)
            == unicode_general_category::GeneralCategory::Format
}

/// A span id is empty (unknown) or a W3C span id: 16 lowercase hex digits,
/// not all zero.
fn span_id(value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        return Ok(());
    }
    let hex = value.len() == 16
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex || value.bytes().all(|b| b == b'0') {
        return Err(Rejection::new(
            "call.span_id",
            "must be empty or a W3C span id: 16 lowercase hex digits, not all zero",
        ));
    }
    Ok(())
}

fn is_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.chars().all(|c| c.is_ascii_digit())
    };
    digits(int, 26) && frac.is_none_or(|f| digits(f, 12))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

/// serde_json appends "at line 1 column 57", which refers to the re-parsed value,
/// not to the client's body: drop it.
pub(crate) fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The rules of `call.recovery` (`docs/error-patterns.md`, "Recovery facts"):
/// the first attempt recovers from nothing, every later one from a failure.
fn check_recovery(recovery: &crate::event::Recovery) -> Result<(), Rejection> {
    use crate::event::Strategy;
    text(
        "call.recovery.from_provider",
        &recovery.from_provider,
        0,
        64,
    )?;
    text("call.recovery.from_model", &recovery.from_model, 0, 256)?;
    if recovery.sequence == 0 {
        return Err(Rejection::new(
            "call.recovery.sequence",
            "must be at least 1",
        ));
    }
    if recovery.wait_ms > 86_400_000 {
        return Err(Rejection::new(
            "call.recovery.wait_ms",
            "must be at most 86400000 (one day)",
        ));
    }
    let first = recovery.sequence == 1;
    if first != (recovery.strategy == Strategy::First) {
        return Err(Rejection::new(
            "call.recovery.strategy",
            format!(
                "{} does not fit sequence {}: the first attempt (sequence 1) is `first`, later ones retry or fall back",
                recovery.strategy.as_str(),
                recovery.sequence
            ),
        ));
    }
    let has_from = recovery.from_signature.is_some();
    if first == has_from {
        return Err(Rejection::new(
            "call.recovery.from_signature",
            if first {
                "must be absent on the first attempt (it recovers from nothing)"
            } else {
                "is required on an attempt after the first (the failure it recovers from)"
            },
        ));
    }
    if has_from && (recovery.from_provider.is_empty() || recovery.from_model.is_empty()) {
        return Err(Rejection::new(
            if recovery.from_provider.is_empty() {
                "call.recovery.from_provider"
            } else {
                "call.recovery.from_model"
            },
            "is required with from_signature (the failed attempt's provider and model)",
        ));
    }
    if !has_from && (!recovery.from_provider.is_empty() || !recovery.from_model.is_empty()) {
        return Err(Rejection::new(
            "call.recovery.from_provider",
            "must be empty on the first attempt",
        ));
    }
    Ok(())
}
