//! The overview page (`GET /overview?org=`, where `/` leads): what anyone
//! reads first after signing in. Spend today and this month against the
//! org's budgets, with the month day by day as bars; error rate and p95 of
//! the last hour against the same hour yesterday; the alerts firing now;
//! budgets at 80 % or more; the newest error patterns. The figures are
//! `tollgate_queries::home`'s, the same as `GET /api/v1/overview`'s; each
//! table links its CSV there (`format=csv&table=`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use tollgate_access::{Identity, ALERT_READERS, COST_READERS, SRE_READERS};
use tollgate_queries::home::{
    Home, HomeQuery, HourHealth, Sections, SpendFigure, Stored, NEAR_LIMIT_PERCENT,
    PATTERNS_WINDOW_HOURS,
};
use tollgate_queries::params::{Expected, QueryParams};

use crate::display;
use crate::finance::status_of;
use crate::layout::{render, Section};
use crate::sre_form::percent_encode;
use crate::svg::{bars, Bar};
use crate::DashboardState;

type Pairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// Money as people read it, and the exact value for its title.
pub struct Money {
    pub text: String,
    pub exact: String,
}

fn money(value: Decimal) -> Money {
    let amount = display::Money::usd(value);
    Money {
        text: amount.text(),
        exact: amount.exact(),
    }
}

/// A time as the page shows it: UTC to the minute, in the viewer's zone
/// once `local-time.js` ran (exact in the JSON).
fn stamp(at: DateTime<Utc>) -> display::Instant {
    display::Instant::new(at)
}

/// Spend of one period, with its budget when the org has one.
pub struct SpendCard {
    pub id: &'static str,
    pub label: &'static str,
    pub spend: Money,
    pub budget: Option<Money>,
    pub percent: String,
    pub unpriced_calls: i64,
    /// `ok`, `near` (80 % or more) or `over` (100 % or more).
    pub level: &'static str,
}

impl SpendCard {
    fn of(id: &'static str, label: &'static str, figure: &SpendFigure) -> Self {
        let level = match figure.percent {
            Some(p) if p >= Decimal::ONE_HUNDRED => "over",
            Some(p) if p >= Decimal::from(NEAR_LIMIT_PERCENT) => "near",
            _ => "ok",
        };
        Self {
            id,
            label,
            spend: money(figure.spend_usd),
            budget: figure.budget_usd.map(money),
            percent: figure.percent.map(|p| format!("{p} %")).unwrap_or_default(),
            unpriced_calls: figure.unpriced_calls,
            level,
        }
    }
}

/// One hour's health as the table shows it.
pub struct HealthCells {
    pub window: display::Period,
    pub calls: String,
    pub errors: String,
    pub error_rate: String,
    pub p95: String,
    pub p95_title: String,
}

impl HealthCells {
    fn of(h: &HourHealth) -> Self {
        Self {
            window: display::Period::new(h.from, h.to),
            calls: display::Count(i128::from(h.calls)).text(),
            errors: display::Count(i128::from(h.errors)).text(),
            error_rate: h
                .error_rate
                .map(|r| format!("{:.2} %", r * 100.0))
                .unwrap_or_else(|| "no calls".into()),
            p95: h
                .p95_ms
                .map(|p| format!("{}{p:.1} ms", if h.p95_estimate { "≈ " } else { "" }))
                .unwrap_or_else(|| "no calls".into()),
            p95_title: h.p95_ms.map(|p| format!("{p} ms")).unwrap_or_default(),
        }
    }
}

pub struct AlertRow {
    pub rule_id: i64,
    pub rule: String,
    pub org: String,
    pub severity: String,
    pub since: display::Instant,
    pub value: String,
    pub link: String,
}

pub struct BudgetRow {
    pub id: i64,
    pub subject: String,
    pub period: &'static str,
    pub limit: Money,
    pub spend: Money,
    pub percent: String,
    pub state: &'static str,
}

pub struct PatternRow {
    pub signature: String,
    pub template: String,
    pub provider: String,
    pub failures: u64,
    pub first_seen: Option<display::Instant>,
    pub href: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub section: Section,
    pub org: String,
    pub as_of: display::Instant,
    pub error: Option<String>,
    pub cards: Vec<SpendCard>,
    pub now: Option<HealthCells>,
    pub yesterday: Option<HealthCells>,
    pub alerts: Option<Vec<AlertRow>>,
    pub pending_alerts: usize,
    pub budgets: Option<Vec<BudgetRow>>,
    /// `None`: the caller may not read errors (nor latency).
    pub patterns: Option<Vec<PatternRow>>,
    pub patterns_hours: i64,
    pub near_percent: u32,
    pub chart: String,
    pub days: Vec<(String, Money)>,
    pub json_url: String,
    pub org_query: String,
}

impl OverviewPage {
    /// The CSV of one of the page's tables (`tollgate_queries::home_tables`
    /// names them): the API's, for the same org.
    pub fn csv_url(&self, table: &str) -> String {
        let org = if self.org.is_empty() {
            String::new()
        } else {
            format!("&org={}", percent_encode(&self.org))
        };
        format!("/api/v1/overview?format=csv&table={table}{org}")
    }

    fn empty(org: &str, now: DateTime<Utc>) -> Self {
        let org_query = if org.is_empty() {
            String::new()
        } else {
            format!("?org={}", percent_encode(org))
        };
        Self {
            section: Section::Overview,
            org: org.to_string(),
            as_of: stamp(now),
            error: None,
            cards: Vec::new(),
            now: None,
            yesterday: None,
            alerts: None,
            pending_alerts: 0,
            budgets: None,
            patterns: None,
            patterns_hours: PATTERNS_WINDOW_HOURS,
            near_percent: NEAR_LIMIT_PERCENT,
            chart: String::new(),
            days: Vec::new(),
            json_url: format!("/api/v1/overview{org_query}"),
            org_query,
        }
    }

