//! The figures a bench run hands back, the catalogue that gives each one
//! its meaning (unit, which way is better, how much noise it has), and
//! how a run compares with a recorded baseline. Nothing here fails on a
//! figure: a run that drifts past a figure's tolerance is *flagged* for
//! people to read (`docs/performance.md`, "Benchmarks on every change").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which way a figure improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One figure's meaning. The key is what the baseline file stores.
#[derive(Debug)]
pub struct Measure {
    pub key: &'static str,
    pub unit: &'static str,
    pub what: &'static str,
    pub better: Better,
    /// How many times worse than the baseline a run may be before it is
    /// flagged: the run-to-run spread measured on the 2-core machine,
    /// with room, so that noise is not flagged and an 8x regression is.
    pub tolerance: f64,
    /// Values are taken as at least this before they are compared, so a
    /// figure that can be zero or negative (an added latency inside the
    /// noise, no errors at all) still gives a ratio.
    pub floor: f64,
}

pub const INGEST_RATE: Measure = Measure {
    key: "ingest.events_per_s",
    unit: "events/s",
    what: "end to end, first produce to every row visible in ClickHouse",
    better: Better::Higher,
    tolerance: 1.5,
    floor: 1.0,
};
pub const INGEST_PROCESSOR_CPU: Measure = Measure {
    key: "ingest.processor_cpu_us_per_event",
    unit: "µs/event",
    what: "the processor's CPU per event",
    better: Better::Lower,
    tolerance: 1.5,
    floor: 0.1,
};
pub const INGEST_CLICKHOUSE_CPU: Measure = Measure {
    key: "ingest.clickhouse_cpu_us_per_event",
    unit: "µs/event",
    what: "ClickHouse's CPU per event (inserts and merges)",
    better: Better::Lower,
    tolerance: 2.0,
    floor: 0.1,
};
pub const INGEST_PEAK_RSS: Measure = Measure {
    key: "ingest.processor_peak_rss_mib",
    unit: "MiB",
    what: "the processor's peak resident memory",
    better: Better::Lower,
    tolerance: 1.3,
    floor: 1.0,
};
pub const INGEST_API_JSON_CPU: Measure = Measure {
    key: "ingest_api.json_cpu_us_per_event",
    unit: "µs/event",
    what: "the ingest API's CPU per event, JSON batches of 1,000",
    better: Better::Lower,
    tolerance: 1.5,
    floor: 0.1,
};
pub const INGEST_API_OTLP_CPU: Measure = Measure {
    key: "ingest_api.otlp_cpu_us_per_span",
    unit: "µs/span",
    what: "the ingest API's CPU per span, OTLP batches of 1,000",
    better: Better::Lower,
    tolerance: 1.5,
    floor: 0.1,
};
pub const PROXY_ADDED_P50: Measure = Measure {
    key: "proxy.added_p50_ms",
    unit: "ms",
    what: "latency the proxy adds at p50 (proxied less direct)",
    better: Better::Lower,
    tolerance: 3.0,
    floor: 0.2,
};
pub const PROXY_ADDED_P99: Measure = Measure {
    key: "proxy.added_p99_ms",
    unit: "ms",
    what: "latency the proxy adds at p99 (proxied less direct)",
    better: Better::Lower,
    tolerance: 5.0,
    floor: 1.0,
};
pub const PROXY_OWN_P50: Measure = Measure {
    key: "proxy.own_p50_ms",
    unit: "ms",
    what: "the proxy's own time at p50 (Server-Timing overhead)",
    better: Better::Lower,
    tolerance: 3.0,
    floor: 0.02,
};
pub const PROXY_CPU: Measure = Measure {
    key: "proxy.cpu_ms_per_call",
    unit: "ms/call",
    what: "the proxy's CPU per call",
    better: Better::Lower,
    tolerance: 1.5,
    floor: 0.001,
};
pub const PROXY_ERRORS: Measure = Measure {
    key: "proxy.errors",
    unit: "calls",
    what: "calls through the proxy that failed",
    better: Better::Lower,
    tolerance: 1.0,
    floor: 0.5,
};
pub const PROXY_STREAM_TTFT_ADDED_P50: Measure = Measure {
    key: "proxy.stream_ttft_added_p50_ms",
    unit: "ms",
    what: "time to first token the proxy adds to a stream at p50",
    better: Better::Lower,
    tolerance: 3.0,
    floor: 0.2,
};
pub const PROXY_STREAM_CPU: Measure = Measure {
    key: "proxy.stream_cpu_ms_per_call",
    unit: "ms/call",
    what: "the proxy's CPU per streamed call (16 tokens)",
    better: Better::Lower,
    tolerance: 1.5,
    floor: 0.001,
};
pub const PROXY_STREAM_ERRORS: Measure = Measure {
    key: "proxy.stream_errors",
    unit: "calls",
    what: "streamed calls through the proxy that failed",
    better: Better::Lower,
    tolerance: 1.0,
    floor: 0.5,
};
pub const AUDIT_VERIFY_RATE: Measure = Measure {
    key: "audit.verify_entries_per_s",
    unit: "entries/s",
    what: "`verify-audit`'s verification, read from ClickHouse",
    better: Better::Higher,
    tolerance: 1.75,
    floor: 1.0,
};
pub const AUDIT_MEMORY_RATE: Measure = Measure {
    key: "audit.in_memory_entries_per_s",
    unit: "entries/s",
    what: "one chain verified from memory, one thread",
    better: Better::Higher,
    tolerance: 1.75,
    floor: 1.0,
};
pub const REPORTS_SLOWEST_P95: Measure = Measure {
    key: "reports.slowest_p95_ms",
    unit: "ms",
    what: "the slowest report or page's p95",
    better: Better::Lower,
    tolerance: 2.0,
    floor: 1.0,
};
pub const REPORTS_MEDIAN_P95: Measure = Measure {
    key: "reports.median_p95_ms",
    unit: "ms",
    what: "the median of every report and page's p95",
    better: Better::Lower,
    tolerance: 2.0,
    floor: 1.0,
};

