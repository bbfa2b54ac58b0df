//! Tollgate's JSON (and CSV) report API.
//!
//! This crate owns the JSON HTTP surface: routing ([`router`]), the mapping
//! of every failure to a status code and JSON body ([`error::ApiError`]), the
//! report endpoints ([`reports`], [`finance`], [`errors`], [`audit`]), the admin
//! endpoints ([`admin`]: price and budget changes, [`rate_limits`]:
//! rate-limit tiers, [`keys`]: API keys,
//! [`providers`]: provider credentials, never returned), the
//! overview ([`home`]) and alerting's rules,
//! silences and receivers ([`alerts`]), the alerts' states, transitions and
//! dead letters ([`alert_states`]). Queries live in the read
//! side (`tollgate-queries`); the binary serves this router next to the
//! dashboards' (`tollgate-dashboards`), a sibling crate.

pub mod admin;
pub mod alert_backtest;
pub mod alert_states;
pub mod alerts;
pub mod audit;
pub mod config;
pub mod erasure;
pub mod error;
pub mod errors;
pub mod finance;
pub mod home;
pub mod keys;
pub mod providers;
pub mod rate_limits;
pub mod reports;
pub mod request_size;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tollgate_access::Routes;
use tollgate_queries::ReadModels;

use crate::error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub read_models: ReadModels,
    /// The audit endpoints (`/api/v1/audit/...`); absent in unit tests.
    pub audit: Option<audit::AuditState>,
    /// Price administration (PostgreSQL; events go through the outbox);
    /// `None` when the server runs without it.
    pub prices: Option<tollgate_control::prices::admin::PriceAdmin>,
    /// API keys, for the admin endpoints.
    pub keys: Option<tollgate_control::keys::KeyStore>,
    /// Budgets, for the finance budget report and budget administration.
    pub budgets: Option<tollgate_control::budgets::BudgetStore>,
    /// Rate-limit tiers, for their administration.
    pub rate_limits: Option<tollgate_control::rate_limits::RateLimitStore>,
    /// Alert rules, silences and receivers.
    pub alerts: Option<tollgate_control::alerts::AlertStore>,
    /// Provider credentials (sealed under this server's master key).
    pub providers: Option<providers::ProviderAdmin>,
    /// Erasure of a person's data (`POST /api/v1/audit/erasures`).
    pub erasure: Option<tollgate_control::erasure::Eraser>,
}

