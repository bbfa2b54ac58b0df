//! Tollgate's read side: the queries the report API and the dashboards run
//! against ClickHouse's facts and rollups, and reading the audit chain
//! ([`audit`]: verification, search, proofs, export, access rules). This
//! crate owns the ClickHouse client used for reading, the error type of
//! every read, and the catalog of every SQL statement the read side sends
//! (`sql_catalog`), so the statements can be checked against current
//! ClickHouse (chDB) as well as the 18.16 dev server.
//!
//! Each report lives in its own module that keeps its SQL text, its
//! parameter validation and its row-to-report assembly together; a report
//! with a CSV also builds its [`Table`] there, which the CSV and the pages
//! are both rendered from.

pub mod alert_lists;
pub mod alert_signals;
pub mod alert_timeline;
pub mod audit;
pub mod breakers;
pub mod budgets;
pub mod burndown;
pub mod cost;
pub mod errors;
pub mod home;
pub mod home_tables;
pub mod latency;
mod latency_histogram;
mod latency_source;
pub mod overview;
pub mod params;
pub mod reprice_preview;
#[cfg(any(test, feature = "samples"))]
pub mod samples;
pub mod slow_calls;
pub mod statement;
pub mod table;

use clickhouse::Client;

use tollgate_control::config::ClickHouseConfig;

pub use table::Table;

pub use latency::{
    Dimension, GroupKey, LatencyFilters, LatencyGroup, LatencyParams, LatencyQuery, LatencyReport,
    PercentileMethod, Percentiles, SeriesPoint, Stats, EXACT_MAX_CALLS,
    HISTOGRAM_MAX_RELATIVE_ERROR,
};
pub use params::{InvalidParameter, QueryParams};

/// A ClickHouse client for reads (validation off: see
/// `tollgate_control::clickhouse`), bound to the database the reports read:
/// with `clickhouse.cluster` set, the `Distributed` tables
/// (`tollgate_control::clickhouse::read_client`).
/// Row structs must list their fields in the order of the SELECT, which each
/// query module guarantees by keeping the struct next to its SQL.
pub fn client(config: &ClickHouseConfig) -> Client {
    tollgate_control::clickhouse::read_client(config)
}

/// Why a read failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// ClickHouse could not be reached (network, timeout, refused). External;
    /// retrying later can help.
    #[error("clickhouse at {url} is unreachable: {source}")]
    Unavailable {
        url: String,
        #[source]
        source: clickhouse::error::Error,
    },
    /// The database exists but the schema is missing. Operator's fault.
    #[error("clickhouse database `{database}` at {url} is not migrated ({detail}); run `tollgate migrate`")]
    NotMigrated {
        url: String,
        database: String,
        detail: String,
    },
    /// ClickHouse answered with an error or with rows we cannot read.
    /// Internal; retrying does not help.
    #[error("clickhouse query `{query}` failed: {source}")]
    Query {
        query: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    /// ClickHouse returned a row that does not fit the report (for example a
    /// quantile array of the wrong length). Internal.
    #[error("clickhouse query `{query}` returned an unexpected row: {detail}")]
    UnexpectedRow { query: &'static str, detail: String },
    /// ClickHouse stopped the read at one of the limits every read carries
    /// ([`ReadLimit`]): the request asks for more than this deployment
    /// reads at once. The same request fails again; a narrower one may not.
    #[error("clickhouse query `{query}` {limit}, and ClickHouse stopped it: narrow the time window, the filters or the grouping")]
    OverLimit {
        query: &'static str,
        limit: ReadLimit,
    },
}

/// The limits ClickHouse enforces on every read of the read models (sent
/// as settings with each statement), so that one large report cannot take
/// the memory or the time the inserts need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    /// `max_memory_usage`, from `clickhouse.read_max_memory_bytes`.
    Memory { bytes: u64 },
    /// `max_execution_time`: [`SERVER_QUERY_TIMEOUT`].
    Time { secs: u64 },
}

