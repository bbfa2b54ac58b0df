//! The last event ids a consumer saw, per Kafka partition: an event whose
//! `event_id` is among them is a copy (a client retried after a lost
//! response, or a proxy resent what a stalled broker stored late).
//!
//! - The calls fold gives a copy no second row, so it is neither billed nor
//!   counted twice (`processor.recent_event_ids_per_partition`). Copies of
//!   one event land in one partition: the events topic is keyed by team,
//!   and a copy carries its original's team. After a restart or a
//!   rebalance a partition's window is read back from `calls`
//!   ([`crate::folds::calls::sink::CallsSink::recent_event_ids`]).
//! - The circuit breakers count a copy's outcome once
//!   (`breakers.recent_event_ids`, one window over every partition).
//!
//! Each partition keeps its last `window` ids (oldest forgotten first), so
//! a copy is caught while fewer than `window` events of its partition came
//! between it and its original.
//!
//! Memory: each partition keeps its ids once, in a ring in arrival order
//! (16 bytes each), and finds them through a hash table of ring slots (4
//! bytes and a control byte per table slot; a power of two at least 8/7 of
//! the window). Both are reserved when the partition's first id arrives:
//! 22.6 bytes per id at the default 100,000 (2.26 MB per partition), at
//! most 27.5 for other sizes (`docs/processor.md`, "Copies of an event").
//! The table hashes ids with a per-process random key (SipHash), so ids
//! chosen to collide cannot slow the fold down.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use uuid::Uuid;

/// The last ids of one partition.
#[derive(Debug)]
struct Window {
    /// Ids in arrival order; once full, `next` is the oldest.
    ring: Vec<u128>,
    next: usize,
    /// Slots of `ring`, found by the hash of the id they hold.
    slots: HashTable<u32>,
}

impl Window {
    fn new(window: usize) -> Self {
        Self {
            ring: Vec::with_capacity(window),
            next: 0,
            slots: HashTable::with_capacity(window),
        }
    }

    fn contains(&self, hash: u64, id: u128) -> bool {
        let ring = &self.ring;
        self.slots
            .find(hash, |&slot| ring[slot as usize] == id)
            .is_some()
    }

    /// Remember `id` (not in the window), forgetting the oldest when full.
    fn push(&mut self, hash: u64, id: u128, window: usize, keys: &RandomState) {
        let Self { ring, next, slots } = self;
        let slot = if ring.len() < window {
            ring.push(id);
            ring.len() - 1
        } else {
            let oldest = *next;
            let old_id = ring[oldest];
            if let Ok(entry) = slots.find_entry(keys.hash_one(old_id), |&s| s as usize == oldest) {
                entry.remove();
            }
            ring[oldest] = id;
            *next = (oldest + 1) % window;
            oldest
        };
        // A slot number fits: the window is at most 10,000,000
        // (`ProcessorConfig::validate`).
        let slot = u32::try_from(slot).unwrap_or(u32::MAX);
        slots.insert_unique(hash, slot, |&s| keys.hash_one(ring[s as usize]));
    }

    fn len(&self) -> usize {
        self.ring.len()
    }
}

/// The last `window` event ids of each partition the fold owns.
#[derive(Debug)]
pub struct RecentEvents {
    window: usize,
    keys: RandomState,
    partitions: HashMap<i32, Window>,
}

impl RecentEvents {
    /// Remember `window` ids per partition (at most `u32::MAX`); 0
    /// remembers none (every copy is stored).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.min(u32::MAX as usize),
            keys: RandomState::new(),
            partitions: HashMap::new(),
        }
    }

    /// How many ids each partition keeps.
    pub fn window(&self) -> usize {
        self.window
    }

    /// `true` the first time `id` arrives in `partition` (now remembered),
    /// `false` for a copy of an id still in the partition's window.
    pub fn first_arrival(&mut self, partition: i32, id: Uuid) -> bool {
        if self.window == 0 {
            return true;
        }
        let window = self.window;
        let slot = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Window::new(window));
        let id = id.as_u128();
        let hash = self.keys.hash_one(id);
        if slot.contains(hash, id) {
            return false;
        }
        slot.push(hash, id, window, &self.keys);
        true
    }

    /// `partition`'s window as stored: `ids` oldest first. Ids that are not
    /// UUIDs (no event of the contract has one) are left out.
    pub fn restore<'a>(&mut self, partition: i32, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            if let Ok(id) = Uuid::parse_str(id) {
                self.first_arrival(partition, id);
            }
        }
    }

    /// Forget revoked or reassigned partitions: their windows are read back
    /// before their next row.
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    /// Ids remembered over all partitions.
    pub fn len(&self) -> usize {
        self.partitions.values().map(Window::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_copy_in_the_window_is_caught_and_the_window_keeps_its_size() {
        let mut seen = RecentEvents::new(3);
        assert!(seen.first_arrival(0, id(1)));
        assert!(!seen.first_arrival(0, id(1)), "a copy");
        assert!(seen.first_arrival(1, id(1)), "windows are per partition");
        for n in 2..=4 {
            assert!(seen.first_arrival(0, id(n)));
        }
        assert_eq!(seen.len(), 4, "3 in partition 0, 1 in partition 1");
        assert!(!seen.first_arrival(0, id(2)), "still in the window");
        assert!(
            seen.first_arrival(0, id(1)),
            "three ids came after it: forgotten"
        );
        assert!(
            seen.first_arrival(0, id(2)),
            "pushed out by the arrival of 1 again"
        );
    }

    #[test]
    fn a_copy_does_not_move_its_original_in_the_window() {
        let mut seen = RecentEvents::new(2);
        assert!(seen.first_arrival(0, id(1)));
        assert!(seen.first_arrival(0, id(2)));
        assert!(!seen.first_arrival(0, id(1)));
        assert!(seen.first_arrival(0, id(3)));
        assert!(seen.first_arrival(0, id(1)), "1 was the oldest");
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_restored_window_catches_copies_and_skips_what_is_not_an_id() {
        let mut seen = RecentEvents::new(2);
        let a = id(10).to_string();
        let b = id(11).to_string();
        let c = id(12).to_string();
        seen.restore(3, [a.as_str(), "not-a-uuid", b.as_str(), c.as_str()]);
        assert_eq!(seen.len(), 2);
        assert!(seen.first_arrival(3, id(10)), "the oldest fell out");
        assert!(!seen.first_arrival(3, id(12)));
        seen.forget(&[3]);
        assert!(seen.is_empty());
        assert!(seen.first_arrival(3, id(12)));
    }

    #[test]
    fn a_long_run_keeps_exactly_the_last_ids_of_each_partition() {
        // Against a plain model: the last `window` ids per partition.
        let window = 7;
        let mut seen = RecentEvents::new(window);
        let mut model: HashMap<i32, Vec<u128>> = HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let partition = i32::try_from(rng % 3).unwrap();
            let n = u128::from((rng >> 8) % 40);
            let last = model.entry(partition).or_default();
            let expected = !last.contains(&n);
            assert_eq!(seen.first_arrival(partition, id(n)), expected);
            if expected {
                last.push(n);
                if last.len() > window {
                    last.remove(0);
                }
            }
        }
        assert_eq!(seen.len(), model.values().map(Vec::len).sum::<usize>());
    }

    #[test]
    fn a_window_of_zero_remembers_nothing() {
        let mut seen = RecentEvents::new(0);
        assert!(seen.first_arrival(0, id(1)));
        assert!(seen.first_arrival(0, id(1)));
        assert!(seen.is_empty());
    }
}
