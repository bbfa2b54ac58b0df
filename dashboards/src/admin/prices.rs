//! `/admin/prices`: the price catalog's versions per model (which one is
//! in force now) with its CSV; adding a version through a form checked as
//! `POST /api/v1/admin/prices` checks its body
//! (`tollgate_contract::catalog::new_prices_of_json`), with a preview of
//! what saving it would reprice (`tollgate_queries::reprice_preview`: the
//! stored calls from its `effective_from` until now whose cost changes,
//! and by how much); and importing a LiteLLM-format file (the parser of
//! `tollgate prices import`), showing what was imported and what was not,
//! and why. Each added version is an `admin.price.*` event in the outbox.

use askama::Template;
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use tollgate_contract::catalog::{self, new_prices_of_json, NewPrice, PriceTier, PriceVersion};
use tollgate_control::prices::admin::{PriceAdmin, PriceAdminError};
use tollgate_control::prices::litellm::{self, ParsedFile};
use tollgate_control::prices::store::{AddOutcome, PriceStore};
use tollgate_queries::reprice_preview::{self, RepricePreview};
use tollgate_queries::Table;

use super::caller::Admin;
use super::page::{
    csv_data_url, error_for, field, message, respond, respond_csv, FieldError, Head,
};
use crate::display::{Figure, Instant, Money, TokenPrice};
use crate::layout::{render, Section};
use crate::DashboardState;
use tollgate_access::Identity;

