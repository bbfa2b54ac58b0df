//! What the SRE pages share: the time-range presets and the custom
//! window of their filter forms (UTC `datetime-local` inputs), menu
//! choices and number formatting. Their sub-navigation is
//! [`crate::nav`]'s.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use tollgate_queries::InvalidParameter;

/// The `range` a request asks for: as given; `custom` when it gives none
/// but `from` or `to` (a hand-written link's window, which a preset would
/// silently replace); else the page's `default`.
pub fn range_asked(range: Option<&str>, from: &str, to: &str, default: &str) -> String {
    match range.map(str::trim).filter(|r| !r.is_empty()) {
        Some(range) => range.to_string(),
        None if !from.trim().is_empty() || !to.trim().is_empty() => "custom".to_string(),
        None => default.to_string(),
    }
}

/// The window of a form's `range` preset, or of its custom `from` / `to`
/// (`to` empty: now). With a preset, `from` and `to` (which the form sends
/// beside it, filled with the shown window) are not used, but one given
/// must still be a time.
pub fn window(
    range: &str,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), InvalidParameter> {
    let preset = RANGES
        .iter()
        .find(|(value, _, _)| *value == range)
        .is_some_and(|(_, _, secs)| *secs > 0);
    if preset {
        for (name, text) in [("from", from), ("to", to)] {
            if !text.is_empty() {
                parse_form_time(name, text)?;
            }
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_window_without_a_range_is_custom_and_a_preset_still_checks_its_times() {
        assert_eq!(range_asked(None, "", "", "1h"), "1h");
        assert_eq!(
            range_asked(Some(" 6h "), "2026-03-01T10:00", "", "1h"),
            "6h"
        );
        assert_eq!(range_asked(None, "2026-03-01T10:00", "", "1h"), "custom");
        assert_eq!(
            range_asked(Some(""), "", "2026-03-01T11:00", "24h"),
            "custom"
        );
        let now = "2026-03-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let range = range_asked(None, "2026-03-01T10:00", "2026-03-01T11:00", "1h");
        let (from, to) = window(&range, "2026-03-01T10:00", "2026-03-01T11:00", now).unwrap();
        assert_eq!(
            (from.to_rfc3339(), to.to_rfc3339()),
            (
                "2026-03-01T10:00:00+00:00".to_string(),
                "2026-03-01T11:00:00+00:00".to_string()
            )
        );
        // A preset with the form's filled times: the preset's window.
        let (from, to) = window("1h", "2026-03-01T10:00", "2026-03-01T11:00", now).unwrap();
        assert_eq!((from, to), (now - Duration::hours(1), now));
        assert_eq!(window("1h", "garbage", "", now).unwrap_err().field, "from");
        assert_eq!(window("1h", "", "10 past", now).unwrap_err().field, "to");
    }
}
