//! The compliance read side of the audit chain: NDJSON export of an org's
//! (or team's) chains bundled with their checkpoints and the public key, so
//! an auditor can verify offline with nothing but `docs/audit.md`.
//!
//! Export format `tollgate.audit.export.v2` (one JSON object per line):
//! a `header` line, then per chain its `checkpoint` lines (in `to_seq`
//! order) and its `entry` lines (in seq order, every column of
//! `audit_chain` but `appended_at`), and a final `footer` line with the
//! counts and a signed `manifest`: the header's members, every chain with
//! its entry count, last seq, head hash and checkpoints, the number of
//! lines before the footer and the SHA-256 of those lines' bytes. A dropped
//! chain, checkpoint line or entry, or an export cut anywhere, no longer
//! matches the signed manifest.

use clickhouse::Client;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::verify::{checkpoints_sql, ENTRY_COLUMNS};
use tollgate_contract::admin::CONTROL_PLANE_TENANT;
use tollgate_contract::audit::checkpoint::{CheckpointRow, CheckpointSigner};
use tollgate_contract::audit::entry::EntryRow;

/// The chains holding an org's (and team's) entries, each with whether it
/// holds no other org's entry and how many of the org's it holds. Binds:
/// org, org, team, team.
pub const EXPORT_CHAINS_SQL: &str =
    "SELECT chain_id, toUInt8(countIf(org_id != ?) = 0) AS exclusive, \
     countIf(org_id = ? AND (? = '' OR team_id = ?)) AS mine \
     FROM audit_chain GROUP BY chain_id HAVING mine > 0 ORDER BY chain_id";

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ExportChain {
    chain_id: String,
    exclusive: u8,
    mine: u64,
}

/// The `format` member of an export's header.
pub const EXPORT_FORMAT: &str = "tollgate.audit.export.v2";

/// The `type` member of the signed manifest.
pub const MANIFEST_TYPE: &str = "tollgate.audit.export.manifest";

/// The file name an export is downloaded as: `audit-<org>[-<team>]-<UTC
/// date>.ndjson`, with `search` after the org and team for the export of a
/// search, and any character a file name should not hold (`/`, spaces,
/// quotes) as `_`, so two orgs' or two days' exports do not overwrite each
/// other.
pub fn export_file_name(
    org: &str,
    team: Option<&str>,
    search: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let safe = |text: &str| -> String {
        text.chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut name = "audit".to_string();
    if !org.is_empty() {
        name.push('-');
        name.push_str(&safe(org));
    }
    if let Some(team) = team.filter(|t| !t.is_empty()) {
        name.push('-');
        name.push_str(&safe(team));
    }
    if search {
        name.push_str("-search");
    }
    format!("{name}-{}.ndjson", now.format("%Y-%m-%d"))
}

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

/// Writes lines, hashing every byte for the manifest.
struct Lines<'w, W> {
    out: &'w mut W,
    digest: Sha256,
    lines: u64,
}

impl<'w, W: AsyncWrite + Unpin> Lines<'w, W> {
    fn new(out: &'w mut W) -> Self {
        Self {
            out,
            digest: Sha256::new(),
            lines: 0,
        }
    }

    async fn line(&mut self, value: &impl Serialize) -> Result<(), ExportError> {
        let mut bytes = serde_json::to_vec(value)?;
        bytes.push(b'\n');
        self.digest.update(&bytes);
        self.lines += 1;
        self.out.write_all(&bytes).await?;
        Ok(())
    }

    /// The footer: `counts`, and the manifest (the header's members, the
    /// chains, the line count and digest), signed when a key is configured.
    async fn footer(
        self,
        header: &serde_json::Value,
        counts: serde_json::Value,
        chains: Vec<ChainManifest>,
        signer: Option<&CheckpointSigner>,
    ) -> Result<(), ExportError> {
        let mut manifest = serde_json::Map::new();
        if let Some(members) = header.as_object() {
            for (k, v) in members {
                if k != "type" {
                    manifest.insert(k.clone(), v.clone());
                }
            }
        }
        manifest.insert("type".into(), MANIFEST_TYPE.into());
        manifest.insert("v".into(), 2.into());
        manifest.insert("chains".into(), serde_json::to_value(chains)?);
        manifest.insert("lines".into(), self.lines.into());
        manifest.insert(
            "lines_sha256".into(),
            hex::encode(self.digest.finalize()).into(),
        );
        let manifest = serde_json::Value::Object(manifest);
        let signature =
            signer.map(|s| s.sign(&serde_jcs::to_string(&manifest).unwrap_or_default()));
        let mut footer = serde_json::json!({"type": "footer"});
        if let (Some(f), Some(c)) = (footer.as_object_mut(), counts.as_object()) {
            f.extend(c.clone());
            f.insert("manifest".into(), manifest);
            f.insert("signature".into(), signature.into());
        }
        let mut bytes = serde_json::to_vec(&footer)?;
        bytes.push(b'\n');
        self.out.write_all(&bytes).await?;
        self.out.flush().await?;
        Ok(())
    }
}

