//! How the pages show numbers and times to people. Every page's view
//! structs hold these values and the templates print them with `{{ }}`:
//! each renders as one HTML element whose text is for reading and whose
//! `title` (the tooltip) holds the exact value, the one the CSV and the
//! JSON carry. CSV and JSON never go through here.
//!
//! - [`Money`]: USD as `$25,355.38`, exact decimal on hover.
//! - [`Cost`]: a cost that may be unknown (`unpriced`, never zero).
//! - [`TokenPrice`]: a per-token price, shown per million tokens.
//! - [`TokenCount`]: `1.2M`, `12.5k`, exact count on hover.
//! - [`Count`]: whole numbers with thousands separators (calls, rows).
//! - [`Rate`]: an amount per unit of time, `340 req/min`.
//! - [`Percent`]: percentages to a precision that fits their size.
//! - [`Millis`]: durations, `412 ms`, `12.3 s`.
//! - [`Instant`]: a UTC time in `<time datetime>`, which
//!   `static/local-time.js` rewrites into the viewer's time zone (the UTC
//!   text stays in the tooltip, and is what pages without JS show).
//!
//! Money stays a `Decimal` from the report to the text: no `f64` on the
//! way. Rounding for people is half away from zero (`999.995` →
//! `$1,000.00`, `-0.125` → `-$0.13`), what a person rounding by hand
//! does; banker's rounding (half to even) is for sums of rounded values,
//! and the pages never sum what they show.

use std::fmt;

use askama::filters::HtmlSafe;
use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

/// `digits` (ASCII digits, no sign) with a comma every three from the
/// right.
/// JSON safe inside a `<script>` element (a chart's data): no `<`, `>` or
/// `&` can end the element or open a comment (`<!--<script` in a key's
/// name kept a page's script open), written as JSON escapes instead.
pub fn script_json<T: serde::Serialize + ?Sized>(data: &T) -> String {
    serde_json::to_string(data)
        .unwrap_or_else(|_| "{}".to_string())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// `n` things as people write them: `1 pattern`, `2 patterns`,
/// `12,408 failures` (the noun takes an `s` unless `n` is 1).
pub fn counted(n: impl Into<i128>, noun: &str) -> String {
    let n = n.into();
    format!(
        "{} {noun}{}",
        Count(n).text(),
        if n == 1 { "" } else { "s" }
    )
}

fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `value` rounded half away from zero to `places`, with exactly `places`
/// decimals and grouped thousands, without its sign: `(text, negative)`.
fn decimal_text(value: Decimal, places: u32) -> (String, bool) {
    let mut rounded = value.round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(places);
    let negative = rounded.is_sign_negative() && !rounded.is_zero();
    let text = rounded.abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let grouped = group_thousands(int);
    if frac.is_empty() {
        (grouped, negative)
    } else {
        (format!("{grouped}.{frac}"), negative)
    }
}

/// Text for an attribute value: the values here are generated, but a unit
/// or label may come from a caller.
fn attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A span with reading text and the exact value as its tooltip.
fn span(f: &mut fmt::Formatter<'_>, class: &str, exact: &str, text: &str) -> fmt::Result {
    write!(
        f,
        r#"<span class="{class}" title="{}">{}</span>"#,
        attr(exact),
        attr(text)
    )
}

/// An amount of US dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(pub Decimal);

impl Money {
    pub fn usd(amount: Decimal) -> Self {
        Self(amount)
    }

    /// Two decimals, thousands separators, the sign before the dollar
    /// sign; a non-zero amount that rounds to zero cents is `<$0.01`
    /// (`-<$0.01` when negative), so a small cost never reads as free.
    pub fn text(&self) -> String {
        let (digits, negative) = decimal_text(self.0, 2);
        if digits == "0.00" && !self.0.is_zero() {
            return if self.0.is_sign_negative() {
                "-<$0.01".into()
            } else {
                "<$0.01".into()
            };
        }
        let sign = if negative { "-" } else { "" };
        format!("{sign}${digits}")
    }

    /// The exact amount as every CSV writes it (`tollgate_queries::table::usd`,
    /// all 12 decimals): `25355.377715560000`, `50.000000000000`.
    pub fn exact(&self) -> String {
        tollgate_queries::table::usd(self.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        span(f, "money", &self.exact(), &self.text())
    }
}

impl HtmlSafe for Money {}

/// A cost: money, or `unpriced` when a call's model had no price (shown
/// as a word, never as zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost(pub Option<Decimal>);

impl Cost {
    pub fn is_unpriced(&self) -> bool {
        self.0.is_none()
    }

    pub fn text(&self) -> String {
        self.0
            .map_or_else(|| "unpriced".into(), |d| Money(d).text())
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => Money(d).fmt(f),
            None => span(
                f,
                "money unpriced",
                "no price for this model in the catalog",
                "unpriced",
            ),
        }
    }
}

impl HtmlSafe for Cost {}

/// A price per token (USD). Per-token prices are millionths of a dollar,
/// so they read per million tokens (`$3.00 / M`), the way providers list
/// them; the tooltip holds the exact per-token price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPrice(pub Decimal);

impl TokenPrice {
    /// Cents, or up to four decimals when cents would hide the price
    /// (`$0.075 / M`); rounded half away from zero.
    pub fn text(&self) -> String {
        let per_million = self
            .0
            .checked_mul(Decimal::from(1_000_000))
            .unwrap_or(self.0);
        let (mut digits, negative) = decimal_text(per_million, 4);
        for _ in 0..2 {
            if digits.ends_with('0') {
                digits.pop();
            }
        }
        if digits == "0.00" && !per_million.is_zero() {
            return "<$0.0001 / M".into();
        }
        let sign = if negative { "-" } else { "" };
        format!("{sign}${digits} / M")
    }
}

impl fmt::Display for TokenPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        span(f, "money", &format!("{} per token", self.0), &self.text())
    }
}

