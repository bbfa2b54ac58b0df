//! Silence matching for the direct channels (webhook, Slack), with
//! Alertmanager's semantics so a rule behaves the same whichever way it is
//! delivered: a silence is active from `starts_at` (inclusive) to `ends_at`
//! (exclusive) and mutes an alert when every matcher matches its labels; a
//! missing label matches as the empty string; regex matchers are anchored
//! at both ends (`=~ "db"` does not match `db-2`).
//!
//! Patterns come from users, so they are compiled with the `regex` crate's
//! size limits: it runs in linear time (no catastrophic backtracking), and a
//! pattern that would compile to a huge program is refused with an error
//! that names the matcher instead of eating the evaluator's memory.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use regex::{Regex, RegexBuilder};
use uuid::Uuid;

/// Compiled program limit for one matcher's regex (the crate's default is
/// 10 MiB; a silence needs far less, and hundreds may be active).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Longest pattern or value accepted.
pub const MAX_MATCHER_VALUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`, anchored
    Regex,
    /// `!~`, anchored
    NotRegex,
}

impl MatchOp {
    pub fn parse(op: &str) -> Option<Self> {
        match op {
            "=" => Some(Self::Equal),
            "!=" => Some(Self::NotEqual),
            "=~" => Some(Self::Regex),
            "!~" => Some(Self::NotRegex),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("matchers[{index}].name: must not be empty")]
    EmptyName { index: usize },
    #[error("matchers[{index}].value: longer than {MAX_MATCHER_VALUE} bytes")]
    ValueTooLong { index: usize },
    #[error("matchers[{index}].value: not a usable regex: {reason}")]
    BadRegex { index: usize, reason: String },
    #[error("matchers: a silence needs at least one matcher")]
    NoMatchers,
    #[error("matchers: at least one matcher must not match the empty string, or the silence would mute every alert")]
    MatchesEverything,
    #[error("ends_at: must be after starts_at")]
    EndsBeforeStart,
}

/// One label matcher, its regex compiled once.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// `index` is the matcher's position in its silence, for the error.
    pub fn new(
        index: usize,
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, SilenceError> {
        let (name, value) = (name.into(), value.into());
        if name.is_empty() {
            return Err(SilenceError::EmptyName { index });
        }
        if value.len() > MAX_MATCHER_VALUE {
            return Err(SilenceError::ValueTooLong { index });
        }
        let regex = match op {
            MatchOp::Equal | MatchOp::NotEqual => None,
            MatchOp::Regex | MatchOp::NotRegex => Some(
                RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|err| SilenceError::BadRegex {
                        index,
                        reason: err.to_string(),
                    })?,
            ),
        };
        Ok(Self {
            name,
            op,
            value,
            regex,
        })
    }

    fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // Unreachable: `new` compiles a regex for both regex ops.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether the labels satisfy this matcher (a missing label is "").
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

/// A silence as delivery needs it; the stored silence (with its author and
/// comment) is mapped to this by the evaluator.
#[derive(Debug, Clone)]
pub struct Silence {
    pub id: Uuid,
    pub matchers: Vec<Matcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Silence {
    pub fn new(
        id: Uuid,
        matchers: Vec<Matcher>,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Result<Self, SilenceError> {
        if matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        if matchers.iter().all(|m| m.matches_value("")) {
            return Err(SilenceError::MatchesEverything);
        }
        if ends_at <= starts_at {
            return Err(SilenceError::EndsBeforeStart);
        }
        Ok(Self {
            id,
            matchers,
            starts_at,
            ends_at,
        })
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Active at `now` and every matcher matches.
    pub fn mutes(&self, labels: &BTreeMap<String, String>, now: DateTime<Utc>) -> bool {
        self.is_active(now) && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// The first silence that mutes these labels at `now`, if any.
pub fn muted_by<'a>(
    silences: &'a [Silence],
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Option<&'a Silence> {
    silences.iter().find(|s| s.mutes(labels, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn m(name: &str, op: &str, value: &str) -> Matcher {
        let op = MatchOp::parse(op).unwrap_or(MatchOp::Equal);
        match Matcher::new(0, name, op, value) {
            Ok(m) => m,
            Err(err) => unreachable_matcher(err),
        }
    }

    #[allow(clippy::panic)]
    fn unreachable_matcher(err: SilenceError) -> Matcher {
        panic!("matcher should compile: {err}")
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
    }

    #[test]
    fn the_four_operators() {
        let l = labels(&[("provider", "openai"), ("model", "gpt-4o")]);
        assert!(m("provider", "=", "openai").matches(&l));
        assert!(!m("provider", "=", "open").matches(&l));
        assert!(m("provider", "!=", "anthropic").matches(&l));
        assert!(!m("provider", "!=", "openai").matches(&l));
        assert!(m("model", "=~", "gpt-.*").matches(&l));
        assert!(!m("model", "!~", "gpt-.*").matches(&l));
        assert!(m("model", "!~", "claude.*").matches(&l));
    }

    #[test]
    fn regexes_are_anchored_at_both_ends() {
        let l = labels(&[("host", "db-2")]);
        assert!(!m("host", "=~", "db").matches(&l));
        assert!(!m("host", "=~", "b-2").matches(&l));
        assert!(m("host", "=~", "db.*").matches(&l));
        // An alternation cannot escape the anchors: `^(?:a|db)$`.
        assert!(!m("host", "=~", "x|db").matches(&l));
        assert!(m("host", "=~", "x|db-2").matches(&l));
        assert!(m("host", "!~", "db").matches(&l));
    }

    #[test]
    fn a_missing_label_is_the_empty_string() {
        let l = labels(&[("a", "1")]);
        assert!(m("team", "=", "").matches(&l));
        assert!(!m("team", "=", "x").matches(&l));
        assert!(m("team", "!=", "x").matches(&l));
        assert!(m("team", "=~", ".*").matches(&l));
    }

    #[test]
    fn hostile_patterns_are_refused_or_fast() {
        // Would compile to a program far over the size limit.
        let err = Matcher::new(3, "a", MatchOp::Regex, "(((a{100}){100}){100})").err();
        assert!(
            matches!(err, Some(SilenceError::BadRegex { index: 3, .. })),
            "{err:?}"
        );
        assert!(err
            .map(|e| e.to_string())
            .unwrap_or_default()
            .starts_with("matchers[3].value"));
        // Backtracking bombs elsewhere are linear here.
        let bomb = m("a", "=~", "(a+)+b");
        let long = "a".repeat(100_000);
        let started = std::time::Instant::now();
        assert!(!bomb.matches(&labels(&[("a", &long)])));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(matches!(
            Matcher::new(0, "a", MatchOp::Regex, "("),
            Err(SilenceError::BadRegex { .. })
        ));
        assert_eq!(
            Matcher::new(1, "a", MatchOp::Equal, "x".repeat(MAX_MATCHER_VALUE + 1)).err(),
            Some(SilenceError::ValueTooLong { index: 1 })
        );
        assert_eq!(
            Matcher::new(2, "", MatchOp::Equal, "x").err(),
            Some(SilenceError::EmptyName { index: 2 })
        );
    }

    #[test]
    fn time_range_is_start_inclusive_end_exclusive() {
        let s = Silence::new(Uuid::nil(), vec![m("a", "=", "1")], at(100), at(200));
        let Ok(s) = s else {
            return assert!(s.is_ok());
        };
        let l = labels(&[("a", "1")]);
        assert!(!s.mutes(&l, at(99)));
        assert!(s.mutes(&l, at(100)));
        assert!(s.mutes(&l, at(199)));
        assert!(!s.mutes(&l, at(200)));
        assert!(!s.mutes(&labels(&[("a", "2")]), at(150)));
        let list = [s];
        assert!(muted_by(&list, &l, at(150)).is_some());
        assert!(muted_by(&list, &l, at(250)).is_none());
    }

    #[test]
    fn silences_that_would_mute_everything_are_refused() {
        assert_eq!(
            Silence::new(Uuid::nil(), vec![], at(0), at(1))
                .err()
                .map(|e| e.to_string()),
            Some("matchers: a silence needs at least one matcher".into())
        );
        assert!(matches!(
            Silence::new(
                Uuid::nil(),
                vec![m("a", "=~", ".*"), m("b", "!=", "x")],
                at(0),
                at(1)
            ),
            Err(SilenceError::MatchesEverything)
        ));
        assert!(matches!(
            Silence::new(Uuid::nil(), vec![m("a", "=", "1")], at(1), at(1)),
            Err(SilenceError::EndsBeforeStart)
        ));
    }
}
