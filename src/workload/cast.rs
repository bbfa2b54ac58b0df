//! Who calls and what they call: orgs, teams, users, keys, and the model
//! catalogue with each model's latency and token profile.

/// One caller: a user holding an API key in a team of an org.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: String,
    pub team_id: String,
    pub user_id: String,
    pub api_key_id: String,
    /// Relative share of the traffic.
    pub weight: f64,
}

/// A model with its latency and usage profile.
#[derive(Debug, Clone, Copy)]
pub struct ModelProfile {
    pub provider: &'static str,
    pub model: &'static str,
    /// Relative share of the traffic.
    pub weight: f64,
    /// Median call duration, ms (log-normal).
    pub median_duration_ms: f64,
    /// Median time to first token for streams, ms (log-normal).
    pub median_ttft_ms: f64,
    /// Median prompt size, tokens.
    pub median_input_tokens: f64,
    /// Median completion size, tokens.
    pub median_output_tokens: f64,
    /// Whether the model reports reasoning tokens.
    pub reasoning: bool,
    /// Whether the provider has prompt caching.
    pub prompt_cache: bool,
    /// Whether calls are embeddings (no output tokens, no streaming).
    pub embedding: bool,
}

pub const MODELS: [ModelProfile; 8] = [
    ModelProfile {
        provider: "openai",
        model: "gpt-4o",
        weight: 18.0,
        median_duration_ms: 1800.0,
        median_ttft_ms: 420.0,
        median_input_tokens: 1200.0,
        median_output_tokens: 320.0,
        reasoning: false,
        prompt_cache: true,
        embedding: false,
    },
    ModelProfile {
        provider: "openai",
        model: "gpt-4o-mini",
        weight: 30.0,
        median_duration_ms: 900.0,
        median_ttft_ms: 260.0,
        median_input_tokens: 900.0,
        median_output_tokens: 220.0,
        reasoning: false,
        prompt_cache: true,
        embedding: false,
    },
    ModelProfile {
        provider: "openai",
        model: "o3-mini",
        weight: 6.0,
        median_duration_ms: 6500.0,
        median_ttft_ms: 2400.0,
        median_input_tokens: 1500.0,
        median_output_tokens: 900.0,
        reasoning: true,
        prompt_cache: true,
        embedding: false,
    },
    ModelProfile {
        provider: "openai",
        model: "text-embedding-3-small",
        weight: 10.0,
        median_duration_ms: 140.0,
        median_ttft_ms: 0.0,
        median_input_tokens: 400.0,
        median_output_tokens: 0.0,
        reasoning: false,
        prompt_cache: false,
        embedding: true,
    },
    ModelProfile {
        provider: "anthropic",
        model: "claude-sonnet-4-5",
        weight: 16.0,
        median_duration_ms: 2600.0,
        median_ttft_ms: 650.0,
        median_input_tokens: 2200.0,
        median_output_tokens: 450.0,
        reasoning: false,
        prompt_cache: true,
        embedding: false,
    },
    ModelProfile {
        provider: "anthropic",
        model: "claude-haiku-4-5",
        weight: 10.0,
        median_duration_ms: 1100.0,
        median_ttft_ms: 330.0,
        median_input_tokens: 1100.0,
        median_output_tokens: 260.0,
        reasoning: false,
        prompt_cache: true,
        embedding: false,
    },
    ModelProfile {
        provider: "google",
        model: "gemini-2.5-flash",
        weight: 7.0,
        median_duration_ms: 1300.0,
        median_ttft_ms: 380.0,
        median_input_tokens: 1000.0,
        median_output_tokens: 300.0,
        reasoning: true,
        prompt_cache: false,
        embedding: false,
    },
    ModelProfile {
        provider: "mistral",
        model: "mistral-large",
        weight: 3.0,
        median_duration_ms: 2100.0,
        median_ttft_ms: 520.0,
        median_input_tokens: 1000.0,
        median_output_tokens: 350.0,
        reasoning: false,
        prompt_cache: false,
        embedding: false,
    },
];

/// Three orgs of different size; team and user names are stable so repeated
/// runs add to the same tenants.
pub fn callers() -> Vec<Caller> {
    let orgs: [(&str, &[(&str, usize)]); 3] = [
        (
            "acme",
            &[
                ("search", 5),
                ("support-bot", 4),
                ("data-science", 3),
                ("platform", 2),
            ],
        ),
        ("globex", &[("copilot", 6), ("analytics", 3)]),
        (
            "initech",
            &[("docs-qa", 3), ("billing", 2), ("research", 2)],
        ),
    ];
    let mut callers = Vec::new();
    for (org, teams) in orgs {
        for (t, (team, users)) in teams.iter().enumerate() {
            for u in 0..*users {
                let weight = 1.0 / (1.0 + u as f64) * (1.0 + t as f64).recip().sqrt();
                callers.push(Caller {
                    org_id: org.to_string(),
                    team_id: format!("{org}-{team}"),
                    user_id: format!("{org}-{team}-user{}", u + 1),
                    api_key_id: format!("key-{org}-{team}-{}", u % 2 + 1),
                    weight,
                });
            }
        }
    }
    callers
}
