//! The compliance pages (`/compliance/...`): search the audit trail (form,
//! paginated table, entries per day chart, NDJSON export of the search), one
//! entry with its inclusion proof, and verification status per org.
//!
//! The pages need a caller with role `compliance` or `admin`, the rule of
//! `/api/v1/audit/*` too (the sign-in gate, `tollgate-access`): people
//! signed in, or an API key in `Authorization: Bearer`. One who sees only
//! some orgs sees only theirs (another org's entry is a 404).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tollgate_access::{Access, Identity, OrgFrom, Routes, AUDITORS};
use tollgate_contract::audit::checkpoint::parse_public_key;
use tollgate_contract::audit::entry::EntryRow;
use tollgate_queries::audit::access::AuditAccess;
use tollgate_queries::audit::anchor::AnchorUse;
use tollgate_queries::audit::export_stream::{self, ExportScope};
use tollgate_queries::audit::search::{
    self, daily_counts, urlencode, ProofResult, ProofSource, ProofStatus, SearchQuery, SearchUse,
};
use tollgate_queries::audit::verify::{verify_held, AuditReport, Verdict};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::InvalidParameter;

use crate::display::{Count, Figure, Instant};
use crate::layout::{render, Section};

/// The compliance routes: auditors (`compliance`, `admin`) only.
pub fn routes(state: AuditAccess) -> Routes {
    let read = Access::read(AUDITORS);
    Routes::new()
        .route(
            "/compliance",
            read.org(OrgFrom::None),
            get(|uri: Uri| crate::nav::to_home("/compliance/search", uri)),
        )
        .route(
            "/compliance/login",
            Access::public(),
            get(|| async { Redirect::to("/login?next=%2Fcompliance%2Fsearch") }),
        )
        .route("/compliance/search", read, get(search_page))
        .route("/compliance/search.csv", read, get(search_csv))
        .route("/compliance/export", read, get(export_download))
        .route(
            "/compliance/entries/{chain}/{seq}",
            read.org(OrgFrom::Handler),
            get(entry_page),
        )
        .route("/compliance/verify", read, get(verify_page))
        .with_state(state)
}

#[derive(Template)]
#[template(path = "compliance_denied.html")]
struct DeniedPage {
    section: Section,
    title: &'static str,
    message: String,
}

fn not_found(message: String) -> Response {
    render(
        StatusCode::NOT_FOUND,
        &DeniedPage {
            section: Section::Compliance,
            title: "Not found",
            message,
        },
    )
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> Response {
    tracing::error!(%err, what, "compliance page cannot read the audit chain");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        &DeniedPage {
            section: Section::Compliance,
            title: "Unavailable",
            message: format!("cannot read the audit chain ({what}): {err}"),
        },
    )
}

/// A request the pages cannot read: 400, naming the parameter.
fn bad_request(err: InvalidParameter) -> Response {
    render(
        StatusCode::BAD_REQUEST,
        &DeniedPage {
            section: Section::Compliance,
            title: "Bad request",
            message: format!("invalid parameter `{}`: {}", err.field, err.reason),
        },
    )
}

/// An entry's time (epoch ms), to the millisecond; the number itself if
/// it is out of range.
fn time_figure(ms: u64) -> Figure {
    Instant::from_epoch_millis(ms).map_or_else(|| ms.to_string().into(), Figure::from)
}