/// Largest price file the import takes (LiteLLM's own is about 1.5 MB).
pub const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt(d: Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// `>200000: 0.000005 in / 0.00001 out` (`>=` when inclusive), one per tier.
fn tiers_text(tiers: &[PriceTier]) -> String {
    tiers
        .iter()
        .map(|t| {
            format!(
                "{}{}: {} in / {} out",
                if t.inclusive { ">=" } else { ">" },
                t.above_tokens,
                t.input_per_token,
                t.output_per_token
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "same".into())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The id of the version in force at `now` for each provider and model:
/// the latest `effective_from` at or before it, the highest id among
/// corrections.
fn in_force(versions: &[PriceVersion], now: DateTime<Utc>) -> std::collections::HashSet<i64> {
    let mut best: std::collections::HashMap<(&str, &str), &PriceVersion> = Default::default();
    for v in versions.iter().filter(|v| v.effective_from <= now) {
        let slot = best
            .entry((v.provider.as_str(), v.model.as_str()))
            .or_insert(v);
        if (v.effective_from, v.id) > (slot.effective_from, slot.id) {
            *slot = v;
        }
    }
    best.values().map(|v| v.id).collect()
}

/// Versions sorted by provider, model and `effective_from`, as the page
/// and the CSV show them.
pub fn table(versions: &[PriceVersion], now: DateTime<Utc>) -> Table {
    let current = in_force(versions, now);
    let mut table = Table::new(
        ["id", "provider", "model", "effective_from", "in_force"]
            .into_iter()
            .chain(catalog::PRICE_FIELDS)
            .chain(["tiers", "source", "note"]),
    );
    for v in sorted(versions) {
        table.push([
            v.id.to_string(),
            v.provider.clone(),
            v.model.clone(),
            stamp(v.effective_from),
            if current.contains(&v.id) { "yes" } else { "" }.to_string(),
            v.input_per_token.to_string(),
            v.output_per_token.to_string(),
            opt(v.cache_read_per_token),
            opt(v.cache_write_per_token),
            opt(v.reasoning_per_token),
            v.per_image.to_string(),
            v.per_audio_second.to_string(),
            v.per_request.to_string(),
            tiers_text(&v.tiers),
            v.source.clone(),
            v.note.clone(),
        ]);
    }
    table
}

fn sorted(versions: &[PriceVersion]) -> Vec<&PriceVersion> {
    let mut out: Vec<&PriceVersion> = versions.iter().collect();
    out.sort_by(|a, b| {
        (&a.provider, &a.model, a.effective_from, a.id).cmp(&(
            &b.provider,
            &b.model,
            b.effective_from,
            b.id,
        ))
    });
    out
}

/// One model's versions on the page.
pub struct ModelVersions {
    pub provider: String,
    pub model: String,
    pub rows: Vec<Vec<Figure>>,
}

/// A version's row on the page: the CSV's cells ([`table`]), its time as
/// an [`Instant`] (the viewer's zone, the CSV's UTC value on hover),
/// per-token prices per million tokens and the other prices as
/// [`Money`], each with its exact value on hover.
fn version_figures(v: &PriceVersion, csv: Vec<String>) -> Vec<Figure> {
    csv.into_iter()
        .enumerate()
        .map(|(i, cell)| match i {
            3 => Instant::new(v.effective_from).into(),
            5 => TokenPrice(v.input_per_token).into(),
            6 => TokenPrice(v.output_per_token).into(),
            7 => Figure::price(v.cache_read_per_token),
            8 => Figure::price(v.cache_write_per_token),
            9 => Figure::price(v.reasoning_per_token),
            10 => Money(v.per_image).into(),
            11 => Money(v.per_audio_second).into(),
            12 => Money(v.per_request).into(),
            _ => Figure::Text(cell),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "admin_prices.html")]
pub struct PricesPage {
    pub section: Section,
    pub head: Head,
    pub columns: Vec<String>,
    pub models: Vec<ModelVersions>,
    pub versions: usize,
    pub notice: Option<String>,
    /// An admin of every org: the links to add and import versions.
    pub may_change: bool,
}

fn store(state: &DashboardState) -> Result<&PriceStore, Response> {
    state.prices.as_ref().ok_or_else(|| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "the price catalog needs PostgreSQL; this server runs without it".into(),
        )
    })
}

fn unavailable(doing: &str, err: impl std::fmt::Display) -> Response {
    tracing::error!(%err, doing, "admin prices page failed");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        format!("cannot {doing}: {err}"),
    )
}

async fn versions(state: &DashboardState) -> Result<Vec<PriceVersion>, Response> {
    store(state)?
        .all()
        .await
        .map_err(|e| unavailable("read the price catalog", e))
}

/// `GET /admin/prices` (`added=<id>` / `unchanged=1` after a save).
pub async fn list_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        let versions = versions(&state).await?;
        let count = versions.len();
        let table = table(&versions, Utc::now());
        let columns: Vec<String> = table.columns().map(str::to_string).collect();
        let mut models: Vec<ModelVersions> = Vec::new();
        for (v, csv) in sorted(&versions).into_iter().zip(table.into_rows()) {
            let (provider, model) = (v.provider.clone(), v.model.clone());
            let row = version_figures(v, csv);
            match models.last_mut() {
                Some(m) if m.provider == provider && m.model == model => m.rows.push(row),
                _ => models.push(ModelVersions {
                    provider,
                    model,
                    rows: vec![row],
                }),
            }
        }
        let notice = match (field(&pairs, "added"), field(&pairs, "unchanged")) {
            (Some(id), _) => Some(format!(
                "Version {id} added. Stored calls keep their cost until `tollgate reprice` brings them to it."
            )),
            (None, Some(_)) => Some("Nothing added: the version in force has these prices.".into()),
            _ => None,
        };
        Ok::<_, Response>(PricesPage {
            section: Section::Admin,
            head: admin.head(),
            columns,
            models,
            versions: count,
            notice,
            may_change: admin.of_every_org("the price catalog").is_ok(),
        })
    }
    .await;
    respond(result)
}

/// `GET /admin/prices.csv`
pub async fn csv(State(state): State<DashboardState>) -> Response {
    let result = async { Ok::<_, Response>(table(&versions(&state).await?, Utc::now())) }.await;
    respond_csv(result, "prices.csv")
}

/// The fields of the new-version form, as typed (named as the API body
/// names them).
#[derive(Debug, Clone, Default)]
pub struct PriceForm {
    pub provider: String,
    pub model: String,
    pub effective_from: String,
    pub input_per_token: String,
    pub output_per_token: String,
    pub cache_read_per_token: String,
    pub cache_write_per_token: String,
    pub reasoning_per_token: String,
    pub per_image: String,
    pub per_audio_second: String,
    pub per_request: String,
    /// JSON list of tiers, as in the API body.
    pub tiers: String,
    pub note: String,
}

/// The price fields of the form, in order, with their labels.
const PRICE_FIELDS: [(&str, &str); 8] = [
    ("input_per_token", "Input / token"),
    ("output_per_token", "Output / token"),
    ("cache_read_per_token", "Cache read / token"),
    ("cache_write_per_token", "Cache write / token"),
    ("reasoning_per_token", "Reasoning / token"),
    ("per_image", "Per image"),
    ("per_audio_second", "Per audio second"),
    ("per_request", "Per request"),
];

