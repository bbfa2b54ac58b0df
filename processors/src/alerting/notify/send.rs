//! One attempt to hand a delivery to a receiver over HTTP, and whether a
//! failure is worth retrying: a network error, a timeout, 408, 429 and 5xx
//! are (the receiver may recover); any other non-2xx is not (a wrong URL or
//! a refused body will not become right by asking again).

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use tollgate_contract::notification::{ReceiverKind, ReceiverTarget};

use super::signature::{sign, NOTIFICATION_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::wire::{alertmanager_body, overall_status, slack_body, WebhookBody, WEBHOOK_VERSION};
use super::Delivery;

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub message: String,
    pub retryable: bool,
    /// The receiver's `Retry-After` (seconds form), honoured up to the
    /// backoff's maximum.
    pub retry_after: Option<Duration>,
}

/// The request body and where it goes, built once per delivery so every
/// attempt sends the same bytes.
#[derive(Debug, Clone)]
pub(crate) struct PreparedRequest {
    pub url: String,
    pub body: Vec<u8>,
}

pub(crate) fn prepare(
    target: &ReceiverTarget,
    delivery: &Delivery,
) -> Result<PreparedRequest, AttemptError> {
    let encoded = match target.kind {
        ReceiverKind::Webhook => serde_json::to_vec(&WebhookBody {
            version: WEBHOOK_VERSION,
            delivery_id: delivery.id,
            receiver_id: target.id,
            status: overall_status(&delivery.notifications),
            notifications: &delivery.notifications,
        }),
        ReceiverKind::Slack => serde_json::to_vec(&slack_body(&delivery.notifications)),
        ReceiverKind::Alertmanager => {
            serde_json::to_vec(&alertmanager_body(&delivery.notifications))
        }
    };
    let body = encoded.map_err(|err| AttemptError {
        message: format!("encoding the body: {err}"),
        retryable: false,
        retry_after: None,
    })?;
    let url = match target.kind {
        ReceiverKind::Alertmanager => {
            format!("{}/api/v2/alerts", target.url.trim_end_matches('/'))
        }
        ReceiverKind::Webhook | ReceiverKind::Slack => target.url.clone(),
    };
    Ok(PreparedRequest { url, body })
}

pub(crate) async fn attempt(
    client: &reqwest::Client,
    target: &ReceiverTarget,
    delivery: &Delivery,
    request: &PreparedRequest,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let mut builder = client
        .post(&request.url)
        .timeout(timeout)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(NOTIFICATION_ID_HEADER, delivery.id.to_string());
    if target.kind == ReceiverKind::Webhook {
        // A fresh timestamp each attempt, so a late retry still passes the
        // receiver's freshness check; the body is unchanged.
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let secret = target.secret.as_deref().unwrap_or("");
        builder = builder
            .header(
                SIGNATURE_HEADER,
                sign(secret.as_bytes(), &timestamp, &request.body),
            )
            .header(TIMESTAMP_HEADER, timestamp);
    }
    let response = builder
        .body(request.body.clone())
        .send()
        .await
        .map_err(|err| AttemptError {
            // A host that resolves to a private address will not resolve
            // to a public one by asking again soon.
            retryable: !super::destination::refused_in(&err),
            message: if err.is_timeout() {
                format!("no answer within {} ms", timeout.as_millis())
            } else {
                // The full chain: "error sending request" alone says nothing.
                let mut text = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                text
            },
            retry_after: None,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    let excerpt: String = text.chars().take(300).collect();
    Err(AttemptError {
        message: format!("HTTP {status}: {excerpt}"),
        retryable: status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429,
        retry_after,
    })
}
