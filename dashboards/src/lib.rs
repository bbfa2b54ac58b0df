//! Dashboards: the HTML pages for SRE, finance and compliance users, rendered
//! server-side with askama, their charts (Chart.js, vendored) and the static
//! assets, plus the axum routes that serve all of it. Data comes from the
//! read models in `tollgate-processors`; nothing here talks SQL.
//!
//! The API crate mounts [`router`] next to its JSON routes.

pub mod assets;
pub mod compliance;
pub mod finance;
pub mod layout;
pub mod sre_latency;

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use tollgate_processors::read_models::ReadModels;

/// What every dashboard handler can reach.
#[derive(Clone)]
pub struct DashboardState {
    pub read_models: ReadModels,
    /// The price catalog, for unit prices on statements (`None`: shown
    /// without unit prices).
    pub prices: Option<tollgate_control::prices::store::PriceStore>,
    /// Budgets (`None`: the budgets page says it needs PostgreSQL).
    pub budgets: Option<tollgate_control::budgets::BudgetStore>,
}

/// All dashboard pages and `/static/*`, without the price catalog.
pub fn router(read_models: ReadModels) -> Router {
    router_with(read_models, None, None)
}

/// All dashboard pages and `/static/*`.
pub fn router_with(
    read_models: ReadModels,
    prices: Option<tollgate_control::prices::store::PriceStore>,
    budgets: Option<tollgate_control::budgets::BudgetStore>,
) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/sre/latency") }))
        .route("/sre", get(|| async { Redirect::to("/sre/latency") }))
        .route("/sre/latency", get(sre_latency::page))
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
        })
}
