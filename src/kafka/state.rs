//! The state topic's edge: reads the whole compacted changelog when the
//! instance becomes the owner of the input (every partition, from the
//! beginning to its high watermark and whatever the last batch holds past
//! it) and hands it to [`Changelog::restore`]. Writes go through the sinks'
//! producer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use crate::changelog::{Changelog, ChangelogError, Restored};
use crate::config::KafkaConfig;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state topic `{topic}`: {source}")]
    Read { topic: String, source: KafkaError },
    #[error("the state topic `{topic}` does not exist: create it compacted, or let feidan (kafka.topics.create = true)")]
    Missing { topic: String },
    #[error("reading the state topic `{topic}` made no progress for {seconds} s")]
    Stalled { topic: String, seconds: u64 },
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
}

impl StateError {
    /// Whether waiting may mend it (the broker away), as opposed to bad
    /// data or a client configuration librdkafka refuses (a wrong
    /// `kafka.client` property never mends by itself).
    pub fn is_transient(&self) -> bool {
        match self {
            StateError::Read { source, .. } => !matches!(source, KafkaError::ClientCreation(_)),
            StateError::Stalled { .. } => true,
            StateError::Missing { .. } | StateError::Changelog(_) => false,
        }
    }
}

/// What was read: the restored changelog and the topic's partition count.
pub struct StateRead {
    pub restored: Restored,
    pub partitions: i32,
    pub records: u64,
}

/// How long a read may go without a new record before it is given up.
const STALL: Duration = Duration::from_secs(30);

/// A state record's key and value (`None`: a tombstone).
pub type StateRecord = (String, Option<Vec<u8>>);

fn record_of(message: &BorrowedMessage<'_>) -> StateRecord {
    let key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    (key, message.payload().map(<[u8]>::to_vec))
}

/// How long the reader waits for records past the high watermarks.
const TAIL_WAIT: Duration = Duration::from_millis(500);

/// The state reader's fetch limit per partition and request: above any
/// state record (a dedup or buffer chunk is well under 1 MB).
const STATE_FETCH_BYTES: &str = "16777216";

/// Reads the whole state topic. Blocking: call it off the async threads.
///
/// # Errors
///
/// When the broker cannot be reached, the topic is missing, or a record
/// cannot be read.
pub fn read(kafka: &KafkaConfig, timeout: Duration) -> Result<StateRead, StateError> {
    let (records, partitions) = read_records(kafka, timeout)?;
    let count = records.len() as u64;
    let restored = Changelog::restore(records)?;
    info!(
        topic = %kafka.state_topic,
        records = count,
        entities = restored.entities.len(),
        epoch = restored.marker.as_ref().map_or(0, |m| m.epoch),
        "Read the state topic."
    );
    Ok(StateRead {
        restored,
        partitions,
        records: count,
    })
}

/// The state topic's records, partition by partition in offset order, and
/// its partition count. Blocking: call it off the async threads.
///
/// # Errors
///
/// As [`read`], but for the changelog's own checks.
pub fn read_records(
    kafka: &KafkaConfig,
    timeout: Duration,
) -> Result<(Vec<StateRecord>, i32), StateError> {
    let topic = kafka.state_topic.as_str();
    let read_error = |source| StateError::Read {
        topic: topic.to_owned(),
        source,
    };
    let consumer: BaseConsumer = super::client_config(kafka)
        .set("group.id", format!("{}-state-restore", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Whatever `kafka.client` sets for the input, the reader must be
        // able to fetch the largest state record (up to about 1 MB): not
        // every broker hands out a record larger than the fetch limit.
        .set("max.partition.fetch.bytes", STATE_FETCH_BYTES)
        .set("fetch.max.bytes", STATE_FETCH_BYTES)
        .create()
        .map_err(read_error)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(read_error)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(StateError::Missing {
            topic: topic.to_owned(),
        });
    }

    let mut assignment = TopicPartitionList::new();
    // Partition → the offset up to which it must be read.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(read_error)?;
        if high > low {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(read_error)?;
            remaining.insert(partition, high);
        }
    }
    let mut records = Vec::new();
    if !remaining.is_empty() {
        consumer.assign(&assignment).map_err(read_error)?;
        let mut last_progress = Instant::now();
        while !remaining.is_empty() {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    let partition = message.partition();
                    records.push(record_of(&message));
                    if remaining
                        .get(&partition)
                        .is_some_and(|high| message.offset() + 1 >= *high)
                    {
                        remaining.remove(&partition);
                    }
                }
                Some(Err(error)) => return Err(read_error(error)),
                None if last_progress.elapsed() > STALL => {
                    return Err(StateError::Stalled {
                        topic: topic.to_owned(),
                        seconds: STALL.as_secs(),
                    })
                }
                None => {}
            }
        }
        // Whatever follows in a batch the high watermark cut: tansu 0.6
        // reports the high watermark of a partition whose last batch holds
        // several records below that batch's end, so records past it still
        // arrive. Taken until the consumer has nothing more to hand out.
        while let Some(message) = consumer.poll(TAIL_WAIT) {
            records.push(record_of(&message.map_err(read_error)?));
        }
    }
    Ok((records, partitions.len() as i32))
}
