//! `/admin/keys`: every API key the admin administers (name, prefix, org
//! scope, role, created, revoked) with its CSV, the form that creates one
//! (its secret is shown once, on the answer to the form, and is neither
//! stored nor logged), and revoking one after a confirmation page.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::SecondsFormat;
use tollgate_control::keys::{ApiKey, KeyStore, ROLES};
use tollgate_control::ControlError;
use tollgate_queries::Table;
use uuid::Uuid;

use super::caller::Admin;
use super::page::{error_for, field, message, respond, respond_csv, FieldError, Head};
use crate::display::{Figure, Instant};
use crate::layout::{render, Section};
use crate::DashboardState;
use tollgate_access::Identity;

/// The keys an admin administers, as the page and the CSV show them.
pub fn table(keys: &[ApiKey]) -> Table {
    let mut table = Table::new(["name", "prefix", "org", "role", "created_at", "revoked_at"]);
    for k in keys {
        table.push([
            k.name.clone(),
            k.prefix.clone(),
            k.org_id.clone().unwrap_or_else(|| "all orgs".into()),
            k.role.clone(),
            k.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            k.revoked_at
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_default(),
        ]);
    }
    table
}

/// The create form's fields, as typed.
#[derive(Debug, Clone, Default)]
pub struct KeyForm {
    pub name: String,
    pub role: String,
    pub org: String,
}

/// One row of the list: its cells, and the key's id when it can still be
/// revoked.
pub struct KeyRow {
    pub cells: Vec<Figure>,
    pub revocable: Option<Uuid>,
}

impl KeyRow {
    /// The CSV's cells, its times as [`Instant`]s (the viewer's zone, the
    /// CSV's UTC value on hover).
    fn of(k: &ApiKey, csv: Vec<String>) -> Self {
        let cells = csv
            .into_iter()
            .enumerate()
            .map(|(i, cell)| match i {
                4 => Instant::new(k.created_at).into(),
                5 => k
                    .revoked_at
                    .map_or(Figure::Blank, |t| Instant::new(t).into()),
                _ => Figure::Text(cell),
            })
            .collect();
        Self {
            cells,
            revocable: k.revoked_at.is_none().then_some(k.id),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_keys.html")]
pub struct KeysPage {
    pub section: Section,
    pub head: Head,
    pub columns: Vec<String>,
    pub rows: Vec<KeyRow>,
    pub form: KeyForm,
    pub roles: Vec<(&'static str, bool)>,
    /// Whether a new key must name an org (the admin is not one of every
    /// org).
    pub org_required: bool,
    pub error: Option<FieldError>,
    pub notice: Option<String>,
}

impl KeysPage {
    fn error_for(&self, field: &str) -> Option<String> {
        error_for(&self.error, field)
    }
}

#[derive(Template)]
#[template(path = "admin_key_created.html")]
pub struct KeyCreatedPage {
    pub section: Section,
    pub head: Head,
    pub key: ApiKey,
    pub secret: String,
}

#[derive(Template)]
#[template(path = "admin_key_revoke.html")]
pub struct RevokePage {
    pub section: Section,
    pub head: Head,
    pub key: ApiKey,
}

fn store(state: &DashboardState) -> Result<&KeyStore, Response> {
    state.keys.as_ref().ok_or_else(|| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "API keys need PostgreSQL; this server runs without it".into(),
        )
    })
}

fn unavailable(err: ControlError) -> Response {
    tracing::error!(%err, "admin keys page: key store failed");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        format!("the key store failed: {err}"),
    )
}

/// The keys this admin's lists show.
async fn listed_keys(admin: &Admin, keys: &KeyStore) -> Result<Vec<ApiKey>, Response> {
    Ok(keys
        .list()
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|k| admin.lists(k.org_id.as_deref()))
        .collect())
}

async fn keys_page(
    admin: &Admin,
    keys: &KeyStore,
    form: KeyForm,
    error: Option<FieldError>,
    notice: Option<String>,
) -> Result<KeysPage, Response> {
    let visible = listed_keys(admin, keys).await?;
    let table = table(&visible);
    let columns = table.columns().map(str::to_string).collect();
    let rows = visible
        .iter()
        .zip(table.into_rows())
        .map(|(k, cells)| KeyRow::of(k, cells))
        .collect();
    let roles = ROLES.iter().map(|r| (*r, *r == form.role)).collect();
    Ok(KeysPage {
        section: Section::Admin,
        head: admin.head(),
        columns,
        rows,
        form,
        roles,
        org_required: !admin.administers(None),
        error,
        notice,
    })
}