/// `datetime-local` value (UTC, minutes) of epoch ms.
fn form_time(ms: Option<u64>) -> String {
    ms.and_then(|ms| i64::try_from(ms).ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_default()
}

/// One row of the results table.
struct ResultRow {
    chain: String,
    seq: u64,
    link: String,
    time: Figure,
    org: String,
    team: String,
    user: String,
    key: String,
    model: String,
    outcome: String,
    decision: String,
    kind: String,
}

impl ResultRow {
    fn from(row: &EntryRow) -> Self {
        Self {
            chain: row.chain_id.clone(),
            seq: row.seq,
            // The entry's org rides along, so the navigation on its page
            // carries it to the other pages.
            link: format!(
                "/compliance/entries/{}/{}?org={}",
                urlencode(&row.chain_id),
                row.seq,
                urlencode(&row.org_id)
            ),
            time: time_figure(row.occurred_at_ms),
            org: row.org_id.clone(),
            team: row.team_id.clone(),
            user: row.user_id.clone(),
            key: row.api_key_id.clone(),
            model: row.model.clone(),
            outcome: row.outcome.clone(),
            decision: row.decision.clone(),
            kind: row.kind.clone(),
        }
    }
}

/// A text input of the search form.
struct Field {
    name: &'static str,
    label: &'static str,
    value: String,
}

#[derive(Template)]
#[template(path = "compliance_search.html")]
struct SearchPage {
    section: Section,
    who: String,
    fields: Vec<Field>,
    from: String,
    to: String,
    limit: u64,
    error: Option<String>,
    rows: Vec<ResultRow>,
    next_link: Option<String>,
    first_link: Option<String>,
    export_link: String,
    /// Every entry of this search as CSV.
    csv_link: String,
    chart_json: String,
    days: usize,
}

/// The search form's values: `from`/`to` come from `datetime-local` inputs.
/// The gate pinned `org` to one the caller sees (`tollgate-access`).
fn search_query(pairs: &[(String, String)], what: SearchUse) -> Result<SearchQuery, String> {
    SearchQuery::parse_for(pairs, what)
        .map_err(|e| format!("invalid parameter `{}`: {}", e.field, e.reason))
}

async fn search_page(
    State(state): State<AuditAccess>,
    identity: Identity,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (query, error) = match search_query(&pairs, SearchUse::Page) {
        Ok(query) => (query, None),
        Err(message) => {
            let mut query = SearchQuery {
                limit: search::DEFAULT_LIMIT,
                ..SearchQuery::default()
            };
            if let Some(org) = identity.scope() {
                query.set_filter("org", org);
            }
            (query, Some(message))
        }
    };
    let ch = &state.clickhouse;
    let (page, days) = if error.is_none() {
        let page = match search::search(ch, &query).await {
            Ok(page) => page,
            Err(err) => return unavailable("search", err),
        };
        let days = match daily_counts(ch, &query).await {
            Ok(days) => days,
            Err(err) => return unavailable("entries per day", err),
        };
        (Some(page), days)
    } else {
        (None, Vec::new())
    };
    let base = query.to_query_string();
    let join = |extra: String| {
        if base.is_empty() {
            extra
        } else if extra.is_empty() {
            base.clone()
        } else {
            format!("{base}&{extra}")
        }
    };
    let limit_part = if query.limit == search::DEFAULT_LIMIT {
        String::new()
    } else {
        format!("limit={}", query.limit)
    };
    let rows: Vec<ResultRow> = page
        .as_ref()
        .map(|p| p.entries.iter().map(ResultRow::from).collect())
        .unwrap_or_default();
    let next_link = page.as_ref().and_then(|p| p.next_cursor.as_ref()).map(|c| {
        let extra = if limit_part.is_empty() {
            format!("cursor={c}")
        } else {
            format!("{limit_part}&cursor={c}")
        };
        format!("/compliance/search?{}", join(extra))
    });
    let first_link = query
        .cursor
        .as_ref()
        .map(|_| format!("/compliance/search?{}", join(limit_part.clone())));
    let labels: Vec<String> = days
        .iter()
        .map(|(day, _)| {
            DateTime::<Utc>::from_timestamp(i64::from(*day) * 86_400, 0)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default()
        })
        .collect();
    let counts: Vec<u64> = days.iter().map(|(_, n)| *n).collect();
    let chart_json =
        crate::display::script_json(&serde_json::json!({ "labels": labels, "counts": counts }));
    let fields = search::FILTERS
        .iter()
        .map(|(name, _)| Field {
            name,
            label: match *name {
                "org" => "Org",
                "team" => "Team",
                "user" => "User",
                "key" => "API key",
                "model" => "Model",
                "provider" => "Provider",
                "outcome" => "Outcome",
                "decision" => "Decision",
                _ => "Kind",
            },
            value: query.filter(name).to_string(),
        })
        .collect();
    // A search that cannot be read is a 400 page (the form, with the error
    // naming the parameter), as the API's 400.
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        status,
        &SearchPage {
            section: Section::Compliance,
            who: identity.who(),
            fields,
            from: form_time(query.from_ms),
            to: form_time(query.to_ms),
            limit: query.limit,
            error,
            rows,
            next_link,
            first_link,
            export_link: format!("/compliance/export?{base}"),
            csv_link: format!("/compliance/search.csv?{}", join(limit_part.clone())),
            chart_json,
            days: days.len(),
        },
    )
}

