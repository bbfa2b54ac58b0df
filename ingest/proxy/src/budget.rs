//! Budget reservations: how the proxy keeps concurrent calls from overrunning
//! a hard budget (`docs/cost.md`, "Reserve and settle").
//!
//! The budget watcher (in `tollgate process`) publishes, for every subject
//! with a hard budget, a decision record carrying a [`BudgetState`]: per
//! period the limit and the spend folded so far, and the Kafka positions of
//! the events that spend includes. The proxy keeps, per subject, what it has
//! itself committed on top of that spend:
//!
//! - **reserved**: an upper-bound estimate of every call in flight, taken
//!   when the call is admitted;
//! - **charged**: the exact cost of every event its calls produced whose
//!   position the published spend does not include yet.
//!
//! A call is admitted only if, for every period of every budget subject it
//! belongs to, `reserved + charged + estimate <= share × (limit − spent)`,
//! where `share` is this proxy's part of the budget ([`crate::shares`]:
//! fixed by `proxy.budgets.share`, or one equal part of the live proxies').
//! When the call's events are emitted their cost is charged (priced with the
//! same catalog and formula as the processors); when the call ends its
//! reservation is released; when a record arrives whose positions cover a
//! charged event, the charge is dropped because the spend now includes it.
//! So, with estimates that bound the real cost, the proxy's calls can never
//! take a subject past its limit: the overrun bound is in `docs/cost.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::gauge::Gauge;
use rust_decimal::{Decimal, RoundingStrategy};
use tollgate_contract::decisions::BudgetState;
use uuid::Uuid;

use crate::shares::{Share, Shares};

/// Charges kept per subject before placed ones are merged per partition.
pub const MAX_CHARGES: usize = 10_000;

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub subject: String,
    pub period: String,
    pub limit_usd: Decimal,
    pub spent_usd: Decimal,
    /// Reserved plus charged by this proxy, not yet in `spent_usd`.
    pub outstanding_usd: Decimal,
    pub estimate_usd: Decimal,
    pub period_end: DateTime<Utc>,
    /// This proxy's share of the remaining amount when it refused.
    pub share: Share,
}

impl Shortfall {
    /// The message the client sees.
    pub fn reason(&self) -> String {
        let kind_id = tollgate_contract::decisions::budget_subject_words(&self.subject);
        let share = match self.share {
            Share::Nothing => "; this proxy holds no share of budgets right now (it is joining, or cannot renew its membership in PostgreSQL)".to_string(),
            Share::OneOf(1) => String::new(),
            Share::Fixed(d) if d == Decimal::ONE => String::new(),
            share => format!("; this proxy may commit {share} of what remains"),
        };
        format!(
            "{} budget of {} USD for {} would be exceeded: spent {} USD, {} USD more reserved by calls in flight or not yet counted, this call may cost up to {} USD{share}",
            self.period,
            self.limit_usd.normalize(),
            kind_id,
            self.spent_usd.round_dp(6).normalize(),
            self.outstanding_usd.round_dp(6).normalize(),
            self.estimate_usd.round_dp(6).normalize(),
        )
    }
}

/// The cost of one event not yet in the published spend.
#[derive(Debug, Clone)]
struct Charge {
    cost: Decimal,
    occurred_at: DateTime<Utc>,
    /// Known once Kafka acknowledged the event.
    position: Option<(i32, i64)>,
}

/// A subject's charges with their running total, so an admission costs
/// O(1) however many charges wait for the published spend.
#[derive(Debug, Default)]
struct Charges {
    by_event: HashMap<Uuid, Charge>,
    total: Decimal,
    /// No charge is older (a lower bound: removals do not raise it).
    earliest: Option<DateTime<Utc>>,
}

impl Charges {
    fn insert(&mut self, event: Uuid, charge: Charge) {
        self.earliest = Some(
            self.earliest
                .map_or(charge.occurred_at, |e| e.min(charge.occurred_at)),
        );
        self.total += charge.cost;
        if let Some(old) = self.by_event.insert(event, charge) {
            self.total -= old.cost;
        }
    }

