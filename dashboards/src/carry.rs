//! Which of the current page's filters a link to another page carries,
//! written the way that page reads them. The pages refuse parameters they
//! do not know (a 400 naming it) and read the time window each in their
//! own form — SRE pages a `range` preset or a custom `from` / `to` in UTC
//! `datetime-local`, finance UTC dates with `to` exclusive (the cost
//! page's form sends `through`, the last day, instead), compliance
//! `datetime-local` — so a link carries only what its target understands,
//! and the window translated into the target's form.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use tollgate_queries::params::parse_any_time as parse_any;

use crate::last_day;
use crate::sre_form::{form_time, RANGES};

/// How a page reads its time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// No window.
    None,
    /// `range` (a preset, or `custom` with `from` / `to` as
    /// `datetime-local`).
    Preset,
    /// `from` / `to` as UTC dates, `to` exclusive.
    Days,
    /// `from` / `to` as `datetime-local` (UTC).
    Clock,
}

/// A page a link may lead to: its path, the filters it reads besides its
/// window, and its window.
struct Target {
    path: &'static str,
    filters: &'static [&'static str],
    window: Window,
}

/// Filters that mean something else on every report (`group_by` names
/// latency dimensions on the latency page and cost dimensions on the cost
/// page): carried only to the page they came from.
const OWN_PAGE_ONLY: [&str; 2] = ["group_by", "bucket"];

const TARGETS: [Target; 18] = [
    Target {
        path: "/overview",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/sre/latency",
        filters: &["org", "team", "provider", "model", "group_by", "bucket"],
        window: Window::Preset,
    },
    Target {
        path: "/sre/errors",
        filters: &["org", "provider", "model", "team"],
        window: Window::Preset,
    },
    // Fleet-wide: breakers are per provider and model, of no one org; the
    // page keeps `org` only to carry it on.
    Target {
        path: "/sre/breakers",
        filters: &["org", "provider", "model"],
        window: Window::Preset,
    },
    Target {
        path: "/sre/alerts",
        filters: &["org"],
        window: Window::Preset,
    },
    Target {
        path: "/finance/cost",
        filters: &[
            "org", "team", "user", "key", "provider", "model", "group_by",
        ],
        window: Window::Days,
    },
    Target {
        path: "/finance/statement",
        filters: &["org", "team", "month"],
        window: Window::None,
    },
    Target {
        path: "/finance/budgets",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/finance/budgets.csv",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/api/v1/finance/budgets",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/compliance/search",
        filters: &["org", "team", "user", "key", "provider", "model"],
        window: Window::Clock,
    },
    Target {
        path: "/compliance/verify",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/admin",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/admin/users",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/admin/keys",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/admin/budgets",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/admin/prices",
        filters: &["org"],
        window: Window::None,
    },
    Target {
        path: "/admin/budgets.csv",
        filters: &["org"],
        window: Window::None,
    },
];

