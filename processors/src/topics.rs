//! Creating Tollgate's Kafka topics: the events topic (partitioned; the unit
//! of processor parallelism), its dead-letter topic, the compacted
//! decisions topic, and the append-only audit checkpoint anchor. A topic that already exists counts as created, so
//! `tollgate migrate` stays safe to re-run.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tollgate_control::config::KafkaConfig;

use crate::error::{Error, Result};

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    pub name: String,
    pub partitions: i32,
    pub created: bool,
}

/// One topic Tollgate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Topic-level settings.
    pub settings: Vec<(&'static str, &'static str)>,
}

/// The topics Tollgate needs.
pub fn wanted(config: &KafkaConfig) -> Vec<TopicSpec> {
    let spec = |name: &str, partitions, settings| TopicSpec {
        name: name.to_string(),
        partitions,
        settings,
    };
    vec![
        spec(&config.events_topic, config.partitions, vec![]),
        // Dead letters are rare; one partition keeps them in arrival order.
        spec(&config.dlq_topic, 1, vec![]),
        spec(
            &config.decisions_topic,
            config.partitions,
            vec![("cleanup.policy", "compact")],
        ),
        // The anchor of the audit chain (docs/audit.md): kept forever, never
        // compacted, so a checkpoint once published stays readable even to
        // someone who can rewrite ClickHouse. One partition: the volume is
        // small and one total order is simplest to read back.
        spec(
            &config.audit_checkpoints_topic,
            1,
            vec![
                ("cleanup.policy", "delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
            ],
        ),
    ]
}

fn kafka_error(config: &KafkaConfig, context: impl Into<String>, source: KafkaError) -> Error {
    Error::Kafka {
        brokers: config.brokers.clone(),
        context: context.into(),
        source: Box::new(source),
    }
}

fn admin_client(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .map_err(|e| kafka_error(config, "cannot create an admin client", e))
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(15)))
        .operation_timeout(Some(Duration::from_secs(15)))
}

/// Delete every topic in [`wanted`] (throw-away namespaces such as the
/// benchmark's); a topic that does not exist is not an error.
pub async fn delete_topics(config: &KafkaConfig) -> Result<()> {
    let admin = admin_client(config)?;
    let names: Vec<String> = wanted(config).into_iter().map(|spec| spec.name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(&names, &admin_options())
        .await
        .map_err(|e| kafka_error(config, "cannot delete topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                return Err(kafka_error(
                    config,
                    format!("cannot delete topic {name}"),
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}

/// Create every topic in [`wanted`] that does not exist yet.
pub async fn create_topics(config: &KafkaConfig) -> Result<Vec<TopicOutcome>> {
    if config.partitions < 1 {
        return Err(Error::Config(format!(
            "kafka.partitions must be at least 1, got {}",
            config.partitions
        )));
    }
    let admin = admin_client(config)?;
    let wanted = wanted(config);
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|spec| {
            // -1: the broker's default.replication.factor (1 on a dev broker, 3 in production).
            spec.settings.iter().fold(
                NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(-1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(&new_topics, &admin_options())
        .await
        .map_err(|e| {
            kafka_error(
                config,
                "cannot create topics (is the broker running? `dev/stack up` starts one)",
                e,
            )
        })?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        let (name, created) = match result {
            Ok(name) => (name, true),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => (name, false),
            Err((name, code)) => {
                return Err(kafka_error(
                    config,
                    format!("cannot create topic {name}"),
                    KafkaError::AdminOp(code),
                ))
            }
        };
        let partitions = wanted
            .iter()
            .find(|spec| spec.name == name)
            .map_or(0, |spec| spec.partitions);
        outcomes.push(TopicOutcome {
            name,
            partitions,
            created,
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The audit checkpoint anchor must never lose a message: deleted
    /// segments only by policy, and no time or size limit.
    #[test]
    fn the_anchor_topic_keeps_everything() {
        let config = KafkaConfig::default();
        let specs = wanted(&config);
        let anchor = specs
            .iter()
            .find(|s| s.name == "tollgate.audit.checkpoints")
            .unwrap();
        assert_eq!(anchor.partitions, 1);
        for setting in [
            ("cleanup.policy", "delete"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
        ] {
            assert!(anchor.settings.contains(&setting), "{setting:?}");
        }
    }
}
