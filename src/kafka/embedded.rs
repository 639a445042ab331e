//! An embedded Kafka broker: librdkafka's mock cluster, a real Kafka protocol
//! peer in this process, with consumer groups. For `feidan demo` and the fast
//! integration tests; it stalls on large volumes (DESIGN §10), so nothing
//! measures throughput on it.

use rdkafka::error::KafkaResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A running mock cluster and the topics created on it.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster on a free loopback port.
    ///
    /// # Errors
    ///
    /// When librdkafka cannot create the cluster.
    pub fn start() -> KafkaResult<EmbeddedBroker> {
        Ok(EmbeddedBroker {
            cluster: MockCluster::new(1)?,
        })
    }

    /// The `bootstrap.servers` string clients connect with.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates a topic with `partitions` partitions.
    ///
    /// # Errors
    ///
    /// When the mock cluster refuses (e.g. the topic exists).
    pub fn create_topic(&self, name: &str, partitions: i32) -> KafkaResult<()> {
        self.cluster.create_topic(name, partitions, 1)
    }
}
