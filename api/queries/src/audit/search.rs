//! Compliance search over the audit chain: the [`SearchQuery`] (filters, time
//! range, page size, opaque cursor) parsed from a URL query, the SQL it runs,
//! one entry by chain position, and RFC 6962 inclusion proofs of entries
//! against the signed checkpoint that covers them ([`ProofSource`]).
//!
//! Results are ordered by `(occurred_at_ms, chain_id, seq)`, a total order
//! (a chain position is unique), so a cursor holding the last row's triple
//! pages through a result without duplicates or gaps even while entries are
//! appended. The cursor is that triple, hex-encoded: opaque to callers.
//!
//! A page is read in two steps: its positions from `audit_search`, the
//! searchable columns of every entry ordered by `(org_id, occurred_at_ms,
//! chain_id, seq)` (migration 0038, fed by a materialized view), so a
//! search by org and time reads a narrow, ordered range; then those
//! entries' columns from `audit_chain` by its primary key. The daily
//! counts read the index alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use clickhouse::Client;
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::verify::{checkpoints_sql, ENTRY_COLUMNS};
use crate::params::{parse_any_time, Expected, InvalidParameter, QueryParams};
use crate::table::Table;
use tollgate_contract::audit::checkpoint::{check_signature, CheckpointRow};
use tollgate_contract::audit::entry::{parse_hash, EntryRow};
use tollgate_contract::audit::merkle;

/// Default and largest page size.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

/// The query parameters the search accepts (besides `limit`, `cursor`,
/// `proof`, `from`, `to`), each an exact-match filter on its column.
pub const FILTERS: [(&str, &str); 9] = [
    ("org", "org_id"),
    ("team", "team_id"),
    ("user", "user_id"),
    ("key", "api_key_id"),
    ("model", "model"),
    ("provider", "provider"),
    ("outcome", "outcome"),
    ("decision", "decision"),
    ("kind", "kind"),
];

/// Where a page starts: after this `(occurred_at_ms, chain_id, seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub occurred_at_ms: u64,
    pub chain_id: String,
    pub seq: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{}\n{}\n{}",
            self.occurred_at_ms, self.seq, self.chain_id
        ))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '\n');
        let occurred_at_ms = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let chain_id = parts.next()?.to_string();
        Some(Self {
            occurred_at_ms,
            chain_id,
            seq,
        })
    }
}

/// A parsed, validated search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchQuery {
    /// Values of [`FILTERS`], in that order; empty means "any".
    pub filters: [String; 9],
    /// `occurred_at_ms >= from_ms` (inclusive).
    pub from_ms: Option<u64>,
    /// `occurred_at_ms < to_ms` (exclusive).
    pub to_ms: Option<u64>,
    pub limit: u64,
    pub cursor: Option<Cursor>,
    /// Attach inclusion proofs to the results.
    pub proof: bool,
}

fn invalid(parameter: &str, reason: impl Into<String>) -> InvalidParameter {
    InvalidParameter::new(parameter, reason)
}

/// A time as RFC 3339 (`2026-03-10T10:00:00Z`), a `datetime-local` value
/// in UTC (`2026-03-10T10:00`), a date (`2026-03-10`, midnight UTC) or
/// epoch milliseconds.
pub fn parse_time_ms(parameter: &str, text: &str) -> Result<u64, InvalidParameter> {
    let text = text.trim();
    if let Some(time) = parse_any_time(text) {
        return u64::try_from(time.timestamp_millis())
            .map_err(|_| invalid(parameter, format!("`{text}` is before 1970")));
    }
    text.parse::<u64>().map_err(|_| {
        invalid(
            parameter,
            format!("`{text}` is not a time: use RFC 3339 like 2026-03-10T10:00:00Z, a date like 2026-03-10, or epoch milliseconds"),
        )
    })
}

