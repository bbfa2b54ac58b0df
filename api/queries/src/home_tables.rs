//! The overview's tables as [`Table`]s, one per table on the page (its
//! CSVs, `GET /api/v1/overview?format=csv&table=<name>`): spend per day
//! this month, the last hour's health against the same hour yesterday,
//! the alerts firing, the budgets near their limit and the newest error
//! patterns. Money has every one of its 12 decimals; times are RFC 3339 in
//! UTC. A section the caller may not read has no table.

use chrono::{DateTime, SecondsFormat, Utc};

use super::home::Home;
use super::table::{usd, Table};

/// One table of the overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeTable {
    SpendDays,
    Health,
    Alerts,
    BudgetsNearLimit,
    NewestPatterns,
}

impl HomeTable {
    /// Every table, with its name in the `table` parameter.
    pub const ALL: [(&'static str, Self); 5] = [
        ("spend_days", Self::SpendDays),
        ("health", Self::Health),
        ("alerts", Self::Alerts),
        ("budgets_near_limit", Self::BudgetsNearLimit),
        ("newest_patterns", Self::NewestPatterns),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(name, _)| *name)
            .unwrap_or_default()
    }

    /// The section of the overview the table belongs to, for a refusal.
    pub fn section(self) -> &'static str {
        match self {
            Self::SpendDays | Self::BudgetsNearLimit => "cost",
            Self::Health | Self::NewestPatterns => "latency and errors",
            Self::Alerts => "alerts",
        }
    }

    /// The table of `home`; `None` when its section is not in it (the
    /// caller may not read it, or the server runs without its store).
    pub fn of(self, home: &Home) -> Option<Table> {
        match self {
            Self::SpendDays => home.spend.as_ref().map(|spend| {
                let mut table = Table::new(["day", "spend_usd"]);
                for d in &spend.days {
                    table.push([d.day.to_string(), usd(d.spend_usd)]);
                }
                table
            }),
            Self::Health => home.health.as_ref().map(|health| {
                let mut table = Table::new([
                    "hour",
                    "from",
                    "to",
                    "calls",
                    "errors",
                    "error_rate",
                    "p95_ms",
                    "p95_estimate",
                ]);
                for (hour, h) in [
                    ("last_hour", &health.now),
                    ("same_hour_yesterday", &health.yesterday),
                ] {
                    table.push([
                        hour.to_string(),
                        utc(h.from),
                        utc(h.to),
                        h.calls.to_string(),
                        h.errors.to_string(),
                        h.error_rate.map(|r| r.to_string()).unwrap_or_default(),
                        h.p95_ms.map(|p| p.to_string()).unwrap_or_default(),
                        h.p95_estimate.to_string(),
                    ]);
                }
                table
            }),
            Self::Alerts => home.firing_alerts.as_ref().map(|alerts| {
                let mut table = Table::new([
                    "rule_id",
                    "rule",
                    "org",
                    "severity",
                    "firing_since",
                    "value",
                    "unit",
                    "link",
                ]);
                for a in alerts {
                    table.push([
                        a.rule_id.to_string(),
                        a.rule_name.clone(),
                        a.org_id.clone(),
                        a.severity.clone(),
                        utc(a.fired_at.unwrap_or(a.since)),
                        a.value.clone().unwrap_or_default(),
                        a.unit.clone(),
                        a.link.clone(),
                    ]);
                }
                table
            }),
            Self::BudgetsNearLimit => home.budgets_near_limit.as_ref().map(|statuses| {
                let mut table = Table::new([
                    "budget_id",
                    "subject",
                    "period",
                    "enforcement",
                    "spend_usd",
                    "limit_usd",
                    "percent",
                    "state",
                    "period_start",
                    "period_end",
                ]);
                for s in statuses {
                    table.push([
                        s.budget.id.to_string(),
                        s.subject.clone(),
                        s.budget.period.name().to_string(),
                        if s.budget.hard { "hard" } else { "soft" }.to_string(),
                        usd(s.spend_usd),
                        usd(s.budget.limit_usd),
                        s.percent.to_string(),
                        s.state.to_string(),
                        s.period_start.to_string(),
                        s.period_end.to_string(),
                    ]);
                }
                table
            }),
            Self::NewestPatterns => home.newest_patterns.as_ref().map(|patterns| {
                let mut table = Table::new([
                    "signature",
                    "template",
                    "provider",
                    "http_status",
                    "error_type",
                    "failures",
                    "first_seen",
                    "last_seen",
                ]);
                for p in patterns {
                    table.push([
                        p.signature.to_string(),
                        p.template.clone(),
                        p.provider.clone(),
                        p.http_status.to_string(),
                        p.error_type.clone(),
                        p.failures.to_string(),
                        p.first_seen.map(utc).unwrap_or_default(),
                        p.last_seen.map(utc).unwrap_or_default(),
                    ]);
                }
                table
            }),
        }
    }
}

fn utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every table of the sample overview, as CSV.
    #[test]
    fn csv_snapshots() {
        let home = crate::samples::home();
        for (name, table) in HomeTable::ALL {
            insta::assert_snapshot!(name, table.of(&home).unwrap().to_csv());
        }
    }

    #[test]
    fn a_section_not_read_has_no_table() {
        let mut home = crate::samples::home();
        home.spend = None;
        home.budgets_near_limit = None;
        assert!(HomeTable::SpendDays.of(&home).is_none());
        assert!(HomeTable::BudgetsNearLimit.of(&home).is_none());
        assert!(HomeTable::Health.of(&home).is_some());
    }
}
