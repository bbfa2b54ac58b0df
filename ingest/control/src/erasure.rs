//! Erasure of one person's personal data on request (GDPR art. 17), for
//! `tollgate erase` and `POST /api/v1/audit/erasures` (`docs/audit.md`,
//! "Erasure"). Record first, erase second, like the anchor's "publish
//! first, insert second":
//!
//! 1. find the person's rows (`org_id` and `user_id`) in every table that
//!    holds personal fields ([`PERSONAL_TABLES`]) and their audit entries;
//! 2. put one `admin.personal_data.erased` event per chain in the outbox,
//!    naming the entries (chain and seqs, entry hashes) and the row counts,
//!    never the data, and publish it; each is keyed by the chain's team, so
//!    the audit fold appends it to that very chain;
//! 3. wait until every such event is an entry of its chain: only then is
//!    anything erased, so no erased entry is ever unrecorded;
//! 4. overwrite the personal fields with ClickHouse mutations (`ALTER TABLE
//!    … UPDATE/DELETE`, there since 18.x) and wait until they are done:
//!    version 2 audit entries lose `user_id`, `event_json` and their salt
//!    and still verify through `personal_commitment`; `calls` and
//!    `cost_adjustments` lose the user id (and `calls` the prompt and
//!    response hashes and the error message, its masked template and the
//!    masked parts, from which the message could be put back together);
//!    `cost_daily` and
//!    `cost_daily_by_user` rows (the user id is in their sorting key, which
//!    mutations cannot update) are copied summed under an empty user id,
//!    then deleted, so every total but the person's own stays;
//!    The pattern catalog has no user: the templates only the person's
//!    failed calls hold are read before, and once `calls` is erased their
//!    rows are deleted and the patterns folded again from `calls`;
//! 5. count again, in every MergeTree table with a `user_id` column
//!    (`system.columns`), and return the receipt.
//!
//! Version 1 audit entries (written before entry version 2) hash the user id
//! and the event directly: erasing them would break their chain's
//! verification, so they are kept and listed in the receipt.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tollgate_contract::audit::chain_id::reaches;
use tollgate_contract::audit::entry::may_name;
use tollgate_contract::audit::erasure::{erasure_event, ErasureRecord};
use uuid::Uuid;

use crate::clickhouse::client;
use crate::config::{ClickHouseConfig, KafkaConfig};
use crate::kafka::EventProducer;
use crate::outbox::{self, OutboxRelay};

/// Tables holding a person's fields, and what erasure does to a row of the
/// person in each.
pub const PERSONAL_TABLES: &[(&str, &str)] = &[
    (
        "audit_chain",
        "version 2 entries: user_id, event_json and salt emptied (the entry still verifies through personal_commitment); version 1 entries kept",
    ),
    (
        "audit_search",
        "the search index of the audit chain (migration 0038): user_id emptied on the rows of the erased entries, first",
    ),
    (
        "calls",
        "user_id, prompt_sha256, response_sha256, error_message, error_template and error_variables emptied (the error's signature stays)",
    ),
    (
        "cost_adjustments",
        "user_id emptied",
    ),
    (
        "cost_daily",
        "rows summed under an empty user_id, the person's rows deleted",
    ),
    (
        "cost_daily_by_user",
        "the cost rollup per user (migration 0039): as cost_daily",
    ),
    (
        "error_pattern_catalog",
        "templates only the person's failed calls hold: their rows deleted, the pattern folded again from calls",
    ),
];