/// What a search is read for, which decides what its `limit`, `cursor`
/// and `proof` can mean (`docs/audit.md`, "Compliance search" and
/// "Exporting a search"). A parameter the use cannot honour is refused,
/// naming it and why, never silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchUse {
    /// `GET /api/v1/audit/entries`: a page of `limit` entries from
    /// `cursor`, with proofs when `proof` is true.
    Entries,
    /// The compliance search page: a page of `limit` entries from
    /// `cursor`; it shows no proofs (an entry's page does).
    Page,
    /// The page's CSV: every entry from `cursor`, read `limit` at a time;
    /// it holds no proofs (the NDJSON export does).
    Csv,
    /// An NDJSON export: every entry of the search or every entry of the
    /// chains, with the proofs the format defines; no page, no cursor.
    Export,
}

impl SearchUse {
    /// Why this use refuses the known parameter `name`, if it does.
    fn refuses(self, name: &str) -> Option<&'static str> {
        match (self, name) {
            (Self::Page, "proof") => Some(
                "the search page shows no proofs: an entry's page shows its proof, and \
                 /api/v1/audit/entries?proof=true answers them",
            ),
            (Self::Csv, "proof") => Some(
                "the CSV holds no proofs: the NDJSON export (/compliance/export) carries each \
                 entry's proof",
            ),
            (Self::Export, "limit" | "cursor") => Some(
                "an export holds every matching entry (a whole chain from seq 1, or the whole \
                 search) under a signed manifest, so it is never a page: read pages from \
                 /api/v1/audit/entries with limit and cursor",
            ),
            (Self::Export, "proof") => Some(
                "an export's proofs are fixed by its format: a search export's entries always \
                 carry their inclusion proof, a whole-chain export is proven by its links \
                 and checkpoints",
            ),
            _ => None,
        }
    }
}

impl SearchQuery {
    /// From URL query pairs, for `GET /api/v1/audit/entries`
    /// ([`SearchUse::Entries`]); see [`Self::parse_for`].
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, InvalidParameter> {
        Self::parse_for(pairs, SearchUse::Entries)
    }

    /// From URL query pairs, read for `what`. Unknown or repeated
    /// parameters, bad times, `from` not before `to`, a bad limit or
    /// cursor, and a `limit`, `cursor` or `proof` that `what` cannot
    /// honour (even empty) are errors naming the parameter; empty values
    /// mean "not given".
    pub fn parse_for(
        pairs: &[(String, String)],
        what: SearchUse,
    ) -> Result<Self, InvalidParameter> {
        let mut query = Self {
            limit: DEFAULT_LIMIT,
            ..Self::default()
        };
        let names: Vec<&str> = FILTERS
            .iter()
            .map(|(n, _)| *n)
            .chain(["from", "to", "limit", "cursor", "proof"])
            .filter(|name| what.refuses(name).is_none())
            .collect();
        if let Some((name, reason)) = pairs
            .iter()
            .find_map(|(name, _)| what.refuses(name).map(|reason| (name, reason)))
        {
            return Err(invalid(name, reason));
        }
        let params = QueryParams::parse(
            pairs,
            &Expected {
                names: &names,
                prefixes: &[],
            },
        )?;
        for (known, value) in params.iter() {
            let value = value.trim();
            if value.len() > 256 {
                return Err(invalid(known, "longer than 256 bytes"));
            }
            if value.is_empty() {
                continue;
            }
            match known {
                "from" => query.from_ms = Some(parse_time_ms("from", value)?),
                "to" => query.to_ms = Some(parse_time_ms("to", value)?),
                "limit" => {
                    query.limit = value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            invalid(
                                "limit",
                                format!("`{value}` is not a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                "cursor" => {
                    query.cursor =
                        Some(Cursor::decode(value).ok_or_else(|| {
                            invalid("cursor", "not a cursor this server handed out")
                        })?);
                }
                "proof" => {
                    query.proof = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => {
                            let shown: String = value.chars().take(64).collect();
                            return Err(invalid(
                                "proof",
                                format!("`{shown}` is not one of true, false, 1, 0, yes, no"),
                            ));
                        }
                    };
                }
                filter => {
                    if let Some(i) = FILTERS.iter().position(|(n, _)| *n == filter) {
                        query.filters[i] = value.to_string();
                    }
                }
            }
        }
        if let (Some(from), Some(to)) = (query.from_ms, query.to_ms) {
            if from >= to {
                return Err(invalid("to", "must be after `from`"));
            }
        }
        Ok(query)
    }

    pub fn filter(&self, name: &str) -> &str {
        FILTERS
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| self.filters[i].as_str())
            .unwrap_or("")
    }