impl PriceForm {
    /// A new version of `provider`/`model` from the start of the next
    /// hour, with the prices of the version in force now (if any).
    fn fresh(versions: &[PriceVersion], provider: &str, model: &str, now: DateTime<Utc>) -> Self {
        let next_hour = now
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .map(|t| t + chrono::Duration::hours(1))
            .unwrap_or(now);
        let current = in_force(versions, now);
        let base = versions
            .iter()
            .find(|v| v.provider == provider && v.model == model && current.contains(&v.id));
        let mut form = Self {
            provider: provider.into(),
            model: model.into(),
            effective_from: stamp(next_hour),
            ..Self::default()
        };
        if let Some(v) = base {
            form.input_per_token = v.input_per_token.to_string();
            form.output_per_token = v.output_per_token.to_string();
            form.cache_read_per_token = opt(v.cache_read_per_token);
            form.cache_write_per_token = opt(v.cache_write_per_token);
            form.reasoning_per_token = opt(v.reasoning_per_token);
            form.per_image = v.per_image.to_string();
            form.per_audio_second = v.per_audio_second.to_string();
            form.per_request = v.per_request.to_string();
            if !v.tiers.is_empty() {
                form.tiers = serde_json::to_string(&v.tiers).unwrap_or_default();
            }
        }
        form
    }

    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let text = |name: &str| field(pairs, name).unwrap_or("").trim().to_string();
        Self {
            provider: text("provider"),
            model: text("model"),
            effective_from: text("effective_from"),
            input_per_token: text("input_per_token"),
            output_per_token: text("output_per_token"),
            cache_read_per_token: text("cache_read_per_token"),
            cache_write_per_token: text("cache_write_per_token"),
            reasoning_per_token: text("reasoning_per_token"),
            per_image: text("per_image"),
            per_audio_second: text("per_audio_second"),
            per_request: text("per_request"),
            tiers: text("tiers"),
            note: field(pairs, "note").unwrap_or("").to_string(),
        }
    }

    fn value(&self, name: &str) -> &str {
        match name {
            "input_per_token" => &self.input_per_token,
            "output_per_token" => &self.output_per_token,
            "cache_read_per_token" => &self.cache_read_per_token,
            "cache_write_per_token" => &self.cache_write_per_token,
            "reasoning_per_token" => &self.reasoning_per_token,
            "per_image" => &self.per_image,
            "per_audio_second" => &self.per_audio_second,
            _ => &self.per_request,
        }
    }

    /// The form as the API's JSON body: an empty price is left out (0 for
    /// a required price, "as input/output" for an optional one, as in the
    /// API).
    fn body(&self) -> Result<Value, FieldError> {
        let mut body = Map::new();
        body.insert("provider".into(), json!(self.provider));
        body.insert("model".into(), json!(self.model));
        body.insert("effective_from".into(), json!(self.effective_from));
        for (name, _) in PRICE_FIELDS {
            let value = self.value(name);
            if !value.is_empty() {
                body.insert(name.into(), json!(value));
            }
        }
        if !self.tiers.is_empty() {
            let tiers: Value = serde_json::from_str(&self.tiers)
                .map_err(|e| FieldError::new("tiers", format!("not JSON: {e}")))?;
            body.insert("tiers".into(), tiers);
        }
        body.insert("note".into(), json!(self.note));
        Ok(Value::Object(body))
    }

    /// The version, checked as `POST /api/v1/admin/prices` checks it.
    pub fn price(&self) -> Result<NewPrice, FieldError> {
        let mut prices =
            new_prices_of_json(self.body()?).map_err(|r| FieldError::new(r.field, r.reason))?;
        let price = prices
            .pop()
            .ok_or_else(|| FieldError::new("body", "no price"))?;
        if let Some((field, reason)) = price.problem() {
            return Err(FieldError::new(field, reason));
        }
        Ok(price)
    }
}

/// A price field of the form, for the template.
pub struct PriceInput {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_price_form.html")]
pub struct PriceFormPage {
    pub section: Section,
    pub head: Head,
    pub form: PriceForm,
    pub error: Option<FieldError>,
    pub preview: Option<PreviewView>,
}

impl PriceFormPage {
    fn error_for(&self, field: &str) -> Option<String> {
        error_for(&self.error, field)
    }

