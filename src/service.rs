//! The live service (`feidan run`): input consumer → engine → sinks, with
//! at-least-once offsets, idle-time watermark advance, metrics and readiness.
//!
//! Order of a message's life: consumed → applied by the engine → its alerts
//! and dead letter handed to the producer → all acknowledged by the broker →
//! its offset stored → committed (in the background, and at shutdown). The
//! in-flight queue keeps input order, so an offset is never stored before the
//! offsets below it, and it is bounded (`kafka.max_in_flight`): when full, the
//! loop waits for the oldest entry (backpressure) instead of consuming more.
//!
//! Shutdown (SIGINT/SIGTERM or the caller's future): not ready → stop
//! consuming → drain in-flight sends → store and commit offsets → flush.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tracing::{debug, info, warn};

use crate::alert::{Alert, Status};
use crate::config::Config;
use crate::engine::{Engine, Outcome};
use crate::kafka::sink::{DeliveryState, Pending, SinkError, Sinks, SourceRecord};
use crate::kafka::source::{self, InputConsumer};
use crate::metrics::{Health, Metrics};

/// How long shutdown waits for unacknowledged sends before giving up on them
/// (their offsets are then not committed: they will be consumed again).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the consumer lag and readiness are refreshed.
const LAG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot set up the input consumer for topic `{topic}`: {source}")]
    Consumer { topic: String, source: KafkaError },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Topics(#[from] crate::kafka::topics::TopicError),
}

/// What one run did, for the caller's closing log line.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub messages: u64,
    pub alerts: u64,
    pub dead_letters: u64,
    /// Messages whose offsets were stored (all effects acknowledged).
    pub settled: u64,
}

/// One input message's effects, waiting for the broker.
struct InFlight {
    /// Input partition and offset; `None` for alerts caused by idle time.
    position: Option<(i32, i64)>,
    pending: Vec<Pending>,
}

