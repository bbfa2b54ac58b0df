//! When the breakers have fallen behind the events topic by more than they
//! judge, they skip to its last window instead of reading the rest.
//!
//! A breaker judges the calls of the last `window_secs` and leaves every
//! older event out ([`super::BreakerRuntime`]'s `on_event`). A call is
//! produced after it happened, so a message that Kafka stamped (its
//! `CreateTime`, set by the producer when it sent it) longer ago than the
//! window holds a call the breakers would leave out too: reading it is
//! work for nothing. On a machine whose cores the folds keep busy the
//! breakers' consumer can fall minutes behind; each such minute is one
//! more the breakers judge late. So when a message is more than
//! [`BEHIND_WINDOWS`] windows old, the consumer moves every partition to
//! the first message stamped within the last window (Kafka's offsets for
//! a time) and reads on from there, at most once per window.

/// How many windows old a message must be for the breakers to skip: twice
/// the window, so a consumer that is only briefly behind (a burst) reads
/// on, and the producers' clocks may run a little ahead of ours.
pub const BEHIND_WINDOWS: i64 = 2;

/// Decides when to skip, from the messages' timestamps (pure: the clock is
/// passed in).
#[derive(Debug, Clone)]
pub struct CatchUp {
    window_ms: i64,
    last_skip_ms: Option<i64>,
}

impl CatchUp {
    pub fn new(window_secs: u64) -> Self {
        Self {
            window_ms: i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            last_skip_ms: None,
        }
    }

    /// For a message Kafka stamped at `stamped_ms` (`None`: not stamped),
    /// read at `now_ms`: the time to skip to (the start of the last
    /// window), or `None` to read on. A skip is taken at most once per
    /// window, since the skip itself takes a moment and the messages
    /// already fetched are still old.
    pub fn skip_to(&mut self, stamped_ms: Option<i64>, now_ms: i64) -> Option<i64> {
        let stamped = stamped_ms?;
        let behind = now_ms.saturating_sub(stamped);
        if behind <= self.window_ms.saturating_mul(BEHIND_WINDOWS) {
            return None;
        }
        if matches!(self.last_skip_ms, Some(last) if now_ms.saturating_sub(last) < self.window_ms) {
            return None;
        }
        self.last_skip_ms = Some(now_ms);
        Some(now_ms.saturating_sub(self.window_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn a_message_within_two_windows_is_read_on() {
        let mut catch_up = CatchUp::new(60);
        let now = 10 * MINUTE;
        assert_eq!(catch_up.skip_to(Some(now), now), None);
        assert_eq!(catch_up.skip_to(Some(now - 2 * MINUTE), now), None);
        assert_eq!(catch_up.skip_to(None, now), None, "not stamped");
        // Stamped ahead of our clock.
        assert_eq!(catch_up.skip_to(Some(now + MINUTE), now), None);
    }

    #[test]
    fn an_older_message_skips_to_the_last_window_once_per_window() {
        let mut catch_up = CatchUp::new(60);
        let now = 10 * MINUTE;
        assert_eq!(
            catch_up.skip_to(Some(now - 2 * MINUTE - 1), now),
            Some(now - MINUTE)
        );
        // The messages fetched before the skip are still old.
        assert_eq!(catch_up.skip_to(Some(now - 5 * MINUTE), now + 1_000), None);
        assert_eq!(
            catch_up.skip_to(Some(now - 5 * MINUTE), now + MINUTE - 1),
            None
        );
        assert_eq!(
            catch_up.skip_to(Some(now - 5 * MINUTE), now + MINUTE),
            Some(now)
        );
    }
}
