//! The small HTTP listener of the roles that serve no HTTP of their own,
//! `tollgate process` (`[processor] metrics_listen`) and `tollgate alerts
//! evaluate` (`[alerting] metrics_listen`), or `--metrics-listen` of
//! either: `GET /metrics` and `GET /healthz`, nothing else. The other
//! roles serve `/metrics` on the port they already listen on.

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_control::http_server;

use super::Exposition;

/// Serve `exposition` on `--metrics-listen` (`flag`) if given, else on
/// the configuration's `setting` (`configured`), else nowhere (`None`).
pub async fn serve_configured(
    flag: Option<&str>,
    configured: Option<&str>,
    setting: &str,
    exposition: Exposition,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let (listen, setting) = match (flag, configured) {
        (Some(listen), _) => (listen, "--metrics-listen"),
        (None, Some(listen)) => (listen, setting),
        (None, None) => return Ok(None),
    };
    Ok(Some(serve(listen, setting, exposition, shutdown).await?))
}

/// Listen on `listen` (`setting` names where it came from, for the error)
/// and serve `exposition` until `shutdown` is cancelled.
pub async fn serve(
    listen: &str,
    setting: &str,
    exposition: Exposition,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} ({setting})"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "metrics listening");
    let app = Router::new()
        .route("/metrics", exposition.route())
        .route("/healthz", get(|| async { "ok" }));
    // GET only, but a client that never finishes its headers is still
    // cut off (slowloris).
    let timeouts = http_server::DEFAULT_READ_TIMEOUTS;
    Ok(tokio::spawn(async move {
        if let Err(err) = http_server::serve(
            listener,
            timeouts.bound_bodies(app),
            timeouts.headers,
            http_server::ServeOptions::default(),
            shutdown.cancelled_owned(),
        )
        .await
        {
            tracing::error!(%err, %address, "metrics listener failed");
        }
    }))
}