/// `GET /compliance/search.csv?...`: every entry of the search (from
/// `cursor` when given) as the page's "Entries" table, streamed a page of
/// `limit` entries at a time, so a download never holds the whole search
/// in memory (`tollgate_queries::audit::search::entries_table`; the gate
/// pinned `org` as for the page). The whole search with proofs is the
/// NDJSON export.
async fn search_csv(
    State(state): State<AuditAccess>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = match search_query(&pairs, SearchUse::Csv) {
        Ok(query) => query,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    // The first page is read before answering, so an unreadable chain is a
    // 503 page rather than a broken download.
    let first = match search::search(&state.clickhouse, &query).await {
        Ok(page) => page,
        Err(err) => return unavailable("search", err),
    };
    let header = search::entries_table(&[]).to_csv();
    let head = format!(
        "{header}{}",
        search::entries_table(&first.entries).rows_csv()
    );
    let pages = futures::stream::unfold(
        (state.clickhouse.clone(), query, first.next_cursor),
        |(client, mut query, cursor)| async move {
            let cursor = search::Cursor::decode(&cursor?)?;
            query.cursor = Some(cursor);
            match search::search(&client, &query).await {
                Ok(page) => {
                    let lines = search::entries_table(&page.entries).rows_csv();
                    Some((Ok(lines), (client, query, page.next_cursor)))
                }
                Err(err) => {
                    // The answer has started: the download ends unfinished
                    // (no final chunk), which clients report as an error.
                    tracing::error!(%err, "compliance CSV cannot read the next page");
                    Some((
                        Err(std::io::Error::other(err.to_string())),
                        (client, query, None),
                    ))
                }
            }
        },
    );
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(pages);
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit-search.csv\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// `GET /compliance/export?...`: the NDJSON export of the search (the
/// gate pinned its `org`): the org's (and team's) whole chains when the
/// search names nothing else ([`ExportScope::of`]), else the search with
/// proofs; streamed as it is read
/// (`tollgate_queries::audit::export_stream`, as the API's). `limit`,
/// `cursor` and `proof` are refused, as by the API: an export is never a
/// page.
async fn export_download(
    State(state): State<AuditAccess>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = match SearchQuery::parse_for(&pairs, SearchUse::Export) {
        Ok(query) => query,
        Err(err) => return bad_request(err),
    };
    let scope = ExportScope::of(query);
    let file = scope.file_name(chrono::Utc::now());
    match export_stream::started(state.clickhouse.clone(), scope, state.signer.clone()).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{file}\""),
                ),
            ],
            axum::body::Body::from_stream(body),
        )
            .into_response(),
        Err(err) => unavailable("export", err),
    }
}

#[derive(Template)]
#[template(path = "compliance_entry.html")]
struct EntryPage {
    section: Section,
    row: ResultRow,
    entry_hash: String,
    prev_hash: String,
    event_id: String,
    provider: String,
    decision_reason: String,
    kafka: String,
    event_json: String,
    status: &'static str,
    status_class: &'static str,
    detail: String,
    proof: Option<ProofView>,
}