    pub fn set_filter(&mut self, name: &str, value: &str) {
        if let Some(i) = FILTERS.iter().position(|(n, _)| *n == name) {
            self.filters[i] = value.to_string();
        }
    }

    /// The query string of this search (without cursor), for links.
    pub fn to_query_string(&self) -> String {
        let mut parts: Vec<String> = FILTERS
            .iter()
            .zip(&self.filters)
            .filter(|(_, v)| !v.is_empty())
            .map(|((n, _), v)| format!("{n}={}", urlencode(v)))
            .collect();
        if let Some(from) = self.from_ms {
            parts.push(format!("from={from}"));
        }
        if let Some(to) = self.to_ms {
            parts.push(format!("to={to}"));
        }
        parts.join("&")
    }

    /// Binds the values of [`conditions`]: the filters given, then the
    /// time range.
    fn bind_filters(&self, mut q: clickhouse::query::Query) -> clickhouse::query::Query {
        for value in self.filters.iter().filter(|v| !v.is_empty()) {
            q = q.bind(value.as_str());
        }
        q.bind(self.from_ms.unwrap_or(0))
            .bind(self.to_ms.unwrap_or(u64::MAX))
    }
}

/// Percent-encode a query value (everything but unreserved characters).
pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `WHERE` conditions shared by the search and the daily counts: `col = ?`
/// for each filter `query` gives, then the time range; values are bound
/// ([`SearchQuery::bind_filters`]). Only the filters given are written: on
/// 18.16 a constant-folded `('org-1' = '' OR org_id = 'org-1')` is not
/// used by the primary key analysis, and the whole index was read.
fn conditions(query: &SearchQuery) -> String {
    let mut sql: Vec<String> = FILTERS
        .iter()
        .zip(&query.filters)
        .filter(|(_, value)| !value.is_empty())
        .map(|((_, col), _)| format!("{col} = ?"))
        .collect();
    sql.push("occurred_at_ms >= ? AND occurred_at_ms < ?".into());
    sql.join(" AND ")
}

/// The positions of one page, read from the ordered index `audit_search`
/// (migration 0038: the searchable columns, ordered by org and time);
/// bound: the filters given, from, to, cursor (ms, ms, chain, chain,
/// seq), limit.
pub fn page_keys_sql(query: &SearchQuery) -> String {
    format!(
        "SELECT occurred_at_ms, chain_id, seq FROM audit_search WHERE {} AND (occurred_at_ms > ? OR (occurred_at_ms = ? AND (chain_id > ? OR (chain_id = ? AND seq > ?)))) ORDER BY occurred_at_ms, chain_id, seq LIMIT ?",
        conditions(query)
    )
}

/// The entries at `positions` (at least one) from `audit_chain`, by its
/// primary key, in search order; bound: chain, seq per position. One
/// position is written twice: `IN ((?, ?))` would be the pair itself, not
/// a set holding it.
pub fn entries_at_sql(positions: usize) -> String {
    let pairs = vec!["(?, ?)"; positions.max(2)].join(", ");
    format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_chain PREWHERE (chain_id, seq) IN ({pairs}) ORDER BY occurred_at_ms, chain_id, seq"
    )
}

/// Entries per UTC day of a search (no cursor): `(day since epoch, count)`,
/// from the index.
pub fn daily_counts_sql(query: &SearchQuery) -> String {
    format!(
        "SELECT toUInt32(intDiv(occurred_at_ms, 86400000)) AS day, count() AS entries FROM audit_search WHERE {} GROUP BY day ORDER BY day",
        conditions(query)
    )
}

/// One entry by chain position.
pub fn entry_sql() -> String {
    format!("SELECT {ENTRY_COLUMNS} FROM audit_chain WHERE chain_id = ? AND seq = ? LIMIT 1")
}

