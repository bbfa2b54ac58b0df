//! Verification of audit chains: [`ChainVerifier`] recomputes one chain from
//! its rows in seq order (pure, no I/O) and locates the first break;
//! [`verify`] streams an org's (or team's) chains out of ClickHouse through
//! it. Used by `tollgate verify-audit` and `GET /api/v1/audit/verify`.
//!
//! Every entry is hashed again from its columns; every checkpoint's
//! signature is checked against the trusted public key, and its head hash
//! and Merkle roots against the recomputed entries (for version 2 also the
//! whole-chain root, the consistency proof from its predecessor, and that
//! the predecessor exists). With the anchor (`anchor.rs`) the anchored
//! checkpoints join the stored ones, so a checkpoint deleted from ClickHouse
//! still holds the chain to it, a stored v2 checkpoint missing from the
//! anchor is reported, and an anchored chain with no entries left is
//! reported truncated at seq 1. The first problem is reported with its
//! sequence number and kind (the algorithm is spelled out in docs/audit.md).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use clickhouse::Client;
use ed25519_dalek::VerifyingKey;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use tollgate_contract::audit::checkpoint::{check_signature, CheckpointRow};
use tollgate_contract::audit::entry::{entry_hash, parse_hash, EntryRow, GENESIS};
use tollgate_contract::audit::erasure::recorded_erasures;
use tollgate_contract::audit::merkle::{self, Compact};

use super::pages::{entries_page_sql, next_present, SeqRanges};

/// What is wrong at a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// An entry's content does not hash to its stored hash, or an entry was
    /// changed and its hash recomputed (the next entry links elsewhere).
    Edited,
    /// Sequence numbers skip: entries were deleted.
    Missing,
    /// An entry sits at another position than the one it was appended at.
    Reordered,
    /// A sequence number appears twice.
    Duplicate,
    /// An entry does not link to its predecessor, for no reason found above.
    BrokenLink,
    /// A checkpoint's signature does not verify with the trusted key.
    BadSignature,
    /// A validly signed checkpoint disagrees with the entries (the chain was
    /// rewritten consistently after it was signed).
    CheckpointMismatch,
    /// The chain ends before a signed checkpoint's last entry (seq 1: an
    /// anchored chain has no entries left at all).
    Truncated,
    /// A version 2 checkpoint's predecessor (the checkpoint ending at its
    /// `from_seq - 1`) is nowhere: a checkpoint was removed.
    MissingCheckpoint,
    /// A validly signed version 2 checkpoint in ClickHouse is not in the
    /// anchor: the anchor is incomplete (or was not the one written to).
    Unanchored,
    /// An entry of a search export is said to be unverifiable yet, but a
    /// checkpoint in the export or the anchor covers it.
    Unproven,
    /// A version 2 entry's personal fields were erased (its salt is gone)
    /// but no `admin.personal_data.erased` entry of its chain names it: an
    /// erasure nobody recorded.
    UnrecordedErasure,
}

impl BreakKind {
    /// The kind as reports name it (`edited`, `bad_signature`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edited => "edited",
            Self::Missing => "missing",
            Self::Reordered => "reordered",
            Self::Duplicate => "duplicate",
            Self::BrokenLink => "broken_link",
            Self::BadSignature => "bad_signature",
            Self::CheckpointMismatch => "checkpoint_mismatch",
            Self::Truncated => "truncated",
            Self::MissingCheckpoint => "missing_checkpoint",
            Self::Unanchored => "unanchored",
            Self::Unproven => "unproven",
            Self::UnrecordedErasure => "unrecorded_erasure",
        }
    }
}

/// The first problem found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub seq: u64,
    pub kind: BreakKind,
    pub detail: String,
}

/// The result of verifying one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub chain_id: String,
    /// Entries read and verified before the first break (all when none).
    pub entries: u64,
    /// Checkpoints whose signature, head and root were verified.
    pub checkpoints: u64,
    /// `to_seq` of the last verified checkpoint.
    pub verified_to_seq: Option<u64>,
    pub first_break: Option<Break>,
}

/// Recompute one chain, fed its rows in seq order.
pub struct ChainVerifier {
    chain_id: String,
    /// Checkpoints with a good signature, by `to_seq`.
    checkpoints: BTreeMap<u64, Vec<CheckpointRow>>,
    /// The first bad signature (lowest `to_seq`).
    signature_break: Option<Break>,
    /// Every verified entry hash (index seq - 1), for Merkle roots.
    hashes: Vec<[u8; 32]>,
    /// The whole-chain tree of the verified entries.
    tree: Compact,
    /// Whole-chain roots at the sizes v2 checkpoints prove consistency from.
    roots_at: BTreeMap<u64, [u8; 32]>,
    /// Sizes whose root is wanted in `roots_at`.
    wanted_roots: BTreeSet<u64>,
    head: [u8; 32],
    expected: u64,
    last_position: Option<(i32, i64)>,
    verified_checkpoints: u64,
    verified_to_seq: Option<u64>,
    first_break: Option<Break>,
    /// Verified entries whose personal fields are erased, with their entry
    /// hashes (hex).
    erased: BTreeMap<u64, String>,
    /// `(seq, entry hash)` of every entry the chain's erasure records name.
    recorded: HashSet<(u64, String)>,
}

/// A chain's checkpoints in the anchor, and the anchor's horizon: the
/// newest `created_at_ms` in the whole anchor read (a stored checkpoint
/// created later may have been published after the read, so it is not
/// held against the anchor).
#[derive(Debug, Clone, Default)]
pub struct Anchored {
    pub checkpoints: Vec<CheckpointRow>,
    pub horizon_ms: u64,
    /// When given, only the anchored checkpoints created at or before it
    /// join the chain (an export made then cannot hold later ones); all
    /// still count for `unanchored`.
    pub as_of_ms: Option<u64>,
}

/// How far around a misplaced entry to look for the position it was
/// appended at.
const REORDER_WINDOW: u64 = 16;

