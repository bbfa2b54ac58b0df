//! The proxy's own time on a call, told to the client in a `Server-Timing`
//! header (the W3C header browsers' developer tools show) and to Prometheus
//! as `tollgate_proxy_overhead_seconds`.
//!
//! The overhead is the time from the handler taking the call to the
//! response's head being handed back to the server, less what the proxy
//! waited for: the client sending its body, and the providers (each
//! attempt from the moment it is sent until its response head arrives or
//! its error body is read, and the backoff before a retry). What is left
//! is the proxy's own work: authentication, parsing, the gates, the budget
//! reservation, the write-ahead log's record, and building the response.
//! The write-ahead log's part is also given on its own, since its `fsync`
//! is the one wait on a disk in the path.
//!
//! Not in it: the server reading the request head and writing the
//! response out, and a streamed body's chunks passing through (a channel
//! hop each). `docs/proxy.md`, "The proxy's own time", has the table.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use prometheus_client::metrics::histogram::Histogram;

/// The response header the timings are written to.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// What a call waited for outside the proxy's own work, and the
/// write-ahead log's share of that work. Set by the forwarding code as an
/// extension of the response it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// Attempts in flight and backoffs between them.
    pub provider: Duration,
    /// Writing (and with `durability = "fsync"`, syncing) the attempts'
    /// `started` records.
    pub wal: Duration,
}

/// The clock of one call, started when the handler takes it.
#[derive(Debug)]
pub struct CallClock {
    started: Instant,
    client: Duration,
}

impl CallClock {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            client: Duration::ZERO,
        }
    }

    /// Time spent reading the client's body: the client's, not the proxy's.
    pub fn client_sent(&mut self, took: Duration) {
        self.client += took;
    }

    /// The proxy's own time so far, given what the call waited for.
    pub fn overhead(&self, waits: Waits) -> Duration {
        self.started
            .elapsed()
            .saturating_sub(self.client)
            .saturating_sub(waits.provider)
    }
}

/// Milliseconds with microsecond precision, as `Server-Timing` writes them.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `Server-Timing` value: `overhead` always, `provider` when an
/// attempt was made, `wal` when a record was written.
pub fn server_timing(overhead: Duration, waits: Waits) -> String {
    let mut value = format!("overhead;dur={:.3};desc=\"tollgate\"", ms(overhead));
    if !waits.provider.is_zero() {
        let _ = write!(value, ", provider;dur={:.3}", ms(waits.provider));
    }
    if !waits.wal.is_zero() {
        let _ = write!(value, ", wal;dur={:.3}", ms(waits.wal));
    }
    value
}

/// Stamp `response` with its call's timings (a `Server-Timing` the
/// provider sent is replaced: its figures are in `provider`).
pub fn stamp(response: &mut Response, overhead: Duration, waits: Waits) {
    if let Ok(value) = HeaderValue::from_str(&server_timing(overhead, waits)) {
        response.headers_mut().insert(SERVER_TIMING, value);
    }
}

/// Read the figures of one `Server-Timing` value back: `(name, ms)` pairs
/// (for the bench and the tests; entries without a `dur` are left out).
pub fn parse_server_timing(value: &str) -> Vec<(String, f64)> {
    value
        .split(',')
        .filter_map(|entry| {
            let mut params = entry.split(';').map(str::trim);
            let name = params.next()?.to_string();
            let dur = params.find_map(|p| p.strip_prefix("dur="))?.parse().ok()?;
            Some((name, dur))
        })
        .collect()
}

/// The `dur` of entry `name` in a `Server-Timing` value, in ms.
pub fn server_timing_figure(value: &str, name: &str) -> Option<f64> {
    parse_server_timing(value)
        .into_iter()
        .find_map(|(n, ms)| (n == name).then_some(ms))
}

/// `tollgate_proxy_overhead_seconds`: 50 µs to 100 ms, fine below 5 ms
/// where the goal (< 1 ms at p99) is.
#[derive(Debug, Clone)]
pub struct OverheadHistogram(pub Histogram);

impl Default for OverheadHistogram {
    fn default() -> Self {
        Self(Histogram::new([
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002, 0.003, 0.005,
            0.01, 0.025, 0.05, 0.1,
        ]))
    }
}

impl OverheadHistogram {
    pub fn observe(&self, overhead: Duration) {
        self.0.observe(overhead.as_secs_f64());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_each_figure_in_milliseconds_and_reads_back() {
        let waits = Waits {
            provider: Duration::from_micros(10_250),
            wal: Duration::from_micros(150),
        };
        let value = server_timing(Duration::from_micros(412), waits);
        assert_eq!(
            value,
            "overhead;dur=0.412;desc=\"tollgate\", provider;dur=10.250, wal;dur=0.150"
        );
        assert_eq!(
            parse_server_timing(&value),
            [
                ("overhead".to_string(), 0.412),
                ("provider".to_string(), 10.25),
                ("wal".to_string(), 0.15)
            ]
        );
        // A refusal waited for nothing.
        assert_eq!(
            server_timing(Duration::from_micros(80), Waits::default()),
            "overhead;dur=0.080;desc=\"tollgate\""
        );
        assert_eq!(parse_server_timing("cache, db;desc=x"), []);
        assert_eq!(server_timing_figure(&value, "wal"), Some(0.15));
        assert_eq!(server_timing_figure(&value, "db"), None);
    }

    #[test]
    fn the_overhead_leaves_out_the_client_and_the_providers() {
        let mut clock = CallClock::start();
        std::thread::sleep(Duration::from_millis(30));
        clock.client_sent(Duration::from_millis(10));
        let waits = Waits {
            provider: Duration::from_millis(15),
            wal: Duration::from_millis(1),
        };
        let overhead = clock.overhead(waits);
        // 30 ms or more went by: at least 5 of them were the proxy's.
        assert!(overhead >= Duration::from_millis(5), "{overhead:?}");
        assert!(
            clock.started.elapsed() >= overhead + Duration::from_millis(25),
            "{overhead:?}"
        );
        // Never negative, whatever the waits claim.
        let all = Waits {
            provider: Duration::from_secs(60),
            wal: Duration::ZERO,
        };
        assert_eq!(clock.overhead(all), Duration::ZERO);
    }
}
