//! OTLP's partial success: how many spans of a request were refused and
//! why, in the one `error_message` string the protocol has. Spans dropped
//! on purpose (not model calls) are not refusals and are not counted here.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tollgate_contract::Rejection;

/// Refusals named one by one in `error_message`; the rest are counted.
const NAMED_REFUSALS: usize = 5;

/// One refused span: its position in the request (resource, scope and span
/// order, from 0), its ids as sent, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRefusal {
    pub index: usize,
    pub trace_id: String,
    pub span_id: String,
    pub rejection: Rejection,
}

/// The partial success of one export; `rejected_spans` 0 means all was taken.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartialSuccess {
    pub rejected_spans: i64,
    pub error_message: String,
}

impl PartialSuccess {
    pub fn from_refusals(spans: usize, refused: &[SpanRefusal]) -> Self {
        if refused.is_empty() {
            return Self::default();
        }
        let mut message = format!("{} of {spans} spans rejected: ", refused.len());
        let named: Vec<String> = refused
            .iter()
            .take(NAMED_REFUSALS)
            .map(|r| {
                format!(
                    "span {} (trace {}, span {}): {}: {}",
                    r.index,
                    short(&r.trace_id),
                    short(&r.span_id),
                    r.rejection.field,
                    r.rejection.reason
                )
            })
            .collect();
        message.push_str(&named.join("; "));
        if refused.len() > NAMED_REFUSALS {
            message.push_str(&format!("; and {} more", refused.len() - NAMED_REFUSALS));
        }
        Self {
            rejected_spans: i64::try_from(refused.len()).unwrap_or(i64::MAX),
            error_message: message,
        }
    }

    /// Add a warning naming the successful model calls (by position) that
    /// carried no token count: the specification lets `error_message` warn
    /// with `rejected_spans` 0. Without it such calls would cost nothing,
    /// silently (a trial's did).
    pub fn warn_without_usage(mut self, positions: &[usize]) -> Self {
        if positions.is_empty() {
            return self;
        }
        let named: Vec<String> = positions
            .iter()
            .take(NAMED_REFUSALS)
            .map(usize::to_string)
            .collect();
        let more = positions.len().saturating_sub(NAMED_REFUSALS);
        let warning = format!(
            "warning: {} successful model-call span(s) carried no token usage (gen_ai.usage.input_tokens, gen_ai.usage.output_tokens) and were stored with zero tokens and zero cost: span {}{}",
            positions.len(),
            named.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
        if self.error_message.is_empty() {
            self.error_message = warning;
        } else {
            self.error_message = format!("{}; {warning}", self.error_message);
        }
        self
    }

    /// The OTLP answer: no `partial_success` at all when nothing was
    /// refused nor warned of, as the specification asks.
    pub fn response(&self) -> ExportTraceServiceResponse {
        let answer = self.rejected_spans > 0 || !self.error_message.is_empty();
        ExportTraceServiceResponse {
            partial_success: answer.then(|| ExportTracePartialSuccess {
                rejected_spans: self.rejected_spans,
                error_message: self.error_message.clone(),
            }),
        }
    }
}

/// An id as sent, cut when a hostile sender made it long.
fn short(id: &str) -> &str {
    if id.is_empty() {
        return "-";
    }
    id.get(..32).unwrap_or(id)
}