/// The entry hashes of a checkpoint's segment.
pub const SEGMENT_HASHES_SQL: &str = "SELECT seq, entry_hash FROM audit_chain WHERE chain_id = ? AND seq >= ? AND seq <= ? ORDER BY seq";

/// The orgs holding entries (for an unscoped key's verification page).
pub const ORGS_SQL: &str = "SELECT DISTINCT org_id FROM audit_chain ORDER BY org_id LIMIT 100";

/// A page of results.
#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    pub entries: Vec<EntryRow>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A page's position in search order.
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
struct PagePosition {
    occurred_at_ms: u64,
    chain_id: String,
    seq: u64,
}

/// Run one page of `query`: the page's positions from the index, then
/// those entries from the chain.
pub async fn search(client: &Client, query: &SearchQuery) -> clickhouse::error::Result<SearchPage> {
    let cursor = query.cursor.clone().unwrap_or_default();
    let sql = page_keys_sql(query);
    let q = query
        .bind_filters(client.query(&sql))
        .bind(cursor.occurred_at_ms)
        .bind(cursor.occurred_at_ms)
        .bind(cursor.chain_id.as_str())
        .bind(cursor.chain_id.as_str())
        .bind(cursor.seq)
        // One more than asked, to know whether there is a next page.
        .bind(query.limit + 1);
    let mut positions: Vec<PagePosition> = q.fetch_all().await?;
    let more = positions.len() as u64 > query.limit;
    positions.truncate(query.limit as usize);
    let next_cursor = match positions.last() {
        Some(last) if more => Some(
            Cursor {
                occurred_at_ms: last.occurred_at_ms,
                chain_id: last.chain_id.clone(),
                seq: last.seq,
            }
            .encode(),
        ),
        _ => None,
    };
    let entries = entries_at(client, &positions).await?;
    Ok(SearchPage {
        entries,
        next_cursor,
    })
}

/// Bytes of chain ids one statement of [`entries_at`] carries at most:
/// ClickHouse parses at most `max_query_size` (256 KiB by default) of a
/// query, and a page of 1000 long team ids would pass it.
const POSITIONS_BYTES: usize = 64 * 1024;

/// The entries at `positions`, in search order: one statement per run of
/// positions holding at most [`POSITIONS_BYTES`] of chain ids (each run's
/// rows come sorted, and the runs are in order).
async fn entries_at(
    client: &Client,
    positions: &[PagePosition],
) -> clickhouse::error::Result<Vec<EntryRow>> {
    let mut entries = Vec::with_capacity(positions.len());
    let mut rest = positions;
    while !rest.is_empty() {
        let mut bytes = 0;
        let run = rest
            .iter()
            .take_while(|p| {
                bytes += p.chain_id.len();
                bytes <= POSITIONS_BYTES
            })
            .count()
            .max(1);
        let (now, later) = rest.split_at(run);
        let mut q = client.query(&entries_at_sql(now.len()));
        for p in now
            .iter()
            .chain(now.iter().take(usize::from(now.len() == 1)))
        {
            q = q.bind(p.chain_id.as_str()).bind(p.seq);
        }
        entries.extend(q.fetch_all::<EntryRow>().await?);
        rest = later;
    }
    Ok(entries)
}

/// A page of entries as its table (the CSV of `/compliance/search`, the
/// page's "Entries" table): oldest first, times RFC 3339 in UTC to the
/// millisecond, with each entry's hash and event id so a row can be
/// checked against the chain.
pub fn entries_table(entries: &[EntryRow]) -> Table {
    let mut table = Table::new([
        "chain_id",
        "seq",
        "occurred_at",
        "org_id",
        "team_id",
        "user_id",
        "api_key_id",
        "provider",
        "model",
        "kind",
        "outcome",
        "decision",
        "decision_reason",
        "event_id",
        "entry_hash",
    ]);
    for e in entries {
        let at = i64::try_from(e.occurred_at_ms)
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        table.push([
            e.chain_id.clone(),
            e.seq.to_string(),
            at,
            e.org_id.clone(),
            e.team_id.clone(),
            e.user_id.clone(),
            e.api_key_id.clone(),
            e.provider.clone(),
            e.model.clone(),
            e.kind.clone(),
            e.outcome.clone(),
            e.decision.clone(),
            e.decision_reason.clone(),
            e.event_id.clone(),
            e.entry_hash.clone(),
        ]);
    }
    table
}

