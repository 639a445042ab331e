//! Through a real broker: `feidan run`'s consuming loop against a bare
//! rdkafka consumer reading the same pre-filled topic on the same broker, in
//! the same run; the ratio of their rates is the figure. Needs a
//! Kafka-compatible broker in its own process (tansu, DESIGN §10) at
//! `FEIDAN_BENCH_BROKER` (benches/run.sh starts one); without it, skipped.
//! `FEIDAN_BENCH_EVENTS` sets the topic's size (default 1,000,000).
//!
//! Then latency: with feidan running on an empty topic, events are produced
//! at a steady `FEIDAN_BENCH_RATE` (default 10,000/s) for
//! `FEIDAN_BENCH_SECONDS` (default 20), and the distribution of the time from
//! each message's append to feidan having applied it
//! (`feidan_input_delay_seconds`) gives p50 and p99.

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
    create_topic(&admin, &topic).await;

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
    let config = service_config(&brokers, &topic);
    let single = measure_run(&config, produced, None).await;

    // The same, scaled out on one instance (a stage per partition, their
    // messages through the facts and pace topics): to consumed, and to
    // every evaluation done up to where the one-instance run got.
    let mut config = service_config(&brokers, &topic);
    config.kafka.group_id = format!("{topic}-scaled");
    config.kafka.state_topic = format!("{topic}-scaled-state");
    config.kafka.facts_topic = format!("{topic}-facts");
    config.kafka.pace_topic = format!("{topic}-pace");
    config.kafka.scale_out = true;
    let scaled = measure_run(&config, produced, Some(single.evaluated)).await;
    let (feidan_rate, scaled_consumed, scaled_evaluated) = (
        single.consumed_rate,
        scaled.consumed_rate,
        scaled.evaluated_rate,
    );

    println!("broker/bare_consumer   {bare_rate:>10.0} events/s ({read} events, {PARTITIONS} partitions)");
    println!("broker/feidan_run      {feidan_rate:>10.0} events/s");
    println!("broker/ratio           {:>10.2}", feidan_rate / bare_rate);
    println!("broker/scaled_consumed {scaled_consumed:>10.0} events/s (scale_out, one instance)");
    println!("broker/scaled_evaluated {scaled_evaluated:>9.0} events/s (every evaluation done)");

    latency(&brokers, &admin).await;
}

/// What one run of the service through the broker measured.
struct Run {
    /// Events per second to every event consumed ...
    consumed_rate: f64,
    /// ... and to every evaluation done up to the target.
    evaluated_rate: f64,
    /// `feidan_evaluated_timestamp_seconds` at the end.
    evaluated: f64,
}

/// Runs the service on the pre-filled topic until it has consumed
/// `produced` events and, given a target, evaluated up to it.
async fn measure_run(config: &Config, produced: usize, target: Option<f64>) -> Run {
    let mut config = config.clone();
    config.engine.idle_timeout = Duration::from_secs(3600);
    let metrics = Arc::new(Metrics::new(false, 0));
    let (stop, service) = spawn_service(&config, &metrics);
    let started = Instant::now();
    let consumed = || gauge(&metrics, "feidan_events_total") as u64;
    let evaluated = || gauge(&metrics, "feidan_evaluated_timestamp_seconds");
    while consumed() < produced as u64 && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let consumed_rate = consumed() as f64 / started.elapsed().as_secs_f64();
    while target.is_some_and(|t| evaluated() < t) && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let evaluated_rate = consumed() as f64 / started.elapsed().as_secs_f64();
    let evaluated = evaluated();
    stop.cancel();
    let _ = service.await;
    Run {
        consumed_rate,
        evaluated_rate,
        evaluated,
    }
}

/// The sum of metric `name`'s series in `metrics`' exposition.
fn gauge(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn create_topic(admin: &AdminClient<DefaultClientContext>, topic: &str) {
    admin
        .create_topics(
            [&NewTopic::new(
                topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
}

/// Starts the service in the background; cancel the token to stop it.
fn spawn_service(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<feidan::service::RunSummary, feidan::service::ServiceError>>,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let (config, metrics, token) = (config.clone(), metrics.clone(), stop.clone());
    let service = tokio::spawn(async move {
        feidan::service::run(&config, metrics, Health::default(), token.cancelled_owned()).await
    });
    (stop, service)
}

/// The service's configuration for input `topic`, its own topics beside it.
fn service_config(brokers: &str, topic: &str) -> Config {
    let mut config = Config::defaults();
    config.kafka.brokers = brokers.to_owned();
    config.kafka.input_topic = topic.to_owned();
    config.kafka.group_id = format!("{topic}-feidan");
    config.kafka.alert_topic = format!("{topic}-alerts");
    config.kafka.dead_letter_topic = format!("{topic}-dead");
    config.kafka.state_topic = format!("{topic}-state");
    config
}

/// Append-to-processed latency at a steady rate.
async fn latency(brokers: &str, admin: &AdminClient<DefaultClientContext>) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rate = env("FEIDAN_BENCH_RATE", 10_000);
    let seconds = env("FEIDAN_BENCH_SECONDS", 20);
    let topic = format!("bench-latency-{}", std::process::id());
    create_topic(admin, &topic).await;
    let mut config = service_config(brokers, &topic);
    // Fetch as soon as anything is there: the consumer's latency setting.
    config
        .kafka
        .client
        .insert("fetch.wait.max.ms".into(), "5".into());
    let metrics = Arc::new(Metrics::new(false, 0));
    let (stop, service) = spawn_service(&config, &metrics);
    // Let it join the group and read the (empty) state first.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let events: Vec<feidan::event::Event> = Simulation::new(SimConfig {
        seed: 2,
        managers: 200,
        days: 540,
        ..SimConfig::default()
    })
    .flatten()
    .take((rate * seconds) as usize)
    .collect();
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1) as usize;
    let started = Instant::now();
    for (n, chunk) in events.chunks(per_tick).enumerate() {
        let due = started + tick * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        for event in chunk {
            let payload = event.to_json().to_string();
            while producer
                .send(
                    BaseRecord::to(&topic)
                        .key(event.account_id.as_bytes())
                        .payload(payload.as_bytes()),
                )
                .is_err()
            {
                producer.poll(Duration::from_millis(1));
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let achieved = events.len() as f64 / started.elapsed().as_secs_f64();
    let waited = Instant::now();
    while delays(&metrics.render()).last().map_or(0.0, |(_, n)| *n) < events.len() as f64
        && waited.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let _ = service.await;
    let buckets = delays(&metrics.render());
    println!(
        "broker/latency_p50     {:>10.1} ms (append to processed, {achieved:.0} events/s for {seconds} s)",
        quantile(&buckets, 0.5) * 1e3
    );
    println!(
        "broker/latency_p99     {:>10.1} ms",
        quantile(&buckets, 0.99) * 1e3
    );
}

/// The cumulative buckets of `feidan_input_delay_seconds`: (upper bound, count).
fn delays(exposition: &str) -> Vec<(f64, f64)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("feidan_input_delay_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly within a
/// bucket, as Prometheus' `histogram_quantile` does.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, n)| *n);
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let share = if count > lower.1 {
                (rank - lower.1) / (count - lower.1)
            } else {
                0.0
            };
            return lower.0 + (le - lower.0) * share;
        }
        lower = (le, count);
    }
    f64::NAN
}
