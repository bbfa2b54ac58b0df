//! This proxy's share of every hard budget's remaining amount (`docs/cost.md`,
//! "Shares among proxies"). Rate limits are not split: the proxies claim
//! them from a shared pool ([`crate::tiers`]), which uses the live count
//! only to size its blocks, and a fixed share for a proxy outside the pool.
//!
//! With `proxy.budgets.share` set the share is that fixed number (one proxy,
//! or a hand-made split). Otherwise it is derived from the live proxies in
//! PostgreSQL ([`crate::membership`] refreshes it in the background):
//!
//! - an equal split, `1/N` of the N live proxies ([`Share::OneOf`]): a
//!   budget's remaining amount divided by N rounded down to 20 decimals, so
//!   the N parts never sum above the whole;
//! - 0 while this proxy has joined but some other live proxy has not yet
//!   applied the join (it still holds its larger, older share);
//! - 0 once the lease of the last successful refresh has run out on this
//!   proxy's own clock (`lease_ms` after that refresh *started*, so never
//!   later than the database's expiry of its row): a proxy that cannot
//!   renew stops spending its share before the others take it over.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::metrics::FloatGauge;
use prometheus_client::metrics::gauge::Gauge;

/// This proxy's part of a budget's remaining amount (or, fixed, of a rate
/// limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// `proxy.budgets.share`, in (0, 1].
    Fixed(Decimal),
    /// One equal part of the live proxies' (`1/n`, `n >= 1`).
    OneOf(u64),
    /// Nothing: joining, or the lease ran out.
    Nothing,
}

impl Share {
    /// The equal share of one of `live` proxies, or nothing while this
    /// proxy's join is `pending` (or nobody is live, which cannot be after
    /// a successful refresh: this proxy is one of them).
    pub fn equal(live: usize, pending: bool) -> Self {
        if pending || live == 0 {
            Share::Nothing
        } else {
            Share::OneOf(live as u64)
        }
    }

    /// The share as a decimal (rounded down to 28 digits; for messages,
    /// metrics and comparisons).
    pub fn as_decimal(self) -> Decimal {
        match self {
            Share::Fixed(d) => d,
            Share::OneOf(n) => Self::part(Decimal::ONE, n),
            Share::Nothing => Decimal::ZERO,
        }
    }

    /// `amount / n` rounded down to 20 decimals (Decimal's own division
    /// rounds its 28th digit to nearest, which may be up): n such parts
    /// never sum above `amount`.
    fn part(amount: Decimal, n: u64) -> Decimal {
        (amount / Decimal::from(n.max(1)))
            .round_dp_with_strategy(PART_SCALE, RoundingStrategy::ToZero)
    }

    /// This share of an amount of money (a budget's remaining amount).
    pub fn of_money(self, amount: Decimal) -> Decimal {
        match self {
            Share::Fixed(d) => d * amount,
            Share::OneOf(n) => Self::part(amount, n),
            Share::Nothing => Decimal::ZERO,
        }
    }

    /// This share of a per-minute count, rounded down to a whole number.
    pub fn of_count(self, amount: u64) -> u64 {
        match self {
            Share::Fixed(d) => (d * Decimal::from(amount)).floor().to_u64().unwrap_or(0),
            Share::OneOf(n) => amount / n.max(1),
            Share::Nothing => 0,
        }
    }

    /// The smaller of two shares.
    pub fn min(self, other: Share) -> Share {
        if other.as_decimal() < self.as_decimal() {
            other
        } else {
            self
        }
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Share::Fixed(d) => write!(f, "{}", d.normalize()),
            Share::OneOf(1) => write!(f, "1"),
            Share::OneOf(n) => write!(f, "1/{n}"),
            Share::Nothing => write!(f, "0"),
        }
    }
}

/// Decimals a part of money keeps (rounded down).
pub const PART_SCALE: u32 = 20;

#[derive(Debug)]
struct State {
    share: Share,
    /// `None`: fixed (no expiry).
    valid_until: Option<Instant>,
    live: usize,
    pending: bool,
}

/// The current share; cheap to read on every call.
#[derive(Debug)]
pub struct Shares {
    state: Mutex<State>,
    /// `tollgate_proxy_share` and `tollgate_proxy_live_proxies`.
    share_gauge: FloatGauge,
    live_gauge: Gauge,
}

impl Shares {
    /// A fixed share (`proxy.budgets.share`).
    pub fn fixed(share: Decimal) -> Self {
        Self::with(State {
            share: Share::Fixed(share),
            valid_until: None,
            live: 1,
            pending: false,
        })
    }

    /// A derived share: 0 until the first refresh.
    pub fn derived() -> Self {
        Self::with(State {
            share: Share::Nothing,
            valid_until: Some(Instant::now()),
            live: 0,
            pending: true,
        })
    }

    fn with(state: State) -> Self {
        Self {
            state: Mutex::new(state),
            share_gauge: FloatGauge::default(),
            live_gauge: Gauge::default(),
        }
    }

