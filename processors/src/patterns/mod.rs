//! The pattern learner: keeps every replica's learned merges of signatures
//! in `error_pattern_merges` and announces each pattern seen for the first
//! time as an `admin.error_pattern.new` event. It runs with the calls fold
//! (started beside it, like the budget watcher: it reads what that fold's
//! views write and needs no Kafka consumer of its own), every
//! `processor.patterns.every_ms`:
//!
//! 1. read the pattern catalog ([`CATALOG_SQL`]): the distinct signatures
//!    with their class and template;
//! 2. learn the signatures the tree does not know yet into its `DrainTree`,
//!    in ascending signature order, and insert the merges it proposes that
//!    `error_pattern_merges` does not hold yet;
//! 3. for signatures not yet in `error_pattern_announced`: claim them there,
//!    and announce those whose claim won (the smallest event id); not with
//!    `processor.patterns.announce = false`.
//!
//! The pure parts ([`signatures`], [`unstored`], [`announcement`],
//! [`winners`]) are unit tested; `docs/error-patterns.md` says what
//! replicas can and cannot race on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tollgate_contract::admin::{admin_event, KIND_ERROR_PATTERN_NEW};
use tollgate_contract::signature::{DrainTree, Merge, Signature, SignatureId};
use tollgate_contract::Event;
use tollgate_control::kafka::EventProducer;
use tracing::{info, warn};

use crate::clickhouse::{insert_rows, within};
use crate::config::PatternsConfig;
use crate::error::{Error, Result};
use crate::folds::error_patterns::CATALOG_SQL;
use crate::folds::FoldContext;

/// The actor of the announcements.
pub const ACTOR: &str = "tollgate-processor";

/// Every (from, into) pair stored.
pub const MERGES_SQL: &str = "SELECT from_signature, into_signature \
     FROM error_pattern_merges GROUP BY from_signature, into_signature";

/// Every signature announced (or claimed).
pub const ANNOUNCED_SQL: &str = "SELECT signature FROM error_pattern_announced GROUP BY signature";

/// The winning claim of each signature among `?` (an array of ids): the
/// smallest event id.
pub const WINNERS_SQL: &str = "SELECT signature, min(event_id) AS winner \
     FROM error_pattern_announced WHERE has(?, signature) GROUP BY signature";

/// The event id of each signature's first failed call among `?` (an array
/// of ids) since `?` (epoch seconds: the earliest first-seen, to prune
/// partitions). An announcement names the call, never copies its message:
/// the message is the caller's data, which the call's own org reads and
/// erasure empties (docs/audit.md, "Erasure"), while the announcement is
/// chained for good in the control plane's chain.
pub const SAMPLES_SQL: &str = "SELECT error_signature, argMin(event_id, occurred_at_ms) AS sample \
     FROM calls WHERE kind = 'ai.call.failed' AND has(?, error_signature) AND occurred_at >= toDateTime(?) \
     GROUP BY error_signature";

/// One row of [`CATALOG_SQL`].
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct CatalogRow {
    pub signature: u64,
    pub provider: String,
    pub http_status: u16,
    pub error_type: String,
    pub template: String,
    pub first_at: u32,
    pub last_at: u32,
}

/// One signature of the catalog, its spellings joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub signature: Signature,
    pub first_seen: u32,
    pub last_seen: u32,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct MergeRow {
    from_signature: u64,
    into_signature: u64,
    template: String,
    learned_at: u32,
}