impl std::fmt::Display for ReadLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory { bytes: 0 } => {
                write!(
                    f,
                    "needed more memory than the ClickHouse server allows a query"
                )
            }
            Self::Memory { bytes } => write!(
                f,
                "needed more memory than clickhouse.read_max_memory_bytes allows ({bytes} bytes)"
            ),
            Self::Time { secs } => write!(f, "ran longer than a read may ({secs} s)"),
        }
    }
}

impl ReadModelError {
    /// Whether the same read may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The HTTP status a page or an API answer gives this failure: 503
    /// when ClickHouse is away or not migrated (try again later), 422 for
    /// a read over the memory limit and 504 for one over the time limit
    /// (ask for less), 500 for a fault of ours.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unavailable { .. } | Self::NotMigrated { .. } => 503,
            Self::OverLimit {
                limit: ReadLimit::Memory { .. },
                ..
            } => 422,
            Self::OverLimit {
                limit: ReadLimit::Time { .. },
                ..
            } => 504,
            Self::Query { .. } | Self::UnexpectedRow { .. } => 500,
        }
    }
}

/// The read side of ClickHouse: one cheap-to-clone handle shared by the API
/// and the dashboards.
#[derive(Clone)]
pub struct ReadModels {
    client: Client,
    url: String,
    database: String,
    /// `[clickhouse] latency_sort_max_calls` (`latency_source`).
    latency_sort_max_calls: u64,
    /// `[clickhouse] latency_count_min_calls` (`latency_source`).
    latency_count_min_calls: u64,
    /// `[clickhouse] read_max_memory_bytes` (0: the server's own).
    max_memory_bytes: u64,
}

impl ReadModels {
    pub fn new(config: &ClickHouseConfig) -> Self {
        // Every read carries its limits, so ClickHouse stops one that
        // would take more (a read abandoned by [`QUERY_TIMEOUT`] would
        // otherwise run on in the server).
        let mut read_client = client(config).with_setting(
            "max_execution_time",
            SERVER_QUERY_TIMEOUT.as_secs().to_string(),
        );
        if config.read_max_memory_bytes > 0 {
            read_client = read_client
                .with_setting("max_memory_usage", config.read_max_memory_bytes.to_string());
        }
        Self {
            client: read_client,
            max_memory_bytes: config.read_max_memory_bytes,
            url: config.url.clone(),
            database: tollgate_control::clickhouse::read_database(config),
            latency_sort_max_calls: config.latency_sort_max_calls,
            latency_count_min_calls: config.latency_count_min_calls,
        }
    }

    /// The most calls a latency read sorts itself for exact percentiles
    /// (0: always the rollups).
    pub(crate) fn latency_sort_max_calls(&self) -> u64 {
        self.latency_sort_max_calls
    }

    /// From how many calls a window's totals read from the calls are
    /// counted per value rather than sorted.
    pub(crate) fn latency_count_min_calls(&self) -> u64 {
        self.latency_count_min_calls
    }

    /// Check that ClickHouse answers and that the tables the reports read
    /// exist; the error says which of the two is wrong.
    pub async fn check(&self) -> Result<(), ReadModelError> {
        // Not under `read_max_memory_bytes` (0: no limit of its own): a
        // limit too low for the reports must not keep the API from
        // starting, where its answers say which setting to raise.
        let client = self.client.clone().with_setting("max_memory_usage", "0");
        for table in REQUIRED_TABLES {
            let query = client
                .query(CHECK_TABLE_SQL)
                .bind(&self.database)
                .bind(table)
                .fetch_one::<u8>();
            let exists = self
                .bounded(query)
                .await
                .map_err(|source| self.classify("check", source))?;
            if exists == 0 {
                return Err(ReadModelError::NotMigrated {
                    url: self.url.clone(),
                    database: self.database.clone(),
                    detail: format!("no table `{table}`"),
                });
            }
        }
        Ok(())
    }

    /// The latency report (`latency_minute_calls` rollup).
    pub async fn latency(&self, query: &LatencyQuery) -> Result<LatencyReport, ReadModelError> {
        latency::run(self, query).await
    }

    /// The errors report: failure patterns of the window.
    pub async fn errors(
        &self,
        query: &errors::ErrorsQuery,
    ) -> Result<errors::ErrorsReport, ReadModelError> {
        errors::run(self, query).await
    }

