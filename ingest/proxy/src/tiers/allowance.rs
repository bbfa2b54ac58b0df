//! One limit's allowance on this proxy in one window: what it has claimed
//! from the shared pool (or holds as its fixed share), what it has spent of
//! it, and when to claim more. Pure bookkeeping; [`super::RateTiers`] keeps
//! one per limited scope and limit, under its lock.

/// The smallest block claimed, as a fraction of the limit per live proxy:
/// a block is `max(1, limit / (BLOCK_DIVISOR * N))`.
pub const BLOCK_DIVISOR: u64 = 4;

/// The block a proxy claims of a limit when `live` proxies share it.
pub fn block(limit: u64, live: usize) -> u64 {
    let n = u64::try_from(live.max(1)).unwrap_or(u64::MAX);
    (limit / BLOCK_DIVISOR.saturating_mul(n)).max(1)
}

/// A limit's allowance in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowance {
    /// Granted to this proxy in this window (claimed, or its fixed part).
    pub claimed: u64,
    /// Admitted against it: requests counted, tokens used plus those still
    /// reserved by running calls. May pass `claimed` by what calls used
    /// beyond their reservation (a debt the next grants pay first).
    pub spent: u64,
    /// Nothing more can be claimed this window: the pool granted less than
    /// asked (it is spent), or the share is fixed.
    pub exhausted: bool,
}

impl Allowance {
    /// A fixed share's allowance: `amount`, never claimed.
    pub fn fixed(amount: u64) -> Self {
        Self {
            claimed: amount,
            spent: 0,
            exhausted: true,
        }
    }

    /// What is left to admit.
    pub fn remaining(&self) -> u64 {
        self.claimed.saturating_sub(self.spent)
    }

    /// Whether `amount` more fits.
    pub fn fits(&self, amount: u64) -> bool {
        self.spent.saturating_add(amount) <= self.claimed
    }

    /// Admit `amount` (a request, or a call's token reservation).
    pub fn take(&mut self, amount: u64) {
        self.spent = self.spent.saturating_add(amount);
    }

    /// A call that reserved `reserved` ended having used `used`: the
    /// surplus comes back to this allowance (not to the pool).
    pub fn settle(&mut self, reserved: u64, used: u64) {
        self.spent = self.spent.saturating_sub(reserved).saturating_add(used);
    }

    /// A claim of `wanted` got `granted`; less means the pool is spent.
    pub fn granted(&mut self, wanted: u64, granted: u64) {
        self.claimed = self.claimed.saturating_add(granted);
        if granted < wanted {
            self.exhausted = true;
        }
    }

    /// What to claim so that a call of `need` fits (0 when it fits already
    /// or nothing more can be claimed): at least a `block`.
    pub fn wanted_for(&self, need: u64, block: u64) -> u64 {
        if self.exhausted || self.fits(need) {
            0
        } else {
            block.max(self.spent.saturating_add(need) - self.claimed)
        }
    }

    /// What to claim in the background after an admission: a `block` once
    /// what remains falls under the low-water mark (one block), else 0.
    pub fn refill(&self, block: u64) -> u64 {
        if self.exhausted || self.remaining() >= block {
            0
        } else {
            block
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_a_quarter_of_the_equal_part_and_at_least_one() {
        assert_eq!(block(30, 3), 2);
        assert_eq!(block(6000, 3), 500);
        assert_eq!(block(2, 3), 1);
        assert_eq!(block(1, 1), 1);
        assert_eq!(block(1000, 0), 250);
    }

    #[test]
    fn claim_spend_settle_and_refill() {
        let mut a = Allowance::default();
        // Nothing claimed: a call of 1 needs a block.
        assert!(!a.fits(1));
        assert_eq!(a.wanted_for(1, 5), 5);
        // A call larger than a block asks for what it lacks.
        assert_eq!(a.wanted_for(12, 5), 12);
        a.granted(5, 5);
        assert!(!a.exhausted);
        assert_eq!(a.remaining(), 5);
        assert_eq!(a.wanted_for(3, 5), 0);
        a.take(3);
        // Under the low-water mark (one block): refill a block.
        assert_eq!(a.refill(5), 5);
        assert_eq!(a.refill(2), 0);
        // A reservation of 3 that used 1 gives 2 back to this allowance.
        a.settle(3, 1);
        assert_eq!((a.spent, a.remaining()), (1, 4));
        a.take(4);
        assert_eq!(a.wanted_for(2, 5), 5);
        // The pool gives less than asked: spent for this window.
        a.granted(5, 2);
        assert!(a.exhausted);
        assert_eq!(a.remaining(), 2);
        assert_eq!(a.wanted_for(3, 5), 0);
        assert_eq!(a.refill(5), 0);
        assert!(a.fits(2) && !a.fits(3));
    }

    #[test]
    fn use_beyond_the_reservation_is_a_debt_the_next_grant_pays_first() {
        let mut a = Allowance::default();
        a.granted(10, 10);
        a.take(10);
        a.settle(10, 14);
        assert_eq!((a.spent, a.remaining()), (14, 0));
        assert_eq!(a.wanted_for(1, 2), 5);
        a.granted(5, 5);
        assert_eq!(a.remaining(), 1);
    }

    #[test]
    fn a_fixed_share_is_never_claimed() {
        let mut a = Allowance::fixed(3);
        assert_eq!(a.wanted_for(4, 1), 0);
        assert_eq!(a.refill(10), 0);
        a.take(3);
        assert!(!a.fits(1));
    }
}
