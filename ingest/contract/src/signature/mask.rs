//! Masking: an error message becomes a template by replacing every variable
//! part (numbers, ids, URLs, durations, ...) with a typed placeholder and
//! keeping the words. The template is what makes thousands of messages one
//! pattern, and it is an input of the signature id, so the rules here are
//! versioned with the id (`SIGNATURE_VERSION`): changing a rule changes ids.
//!
//! One regular expression with one alternative per kind scans the message
//! once, left to right. Where two kinds could start at the same character the
//! earlier alternative wins, which is why the order below goes from the most
//! specific shape (a URL contains everything else) to the least (a number).

use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

/// What a masked part was; each has its own placeholder in the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarKind {
    Url,
    Email,
    Uuid,
    Timestamp,
    Ip,
    Id,
    Duration,
    Hex,
    Quoted,
    Num,
}

impl VarKind {
    /// The placeholder standing for this kind in a template.
    pub fn placeholder(self) -> &'static str {
        match self {
            VarKind::Url => "<URL>",
            VarKind::Email => "<EMAIL>",
            VarKind::Uuid => "<UUID>",
            VarKind::Timestamp => "<TIMESTAMP>",
            VarKind::Ip => "<IP>",
            VarKind::Id => "<ID>",
            VarKind::Duration => "<DURATION>",
            VarKind::Hex => "<HEX>",
            VarKind::Quoted => "<QUOTED>",
            VarKind::Num => "<NUM>",
        }
    }

    /// Kinds in the order of their alternatives in the pattern (group names).
    const GROUPS: [(&'static str, VarKind); 11] = [
        ("url", VarKind::Url),
        ("email", VarKind::Email),
        ("uuid", VarKind::Uuid),
        ("ts", VarKind::Timestamp),
        ("ip", VarKind::Ip),
        ("pid", VarKind::Id),
        ("dur", VarKind::Duration),
        ("hex", VarKind::Hex),
        ("id", VarKind::Id),
        ("quoted", VarKind::Quoted),
        ("num", VarKind::Num),
    ];
}

/// One masked part of a message, in the order it appeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub kind: VarKind,
    pub text: String,
}

/// A message as a template and the parts that were masked out of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masked {
    /// The message, runs of whitespace collapsed to one space, with each
    /// variable part replaced by its placeholder.
    pub template: String,
    pub variables: Vec<Variable>,
}

/// Prefixes of provider and Tollgate identifiers (OpenAI `org-`, `req_`,
/// `sk-`, `chatcmpl-`, `call_`, ...; Anthropic `req_`, `msg_`, `toolu_`,
/// `sk-ant-`) that mark an id even when its tail has no digit.
const ID_PREFIXES: &str = "org|req|sk|pk|rk|proj|user|call|chatcmpl|msg|run|thread|asst|file|batch|ft|toolu|resp|sess|key";

/// Units after a number that make it a duration. Compact units (`20ms`,
/// `1.918s`, `6m0s` as OpenAI writes them) attach to the number; words may be
/// separated by one space (`1.5 seconds`, `30000 ms`).
const DURATION: &str = r"\d+(?:\.\d+)?(?:\s?(?:milliseconds?|msecs?|ms|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?)\b|(?:ms|us|µs|ns|h|m|s)(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))*\b)";

