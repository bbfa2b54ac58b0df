//! The admin pages under `/admin`: people and their roles ([`people`]:
//! list, invite, grants, disable), API keys ([`keys`]: list, create with
//! the secret shown once, revoke), budgets ([`budgets`]: list, create,
//! edit, delete with the API's validation and admin events) and the price
//! catalog ([`prices`]: versions per model, adding a version with a
//! preview of what it would reprice, importing a LiteLLM file). Only
//! `admin`s open them ([`caller`]); every table has its CSV and every form
//! carries the session's CSRF token.

// A refused request is answered with the page that says why; the helpers
// hand that response back in `Err` (once per request, so its size does not
// matter).
#![allow(clippy::result_large_err)]

pub mod budgets;
pub mod caller;
pub mod keys;
pub mod page;
pub mod people;
pub mod prices;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::get;
use tollgate_access::{Access, OrgFrom, Routes, ADMINS};

use crate::DashboardState;

/// Every admin page: `admin`s only. Lists and forms follow the `org` query
/// parameter (pinned by the gate for an admin of some orgs); pages of one
/// key or budget check its org themselves; the price catalog is not per
/// org.
pub fn routes() -> Routes<DashboardState> {
    let lists = Access::read(ADMINS).write(ADMINS);
    let rows = lists.org(OrgFrom::Handler);
    let catalog = lists.org(OrgFrom::None);
    Routes::new()
        .route(
            "/admin",
            catalog,
            get(|uri: Uri| crate::nav::to_home("/admin/keys", uri)),
        )
        .route(
            "/admin/keys",
            lists,
            get(keys::list_page).post(keys::create),
        )
        .route("/admin/keys.csv", lists, get(keys::csv))
        .route(
            "/admin/keys/{id}/revoke",
            rows,
            get(keys::revoke_page).post(keys::revoke),
        )
        .route("/admin/budgets", lists, get(budgets::list_page))
        .route("/admin/budgets.csv", lists, get(budgets::csv))
        .route(
            "/admin/budgets/new",
            lists,
            get(budgets::new_page).post(budgets::create),
        )
        .route(
            "/admin/budgets/{id}/edit",
            rows,
            get(budgets::edit_page).post(budgets::update),
        )
        .route(
            "/admin/budgets/{id}/delete",
            rows,
            get(budgets::delete_page).post(budgets::delete),
        )
        .route("/admin/users", lists, get(people::list_page))
        .route("/admin/users.csv", lists, get(people::csv))
        .route(
            "/admin/users/invite",
            lists,
            axum::routing::post(people::invite),
        )
        .route(
            "/admin/users/{id}/grants",
            rows,
            axum::routing::post(people::set_grants),
        )
        .route(
            "/admin/users/{id}/disable",
            rows,
            axum::routing::post(people::disable),
        )
        .route("/admin/prices", catalog, get(prices::list_page))
        .route("/admin/prices.csv", catalog, get(prices::csv))
        .route(
            "/admin/prices/new",
            catalog,
            get(prices::new_page).post(prices::submit),
        )
        .route(
            "/admin/prices/import",
            catalog,
            get(prices::import_page)
                .post(prices::import)
                .layer(DefaultBodyLimit::max(prices::MAX_IMPORT_BYTES)),
        )
}