impl ChainVerifier {
    pub fn new(
        chain_id: &str,
        checkpoints: Vec<CheckpointRow>,
        trusted: Option<&VerifyingKey>,
    ) -> Self {
        Self::anchored(chain_id, checkpoints, None, trusted)
    }

    /// Like [`ChainVerifier::new`], also holding the chain to `anchored`
    /// (the chain's checkpoints in the anchor), when given.
    pub fn anchored(
        chain_id: &str,
        stored: Vec<CheckpointRow>,
        anchored: Option<Anchored>,
        trusted: Option<&VerifyingKey>,
    ) -> Self {
        let mut good: BTreeMap<u64, Vec<CheckpointRow>> = BTreeMap::new();
        // The earliest candidate break among the checkpoints (docs/audit.md,
        // step 1); on a tie the first found stays, as in docs/audit_verify.py.
        let mut signature_break: Option<Break> = None;
        let mut candidate = |b: Break| {
            if signature_break.as_ref().is_none_or(|s| b.seq < s.seq) {
                signature_break = Some(b);
            }
        };
        let stored_ids: HashSet<(u64, u64, String)> = stored
            .iter()
            .map(|c| (c.from_seq, c.to_seq, c.signature.clone()))
            .collect();
        let (known, horizon_ms, joined) = match anchored {
            Some(a) => {
                let known: HashSet<(u64, u64, String)> = a
                    .checkpoints
                    .iter()
                    .map(|c| (c.from_seq, c.to_seq, c.signature.clone()))
                    .collect();
                // The same checkpoint (same signed range and signature) counts
                // once, the stored copy kept; an export is not held to
                // checkpoints cut after it was made.
                let joined: Vec<CheckpointRow> = a
                    .checkpoints
                    .into_iter()
                    .filter(|c| a.as_of_ms.is_none_or(|t| c.created_at_ms <= t))
                    .filter(|c| !stored_ids.contains(&(c.from_seq, c.to_seq, c.signature.clone())))
                    .collect();
                (Some(known), a.horizon_ms, joined)
            }
            None => (None, 0, Vec::new()),
        };
        let sources = stored
            .into_iter()
            .map(|c| (c, true))
            .chain(joined.into_iter().map(|c| (c, false)));
        for (cp, is_stored) in sources {
            let signed = check_signature(&cp, trusted);
            match &signed {
                Ok(()) if cp.from_seq >= 1 && cp.from_seq <= cp.to_seq => {}
                Ok(()) => candidate(Break {
                    seq: cp.to_seq,
                    kind: BreakKind::CheckpointMismatch,
                    detail: format!(
                        "checkpoint covers an empty range {}..={}",
                        cp.from_seq, cp.to_seq
                    ),
                }),
                Err(why) => candidate(Break {
                    seq: cp.to_seq,
                    kind: BreakKind::BadSignature,
                    detail: format!("checkpoint {}..={}: {why}", cp.from_seq, cp.to_seq),
                }),
            }
            // Newer than anything in the anchor read: published after it.
            if let Some(known) = &known {
                if is_stored
                    && cp.v >= 2
                    && cp.created_at_ms <= horizon_ms
                    && !known.contains(&(cp.from_seq, cp.to_seq, cp.signature.clone()))
                    && signed.is_ok()
                {
                    candidate(Break {
                        seq: cp.to_seq,
                        kind: BreakKind::Unanchored,
                        detail: format!(
                            "signed checkpoint {}..={} is stored but not in the anchor",
                            cp.from_seq, cp.to_seq
                        ),
                    });
                }
            }
            if signed.is_ok() && cp.from_seq >= 1 && cp.from_seq <= cp.to_seq {
                let same = good.entry(cp.to_seq).or_default();
                if !same.contains(&cp) {
                    same.push(cp);
                }
            }
        }
        let wanted_roots = good
            .values()
            .flatten()
            .filter(|c| c.v >= 2)
            .map(|c| c.from_seq - 1)
            .collect();
        Self {
            chain_id: chain_id.to_string(),
            checkpoints: good,
            signature_break,
            hashes: Vec::new(),
            tree: Compact::new(),
            roots_at: BTreeMap::new(),
            wanted_roots,
            head: GENESIS,
            expected: 1,
            last_position: None,
            verified_checkpoints: 0,
            verified_to_seq: None,
            first_break: None,
            erased: BTreeMap::new(),
            recorded: HashSet::new(),
        }
    }

    fn fail(&mut self, seq: u64, kind: BreakKind, detail: String) -> bool {
        self.first_break = Some(Break { seq, kind, detail });
        false
    }

    /// Whether `row`, stored at seq `at`, was appended at another seq near it.
    fn appended_at(&self, row: &EntryRow, prev: &[u8; 32]) -> Option<u64> {
        let stored = parse_hash(&row.entry_hash)?;
        let low = row.seq.saturating_sub(REORDER_WINDOW).max(1);
        (low..=row.seq + REORDER_WINDOW)
            .filter(|s| *s != row.seq)
            .find(|s| {
                let mut moved = row.clone();
                moved.seq = *s;
                entry_hash(prev, &moved) == stored
            })
    }

    /// Verify the next row; false once the chain is broken (stop feeding).
    pub fn push(&mut self, row: &EntryRow) -> bool {
        self.push_hashed(row, None)
    }

    /// Verify the next rows, in seq order: [`ChainVerifier::push`] of each,
    /// their entry hashes worked out ahead on every core ([`hash_ahead`]).
    /// False once the chain is broken (stop feeding).
    pub fn push_batch(&mut self, rows: &[EntryRow]) -> bool {
        let ahead = hash_ahead(rows);
        rows.iter()
            .zip(ahead)
            .all(|(row, hash)| self.push_hashed(row, hash))
    }