fn pattern() -> String {
    let url = r#"\b(?:https?|wss?)://[^\s<>"'`()\[\]{}]*[^\s<>"'`()\[\]{}.,;:!?]"#;
    let email = r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b";
    let uuid = r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b";
    // ISO 8601 dates with an optional time and zone, or a clock time alone.
    let ts = r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2}|\s?UTC|\s?GMT)?\b|\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|\s?UTC|\s?GMT)?\b";
    let ip = r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b";
    // AWS ARNs and prefixed ids (checked in `kind_of`: a prefixed word without
    // a digit or `*` and shorter than 8 characters is an ordinary word).
    let pid = format!(r"\b(?:arn:[\w:/.*-]+|(?:{ID_PREFIXES})[-_][\w*-]+)");
    // 16 or more hex digits are a hash or trace id even when they happen to
    // be all decimal digits (numbers that long do not occur in errors).
    let hex = r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b";
    // A word mixing letters and digits: model names, request ids, regions.
    let id =
        r"\b[A-Za-z0-9_.-]*(?:[A-Za-z][A-Za-z0-9_.-]*\d|\d[A-Za-z0-9_.-]*[A-Za-z])[A-Za-z0-9_-]*\b";
    // Quoted values; `kind_of` drops a quote stuck to a word on either side,
    // so an apostrophe (`model's`) never opens one.
    // No length limit: masking shortens what a quote holds, and a limit
    // would let a second pass pair quotes the first could not.
    let quoted = r#"'[^'\n]*'|"[^"\n]*"|`[^`\n]*`"#;
    // Every rule that can start or end on a word character asserts a word
    // boundary there: a placeholder (`<...>`) is a boundary, so a match
    // inside a word would let a second pass find a new one beside it.
    let num = r"\b\d+(?:[.,]\d+)*\b";
    format!(
        "(?P<url>{url})|(?P<email>{email})|(?P<uuid>{uuid})|(?P<ts>{ts})|(?P<ip>{ip})|(?P<pid>{pid})|(?P<dur>{DURATION})|(?P<hex>{hex})|(?P<id>{id})|(?P<quoted>{quoted})|(?P<num>{num})"
    )
}

/// Compiled once per process. The pattern is a constant that a unit test
/// compiles, so the error arm never happens in a built binary; it exists
/// because the workspace forbids `expect`, and it degrades to "mask nothing"
/// rather than to a panic in the fold.
static MASKER: LazyLock<Result<Regex, regex::Error>> = LazyLock::new(|| Regex::new(&pattern()));

/// Whether a character next to a quote glues it to a word. `<` and `>`
/// count as word characters because a placeholder stands where a word was:
/// were they not, masking a template again could find a quote that the
/// first pass had (rightly) left alone.
fn sticks(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '<' | '>'))
}

/// The kind of one match and the span its placeholder replaces, or `None`
/// when it is an ordinary word or quote after all (a prefixed word such as
/// `user-facing`, an apostrophe).
fn kind_of(haystack: &str, caps: &Captures<'_>) -> Option<(VarKind, usize, usize)> {
    let (kind, m) = VarKind::GROUPS
        .iter()
        .find_map(|(name, kind)| caps.name(name).map(|m| (*kind, m)))?;
    let text = m.as_str();
    match kind {
        VarKind::Id if caps.name("pid").is_some() && !text.starts_with("arn:") => {
            let tail = text.split_once(['-', '_']).map_or("", |(_, tail)| tail);
            let marked = tail.chars().any(|c| c.is_ascii_digit() || c == '*');
            if !marked && tail.len() < 8 {
                return None;
            }
        }
        VarKind::Quoted => {
            let before = haystack[..m.start()].chars().next_back();
            let after = haystack[m.end()..].chars().next();
            // The quotes stay in the template (`"<QUOTED>"`) so that their
            // neighbours read the same to a second pass; what they held is
            // the variable. A quote around a masked quote (`'a `b' c` d'`
            // pairs differently once the inner one is masked) is left as
            // it is, so masking again finds nothing new.
            let inner = &text[1..text.len() - 1];
            if sticks(before) || sticks(after) || inner.contains(VarKind::Quoted.placeholder()) {
                return None;
            }
            return Some((kind, m.start() + 1, m.end() - 1));
        }
        _ => {}
    }
    Some((kind, m.start(), m.end()))
}

