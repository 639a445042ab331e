//! `feidan demo`: the whole product on one machine with nothing installed.
//! An embedded Kafka broker (librdkafka's mock cluster), the simulated sales
//! organisation producing into it at accelerated time, the real service
//! consuming it, alert transitions read back from the alert topic and
//! printed as they happen, and metrics served over HTTP.
//!
//! The service here is [`crate::service::run`] itself, unchanged: only the
//! broker and the event source are the demo's own.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::alert::describe;
use crate::config::Config;
use crate::kafka::embedded::EmbeddedBroker;
use crate::metrics::{self, Health, Metrics};
use crate::service::{self, ServiceError};
use crate::simulate::{SimConfig, Simulation};

/// Partitions of the demo's input topic.
const INPUT_PARTITIONS: i32 = 4;

/// Simulated days between two deliberately malformed messages, so the
/// dead-letter path shows in the metrics.
const BAD_MESSAGE_EVERY_DAYS: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the embedded Kafka broker: {0}")]
    Broker(KafkaError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop after this long; `None` runs until the shutdown future completes.
    pub duration: Option<Duration>,
    pub metrics_addr: SocketAddr,
    /// Print each alert as its JSON line instead of the readable line.
    pub json: bool,
    /// Simulated days produced per wall-clock second.
    pub days_per_second: f64,
    pub simulation: SimConfig,
}

/// What the demo did.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    pub events_produced: u64,
    pub malformed_produced: u64,
    pub alerts_printed: u64,
    pub metrics_addr: Option<SocketAddr>,
}

/// Runs the demo; `print` receives every line meant for the user.
///
/// # Errors
///
/// When the embedded broker, the metrics port or the service fail to start.
pub async fn run(
    mut config: Config,
    options: DemoOptions,
    shutdown: impl Future<Output = ()>,
    mut print: impl FnMut(String),
) -> Result<DemoSummary, DemoError> {
    let broker = EmbeddedBroker::start().map_err(DemoError::Broker)?;
    let kafka = &mut config.kafka;
    kafka.brokers = broker.bootstrap_servers();
    for (topic, partitions) in [
        (&kafka.input_topic, INPUT_PARTITIONS),
        (&kafka.alert_topic, 1),
        (&kafka.dead_letter_topic, 1),
        (&kafka.state_topic, 1),
    ] {
        broker
            .create_topic(topic, partitions)
            .map_err(DemoError::Broker)?;
    }
    config.metrics.manager_series = true;
    // The demo made its topics on the embedded broker above.
    config.kafka.topics.create = false;

    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new(true, config.metrics.max_manager_series));
    let health = Health::default();
    let (metrics_addr, http) = metrics::serve(
        options.metrics_addr,
        metrics.clone(),
        health.clone(),
        stop.clone().cancelled_owned(),
    )
    .await
    .map_err(|source| DemoError::Metrics {
        addr: options.metrics_addr,
        source,
    })?;

    let simulation = Simulation::new(options.simulation.clone());
    let labels = simulation.labels();
    print(format!(
        "feidan demo: embedded Kafka at {}, {} managers in {} teams, {} accounts, {} days from {} at {} days/s.",
        config.kafka.brokers,
        options.simulation.managers,
        options.simulation.managers.div_ceil(options.simulation.managers_per_team.max(1)),
        options.simulation.managers * options.simulation.accounts_per_manager,
        options.simulation.days,
        labels.start,
        options.days_per_second
    ));
    print(format!(
        "Planted: {} diverting manager(s) ({}); a team-wide downturn in {}. Metrics: http://{metrics_addr}/metrics",
        labels.diverters.len(),
        labels
            .diverters
            .iter()
            .map(|d| format!("{} from {}", d.manager_id, &d.onset[..10]))
            .collect::<Vec<_>>()
            .join(", "),
        labels.downturns.first().map_or("no team", |d| d.team.as_str()),
    ));

    let service_task = {
        let config = config.clone();
        let stop = stop.clone();
        tokio::spawn(
            async move { service::run(&config, metrics, health, stop.cancelled_owned()).await },
        )
    };

    let (lines, mut receive_lines) = mpsc::channel::<String>(256);
    let printer = tokio::spawn(print_alerts(
        config.clone(),
        options.json,
        lines,
        stop.clone(),
    ));

    let produced = Arc::new(AtomicU64::new(0));
    let malformed = Arc::new(AtomicU64::new(0));
    let producer = tokio::spawn(produce_world(
        config.clone(),
        simulation,
        options.days_per_second,
        stop.clone(),
        produced.clone(),
        malformed.clone(),
    ));

    let mut summary = DemoSummary {
        metrics_addr: Some(metrics_addr),
        ..Default::default()
    };
    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline, shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut deadline => break,
            line = receive_lines.recv() => match line {
                Some(line) => {
                    summary.alerts_printed += 1;
                    print(line);
                }
                None => break,
            },
        }
    }

    stop.cancel();
    let _ = producer.await;
    let _ = printer.await;
    while let Ok(line) = receive_lines.try_recv() {
        summary.alerts_printed += 1;
        print(line);
    }
    let service_result = service_task.await;
    let _ = http.await;
    summary.events_produced = produced.load(Ordering::Relaxed);
    summary.malformed_produced = malformed.load(Ordering::Relaxed);
    match service_result {
        Ok(result) => {
            result?;
        }
        Err(error) => warn!(error = %error, "The service task failed."),
    }
    Ok(summary)
}

