//! A silence: label matchers (as Alertmanager's: `=`, `!=`, `=~`, `!~`,
//! regexes anchored at both ends) over a time range. While it is active,
//! alerts whose labels match every matcher are not sent to the direct
//! receivers. See `docs/alerting.md`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::{check_label_name, check_prose, check_text, MAX_LABEL_VALUE_CHARS};
use crate::validate::Rejection;

/// Most matchers of one silence.
pub const MAX_MATCHERS: usize = 16;
/// Longest silence (90 days): a longer one is a disabled rule in disguise.
pub const MAX_SILENCE_DAYS: i64 = 90;
/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 1024;
/// Compiled size limit of one matcher's regex, in bytes. Rust's regex
/// engine runs in time linear in the input, so no pattern can backtrack
/// catastrophically; this bound keeps a hostile pattern (`(a{1000}){1000}`)
/// from taking memory and time to compile.
pub const MAX_REGEX_BYTES: usize = 64 * 1024;
/// Deepest nesting of groups and repetitions in one regex.
pub const MAX_REGEX_NEST: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchOp {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "=~")]
    Regex,
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

/// One label matcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    /// A matcher written as text, as the CLI's `--matcher` and the silence
    /// form take it (`team=search`, `team!=a`, `sev=~warn.*`, `sev!~x`):
    /// split at the first operator, the longest one at that place winning.
    /// `None` when there is no operator. Validation is the silence's.
    pub fn parse(text: &str) -> Option<Matcher> {
        for (symbol, op) in [
            ("!~", MatchOp::NotRegex),
            ("=~", MatchOp::Regex),
            ("!=", MatchOp::NotEqual),
            ("=", MatchOp::Equal),
        ] {
            if let Some((name, value)) = text.split_once(symbol) {
                return Some(Matcher {
                    name: name.to_string(),
                    op,
                    value: value.to_string(),
                });
            }
        }
        None
    }
}

