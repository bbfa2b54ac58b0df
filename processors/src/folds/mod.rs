//! Every fold of the event stream, and the one registry of them ([`FOLDS`])
//! that `tollgate process --folds …` and `tollgate sql-catalog` read.
//!
//! Every fold has a folder of the same shape. A fold that runs as a consumer
//! (`calls`, `audit`) has a pure part (`rows.rs`: event and Kafka position
//! to rows, no I/O), a sink (`sink.rs`: a trait over its rows with the
//! ClickHouse implementation and an in-memory fake, owning every write the
//! fold makes), the two joined for the consumer runtime (`fold.rs`, see
//! [`crate::fold`]) and its registry line, start and SQL in `mod.rs`. A fold
//! that ClickHouse runs as a materialized view (`latency`, `cost_rollup`)
//! keeps its SQL in `migrations/clickhouse/`; its folder holds what Rust
//! knows of it: the migrations that define it, a pure Rust model where one
//! exists (`model.rs`), and the statements that read it.
//!
//! Adding a fold: a new folder under `folds/` with that shape, ending in a
//! `pub const FOLD: FoldEntry`, and one line in [`FOLDS`].

pub mod audit;
pub mod calls;
pub mod cost_rollup;
pub mod error_patterns;
pub mod latency;
pub mod view_repair;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tollgate_control::config::{ClickHouseConfig, KafkaConfig, PostgresConfig};

use crate::breakers::config::BreakersConfig;
use crate::config::ProcessorConfig;
use crate::consumer::Counters;
use crate::error::Result;
use crate::metrics::ProcessMetrics;
use audit::AuditConfig;

/// Every fold, in the order `tollgate sql-catalog` lists their statements.
pub const FOLDS: &[FoldEntry] = &[
    calls::FOLD,
    audit::FOLD,
    latency::FOLD,
    cost_rollup::FOLD,
    error_patterns::FOLD,
    crate::breakers::FOLD,
];

/// One line of the registry.
#[derive(Debug, Clone, Copy)]
pub struct FoldEntry {
    /// The name `--folds` takes and log lines use.
    pub name: &'static str,
    pub description: &'static str,
    pub runs: Runs,
    /// The statements the fold sends, named, for the SQL compatibility
    /// check (`tollgate sql-catalog`).
    pub catalog: fn() -> Vec<(String, String)>,
}

/// A running consumer fold: done when shutdown is requested (after its last
/// flush and commit) or when it fails.
pub type Running = Pin<Box<dyn Future<Output = Result<Counters>> + Send>>;

/// Starts a consumer fold.
pub type Start = fn(Arc<FoldContext>) -> Running;

/// How a fold runs.
#[derive(Debug, Clone, Copy)]
pub enum Runs {
    /// A consumer group of its own in `tollgate process`.
    Consumer(Start),
    /// A ClickHouse materialized view over the inserts of the consumer fold
    /// `fed_by`, defined by `migrations` (files of `migrations/clickhouse`).
    View {
        fed_by: &'static str,
        migrations: &'static [&'static str],
    },
}

/// What a consumer fold is started with.
#[derive(Debug, Clone)]
pub struct FoldContext {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub postgres: PostgresConfig,
    pub processor: ProcessorConfig,
    pub audit: AuditConfig,
    pub breakers: BreakersConfig,
    /// What `/metrics` reports about the folds (`crate::metrics`).
    pub metrics: Arc<ProcessMetrics>,
    /// Cancelled to stop every fold (each cancels it when it fails).
    pub shutdown: CancellationToken,
}

/// A `--folds` list that names something other than a consumer fold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FoldChoiceError {
    #[error("unknown fold {name:?} in --folds (known: {known})")]
    Unknown { name: String, known: String },
    #[error("fold {name:?} in --folds is a clickhouse view fed by the {fed_by} fold; it runs whenever {fed_by} does (consumer folds: {known})")]
    View {
        name: String,
        fed_by: &'static str,
        known: String,
    },
    #[error("--folds names no fold (consumer folds: {known})")]
    Empty { known: String },
}

/// The registry line named `name`.
pub fn entry(name: &str) -> Option<&'static FoldEntry> {
    FOLDS.iter().find(|f| f.name == name)
}