    fn remove(&mut self, event: &Uuid) {
        if let Some(old) = self.by_event.remove(event) {
            self.total -= old.cost;
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Charge) -> bool) {
        self.by_event.retain(|_, c| keep(c));
        self.total = self.by_event.values().map(|c| c.cost).sum();
        self.earliest = self.by_event.values().map(|c| c.occurred_at).min();
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    fn len(&self) -> usize {
        self.by_event.len()
    }

    fn is_empty(&self) -> bool {
        self.by_event.is_empty()
    }

    /// The total of the charges that occurred at or after `start`.
    fn since(&self, start: DateTime<Utc>) -> Decimal {
        if self.earliest.is_none_or(|e| e >= start) {
            return self.total;
        }
        // Only right after a period rolled over, until the next record.
        self.by_event
            .values()
            .filter(|c| c.occurred_at >= start)
            .map(|c| c.cost)
            .sum()
    }
}

#[derive(Debug, Default)]
struct SubjectBook {
    state: Option<BudgetState>,
    reserved: Decimal,
    charges: Charges,
}

impl SubjectBook {
    fn charged_since(&self, start: DateTime<Utc>) -> Decimal {
        self.charges.since(start)
    }

    /// Drop the charges the published spend includes, and those of periods
    /// that are over (they count against nothing any more).
    fn settle(&mut self) {
        let Some(state) = &self.state else { return };
        let oldest = state.periods.iter().map(|p| p.start).min();
        self.charges.retain(|c| {
            let covered = match c.position {
                Some((partition, offset)) => {
                    state.folded.get(&partition).is_some_and(|f| *f >= offset)
                }
                None => false,
            };
            !covered && oldest.is_none_or(|start| c.occurred_at >= start)
        });
    }

    /// Keep memory bounded while the published spend lags (processors
    /// down): past [`MAX_CHARGES`], merge the placed charges of each Kafka
    /// partition into one, with the highest offset (dropped only once all
    /// of it is covered) and the latest time (counted in the newest period
    /// any part of it belongs to). Both err on the side of the budget.
    fn coalesce(&mut self) {
        if self.charges.len() <= MAX_CHARGES {
            return;
        }
        let mut merged: BTreeMap<i32, Charge> = BTreeMap::new();
        self.charges.retain(|c| {
            let Some((partition, offset)) = c.position else {
                return true;
            };
            let m = merged.entry(partition).or_insert(Charge {
                cost: Decimal::ZERO,
                occurred_at: c.occurred_at,
                position: Some((partition, offset)),
            });
            m.cost += c.cost;
            m.occurred_at = m.occurred_at.max(c.occurred_at);
            m.position = m.position.map(|(p, o)| (p, o.max(offset)));
            false
        });
        for charge in merged.into_values() {
            self.charges.insert(Uuid::now_v7(), charge);
        }
    }

    fn is_idle(&self) -> bool {
        self.state.is_none() && self.reserved.is_zero() && self.charges.is_empty()
    }
}

#[derive(Debug, Default)]
struct Books {
    subjects: HashMap<String, SubjectBook>,
    /// Event id -> the subjects it was charged to (until its position is known).
    unplaced: HashMap<Uuid, Vec<String>>,
}

/// The proxy's budget reservations (see the module docs).
#[derive(Debug)]
pub struct BudgetLedger {
    /// This proxy's share of each subject's remaining budget (1 with one
    /// proxy; `1/N` each with N proxies, so their sum cannot overrun).
    shares: Arc<Shares>,
    books: Mutex<Books>,
    /// Subjects with a published state: 0 lets calls skip the lock.
    with_state: AtomicUsize,
    /// Reservations not yet released (`tollgate_proxy_budget_reservations_open`).
    open: Gauge,
}

impl BudgetLedger {
    pub fn new(shares: Arc<Shares>) -> Self {
        Self {
            shares,
            books: Mutex::new(Books::default()),
            with_state: AtomicUsize::new(0),
            open: Gauge::default(),
        }
    }

