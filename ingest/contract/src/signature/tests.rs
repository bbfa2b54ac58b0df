//! Signatures over the real shapes of provider errors (as documented by
//! OpenAI, Anthropic, Google and AWS Bedrock) and of the failures the proxy
//! records itself (`ingest/proxy/src/forward.rs`): each shape is one
//! signature whatever its numbers, ids and times, and shapes stay apart.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// The parts of a message that vary from one occurrence to the next.
#[derive(Debug, Clone)]
struct Vars {
    model: String,
    org: String,
    request_id: String,
    api_key: String,
    uuid: String,
    n: [u64; 4],
    wait: String,
    timestamp: String,
    port: u16,
    field: String,
}

struct Shape {
    name: &'static str,
    provider: &'static str,
    status: u16,
    error_type: &'static str,
    render: fn(&Vars) -> String,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "openai tokens per minute",
        provider: "openai",
        status: 429,
        error_type: "tokens",
        render: |v| {
            format!(
            "Rate limit reached for {} in organization {} on tokens per min (TPM): Limit {}, Used {}, Requested {}. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.",
            v.model, v.org, v.n[0], v.n[1], v.n[2], v.wait
        )
        },
    },
    Shape {
        name: "openai requests per minute",
        provider: "openai",
        status: 429,
        error_type: "requests",
        render: |v| {
            format!(
            "Rate limit reached for {} in organization {} on requests per min (RPM): Limit {}, Used {}, Requested {}. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.",
            v.model, v.org, v.n[0], v.n[1], v.n[2], v.wait
        )
        },
    },
    Shape {
        name: "openai context_length_exceeded",
        provider: "openai",
        status: 400,
        error_type: "invalid_request_error",
        render: |v| {
            format!(
            "This model's maximum context length is {} tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
            v.n[0], v.n[1]
        )
        },
    },
    Shape {
        name: "openai 500 with request id",
        provider: "openai",
        status: 500,
        error_type: "server_error",
        render: |v| {
            format!(
            "The server had an error while processing your request. Sorry about that! You can retry your request, or contact us through our help center at help.openai.com if the error persists. (Please include the request ID {} in your message.)",
            v.request_id
        )
        },
    },
    Shape {
        name: "openai invalid_api_key",
        provider: "openai",
        status: 401,
        error_type: "invalid_request_error",
        render: |v| {
            format!(
            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
            v.api_key
        )
        },
    },
    Shape {
        name: "openai insufficient_quota",
        provider: "openai",
        status: 429,
        error_type: "insufficient_quota",
        render: |_| {
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.".to_string()
        },
    },
    Shape {
        name: "anthropic overloaded_error",
        provider: "anthropic",
        status: 529,
        error_type: "overloaded_error",
        render: |_| "Overloaded".to_string(),
    },
    Shape {
        name: "anthropic rate_limit_error, request tokens",
        provider: "anthropic",
        status: 429,
        error_type: "rate_limit_error",
        render: |_| {
            "Number of request tokens has exceeded your per-minute rate limit (https://docs.anthropic.com/en/api/rate-limits); see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.".to_string()
        },
    },
    Shape {
        name: "anthropic rate_limit_error, organization",
        provider: "anthropic",
        status: 429,
        error_type: "rate_limit_error",
        render: |v| {
            format!(
            "This request would exceed the rate limit for your organization ({}) of {} input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.",
            v.uuid, v.n[0]
        )
        },
    },
    Shape {
        name: "anthropic prompt is too long",
        provider: "anthropic",
        status: 400,
        error_type: "invalid_request_error",
        render: |v| format!("prompt is too long: {} tokens > {} maximum", v.n[0], v.n[1]),
    },
    Shape {
        name: "anthropic max_tokens too large",
        provider: "anthropic",
        status: 400,
        error_type: "invalid_request_error",
        render: |v| {
            format!(
                "max_tokens: {} > {}, which is the maximum allowed number of output tokens for {}",
                v.n[0], v.n[1], v.model
            )
        },
    },
    Shape {
        name: "google RESOURCE_EXHAUSTED",
        provider: "google",
        status: 429,
        error_type: "RESOURCE_EXHAUSTED",
        render: |_| "Resource has been exhausted (e.g. check quota).".to_string(),
    },
    Shape {
        name: "google RESOURCE_EXHAUSTED with quota metric",
        provider: "google",
        status: 429,
        error_type: "RESOURCE_EXHAUSTED",
        render: |v| {
            format!(
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_input_token_count, limit: {}, model: {}\nPlease retry in {}.",
            v.n[0], v.model, v.wait
        )
        },
    },
    Shape {
        name: "google UNAVAILABLE overloaded",
        provider: "google",
        status: 503,
        error_type: "UNAVAILABLE",
        render: |_| "The model is overloaded. Please try again later.".to_string(),
    },
    Shape {
        name: "google INVALID_ARGUMENT unknown field",
        provider: "google",
        status: 400,
        error_type: "INVALID_ARGUMENT",
        render: |v| {
            format!(
            "Invalid JSON payload received. Unknown name \"{}\" at 'generation_config': Cannot find field.",
            v.field
        )
        },
    },
    Shape {
        name: "google INVALID_ARGUMENT token count",
        provider: "google",
        status: 400,
        error_type: "INVALID_ARGUMENT",
        render: |v| {
            format!(
                "The input token count ({}) exceeds the maximum number of tokens allowed ({}).",
                v.n[0], v.n[1]
            )
        },
    },
    Shape {
        name: "bedrock ThrottlingException, requests",
        provider: "bedrock",
        status: 429,
        error_type: "ThrottlingException",
        render: |_| "Too many requests, please wait before trying again.".to_string(),
    },
    Shape {
        name: "bedrock ThrottlingException, tokens",
        provider: "bedrock",
        status: 429,
        error_type: "ThrottlingException",
        render: |_| "Too many tokens, please wait before trying again.".to_string(),
    },
    Shape {
        name: "bedrock ModelTimeoutException",
        provider: "bedrock",
        status: 408,
        error_type: "ModelTimeoutException",
        render: |_| {
            "The request took too long to process. Processing time exceeded the model timeout length.".to_string()
        },
    },
    Shape {
        name: "bedrock ValidationException, input too long",
        provider: "bedrock",
        status: 400,
        error_type: "ValidationException",
        render: |_| "Input is too long for requested model.".to_string(),
    },
    Shape {
        name: "bedrock AccessDeniedException with model ARN",
        provider: "bedrock",
        status: 403,
        error_type: "AccessDeniedException",
        render: |v| {
            format!(
            "User: arn:aws:sts::{}:assumed-role/app/{} is not authorized to perform: bedrock:InvokeModel on resource: arn:aws:bedrock:us-east-1::foundation-model/anthropic.{}",
            v.n[0], v.request_id, v.model
        )
        },
    },
    Shape {
        name: "proxy first-byte timeout",
        provider: "openai",
        status: 0,
        error_type: "timeout",
        render: |v| {
            format!(
                "no response headers within {} ms (first_byte_timeout_ms)",
                v.n[0]
            )
        },
    },
    Shape {
        name: "proxy idle timeout mid-stream",
        provider: "anthropic",
        status: 200,
        error_type: "timeout",
        render: |v| format!("upstream sent nothing for {} ms (idle_timeout_ms)", v.n[0]),
    },
    Shape {
        name: "proxy connect error",
        provider: "openai",
        status: 0,
        error_type: "connect_error",
        render: |v| {
            format!(
                "error sending request for url (http://10.0.{}.{}:{}/v1/chat/completions)",
                v.n[0] % 256,
                v.n[1] % 256,
                v.port
            )
        },
    },
    Shape {
        name: "proxy connection reset mid-stream",
        provider: "openai",
        status: 200,
        error_type: "upstream_disconnected",
        render: |_| "error decoding response body".to_string(),
    },
    Shape {
        name: "proxy non-JSON 502 from a gateway",
        provider: "openai",
        status: 502,
        error_type: "http_502",
        render: |v| {
            format!(
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\nRay ID: {:016x} at {}\r\n</body>\r\n</html>",
            v.n[0], v.timestamp
        )
        },
    },
];