/// Every figure a regression run takes, in the order it prints them.
pub const CATALOGUE: &[&Measure] = &[
    &INGEST_RATE,
    &INGEST_PROCESSOR_CPU,
    &INGEST_CLICKHOUSE_CPU,
    &INGEST_PEAK_RSS,
    &INGEST_API_JSON_CPU,
    &INGEST_API_OTLP_CPU,
    &PROXY_ADDED_P50,
    &PROXY_ADDED_P99,
    &PROXY_OWN_P50,
    &PROXY_CPU,
    &PROXY_ERRORS,
    &PROXY_STREAM_TTFT_ADDED_P50,
    &PROXY_STREAM_CPU,
    &PROXY_STREAM_ERRORS,
    &AUDIT_VERIFY_RATE,
    &AUDIT_MEMORY_RATE,
    &REPORTS_SLOWEST_P95,
    &REPORTS_MEDIAN_P95,
];

/// What one bench measured, by measure key.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Figures(BTreeMap<String, f64>);

impl Figures {
    /// Record a figure, to three decimals (finer than any of them is
    /// measured); a value that is not a finite number is left out (a bench
    /// that could not take it says so on its own).
    pub fn set(&mut self, measure: &Measure, value: f64) {
        if value.is_finite() {
            self.0
                .insert(measure.key.to_string(), (value * 1000.0).round() / 1000.0);
        }
    }

    pub fn get(&self, measure: &Measure) -> Option<f64> {
        self.0.get(measure.key).copied()
    }

    pub fn extend(&mut self, other: Figures) {
        self.0.extend(other.0);
    }
}

/// A run kept to compare later runs with (`bench/baseline.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// When the run was taken (RFC 3339).
    pub recorded: String,
    /// The commit that was measured (`git describe`), if known.
    pub commit: Option<String>,
    /// The machine it ran on, as people read it.
    pub machine: String,
    pub figures: Figures,
}

