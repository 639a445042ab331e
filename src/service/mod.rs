//! The live service (`feidan run`): input consumer → state restore → engine
//! → sinks, with checkpoints, idle-time watermark advance, metrics and
//! readiness.
//!
//! One writer (with `kafka.scale_out` off; scaled out, see `scaled`): an
//! instance applies input, moves event time and writes state only while the
//! group gives it every input partition (the *owner*). Each assignment arrives paused. Holding
//! fewer partitions, because another instance shares the group, it stands
//! by: nothing consumed, nothing written, not ready. On becoming the owner
//! (at start, and after standing by) it reads the state topic whole, since
//! another instance may have written it meanwhile. It restores the engine
//! from the last complete checkpoint ([`crate::changelog`]) and starts each
//! partition at that checkpoint's offset. Input below those offsets,
//! consumed again after a crash, is skipped.
//!
//! Order of a message's life: consumed → applied by the engine → its alerts
//! and dead letter handed to the producer → acknowledged by the broker. The
//! in-flight queue is bounded (`kafka.max_in_flight`): when full, the loop
//! waits for the oldest entry (backpressure) instead of consuming more.
//!
//! Every `engine.checkpoint_interval`: wait until every alert and dead
//! letter so far is acknowledged → write the changed state records → wait →
//! write the marker with the input offsets → wait → commit those offsets.
//! So committed offsets always correspond to durable state and durable
//! alerts; after a crash the input from the last checkpoint is replayed onto
//! the state of that checkpoint, and re-emitted transitions are identical.
//!
//! Shutdown (SIGINT/SIGTERM or the caller's future): not ready → stop
//! consuming → drain in-flight sends → checkpoint (the owner only) → commit
//! → flush.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, warn};

use crate::alert::Alert;
use crate::changelog::{Changelog, Marker};
use crate::config::Config;
use crate::engine::checkpoint::RestoreError;
use crate::engine::Engine;
use crate::kafka::sink::{SinkError, Sinks, SourceRecord};
use crate::kafka::source::{self, InputConsumer, SourceContext};
use crate::kafka::state::{self as state_topic, StateError};
use crate::metrics::{Health, Metrics};

mod delivery;
mod gate;
mod readiness;
mod scaled;

use delivery::Delivery;
use gate::{gate, Gate, Refetches};
use readiness::Readiness;

