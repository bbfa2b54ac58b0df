//! The audit endpoints: `GET /api/v1/audit/public-key` (the key that signs
//! checkpoints), `GET /api/v1/audit/verify?org=&team=`,
//! `GET /api/v1/audit/export` (NDJSON: whole chains, or a search with
//! inclusion proofs), `GET /api/v1/audit/entries` (compliance search,
//! cursor-paginated, `proof=true` for inclusion proofs) and
//! `GET /api/v1/audit/entries/{chain}/{seq}` (one entry and its proof).
//! All need a caller with role `compliance` or `admin` (the gate's rule,
//! `tollgate-access`); one who sees only some orgs gets 404 for any other
//! org, as if it did not exist.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tollgate_access::{Identity, AUDITORS};
use tollgate_contract::audit::checkpoint::parse_public_key;
use tollgate_queries::audit::access::AuditAccess;
use tollgate_queries::audit::export_stream::{self, ExportScope};
use tollgate_queries::audit::search::{self, ProofSource, SearchQuery, SearchUse};
use tollgate_queries::audit::verify::verify_held;
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::InvalidParameter;

/// What the audit endpoints need (shared with the compliance pages).
pub type AuditState = AuditAccess;

/// The trail `GET /api/v1/audit/verify` checks: `org` (required) and
/// optionally one `team`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailParams {
    pub org: String,
    pub team: Option<String>,
}

impl TrailParams {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, InvalidParameter> {
        let params = QueryParams::parse(pairs, &Expected::names(&["org", "team"]))?;
        Ok(Self {
            org: params
                .get("org")
                .ok_or_else(|| InvalidParameter::new("org", "is required"))?
                .to_string(),
            team: params.get("team").map(str::to_string),
        })
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn bad_parameter(err: InvalidParameter) -> Response {
    crate::error::ApiError::from(err).into_response()
}

fn clickhouse_failed(what: &str, err: impl std::fmt::Display) -> Response {
    tracing::error!(%err, what, "audit read failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the audit chain ({what}): {err}"),
    )
}

/// A route of no query parameters refuses any, naming it (one was
/// answered as if absent).
fn no_parameters(pairs: &[(String, String)]) -> Result<(), InvalidParameter> {
    QueryParams::parse(pairs, &Expected::names(&[])).map(|_| ())
}

pub async fn public_key(
    State(state): State<AuditState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = no_parameters(&pairs) {
        return bad_parameter(refused);
    }
    match &state.public_key {
        Some(key) => Json(serde_json::json!({
            "algorithm": "ed25519",
            "public_key": key,
        }))
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no checkpoint signing key is configured",
        ),
    }
}

pub async fn verify_trail(
    State(state): State<AuditState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let params = match TrailParams::parse(&pairs) {
        Ok(params) => params,
        Err(err) => return bad_parameter(err),
    };
    let trusted = state.public_key.as_deref().and_then(parse_public_key);
    let ch = &state.clickhouse;
    let held = verify_held(
        ch,
        &state.anchor,
        &params.org,
        params.team.as_deref(),
        trusted.as_ref(),
    )
    .await;
    match held {
        // The report, and what it was held to: an OK from ClickHouse alone
        // cannot see a cut tail or a re-signed chain.
        Ok((report, anchor)) => {
            let mut body = serde_json::to_value(&report).unwrap_or_default();
            if let Some(fields) = body.as_object_mut() {
                fields.insert(
                    "anchor".into(),
                    serde_json::to_value(&anchor).unwrap_or_default(),
                );
                fields.insert("anchor_words".into(), anchor.words().into());
            }
            Json(body).into_response()
        }
        Err(err) => {
            tracing::error!(%err, "audit verification failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the audit chain: {err}"),
            )
        }
    }
}