/// The consumer folds, comma-separated (for messages and `--folds`'s
/// default).
pub fn consumer_names() -> String {
    FOLDS
        .iter()
        .filter(|f| matches!(f.runs, Runs::Consumer(_)))
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The consumer folds `names` choose, each once, in registry order, with
/// their start functions.
pub fn choose(
    names: &[String],
) -> std::result::Result<Vec<(&'static FoldEntry, Start)>, FoldChoiceError> {
    let mut chosen = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        let Some(fold) = entry(name) else {
            return Err(FoldChoiceError::Unknown {
                name: name.to_string(),
                known: consumer_names(),
            });
        };
        match fold.runs {
            Runs::Consumer(_) => chosen.push(fold.name),
            Runs::View { fed_by, .. } => {
                return Err(FoldChoiceError::View {
                    name: name.to_string(),
                    fed_by,
                    known: consumer_names(),
                })
            }
        }
    }
    let picked: Vec<_> = FOLDS
        .iter()
        .filter_map(|f| match f.runs {
            Runs::Consumer(start) if chosen.contains(&f.name) => Some((f, start)),
            _ => None,
        })
        .collect();
    if picked.is_empty() {
        return Err(FoldChoiceError::Empty {
            known: consumer_names(),
        });
    }
    Ok(picked)
}

/// Every fold's statements, in registry order.
pub fn catalog() -> Vec<(String, String)> {
    FOLDS.iter().flat_map(|f| (f.catalog)()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn chosen(list: &[&str]) -> Vec<&'static str> {
        choose(&names(list))
            .unwrap()
            .into_iter()
            .map(|(f, _)| f.name)
            .collect()
    }

    #[test]
    fn the_consumer_folds_are_calls_audit_and_breakers() {
        assert_eq!(consumer_names(), "calls, audit, breakers");
        assert_eq!(chosen(&["calls", "audit"]), ["calls", "audit"]);
        assert_eq!(chosen(&["audit", " calls", "audit"]), ["calls", "audit"]);
        assert_eq!(chosen(&["audit"]), ["audit"]);
    }

    #[test]
    fn unknown_and_view_folds_are_refused_naming_the_known_ones() {
        let err = choose(&names(&["calls", "costs"])).err().unwrap();
        assert_eq!(
            err.to_string(),
            "unknown fold \"costs\" in --folds (known: calls, audit, breakers)"
        );
        let err = choose(&names(&["latency"])).err().unwrap().to_string();
        assert!(err.contains("view fed by the calls fold"), "{err}");
        assert!(choose(&names(&[])).is_err());
    }

    #[test]
    fn names_are_unique_and_views_are_fed_by_a_consumer_from_known_migrations() {
        let mut seen = HashSet::new();
        let files: Vec<String> = crate::migrations::clickhouse_statements()
            .into_iter()
            .filter_map(|(name, _)| name.split_once('#').map(|(file, _)| file.to_string()))
            .collect();
        for fold in FOLDS {
            assert!(seen.insert(fold.name), "{} twice", fold.name);
            if let Runs::View { fed_by, migrations } = fold.runs {
                assert!(
                    matches!(entry(fed_by).unwrap().runs, Runs::Consumer(_)),
                    "{} is fed by {fed_by}",
                    fold.name
                );
                assert!(!migrations.is_empty());
                for file in migrations {
                    assert!(files.iter().any(|f| f == file), "{file} is not a migration");
                }
            }
        }
    }

    #[test]
    fn statement_names_are_unique_and_prefixed() {
        let statements = catalog();
        let mut seen = HashSet::new();
        for (name, sql) in &statements {
            assert!(seen.insert(name.clone()), "{name} twice");
            assert!(!sql.trim().is_empty(), "{name} is empty");
        }
        for prefix in [
            "processor.",
            "progress.",
            "audit.",
            "cost_rollup.",
            "error_patterns.",
            "patterns.",
            "recovery.",
        ] {
            assert!(
                statements.iter().any(|(n, _)| n.starts_with(prefix)),
                "no {prefix} statement"
            );
        }
    }
}
