//! `/admin/budgets`: every budget the admin administers with its CSV, and
//! creating, editing and deleting one. A form is checked by the API's own
//! rule (`BudgetSpec::parse`, fields named as the API body names them);
//! a refused field is shown next to it with the form refilled. Each
//! change is the store's transaction with its `admin.budget.set` /
//! `admin.budget.deleted` event in the outbox, as through the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use tollgate_control::budgets::admin::BudgetSpec;
use tollgate_control::budgets::{Budget, BudgetStore};
use tollgate_control::keys::KeyStore;
use tollgate_queries::Table;

use super::caller::Admin;
use super::page::{error_for, field, message, respond, respond_csv, FieldError, Head};
use crate::display::{Figure, Money};
use crate::layout::{render, Section};
use crate::DashboardState;
use tollgate_access::Identity;

fn thresholds_text(thresholds: &[i32]) -> String {
    thresholds
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Budgets (with the org each belongs to) as the page and the CSV show
/// them.
pub fn table(budgets: &[(Budget, Option<String>)]) -> Table {
    let mut table = Table::new([
        "id",
        "org_id",
        "subject_kind",
        "subject_id",
        "period",
        "limit_usd",
        "enforcement",
        "thresholds",
    ]);
    for (b, org) in budgets {
        table.push([
            b.id.to_string(),
            org.clone().unwrap_or_default(),
            b.subject_kind.name().to_string(),
            b.subject_id.clone(),
            b.period.name().to_string(),
            tollgate_queries::table::usd(b.limit_usd),
            if b.hard { "hard" } else { "soft" }.to_string(),
            thresholds_text(&b.thresholds),
        ]);
    }
    table
}

/// The budget form's fields, as typed (named as the API body names them).
#[derive(Debug, Clone)]
pub struct BudgetForm {
    /// The org the budget belongs to (empty: an org subject's own, the
    /// pinned org, or none for an admin of every org).
    pub org_id: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub period: String,
    pub limit_usd: String,
    pub enforcement: String,
    /// Percentages, comma-separated.
    pub thresholds: String,
}

impl BudgetForm {
    fn fresh(admin: &Admin) -> Self {
        Self {
            org_id: admin.pinned().unwrap_or_default().to_string(),
            subject_kind: "team".into(),
            subject_id: String::new(),
            period: "monthly".into(),
            limit_usd: String::new(),
            enforcement: "hard".into(),
            thresholds: "50, 80, 100".into(),
        }
    }

    fn of_budget(b: &Budget, org: Option<&str>) -> Self {
        Self {
            org_id: org.unwrap_or_default().to_string(),
            subject_kind: b.subject_kind.name().into(),
            subject_id: b.subject_id.clone(),
            period: b.period.name().into(),
            limit_usd: b.limit_usd.normalize().to_string(),
            enforcement: if b.hard { "hard" } else { "soft" }.into(),
            thresholds: thresholds_text(&b.thresholds),
        }
    }

    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let text = |name: &str| field(pairs, name).unwrap_or("").to_string();
        Self {
            org_id: text("org_id").trim().to_string(),
            subject_kind: text("subject_kind"),
            subject_id: text("subject_id"),
            period: text("period"),
            limit_usd: text("limit_usd").trim().to_string(),
            enforcement: text("enforcement"),
            thresholds: text("thresholds"),
        }
    }

    /// The budget, checked as `POST /api/v1/admin/budgets` checks it, in
    /// the org it belongs to: the one named, else an org subject's own,
    /// else the org the request is pinned to; without one, only an admin of
    /// every org may set it.
    pub fn spec(&self, admin: &Admin) -> Result<BudgetSpec, FieldError> {
        let spec = self.spec_alone()?;
        let org = Some(self.org_id.clone())
            .filter(|o| !o.is_empty())
            .or_else(|| spec.org_id.clone())
            .or_else(|| admin.pinned().map(str::to_string));
        match org {
            Some(org) => {
                if !admin.administers(Some(&org)) {
                    return Err(FieldError::new("org_id", format!("no org {org}")));
                }
                spec.in_org(&org)
                    .map_err(|e| FieldError::new(e.field, e.reason))
            }
            None if admin.administers(None) => Ok(spec),
            None => Err(FieldError::new(
                "org_id",
                "is required: name the org the budget belongs to",
            )),
        }
    }

    fn spec_alone(&self) -> Result<BudgetSpec, FieldError> {
        let mut thresholds = Vec::new();
        for part in self
            .thresholds
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
        {
            let percent = part.trim_end_matches('%').parse::<i64>().map_err(|_| {
                FieldError::new(
                    "thresholds",
                    format!("`{part}` is not a whole percent of the limit"),
                )
            })?;
            thresholds.push(percent);
        }
        BudgetSpec::parse(
            &self.subject_kind,
            &self.subject_id,
            &self.period,
            &self.limit_usd,
            &self.enforcement,
            Some(&thresholds),
        )
        .map_err(|e| FieldError::new(e.field, e.reason))
    }
}

