//! What an event records: its `kind`, the one list of kinds. An AI call's
//! lifecycle (`ai.call.*`) or a control-plane change (`admin.<change>`);
//! every producer builds, and every consumer matches on, [`EventKind`], so a
//! kind is spelled once, here.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const KIND_CALL_COMPLETED: &str = "ai.call.completed";
pub const KIND_CALL_FAILED: &str = "ai.call.failed";
pub const KIND_CALL_BLOCKED: &str = "ai.call.blocked";
pub const KIND_CALL_STARTED: &str = "ai.call.started";
pub const KIND_CALL_FIRST_TOKEN: &str = "ai.call.first_token";

/// Prefix of control-plane change kinds (`admin.price.added`, ...).
pub const KIND_ADMIN_PREFIX: &str = "admin.";
/// Longest kind, in bytes.
const MAX_KIND_LEN: usize = 64;

/// Every kind that carries a `call` object.
pub const CALL_KINDS: [&str; 5] = [
    KIND_CALL_COMPLETED,
    KIND_CALL_FAILED,
    KIND_CALL_BLOCKED,
    KIND_CALL_STARTED,
    KIND_CALL_FIRST_TOKEN,
];

/// The kind of one event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `ai.call.completed`: a call that got its answer.
    CallCompleted,
    /// `ai.call.failed`: a call the provider (or the way there) failed.
    CallFailed,
    /// `ai.call.blocked`: a call a gate denied; it never reached a provider.
    CallBlocked,
    /// `ai.call.started`: lifecycle, the call was sent.
    CallStarted,
    /// `ai.call.first_token`: lifecycle, the first token arrived.
    CallFirstToken,
    /// `admin.<change>`: a control-plane change; holds the whole kind
    /// (`admin.price.added`), lower-case letters, digits, `_` and `.`.
    Admin(Cow<'static, str>),
}

impl EventKind {
    /// An `admin.*` kind from a constant of [`crate::admin`].
    pub const fn admin(kind: &'static str) -> Self {
        EventKind::Admin(Cow::Borrowed(kind))
    }

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::CallCompleted => KIND_CALL_COMPLETED,
            EventKind::CallFailed => KIND_CALL_FAILED,
            EventKind::CallBlocked => KIND_CALL_BLOCKED,
            EventKind::CallStarted => KIND_CALL_STARTED,
            EventKind::CallFirstToken => KIND_CALL_FIRST_TOKEN,
            EventKind::Admin(kind) => kind,
        }
    }

    /// Whether events of this kind carry a `call` object.
    pub fn is_call(&self) -> bool {
        !self.is_admin()
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, EventKind::Admin(_))
    }

    /// Whether an event of this kind is billed (and so priced): terminal
    /// calls only; blocked calls never reached a provider, lifecycle events
    /// would count a call twice. The processors' cost fold and the proxy's
    /// budget charges both go by it.
    pub fn is_billable(&self) -> bool {
        matches!(self, EventKind::CallCompleted | EventKind::CallFailed)
    }

    /// Whether a call ended with this event (completed, failed or blocked).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::CallCompleted | EventKind::CallFailed | EventKind::CallBlocked
        )
    }
}

/// Whether a stored kind (a `calls.kind` value) is billed; see
/// [`EventKind::is_billable`].
pub fn is_billable(kind: &str) -> bool {
    kind.parse::<EventKind>()
        .is_ok_and(|kind| kind.is_billable())
}

/// Why a text is not a kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {kind:?}; expected one of {} or admin.<change>", CALL_KINDS.join(", "))]
pub struct UnknownKind {
    pub kind: String,
}

impl FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            KIND_CALL_COMPLETED => EventKind::CallCompleted,
            KIND_CALL_FAILED => EventKind::CallFailed,
            KIND_CALL_BLOCKED => EventKind::CallBlocked,
            KIND_CALL_STARTED => EventKind::CallStarted,
            KIND_CALL_FIRST_TOKEN => EventKind::CallFirstToken,
            _ => {
                let change = text.strip_prefix(KIND_ADMIN_PREFIX).unwrap_or_default();
                let valid = !change.is_empty()
                    && text.len() <= MAX_KIND_LEN
                    && change.starts_with(|c: char| c.is_ascii_lowercase())
                    && change.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
                    });
                if !valid {
                    return Err(UnknownKind { kind: text.into() });
                }
                EventKind::Admin(Cow::Owned(text.to_string()))
            }
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for EventKind {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "EventKind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`ai.call.completed`, `ai.call.failed`, `ai.call.blocked`, `ai.call.started`, `ai.call.first_token`, or `admin.<change>`.",
            "pattern": r"^(ai\.call\.(completed|failed|blocked|started|first_token)|admin\.[a-z][a-z0-9_.]{0,57})$"
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_call_kind_round_trips_and_is_a_call() {
        for text in CALL_KINDS {
            let kind: EventKind = text.parse().unwrap();
            assert_eq!(kind.as_str(), text);
            assert!(kind.is_call());
            assert_eq!(
                serde_json::to_value(&kind).unwrap(),
                serde_json::json!(text)
            );
        }
        assert!(EventKind::CallCompleted.is_billable());
        assert!(EventKind::CallFailed.is_billable());
        assert!(!EventKind::CallBlocked.is_billable());
        assert!(!EventKind::CallStarted.is_billable());
    }

    #[test]
    fn admin_kinds_are_checked() {
        let kind: EventKind = "admin.price.added".parse().unwrap();
        assert_eq!(kind, EventKind::admin("admin.price.added"));
        assert!(kind.is_admin() && !kind.is_call() && !kind.is_billable());
        for bad in [
            "admin.",
            "admin.Price",
            "admin.1x",
            "ai.call.done",
            "",
            "admin.a-b",
        ] {
            let err = bad.parse::<EventKind>().unwrap_err();
            assert!(err.to_string().contains("unknown kind"), "{bad}: {err}");
        }
        let long = format!("admin.{}", "a".repeat(MAX_KIND_LEN));
        assert!(long.parse::<EventKind>().is_err());
        let longest = format!(
            "admin.{}",
            "a".repeat(MAX_KIND_LEN - KIND_ADMIN_PREFIX.len())
        );
        assert!(longest.parse::<EventKind>().is_ok());
    }
}