impl Matcher {
    /// The anchored regex of a `=~` / `!~` matcher, within the bounds.
    pub fn regex(&self) -> Result<Option<Regex>, regex::Error> {
        match self.op {
            MatchOp::Regex | MatchOp::NotRegex => {
                RegexBuilder::new(&format!("^(?:{})$", self.value))
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_BYTES)
                    .nest_limit(MAX_REGEX_NEST)
                    .build()
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Whether `labels` satisfy this matcher; an absent label is the empty
    /// string, as in Alertmanager. `regex` is [`Matcher::regex`]'s.
    pub fn matches(&self, labels: &BTreeMap<String, String>, regex: Option<&Regex>) -> bool {
        let value = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // A regex matcher without its regex matches nothing (never silence by mistake).
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

/// A silence as an SRE states it (`POST /api/v1/alerts/silences`).
/// `created_by` is not part of it: the server records the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceSpec {
    pub org_id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
}

impl SilenceSpec {
    /// Every bound, at `now` (a silence must end in the future).
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), Rejection> {
        check_text("org_id", &self.org_id, 1, super::MAX_ORG_CHARS)?;
        if self.matchers.is_empty() {
            return Err(Rejection::new(
                "matchers",
                "at least one matcher is needed (a silence of everything is not allowed)",
            ));
        }
        if self.matchers.len() > MAX_MATCHERS {
            return Err(Rejection::new(
                "matchers",
                format!(
                    "{} matchers, at most {MAX_MATCHERS} allowed",
                    self.matchers.len()
                ),
            ));
        }
        for (i, m) in self.matchers.iter().enumerate() {
            check_label_name(&format!("matchers[{i}].name"), &m.name)?;
            check_text(
                &format!("matchers[{i}].value"),
                &m.value,
                0,
                MAX_LABEL_VALUE_CHARS,
            )?;
            m.regex().map_err(|e| {
                let reason = match e {
                    regex::Error::CompiledTooBig(_) => format!(
                        "the regex compiles to more than {MAX_REGEX_BYTES} bytes; simplify it"
                    ),
                    other => format!("not a valid regex: {}", first_line(&other.to_string())),
                };
                Rejection::new(format!("matchers[{i}].value"), reason)
            })?;
        }
        // An absent label is the empty string: matchers that all hold for
        // it (`a=~.*`, `a!=x`) hold for every alert, a silence of
        // everything (Alertmanager refuses these too).
        let nothing = BTreeMap::new();
        if self.matchers.iter().all(|m| {
            m.regex()
                .is_ok_and(|regex| m.matches(&nothing, regex.as_ref()))
        }) {
            return Err(Rejection::new(
                "matchers",
                "every matcher matches an alert without the label (the empty string), so the \
                 silence would mute every alert: at least one matcher must need a value",
            ));
        }
        if self.ends_at <= self.starts_at {
            return Err(Rejection::new("ends_at", "must be after starts_at"));
        }
        if self.ends_at - self.starts_at > Duration::days(MAX_SILENCE_DAYS) {
            return Err(Rejection::new(
                "ends_at",
                format!("a silence lasts at most {MAX_SILENCE_DAYS} days"),
            ));
        }
        if self.ends_at <= now {
            return Err(Rejection::new("ends_at", "is in the past"));
        }
        if self.starts_at > now + Duration::days(MAX_SILENCE_DAYS) {
            return Err(Rejection::new(
                "starts_at",
                format!("at most {MAX_SILENCE_DAYS} days ahead"),
            ));
        }
        check_prose("comment", &self.comment, MAX_COMMENT_CHARS)?;
        if self.comment.trim().is_empty() {
            return Err(Rejection::new("comment", "must say why (not empty)"));
        }
        Ok(())
    }

    /// Parse and validate a JSON body at `now`.
    pub fn from_json(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
        let spec: Self = super::parse_json(bytes)?;
        spec.validate(now)?;
        Ok(spec)
    }

    /// Whether the silence covers `labels` (every matcher holds).
    /// Whether this silence mutes an alert of `org_id` with `labels` at
    /// `now`: same org, in force (`starts_at <= now < ends_at`) and every
    /// matcher matches.
    pub fn mutes(
        &self,
        org_id: &str,
        labels: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> bool {
        self.org_id == org_id
            && self.starts_at <= now
            && now < self.ends_at
            && self.silences(labels)
    }

    pub fn silences(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|m| {
            let re = m.regex().ok().flatten();
            m.matches(labels, re.as_ref())
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn a_silence_whose_matchers_all_hold_for_nothing_is_refused() {
        let now = Utc::now();
        let spec = |matchers: serde_json::Value| {
            serde_json::from_value::<SilenceSpec>(json!({
                "org_id": "a", "matchers": matchers,
                "starts_at": now.to_rfc3339(), "ends_at": (now + Duration::hours(1)).to_rfc3339(),
                "comment": "maintenance"
            }))
            .unwrap()
        };
        for everything in [
            json!([{"name": "a", "op": "=~", "value": ".*"}]),
            json!([{"name": "a", "op": "!=", "value": "x"}]),
            json!([{"name": "a", "op": "=", "value": ""}, {"name": "b", "op": "!~", "value": "x+"}]),
        ] {
            let refused = spec(everything.clone()).validate(now).unwrap_err();
            assert_eq!(refused.field, "matchers", "{everything}");
        }
        for some in [
            json!([{"name": "a", "op": "=~", "value": ".+"}]),
            json!([{"name": "a", "op": "=~", "value": ".*"}, {"name": "b", "op": "=", "value": "x"}]),
        ] {
            spec(some.clone())
                .validate(now)
                .unwrap_or_else(|e| panic!("{some}: {e}"));
        }
    }

    use serde_json::{json, Value};

    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-02T00:00:00Z".parse().unwrap()
    }

    fn base() -> Value {
        json!({
            "org_id": "acme",
            "matchers": [{"name": "team", "op": "=", "value": "search"}, {"name": "severity", "op": "=~", "value": "warning|critical"}],
            "starts_at": "2026-12-02T00:00:00Z",
            "ends_at": "2026-12-02T02:00:00Z",
            "comment": "maintenance"
        })
    }

    fn field(v: &Value) -> String {
        SilenceSpec::from_json(v.to_string().as_bytes(), now())
            .map(|_| String::new())
            .unwrap_or_else(|r| r.field)
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = base();
        v[key] = value;
        v
    }

    fn matcher(name: &str, op: &str, value: &str) -> Value {
        with(
            "matchers",
            json!([{"name": name, "op": op, "value": value}]),
        )
    }

    #[test]
    fn matchers_behave_like_alertmanager() {
        let s = SilenceSpec::from_json(base().to_string().as_bytes(), now()).unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(s.silences(&labels(&[("team", "search"), ("severity", "critical")])));
        assert!(!s.silences(&labels(&[("team", "search"), ("severity", "info")])));
        // Anchored: "critical2" does not match `warning|critical`.
        assert!(!s.silences(&labels(&[("team", "search"), ("severity", "critical2")])));
        assert!(
            !s.silences(&labels(&[("severity", "critical")])),
            "absent label is empty"
        );
        let not: SilenceSpec = serde_json::from_value(matcher("team", "!~", "a.*")).unwrap();
        assert!(not.silences(&labels(&[("team", "b")])));
        assert!(!not.silences(&labels(&[("team", "abc")])));
    }

    #[test]
    fn bad_silences_name_the_field() {
        let t = |s: &str| json!(s);
        for (v, want) in [
            (with("org_id", t("")), "org_id"),
            (with("matchers", json!([])), "matchers"),
            (
                with(
                    "matchers",
                    Value::Array(vec![json!({"name": "a", "op": "=", "value": "x"}); 17]),
                ),
                "matchers",
            ),
            (matcher("a-b", "=", "x"), "matchers[0].name"),
            (matcher("__name__", "=", "x"), "matchers[0].name"),
            (matcher("a", "==", "x"), "matchers[0].op"),
            (matcher("a", "=~", "("), "matchers[0].value"),
            (matcher("a", "!~", "[z-a]"), "matchers[0].value"),
            (matcher("a", "=", &"v".repeat(1025)), "matchers[0].value"),
            (with("ends_at", t("2026-12-01T23:00:00Z")), "ends_at"),
            (with("ends_at", t("2026-12-02T00:00:00Z")), "ends_at"),
            (with("ends_at", t("2027-03-03T00:00:00Z")), "ends_at"),
            (with("ends_at", t("tomorrow")), "ends_at"),
            (
                json!({"org_id": "a", "matchers": [{"name": "a", "op": "=", "value": "x"}], "starts_at": "2026-11-01T00:00:00Z", "ends_at": "2026-11-02T00:00:00Z", "comment": "old"}),
                "ends_at",
            ),
            (with("starts_at", t("2027-06-01T00:00:00Z")), "ends_at"),
            (with("comment", t("")), "comment"),
            (with("comment", t("   ")), "comment"),
            (with("comment", t(&"c".repeat(1025))), "comment"),
            (with("created_by", t("mallory")), "created_by"),
        ] {
            assert_eq!(field(&v), want, "{v}");
        }
        assert_eq!(field(&base()), "");
        assert_eq!(field(&with("comment", t("line one\nline two"))), "");
    }

    #[test]
    fn regex_bombs_are_refused_or_bounded() {
        // Too big to compile within the limit: refused, quickly.
        let started = std::time::Instant::now();
        let v = matcher("a", "=~", "((a{100}){100}){100}");
        assert_eq!(field(&v), "matchers[0].value");
        let v = matcher("a", "=~", &format!("{}a{}", "(".repeat(40), ")".repeat(40)));
        assert_eq!(field(&v), "matchers[0].value", "nesting is bounded");
        // The classic backtracking bomb compiles, and matching stays linear.
        let s: SilenceSpec = serde_json::from_value(matcher("a", "=~", "(a+)+$")).unwrap();
        s.validate(now()).unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), format!("{}!", "a".repeat(1024)));
        assert!(!s.silences(&labels));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
