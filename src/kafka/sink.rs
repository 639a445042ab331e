//! The sinks: alert transitions to the alert topic (keyed by `alert_id`) and
//! invalid or too-late input to the dead-letter topic (the original bytes and
//! key, with reason, topic, partition and offset in headers, as Kafka
//! Connect's dead-letter queues do).
//!
//! A send returns a [`Pending`] that resolves when the broker acknowledges the
//! record; a failed delivery is sent again, never dropped. The producer is
//! idempotent, so a retry does not duplicate a record within a session.

use std::time::Duration;

use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::alert::Alert;
use crate::config::KafkaConfig;
use crate::engine::DeadLetter;

/// A failure the sinks cannot retry their way out of.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("cannot enqueue a record for topic `{topic}`: {source}")]
    Enqueue { topic: String, source: KafkaError },
}

/// Which sink a record belongs to (the `sink` metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    Alerts,
    DeadLetters,
    /// Checkpoint records on the state topic.
    State,
    /// Messages between scaled-out stages (facts and pace topics).
    Exchange,
}

impl SinkKind {
    pub fn label(self) -> &'static str {
        match self {
            SinkKind::Alerts => "alerts",
            SinkKind::DeadLetters => "dead_letters",
            SinkKind::State => "state",
            SinkKind::Exchange => "exchange",
        }
    }
}

/// A record handed to the producer, kept until acknowledged so it can be resent.
pub struct Pending {
    pub sink: SinkKind,
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    payload: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
    delivery: DeliveryFuture,
}

/// The state of a pending record when polled.
pub enum DeliveryState {
    Waiting,
    Delivered,
    Failed(KafkaError),
}

impl Pending {
    /// Polls without blocking.
    pub fn poll(&mut self) -> DeliveryState {
        match (&mut self.delivery).now_or_never() {
            None => DeliveryState::Waiting,
            Some(result) => settle(result),
        }
    }

    /// Waits for the broker's answer.
    pub async fn wait(&mut self) -> DeliveryState {
        settle((&mut self.delivery).await)
    }
}

fn settle(
    result: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> DeliveryState {
    match result {
        Ok(Ok(_)) => DeliveryState::Delivered,
        Ok(Err((error, _))) => DeliveryState::Failed(error),
        Err(_) => DeliveryState::Failed(KafkaError::Canceled),
    }
}

/// Where a dead letter came from.
pub struct SourceRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl<'a> SourceRecord<'a> {
    /// The record a consumed message is (an empty payload where it has none).
    pub fn of(message: &'a impl rdkafka::message::Message) -> SourceRecord<'a> {
        SourceRecord {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload: message.payload().unwrap_or_default(),
        }
    }
}

/// The alert and dead-letter producers (one idempotent producer for both).
pub struct Sinks {
    producer: FutureProducer,
    alert_topic: String,
    dead_letter_topic: String,
    state_topic: String,
}

impl Sinks {
    /// # Errors
    ///
    /// [`SinkError::Create`] when the producer configuration is rejected.
    pub fn new(kafka: &KafkaConfig) -> Result<Sinks, SinkError> {
        let producer: FutureProducer = super::client_config(kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000")
            .create()
            .map_err(SinkError::Create)?;
        Ok(Sinks {
            producer,
            alert_topic: kafka.alert_topic.clone(),
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            state_topic: kafka.state_topic.clone(),
        })
    }

    /// Sends one alert transition.
    ///
    /// # Errors
    ///
    /// [`SinkError::Enqueue`] when the producer refuses the record outright.
    pub async fn send_alert(&self, alert: &Alert) -> Result<Pending, SinkError> {
        let payload = alert.to_json().to_string().into_bytes();
        self.enqueue(
            SinkKind::Alerts,
            self.alert_topic.clone(),
            None,
            Some(alert.alert_id.clone().into_bytes()),
            Some(payload),
            Vec::new(),
        )
        .await
    }

    /// Sends a message between scaled-out stages to `partition` of `topic`.
    ///
    /// # Errors
    ///
    /// [`SinkError::Enqueue`] when the producer refuses the record outright.
    pub async fn send_exchange(
        &self,
        topic: &str,
        partition: i32,
        key: Vec<u8>,
        payload: Vec<u8>,
    ) -> Result<Pending, SinkError> {
        self.enqueue(
            SinkKind::Exchange,
            topic.to_owned(),
            Some(partition),
            Some(key),
            Some(payload),
            Vec::new(),
        )
        .await
    }

    /// Sends one checkpoint record to partition `partition_hash % partitions`
    /// of the state topic (both slots of an entity on one partition).
    ///
    /// # Errors
    ///
    /// [`SinkError::Enqueue`] when the producer refuses the record outright.
    pub async fn send_state(
        &self,
        write: crate::changelog::Write,
        partitions: i32,
    ) -> Result<Pending, SinkError> {
        let partition = (write.partition_hash % partitions.max(1) as u64) as i32;
        self.enqueue(
            SinkKind::State,
            self.state_topic.clone(),
            Some(partition),
            Some(write.key.into_bytes()),
            write.value,
            vec![("feidan.state.format", vec![b'0' + crate::changelog::FORMAT])],
        )
        .await
    }

    /// Sends the original bytes of an input message to the dead-letter topic.
    ///
    /// # Errors
    ///
    /// [`SinkError::Enqueue`] when the producer refuses the record outright.
    pub async fn send_dead_letter(
        &self,
        source: &SourceRecord<'_>,
        reason: &DeadLetter,
    ) -> Result<Pending, SinkError> {
        let headers = vec![
            ("feidan.reason", reason.code().as_bytes().to_vec()),
            ("feidan.detail", reason.to_string().into_bytes()),
            ("feidan.topic", source.topic.as_bytes().to_vec()),
            (
                "feidan.partition",
                source.partition.to_string().into_bytes(),
            ),
            ("feidan.offset", source.offset.to_string().into_bytes()),
        ];
        self.enqueue(
            SinkKind::DeadLetters,
            self.dead_letter_topic.clone(),
            None,
            source.key.map(<[u8]>::to_vec),
            Some(source.payload.to_vec()),
            headers,
        )
        .await
    }

    /// Sends a record again after a failed delivery.
    ///
    /// # Errors
    ///
    /// [`SinkError::Enqueue`] when the producer refuses the record outright.
    pub async fn resend(&self, failed: Pending) -> Result<Pending, SinkError> {
        self.enqueue(
            failed.sink,
            failed.topic,
            failed.partition,
            failed.key,
            failed.payload,
            failed.headers,
        )
        .await
    }

    /// Waits up to `timeout` for every queued record to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }

    async fn enqueue(
        &self,
        sink: SinkKind,
        topic: String,
        partition: Option<i32>,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        headers: Vec<(&'static str, Vec<u8>)>,
    ) -> Result<Pending, SinkError> {
        loop {
            let mut owned_headers = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in &headers {
                owned_headers = owned_headers.insert(Header {
                    key: name,
                    value: Some(value.as_slice()),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(owned_headers);
            if let Some(payload) = &payload {
                record = record.payload(payload.as_slice());
            }
            if let Some(key) = &key {
                record = record.key(key.as_slice());
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(Pending {
                        sink,
                        topic,
                        partition,
                        key,
                        payload,
                        headers,
                        delivery,
                    })
                }
                // The local queue is full: wait for deliveries to drain it.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, _)) => return Err(SinkError::Enqueue { topic, source }),
            }
        }
    }
}
