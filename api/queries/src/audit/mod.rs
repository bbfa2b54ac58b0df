//! Reading the audit chain (`docs/audit.md`):
//!
//! - [`verify`]: recomputing chains and checkpoints, locating the first break;
//! - [`pages`]: the seq ranges a chain's entries are read in, empty ones skipped;
//! - [`search`]: compliance search, one entry, inclusion proofs;
//! - [`trail`]: NDJSON export of whole chains or of a search (with proofs);
//! - [`export_stream`]: an export as a stream of chunks, for HTTP answers;
//! - [`export_verify`]: verifying an export file offline (signed manifest,
//!   chains or proofs, anchor file);
//! - [`anchor`]: reading the checkpoint anchor topic back;
//! - [`access`]: who may read audit trails (API keys, roles, org scope).

pub mod access;
pub mod anchor;
pub mod export_stream;
pub mod export_verify;
pub mod pages;
pub mod search;
pub mod trail;
pub mod verify;

/// Every statement the audit read side sends, with sample values bound,
/// for the SQL compatibility check.
pub fn sql_catalog() -> Vec<(String, String)> {
    vec![
        (
            "audit.verify.chains".into(),
            fill(verify::CHAINS_SQL, &["'org-a'", "''", "''"]),
        ),
        (
            "audit.export.chains".into(),
            fill(
                trail::EXPORT_CHAINS_SQL,
                &["'org-a'", "'org-a'", "''", "''"],
            ),
        ),
        (
            "audit.verify.chains_in_range".into(),
            fill(
                verify::CHAINS_IN_RANGE_SQL,
                &["'org-a'", "''", "''", "1773100800000", "1773187200000"],
            ),
        ),
        (
            "audit.verify.max_seq".into(),
            fill(verify::MAX_SEQ_SQL, &["'team-a'"]),
        ),
        (
            "audit.verify.checkpoints".into(),
            fill(&verify::checkpoints_sql(), &["'team-a'"]),
        ),
        (
            "audit.verify.entries_page".into(),
            fill(&pages::entries_page_sql(), &["'team-a'", "0", "249999"]),
        ),
        (
            "audit.verify.next_seq".into(),
            fill(pages::NEXT_SEQ_SQL, &["'team-a'", "250000"]),
        ),
        (
            "audit.search.page_keys".into(),
            fill(
                &search::page_keys_sql(&sample_search(&[
                    ("org", "org-a"),
                    ("team", "team-a"),
                    ("model", "gpt-4o"),
                    ("outcome", "success"),
                ])),
                &[
                    "'org-a'",
                    "'team-a'",
                    "'gpt-4o'",
                    "'success'",
                    "1773100800000",
                    "18446744073709551615",
                    "1773100800000",
                    "1773100800000",
                    "'team-a'",
                    "'team-a'",
                    "7",
                    "101",
                ],
            ),
        ),
        (
            "audit.search.page_keys_unfiltered".into(),
            fill(
                &search::page_keys_sql(&sample_search(&[])),
                &[
                    "0",
                    "18446744073709551615",
                    "0",
                    "0",
                    "''",
                    "''",
                    "0",
                    "101",
                ],
            ),
        ),
        (
            "audit.search.daily_counts".into(),
            fill(
                &search::daily_counts_sql(&sample_search(&[
                    ("org", "org-a"),
                    ("decision", "deny"),
                ])),
                &["'org-a'", "'deny'", "0", "1773187200000"],
            ),
        ),
        (
            "audit.search.entries_at".into(),
            fill(
                &search::entries_at_sql(3),
                &["'team-a'", "7", "'team-a'", "8", "'team-b'", "1"],
            ),
        ),
        (
            "audit.search.entries_at_one".into(),
            fill(
                &search::entries_at_sql(1),
                &["'team-a'", "7", "'team-a'", "7"],
            ),
        ),
        (
            "audit.search.entry".into(),
            fill(&search::entry_sql(), &["'team-a'", "7"]),
        ),
        ("audit.search.orgs".into(), search::ORGS_SQL.into()),
        (
            "audit.search.segment_hashes".into(),
            fill(search::SEGMENT_HASHES_SQL, &["'team-a'", "1", "50"]),
        ),
        (
            "audit.export.chain_entries".into(),
            fill(&trail::chain_entries_sql(), &["'team-a'"]),
        ),
    ]
}

/// A search with these filters set.
fn sample_search(filters: &[(&str, &str)]) -> search::SearchQuery {
    let mut query = search::SearchQuery::default();
    for (name, value) in filters {
        query.set_filter(name, value);
    }
    query
}

/// `sql` with each `?` replaced by the next sample value, in order.
fn fill(sql: &str, values: &[&str]) -> String {
    values
        .iter()
        .fold(sql.to_string(), |sql, value| sql.replacen('?', value, 1))
}