/// Runs the service until `shutdown` completes.
///
/// # Errors
///
/// Only for failures no retry can mend: a rejected client configuration, or
/// a record the producer refuses outright. A broker that is away is waited
/// for, with `/readyz` reporting not ready.
pub async fn run(
    config: &Config,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, ServiceError> {
    let kafka = &config.kafka;
    if kafka.topics.create {
        crate::kafka::topics::ensure_topics(kafka).await?;
    }
    let (consumer, context) =
        source::subscribe(kafka).map_err(|source| ServiceError::Consumer {
            topic: kafka.input_topic.clone(),
            source,
        })?;
    let consumer = Arc::new(consumer);
    let sinks = Sinks::new(kafka)?;
    let mut engine = Engine::new(config);
    let mut state = Loop {
        config,
        consumer: consumer.clone(),
        sinks,
        metrics: metrics.clone(),
        in_flight: VecDeque::new(),
        summary: RunSummary::default(),
        alerts: Vec::new(),
        settled: Default::default(),
    };
    info!(brokers = %kafka.brokers, topic = %kafka.input_topic, group = %kafka.group_id, "Consuming.");

    let idle_timeout = config.engine.idle_timeout;
    let mut last_message = Instant::now();
    let mut last_by_partition: HashMap<i32, Instant> = HashMap::new();
    let mut idle_clock: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lag_refresh: Option<
        tokio::task::JoinHandle<rdkafka::error::KafkaResult<Vec<(i32, i64)>>>,
    > = None;
    let mut last_lag_refresh = Instant::now() - LAG_EVERY;
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            received = consumer.recv() => match received {
                Ok(message) => {
                    context.set_connected(true);
                    let now = Instant::now();
                    if let Some(partitions) = context.take_assignment() {
                        assign(&mut engine, &mut state, &mut last_by_partition, &partitions, now);
                    }
                    last_message = now;
                    idle_clock = None;
                    last_by_partition.insert(message.partition(), now);
                    let record = SourceRecord {
                        topic: message.topic(),
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key(),
                        payload: message.payload().unwrap_or_default(),
                    };
                    state.handle(&mut engine, &record).await?;
                }
                Err(error) => {
                    warn!(error = %error, "Consumer error; retrying.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(partitions) = context.take_assignment() {
                    assign(&mut engine, &mut state, &mut last_by_partition, &partitions, now);
                }
                // Partitions quiet for the idle timeout stop holding the watermark back.
                for (partition, last) in &last_by_partition {
                    if now.duration_since(*last) >= idle_timeout {
                        engine.set_partition_idle(*partition, true, &mut state.alerts);
                    }
                }
                // The whole input idle: event time follows the wall clock.
                if now.duration_since(last_message) >= idle_timeout {
                    let since = *idle_clock.get_or_insert(now);
                    let whole = now.duration_since(since).as_secs();
                    if whole > 0 {
                        engine.advance_idle(whole as i64, &mut state.alerts);
                        idle_clock = Some(since + Duration::from_secs(whole));
                    }
                }
                state.send_alerts(None).await?;
                state.store_settled();
                metrics.refresh(&engine.stats(), unix_now());

                if let Some(handle) = lag_refresh.take_if(|h| h.is_finished()) {
                    let lag = match handle.await {
                        Ok(lag) => lag,
                        Err(error) => {
                            warn!(error = %error, "The lag task failed.");
                            Err(KafkaError::Canceled)
                        }
                    };
                    let ready = match lag {
                        Ok(lags) => {
                            context.set_connected(true);
                            metrics.consumer_lag.reset();
                            for (partition, lag) in &lags {
                                metrics.consumer_lag.with_label_values(&[&partition.to_string()]).set(*lag);
                            }
                            let total: i64 = lags.iter().map(|(_, lag)| lag).sum();
                            !lags.is_empty() && total <= config.metrics.ready_max_lag
                        }
                        Err(error) => {
                            debug!(error = %error, "Cannot read the consumer lag.");
                            false
                        }
                    };
                    let ready = ready && context.connected();
                    health.set_ready(ready);
                    metrics.ready.set(i64::from(ready));
                }
                if lag_refresh.is_none() && now.duration_since(last_lag_refresh) >= LAG_EVERY {
                    last_lag_refresh = now;
                    let consumer = consumer.clone();
                    let topic = kafka.input_topic.clone();
                    lag_refresh = Some(tokio::task::spawn_blocking(move || source::lag(&consumer, &topic, Duration::from_secs(2))));
                }
            }
        }
        state.settle(false).await?;
        while state.in_flight.len() >= kafka.max_in_flight {
            state.settle_oldest().await?;
        }
    }

    info!("Shutting down: draining in-flight sends.");
    health.set_ready(false);
    metrics.ready.set(0);
    // The lag task holds the consumer: let it finish, so the consumer closes
    // here, while the broker is surely still there to hear it leave the group.
    if let Some(handle) = lag_refresh.take() {
        let _ = handle.await;
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, state.settle(true)).await;
    if drained.is_err() {
        warn!(
            unsettled = state.in_flight.len(),
            "Gave up waiting for the broker; those messages will be consumed again."
        );
    }
    state.store_settled();
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last background commit is not an error.
        debug!(error = %error, "Final commit.");
    }
    if let Err(error) = state.sinks.flush(Duration::from_secs(10)) {
        warn!(error = %error, "Producer flush at shutdown.");
    }
    metrics.refresh(&engine.stats(), unix_now());
    info!(
        messages = state.summary.messages,
        alerts = state.summary.alerts,
        "Stopped."
    );
    Ok(state.summary)
}

/// The mutable state of the consume loop.
struct Loop<'a> {
    config: &'a Config,
    consumer: Arc<InputConsumer>,
    sinks: Sinks,
    metrics: Arc<Metrics>,
    in_flight: VecDeque<InFlight>,
    summary: RunSummary,
    /// Alert transitions from the engine not yet handed to the producer.
    alerts: Vec<Alert>,
    /// The highest settled offset per partition not yet handed to the
    /// consumer: offsets are stored in batches, not one call per message.
    settled: std::collections::BTreeMap<i32, i64>,
}

