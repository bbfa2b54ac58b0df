//! `tollgate process`'s own small HTTP listener (`[processor]
//! metrics_listen`, or `--metrics-listen`): `GET /metrics` and
//! `GET /healthz`, nothing else. The other roles serve `/metrics` on the
//! port they already listen on.

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Exposition;

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
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(%err, %address, "metrics listener failed");
        }
    }))
}