    /// [`ChainVerifier::push`], given the entry hash of `row` over its own
    /// stored `prev_hash` when already computed: it is the hash of the
    /// intact link exactly when that `prev_hash` is the verified head, and
    /// only then is it used.
    fn push_hashed(&mut self, row: &EntryRow, over_stored_prev: Option<[u8; 32]>) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        let e = self.expected;
        if row.seq > e {
            let last = row.seq - 1;
            let what = if last == e {
                format!("entry {e} is missing")
            } else {
                format!("entries {e}..={last} are missing")
            };
            return self.fail(e, BreakKind::Missing, what);
        }
        if row.seq < e {
            return self.fail(
                row.seq,
                BreakKind::Duplicate,
                format!("sequence number {} appears twice", row.seq),
            );
        }
        let stored_prev = parse_hash(&row.prev_hash);
        let stored_hash = parse_hash(&row.entry_hash);
        let computed = match over_stored_prev {
            Some(hash) if stored_prev == Some(self.head) => hash,
            _ => entry_hash(&self.head, row),
        };
        let went_back = matches!(self.last_position, Some((p, o)) if p == row.kafka_partition && row.kafka_offset <= o);
        if stored_prev == Some(self.head) && stored_hash == Some(computed) && !went_back {
            self.accept(row, computed);
            return self.first_break.is_none();
        }
        // Something is wrong at `e`: say what.
        if let Some(prev) = stored_prev {
            if let Some(original) = self.appended_at(row, &prev) {
                return self.fail(
                    e,
                    BreakKind::Reordered,
                    format!("the entry stored at seq {e} was appended at seq {original}"),
                );
            }
        }
        if went_back {
            return self.fail(
                e,
                BreakKind::Reordered,
                format!(
                    "entry {e} comes from kafka offset {} of partition {}, before its predecessor's",
                    row.kafka_offset, row.kafka_partition
                ),
            );
        }
        if stored_prev == Some(self.head) {
            return self.fail(
                e,
                BreakKind::Edited,
                format!(
                    "entry {e} does not hash to its stored entry_hash: its content was changed"
                ),
            );
        }
        if let (Some(prev), Some(stored)) = (stored_prev, stored_hash) {
            if entry_hash(&prev, row) == stored && e > 1 {
                return self.fail(
                    e - 1,
                    BreakKind::Edited,
                    format!(
                        "entry {} was changed and its hash recomputed: entry {e} links to a different hash",
                        e - 1
                    ),
                );
            }
        }
        self.fail(
            e,
            BreakKind::BrokenLink,
            format!(
                "entry {e} neither links to entry {} nor hashes to its stored hash",
                e.saturating_sub(1)
            ),
        )
    }

    fn accept(&mut self, row: &EntryRow, hash: [u8; 32]) {
        if u64::from(row.occurred_at) != row.occurred_at_ms / 1000 {
            self.fail(
                row.seq,
                BreakKind::Edited,
                format!(
                    "entry {}: occurred_at does not match the hashed occurred_at_ms",
                    row.seq
                ),
            );
            return;
        }
        if row.is_erased() {
            self.erased
                .insert(row.seq, row.entry_hash.to_ascii_lowercase());
        }
        self.recorded.extend(recorded_erasures(
            &row.kind,
            &self.chain_id,
            &row.event_json,
        ));
        self.hashes.push(hash);
        self.tree.push(&hash);
        if self.wanted_roots.contains(&row.seq) {
            self.roots_at.insert(row.seq, self.tree.root());
        }
        self.head = hash;
        self.expected = row.seq + 1;
        self.last_position = Some((row.kafka_partition, row.kafka_offset));
        let seq = row.seq;
        let Some(checkpoints) = self.checkpoints.get(&seq) else {
            return;
        };
        for cp in checkpoints.clone() {
            let from = usize::try_from(cp.from_seq - 1).unwrap_or(usize::MAX);
            let root = self.hashes.get(from..).map(merkle::root);
            if cp.head_hash != hex::encode(self.head) {
                self.fail(
                    seq,
                    BreakKind::CheckpointMismatch,
                    format!(
                        "signed checkpoint {}..={} has head {}, the entries hash to {}",
                        cp.from_seq,
                        cp.to_seq,
                        cp.head_hash,
                        hex::encode(self.head)
                    ),
                );
                return;
            }
            if root.map(hex::encode).as_deref() != Some(cp.merkle_root.as_str()) {
                self.fail(
                    seq,
                    BreakKind::CheckpointMismatch,
                    format!(
                        "signed checkpoint {}..={}: merkle root does not match the entries",
                        cp.from_seq, cp.to_seq
                    ),
                );
                return;
            }
            if cp.v >= 2 {
                if let Err((at, kind, why)) = self.check_tree(&cp) {
                    self.fail(at, kind, why);
                    return;
                }
            }
            self.verified_checkpoints += 1;
            self.verified_to_seq = Some(seq);
        }
    }

    /// A v2 checkpoint at the current head: its whole-chain root, its
    /// predecessor, and the consistency proof from the predecessor's tree.
    fn check_tree(&self, cp: &CheckpointRow) -> Result<(), (u64, BreakKind, String)> {
        let root = self.tree.root();
        let range = format!("signed checkpoint {}..={}", cp.from_seq, cp.to_seq);
        if cp.tree_root != hex::encode(root) {
            return Err((
                cp.to_seq,
                BreakKind::CheckpointMismatch,
                format!(
                    "{range}: tree root does not match the entries 1..={}",
                    cp.to_seq
                ),
            ));
        }
        let old_size = cp.from_seq - 1;
        if old_size > 0 && !self.checkpoints.contains_key(&old_size) {
            return Err((
                old_size,
                BreakKind::MissingCheckpoint,
                format!("{range} follows a checkpoint ending at seq {old_size}, which is missing"),
            ));
        }
        let old_root = if old_size == 0 {
            Some(merkle::root(&[]))
        } else {
            self.roots_at.get(&old_size).copied()
        };
        let proof: Option<Vec<[u8; 32]>> = cp.consistency.iter().map(|h| parse_hash(h)).collect();
        let holds = match (old_root, proof) {
            (Some(old_root), Some(proof)) => {
                merkle::verify_consistency(old_size, cp.to_seq, &old_root, &root, &proof)
            }
            _ => false,
        };
        if !holds {
            return Err((
                cp.to_seq,
                BreakKind::CheckpointMismatch,
                format!("{range}: its consistency proof from tree size {old_size} does not hold"),
            ));
        }
        Ok(())
    }

    /// Entries verified so far.
    pub fn entries(&self) -> u64 {
        self.hashes.len() as u64
    }

    pub fn finish(mut self) -> ChainReport {
        if self.first_break.is_none() {
            let last = self.expected - 1;
            if let Some((to_seq, cps)) = self.checkpoints.range(last + 1..).next_back() {
                let from = cps.first().map_or(0, |c| c.from_seq);
                self.first_break = Some(Break {
                    seq: last + 1,
                    kind: BreakKind::Truncated,
                    detail: format!(
                        "the chain ends at seq {last} but signed checkpoint {from}..={to_seq} covers entries up to {to_seq}"
                    ),
                });
            }
        }
        if self.first_break.is_none() {
            let unrecorded = self
                .erased
                .iter()
                .find(|(seq, hash)| !self.recorded.contains(&(**seq, (*hash).clone())));
            if let Some((seq, _)) = unrecorded {
                self.first_break = Some(Break {
                    seq: *seq,
                    kind: BreakKind::UnrecordedErasure,
                    detail: format!(
                        "entry {seq}'s personal fields were erased but no erasure entry of the chain names it with its entry hash"
                    ),
                });
            }
        }
        let first_break = match (self.first_break, self.signature_break) {
            (Some(a), Some(b)) => Some(if b.seq <= a.seq { b } else { a }),
            (a, b) => a.or(b),
        };
        ChainReport {
            chain_id: self.chain_id,
            entries: self.hashes.len() as u64,
            checkpoints: self.verified_checkpoints,
            verified_to_seq: self.verified_to_seq,
            first_break,
        }
    }
}