/// One chain in the manifest: what the export holds of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainManifest {
    pub chain_id: String,
    /// Entry lines of the chain.
    pub entries: u64,
    /// Highest seq among them (0 for none).
    pub last_seq: u64,
    /// `entry_hash` of that entry (empty for none).
    pub head_hash: String,
    /// Checkpoint lines of the chain.
    pub checkpoints: u64,
    /// Highest `to_seq` among them (0 for none): in a search export, no
    /// entry at or below it may be `unverifiable_yet`.
    pub checkpointed_to_seq: u64,
}

fn now_header_times() -> (String, u64) {
    let now = chrono::Utc::now();
    (
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        u64::try_from(now.timestamp_millis()).unwrap_or(0),
    )
}

/// Write the NDJSON export of every chain holding entries of `org` (and
/// `team`) to `out`. Chains are exported whole, so their links verify.
pub async fn export<W: AsyncWrite + Unpin>(
    client: &Client,
    org: &str,
    team: Option<&str>,
    signer: Option<&CheckpointSigner>,
    out: &mut W,
) -> Result<ExportSummary, ExportError> {
    let public_key = signer.map(CheckpointSigner::public_key_hex);
    let mut out = Lines::new(out);
    let team_filter = team.unwrap_or("");
    let held: Vec<ExportChain> = client
        .query(EXPORT_CHAINS_SQL)
        .bind(org)
        .bind(org)
        .bind(team_filter)
        .bind(team_filter)
        .fetch_all()
        .await?;
    // A whole chain goes out only when every entry of it is this org's: a
    // chain shared with other orgs (the control plane's `_tollgate`, which
    // also holds orgs' alerting changes, or a team id two orgs both use)
    // would hand over their entries. The org's entries there are named in
    // the header and exported, with proofs, by a search export. The
    // control plane's own trail (read only by callers of every org) is
    // whole.
    let (chains, shared): (Vec<ExportChain>, Vec<ExportChain>) = held
        .into_iter()
        .partition(|c| c.exclusive == 1 || org == CONTROL_PLANE_TENANT);
    let chains: Vec<String> = chains.into_iter().map(|c| c.chain_id).collect();
    let shared: Vec<serde_json::Value> = shared
        .iter()
        .map(|c| serde_json::json!({"chain_id": c.chain_id, "entries": c.mine}))
        .collect();
    let (exported_at, exported_at_ms) = now_header_times();
    let header = serde_json::json!({
        "type": "header",
        "format": EXPORT_FORMAT,
        "scope": "chains",
        "org": org,
        "team": team,
        "shared_chains_omitted": shared,
        "public_key": public_key,
        "exported_at": exported_at,
        "exported_at_ms": exported_at_ms,
    });
    out.line(&header).await?;
    let mut manifests = Vec::new();
    let mut summary = ExportSummary::default();
    let entries_sql = chain_entries_sql();
    let cp_sql = checkpoints_sql();
    for chain in chains {
        summary.chains += 1;
        let checkpoints: Vec<CheckpointRow> =
            client.query(&cp_sql).bind(&chain).fetch_all().await?;
        let mut manifest = ChainManifest {
            chain_id: chain.clone(),
            ..ChainManifest::default()
        };
        for cp in &checkpoints {
            out.line(&Tagged {
                kind: "checkpoint",
                row: cp,
            })
            .await?;
            summary.checkpoints += 1;
            manifest.checkpoints += 1;
            manifest.checkpointed_to_seq = manifest.checkpointed_to_seq.max(cp.to_seq);
        }
        let mut cursor = client
            .query(&entries_sql)
            .bind(&chain)
            .fetch::<EntryRow>()?;
        while let Some(row) = cursor.next().await? {
            out.line(&Tagged {
                kind: "entry",
                row: &row,
            })
            .await?;
            summary.entries += 1;
            manifest.entries += 1;
            manifest.last_seq = row.seq;
            manifest.head_hash = row.entry_hash;
        }
        manifests.push(manifest);
    }
    let counts = serde_json::json!({
        "chains": summary.chains,
        "entries": summary.entries,
        "checkpoints": summary.checkpoints,
    });
    out.footer(&header, counts, manifests, signer).await?;
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
    /// Exactly the search API's `proof` member: `{status, detail?, proof,
    /// checkpoint}` (format v1 had `status` and the inner `proof` here).
    proof: &'a super::search::ProofResult,
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
    signer: Option<&CheckpointSigner>,
    out: &mut W,
) -> Result<ExportSummary, ExportError> {
    use super::search::{search, ProofSource, ProofStatus, FILTERS};
    let public_key = signer.map(CheckpointSigner::public_key_hex);
    let trusted = public_key.and_then(tollgate_contract::audit::checkpoint::parse_public_key);
    let mut out = Lines::new(out);
    let filters: serde_json::Map<String, serde_json::Value> = FILTERS
        .iter()
        .zip(&query.filters)
        .filter(|(_, v)| !v.is_empty())
        .map(|((n, _), v)| (n.to_string(), serde_json::Value::from(v.as_str())))
        .collect();
    let (exported_at, exported_at_ms) = now_header_times();
    let header = serde_json::json!({
        "type": "header",
        "format": EXPORT_FORMAT,
        "scope": "search",
        "org": query.filter("org"),
        "team": query.filter("team"),
        "filters": filters,
        "from_ms": query.from_ms,
        "to_ms": query.to_ms,
        "public_key": public_key,
        "exported_at": exported_at,
        "exported_at_ms": exported_at_ms,
    });
    out.line(&header).await?;
    let mut page_query = query.clone();
    page_query.limit = EXPORT_PAGE;
    page_query.cursor = None;
    let mut proofs = ProofSource::new(client, trusted);
    let mut needed: std::collections::BTreeMap<(String, u64), CheckpointRow> =
        std::collections::BTreeMap::new();
    let mut chains: std::collections::BTreeMap<String, ChainManifest> =
        std::collections::BTreeMap::new();
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
            let manifest = chains
                .entry(row.chain_id.clone())
                .or_insert_with(|| ChainManifest {
                    chain_id: row.chain_id.clone(),
                    ..ChainManifest::default()
                });
            manifest.entries += 1;
            if row.seq >= manifest.last_seq {
                manifest.last_seq = row.seq;
                manifest.head_hash.clone_from(&row.entry_hash);
            }
            out.line(&ProvenEntry {
                kind: "entry",
                row,
                proof: &result,
            })
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
    // Each chain's newest checkpoint too, so that an entry claimed to be
    // unverifiable yet can be checked against it.
    for chain in chains.keys() {
        if let Some(cp) = proofs.latest_checkpoint(chain).await? {
            needed.entry((cp.chain_id.clone(), cp.to_seq)).or_insert(cp);
        }
    }
    for cp in needed.values() {
        out.line(&Tagged {
            kind: "checkpoint",
            row: cp,
        })
        .await?;
        summary.checkpoints += 1;
        if let Some(manifest) = chains.get_mut(&cp.chain_id) {
            manifest.checkpoints += 1;
            manifest.checkpointed_to_seq = manifest.checkpointed_to_seq.max(cp.to_seq);
        }
    }
    summary.chains = chains.len() as u64;
    let counts = serde_json::json!({
        "chains": summary.chains,
        "entries": summary.entries,
        "checkpoints": summary.checkpoints,
        "unverifiable_yet": unverifiable,
    });
    out.footer(&header, counts, chains.into_values().collect(), signer)
        .await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::export_file_name;

    #[test]
    fn an_export_is_named_by_org_team_and_day() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T04:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            export_file_name("acme", None, false, now),
            "audit-acme-2026-12-07.ndjson"
        );
        assert_eq!(
            export_file_name("acme", Some("team/a b\""), true, now),
            "audit-acme-team_a_b_-search-2026-12-07.ndjson"
        );
    }
}
