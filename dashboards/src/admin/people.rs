//! `/admin/users`: people and their roles. The list (email, name, state,
//! grants) with its CSV; inviting someone with a role in an org (the link
//! is shown once, on the answer); replacing a person's grants and
//! disabling an account. An admin of some orgs sees the people with a
//! grant there and changes only those whose every grant is in an org they
//! administer (anyone else is a 404), and grants only their orgs.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::Form;
use chrono::{SecondsFormat, Utc};
use tollgate_access::Identity;
use tollgate_control::accounts::{AccountStore, Grant, Role, UserWithGrants};
use tollgate_control::ControlError;
use tollgate_queries::Table;
use uuid::Uuid;

use super::caller::Admin;
use super::page::{field, message, respond, respond_csv, FieldError, Head};
use crate::display::Instant;
use crate::layout::{render, Section};
use crate::DashboardState;

fn accounts(state: &DashboardState) -> Result<&AccountStore, Response> {
    state.accounts.as_ref().ok_or_else(|| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "people need PostgreSQL; this server runs without it".into(),
        )
    })
}

fn state_of(u: &UserWithGrants) -> &'static str {
    if u.user.disabled_at.is_some() {
        "disabled"
    } else if u.user.locked_until.is_some_and(|t| t > Utc::now()) {
        "locked"
    } else {
        "active"
    }
}

fn grants_text(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(|g| format!("{}:{}", g.org_id.as_deref().unwrap_or("*"), g.role))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The people an admin sees, and whether they manage each: everyone for
/// an admin of every org, else those with a grant in an org they
/// administer, with only the grants of the orgs they administer (another
/// org's grants of a shared person are that org's business).
async fn listed(
    admin: &Admin,
    store: &AccountStore,
) -> Result<Vec<(UserWithGrants, bool)>, Response> {
    let all = store.list_users().await.map_err(failed)?;
    Ok(all
        .into_iter()
        .filter(|u| {
            admin.administers(None)
                || u.grants
                    .iter()
                    .any(|g| g.org_id.is_some() && admin.lists(g.org_id.as_deref()))
        })
        .map(|mut u| {
            let managed = manages(admin, &u);
            u.grants.retain(|g| admin.administers(g.org_id.as_deref()));
            (u, managed)
        })
        .collect())
}

fn failed(err: ControlError) -> Response {
    tracing::error!(%err, "people page cannot read accounts");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        err.to_string(),
    )
}

/// The people as the page and the CSV show them.
pub fn table(users: &[UserWithGrants]) -> Table {
    let mut table = Table::new(["email", "name", "state", "grants", "sso", "created_at"]);
    for u in users {
        table.push([
            u.user.email.clone(),
            u.user.display_name.clone(),
            state_of(u).to_string(),
            grants_text(&u.grants),
            u.user.sso_issuer.clone().unwrap_or_default(),
            u.user.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ]);
    }
    table
}

pub struct PersonRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub state: &'static str,
    pub grants: String,
    /// Every grant of theirs is in an org this admin administers: the
    /// change forms are shown (others are changed by an admin of every
    /// org).
    pub managed: bool,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