/// `GET /api/v1/audit/export`: with only `org` (and `team`), the org's
/// whole chains (every link verifies); with any search parameter (`from`,
/// `to`, `user`, `model`, ...), the entries of that search, each with its
/// inclusion proof, and the checkpoints those proofs need. `limit`,
/// `cursor` and `proof` are refused: an export is never a page, and its
/// proofs are its format's ([`SearchUse::Export`]).
///
/// Streamed as it is read (no `content-length`), the footer with the
/// signed manifest last; a failure after the first chunk ends the answer
/// unfinished, so it cannot pass for a short export.
pub async fn export_trail(
    State(state): State<AuditState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = match SearchQuery::parse_for(&pairs, SearchUse::Export) {
        Ok(query) => query,
        Err(err) => return bad_parameter(err),
    };
    // The gate pinned `org` to one the caller sees (docs/sign-in.md).
    ndjson_download(&state, ExportScope::of(query))
        .await
        .unwrap_or_else(|err| clickhouse_failed("export", err))
}

/// The streamed NDJSON answer of an export ([`export_stream::started`]).
async fn ndjson_download(state: &AuditState, scope: ExportScope) -> Result<Response, String> {
    let file = scope.file_name(chrono::Utc::now());
    let body = export_stream::started(state.clickhouse.clone(), scope, state.signer.clone())
        .await
        .map_err(|err| err.to_string())?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// `GET /api/v1/audit/entries?org=&team=&user=&key=&model=&provider=&outcome=&decision=&kind=&from=&to=&limit=&cursor=&proof=`
pub async fn search_entries(
    State(state): State<AuditState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = match SearchQuery::from_pairs(&pairs) {
        Ok(query) => query,
        Err(err) => return bad_parameter(err),
    };
    let ch = &state.clickhouse;
    let page = match search::search(ch, &query).await {
        Ok(page) => page,
        Err(err) => return clickhouse_failed("search", err),
    };
    let trusted = state.public_key.as_deref().and_then(parse_public_key);
    let mut proofs = ProofSource::new(ch, trusted);
    let mut entries = Vec::with_capacity(page.entries.len());
    for row in &page.entries {
        let mut value = serde_json::to_value(row).unwrap_or_default();
        if query.proof {
            match proofs.prove(row).await {
                Ok(proof) => {
                    value["proof"] = serde_json::to_value(proof).unwrap_or_default();
                }
                Err(err) => return clickhouse_failed("proof", err),
            }
        }
        entries.push(value);
    }
    Json(serde_json::json!({
        "count": entries.len(),
        "entries": entries,
        "next_cursor": page.next_cursor,
    }))
    .into_response()
}

/// `GET /api/v1/audit/entries/{chain}/{seq}`: one entry with its inclusion
/// proof. 404 when it does not exist or belongs to an org the key may not see.
pub async fn one_entry(
    State(state): State<AuditState>,
    identity: Identity,
    Path((chain, seq)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    // `proof` cannot be false here (`docs/audit.md`, "Compliance search").
    if pairs.iter().any(|(name, _)| name == "proof") {
        return bad_parameter(InvalidParameter::new(
            "proof",
            "an entry is always answered with its inclusion proof",
        ));
    }
    if let Err(refused) = no_parameters(&pairs) {
        return bad_parameter(refused);
    }
    let Some(seq) = seq.parse::<u64>().ok().filter(|s| *s >= 1) else {
        return bad_parameter(InvalidParameter::new(
            "seq",
            format!("`{seq}` is not a sequence number (a whole number from 1)"),
        ));
    };
    let ch = &state.clickhouse;
    let row = match search::entry(ch, &chain, seq).await {
        Ok(Some(row)) if identity.sees(AUDITORS, &row.org_id) => row,
        Ok(_) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no entry {seq} in chain {chain}"),
            )
        }
        Err(err) => return clickhouse_failed("entry", err),
    };
    let trusted = state.public_key.as_deref().and_then(parse_public_key);
    let proof = match ProofSource::new(ch, trusted).prove(&row).await {
        Ok(proof) => proof,
        Err(err) => return clickhouse_failed("proof", err),
    };
    let mut value = serde_json::to_value(&row).unwrap_or_default();
    value["proof"] = serde_json::to_value(proof).unwrap_or_default();
    Json(value).into_response()
}
