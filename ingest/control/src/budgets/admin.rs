//! Budget administration: the validation of a budget as an administrator
//! states it ([`BudgetSpec`], shared by `POST /api/v1/admin/budgets` and
//! `tollgate budgets set`), creating, replacing and deleting budgets with
//! their `admin.budget.set` / `admin.budget.deleted` event in the outbox in
//! the same transaction, and what the budget watcher needs to lift the deny
//! of a deleted hard budget ([`BudgetStore::deleted_hard_subjects`],
//! [`released_subjects`]).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_contract::Event;

use tollgate_contract::admin::{admin_event, KIND_BUDGET_DELETED, KIND_BUDGET_SET};
use tollgate_contract::decisions::budget_subject;

use super::{Budget, BudgetRow, BudgetStore, Period, SubjectKind, BUDGET_COLUMNS};
use crate::outbox::{enqueue, Enqueued};
/// Largest limit accepted, in USD: anything above is a typo, and it keeps
/// every spend comparison far inside exact decimal range.
pub const MAX_LIMIT_USD: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 10^12
/// Most fractional digits of a limit (the scale of stored costs).
pub const MAX_LIMIT_SCALE: u32 = 12;
/// Most warning thresholds per budget.
pub const MAX_THRESHOLDS: usize = 10;
/// Highest threshold, in percent of the limit.
pub const MAX_THRESHOLD_PERCENT: i64 = 1000;
/// Longest subject id, in characters.
pub const MAX_SUBJECT_ID_CHARS: usize = 256;
/// Thresholds when none are given.
pub const DEFAULT_THRESHOLDS: [i32; 3] = [50, 80, 100];

/// Why a budget was refused: a [`Rejection`] naming the field as the API
/// body spells it (`subject_kind`, `limit_usd`, ...).
pub use tollgate_contract::Rejection as InvalidBudget;

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidBudget {
    InvalidBudget::new(field, reason)
}

/// A valid budget to create or replace (one per subject and period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpec {
    pub subject_kind: SubjectKind,
    pub subject_id: String,
    pub period: Period,
    pub limit_usd: Decimal,
    pub hard: bool,
    /// Distinct, ascending.
    pub thresholds: Vec<i32>,
    /// The org the budget belongs to (its people see it): an org
    /// subject's own id; for other subjects the org given
    /// ([`BudgetSpec::in_org`]), or none (only people of every org see it).
    pub org_id: Option<String>,
}

impl BudgetSpec {
    /// The budget as one of `org`'s; an org subject must be that org.
    pub fn in_org(mut self, org: &str) -> Result<Self, InvalidBudget> {
        if self.subject_kind == SubjectKind::Org && self.subject_id != org {
            return Err(invalid(
                "org_id",
                format!(
                    "an org budget of {} cannot belong to org {org}",
                    self.subject_id
                ),
            ));
        }
        check_subject_id(org).map_err(|e| invalid("org_id", e.reason))?;
        self.org_id = Some(org.to_string());
        Ok(self)
    }

    /// Validate the fields as given (strings as in the API body; `None`
    /// thresholds means the default 50, 80, 100).
    pub fn parse(
        subject_kind: &str,
        subject_id: &str,
        period: &str,
        limit_usd: &str,
        enforcement: &str,
        thresholds: Option<&[i64]>,
    ) -> Result<Self, InvalidBudget> {
        let subject_kind = SubjectKind::parse(subject_kind).ok_or_else(|| {
            invalid(
                "subject_kind",
                format!("{subject_kind:?} is not one of org, team, user, key"),
            )
        })?;
        check_subject_id(subject_id)?;
        let period = match period {
            "daily" => Period::Daily,
            "monthly" => Period::Monthly,
            other => {
                return Err(invalid(
                    "period",
                    format!("{other:?} is not one of daily, monthly"),
                ))
            }
        };
        let limit_usd = parse_limit(limit_usd).map_err(|reason| invalid("limit_usd", reason))?;
        let hard = match enforcement {
            "hard" => true,
            "soft" => false,
            other => {
                return Err(invalid(
                    "enforcement",
                    format!("{other:?} is not one of hard, soft"),
                ))
            }
        };
        let thresholds = match thresholds {
            None => DEFAULT_THRESHOLDS.to_vec(),
            Some(given) => check_thresholds(given)?,
        };
        Ok(Self {
            org_id: (subject_kind == SubjectKind::Org).then(|| subject_id.to_string()),
            subject_kind,
            subject_id: subject_id.to_string(),
            period,
            limit_usd,
            hard,
            thresholds,
        })
    }