/// The window the current page's query names, whatever its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// A preset of the SRE pages: its value and length.
    Preset(&'static str, i64),
    /// A custom window (`to` absent: now).
    Span(DateTime<Utc>, Option<DateTime<Utc>>),
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

fn asked(pairs: &[(String, String)]) -> Option<Asked> {
    match get(pairs, "range") {
        Some("custom") | None => {}
        Some(range) => {
            return RANGES
                .iter()
                .find(|(value, _, secs)| *value == range && *secs > 0)
                .map(|(value, _, secs)| Asked::Preset(value, *secs));
        }
    }
    let Some(from) = get(pairs, "from") else {
        // A statement's month is a window too.
        let first =
            NaiveDate::parse_from_str(&format!("{}-01", get(pairs, "month")?), "%Y-%m-%d").ok()?;
        let next = first.checked_add_months(chrono::Months::new(1))?;
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        return Some(Asked::Span(midnight(first)?, Some(midnight(next)?)));
    };
    let from = parse_any(from)?;
    let to = match (get(pairs, "to"), get(pairs, "through")) {
        (Some(text), _) => Some(parse_any(text)?),
        // The cost page's form names the period's last day (inclusive).
        (None, Some(last)) => Some(
            last_day::to_of_through(last)?
                .and_hms_opt(0, 0, 0)?
                .and_utc(),
        ),
        (None, None) => None,
    };
    if to.is_some_and(|to| to <= from) {
        return None;
    }
    Some(Asked::Span(from, to))
}

/// The first day not before `t` ends: `t`'s date, or the next one when
/// `t` is not a midnight (finance's `to` is exclusive).
fn day_after(t: DateTime<Utc>) -> NaiveDate {
    let day = t.date_naive();
    if t.time() == chrono::NaiveTime::MIN {
        day
    } else {
        day.succ_opt().unwrap_or(day)
    }
}

/// The window `asked` in the form `window` reads, as query pairs.
fn window_pairs(asked: Asked, window: Window, now: DateTime<Utc>) -> Vec<(&'static str, String)> {
    let span = |asked: Asked| match asked {
        Asked::Preset(_, secs) => (now - Duration::seconds(secs), Some(now)),
        Asked::Span(from, to) => (from, to),
    };
    match window {
        Window::None => Vec::new(),
        Window::Preset => match asked {
            Asked::Preset(range, _) => vec![("range", range.to_string())],
            Asked::Span(from, to) => {
                let mut out = vec![("range", "custom".to_string()), ("from", form_time(from))];
                out.extend(to.map(|to| ("to", form_time(to))));
                out
            }
        },
        Window::Days => {
            let (from, to) = span(asked);
            let first = from.date_naive();
            let to = to.map(day_after).filter(|to| *to > first);
            let mut out = vec![("from", first.to_string())];
            out.extend(to.map(|to| ("to", to.to_string())));
            out
        }
        Window::Clock => {
            let (from, to) = span(asked);
            let mut out = vec![("from", form_time(from))];
            out.extend(to.map(|to| ("to", form_time(to))));
            out
        }
    }
}

/// The link to `target` from the page at `path` whose query is `pairs`:
/// `target` with the filters and window it understands, as it reads them.
/// A target this table does not know gets no filters.
pub fn href(target: &str, path: &str, pairs: &[(String, String)], now: DateTime<Utc>) -> String {
    let Some(t) = TARGETS.iter().find(|t| t.path == target) else {
        return target.to_string();
    };
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    if let Some(asked) = asked(pairs) {
        for (name, value) in window_pairs(asked, t.window, now) {
            out.append_pair(name, &value);
            any = true;
        }
    }
    for name in t.filters {
        if OWN_PAGE_ONLY.contains(name) && path != target {
            continue;
        }
        if let Some(value) = get(pairs, name) {
            out.append_pair(name, value);
            any = true;
        }
    }
    if any {
        format!("{target}?{}", out.finish())
    } else {
        target.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Query pairs of `list`.
    pub(crate) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// 2026-03-15 12:30 UTC.
    pub(crate) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, 30, 0).unwrap()
    }

    /// The cost page's form names the last day (`through`): links carry
    /// the day after it as `to`, or its end as an SRE window's.
    #[test]
    fn the_cost_forms_last_day_is_carried_as_the_day_after() {
        let q = pairs(&[("from", "2026-03-05"), ("through", "2026-03-05")]);
        assert_eq!(
            href("/finance/cost", "/finance/cost", &q, now()),
            "/finance/cost?from=2026-03-05&to=2026-03-06"
        );
        assert_eq!(
            href("/compliance/search", "/finance/cost", &q, now()),
            "/compliance/search?from=2026-03-05T00%3A00&to=2026-03-06T00%3A00"
        );
    }

    #[test]
    fn an_sre_preset_and_filters_go_to_the_pages_that_read_them() {
        let q = pairs(&[
            ("range", "24h"),
            ("from", ""),
            ("to", ""),
            ("provider", "openai"),
            ("model", "gpt-4o"),
            ("group_by", "model"),
            ("org", "globex"),
        ]);
        let from = "/sre/latency";
        assert_eq!(
            href("/sre/latency", from, &q, now()),
            "/sre/latency?range=24h&org=globex&provider=openai&model=gpt-4o&group_by=model"
        );
        // The errors page has no `group_by`: it would refuse it.
        assert_eq!(
            href("/sre/errors", from, &q, now()),
            "/sre/errors?range=24h&org=globex&provider=openai&model=gpt-4o"
        );
        assert_eq!(
            href("/sre/breakers", from, &q, now()),
            "/sre/breakers?range=24h&org=globex&provider=openai&model=gpt-4o"
        );
        assert_eq!(
            href("/sre/alerts", from, &q, now()),
            "/sre/alerts?range=24h&org=globex"
        );
        // Finance reads days: the last 24 hours are 14 and 15 March.
        assert_eq!(
            href("/finance/cost", from, &q, now()),
            "/finance/cost?from=2026-03-14&to=2026-03-16&org=globex&provider=openai&model=gpt-4o"
        );
        assert_eq!(
            href("/compliance/search", from, &q, now()),
            "/compliance/search?from=2026-03-14T12%3A30&to=2026-03-15T12%3A30&org=globex&provider=openai&model=gpt-4o"
        );
        assert_eq!(href("/overview", from, &q, now()), "/overview?org=globex");
        assert_eq!(
            href("/admin/budgets", from, &q, now()),
            "/admin/budgets?org=globex"
        );
    }

    #[test]
    fn an_sre_custom_window_becomes_whole_days_for_finance() {
        let q = pairs(&[
            ("range", "custom"),
            ("from", "2026-03-01T10:00"),
            ("to", "2026-03-02T06:15"),
            ("team", "search"),
        ]);
        assert_eq!(
            href("/finance/cost", "/sre/errors", &q, now()),
            "/finance/cost?from=2026-03-01&to=2026-03-03&team=search"
        );
        // The latency page filters by team too (an errors page's team
        // stays on the way there).
        assert_eq!(
            href("/sre/latency", "/sre/errors", &q, now()),
            "/sre/latency?range=custom&from=2026-03-01T10%3A00&to=2026-03-02T06%3A15&team=search"
        );
        assert_eq!(
            href("/finance/statement", "/sre/errors", &q, now()),
            "/finance/statement?team=search"
        );
    }

    #[test]
    fn a_statements_month_is_its_days_on_the_cost_page() {
        let q = pairs(&[("team", "search"), ("month", "2026-12"), ("org", "acme")]);
        assert_eq!(
            href("/finance/cost", "/finance/statement", &q, now()),
            "/finance/cost?from=2026-12-01&to=2027-01-01&org=acme&team=search"
        );
        assert_eq!(
            href("/finance/statement", "/finance/statement", &q, now()),
            "/finance/statement?org=acme&team=search&month=2026-12"
        );
    }

    #[test]
    fn finance_days_become_a_custom_window_for_sre() {
        let q = pairs(&[
            ("from", "2026-03-01"),
            ("to", "2026-03-08"),
            ("group_by", "team,model"),
            ("org", "acme"),
        ]);
        assert_eq!(
            href("/sre/latency", "/finance/cost", &q, now()),
            "/sre/latency?range=custom&from=2026-03-01T00%3A00&to=2026-03-08T00%3A00&org=acme"
        );
        // Back to itself: the days unchanged, its own grouping kept.
        assert_eq!(
            href("/finance/cost", "/finance/cost", &q, now()),
            "/finance/cost?from=2026-03-01&to=2026-03-08&org=acme&group_by=team%2Cmodel"
        );
        assert_eq!(
            href("/finance/budgets.csv", "/finance/cost", &q, now()),
            "/finance/budgets.csv?org=acme"
        );
        // RFC 3339 (a hand-written URL) reads the same.
        let q = pairs(&[
            ("from", "2026-03-01T00:00:00Z"),
            ("to", "2026-03-08T00:00:00+00:00"),
        ]);
        assert_eq!(
            href("/finance/cost", "/compliance/search", &q, now()),
            "/finance/cost?from=2026-03-01&to=2026-03-08"
        );
    }

    #[test]
    fn what_cannot_be_read_is_left_behind() {
        // An unknown preset, an unreadable time, a window that ends before
        // it starts: no window; nothing for an unknown target.
        for q in [
            pairs(&[("range", "3w"), ("org", "acme")]),
            pairs(&[("from", "yesterday"), ("org", "acme")]),
            pairs(&[
                ("from", "2026-03-08"),
                ("to", "2026-03-01"),
                ("org", "acme"),
            ]),
        ] {
            assert_eq!(
                href("/sre/latency", "/finance/cost", &q, now()),
                "/sre/latency?org=acme",
                "{q:?}"
            );
        }
        let q = pairs(&[("org", "acme")]);
        assert_eq!(href("/logout", "/overview", &q, now()), "/logout");
        assert_eq!(href("/overview", "/overview", &[], now()), "/overview");
        // Empty values are not carried.
        let q = pairs(&[("org", ""), ("range", "")]);
        assert_eq!(
            href("/sre/errors", "/sre/latency", &q, now()),
            "/sre/errors"
        );
    }
}