/// Longest `reason` accepted (it is chained, so keep it a reference).
pub const MAX_REASON: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("clickhouse at {url}: {doing}: {source}")]
    ClickHouse {
        url: String,
        doing: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("postgresql: {doing}: {source}")]
    Postgres {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the erasure entries were not appended to the audit chain within {waited_secs} s ({chained} of {expected}): nothing was erased yet. They are queued (outbox) and are chained once `tollgate process` runs its audit fold; run the erasure again then to finish it")]
    NotChained {
        waited_secs: u64,
        chained: u64,
        expected: u64,
    },
    #[error("org {org} holds no data of user {user:?}: nothing was erased or recorded (ids are case-sensitive; `tollgate erase --check` counts what holds an id; an erasure already done leaves nothing)")]
    NothingHeld { org: String, user: String },
    #[error("the erasure is recorded in the audit chain, but clickhouse did not finish its mutations within {waited_secs} s ({pending} pending); they go on in the background: `tollgate erase --check` counts what still holds the id (running the erasure again finishes what is left, or says nothing is held)")]
    MutationsPending { waited_secs: u64, pending: u64 },
}

/// What to erase, who asks and why.
#[derive(Debug, Clone)]
pub struct ErasureRequest {
    pub org_id: String,
    pub user_id: String,
    pub reason: String,
    /// Who asked (`key:<prefix>`, a person's email, `cli`), chained as the
    /// erasure entries' `actor`.
    pub actor: String,
}

impl ErasureRequest {
    /// Check the fields, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), ErasureError> {
        let check = |field: &'static str, value: &str, max: usize| {
            if value.trim().is_empty() {
                return Err(ErasureError::Invalid {
                    field,
                    reason: "is required".into(),
                });
            }
            if value.chars().count() > max {
                return Err(ErasureError::Invalid {
                    field,
                    reason: format!("is longer than {max} characters"),
                });
            }
            Ok(())
        };
        check("org", &self.org_id, 128)?;
        check("user", &self.user_id, 128)?;
        check("reason", &self.reason, MAX_REASON)
    }
}

/// What is needed to erase: the ClickHouse database, the outbox, Kafka, and
/// how long to wait for the audit fold and the mutations.
#[derive(Clone)]
pub struct Eraser {
    pub clickhouse: ClickHouseConfig,
    pub kafka: KafkaConfig,
    pub pool: PgPool,
    pub wait: Duration,
}

/// The receipt of an erasure, the proof a compliance officer keeps: which
/// entries were erased and where each chain records it, row counts before
/// and after per table, and what was kept.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureReceipt {
    pub erasure_id: Uuid,
    pub org: String,
    pub reason: String,
    pub actor: String,
    pub erased_at: String,
    /// Per table: the person's rows before, and rows still holding their id
    /// after (0, but for kept version 1 audit entries).
    pub tables: BTreeMap<String, TableCounts>,
    pub chains: Vec<ChainErasure>,
    /// Version 1 audit entries of the person, kept (chain, seq).
    pub kept_v1_entries: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableCounts {
    pub before: u64,
    pub after: u64,
}

/// One chain's part of an erasure.
#[derive(Debug, Clone, Serialize)]
pub struct ChainErasure {
    pub chain_id: String,
    /// The seqs whose personal fields were erased.
    pub erased_seqs: Vec<u64>,
    /// Their entry hashes, unchanged: they still verify.
    pub entry_hashes: Vec<String>,
    /// The `admin.personal_data.erased` entry recording it.
    pub record_seq: u64,
    pub record_entry_hash: String,
}

#[derive(Debug, Row, Deserialize)]
struct AuditRow {
    chain_id: String,
    seq: u64,
    v: u8,
    entry_hash: String,
    team_id: String,
}

#[derive(Debug, Row, Deserialize)]
struct ChainedRow {
    chain_id: String,
    seq: u64,
    entry_hash: String,
    event_id: String,
}

/// The person's audit entries.
pub const AUDIT_ROWS_SQL: &str = "SELECT chain_id, seq, v, entry_hash, team_id FROM audit_chain WHERE org_id = ? AND user_id = ? ORDER BY chain_id, seq";

/// The entries of the erasure events, once chained.
pub const CHAINED_SQL: &str =
    "SELECT chain_id, seq, entry_hash, event_id FROM audit_chain WHERE has(?, event_id) ORDER BY chain_id, seq";