/// Entries per UTC day matching `query` (its cursor is ignored).
pub async fn daily_counts(
    client: &Client,
    query: &SearchQuery,
) -> clickhouse::error::Result<Vec<(u32, u64)>> {
    let sql = daily_counts_sql(query);
    query.bind_filters(client.query(&sql)).fetch_all().await
}

/// One entry, if it exists.
pub async fn entry(
    client: &Client,
    chain_id: &str,
    seq: u64,
) -> clickhouse::error::Result<Option<EntryRow>> {
    client
        .query(&entry_sql())
        .bind(chain_id)
        .bind(seq)
        .fetch_optional()
        .await
}

/// Whether an entry can be proven yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofStatus {
    /// The proof recomputes the checkpoint's Merkle root, the checkpoint's
    /// signature verifies with the trusted key, and the entry hashes from
    /// its stored `prev_hash` and content.
    Verified,
    /// No checkpoint covers the entry yet (it is newer than the last one).
    UnverifiableYet,
    /// A covering checkpoint exists but the proof does not hold, or none
    /// does while a later one exists (the covering one was removed): the
    /// chain or its checkpoints were altered (`tollgate verify-audit`
    /// locates it).
    Failed,
}

/// An RFC 6962 inclusion proof of one entry.
#[derive(Debug, Clone, Serialize)]
pub struct InclusionProof {
    pub chain_id: String,
    pub seq: u64,
    pub entry_hash: String,
    /// The covering checkpoint's segment: `leaf_index = seq - from_seq`,
    /// `tree_size = to_seq - from_seq + 1`.
    pub checkpoint_from_seq: u64,
    pub checkpoint_to_seq: u64,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub merkle_root: String,
    /// Audit path, leaf side first, hex.
    pub path: Vec<String>,
}

/// What a caller gets for one entry.
#[derive(Debug, Clone, Serialize)]
pub struct ProofResult {
    pub status: ProofStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub proof: Option<InclusionProof>,
    /// The covering checkpoint (signed), when there is one.
    pub checkpoint: Option<CheckpointRow>,
}

/// `(chain, from_seq, to_seq)` of a checkpoint's segment.
type SegmentKey = (String, u64, u64);

/// Entry hashes a [`ProofSource`] holds at most (32 bytes each: 8 MiB),
/// the segments read longest ago let go first.
const HASHES_HELD: usize = 256 * 1024;

/// Builds proofs, loading each chain's checkpoints once and each segment's
/// hashes once while it is in use (at most [`HASHES_HELD`] hashes).
pub struct ProofSource<'a> {
    client: &'a Client,
    trusted: Option<VerifyingKey>,
    checkpoints: HashMap<String, Vec<CheckpointRow>>,
    segments: HashMap<SegmentKey, Option<Vec<[u8; 32]>>>,
    /// The segments held, oldest read first, and their hashes' count (a
    /// segment that could not be read counts one).
    read_order: std::collections::VecDeque<SegmentKey>,
    hashes_held: usize,
}

impl<'a> ProofSource<'a> {
    pub fn new(client: &'a Client, trusted: Option<VerifyingKey>) -> Self {
        Self {
            client,
            trusted,
            checkpoints: HashMap::new(),
            segments: HashMap::new(),
            read_order: std::collections::VecDeque::new(),
            hashes_held: 0,
        }
    }

    async fn chain_checkpoints(
        &mut self,
        chain: &str,
    ) -> clickhouse::error::Result<&Vec<CheckpointRow>> {
        if !self.checkpoints.contains_key(chain) {
            let rows: Vec<CheckpointRow> = self
                .client
                .query(&checkpoints_sql())
                .bind(chain)
                .fetch_all()
                .await?;
            self.checkpoints.insert(chain.to_string(), rows);
        }
        Ok(self.checkpoints.entry(chain.to_string()).or_default())
    }