    /// A key budget names its key by the key's id, whichever of id or
    /// prefix was given ([`crate::keys::KeyStore::subject_id`]): events
    /// carry the id, so a budget of the prefix would never be spent; and it
    /// belongs to the key's org when none was given. Other kinds pass as
    /// they are (teams, users and orgs are not registered).
    pub async fn naming_key(
        mut self,
        keys: &crate::keys::KeyStore,
    ) -> Result<Result<Self, InvalidBudget>, crate::ControlError> {
        if self.subject_kind != SubjectKind::Key {
            return Ok(Ok(self));
        }
        let key = match keys
            .subject_key(&self.subject_id, self.org_id.as_deref())
            .await?
        {
            Ok(key) => key,
            Err(reason) => return Ok(Err(invalid("subject_id", reason))),
        };
        self.subject_id = key.id.to_string();
        // A key of one org: its budget judges that org's calls of it, even
        // when no org was named. Without an org it judged the key's id in
        // every org's events, and events reported by another org may name
        // any key id (`api_key_id`): they spent this key's budget.
        if self.org_id.is_none() {
            self.org_id = key.org_id;
        }
        Ok(Ok(self))
    }

    /// The decision subject
    /// ([`tollgate_contract::decisions::budget_subject`]).
    pub fn subject(&self) -> String {
        budget_subject(
            self.subject_kind.name(),
            self.org_id.as_deref(),
            &self.subject_id,
        )
    }
}

pub fn check_subject_id(id: &str) -> Result<(), InvalidBudget> {
    let chars = id.chars().count();
    if chars == 0 {
        return Err(invalid("subject_id", "must not be empty"));
    }
    if chars > MAX_SUBJECT_ID_CHARS {
        return Err(invalid(
            "subject_id",
            format!("is {chars} characters long; at most {MAX_SUBJECT_ID_CHARS} allowed"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid("subject_id", "must not contain control characters"));
    }
    if id.trim() != id {
        return Err(invalid(
            "subject_id",
            "must not start or end with whitespace",
        ));
    }
    Ok(())
}

/// A limit in USD: a plain decimal string (`"500"`, `"12.5"`), greater
/// than 0, at most [`MAX_LIMIT_USD`], at most 12 decimal places.
pub fn parse_limit(text: &str) -> Result<Decimal, String> {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let well_formed = match digits.split_once('.') {
        Some((int, frac)) => plain(int) && plain(frac),
        None => plain(digits),
    };
    if !well_formed {
        return Err(format!(
            "{text:?} is not a decimal number of USD (digits with an optional `.` fraction, like \"500\" or \"12.5\")"
        ));
    }
    if sign && digits.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        return Err(format!(
            "{text} is negative; a limit must be greater than 0"
        ));
    }
    let int_digits = digits
        .split('.')
        .next()
        .unwrap_or("")
        .trim_start_matches('0');
    if int_digits.len() > 13 {
        return Err(format!(
            "{text} is larger than the maximum of {MAX_LIMIT_USD} USD"
        ));
    }
    let value: Decimal = digits
        .parse()
        .map_err(|_| format!("{text} has too many digits for an exact decimal"))?;
    if value.is_zero() {
        return Err("is 0; a limit must be greater than 0".into());
    }

    if value > MAX_LIMIT_USD {
        return Err(format!(
            "{text} is larger than the maximum of {MAX_LIMIT_USD} USD"
        ));
    }
    if value.normalize().scale() > MAX_LIMIT_SCALE {
        return Err(format!(
            "{text} has more than {MAX_LIMIT_SCALE} decimal places"
        ));
    }
    Ok(value.normalize())
}

fn check_thresholds(given: &[i64]) -> Result<Vec<i32>, InvalidBudget> {
    if given.len() > MAX_THRESHOLDS {
        return Err(invalid(
            "thresholds",
            format!("{} given; at most {MAX_THRESHOLDS} allowed", given.len()),
        ));
    }
    let mut out = Vec::with_capacity(given.len());
    for t in given {
        let percent = i32::try_from(*t)
            .ok()
            .filter(|p| (1..=MAX_THRESHOLD_PERCENT).contains(&i64::from(*p)))
            .ok_or_else(|| {
                invalid(
                    "thresholds",
                    format!("{t} is outside 1..={MAX_THRESHOLD_PERCENT} (percent of the limit)"),
                )
            })?;
        if out.contains(&percent) {
            return Err(invalid("thresholds", format!("{t} is given twice")));
        }
        out.push(percent);
    }
    out.sort_unstable();
    Ok(out)
}

/// A budget as admin events and the admin API show it.
pub fn budget_json(b: &Budget) -> serde_json::Value {
    json!({
        "budget_id": b.id,
        "subject": b.subject(),
        "subject_kind": b.subject_kind.name(),
        "subject_id": b.subject_id,
        "org_id": b.org_id,
        "period": b.period.name(),
        "limit_usd": b.limit_usd.normalize(),
        "enforcement": if b.hard { "hard" } else { "soft" },
        "thresholds": b.thresholds,
    })
}

/// A budget created or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSet {
    pub budget: Budget,
    /// The budget it replaced (same subject and period), if any.
    pub previous: Option<Budget>,
    /// Its `admin.budget.set` event.
    pub event: Enqueued,
}

