//! A receiver: where an org's notifications go (a generic webhook signed
//! with HMAC-SHA256, a Slack-compatible incoming webhook, or a Prometheus
//! Alertmanager) and how the direct channels group them (`group_by`,
//! `group_wait_secs`, `group_interval_secs`, `repeat_interval_secs`, as in
//! Alertmanager's route). The signing secret is write-only: it is accepted
//! here and never serialized back. See `docs/alerting.md`.

use serde::{Deserialize, Serialize};

use super::{check_label_name, check_text, MAX_NAME_CHARS};
use crate::validate::Rejection;

/// Longest receiver URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// Shortest and longest webhook signing secret, in characters: 32 characters
/// of a random alphabet carry enough entropy for HMAC-SHA256.
pub const MIN_SECRET_CHARS: usize = 32;
pub const MAX_SECRET_CHARS: usize = 256;
/// Most `group_by` labels.
pub const MAX_GROUP_BY: usize = 16;
/// Bounds of `group_wait_secs` (default 30, as Alertmanager).
pub const MAX_GROUP_WAIT_SECS: u32 = 3_600;
pub const DEFAULT_GROUP_WAIT_SECS: u32 = 30;
/// Bounds of `group_interval_secs` (default 300).
pub const MIN_GROUP_INTERVAL_SECS: u32 = 1;
pub const MAX_GROUP_INTERVAL_SECS: u32 = 86_400;
pub const DEFAULT_GROUP_INTERVAL_SECS: u32 = 300;
/// Bounds of `repeat_interval_secs` (default 4 h); at least the group interval.
pub const MIN_REPEAT_INTERVAL_SECS: u32 = 60;
pub const MAX_REPEAT_INTERVAL_SECS: u32 = 7 * 86_400;
pub const DEFAULT_REPEAT_INTERVAL_SECS: u32 = 14_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// JSON POST with an `X-Tollgate-Signature` HMAC-SHA256 header.
    Webhook,
    /// A Slack-compatible incoming webhook.
    Slack,
    /// A Prometheus Alertmanager (`url` is its base; the v2 API is used).
    Alertmanager,
}

impl ReceiverKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Alertmanager => "alertmanager",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Webhook, Self::Slack, Self::Alertmanager]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// A receiver as an administrator states it (`POST /api/v1/alerts/receivers`).
/// `Debug` hides the secret, so a logged spec never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSpec {
    pub org_id: String,
    pub name: String,
    pub kind: ReceiverKind,
    pub url: String,
    /// Webhooks only, and required for them.
    #[serde(default)]
    pub signing_secret: Option<String>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default = "group_wait")]
    pub group_wait_secs: u32,
    #[serde(default = "group_interval")]
    pub group_interval_secs: u32,
    #[serde(default = "repeat_interval")]
    pub repeat_interval_secs: u32,
}

fn group_wait() -> u32 {
    DEFAULT_GROUP_WAIT_SECS
}
fn group_interval() -> u32 {
    DEFAULT_GROUP_INTERVAL_SECS
}
fn repeat_interval() -> u32 {
    DEFAULT_REPEAT_INTERVAL_SECS
}

impl std::fmt::Debug for ReceiverSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverSpec")
            .field("org_id", &self.org_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url_host", &url_host(&self.url))
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("group_by", &self.group_by)
            .finish_non_exhaustive()
    }
}