/// Below this many rows a batch is hashed on the calling thread.
const PARALLEL_FROM: usize = 512;

/// The entry hash of each row over its own stored `prev_hash` (`None` where
/// that is not a hash), on every core: the hashes of an intact chain do
/// not depend on each other, only their links do, which
/// [`ChainVerifier`] checks in order.
pub fn hash_ahead(rows: &[EntryRow]) -> Vec<Option<[u8; 32]>> {
    let one = |row: &EntryRow| parse_hash(&row.prev_hash).map(|prev| entry_hash(&prev, row));
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if threads < 2 || rows.len() < PARALLEL_FROM {
        return rows.iter().map(one).collect();
    }
    let mut out = vec![None; rows.len()];
    let per_thread = rows.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (rows, out) in rows.chunks(per_thread).zip(out.chunks_mut(per_thread)) {
            scope.spawn(move || {
                for (row, hash) in rows.iter().zip(out) {
                    *hash = one(row);
                }
            });
        }
    });
    out
}

/// The columns of [`EntryRow`], in its field order (RowBinary reads by position).
pub const ENTRY_COLUMNS: &str = "chain_id, seq, occurred_at, occurred_at_ms, event_id, kind, org_id, team_id, user_id, api_key_id, provider, model, outcome, decision, decision_reason, event_json, prev_hash, entry_hash, kafka_partition, kafka_offset, v, salt, personal_commitment";

/// The columns of [`CheckpointRow`], in its field order.
pub const CHECKPOINT_COLUMNS: &str =
    "chain_id, from_seq, to_seq, head_hash, merkle_root, created_at_ms, public_key, signature, v, tree_root, org_id, team_id, consistency";

/// Chains holding entries of an org (and team).
pub const CHAINS_SQL: &str =
    "SELECT DISTINCT chain_id FROM audit_chain WHERE org_id = ? AND (? = '' OR team_id = ?) ORDER BY chain_id";

/// Chains holding entries of an org (and team) that occurred in
/// `[from_ms, to_ms)`.
pub const CHAINS_IN_RANGE_SQL: &str =
    "SELECT DISTINCT chain_id FROM audit_chain WHERE org_id = ? AND (? = '' OR team_id = ?) AND occurred_at_ms >= ? AND occurred_at_ms < ? ORDER BY chain_id";

/// The highest seq of a chain.
pub const MAX_SEQ_SQL: &str = "SELECT max(seq) FROM audit_chain WHERE chain_id = ?";

pub fn checkpoints_sql() -> String {
    format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE chain_id = ? ORDER BY to_seq, created_at_ms")
}

/// Rows handed to the hashing thread at a time.
const BATCH: usize = 8_192;

/// Batches read ahead of the hashing thread.
const BATCHES_AHEAD: usize = 4;

/// Chains verified at once.
const CHAINS_AT_ONCE: usize = 4;

/// What a verification found, in one word: every chain whole, a chain
/// broken, or nothing to verify. Verifying nothing is not a pass: a
/// mistyped org or team id, or an export of a search that found nothing,
/// would otherwise read as a verified trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Verified,
    Broken,
    NothingVerified,
}

impl Verdict {
    /// The verdict of a verification that found a break or not, over
    /// `entries` entries.
    pub fn of(broken: bool, entries: u64) -> Self {
        match (broken, entries) {
            (true, _) => Self::Broken,
            (false, 0) => Self::NothingVerified,
            (false, _) => Self::Verified,
        }
    }

    /// The exit status `tollgate verify-audit` ends with: 0, 1 when
    /// broken, 2 when nothing was verified.
    pub fn exit_status(self) -> i32 {
        match self {
            Self::Verified => 0,
            Self::Broken => 1,
            Self::NothingVerified => 2,
        }
    }
}