/// Produces the simulated world into the input topic, paced in wall time.
async fn produce_world(
    config: Config,
    simulation: Simulation,
    days_per_second: f64,
    stop: CancellationToken,
    produced: Arc<AtomicU64>,
    malformed: Arc<AtomicU64>,
) {
    let producer: FutureProducer = match ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "5")
        .create()
    {
        Ok(producer) => producer,
        Err(error) => {
            warn!(error = %error, "Cannot create the demo producer.");
            return;
        }
    };
    let topic = config.kafka.input_topic.as_str();
    let pace = Duration::from_secs_f64(1.0 / days_per_second.max(0.01));
    let mut next_day = tokio::time::Instant::now();
    for (day, events) in simulation.enumerate() {
        if stop.is_cancelled() {
            return;
        }
        for event in &events {
            let payload = event.to_json().to_string();
            if !send(
                &producer,
                topic,
                event.account_id.as_bytes(),
                payload.as_bytes(),
            )
            .await
            {
                return;
            }
            produced.fetch_add(1, Ordering::Relaxed);
        }
        if day % BAD_MESSAGE_EVERY_DAYS == BAD_MESSAGE_EVERY_DAYS - 1 {
            // A CRM export bug: the amount as text. Valid JSON, invalid event.
            let bad = format!(
                r#"{{"event_id":"bad-{day}","type":"order_placed","occurred_at":"{}","manager_id":"kam-0001","account_id":"acc-00001","order_id":"x","amount":"lots"}}"#,
                events
                    .first()
                    .map_or_else(String::new, |e| e.occurred_at.to_string())
            );
            if send(&producer, topic, b"bad", bad.as_bytes()).await {
                malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
        next_day += pace;
        tokio::select! {
            () = tokio::time::sleep_until(next_day) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Enqueues one record, waiting while the local queue is full.
async fn send(producer: &FutureProducer, topic: &str, key: &[u8], payload: &[u8]) -> bool {
    loop {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(_) => return true,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, _)) => {
                warn!(error = %error, "The demo producer failed.");
                return false;
            }
        }
    }
}

/// Reads the alert topic from the start and forwards one line per transition.
async fn print_alerts(
    config: Config,
    json: bool,
    lines: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", "feidan-demo-printer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(consumer) => consumer,
        Err(error) => {
            warn!(error = %error, "Cannot create the alert reader.");
            return;
        }
    };
    if let Err(error) = consumer.subscribe(&[&config.kafka.alert_topic]) {
        warn!(error = %error, "Cannot subscribe to the alert topic.");
        return;
    }
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = consumer.recv() => message,
        };
        let Ok(message) = message else { continue };
        let Some(payload) = message.payload() else {
            continue;
        };
        let line = if json {
            String::from_utf8_lossy(payload).into_owned()
        } else {
            match serde_json::from_slice(payload) {
                Ok(alert) => describe(&alert),
                Err(_) => String::from_utf8_lossy(payload).into_owned(),
            }
        };
        if lines.send(line).await.is_err() {
            return;
        }
    }
}