    /// One pattern's drill-down (the pattern `signature` belongs to after
    /// learned merges); `None` when it was never recorded.
    pub async fn error_pattern(
        &self,
        query: &errors::ErrorsQuery,
        signature: tollgate_contract::signature::SignatureId,
    ) -> Result<Option<errors::PatternReport>, ReadModelError> {
        errors::run_pattern(self, query, signature).await
    }

    /// The breakers report: states at the end of the window, transitions.
    pub async fn breakers(
        &self,
        query: &breakers::BreakersQuery,
    ) -> Result<breakers::BreakersReport, ReadModelError> {
        breakers::run(self, query).await
    }

    /// The cost report (the cost rollup its dimensions need).
    pub async fn cost(&self, query: &cost::CostQuery) -> Result<cost::CostReport, ReadModelError> {
        cost::run(self, query).await
    }

    /// The repricing corrections of `team`'s month `YYYY-MM` per provider,
    /// model and price version (what a statement shows next to each line),
    /// of `org` when given.
    pub async fn statement_repricing(
        &self,
        team: &str,
        org: Option<&str>,
        month: &str,
    ) -> Result<Vec<statement::RepricingRow>, ReadModelError> {
        let (first, next) = statement_month(month, "statement.repricing")?;
        statement::repricing(self, team, org, first, next).await
    }

    /// The calls of `team`'s month `YYYY-MM` stored after it ended (of
    /// `org` when given): what changed its statement since it closed.
    pub async fn statement_late(
        &self,
        team: &str,
        org: Option<&str>,
        month: &str,
    ) -> Result<Option<statement::LateCalls>, ReadModelError> {
        let (first, next) = statement_month(month, "statement.late")?;
        statement::late(self, team, org, first, next).await
    }

    /// The orgs with calls of `team` in the month `YYYY-MM` (at most 11),
    /// for [`statement::one_org`].
    pub async fn statement_orgs(
        &self,
        team: &str,
        month: &str,
    ) -> Result<Vec<String>, ReadModelError> {
        let (first, next) = statement_month(month, "statement.orgs")?;
        statement::orgs(self, team, first, next).await
    }