#[derive(Debug, Row, Deserialize)]
struct MergeKey {
    from_signature: u64,
    into_signature: u64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct ClaimRow {
    signature: u64,
    announced_at: u32,
    event_id: String,
}

#[derive(Debug, Row, Deserialize)]
struct WinnerRow {
    signature: u64,
    winner: String,
}

#[derive(Debug, Row, Deserialize)]
struct SampleRow {
    error_signature: u64,
    sample: String,
}

/// The catalog's rows as one pattern per signature, in ascending signature
/// order. A signature can have several rows (the catalog keeps the
/// provider and error type as the events spelled them); its class is the
/// normalised one the id was computed from (lower-case provider, trimmed
/// error type), the same for every spelling, and its first and last seen
/// span all of them.
pub fn signatures(rows: &[CatalogRow]) -> Vec<Pattern> {
    let mut out: BTreeMap<u64, Pattern> = BTreeMap::new();
    for row in rows {
        let entry = out.entry(row.signature).or_insert_with(|| Pattern {
            signature: Signature {
                id: SignatureId(row.signature),
                provider: row.provider.trim().to_ascii_lowercase(),
                http_status: row.http_status,
                error_type: row.error_type.trim().to_string(),
                template: row.template.clone(),
                variables: Vec::new(),
            },
            first_seen: row.first_at,
            last_seen: row.last_at,
        });
        entry.first_seen = entry.first_seen.min(row.first_at);
        entry.last_seen = entry.last_seen.max(row.last_at);
    }
    out.into_values().collect()
}

/// The merges of `proposed` whose (from, into) is not in `stored`, each
/// once, in order.
pub fn unstored(proposed: &BTreeSet<Merge>, stored: &HashSet<(u64, u64)>) -> Vec<Merge> {
    let mut seen = HashSet::new();
    proposed
        .iter()
        .filter(|m| !stored.contains(&(m.from.0, m.into.0)) && seen.insert((m.from, m.into)))
        .cloned()
        .collect()
}

/// The `admin.error_pattern.new` event of `pattern`, with `sample` (the
/// event id of the pattern's first failed call) when one was found.
pub fn announcement(pattern: &Pattern, sample: Option<&str>) -> Event {
    let s = &pattern.signature;
    let first_seen =
        DateTime::<Utc>::from_timestamp(i64::from(pattern.first_seen), 0).unwrap_or_default();
    admin_event(
        KIND_ERROR_PATTERN_NEW,
        ACTOR,
        json!({
            "signature": s.id.to_string(),
            "provider": s.provider,
            "http_status": s.http_status,
            "error_type": s.error_type,
            "template": s.template,
            "first_seen": first_seen,
            "sample_event_id": sample.unwrap_or_default(),
        }),
    )
}

/// Of `claims` (signature, our event), those whose event id is the winner
/// the table holds for its signature.
pub fn winners(claims: Vec<(u64, Event)>, stored: &BTreeMap<u64, String>) -> Vec<Event> {
    claims
        .into_iter()
        .filter(|(sig, event)| stored.get(sig) == Some(&event.event_id.to_string()))
        .map(|(_, event)| event)
        .collect()
}

/// The learner of one processor.
pub struct PatternLearner {
    client: Client,
    /// `clickhouse.insert_timeout_secs` of its inserts.
    insert_timeout: Option<Duration>,
    /// `clickhouse.query_timeout_secs` of its reads.
    query_timeout: Option<Duration>,
    events: EventProducer,
    every: Duration,
    announce: bool,
    tree: DrainTree,
    /// Merges proposed and not stored yet (the tree proposes each once).
    pending: BTreeSet<Merge>,
    /// Signatures known to be announced or claimed, by anyone.
    announced: HashSet<u64>,
    /// Announcements won and not yet acknowledged by Kafka.
    unsent: Vec<Event>,
}

impl PatternLearner {
    /// A learner writing through `client`, each insert waiting at most
    /// `insert_timeout` (`clickhouse.insert_timeout_secs`), each read
    /// `query_timeout` (`clickhouse.query_timeout_secs`).
    pub fn new(
        client: Client,
        insert_timeout: Option<Duration>,
        query_timeout: Option<Duration>,
        events: EventProducer,
        config: &PatternsConfig,
    ) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let tree = DrainTree::new(config.drain).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            client,
            insert_timeout,
            query_timeout,
            events,
            every: Duration::from_millis(config.every_ms),
            announce: config.announce,
            tree,
            pending: BTreeSet::new(),
            announced: HashSet::new(),
            unsent: Vec::new(),
        })
    }

    /// Start the learner of `context` in the background, until shutdown.
    pub fn start(context: &FoldContext) -> Result<()> {
        let events = EventProducer::new(&context.kafka)
            .map_err(|e| Error::setup("cannot create the pattern announcement producer", e))?;
        let learner = Self::new(
            tollgate_control::clickhouse::client(&context.clickhouse),
            context.clickhouse.insert_timeout(),
            context.clickhouse.query_timeout(),
            events,
            &context.processor.patterns,
        )?;
        tokio::spawn(learner.run(context.shutdown.clone()));
        Ok(())
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.tick().await {
                warn!(%err, "pattern learner pass failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// One pass: learn, store merges, announce.
    pub async fn tick(&mut self) -> std::result::Result<(), String> {
        let rows: Vec<CatalogRow> = within(
            self.query_timeout,
            self.client.query(CATALOG_SQL).fetch_all(),
        )
        .await
        .map_err(|e| format!("clickhouse: reading the pattern catalog: {e}"))?;
        let patterns = signatures(&rows);
        for p in &patterns {
            if let Some(merge) = self.tree.learn(&p.signature) {
                self.pending.insert(merge);
            }
        }
        self.store_merges().await?;
        if !self.announce {
            return Ok(());
        }
        self.announce_new(&patterns).await
    }

    async fn store_merges(&mut self) -> std::result::Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let stored: HashSet<(u64, u64)> = within(
            self.query_timeout,
            self.client.query(MERGES_SQL).fetch_all::<MergeKey>(),
        )
        .await
        .map_err(|e| format!("clickhouse: reading error_pattern_merges: {e}"))?
        .into_iter()
        .map(|k| (k.from_signature, k.into_signature))
        .collect();
        let now = now_secs();
        let rows: Vec<MergeRow> = unstored(&self.pending, &stored)
            .into_iter()
            .map(|m| MergeRow {
                from_signature: m.from.0,
                into_signature: m.into.0,
                template: m.template,
                learned_at: now,
            })
            .collect();
        if !rows.is_empty() {
            insert_rows(
                &self.client,
                "error_pattern_merges",
                &rows,
                self.insert_timeout,
            )
            .await
            .map_err(|e| format!("clickhouse: storing learned merges: {e}"))?;
            for r in &rows {
                info!(from = %SignatureId(r.from_signature), into = %SignatureId(r.into_signature), template = %r.template, "signatures merged");
            }
        }
        self.pending.clear();
        Ok(())
    }

    async fn announce_new(&mut self, patterns: &[Pattern]) -> std::result::Result<(), String> {
        self.send_unsent().await?;
        if patterns
            .iter()
            .all(|p| self.announced.contains(&p.signature.id.0))
        {
            return Ok(());
        }
        let stored: Vec<u64> = within(
            self.query_timeout,
            self.client.query(ANNOUNCED_SQL).fetch_all(),
        )
        .await
        .map_err(|e| format!("clickhouse: reading error_pattern_announced: {e}"))?;
        self.announced.extend(stored);
        let fresh: Vec<&Pattern> = patterns
            .iter()
            .filter(|p| !self.announced.contains(&p.signature.id.0))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = fresh.iter().map(|p| p.signature.id.0).collect();
        let since = fresh.iter().map(|p| p.first_seen).min().unwrap_or(0);
        let samples: BTreeMap<u64, String> = within(
            self.query_timeout,
            self.client
                .query(SAMPLES_SQL)
                .bind(&ids)
                .bind(since)
                .fetch_all::<SampleRow>(),
        )
        .await
        .map_err(|e| format!("clickhouse: reading the first failed calls of new patterns: {e}"))?
        .into_iter()
        .map(|r| (r.error_signature, r.sample))
        .collect();
        let claims: Vec<(u64, Event)> = fresh
            .iter()
            .map(|p| {
                let id = p.signature.id.0;
                (id, announcement(p, samples.get(&id).map(String::as_str)))
            })
            .collect();
        let now = now_secs();
        let rows: Vec<ClaimRow> = claims
            .iter()
            .map(|(sig, event)| ClaimRow {
                signature: *sig,
                announced_at: now,
                event_id: event.event_id.to_string(),
            })
            .collect();
        insert_rows(
            &self.client,
            "error_pattern_announced",
            &rows,
            self.insert_timeout,
        )
        .await
        .map_err(|e| format!("clickhouse: claiming announcements: {e}"))?;
        self.announced.extend(ids.iter().copied());
        let stored: BTreeMap<u64, String> = within(
            self.query_timeout,
            self.client
                .query(WINNERS_SQL)
                .bind(&ids)
                .fetch_all::<WinnerRow>(),
        )
        .await
        .map_err(|e| format!("clickhouse: reading announcement claims: {e}"))?
        .into_iter()
        .map(|r| (r.signature, r.winner))
        .collect();
        self.unsent.extend(winners(claims, &stored));
        self.send_unsent().await
    }

    /// Produce the announcements won; what Kafka does not acknowledge is
    /// tried again on the next pass.
    async fn send_unsent(&mut self) -> std::result::Result<(), String> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.unsent);
        let results = self.events.send_batch(&events).await;
        let mut failed = None;
        for (event, result) in events.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    let admin = event.admin.as_ref();
                    let field = |k: &str| {
                        admin
                            .and_then(|a| a.get(k))
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    info!(signature = %field("signature"), template = %field("template"), "new error pattern announced");
                }
                Err(err) => {
                    failed = Some(err.reason.clone());
                    self.unsent.push(event);
                }
            }
        }
        match failed {
            Some(reason) => Err(format!("kafka: announcement not published: {reason}")),
            None => Ok(()),
        }
    }
}

