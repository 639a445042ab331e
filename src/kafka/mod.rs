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

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tracing::warn;

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

/// Why the cluster could not be asked for its metadata.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the Kafka cluster at {brokers} refused feidan's credentials (check `sasl.username` and the password in `kafka.client`): {reason}")]
    Refused { brokers: String, reason: String },
    #[error("cannot reach the Kafka cluster at {brokers}")]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
}

/// Whether a client error is the broker refusing the client's credentials.
/// librdkafka reports that as a global error and keeps retrying; to anyone
/// asking for metadata it looks like an unreachable broker.
pub fn is_refused_login(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication)
}

/// A client context that remembers the broker refusing the client's login.
#[derive(Default)]
struct LoginWatch {
    refused: Mutex<Option<String>>,
}

impl ClientContext for LoginWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_refused_login(&error) {
            if let Ok(mut refused) = self.refused.lock() {
                *refused = Some(reason.to_owned());
            }
        } else {
            warn!(error = %error, reason, "Kafka client error.");
        }
    }
}

/// The probe sends nothing.
impl ProducerContext for LoginWatch {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Asks the cluster for its metadata within `timeout`, telling a refused
/// login (wrong SASL password, unknown user) apart from an unreachable
/// cluster, and failing on it at once instead of at the timeout.
///
/// # Errors
///
/// [`ConnectError::Refused`] with librdkafka's reason (which never holds the
/// password), or [`ConnectError::Unreachable`].
pub fn fetch_metadata(kafka: &KafkaConfig, timeout: Duration) -> Result<Metadata, ConnectError> {
    let unreachable = |source| ConnectError::Unreachable {
        brokers: kafka.brokers.clone(),
        source,
    };
    // A producer, because polling it serves the client's error events; an
    // admin client's do not reach its context.
    let probe: BaseProducer<LoginWatch> = client_config(kafka)
        .create_with_context(LoginWatch::default())
        .map_err(unreachable)?;
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = probe
            .client()
            .fetch_metadata(None, Duration::from_millis(500).min(timeout));
        probe.poll(Duration::ZERO);
        let refused = probe.context().refused.lock().ok().and_then(|r| r.clone());
        match (attempt, refused) {
            (Ok(metadata), _) => return Ok(metadata),
            (Err(_), Some(reason)) => {
                return Err(ConnectError::Refused {
                    brokers: kafka.brokers.clone(),
                    reason,
                })
            }
            (Err(error), None) if Instant::now() >= deadline => return Err(unreachable(error)),
            (Err(_), None) => {}
        }
    }
}
