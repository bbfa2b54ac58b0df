//! Alerting's PostgreSQL store (`alert_rules`, `alert_silences`,
//! `alert_receivers`; `migrations/postgres/20261202000100_alerting.sql`):
//! the stored forms ([`AlertRule`], [`Silence`], [`Receiver`]) and the
//! reads the API, the CLI and the evaluator use. Creating, changing,
//! expiring and deleting (each with its `admin.*` event in the outbox, in
//! the same transaction) is in [`admin`].
//!
//! Every read takes the org: an id of another org is "not found", never
//! "forbidden", so ids do not tell one org about another. A receiver's
//! signing secret is write-only: [`Receiver`] has no field for it, and only
//! [`AlertStore::signing_secret`] (for the delivery) reads it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tollgate_contract::alerts::{Matcher, ReceiverKind, RuleSpec, SilenceSpec};
use tollgate_contract::Rejection;

pub mod admin;
pub mod reach;
pub mod state;

/// Roles that may create, change and delete rules, silences and receivers
/// (the API and the pages apply the same).
pub const WRITE_ROLES: [&str; 2] = ["admin", "sre"];
/// Roles that may read them, the alerts' states and the timeline.
pub const READ_ROLES: [&str; 3] = ["admin", "sre", "finance"];

/// Why an alerting store call failed; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    /// 404: no such id in this org (or in any).
    #[error("no {what} with id {id}")]
    NotFound { what: &'static str, id: i64 },
    /// 409: the caller read `expected`, someone changed it since.
    #[error("{what} {id} is at version {current}, not {expected}: it changed since it was read; read it again and retry")]
    Conflict {
        what: &'static str,
        id: i64,
        expected: i64,
        current: i64,
    },
    /// 409: the org already has one with this name.
    #[error("{what} name {name:?} is already used in org {org}")]
    NameTaken {
        what: &'static str,
        org: String,
        name: String,
    },
    /// 409: a receiver that rules still send to.
    #[error("receiver {id} is used by rules {rules:?}; remove it from them first")]
    InUse { id: i64, rules: Vec<i64> },
    /// 409: the silence already ended.
    #[error("silence {id} already ended at {ends_at}")]
    AlreadyExpired { id: i64, ends_at: DateTime<Utc> },
    /// 400: a field refers to something that does not exist (a receiver id
    /// of another org) or may not change (the org of a rule).
    #[error(transparent)]
    Invalid(#[from] Rejection),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Another store of the control plane (the API keys a spend rule
    /// names) could not be read.
    #[error(transparent)]
    Control(#[from] crate::ControlError),
    /// A stored row this version cannot read (written by a newer one).
    #[error("stored {what} {id} cannot be read: {reason}")]
    Corrupt {
        what: &'static str,
        id: i64,
        reason: String,
    },
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRule {
    pub id: i64,
    /// Bumped by every change; updates and deletes name the one they read.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

/// Whether a silence is in force at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    /// Starts later.
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Expired => "expired",
        }
    }
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Silence {
    pub id: i64,
    pub version: i64,
    /// The actor that created it (`key:<prefix>`, `cli`).
    pub created_by: String,
    /// The actor that ended it early, if one did.
    pub expired_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub spec: SilenceSpec,
}

impl Silence {
    pub fn state(&self, now: DateTime<Utc>) -> SilenceState {
        if self.spec.ends_at <= now {
            SilenceState::Expired
        } else if self.spec.starts_at > now {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }
}

/// A stored receiver, without its signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receiver {
    pub id: i64,
    pub org_id: String,
    pub name: String,
    pub kind: ReceiverKind,
    pub url: String,
    /// Whether a signing secret is stored (the secret itself is write-only).
    pub has_signing_secret: bool,
    pub group_by: Vec<String>,
    pub group_wait_secs: u32,
    pub group_interval_secs: u32,
    pub repeat_interval_secs: u32,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which silences a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceFilter {
    /// Not yet ended (active or pending).
    Current,
    Expired,
    All,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RuleRow {
    pub(crate) id: i64,
    spec: serde_json::Value,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RuleRow {
    pub(crate) fn into_rule(self) -> Result<AlertRule, AlertStoreError> {
        let spec: RuleSpec =
            serde_json::from_value(self.spec).map_err(|e| AlertStoreError::Corrupt {
                what: "rule",
                id: self.id,
                reason: e.to_string(),
            })?;
        Ok(AlertRule {
            id: self.id,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            spec,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SilenceRow {
    id: i64,
    org_id: String,
    matchers: serde_json::Value,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    created_by: String,
    comment: String,
    expired_by: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SilenceRow {
    pub(crate) fn into_silence(self) -> Result<Silence, AlertStoreError> {
        let matchers: Vec<Matcher> =
            serde_json::from_value(self.matchers).map_err(|e| AlertStoreError::Corrupt {
                what: "silence",
                id: self.id,
                reason: e.to_string(),
            })?;
        Ok(Silence {
            id: self.id,
            version: self.version,
            created_by: self.created_by,
            expired_by: self.expired_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            spec: SilenceSpec {
                org_id: self.org_id,
                matchers,
                starts_at: self.starts_at,
                ends_at: self.ends_at,
                comment: self.comment,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ReceiverRow {
    id: i64,
    org_id: String,
    name: String,
    kind: String,
    pub(crate) url: String,
    has_signing_secret: bool,
    group_by: Vec<String>,
    group_wait_secs: i32,
    group_interval_secs: i32,
    repeat_interval_secs: i32,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ReceiverRow {
    pub(crate) fn into_receiver(self) -> Result<Receiver, AlertStoreError> {
        let corrupt = |reason: String| AlertStoreError::Corrupt {
            what: "receiver",
            id: self.id,
            reason,
        };
        let kind = ReceiverKind::parse(&self.kind)
            .ok_or_else(|| corrupt(format!("unknown kind {:?}", self.kind)))?;
        let secs = |v: i32| u32::try_from(v).map_err(|_| corrupt(format!("negative interval {v}")));
        Ok(Receiver {
            group_wait_secs: secs(self.group_wait_secs)?,
            group_interval_secs: secs(self.group_interval_secs)?,
            repeat_interval_secs: secs(self.repeat_interval_secs)?,
            id: self.id,
            org_id: self.org_id,
            name: self.name,
            kind,
            url: self.url,
            has_signing_secret: self.has_signing_secret,
            group_by: self.group_by,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(crate) const RULE_COLUMNS: &str = "id, spec, version, created_at, updated_at";
pub(crate) const SILENCE_COLUMNS: &str = "id, org_id, matchers, starts_at, ends_at, created_by, comment, expired_by, version, created_at, updated_at";
/// Never the secret itself: only whether there is one.
pub(crate) const RECEIVER_COLUMNS: &str = "id, org_id, name, kind, url, signing_secret IS NOT NULL AS has_signing_secret, group_by, group_wait_secs, group_interval_secs, repeat_interval_secs, version, created_at, updated_at";

/// A list condition that keeps every row (it only types `$2`).
const ANY_TIME: &str = "$2::timestamptz IS NOT NULL";

/// Rules, silences and receivers in PostgreSQL.
#[derive(Clone)]
pub struct AlertStore {
    pool: PgPool,
    /// The hosts a receiver may be saved with although they are private
    /// (`alerting.receiver_private_hosts`; none unless set).
    private_hosts: reach::PrivateHosts,
}

impl AlertStore {
    /// A store that saves receivers to public addresses only.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            private_hosts: reach::PrivateHosts::default(),
        }
    }

    /// Let receivers be saved with these private hosts too
    /// (`alerting.receiver_private_hosts`, which the evaluator sends by).
    pub fn with_private_hosts(mut self, hosts: &[String]) -> Self {
        self.private_hosts = reach::PrivateHosts::new(hosts);
        self
    }

    pub(crate) fn private_hosts(&self) -> &reach::PrivateHosts {
        &self.private_hosts
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Row `id` of `org` (of any org with `None`) of `table`.
    async fn one<R>(
        &self,
        columns: &str,
        table: &str,
        what: &'static str,
        org: Option<&str>,
        id: i64,
    ) -> Result<R, AlertStoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let row: Option<R> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {table} WHERE id = $1 AND ($2::text IS NULL OR org_id = $2)"
        )))
        .bind(id)
        .bind(org)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or(AlertStoreError::NotFound { what, id })
    }

    /// The rows of `table` of `org` (every org's with `None`) that
    /// `condition` (on `$2`, bound to `at`) keeps, by id.
    async fn of_org<R>(
        &self,
        columns: &str,
        table: &str,
        org: Option<&str>,
        condition: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<R>, AlertStoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {table} \
             WHERE ($1::text IS NULL OR org_id = $1) AND {condition} ORDER BY id"
        )))
        .bind(org)
        .bind(at)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Rule `id` of `org` (of any org with `None`).
    pub async fn rule(&self, org: Option<&str>, id: i64) -> Result<AlertRule, AlertStoreError> {
        self.one::<RuleRow>(RULE_COLUMNS, "alert_rules", "rule", org, id)
            .await?
            .into_rule()
    }

    /// The rules of `org` (every org's with `None`), by id.
    pub async fn rules(&self, org: Option<&str>) -> Result<Vec<AlertRule>, AlertStoreError> {
        self.of_org::<RuleRow>(RULE_COLUMNS, "alert_rules", org, ANY_TIME, Utc::now())
            .await?
            .into_iter()
            .map(RuleRow::into_rule)
            .collect()
    }

    /// Every enabled rule of every org, by id: what the evaluator runs.
    pub async fn enabled_rules(&self) -> Result<Vec<AlertRule>, AlertStoreError> {
        self.of_org::<RuleRow>(
            RULE_COLUMNS,
            "alert_rules",
            None,
            "enabled AND $2::timestamptz IS NOT NULL",
            Utc::now(),
        )
        .await?
        .into_iter()
        .map(RuleRow::into_rule)
        .collect()
    }

    /// Silence `id` of `org` (of any org with `None`).
    pub async fn silence(&self, org: Option<&str>, id: i64) -> Result<Silence, AlertStoreError> {
        self.one::<SilenceRow>(SILENCE_COLUMNS, "alert_silences", "silence", org, id)
            .await?
            .into_silence()
    }

    /// The silences of `org` (every org's with `None`) that `filter` keeps
    /// at `now`, by id.
    pub async fn silences(
        &self,
        org: Option<&str>,
        filter: SilenceFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<Silence>, AlertStoreError> {
        let condition = match filter {
            SilenceFilter::Current => "ends_at > $2",
            SilenceFilter::Expired => "ends_at <= $2",
            SilenceFilter::All => ANY_TIME,
        };
        self.of_org::<SilenceRow>(SILENCE_COLUMNS, "alert_silences", org, condition, now)
            .await?
            .into_iter()
            .map(SilenceRow::into_silence)
            .collect()
    }

    /// Every org's silences in force at `now` (started, not ended): what
    /// the evaluator applies before notifying a direct receiver.
    pub async fn active_silences(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<Silence>, AlertStoreError> {
        self.of_org::<SilenceRow>(
            SILENCE_COLUMNS,
            "alert_silences",
            None,
            "starts_at <= $2 AND ends_at > $2",
            now,
        )
        .await?
        .into_iter()
        .map(SilenceRow::into_silence)
        .collect()
    }

    /// Receiver `id` of `org` (of any org with `None`), without its secret.
    pub async fn receiver(&self, org: Option<&str>, id: i64) -> Result<Receiver, AlertStoreError> {
        self.one::<ReceiverRow>(RECEIVER_COLUMNS, "alert_receivers", "receiver", org, id)
            .await?
            .into_receiver()
    }

    /// The receivers of `org` (every org's with `None`), by id, without secrets.
    pub async fn receivers(&self, org: Option<&str>) -> Result<Vec<Receiver>, AlertStoreError> {
        self.of_org::<ReceiverRow>(
            RECEIVER_COLUMNS,
            "alert_receivers",
            org,
            ANY_TIME,
            Utc::now(),
        )
        .await?
        .into_iter()
        .map(ReceiverRow::into_receiver)
        .collect()
    }

    /// The signing secret of webhook receiver `id` of `org`, for the
    /// delivery that signs with it; the only read of a secret. Never log it.
    pub async fn signing_secret(
        &self,
        org: Option<&str>,
        id: i64,
    ) -> Result<Option<String>, AlertStoreError> {
        let row: Option<Option<String>> = sqlx::query_scalar(
            "SELECT signing_secret FROM alert_receivers WHERE id = $1 AND ($2::text IS NULL OR org_id = $2)",
        )
        .bind(id)
        .bind(org)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or(AlertStoreError::NotFound {
            what: "receiver",
            id,
        })
    }
}
