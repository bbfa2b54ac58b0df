//! Charts drawn on the server as inline SVG (no script needed, so a page
//! shows them as soon as it loads and a test reads them from the DOM):
//! state strips over a window (the breakers' and the alerts' timelines)
//! a value line against a threshold with the spans where an alert was
//! pending or firing (the rule's backtest), and bars per day (the
//! overview's spend this month).
//!
//! Times are written in UTC with the instant beside them: an axis label is
//! `<text data-utc="2026-12-01T10:00:00Z">12-01 10:00 UTC<title>…</title></text>`
//! and a tooltip `<title data-utc="…">… from 2026-12-01 10:00:00.000 UTC</title>`
//! (one instant per UTC time it names, space-separated);
//! `static/local-time.js` rewrites them into the viewer's time zone (the
//! tooltip keeps the UTC time after the local one).

use chrono::{DateTime, SecondsFormat, Utc};

/// Text for SVG built by hand (names come from events and users).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// The machine-readable instant of `data-utc`.
fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A hover title naming `times` (each written with [`stamp`] in `text`).
fn timed_title(text: &str, times: &[DateTime<Utc>]) -> String {
    let instants: Vec<String> = times.iter().copied().map(instant).collect();
    format!(
        "<title data-utc=\"{}\">{}</title>",
        instants.join(" "),
        escape(text)
    )
}

/// A time under a chart's axis at `(x, y)`: month, day and minute in UTC,
/// the full UTC time on hover.
fn axis_time(t: DateTime<Utc>, x: f64, y: f64, anchor: &str) -> String {
    format!(
        "<text class=\"axis-time\" x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" \
         data-utc=\"{}\">{}<title>{}</title></text>",
        instant(t),
        t.format("%m-%d %H:%M UTC"),
        t.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// One strip: a name, the state at the start of the window and the
/// changes in it, in time order (`(at, state entered)`).
pub struct Strip<'a> {
    pub name: String,
    pub first: &'a str,
    pub steps: Vec<(DateTime<Utc>, &'a str)>,
}

/// One strip per row, each segment coloured by its state (`color`), a
/// hover title per segment, the window's ends under it. Empty when there
/// are no rows.
pub fn strips(
    id: &str,
    label: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    rows: &[Strip],
    color: impl Fn(&str) -> &'static str,
) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let (w, row_h, label_w) = (900.0, 22.0, 220.0);
    let span = (to - from).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        label_w + ((t - from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * (w - label_w)
    };
    let height = rows.len() as f64 * row_h + 20.0;
    let mut out = format!(
        "<svg class=\"timeline\" id=\"{id}\" viewBox=\"0 0 {w} {height}\" width=\"100%\" \
         height=\"{height}\" role=\"img\" aria-label=\"{}\" data-rows=\"{}\">",
        escape(label),
        rows.len()
    );
    for (i, row) in rows.iter().enumerate() {
        let y = i as f64 * row_h;
        out.push_str(&format!(
            "<text x=\"0\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            y + 15.0,
            escape(&row.name)
        ));
        let mut start = from;
        let mut state = row.first;
        for (at, next) in row.steps.iter().copied().chain(std::iter::once((to, ""))) {
            out.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">{}</rect>",
                x(start),
                y + 3.0,
                (x(at) - x(start)).max(0.0),
                row_h - 6.0,
                color(state),
                timed_title(
                    &format!("{} {state} from {}", row.name, stamp(start)),
                    &[start]
                )
            ));
            start = at;
            state = next;
        }
    }
    for (t, anchor) in [(from, "start"), (to, "end")] {
        out.push_str(&axis_time(t, x(t), height - 4.0, anchor));
    }
    out.push_str("</svg>");
    out
}

/// One bar: its label under the axis (and in its title), its height and
/// the value's text for the title.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub title: String,
}

/// Bars side by side, scaled to the tallest, each with a hover title and
/// `data-value`; every few labels under them so they do not overlap.
/// Empty when there are no bars.
pub fn bars(id: &str, label: &str, bars: &[Bar]) -> String {
    if bars.is_empty() {
        return String::new();
    }
    let (w, h, bottom, top) = (900.0, 180.0, 20.0, 6.0);
    let slot = w / bars.len() as f64;
    let max = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let scale = if max > 0.0 {
        (h - bottom - top) / max
    } else {
        0.0
    };
    let every = bars.len().div_ceil(16);
    let mut out = format!(
        "<svg class=\"bars\" id=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"100%\" height=\"{h}\" \
         role=\"img\" aria-label=\"{}\" data-bars=\"{}\">",
        escape(id),
        escape(label),
        bars.len()
    );
    for (i, bar) in bars.iter().enumerate() {
        let height = (bar.value.max(0.0) * scale).max(if bar.value > 0.0 { 1.0 } else { 0.0 });
        let x = i as f64 * slot;
        out.push_str(&format!(
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" \
             data-value=\"{}\"><title>{}: {}</title></rect>",
            x + slot * 0.15,
            h - bottom - height,
            slot * 0.7,
            bar.value,
            escape(&bar.label),
            escape(&bar.title)
        ));
        if i % every == 0 {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + slot / 2.0,
                h - 6.0,
                escape(&bar.label)
            ));
        }
    }
    out.push_str("</svg>");
    out
}

/// A span of time an alert spent in one state (`pending`, `firing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSpan {
    pub state: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A value line over a window against a threshold, with shaded spans.