fn now_secs() -> u32 {
    u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX)
}

/// The statements, with sample values, for the SQL compatibility check.
/// The inserts are RowBinary inserts of the same columns.
pub fn catalog() -> Vec<(String, String)> {
    let ids: Vec<u64> = vec![1, u64::MAX];
    vec![
        ("patterns.merges".into(), MERGES_SQL.into()),
        (
            "patterns.store_merges".into(),
            "INSERT INTO error_pattern_merges (from_signature, into_signature, template, learned_at) \
             VALUES (18446744073709551615, 1, 'The model <*> does not exist', now())"
                .into(),
        ),
        ("patterns.announced".into(), ANNOUNCED_SQL.into()),
        (
            "patterns.claim".into(),
            "INSERT INTO error_pattern_announced (signature, announced_at, event_id) \
             VALUES (1, now(), '0193a5c4-0000-7000-8000-000000000000')"
                .into(),
        ),
        (
            "patterns.winners".into(),
            Client::default()
                .query(WINNERS_SQL)
                .bind(&ids)
                .sql_display()
                .to_string(),
        ),
        (
            "patterns.samples".into(),
            Client::default()
                .query(SAMPLES_SQL)
                .bind(&ids)
                .bind(1_764_633_600u32)
                .sql_display()
                .to_string(),
        ),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_contract::signature::{signature, DrainConfig, ErrorInput};
    use tollgate_contract::validate::{parse_event, Limits};

    use super::*;

    fn row(message: &str, provider: &str, first: u32, last: u32) -> CatalogRow {
        let s = signature(&ErrorInput {
            provider,
            http_status: 404,
            error_type: " invalid_request_error",
            message,
        });
        CatalogRow {
            signature: s.id.0,
            provider: provider.into(),
            http_status: 404,
            error_type: " invalid_request_error".into(),
            template: s.template,
            first_at: first,
            last_at: last,
        }
    }

    #[test]
    fn spellings_of_one_signature_are_one_pattern_with_its_normalised_class() {
        let a = row("The model davinci does not exist", "OpenAI", 20, 30);
        let b = row("The model davinci does not exist", "openai ", 10, 25);
        assert_eq!(a.signature, b.signature);
        let c = row("The model babbage does not exist", "openai", 5, 5);
        let patterns = signatures(&[a.clone(), c.clone(), b]);
        assert_eq!(patterns.len(), 2);
        assert!(patterns[0].signature.id < patterns[1].signature.id);
        let p = patterns
            .iter()
            .find(|p| p.signature.id.0 == a.signature)
            .unwrap();
        assert_eq!((p.first_seen, p.last_seen), (10, 30));
        assert_eq!(p.signature.provider, "openai");
        assert_eq!(p.signature.error_type, "invalid_request_error");
        // The class is the one the id was computed from.
        assert_eq!(
            tollgate_contract::signature::signature_id(
                &p.signature.provider,
                p.signature.http_status,
                &p.signature.error_type,
                &p.signature.template
            ),
            p.signature.id
        );
        // Learned in that order, the two models merge into the smaller id.
        let mut tree = DrainTree::new(DrainConfig::default()).unwrap();
        let merges: Vec<Merge> = patterns
            .iter()
            .filter_map(|p| tree.learn(&p.signature))
            .collect();
        assert_eq!(merges.len(), 1);
        assert_eq!(merges[0].into.0, a.signature.min(c.signature));
        assert_eq!(merges[0].template, "The model <*> does not exist");
    }

    #[test]
    fn only_merges_the_table_lacks_are_stored() {
        let m = |from, into| Merge {
            from: SignatureId(from),
            into: SignatureId(into),
            template: "t".into(),
        };
        let proposed: BTreeSet<Merge> = [m(5, 1), m(9, 1), m(9, 5)].into_iter().collect();
        let stored: HashSet<(u64, u64)> = [(9, 1)].into_iter().collect();
        assert_eq!(unstored(&proposed, &stored), vec![m(5, 1), m(9, 5)]);
    }

    #[test]
    fn an_announcement_is_a_valid_admin_event_with_the_pattern() {
        let pattern = signatures(&[row(
            "The model davinci does not exist",
            "OpenAI",
            1_764_633_600,
            1_764_633_660,
        )])
        .pop()
        .unwrap();
        let event = announcement(&pattern, Some("0190b3c4-0000-7000-8000-000000000001"));
        assert_eq!(event.kind, KIND_ERROR_PATTERN_NEW);
        let value = serde_json::to_value(&event).unwrap();
        let parsed = parse_event(value, Utc::now(), &Limits::default()).unwrap();
        let admin = parsed.admin.unwrap();
        assert_eq!(admin["actor"], ACTOR);
        assert_eq!(admin["signature"], pattern.signature.id.to_string());
        assert_eq!(admin["signature"].as_str().unwrap().len(), 16);
        assert_eq!(admin["provider"], "openai");
        assert_eq!(admin["http_status"], 404);
        assert_eq!(admin["error_type"], "invalid_request_error");
        assert_eq!(admin["template"], pattern.signature.template.as_str());
        assert_eq!(admin["first_seen"], "2025-12-02T00:00:00Z");
        assert_eq!(
            admin["sample_event_id"],
            "0190b3c4-0000-7000-8000-000000000001"
        );
        assert!(admin.get("sample_message").is_none(), "{admin}");
    }

    #[test]
    fn only_claims_that_won_are_announced() {
        let pattern = signatures(&[row("x", "openai", 1, 1)]).pop().unwrap();
        let ours = announcement(&pattern, None);
        let theirs = announcement(&pattern, None);
        let sig = pattern.signature.id.0;
        let won: BTreeMap<u64, String> = [(sig, ours.event_id.to_string())].into_iter().collect();
        assert_eq!(winners(vec![(sig, ours.clone())], &won).len(), 1);
        let lost: BTreeMap<u64, String> =
            [(sig, theirs.event_id.to_string())].into_iter().collect();
        assert!(winners(vec![(sig, ours)], &lost).is_empty());
    }
}
