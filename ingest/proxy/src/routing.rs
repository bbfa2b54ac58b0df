//! Model routing: which provider serves a model name (after aliases), and
//! the fallback chain to try when it fails. Exact model names win over
//! prefix patterns (`gpt-*`); among patterns the longest prefix wins, then
//! the provider name in alphabetical order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tollgate_contract::aliases::providers_for;
use tollgate_contract::PriceCatalog;

use super::config::{ProviderKind, ProxyConfig};

mod check;
pub use check::check;

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
        // Fallbacks are kept by the models they name: an alias, as a key
        // or a target, stands for its model as it does in a request.
        let resolve = |m: &String| config.aliases.get(m).unwrap_or(m).clone();
        let fallbacks = config
            .fallbacks
            .iter()
            .map(|(model, targets)| (resolve(model), targets.iter().map(resolve).collect()))
            .collect();
        Self {
            entries,
            aliases: config.aliases.clone(),
            fallbacks,
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

    /// The configured fallback models of `model` (aliases resolved), in
    /// order.
    pub fn fallbacks(&self, model: &str) -> &[String] {
        self.fallbacks.get(model).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Model names clients can ask for, with the provider serving each:
    /// exact model names, aliases, and every model of `catalog` in force at
    /// `at` (under a provider's name or its catalog aliases) that a prefix
    /// pattern routes to that same provider.
    pub fn listed_models(
        &self,
        catalog: &PriceCatalog,
        at: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .entries
            .iter()
            .filter(|(m, _, _)| !m.ends_with('*'))
            .map(|(m, p, _)| (m.clone(), p.clone()))
            .collect();
        let patterned: BTreeMap<&str, ProviderKind> = self
            .entries
            .iter()
            .filter(|(m, _, _)| m.ends_with('*'))
            .map(|(_, p, kind)| (p.as_str(), *kind))
            .collect();
        for (provider, kind) in patterned {
            for model in providers_for(provider).flat_map(|p| catalog.models_in_force(p, at)) {
                if self
                    .route(kind, model)
                    .is_some_and(|route| route.provider == provider)
                {
                    out.push((model.to_string(), provider.to_string()));
                }
            }
        }
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

    #[test]
    fn fallbacks_name_models_not_aliases() {
        let mut config = ProxyConfig::default();
        config.aliases.insert("backup".into(), "gpt-4o".into());
        config.aliases.insert("cheap".into(), "gpt-4o-mini".into());
        config
            .fallbacks
            .insert("gpt-4o-2024-08-06".into(), vec!["backup".into()]);
        config
            .fallbacks
            .insert("cheap".into(), vec!["o3-mini".into()]);
        let table = RouteTable::new(&config);
        assert_eq!(table.fallbacks("gpt-4o-2024-08-06"), ["gpt-4o"]);
        // A request for `cheap` routes to gpt-4o-mini: its fallbacks too.
        assert_eq!(table.fallbacks("gpt-4o-mini"), ["o3-mini"]);
        assert!(table.fallbacks("cheap").is_empty());
    }

    #[test]
    fn listed_models_add_the_priced_models_a_pattern_routes() {
        use chrono::TimeZone;
        use rust_decimal::Decimal;
        use tollgate_contract::PriceVersion;
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
                models: vec!["gpt-4o".into()],
                ..ProviderConfig::default()
            },
        );
        config.aliases.insert("fast".into(), "gpt-3.5".into());
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let price = |id, provider: &str, model: &str, from: DateTime<Utc>| PriceVersion {
            id,
            provider: provider.into(),
            model: model.into(),
            effective_from: from,
            input_per_token: Decimal::ONE,
            output_per_token: Decimal::ONE,
            cache_read_per_token: None,
            cache_write_per_token: None,
            reasoning_per_token: None,
            per_image: Decimal::ZERO,
            per_audio_second: Decimal::ZERO,
            per_request: Decimal::ZERO,
            tiers: Vec::new(),
            source: "t".into(),
            note: String::new(),
        };
        let before = now - chrono::Duration::days(1);
        let catalog = PriceCatalog::new([
            // Routed by a's pattern and priced under a's name: listed.
            price(1, "a", "gpt-3.5", before),
            // b serves gpt-4o exactly: not a's to list.
            price(2, "a", "gpt-4o", before),
            // No pattern of a matches it.
            price(3, "a", "o1", before),
            // Not in force yet.
            price(4, "a", "gpt-5", now + chrono::Duration::days(1)),
            // Priced under another provider's name.
            price(5, "z", "gpt-z", before),
        ]);
        let table = RouteTable::new(&config);
        assert_eq!(
            table.listed_models(&catalog, now),
            vec![
                ("fast".to_string(), "alias".to_string()),
                ("gpt-3.5".to_string(), "a".to_string()),
                ("gpt-4o".to_string(), "b".to_string()),
            ]
        );
    }
}