impl HtmlSafe for TokenPrice {}

/// `n` as people say large counts: as is below 1,000, then thousands
/// (`k`), millions (`M`), billions (`B`) and trillions (`T`) with one
/// decimal below 100 of the unit (`1.2M`, `12.5k`) and none from 100
/// (`340k`); a trailing `.0` is dropped (`2k`). Halves round up.
fn compact(n: i128) -> String {
    const UNITS: [(u128, &str); 4] = [
        (1_000, "k"),
        (1_000_000, "M"),
        (1_000_000_000, "B"),
        (1_000_000_000_000, "T"),
    ];
    let sign = if n < 0 { "-" } else { "" };
    let n = n.unsigned_abs();
    if n < 1_000 {
        return format!("{sign}{n}");
    }
    let mut i = UNITS.iter().rposition(|(u, _)| n >= *u).unwrap_or(0);
    loop {
        let (unit, suffix) = UNITS[i];
        let tenths = (n * 10 + unit / 2) / unit;
        if tenths < 1_000 {
            return if tenths.is_multiple_of(10) {
                format!("{sign}{}{suffix}", tenths / 10)
            } else {
                format!("{sign}{}.{}{suffix}", tenths / 10, tenths % 10)
            };
        }
        let whole = (n + unit / 2) / unit;
        if whole < 1_000 || i + 1 == UNITS.len() {
            return format!("{sign}{whole}{suffix}");
        }
        // 999,950 is 1M, not 1000k.
        i += 1;
    }
}

/// `n` with grouped thousands, its sign first.
fn grouped(n: i128) -> String {
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", group_thousands(&n.unsigned_abs().to_string()))
}

/// A number of tokens (signed: a repricing correction reverses counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount(pub i128);

impl TokenCount {
    pub fn text(&self) -> String {
        compact(self.0)
    }

    pub fn exact(&self) -> String {
        format!("{} tokens", grouped(self.0))
    }
}

impl fmt::Display for TokenCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        span(f, "count", &self.exact(), &self.text())
    }
}

impl HtmlSafe for TokenCount {}

/// A count read exactly (calls, rows, occurrences): thousands separators,
/// nothing rounded, so no tooltip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub i128);

