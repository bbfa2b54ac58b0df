//! The compliance read side of the audit chain: NDJSON export of an org's
//! (or team's) chains bundled with their checkpoints and the public key, so
//! an auditor can verify offline with nothing but `docs/audit.md`.
//!
//! Export format (one JSON object per line, `type` first in meaning):
//! a `header` line (`format`, `org`, `team`, `public_key`, `exported_at`),
//! then per chain its `checkpoint` lines (in `to_seq` order) and its `entry`
//! lines (in seq order, every column of `audit_chain`), and a final
//! `footer` line with the counts.

use clickhouse::Client;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::checkpoint::CheckpointRow;
use super::entry::EntryRow;
use super::verify::{checkpoints_sql, CHAINS_SQL, ENTRY_COLUMNS};

/// The `format` member of an export's header.
pub const EXPORT_FORMAT: &str = "tollgate.audit.export.v1";

/// Every entry of one chain in seq order.
pub fn chain_entries_sql() -> String {
    format!("SELECT {ENTRY_COLUMNS} FROM audit_chain WHERE chain_id = ? ORDER BY seq")
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    row: &'a T,
}

/// Counts of an export.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ExportSummary {
    pub chains: u64,
    pub entries: u64,
    pub checkpoints: u64,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding a line: {0}")]
    Json(#[from] serde_json::Error),
}

async fn line<W: AsyncWrite + Unpin>(
    out: &mut W,
    value: &impl Serialize,
) -> Result<(), ExportError> {
    let mut bytes = serde_json::to_vec(value)?;
    bytes.push(b'\n');
    out.write_all(&bytes).await?;
    Ok(())
}

/// Write the NDJSON export of every chain holding entries of `org` (and
/// `team`) to `out`. Chains are exported whole, so their links verify.
pub async fn export<W: AsyncWrite + Unpin>(
    client: &Client,
    org: &str,
    team: Option<&str>,
    public_key: Option<&str>,
    out: &mut W,
) -> Result<ExportSummary, ExportError> {
    let team_filter = team.unwrap_or("");
    let chains: Vec<String> = client
        .query(CHAINS_SQL)
        .bind(org)
        .bind(team_filter)
        .bind(team_filter)
        .fetch_all()
        .await?;
    line(
        out,
        &serde_json::json!({
            "type": "header",
            "format": EXPORT_FORMAT,
            "org": org,
            "team": team,
            "public_key": public_key,
            "exported_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
    )
    .await?;
    let mut summary = ExportSummary::default();
    let entries_sql = chain_entries_sql();
    let cp_sql = checkpoints_sql();
    for chain in chains {
        summary.chains += 1;
        let checkpoints: Vec<CheckpointRow> =
            client.query(&cp_sql).bind(&chain).fetch_all().await?;
        for cp in &checkpoints {
            line(
                out,
                &Tagged {
                    kind: "checkpoint",
                    row: cp,
                },
            )
            .await?;
            summary.checkpoints += 1;
        }
        let mut cursor = client
            .query(&entries_sql)
            .bind(&chain)
            .fetch::<EntryRow>()?;
        while let Some(row) = cursor.next().await? {
            line(
                out,
                &Tagged {
                    kind: "entry",
                    row: &row,
                },
            )
            .await?;
            summary.entries += 1;
        }
    }
    line(
        out,
        &serde_json::json!({
            "type": "footer",
            "chains": summary.chains,
            "entries": summary.entries,
            "checkpoints": summary.checkpoints,
        }),
    )
    .await?;
    out.flush().await?;
    Ok(summary)
}

/// Rows read per page of a search export.
const EXPORT_PAGE: u64 = 1000;

#[derive(Serialize)]
struct ProvenEntry<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    row: &'a EntryRow,
    /// `verified`, `unverifiable_yet` or `failed`, as the server saw it.
    status: super::search::ProofStatus,
    proof: Option<super::search::InclusionProof>,
}

/// Write the NDJSON export of the entries matching `query` (its cursor and
/// limit are ignored: every match is exported, in search order), each with
/// its inclusion proof against the checkpoint covering it, then those
/// checkpoints, then a footer. Entries no checkpoint covers yet carry
/// `"status": "unverifiable_yet"` and `"proof": null`.
///
/// The header says `"scope": "search"` and repeats the filters; each entry
/// is verified on its own (its hash from its stored `prev_hash` and
/// content, its proof against a signed root), since a search result is not
/// a contiguous chain.
pub async fn export_search<W: AsyncWrite + Unpin>(
    client: &Client,
    query: &super::search::SearchQuery,
    public_key: Option<&str>,
    out: &mut W,
) -> Result<ExportSummary, ExportError> {
    use super::search::{search, ProofSource, ProofStatus, FILTERS};
    let trusted = public_key.and_then(super::checkpoint::parse_public_key);
    let filters: serde_json::Map<String, serde_json::Value> = FILTERS
        .iter()
        .zip(&query.filters)
        .filter(|(_, v)| !v.is_empty())
        .map(|((n, _), v)| (n.to_string(), serde_json::Value::from(v.as_str())))
        .collect();
    line(
        out,
        &serde_json::json!({
            "type": "header",
            "format": EXPORT_FORMAT,
            "scope": "search",
            "org": query.filter("org"),
            "team": query.filter("team"),
            "filters": filters,
            "from_ms": query.from_ms,
            "to_ms": query.to_ms,
            "public_key": public_key,
            "exported_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
    )
    .await?;
    let mut page_query = query.clone();
    page_query.limit = EXPORT_PAGE;
    page_query.cursor = None;
    let mut proofs = ProofSource::new(client, trusted);
    let mut needed: std::collections::BTreeMap<(String, u64), CheckpointRow> =
        std::collections::BTreeMap::new();
    let mut chains = std::collections::BTreeSet::new();
    let mut summary = ExportSummary::default();
    let mut unverifiable = 0u64;
    loop {
        let page = search(client, &page_query).await?;
        for row in &page.entries {
            let result = proofs.prove(row).await?;
            if let Some(cp) = &result.checkpoint {
                needed
                    .entry((cp.chain_id.clone(), cp.to_seq))
                    .or_insert_with(|| cp.clone());
            }
            if result.status == ProofStatus::UnverifiableYet {
                unverifiable += 1;
            }
            chains.insert(row.chain_id.clone());
            line(
                out,
                &ProvenEntry {
                    kind: "entry",
                    row,
                    status: result.status,
                    proof: result.proof,
                },
            )
            .await?;
            summary.entries += 1;
        }
        match page.next_cursor {
            Some(cursor) => page_query.cursor = super::search::Cursor::decode(&cursor),
            None => break,
        }
        if page_query.cursor.is_none() {
            break;
        }
    }
    for cp in needed.values() {
        line(
            out,
            &Tagged {
                kind: "checkpoint",
                row: cp,
            },
        )
        .await?;
        summary.checkpoints += 1;
    }
    summary.chains = chains.len() as u64;
    line(
        out,
        &serde_json::json!({
            "type": "footer",
            "chains": summary.chains,
            "entries": summary.entries,
            "checkpoints": summary.checkpoints,
            "unverifiable_yet": unverifiable,
        }),
    )
    .await?;
    out.flush().await?;
    Ok(summary)
}