    /// The chain's newest stored checkpoint (highest `to_seq`).
    pub async fn latest_checkpoint(
        &mut self,
        chain: &str,
    ) -> clickhouse::error::Result<Option<CheckpointRow>> {
        Ok(self
            .chain_checkpoints(chain)
            .await?
            .iter()
            .max_by_key(|c| c.to_seq)
            .cloned())
    }

    /// The segment's entry hashes, `None` when seqs are missing or repeated.
    async fn segment(
        &mut self,
        chain: &str,
        from: u64,
        to: u64,
    ) -> clickhouse::error::Result<Option<Vec<[u8; 32]>>> {
        let key = (chain.to_string(), from, to);
        if let Some(found) = self.segments.get(&key) {
            return Ok(found.clone());
        }
        let rows: Vec<(u64, String)> = self
            .client
            .query(SEGMENT_HASHES_SQL)
            .bind(chain)
            .bind(from)
            .bind(to)
            .fetch_all()
            .await?;
        let hashes: Option<Vec<[u8; 32]>> = if rows.len() as u64 == to - from + 1
            && rows.iter().zip(from..).all(|((seq, _), want)| *seq == want)
        {
            rows.iter().map(|(_, h)| parse_hash(h)).collect()
        } else {
            None
        };
        // A whole export proves every entry of every chain: holding every
        // segment read would hold 32 bytes per entry of the export. Its
        // search order walks each chain's segments in turn, so the oldest
        // read is the one to let go.
        let size = hashes.as_ref().map_or(1, Vec::len);
        while self.hashes_held + size > HASHES_HELD {
            let Some(oldest) = self.read_order.pop_front() else {
                break;
            };
            if let Some(gone) = self.segments.remove(&oldest) {
                let size = gone.as_ref().map_or(1, Vec::len);
                self.hashes_held = self.hashes_held.saturating_sub(size);
            }
        }
        self.hashes_held += size;
        self.read_order.push_back(key.clone());
        self.segments.insert(key, hashes.clone());
        Ok(hashes)
    }

    /// The inclusion proof of `row` against the first signed checkpoint
    /// covering it.
    pub async fn prove(&mut self, row: &EntryRow) -> clickhouse::error::Result<ProofResult> {
        let failed = |detail: String, checkpoint: Option<CheckpointRow>| ProofResult {
            status: ProofStatus::Failed,
            detail: Some(detail),
            proof: None,
            checkpoint,
        };
        let trusted = self.trusted;
        let checkpoints = self.chain_checkpoints(&row.chain_id).await?;
        let covering = checkpoints
            .iter()
            .find(|cp| cp.from_seq <= row.seq && row.seq <= cp.to_seq)
            .cloned();
        // Checkpoints cover a chain without gaps: one that starts past the
        // entry means the one covering it is gone from the database (a
        // trial deleted it and the entry read "not yet covered").
        let later = checkpoints
            .iter()
            .filter(|cp| cp.from_seq > row.seq)
            .map(|cp| cp.from_seq)
            .min();
        if let (None, Some(later)) = (&covering, later) {
            return Ok(failed(
                format!(
                    "no checkpoint covers seq {} of chain {}, yet one starts at seq {later}: the \
                     checkpoint covering it is missing (`tollgate verify-audit` with the anchor \
                     finds it)",
                    row.seq, row.chain_id
                ),
                None,
            ));
        }
        let Some(cp) = covering else {
            return Ok(ProofResult {
                status: ProofStatus::UnverifiableYet,
                detail: Some(format!(
                    "no checkpoint covers seq {} of chain {} yet",
                    row.seq, row.chain_id
                )),
                proof: None,
                checkpoint: None,
            });
        };
        let Some(hashes) = self.segment(&row.chain_id, cp.from_seq, cp.to_seq).await? else {
            return Ok(failed(
                format!(
                    "the checkpoint's segment {}..={} is not stored whole (entries missing or repeated)",
                    cp.from_seq, cp.to_seq
                ),
                Some(cp),
            ));
        };
        let index = row.seq - cp.from_seq;
        let Some(path) = merkle::inclusion_proof(&hashes, index as usize) else {
            return Ok(failed("leaf out of range".into(), Some(cp)));
        };
        let proof = InclusionProof {
            chain_id: row.chain_id.clone(),
            seq: row.seq,
            entry_hash: row.entry_hash.clone(),
            checkpoint_from_seq: cp.from_seq,
            checkpoint_to_seq: cp.to_seq,
            leaf_index: index,
            tree_size: cp.to_seq - cp.from_seq + 1,
            merkle_root: cp.merkle_root.clone(),
            path: path.iter().map(hex::encode).collect(),
        };
        let problem = check_proof(row, &proof, &path, &cp, trusted.as_ref());
        Ok(ProofResult {
            status: if problem.is_none() {
                ProofStatus::Verified
            } else {
                ProofStatus::Failed
            },
            detail: problem,
            proof: Some(proof),
            checkpoint: Some(cp),
        })
    }
}

