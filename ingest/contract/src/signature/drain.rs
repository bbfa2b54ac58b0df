//! A Drain-style parse tree (He et al., "Drain: An Online Log Parsing
//! Approach with Fixed Depth Tree", ICWS 2017) that finds signatures whose
//! templates are one pattern although masking left a variable word in them
//! (a field name, a model name without a digit).
//!
//! Learning depends on arrival order, so the tree never changes an id: it
//! proposes a `Merge` whenever a new signature joins a cluster holding
//! another, and `merge::CanonicalIds` applies the stored merges in a way
//! that does not depend on their order (see there).
//!
//! Shape: one tree per class (provider, status, error type), so a merge
//! never crosses classes. Below the class: the template's token count, then
//! its first `depth - 2` tokens, then a leaf holding clusters. A template
//! joins the leaf's most similar cluster if the share of positions where
//! the cluster's template has the same token reaches `similarity`;
//! positions the cluster already generalised to `<*>` do not count, so a
//! cluster that has absorbed much does not become a catch-all.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::merge::{join_tokens, Merge, WILDCARD};
use super::{Signature, SignatureId};

/// The tree's parameters; see `docs/error-patterns.md` for the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Levels of the tree counting the token-count level and the leaf: the
    /// first `depth - 2` tokens route a template.
    pub depth: usize,
    /// Share of equal tokens (0..=1) from which a template joins a cluster.
    pub similarity: f64,
    /// Children per inner node; further tokens share one `<*>` child.
    pub max_children: usize,
    /// Clusters the tree holds; past it, new templates are not learned.
    pub max_clusters: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            depth: 4,
            similarity: 0.5,
            max_children: 100,
            max_clusters: 10_000,
        }
    }
}

/// A `DrainConfig` that cannot work, naming the field and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DrainConfigError {
    #[error("drain.depth is {0}: it must be at least 3 (the token-count level, one routing token and the leaf)")]
    Depth(usize),
    #[error("drain.similarity is {0}: it must be above 0 and at most 1")]
    Similarity(f64),
    #[error("drain.max_children is 0: it must be at least 1")]
    MaxChildren,
    #[error("drain.max_clusters is 0: it must be at least 1")]
    MaxClusters,
}

impl DrainConfig {
    pub fn validate(&self) -> Result<(), DrainConfigError> {
        if self.depth < 3 {
            return Err(DrainConfigError::Depth(self.depth));
        }
        if !(self.similarity > 0.0 && self.similarity <= 1.0) {
            return Err(DrainConfigError::Similarity(self.similarity));
        }
        if self.max_children == 0 {
            return Err(DrainConfigError::MaxChildren);
        }
        if self.max_clusters == 0 {
            return Err(DrainConfigError::MaxClusters);
        }
        Ok(())
    }
}

type ClassKey = (String, u16, String);

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    clusters: Vec<usize>,
}

#[derive(Debug)]
struct Cluster {
    /// The smallest id among the signatures in this cluster.
    id: SignatureId,
    template: Vec<String>,
}

/// The learning state of one replica. It lives in memory and is rebuilt by
/// learning again after a restart; re-proposed merges are duplicates the
/// merge table absorbs.
#[derive(Debug)]
pub struct DrainTree {
    config: DrainConfig,
    roots: HashMap<ClassKey, HashMap<usize, Node>>,
    clusters: Vec<Cluster>,
    /// The cluster each learned signature went to.
    known: HashMap<SignatureId, usize>,
}