/// Masks one message: the template and the masked parts in order.
///
/// Idempotent: masking a template again returns it unchanged (placeholders
/// contain no digit, quote or URL, and they glue to a quote as the word
/// they replaced did).
pub fn mask(message: &str) -> Masked {
    // Whitespace is collapsed first: collapsing afterwards could join two
    // pieces into a new match (a quote across a line break) and break
    // idempotence.
    let message = collapse_whitespace(message);
    let message = message.as_str();
    let mut out = String::with_capacity(message.len());
    let mut variables = Vec::new();
    let mut last = 0;
    if let Ok(re) = &*MASKER {
        let mut at = 0;
        while let Some(caps) = re.captures_at(message, at) {
            let Some(whole) = caps.get(0) else { break };
            let Some((kind, start, end)) = kind_of(message, &caps) else {
                // Look again from the next character: a dropped quote may
                // be the opening of a real one further on.
                at = whole.start()
                    + message[whole.start()..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                continue;
            };
            out.push_str(&message[last..start]);
            out.push_str(kind.placeholder());
            variables.push(Variable {
                kind,
                text: message[start..end].to_string(),
            });
            last = end;
            // Every alternative consumes a character, so this moves on.
            at = whole.end().max(at + 1);
        }
    }
    out.push_str(&message[last..]);
    Masked {
        template: out,
        variables,
    }
}

fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_compiles() {
        assert!(MASKER.is_ok(), "{:?}", MASKER.as_ref().err());
    }

    fn template(message: &str) -> String {
        mask(message).template
    }

    #[test]
    fn each_kind_gets_its_placeholder() {
        let cases = [
            (
                "see https://platform.openai.com/account/rate-limits.",
                "see <URL>.",
            ),
            ("(https://docs.anthropic.com/en/api/rate-limits)", "(<URL>)"),
            ("write to ops@example.com now", "write to <EMAIL> now"),
            (
                "id 550e8400-e29b-41d4-a716-446655440000 gone",
                "id <UUID> gone",
            ),
            ("at 2026-12-01T20:06:55.123Z ok", "at <TIMESTAMP> ok"),
            ("at 2026-12-01 20:06:55 UTC ok", "at <TIMESTAMP> ok"),
            ("on 2026-12-01, retry", "on <TIMESTAMP>, retry"),
            ("at 20:06:55 ok", "at <TIMESTAMP> ok"),
            ("connect 10.0.0.12:443 refused", "connect <IP> refused"),
            (
                "in organization org-AbCdEfGhIjKl on",
                "in organization <ID> on",
            ),
            ("request ID req_abc123 in", "request ID <ID> in"),
            ("key sk-proj-****abcd.", "key <ID>."),
            (
                "arn:aws:bedrock:us-east-1:123456789012:model/x denied",
                "<ID> denied",
            ),
            ("try again in 1.918s.", "try again in <DURATION>."),
            ("try again in 20ms", "try again in <DURATION>"),
            ("try again in 6m0s", "try again in <DURATION>"),
            ("wait 1.5 seconds", "wait <DURATION>"),
            (
                "trace 0xdeadBEEF and 4bf92f3577b34da6a3ce929d0e0e4736",
                "trace <HEX> and <HEX>",
            ),
            ("for gpt-4o in", "for <ID> in"),
            ("model claude-3-5-sonnet-20241022.", "model <ID>."),
            (
                "Unknown name \"foo\" at 'generation_config'",
                "Unknown name \"<QUOTED>\" at '<QUOTED>'",
            ),
            (
                "The model `gpt-5` does not exist",
                "The model `<QUOTED>` does not exist",
            ),
            (
                "don't touch 'this' or it's broken",
                "don't touch '<QUOTED>' or it's broken",
            ),
            (
                "Limit 30000, Used 29794, Requested 1,165.",
                "Limit <NUM>, Used <NUM>, Requested <NUM>.",
            ),
            ("  lots   of\n space ", "lots of space"),
        ];
        for (message, want) in cases {
            assert_eq!(template(message), want, "masking {message:?}");
        }
    }

    #[test]
    fn words_that_only_look_like_ids_are_kept() {
        assert_eq!(
            template("a user-facing model's limit"),
            "a user-facing model's limit"
        );
        assert_eq!(template("help.openai.com"), "help.openai.com");
    }

    /// Inputs on which an earlier rule set was not idempotent (found by the
    /// property test): quotes beside masked words, quotes inside quotes, a
    /// number inside a word, a quote across a line break.
    #[test]
    fn known_idempotence_traps() {
        for text in [
            "\"\"0AA",
            "``<NUM>``.",
            "'`'s`'",
            "µ0https://org-",
            "`\n`",
            "'a'b 'c'",
            "x 'y' 'z'w",
        ] {
            let once = template(text);
            assert_eq!(template(&once), once, "masking {text:?} twice");
        }
    }

    #[test]
    fn variables_come_back_in_order_with_their_kind() {
        let masked = mask("for gpt-4o in organization org-x1 on tokens per min (TPM): Limit 30000. Please try again in 1.918s.");
        let got: Vec<(VarKind, &str)> = masked
            .variables
            .iter()
            .map(|v| (v.kind, v.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (VarKind::Id, "gpt-4o"),
                (VarKind::Id, "org-x1"),
                (VarKind::Num, "30000"),
                (VarKind::Duration, "1.918s"),
            ]
        );
    }
}
