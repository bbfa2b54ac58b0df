//! `[breakers]`: every threshold of the fleet-wide circuit breakers, with
//! defaults in the spirit of resilience4j (`docs/breakers.md` says why each
//! is what it is). Checked once at start: a value that cannot work is an
//! error naming the key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::RECENT_EVENT_IDS_MAX;
use crate::error::{Error, Result};

/// The breaker's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakersConfig {
    /// Sliding window, seconds: the rates are over calls that arrived this
    /// recently (1-second buckets).
    pub window_secs: u64,
    /// A breaker opens only when the window holds at least this many calls.
    pub minimum_calls: u64,
    /// Open when at least this percentage of the window's calls failed
    /// (429, 5xx, no answer).
    pub failure_rate_percent: u8,
    /// A call that took longer than this (milliseconds) is slow.
    pub slow_call_ms: u64,
    /// Open when at least this percentage of the window's calls were slow.
    pub slow_call_rate_percent: u8,
    /// How long an open breaker stays open before it lets probes through.
    pub open_secs: u64,
    /// Probe outcomes, fleet-wide, that decide a half-open breaker.
    pub half_open_probes: u64,
    /// Probe calls each proxy may send per half-open generation.
    pub probes_per_proxy: u32,
    /// A half-open breaker decides on what came after this long, even with
    /// fewer than `half_open_probes` outcomes (closed when none came).
    pub max_wait_in_half_open_secs: u64,
    /// Also keep one breaker per provider over all its models.
    pub per_provider: bool,
    /// How long a published open / half-open decision holds when nothing
    /// renews it (`valid_until`): a dead processor cannot keep a provider out
    /// longer than this.
    pub decision_ttl_secs: u64,
    /// Open and half-open decisions are re-published this often, moving
    /// `valid_until` on.
    pub republish_secs: u64,
    /// `fetch.wait.max.ms` of the breaker's events consumer: the longest a
    /// failure waits in the broker before the breaker sees it.
    pub fetch_wait_max_ms: u64,
    /// How often time-driven transitions (open -> half-open, half-open
    /// max wait) are checked, milliseconds.
    pub tick_ms: u64,
    /// How many of the last counted calls' event ids the breakers remember
    /// (over every partition): a copy of one of them (a client's retry, a
    /// proxy's resend) is not counted again. 0 remembers none.
    pub recent_event_ids: usize,
}

impl Default for BreakersConfig {
    fn default() -> Self {
        Self {
            window_secs: 60,
            minimum_calls: 20,
            failure_rate_percent: 50,
            slow_call_ms: 30_000,
            slow_call_rate_percent: 100,
            open_secs: 30,
            half_open_probes: 5,
            probes_per_proxy: 2,
            max_wait_in_half_open_secs: 30,
            per_provider: true,
            decision_ttl_secs: 120,
            republish_secs: 20,
            fetch_wait_max_ms: 10,
            tick_ms: 100,
            // 4.5 MB; a minute of 3,300 counted calls a second.
            recent_event_ids: 200_000,
        }
    }
}

impl BreakersConfig {
    /// Every rule a value must follow; the first broken one, naming its key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Config(format!("breakers.{key} {why}")));
        let positive = [
            ("window_secs", self.window_secs),
            ("minimum_calls", self.minimum_calls),
            ("slow_call_ms", self.slow_call_ms),
            ("open_secs", self.open_secs),
            ("half_open_probes", self.half_open_probes),
            ("probes_per_proxy", u64::from(self.probes_per_proxy)),
            (
                "max_wait_in_half_open_secs",
                self.max_wait_in_half_open_secs,
            ),
            ("decision_ttl_secs", self.decision_ttl_secs),
            ("republish_secs", self.republish_secs),
            ("tick_ms", self.tick_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return bad(key, "must be at least 1 (got 0)".into());
            }
        }
        for (key, value) in [
            ("failure_rate_percent", self.failure_rate_percent),
            ("slow_call_rate_percent", self.slow_call_rate_percent),
        ] {
            if !(1..=100).contains(&value) {
                return bad(
                    key,
                    format!("must be a percentage from 1 to 100 (got {value})"),
                );
            }
        }
        if self.window_secs > 3600 {
            return bad(
                "window_secs",
                format!(
                    "must be at most 3600: a breaker judges the recent past (got {})",
                    self.window_secs
                ),
            );
        }
        if self.republish_secs >= self.decision_ttl_secs {
            return bad(
                "republish_secs",
                format!(
                    "must be less than breakers.decision_ttl_secs ({}), or an open decision lapses before it is renewed (got {})",
                    self.decision_ttl_secs, self.republish_secs
                ),
            );
        }
        if self.fetch_wait_max_ms > 1000 {
            return bad(
                "fetch_wait_max_ms",
                format!(
                    "must be at most 1000: a failure should reach the breaker within tens of ms (got {})",
                    self.fetch_wait_max_ms
                ),
            );
        }
        if self.recent_event_ids > RECENT_EVENT_IDS_MAX {
            return bad(
                "recent_event_ids",
                format!(
                    "must be at most {RECENT_EVENT_IDS_MAX} (up to 28 bytes of memory each; got {})",
                    self.recent_event_ids
                ),
            );
        }
        Ok(())
    }

    pub fn window(&self) -> chrono::Duration {
        secs(self.window_secs)
    }

    pub fn open_for(&self) -> chrono::Duration {
        secs(self.open_secs)
    }

    pub fn max_wait_in_half_open(&self) -> chrono::Duration {
        secs(self.max_wait_in_half_open_secs)
    }

    pub fn decision_ttl(&self) -> chrono::Duration {
        secs(self.decision_ttl_secs)
    }

    pub fn republish_every(&self) -> Duration {
        Duration::from_secs(self.republish_secs)
    }

    pub fn tick_every(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

fn secs(value: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX / 1000))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BreakersConfig::default().validate().unwrap();
    }

    #[test]
    fn a_bad_value_is_named() {
        let cases: Vec<(BreakersConfig, &str)> = vec![
            (
                BreakersConfig {
                    minimum_calls: 0,
                    ..Default::default()
                },
                "breakers.minimum_calls must be at least 1",
            ),
            (
                BreakersConfig {
                    failure_rate_percent: 101,
                    ..Default::default()
                },
                "breakers.failure_rate_percent must be a percentage from 1 to 100 (got 101)",
            ),
            (
                BreakersConfig {
                    slow_call_rate_percent: 0,
                    ..Default::default()
                },
                "breakers.slow_call_rate_percent must be a percentage",
            ),
            (
                BreakersConfig {
                    republish_secs: 120,
                    ..Default::default()
                },
                "breakers.republish_secs must be less than breakers.decision_ttl_secs (120)",
            ),
            (
                BreakersConfig {
                    probes_per_proxy: 0,
                    ..Default::default()
                },
                "breakers.probes_per_proxy must be at least 1",
            ),
            (
                BreakersConfig {
                    window_secs: 7200,
                    ..Default::default()
                },
                "breakers.window_secs must be at most 3600",
            ),
            (
                BreakersConfig {
                    fetch_wait_max_ms: 5000,
                    ..Default::default()
                },
                "breakers.fetch_wait_max_ms must be at most 1000",
            ),
            (
                BreakersConfig {
                    recent_event_ids: 10_000_001,
                    ..Default::default()
                },
                "breakers.recent_event_ids must be at most 10000000",
            ),
        ];
        for (config, want) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} does not contain {want}");
        }
    }
}
