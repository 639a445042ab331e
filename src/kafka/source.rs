//! The input: a consumer-group consumer on the input topic (rdkafka
//! `StreamConsumer` on tokio).
//!
//! Offsets are committed by the service, never automatically: only those of
//! a complete checkpoint, whose state, alerts and dead letters are all
//! acknowledged by the broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::config::KafkaConfig;

/// The consumer type of the input.
pub type InputConsumer = StreamConsumer<SourceContext>;

/// Assigned partitions, with their topics.
pub type Assignment = Vec<(String, i32)>;

/// Observes the consumer: rebalances are logged, and errors meaning the
/// brokers cannot be reached clear the `connected` flag behind `/readyz`.
#[derive(Clone, Default)]
pub struct SourceContext {
    connected: Arc<AtomicBool>,
    /// The partitions (with their topics) after the latest rebalance, until
    /// the loop takes them.
    assignment: Arc<Mutex<Option<Assignment>>>,
    changed: Arc<AtomicBool>,
    /// Wakes the service when an assignment arrives: its partitions are
    /// paused, so no message would.
    assigned: Arc<tokio::sync::Notify>,
    /// Per partition (and topic), the next offset the state needs: an
    /// assigned partition starts there, not at the committed offset, so a
    /// rebalance can neither skip input nor hand back input already applied.
    positions: Arc<Mutex<HashMap<(String, i32), i64>>>,
    /// Rebalances so far: what was read about the assigned partitions
    /// before the latest one is about partitions that may be gone.
    rebalances: Arc<AtomicU64>,
}

impl SourceContext {
    /// The new set of assigned input partitions, once after each rebalance.
    pub fn take_assignment(&self) -> Option<Vec<i32>> {
        let assigned = self.take_assigned_topics()?;
        Some(
            assigned
                .into_iter()
                .map(|(_, partition)| partition)
                .collect(),
        )
    }

    /// As [`SourceContext::take_assignment`], for a consumer of several
    /// topics: (topic, partition) pairs.
    pub fn take_assigned_topics(&self) -> Option<Assignment> {
        if !self.changed.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Completes when a rebalance has happened since the last call (at once
    /// if one happened meanwhile).
    pub async fn rebalanced(&self) {
        self.assigned.notified().await;
    }

    /// Records that `partition` of `topic` has been applied up to `next`
    /// (exclusive).
    pub fn set_position(&self, topic: &str, partition: i32, next: i64) {
        self.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((topic.to_owned(), partition), next);
    }

    /// How many rebalances have happened (assignments, revocations and
    /// failures alike).
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Acquire)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if super::is_refused_login(&error) {
            // Not ready, and retried: the credentials may be fixed on the
            // broker's side without restarting feidan.
            self.set_connected(false);
            error!(reason, "The Kafka cluster refused feidan's credentials (check `sasl.username` and the password in `kafka.client`); retrying.");
            return;
        }
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.set_connected(false);
        }
        warn!(error = %error, reason, "Kafka client error.");
    }
}