    fn text_fields(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            ("provider", "Provider", self.form.provider.clone()),
            ("model", "Model", self.form.model.clone()),
            (
                "effective_from",
                "Effective from (RFC 3339)",
                self.form.effective_from.clone(),
            ),
        ]
    }

    fn prices(&self) -> Vec<PriceInput> {
        PRICE_FIELDS
            .iter()
            .map(|(name, label)| PriceInput {
                name,
                label,
                value: self.form.value(name).to_string(),
                error: self.error_for(name),
            })
            .collect()
    }
}

/// The preview as the page shows it.
pub struct PreviewView {
    pub preview: RepricePreview,
    pub from: String,
    pub to: String,
    pub delta: String,
    /// The command that, after saving, changes exactly these calls;
    /// `None` for a version that takes effect later (nothing to reprice).
    pub command: Option<String>,
    /// The months already ended that the reprice reaches into (`2026-11`,
    /// or `2026-03 to 2026-11`), when its calls' costs change; their
    /// statements would change.
    pub ended_months: Option<String>,
    pub table: Table,
    pub csv: String,
}

/// The calendar months (UTC) from `from`'s to the one before `now`'s, as
/// `2026-11` or `2026-03 to 2026-11`; `None` when `from` is in `now`'s month.
fn months_ended(from: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    use chrono::Datelike;
    let index = |t: DateTime<Utc>| t.year() * 12 + t.month0() as i32;
    let name = |i: i32| format!("{:04}-{:02}", i.div_euclid(12), i.rem_euclid(12) + 1);
    let (first, last) = (index(from), index(now) - 1);
    match first.cmp(&last) {
        std::cmp::Ordering::Greater => None,
        std::cmp::Ordering::Equal => Some(name(first)),
        std::cmp::Ordering::Less => Some(format!("{} to {}", name(first), name(last))),
    }
}

fn preview_view(preview: RepricePreview) -> PreviewView {
    let delta = preview
        .cost_delta
        .map(tollgate_queries::table::usd)
        .unwrap_or_else(|| "out of range".into());
    let (from, to) = (stamp(preview.from), stamp(preview.to));
    let command = (preview.from < preview.to).then(|| {
        format!(
            "tollgate reprice --provider {} --model {} --from {from} --to {to}",
            preview.provider, preview.model
        )
    });
    let ended_months = (preview.calls_cost_changed > 0)
        .then(|| months_ended(preview.from, preview.to))
        .flatten();
    let mut table = Table::new([
        "provider",
        "model",
        "from",
        "to",
        "calls_examined",
        "calls_changed",
        "calls_cost_changed",
        "cost_delta_usd",
    ]);
    table.push([
        preview.provider.clone(),
        preview.model.clone(),
        from.clone(),
        to.clone(),
        preview.calls_examined.to_string(),
        preview.calls_changed.to_string(),
        preview.calls_cost_changed.to_string(),
        delta.clone(),
    ]);
    let csv = csv_data_url(&table);
    PreviewView {
        preview,
        from,
        to,
        delta,
        command,
        ended_months,
        table,
        csv,
    }
}

fn form_page(admin: &Admin, form: PriceForm) -> PriceFormPage {
    PriceFormPage {
        section: Section::Admin,
        head: admin.head(),
        form,
        error: None,
        preview: None,
    }
}

/// `GET /admin/prices/new` (`provider`, `model`: start from the version in
/// force now).
pub async fn new_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        admin.of_every_org("the price catalog")?;
        let versions = versions(&state).await?;
        let form = PriceForm::fresh(
            &versions,
            field(&pairs, "provider").unwrap_or(""),
            field(&pairs, "model").unwrap_or(""),
            Utc::now(),
        );
        Ok::<_, Response>(form_page(&admin, form))
    }
    .await;
    respond(result)
}

