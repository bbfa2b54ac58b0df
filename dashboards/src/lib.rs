//! Dashboards: the HTML pages for SRE, finance and compliance users, rendered
//! server-side with askama, their charts (Chart.js, vendored) and the static
//! assets, plus the axum routes that serve all of it. Data comes from the
//! read side, `tollgate-queries`; nothing here talks SQL.
//!
//! The binary serves [`router_with`] next to the JSON API's router
//! (`tollgate-api`); the two crates are siblings.

pub mod alert_access;
pub mod assets;
pub mod compliance;
pub mod finance;
pub mod layout;
pub mod session;
pub mod sre_alert_rules;
pub mod sre_alerts;
pub mod sre_breakers;
pub mod sre_errors;
pub mod sre_form;
pub mod sre_latency;
pub mod svg;

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use tollgate_queries::ReadModels;

/// What every dashboard handler can reach.
#[derive(Clone)]
pub struct DashboardState {
    pub read_models: ReadModels,
    /// The price catalog, for unit prices on statements (`None`: shown
    /// without unit prices).
    pub prices: Option<tollgate_control::prices::store::PriceStore>,
    /// Budgets (`None`: the budgets page says it needs PostgreSQL).
    pub budgets: Option<tollgate_control::budgets::BudgetStore>,
    /// Alert rules, silences and states (`None`: the alerting pages say
    /// they need PostgreSQL).
    pub alerts: Option<tollgate_control::alerts::AlertStore>,
    /// API keys, for signing in to the alerting pages.
    pub keys: Option<tollgate_control::keys::KeyStore>,
}

/// What the alerting pages need besides the read models.
#[derive(Clone)]
pub struct AlertingPages {
    pub store: tollgate_control::alerts::AlertStore,
    pub keys: tollgate_control::keys::KeyStore,
}

/// All dashboard pages and `/static/*`, without the price catalog, budgets
/// or the compliance pages.
pub fn router(read_models: ReadModels) -> Router {
    router_with(read_models, None, None, None, None)
}

/// All dashboard pages and `/static/*`; the compliance pages when `audit`
/// is given; the alerting pages answer 503 without `alerting`.
pub fn router_with(
    read_models: ReadModels,
    prices: Option<tollgate_control::prices::store::PriceStore>,
    budgets: Option<tollgate_control::budgets::BudgetStore>,
    audit: Option<tollgate_queries::audit::access::AuditAccess>,
    alerting: Option<AlertingPages>,
) -> Router {
    use axum::routing::post;
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/sre/latency") }))
        .route("/sre", get(|| async { Redirect::to("/sre/latency") }))
        .route("/sre/latency", get(sre_latency::page))
        .route("/sre/errors", get(sre_errors::list_page))
        .route("/sre/errors/{signature}", get(sre_errors::pattern_page))
        .route("/sre/breakers", get(sre_breakers::page))
        .route("/sre/alerts", get(sre_alerts::page))
        .route(
            "/sre/alerts/login",
            get(alert_access::login_page).post(alert_access::login_submit),
        )
        .route("/sre/alerts/logout", get(alert_access::logout))
        .route("/sre/alerts/alerts.csv", get(sre_alerts::alerts_csv))
        .route(
            "/sre/alerts/transitions.csv",
            get(sre_alerts::transitions_csv),
        )
        .route("/sre/alerts/silences.csv", get(sre_alerts::silences_csv))
        .route(
            "/sre/alerts/dead-letters.csv",
            get(sre_alerts::dead_letters_csv),
        )
        .route("/sre/alerts/silences", post(sre_alerts::create_silence))
        .route(
            "/sre/alerts/silences/{id}/expire",
            post(sre_alerts::expire_silence),
        )
        .route("/sre/alerts/rules", get(sre_alert_rules::rules_page))
        .route("/sre/alerts/rules.csv", get(sre_alert_rules::rules_csv))
        .route(
            "/sre/alerts/rules/new",
            get(sre_alert_rules::new_rule_page).post(sre_alert_rules::new_rule_submit),
        )
        .route("/sre/alerts/rules/{id}", get(sre_alert_rules::rule_page))
        .route(
            "/sre/alerts/rules/{id}/edit",
            get(sre_alert_rules::edit_rule_page).post(sre_alert_rules::edit_rule_submit),
        )
        .route(
            "/sre/alerts/rules/{id}/delete",
            post(sre_alert_rules::delete_rule_submit),
        )
        .route(
            "/sre/alerts/rules/{id}/backtest.csv",
            get(sre_alert_rules::backtest_csv),
        )
        .route("/finance", get(|| async { Redirect::to("/finance/cost") }))
        .route("/finance/cost", get(finance::cost_page))
        .route("/finance/cost.csv", get(finance::cost_csv))
        .route("/finance/cost/top.csv", get(finance::top_csv))
        .route("/finance/statement", get(finance::statement_page))
        .route("/finance/statement.csv", get(finance::statement_csv))
        .route("/finance/budgets", get(finance::budgets_page))
        .route("/finance/budgets.csv", get(finance::budgets_csv))
        .route("/finance/budgets/{id}", get(finance::budget_page))
        .route("/static/{file}", get(assets::serve))
        .with_state(DashboardState {
            read_models,
            prices,
            budgets,
            alerts: alerting.as_ref().map(|a| a.store.clone()),
            keys: alerting.map(|a| a.keys),
        });
    match audit {
        Some(audit) => pages.merge(compliance::router(audit)),
        None => pages,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tollgate_control::config::ClickHouseConfig;
    use tower::ServiceExt;

    #[tokio::test]
    async fn static_assets_and_redirects_need_no_clickhouse() {
        let config = ClickHouseConfig {
            url: "http://127.0.0.1:9".into(),
            ..ClickHouseConfig::default()
        };
        let app = router(ReadModels::new(&config));
        let response = app
            .clone()
            .oneshot(
                Request::get("/static/chart.umd.js")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("text/javascript"),
            "{content_type}"
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("Chart.js"));
        let response = app
            .oneshot(Request::get("/finance").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(response.status().is_redirection());
    }
}
