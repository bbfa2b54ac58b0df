//! Query strings, parsed one way for every report and page: the pairs of a
//! URL query are checked against the names a request may carry (unknown
//! and repeated parameters are errors that name them, so a typo never
//! silently changes a report), then read through typed getters. The API
//! (`tollgate-api`) and the pages (`tollgate-dashboards`) hand the same
//! pairs to the same report parsers, so both accept exactly the same
//! requests.

use chrono::{DateTime, NaiveDate, Utc};

/// A request parameter that was rejected, and why: a
/// [`Rejection`](tollgate_contract::Rejection) whose `field` is the name the
/// caller used (`from`, `group_by`, `tag.feature`, ...), or `query` for a
/// name that is no parameter at all.
pub use tollgate_contract::Rejection as InvalidParameter;

/// The longest name of an unknown parameter an error repeats (a hostile
/// name is cut, with `…`).
const MAX_NAMED_CHARS: usize = 40;

/// A parameter's name as an error repeats it: at most
/// [`MAX_NAMED_CHARS`] characters, a longer (hostile) one cut with `…`.
fn shown(name: &str) -> String {
    let mut shown: String = name.chars().take(MAX_NAMED_CHARS).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    shown
}

/// The parameters one request may carry.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Names taken as they are.
    pub names: &'a [&'a str],
    /// Families of names made of a prefix and a key (`tag.` for
    /// `tag.<key>`).
    pub prefixes: &'a [&'a str],
}

impl<'a> Expected<'a> {
    /// Exactly `names`; an unknown parameter is named as itself.
    pub const fn names(names: &'a [&'a str]) -> Self {
        Self {
            names,
            prefixes: &[],
        }
    }

    fn knows(&self, name: &str) -> bool {
        self.names.contains(&name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }

    /// `from, to, tag.<key>`: what the reason of an unknown parameter lists.
    fn list(&self) -> String {
        self.names
            .iter()
            .map(|n| n.to_string())
            .chain(self.prefixes.iter().map(|p| format!("{p}<key>")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A query string whose parameters are all known and none repeated, in the
/// order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Check `pairs` against `expected`: the first unknown or repeated
    /// parameter is an error naming it.
    pub fn parse(
        pairs: &[(String, String)],
        expected: &Expected,
    ) -> Result<Self, InvalidParameter> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !expected.knows(name) {
                let expected = match expected.list() {
                    list if list.is_empty() => "this address takes none".to_string(),
                    list => format!("expected {list}"),
                };
                return Err(InvalidParameter::new(
                    shown(name),
                    format!("unknown parameter; {expected}"),
                ));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(InvalidParameter::new(shown(name), "given more than once"));
            }
        }
        Ok(Self {
            pairs: pairs.to_vec(),
        })
    }

    /// Every parameter, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The value of `name` as given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of `name` trimmed; `None` when absent or blank (an empty
    /// form field means "not given").
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// A UTC day `YYYY-MM-DD`; an empty value is not a date.
    pub fn date(&self, name: &str) -> Result<Option<NaiveDate>, InvalidParameter> {
        self.get(name).map(|v| parse_date(name, v)).transpose()
    }

    /// An RFC 3339 time; `None` when absent or blank.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, InvalidParameter> {
        self.text(name).map(|v| parse_time(name, v)).transpose()
    }

    /// One of `choices` by its word; `None` when absent.
    pub fn choice<T: Copy>(
        &self,
        name: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, InvalidParameter> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match choices.iter().find(|(word, _)| *word == value) {
            Some((_, choice)) => Ok(Some(*choice)),
            None => {
                let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
                let listed = match words.split_last() {
                    Some((last, [])) => last.to_string(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => String::new(),
                };
                Err(InvalidParameter::new(
                    name,
                    format!("`{value}` is not {listed}"),
                ))
            }
        }
    }
}

/// A UTC day `YYYY-MM-DD`, or an error naming `parameter`.
pub fn parse_date(parameter: &str, value: &str) -> Result<NaiveDate, InvalidParameter> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|e| {
        InvalidParameter::new(
            parameter,
            format!("`{value}` is not a date (YYYY-MM-DD): {e}"),
        )
    })
}

/// An RFC 3339 time (`2026-01-01T00:00:00Z`), or an error naming
/// `parameter`.
pub fn parse_time(parameter: &str, text: &str) -> Result<DateTime<Utc>, InvalidParameter> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| {
            InvalidParameter::new(
                parameter,
                format!("`{text}` is not an RFC 3339 time like 2026-01-01T00:00:00Z ({err})"),
            )
        })
}

/// A time as any page or hand-written URL writes one: RFC 3339, a
/// `datetime-local` value taken as UTC (`2026-03-10T10:00`, seconds
/// optional), or a date (its midnight, UTC); `None` for anything else.
pub fn parse_any_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const EXPECTED: Expected = Expected {
        names: &["from", "format"],
        prefixes: &["tag."],
    };

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let err = QueryParams::parse(&pairs(&[("form", "x")]), &EXPECTED).unwrap_err();
        assert_eq!(err.field, "form");
        assert_eq!(
            err.reason,
            "unknown parameter; expected from, format, tag.<key>"
        );
        // A long name is cut.
        let long = "x".repeat(100);
        let err = QueryParams::parse(&pairs(&[(&long, "1")]), &EXPECTED).unwrap_err();
        assert_eq!(err.field, format!("{}…", "x".repeat(40)));
        let err =
            QueryParams::parse(&pairs(&[("tag.a", "1"), ("tag.a", "2")]), &EXPECTED).unwrap_err();
        assert_eq!(err.to_string(), "tag.a: given more than once");
    }

    #[test]
    fn typed_getters() {
        let p = QueryParams::parse(
            &pairs(&[("from", " 2026-03-01 "), ("format", "csv"), ("tag.b", "1")]),
            &EXPECTED,
        )
        .unwrap();
        assert_eq!(p.date("from").unwrap(), NaiveDate::from_ymd_opt(2026, 3, 1));
        let formats = [("json", 1), ("csv", 2)];
        assert_eq!(p.choice("format", &formats).unwrap(), Some(2));
        assert_eq!(p.choice("nope", &formats).unwrap(), None);
        assert_eq!(p.iter().nth(2), Some(("tag.b", "1")));
        let p = QueryParams::parse(&pairs(&[("format", "xml"), ("from", " ")]), &EXPECTED).unwrap();
        assert_eq!(
            p.choice("format", &formats).unwrap_err().to_string(),
            "format: `xml` is not json or csv"
        );
        assert_eq!(p.text("from"), None);
        assert_eq!(p.date("from").unwrap_err().field, "from");
    }
}
