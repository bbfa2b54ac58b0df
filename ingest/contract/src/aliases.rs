//! How an event's provider and model find their catalog entry when the
//! catalog does not carry exactly those names (see `docs/cost.md`, "Provider
//! and model aliases").
//!
//! Price files name providers after the *price list* (LiteLLM's `gemini`,
//! `vertex_ai-language-models`, `bedrock_converse`), events after the
//! *service called* (`google`, `vertex_ai`, `bedrock`); and providers answer
//! with dated snapshot ids (`claude-sonnet-4-5-20250929`) where the price
//! lists the family (`claude-sonnet-4-5`). Resolution happens at lookup, not
//! at import, so an import stores the file as written (re-importing it is
//! idempotent and two lists never collide), and an exact entry always wins:
//! a snapshot priced differently from its family gets its own entry.

/// Event provider → catalog providers tried after the provider itself, in
/// order.
pub const PROVIDER_ALIASES: &[(&str, &[&str])] = &[
    // Gemini API first: events saying `google` called it; Vertex's list
    // prices the same models when the Gemini list lacks one.
    ("google", &["gemini", "vertex_ai-language-models"]),
    (
        "vertex_ai",
        &[
            "vertex_ai-language-models",
            "vertex_ai-anthropic_models",
            "vertex_ai-mistral_models",
            "vertex_ai-llama_models",
            "vertex_ai-ai21_models",
            "vertex_ai-deepseek_models",
            "vertex_ai-qwen_models",
            "vertex_ai-openai_models",
        ],
    ),
    // LiteLLM files Bedrock's Claude under `bedrock_converse`, with the
    // model ids Bedrock answers with (`anthropic.claude-...-v1:0`).
    ("bedrock", &["bedrock_converse"]),
];

/// The catalog providers to try for an event's `provider`: itself, then its
/// aliases.
pub fn providers_for(provider: &str) -> impl Iterator<Item = &str> {
    let aliases = PROVIDER_ALIASES
        .iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, a)| *a)
        .unwrap_or(&[]);
    std::iter::once(provider).chain(aliases.iter().copied())
}

/// The family of a dated snapshot id: `claude-sonnet-4-5-20250929` →
/// `claude-sonnet-4-5`, `gpt-4o-2024-08-06` → `gpt-4o`,
/// `claude-sonnet-4-5@20250929` (Vertex) → `claude-sonnet-4-5`. `None` when
/// the id does not end in a date.
pub fn model_family(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let date8 = |s: &str| s.len() == 8 && digits(s) && s.starts_with("20");
    let split = |n: usize| {
        let i = model.len().checked_sub(n)?;
        let (family, tail) = (model.get(..i)?, model.get(i..)?);
        (!family.is_empty() && tail.is_ascii()).then_some((family, tail))
    };
    // -YYYY-MM-DD
    if let Some((family, tail)) = split(11) {
        let b = tail.as_bytes();
        if b[0] == b'-'
            && b[5] == b'-'
            && b[8] == b'-'
            && digits(&tail[1..5])
            && tail[1..].starts_with("20")
            && digits(&tail[6..8])
            && digits(&tail[9..11])
        {
            return Some(family);
        }
    }
    // -YYYYMMDD or @YYYYMMDD
    if let Some((family, tail)) = split(9) {
        if (tail.starts_with('-') || tail.starts_with('@')) && date8(&tail[1..]) {
            return Some(family);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn families_of_dated_snapshots() {
        assert_eq!(
            model_family("claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(model_family("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            model_family("claude-sonnet-4-5@20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(model_family("claude-sonnet-4-5"), None);
        assert_eq!(model_family("gemini-2.5-pro"), None);
        assert_eq!(model_family("o3-mini"), None);
        assert_eq!(model_family("-20250929"), None);
        assert_eq!(model_family("model-12345678"), None);
        assert_eq!(
            model_family("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            None
        );
        assert_eq!(model_family("ünïcödé-2025-01-01"), Some("ünïcödé"));
        assert_eq!(model_family("ünïcödéü"), None);
    }

    #[test]
    fn provider_aliases_start_with_the_provider() {
        assert_eq!(
            providers_for("google").collect::<Vec<_>>(),
            ["google", "gemini", "vertex_ai-language-models"]
        );
        assert_eq!(providers_for("openai").collect::<Vec<_>>(), ["openai"]);
    }
}
