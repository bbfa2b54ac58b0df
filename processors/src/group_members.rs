//! Who is in a fold's consumer group right now: the members Kafka's group
//! coordinator lists (a running `tollgate process`, or one killed less than
//! `processor.session_timeout_ms` ago). `tollgate migrate` asks before a
//! migration that backfills from tables the folds write
//! (`crate::migrations::Migration::backfills`).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tollgate_control::config::KafkaConfig;

use crate::error::{Error, Result};

/// How long the coordinator may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One member of a consumer group, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub client_id: String,
    /// The member's address as the broker saw it (`/127.0.0.1`).
    pub client_host: String,
}

/// The members of each of `groups` (in that order; a group Kafka does not
/// know, or one with no member, has none).
pub async fn members(kafka: &KafkaConfig, groups: &[String]) -> Result<Vec<(String, Vec<Member>)>> {
    let kafka = kafka.clone();
    let groups = groups.to_vec();
    tokio::task::spawn_blocking(move || list(&kafka, &groups))
        .await
        .map_err(|e| Error::setup("cannot list consumer group members", e))?
}

fn list(kafka: &KafkaConfig, groups: &[String]) -> Result<Vec<(String, Vec<Member>)>> {
    let kafka_error = |context: String| {
        let brokers = kafka.brokers.clone();
        move |e: rdkafka::error::KafkaError| Error::Kafka {
            brokers,
            context,
            source: Box::new(e),
        }
    };
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .map_err(kafka_error(
            "cannot create a client to list group members".into(),
        ))?;
    groups
        .iter()
        .map(|group| {
            let list = client
                .client()
                .fetch_group_list(Some(group), TIMEOUT)
                .map_err(kafka_error(format!(
                    "cannot list the members of consumer group {group}"
                )))?;
            let members = list
                .groups()
                .iter()
                .filter(|g| g.name() == group)
                .flat_map(|g| g.members())
                .map(|m| Member {
                    client_id: m.client_id().to_string(),
                    client_host: m.client_host().to_string(),
                })
                .collect();
            Ok((group.clone(), members))
        })
        .collect()
}

/// For each of `groups` with members, one line saying who they are
/// (`tollgate-processor has 2 member(s): rdkafka at /10.0.0.5, …`); empty
/// when no processor of these groups runs.
pub async fn running(kafka: &KafkaConfig, groups: &[String]) -> Result<Vec<String>> {
    Ok(members(kafka, groups)
        .await?
        .into_iter()
        .filter(|(_, members)| !members.is_empty())
        .map(|(group, members)| {
            let who: Vec<String> = members
                .iter()
                .map(|m| format!("{} at {}", m.client_id, m.client_host))
                .collect();
            format!(
                "{group} has {} member(s): {}",
                members.len(),
                who.join(", ")
            )
        })
        .collect())
}