/// Version 2 entries of one chain: personal fields and salt emptied.
pub const ERASE_AUDIT_SQL: &str = "ALTER TABLE audit_chain UPDATE user_id = '', event_json = '', salt = '' WHERE chain_id = ? AND has(?, seq) AND org_id = ? AND user_id = ? AND v >= 2";

/// The same entries' rows in the search index (only version 2 entries'
/// seqs are bound). Sent before [`ERASE_AUDIT_SQL`]: an erasure stopped
/// between the two leaves the chain's rows holding the person, so running
/// it again finds them and erases both.
pub const ERASE_AUDIT_SEARCH_SQL: &str = "ALTER TABLE audit_search UPDATE user_id = '' WHERE chain_id = ? AND has(?, seq) AND org_id = ? AND user_id = ?";

pub const ERASE_CALLS_SQL: &str = "ALTER TABLE calls UPDATE user_id = '', prompt_sha256 = '', response_sha256 = '', error_message = '', error_template = '', error_variables = emptyArrayString() WHERE org_id = ? AND user_id = ?";

pub const ERASE_ADJUSTMENTS_SQL: &str =
    "ALTER TABLE cost_adjustments UPDATE user_id = '' WHERE org_id = ? AND user_id = ?";

/// The person's cost rollup rows, summed under an empty user id (the user
/// id is part of the sorting key, so it cannot be updated in place). No
/// column is aliased to a name of `cost_daily`: an alias would shadow the
/// column in `WHERE`.
pub const COPY_COST_DAILY_SQL: &str = "INSERT INTO cost_daily (day, org_id, team_id, user_id, api_key_id, provider, model, price_version, calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, images, audio_ms, cost) SELECT day, org_id, team_id, '' AS erased_user, api_key_id, provider, model, price_version, sum(calls), sum(unpriced_calls), sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(cache_write_tokens), sum(reasoning_tokens), sum(images), sum(audio_ms), sum(cost) FROM cost_daily WHERE org_id = ? AND user_id = ? GROUP BY day, org_id, team_id, api_key_id, provider, model, price_version";

pub const DELETE_COST_DAILY_SQL: &str =
    "ALTER TABLE cost_daily DELETE WHERE org_id = ? AND user_id = ?";

/// The person's rows of the rollup per user, summed under an empty user id
/// like [`COPY_COST_DAILY_SQL`].
pub const COPY_COST_DAILY_BY_USER_SQL: &str = "INSERT INTO cost_daily_by_user (day, org_id, team_id, user_id, calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, images, audio_ms, cost) SELECT day, org_id, team_id, '' AS erased_user, sum(calls), sum(unpriced_calls), sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(cache_write_tokens), sum(reasoning_tokens), sum(images), sum(audio_ms), sum(cost) FROM cost_daily_by_user WHERE org_id = ? AND user_id = ? GROUP BY day, org_id, team_id";

pub const DELETE_COST_DAILY_BY_USER_SQL: &str =
    "ALTER TABLE cost_daily_by_user DELETE WHERE org_id = ? AND user_id = ?";

/// The person's error templates that no other call holds, as (signature,
/// template): the pattern catalog's rows of them are the person's words
/// (bound: org and user, twice).
pub const OWN_TEMPLATES_SQL: &str = "SELECT error_signature, error_template FROM calls WHERE kind = 'ai.call.failed' AND error_signature != 0 AND error_template != '' AND error_signature IN (SELECT error_signature FROM calls WHERE org_id = ? AND user_id = ? AND kind = 'ai.call.failed' AND error_signature != 0) GROUP BY error_signature, error_template HAVING countIf(org_id = ? AND user_id = ?) = count() ORDER BY error_signature, error_template";

/// The catalog's rows of one signature's templates (bound: the signature,
/// an array of templates).
pub const DELETE_CATALOG_TEMPLATES_SQL: &str =
    "ALTER TABLE error_pattern_catalog DELETE WHERE signature = ? AND has(?, template)";

/// How many of one signature's templates the catalog still holds.
pub const COUNT_CATALOG_TEMPLATES_SQL: &str =
    "SELECT count() FROM error_pattern_catalog WHERE signature = ? AND has(?, template)";

