//! The routes of a configuration checked before the proxy serves them:
//! every provider, alias and fallback names something the proxy can route,
//! or start-up (and `tollgate show-config`) refuses the configuration naming
//! the key and the reason. Without it a typo in a fallback is found during
//! the outage it was meant to cover: an unroutable target was skipped
//! without a word.

use std::collections::BTreeMap;

use super::RouteTable;
use crate::config::{ProviderKind, ProxyConfig};

const KINDS: [ProviderKind; 2] = [ProviderKind::Openai, ProviderKind::Anthropic];

fn wire_format(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "OpenAI's",
        ProviderKind::Anthropic => "Anthropic's",
    }
}

/// Check providers, aliases and fallbacks; the first problem found, naming
/// its key.
pub fn check(config: &ProxyConfig) -> Result<(), String> {
    providers(config)?;
    let table = RouteTable::new(config);
    aliases(config, &table)?;
    fallbacks(config, &table)
}

fn providers(config: &ProxyConfig) -> Result<(), String> {
    let mut claimed: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (name, provider) in &config.providers {
        if provider.models.is_empty() {
            return Err(format!(
                "proxy.providers.{name}.models is empty; list the models it serves"
            ));
        }
        if !(provider.base_url.starts_with("http://") || provider.base_url.starts_with("https://"))
        {
            return Err(format!(
                "proxy.providers.{name}.base_url must start with http:// or https://"
            ));
        }
        for model in &provider.models {
            let format = wire_format(provider.kind);
            if let Some(other) = claimed.insert((format, model.as_str()), name.as_str()) {
                return Err(format!(
                    "proxy.providers.{name}.models: {model:?} is also listed by provider {other} \
                     of the same wire format; a model name routes to one provider, so one of \
                     them would never be used"
                ));
            }
        }
    }
    Ok(())
}

/// The kinds of provider that serve `model`.
fn served_in(table: &RouteTable, model: &str) -> Vec<ProviderKind> {
    KINDS
        .into_iter()
        .filter(|k| table.route(*k, model).is_some())
        .collect()
}

fn aliases(config: &ProxyConfig, table: &RouteTable) -> Result<(), String> {
    for (alias, target) in &config.aliases {
        if config.aliases.contains_key(target) {
            return Err(format!(
                "proxy.aliases.{alias:?} points at another alias {target:?}"
            ));
        }
        if served_in(table, target).is_empty() {
            return Err(format!(
                "proxy.aliases.{alias:?}: {target:?} is served by no provider (no exact name or pattern of proxy.providers.*.models matches it)"
            ));
        }
    }
    Ok(())
}