    fn of(home: &Home) -> Self {
        let mut page = Self::empty(home.org.as_deref().unwrap_or(""), home.now);
        if let Some(spend) = &home.spend {
            page.cards = vec![
                SpendCard::of("spend-today", "Spend today", &spend.today),
                SpendCard::of("spend-month", "Spend this month", &spend.month),
            ];
        }
        if let Some(health) = &home.health {
            page.now = Some(HealthCells::of(&health.now));
            page.yesterday = Some(HealthCells::of(&health.yesterday));
        }
        page.alerts = home.firing_alerts.as_ref().map(|alerts| {
            alerts
                .iter()
                .map(|a| AlertRow {
                    rule_id: a.rule_id,
                    rule: a.rule_name.clone(),
                    org: a.org_id.clone(),
                    severity: a.severity.clone(),
                    since: stamp(a.fired_at.unwrap_or(a.since)),
                    value: a
                        .value
                        .as_deref()
                        .map(|v| display::Measure::new(v, a.unit.as_str()).text())
                        .unwrap_or_default(),
                    link: a.link.clone(),
                })
                .collect()
        });
        page.pending_alerts = home.pending_alerts;
        page.budgets = home.budgets_near_limit.as_ref().map(|statuses| {
            statuses
                .iter()
                .map(|s| BudgetRow {
                    id: s.budget.id,
                    subject: format!("{} {}", s.budget.subject_kind.name(), s.budget.subject_id),
                    period: s.budget.period.name(),
                    limit: money(s.budget.limit_usd),
                    spend: money(s.spend_usd),
                    percent: format!("{} %", s.percent),
                    state: s.state,
                })
                .collect()
        });
        page.patterns = home.newest_patterns.as_ref().map(|patterns| {
            patterns
                .iter()
                .map(|p| PatternRow {
                    signature: p.signature.to_string(),
                    template: p.template.clone(),
                    provider: p.provider.clone(),
                    failures: p.failures,
                    first_seen: p.first_seen.map(stamp),
                    href: format!("/sre/errors/{}{}", p.signature, page.org_query),
                })
                .collect()
        });
        let Some(spend) = &home.spend else {
            return page;
        };
        let mut days: Vec<Bar> = spend
            .days
            .iter()
            .map(|d| Bar {
                label: d.day.format("%m-%d").to_string(),
                value: d.spend_usd.try_into().unwrap_or(0.0),
                title: money(d.spend_usd).text,
            })
            .collect();
        // The rest of the month as empty slots, so a bar's place is its
        // day of the month.
        if let Some(last) = spend.days.last() {
            let mut day = last.day;
            while let Some(next) = day.succ_opt().filter(|n| n.month() == last.day.month()) {
                days.push(Bar {
                    label: next.format("%m-%d").to_string(),
                    value: 0.0,
                    title: "not yet".into(),
                });
                day = next;
            }
        }
        page.chart = bars("spend-days", "Spend per day this month (USD)", &days);
        page.days = spend
            .days
            .iter()
            .map(|d| (d.day.to_string(), money(d.spend_usd)))
            .collect();
        page
    }
}

/// The sections `identity` may read: those of the pages it may open.
fn sections_of(identity: &Identity) -> Sections {
    Sections {
        cost: identity.may(COST_READERS),
        health: identity.may(SRE_READERS),
        alerts: identity.may(ALERT_READERS),
    }
}

/// `GET /overview?org=`: the sections the caller may read.
pub async fn page(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let now = Utc::now();
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let org = match QueryParams::parse(&pairs, &Expected::names(&["org"])) {
        Ok(params) => params.text("org").map(str::to_string),
        Err(e) => {
            let mut page = OverviewPage::empty("", now);
            page.error = Some(e.to_string());
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    match read(&state, org.clone(), sections_of(&identity), now).await {
        Ok(home) => render(StatusCode::OK, &OverviewPage::of(&home)),
        Err((status, message)) => {
            let mut page = OverviewPage::empty(org.as_deref().unwrap_or(""), now);
            page.error = Some(message);
            render(status, &page)
        }
    }
}

async fn read(
    state: &DashboardState,
    org: Option<String>,
    sections: Sections,
    now: DateTime<Utc>,
) -> Result<Home, (StatusCode, String)> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read {what}: {e}"),
        )
    };
    let budgets = match &state.budgets {
        Some(store) => Some(
            store
                .in_org(org.as_deref())
                .await
                .map_err(|e| unavailable("budgets", &e))?,
        ),
        None => None,
    };
    let states = match &state.alerts {
        Some(store) => Some(
            store
                .states(org.as_deref())
                .await
                .map_err(|e| unavailable("alert states", &e))?,
        ),
        None => None,
    };
    let stored = Stored {
        budgets: budgets.as_deref(),
        alert_states: states.as_deref(),
    };
    state
        .read_models
        .home(&HomeQuery { now, org, sections }, stored)
        .await
        .map_err(|e| (status_of(&e), e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The overview page of the sample (`tollgate_queries::samples::home`).
    #[test]
    fn page_snapshot() {
        let page = OverviewPage::of(&tollgate_queries::samples::home());
        insta::assert_snapshot!("overview_page", page.render().unwrap());
    }
}