fn sign(shape: &Shape, vars: &Vars) -> Signature {
    signature(&ErrorInput {
        provider: shape.provider,
        http_status: shape.status,
        error_type: shape.error_type,
        message: &(shape.render)(vars),
    })
}

fn vars_a() -> Vars {
    Vars {
        model: "gpt-4o".into(),
        org: "org-AbC1dEfGhIjKlMnOpQrStUvW".into(),
        request_id: "req_abc123".into(),
        api_key: "sk-proj-********************************************abcd".into(),
        uuid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
        n: [30000, 29794, 1165, 7],
        wait: "1.918s".into(),
        timestamp: "2026-12-01T20:06:55Z".into(),
        port: 443,
        field: "temprature".into(),
    }
}

fn vars_b() -> Vars {
    Vars {
        model: "claude-3-5-sonnet-20241022".into(),
        org: "org-zz9".into(),
        request_id: "req_011CV4xK9mQpZ8wYbD1e2F3g".into(),
        api_key: "sk-abc1****************wxyz".into(),
        uuid: "550e8400-e29b-41d4-a716-446655440000".into(),
        n: [128000, 130532, 1, 0],
        wait: "6m0s".into(),
        timestamp: "2025-01-31 23:59:59.999 UTC".into(),
        port: 8080,
        field: "topK".into(),
    }
}

