//! The calls fold's memory of the event ids it stored last, per Kafka
//! partition: an event whose `event_id` is among them is a copy (a client
//! retried after a lost response, or a proxy resent what a stalled broker
//! stored late) and gets no second row, so it is neither billed nor counted
//! twice.
//!
//! Copies of one event land in one partition: the events topic is keyed by
//! team, and a copy carries its original's team. Each partition keeps its
//! last `window` ids (oldest forgotten first), so a copy is caught while
//! fewer than `window` events of its partition came between it and its
//! original. After a restart or a rebalance a partition's window is read
//! back from `calls` ([`super::sink::CallsSink::recent_event_ids`]).
//!
//! Memory: an id is kept twice (a hash set and its arrival order), both
//! sized for the whole window when the partition's first id arrives: 16
//! bytes in the order, 17 per slot of the set, whose slots are a power of
//! two at least 8/7 of the window; 38 bytes per id at the default 50,000,
//! up to 55 for other sizes (`docs/processor.md`, "Copies of an event").

use std::collections::{HashMap, HashSet, VecDeque};

use uuid::Uuid;

/// The last ids of one partition.
#[derive(Debug, Default)]
struct Window {
    ids: HashSet<u128>,
    order: VecDeque<u128>,
}

/// The last `window` event ids of each partition the fold owns.
#[derive(Debug)]
pub struct RecentEvents {
    window: usize,
    partitions: HashMap<i32, Window>,
}

impl RecentEvents {
    /// Remember `window` ids per partition; 0 remembers none (every copy is
    /// stored).
    pub fn new(window: usize) -> Self {
        Self {
            window,
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
        let slot = self.partitions.entry(partition).or_insert_with(|| Window {
            ids: HashSet::with_capacity(window),
            order: VecDeque::with_capacity(window),
        });
        let id = id.as_u128();
        if !slot.ids.insert(id) {
            return false;
        }
        slot.order.push_back(id);
        if slot.order.len() > window {
            if let Some(oldest) = slot.order.pop_front() {
                slot.ids.remove(&oldest);
            }
        }
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
        self.partitions.values().map(|w| w.order.len()).sum()
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
    fn a_window_of_zero_remembers_nothing() {
        let mut seen = RecentEvents::new(0);
        assert!(seen.first_arrival(0, id(1)));
        assert!(seen.first_arrival(0, id(1)));
        assert!(seen.is_empty());
    }
}