impl Count {
    pub fn text(&self) -> String {
        grouped(self.0)
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl HtmlSafe for Count {}

/// `value` (finite, not negative) to three significant digits at most,
/// with grouped thousands from 1,000 and no trailing zeros: `340`,
/// `12.5`, `0.25`, `1,234`.
fn significant(value: f64) -> String {
    let places = match value.abs() {
        v if v >= 100.0 || v == 0.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        _ => 3,
    };
    let text = format!("{:.*}", places, value.abs());
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let sign = if value < 0.0 && text.chars().any(|c| ('1'..='9').contains(&c)) {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{}", group_thousands(int))
    } else {
        format!("{sign}{}.{frac}", group_thousands(int))
    }
}

/// An amount per unit of time, e.g. requests per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub value: f64,
    /// What is counted and per what: `req/min`, `tokens/s`.
    pub unit: &'static str,
}

impl Rate {
    pub fn new(value: f64, unit: &'static str) -> Self {
        Self { value, unit }
    }

    /// Compact from 1,000 (`12.5k req/min`), three significant digits
    /// below (`340 req/min`, `0.25 req/min`).
    pub fn text(&self) -> String {
        let number = if self.value.is_finite() && self.value >= 1_000.0 && self.value < 1e18 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            compact(self.value.round() as i128)
        } else {
            significant(self.value)
        };
        format!("{number} {}", self.unit)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        span(
            f,
            "rate",
            &format!("{} {}", self.value, self.unit),
            &self.text(),
        )
    }
}

impl HtmlSafe for Rate {}

/// A percentage. Precision follows size: two decimals below 10 %, one
/// below 100 %, none from 100 %, trailing zeros dropped (`0.25%`,
/// `2.5%`, `87.5%`, `100%`); a non-zero value below 0.01 % is `<0.01%`
/// so a rare error does not read as none.
#[derive(Debug, Clone, PartialEq)]
pub struct Percent {
    /// The value in percent (`12.5` is 12.5 %), for the text.
    value: f64,
    /// The exact value as computed, for the tooltip.
    exact: String,
}

impl Percent {
    /// A ratio (`0.125` is 12.5 %), e.g. an error rate.
    pub fn of_ratio(ratio: f64) -> Self {
        let value = ratio * 100.0;
        // Six places: the ratio's own digits without the binary noise
        // of the multiplication (16.67, not 16.669999999999998).
        let exact = format!("{value:.6}");
        let exact = exact.trim_end_matches('0').trim_end_matches('.');
        Self {
            value,
            exact: format!("{exact}%"),
        }
    }

    /// A value already in percent, kept as a decimal (budgets).
    pub fn of_percent(percent: Decimal) -> Self {
        use rust_decimal::prelude::ToPrimitive;
        Self {
            value: percent.to_f64().unwrap_or(0.0),
            exact: format!("{percent}%"),
        }
    }

    pub fn text(&self) -> String {
        let v = self.value;
        if v == 0.0 || !v.is_finite() {
            return if v.is_finite() {
                "0%".into()
            } else {
                format!("{v}%")
            };
        }
        if v.abs() < 0.01 {
            return if v < 0.0 { "-<0.01%" } else { "<0.01%" }.into();
        }
        let places = match v.abs() {
            a if a < 10.0 => 2,
            a if a < 100.0 => 1,
            _ => 0,
        };
        let text = format!("{v:.places$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        };
        format!("{text}%")
    }

    pub fn exact(&self) -> &str {
        &self.exact
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        span(f, "percent", &self.exact, &self.text())
    }
}

impl HtmlSafe for Percent {}

/// A duration in milliseconds (latency, time to first token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Millis(pub f64);

impl Millis {
    /// Hundredths below 10 ms, tenths below 1 s, whole milliseconds
    /// below 10 s (`1,782 ms`), then seconds to one place (`12.3 s`).
    pub fn text(&self) -> String {
        let ms = self.0;
        if ms.abs() >= 10_000.0 {
            format!("{:.1} s", ms / 1_000.0)
        } else if ms.abs() >= 1_000.0 {
            #[allow(clippy::cast_possible_truncation)]
            let whole = ms.round() as i64;
            format!(
                "{}{} ms",
                if whole < 0 { "-" } else { "" },
                group_thousands(&whole.unsigned_abs().to_string())
            )
        } else if ms.abs() >= 10.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.2} ms")
        }
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        span(f, "duration", &format!("{} ms", self.0), &self.text())
    }
}