/// The result of verifying an org's (or a team's) chains.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub org: String,
    pub team: Option<String>,
    /// The verdict is [`Verdict::Verified`].
    pub ok: bool,
    pub verdict: Verdict,
    pub chains: Vec<ChainReport>,
    pub entries: u64,
    pub checkpoints: u64,
    pub elapsed_ms: u64,
    pub entries_per_s: u64,
    /// The trusted public key the checkpoints were checked against (hex), if any.
    pub public_key: Option<String>,
}

impl AuditReport {
    /// One line per chain, for people.
    pub fn lines(&self) -> Vec<String> {
        self.chains.iter().map(ChainReport::line).collect()
    }
}

impl ChainReport {
    /// What was verified, or where and how the chain is broken, for people.
    pub fn line(&self) -> String {
        match &self.first_break {
            None => match self.verified_to_seq {
                Some(to) => format!(
                    "chain {}: verified {} entries up to checkpoint at seq {to} ({} checkpoints); {} after it verified by hash links only",
                    self.chain_id,
                    self.entries,
                    self.checkpoints,
                    self.entries.saturating_sub(to)
                ),
                None => format!(
                    "chain {}: verified {} entries by hash links (no checkpoint yet)",
                    self.chain_id, self.entries
                ),
            },
            Some(b) => format!(
                "chain {}: BROKEN at seq {}: {} ({})",
                self.chain_id,
                b.seq,
                b.kind.as_str(),
                b.detail
            ),
        }
    }
}

/// Verify every chain of `org` (and `team`), streaming rows in seq order.
pub async fn verify(
    client: &Client,
    org: &str,
    team: Option<&str>,
    trusted: Option<&VerifyingKey>,
) -> clickhouse::error::Result<AuditReport> {
    verify_range(client, org, team, None, None, trusted).await
}

/// Like [`verify`], for the chains holding the org's entries that occurred
/// in `[from_ms, to_ms)` (all chains when `range` is `None`). Each chain is
/// still verified from its first entry: its links reach back to genesis.
///
/// With `anchor` (every checkpoint read from the anchor topic or a file),
/// each chain is also held to its anchored checkpoints, and every anchored
/// chain of the org (and team) that has no entries in ClickHouse is
/// verified too, which reports it truncated at seq 1.
pub async fn verify_range(
    client: &Client,
    org: &str,
    team: Option<&str>,
    range: Option<(u64, u64)>,
    anchor: Option<&[CheckpointRow]>,
    trusted: Option<&VerifyingKey>,
) -> clickhouse::error::Result<AuditReport> {
    let started = Instant::now();
    let team_filter = team.unwrap_or("");
    let chains: Vec<String> = match range {
        None => {
            client
                .query(CHAINS_SQL)
                .bind(org)
                .bind(team_filter)
                .bind(team_filter)
                .fetch_all()
                .await?
        }
        Some((from_ms, to_ms)) => {
            client
                .query(CHAINS_IN_RANGE_SQL)
                .bind(org)
                .bind(team_filter)
                .bind(team_filter)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all()
                .await?
        }
    };
    let mut chains = chains;
    let mut by_chain: BTreeMap<&str, Vec<CheckpointRow>> = BTreeMap::new();
    if let Some(anchor) = anchor {
        for cp in anchor {
            by_chain
                .entry(cp.chain_id.as_str())
                .or_default()
                .push(cp.clone());
        }
        let listed: BTreeSet<String> = chains.iter().cloned().collect();
        for (chain, cps) in &by_chain {
            let ours = cps
                .iter()
                .any(|c| c.org_id == org && team.is_none_or(|t| c.team_id == t));
            if ours && !listed.contains(*chain) {
                let present: u64 = client.query(MAX_SEQ_SQL).bind(*chain).fetch_one().await?;
                if present == 0 {
                    chains.push((*chain).to_string());
                }
            }
        }
    }
    let horizon_ms = anchor
        .and_then(|all| all.iter().map(|c| c.created_at_ms).max())
        .unwrap_or(0);
    // Chains are independent: several are read and hashed at once, their
    // reports kept in chain order.
    let reports: Vec<ChainReport> = futures::stream::iter(chains)
        .map(|chain| {
            let anchored = anchor.map(|_| Anchored {
                checkpoints: by_chain.get(chain.as_str()).cloned().unwrap_or_default(),
                horizon_ms,
                as_of_ms: None,
            });
            async move { verify_chain_anchored(client, &chain, anchored, trusted).await }
        })
        .buffered(CHAINS_AT_ONCE)
        .try_collect()
        .await?;
    let entries = reports.iter().map(|r| r.entries).sum();
    let elapsed = started.elapsed();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let entries_per_s = (entries as f64 / elapsed.as_secs_f64().max(1e-6)) as u64;
    let verdict = Verdict::of(reports.iter().any(|r| r.first_break.is_some()), entries);
    Ok(AuditReport {
        org: org.to_string(),
        team: team.map(str::to_string),
        ok: verdict == Verdict::Verified,
        verdict,
        checkpoints: reports.iter().map(|r| r.checkpoints).sum(),
        chains: reports,
        entries,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        entries_per_s,
        public_key: trusted.map(|k| hex::encode(k.to_bytes())),
    })
}

/// [`verify_range`] held to the anchor as the API and the compliance page
/// hold it ([`super::anchor::AnchorSource`]), read again afresh (up to
/// three reads in all) while a chain looks unanchored: a checkpoint is
/// published before it is inserted, and one inserted after the read looks
/// unanchored. With no readable anchor, ClickHouse alone, and the answer
/// says so.
pub async fn verify_held(
    client: &Client,
    anchor: &super::anchor::AnchorSource,
    org: &str,
    team: Option<&str>,
    trusted: Option<&VerifyingKey>,
) -> clickhouse::error::Result<(AuditReport, super::anchor::AnchorUse)> {
    let mut attempt = 1;
    loop {
        let (checkpoints, used) = anchor.read(attempt > 1).await;
        let report = verify_range(client, org, team, None, checkpoints.as_deref(), trusted).await?;
        if checkpoints.is_none() || !report.unanchored() || attempt == 3 {
            return Ok((report, used));
        }
        attempt += 1;
    }
}