impl ConsumerContext for SourceContext {
    /// The default eager rebalance, except that each assigned partition
    /// starts at the position the state needs (when known) instead of the
    /// committed offset, and starts paused: the service resumes it.
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self
                    .positions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let assigned: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for (topic, partition) in assigned {
                    if let Some(next) = positions.get(&(topic.clone(), partition)) {
                        if let Err(error) =
                            tpl.set_partition_offset(&topic, partition, Offset::Offset(*next))
                        {
                            warn!(partition, error = %error, "Cannot set the start offset.");
                        }
                    }
                }
                if let Err(error) = base_consumer.assign(tpl) {
                    warn!(error = %error, "Cannot take the assigned partitions.");
                }
                // Nothing is fetched until the service has decided whether
                // this instance owns the input and where each partition
                // starts (it resumes them).
                if let Err(error) = base_consumer.pause(tpl) {
                    warn!(error = %error, "Cannot pause the assigned partitions.");
                }
                self.post_rebalance(base_consumer, &Rebalance::Assign(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(error) = base_consumer.unassign() {
                    warn!(error = %error, "Cannot give up the revoked partitions.");
                }
                self.post_rebalance(base_consumer, &Rebalance::Revoke(tpl));
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                if let Err(error) = base_consumer.unassign() {
                    warn!(error = %error, "Cannot give up the partitions.");
                }
                self.post_rebalance(
                    base_consumer,
                    &Rebalance::Error(KafkaError::Rebalance(code)),
                );
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = consumer
            .assignment()
            .map(|list| {
                let elements = list.elements();
                elements
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        *self.assignment.lock().unwrap_or_else(|e| e.into_inner()) = Some(partitions);
        self.rebalances.fetch_add(1, Ordering::AcqRel);
        self.changed.store(true, Ordering::Release);
        self.assigned.notify_one();
        match rebalance {
            Rebalance::Assign(partitions) => {
                info!(partitions = partitions.count(), "Partitions assigned.")
            }
            Rebalance::Revoke(partitions) => {
                info!(partitions = partitions.count(), "Partitions revoked.")
            }
            Rebalance::Error(error) => warn!(error = %error, "Rebalance failed."),
        }
    }
}

/// Creates the input consumer and subscribes it to the input topic.
///
/// # Errors
///
/// When the configuration is rejected or the subscription fails.
pub fn subscribe(kafka: &KafkaConfig) -> KafkaResult<(InputConsumer, SourceContext)> {
    subscribe_to(kafka, &[&kafka.input_topic])
}

/// Creates a consumer in feidan's group subscribed to `topics`.
///
/// # Errors
///
/// When the configuration is rejected or the subscription fails.
pub fn subscribe_to(
    kafka: &KafkaConfig,
    topics: &[&str],
) -> KafkaResult<(InputConsumer, SourceContext)> {
    let context = SourceContext::default();
    let consumer: InputConsumer = super::client_config(kafka)
        .set("group.id", &kafka.group_id)
        // Offsets are committed by the service, only for checkpointed state.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create_with_context(context.clone())?;
    consumer.subscribe(topics)?;
    Ok((consumer, context))
}

/// How many partitions `topic` has, as the cluster says now; `None` when it
/// cannot be asked. Blocking (briefly): the cluster is asked directly.
pub fn partition_count(consumer: &InputConsumer, topic: &str) -> Option<usize> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|error| warn!(error = %error, "Cannot read the input topic's partitions."))
        .ok()?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
}

fn partition_list(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    list
}

/// Stops fetching `partitions` of `topic` (the consumer stays in its group).
pub fn pause(consumer: &InputConsumer, topic: &str, partitions: &[i32]) {
    if partitions.is_empty() {
        return;
    }
    if let Err(error) = consumer.pause(&partition_list(topic, partitions)) {
        warn!(error = %error, "Cannot pause the input partitions.");
    }
}

/// Fetches `partitions` of `topic` again.
pub fn resume(consumer: &InputConsumer, topic: &str, partitions: &[i32]) {
    if partitions.is_empty() {
        return;
    }
    if let Err(error) = consumer.resume(&partition_list(topic, partitions)) {
        warn!(error = %error, "Cannot resume the input partitions.");
    }
}

/// Where each of `partitions` starts: at `state`'s next offset where the
/// restored state has one; else at the group's committed offset; else at
/// the beginning (nothing of it is in the state). Blocking (briefly).
pub fn start_offsets(
    consumer: &InputConsumer,
    topic: &str,
    partitions: &[i32],
    state: &std::collections::BTreeMap<i32, i64>,
) -> Vec<(i32, Offset)> {
    let committed = consumer
        .committed_offsets(partition_list(topic, partitions), Duration::from_secs(5))
        .map_err(|error| warn!(error = %error, "Cannot read the committed offsets."))
        .ok();
    partitions
        .iter()
        .map(|partition| {
            let committed = committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, *partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            let start = match state.get(partition).copied().or(committed) {
                Some(next) => Offset::Offset(next),
                None => Offset::Beginning,
            };
            (*partition, start)
        })
        .collect()
}

/// Messages behind the high watermark, per assigned partition of `topic`.
/// Blocking: call it off the async threads.
///
/// # Errors
///
/// When the broker cannot be asked.
pub fn lag(
    consumer: &InputConsumer,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<(i32, i64)>> {
    let positions = consumer.position()?;
    // A partition with nothing consumed since it was assigned has no
    // position: it stands at its committed offset (or, with none, the start).
    let committed = if positions
        .elements_for_topic(topic)
        .iter()
        .any(|e| !matches!(e.offset(), Offset::Offset(_)))
    {
        Some(consumer.committed(timeout)?)
    } else {
        None
    };
    let mut lags = Vec::new();
    for element in positions.elements_for_topic(topic) {
        let partition = element.partition();
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let position = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
                .unwrap_or(low),
        };
        lags.push((partition, (high - position).max(0)));
    }
    Ok(lags)
}