    /// Report the share in these gauges (the proxy's metrics).
    pub fn reporting_in(mut self, share: FloatGauge, live: Gauge) -> Self {
        self.share_gauge = share;
        self.live_gauge = live;
        self.publish();
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the share is fixed by configuration.
    pub fn is_fixed(&self) -> bool {
        self.lock().valid_until.is_none()
    }

    /// The share in force at `now`.
    pub fn at(&self, now: Instant) -> Share {
        let state = self.lock();
        match state.valid_until {
            Some(until) if now >= until => Share::Nothing,
            _ => state.share,
        }
    }

    /// The share in force now.
    pub fn current(&self) -> Share {
        self.at(Instant::now())
    }

    /// How many proxies the last refresh saw live (1 when fixed).
    pub fn live(&self) -> usize {
        self.lock().live
    }

    /// A refresh that started at `started` saw `live` proxies (this one
    /// pending or not): the share holds until `started + lease`.
    pub fn apply(&self, live: usize, pending: bool, started: Instant, lease: Duration) {
        {
            let mut state = self.lock();
            if state.valid_until.is_none() {
                return;
            }
            state.share = Share::equal(live, pending);
            state.valid_until = Some(started + lease);
            state.live = live;
            state.pending = pending;
        }
        self.publish();
    }

    /// Update the gauges (also when the share lapses: the renewal loop
    /// calls it after a failed refresh).
    pub fn publish(&self) {
        let (share, live) = (self.current(), self.live());
        self.share_gauge
            .set(share.as_decimal().to_f64().unwrap_or(0.0));
        self.live_gauge.set(i64::try_from(live).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn equal_parts_of_money_are_exact_to_20_decimals_and_never_sum_above_the_whole() {
        assert_eq!(Share::equal(1, false).of_money(d("0.5")), d("0.5"));
        assert_eq!(Share::equal(2, false).of_money(d("0.5")), d("0.25"));
        assert_eq!(
            Share::equal(3, false).of_money(d("0.5")),
            d("0.16666666666666666666")
        );
        assert_eq!(
            Share::equal(3, false).of_money(d("2")),
            d("0.66666666666666666666")
        );
        for n in 1..=64u64 {
            for amount in ["1", "0.5", "0.000000000001", "999999999999.999999999999"] {
                let part = Share::OneOf(n).of_money(d(amount));
                assert!(
                    part * Decimal::from(n) <= d(amount),
                    "{n} of {amount}: {part}"
                );
            }
        }
        assert_eq!(Share::equal(3, true), Share::Nothing);
        assert_eq!(Share::equal(0, false), Share::Nothing);
        assert_eq!(Share::Nothing.of_money(d("5")), Decimal::ZERO);
        assert_eq!(Share::Fixed(d("0.25")).of_money(d("0.5")), d("0.125"));
    }

    #[test]
    fn parts_of_counts_are_rounded_down() {
        assert_eq!(Share::OneOf(3).of_count(10), 3);
        assert_eq!(Share::OneOf(3).of_count(6), 2);
        assert_eq!(Share::OneOf(2).of_count(9), 4);
        assert_eq!(
            Share::OneOf(1).of_count(1_000_000_000_000),
            1_000_000_000_000
        );
        assert_eq!(Share::Fixed(d("0.3")).of_count(10), 3);
        assert_eq!(Share::Fixed(d("0.25")).of_count(3), 0);
        assert_eq!(Share::Nothing.of_count(50), 0);
        assert_eq!(Share::OneOf(2).min(Share::OneOf(3)), Share::OneOf(3));
        assert_eq!(Share::OneOf(2).min(Share::Nothing), Share::Nothing);
        assert_eq!(Share::OneOf(3).to_string(), "1/3");
        assert_eq!(Share::OneOf(3).as_decimal(), d("0.33333333333333333333"));
    }

    #[test]
    fn a_derived_share_lapses_to_nothing_when_its_lease_runs_out() {
        let shares = Shares::derived();
        assert_eq!(shares.current(), Share::Nothing);
        let started = Instant::now();
        shares.apply(2, false, started, Duration::from_secs(10));
        assert_eq!(shares.at(started + Duration::from_secs(9)), Share::OneOf(2));
        assert_eq!(shares.at(started + Duration::from_secs(10)), Share::Nothing);
        shares.apply(3, true, started, Duration::from_secs(10));
        assert_eq!(shares.at(started), Share::Nothing);
        assert_eq!(shares.live(), 3);
    }

    #[test]
    fn a_fixed_share_ignores_refreshes() {
        let shares = Shares::fixed(d("0.25"));
        shares.apply(1, false, Instant::now(), Duration::from_secs(1));
        assert_eq!(
            shares.at(Instant::now() + Duration::from_secs(3600)),
            Share::Fixed(d("0.25"))
        );
        assert!(shares.is_fixed());
    }
}