impl AuditReport {
    /// Whether a chain broke as not anchored (`BreakKind::Unanchored`).
    pub fn unanchored(&self) -> bool {
        self.chains.iter().any(|c| {
            c.first_break
                .as_ref()
                .is_some_and(|b| b.kind == BreakKind::Unanchored)
        })
    }
}

/// Verify one chain.
pub async fn verify_chain(
    client: &Client,
    chain: &str,
    trusted: Option<&VerifyingKey>,
) -> clickhouse::error::Result<ChainReport> {
    verify_chain_anchored(client, chain, None, trusted).await
}

/// Verify one chain, held to its anchored checkpoints when given.
pub async fn verify_chain_anchored(
    client: &Client,
    chain: &str,
    anchored: Option<Anchored>,
    trusted: Option<&VerifyingKey>,
) -> clickhouse::error::Result<ChainReport> {
    let checkpoints: Vec<CheckpointRow> = client
        .query(&checkpoints_sql())
        .bind(chain)
        .fetch_all()
        .await?;
    let max_seq: u64 = client.query(MAX_SEQ_SQL).bind(chain).fetch_one().await?;
    let mut verifier = ChainVerifier::anchored(chain, checkpoints, anchored, trusted);
    // Reading (here) overlaps hashing (on a blocking thread, in batches);
    // the verifier hangs up at the first break, which stops the reading.
    let (batches, mut arriving) = tokio::sync::mpsc::channel::<Vec<EntryRow>>(BATCHES_AHEAD);
    let verifying = tokio::task::spawn_blocking(move || {
        while let Some(batch) = arriving.blocking_recv() {
            if !verifier.push_batch(&batch) {
                break;
            }
        }
        verifier
    });
    let read = read_entries(client, chain, max_seq, batches).await;
    let verifier = verifying.await.map_err(|e| {
        clickhouse::error::Error::Custom(format!("verifying chain {chain} stopped: {e}"))
    })?;
    read?;
    Ok(verifier.finish())
}