/// `GET /admin/keys`
pub async fn list_page(State(state): State<DashboardState>, identity: Identity) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let keys = store(&state)?;
        let form = KeyForm {
            role: "ingest".into(),
            org: admin.pinned().unwrap_or_default().to_string(),
            ..KeyForm::default()
        };
        keys_page(&admin, keys, form, None, None).await
    }
    .await;
    respond(result)
}

/// `GET /admin/keys.csv`
pub async fn csv(State(state): State<DashboardState>, identity: Identity) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let keys = store(&state)?;
        Ok::<_, Response>(table(&listed_keys(&admin, keys).await?))
    }
    .await;
    respond_csv(result, "keys.csv")
}

/// `POST /admin/keys` (`name`, `role`, `org`): create the key and
/// show its secret, once; a refused field is shown next to it, the form
/// refilled.
pub async fn create(
    State(state): State<DashboardState>,
    identity: Identity,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let keys = store(&state)?;
        let text = |name: &str| field(&pairs, name).unwrap_or("").trim().to_string();
        let form = KeyForm {
            name: text("name"),
            role: text("role"),
            org: text("org"),
        };
        let org = Some(form.org.as_str()).filter(|o| !o.is_empty());
        if !admin.administers(org) {
            let error = FieldError::new(
                "org",
                match org {
                    Some(org) => format!("you are not an admin of org {org}"),
                    None => "is required: name an org you are admin of".into(),
                },
            );
            let page = keys_page(&admin, keys, form, Some(error), None).await?;
            return Ok(render(StatusCode::BAD_REQUEST, &page));
        }
        let created = match keys.create(&form.name, org, &form.role).await {
            Ok(created) => created,
            Err(ControlError::InvalidInput { field, reason }) => {
                let page = keys_page(
                    &admin,
                    keys,
                    form,
                    Some(FieldError::new(field, reason)),
                    None,
                )
                .await?;
                return Ok(render(StatusCode::BAD_REQUEST, &page));
            }
            Err(err) => return Err(unavailable(err)),
        };
        let key = keys
            .find(&created.prefix)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Not found",
                    "the new key was not found again".into(),
                )
            })?;
        tracing::info!(
            actor = admin.actor(),
            prefix = key.prefix,
            "api key created on the admin page"
        );
        let page = KeyCreatedPage {
            section: Section::Admin,
            head: admin.head(),
            key,
            secret: created.secret,
        };
        // The secret is in this answer only: no cache may keep it.
        let mut response = render(StatusCode::CREATED, &page);
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        Ok(response)
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// The active key `id` if this admin administers it; otherwise a 404 page.
async fn revocable(admin: &Admin, keys: &KeyStore, id: &str) -> Result<ApiKey, Response> {
    let not_found = || admin.not_found(format!("no active key {id}"));
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let key = keys
        .list()
        .await
        .map_err(unavailable)?
        .into_iter()
        .find(|k| k.id == id && k.revoked_at.is_none())
        .filter(|k| admin.administers(k.org_id.as_deref()))
        .ok_or_else(not_found)?;
    Ok(key)
}

/// `GET /admin/keys/{id}/revoke`: what would be revoked, and the button.
pub async fn revoke_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let keys = store(&state)?;
        let key = revocable(&admin, keys, &id).await?;
        Ok::<_, Response>(RevokePage {
            section: Section::Admin,
            head: admin.head(),
            key,
        })
    }
    .await;
    respond(result)
}

/// `POST /admin/keys/{id}/revoke`: revoke, then to the list.
pub async fn revoke(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let keys = store(&state)?;
        let key = revocable(&admin, keys, &id).await?;
        keys.revoke_id(key.id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| admin.not_found(format!("no active key {id}")))?;
        tracing::info!(
            actor = admin.actor(),
            prefix = key.prefix,
            "api key revoked on the admin page"
        );
        Ok::<_, Response>(Redirect::to("/admin/keys").into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}