impl DrainTree {
    pub fn new(config: DrainConfig) -> Result<Self, DrainConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            roots: HashMap::new(),
            clusters: Vec::new(),
            known: HashMap::new(),
        })
    }

    /// Number of clusters learned.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Learns one signature; returns a merge when it joined a cluster that
    /// holds another signature. A signature already learned returns `None`
    /// at the cost of one hash look-up, so the fold can call this for every
    /// failed call.
    pub fn learn(&mut self, signature: &Signature) -> Option<Merge> {
        if self.known.contains_key(&signature.id) {
            return None;
        }
        let tokens: Vec<&str> = signature.template.split_whitespace().collect();
        let config = self.config;
        let (provider, status, error_type) = signature.class();
        let class = (provider.to_string(), status, error_type.to_string());
        let mut node = self
            .roots
            .entry(class)
            .or_default()
            .entry(tokens.len())
            .or_default();
        for token in tokens.iter().take(config.depth - 2) {
            let key = if token.bytes().any(|b| b.is_ascii_digit()) {
                WILDCARD
            } else {
                token
            };
            let key =
                if node.children.contains_key(key) || node.children.len() < config.max_children {
                    key
                } else {
                    WILDCARD
                };
            node = node.children.entry(key.to_string()).or_default();
        }

        let best = node
            .clusters
            .iter()
            .map(|&index| (index, similarity(&self.clusters[index].template, &tokens)))
            .filter(|&(_, sim)| sim >= config.similarity)
            .max_by(|(a, sim_a), (b, sim_b)| {
                sim_a
                    .total_cmp(sim_b)
                    // On a tie, the cluster with the smaller id.
                    .then_with(|| self.clusters[*b].id.cmp(&self.clusters[*a].id))
            })
            .map(|(index, _)| index);

        match best {
            Some(index) => {
                let cluster = &mut self.clusters[index];
                let old: Vec<&str> = cluster.template.iter().map(String::as_str).collect();
                let joined = join_tokens(&old, &tokens).join(" ");
                let (into, from) = if signature.id < cluster.id {
                    (signature.id, cluster.id)
                } else {
                    (cluster.id, signature.id)
                };
                cluster.template = joined.split(' ').map(str::to_string).collect();
                cluster.id = into;
                self.known.insert(signature.id, index);
                Some(Merge {
                    from,
                    into,
                    template: joined,
                })
            }
            None if self.clusters.len() < config.max_clusters => {
                let index = self.clusters.len();
                self.clusters.push(Cluster {
                    id: signature.id,
                    template: tokens.iter().map(|t| t.to_string()).collect(),
                });
                node.clusters.push(index);
                self.known.insert(signature.id, index);
                None
            }
            None => None,
        }
    }
}