/// `POST /admin/prices/new` with `action=preview` (what it would reprice,
/// nothing saved) or `action=save` (add it, then to the catalog).
pub async fn submit(
    State(state): State<DashboardState>,
    identity: Identity,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        admin.of_every_org("the price catalog")?;
        let prices = store(&state)?;
        let form = PriceForm::from_pairs(&pairs);
        let mut page = form_page(&admin, form.clone());
        let price = match form.price() {
            Ok(price) => price,
            Err(error) => {
                page.error = Some(error);
                return Ok(render(StatusCode::BAD_REQUEST, &page));
            }
        };
        if field(&pairs, "action") == Some("save") {
            let outcome = save(
                &admin,
                prices,
                &[price],
                &format!("admin-page:{}", admin.actor()),
            )
            .await;
            return match outcome {
                Ok(outcome) => Ok(match outcome.added.first() {
                    Some(v) => Redirect::to(&format!("/admin/prices?added={}", v.id)),
                    None => Redirect::to("/admin/prices?unchanged=1"),
                }
                .into_response()),
                Err(Ok(error)) => {
                    page.error = Some(error);
                    Ok(render(StatusCode::BAD_REQUEST, &page))
                }
                Err(Err(response)) => Err(response),
            };
        }
        let versions = versions(&state).await?;
        let now = Utc::now();
        if price.effective_from >= now {
            // Nothing is stored after now: a future version reprices nothing.
            page.preview = Some(preview_view(RepricePreview {
                provider: price.provider.clone(),
                model: price.model.clone(),
                from: price.effective_from,
                to: price.effective_from,
                calls_examined: 0,
                calls_changed: 0,
                calls_cost_changed: 0,
                cost_delta: Some(Decimal::ZERO),
            }));
            return Ok(render(StatusCode::OK, &page));
        }
        let preview = reprice_preview::run(&state.read_models, &versions, &price, now)
            .await
            .map_err(|e| unavailable("read the stored calls", e))?;
        page.preview = Some(preview_view(preview));
        Ok::<_, Response>(render(StatusCode::OK, &page))
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// Store `prices` with their events naming the admin: the outcome, or the
/// refused field (`Err(Ok)`), or the page of a failure (`Err(Err)`).
async fn save(
    admin: &Admin,
    store: &PriceStore,
    prices: &[NewPrice],
    source: &str,
) -> Result<AddOutcome, Result<FieldError, Response>> {
    let price_admin = PriceAdmin {
        store: store.clone(),
    };
    match price_admin.add(prices, source, Some(admin.actor())).await {
        Ok(outcome) => {
            tracing::info!(
                actor = admin.actor(),
                added = outcome.added.len(),
                unchanged = outcome.unchanged,
                "prices added on the admin page"
            );
            Ok(outcome)
        }
        Err(PriceAdminError::Invalid(r)) => Err(Ok(FieldError::new(r.field, r.reason))),
        Err(err) => Err(Err(unavailable("store the prices", err))),
    }
}

/// What an import did, as the page shows it.
pub struct ImportView {
    pub file: String,
    pub added: Table,
    pub added_csv: String,
    pub unchanged: usize,
    pub not_imported: Table,
    pub not_imported_csv: String,
    pub skipped: Vec<String>,
}

/// The outcome of an import as tables: the versions added, and every
/// price of the file that was not imported with the reason.
pub fn import_tables(parsed: &ParsedFile, outcome: &AddOutcome) -> (Table, Table) {
    let mut added = Table::new([
        "id",
        "provider",
        "model",
        "effective_from",
        "input_per_token",
        "output_per_token",
    ]);
    for v in &outcome.added {
        added.push([
            v.id.to_string(),
            v.provider.clone(),
            v.model.clone(),
            stamp(v.effective_from),
            v.input_per_token.to_string(),
            v.output_per_token.to_string(),
        ]);
    }
    let mut not = Table::new(["entry", "key", "reason"]);
    for n in &parsed.not_imported {
        let reason = if n.entry_refused {
            "entry refused: Tollgate cannot bill it as priced"
        } else {
            "entry imported without this price"
        };
        not.push([n.entry.clone(), n.key.clone(), reason.to_string()]);
    }
    for s in &parsed.superseded {
        not.push([
            s.entry.clone(),
            String::new(),
            format!(
                "superseded: `{}` prices the same provider/model differently and wins",
                s.by
            ),
        ]);
    }
    (added, not)
}

#[derive(Template)]
#[template(path = "admin_prices_import.html")]
pub struct ImportPage {
    pub section: Section,
    pub head: Head,
    pub effective_from: String,
    pub error: Option<FieldError>,
    pub result: Option<ImportView>,
}

fn import_page_of(admin: &Admin) -> ImportPage {
    ImportPage {
        section: Section::Admin,
        head: admin.head(),
        effective_from: String::new(),
        error: None,
        result: None,
    }
}

/// `GET /admin/prices/import`
pub async fn import_page(identity: Identity) -> Response {
    let admin = Admin::of(identity);
    if let Err(refused) = admin.of_every_org("the price catalog") {
        return refused;
    }
    render(StatusCode::OK, &import_page_of(&admin))
}

/// The fields of the import form (its CSRF token is in the action's
/// query, where the gate reads it for uploads).
#[derive(Default)]
struct ImportForm {
    file_name: String,
    file: Option<String>,
    effective_from: String,
}

async fn read_import_form(mut multipart: Multipart) -> Result<ImportForm, FieldError> {
    let mut form = ImportForm::default();
    loop {
        let next = multipart
            .next_field()
            .await
            .map_err(|e| FieldError::new("file", format!("cannot read the upload: {e}")))?;
        let Some(part) = next else {
            return Ok(form);
        };
        let name = part.name().unwrap_or("").to_string();
        let file_name = part.file_name().map(str::to_string);
        let text = part
            .text()
            .await
            .map_err(|e| FieldError::new(name.clone(), format!("cannot read it: {e}")))?;
        match name.as_str() {
            "effective_from" => form.effective_from = text.trim().to_string(),
            "file" => {
                form.file_name = file_name.unwrap_or_else(|| "upload".into());
                form.file = Some(text);
            }
            _ => {}
        }
    }
}

/// `POST /admin/prices/import?csrf=` (multipart: `file`, optional
/// `effective_from` for entries without one (default now)).
pub async fn import(
    State(state): State<DashboardState>,
    identity: Identity,
    multipart: Multipart,
) -> Response {
    let result = async {
        let admin = Admin::of(identity);
        admin.of_every_org("the price catalog")?;
        let form = read_import_form(multipart).await;
        let prices = store(&state)?;
        let mut page = import_page_of(&admin);
        let form = match form {
            Ok(form) => form,
            Err(error) => {
                page.error = Some(error);
                return Ok(render(StatusCode::BAD_REQUEST, &page));
            }
        };
        page.effective_from = form.effective_from.clone();
        let refuse = |mut page: ImportPage, error: FieldError| {
            page.error = Some(error);
            Ok::<_, Response>(render(StatusCode::BAD_REQUEST, &page))
        };
        let default_from = match form.effective_from.as_str() {
            "" => Utc::now(),
            text => match DateTime::parse_from_rfc3339(text) {
                Ok(t) => t.with_timezone(&Utc),
                Err(e) => {
                    return refuse(
                        page,
                        FieldError::new("effective_from", format!("not an RFC 3339 time: {e}")),
                    )
                }
            },
        };
        let Some(text) = form.file.filter(|t| !t.trim().is_empty()) else {
            return refuse(
                page,
                FieldError::new("file", "choose a LiteLLM-format JSON file"),
            );
        };
        let parsed = match litellm::parse(&text, default_from) {
            Ok(parsed) => parsed,
            Err(err) => return refuse(page, FieldError::new("file", err.to_string())),
        };
        let source = format!("import:{}", form.file_name);
        let outcome = match save(&admin, prices, &parsed.prices, &source).await {
            Ok(outcome) => outcome,
            Err(Ok(error)) => return refuse(page, FieldError::new("file", error.to_string())),
            Err(Err(response)) => return Err(response),
        };
        let (added, not_imported) = import_tables(&parsed, &outcome);
        page.result = Some(ImportView {
            file: form.file_name,
            added_csv: csv_data_url(&added),
            added,
            unchanged: outcome.unchanged,
            not_imported_csv: csv_data_url(&not_imported),
            not_imported,
            skipped: parsed.skipped,
        });
        Ok(render(StatusCode::OK, &page))
    }
    .await;
    result.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_months_a_reprice_reaches_back_into_are_named() {
        let at = |y, m, d| {
            Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
                .single()
                .unwrap_or_default()
        };
        let now = at(2026, 12, 7);
        assert_eq!(months_ended(at(2026, 12, 1), now), None);
        assert_eq!(
            months_ended(at(2026, 11, 20), now).as_deref(),
            Some("2026-11")
        );
        assert_eq!(
            months_ended(at(2025, 12, 31), now).as_deref(),
            Some("2025-12 to 2026-11")
        );
    }
}
