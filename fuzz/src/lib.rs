//! The properties the fuzz targets check (docs/fuzzing.md), one module per
//! parser; the targets in `fuzz_targets/` only hand libFuzzer's bytes to
//! them. Every property is an `assert!`: a violation is a crash libFuzzer
//! saves, and every crash becomes a unit test in the crate that owns the
//! parser.

pub mod contract;
pub mod prices;
pub mod sse;

use chrono::{DateTime, TimeZone, Utc};

/// The fixed "now" of every target, so a crash replays the same way on
/// any day.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}