pub struct PeoplePage {
    pub section: Section,
    pub head: Head,
    pub rows: Vec<PersonRow>,
    /// Whether the change forms are shown.
    pub manages: bool,
    pub roles: Vec<&'static str>,
    pub invite_email: String,
    pub invite_org: String,
    pub error: Option<FieldError>,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_invited.html")]
pub struct InvitedPage {
    pub section: Section,
    pub head: Head,
    pub email: String,
    pub grant: String,
    pub link: String,
    /// When the link stops working, in the viewer's zone.
    pub expires: Instant,
}

async fn page(
    admin: &Admin,
    store: &AccountStore,
    error: Option<FieldError>,
    notice: Option<String>,
) -> Result<PeoplePage, Response> {
    let rows = listed(admin, store)
        .await?
        .iter()
        .map(|(u, managed)| PersonRow {
            id: u.user.id,
            email: u.user.email.clone(),
            name: u.user.display_name.clone(),
            state: state_of(u),
            grants: grants_text(&u.grants),
            managed: *managed,
        })
        .collect();
    Ok(PeoplePage {
        section: Section::Admin,
        head: admin.head(),
        rows,
        manages: true,
        roles: Role::ALL.map(Role::as_str).to_vec(),
        invite_email: String::new(),
        invite_org: admin.pinned().unwrap_or_default().to_string(),
        error,
        notice,
    })
}

/// `GET /admin/users`
pub async fn list_page(State(state): State<DashboardState>, identity: Identity) -> Response {
    let admin = Admin::of(identity);
    let result = async { page(&admin, accounts(&state)?, None, None).await }.await;
    respond(result)
}

/// `GET /admin/users.csv`
pub async fn csv(State(state): State<DashboardState>, identity: Identity) -> Response {
    let admin = Admin::of(identity);
    let result = async {
        let people: Vec<UserWithGrants> = listed(&admin, accounts(&state)?)
            .await?
            .into_iter()
            .map(|(person, _)| person)
            .collect();
        Ok::<_, Response>(table(&people))
    }
    .await;
    respond_csv(result, "people.csv")
}

/// `POST /admin/users/invite` (`email`, `org`, `role`): the link, once.
pub async fn invite(
    State(state): State<DashboardState>,
    identity: Identity,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let admin = Admin::of(identity);
    let result = async {
        let store = accounts(&state)?;
        let text = |name: &str| field(&pairs, name).unwrap_or("").trim().to_string();
        let (email, org, role) = (text("email"), text("org"), text("role"));
        let refuse = |error: FieldError| async {
            let mut page = page(&admin, store, Some(error), None).await?;
            page.invite_email = email.clone();
            page.invite_org = org.clone();
            Err::<InvitedPage, Response>(render(StatusCode::BAD_REQUEST, &page))
        };
        let role = match Role::parse(&role) {
            Ok(role) => role,
            Err(reason) => return refuse(FieldError::new("role", reason)).await,
        };
        let org_id = (!org.is_empty() && org != "*").then(|| org.clone());
        if !admin.administers(org_id.as_deref()) {
            let reason = match &org_id {
                Some(org) => format!("you do not administer org {org}"),
                None => "only an admin of every org invites to every org: name an org".into(),
            };
            return refuse(FieldError::new("org", reason)).await;
        }
        let grant = Grant { org_id, role };
        match store.invite(&email, &grant, admin.actor()).await {
            Ok(invitation) => Ok(InvitedPage {
                section: Section::Admin,
                head: admin.head(),
                email: invitation.email,
                grant: grant.describe(),
                link: format!("/invitations/{}", invitation.token),
                expires: Instant::new(invitation.expires_at),
            }),
            Err(ControlError::InvalidInput { field, reason }) => {
                refuse(FieldError::new(field, reason)).await
            }
            Err(err) => Err(failed(err)),
        }
    }
    .await;
    respond(result)
}

/// Whether `admin` manages `person`: every grant of theirs is in an org
/// the admin administers (an admin of every org manages everyone).
fn manages(admin: &Admin, person: &UserWithGrants) -> bool {
    admin.administers(None)
        || (!person.grants.is_empty()
            && person
                .grants
                .iter()
                .all(|g| g.org_id.is_some() && admin.administers(g.org_id.as_deref())))
}

/// The person behind `id` if this admin manages them; anyone else is a
/// 404, as if they did not exist.
async fn managed(
    admin: &Admin,
    store: &AccountStore,
    id: &str,
) -> Result<UserWithGrants, Response> {
    let not_found = || admin.not_found(format!("no person {id}"));
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let person = store
        .user(id)
        .await
        .map_err(failed)?
        .ok_or_else(not_found)?;
    if manages(admin, &person) {
        Ok(person)
    } else {
        Err(not_found())
    }
}

/// `POST /admin/users/{id}/grants` (`grants`: `org:role, ...`).
pub async fn set_grants(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let admin = Admin::of(identity);
    let result = async {
        let store = accounts(&state)?;
        let person = managed(&admin, store, &id).await?;
        let text = field(&pairs, "grants").unwrap_or("");
        let grants: Result<Vec<Grant>, String> = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Grant::parse)
            .collect();
        let grants = match grants.and_then(|grants| {
            match grants
                .iter()
                .find(|g| !admin.administers(g.org_id.as_deref()))
            {
                Some(g) => Err(format!("you do not administer {}", g.describe())),
                None => Ok(grants),
            }
        }) {
            Ok(grants) => grants,
            Err(reason) => {
                let page = page(
                    &admin,
                    store,
                    Some(FieldError::new(
                        "grants",
                        format!("{}: {reason}", person.user.email),
                    )),
                    None,
                )
                .await?;
                return Err(render(StatusCode::BAD_REQUEST, &page));
            }
        };
        store
            .set_grants(person.user.id, &grants, admin.actor())
            .await
            .map_err(failed)?;
        Ok(Redirect::to("/admin/users"))
    }
    .await;
    back_to_list(result)
}

/// `POST /admin/users/{id}/disable`: the account and its sessions end.
pub async fn disable(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let admin = Admin::of(identity);
    let result = async {
        let store = accounts(&state)?;
        let person = managed(&admin, store, &id).await?;
        store
            .disable(person.user.id, admin.actor())
            .await
            .map_err(failed)?;
        Ok(Redirect::to("/admin/users"))
    }
    .await;
    back_to_list(result)
}

/// A change's answer: back to the list, or the page that says why not.
fn back_to_list(result: Result<Redirect, Response>) -> Response {
    result.map_or_else(
        |response| response,
        axum::response::IntoResponse::into_response,
    )
}
