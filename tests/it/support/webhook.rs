//! A webhook receiver for the alerting tests: it verifies every
//! signature (`X-Tollgate-Signature`) and counts what it accepted by
//! notification id, as a receiver that deduplicates would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use tollgate_contract::notification::{ReceiverKind, ReceiverTarget};
use tollgate_processors::alerting::notify::signature::{
    verify, NOTIFICATION_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use uuid::Uuid;

pub const SECRET: &str = "webhook-test-secret";

/// What the receiver answers: `fail_first` requests get 500, then
/// `then_status`; every answer after `delay`.
#[derive(Clone)]
pub struct Behaviour {
    pub fail_first: usize,
    pub then_status: u16,
    pub delay: Duration,
}

impl Default for Behaviour {
    /// Accept everything at once.
    fn default() -> Self {
        Self {
            fail_first: 0,
            then_status: 200,
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
pub struct Received {
    /// Requests that arrived (counted before the answer's delay).
    pub arrived: usize,
    pub requests: usize,
    pub bad_signatures: Vec<String>,
    /// Notification id -> times received with a 2xx answer.
    pub accepted: HashMap<Uuid, usize>,
    pub accepted_at: Vec<Instant>,
    /// Every accepted body, in order.
    pub bodies: Vec<serde_json::Value>,
}

#[derive(Clone)]
struct Receiver {
    behaviour: Behaviour,
    seen: Arc<AtomicUsize>,
    received: Arc<Mutex<Received>>,
}

async fn handle(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let n = rx.seen.fetch_add(1, Ordering::SeqCst);
    rx.received.lock().unwrap().arrived += 1;
    tokio::time::sleep(rx.behaviour.delay).await;
    let verdict = verify(
        SECRET.as_bytes(),
        &header(TIMESTAMP_HEADER),
        &body,
        &header(SIGNATURE_HEADER),
        Utc::now().timestamp(),
        300,
    );
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let status = if n < rx.behaviour.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::from_u16(rx.behaviour.then_status).unwrap()
    };
    let mut received = rx.received.lock().unwrap();
    received.requests += 1;
    if let Err(err) = verdict {
        received.bad_signatures.push(err.to_string());
    }
    if parsed["delivery_id"].as_str() != Some(header(NOTIFICATION_ID_HEADER).as_str()) {
        received
            .bad_signatures
            .push("header id differs from body delivery_id".into());
    }
    if status.is_success() {
        for n in parsed["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let id: Uuid = n["id"].as_str().unwrap().parse().unwrap();
            *received.accepted.entry(id).or_default() += 1;
        }
        received.accepted_at.push(Instant::now());
        received.bodies.push(parsed.clone());
    }
    status
}

/// A webhook receiver on a free port: its target and what it saw.
pub async fn start_receiver(behaviour: Behaviour) -> (ReceiverTarget, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = Receiver {
        behaviour,
        seen: Arc::new(AtomicUsize::new(0)),
        received: received.clone(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let target = ReceiverTarget {
        id: Uuid::now_v7(),
        kind: ReceiverKind::Webhook,
        url: format!("http://127.0.0.1:{port}/hook"),
        secret: Some(SECRET.into()),
    };
    (target, received)
}