/// The catalog's rows of the signatures `?` (an array) folded again from
/// `calls` as `error_pattern_catalog_mv` folds them (migration 0031), after
/// [`DELETE_CATALOG_TEMPLATES_SQL`]: the person's failures come back under
/// their emptied template, and a template another call took up meanwhile
/// comes back too (first and last seen are min and max states, so a row
/// folded twice changes nothing). `rollups check` then finds every key of
/// `calls` in the catalog.
pub const REFOLD_CATALOG_SQL: &str = "INSERT INTO error_pattern_catalog (signature, provider, http_status, error_type, template, first_seen, last_seen) SELECT error_signature AS signature, CAST(provider AS String) AS provider, http_status, error_type, error_template AS template, minState(occurred_at) AS first_seen, maxState(occurred_at) AS last_seen FROM calls WHERE kind = 'ai.call.failed' AND has(?, error_signature) GROUP BY signature, provider, http_status, error_type, template";

/// The receipt's name for the catalog's templates of the person.
pub const CATALOG_TEMPLATES: &str = "error_pattern_catalog.template";

/// Mutations of the database not finished yet, on the tables erasure
/// changes.
pub const PENDING_MUTATIONS_SQL: &str = "SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0 AND has(['audit_chain', 'audit_search', 'calls', 'cost_adjustments', 'cost_daily', 'cost_daily_by_user', 'error_pattern_catalog'], table)";

/// Every MergeTree table of the database with a `user_id` column.
pub const USER_TABLES_SQL: &str = "SELECT name FROM system.tables WHERE database = ? AND engine LIKE '%MergeTree' AND name IN (SELECT table FROM system.columns WHERE database = ? AND name = 'user_id') ORDER BY name";

/// Denied calls' audit entries of the org whose decision reason names the
/// person as a word (bound: the org, and [`reason_pattern`] of the id).
/// Entries chained before 2026-12-07 kept the proxy's reason as it was
/// (`... for user carol of org acme ...`); the reason is hashed as it is,
/// outside the salted commitment, so it cannot be emptied, and the counts
/// say so rather than claim nothing holds the id.
pub const DECISION_REASONS_SQL: &str = "SELECT count() FROM audit_chain WHERE org_id = ? AND decision = 'deny' AND match(decision_reason, ?)";

/// The name [`Eraser::holding`] gives [`DECISION_REASONS_SQL`]'s count.
pub const DECISION_REASONS: &str = "audit_chain.decision_reason";

/// A regular expression (RE2, as ClickHouse's `match`) of a reason that
/// may name `user`: the proxy's phrase `user <id>` ending a word, and an
/// id that may name a person (`may_name`: wider than what
/// `tollgate_contract::audit::entry::without_user` masks, so the count
/// never says less than is held) as a word anywhere (ASCII letters and
/// digits only: an id next to another letter may be over-counted).
pub fn reason_pattern(user: &str) -> String {
    let id = regex::escape(user);
    let ends = "($|[^[:alnum:]_@.-]|[.]($|[^[:alnum:]]))";
    if may_name(user) {
        format!("(^|[^[:alnum:]_@.-]){id}{ends}")
    } else {
        format!("(^|[^[:alnum:]])user {id}{ends}")
    }
}

/// Rows of `table` holding the person's id.
pub fn count_sql(table: &str) -> String {
    format!("SELECT count() FROM {table} WHERE org_id = ? AND user_id = ?")
}

impl Eraser {
    fn failed(
        &self,
        doing: impl Into<String>,
    ) -> impl FnOnce(clickhouse::error::Error) -> ErasureError {
        let url = self.clickhouse.url.clone();
        let doing = doing.into();
        move |source| ErasureError::ClickHouse { url, doing, source }
    }

