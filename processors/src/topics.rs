//! Creating Tollgate's Kafka topics: the events topic (partitioned; the unit
//! of processor parallelism), its dead-letter topic, the compacted
//! decisions topic, and the append-only audit checkpoint anchor. A topic that already exists counts as created, so
//! `tollgate migrate` stays safe to re-run.
//!
//! Every topic gets `kafka.replication_factor` replicas and
//! `kafka.min_insync_replicas` as its `min.insync.replicas` (both unset: the
//! broker's defaults, as on the single-node dev stack), checked against the
//! brokers the cluster has before anything is created.

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
    /// Replicas of its first partition as the cluster reports them after
    /// creation (an existing topic keeps the replicas it was created with).
    pub replicas: usize,
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

/// Check `kafka.replication_factor` and `kafka.min_insync_replicas` against
/// each other and against the `brokers` the cluster has up.
pub fn check_replication(config: &KafkaConfig, brokers: usize) -> Result<()> {
    let invalid = |message: String| Err(Error::Config(message));
    if config.replication_factor == Some(0) {
        return invalid("kafka.replication_factor must be at least 1, got 0".into());
    }
    if config.min_insync_replicas == Some(0) {
        return invalid("kafka.min_insync_replicas must be at least 1, got 0".into());
    }
    if let (Some(factor), Some(min_insync)) =
        (config.replication_factor, config.min_insync_replicas)
    {
        if min_insync > factor {
            return invalid(format!(
                "kafka.min_insync_replicas is {min_insync} but kafka.replication_factor is {factor}: \
                 no write could ever be acknowledged"
            ));
        }
    }
    for (key, wanted) in [
        ("kafka.replication_factor", config.replication_factor),
        ("kafka.min_insync_replicas", config.min_insync_replicas),
    ] {
        if let Some(wanted) = wanted {
            if usize::from(wanted) > brokers {
                return invalid(format!(
                    "{key} is {wanted} but the Kafka cluster at {} has {brokers} broker(s) up",
                    config.brokers
                ));
            }
        }
    }
    Ok(())
}

/// The cluster's metadata (every topic; brokers that are up), read off the
/// async runtime's threads (librdkafka's metadata call blocks).
async fn cluster_metadata(config: &KafkaConfig) -> Result<rdkafka::metadata::Metadata> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        admin_client(&config)?
            .inner()
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(|e| {
                kafka_error(
                    &config,
                    "cannot read the cluster's metadata (is the broker running? `dev/stack up` starts one)",
                    e,
                )
            })
    })
    .await
    .map_err(|e| Error::setup("reading Kafka metadata", e))?
}

/// Create every topic in [`wanted`] that does not exist yet.
pub async fn create_topics(config: &KafkaConfig) -> Result<Vec<TopicOutcome>> {
    if config.partitions < 1 {
        return Err(Error::Config(format!(
            "kafka.partitions must be at least 1, got {}",
            config.partitions
        )));
    }
    check_replication(config, cluster_metadata(config).await?.brokers().len())?;
    let admin = admin_client(config)?;
    let wanted = wanted(config);
    // Unset: -1, the broker's default.replication.factor (1 on a dev broker).
    let replicas = config.replication_factor.map_or(-1, i32::from);
    let min_insync = config.min_insync_replicas.map(|n| n.to_string());
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|spec| {
            let topic = spec.settings.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(replicas),
                ),
                |t, (k, v)| t.set(k, v),
            );
            match &min_insync {
                Some(n) => topic.set("min.insync.replicas", n),
                None => topic,
            }
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
            replicas: 0,
        });
    }
    read_back_replicas(config, &mut outcomes).await?;
    Ok(outcomes)
}

/// How long `migrate` waits for the brokers' metadata to show the topics it
/// just created.
const METADATA_PROPAGATION: Duration = Duration::from_secs(15);

/// Fill in each outcome's replicas from the cluster's metadata. A topic just
/// created reaches the other brokers' metadata a moment after the
/// controller acknowledged it, so the metadata is read again (up to
/// [`METADATA_PROPAGATION`]) until every created topic shows all its
/// partitions, each with its replicas; an existing topic only has to be
/// there. Past the deadline, what was last seen is reported.
async fn read_back_replicas(config: &KafkaConfig, outcomes: &mut [TopicOutcome]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + METADATA_PROPAGATION;
    loop {
        let metadata = cluster_metadata(config).await?;
        let mut all_visible = true;
        for outcome in outcomes.iter_mut() {
            let topic = metadata
                .topics()
                .iter()
                .find(|t| t.name() == outcome.name && t.error().is_none());
            let partitions = topic.map_or(&[][..], |t| t.partitions());
            let complete = !partitions.is_empty()
                && partitions.iter().all(|p| !p.replicas().is_empty())
                && (!outcome.created
                    || i32::try_from(partitions.len()).ok() == Some(outcome.partitions));
            all_visible &= complete;
            outcome.replicas = partitions.first().map_or(0, |p| p.replicas().len());
        }
        if all_visible || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn replicated(factor: Option<u16>, min_insync: Option<u16>) -> KafkaConfig {
        KafkaConfig {
            brokers: "k1:9092,k2:9092".into(),
            replication_factor: factor,
            min_insync_replicas: min_insync,
            ..KafkaConfig::default()
        }
    }

    fn complaint(config: &KafkaConfig, brokers: usize) -> String {
        check_replication(config, brokers).unwrap_err().to_string()
    }

    #[test]
    fn replication_is_checked_against_the_brokers_and_itself() {
        // Unset: the broker's defaults, whatever the cluster.
        check_replication(&replicated(None, None), 1).unwrap();
        check_replication(&replicated(Some(3), Some(2)), 3).unwrap();
        check_replication(&replicated(None, Some(2)), 3).unwrap();
        assert_eq!(
            complaint(&replicated(Some(3), Some(2)), 2),
            "invalid configuration: kafka.replication_factor is 3 \
             but the Kafka cluster at k1:9092,k2:9092 has 2 broker(s) up"
        );
        assert_eq!(
            complaint(&replicated(None, Some(2)), 1),
            "invalid configuration: kafka.min_insync_replicas is 2 \
             but the Kafka cluster at k1:9092,k2:9092 has 1 broker(s) up"
        );
        assert_eq!(
            complaint(&replicated(Some(2), Some(3)), 3),
            "invalid configuration: kafka.min_insync_replicas is 3 but \
             kafka.replication_factor is 2: no write could ever be acknowledged"
        );
        assert_eq!(
            complaint(&replicated(Some(0), None), 3),
            "invalid configuration: kafka.replication_factor must be at least 1, got 0"
        );
        assert_eq!(
            complaint(&replicated(Some(3), Some(0)), 3),
            "invalid configuration: kafka.min_insync_replicas must be at least 1, got 0"
        );
    }

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
