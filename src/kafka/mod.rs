//! The Kafka edges: client configuration, the input consumer, the alert and
//! dead-letter producers, the topics feidan owns, and the embedded broker of
//! the demo and the tests.
//!
//! Nothing here decides anything: the consumer turns messages into
//! `(payload, partition, offset)`, the sinks turn alerts and dead letters into
//! records and report when the broker has acknowledged them.

pub mod embedded;
pub mod sink;
pub mod source;
pub mod state;
pub mod topics;

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// The settings every client shares: bootstrap servers, then the user's
/// `kafka.client` properties (which may override anything but what feidan's
/// guarantees rest on; those are set by the callers after this).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (name, value) in &kafka.client {
        config.set(name, value);
    }
    config
}
