//! The live service against a real Kafka protocol peer (librdkafka's mock
//! cluster): alerts on the alert topic equal the backtest of the same input,
//! bad input is dead-lettered with its reason and original bytes, every
//! consumed message is accounted for, and offsets are committed at shutdown.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use feidan::backtest;
use feidan::config::Config;
use feidan::metrics::{Health, Metrics};
use feidan::service::{self, RunSummary};
use tokio_util::sync::CancellationToken;

fn test_config() -> Config {
    let mut config = Config::defaults();
    // The test's input simply ends: no idle-time advance of event time, so
    // the service sees exactly what the backtest sees.
    config.engine.idle_timeout = Duration::from_secs(3600);
    config
}

/// `feidan_events_total` summed by outcome, from the exposition text.
fn outcomes(metrics: &Metrics) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for line in metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("feidan_events_total{"))
    {
        let outcome = line
            .split("outcome=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *sums.entry(outcome).or_default() += value as u64;
    }
    sums
}

/// Runs the service until `expected` messages are counted, then shuts it
/// down the way SIGTERM would.
async fn run_until_consumed(config: &Config, metrics: Arc<Metrics>, expected: u64) -> RunSummary {
    run_service_until(config, metrics, expected, Duration::from_secs(120)).await
}

fn malformed() -> Vec<Vec<u8>> {
    vec![
        b"this is not json".to_vec(),
        vec![0xde, 0xad, 0xbe, 0xef, 0x00],
        br#"{"event_id":"x1","type":"order_placed","occurred_at":"2025-02-01T00:00:00Z","manager_id":"kam-0001","account_id":"acc-00001","order_id":"o","amount":"lots"}"#.to_vec(),
        br#"{"event_id":"x2","type":"order_refunded","occurred_at":"2025-02-01T00:00:00Z","manager_id":"kam-0001","account_id":"acc-00001"}"#.to_vec(),
        br#"{"event_id":"x3","type":"activity_logged","occurred_at":"2025-02-01T00:00:00Z","account_id":"acc-00001","activity":"visit"}"#.to_vec(),
        format!(r#"{{"event_id":"x4","pad":"{}"}}"#, "x".repeat(100_000)).into_bytes(),
    ]
}

fn account_key(payload: &[u8]) -> Vec<u8> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v.get("account_id")
                .and_then(|a| a.as_str())
                .map(|a| a.as_bytes().to_vec())
        })
        .unwrap_or_else(|| b"unparseable".to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_on_the_topic_equal_the_backtest_and_bad_input_is_dead_lettered() {
    let mut config = test_config();
    let broker = broker_with_topics(&mut config, 1);

    let mut input = small_world(3);
    let bad = malformed();
    for (i, payload) in bad.iter().enumerate() {
        input.insert(1_000 + i * 2_000, payload.clone());
    }
    let duplicate = input[500].clone();
    input.insert(600, duplicate);
    produce(
        &config.kafka.brokers,
        &config.kafka.input_topic,
        &input,
        account_key,
    );

    let joined: Vec<u8> = input
        .iter()
        .flat_map(|line| line.iter().copied().chain([b'\n']))
        .collect();
    let expected = backtest::replay(&config, joined.as_slice(), |_| Ok(())).unwrap();
    assert!(
        expected.alerts.len() >= 2,
        "the world must raise alerts for this test to mean anything"
    );

    let metrics = Arc::new(Metrics::new(false, 0));
    let summary = run_until_consumed(&config, metrics.clone(), input.len() as u64).await;

    // Nothing lost: consumed = processed + duplicate + late + dead-lettered,
    // and every message's effects were acknowledged before its offset was stored.
    let counted = outcomes(&metrics);
    assert_eq!(summary.messages, input.len() as u64);
    assert_eq!(
        counted.values().sum::<u64>(),
        input.len() as u64,
        "{counted:?}"
    );
    assert_eq!(counted["duplicate"], 1);
    assert_eq!(counted["dead_letter"], bad.len() as u64);
    assert_eq!(summary.settled, summary.messages);

    let alerts = read_topic(
        &config.kafka.brokers,
        &config.kafka.alert_topic,
        expected.alerts.len(),
        Duration::from_secs(60),
    );
    // Byte for byte: the same JSON text, not merely equal after parsing.
    let got: Vec<String> = alerts
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    let want: Vec<String> = expected
        .alerts
        .iter()
        .map(|a| a.to_json().to_string())
        .collect();
    assert_eq!(
        got, want,
        "the service and the backtest must emit the same transitions"
    );
    let got: Vec<serde_json::Value> = alerts.iter().map(Record::json).collect();
    let validator = schema("alert.v1.schema.json");
    for (record, alert) in alerts.iter().zip(&got) {
        assert_eq!(
            record.key.as_deref(),
            alert["alert_id"].as_str().map(str::as_bytes)
        );
        assert_valid(&validator, alert);
    }

    let dead = read_topic(
        &config.kafka.brokers,
        &config.kafka.dead_letter_topic,
        bad.len(),
        Duration::from_secs(60),
    );
    assert_eq!(dead.len(), bad.len());
    let reasons: Vec<&str> = dead
        .iter()
        .map(|r| r.header("feidan.reason").unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "not_json",
            "not_utf8",
            "wrong_type",
            "unknown_type",
            "missing_field",
            "too_large"
        ]
    );
    for (record, original) in dead.iter().zip(&bad) {
        assert_eq!(&record.payload, original, "the original bytes are kept");
        assert_eq!(
            record.header("feidan.topic"),
            Some(config.kafka.input_topic.as_str())
        );
        assert_eq!(record.header("feidan.partition"), Some("0"));
        assert!(record
            .header("feidan.offset")
            .unwrap()
            .parse::<i64>()
            .is_ok());
        assert!(!record.header("feidan.detail").unwrap().is_empty());
    }
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_at_shutdown_across_partitions() {
    let mut config = test_config();
    let broker = broker_with_topics(&mut config, 3);
    let input: Vec<Vec<u8>> = small_world(5).into_iter().take(4_000).collect();
    produce(
        &config.kafka.brokers,
        &config.kafka.input_topic,
        &input,
        account_key,
    );

    let first = run_until_consumed(
        &config,
        Arc::new(Metrics::new(false, 0)),
        input.len() as u64,
    )
    .await;
    assert_eq!(first.messages, input.len() as u64);
    assert_eq!(first.settled, first.messages);

    // The same group again: everything was committed, so nothing is re-read.
    let metrics = Arc::new(Metrics::new(false, 0));
    let stop = CancellationToken::new();
    let again = {
        let config = config.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            service::run(&config, metrics, Health::default(), stop.cancelled_owned()).await
        })
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.cancel();
    let second = again.await.unwrap().unwrap();
    assert_eq!(
        second.messages, 0,
        "committed offsets must not be consumed again"
    );
    drop(broker);
}

