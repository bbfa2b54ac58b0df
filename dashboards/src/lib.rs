//! Dashboards: the overview, the HTML pages for SRE, finance and
//! compliance users and the sign-in pages, rendered server-side with
//! askama, their charts (Chart.js, vendored; inline SVG) and the static
//! assets, plus the routes that serve all of it, each with its access rule (`tollgate-access`). Data comes from the read
//! side, `tollgate-queries`; nothing here talks SQL.
//!
//! The binary serves [`routes`] next to the JSON API's (`tollgate-api`);
//! the two crates are siblings.

pub mod admin;
pub mod alert_access;
pub mod assets;
pub mod carry;
pub mod compliance;
pub mod display;
pub mod finance;
pub mod key_labels;
pub mod last_day;
pub mod layout;
pub mod login_token;
pub mod nav;
pub mod overview;
mod read_failure;
pub mod sign_in;
pub mod sign_in_sso;
pub mod sre_alert_rules;
pub mod sre_alerts;
pub mod sre_breakers;
pub mod sre_errors;
pub mod sre_form;
pub mod sre_latency;
pub mod svg;
pub mod trace_link;

use axum::http::Uri;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;
use tollgate_access::{
    Access, OrgFrom, Routes, ALERT_READERS, ALERT_WRITERS, COST_READERS, READERS, SRE_READERS,
};
use tollgate_control::accounts::{AccountStore, SessionStore};
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
    /// API keys.
    pub keys: Option<tollgate_control::keys::KeyStore>,
    /// People and their sessions (`None`: sign-in says it is unavailable).
    pub accounts: Option<AccountStore>,
    pub sessions: Option<SessionStore>,
    /// Single sign-on is configured (the sign-in page offers it).
    pub sso: bool,
    /// Links from calls to their traces (`api.trace_url`).
    pub trace_links: trace_link::TraceLinks,
}

/// What the pages are served with besides the read models; `None`s when
/// PostgreSQL was unreachable at start.
#[derive(Clone, Default)]
pub struct PageServices {
    pub prices: Option<tollgate_control::prices::store::PriceStore>,
    pub budgets: Option<tollgate_control::budgets::BudgetStore>,
    pub audit: Option<tollgate_queries::audit::access::AuditAccess>,
    pub alerts: Option<tollgate_control::alerts::AlertStore>,
    pub keys: Option<tollgate_control::keys::KeyStore>,
    pub accounts: Option<AccountStore>,
    pub sessions: Option<SessionStore>,
    /// Single sign-on (`[auth.oidc]`); its routes answer 404 without it.
    pub sso: Option<sign_in_sso::SingleSignOn>,
    /// Links from calls to their traces (`api.trace_url`).
    pub trace_links: trace_link::TraceLinks,
}