    /// Rows holding the person's id, in every MergeTree table with a
    /// `user_id` column.
    pub async fn holding(
        &self,
        org: &str,
        user: &str,
    ) -> Result<BTreeMap<String, u64>, ErasureError> {
        let ch = client(&self.clickhouse);
        let tables: Vec<String> = ch
            .query(USER_TABLES_SQL)
            .bind(&self.clickhouse.database)
            .bind(&self.clickhouse.database)
            .fetch_all()
            .await
            .map_err(self.failed("cannot list the tables with a user_id column"))?;
        let mut counts = BTreeMap::new();
        for table in tables {
            let n: u64 = ch
                .query(&count_sql(&table))
                .bind(org)
                .bind(user)
                .fetch_one()
                .await
                .map_err(self.failed(format!("cannot count the person's rows in {table}")))?;
            counts.insert(table, n);
        }
        let named: u64 = ch
            .query(DECISION_REASONS_SQL)
            .bind(org)
            .bind(reason_pattern(user))
            .fetch_one()
            .await
            .map_err(self.failed("cannot count the decision reasons naming the person"))?;
        counts.insert(DECISION_REASONS.to_string(), named);
        Ok(counts)
    }

    /// Erase `request`'s person (see the module documentation).
    pub async fn erase(&self, request: &ErasureRequest) -> Result<ErasureReceipt, ErasureError> {
        request.validate()?;
        let (org, user) = (request.org_id.as_str(), request.user_id.as_str());
        let ch = client(&self.clickhouse);
        let before = self.holding(org, user).await?;
        // Nothing to erase: a receipt would look like a completed request
        // (a misspelled id, another org), and nothing could check it later.
        if before
            .iter()
            .all(|(table, n)| *n == 0 || table == DECISION_REASONS)
        {
            return Err(ErasureError::NothingHeld {
                org: org.to_string(),
                user: user.to_string(),
            });
        }
        let own_templates = self.own_templates(org, user).await?;
        let rows: Vec<AuditRow> = ch
            .query(AUDIT_ROWS_SQL)
            .bind(org)
            .bind(user)
            .fetch_all()
            .await
            .map_err(self.failed("cannot read the person's audit entries"))?;
        // Entries of a chain an event of the org and team reaches (the
        // org's chain of the team, or the team's chain from before chains
        // were per org) can be recorded in it; the chains of messages
        // without a key (`…~partition-N`) cannot be reached by an event, so
        // their entries are kept like version 1's.
        let mut chains: BTreeMap<String, (String, Vec<AuditRow>)> = BTreeMap::new();
        let mut kept_v1_entries = Vec::new();
        for row in rows {
            if row.v >= 2 && reaches(org, &row.team_id, &row.chain_id) {
                chains
                    .entry(row.chain_id.clone())
                    .or_insert_with(|| (row.team_id.clone(), Vec::new()))
                    .1
                    .push(row);
            } else {
                kept_v1_entries.push((row.chain_id, row.seq));
            }
        }
        let erasure_id = Uuid::now_v7();
        let mut before = before;
        before.insert(
            CATALOG_TEMPLATES.to_string(),
            own_templates.values().map(|t| t.len() as u64).sum(),
        );
        // The person's counts in every record, the same over every chain
        // (a trial read `audit_chain: 6` beside `calls: 10` as a
        // mistake): a record's own entries are its `seqs`.
        let tables: BTreeMap<String, u64> = before.clone();
        let mut events = Vec::with_capacity(chains.len());
        for (chain_id, (team_id, rows)) in &chains {
            let record = ErasureRecord {
                erasure_id,
                reason: request.reason.clone(),
                chain_id: chain_id.clone(),
                seqs: rows.iter().map(|r| r.seq).collect(),
                entry_hashes: rows.iter().map(|r| r.entry_hash.clone()).collect(),
                tables: tables.clone(),
            };
            events.push(erasure_event(&request.actor, org, team_id, &record));
        }
        let chained = self.record(&events).await?;
        for (chain_id, (_, rows)) in &chains {
            let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
            for (sql, what) in [
                (ERASE_AUDIT_SEARCH_SQL, "the search index's rows"),
                (ERASE_AUDIT_SQL, "the entries"),
            ] {
                ch.query(sql)
                    .bind(chain_id)
                    .bind(&seqs)
                    .bind(org)
                    .bind(user)
                    .execute()
                    .await
                    .map_err(self.failed(format!("cannot erase {what} of chain {chain_id}")))?;
            }
        }
        for (sql, what) in [
            (ERASE_CALLS_SQL, "calls"),
            (ERASE_ADJUSTMENTS_SQL, "cost_adjustments"),
            (COPY_COST_DAILY_SQL, "cost_daily (copy)"),
            (DELETE_COST_DAILY_SQL, "cost_daily"),
            (COPY_COST_DAILY_BY_USER_SQL, "cost_daily_by_user (copy)"),
            (DELETE_COST_DAILY_BY_USER_SQL, "cost_daily_by_user"),
        ] {
            ch.query(sql)
                .bind(org)
                .bind(user)
                .execute()
                .await
                .map_err(self.failed(format!("cannot erase the person's rows in {what}")))?;
        }
        self.wait_for_mutations().await?;
        let catalog_left = self.erase_catalog_templates(&own_templates).await?;
        let mut after = self.holding(org, user).await?;
        after.insert(CATALOG_TEMPLATES.to_string(), catalog_left);
        let tables = before
            .iter()
            .map(|(table, n)| {
                let counts = TableCounts {
                    before: *n,
                    after: after.get(table).copied().unwrap_or(0),
                };
                (table.clone(), counts)
            })
            .collect();
        let chains = chains
            .into_iter()
            .map(|(chain_id, (_, rows))| {
                let record = chained.iter().find(|c| c.chain_id == chain_id);
                ChainErasure {
                    erased_seqs: rows.iter().map(|r| r.seq).collect(),
                    entry_hashes: rows.into_iter().map(|r| r.entry_hash).collect(),
                    record_seq: record.map_or(0, |r| r.seq),
                    record_entry_hash: record.map(|r| r.entry_hash.clone()).unwrap_or_default(),
                    chain_id,
                }
            })
            .collect();
        Ok(ErasureReceipt {
            erasure_id,
            org: org.to_string(),
            reason: request.reason.clone(),
            actor: request.actor.clone(),
            erased_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            tables,
            chains,
            kept_v1_entries,
        })
    }

