//! `tollgate bench ingest --rate` at a small N against the dev stack: it
//! paces the producer, sees every event in ClickHouse, and prints the
//! visibility lag and each component's CPU. Not about speed: the only
//! time asserted is a lower bound the schedule sets.

use crate::support::TestEnv;

const EVENTS: u64 = 3_000;
const RATE: u64 = 1_000;
const CHUNK: u64 = 500;

/// The numbers of the line that follows `header` in `out`.
fn figures_after(out: &str, header: &str) -> Vec<f64> {
    let mut lines = out.lines().skip_while(|l| !l.contains(header));
    lines.next();
    let row = lines
        .find(|l| !l.trim().is_empty() && !l.contains("ms"))
        .unwrap_or_else(|| panic!("no figures after `{header}` in:\n{out}"));
    row.split_whitespace()
        .map(|f| {
            f.parse()
                .unwrap_or_else(|_| panic!("not a number in `{row}`"))
        })
        .collect()
}

/// Seconds of the first `name` line (`  name   12.34 s ...`).
fn seconds(out: &str, name: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"));
    line.trim_start()[name.len()..]
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in `{line}`"))
}

#[tokio::test]
async fn a_paced_run_delivers_every_event_and_prints_visibility_lag_and_cpu() {
    let env = TestEnv::new("bench_ingest").await;
    let out = env.run(&[
        "bench",
        "ingest",
        "--events",
        &EVENTS.to_string(),
        "--rate",
        &RATE.to_string(),
        "--chunk",
        &CHUNK.to_string(),
        "--timeout-secs",
        "300",
    ]);

    // The last chunk was due (EVENTS - CHUNK) / RATE = 2.5 s after the
    // first: a paced producer cannot finish before that.
    let producer = seconds(&out, "producer");
    assert!(producer >= 2.5, "the producer was not paced:\n{out}");

    // The lag table ends with every event stored and no backlog.
    let last = out
        .lines()
        .take_while(|l| !l.contains("CPU during the run"))
        .filter(|l| l.split_whitespace().count() == 5)
        .last()
        .unwrap_or_else(|| panic!("no lag table in:\n{out}"));
    let cells: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(cells[1..4], ["3000", "3000", "0"], "{out}");

    // Visibility lag: every event seen, p50 <= p99 <= max, and not zero
    // (a row cannot be read before it was produced).
    let lag = figures_after(&out, "visibility lag");
    let [p50, p99, max, unseen] = lag[..] else {
        panic!("visibility lag row has {} figures:\n{out}", lag.len());
    };
    assert_eq!(unseen, 0.0, "{out}");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{out}");
    assert!(out.contains("produced at a steady 1000 events/s"), "{out}");

    // CPU of the processor (it did the work) and of the dev stack's
    // ClickHouse server and Kafka broker, found by their ports.
    assert!(seconds(&out, "processor  ") > 0.0, "{out}");
    for name in ["ClickHouse", "Kafka broker"] {
        assert!(seconds(&out, name) > 0.0, "{out}");
    }
}