/// Why `proof` of `row` does not hold, if it does not.
fn check_proof(
    row: &EntryRow,
    proof: &InclusionProof,
    path: &[[u8; 32]],
    cp: &CheckpointRow,
    trusted: Option<&VerifyingKey>,
) -> Option<String> {
    let (Some(stored), Some(prev), Some(root)) = (
        parse_hash(&row.entry_hash),
        parse_hash(&row.prev_hash),
        parse_hash(&cp.merkle_root),
    ) else {
        return Some("a stored hash is not 64 hex characters".into());
    };
    if tollgate_contract::audit::entry::entry_hash(&prev, row) != stored {
        return Some(format!(
            "entry {} does not hash to its stored entry_hash: its content was changed",
            row.seq
        ));
    }
    if !merkle::verify_inclusion(&stored, proof.leaf_index, proof.tree_size, path, &root) {
        return Some(format!(
            "the proof does not lead to the Merkle root of checkpoint {}..={}",
            cp.from_seq, cp.to_seq
        ));
    }
    if let Err(why) = check_signature(cp, trusted) {
        return Some(format!("checkpoint {}..={}: {why}", cp.from_seq, cp.to_seq));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn entries_table_holds_the_rows_exactly() {
        let entry = EntryRow {
            chain_id: "acme".into(),
            seq: 7,
            occurred_at: 1_773_000_000,
            occurred_at_ms: 1_773_000_000_123,
            event_id: "0190a0b0-0000-7000-8000-000000000001".into(),
            kind: "ai.call.completed".into(),
            org_id: "acme".into(),
            team_id: "search".into(),
            user_id: "=u1".into(),
            api_key_id: "k1".into(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            outcome: "success".into(),
            decision: String::new(),
            decision_reason: "a, b".into(),
            event_json: "{}".into(),
            prev_hash: "00".into(),
            entry_hash: "ab".into(),
            kafka_partition: 0,
            kafka_offset: 3,
            v: 2,
            salt: String::new(),
            personal_commitment: String::new(),
        };
        assert_eq!(
            entries_table(&[entry]).to_csv(),
            "chain_id,seq,occurred_at,org_id,team_id,user_id,api_key_id,provider,model,kind,outcome,decision,decision_reason,event_id,entry_hash\n\
             acme,7,2026-03-08T20:00:00.123Z,acme,search,'=u1,k1,openai,gpt-4o,ai.call.completed,success,,\"a, b\",0190a0b0-0000-7000-8000-000000000001,ab\n"
        );
    }

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let c = Cursor {
            occurred_at_ms: 1_773_000_000_123,
            chain_id: "team\nwith newline".into(),
            seq: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode(&hex::encode("1\nx")), None);
    }

    #[test]
    fn parameters_are_checked_and_named() {
        let q = SearchQuery::from_pairs(&pairs(&[
            ("org", "org-a"),
            ("from", "2026-03-10"),
            ("to", "2026-03-10T10:00:00Z"),
            ("limit", "5"),
            ("proof", "true"),
        ]))
        .unwrap();
        assert_eq!(q.filter("org"), "org-a");
        assert_eq!(q.from_ms, Some(1_773_100_800_000));
        assert_eq!(q.to_ms, Some(1_773_136_800_000));
        assert!(q.proof);
        // Every spelling the refusal names is taken, in any case.
        for (spelt, proof) in [("TRUE", true), ("Yes", true), ("1", true), ("No", false)] {
            let q = SearchQuery::from_pairs(&pairs(&[("proof", spelt)])).unwrap();
            assert_eq!(q.proof, proof, "{spelt}");
        }
        let err = SearchQuery::from_pairs(&pairs(&[("proof", "maybe")])).unwrap_err();
        assert_eq!(
            err.reason,
            "`maybe` is not one of true, false, 1, 0, yes, no"
        );
        for (bad, param) in [
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "1001")], "limit"),
            (vec![("from", "yesterday")], "from"),
            (vec![("from", "2026-03-11"), ("to", "2026-03-10")], "to"),
            (vec![("cursor", "nothex")], "cursor"),
            (vec![("proof", "maybe")], "proof"),
            (vec![("team", "a"), ("team", "b")], "team"),
            (vec![("colour", "red")], "colour"),
        ] {
            let err = SearchQuery::from_pairs(&pairs(&bad)).unwrap_err();
            assert_eq!(err.field, param, "{bad:?}: {}", err.reason);
        }
    }

    /// What a use cannot honour is refused by name, never ignored (a trial's
    /// `export?limit=5` returned the whole chain, `proof=false` still held
    /// proofs).
    #[test]
    fn each_use_refuses_what_it_cannot_honour() {
        for (what, refused, taken) in [
            (
                SearchUse::Entries,
                &[][..],
                &["limit", "cursor", "proof"][..],
            ),
            (SearchUse::Page, &["proof"][..], &["limit", "cursor"][..]),
            (SearchUse::Csv, &["proof"][..], &["limit", "cursor"][..]),
            (
                SearchUse::Export,
                &["limit", "cursor", "proof"][..],
                &[][..],
            ),
        ] {
            for name in refused {
                // Even empty: a form's empty field is still a parameter the
                // use does not have.
                for value in ["5", "false", ""] {
                    let err =
                        SearchQuery::parse_for(&pairs(&[("org", "acme"), (name, value)]), what)
                            .unwrap_err();
                    assert_eq!(err.field, *name, "{what:?}");
                    assert!(!err.reason.starts_with("unknown"), "{}", err.reason);
                }
            }
            for name in taken {
                let value = match *name {
                    "cursor" => Cursor::default().encode(),
                    "proof" => "true".into(),
                    _ => "5".into(),
                };
                SearchQuery::parse_for(&pairs(&[(name, &value)]), what)
                    .unwrap_or_else(|e| panic!("{what:?} {name}: {e}"));
            }
            let err = SearchQuery::parse_for(&pairs(&[("bogus", "1")]), what).unwrap_err();
            assert_eq!(err.field, "bogus");
        }
    }

    #[test]
    fn search_sql_binds_every_placeholder() {
        let mut query = SearchQuery::default();
        assert_eq!(page_keys_sql(&query).matches('?').count(), 2 + 5 + 1);
        assert_eq!(daily_counts_sql(&query).matches('?').count(), 2);
        query.set_filter("org", "org-a");
        query.set_filter("kind", "ai.call.failed");
        assert!(page_keys_sql(&query)
            .contains(" WHERE org_id = ? AND kind = ? AND occurred_at_ms >= ?"));
        assert_eq!(page_keys_sql(&query).matches('?').count(), 2 + 2 + 5 + 1);
        assert_eq!(entries_at_sql(3).matches('?').count(), 3 * 2);
        // One position is bound twice (a set of one pair).
        assert_eq!(entries_at_sql(1).matches('?').count(), 2 * 2);
        assert_eq!(daily_counts_sql(&query).matches('?').count(), 2 + 2);
    }
}
