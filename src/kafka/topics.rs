//! The topics feidan owns: created when missing — alerts, dead letters, and
//! the state topic (compacted) — with partitions and replication from
//! `kafka.topics`; an existing state topic must be compacted. The input topic
//! is the user's: it is never created or altered.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::config::KafkaConfig;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("while checking topics")]
    Connect(#[from] super::ConnectError),
    #[error("cannot ask the Kafka cluster to create topics: {0}")]
    Admin(KafkaError),
    #[error("cannot create topic `{topic}`: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("state topic `{topic}` has cleanup.policy={policy}; it must be compacted (cleanup.policy=compact)")]
    NotCompacted { topic: String, policy: String },
}

/// What [`ensure_topics`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TopicReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
}

/// How a topic feidan owns is created.
enum Kind {
    Plain,
    /// The state topic: compacted.
    Compacted,
    /// The pace topic: one partition, no time retention.
    Pace,
}

/// Creates feidan's own topics where missing and checks the state topic.
///
/// # Errors
///
/// When the cluster cannot be asked, a topic cannot be created, or the state
/// topic exists without compaction.
pub async fn ensure_topics(kafka: &KafkaConfig) -> Result<TopicReport, TopicError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(kafka)
        .create()
        .map_err(TopicError::Admin)?;
    let metadata = super::fetch_metadata(kafka, Duration::from_secs(10))?;
    let exists = |name: &str| {
        metadata
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none())
    };

    let partitions = kafka.topics.partitions;
    let replication = kafka.topics.replication_factor;
    let mut owned = vec![
        (kafka.alert_topic.as_str(), Kind::Plain),
        (kafka.dead_letter_topic.as_str(), Kind::Plain),
        (kafka.state_topic.as_str(), Kind::Compacted),
    ];
    if kafka.scale_out {
        owned.push((kafka.facts_topic.as_str(), Kind::Plain));
        owned.push((kafka.pace_topic.as_str(), Kind::Pace));
    }
    let mut report = TopicReport::default();
    let missing: Vec<NewTopic<'_>> = owned
        .iter()
        .filter(|(name, _)| {
            let present = exists(name);
            if present {
                report.existing.push((*name).to_owned());
            }
            !present
        })
        .map(|(name, kind)| {
            let replication = TopicReplication::Fixed(replication);
            match kind {
                Kind::Plain => NewTopic::new(name, partitions, replication),
                Kind::Compacted => {
                    NewTopic::new(name, partitions, replication).set("cleanup.policy", "compact")
                }
                // Every source reads it whole from its checkpoint's offset,
                // and a new source from the start: kept for good.
                Kind::Pace => NewTopic::new(name, 1, replication).set("retention.ms", "-1"),
            }
        })
        .collect();
    if !missing.is_empty() {
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(30)));
        for result in admin
            .create_topics(&missing, &options)
            .await
            .map_err(TopicError::Admin)?
        {
            match result {
                Ok(topic) => {
                    let partitions = if topic == kafka.pace_topic {
                        1
                    } else {
                        partitions
                    };
                    info!(topic = %topic, partitions, "Created topic.");
                    report.created.push(topic);
                }
                // Another instance created it meanwhile.
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => report.existing.push(topic),
                Err((topic, code)) => return Err(TopicError::Create { topic, code }),
            }
        }
    }

    if report.existing.iter().any(|t| t == &kafka.state_topic) {
        let resource = ResourceSpecifier::Topic(&kafka.state_topic);
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        match admin.describe_configs([&resource], &options).await {
            Ok(results) => {
                for result in results.into_iter().flatten() {
                    let policy = result
                        .get("cleanup.policy")
                        .and_then(|entry| entry.value.clone())
                        .unwrap_or_default();
                    if !policy.split(',').any(|p| p.trim() == "compact") {
                        return Err(TopicError::NotCompacted {
                            topic: kafka.state_topic.clone(),
                            policy,
                        });
                    }
                }
            }
            // Not every Kafka-compatible broker answers DescribeConfigs.
            Err(error) => {
                warn!(topic = %kafka.state_topic, error = %error, "Cannot check the state topic's cleanup policy.")
            }
        }
    }
    Ok(report)
}
