//! The audit fold's pure part: [`AuditChains`] appends every valid event to
//! the hash chain of its org and Kafka message key (`tollgate_contract::
//! audit::chain_id`) and cuts signed checkpoints. No
//! I/O and no clock of its own: callers pass the instant (for the checkpoint
//! interval) and the wall-clock time a checkpoint is stamped with.
//!
//! One chain per org and message key means one writer per chain: the
//! consumer that owns the key's partition. When a partition is assigned, the chains
//! written from it are restored from what the sink read back
//! ([`StoredChain`]: head, last checkpoint, entry hashes), so a restart or
//! rebalance continues every chain exactly where the stored rows end.
//!
//! Checkpoints are cut after a flush (every row made so far is stored): for
//! every chain with `checkpoint_every` entries since its last checkpoint, or
//! whose oldest unchecked entry is `checkpoint_interval_secs` old, and for
//! every chain with unchecked entries at shutdown. With no batch open, the
//! consumer flushes when [`AuditChains::next_due`] comes, so a quiet
//! partition's tail is signed on time too. Version 2 checkpoints
//! also sign the root of the whole chain prefix and carry a consistency
//! proof from the previous checkpoint, for which each chain keeps its
//! [`Compact`] tree of the checkpointed prefix.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tollgate_contract::audit::chain_id::chain_for;
use tollgate_contract::audit::checkpoint::{ChainRef, CheckpointRow, CheckpointSigner};
use tollgate_contract::audit::entry::{
    chain_entry, entry_fields, parse_hash, EntryRow, Position, GENESIS,
};
use tollgate_contract::audit::merkle::Compact;
use tollgate_contract::{Event, Rejection};
use tracing::{info, warn};

use crate::fold::{MessageMeta, Positioned};

impl Positioned for EntryRow {
    fn position(&self) -> (i32, i64) {
        (self.kafka_partition, self.kafka_offset)
    }
}

/// When checkpoints are cut.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub every: u64,
    pub interval: Duration,
}

/// A chain as the sink reads it back from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChain {
    pub chain_id: String,
    /// Seq and hex hash of the newest entry, and where it came from.
    pub seq: u64,
    pub entry_hash: String,
    pub kafka_partition: i32,
    pub org_id: String,
    pub team_id: String,
    /// `to_seq` of the chain's last checkpoint (0: none).
    pub checkpointed: u64,
    /// `(seq, hex entry hash)` of every entry in seq order; read only when
    /// checkpoints are signed (the prefix tree needs them).
    pub hashes: Vec<(u64, String)>,
}

#[derive(Debug)]
struct ChainState {
    partition: i32,
    seq: u64,
    head: [u8; 32],
    /// First seq not covered by a checkpoint.
    segment_from: u64,
    /// Entry hashes of `segment_from..=seq` (only kept with a signer).
    segment: Vec<[u8; 32]>,
    segment_started: Option<Instant>,
    /// The whole-chain tree of entries `1..segment_from` (with a signer).
    prefix: Compact,
    /// Org and team of the newest entry.
    org_id: String,
    team_id: String,
}

/// The chains of the partitions this consumer owns.
#[derive(Debug)]
pub struct AuditChains {
    chains: HashMap<String, ChainState>,
    signer: Option<CheckpointSigner>,
    policy: CheckpointPolicy,
}

impl AuditChains {
    pub fn new(signer: Option<CheckpointSigner>, policy: CheckpointPolicy) -> Self {
        Self {
            chains: HashMap::new(),
            signer,
            policy,
        }
    }