pub struct ValueChart<'a> {
    pub id: &'a str,
    pub label: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `(at, value)`; `None` is a gap (no answer there).
    pub points: &'a [(DateTime<Utc>, Option<f64>)],
    pub threshold: Option<f64>,
    /// The value's unit for the axis and titles.
    pub unit: &'a str,
    pub spans: &'a [StateSpan],
}

impl ValueChart<'_> {
    /// The chart as SVG: the shaded spans first, then the threshold (a
    /// dashed line, `class="threshold"`, `data-value`), then the value
    /// line (one `polyline` per run without gaps), the axis labels.
    pub fn svg(&self) -> String {
        let (w, h, left, right, top, bottom) = (900.0, 260.0, 70.0, 10.0, 10.0, 24.0);
        let span = (self.to - self.from).num_milliseconds().max(1) as f64;
        let x = |t: DateTime<Utc>| {
            left + ((t - self.from).num_milliseconds() as f64 / span).clamp(0.0, 1.0)
                * (w - left - right)
        };
        let max = self
            .points
            .iter()
            .filter_map(|(_, v)| *v)
            .chain(self.threshold)
            .fold(0.0_f64, f64::max);
        let max = if max > 0.0 { max * 1.15 } else { 1.0 };
        let y = |v: f64| top + (1.0 - (v / max).clamp(0.0, 1.0)) * (h - top - bottom);
        let defined = self.points.iter().filter(|(_, v)| v.is_some()).count();
        let mut out = format!(
            "<svg class=\"value-chart\" id=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"100%\" height=\"{h}\" \
             role=\"img\" aria-label=\"{}\" data-points=\"{defined}\" data-spans=\"{}\">",
            escape(self.id),
            escape(self.label),
            self.spans.len()
        );
        for s in self.spans {
            let fill = if s.state == "firing" {
                "#e15759"
            } else {
                "#edc948"
            };
            out.push_str(&format!(
                "<rect class=\"span {}\" x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" \
                 fill=\"{fill}\" fill-opacity=\"0.25\">{}</rect>",
                s.state,
                x(s.from),
                (x(s.to) - x(s.from)).max(1.0),
                h - top - bottom,
                timed_title(
                    &format!("{} from {} to {}", s.state, stamp(s.from), stamp(s.to)),
                    &[s.from, s.to]
                )
            ));
        }
        out.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{left}\" y2=\"{top}\" stroke=\"#999\"/>",
            h - bottom
        ));
        if let Some(t) = self.threshold {
            out.push_str(&format!(
                "<line class=\"threshold\" data-value=\"{t}\" x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" \
                 stroke=\"#e15759\" stroke-dasharray=\"6 4\"><title>threshold {t} {}</title></line>",
                y(t),
                w - right,
                y(t),
                escape(self.unit)
            ));
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#e15759\">{t} {}</text>",
                w - right,
                y(t) - 3.0,
                escape(self.unit)
            ));
        }
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, out: &mut String| {
            if !run.is_empty() {
                out.push_str(&format!(
                    "<polyline class=\"value\" fill=\"none\" stroke=\"#4e79a7\" stroke-width=\"1.5\" points=\"{}\"/>",
                    run.join(" ")
                ));
                run.clear();
            }
        };
        for (at, v) in self.points {
            match v {
                Some(v) => run.push(format!("{:.1},{:.1}", x(*at), y(*v))),
                None => flush(&mut run, &mut out),
            }
        }
        flush(&mut run, &mut out);
        for (v, anchor_y) in [(max, top + 8.0), (0.0, h - bottom)] {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{anchor_y:.1}\" font-size=\"10\" text-anchor=\"end\">{} {}</text>",
                left - 4.0,
                axis_number(v),
                escape(self.unit)
            ));
        }
        for (t, anchor) in [(self.from, "start"), (self.to, "end")] {
            out.push_str(&axis_time(t, x(t), h - 6.0, anchor));
        }
        out.push_str("</svg>");
        out
    }
}

/// A readable axis number: no more than three decimals, none when large.
fn axis_number(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn value_chart_has_the_threshold_spans_and_gaps() {
        let points = [
            (t("2026-12-01T10:00:00Z"), Some(1.0)),
            (t("2026-12-01T10:01:00Z"), Some(9.0)),
            (t("2026-12-01T10:02:00Z"), None),
            (t("2026-12-01T10:03:00Z"), Some(2.0)),
        ];
        let spans = [StateSpan {
            state: "firing",
            from: t("2026-12-01T10:01:00Z"),
            to: t("2026-12-01T10:03:00Z"),
        }];
        let svg = ValueChart {
            id: "c",
            label: "l",
            from: points[0].0,
            to: points[3].0,
            points: &points,
            threshold: Some(5.0),
            unit: "%",
            spans: &spans,
        }
        .svg();
        assert!(
            svg.contains("class=\"threshold\" data-value=\"5\""),
            "{svg}"
        );
        assert_eq!(svg.matches("<polyline").count(), 2, "a gap splits the line");
        assert!(svg.contains("data-points=\"3\""));
        assert!(svg.contains("class=\"span firing\""));
        // Times in UTC with their instants, for local-time.js.
        assert!(
            svg.contains(
                "<title data-utc=\"2026-12-01T10:01:00.000Z 2026-12-01T10:03:00.000Z\">firing from \
                 2026-12-01 10:01:00.000 UTC to 2026-12-01 10:03:00.000 UTC</title>"
            ),
            "{svg}"
        );
        assert!(
            svg.contains("data-utc=\"2026-12-01T10:00:00.000Z\">12-01 10:00 UTC<title>2026-12-01 10:00:00 UTC</title></text>"),
            "{svg}"
        );
    }
}