    /// Count the reservations held in `open` (the proxy's metric).
    pub fn counting_open_in(mut self, open: Gauge) -> Self {
        self.open = open;
        self
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A record for `subject` arrived: `Some` state, or `None` (tombstone,
    /// or a record without budget state: the subject has no hard budget).
    pub fn update(&self, subject: &str, state: Option<BudgetState>) {
        let mut books = self.books();
        match state {
            Some(state) => {
                let book = books.subjects.entry(subject.to_string()).or_default();
                book.state = Some(state);
                book.settle();
            }
            None => {
                if let Some(book) = books.subjects.get_mut(subject) {
                    book.state = None;
                    book.charges.clear();
                    if book.is_idle() {
                        books.subjects.remove(subject);
                    }
                }
            }
        }
        // Events whose charges are all gone need no position any more.
        let Books { subjects, unplaced } = &mut *books;
        unplaced.retain(|event, charged| {
            charged.iter().any(|s| {
                subjects
                    .get(s)
                    .is_some_and(|b| b.charges.by_event.contains_key(event))
            })
        });
        let n = books
            .subjects
            .values()
            .filter(|b| b.state.is_some())
            .count();
        self.with_state.store(n, Ordering::Relaxed);
    }

    /// Whether any subject has a budget state (else nothing to reserve).
    pub fn is_active(&self) -> bool {
        self.with_state.load(Ordering::Relaxed) > 0
    }

    /// Admit a call of up to `estimate` USD against every subject in
    /// `subjects` that has a budget state, or say which budget it would
    /// exceed. The returned reservation releases itself when dropped.
    pub fn reserve(
        self: &Arc<Self>,
        subjects: &[String],
        estimate: Decimal,
        now: DateTime<Utc>,
    ) -> Result<Option<Reservation>, Box<Shortfall>> {
        if !self.is_active() {
            return Ok(None);
        }
        let share = self.shares.current();
        let mut books = self.books();
        let mut held = Vec::new();
        for subject in subjects {
            let Some(book) = books.subjects.get(subject) else {
                continue;
            };
            let Some(state) = &book.state else { continue };
            for period in &state.periods {
                let p = period.at(now);
                let outstanding = book.reserved + book.charged_since(p.start);
                let headroom = share.of_money(p.limit_usd - p.spent_usd);
                if outstanding + estimate > headroom {
                    return Err(Box::new(Shortfall {
                        subject: subject.clone(),
                        period: p.period.clone(),
                        limit_usd: p.limit_usd,
                        spent_usd: p.spent_usd,
                        outstanding_usd: outstanding,
                        estimate_usd: estimate,
                        period_end: p.end,
                        share,
                    }));
                }
            }
            held.push(subject.clone());
        }
        if held.is_empty() {
            return Ok(None);
        }
        for subject in &held {
            if let Some(book) = books.subjects.get_mut(subject) {
                book.reserved += estimate;
            }
        }
        self.open.inc();
        Ok(Some(Reservation {
            ledger: self.clone(),
            subjects: held,
            amount: estimate,
        }))
    }

    /// The first of `subjects` with a hard budget this proxy enforces, if
    /// any (the budget an unpriced call could not be held to).
    pub fn hard_budget_of<'a>(&self, subjects: &'a [String]) -> Option<&'a str> {
        if !self.is_active() {
            return None;
        }
        let books = self.books();
        subjects
            .iter()
            .find(|s| books.subjects.get(*s).is_some_and(|b| b.state.is_some()))
            .map(String::as_str)
    }

    /// The reserved and charged amounts of `subject` (for tests and metrics).
    pub fn outstanding(&self, subject: &str) -> (Decimal, Decimal) {
        let books = self.books();
        books
            .subjects
            .get(subject)
            .map(|b| (b.reserved, b.charges.total))
            .unwrap_or_default()
    }

    /// Kafka acknowledged `event_id` at `partition`/`offset`.
    pub fn placed(&self, event_id: Uuid, partition: i32, offset: i64) {
        let mut books = self.books();
        let Some(subjects) = books.unplaced.remove(&event_id) else {
            return;
        };
        for subject in subjects {
            if let Some(book) = books.subjects.get_mut(&subject) {
                // Normally the spend cannot include an event before Kafka
                // acknowledged it to us, but a slow acknowledgement can lose
                // that race: then the charge goes now.
                let covered = book
                    .state
                    .as_ref()
                    .and_then(|s| s.folded.get(&partition))
                    .is_some_and(|f| *f >= offset);
                if covered {
                    book.charges.remove(&event_id);
                } else if let Some(charge) = book.charges.by_event.get_mut(&event_id) {
                    charge.position = Some((partition, offset));
                }
                book.coalesce();
            }
        }
    }

    /// Whether events of this ledger are waiting for a position (lets the
    /// emitter skip the lock otherwise).
    pub fn awaits_positions(&self) -> bool {
        !self.books().unplaced.is_empty()
    }

    fn release(&self, subjects: &[String], amount: Decimal) {
        self.open.dec();
        let mut books = self.books();
        for subject in subjects {
            if let Some(book) = books.subjects.get_mut(subject) {
                book.reserved -= amount;
                if book.reserved.is_sign_negative() {
                    book.reserved = Decimal::ZERO;
                }
                if book.is_idle() {
                    books.subjects.remove(subject);
                }
            }
        }
    }

    fn charge(&self, subjects: &[String], event_id: Uuid, cost: Decimal, at: DateTime<Utc>) {
        if cost <= Decimal::ZERO {
            return;
        }
        let mut books = self.books();
        for subject in subjects {
            if let Some(book) = books.subjects.get_mut(subject) {
                book.charges.insert(
                    event_id,
                    Charge {
                        cost,
                        occurred_at: at,
                        position: None,
                    },
                );
            }
        }
        books.unplaced.insert(event_id, subjects.to_vec());
    }
}

/// A call's hold on its budgets: charged with the cost of each event it
/// emits, released when dropped (the call has ended and its events are
/// charged).
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<BudgetLedger>,
    subjects: Vec<String>,
    amount: Decimal,
}