/// One row of the list: its cells (the CSV's columns, the limit as
/// [`Money`] with the CSV's value on hover) and the budget's id.
pub struct BudgetRow {
    pub cells: Vec<Figure>,
    pub id: i64,
}

impl BudgetRow {
    fn of(b: &Budget, csv: Vec<String>) -> Self {
        let cells = csv
            .into_iter()
            .enumerate()
            .map(|(i, cell)| match i {
                LIMIT_COLUMN => Money(b.limit_usd).into(),
                _ => Figure::Text(cell),
            })
            .collect();
        Self { cells, id: b.id }
    }
}

/// The position of `limit_usd` in [`table`].
const LIMIT_COLUMN: usize = 5;

#[derive(Template)]
#[template(path = "admin_budgets.html")]
pub struct BudgetsPage {
    pub section: Section,
    pub head: Head,
    pub columns: Vec<String>,
    pub rows: Vec<BudgetRow>,
    pub scoped: bool,
}

#[derive(Template)]
#[template(path = "admin_budget_form.html")]
pub struct BudgetFormPage {
    pub section: Section,
    pub head: Head,
    /// `Some(id)`: editing that budget (its subject and period are fixed).
    pub editing: Option<i64>,
    pub form: BudgetForm,
    pub error: Option<FieldError>,
}

impl BudgetFormPage {
    fn error_for(&self, field: &str) -> Option<String> {
        error_for(&self.error, field)
    }

    fn options(&self, field: &str) -> Vec<(&'static str, bool)> {
        let (choices, current): (&[&'static str], &str) = match field {
            "subject_kind" => (&["org", "team", "user", "key"], &self.form.subject_kind),
            "period" => (&["monthly", "daily"], &self.form.period),
            _ => (&["hard", "soft"], &self.form.enforcement),
        };
        choices.iter().map(|c| (*c, *c == current)).collect()
    }
}

#[derive(Template)]
#[template(path = "admin_budget_delete.html")]
pub struct DeletePage {
    pub section: Section,
    pub head: Head,
    pub budget: Budget,
}

fn store(state: &DashboardState) -> Result<&BudgetStore, Response> {
    state.budgets.as_ref().ok_or_else(|| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "budgets need PostgreSQL; this server runs without it".into(),
        )
    })
}

fn unavailable(doing: &str, err: impl std::fmt::Display) -> Response {
    tracing::error!(%err, doing, "admin budgets page: postgres failed");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        format!("cannot {doing}: postgres: {err}"),
    )
}

/// The budgets this admin's lists show, with their orgs.
async fn listed(
    admin: &Admin,
    budgets: &BudgetStore,
) -> Result<Vec<(Budget, Option<String>)>, Response> {
    Ok(budgets
        .in_org(admin.pinned())
        .await
        .map_err(|e| unavailable("read the budgets", e))?
        .into_iter()
        .filter(|b| admin.lists(b.org_id.as_deref()))
        .map(|b| {
            let org = b.org_id.clone();
            (b, org)
        })
        .collect())
}

/// Budget `id` and its org if this admin administers it; otherwise a 404
/// page.
async fn one(
    admin: &Admin,
    budgets: &BudgetStore,
    id: &str,
) -> Result<(Budget, Option<String>), Response> {
    let not_found = || admin.not_found(format!("no budget {id}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    budgets
        .in_org(None)
        .await
        .map_err(|e| unavailable("read the budgets", e))?
        .into_iter()
        .find(|b| b.id == id && admin.administers(b.org_id.as_deref()))
        .map(|b| {
            let org = b.org_id.clone();
            (b, org)
        })
        .ok_or_else(not_found)
}

fn form_page(admin: &Admin, editing: Option<i64>, form: BudgetForm) -> BudgetFormPage {
    BudgetFormPage {
        section: Section::Admin,
        head: admin.head(),
        editing,
        form,
        error: None,
    }
}

/// `GET /admin/budgets`
pub async fn list_page(State(state): State<DashboardState>, identity: Identity) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let budgets = listed(&admin, store(&state)?).await?;
        let table = table(&budgets);
        let columns = table.columns().map(str::to_string).collect();
        let rows = budgets
            .iter()
            .zip(table.into_rows())
            .map(|((b, _), cells)| BudgetRow::of(b, cells))
            .collect();
        Ok::<_, Response>(BudgetsPage {
            section: Section::Admin,
            head: admin.head(),
            columns,
            rows,
            scoped: !admin.administers(None),
        })
    }
    .await;
    respond(result)
}