/// All dashboard pages, the sign-in pages and `/static/*`, each route
/// with its access rule; the compliance pages when `services.audit` is
/// given. The binary puts the gate in front (`tollgate_access::Gate`).
pub fn routes(read_models: ReadModels, services: PageServices) -> Routes {
    let sre = Access::read(SRE_READERS);
    let cost = Access::read(COST_READERS);
    let alerts = Access::read(ALERT_READERS)
        .write(ALERT_WRITERS)
        .org(OrgFrom::Handler);
    let signed_in = Access::read(READERS).write(READERS).org(OrgFrom::None);
    let pages = Routes::new()
        .route(
            "/",
            Access::read(READERS).org(OrgFrom::None),
            get(sign_in::home),
        )
        .route(
            "/overview",
            Access::read(READERS).org(OrgFrom::Query),
            get(overview::page),
        )
        .route(
            "/login",
            Access::public(),
            get(sign_in::sign_in_page).post(sign_in::sign_in_submit),
        )
        .route(
            "/logout",
            signed_in,
            get(sign_in::sign_out_page).post(sign_in::sign_out),
        )
        .route(
            "/invitations/{token}",
            Access::public(),
            get(sign_in::invitation_page).post(sign_in::accept_invitation),
        )
        .route(
            "/sre",
            sre.org(OrgFrom::None),
            get(|uri: Uri| crate::nav::to_home("/sre/latency", uri)),
        )
        .route("/sre/latency", sre, get(sre_latency::page))
        .route(
            "/sre/latency/slowest.csv",
            sre,
            get(sre_latency::slowest_csv),
        )
        .route("/sre/latency/totals.csv", sre, get(sre_latency::totals_csv))
        .route("/sre/errors", sre, get(sre_errors::list_page))
        .route(
            "/sre/errors/{signature}",
            sre,
            get(sre_errors::pattern_page),
        )
        .route(
            "/sre/breakers",
            sre.org(OrgFrom::None),
            get(sre_breakers::page),
        )
        .route("/sre/alerts", alerts, get(sre_alerts::page))
        .route(
            "/sre/alerts/login",
            Access::public(),
            get(|| async { Redirect::to("/login?next=%2Fsre%2Falerts") }),
        )
        .route(
            "/sre/alerts/alerts.csv",
            alerts,
            get(sre_alerts::alerts_csv),
        )
        .route(
            "/sre/alerts/transitions.csv",
            alerts,
            get(sre_alerts::transitions_csv),
        )
        .route(
            "/sre/alerts/silences.csv",
            alerts,
            get(sre_alerts::silences_csv),
        )
        .route(
            "/sre/alerts/dead-letters.csv",
            alerts,
            get(sre_alerts::dead_letters_csv),
        )
        .route(
            "/sre/alerts/silences",
            alerts,
            post(sre_alerts::create_silence),
        )
        .route(
            "/sre/alerts/silences/{id}/expire",
            alerts,
            post(sre_alerts::expire_silence),
        )
        .route(
            "/sre/alerts/rules",
            alerts,
            get(sre_alert_rules::rules_page),
        )
        .route(
            "/sre/alerts/rules.csv",
            alerts,
            get(sre_alert_rules::rules_csv),
        )
        .route(
            "/sre/alerts/rules/new",
            alerts,
            get(sre_alert_rules::new_rule_page).post(sre_alert_rules::new_rule_submit),
        )
        .route(
            "/sre/alerts/rules/{id}",
            alerts,
            get(sre_alert_rules::rule_page),
        )
        .route(
            "/sre/alerts/rules/{id}/edit",
            alerts,
            get(sre_alert_rules::edit_rule_page).post(sre_alert_rules::edit_rule_submit),
        )
        .route(
            "/sre/alerts/rules/{id}/delete",
            alerts,
            post(sre_alert_rules::delete_rule_submit),
        )
        .route(
            "/sre/alerts/rules/{id}/backtest.csv",
            alerts,
            get(sre_alert_rules::backtest_csv),
        )
        .route(
            "/finance",
            cost.org(OrgFrom::None),
            get(|uri: Uri| crate::nav::to_home("/finance/cost", uri)),
        )
        .route("/finance/cost", cost, get(finance::cost_page))
        .route("/finance/cost.csv", cost, get(finance::cost_csv))
        .route("/finance/cost/top.csv", cost, get(finance::top_csv))
        .route("/finance/statement", cost, get(finance::statement_page))
        .route("/finance/statement.csv", cost, get(finance::statement_csv))
        .route(
            "/finance/budgets",
            cost.org(OrgFrom::Handler),
            get(finance::budgets_page),
        )
        .route(
            "/finance/budgets.csv",
            cost.org(OrgFrom::Handler),
            get(finance::budgets_csv),
        )
        .route(
            "/finance/budgets/{id}",
            cost.org(OrgFrom::Handler),
            get(finance::budget_page),
        )
        .route("/static/{file}", Access::public(), get(assets::serve))
        .merge(admin::routes())
        .with_state(DashboardState {
            read_models,
            prices: services.prices,
            budgets: services.budgets,
            alerts: services.alerts,
            keys: services.keys,
            accounts: services.accounts,
            sessions: services.sessions,
            sso: services.sso.is_some(),
            trace_links: services.trace_links,
        })
        .merge(sign_in_sso::routes(services.sso));
    match services.audit {
        Some(audit) => pages.merge(compliance::routes(audit)),
        None => pages,
    }
}

/// [`routes`] as a router, with the navigation layer ([`nav::inject`]).
pub fn router(read_models: ReadModels, services: PageServices) -> Router {
    with_navigation(routes(read_models, services).into_router())
}

/// The pages' navigation filled in on every HTML page of `router`.
pub fn with_navigation(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(nav::inject))
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
        /// Knows nobody: every protected page sends the browser to sign in.
        struct Nobody;
        impl tollgate_access::Authenticator for Nobody {
            fn identify<'a>(
                &'a self,
                _: &'a tollgate_access::Credentials,
            ) -> futures::future::BoxFuture<
                'a,
                Result<Option<tollgate_access::Identity>, tollgate_access::Refusal>,
            > {
                Box::pin(async { Ok(None) })
            }
        }
        let app = router(ReadModels::new(&config), PageServices::default())
            .layer(tollgate_access::Gate::new(Nobody).layer());
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
            .oneshot(Request::get("/finance?org=a").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()["location"],
            "/login?next=%2Ffinance%3Forg%3Da"
        );
    }
}
