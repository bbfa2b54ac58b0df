//! The OTLP trace receiver of `tollgate ingest` (`docs/otlp.md`): OTLP/HTTP
//! `POST /v1/traces` (protobuf and JSON, `http.rs`) and OTLP/gRPC
//! `TraceService/Export` (`grpc.rs`) share one export path, here: count
//! the spans against the request limit, map each span (`genai.rs`, over
//! `attributes.rs`), validate the model calls with the contract, produce
//! them to Kafka through the producer the JSON API uses, and answer with
//! OTLP's partial success for the spans refused (`partial.rs`).
//!
//! Spans that are not model calls are counted ([`SpanCounters`]) and
//! dropped. Each call's `event_id` comes from its trace and span id, and
//! the ids this process recently had acknowledged by Kafka are remembered
//! ([`RecentSpans`]), so an exporter retrying a request after a lost answer
//! or a partial Kafka failure does not put the same spans on the topic again.

/// The tag of a successful call whose span carried no token usage, and
/// its value (`docs/otlp.md`, "Calls without usage").
pub const USAGE_TAG: &str = "usage";
pub const USAGE_MISSING: &str = "missing";

pub mod attributes;
pub mod genai;
pub mod grpc;
pub mod http;
pub mod partial;
pub mod precount;
pub mod proxied;
pub mod sdk_error;

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use chrono::Utc;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tollgate_contract::{Event, Rejection};
use tollgate_control::keys::TenantKey;
use uuid::Uuid;

use crate::error::IngestError;
use crate::http::IngestState;
use crate::metrics::{Api, OutcomeLabels, Refusal};
use genai::{map_span, SpanMapping, Tenant};
use partial::{PartialSuccess, SpanRefusal};
use proxied::ProxyAddresses;

/// Counts of what the receiver did with the spans it was sent, since the
/// process started, exposed as `tollgate_ingest_otlp_spans_total{outcome}`
/// (`docs/metrics.md`). Each field is one outcome's counter of one family.
#[derive(Debug)]
pub struct SpanCounters {
    family: Family<OutcomeLabels, Counter>,
    /// Spans in requests that were read (whole-request refusals excluded).
    pub received: Counter,
    /// Model-call spans acknowledged by Kafka (or already acknowledged
    /// earlier, for a retried span).
    pub accepted: Counter,
    /// Model-call spans refused (reported in the partial success).
    pub rejected: Counter,
    /// Spans without GenAI attributes, dropped.
    pub dropped_not_genai: Counter,
    /// GenAI spans that are not model calls (agents, tools), dropped.
    pub dropped_not_model_call: Counter,
    /// Model-call spans of calls made through a Tollgate proxy, which
    /// records them itself ([`proxied`]), dropped.
    pub dropped_proxied: Counter,
    /// Retried spans answered from [`RecentSpans`] without producing again.
    pub retried: Counter,
    /// Of the accepted, successful model calls that carried no token
    /// count: stored with zero tokens and zero cost (not an outcome of its
    /// own: these are among `accepted`).
    pub accepted_without_usage: Counter,
}

impl Default for SpanCounters {
    fn default() -> Self {
        let family = Family::<OutcomeLabels, Counter>::default();
        let counter =
            |outcome: &'static str| family.get_or_create(&OutcomeLabels { outcome }).clone();
        Self {
            received: counter("received"),
            accepted: counter("accepted"),
            rejected: counter("rejected"),
            dropped_not_genai: counter("dropped_not_genai"),
            dropped_not_model_call: counter("dropped_not_model_call"),
            dropped_proxied: counter("dropped_proxied"),
            retried: counter("retried"),
            accepted_without_usage: counter("accepted_without_usage"),
            family,
        }
    }
}

impl SpanCounters {
    fn add(counter: &Counter, n: usize) {
        counter.inc_by(n as u64);
    }

    /// Register the counters in `registry` (the binary passes its
    /// `tollgate_ingest` section).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "otlp_spans",
            "Spans sent to the OTLP receiver, by outcome (received, accepted, rejected, dropped_not_genai, dropped_not_model_call, dropped_proxied, retried; accepted_without_usage counts the accepted successful calls that carried no token count)",
            self.family.clone(),
        );
    }
}

/// The event ids of the spans this process most recently had acknowledged
/// by Kafka, at most `capacity`, oldest forgotten first.
#[derive(Debug)]
pub struct RecentSpans {
    capacity: usize,
    order: VecDeque<Uuid>,
    ids: HashSet<Uuid>,
}