fn vars_c() -> Vars {
    Vars {
        model: "gemini-2.5-flash".into(),
        org: "org-Q7".into(),
        request_id: "req_9f8e7d6c5b4a39281706f5e4d3c2b1a0".into(),
        api_key: "sk-ant-api03-****Xy9Z".into(),
        uuid: "AAAAAAAA-BBBB-CCCC-DDDD-000000000001".into(),
        n: [1, 22, 333_333, 4_444_444_444],
        wait: "20ms".into(),
        timestamp: "17:03:12".into(),
        port: 1,
        field: "candidate_count".into(),
    }
}

#[test]
fn each_shape_is_one_signature_whatever_its_variables() {
    for shape in SHAPES {
        let a = sign(shape, &vars_a());
        for vars in [vars_b(), vars_c()] {
            let other = sign(shape, &vars);
            assert_eq!(
                a.id, other.id,
                "{}: {:?} vs {:?}",
                shape.name, a.template, other.template
            );
        }
    }
}

#[test]
fn different_shapes_are_different_signatures() {
    let mut seen: BTreeMap<SignatureId, &str> = BTreeMap::new();
    for shape in SHAPES {
        let s = sign(shape, &vars_a());
        if let Some(before) = seen.insert(s.id, shape.name) {
            panic!(
                "{} and {} share {}: {:?}",
                before, shape.name, s.id, s.template
            );
        }
    }
    assert_eq!(seen.len(), SHAPES.len());
}

#[test]
fn templates_read_as_the_pattern() {
    let by_name = |name: &str| {
        let shape = SHAPES.iter().find(|s| s.name == name).unwrap();
        sign(shape, &vars_a()).template
    };
    assert_eq!(
        by_name("openai tokens per minute"),
        "Rate limit reached for <ID> in organization <ID> on tokens per min (TPM): Limit <NUM>, Used <NUM>, Requested <NUM>. Please try again in <DURATION>. Visit <URL> to learn more."
    );
    assert_eq!(
        by_name("openai context_length_exceeded"),
        "This model's maximum context length is <NUM> tokens. However, your messages resulted in <NUM> tokens. Please reduce the length of the messages."
    );
    assert_eq!(
        by_name("anthropic prompt is too long"),
        "prompt is too long: <NUM> tokens > <NUM> maximum"
    );
    assert_eq!(
        by_name("proxy first-byte timeout"),
        "no response headers within <DURATION> (first_byte_timeout_ms)"
    );
    assert_eq!(
        by_name("proxy connect error"),
        "error sending request for url (<URL>)"
    );
    assert_eq!(by_name("anthropic overloaded_error"), "Overloaded");
}