impl Baseline {
    /// Parse a baseline file's text; the error names the field and why.
    pub fn parse(text: &str) -> Result<Baseline, String> {
        let baseline: Baseline = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (key, value) in &baseline.figures.0 {
            if !CATALOGUE.iter().any(|m| m.key == key) {
                return Err(format!(
                    "figures.{key}: not a figure of the catalogue (known: {})",
                    CATALOGUE
                        .iter()
                        .map(|m| m.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !value.is_finite() || (*value < 0.0 && key != PROXY_ADDED_P50.key) {
                return Err(format!(
                    "figures.{key}: {value} is not a figure this measure can take"
                ));
            }
        }
        Ok(baseline)
    }
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub key: &'static str,
    pub unit: &'static str,
    pub now: Option<f64>,
    pub baseline: Option<f64>,
    /// How many times worse than the baseline (below 1: better), when
    /// both were measured.
    pub worse_by: Option<f64>,
    /// Worse than the measure's tolerance allows.
    pub flagged: bool,
}

/// How many times worse `now` is than `baseline` for `measure` (1: the
/// same; 2: twice as slow, half the rate; 0.5: twice as good).
pub fn worse_by(measure: &Measure, now: f64, baseline: f64) -> f64 {
    let (now, baseline) = (now.max(measure.floor), baseline.max(measure.floor));
    match measure.better {
        Better::Higher => baseline / now,
        Better::Lower => now / baseline,
    }
}

/// Every catalogued figure of this run against the baseline's.
pub fn compare(now: &Figures, baseline: Option<&Figures>) -> Vec<Row> {
    CATALOGUE
        .iter()
        .map(|measure| {
            let (n, b) = (now.get(measure), baseline.and_then(|b| b.get(measure)));
            let worse = n.zip(b).map(|(n, b)| worse_by(measure, n, b));
            Row {
                key: measure.key,
                unit: measure.unit,
                now: n,
                baseline: b,
                worse_by: worse,
                flagged: worse.is_some_and(|w| w > measure.tolerance),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(pairs: &[(&Measure, f64)]) -> Figures {
        let mut f = Figures::default();
        for (m, v) in pairs {
            f.set(m, *v);
        }
        f
    }

    fn row<'a>(rows: &'a [Row], measure: &Measure) -> &'a Row {
        rows.iter()
            .find(|r| r.key == measure.key)
            .expect("every catalogued figure has a row")
    }

    #[test]
    fn the_catalogue_names_each_figure_once() {
        let mut keys: Vec<&str> = CATALOGUE.iter().map(|m| m.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), CATALOGUE.len());
        for m in CATALOGUE {
            assert!(
                m.tolerance >= 1.0,
                "{}: a tolerance below 1 flags an improvement",
                m.key
            );
            assert!(m.floor > 0.0, "{}: the floor keeps ratios finite", m.key);
        }
    }

    #[test]
    fn an_eightfold_drop_in_throughput_is_flagged_and_noise_is_not() {
        let baseline = figures(&[(&INGEST_RATE, 28_000.0), (&INGEST_PEAK_RSS, 160.0)]);
        let slower = figures(&[(&INGEST_RATE, 3_500.0), (&INGEST_PEAK_RSS, 170.0)]);
        let rows = compare(&slower, Some(&baseline));
        let rate = row(&rows, &INGEST_RATE);
        assert_eq!(rate.worse_by, Some(8.0));
        assert!(rate.flagged);
        let rss = row(&rows, &INGEST_PEAK_RSS);
        assert_eq!(rss.worse_by, Some(170.0 / 160.0));
        assert!(!rss.flagged);

        let noisy = figures(&[(&INGEST_RATE, 21_000.0)]);
        assert!(!row(&compare(&noisy, Some(&baseline)), &INGEST_RATE).flagged);
    }

    #[test]
    fn a_better_run_is_below_one_and_never_flagged() {
        let baseline = figures(&[(&PROXY_ADDED_P99, 4.0), (&AUDIT_VERIFY_RATE, 100_000.0)]);
        let better = figures(&[(&PROXY_ADDED_P99, 1.0), (&AUDIT_VERIFY_RATE, 400_000.0)]);
        let rows = compare(&better, Some(&baseline));
        assert_eq!(row(&rows, &PROXY_ADDED_P99).worse_by, Some(0.25));
        assert_eq!(row(&rows, &AUDIT_VERIFY_RATE).worse_by, Some(0.25));
        assert!(rows.iter().all(|r| !r.flagged));
    }

    #[test]
    fn figures_at_zero_or_below_compare_through_the_floor() {
        // No errors in the baseline, three now: flagged.
        let rows = compare(
            &figures(&[(&PROXY_ERRORS, 3.0), (&PROXY_ADDED_P50, -0.1)]),
            Some(&figures(&[(&PROXY_ERRORS, 0.0), (&PROXY_ADDED_P50, 0.6)])),
        );
        let errors = row(&rows, &PROXY_ERRORS);
        assert_eq!(errors.worse_by, Some(6.0));
        assert!(errors.flagged);
        // Zero then, zero now: the same.
        let same = compare(
            &figures(&[(&PROXY_ERRORS, 0.0)]),
            Some(&figures(&[(&PROXY_ERRORS, 0.0)])),
        );
        assert_eq!(row(&same, &PROXY_ERRORS).worse_by, Some(1.0));
        assert!(!row(&same, &PROXY_ERRORS).flagged);
        // A negative added latency (inside the noise) counts as the floor.
        let added = row(&rows, &PROXY_ADDED_P50);
        assert_eq!(added.worse_by, Some(0.2 / 0.6));
        assert!(!added.flagged);
    }

    #[test]
    fn a_figure_missing_on_either_side_is_shown_without_a_ratio() {
        let rows = compare(&figures(&[(&INGEST_RATE, 1.0)]), None);
        let rate = row(&rows, &INGEST_RATE);
        assert_eq!(
            (rate.now, rate.baseline, rate.worse_by),
            (Some(1.0), None, None)
        );
        assert!(!rate.flagged);
        let rss = row(&rows, &INGEST_PEAK_RSS);
        assert_eq!((rss.now, rss.worse_by), (None, None));
    }

    #[test]
    fn a_non_finite_value_is_not_recorded() {
        let f = figures(&[(&INGEST_RATE, f64::NAN), (&PROXY_CPU, f64::INFINITY)]);
        assert_eq!(f, Figures::default());
    }

    #[test]
    fn a_baseline_round_trips_and_bad_ones_name_the_field() {
        let baseline = Baseline {
            recorded: "2026-12-06T02:00:00Z".into(),
            commit: Some("abc1234".into()),
            machine: "2 cores".into(),
            figures: figures(&[(&INGEST_RATE, 27_500.0), (&PROXY_ADDED_P50, -0.05)]),
        };
        let text = serde_json::to_string(&baseline).expect("serializes");
        let back = Baseline::parse(&text).expect("parses");
        assert_eq!(back.figures, baseline.figures);

        let unknown = Baseline::parse(
            r#"{"recorded":"x","commit":null,"machine":"m","figures":{"ingest.speed":1}}"#,
        )
        .expect_err("an unknown figure");
        assert!(
            unknown.starts_with("figures.ingest.speed: not a figure"),
            "{unknown}"
        );

        let negative = Baseline::parse(
            r#"{"recorded":"x","commit":null,"machine":"m","figures":{"ingest.events_per_s":-5}}"#,
        )
        .expect_err("a negative rate");
        assert!(
            negative.starts_with("figures.ingest.events_per_s: -5"),
            "{negative}"
        );

        let missing = Baseline::parse(r#"{"recorded":"x","machine":"m"}"#).expect_err("no figures");
        assert!(missing.contains("missing field `figures`"), "{missing}");

        let typo = Baseline::parse(r#"{"recorded":"x","machine":"m","figures":{},"figurs":{}}"#)
            .expect_err("an unknown field");
        assert!(typo.contains("unknown field `figurs`"), "{typo}");

        let text_value = Baseline::parse(
            r#"{"recorded":"x","machine":"m","figures":{"ingest.events_per_s":"fast"}}"#,
        )
        .expect_err("not a number");
        assert!(
            text_value.contains("invalid type: string \"fast\""),
            "{text_value}"
        );
    }
}