/// Share of positions where the cluster's concrete token equals the new
/// one; both have the same length (the tree groups by token count).
fn similarity(template: &[String], tokens: &[&str]) -> f64 {
    if tokens.is_empty() {
        return 1.0;
    }
    let equal = template
        .iter()
        .zip(tokens)
        .filter(|(t, n)| t.as_str() != WILDCARD && t == *n)
        .count();
    equal as f64 / tokens.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{signature, ErrorInput};

    fn sig(provider: &str, status: u16, error_type: &str, message: &str) -> Signature {
        signature(&ErrorInput {
            provider,
            http_status: status,
            error_type,
            message,
        })
    }

    #[test]
    fn variable_words_masking_missed_are_merged() {
        let mut tree = DrainTree::new(DrainConfig::default()).unwrap();
        let a = sig(
            "openai",
            404,
            "invalid_request_error",
            "The model davinci has been deprecated, learn more here",
        );
        let b = sig(
            "openai",
            404,
            "invalid_request_error",
            "The model babbage has been deprecated, learn more here",
        );
        assert_ne!(a.id, b.id, "masking alone keeps them apart");
        assert_eq!(tree.learn(&a), None);
        let merge = tree.learn(&b).unwrap();
        assert_eq!(merge.into, a.id.min(b.id));
        assert_eq!(merge.from, a.id.max(b.id));
        assert_eq!(
            merge.template,
            "The model <*> has been deprecated, learn more here"
        );
        assert_eq!(
            tree.learn(&b),
            None,
            "a learned signature is not proposed again"
        );
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn different_shapes_classes_and_lengths_stay_apart() {
        let mut tree = DrainTree::new(DrainConfig::default()).unwrap();
        let shapes = [
            sig(
                "bedrock",
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            ),
            sig(
                "bedrock",
                400,
                "ValidationException",
                "Input is too long for requested model.",
            ),
            sig(
                "bedrock",
                400,
                "ValidationException",
                "Malformed input request, please reformat your input and try again.",
            ),
            sig("anthropic", 529, "overloaded_error", "Overloaded"),
            sig("anthropic", 500, "api_error", "Overloaded"),
            sig(
                "openai",
                404,
                "invalid_request_error",
                "The model davinci has been deprecated, learn more here",
            ),
            sig(
                "anthropic",
                404,
                "invalid_request_error",
                "The model davinci has been deprecated, learn more here",
            ),
        ];
        for s in &shapes {
            assert_eq!(tree.learn(s), None, "{s:?}");
        }
        assert_eq!(tree.len(), shapes.len());
    }

    #[test]
    fn first_tokens_route_so_a_different_opening_never_merges() {
        let mut tree = DrainTree::new(DrainConfig::default()).unwrap();
        tree.learn(&sig(
            "google",
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
        ));
        assert_eq!(
            tree.learn(&sig(
                "google",
                400,
                "INVALID_ARGUMENT",
                "Request has an invalid argument."
            )),
            None,
            "token counts differ"
        );
        assert_eq!(
            tree.learn(&sig(
                "google",
                400,
                "INVALID_ARGUMENT",
                "Response contains an invalid argument."
            )),
            None,
            "the first token differs"
        );
    }

    #[test]
    fn generalised_positions_do_not_count_as_similar() {
        let config = DrainConfig {
            similarity: 0.6,
            ..DrainConfig::default()
        };
        let mut tree = DrainTree::new(config).unwrap();
        tree.learn(&sig("x", 400, "t", "a b c d e"));
        assert!(tree.learn(&sig("x", 400, "t", "a b c y z")).is_some()); // 3/5
                                                                         // The cluster is now "a b c <*> <*>": only a, b, c can count.
        assert_eq!(tree.learn(&sig("x", 400, "t", "a b q y z")), None); // 2/5
    }

    #[test]
    fn max_clusters_bounds_memory() {
        let config = DrainConfig {
            max_clusters: 2,
            ..DrainConfig::default()
        };
        let mut tree = DrainTree::new(config).unwrap();
        for word in ["one", "two", "three", "four"] {
            tree.learn(&sig("x", 500, "t", word));
        }
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn a_full_node_sends_new_tokens_to_the_wildcard_child() {
        let config = DrainConfig {
            max_children: 1,
            ..DrainConfig::default()
        };
        let mut tree = DrainTree::new(config).unwrap();
        tree.learn(&sig("x", 500, "t", "alpha failed to respond in time"));
        tree.learn(&sig("x", 500, "t", "beta failed to respond in time"));
        // gamma routes to the same `<*>` child as beta and joins it.
        assert!(tree
            .learn(&sig("x", 500, "t", "gamma failed to respond in time"))
            .is_some());
    }

    #[test]
    fn bad_config_names_the_field() {
        let bad = [
            DrainConfig {
                depth: 2,
                ..DrainConfig::default()
            },
            DrainConfig {
                similarity: 0.0,
                ..DrainConfig::default()
            },
            DrainConfig {
                similarity: f64::NAN,
                ..DrainConfig::default()
            },
            DrainConfig {
                max_children: 0,
                ..DrainConfig::default()
            },
            DrainConfig {
                max_clusters: 0,
                ..DrainConfig::default()
            },
        ];
        let fields = [
            "depth",
            "similarity",
            "similarity",
            "max_children",
            "max_clusters",
        ];
        for (config, field) in bad.iter().zip(fields) {
            let err = DrainTree::new(*config).unwrap_err().to_string();
            assert!(err.contains(&format!("drain.{field}")), "{err}");
        }
    }
}