/// A budget deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetDeleted {
    pub budget: Budget,
    /// Its `admin.budget.deleted` event.
    pub event: Enqueued,
}

fn row_error() -> sqlx::Error {
    sqlx::Error::Protocol("budgets row with an unknown subject kind".into())
}

impl BudgetStore {
    /// Create or replace the budget of `spec`'s org, subject and period
    /// (another org's budget of the same subject id is another budget), with its
    /// `admin.budget.set` event (naming `actor` and the replaced budget) in
    /// the outbox, in one transaction.
    pub async fn set(&self, spec: &BudgetSpec, actor: &str) -> sqlx::Result<BudgetSet> {
        let mut tx = self.pool().begin().await?;
        // Two concurrent sets of one subject and period: the second must
        // see the first as the budget it replaces.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("{}/{}", spec.subject(), spec.period.name()))
            .execute(&mut *tx)
            .await?;
        let previous: Option<BudgetRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BUDGET_COLUMNS} FROM budgets \
             WHERE subject_kind = $1 AND subject_id = $2 AND period = $3 \
             AND org_id IS NOT DISTINCT FROM $4"
        )))
        .bind(spec.subject_kind.name())
        .bind(&spec.subject_id)
        .bind(spec.period.name())
        .bind(&spec.org_id)
        .fetch_optional(&mut *tx)
        .await?;
        let row: BudgetRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO budgets (subject_kind, subject_id, period, limit_usd, enforcement, thresholds, org_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT ((COALESCE(org_id, '')), subject_kind, subject_id, period) \
             DO UPDATE SET limit_usd = EXCLUDED.limit_usd, \
             enforcement = EXCLUDED.enforcement, thresholds = EXCLUDED.thresholds, updated_at = now() \
             RETURNING {BUDGET_COLUMNS}"
        )))
        .bind(spec.subject_kind.name())
        .bind(&spec.subject_id)
        .bind(spec.period.name())
        .bind(spec.limit_usd)
        .bind(if spec.hard { "hard" } else { "soft" })
        .bind(&spec.thresholds)
        .bind(&spec.org_id)
        .fetch_one(&mut *tx)
        .await?;
        let budget = row.into_budget().ok_or_else(row_error)?;
        let previous = previous.and_then(BudgetRow::into_budget);
        // A new limit re-arms the period's warnings: each threshold is a
        // percent of the limit, and one reached of the old limit says
        // nothing of the new one (raised, it would never warn again this
        // period).
        if previous
            .as_ref()
            .is_some_and(|p| p.limit_usd != budget.limit_usd)
        {
            let (period_start, _) = budget.period.window(Utc::now());
            sqlx::query("DELETE FROM budget_alerts WHERE budget_id = $1 AND period_start >= $2")
                .bind(budget.id)
                .bind(period_start)
                .execute(&mut *tx)
                .await?;
        }
        let mut payload = budget_json(&budget);
        payload["previous"] = previous.as_ref().map(budget_json).into();
        let event = enqueue(&mut tx, &admin_event(KIND_BUDGET_SET, actor, payload)).await?;
        // A key budget of the key's org replaces one of the same key and
        // period stored before 2026-12-07 without an org, which judged the
        // key's id in every org's events (another org's reporter could
        // spend it): deleted with its `admin.budget.deleted` event, so the
        // budget watcher lifts a deny it published.
        if spec.subject_kind == SubjectKind::Key && spec.org_id.is_some() {
            let orgless: Vec<BudgetRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "DELETE FROM budgets WHERE subject_kind = $1 AND subject_id = $2 \
                 AND period = $3 AND org_id IS NULL RETURNING {BUDGET_COLUMNS}"
            )))
            .bind(spec.subject_kind.name())
            .bind(&spec.subject_id)
            .bind(spec.period.name())
            .fetch_all(&mut *tx)
            .await?;
            for old in orgless.into_iter().filter_map(BudgetRow::into_budget) {
                let deleted = admin_event(KIND_BUDGET_DELETED, actor, budget_json(&old));
                enqueue(&mut tx, &deleted).await?;
            }
        }
        tx.commit().await?;
        Ok(BudgetSet {
            budget,
            previous,
            event,
        })
    }

    /// Delete budget `id` (and its threshold records) with its
    /// `admin.budget.deleted` event in the outbox, in one transaction;
    /// `None` when there is no such budget.
    pub async fn delete(&self, id: i64, actor: &str) -> sqlx::Result<Option<BudgetDeleted>> {
        let mut tx = self.pool().begin().await?;
        let row: Option<BudgetRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM budgets WHERE id = $1 RETURNING {BUDGET_COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let budget = row.into_budget().ok_or_else(row_error)?;
        let event = admin_event(KIND_BUDGET_DELETED, actor, budget_json(&budget));
        let event = enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Some(BudgetDeleted { budget, event }))
    }

    /// Decision subjects of hard budgets deleted at or after `since`
    /// (from their `admin.budget.deleted` events in the outbox). A deny
    /// published for such a subject may still be on the decisions topic;
    /// with `since` = the start of the running UTC month it covers every
    /// deny that has not lapsed by its `valid_until`.
    pub async fn deleted_hard_subjects(&self, since: DateTime<Utc>) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT event->'admin'->>'subject' FROM admin_outbox \
             WHERE event->>'kind' = $1 AND event->'admin'->>'enforcement' = 'hard' \
             AND created_at >= $2 AND event->'admin'->>'subject' IS NOT NULL ORDER BY 1",
        )
        .bind(KIND_BUDGET_DELETED)
        .bind(since)
        .fetch_all(self.pool())
        .await
    }

    /// Record that `threshold` was reached in the period starting
    /// `period_start` (`None` when this or another processor recorded it
    /// before); when this call claims the threshold, put
    /// `event` (the `admin.budget.threshold` warning) in the outbox in the
    /// same transaction, so a claimed warning is never lost to a Kafka
    /// outage. For the budget watcher.
    pub async fn claim_alert_with_event(
        &self,
        budget_id: i64,
        period_start: NaiveDate,
        threshold: i32,
        spend: Decimal,
        event: &Event,
    ) -> sqlx::Result<Option<Enqueued>> {
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO budget_alerts (budget_id, period_start, threshold, spend_usd) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(budget_id)
        .bind(period_start)
        .bind(threshold)
        .bind(spend)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let enqueued = enqueue(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Some(enqueued))
    }
}