/// The JSON surface: `/healthz`, `/readyz` and `/api/v1/...`, every route
/// with its access rule (`tollgate-access`). The binary serves it next to
/// the dashboards' routes (`tollgate-dashboards`), behind one gate.
pub fn routes(state: ApiState) -> Routes {
    use axum::routing::{delete, post};
    use tollgate_access::{
        Access, OrgFrom, ADMINS, ALERT_READERS, ALERT_WRITERS, AUDITORS, COST_READERS, READERS,
        SRE_READERS,
    };
    let sre = Access::read(SRE_READERS);
    let cost = Access::read(COST_READERS);
    let alerts = Access::read(ALERT_READERS)
        .write(ALERT_WRITERS)
        .org(OrgFrom::Handler);
    let audit_routes = state.audit.clone().map(|audit| {
        let audit_access = Access::read(AUDITORS);
        Routes::new()
            .route(
                "/api/v1/audit/public-key",
                audit_access.org(OrgFrom::None),
                get(audit::public_key),
            )
            .route(
                "/api/v1/audit/verify",
                audit_access,
                get(audit::verify_trail),
            )
            .route(
                "/api/v1/audit/export",
                audit_access,
                get(audit::export_trail),
            )
            .route(
                "/api/v1/audit/entries",
                audit_access,
                get(audit::search_entries),
            )
            .route(
                "/api/v1/audit/entries/{chain}/{seq}",
                audit_access.org(OrgFrom::Handler),
                get(audit::one_entry),
            )
            .with_state(audit)
    });
    let api = Routes::new()
        .route("/healthz", Access::public(), get(healthz))
        .route("/readyz", Access::public(), get(readyz))
        .route(
            "/api/v1/overview",
            Access::read(READERS).org(OrgFrom::Query),
            get(home::overview),
        )
        .route("/api/v1/reports/latency", sre, get(reports::latency))
        .route("/api/v1/reports/errors", sre, get(errors::list))
        .route(
            "/api/v1/reports/errors/{signature}",
            sre,
            get(errors::pattern),
        )
        .route(
            "/api/v1/reports/breakers",
            Access::read(SRE_READERS).org(OrgFrom::None),
            get(errors::breakers),
        )
        .route("/api/v1/reports/cost", cost, get(finance::cost))
        .route(
            "/api/v1/reports/cost/overview",
            cost,
            get(finance::cost_overview),
        )
        .route("/api/v1/finance/statement", cost, get(finance::statement))
        .route(
            "/api/v1/finance/budgets",
            cost.org(OrgFrom::Handler),
            get(finance::budgets),
        )
        .route(
            "/api/v1/finance/budgets/{id}/burndown",
            cost.org(OrgFrom::Handler),
            get(finance::burndown),
        )
        .route(
            "/api/v1/admin/prices",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::None),
            post(finance::add_prices),
        )
        .route(
            "/api/v1/admin/keys",
            Access::read(ADMINS).write(ADMINS),
            get(keys::list).post(keys::create),
        )
        .route(
            "/api/v1/admin/keys/{prefix}",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::Handler),
            delete(keys::revoke),
        )
        .route(
            "/api/v1/admin/providers",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::None),
            get(providers::list),
        )
        .route(
            "/api/v1/admin/providers/{provider}",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::None),
            get(providers::get)
                .put(providers::set)
                .delete(providers::remove),
        )
        .route(
            "/api/v1/admin/budgets",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::Handler),
            post(admin::set_budget),
        )
        .route(
            "/api/v1/admin/budgets/{id}",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::Handler),
            delete(admin::delete_budget),
        )
        .route(
            "/api/v1/admin/rate_limits",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::Handler),
            get(rate_limits::list).post(rate_limits::set),
        )
        .route(
            "/api/v1/admin/rate_limits/{id}",
            Access::read(ADMINS).write(ADMINS).org(OrgFrom::Handler),
            delete(rate_limits::delete),
        )
        .route("/api/v1/alerts", alerts, get(alert_states::current))
        .route(
            "/api/v1/alerts/transitions",
            alerts,
            get(alert_states::transitions),
        )
        .route(
            "/api/v1/alerts/dead-letters",
            alerts,
            get(alert_states::dead_letters),
        )
        .route(
            "/api/v1/audit/erasures",
            Access::read(AUDITORS).write(AUDITORS).org(OrgFrom::Handler),
            post(erasure::erase),
        )
        .route(
            "/api/v1/alerts/backtest",
            Access::read(ALERT_READERS)
                .write(ALERT_READERS)
                .org(OrgFrom::Handler),
            post(alert_backtest::backtest),
        )
        .route(
            "/api/v1/alerts/rules",
            alerts,
            get(alerts::list_rules).post(alerts::create_rule),
        )
        .route(
            "/api/v1/alerts/rules/{id}",
            alerts,
            get(alerts::get_rule)
                .put(alerts::update_rule)
                .delete(alerts::delete_rule),
        )
        .route(
            "/api/v1/alerts/silences",
            alerts,
            get(alerts::list_silences).post(alerts::create_silence),
        )
        .route(
            "/api/v1/alerts/silences/{id}",
            alerts,
            get(alerts::get_silence).delete(alerts::expire_silence),
        )
        .route(
            "/api/v1/alerts/receivers",
            alerts,
            get(alerts::list_receivers).post(alerts::create_receiver),
        )
        .route(
            "/api/v1/alerts/receivers/{id}",
            alerts,
            get(alerts::get_receiver)
                .put(alerts::update_receiver)
                .delete(alerts::delete_receiver),
        )
        .route(
            "/api/{*rest}",
            Access::read(READERS).org(OrgFrom::None),
            get(api_not_found),
        )
        .with_state(state);
    let api = match audit_routes {
        Some(routes) => api.merge(routes),
        None => api,
    };
    // Too large a query string or body is a JSON error as well.
    api.through(request_size::limited)
}

/// [`routes`] as a router.
pub fn router(state: ApiState) -> Router {
    routes(state).into_router()
}

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

/// Readiness: ClickHouse answers and is migrated.
async fn readyz(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.read_models.check().await?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// The query string's pairs, or a 400 naming `query`.
pub(crate) fn query_pairs(
    query: Result<
        axum::extract::Query<Vec<(String, String)>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|axum::extract::Query(pairs)| pairs)
        .map_err(|err| ApiError::InvalidParameter {
            parameter: "query".into(),
            reason: err.body_text(),
        })
}