impl ReceiverSpec {
    pub fn validate(&self) -> Result<(), Rejection> {
        check_text("org_id", &self.org_id, 1, super::MAX_ORG_CHARS)?;
        check_text("name", &self.name, 1, MAX_NAME_CHARS)?;
        check_url(&self.url)?;
        match (self.kind, &self.signing_secret) {
            (ReceiverKind::Webhook, None) => {
                return Err(Rejection::new(
                    "signing_secret",
                    format!("a webhook needs a signing secret of {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"),
                ))
            }
            (ReceiverKind::Webhook, Some(secret)) => {
                let n = secret.chars().count();
                if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&n)
                    || !secret.chars().all(|c| c.is_ascii_graphic())
                {
                    // Never echo the secret back.
                    return Err(Rejection::new(
                        "signing_secret",
                        format!("must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} printable ASCII characters without spaces"),
                    ));
                }
            }
            (kind, Some(_)) => {
                return Err(Rejection::new(
                    "signing_secret",
                    format!("only webhook receivers are signed, not {}", kind.name()),
                ))
            }
            (_, None) => {}
        }
        if self.group_by.len() > MAX_GROUP_BY {
            return Err(Rejection::new(
                "group_by",
                format!(
                    "{} labels, at most {MAX_GROUP_BY} allowed",
                    self.group_by.len()
                ),
            ));
        }
        for (i, name) in self.group_by.iter().enumerate() {
            let field = format!("group_by[{i}]");
            check_label_name(&field, name)?;
            if self.group_by[..i].contains(name) {
                return Err(Rejection::new(field, format!("{name:?} is given twice")));
            }
        }
        if self.group_wait_secs > MAX_GROUP_WAIT_SECS {
            return Err(Rejection::new(
                "group_wait_secs",
                format!(
                    "{} is outside 0..={MAX_GROUP_WAIT_SECS}",
                    self.group_wait_secs
                ),
            ));
        }
        if !(MIN_GROUP_INTERVAL_SECS..=MAX_GROUP_INTERVAL_SECS).contains(&self.group_interval_secs)
        {
            return Err(Rejection::new(
                "group_interval_secs",
                format!(
                    "{} is outside {MIN_GROUP_INTERVAL_SECS}..={MAX_GROUP_INTERVAL_SECS}",
                    self.group_interval_secs
                ),
            ));
        }
        if !(MIN_REPEAT_INTERVAL_SECS..=MAX_REPEAT_INTERVAL_SECS)
            .contains(&self.repeat_interval_secs)
        {
            return Err(Rejection::new(
                "repeat_interval_secs",
                format!(
                    "{} is outside {MIN_REPEAT_INTERVAL_SECS}..={MAX_REPEAT_INTERVAL_SECS}",
                    self.repeat_interval_secs
                ),
            ));
        }
        if self.repeat_interval_secs < self.group_interval_secs {
            return Err(Rejection::new(
                "repeat_interval_secs",
                "must be at least group_interval_secs",
            ));
        }
        Ok(())
    }

    /// Parse and validate a JSON body.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Rejection> {
        let spec: Self = super::parse_json(bytes)?;
        spec.validate()?;
        Ok(spec)
    }
}