/// How long shutdown waits for unacknowledged sends before giving up on them
/// (their offsets are then not committed: they will be consumed again).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot set up the input consumer for topic `{topic}`: {source}")]
    Consumer { topic: String, source: KafkaError },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Topics(#[from] crate::kafka::topics::TopicError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot restore the engine from the state topic: {0}")]
    Restore(#[from] RestoreError),
    #[error("the state topic `{topic}` holds the state of a single instance (record `{key}`), not of scaled-out stages: scale out with a fresh kafka.state_topic")]
    StateOfOneInstance { topic: String, key: String },
}

/// What one run did, for the caller's closing log line.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub messages: u64,
    pub alerts: u64,
    pub dead_letters: u64,
    /// Messages whose effects were all acknowledged.
    pub settled: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Messages skipped after a restart: the restored state already held them.
    pub replay_skipped: u64,
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
    if kafka.scale_out {
        return scaled::run(config, metrics, health, shutdown).await;
    }
    tokio::pin!(shutdown);
    let (consumer, context) =
        source::subscribe(kafka).map_err(|source| ServiceError::Consumer {
            topic: kafka.input_topic.clone(),
            source,
        })?;
    let consumer = Arc::new(consumer);
    let delivery = Delivery::new(Sinks::new(kafka)?, metrics.clone());
    // The state is read from the state topic once this instance holds every
    // input partition (see `Loop::reassign`); until then it stands by.
    let mut engine = Engine::new(config);
    let mut state = Loop {
        config,
        consumer: consumer.clone(),
        context: context.clone(),
        delivery,
        metrics: metrics.clone(),
        health: health.clone(),
        alerts: Vec::new(),
        changelog: Changelog::default(),
        state_partitions: 1,
        consumed: BTreeMap::new(),
        refetched: Refetches::default(),
        dirty: false,
        last_checkpoint: Instant::now(),
        assigned: Vec::new(),
        undecided: false,
        owner: false,
    };
    info!(brokers = %kafka.brokers, topic = %kafka.input_topic, group = %kafka.group_id, "Consuming.");

    let idle_timeout = config.engine.idle_timeout;
    let mut last_message = Instant::now();
    let mut last_by_partition: HashMap<i32, Instant> = HashMap::new();
    let mut idle_clock: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut readiness = Readiness::new(
        config,
        consumer.clone(),
        context.clone(),
        metrics.clone(),
        health.clone(),
    );

    loop {
        // The tick before the input: while a backlog is consumed a message
        // is always ready, and a tick polled after it never ran, so a
        // catch-up of hours took no checkpoint (a crash then replayed it
        // all) and left the metrics as they were when it began.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = context.rebalanced() => {
                if !state.follow_assignment(&mut engine, &mut last_by_partition, &mut shutdown).await? {
                    break;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let watermark = engine.watermark();
                if !state.follow_assignment(&mut engine, &mut last_by_partition, &mut shutdown).await? {
                    break;
                }
                if !state.owner {
                    // Neither event time nor state moves while standing by.
                    state.delivery.settle(false).await?;
                    continue;
                }
                for (topic, partition, from) in state.refetched.overdue(now) {
                    gate::fetch_silent(&*consumer, &topic, partition, from);
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
                state.delivery.send_alerts(std::mem::take(&mut state.alerts)).await?;
                state.dirty |= engine.watermark() != watermark;
                if state.dirty && now.duration_since(state.last_checkpoint) >= config.engine.checkpoint_interval {
                    state.checkpoint(&mut engine).await?;
                }
                metrics.refresh(&engine.stats(), unix_now());

                readiness.refresh(state.owner).await;
            }
            received = consumer.recv() => match received {
                Ok(message) => {
                    context.set_connected(true);
                    let now = Instant::now();
                    if !state.follow_assignment(&mut engine, &mut last_by_partition, &mut shutdown).await? {
                        break;
                    }
                    if !state.owner {
                        // Fetched before the pause; consumed again once this
                        // instance owns the input, from where the state ends.
                        continue;
                    }
                    last_message = now;
                    idle_clock = None;
                    last_by_partition.insert(message.partition(), now);
                    let record = SourceRecord::of(&message);
                    state.handle(&mut engine, &record).await?;
                    if let Some(next) = state.consumed.get(&record.partition) {
                        context.set_position(&kafka.input_topic, record.partition, *next);
                    }
                    if let Some(appended_ms) = message.timestamp().to_millis() {
                        let delay = unix_now() - appended_ms as f64 / 1000.0;
                        metrics.input_delay.observe(delay.max(0.0));
                    }
                }
                Err(error) => {
                    warn!(error = %error, "Consumer error; retrying.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
        state.delivery.settle(false).await?;
        while state.delivery.len() >= kafka.max_in_flight {
            state.delivery.settle_oldest().await?;
        }
    }

    info!("Shutting down: draining in-flight sends.");
    readiness.stop().await;
    // Only the owner writes state: standing by, another instance may.
    if state.owner {
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, state.checkpoint(&mut engine)).await;
        match drained {
            Ok(result) => result?,
            Err(_) => warn!(
                unsettled = state.delivery.len(),
                "Gave up waiting for the broker; the input since the last checkpoint will be consumed again."
            ),
        }
    } else if tokio::time::timeout(DRAIN_TIMEOUT, state.delivery.settle(true))
        .await
        .is_err()
    {
        warn!(
            unsettled = state.delivery.len(),
            "Gave up waiting for the broker."
        );
    }
    Ok(leave(&consumer, state.delivery, &metrics, &engine.stats()))
}

/// The end of a run, once the last checkpoint is written: leaves the group
/// now, so that a restarted instance gets the partitions at once instead of
/// after the session timeout, flushes the producer, and reports.
fn leave(
    consumer: &InputConsumer,
    delivery: Delivery,
    metrics: &Metrics,
    stats: &crate::engine::EngineStats,
) -> RunSummary {
    consumer.unsubscribe();
    if let Err(error) = delivery.sinks.flush(Duration::from_secs(10)) {
        warn!(error = %error, "Producer flush at shutdown.");
    }
    metrics.refresh(stats, unix_now());
    info!(
        messages = delivery.summary.messages,
        alerts = delivery.summary.alerts,
        "Stopped."
    );
    delivery.summary
}

/// The mutable state of the consume loop.
struct Loop<'a> {
    config: &'a Config,
    consumer: Arc<InputConsumer>,
    context: SourceContext,
    delivery: Delivery,
    metrics: Arc<Metrics>,
    health: Health,
    /// Alert transitions from the engine not yet handed to the producer.
    alerts: Vec<Alert>,
    changelog: Changelog,
    state_partitions: i32,
    /// Per input partition, the next offset after the last message applied
    /// (from the restored checkpoint at start): messages below it are
    /// already in the state.
    consumed: BTreeMap<i32, i64>,
    /// The input partitions being fetched again, and where each was started
    /// (see [`gate`]).
    refetched: Refetches,
    /// Whether the state changed since the last checkpoint.
    dirty: bool,
    last_checkpoint: Instant,
    /// The input partitions the group gave this instance.
    assigned: Vec<i32>,
    /// Whether the last assignment is still to be acted on (the input
    /// topic's partition count could not be read).
    undecided: bool,
    /// Whether this instance holds every input partition: only then does it
    /// apply input, move event time and write state.
    owner: bool,
}

impl Loop<'_> {
    async fn handle(
        &mut self,
        engine: &mut Engine,
        record: &SourceRecord<'_>,
    ) -> Result<(), ServiceError> {
        let next = self.consumed.get(&record.partition).copied();
        if !self
            .delivery
            .admit_input(&*self.consumer, &mut self.refetched, record, next)
        {
            return Ok(());
        }
        self.consumed.insert(record.partition, record.offset + 1);
        self.dirty = true;
        let started = Instant::now();
        let ingested = engine.ingest(record.payload, record.partition, &mut self.alerts);
        let mut pending = self
            .delivery
            .account_for(record, &ingested, started)
            .await?;
        let alerts = std::mem::take(&mut self.alerts);
        self.delivery.queue_alerts(alerts, &mut pending).await?;
        self.delivery
            .push(Some((record.partition, record.offset)), pending);
        Ok(())
    }

    /// Takes a new assignment of input partitions, if the group made one,
    /// and acts on it (again, if it could not be decided before); `false`
    /// when shutdown came first.
    async fn follow_assignment(
        &mut self,
        engine: &mut Engine,
        last_by_partition: &mut HashMap<i32, Instant>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool, ServiceError> {
        if let Some(partitions) = self.context.take_assignment() {
            self.assigned = partitions;
            self.undecided = true;
        }
        if !self.undecided {
            return Ok(true);
        }
        self.reassign(engine, last_by_partition, shutdown).await
    }

    /// Acts on the input partitions the group gave this instance; `false`
    /// when shutdown came first.
    ///
    /// With `kafka.scale_out` off (README): an instance applies input,
    /// moves event time and writes state only while it holds every
    /// partition of the input topic. Holding fewer (another instance shares
    /// the group), it stands by: partitions paused, nothing written, not
    /// ready. On becoming the owner it reads the state topic afresh, since
    /// another instance may have written it meanwhile, and starts each
    /// partition where that state ends.
    async fn reassign(
        &mut self,
        engine: &mut Engine,
        last_by_partition: &mut HashMap<i32, Instant>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool, ServiceError> {
        let topic = self.config.kafka.input_topic.clone();
        let Some(total) = source::partition_count(&self.consumer, &topic) else {
            return Ok(true); // asked again at the next tick
        };
        self.undecided = false;
        let holds_all =
            !self.assigned.is_empty() && (0..total as i32).all(|p| self.assigned.contains(&p));
        if !holds_all {
            if self.assigned.is_empty() {
                info!("No input partitions assigned; standing by.");
            } else {
                error!(
                    group = %self.config.kafka.group_id,
                    assigned = ?self.assigned,
                    partitions = total,
                    "Another feidan instance shares this consumer group, and kafka.scale_out is off: this one stands by (consumes nothing, writes no state, not ready) until it holds every input partition. Run one instance per group, or scale out (kafka.scale_out = true, with a fresh state topic)."
                );
            }
            source::pause(&self.consumer, &topic, &self.assigned);
            self.owner = false;
            self.health.set_ready(false);
            self.metrics.ready.set(0);
            self.metrics.group_standby.set(1);
            return Ok(true);
        }
        if self.owner {
            // Still the owner (a rebalance gave back the same partitions,
            // each starting where this instance's state ends).
            self.start(engine, last_by_partition);
            return Ok(true);
        }
        self.delivery.settle(true).await?;
        let Some(restored) = restore(self.config, shutdown).await? else {
            return Ok(false);
        };
        *engine = restored.engine;
        self.changelog = restored.changelog;
        self.state_partitions = restored.partitions;
        self.consumed = restored.offsets;
        self.refetched.clear();
        self.alerts.clear();
        self.dirty = false;
        let starts = source::start_offsets(&self.consumer, &topic, &self.assigned, &self.consumed);
        for (partition, start) in &starts {
            if let rdkafka::Offset::Offset(next) = start {
                self.context.set_position(&topic, *partition, *next);
            }
            if let Err(error) =
                self.consumer
                    .seek(&topic, *partition, *start, Duration::from_secs(5))
            {
                warn!(partition, error = %error, "Cannot start the partition where the state ends.");
            }
        }
        self.start(engine, last_by_partition);
        self.owner = true;
        self.metrics.group_standby.set(0);
        info!(
            partitions = total,
            "This instance holds every input partition; consuming."
        );
        Ok(true)
    }

    /// Hands the assigned partitions to the engine's watermark (each starts
    /// its idle clock now) and resumes fetching them, each watched until it
    /// shows where the state ends (see [`gate`]).
    fn start(&mut self, engine: &mut Engine, last_by_partition: &mut HashMap<i32, Instant>) {
        let now = Instant::now();
        last_by_partition.retain(|p, _| self.assigned.contains(p));
        let topic = &self.config.kafka.input_topic;
        for partition in &self.assigned {
            last_by_partition.entry(*partition).or_insert(now);
            if let Some(next) = self.consumed.get(partition) {
                self.refetched.started(topic, *partition, *next, now);
            }
        }
        engine.assign_partitions(&self.assigned, &mut self.alerts);
        source::resume(&self.consumer, topic, &self.assigned);
    }

    /// Takes a checkpoint (see the module documentation): everything sent so
    /// far acknowledged, then the changed state, then the marker, then the
    /// input offsets committed.
    async fn checkpoint(&mut self, engine: &mut Engine) -> Result<(), ServiceError> {
        let started = Instant::now();
        self.delivery.settle(true).await?;
        let marker = Marker {
            epoch: 0,
            input_topic: self.config.kafka.input_topic.clone(),
            offsets: self.consumed.clone(),
            pace_offset: None,
        };
        let records = engine.checkpoint_changes();
        let writes = self
            .changelog
            .plan_changes(records, marker, |key| engine.holds(key));
        let records = self
            .delivery
            .write_checkpoint(writes, self.state_partitions)
            .await?;
        self.commit();
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        self.delivery.checkpointed(records, started);
        Ok(())
    }

    /// Commits the checkpointed input offsets. A failure is harmless: the
    /// marker holds the same offsets, and a restart skips what it already has.
    fn commit(&self) {
        let mut list = rdkafka::TopicPartitionList::with_capacity(self.consumed.len());
        for (partition, offset) in &self.consumed {
            if let Err(error) = list.add_partition_offset(
                &self.config.kafka.input_topic,
                *partition,
                rdkafka::Offset::Offset(*offset),
            ) {
                debug!(partition, offset, error = %error, "Cannot list an offset.");
            }
        }
        if list.count() > 0 {
            if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
                debug!(error = %error, "Cannot commit offsets.");
            }
        }
    }
}

/// The engine and changelog restored from the state topic.
struct Restored {
    engine: Engine,
    changelog: Changelog,
    partitions: i32,
    /// The input offsets of the restored checkpoint.
    offsets: BTreeMap<i32, i64>,
}

/// Reads the state topic and restores the engine, retrying while the broker
/// is away; `None` when `shutdown` comes first.
async fn restore(
    config: &Config,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Restored>, ServiceError> {
    let started = Instant::now();
    let Some(read) = read_state(config, shutdown, state_topic::read).await? else {
        return Ok(None);
    };
    let restored = read.restored;
    let offsets = restored
        .marker
        .as_ref()
        .filter(|m| m.input_topic == config.kafka.input_topic)
        .map(|m| m.offsets.clone())
        .unwrap_or_default();
    let engine = Engine::restore(config, restored.entities)?;
    let stats = engine.stats();
    info!(
        accounts = stats.accounts,
        managers = stats.managers,
        alerts = stats.pending_or_firing,
        records = read.records,
        seconds = started.elapsed().as_secs_f64(),
        "State restored."
    );
    Ok(Some(Restored {
        engine,
        changelog: restored.changelog,
        partitions: read.partitions,
        offsets,
    }))
}

/// Reads the state topic with `read` (blocking, so on a thread of its
/// own), retrying while the broker is away; `None` when `shutdown` comes
/// first.
async fn read_state<T: Send + 'static>(
    config: &Config,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    read: fn(&crate::config::KafkaConfig, Duration) -> Result<T, StateError>,
) -> Result<Option<T>, ServiceError> {
    loop {
        let kafka = config.kafka.clone();
        let attempt = tokio::task::spawn_blocking(move || read(&kafka, Duration::from_secs(10)));
        let result = tokio::select! {
            () = shutdown.as_mut() => return Ok(None),
            result = attempt => result,
        };
        match result {
            Ok(Ok(read)) => return Ok(Some(read)),
            Ok(Err(error)) if error.is_transient() => {
                warn!(error = %error, "Cannot read the state topic yet; retrying.");
            }
            Ok(Err(error)) => return Err(error.into()),
            Err(error) => warn!(error = %error, "The state reader failed; retrying."),
        }
        tokio::select! {
            () = shutdown.as_mut() => return Ok(None),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