    /// The cost overview of `query`'s period and filters (top spenders,
    /// cache savings, month-end forecast); `catalog` prices the savings
    /// (`None`: unknown), `today` decides the running month.
    pub async fn cost_overview(
        &self,
        query: &cost::CostQuery,
        catalog: Option<&tollgate_contract::catalog::PriceCatalog>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<overview::CostOverview, ReadModelError> {
        overview::run(self, query, catalog, now).await
    }

    /// The overview of `query` (`home`): spend, health, alerts, budgets
    /// near their limit and the newest error patterns; `stored` holds what
    /// PostgreSQL keeps (budgets, alert states), read by the caller.
    pub async fn home(
        &self,
        query: &home::HomeQuery,
        stored: home::Stored<'_>,
    ) -> Result<home::Home, ReadModelError> {
        home::run(self, query, stored).await
    }

    /// The running-period status of `budgets` (spend from the cost rollups).
    pub async fn budget_status(
        &self,
        budgets: &[tollgate_control::budgets::Budget],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<tollgate_control::budgets::BudgetStatus>, ReadModelError> {
        use std::collections::HashMap;
        // The burn-down's clock (whole minutes): the page and its CSV asked
        // for in the same minute show the same forecast.
        let now = burndown::clock(now);
        let mut spends = HashMap::new();
        let mut out = Vec::with_capacity(budgets.len());
        for b in budgets {
            let key = (b.subject_kind, b.period);
            if let std::collections::hash_map::Entry::Vacant(slot) = spends.entry(key) {
                let s = self
                    .bounded(tollgate_control::budgets::spend(
                        &self.client,
                        b.subject_kind,
                        b.period.window(now),
                    ))
                    .await
                    .map_err(|e| self.classify("budgets.spend", e))?;
                slot.insert(s);
            }
            let spent = spends
                .get(&key)
                .map(|s: &tollgate_control::budgets::Spend| s.of(b))
                .unwrap_or_default();
            out.push(tollgate_control::budgets::status_of(b, spent, now));
        }
        Ok(out)
    }

    /// The burn-down of `budget`'s running period at `now` (pass
    /// [`burndown::clock`] of the current time).
    pub async fn budget_burndown(
        &self,
        budget: &tollgate_control::budgets::Budget,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<burndown::Burndown, ReadModelError> {
        burndown::run(self, budget, now).await
    }

    /// Run one ClickHouse request with [`QUERY_TIMEOUT`]: a server that
    /// accepts connections but never answers must not hold a page forever.
    pub(crate) async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> clickhouse::error::Result<T> {
        tollgate_control::clickhouse::within(Some(QUERY_TIMEOUT), request).await
    }

    /// The slowest terminal attempts of a latency window, with their trace
    /// and span ids ([`slow_calls`]).
    pub async fn slowest_calls(
        &self,
        query: &LatencyQuery,
    ) -> Result<Vec<slow_calls::SlowCall>, ReadModelError> {
        slow_calls::run(self, query).await
    }

    /// Provider/model pairs that have calls in `[from, to)`, of `org`'s
    /// calls when given, for filter menus.
    pub async fn latency_dimensions(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        org: Option<&str>,
    ) -> Result<Vec<(String, String)>, ReadModelError> {
        latency::dimensions(self, from, to, org).await
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Network-level failures mean ClickHouse is unreachable; everything else
    /// is a failed query.
    pub(crate) fn classify(
        &self,
        query: &'static str,
        source: clickhouse::error::Error,
    ) -> ReadModelError {
        use clickhouse::error::Error;
        match source {
            Error::Network(_) | Error::TimedOut => ReadModelError::Unavailable {
                url: self.url.clone(),
                source,
            },
            // A missing database is reported by the server as an error, but it
            // is a setup problem, not a bug in the query.
            Error::BadResponse(ref message)
                if message.contains("UNKNOWN_DATABASE") || message.contains("Code: 81") =>
            {
                ReadModelError::NotMigrated {
                    url: self.url.clone(),
                    database: self.database.clone(),
                    detail: "the database does not exist".into(),
                }
            }
            // Error codes of 18.16 and current ClickHouse alike.
            Error::BadResponse(ref message) if server_code(message) == Some(241) => {
                ReadModelError::OverLimit {
                    query,
                    limit: ReadLimit::Memory {
                        bytes: self.max_memory_bytes,
                    },
                }
            }
            Error::BadResponse(ref message) if server_code(message) == Some(159) => {
                ReadModelError::OverLimit {
                    query,
                    limit: ReadLimit::Time {
                        secs: SERVER_QUERY_TIMEOUT.as_secs(),
                    },
                }
            }
            source => ReadModelError::Query { query, source },
        }
    }
}

/// The error code of a ClickHouse exception's text: `Code: 241, e.displayText()
/// = …` (18.16) or `Code: 241. DB::Exception: …` (current).
fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + "Code: ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// The longest a single read may take before it counts as ClickHouse being
/// unavailable.
pub const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest ClickHouse runs a read (`max_execution_time`): under
/// [`QUERY_TIMEOUT`], so the server stops the read, and says so, before
/// the API gives up on it.
pub const SERVER_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(28);

/// Tables the read models need; `check` verifies them at start-up.
const REQUIRED_TABLES: [&str; 2] = ["latency_minute_calls", "latency_minute_buckets"];

/// `system.tables` exists on 18.16 and current ClickHouse alike.
const CHECK_TABLE_SQL: &str =
    "SELECT toUInt8(count() > 0) FROM system.tables WHERE database = ? AND name = ?";

/// A SQL template and the values bound to its `?` placeholders, in order.
/// Values are escaped by the clickhouse crate, never spliced in by hand;
/// identifiers only ever come from fixed enums.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BoundSql {
    pub name: &'static str,
    pub template: String,
    pub binds: Vec<SqlValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    UInt(u64),
    Str(String),
}

impl BoundSql {
    pub(crate) fn query(&self, client: &Client) -> clickhouse::query::Query {
        let mut query = client.query(&self.template);
        for value in &self.binds {
            query = match value {
                SqlValue::UInt(n) => query.bind(n),
                SqlValue::Str(s) => query.bind(s.as_str()),
            };
        }
        query
    }

    /// The exact statement text sent to ClickHouse (the crate appends only
    /// `FORMAT RowBinary`).
    pub(crate) fn text(&self) -> String {
        self.query(&Client::default()).sql_display().to_string()
    }
}

/// Every statement the read side sends, with sample values bound, as
/// `(name, sql)`. The statements read from the current database, so run
/// them after applying `migrations/clickhouse/*.sql`.
pub fn sql_catalog() -> Vec<(String, String)> {
    let check = BoundSql {
        name: "read_models.check_table",
        template: CHECK_TABLE_SQL.to_string(),
        binds: vec![
            SqlValue::Str("tollgate".into()),
            SqlValue::Str("latency_minute_calls".into()),
        ],
    };
    std::iter::once(check)
        .chain(latency::catalog())
        .chain(slow_calls::catalog())
        .chain(cost::catalog())
        .chain(overview::catalog())
        .chain(burndown::catalog())
        .chain(statement::catalog())
        .chain(errors::catalog())
        .chain(breakers::catalog())
        .chain(alert_signals::catalog())
        .chain(alert_timeline::catalog())
        .map(|bound| (bound.name.to_string(), bound.text()))
        .collect()
}

/// The first day of `month` (`YYYY-MM`) and of the next, for a statement's
/// query `query` (the month was checked when the request was read).
fn statement_month(
    month: &str,
    query: &'static str,
) -> Result<(chrono::NaiveDate, chrono::NaiveDate), ReadModelError> {
    statement::month_range(month).map_err(|e| ReadModelError::UnexpectedRow {
        query,
        detail: e.reason,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn server_error_codes_are_read_from_both_versions_texts() {
        assert_eq!(
            server_code("Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded: would use 9.31 GiB"),
            Some(241)
        );
        assert_eq!(
            server_code("Code: 159. DB::Exception: Timeout exceeded: elapsed 28.0 seconds, maximum: 28. (TIMEOUT_EXCEEDED) (version 25.8.1.1)"),
            Some(159)
        );
        assert_eq!(server_code("Code: 2410, hypothetical"), Some(2410));
        assert_eq!(server_code("no code here"), None);
        assert_eq!(server_code("Code: "), None);
    }

    #[test]
    fn limits_say_which_setting_to_change_and_get_their_status() {
        let memory = ReadModelError::OverLimit {
            query: "latency.report",
            limit: ReadLimit::Memory { bytes: 1_000_000 },
        };
        assert_eq!(
            memory.to_string(),
            "clickhouse query `latency.report` needed more memory than clickhouse.read_max_memory_bytes allows (1000000 bytes), and ClickHouse stopped it: narrow the time window, the filters or the grouping"
        );
        assert_eq!(memory.http_status(), 422);
        assert!(!memory.is_retryable());
        let time = ReadModelError::OverLimit {
            query: "cost.report",
            limit: ReadLimit::Time { secs: 28 },
        };
        assert!(time
            .to_string()
            .contains("ran longer than a read may (28 s)"));
        assert_eq!(time.http_status(), 504);
        let server = ReadLimit::Memory { bytes: 0 }.to_string();
        assert_eq!(
            server,
            "needed more memory than the ClickHouse server allows a query"
        );
    }

    #[test]
    fn catalog_binds_every_placeholder() {
        let catalog = sql_catalog();
        assert!(catalog.len() >= 4, "{catalog:?}");
        for (name, sql) in &catalog {
            assert!(
                !sql.contains('?'),
                "{name} has an unbound placeholder: {sql}"
            );
            assert!(!sql.contains("invalid SQL"), "{name}: {sql}");
        }
    }

    #[test]
    fn strings_are_escaped_not_spliced() {
        let bound = BoundSql {
            name: "t",
            template: "SELECT 1 WHERE provider = ?".into(),
            binds: vec![SqlValue::Str("x' OR 1=1 --".into())],
        };
        assert_eq!(bound.text(), r"SELECT 1 WHERE provider = 'x\' OR 1=1 --'");
    }
}