impl Loop<'_> {
    async fn handle(
        &mut self,
        engine: &mut Engine,
        record: &SourceRecord<'_>,
    ) -> Result<(), ServiceError> {
        let started = Instant::now();
        let ingested = engine.ingest(record.payload, record.partition, &mut self.alerts);
        self.metrics
            .processing
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .count_message(ingested.event_type, &ingested.outcome);
        self.summary.messages += 1;

        let mut pending = Vec::new();
        if let Outcome::DeadLetter(reason) = &ingested.outcome {
            debug!(
                partition = record.partition,
                offset = record.offset,
                reason = reason.code(),
                "Dead-lettering a message."
            );
            pending.push(self.sinks.send_dead_letter(record, reason).await?);
            self.summary.dead_letters += 1;
        }
        self.queue_alerts(&mut pending).await?;
        self.in_flight.push_back(InFlight {
            position: Some((record.partition, record.offset)),
            pending,
        });
        Ok(())
    }

    /// Sends the alerts the engine produced without an input message (idle time).
    async fn send_alerts(&mut self, position: Option<(i32, i64)>) -> Result<(), ServiceError> {
        if self.alerts.is_empty() {
            return Ok(());
        }
        let mut pending = Vec::new();
        self.queue_alerts(&mut pending).await?;
        self.in_flight.push_back(InFlight { position, pending });
        Ok(())
    }

    async fn queue_alerts(&mut self, pending: &mut Vec<Pending>) -> Result<(), ServiceError> {
        for alert in std::mem::take(&mut self.alerts) {
            if alert.status == Status::Firing {
                self.metrics
                    .alerts
                    .with_label_values(&[alert.kind.as_str(), alert.severity.as_str()])
                    .inc();
            }
            info!(alert_id = %alert.alert_id, status = alert.status.as_str(), severity = alert.severity.as_str(), "Alert transition.");
            pending.push(self.sinks.send_alert(&alert).await?);
            self.summary.alerts += 1;
        }
        Ok(())
    }

    /// Settles in-flight entries from the oldest: with `block`, waits for all;
    /// without, stops at the first entry still waiting.
    async fn settle(&mut self, block: bool) -> Result<(), ServiceError> {
        while self.settle_oldest_entry(block).await? {}
        Ok(())
    }

    /// Waits for the oldest entry (backpressure when the queue is full), then
    /// settles whatever else is already done.
    async fn settle_oldest(&mut self) -> Result<(), ServiceError> {
        self.settle_oldest_entry(true).await?;
        self.settle(false).await
    }

    /// Polls (or with `block`, awaits) the records of the oldest entry,
    /// resending failed ones; once all are acknowledged, stores its offset
    /// and returns `true`.
    async fn settle_oldest_entry(&mut self, block: bool) -> Result<bool, ServiceError> {
        let Some(front) = self.in_flight.front_mut() else {
            return Ok(false);
        };
        let mut i = 0;
        while i < front.pending.len() {
            let state = if block {
                front.pending[i].wait().await
            } else {
                front.pending[i].poll()
            };
            match state {
                DeliveryState::Delivered => {
                    front.pending.swap_remove(i);
                }
                DeliveryState::Waiting => i += 1,
                DeliveryState::Failed(error) => {
                    let failed = front.pending.swap_remove(i);
                    warn!(error = %error, sink = failed.sink.label(), "Delivery failed; sending again.");
                    self.metrics
                        .sink_errors
                        .with_label_values(&[failed.sink.label()])
                        .inc();
                    front.pending.push(self.sinks.resend(failed).await?);
                }
            }
        }
        if !front.pending.is_empty() {
            return Ok(false);
        }
        if let Some(entry) = self.in_flight.pop_front() {
            self.store(entry.position);
        }
        Ok(true)
    }

    fn store(&mut self, position: Option<(i32, i64)>) {
        let Some((partition, offset)) = position else {
            return;
        };
        self.summary.settled += 1;
        let entry = self.settled.entry(partition).or_insert(offset);
        *entry = (*entry).max(offset);
    }

    /// Stores the settled offsets with the consumer (committed in the
    /// background every second, and at shutdown).
    fn store_settled(&mut self) {
        if self.settled.is_empty() {
            return;
        }
        let mut list = rdkafka::TopicPartitionList::with_capacity(self.settled.len());
        for (partition, offset) in std::mem::take(&mut self.settled) {
            // The offset to resume from: the one after the last settled.
            if let Err(error) = list.add_partition_offset(
                &self.config.kafka.input_topic,
                partition,
                rdkafka::Offset::Offset(offset + 1),
            ) {
                debug!(partition, offset, error = %error, "Cannot list an offset.");
            }
        }
        if let Err(error) = self.consumer.store_offsets(&list) {
            // A partition was revoked meanwhile; its new owner re-reads it.
            debug!(error = %error, "Cannot store offsets.");
        }
    }
}

/// Hands a new assignment to the engine's watermark; new partitions start
/// their idle clock now.
fn assign(
    engine: &mut Engine,
    state: &mut Loop<'_>,
    last: &mut HashMap<i32, Instant>,
    partitions: &[i32],
    now: Instant,
) {
    last.retain(|p, _| partitions.contains(p));
    for partition in partitions {
        last.entry(*partition).or_insert(now);
    }
    engine.assign_partitions(partitions, &mut state.alerts);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