impl HtmlSafe for Millis {}

/// A measured value with its unit, as alert signals report them (the
/// value an exact decimal string): `USD` as [`Money`], `USD/h` as money
/// per hour, `%` as [`Percent`], `ms` as [`Millis`], anything else with
/// grouped thousands and at most two decimals, then its unit. A value
/// that is not a number is shown as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub value: String,
    pub unit: String,
}

impl Measure {
    pub fn new(value: impl Into<String>, unit: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            unit: unit.into(),
        }
    }

    pub fn text(&self) -> String {
        let Ok(v) = self.value.trim().parse::<Decimal>() else {
            return self.value.clone();
        };
        match self.unit.as_str() {
            "USD" => Money(v).text(),
            "USD/h" => format!("{}/h", Money(v).text()),
            "%" => Percent::of_percent(v).text(),
            "ms" => {
                use rust_decimal::prelude::ToPrimitive;
                Millis(v.to_f64().unwrap_or(0.0)).text()
            }
            unit => {
                let (digits, negative) = decimal_text(v, 2);
                let digits = digits
                    .strip_suffix(".00")
                    .map_or(digits.clone(), str::to_string);
                let sign = if negative { "-" } else { "" };
                if unit.is_empty() {
                    format!("{sign}{digits}")
                } else {
                    format!("{sign}{digits} {unit}")
                }
            }
        }
    }

    /// The exact value and its unit; an amount of money (`USD`, `USD/h`)
    /// as every CSV writes money, all 12 decimals.
    pub fn exact(&self) -> String {
        let value = match (self.unit.as_str(), self.value.trim().parse::<Decimal>()) {
            ("USD" | "USD/h", Ok(v)) => tollgate_queries::table::usd(v),
            _ => self.value.clone(),
        };
        if self.unit.is_empty() {
            value
        } else {
            format!("{value} {}", self.unit)
        }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        span(f, "measure", &self.exact(), &self.text())
    }
}

impl HtmlSafe for Measure {}

/// How much of a time the text shows (the tooltip always has seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Minute,
    Second,
    Millisecond,
}

/// A moment, rendered as
/// `<time datetime="2026-12-01T10:00:00Z" title="2026-12-01 10:00:00 UTC">2026-12-01 10:00 UTC</time>`.
/// `static/local-time.js` rewrites the text into the viewer's time zone
/// at the same precision; the `title` keeps UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    pub at: DateTime<Utc>,
    pub precision: Precision,
}

impl Instant {
    /// To the minute: what most tables need.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            at,
            precision: Precision::Minute,
        }
    }

    /// To the second (events close together: transitions, deliveries).
    pub fn seconds(at: DateTime<Utc>) -> Self {
        Self {
            at,
            precision: Precision::Second,
        }
    }

    /// To the millisecond (audit entries, breaker transitions).
    pub fn millis(at: DateTime<Utc>) -> Self {
        Self {
            at,
            precision: Precision::Millisecond,
        }
    }

    /// Epoch milliseconds, if in range.
    pub fn from_epoch_millis(ms: u64) -> Option<Self> {
        i64::try_from(ms)
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(Self::millis)
    }

    /// The machine-readable value: RFC 3339 in UTC, with milliseconds
    /// only when there are any.
    pub fn datetime(&self) -> String {
        let format = if self.at.timestamp_subsec_millis() == 0 {
            chrono::SecondsFormat::Secs
        } else {
            chrono::SecondsFormat::Millis
        };
        self.at.to_rfc3339_opts(format, true)
    }

    /// The tooltip: UTC to the second (to the millisecond when there are
    /// any).
    pub fn utc_title(&self) -> String {
        let format = if self.at.timestamp_subsec_millis() == 0 {
            "%Y-%m-%d %H:%M:%S UTC"
        } else {
            "%Y-%m-%d %H:%M:%S%.3f UTC"
        };
        self.at.format(format).to_string()
    }

    /// The text without JS: UTC at the instant's precision.
    pub fn utc_text(&self) -> String {
        let format = match self.precision {
            Precision::Minute => "%Y-%m-%d %H:%M UTC",
            Precision::Second => "%Y-%m-%d %H:%M:%S UTC",
            Precision::Millisecond => "%Y-%m-%d %H:%M:%S%.3f UTC",
        };
        self.at.format(format).to_string()
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            r#"<time datetime="{}" title="{}">{}</time>"#,
            self.datetime(),
            self.utc_title(),
            self.utc_text()
        )
    }
}