/// On tansu, a broker in its own process: librdkafka's mock cluster
/// implements neither CreateTopics nor DescribeConfigs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feidan_creates_the_topics_it_owns_and_never_the_input() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let Some(broker) = start_tansu() else { return };
    let mut config = test_config();
    config.kafka.brokers = broker.bootstrap.clone();
    config.kafka.input_topic = unique("input");
    config.kafka.alert_topic = unique("alerts");
    config.kafka.dead_letter_topic = unique("dead");
    config.kafka.state_topic = unique("state");
    config.kafka.topics.partitions = 3;
    let report = feidan::kafka::topics::ensure_topics(&config.kafka)
        .await
        .unwrap();
    assert_eq!(report.created.len(), 3, "{report:?}");
    let again = feidan::kafka::topics::ensure_topics(&config.kafka)
        .await
        .unwrap();
    assert!(again.created.is_empty(), "{again:?}");

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let partitions = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
    };
    for topic in [
        &config.kafka.alert_topic,
        &config.kafka.dead_letter_topic,
        &config.kafka.state_topic,
    ] {
        assert_eq!(partitions(topic), Some(3), "{topic}");
    }
    assert_eq!(
        partitions(&config.kafka.input_topic),
        None,
        "the input topic is the user's"
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_topic_that_is_not_compacted_is_refused() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let Some(broker) = start_tansu() else { return };
    let mut config = test_config();
    config.kafka.brokers = broker.bootstrap.clone();
    config.kafka.state_topic = unique("state");
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .unwrap();
    let plain = NewTopic::new(&config.kafka.state_topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete");
    admin
        .create_topics([&plain], &AdminOptions::new())
        .await
        .unwrap();
    let error = feidan::kafka::topics::ensure_topics(&config.kafka)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("must be compacted"), "{error}");
    drop(broker);
}
