//! Model routing: which provider serves a model name (after aliases), and
//! the fallback chain to try when it fails. Exact model names win over
//! prefix patterns (`gpt-*`); among patterns the longest prefix wins, then
//! the provider name in alphabetical order.

use std::collections::BTreeMap;

use super::config::{ProviderKind, ProxyConfig};

/// Where one model goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub provider: String,
    pub kind: ProviderKind,
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    /// (pattern, provider, kind); pattern ends in `*` for a prefix.
    entries: Vec<(String, String, ProviderKind)>,
    aliases: BTreeMap<String, String>,
    fallbacks: BTreeMap<String, Vec<String>>,
}

impl RouteTable {
    pub fn new(config: &ProxyConfig) -> Self {
        let entries = config
            .providers
            .iter()
            .flat_map(|(name, p)| {
                p.models
                    .iter()
                    .map(move |m| (m.clone(), name.clone(), p.kind))
            })
            .collect();
        Self {
            entries,
            aliases: config.aliases.clone(),
            fallbacks: config.fallbacks.clone(),
        }
    }

    /// The model an alias stands for (or the name itself).
    pub fn resolve_alias<'a>(&'a self, model: &'a str) -> &'a str {
        self.aliases.get(model).map(String::as_str).unwrap_or(model)
    }

    /// The provider of `kind` serving `model`, if any.
    pub fn route(&self, kind: ProviderKind, model: &str) -> Option<Route> {
        let mut best: Option<(usize, &str, ProviderKind)> = None;
        for (pattern, provider, pkind) in &self.entries {
            if *pkind != kind {
                continue;
            }
            let score = if pattern == model {
                usize::MAX
            } else if let Some(prefix) = pattern.strip_suffix('*') {
                if model.starts_with(prefix) {
                    prefix.len()
                } else {
                    continue;
                }
            } else {
                continue;
            };
            let better = match best {
                None => true,
                Some((s, p, _)) => score > s || (score == s && provider.as_str() < p),
            };
            if better {
                best = Some((score, provider, *pkind));
            }
        }
        best.map(|(_, provider, kind)| Route {
            provider: provider.to_string(),
            kind,
            model: model.to_string(),
        })
    }

    /// The configured fallback models of `model`, in order.
    pub fn fallbacks(&self, model: &str) -> &[String] {
        self.fallbacks.get(model).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Model names clients can ask for: aliases and exact model names.
    pub fn listed_models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .entries
            .iter()
            .filter(|(m, _, _)| !m.ends_with('*'))
            .map(|(m, p, _)| (m.clone(), p.clone()))
            .collect();
        out.extend(
            self.aliases
                .keys()
                .map(|a| (a.clone(), "alias".to_string())),
        );
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;

    #[test]
    fn exact_beats_prefix_and_kinds_are_separate() {
        let mut config = ProxyConfig::default();
        config.providers.insert(
            "a".into(),
            ProviderConfig {
                models: vec!["gpt-*".into()],
                ..ProviderConfig::default()
            },
        );
        config.providers.insert(
            "b".into(),
            ProviderConfig {
                models: vec!["gpt-4o".into(), "gpt-4*".into()],
                ..ProviderConfig::default()
            },
        );
        config.providers.insert(
            "c".into(),
            ProviderConfig {
                kind: ProviderKind::Anthropic,
                models: vec!["claude-*".into()],
                ..ProviderConfig::default()
            },
        );
        config.aliases.insert("fast".into(), "gpt-3.5".into());
        let table = RouteTable::new(&config);
        let p = |m: &str| table.route(ProviderKind::Openai, m).map(|r| r.provider);
        assert_eq!(p("gpt-4o").as_deref(), Some("b"));
        assert_eq!(p("gpt-4o-mini").as_deref(), Some("b"));
        assert_eq!(p("gpt-3.5").as_deref(), Some("a"));
        assert_eq!(p("claude-3"), None);
        assert_eq!(
            table
                .route(ProviderKind::Anthropic, "claude-3")
                .map(|r| r.provider)
                .as_deref(),
            Some("c")
        );
        assert_eq!(table.resolve_alias("fast"), "gpt-3.5");
        assert_eq!(table.resolve_alias("x"), "x");
    }
}
