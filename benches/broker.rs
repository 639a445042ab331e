//! Through a real broker: `feidan run`'s consuming loop against a bare
//! rdkafka consumer reading the same pre-filled topic on the same broker, in
//! the same run; the ratio of their rates is the figure. Needs a
//! Kafka-compatible broker in its own process (tansu, DESIGN §10) at
//! `FEIDAN_BENCH_BROKER` (benches/run.sh starts one); without it, skipped.
//! `FEIDAN_BENCH_EVENTS` sets the topic's size (default 1,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use feidan::config::Config;
use feidan::metrics::{Health, Metrics};
use feidan::simulate::{SimConfig, Simulation};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Ok(brokers) = std::env::var("FEIDAN_BENCH_BROKER") else {
        println!("broker: skipped (set FEIDAN_BENCH_BROKER to a Kafka-compatible broker, as benches/run.sh does)");
        return;
    };
    let wanted: usize = std::env::var("FEIDAN_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let topic = format!("bench-input-{}", std::process::id());

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    admin
        .create_topics(
            [&NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();

    // Pre-fill: a simulated world, as many events as asked for.
    let managers = (wanted / 1_250).max(8);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .unwrap();
    let mut produced = 0;
    'fill: for events in Simulation::new(SimConfig {
        seed: 1,
        managers,
        days: 540,
        ..SimConfig::default()
    }) {
        for event in events {
            let payload = event.to_json().to_string();
            loop {
                match producer.send(
                    BaseRecord::to(&topic)
                        .key(event.account_id.as_bytes())
                        .payload(payload.as_bytes()),
                ) {
                    Ok(()) => break,
                    Err(_) => {
                        producer.poll(Duration::from_millis(5));
                    }
                }
            }
            produced += 1;
            if produced == wanted {
                break 'fill;
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();

    // The bare consumer: read everything, do nothing.
    let bare: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("bench-bare-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    bare.subscribe(&[&topic]).unwrap();
    let started = Instant::now();
    let mut read = 0;
    while read < produced && started.elapsed() < Duration::from_secs(600) {
        if let Some(Ok(_)) = bare.poll(Duration::from_millis(100)) {
            read += 1;
        }
    }
    let bare_rate = read as f64 / started.elapsed().as_secs_f64();
    drop(bare);

    // feidan's service, the same loop `feidan run` runs.
    let mut config = Config::defaults();
    config.kafka.brokers = brokers.clone();
    config.kafka.input_topic = topic.clone();
    config.kafka.group_id = format!("bench-feidan-{}", std::process::id());
    config.kafka.alert_topic = format!("{topic}-alerts");
    config.kafka.dead_letter_topic = format!("{topic}-dead");
    config.kafka.state_topic = format!("{topic}-state");
    config.engine.idle_timeout = Duration::from_secs(3600);
    let metrics = Arc::new(Metrics::new(false, 0));
    let stop = tokio_util::sync::CancellationToken::new();
    let service = {
        let (config, metrics, stop) = (config.clone(), metrics.clone(), stop.clone());
        tokio::spawn(async move {
            feidan::service::run(&config, metrics, Health::default(), stop.cancelled_owned()).await
        })
    };
    let started = Instant::now();
    let consumed = || -> u64 {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("feidan_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    while consumed() < produced as u64 && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let feidan_rate = consumed() as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = service.await;

    println!("broker/bare_consumer   {bare_rate:>10.0} events/s ({read} events, {PARTITIONS} partitions)");
    println!("broker/feidan_run      {feidan_rate:>10.0} events/s");
    println!("broker/ratio           {:>10.2}", feidan_rate / bare_rate);
}