    /// [`OWN_TEMPLATES_SQL`], by signature.
    async fn own_templates(
        &self,
        org: &str,
        user: &str,
    ) -> Result<BTreeMap<u64, Vec<String>>, ErasureError> {
        let rows: Vec<(u64, String)> = client(&self.clickhouse)
            .query(OWN_TEMPLATES_SQL)
            .bind(org)
            .bind(user)
            .bind(org)
            .bind(user)
            .fetch_all()
            .await
            .map_err(self.failed("cannot read the person's error templates"))?;
        let mut own: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (signature, template) in rows {
            own.entry(signature).or_default().push(template);
        }
        Ok(own)
    }

    /// Once `calls` is erased: the catalog's rows of `own` deleted, their
    /// signatures folded again from `calls` ([`REFOLD_CATALOG_SQL`]); how
    /// many of `own` the catalog still holds (0 unless a call of someone
    /// else took the very template up meanwhile).
    async fn erase_catalog_templates(
        &self,
        own: &BTreeMap<u64, Vec<String>>,
    ) -> Result<u64, ErasureError> {
        if own.is_empty() {
            return Ok(0);
        }
        let ch = client(&self.clickhouse);
        for (signature, templates) in own {
            ch.query(DELETE_CATALOG_TEMPLATES_SQL)
                .bind(signature)
                .bind(templates)
                .execute()
                .await
                .map_err(
                    self.failed("cannot erase the person's templates in error_pattern_catalog"),
                )?;
        }
        self.wait_for_mutations().await?;
        let signatures: Vec<u64> = own.keys().copied().collect();
        ch.query(REFOLD_CATALOG_SQL)
            .bind(&signatures)
            .execute()
            .await
            .map_err(self.failed("cannot fold error_pattern_catalog again"))?;
        let mut left = 0;
        for (signature, templates) in own {
            let n: u64 = ch
                .query(COUNT_CATALOG_TEMPLATES_SQL)
                .bind(signature)
                .bind(templates)
                .fetch_one()
                .await
                .map_err(self.failed("cannot count the templates left in error_pattern_catalog"))?;
            left += n;
        }
        Ok(left)
    }

