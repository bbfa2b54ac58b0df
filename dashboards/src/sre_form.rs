//! What the SRE pages share: the time-range presets and the custom
//! window of their filter forms (UTC `datetime-local` inputs), menu
//! choices and number formatting. Their sub-navigation is
//! [`crate::nav`]'s.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use tollgate_queries::InvalidParameter;

/// The window of a form's `range` preset, or of its custom `from` / `to`
/// (`to` empty: now).
pub fn window(
    range: &str,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), InvalidParameter> {
    match RANGES.iter().find(|(value, _, _)| *value == range) {
        Some((_, _, 0)) => {
            let from = parse_form_time("from", from)?;
            let to = if to.is_empty() {
                now
            } else {
                parse_form_time("to", to)?
            };
            Ok((from, to))
        }
        Some((_, _, secs)) => Ok((now - Duration::seconds(*secs), now)),
        None => Err(InvalidParameter::new(
            "range",
            format!("unknown range `{range}`"),
        )),
    }
}

/// `(value, label, seconds)`; seconds 0 marks the custom window.
pub const RANGES: [(&str, &str, i64); 6] = [
    ("15m", "Last 15 minutes", 900),
    ("1h", "Last hour", 3_600),
    ("6h", "Last 6 hours", 21_600),
    ("24h", "Last 24 hours", 86_400),
    ("7d", "Last 7 days", 604_800),
    ("custom", "Custom", 0),
];

#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub fn choices<'a>(
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
    current: &str,
) -> Vec<Choice> {
    options
        .into_iter()
        .map(|(value, label)| Choice {
            value: value.to_string(),
            label: label.to_string(),
            selected: value == current,
        })
        .collect()
}

/// The form's `datetime-local` inputs send `2026-01-01T10:00` (taken as UTC);
/// RFC 3339 is accepted too, for hand-written URLs.
pub fn parse_form_time(
    parameter: &'static str,
    text: &str,
) -> Result<DateTime<Utc>, InvalidParameter> {
    if text.is_empty() {
        return Err(InvalidParameter::new(
            parameter,
            "required for a custom range",
        ));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .ok_or_else(|| {
            InvalidParameter::new(
                parameter,
                format!("`{text}` is not a time like 2026-01-01T10:00 (UTC)"),
            )
        })
}

pub fn form_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The report API's parameters for a form's window and filters: `from` and
/// `to` (RFC 3339) of its preset or custom window, then each filter given
/// (empty values left out). The pages hand these to the API's own parser,
/// so a page and the API accept the same requests.
pub fn api_pairs(
    range: &str,
    from: &str,
    to: &str,
    filters: &[(&str, &str)],
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, InvalidParameter> {
    let (from, to) = window(range, from, to, now)?;
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut pairs = vec![
        ("from".to_string(), stamp(from)),
        ("to".to_string(), stamp(to)),
    ];
    pairs.extend(
        filters
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.to_string(), v.to_string())),
    );
    Ok(pairs)
}