    /// Whether checkpoints are signed (and so entry hashes kept).
    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// Append `event` to its chain; `at` starts the checkpoint interval of
    /// a chain's first unchecked entry.
    pub fn row(
        &mut self,
        event: &Event,
        message: MessageMeta<'_>,
        at: Instant,
    ) -> Result<EntryRow, Rejection> {
        let fields = entry_fields(event)?;
        let id = chain_for(event, message.key, message.partition);
        let state = self.chains.entry(id.clone()).or_insert(ChainState {
            partition: message.partition,
            seq: 0,
            head: GENESIS,
            segment_from: 1,
            segment: Vec::new(),
            segment_started: None,
            prefix: Compact::new(),
            org_id: String::new(),
            team_id: String::new(),
        });
        state.org_id.clone_from(&fields.org_id);
        state.team_id.clone_from(&fields.team_id);
        let seq = state.seq + 1;
        // A fresh random salt per entry: the commitment must not let anyone
        // test a guessed user id against it, before or after erasure.
        let salt: [u8; 32] = rand::random();
        let (row, hash) = chain_entry(
            fields,
            Position {
                chain_id: &id,
                seq,
                partition: message.partition,
                offset: message.offset,
            },
            &state.head,
            &salt,
        );
        state.partition = message.partition;
        state.seq = seq;
        state.head = hash;
        if self.signer.is_some() {
            state.segment.push(hash);
            state.segment_started.get_or_insert(at);
        }
        Ok(row)
    }

    /// Continue the chains the sink read back (replacing what was known of
    /// them); `at` starts the interval of any unchecked entries.
    pub fn restore(&mut self, stored: Vec<StoredChain>, at: Instant) {
        for chain in stored {
            let Some(hash) = parse_hash(&chain.entry_hash) else {
                warn!(chain = %chain.chain_id, seq = chain.seq, "stored head hash is not hex; `tollgate verify-audit` will report the chain");
                continue;
            };
            let mut segment = Vec::new();
            let mut prefix = Compact::new();
            if self.signer.is_some() {
                let mut expected = 1;
                for (seq, entry_hash) in &chain.hashes {
                    match parse_hash(entry_hash) {
                        Some(h) if *seq == expected => {
                            if *seq <= chain.checkpointed {
                                prefix.push(&h);
                            } else {
                                segment.push(h);
                            }
                        }
                        _ => {
                            warn!(chain = %chain.chain_id, seq, "stored chain is not contiguous; it is not checkpointed until `tollgate verify-audit` is looked at");
                            segment.clear();
                            prefix = Compact::new();
                            break;
                        }
                    }
                    expected = seq + 1;
                }
            }
            info!(chain = %chain.chain_id, seq = chain.seq, checkpointed = chain.checkpointed, "audit chain head from clickhouse");
            self.chains.insert(
                chain.chain_id,
                ChainState {
                    partition: chain.kafka_partition,
                    seq: chain.seq,
                    head: hash,
                    segment_from: chain.seq + 1 - segment.len() as u64,
                    segment_started: (!segment.is_empty()).then_some(at),
                    segment,
                    prefix,
                    org_id: chain.org_id,
                    team_id: chain.team_id,
                },
            );
        }
    }

    /// Forget the chains last written from `partitions`.
    pub fn forget(&mut self, partitions: &[i32]) {
        let set: HashSet<i32> = partitions.iter().copied().collect();
        self.chains.retain(|_, c| !set.contains(&c.partition));
    }

    /// When the oldest unchecked entries of any chain come due (their
    /// segment's start plus the interval): the consumer flushes then even
    /// when no message comes, so a quiet partition's newest entries are
    /// signed within `checkpoint_interval_secs` too. `None` without a
    /// signer or unchecked entries.
    pub fn next_due(&self) -> Option<Instant> {
        self.signer.as_ref()?;
        self.chains
            .values()
            .filter_map(|state| state.segment_started)
            .min()
            .map(|started| started + self.policy.interval)
    }