fn fallbacks(config: &ProxyConfig, table: &RouteTable) -> Result<(), String> {
    let mut keyed: BTreeMap<&str, &str> = BTreeMap::new();
    for (model, targets) in &config.fallbacks {
        let key = format!("proxy.fallbacks.{model:?}");
        if model.contains('*') {
            return Err(format!(
                "{key}: fallbacks are keyed by a model name (or alias), not a pattern"
            ));
        }
        let resolved = table.resolve_alias(model);
        if let Some(other) = keyed.insert(resolved, model) {
            return Err(format!(
                "{key}: {other:?} names the same model ({resolved:?}); give its fallbacks once"
            ));
        }
        let kinds = served_in(table, resolved);
        if kinds.is_empty() {
            return Err(format!("{key}: {resolved:?} is served by no provider"));
        }
        if targets.is_empty() {
            return Err(format!(
                "{key} is empty; list the models to try, or remove it"
            ));
        }
        let mut seen: Vec<&str> = Vec::with_capacity(targets.len());
        for (i, target) in targets.iter().enumerate() {
            let at = format!("{key}[{i}]");
            if target.contains('*') {
                return Err(format!(
                    "{at}: {target:?} is a pattern; a fallback is a model name (or alias)"
                ));
            }
            let to = table.resolve_alias(target);
            if to == resolved {
                return Err(format!("{at}: {target:?} falls back to the model itself"));
            }
            if seen.contains(&to) {
                return Err(format!("{at}: {target:?} is listed twice"));
            }
            seen.push(to);
            // A call falls back within its own format: the target must be
            // served in one of the key's (a key served in both formats
            // falls back in the one the target shares).
            if kinds.iter().any(|kind| table.route(*kind, to).is_some()) {
                continue;
            }
            return Err(match (served_in(table, to).first(), kinds.first()) {
                (Some(other), Some(kind)) => format!(
                    "{at}: {target:?} is served in {} wire format and {resolved:?} in {}; \
                     the proxy does not translate a call between formats",
                    wire_format(*other),
                    wire_format(*kind),
                ),
                _ => format!("{at}: {target:?} is served by no provider"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;

    /// Fallback entries as a configuration writes them: model, targets.
    type Entries<'a> = &'a [(&'a str, &'a [&'a str])];

    fn config(fallbacks: Entries) -> ProxyConfig {
        let mut config = ProxyConfig::default();
        config.providers.insert(
            "openai".into(),
            ProviderConfig {
                models: vec!["gpt-*".into(), "o3-mini".into()],
                ..ProviderConfig::default()
            },
        );
        config.providers.insert(
            "anthropic".into(),
            ProviderConfig {
                kind: ProviderKind::Anthropic,
                base_url: "https://api.anthropic.com/v1".into(),
                models: vec!["claude-*".into()],
                ..ProviderConfig::default()
            },
        );
        config.aliases.insert("cheap".into(), "gpt-4o-mini".into());
        config.aliases.insert("backup".into(), "gpt-4o".into());
        for (model, targets) in fallbacks {
            config.fallbacks.insert(
                model.to_string(),
                targets.iter().map(|t| t.to_string()).collect(),
            );
        }
        config
    }

    fn refusal(fallbacks: Entries) -> String {
        check(&config(fallbacks)).unwrap_err()
    }

    #[test]
    fn routable_fallbacks_and_aliases_pass() {
        check(&config(&[
            ("gpt-4o", &["cheap", "o3-mini"]),
            ("cheap", &["backup"]),
            ("claude-sonnet-4", &["claude-haiku-4-5"]),
        ]))
        .unwrap();
    }

    #[test]
    fn each_unusable_fallback_is_named_with_its_reason() {
        let cases: [(Entries, &str); 8] = [
            (
                &[("gpt-4o", &["gpt-4o-mini", "no-such-model"])],
                r#"proxy.fallbacks."gpt-4o"[1]: "no-such-model" is served by no provider"#,
            ),
            (
                &[("gpt-4o", &["backup"])],
                r#"proxy.fallbacks."gpt-4o"[0]: "backup" falls back to the model itself"#,
            ),
            (
                &[("gpt-4o", &["cheap", "gpt-4o-mini"])],
                r#"proxy.fallbacks."gpt-4o"[1]: "gpt-4o-mini" is listed twice"#,
            ),
            (
                &[("gpt-4o", &["claude-haiku-4-5"])],
                r#"proxy.fallbacks."gpt-4o"[0]: "claude-haiku-4-5" is served in Anthropic's wire format and "gpt-4o" in OpenAI's; the proxy does not translate a call between formats"#,
            ),
            (
                &[("gpt-4o", &[])],
                r#"proxy.fallbacks."gpt-4o" is empty; list the models to try, or remove it"#,
            ),
            (
                &[("gpt-*", &["o3-mini"])],
                r#"proxy.fallbacks."gpt-*": fallbacks are keyed by a model name (or alias), not a pattern"#,
            ),
            (
                &[("llama-3", &["gpt-4o"])],
                r#"proxy.fallbacks."llama-3": "llama-3" is served by no provider"#,
            ),
            (
                &[("backup", &["cheap"]), ("gpt-4o", &["o3-mini"])],
                r#"proxy.fallbacks."gpt-4o": "backup" names the same model ("gpt-4o"); give its fallbacks once"#,
            ),
        ];
        for (fallbacks, want) in cases {
            assert_eq!(refusal(fallbacks), want);
        }
    }

    #[test]
    fn a_model_served_in_both_formats_falls_back_in_the_one_its_target_shares() {
        let mut c = config(&[("gpt-4o", &["o3-mini"])]);
        c.providers.get_mut("anthropic").unwrap().models = vec!["claude-*".into(), "gpt-4o".into()];
        check(&c).unwrap();
    }

    #[test]
    fn providers_and_aliases_are_checked_too() {
        let mut c = config(&[]);
        c.providers.get_mut("anthropic").unwrap().models = vec!["gpt-4o".into()];
        check(&c).unwrap();
        c.providers.insert(
            "second".into(),
            ProviderConfig {
                models: vec!["o3-mini".into()],
                ..ProviderConfig::default()
            },
        );
        assert_eq!(
            check(&c).unwrap_err(),
            r#"proxy.providers.second.models: "o3-mini" is also listed by provider openai of the same wire format; a model name routes to one provider, so one of them would never be used"#
        );
        let mut c = config(&[]);
        c.aliases.insert("typo".into(), "gtp-4o".into());
        assert_eq!(
            check(&c).unwrap_err(),
            r#"proxy.aliases."typo": "gtp-4o" is served by no provider (no exact name or pattern of proxy.providers.*.models matches it)"#
        );
        let mut c = config(&[]);
        c.providers.get_mut("openai").unwrap().models.clear();
        assert_eq!(
            check(&c).unwrap_err(),
            "proxy.providers.openai.models is empty; list the models it serves"
        );
    }
}