impl HtmlSafe for Instant {}

/// A window of time, `from` to `to`, each end an [`Instant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Instant,
    pub to: Instant,
}

impl Period {
    /// To the minute.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from: Instant::new(from),
            to: Instant::new(to),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.from, self.to)
    }
}

impl HtmlSafe for Period {}

/// A line of parts shown one after the other, ` · ` between them (a
/// page's summary: its window, its bucket, its totals).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parts(pub Vec<Figure>);

impl fmt::Display for Parts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" · ")?;
            }
            part.fmt(f)?;
        }
        Ok(())
    }
}

impl HtmlSafe for Parts {}

/// One cell of a table whose columns hold different kinds of value (a
/// statement line, a burn-down bucket): each kind shown as above, text
/// escaped, `Blank` for a value that does not exist (yet).
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Text(String),
    Blank,
    Money(Money),
    Cost(Cost),
    Price(TokenPrice),
    Tokens(TokenCount),
    Count(Count),
    Percent(Percent),
    Millis(Millis),
    Instant(Instant),
    Period(Period),
    Measure(Measure),
    Rate(Rate),
}

impl Figure {
    /// Money when there is an amount, blank otherwise.
    pub fn money(amount: Option<Decimal>) -> Self {
        amount.map_or(Self::Blank, |d| Self::Money(Money(d)))
    }

    /// A per-token price when there is one, blank otherwise.
    pub fn price(price: Option<Decimal>) -> Self {
        price.map_or(Self::Blank, |d| Self::Price(TokenPrice(d)))
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(t) => f.write_str(&attr(t)),
            Self::Blank => Ok(()),
            Self::Money(v) => v.fmt(f),
            Self::Cost(v) => v.fmt(f),
            Self::Price(v) => v.fmt(f),
            Self::Tokens(v) => v.fmt(f),
            Self::Count(v) => v.fmt(f),
            Self::Percent(v) => v.fmt(f),
            Self::Millis(v) => v.fmt(f),
            Self::Instant(v) => v.fmt(f),
            Self::Period(v) => v.fmt(f),
            Self::Measure(v) => v.fmt(f),
            Self::Rate(v) => v.fmt(f),
        }
    }
}

impl HtmlSafe for Figure {}

macro_rules! figure_from {
    ($($kind:ident),*) => {
        $(impl From<$kind> for Figure {
            fn from(v: $kind) -> Self {
                Self::$kind(v)
            }
        })*
    };
}
figure_from!(Money, Cost, Count, Percent, Millis, Instant, Period, Measure, Rate);

impl From<TokenPrice> for Figure {
    fn from(v: TokenPrice) -> Self {
        Self::Price(v)
    }
}

impl From<TokenCount> for Figure {
    fn from(v: TokenCount) -> Self {
        Self::Tokens(v)
    }
}

impl From<String> for Figure {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&str> for Figure {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn counted_things_agree_in_number() {
        assert_eq!(super::counted(1u64, "pattern"), "1 pattern");
        assert_eq!(super::counted(0u64, "failure"), "0 failures");
        assert_eq!(super::counted(12_408u64, "failure"), "12,408 failures");
    }