    /// Cut the checkpoints that are due at `at` (all unchecked entries when
    /// `last`), stamped `now_ms`; nothing without a signer.
    pub fn cut(&mut self, at: Instant, now_ms: u64, last: bool) -> Vec<CheckpointRow> {
        let Some(signer) = &self.signer else {
            return Vec::new();
        };
        let mut cut_rows = Vec::new();
        let every = usize::try_from(self.policy.every.max(1)).unwrap_or(usize::MAX);
        for (id, state) in &mut self.chains {
            // Full segments of `every` entries first, then the rest when it is
            // old enough or the processor stops.
            let mut cut = Vec::new();
            let mut start = 0;
            while state.segment.len() - start >= every {
                cut.push(start..start + every);
                start += every;
            }
            let rest_due = state
                .segment_started
                .is_some_and(|t| at.saturating_duration_since(t) >= self.policy.interval)
                || last;
            if rest_due && start < state.segment.len() {
                cut.push(start..state.segment.len());
            }
            let Some(end) = cut.last().map(|r| r.end) else {
                continue;
            };
            let chain = ChainRef {
                chain_id: id,
                org_id: &state.org_id,
                team_id: &state.team_id,
            };
            for range in cut {
                let from = state.segment_from + range.start as u64;
                match signer.checkpoint(
                    chain,
                    from,
                    &state.segment[range],
                    &mut state.prefix,
                    now_ms,
                ) {
                    Some(cp) => cut_rows.push(cp),
                    None => {
                        warn!(chain = %id, from_seq = from, "the chain's stored prefix is not contiguous; not checkpointed");
                    }
                }
            }
            state.segment_from += end as u64;
            state.segment.drain(..end);
            state.segment_started = (!state.segment.is_empty()).then_some(at);
        }
        cut_rows
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use tollgate_contract::audit::checkpoint::{check_signature, parse_public_key};
    use tollgate_contract::audit::entry::entry_hash;
    use tollgate_contract::audit::merkle::{root, verify_consistency};

    use super::*;

    pub fn event(n: u32) -> Event {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1,
            "event_id": format!("0190b3c4-0000-7000-8000-{n:012}"),
            "kind": "ai.call.completed",
            "occurred_at": "2026-03-10T10:00:00.000Z",
            "org_id": "o", "team_id": "t",
            "call": {"call_id": format!("c{n}"), "provider": "openai", "model": "m",
                     "operation": "chat", "duration_ms": 10, "outcome": "success"}
        }))
        .unwrap()
    }

    pub fn at(partition: i32, offset: i64, key: Option<&str>) -> MessageMeta<'_> {
        MessageMeta {
            partition,
            offset,
            key: key.map(str::as_bytes),
        }
    }

    pub fn signer() -> CheckpointSigner {
        CheckpointSigner::from_seed(&[7; 32])
    }

    pub fn policy(every: u64, interval_secs: u64) -> CheckpointPolicy {
        CheckpointPolicy {
            every,
            interval: Duration::from_secs(interval_secs),
        }
    }

    /// Every entry links to the one before it (genesis first) and its hash
    /// is the hash of its own fields after that link.
    pub fn assert_linked(entries: &[EntryRow]) {
        let mut prev = GENESIS;
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "seq of entry {i}");
            assert_eq!(e.prev_hash, hex::encode(prev), "prev_hash of seq {}", e.seq);
            let hash = entry_hash(&prev, e);
            assert_eq!(
                e.entry_hash,
                hex::encode(hash),
                "entry_hash of seq {}",
                e.seq
            );
            prev = hash;
        }
    }

    /// A checkpoint signed by [`signer`] over exactly `hashes[from-1..to]`,
    /// with a whole-chain root over `hashes[..to]`.
    pub fn assert_checkpoint(cp: &CheckpointRow, hashes: &[[u8; 32]], from: u64, to: u64) {
        assert_eq!((cp.from_seq, cp.to_seq), (from, to));
        let (from_i, to_i) = (usize::try_from(from).unwrap(), usize::try_from(to).unwrap());
        assert_eq!(cp.merkle_root, hex::encode(root(&hashes[from_i - 1..to_i])));
        assert_eq!(cp.tree_root, hex::encode(root(&hashes[..to_i])));
        assert_eq!(cp.head_hash, hex::encode(hashes[to_i - 1]));
        let key = parse_public_key(signer().public_key_hex()).unwrap();
        check_signature(cp, Some(&key)).unwrap();
    }

    pub fn hashes(entries: &[EntryRow]) -> Vec<[u8; 32]> {
        entries
            .iter()
            .map(|e| parse_hash(&e.entry_hash).unwrap())
            .collect()
    }

    #[test]
    fn each_key_has_its_own_chain_linked_from_genesis_carrying_the_position() {
        let mut chains = AuditChains::new(None, policy(10, 60));
        let now = Instant::now();
        let a: Vec<EntryRow> = (0..3)
            .map(|i| {
                chains
                    .row(&event(i), at(1, 10 + i64::from(i), Some("team-a")), now)
                    .unwrap()
            })
            .collect();
        let b = chains
            .row(&event(9), at(1, 13, Some("team-b")), now)
            .unwrap();
        let unkeyed = chains.row(&event(8), at(2, 5, None), now).unwrap();
        // Another org's team of the same id (same key, same partition) has a
        // chain of its own.
        let mut globex = event(7);
        globex.org_id = "globex".into();
        let other_org = chains.row(&globex, at(1, 14, Some("team-a")), now).unwrap();
        assert_eq!(
            (other_org.chain_id.as_str(), other_org.seq),
            ("globex/team-a", 1)
        );
        assert_eq!(other_org.prev_hash, hex::encode(GENESIS));
        assert!(a.iter().all(|e| e.chain_id == "o/team-a"));
        assert_linked(&a);
        assert_eq!((a[2].kafka_partition, a[2].kafka_offset), (1, 12));
        assert_eq!((b.chain_id.as_str(), b.seq), ("o/team-b", 1));
        assert_eq!(b.prev_hash, hex::encode(GENESIS));
        assert_eq!(
            (unkeyed.chain_id.as_str(), unkeyed.seq),
            ("o/~partition-2", 1)
        );
        assert_eq!((unkeyed.kafka_partition, unkeyed.kafka_offset), (2, 5));
    }

    #[test]
    fn an_event_before_1970_is_rejected_and_does_not_advance_the_chain() {
        let mut chains = AuditChains::new(None, policy(10, 60));
        let now = Instant::now();
        let mut bad = event(1);
        bad.occurred_at = chrono::DateTime::from_timestamp(-10, 0).unwrap();
        assert_eq!(
            chains
                .row(&bad, at(0, 1, Some("k")), now)
                .unwrap_err()
                .field,
            "occurred_at"
        );
        assert_eq!(
            chains.row(&event(2), at(0, 2, Some("k")), now).unwrap().seq,
            1
        );
    }

    #[test]
    fn checkpoints_cover_every_n_entries_then_the_rest_at_shutdown() {
        let mut chains = AuditChains::new(Some(signer()), policy(2, 3600));
        let now = Instant::now();
        let entries: Vec<EntryRow> = (0..5)
            .map(|i| {
                chains
                    .row(&event(i), at(0, i64::from(i), Some("k")), now)
                    .unwrap()
            })
            .collect();
        let hashes = hashes(&entries);
        let cut = chains.cut(now, 1, false);
        assert_eq!(cut.len(), 2);
        assert_checkpoint(&cut[0], &hashes, 1, 2);
        assert_checkpoint(&cut[1], &hashes, 3, 4);
        let old = root(&hashes[..2]);
        let new = root(&hashes[..4]);
        let proof: Vec<[u8; 32]> = cut[1]
            .consistency
            .iter()
            .map(|h| parse_hash(h).unwrap())
            .collect();
        assert!(verify_consistency(2, 4, &old, &new, &proof));
        // Nothing new is due until shutdown, which takes the rest.
        assert!(chains.cut(now, 2, false).is_empty());
        let rest = chains.cut(now, 3, true);
        assert_eq!(rest.len(), 1);
        assert_checkpoint(&rest[0], &hashes, 5, 5);
        assert!(chains.cut(now, 4, true).is_empty());
    }

    #[test]
    fn the_oldest_unchecked_entries_say_when_they_come_due() {
        let mut chains = AuditChains::new(Some(signer()), policy(100, 60));
        assert_eq!(chains.next_due(), None);
        let t0 = Instant::now();
        chains.row(&event(0), at(0, 0, Some("k")), t0).unwrap();
        chains
            .row(&event(1), at(1, 0, Some("j")), t0 + Duration::from_secs(5))
            .unwrap();
        assert_eq!(chains.next_due(), Some(t0 + Duration::from_secs(60)));
        assert!(chains.cut(t0 + Duration::from_secs(60), 1, false).len() == 1);
        assert_eq!(chains.next_due(), Some(t0 + Duration::from_secs(65)));
        assert!(chains.cut(t0 + Duration::from_secs(65), 2, false).len() == 1);
        assert_eq!(chains.next_due(), None);
        // Without a signer nothing is ever due.
        let mut unsigned = AuditChains::new(None, policy(100, 60));
        unsigned.row(&event(0), at(0, 0, Some("k")), t0).unwrap();
        assert_eq!(unsigned.next_due(), None);
    }

    #[test]
    fn a_partial_segment_is_checkpointed_once_it_is_old_enough() {
        let mut chains = AuditChains::new(Some(signer()), policy(100, 60));
        let t0 = Instant::now();
        let e = chains.row(&event(0), at(0, 0, Some("k")), t0).unwrap();
        assert!(chains
            .cut(t0 + Duration::from_secs(59), 1, false)
            .is_empty());
        let cut = chains.cut(t0 + Duration::from_secs(60), 2, false);
        assert_eq!(cut.len(), 1);
        assert_checkpoint(&cut[0], &hashes(&[e]), 1, 1);
    }

    #[test]
    fn without_a_signer_nothing_is_checkpointed() {
        let mut chains = AuditChains::new(None, policy(1, 0));
        let now = Instant::now();
        chains.row(&event(0), at(0, 0, Some("k")), now).unwrap();
        assert!(chains.cut(now, 1, true).is_empty());
    }

    #[test]
    fn restored_chains_continue_at_the_stored_head_and_forgotten_ones_restart() {
        let mut first = AuditChains::new(Some(signer()), policy(2, 3600));
        let now = Instant::now();
        let mut entries: Vec<EntryRow> = (0..3)
            .map(|i| {
                first
                    .row(&event(i), at(4, i64::from(i), Some("k")), now)
                    .unwrap()
            })
            .collect();
        let cut = first.cut(now, 1, false);
        assert_eq!(cut.len(), 1);
        let head = &entries[2];
        let stored = StoredChain {
            chain_id: "o/k".into(),
            seq: head.seq,
            entry_hash: head.entry_hash.clone(),
            kafka_partition: 4,
            org_id: "o".into(),
            team_id: "t".into(),
            checkpointed: 2,
            hashes: entries
                .iter()
                .map(|e| (e.seq, e.entry_hash.clone()))
                .collect(),
        };
        let mut second = AuditChains::new(Some(signer()), policy(2, 3600));
        second.restore(vec![stored.clone()], now);
        entries.push(second.row(&event(3), at(4, 3, Some("k")), now).unwrap());
        assert_linked(&entries);
        let cut = second.cut(now, 2, false);
        assert_eq!(cut.len(), 1);
        assert_checkpoint(&cut[0], &hashes(&entries), 3, 4);

        second.forget(&[4]);
        assert_eq!(
            second.row(&event(4), at(4, 4, Some("k")), now).unwrap().seq,
            1
        );

        // A gap in the stored chain: the chain continues, unchecked.
        let mut gap = stored;
        gap.hashes.remove(1);
        let mut third = AuditChains::new(Some(signer()), policy(1, 0));
        third.restore(vec![gap], now);
        assert_eq!(
            third.row(&event(5), at(4, 5, Some("k")), now).unwrap().seq,
            4
        );
        assert!(third.cut(now, 3, true).is_empty());
    }
}
