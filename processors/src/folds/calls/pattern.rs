//! The error-pattern and recovery columns of a `calls` row (migration
//! 0030): the signature of the attempt's error and the attempt's place in
//! its call (`call.recovery`). The views of the error-patterns fold
//! (`crate::folds::error_patterns`) count failures and recoveries from
//! them. Pure: the same event gives the same columns on every replica.

use tollgate_contract::signature::{signature, ErrorInput};
use tollgate_contract::{Call, Strategy};

/// The columns, with the meaning of `docs/error-patterns.md`, "Recovery
/// facts".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternColumns {
    /// The error's signature id; 0 when the attempt has no error.
    pub error_signature: u64,
    /// The error's masked message; '' without an error.
    pub error_template: String,
    /// The masked parts of the message, in order.
    pub error_variables: Vec<String>,
    pub recovery_sequence: u16,
    pub recovery_wait_ms: u32,
    pub recovery_strategy: &'static str,
    /// 0 on a call's first attempt.
    pub recovery_from_signature: u64,
    pub recovery_from_provider: String,
    pub recovery_from_model: String,
    pub last_attempt: u8,
}

/// The columns of `call`. A call without `recovery` is its only attempt.
pub fn pattern_columns(call: &Call) -> PatternColumns {
    let (error_signature, error_template, error_variables) = match &call.error {
        Some(error) => {
            let sig = signature(&ErrorInput::from_call(
                &call.provider,
                call.http_status,
                error,
            ));
            let variables = sig.variables.into_iter().map(|v| v.text).collect();
            (sig.id.0, sig.template, variables)
        }
        None => (0, String::new(), Vec::new()),
    };
    let (sequence, wait_ms, strategy, from, from_provider, from_model, last) = match &call.recovery
    {
        Some(r) => (
            r.sequence,
            r.wait_ms,
            r.strategy,
            r.from_signature.map_or(0, |s| s.0),
            r.from_provider.clone(),
            r.from_model.clone(),
            r.last,
        ),
        None => (1, 0, Strategy::First, 0, String::new(), String::new(), true),
    };
    PatternColumns {
        error_signature,
        error_template,
        error_variables,
        recovery_sequence: sequence,
        recovery_wait_ms: wait_ms,
        recovery_strategy: strategy.as_str(),
        recovery_from_signature: from,
        recovery_from_provider: from_provider,
        recovery_from_model: from_model,
        last_attempt: u8::from(last),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tollgate_contract::signature::SignatureId;
    use tollgate_contract::{Operation, Outcome, ProviderError, Recovery, Usage};

    fn call(error: Option<(&str, &str)>, recovery: Option<Recovery>) -> Call {
        Call {
            call_id: "c".into(),
            trace_id: String::new(),
            span_id: String::new(),
            provider: "anthropic".into(),
            model: "claude-x".into(),
            requested_model: String::new(),
            attempt: 1,
            fallback_of: String::new(),
            operation: Operation::Messages,
            stream: false,
            duration_ms: 5,
            ttft_ms: None,
            usage: Usage::default(),
            outcome: if error.is_some() {
                Outcome::Error
            } else {
                Outcome::Success
            },
            http_status: if error.is_some() { 529 } else { 200 },
            error: error.map(|(t, m)| ProviderError {
                error_type: t.into(),
                message: m.into(),
                signature: None,
            }),
            cache_hit: false,
            prompt_sha256: None,
            response_sha256: None,
            recovery,
        }
    }

    #[test]
    fn an_error_gets_its_signature_template_and_variables() {
        let a = pattern_columns(&call(
            Some((
                "overloaded_error",
                "Overloaded, request req_abc123def retry in 20ms",
            )),
            None,
        ));
        let b = pattern_columns(&call(
            Some((
                "overloaded_error",
                "Overloaded, request req_zz99yy88 retry in 1.5s",
            )),
            None,
        ));
        assert_ne!(a.error_signature, 0);
        assert_eq!(a.error_signature, b.error_signature);
        assert_eq!(
            a.error_template,
            "Overloaded, request <ID> retry in <DURATION>"
        );
        assert_eq!(a.error_variables, vec!["req_abc123def", "20ms"]);
        assert_eq!(
            (a.recovery_sequence, a.recovery_strategy, a.last_attempt),
            (1, "first", 1)
        );
    }

    #[test]
    fn a_success_has_no_signature_and_keeps_its_recovery_facts() {
        let from: SignatureId = "00000000000000ff".parse().unwrap();
        let c = pattern_columns(&call(
            None,
            Some(Recovery {
                sequence: 3,
                wait_ms: 250,
                strategy: Strategy::FallbackProvider,
                from_signature: Some(from),
                from_provider: "openai".into(),
                from_model: "gpt-4o".into(),
                last: true,
            }),
        ));
        assert_eq!((c.error_signature, c.error_template.as_str()), (0, ""));
        assert_eq!(
            (
                c.recovery_sequence,
                c.recovery_wait_ms,
                c.recovery_strategy,
                c.recovery_from_signature,
                c.recovery_from_provider.as_str(),
                c.recovery_from_model.as_str(),
                c.last_attempt
            ),
            (3, 250, "fallback_provider", 255, "openai", "gpt-4o", 1)
        );
    }
}