    #[test]
    fn script_json_cannot_end_or_comment_out_its_script() {
        let name = "key <!--<script></script> & co";
        let json = super::script_json(&serde_json::json!({ "labels": [name] }));
        assert!(
            !json.contains('<') && !json.contains('>') && !json.contains('&'),
            "{json}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back["labels"][0], name);
    }

    use chrono::TimeZone;

    use super::*;

    /// The tooltip holds the amount exactly as every CSV writes it, all
    /// 12 decimals, whatever scale the value came with.
    #[test]
    fn money_tooltip_is_the_csv_value() {
        let limit = Money("50".parse().unwrap());
        assert_eq!(limit.exact(), "50.000000000000");
        assert_eq!(limit.exact(), tollgate_queries::table::usd(limit.0));
        assert_eq!(
            limit.to_string(),
            r#"<span class="money" title="50.000000000000">$50.00</span>"#
        );
        assert_eq!(
            Money("0.75000000".parse().unwrap()).exact(),
            "0.750000000000"
        );
    }

    fn usd(s: &str) -> String {
        Money(s.parse().unwrap()).text()
    }

    #[test]
    fn money_reads_as_dollars_and_cents() {
        assert_eq!(usd("25355.377715560000"), "$25,355.38");
        assert_eq!(usd("0"), "$0.00");
        assert_eq!(usd("0.000000000000"), "$0.00");
        assert_eq!(usd("-1.2"), "-$1.20");
        assert_eq!(usd("1234567.5"), "$1,234,567.50");
        assert_eq!(usd("100"), "$100.00");
        assert_eq!(usd("999"), "$999.00");
        assert_eq!(usd("1000"), "$1,000.00");
    }

    #[test]
    fn sub_cent_amounts_do_not_read_as_free() {
        assert_eq!(usd("0.004"), "<$0.01");
        assert_eq!(usd("0.000000000001"), "<$0.01");
        assert_eq!(usd("-0.004"), "-<$0.01");
        // Half a cent rounds away from zero to a whole cent.
        assert_eq!(usd("0.005"), "$0.01");
        assert_eq!(usd("-0.005"), "-$0.01");
    }

    #[test]
    fn money_rounds_half_away_from_zero() {
        assert_eq!(usd("999.995"), "$1,000.00");
        assert_eq!(usd("999.994999"), "$999.99");
        assert_eq!(usd("-999.995"), "-$1,000.00");
        // Banker's rounding would give $0.12 for both.
        assert_eq!(usd("0.125"), "$0.13");
        assert_eq!(usd("0.115"), "$0.12");
    }

    #[test]
    fn money_keeps_every_stored_digit_in_the_tooltip() {
        let m = Money("25355.377715560000".parse().unwrap());
        assert_eq!(m.exact(), "25355.377715560000");
        assert_eq!(
            m.to_string(),
            r#"<span class="money" title="25355.377715560000">$25,355.38</span>"#
        );
        assert_eq!(Cost(None).text(), "unpriced");
        assert!(Cost(None).to_string().contains(">unpriced</span>"));
        assert_eq!(Cost(Some(Decimal::ONE)).text(), "$1.00");
    }

    #[test]
    fn token_prices_read_per_million() {
        let p = TokenPrice("0.000003".parse().unwrap());
        assert_eq!(p.text(), "$3.00 / M");
        assert!(p.to_string().contains(r#"title="0.000003 per token""#));
        assert_eq!(
            TokenPrice("0.00000015".parse().unwrap()).text(),
            "$0.15 / M"
        );
        let text = |p: &str| TokenPrice(p.parse().unwrap()).text();
        assert_eq!(text("0.000000075"), "$0.075 / M");
        assert_eq!(text("0.00000000000001"), "<$0.0001 / M");
        assert_eq!(text("0"), "$0.00 / M");
    }

    #[test]
    fn token_counts_are_compact() {
        let t = |n| TokenCount(n).text();
        assert_eq!(t(0), "0");
        assert_eq!(t(999), "999");
        assert_eq!(t(1_000), "1k");
        assert_eq!(t(1_234), "1.2k");
        assert_eq!(t(12_500), "12.5k");
        assert_eq!(t(99_949), "99.9k");
        assert_eq!(t(99_950), "100k");
        assert_eq!(t(340_000), "340k");
        assert_eq!(t(999_499), "999k");
        assert_eq!(t(999_500), "1M");
        assert_eq!(t(1_234_567), "1.2M");
        assert_eq!(t(2_500_000_000), "2.5B");
        assert_eq!(t(u64::MAX.into()), "18446744T");
        assert_eq!(t(-12_500), "-12.5k");
        assert_eq!(Count(-1_234).text(), "-1,234");
        assert_eq!(TokenCount(1_234_567).exact(), "1,234,567 tokens");
        assert_eq!(Count(1_234_567).text(), "1,234,567");
        assert_eq!(Count(0).text(), "0");
    }

    #[test]
    fn rates_read_in_units() {
        assert_eq!(Rate::new(340.0, "req/min").text(), "340 req/min");
        assert_eq!(Rate::new(339.6, "req/min").text(), "340 req/min");
        assert_eq!(Rate::new(12_500.0, "req/min").text(), "12.5k req/min");
        assert_eq!(Rate::new(2.5, "req/min").text(), "2.5 req/min");
        assert_eq!(Rate::new(0.25, "req/s").text(), "0.25 req/s");
        assert_eq!(Rate::new(0.0, "req/s").text(), "0 req/s");
    }

    #[test]
    fn percentages_have_sensible_precision() {
        let p = |r| Percent::of_ratio(r).text();
        assert_eq!(p(0.0), "0%");
        assert_eq!(p(0.0025), "0.25%");
        assert_eq!(p(0.025), "2.5%");
        assert_eq!(p(0.875), "87.5%");
        assert_eq!(p(1.0), "100%");
        assert_eq!(p(0.000_000_1), "<0.01%");
        assert_eq!(p(1.0 / 3.0), "33.3%");
        assert_eq!(Percent::of_ratio(0.1667).exact(), "16.67%");
        assert_eq!(Percent::of_ratio(0.0).exact(), "0%");
        let b = Percent::of_percent("87.531234".parse().unwrap());
        assert_eq!(b.text(), "87.5%");
        assert_eq!(b.exact(), "87.531234%");
        assert_eq!(Percent::of_percent("-3".parse().unwrap()).text(), "-3%");
    }

    #[test]
    fn durations_read_in_ms_then_seconds() {
        assert_eq!(Millis(1.234).text(), "1.23 ms");
        assert_eq!(Millis(412.04).text(), "412.0 ms");
        assert_eq!(Millis(1_781.67).text(), "1,782 ms");
        assert_eq!(Millis(12_345.0).text(), "12.3 s");
        assert!(Millis(1_781.67)
            .to_string()
            .contains(r#"title="1781.67 ms""#));
    }

    #[test]
    fn measures_read_in_their_unit() {
        let m = |v: &str, u: &str| Measure::new(v, u).text();
        assert_eq!(m("12.5000", "%"), "12.5%");
        assert_eq!(m("1234567.891", "USD"), "$1,234,567.89");
        assert_eq!(m("0.000012345", "USD/h"), "<$0.01/h");
        assert_eq!(m("2.5", "USD/h"), "$2.50/h");
        assert_eq!(m("2500.125", "ms"), "2,500 ms");
        assert_eq!(m("3", ""), "3");
        assert_eq!(m("1234.5", "calls"), "1,234.50 calls");
        assert_eq!(m("n/a", "%"), "n/a");
        assert_eq!(
            Measure::new("0.000012345", "USD/h").exact(),
            "0.000012345000 USD/h"
        );
        assert_eq!(Measure::new("2.5", "USD").exact(), "2.500000000000 USD");
        assert_eq!(Measure::new("12.5", "%").exact(), "12.5 %");
    }

    #[test]
    fn figures_escape_text_and_leave_blanks_empty() {
        assert_eq!(Figure::from("<a&b>").to_string(), "&lt;a&amp;b&gt;");
        assert_eq!(Figure::money(None).to_string(), "");
        assert_eq!(
            Figure::money(Some(Decimal::ONE)).to_string(),
            Money(Decimal::ONE).to_string()
        );
    }

    #[test]
    fn instants_are_utc_time_elements() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        assert_eq!(
            Instant::new(at).to_string(),
            r#"<time datetime="2026-12-01T10:00:00Z" title="2026-12-01 10:00:00 UTC">2026-12-01 10:00 UTC</time>"#
        );
        assert_eq!(Instant::seconds(at).utc_text(), "2026-12-01 10:00:00 UTC");
        let precise = Instant::from_epoch_millis(1_764_583_200_123).unwrap();
        assert_eq!(precise.datetime(), "2025-12-01T10:00:00.123Z");
        assert_eq!(precise.utc_title(), "2025-12-01 10:00:00.123 UTC");
        assert_eq!(precise.utc_text(), "2025-12-01 10:00:00.123 UTC");
    }
}
