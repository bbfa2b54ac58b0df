//! The input tokens of an OpenAI chat call counted as OpenAI counts them,
//! for a call the provider read (and bills) but whose usage report never
//! came: a stream cut by the provider, failed inside, or given up by the
//! client before its last chunk. The byte bound of [`super::estimate`]
//! (the budget's reservation, never below the truth) is typically three to
//! four times the provider's count for English text; a trial's cut stream
//! was billed four times a complete one.
//!
//! Counted: chat completions whose messages are text (a string, or parts of
//! type `text`), for models of OpenAI's `o200k_base` encoding (gpt-4o,
//! gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4) and `cl100k_base` (gpt-4,
//! gpt-3.5), as `tiktoken-rs` maps OpenAI's model names: each message's role, content and name, plus the chat format's
//! 3 tokens per message and 3 for the reply, as OpenAI documents it. Tools,
//! response formats, images, audio and files are laid out by the provider
//! in ways it does not document: such a call, and any other model, keeps
//! the byte bound.
//!
//! An encoding is loaded at its first use (a few hundred milliseconds and
//! tens of MiB, which a proxy whose streams all report their usage never
//! pays), and counting runs off the async threads.

use serde_json::Value;
use tiktoken_rs::tokenizer::Tokenizer;
use tiktoken_rs::CoreBPE;

/// Tokens the chat format adds per message and for the reply's start.
const PER_MESSAGE: u64 = 3;
const REPLY: u64 = 3;
/// Tokens a message's `name` adds beside its own.
const PER_NAME: u64 = 1;

/// The encoding OpenAI uses for the chat model `model`, when it is one of
/// the two chat encodings (`tiktoken-rs`'s table of OpenAI's models, which
/// also reads fine-tuned `ft:` names and Azure's `gpt-35-turbo`).
fn encoding(model: &str) -> Option<&'static CoreBPE> {
    match tiktoken_rs::tokenizer::get_tokenizer(&model.to_ascii_lowercase())? {
        Tokenizer::O200kBase => Some(tiktoken_rs::o200k_base_singleton()),
        Tokenizer::Cl100kBase => Some(tiktoken_rs::cl100k_base_singleton()),
        _ => None,
    }
}

/// The input tokens of the chat completions request `body` for `model`,
/// or `None` when it is not one this module counts (see above).
pub fn chat_input(body: &[u8], model: &str) -> Option<u64> {
    let bpe = encoding(model)?;
    let request: Value = serde_json::from_slice(body).ok()?;
    let object = request.as_object()?;
    if ["tools", "functions", "response_format", "audio"]
        .iter()
        .any(|k| object.get(*k).is_some_and(|v| !v.is_null()))
    {
        return None;
    }
    let count = |text: &str| bpe.count_ordinary(text) as u64;
    let mut tokens = REPLY;
    for message in object.get("messages")?.as_array()? {
        let message = message.as_object()?;
        tokens += PER_MESSAGE;
        for (key, value) in message {
            match (key.as_str(), value) {
                ("role", Value::String(role)) => tokens += count(role),
                ("content", Value::String(text)) => tokens += count(text),
                ("content", Value::Array(parts)) => {
                    for part in parts {
                        let part = part.as_object()?;
                        if part.get("type").and_then(Value::as_str) != Some("text") {
                            return None;
                        }
                        tokens += count(part.get("text")?.as_str()?);
                    }
                }
                ("content", Value::Null) => {}
                ("name", Value::String(name)) => tokens += count(name) + PER_NAME,
                // Tool calls and their results are laid out by the provider.
                ("role" | "content" | "name", _)
                | ("tool_calls" | "tool_call_id" | "function_call", _) => return None,
                _ => {}
            }
        }
    }
    Some(tokens)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn text_chats_are_counted_as_openai_counts_them() {
        // Counted by hand against o200k_base: "system" 1, "You are terse."
        // 4, "user" 1, "Hello world" 2; 2 × 3 per message, 3 for the reply.
        let request = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello world"},
        ]});
        assert_eq!(
            chat_input(&body(request), "gpt-4o"),
            Some(1 + 4 + 1 + 2 + 6 + 3)
        );
        // Parts of text count as their text; a name adds itself and one.
        let parts = json!({"model": "gpt-4o", "messages": [
            {"role": "user", "name": "bob", "content": [{"type": "text", "text": "Hello world"}]},
        ]});
        assert_eq!(
            chat_input(&body(parts), "gpt-4o"),
            Some(1 + 1 + 1 + 2 + 3 + 3)
        );
    }

    #[test]
    fn a_long_prompt_is_counted_not_bounded_by_its_bytes() {
        // A trial's cut stream: 400 words billed as 2,122 tokens (its bytes).
        let prompt = "word ".repeat(400);
        let request = body(json!({"model": "gpt-4o", "stream": true, "messages": [
            {"role": "user", "content": prompt},
        ]}));
        let counted = chat_input(&request, "gpt-4o").unwrap();
        assert!((400..=410).contains(&counted), "{counted}");
        assert!(counted * 4 < request.len() as u64);
    }

    #[test]
    fn what_the_provider_lays_out_itself_keeps_the_bound() {
        let text = |extra: Value| {
            let mut r = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            body(r)
        };
        assert_eq!(
            chat_input(&text(json!({"tools": [{"type": "function"}]})), "gpt-4o"),
            None
        );
        assert_eq!(
            chat_input(
                &text(json!({"response_format": {"type": "json_schema"}})),
                "gpt-4o"
            ),
            None
        );
        let image = body(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
        );
        assert_eq!(chat_input(&image, "gpt-4o"), None);
        let tool_result = body(json!({"model": "gpt-4o", "messages": [
            {"role": "tool", "tool_call_id": "c1", "content": "42"}]}));
        assert_eq!(chat_input(&tool_result, "gpt-4o"), None);
        // Models of unknown encodings, and what is not JSON.
        assert_eq!(chat_input(&text(json!({})), "claude-3-5-sonnet"), None);
        assert_eq!(chat_input(&text(json!({})), "mock-1"), None);
        assert_eq!(chat_input(b"not json", "gpt-4o"), None);
        // The older encoding for gpt-4 and gpt-3.5, fine-tuned models and
        // Azure's spelling.
        for model in [
            "gpt-3.5-turbo",
            "gpt-35-turbo",
            "ft:gpt-4o-mini:acme::abc",
            "GPT-4o",
        ] {
            assert!(chat_input(&text(json!({})), model).is_some(), "{model}");
        }
    }
}