/// An `http` or `https` URL with a host, no credentials and no whitespace or
/// control characters: anything else (`file:`, `javascript:`, `gopher:`)
/// is refused, since the evaluator will POST to it.
pub fn check_url(url: &str) -> Result<(), Rejection> {
    let n = url.chars().count();
    if n == 0 {
        return Err(Rejection::new("url", "must not be empty"));
    }
    if n > MAX_URL_CHARS {
        return Err(Rejection::new(
            "url",
            format!("{n} characters, at most {MAX_URL_CHARS} allowed"),
        ));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Rejection::new(
            "url",
            "must not contain spaces or control characters",
        ));
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        let scheme: String = url
            .split(':')
            .next()
            .unwrap_or("")
            .chars()
            .take(32)
            .collect();
        return Err(Rejection::new(
            "url",
            format!("scheme {scheme:?} is not allowed; use http:// or https://"),
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(Rejection::new(
            "url",
            "must not carry credentials (user@host); use the signing secret",
        ));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
    {
        return Err(Rejection::new("url", "has no valid host"));
    }
    if let Some(port) = authority
        .strip_prefix('[')
        .map_or(authority.split_once(':').map(|(_, p)| p), |v6| {
            v6.split_once("]:").map(|(_, p)| p)
        })
    {
        if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
            return Err(Rejection::new("url", format!("port {port:?} is not valid")));
        }
    }
    Ok(())
}

/// The host (and port) of `url`: what events and logs show of a receiver's
/// address, since a Slack webhook URL is itself a credential.
pub fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn base() -> Value {
        json!({
            "org_id": "acme",
            "name": "oncall",
            "kind": "webhook",
            "url": "https://hooks.example.com/tollgate",
            "signing_secret": SECRET,
            "group_by": ["alertname", "team"]
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = base();
        v[key] = value;
        v
    }

    fn field(v: &Value) -> String {
        ReceiverSpec::from_json(v.to_string().as_bytes())
            .map(|_| String::new())
            .unwrap_or_else(|r| r.field)
    }

    #[test]
    fn defaults_and_kinds() {
        let r = ReceiverSpec::from_json(base().to_string().as_bytes()).unwrap();
        assert_eq!(
            (
                r.group_wait_secs,
                r.group_interval_secs,
                r.repeat_interval_secs
            ),
            (30, 300, 14_400)
        );
        let slack = json!({"org_id": "a", "name": "s", "kind": "slack", "url": "https://hooks.slack.com/services/T/B/X"});
        assert_eq!(field(&slack), "");
        let am = json!({"org_id": "a", "name": "am", "kind": "alertmanager", "url": "http://127.0.0.1:9093"});
        assert_eq!(field(&am), "");
        let debug = format!("{r:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("/tollgate"), "{debug}");
    }

    #[test]
    fn hostile_urls_are_refused() {
        for url in [
            "",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "JAVASCRIPT:alert(1)",
            "gopher://x",
            "ftp://example.com",
            "//example.com",
            "http://",
            "http:///path",
            "http://user:pw@example.com/",
            "http://exa mple.com",
            "http://example.com/\n",
            "http://example.com:99999/",
            "http://example.com:0/",
            "http://example.com:x/",
            "http://<script>/",
            &format!("https://example.com/{}", "a".repeat(2048)),
        ] {
            assert_eq!(field(&with("url", json!(url))), "url", "{url:?}");
        }
        for url in [
            "http://localhost:8080/hook",
            "HTTPS://Example.com",
            "http://[::1]:9093",
            "https://a.b/c?d=e#f",
        ] {
            assert_eq!(field(&with("url", json!(url))), "", "{url:?}");
        }
    }

    #[test]
    fn secrets_and_grouping_bounds() {
        for (v, want) in [
            (with("signing_secret", Value::Null), "signing_secret"),
            (with("signing_secret", json!("short")), "signing_secret"),
            (
                with("signing_secret", json!(format!("{SECRET} x"))),
                "signing_secret",
            ),
            (
                with("signing_secret", json!("s".repeat(257))),
                "signing_secret",
            ),
            (
                json!({"org_id": "a", "name": "s", "kind": "slack", "url": "https://x.y", "signing_secret": SECRET}),
                "signing_secret",
            ),
            (with("kind", json!("email")), "kind"),
            (with("name", json!("")), "name"),
            (with("org_id", json!("x".repeat(129))), "org_id"),
            (with("group_by", json!(["a-b"])), "group_by[0]"),
            (with("group_by", json!(["a", "a"])), "group_by[1]"),
            (
                with(
                    "group_by",
                    json!((0..17).map(|i| format!("l{i}")).collect::<Vec<_>>()),
                ),
                "group_by",
            ),
            (with("group_wait_secs", json!(3601)), "group_wait_secs"),
            (with("group_interval_secs", json!(0)), "group_interval_secs"),
            (
                with("group_interval_secs", json!(86_401)),
                "group_interval_secs",
            ),
            (
                with("repeat_interval_secs", json!(59)),
                "repeat_interval_secs",
            ),
            (
                with("repeat_interval_secs", json!(604_801)),
                "repeat_interval_secs",
            ),
            (
                with("repeat_interval_secs", json!(120)),
                "repeat_interval_secs",
            ),
            (
                with("has_signing_secret", json!(true)),
                "has_signing_secret",
            ),
        ] {
            assert_eq!(field(&v), want, "{v}");
        }
        let err = ReceiverSpec::from_json(
            with("signing_secret", json!(format!("{SECRET} x")))
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert!(!err.reason.contains(SECRET), "{err}");
    }
}