#[test]
fn samples_keep_their_variable_parts() {
    let shape = &SHAPES[0];
    let s = sign(shape, &vars_a());
    let texts: Vec<&str> = s.variables.iter().map(|v| v.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "gpt-4o",
            "org-AbC1dEfGhIjKlMnOpQrStUvW",
            "30000",
            "29794",
            "1165",
            "1.918s",
            "https://platform.openai.com/account/rate-limits"
        ]
    );
}

#[test]
fn the_class_is_part_of_the_id() {
    let input = ErrorInput {
        provider: "anthropic",
        http_status: 529,
        error_type: "overloaded_error",
        message: "Overloaded",
    };
    let base = signature(&input).id;
    for other in [
        ErrorInput {
            provider: "openai",
            ..input
        },
        ErrorInput {
            http_status: 503,
            ..input
        },
        ErrorInput {
            error_type: "api_error",
            ..input
        },
        ErrorInput {
            message: "Overloaded!",
            ..input
        },
    ] {
        assert_ne!(signature(&other).id, base, "{other:?}");
    }
    // Spelling noise in the class does not split a pattern.
    let noisy = ErrorInput {
        provider: " Anthropic",
        error_type: "overloaded_error ",
        message: "  Overloaded\n",
        ..input
    };
    assert_eq!(signature(&noisy).id, base);
}

/// Ids are stored in tables and compared across versions of the binary: a
/// change of the masking rules or of the hashed bytes must be deliberate
/// (bump `SIGNATURE_VERSION`, update this value and the doc).
#[test]
fn the_id_is_frozen() {
    let s = signature(&ErrorInput {
        provider: "anthropic",
        http_status: 529,
        error_type: "overloaded_error",
        message: "Overloaded",
    });
    assert_eq!(s.id.to_string(), FROZEN_OVERLOADED);
    let s = sign(&SHAPES[0], &vars_b());
    assert_eq!(s.id.to_string(), FROZEN_OPENAI_TPM);
}

const FROZEN_OVERLOADED: &str = "453f8e518536b334";
const FROZEN_OPENAI_TPM: &str = "aa97b1456412ad47";

#[test]
fn ids_round_trip_as_hex_text() {
    let id = SignatureId(0x00ab_cdef_0123_4567);
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, "\"00abcdef01234567\"");
    assert_eq!(serde_json::from_str::<SignatureId>(&json).unwrap(), id);
    assert!(serde_json::from_str::<SignatureId>("\"abc\"").is_err());
    assert!("zzzzzzzzzzzzzzzz".parse::<SignatureId>().is_err());
    assert!("+0abcdef01234567".parse::<SignatureId>().is_err());
}

#[test]
fn from_call_reads_the_event_fields() {
    let error = ProviderError {
        error_type: "overloaded_error".into(),
        message: "Overloaded".into(),
        signature: None,
    };
    let input = ErrorInput::from_call("anthropic", 529, &error);
    assert_eq!(input.error_type, "overloaded_error");
    assert_eq!(input.message, "Overloaded");
}

// ---- property tests ----------------------------------------------------

fn word() -> impl Strategy<Value = String> {
    "[A-Za-z]{1,12}"
}