/// Send the entries of `chain` up to `max_seq`, in seq order and batches,
/// until they are all sent or the receiver hangs up.
async fn read_entries(
    client: &Client,
    chain: &str,
    max_seq: u64,
    batches: tokio::sync::mpsc::Sender<Vec<EntryRow>>,
) -> clickhouse::error::Result<()> {
    let page_sql = entries_page_sql();
    let mut batch = Vec::with_capacity(BATCH);
    let mut ranges = SeqRanges::new(max_seq);
    while let Some((from, through)) = ranges.next_range() {
        let mut cursor = client
            .query(&page_sql)
            .bind(chain)
            .bind(from)
            .bind(through)
            .fetch::<EntryRow>()?;
        let mut empty = true;
        while let Some(row) = cursor.next().await? {
            empty = false;
            batch.push(row);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if batches.send(full).await.is_err() {
                    return Ok(());
                }
            }
        }
        if empty {
            if let Some(after) = ranges.after_empty() {
                ranges.resume_at(next_present(client, chain, after).await?);
            }
        }
    }
    if !batch.is_empty() {
        // A hang-up here means the chain broke: nothing left to tell it.
        let _ = batches.send(batch).await;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tollgate_contract::audit::checkpoint::CheckpointSigner;
    use tollgate_contract::audit::entry::{chain_entry, EntryFields, Position};

    pub(crate) fn chain(n: u64) -> Vec<EntryRow> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let fields = EntryFields {
                    occurred_at_ms: 1_700_000_000_000 + seq,
                    event_id: format!("e{seq}"),
                    kind: tollgate_contract::KIND_CALL_COMPLETED.into(),
                    org_id: "o".into(),
                    team_id: "t".into(),
                    user_id: "u".into(),
                    api_key_id: "k".into(),
                    provider: "openai".into(),
                    model: "m".into(),
                    outcome: "success".into(),
                    decision: String::new(),
                    decision_reason: String::new(),
                    event_json: format!("{{\"n\":{seq}}}"),
                };
                let (row, h) = chain_entry(
                    fields,
                    Position {
                        chain_id: "t",
                        seq,
                        partition: 0,
                        offset: seq as i64 * 2,
                    },
                    &prev,
                    &[u8::try_from(seq % 256).unwrap(); 32],
                );
                prev = h;
                row
            })
            .collect()
    }

    pub(crate) fn checkpoints(
        rows: &[EntryRow],
        signer: &CheckpointSigner,
        every: usize,
    ) -> Vec<CheckpointRow> {
        let hashes: Vec<[u8; 32]> = rows
            .iter()
            .map(|r| parse_hash(&r.entry_hash).unwrap())
            .collect();
        let chain = tollgate_contract::audit::checkpoint::ChainRef {
            chain_id: "t",
            org_id: "o",
            team_id: "t",
        };
        let mut prefix = Compact::new();
        hashes
            .chunks(every)
            .enumerate()
            .map(|(i, seg)| {
                signer
                    .checkpoint(chain, (i * every) as u64 + 1, seg, &mut prefix, 1)
                    .unwrap()
            })
            .collect()
    }

    fn run_anchored(
        rows: &[EntryRow],
        stored: Vec<CheckpointRow>,
        anchored: Vec<CheckpointRow>,
        key: &VerifyingKey,
    ) -> ChainReport {
        let anchored = Anchored {
            checkpoints: anchored,
            horizon_ms: u64::MAX,
            as_of_ms: None,
        };
        let mut v = ChainVerifier::anchored("t", stored, Some(anchored), Some(key));
        for r in rows {
            if !v.push(r) {
                break;
            }
        }
        v.finish()
    }

    fn run(rows: &[EntryRow], cps: Vec<CheckpointRow>, key: &VerifyingKey) -> ChainReport {
        let mut v = ChainVerifier::new("t", cps, Some(key));
        for r in rows {
            if !v.push(r) {
                break;
            }
        }
        v.finish()
    }

    fn setup() -> (Vec<EntryRow>, Vec<CheckpointRow>, VerifyingKey) {
        let signer = CheckpointSigner::from_hex_seed(&"11".repeat(32)).unwrap();
        let rows = chain(25);
        let cps = checkpoints(&rows[..20], &signer, 10);
        let key = tollgate_contract::audit::checkpoint::parse_public_key(signer.public_key_hex())
            .unwrap();
        (rows, cps, key)
    }

    fn broken(report: &ChainReport) -> (u64, BreakKind) {
        let b = report.first_break.as_ref().expect("a break");
        (b.seq, b.kind)
    }

    /// `rows` with entry `seq` erased as `tollgate erase` does it.
    fn erase(rows: &mut [EntryRow], seq: u64) {
        let row = &mut rows[usize::try_from(seq - 1).unwrap()];
        row.user_id.clear();
        row.event_json.clear();
        row.salt.clear();
    }

    /// `rows` followed by an erasure record naming `seqs` with their entry
    /// hashes, chained as the audit fold chains it.
    fn with_erasure_record(rows: Vec<EntryRow>, seqs: &[u64]) -> Vec<EntryRow> {
        let hashes = seqs
            .iter()
            .map(|s| rows[usize::try_from(*s - 1).unwrap()].entry_hash.clone())
            .collect();
        with_erasure_record_of(rows, seqs, hashes)
    }

    /// `rows` followed by an erasure record naming `seqs` with `hashes`.
    fn with_erasure_record_of(
        mut rows: Vec<EntryRow>,
        seqs: &[u64],
        hashes: Vec<String>,
    ) -> Vec<EntryRow> {
        use tollgate_contract::audit::erasure::{erasure_event, ErasureRecord};
        let last = rows.last().unwrap();
        let record = ErasureRecord {
            erasure_id: uuid::Uuid::nil(),
            reason: "ticket".into(),
            chain_id: "t".into(),
            seqs: seqs.to_vec(),
            entry_hashes: hashes,
            tables: Default::default(),
        };
        let event = erasure_event("key:x", "o", "t", &record);
        let fields = tollgate_contract::audit::entry::entry_fields(&event).unwrap();
        let seq = last.seq + 1;
        let (row, _) = chain_entry(
            fields,
            Position {
                chain_id: "t",
                seq,
                partition: 0,
                offset: last.kafka_offset + 1,
            },
            &parse_hash(&last.entry_hash).unwrap(),
            &[3; 32],
        );
        rows.push(row);
        rows
    }

    #[test]
    fn erased_entries_verify_when_recorded_and_break_when_not() {
        let (rows, _, key) = setup();
        let signer = CheckpointSigner::from_hex_seed(&"11".repeat(32)).unwrap();
        let mut rows = with_erasure_record(rows, &[3, 12]);
        let cps = checkpoints(&rows, &signer, 13);
        erase(&mut rows, 3);
        erase(&mut rows, 12);
        let r = run(&rows, cps.clone(), &key);
        assert_eq!(r.first_break, None, "{r:?}");
        assert_eq!((r.entries, r.checkpoints), (26, 2));
        // An erasure the chain does not record.
        let mut unrecorded = rows.clone();
        erase(&mut unrecorded, 7);
        let r = run(&unrecorded, cps.clone(), &key);
        assert_eq!(broken(&r), (7, BreakKind::UnrecordedErasure));
        // A record that names the seq with another hash (forged without
        // reading the chain) excuses nothing.
        let (plain, _, _) = setup();
        let mut forged = with_erasure_record_of(plain, &[3], vec!["00".repeat(32)]);
        let forged_cps = checkpoints(&forged, &signer, 13);
        erase(&mut forged, 3);
        let r = run(&forged, forged_cps, &key);
        assert_eq!(broken(&r), (3, BreakKind::UnrecordedErasure));
        // Erased entries stay held to their hash: an edit is still caught.
        let mut edited = rows.clone();
        edited[2].model = "cheap".into();
        assert_eq!(broken(&run(&edited, cps, &key)), (3, BreakKind::Edited));
    }

    /// Hashing ahead in batches (on several threads past `PARALLEL_FROM`
    /// rows) finds every break where pushing one row at a time does.
    #[test]
    fn batches_find_what_single_rows_find() {
        let rows = chain(3_000);
        let mut edited = rows.clone();
        edited[1_499].model = "cheaper".into();
        let mut rehashed = rows.clone();
        rehashed[699].user_id = "someone-else".into();
        let prev = parse_hash(&rehashed[699].prev_hash).unwrap();
        rehashed[699].entry_hash = hex::encode(entry_hash(&prev, &rehashed[699]));
        let mut removed = rows.clone();
        removed.remove(1_999);
        let mut swapped = rows.clone();
        swapped.swap(2_500, 2_501);
        swapped[2_500].seq = 2_501;
        swapped[2_501].seq = 2_502;
        let mut bad_prev = rows.clone();
        bad_prev[2_899].prev_hash = "not hex".into();
        let cases = [
            (rows, None),
            (edited, Some((1_500, BreakKind::Edited))),
            (rehashed, Some((700, BreakKind::Edited))),
            (removed, Some((2_000, BreakKind::Missing))),
            (swapped, Some((2_501, BreakKind::Reordered))),
            (bad_prev, Some((2_900, BreakKind::BrokenLink))),
        ];
        for (rows, want) in cases {
            let mut one = ChainVerifier::new("t", Vec::new(), None);
            rows.iter().all(|r| one.push(r));
            let mut batched = ChainVerifier::new("t", Vec::new(), None);
            rows.chunks(1_024).all(|b| batched.push_batch(b));
            let (one, batched) = (one.finish(), batched.finish());
            assert_eq!(one, batched);
            assert_eq!(one.first_break.map(|b| (b.seq, b.kind)), want);
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let (rows, cps, key) = setup();
        let r = run(&rows, cps, &key);
        assert_eq!(r.first_break, None);
        assert_eq!(
            (r.entries, r.checkpoints, r.verified_to_seq),
            (25, 2, Some(20))
        );
    }

    #[test]
    fn each_tamper_is_located() {
        let (rows, cps, key) = setup();
        let mut edited = rows.clone();
        edited[6].model = "cheaper".into();
        assert_eq!(
            broken(&run(&edited, cps.clone(), &key)),
            (7, BreakKind::Edited)
        );

        let mut rehashed = rows.clone();
        rehashed[6].user_id = "someone-else".into();
        let prev = parse_hash(&rehashed[6].prev_hash).unwrap();
        rehashed[6].entry_hash = hex::encode(entry_hash(&prev, &rehashed[6]));
        assert_eq!(
            broken(&run(&rehashed, cps.clone(), &key)),
            (7, BreakKind::Edited)
        );

        let mut missing = rows.clone();
        missing.remove(11);
        assert_eq!(
            broken(&run(&missing, cps.clone(), &key)),
            (12, BreakKind::Missing)
        );

        let mut swapped = rows.clone();
        swapped.swap(4, 5);
        swapped[4].seq = 5;
        swapped[5].seq = 6;
        assert_eq!(
            broken(&run(&swapped, cps.clone(), &key)),
            (5, BreakKind::Reordered)
        );

        let truncated = &rows[..17];
        assert_eq!(
            broken(&run(truncated, cps.clone(), &key)),
            (18, BreakKind::Truncated)
        );

        let mut forged = cps.clone();
        forged[1].signature = forged[0].signature.clone();
        assert_eq!(
            broken(&run(&rows, forged, &key)),
            (20, BreakKind::BadSignature)
        );

        let mut duplicated = rows.clone();
        duplicated.insert(3, rows[2].clone());
        assert_eq!(
            broken(&run(&duplicated, cps, &key)),
            (3, BreakKind::Duplicate)
        );
    }

    /// Deleting the newest stored checkpoint and then cutting or rewriting
    /// the chain after the one before passes without the anchor (which is
    /// why there is one) and is caught with it.
    #[test]
    fn the_anchor_holds_the_chain_to_deleted_checkpoints() {
        let (rows, cps, key) = setup();
        let stored = cps[..1].to_vec();
        // Truncated after checkpoint 10, checkpoint 20 deleted.
        assert_eq!(run(&rows[..12], stored.clone(), &key).first_break, None);
        assert_eq!(
            broken(&run_anchored(
                &rows[..12],
                stored.clone(),
                cps.clone(),
                &key
            )),
            (13, BreakKind::Truncated)
        );
        // Rewritten consistently after checkpoint 10, checkpoint 20 deleted.
        let mut rewritten = rows.clone();
        rewritten[14].model = "x".into();
        let mut prev = parse_hash(&rewritten[14].prev_hash).unwrap();
        for row in rewritten.iter_mut().skip(14) {
            row.prev_hash = hex::encode(prev);
            prev = entry_hash(&prev, row);
            row.entry_hash = hex::encode(prev);
        }
        assert_eq!(run(&rewritten, stored.clone(), &key).first_break, None);
        assert_eq!(
            broken(&run_anchored(&rewritten, stored.clone(), cps.clone(), &key)),
            (20, BreakKind::CheckpointMismatch)
        );
        // A dropped chain: no entries, anchored checkpoints.
        assert_eq!(
            broken(&run_anchored(&[], vec![], cps.clone(), &key)),
            (1, BreakKind::Truncated)
        );
        // A stored checkpoint the anchor lacks.
        assert_eq!(
            broken(&run_anchored(&rows, cps.clone(), cps[..1].to_vec(), &key)),
            (20, BreakKind::Unanchored)
        );
        assert_eq!(
            run_anchored(&rows, cps.clone(), cps.clone(), &key).first_break,
            None
        );
        // ...unless it is newer than everything in the anchor read.
        let mut v = ChainVerifier::anchored(
            "t",
            cps.clone(),
            Some(Anchored {
                checkpoints: cps[..1].to_vec(),
                horizon_ms: 0,
                as_of_ms: None,
            }),
            Some(&key),
        );
        rows.iter().for_each(|r| {
            v.push(r);
        });
        assert_eq!(v.finish().first_break, None);
    }

    #[test]
    fn checkpoints_must_link_by_consistency_proofs() {
        let (rows, cps, key) = setup();
        // The first checkpoint removed: the second one's predecessor is gone.
        assert_eq!(
            broken(&run(&rows, cps[1..].to_vec(), &key)),
            (10, BreakKind::MissingCheckpoint)
        );
        // A wrong consistency proof (it is not signed; it must still hold).
        let mut bad = cps.clone();
        bad[1].consistency[0] = hex::encode([7u8; 32]);
        assert_eq!(
            broken(&run(&rows, bad, &key)),
            (20, BreakKind::CheckpointMismatch)
        );
        assert_eq!(cps[0].consistency.len(), 0);
        assert!(!cps[1].consistency.is_empty());
    }

    #[test]
    fn consistent_rewrite_is_caught_by_the_checkpoint() {
        let (rows, cps, key) = setup();
        // Rewrite entry 3 and every hash after it, as an attacker with write
        // access but without the signing key would.
        let mut rewritten = rows.clone();
        rewritten[2].model = "x".into();
        let mut prev = parse_hash(&rewritten[2].prev_hash).unwrap();
        for row in rewritten.iter_mut().skip(2) {
            row.prev_hash = hex::encode(prev);
            prev = entry_hash(&prev, row);
            row.entry_hash = hex::encode(prev);
        }
        assert_eq!(
            broken(&run(&rewritten, cps, &key)),
            (10, BreakKind::CheckpointMismatch)
        );
    }
}