/// Pure: of `candidates` (decision subjects the watcher may have denied:
/// those it published a deny for, and [`BudgetStore::deleted_hard_subjects`]),
/// the ones no hard budget in `budgets` covers any more. The watcher
/// publishes a tombstone (or `allow`) for each, so the proxy stops denying.
pub fn released_subjects(
    budgets: &[Budget],
    candidates: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut out: Vec<String> = candidates
        .into_iter()
        .filter(|s| !budgets.iter().any(|b| b.hard && b.subject() == *s))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(limit: &str, thresholds: Option<&[i64]>) -> Result<BudgetSpec, InvalidBudget> {
        BudgetSpec::parse("team", "search", "monthly", limit, "hard", thresholds)
    }

    #[test]
    fn max_limit_is_a_trillion() {
        assert_eq!(MAX_LIMIT_USD, Decimal::from(1_000_000_000_000_i64));
    }

    #[test]
    fn limits() {
        let ok = |s: &str| parse_limit(s).unwrap().to_string();
        assert_eq!(ok("500"), "500");
        assert_eq!(ok("500.50"), "500.5");
        assert_eq!(ok("0.000000000001"), "0.000000000001");
        assert_eq!(ok("1000000000000"), "1000000000000");
        assert_eq!(ok("0001"), "1");
        for (text, words) in [
            ("", "not a decimal"),
            ("abc", "not a decimal"),
            ("1e3", "not a decimal"),
            (" 5", "not a decimal"),
            ("+5", "not a decimal"),
            ("5.", "not a decimal"),
            (".5", "not a decimal"),
            ("NaN", "not a decimal"),
            ("-5", "negative"),
            ("-99999999999999999999", "negative"),
            ("-0", "greater than 0"),
            ("0", "greater than 0"),
            ("0.000", "greater than 0"),
            ("1000000000000.01", "larger than the maximum"),
            (
                "99999999999999999999999999999999999",
                "larger than the maximum",
            ),
            ("0.0000000000001", "more than 12 decimal places"),
        ] {
            let err = parse_limit(text).unwrap_err();
            assert!(err.contains(words), "{text:?}: {err}");
        }
    }

    #[test]
    fn fields_are_named() {
        let field = |r: Result<BudgetSpec, InvalidBudget>| r.unwrap_err().field;
        assert_eq!(
            field(BudgetSpec::parse(
                "tribe", "x", "monthly", "1", "hard", None
            )),
            "subject_kind"
        );
        assert_eq!(
            field(BudgetSpec::parse("team", "", "monthly", "1", "hard", None)),
            "subject_id"
        );
        assert_eq!(
            field(BudgetSpec::parse(
                "team",
                &"x".repeat(257),
                "monthly",
                "1",
                "hard",
                None
            )),
            "subject_id"
        );
        assert!(BudgetSpec::parse("team", &"é".repeat(256), "monthly", "1", "hard", None).is_ok());
        assert_eq!(
            field(BudgetSpec::parse(
                "team", "a\nb", "monthly", "1", "hard", None
            )),
            "subject_id"
        );
        assert_eq!(
            field(BudgetSpec::parse("team", "x", "weekly", "1", "hard", None)),
            "period"
        );
        assert_eq!(
            field(BudgetSpec::parse("team", "x", "daily", "1", "strict", None)),
            "enforcement"
        );
        assert_eq!(field(spec("0", None)), "limit_usd");
        for bad in [&[0][..], &[1001], &[-5], &[50, 50], &[1; 11], &[i64::MAX]] {
            assert_eq!(field(spec("1", Some(bad))), "thresholds", "{bad:?}");
        }
        let s = spec("10", Some(&[100, 50, 1000, 1])).unwrap();
        assert_eq!(s.thresholds, vec![1, 50, 100, 1000]);
        assert_eq!(spec("10", None).unwrap().thresholds, vec![50, 80, 100]);
        assert!(spec("10", Some(&[])).unwrap().thresholds.is_empty());
    }

    #[test]
    fn deleted_hard_budgets_are_released_unless_still_covered() {
        let budget = |kind: SubjectKind, id: &str, period: Period, hard: bool| Budget {
            id: 1,
            subject_kind: kind,
            subject_id: id.into(),
            period,
            limit_usd: Decimal::ONE,
            hard,
            thresholds: vec![],
            org_id: None,
        };
        let mut of_acme = budget(SubjectKind::Team, "d", Period::Daily, true);
        of_acme.org_id = Some("acme".into());
        let remaining = [
            // A daily hard budget of the same team still denies.
            budget(SubjectKind::Team, "a", Period::Daily, true),
            budget(SubjectKind::Team, "b", Period::Monthly, false),
            of_acme,
        ];
        let released = released_subjects(
            &remaining,
            [
                "budget/team/a".to_string(),
                "budget/team/b".to_string(),
                "budget/org/c".to_string(),
                "budget/team/b".to_string(),
                "budget/in/acme/team/d".to_string(),
                // Team d of every org: no such budget any more.
                "budget/team/d".to_string(),
            ],
        );
        assert_eq!(
            released,
            vec!["budget/org/c", "budget/team/b", "budget/team/d"]
        );
    }
}