async fn api_not_found() -> ApiError {
    ApiError::NotFound
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tollgate_control::config::ClickHouseConfig;
    use tower::ServiceExt;

    /// Every bearer is an admin of every org (these tests are about
    /// parameters; the gate's own tests are in `tollgate-access` and
    /// `tests/it/access.rs`).
    struct AnyBearerIsAdmin;

    impl tollgate_access::Authenticator for AnyBearerIsAdmin {
        fn identify<'a>(
            &'a self,
            credentials: &'a tollgate_access::Credentials,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<tollgate_access::Identity>, tollgate_access::Refusal>,
        > {
            Box::pin(async move {
                Ok(
                    matches!(credentials, tollgate_access::Credentials::Bearer(_)).then(|| {
                        tollgate_access::Identity::user(
                            uuid::Uuid::nil(),
                            "admin@example.com",
                            "Admin",
                            vec![tollgate_access::Grant::new(
                                None,
                                tollgate_access::Role::Admin,
                            )],
                            String::new(),
                        )
                    }),
                )
            })
        }
    }

    fn gated(router: Router) -> Router {
        router.layer(tollgate_access::Gate::new(AnyBearerIsAdmin).layer())
    }

    fn signed_in(uri: &str) -> Request<Body> {
        Request::get(uri)
            .header("authorization", "Bearer test")
            .body(Body::empty())
            .unwrap()
    }

    /// A router whose ClickHouse is never contacted: every request here is
    /// answered before a query would run.
    fn app() -> Router {
        let config = ClickHouseConfig {
            url: "http://127.0.0.1:9".into(),
            ..ClickHouseConfig::default()
        };
        gated(super::router(ApiState {
            read_models: ReadModels::new(&config),
            audit: None,
            prices: None,
            keys: None,
            budgets: None,
            rate_limits: None,
            alerts: None,
            providers: None,
            erasure: None,
        }))
    }

    async fn get(uri: &str) -> (StatusCode, String, Option<String>) {
        let response = app().oneshot(signed_in(uri)).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    #[tokio::test]
    async fn bad_parameter_is_400_naming_it() {
        let (status, body, _) = get("/api/v1/reports/latency?bucket=fast").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["parameter"], "bucket");
        assert!(
            body["error"].as_str().unwrap().contains("not a duration"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn bad_tag_parameters_are_400_naming_them() {
        for (uri, parameter) in [
            ("/api/v1/reports/cost?group_by=tag:a%20b", "group_by"),
            ("/api/v1/reports/cost?tag.a%2Fb=x", "tag.a/b"),
            ("/api/v1/reports/cost?group_by=key,tag:feature", "group_by"),
            (
                "/api/v1/reports/cost?group_by=tag:feature&tag.variant=b",
                "tag.variant",
            ),
            ("/api/v1/finance/budgets/abc/burndown", "id"),
            ("/api/v1/finance/budgets/1/burndown?format=xml", "format"),
            ("/api/v1/reports/cost/overview?format=xml", "format"),
            ("/api/v1/reports/cost/overview?user=a&user=b", "user"),
            ("/api/v1/reports/cost/overview?from=2026-13-01", "from"),
            ("/api/v1/reports/cost/overview?colour=red", "colour"),
            ("/api/v1/reports/errors?bucket=fast", "bucket"),
            (
                "/api/v1/reports/errors?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
                "from",
            ),
            ("/api/v1/reports/errors?group_by=team", "group_by"),
            ("/api/v1/reports/errors?format=xml", "format"),
            ("/api/v1/reports/errors/xyz", "signature"),
            (
                "/api/v1/reports/errors/00000000000000ff?team=a&team=b",
                "team",
            ),
            ("/api/v1/reports/breakers?team=a", "team"),
            ("/api/v1/reports/breakers?table=all", "table"),
            ("/api/v1/reports/breakers?to=soon", "to"),
        ] {
            let (status, body, _) = get(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["parameter"], parameter, "{uri}: {body}");
        }
        let (status, body, _) = get(&format!(
            "/api/v1/reports/cost?group_by=tag:{}",
            "k".repeat(65)
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("1 to 64 characters"), "{body}");
    }

    /// Every endpoint reads its query string with the one parser: a
    /// repeated `format` and the verification's missing or unknown
    /// parameters are JSON 400s naming them (before, a repeated `format`
    /// silently took the last, and the verification answered axum's plain
    /// text).
    #[tokio::test]
    async fn every_query_string_is_read_one_way() {
        let app = with_audit();
        for (uri, parameter) in [
            ("/api/v1/finance/budgets?format=csv&format=json", "format"),
            ("/api/v1/finance/statement?team=a&team=b", "team"),
            ("/api/v1/audit/verify", "org"),
            ("/api/v1/audit/verify?org=a&colour=red", "colour"),
            ("/api/v1/audit/verify?org=a&org=b", "org"),
        ] {
            let response = app.clone().oneshot(signed_in(uri)).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["parameter"], parameter, "{uri}: {body}");
        }
    }

    fn with_audit() -> Router {
        let config = ClickHouseConfig {
            url: "http://127.0.0.1:9".into(),
            ..ClickHouseConfig::default()
        };
        gated(super::router(ApiState {
            read_models: ReadModels::new(&config),
            audit: Some(audit::AuditState {
                clickhouse: tollgate_queries::client(&config),
                public_key: None,
                signer: None,
                keys: None,
                anchor: tollgate_queries::audit::anchor::AnchorSource::new(Default::default()),
            }),
            prices: None,
            keys: None,
            budgets: None,
            rate_limits: None,
            alerts: None,
            providers: None,
            erasure: None,
        }))
    }

    async fn json_of(response: axum::response::Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body:?}"));
        (status, body)
    }

    /// Every audit route refuses what it cannot honour, naming it (a trial:
    /// an export's `limit=5` returned the whole chain, `proof=false` still
    /// held proofs, an entry's `foo=1` was answered as if absent).
    #[tokio::test]
    async fn audit_routes_refuse_parameters_they_cannot_honour() {
        let app = with_audit();
        for (uri, parameter) in [
            ("/api/v1/audit/export?org=a&limit=5", "limit"),
            ("/api/v1/audit/export?org=a&proof=false", "proof"),
            ("/api/v1/audit/export?org=a&proof=true", "proof"),
            ("/api/v1/audit/export?cursor=", "cursor"),
            ("/api/v1/audit/export?org=a&bogus=1", "bogus"),
            ("/api/v1/audit/entries?org=a&bogus=1", "bogus"),
            ("/api/v1/audit/entries/acme%2Fteam/3?foo=1", "foo"),
            ("/api/v1/audit/entries/acme%2Fteam/3?proof=false", "proof"),
            ("/api/v1/audit/entries/acme%2Fteam/abc", "seq"),
            ("/api/v1/audit/public-key?format=pem", "format"),
        ] {
            let (status, body) = json_of(app.clone().oneshot(signed_in(uri)).await.unwrap()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert_eq!(body["parameter"], parameter, "{uri}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains(parameter),
                "{uri}: {body}"
            );
        }
    }

    /// Too large a query string or body is the API's JSON error naming it
    /// (was an empty 414 and axum's plain text 413).
    #[tokio::test]
    async fn oversized_requests_are_json_errors_naming_what() {
        let app = with_audit();
        let long = format!(
            "/api/v1/audit/entries?org={}",
            "a".repeat(request_size::MAX_QUERY_BYTES)
        );
        let (status, body) = json_of(app.clone().oneshot(signed_in(&long)).await.unwrap()).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG, "{body}");
        assert_eq!(body["parameter"], "query", "{body}");
        assert!(body["error"].as_str().unwrap().contains("16384"), "{body}");

        let body = format!(
            "{{\"org\":\"a\",\"user\":\"u\",\"reason\":\"{}\"}}",
            "x".repeat(3 << 20)
        );
        let request = Request::post("/api/v1/audit/erasures")
            .header("authorization", "Bearer test")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, body) = json_of(app.clone().oneshot(request).await.unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["field"], "body", "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("length limit exceeded"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn unreachable_clickhouse_is_503() {
        let (status, body, _) = get("/api/v1/reports/latency").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("127.0.0.1:9"), "{body}");
    }

    #[tokio::test]
    async fn without_identity_reports_are_401_and_health_is_open() {
        let response = app()
            .oneshot(
                Request::get("/api/v1/reports/cost")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key("www-authenticate"));
        let response = app()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // A route served without the gate fails closed.
        let ungated = super::router(ApiState {
            read_models: ReadModels::new(&ClickHouseConfig::default()),
            audit: None,
            prices: None,
            keys: None,
            budgets: None,
            rate_limits: None,
            alerts: None,
            providers: None,
            erasure: None,
        });
        let response = ungated
            .oneshot(signed_in("/api/v1/reports/cost"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn health_and_unknown_api_paths() {
        assert_eq!(get("/healthz").await.0, StatusCode::OK);
        let (status, body, _) = get("/api/v1/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"error\""));
    }
}