struct ProofView {
    from_seq: u64,
    to_seq: u64,
    leaf_index: u64,
    tree_size: u64,
    merkle_root: String,
    path: Vec<String>,
    signature: String,
    public_key: String,
    created_at: Figure,
    json: String,
}

fn status_words(status: ProofStatus) -> (&'static str, &'static str) {
    match status {
        ProofStatus::Verified => ("verified", "ok"),
        ProofStatus::UnverifiableYet => ("not yet covered by a checkpoint", "pending"),
        ProofStatus::Failed => ("proof FAILED", "bad"),
    }
}

async fn entry_page(
    State(state): State<AuditAccess>,
    identity: Identity,
    Path((chain, seq)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    // `org` names the org the page is read for (the links of the search
    // carry it, and with it the navigation); another org than the entry's
    // (the org switcher) leads to that org's search.
    let org = match QueryParams::parse(&pairs, &Expected::names(&["org"])) {
        Ok(params) => params.get("org").unwrap_or_default().trim().to_string(),
        Err(err) => return bad_request(err),
    };
    let Some(seq) = seq.parse::<u64>().ok().filter(|s| *s >= 1) else {
        // The API's answer: a 400 naming `seq`.
        return bad_request(InvalidParameter::new(
            "seq",
            format!("`{seq}` is not a sequence number (a whole number from 1)"),
        ));
    };
    let ch = &state.clickhouse;
    let row = match search::entry(ch, &chain, seq).await {
        Ok(Some(row)) if identity.sees(AUDITORS, &row.org_id) => row,
        Ok(_) => return not_found(format!("no entry {seq} in chain {chain}")),
        Err(err) => return unavailable("entry", err),
    };
    if !org.is_empty() && org != row.org_id {
        return Redirect::to(&format!("/compliance/search?org={}", urlencode(&org)))
            .into_response();
    }
    let trusted = state.public_key.as_deref().and_then(parse_public_key);
    let result: ProofResult = match ProofSource::new(ch, trusted).prove(&row).await {
        Ok(result) => result,
        Err(err) => return unavailable("proof", err),
    };
    let (status, status_class) = status_words(result.status);
    let proof = match (&result.proof, &result.checkpoint) {
        (Some(p), Some(cp)) => Some(ProofView {
            from_seq: p.checkpoint_from_seq,
            to_seq: p.checkpoint_to_seq,
            leaf_index: p.leaf_index,
            tree_size: p.tree_size,
            merkle_root: p.merkle_root.clone(),
            path: p.path.clone(),
            signature: cp.signature.clone(),
            public_key: cp.public_key.clone(),
            created_at: time_figure(cp.created_at_ms),
            json: serde_json::to_string_pretty(&result).unwrap_or_default(),
        }),
        _ => None,
    };
    let pretty_event = serde_json::from_str::<serde_json::Value>(&row.event_json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| row.event_json.clone());
    render(
        StatusCode::OK,
        &EntryPage {
            section: Section::Compliance,
            row: ResultRow::from(&row),
            entry_hash: row.entry_hash.clone(),
            prev_hash: row.prev_hash.clone(),
            event_id: row.event_id.clone(),
            provider: row.provider.clone(),
            decision_reason: row.decision_reason.clone(),
            kafka: format!(
                "partition {}, offset {}",
                row.kafka_partition, row.kafka_offset
            ),
            event_json: pretty_event,
            status,
            status_class,
            detail: result.detail.clone().unwrap_or_default(),
            proof,
        },
    )
}

struct OrgStatus {
    org: String,
    ok: bool,
    /// The badge: `verified`, `broken` or `nothing verified`.
    badge: &'static str,
    headline: String,
    lines: Vec<String>,
}

#[derive(Template)]
#[template(path = "compliance_verify.html")]
struct VerifyPage {
    section: Section,
    who: String,
    orgs: Vec<OrgStatus>,
    /// What the verification was held to ([`AnchorUse::words`]).
    anchor_words: String,
    held_to_anchor: bool,
    public_key: String,
}

fn org_status(report: &AuditReport) -> OrgStatus {
    let headline = if report.verdict == Verdict::NothingVerified {
        format!(
            "nothing verified: no audit chain holds entries of org {} (none written yet, or a \
             mistyped org id)",
            report.org
        )
    } else if report.ok {
        let checkpoints: Vec<String> = report
            .chains
            .iter()
            .filter_map(|c| {
                c.verified_to_seq
                    .map(|s| format!("{} at seq {s}", c.chain_id))
            })
            .collect();
        format!(
            "verified {} entries in {} chains, {} checkpoints{}",
            Count(report.entries.into()).text(),
            report.chains.len(),
            Count(report.checkpoints.into()).text(),
            if checkpoints.is_empty() {
                String::new()
            } else {
                format!(" (up to checkpoint {})", checkpoints.join(", "))
            }
        )
    } else {
        let first = report.chains.iter().find_map(|c| {
            c.first_break
                .as_ref()
                .map(|b| (c.chain_id.clone(), b.clone()))
        });
        match first {
            Some((chain, b)) => format!(
                "BROKEN: chain {chain} at seq {}: {:?}: {}",
                b.seq, b.kind, b.detail
            ),
            None => "BROKEN".to_string(),
        }
    };
    OrgStatus {
        org: report.org.clone(),
        ok: report.ok,
        badge: match report.verdict {
            Verdict::Verified => "verified",
            Verdict::Broken => "broken",
            Verdict::NothingVerified => "nothing verified",
        },
        headline,
        lines: report.lines(),
    }
}

async fn verify_page(
    State(state): State<AuditAccess>,
    identity: Identity,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let requested = match QueryParams::parse(&pairs, &Expected::names(&["org"])) {
        Ok(params) => params.get("org").unwrap_or_default().to_string(),
        Err(err) => return bad_request(err),
    };
    // The gate pinned `org` to one the caller sees.
    let org = requested.trim().to_string();
    let ch = &state.clickhouse;
    let orgs: Vec<String> = if org.is_empty() {
        match ch.query(search::ORGS_SQL).fetch_all().await {
            Ok(orgs) => orgs,
            Err(err) => return unavailable("orgs", err),
        }
    } else {
        vec![org]
    };
    let trusted = state.public_key.as_deref().and_then(parse_public_key);
    let mut statuses = Vec::with_capacity(orgs.len());
    let mut anchor_words = String::new();
    let mut held_to_anchor = false;
    // The anchor is read once for every org of the page (a read is kept).
    for org in orgs {
        match verify_held(ch, &state.anchor, &org, None, trusted.as_ref()).await {
            Ok((report, anchor)) => {
                statuses.push(org_status(&report));
                held_to_anchor = matches!(anchor, AnchorUse::Held { .. });
                anchor_words = anchor.words();
            }
            Err(err) => return unavailable("verification", err),
        }
    }
    render(
        StatusCode::OK,
        &VerifyPage {
            section: Section::Compliance,
            who: identity.who(),
            orgs: statuses,
            anchor_words,
            held_to_anchor,
            public_key: state
                .public_key
                .clone()
                .unwrap_or_else(|| "(no signing key configured: signatures checked against the key each checkpoint names)".into()),
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn times_render_in_utc() {
        assert_eq!(
            time_figure(1_773_136_800_123).to_string(),
            "<time datetime=\"2026-03-10T10:00:00.123Z\" title=\"2026-03-10 10:00:00.123 UTC\">\
             2026-03-10 10:00:00.123 UTC</time>"
        );
        assert_eq!(form_time(Some(1_773_136_800_000)), "2026-03-10T10:00");
        assert_eq!(form_time(None), "");
    }
}