impl RecentSpans {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            ids: HashSet::new(),
        }
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    pub fn remember(&mut self, id: Uuid) {
        if self.capacity == 0 || !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// The receiver's own state, part of [`IngestState`].
#[derive(Debug)]
pub struct OtlpReceiver {
    pub counters: SpanCounters,
    recent: Mutex<RecentSpans>,
    proxies: ProxyAddresses,
}

impl OtlpReceiver {
    pub fn new(recent_capacity: usize, proxies: ProxyAddresses) -> Self {
        Self {
            counters: SpanCounters::default(),
            recent: Mutex::new(RecentSpans::new(recent_capacity)),
            proxies,
        }
    }

    fn recently_accepted(&self, id: &Uuid) -> bool {
        self.recent.lock().map(|r| r.contains(id)).unwrap_or(false)
    }

    fn remember(&self, ids: impl IntoIterator<Item = Uuid>) {
        if let Ok(mut recent) = self.recent.lock() {
            for id in ids {
                recent.remember(id);
            }
        }
    }
}

/// The tenant of the spans a key sends: its org scope, and the team and
/// user it carries (`tollgate keys create --team/--user`), as verified
/// with the key (cached with it: no PostgreSQL per request).
pub fn tenant_of(verified: &TenantKey) -> Tenant {
    Tenant {
        api_key_id: verified.key.id.to_string(),
        org_id: verified.key.org_id.clone(),
        team_id: verified.tenant.team_id.clone(),
        user_id: verified.tenant.user_id.clone(),
    }
}

/// What became of the spans of one request, before it is put into either
/// transport's answer.
#[derive(Debug, Default)]
pub struct SpanPlan {
    /// Model calls to produce, in request order.
    pub events: Vec<Event>,
    pub refused: Vec<SpanRefusal>,
    pub not_genai: usize,
    pub not_model_call: usize,
    /// Model-call spans of calls through a Tollgate proxy.
    pub proxied: usize,
    /// Positions of successful model calls taken without any token count
    /// (stored with zero tokens and zero cost; warned of).
    pub without_usage: Vec<usize>,
    pub spans: usize,
}

/// Map and validate every span of `request` for `tenant`, passing over
/// the calls made through one of `proxies`. Pure, so the whole mapping is
/// tested without servers.
pub fn plan_spans(
    request: &ExportTraceServiceRequest,
    tenant: &Tenant,
    now: chrono::DateTime<Utc>,
    limits: &tollgate_contract::Limits,
    proxies: &ProxyAddresses,
) -> SpanPlan {
    let mut plan = SpanPlan::default();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut index = 0usize;
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let this = index;
                index += 1;
                let mapped = map_span(resource, span, tenant);
                // A model call through the proxy is the proxy's to record,
                // whether or not its attributes would pass here (an error
                // comes only from a GenAI span).
                let model_call = matches!(mapped, Ok(SpanMapping::Call(_)) | Err(_));
                if model_call && proxies.reached_by(span) {
                    plan.proxied += 1;
                    continue;
                }
                let checked = mapped.and_then(|mapping| match mapping {
                    SpanMapping::Call(call) => {
                        let reports_usage = call.reports_usage();
                        let mut event = call.validate(now, limits)?;
                        if !seen.insert(event.event_id) {
                            return Err(Rejection::new(
                                "span_id",
                                "the same trace and span id twice in this request",
                            ));
                        }
                        let succeeded = event
                            .call
                            .as_ref()
                            .is_some_and(|c| c.outcome == tollgate_contract::Outcome::Success);
                        if succeeded && !reports_usage {
                            plan.without_usage.push(this);
                            // Its zero cost is no price: the tag lets the
                            // cost report tell such calls apart
                            // (`group_by=tag:usage`), as the proxy's
                            // `usage = estimated` does; a span already at
                            // the tag limit keeps its own tags.
                            if event.tags.len() < limits.max_tags {
                                event
                                    .tags
                                    .entry(USAGE_TAG.into())
                                    .or_insert_with(|| USAGE_MISSING.into());
                            }
                        }
                        Ok(Some(event))
                    }
                    SpanMapping::NotGenAi => {
                        plan.not_genai += 1;
                        Ok(None)
                    }
                    SpanMapping::NotModelCall => {
                        plan.not_model_call += 1;
                        Ok(None)
                    }
                });
                match checked {
                    Ok(Some(event)) => plan.events.push(event),
                    Ok(None) => {}
                    Err(rejection) => plan.refused.push(SpanRefusal {
                        index: this,
                        trace_id: hex::encode(span.trace_id.get(..16).unwrap_or(&span.trace_id)),
                        span_id: hex::encode(span.span_id.get(..8).unwrap_or(&span.span_id)),
                        rejection,
                    }),
                }
            }
        }
    }
    plan.spans = index;
    plan
}

/// Attributes, events and links a request may carry per span it may carry
/// (`ingest.max_events_per_request`); OpenTelemetry SDKs keep at most 128
/// attributes per span, and a typical GenAI span has a few dozen.
pub const ELEMENTS_PER_SPAN: usize = 64;