fn vars() -> impl Strategy<Value = Vars> {
    let model = prop_oneof![
        (1u8..10, "[a-z]{0,6}").prop_map(|(v, s)| format!("gpt-{v}{s}")),
        (1u8..5, 1u8..10, 2020u16..2030, 1u8..13, 1u8..29)
            .prop_map(|(a, b, y, m, d)| format!("claude-{a}-{b}-sonnet-{y}{m:02}{d:02}")),
        (1u8..3, 0u8..10).prop_map(|(a, b)| format!("gemini-{a}.{b}-pro")),
    ];
    let org = "[A-Za-z0-9]{0,23}[0-9][A-Za-z0-9]{0,4}".prop_map(|s| format!("org-{s}"));
    // Real request ids are 24 to 32 characters; a short all-letter tail is
    // a word (`user-facing`), not an id.
    let request_id = "[0-9a-f]{8,32}".prop_map(|s| format!("req_{s}"));
    let api_key = ("[a-z0-9]{0,4}", 4usize..60, "[A-Za-z0-9]{4}")
        .prop_map(|(head, stars, tail)| format!("sk-{head}{}{tail}", "*".repeat(stars)));
    let uuid = any::<u128>().prop_map(|u| {
        let h = format!("{u:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    });
    let wait = prop_oneof![
        (0u32..100_000).prop_map(|ms| format!("{ms}ms")),
        (0u32..600, 0u32..1000).prop_map(|(s, f)| format!("{s}.{f}s")),
        (1u32..60, 0u32..60).prop_map(|(m, s)| format!("{m}m{s}s")),
    ];
    let timestamp = (2000u16..2100, 1u8..13, 1u8..29, 0u8..24, 0u8..60, 0u8..60)
        .prop_map(|(y, mo, d, h, mi, s)| format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"));
    (
        model,
        org,
        request_id,
        api_key,
        uuid,
        // Up to 15 digits: token counts stop at 10^9, AWS accounts have 12.
        prop::array::uniform4(0u64..1_000_000_000_000_000),
        wait,
        timestamp,
        any::<u16>(),
        word(),
    )
        .prop_map(
            |(model, org, request_id, api_key, uuid, n, wait, timestamp, port, field)| Vars {
                model,
                org,
                request_id,
                api_key,
                uuid,
                n,
                wait,
                timestamp,
                port,
                field,
            },
        )
}

/// Pieces that stress the rules' edges: digits next to letters, quotes,
/// units, dots, placeholders, id prefixes.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        word(),
        "[0-9]{1,6}",
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("`".to_string()),
        Just("s".to_string()),
        Just("ms".to_string()),
        Just(".".to_string()),
        Just("-".to_string()),
        Just(":".to_string()),
        Just("org-".to_string()),
        Just("req_".to_string()),
        Just("https://".to_string()),
        Just("@".to_string()),
        Just("<NUM>".to_string()),
        Just("*".to_string()),
        Just("µ".to_string()),
    ]
}

fn message() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (fragment(), prop_oneof![Just(""), Just(" "), Just("\n")]),
        0..24,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .map(|(f, sep)| format!("{f}{sep}"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn substituted_variables_never_change_the_signature(vars in vars()) {
        for shape in SHAPES {
            let want = sign(shape, &vars_a());
            let got = sign(shape, &vars);
            prop_assert_eq!(got.id, want.id, "{}: {:?}", shape.name, got.template);
        }
    }

    #[test]
    fn masking_a_template_again_changes_nothing(text in message()) {
        let once = mask(&text).template;
        let twice = mask(&once);
        prop_assert_eq!(&twice.template, &once);
        prop_assert!(twice.variables.is_empty(), "{:?}", twice.variables);
    }

    #[test]
    fn masking_real_shapes_is_idempotent(vars in vars()) {
        for shape in SHAPES {
            let once = sign(shape, &vars).template;
            prop_assert_eq!(mask(&once).template, once);
        }
    }

    #[test]
    fn merge_order_and_duplicates_do_not_matter(
        (merges, shuffled) in prop::collection::vec(
            (0u64..24, 0u64..24, prop::sample::select(vec!["a b c", "a x c", "a b y", "q b c"])),
            0..40,
        )
        .prop_map(|raw| raw.into_iter().map(|(from, into, t)| Merge {
            from: SignatureId(from),
            into: SignatureId(into),
            template: t.to_string(),
        }).collect::<Vec<_>>())
        .prop_flat_map(|merges| {
            // A permutation with some merges repeated, as replicas re-propose them.
            let mut doubled = merges.clone();
            doubled.extend(merges.iter().take(merges.len() / 2).cloned());
            (Just(merges), Just(doubled).prop_shuffle())
        })
    ) {
        let a = CanonicalIds::new(&merges);
        let b = CanonicalIds::new(&shuffled);
        prop_assert_eq!(&a, &b);
        for id in 0..24 {
            let id = SignatureId(id);
            prop_assert_eq!(apply(&merges, id), apply(&shuffled, id));
            prop_assert!(a.canonical(id) <= id);
        }
    }

    /// Two replicas learn the same signatures in different orders: once they
    /// share their merges, each family of messages that differ only in a word
    /// masking cannot see resolves to one canonical id, the same on both,
    /// and no two families share one.
    #[test]
    fn replicas_learning_in_any_order_agree_once_merges_are_shared(
        (order_a, order_b) in Just(family_signatures())
            .prop_flat_map(|sigs| (Just(sigs.clone()).prop_shuffle(), Just(sigs).prop_shuffle()))
    ) {
        let learn = |order: &[(usize, Signature)]| {
            let mut tree = DrainTree::new(DrainConfig::default()).unwrap();
            order.iter().filter_map(|(_, s)| tree.learn(s)).collect::<Vec<_>>()
        };
        let mut shared = learn(&order_a);
        shared.extend(learn(&order_b));
        let ids = CanonicalIds::new(&shared);
        let mut per_family: BTreeMap<usize, BTreeSet<SignatureId>> = BTreeMap::new();
        for (family, s) in &order_a {
            per_family.entry(*family).or_default().insert(ids.canonical(s.id));
        }
        let mut all = BTreeSet::new();
        for (family, canon) in &per_family {
            prop_assert_eq!(canon.len(), 1, "family {} split: {:?}", family, canon);
            prop_assert!(all.insert(*canon.iter().next().unwrap()), "families joined");
        }
        // The canonical id is the family's smallest, so it does not depend on
        // which replica saw what first.
        for (family, canon) in per_family {
            let smallest = order_a.iter().filter(|(f, _)| *f == family).map(|(_, s)| s.id).min();
            prop_assert_eq!(canon.into_iter().next(), smallest);
        }
    }
}

/// Families of messages that differ in a word masking keeps (tagged with
/// their family).
fn family_signatures() -> Vec<(usize, Signature)> {
    let families: [(&str, u16, &str, &str, &[&str]); 3] = [
        (
            "openai",
            404,
            "invalid_request_error",
            "The model {} has been deprecated, learn more here",
            &["davinci", "babbage", "curie", "ada"],
        ),
        (
            "google",
            400,
            "INVALID_ARGUMENT",
            "Invalid value at {} (TYPE_STRING), expected a string",
            &["contents", "systemInstruction", "tools", "safetySettings"],
        ),
        (
            "bedrock",
            400,
            "ValidationException",
            "The provided model identifier {} is invalid.",
            &["anthropic.claude", "meta.llama", "amazon.titan"],
        ),
    ];
    let mut out = Vec::new();
    for (family, (provider, status, error_type, pattern, words)) in families.iter().enumerate() {
        for word in *words {
            let message = pattern.replace("{}", word);
            out.push((
                family,
                signature(&ErrorInput {
                    provider,
                    http_status: *status,
                    error_type,
                    message: &message,
                }),
            ));
        }
    }
    out
}

/// Masking runs once per failed call; this prints its cost. Run with
/// `cargo test -p tollgate-contract --release signature::tests::mask_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check; see docs/error-patterns.md"]
fn mask_cost() {
    let messages: Vec<(usize, String)> = (0..SHAPES.len())
        .flat_map(|i| {
            [vars_a(), vars_b(), vars_c()]
                .into_iter()
                .map(move |v| (i, (SHAPES[i].render)(&v)))
        })
        .collect();
    let rounds = 2_000;
    let started = std::time::Instant::now();
    let mut checksum = 0u64;
    for _ in 0..rounds {
        for (i, message) in &messages {
            let shape = &SHAPES[*i];
            let s = signature(&ErrorInput {
                provider: shape.provider,
                http_status: shape.status,
                error_type: shape.error_type,
                message,
            });
            checksum = checksum.wrapping_add(s.id.0);
        }
    }
    let n = (rounds * messages.len()) as u128;
    let mean_len = messages.iter().map(|(_, m)| m.len()).sum::<usize>() / messages.len();
    println!(
        "signature(): {} ns/message over {n} messages (mean {mean_len} bytes; checksum {checksum:x})",
        started.elapsed().as_nanos() / n
    );
}