    /// Put `events` in the outbox, publish them, and wait until each is an
    /// entry of the audit chain; their entries.
    async fn record(
        &self,
        events: &[tollgate_contract::Event],
    ) -> Result<Vec<ChainedRow>, ErasureError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let postgres = |doing| move |source| ErasureError::Postgres { doing, source };
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(postgres("cannot begin the outbox transaction"))?;
        for event in events {
            outbox::enqueue(&mut tx, event)
                .await
                .map_err(postgres("cannot put an erasure record in the outbox"))?;
        }
        tx.commit()
            .await
            .map_err(postgres("cannot commit the erasure records"))?;
        // Publish now; when Kafka refuses, a running relay (`tollgate
        // process`, `tollgate api`) publishes them later, and the wait below
        // says so.
        match EventProducer::new(&self.kafka) {
            Ok(producer) => {
                if let Err(err) = OutboxRelay::new(self.pool.clone(), producer).drain().await {
                    tracing::warn!(%err, "erasure records not published yet");
                }
            }
            Err(err) => tracing::warn!(%err, "erasure records not published yet"),
        }
        let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        let expected = ids.len() as u64;
        let ch = client(&self.clickhouse);
        let started = Instant::now();
        loop {
            let rows: Vec<ChainedRow> = ch
                .query(CHAINED_SQL)
                .bind(&ids)
                .fetch_all()
                .await
                .map_err(self.failed("cannot look for the erasure entries"))?;
            let mut seen: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
            seen.sort_unstable();
            seen.dedup();
            let chained = seen.len() as u64;
            if chained == expected {
                return Ok(rows);
            }
            if started.elapsed() >= self.wait {
                return Err(ErasureError::NotChained {
                    waited_secs: self.wait.as_secs(),
                    chained,
                    expected,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn wait_for_mutations(&self) -> Result<(), ErasureError> {
        let ch = client(&self.clickhouse);
        let started = Instant::now();
        loop {
            let pending: u64 = ch
                .query(PENDING_MUTATIONS_SQL)
                .bind(&self.clickhouse.database)
                .fetch_one()
                .await
                .map_err(self.failed("cannot read system.mutations"))?;
            if pending == 0 {
                return Ok(());
            }
            if started.elapsed() >= self.wait {
                return Err(ErasureError::MutationsPending {
                    waited_secs: self.wait.as_secs(),
                    pending,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The statements erasure sends, with sample values, for the SQL
/// compatibility check (`tollgate sql-catalog`).
pub fn catalog() -> Vec<(String, String)> {
    let fill = |sql: &str, values: &[&str]| {
        values
            .iter()
            .fold(sql.to_string(), |sql, value| sql.replacen('?', value, 1))
    };
    let person = ["'acme'", "'user-1'"];
    vec![
        (
            "erasure.user_tables".into(),
            fill(USER_TABLES_SQL, &["currentDatabase()", "currentDatabase()"]),
        ),
        ("erasure.count".into(), fill(&count_sql("calls"), &person)),
        (
            "erasure.decision_reasons".into(),
            fill(
                DECISION_REASONS_SQL,
                &[
                    "'acme'",
                    &format!("'{}'", reason_pattern("user-1").replace('\\', "\\\\")),
                ],
            ),
        ),
        ("erasure.audit_rows".into(), fill(AUDIT_ROWS_SQL, &person)),
        (
            "erasure.chained".into(),
            fill(CHAINED_SQL, &["['0190b3c4-0000-7000-8000-000000000000']"]),
        ),
        (
            "erasure.audit".into(),
            fill(
                ERASE_AUDIT_SQL,
                &["'team-a'", "[1, 2]", "'acme'", "'user-1'"],
            ),
        ),
        (
            "erasure.audit_search".into(),
            fill(
                ERASE_AUDIT_SEARCH_SQL,
                &["'team-a'", "[1, 2]", "'acme'", "'user-1'"],
            ),
        ),
        ("erasure.calls".into(), fill(ERASE_CALLS_SQL, &person)),
        (
            "erasure.cost_adjustments".into(),
            fill(ERASE_ADJUSTMENTS_SQL, &person),
        ),
        (
            "erasure.cost_daily_copy".into(),
            fill(COPY_COST_DAILY_SQL, &person),
        ),
        (
            "erasure.cost_daily_delete".into(),
            fill(DELETE_COST_DAILY_SQL, &person),
        ),
        (
            "erasure.cost_daily_by_user_copy".into(),
            fill(COPY_COST_DAILY_BY_USER_SQL, &person),
        ),
        (
            "erasure.cost_daily_by_user_delete".into(),
            fill(DELETE_COST_DAILY_BY_USER_SQL, &person),
        ),
        (
            "erasure.own_templates".into(),
            fill(
                OWN_TEMPLATES_SQL,
                &[person[0], person[1], person[0], person[1]],
            ),
        ),
        (
            "erasure.catalog_delete".into(),
            fill(
                DELETE_CATALOG_TEMPLATES_SQL,
                &["42", "['upstream failed for <*>']"],
            ),
        ),
        (
            "erasure.catalog_count".into(),
            fill(
                COUNT_CATALOG_TEMPLATES_SQL,
                &["42", "['upstream failed for <*>']"],
            ),
        ),
        (
            "erasure.catalog_refold".into(),
            fill(REFOLD_CATALOG_SQL, &["[42]"]),
        ),
        (
            "erasure.pending_mutations".into(),
            fill(PENDING_MUTATIONS_SQL, &["currentDatabase()"]),
        ),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = ErasureRequest {
            org_id: "acme".into(),
            user_id: "u-1".into(),
            reason: "ticket 42".into(),
            actor: "cli".into(),
        };
        assert!(ok.validate().is_ok());
        let bad = |r: ErasureRequest| r.validate().unwrap_err().to_string();
        assert_eq!(
            bad(ErasureRequest {
                user_id: " ".into(),
                ..ok.clone()
            }),
            "invalid user: is required"
        );
        assert_eq!(
            bad(ErasureRequest {
                reason: "x".repeat(1001),
                ..ok.clone()
            }),
            "invalid reason: is longer than 1000 characters"
        );
        assert_eq!(
            bad(ErasureRequest {
                org_id: String::new(),
                ..ok
            }),
            "invalid org: is required"
        );
    }

    #[test]
    fn a_reason_names_the_person_as_without_user_finds_them() {
        let named = |user: &str, reason: &str| {
            regex::Regex::new(&reason_pattern(user))
                .unwrap()
                .is_match(reason)
        };
        // A distinctive id anywhere, as a word.
        assert!(named(
            "trialcomp-person-3",
            "budget_exceeded: Budget exhausted for Jane (trialcomp-person-3)"
        ));
        assert!(named("carol", "daily budget for user carol of org acme"));
        assert!(named("carol", "carol."));
        // Counted though not masked (a plain word): the count says more.
        assert!(named("carol", "budget exhausted (carol)"));
        assert!(!named("carol", "x-carol carol.smith carols"));
        // A short or numeric id only in the proxy's phrase.
        assert!(named("1234", "budget for user 1234 of org acme"));
        assert!(!named("1234", "budget of 1234 USD"));
        assert!(!named("u-1", "retry u-1 later"));
    }

    #[test]
    fn every_placeholder_is_filled_in_the_catalog() {
        for (name, sql) in catalog() {
            assert!(!sql.contains('?'), "{name}: {sql}");
        }
    }
}