impl Reservation {
    /// Charge one emitted event's exact cost.
    pub fn charge(&self, event_id: Uuid, cost: Decimal, occurred_at: DateTime<Utc>) {
        self.ledger
            .charge(&self.subjects, event_id, cost, occurred_at);
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.ledger.release(&self.subjects, self.amount);
    }
}

/// Round an estimate up to 12 decimal places (never below the real bound).
pub fn round_up(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(12, RoundingStrategy::AwayFromZero)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use chrono::TimeZone;
    use tollgate_contract::decisions::BudgetPeriod;

    use super::*;

    pub(crate) fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    pub(crate) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    pub(crate) fn state(limit: &str, spent: &str, folded: &[(i32, i64)]) -> BudgetState {
        BudgetState {
            periods: vec![BudgetPeriod {
                period: "daily".into(),
                start: Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap(),
                end: Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap(),
                limit_usd: d(limit),
                spent_usd: d(spent),
            }],
            folded: folded.iter().copied().collect(),
            as_of: now(),
        }
    }

    pub(crate) fn ledger(share: Decimal) -> Arc<BudgetLedger> {
        Arc::new(BudgetLedger::new(Arc::new(Shares::fixed(share))))
    }

    pub(crate) fn team() -> Vec<String> {
        vec!["budget/team/t".to_string(), "budget/org/o".to_string()]
    }

    #[test]
    fn no_state_admits_without_reserving() {
        let ledger = ledger(Decimal::ONE);
        assert!(ledger.reserve(&team(), d("100"), now()).unwrap().is_none());
    }

    #[test]
    fn reservations_hold_headroom_until_released() {
        let ledger = ledger(Decimal::ONE);
        ledger.update("budget/team/t", Some(state("1", "0.5", &[])));
        let a = ledger.reserve(&team(), d("0.3"), now()).unwrap().unwrap();
        let refused = ledger.reserve(&team(), d("0.3"), now()).unwrap_err();
        assert_eq!(refused.outstanding_usd, d("0.3"));
        assert!(refused
            .reason()
            .contains("daily budget of 1 USD for team t"));
        let b = ledger.reserve(&team(), d("0.2"), now()).unwrap().unwrap();
        assert_eq!(ledger.outstanding("budget/team/t").0, d("0.5"));
        drop(a);
        drop(b);
        assert_eq!(ledger.outstanding("budget/team/t"), (d("0"), d("0")));
        assert!(ledger.reserve(&team(), d("0.5"), now()).unwrap().is_some());
    }

    #[test]
    fn charges_count_until_the_published_spend_includes_them() {
        let ledger = ledger(Decimal::ONE);
        ledger.update("budget/team/t", Some(state("1", "0", &[(0, 10)])));
        let r = ledger.reserve(&team(), d("0.6"), now()).unwrap().unwrap();
        let event = Uuid::now_v7();
        r.charge(event, d("0.4"), now());
        drop(r);
        // Charged, position unknown: still counted.
        assert_eq!(ledger.outstanding("budget/team/t"), (d("0"), d("0.4")));
        assert!(ledger.reserve(&team(), d("0.61"), now()).is_err());
        ledger.placed(event, 0, 11);
        // A record folded only up to offset 10 does not include it.
        ledger.update("budget/team/t", Some(state("1", "0", &[(0, 10)])));
        assert_eq!(ledger.outstanding("budget/team/t").1, d("0.4"));
        // Folded through 11: the spend now has it, the charge goes.
        ledger.update("budget/team/t", Some(state("1", "0.4", &[(0, 11)])));
        assert_eq!(ledger.outstanding("budget/team/t"), (d("0"), d("0")));
        assert!(ledger.reserve(&team(), d("0.6"), now()).is_ok());
        assert!(ledger.reserve(&team(), d("0.61"), now()).is_err());
    }

    #[test]
    fn charges_merge_per_partition_past_the_cap_and_still_count() {
        let ledger = ledger(Decimal::ONE);
        ledger.update("budget/team/t", Some(state("1000", "0", &[])));
        let r = ledger.reserve(&team(), d("0"), now()).unwrap().unwrap();
        for i in 0..(MAX_CHARGES as i64 + 10) {
            let event = Uuid::now_v7();
            r.charge(event, d("0.01"), now());
            ledger.placed(event, (i % 2) as i32, i);
        }
        drop(r);
        let total = d("0.01") * Decimal::from(MAX_CHARGES as i64 + 10);
        assert_eq!(ledger.outstanding("budget/team/t"), (d("0"), total));
        {
            let books = ledger.books();
            let book = &books.subjects["budget/team/t"];
            assert!(book.charges.len() < 100, "{}", book.charges.len());
        }
        // Merged charges go only once their highest offset is covered.
        let last = MAX_CHARGES as i64 + 9;
        ledger.update(
            "budget/team/t",
            Some(state("1000", "0", &[(0, last), (1, last - 2)])),
        );
        assert!(ledger.outstanding("budget/team/t").1 > d("0"));
        ledger.update(
            "budget/team/t",
            Some(state("1000", "0", &[(0, last), (1, last)])),
        );
        assert_eq!(ledger.outstanding("budget/team/t"), (d("0"), d("0")));
    }

    #[test]
    fn share_splits_the_remaining_budget() {
        let ledger = ledger(d("0.5"));
        ledger.update("budget/team/t", Some(state("1", "0.2", &[])));
        assert!(ledger.reserve(&team(), d("0.41"), now()).is_err());
        assert!(ledger.reserve(&team(), d("0.4"), now()).is_ok());
    }

    #[test]
    fn equal_shares_of_the_live_proxies_split_the_remaining_budget_exactly() {
        let shares = Arc::new(Shares::derived());
        let ledger = Arc::new(BudgetLedger::new(shares.clone()));
        ledger.update("budget/team/t", Some(state("1", "0.5", &[])));
        let started = std::time::Instant::now();
        let lease = std::time::Duration::from_secs(3600);
        // Joining: nothing may be committed yet.
        let refused = ledger.reserve(&team(), d("0.000001"), now()).unwrap_err();
        assert!(refused.reason().ends_with("; this proxy holds no share of budgets right now (it is joining, or cannot renew its membership in PostgreSQL)"), "{}", refused.reason());
        // One of three: (1 - 0.5) / 3 rounded down to 20 decimals.
        shares.apply(3, false, started, lease);
        let third = d("0.16666666666666666666");
        assert!(ledger
            .reserve(&team(), third + d("0.00000000000000000001"), now())
            .is_err());
        let held = ledger.reserve(&team(), third, now()).unwrap().unwrap();
        let refused = ledger
            .reserve(&team(), d("0.000000000001"), now())
            .unwrap_err();
        assert_eq!(refused.outstanding_usd, third);
        assert!(
            refused
                .reason()
                .ends_with("; this proxy may commit 1/3 of what remains"),
            "{}",
            refused.reason()
        );
        // A proxy left: one of two.
        shares.apply(2, false, started, lease);
        assert!(ledger
            .reserve(&team(), d("0.25") - third + d("0.000000000001"), now())
            .is_err());
        assert!(ledger.reserve(&team(), d("0.25") - third, now()).is_ok());
        drop(held);
        // The lease ran out: nothing.
        shares.apply(
            2,
            false,
            std::time::Instant::now(),
            std::time::Duration::ZERO,
        );
        assert!(ledger.reserve(&team(), d("0.000001"), now()).is_err());
    }

    #[test]
    fn exhausted_period_rolls_over_with_nothing_spent() {
        let ledger = ledger(Decimal::ONE);
        ledger.update("budget/team/t", Some(state("1", "1", &[])));
        assert!(ledger.reserve(&team(), d("0.01"), now()).is_err());
        let tomorrow = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 1).unwrap();
        let r = ledger
            .reserve(&team(), d("0.9"), tomorrow)
            .unwrap()
            .unwrap();
        // Yesterday's charges do not count against today.
        r.charge(Uuid::now_v7(), d("0.5"), now());
        drop(r);
        assert!(ledger.reserve(&team(), d("1"), tomorrow).is_ok());
        let monthly = BudgetPeriod {
            period: "monthly".into(),
            start: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            limit_usd: d("1"),
            spent_usd: d("1"),
        };
        let next = monthly.at(Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap());
        assert_eq!(
            (next.start, next.end, next.spent_usd),
            (
                Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
                d("0")
            )
        );
    }

    #[test]
    fn tombstone_forgets_the_subject() {
        let ledger = ledger(Decimal::ONE);
        ledger.update("budget/team/t", Some(state("1", "1", &[])));
        assert!(ledger.reserve(&team(), d("0.01"), now()).is_err());
        ledger.update("budget/team/t", None);
        assert!(!ledger.is_active());
        assert!(ledger.reserve(&team(), d("5"), now()).unwrap().is_none());
    }
}