/// What a decoded request holds, counted as [`precount`] counts it on the
/// wire.
pub fn counts_of(request: &ExportTraceServiceRequest) -> precount::Counts {
    let mut counts = precount::Counts::default();
    for rs in &request.resource_spans {
        counts.elements += 1 + rs.resource.as_ref().map_or(0, |r| r.attributes.len());
        for ss in &rs.scope_spans {
            counts.elements += 1 + ss.scope.as_ref().map_or(0, |s| s.attributes.len());
            counts.spans += ss.spans.len();
            for span in &ss.spans {
                counts.elements += span.attributes.len()
                    + span
                        .events
                        .iter()
                        .map(|e| 1 + e.attributes.len())
                        .sum::<usize>()
                    + span
                        .links
                        .iter()
                        .map(|l| 1 + l.attributes.len())
                        .sum::<usize>();
            }
        }
    }
    counts
}

/// Refuse a request with more spans than `max_spans`, or more attributes,
/// events and links than [`ELEMENTS_PER_SPAN`] times that.
pub fn check_counts(counts: precount::Counts, max_spans: usize) -> Result<(), IngestError> {
    if counts.spans > max_spans {
        return Err(IngestError::refused(
            Refusal::TooManySpans,
            "resource_spans",
            format!(
                "{} spans in one request, at most {max_spans} allowed (ingest.max_events_per_request); \
                 lower the exporter's batch size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
                counts.spans
            ),
        ));
    }
    let max_elements = max_spans.saturating_mul(ELEMENTS_PER_SPAN);
    if counts.elements > max_elements {
        return Err(IngestError::refused(
            Refusal::TooManyAttributes,
            "resource_spans",
            format!(
                "{} attributes, events, links and groups in one request, at most {max_elements} allowed \
                 ({ELEMENTS_PER_SPAN} per span of ingest.max_events_per_request); send fewer per request",
                counts.elements
            ),
        ));
    }
    Ok(())
}

/// Why a whole export was refused or must be retried.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Kafka did not acknowledge some model calls; the exporter should
    /// send the request again (the acknowledged ones are not produced
    /// twice, see [`RecentSpans`]).
    #[error("kafka did not acknowledge {failed} of the {calls} model-call spans ({reason}); retry the request")]
    Unavailable {
        failed: usize,
        calls: usize,
        reason: String,
    },
}

/// The one export path of both transports: limit, map, validate, produce,
/// answer.
pub async fn export(
    state: &IngestState,
    api: Api,
    key: &TenantKey,
    request: &ExportTraceServiceRequest,
) -> Result<PartialSuccess, ExportError> {
    check_counts(counts_of(request), state.max_events_per_request)?;
    let tenant = tenant_of(key);
    let receiver = &state.otlp;
    let plan = plan_spans(
        request,
        &tenant,
        Utc::now(),
        &state.limits,
        &receiver.proxies,
    );
    let counters = &receiver.counters;
    SpanCounters::add(&counters.received, plan.spans);
    SpanCounters::add(&counters.dropped_not_genai, plan.not_genai);
    SpanCounters::add(&counters.dropped_not_model_call, plan.not_model_call);
    SpanCounters::add(&counters.dropped_proxied, plan.proxied);
    SpanCounters::add(&counters.rejected, plan.refused.len());
    state.rejected.add(plan.refused.len() as u64);
    for refusal in &plan.refused {
        state.metrics.rejected(api, &refusal.rejection.field);
    }

    let (retried, fresh): (Vec<Event>, Vec<Event>) = plan
        .events
        .into_iter()
        .partition(|e| receiver.recently_accepted(&e.event_id));
    SpanCounters::add(&counters.retried, retried.len());
    let deliveries = crate::http::produce(state, &fresh).await;
    let mut acknowledged = Vec::with_capacity(fresh.len());
    let mut failure: Option<String> = None;
    let mut failed = 0usize;
    for (event, delivery) in fresh.iter().zip(&deliveries) {
        match delivery {
            Ok(_) => acknowledged.push(event.event_id),
            Err(err) => {
                failed += 1;
                failure.get_or_insert_with(|| err.reason.clone());
            }
        }
    }
    let missing = fresh.len().saturating_sub(deliveries.len());
    if missing > 0 {
        failed += missing;
        failure.get_or_insert_with(|| "no delivery report from kafka".into());
    }
    let accepted = acknowledged.len() + retried.len();
    receiver.remember(acknowledged);
    SpanCounters::add(&counters.accepted, accepted);
    tracing::info!(
        key = %key.key.prefix,
        spans = plan.spans,
        accepted,
        retried = retried.len(),
        rejected = plan.refused.len(),
        failed,
        not_genai = plan.not_genai,
        not_model_call = plan.not_model_call,
        "otlp export"
    );
    if let Some(reason) = failure {
        return Err(ExportError::Unavailable {
            failed,
            calls: fresh.len() + retried.len(),
            reason,
        });
    }
    SpanCounters::add(&counters.accepted_without_usage, plan.without_usage.len());
    Ok(PartialSuccess::from_refusals(plan.spans, &plan.refused)
        .warn_without_usage(&plan.without_usage))
}

#[cfg(test)]
mod tests;