/// `GET /admin/budgets.csv`
pub async fn csv(State(state): State<DashboardState>, identity: Identity) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        Ok::<_, Response>(table(&listed(&admin, store(&state)?).await?))
    }
    .await;
    respond_csv(result, "budgets.csv")
}

/// `GET /admin/budgets/new`
pub async fn new_page(identity: Identity) -> Response {
    let admin = Admin::of(identity);
    let form = BudgetForm::fresh(&admin);
    render(StatusCode::OK, &form_page(&admin, None, form))
}

/// `GET /admin/budgets/{id}/edit`
pub async fn edit_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let (budget, org) = one(&admin, store(&state)?, &id).await?;
        let form = BudgetForm::of_budget(&budget, org.as_deref());
        Ok::<_, Response>(form_page(&admin, Some(budget.id), form))
    }
    .await;
    respond(result)
}

/// `POST /admin/budgets/new`: create it (or replace the budget of the same
/// subject and period, as the API does), then to the list.
pub async fn create(
    State(state): State<DashboardState>,
    identity: Identity,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save(&state, identity, &pairs, None).await
}

/// `POST /admin/budgets/{id}/edit`: change its limit, enforcement and
/// thresholds (subject and period are the stored budget's).
pub async fn update(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save(&state, identity, &pairs, Some(&id)).await
}

async fn save(
    state: &DashboardState,
    identity: Identity,
    pairs: &[(String, String)],
    editing: Option<&str>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let budgets = store(state)?;
        let mut form = BudgetForm::from_pairs(pairs);
        let stored = match editing {
            Some(id) => Some(one(&admin, budgets, id).await?),
            None => None,
        };
        if let Some((b, org)) = &stored {
            form.org_id = org.clone().unwrap_or_default();
            form.subject_kind = b.subject_kind.name().into();
            form.subject_id = b.subject_id.clone();
            form.period = b.period.name().into();
        }
        let mut page = form_page(&admin, stored.as_ref().map(|(b, _)| b.id), form.clone());
        let named = match form.spec(&admin) {
            Ok(spec) => spec
                .naming_key(&KeyStore::new(budgets.pool().clone()))
                .await
                .map_err(|e| unavailable("read the API keys", e))?
                .map_err(|e| FieldError::new(e.field, e.reason))
                .and_then(|spec| match &stored {
                    // A budget stored by a key's prefix (before 2026-12-07)
                    // is not that key's; saving it would set (or replace)
                    // the budget of the key's id, another budget.
                    Some((b, _)) if b.subject_id != spec.subject_id => Err(FieldError::new(
                        "subject_id",
                        format!(
                            "this budget names its key by the prefix {}, so it never applied: \
                             set a budget of the key and delete this one",
                            b.subject_id
                        ),
                    )),
                    _ => Ok(spec),
                }),
            Err(error) => Err(error),
        };
        let spec = match named {
            Ok(spec) => spec,
            Err(error) => {
                page.error = Some(error);
                return Ok(render(StatusCode::BAD_REQUEST, &page));
            }
        };
        let set = budgets
            .set(&spec, admin.actor())
            .await
            .map_err(|e| unavailable("store the budget", e))?;
        tracing::info!(
            actor = admin.actor(),
            budget_id = set.budget.id,
            event_id = %set.event.event_id,
            "budget set on the admin page"
        );
        Ok::<_, Response>(Redirect::to("/admin/budgets").into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// `GET /admin/budgets/{id}/delete`: what would be deleted, and the button.
pub async fn delete_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let (budget, _) = one(&admin, store(&state)?, &id).await?;
        Ok::<_, Response>(DeletePage {
            section: Section::Admin,
            head: admin.head(),
            budget,
        })
    }
    .await;
    respond(result)
}

/// `POST /admin/budgets/{id}/delete`: delete, then to the list.
pub async fn delete(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let budgets = store(&state)?;
        let (budget, _) = one(&admin, budgets, &id).await?;
        budgets
            .delete(budget.id, admin.actor())
            .await
            .map_err(|e| unavailable("delete the budget", e))?
            .ok_or_else(|| admin.not_found(format!("no budget {id}")))?;
        Ok::<_, Response>(Redirect::to("/admin/budgets").into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}
