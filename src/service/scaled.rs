//! The live service scaled out (`kafka.scale_out = true`, DESIGN §7): the
//! instances of one consumer group share the input topic's partitions and
//! the facts topic's, with no coordinator of their own.
//!
//! For each input partition it is given, an instance runs a
//! [`Source`] (the account stage of that partition); for each facts
//! partition, a [`Shard`] (the manager stage of the teams hashed to it).
//! Sources send shards their facts and books on the facts topic, and share
//! the company's order pace with every source on the pace topic, which
//! every instance reads whole. The barrier in [`crate::engine::exchange`]
//! makes the alerts those of one process.
//!
//! Each stage checkpoints to the state topic under its own prefix
//! (`source/<partition>/…`, `shard/<partition>/…`) with its own marker: the
//! offset of its partition and, for a source, of the pace topic. On every
//! rebalance the instance reads the state topic and restores the stages of
//! the partitions it now holds from their last checkpoints, and each
//! partition starts where its stage's state ends. What a stage sends again
//! after a restore is identical to what it sent before, and receivers
//! ignore repeats. The order of a message's life, the in-flight bound and
//! the checkpoint protocol are those of the single-instance service.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use crate::alert::Alert;
use crate::changelog::{Changelog, Marker};
use crate::config::Config;
use crate::engine::exchange::{Envelope, Exchange, Route};
use crate::engine::shard::Shard;
use crate::engine::source::Source;
use crate::engine::EngineStats;
use crate::kafka::sink::{Pending, Sinks, SourceRecord};
use crate::kafka::source::{self, InputConsumer, SourceContext};
use crate::kafka::state::{self as state_topic, StateError, StateRecord};
use crate::metrics::{Health, Metrics};

use super::delivery::Delivery;
use super::readiness::Readiness;
use super::{
    gate::{self, gate},
    leave, read_state, unix_now, Gate, Refetches, RunSummary, ServiceError, DRAIN_TIMEOUT,
};

/// The account stage of one input partition, as this instance runs it.
struct SourceUnit {
    source: Source,
    changelog: Changelog,
    /// The next input offset to apply (messages below it are in the state).
    next: Option<i64>,
    last_message: Instant,
}

/// The manager stage of one facts partition, as this instance runs it.
struct ShardUnit {
    shard: Shard,
    changelog: Changelog,
    /// The next facts offset to apply.
    next: Option<i64>,
}

fn source_prefix(partition: i32) -> String {
    format!("source/{partition}/")
}

fn shard_prefix(partition: i32) -> String {
    format!("shard/{partition}/")
}

/// Runs the scaled-out service until `shutdown` completes (the topics are
/// already ensured).
pub(super) async fn run(
    config: &Config,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, ServiceError> {
    let kafka = &config.kafka;
    tokio::pin!(shutdown);
    let (consumer, context) =
        source::subscribe_to(kafka, &[&kafka.input_topic, &kafka.facts_topic]).map_err(
            |source| ServiceError::Consumer {
                topic: kafka.input_topic.clone(),
                source,
            },
        )?;
    let consumer = Arc::new(consumer);
    let pace: StreamConsumer = crate::kafka::client_config(kafka)
        .set("group.id", format!("{}-pace", kafka.group_id))
        // Every evaluation waits for the pace shares of every source: a
        // fetch must not sit at the broker waiting for more.
        .set("fetch.wait.max.ms", "5")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|source| ServiceError::Consumer {
            topic: kafka.pace_topic.clone(),
            source,
        })?;
    let mut state = Scaled {
        config,
        consumer: consumer.clone(),
        context: context.clone(),
        pace,
        delivery: Delivery::new(Sinks::new(kafka)?, metrics.clone()),
        sources: BTreeMap::new(),
        shards: BTreeMap::new(),
        pace_next: 0,
        state_partitions: 1,
        dirty: false,
        last_checkpoint: Instant::now(),
        undecided: None,
        refetched: Refetches::default(),
    };
    info!(brokers = %kafka.brokers, input = %kafka.input_topic, facts = %kafka.facts_topic, group = %kafka.group_id, "Consuming, scaled out.");

    let idle_timeout = config.engine.idle_timeout;
    let mut idle_clock: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut readiness = Readiness::new(
        config,
        consumer.clone(),
        context.clone(),
        metrics.clone(),
        health,
    );

    loop {
        // The tick before the input and the pace: a backlog always has a
        // message ready, and a tick polled after them never ran (see the
        // one-instance loop in `service`).
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = context.rebalanced() => {
                if !state.follow_assignment(&mut shutdown).await? {
                    break;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if !state.follow_assignment(&mut shutdown).await? {
                    break;
                }
                // Partitions quiet for the idle timeout follow the others'
                // event time; all of this instance's quiet: its event time
                // follows the wall clock.
                let mut alerts = Vec::new();
                let mut all_idle = !state.sources.is_empty();
                for unit in state.sources.values_mut() {
                    if now.duration_since(unit.last_message) >= idle_timeout {
                        unit.source.set_idle(true, &mut alerts);
                    } else {
                        all_idle = false;
                    }
                }
                if all_idle {
                    let since = *idle_clock.get_or_insert(now);
                    let whole = now.duration_since(since).as_secs();
                    if whole > 0 {
                        for unit in state.sources.values_mut() {
                            unit.source.advance_idle(whole as i64, &mut alerts);
                        }
                        idle_clock = Some(since + Duration::from_secs(whole));
                    }
                }
                state.send_from_sources(None, alerts).await?;
                state.fetch_silent(now);
                if state.dirty && now.duration_since(state.last_checkpoint) >= config.engine.checkpoint_interval {
                    state.checkpoint().await?;
                }
                metrics.refresh(&state.stats(), unix_now());

                readiness.refresh(state.undecided.is_none()).await;
            }
            received = consumer.recv() => match received {
                Ok(message) => {
                    context.set_connected(true);
                    if !state.follow_assignment(&mut shutdown).await? {
                        break;
                    }
                    let record = SourceRecord::of(&message);
                    if record.topic == kafka.input_topic {
                        idle_clock = None;
                        state.handle_input(&record).await?;
                    } else {
                        state.handle_facts(&record).await?;
                    }
                }
                Err(error) => {
                    warn!(error = %error, "Consumer error; retrying.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            received = state.pace.recv() => match received {
                Ok(message) => {
                    let (offset, payload) = (message.offset(), message.payload().unwrap_or_default().to_vec());
                    drop(message);
                    state.handle_pace(offset, &payload).await?;
                }
                Err(error) => {
                    warn!(error = %error, "Pace consumer error; retrying.");
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
    match tokio::time::timeout(DRAIN_TIMEOUT, state.checkpoint()).await {
        Ok(result) => result?,
        Err(_) => warn!(
            unsettled = state.delivery.len(),
            "Gave up waiting for the broker; the input since the last checkpoint will be consumed again."
        ),
    }
    let stats = state.stats();
    Ok(leave(&consumer, state.delivery, &metrics, &stats))
}

/// The mutable state of the scaled-out loop.
struct Scaled<'a> {
    config: &'a Config,
    consumer: Arc<InputConsumer>,
    context: SourceContext,
    /// Reads the pace topic for every source of this instance.
    pace: StreamConsumer,
    delivery: Delivery,
    sources: BTreeMap<i32, SourceUnit>,
    shards: BTreeMap<i32, ShardUnit>,
    /// The next pace offset: every source of this instance has had the
    /// messages before it.
    pace_next: i64,
    state_partitions: i32,
    dirty: bool,
    last_checkpoint: Instant,
    /// An assignment not yet acted on (the partition counts could not be read).
    undecided: Option<Vec<(String, i32)>>,
    /// The input, facts and pace partitions being fetched again, and where
    /// each was started (see [`super::gate`]).
    refetched: Refetches,
}

impl Scaled<'_> {
    async fn handle_input(&mut self, record: &SourceRecord<'_>) -> Result<(), ServiceError> {
        let Some(unit) = self.sources.get_mut(&record.partition) else {
            return Ok(()); // fetched before a revocation
        };
        if !self
            .delivery
            .admit_input(&*self.consumer, &mut self.refetched, record, unit.next)
        {
            return Ok(());
        }
        unit.next = Some(record.offset + 1);
        unit.last_message = Instant::now();
        self.context
            .set_position(record.topic, record.partition, record.offset + 1);
        self.dirty = true;
        let started = Instant::now();
        let mut alerts = Vec::new();
        let ingested = unit.source.ingest(record.payload, &mut alerts);
        let outbox = unit.source.take_outbox();
        let mut pending = self
            .delivery
            .account_for(record, &ingested, started)
            .await?;
        self.send_exchange(outbox, &mut pending).await?;
        self.delivery.queue_alerts(alerts, &mut pending).await?;
        self.delivery
            .push(Some((record.partition, record.offset)), pending);
        Ok(())
    }

    async fn handle_facts(&mut self, record: &SourceRecord<'_>) -> Result<(), ServiceError> {
        let Some(unit) = self.shards.get_mut(&record.partition) else {
            return Ok(());
        };
        if !matches!(
            gate(&*self.consumer, &mut self.refetched, record, unit.next),
            Gate::Apply
        ) {
            return Ok(());
        }
        unit.next = Some(record.offset + 1);
        self.context
            .set_position(record.topic, record.partition, record.offset + 1);
        self.dirty = true;
        let mut alerts = Vec::new();
        match Exchange::decode(record.payload) {
            Ok(message) => unit.shard.receive(message, &mut alerts),
            Err(error) => warn!(
                partition = record.partition,
                offset = record.offset,
                error = %error,
                "A facts-topic record is no message of this feidan; skipped."
            ),
        }
        let outbox = unit.shard.take_outbox();
        self.send_entry(None, outbox, alerts).await
    }

    async fn handle_pace(&mut self, offset: i64, payload: &[u8]) -> Result<(), ServiceError> {
        // Every source of this instance must see every message from
        // `pace_next` on, in order: a message past it (fetched before the
        // latest seek) sends the reader back to it.
        let record = SourceRecord {
            topic: &self.config.kafka.pace_topic,
            partition: 0,
            offset,
            key: None,
            payload,
        };
        if !matches!(
            gate(
                &self.pace,
                &mut self.refetched,
                &record,
                Some(self.pace_next)
            ),
            Gate::Apply
        ) {
            return Ok(());
        }
        self.pace_next = offset + 1;
        self.dirty = true;
        match Exchange::decode(payload) {
            Ok(message) => {
                let mut alerts = Vec::new();
                for unit in self.sources.values_mut() {
                    unit.source.receive(&message, &mut alerts);
                }
                self.send_from_sources(None, alerts).await
            }
            Err(error) => {
                warn!(offset, error = %error, "A pace-topic record is no message of this feidan; skipped.");
                Ok(())
            }
        }
    }

    /// Sends `alerts` and whatever the sources have to send, as one entry.
    async fn send_from_sources(
        &mut self,
        position: Option<(i32, i64)>,
        alerts: Vec<Alert>,
    ) -> Result<(), ServiceError> {
        let outbox: Vec<Envelope> = self
            .sources
            .values_mut()
            .flat_map(|unit| unit.source.take_outbox())
            .collect();
        self.send_entry(position, outbox, alerts).await
    }

    /// Sends a stage's messages and alerts as one entry, delivered before a
    /// checkpoint can record `position` (none: no input message caused them).
    async fn send_entry(
        &mut self,
        position: Option<(i32, i64)>,
        outbox: Vec<Envelope>,
        alerts: Vec<Alert>,
    ) -> Result<(), ServiceError> {
        if outbox.is_empty() && alerts.is_empty() {
            return Ok(());
        }
        let mut pending = Vec::new();
        self.send_exchange(outbox, &mut pending).await?;
        self.delivery.queue_alerts(alerts, &mut pending).await?;
        self.delivery.push(position, pending);
        Ok(())
    }

    async fn send_exchange(
        &mut self,
        outbox: Vec<Envelope>,
        pending: &mut Vec<Pending>,
    ) -> Result<(), ServiceError> {
        let kafka = &self.config.kafka;
        for Envelope { to, message } in outbox {
            let sender = match &message {
                Exchange::Start { source, .. }
                | Exchange::Pace { source, .. }
                | Exchange::Part { source, .. }
                | Exchange::End { source, .. } => source.to_string(),
                Exchange::Standing { shard, .. } => format!("shard-{shard}"),
            };
            let (topic, partition) = match to {
                Route::Sources => (&kafka.pace_topic, 0),
                Route::Shard(shard) => (&kafka.facts_topic, shard as i32),
            };
            let key = sender.into_bytes();
            let sent = self
                .delivery
                .sinks
                .send_exchange(topic, partition, key, message.encode())
                .await?;
            pending.push(sent);
        }
        Ok(())
    }

    /// Fetches again, from further back, the partitions silent since they
    /// were started where their stages' state ends (see [`super::gate`]).
    fn fetch_silent(&mut self, now: Instant) {
        for (topic, partition, from) in self.refetched.overdue(now) {
            if topic == self.config.kafka.pace_topic {
                gate::fetch_silent(&self.pace, &topic, partition, from);
            } else {
                gate::fetch_silent(&*self.consumer, &topic, partition, from);
            }
        }
    }

    /// Acts on a new assignment, if the group made one; `false` when
    /// shutdown came first.
    async fn follow_assignment(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool, ServiceError> {
        if let Some(assigned) = self.context.take_assigned_topics() {
            self.undecided = Some(assigned);
        }
        let Some(assigned) = self.undecided.clone() else {
            return Ok(true);
        };
        let kafka = &self.config.kafka;
        let counts = (
            source::partition_count(&self.consumer, &kafka.input_topic),
            source::partition_count(&self.consumer, &kafka.facts_topic),
        );
        let (Some(sources), Some(shards)) = counts else {
            return Ok(true); // asked again at the next tick
        };
        self.undecided = None;
        self.reassign(&assigned, sources, shards as u32, shutdown)
            .await
    }

    /// Restores the stages of the partitions in `assigned` from the state
    /// topic and starts each partition where its stage's state ends. Every
    /// stage is restored, kept or not: under the eager protocol every
    /// partition was revoked first, and another instance may have held it
    /// meanwhile.
    async fn reassign(
        &mut self,
        assigned: &[(String, i32)],
        sources: usize,
        shards: u32,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool, ServiceError> {
        self.delivery.settle(true).await?;
        self.sources.clear();
        self.shards.clear();
        self.refetched.clear();
        if assigned.is_empty() {
            info!("No partitions assigned; waiting.");
            return Ok(true);
        }
        let Some((records, partitions)) =
            read_state(self.config, shutdown, state_topic::read_records).await?
        else {
            return Ok(false);
        };
        self.state_partitions = partitions;
        let kafka = &self.config.kafka;
        let mut by_unit =
            split_by_unit(records).map_err(|key| ServiceError::StateOfOneInstance {
                topic: kafka.state_topic.clone(),
                key,
            })?;
        let mut starts = Vec::new();
        let mut pace_from: Option<i64> = None;
        for (topic, partition) in assigned {
            let (prefix, is_input) = if *topic == kafka.input_topic {
                (source_prefix(*partition), true)
            } else {
                (shard_prefix(*partition), false)
            };
            let records = by_unit.remove(&prefix).unwrap_or_default();
            let restored = Changelog::restore(records).map_err(StateError::from)?;
            let marker = restored.marker.as_ref().filter(|m| m.input_topic == *topic);
            let next = marker.and_then(|m| m.offsets.get(partition).copied());
            if is_input {
                let source =
                    Source::restore(self.config, *partition, sources, shards, restored.entities)?;
                let pace = marker.and_then(|m| m.pace_offset).unwrap_or(0);
                pace_from = Some(pace_from.map_or(pace, |p| p.min(pace)));
                self.sources.insert(
                    *partition,
                    SourceUnit {
                        source,
                        changelog: restored.changelog,
                        next,
                        last_message: Instant::now(),
                    },
                );
            } else {
                let shard = Shard::restore(
                    self.config,
                    *partition as u32,
                    shards,
                    sources,
                    restored.entities,
                )?;
                self.shards.insert(
                    *partition,
                    ShardUnit {
                        shard,
                        changelog: restored.changelog,
                        next,
                    },
                );
            }
            starts.push((topic.clone(), *partition, next));
        }
        let now = Instant::now();
        for (topic, partition, next) in &starts {
            let start = next.map_or(Offset::Beginning, Offset::Offset);
            if let Some(next) = next {
                self.context.set_position(topic, *partition, *next);
                self.refetched.started(topic, *partition, *next, now);
            }
            if let Err(error) = self
                .consumer
                .seek(topic, *partition, start, Duration::from_secs(5))
            {
                warn!(topic, partition, error = %error, "Cannot start the partition where the state ends.");
            }
        }
        self.pace_next = pace_from.unwrap_or(0);
        let mut pace = TopicPartitionList::new();
        if !self.sources.is_empty() {
            pace.add_partition_offset(&kafka.pace_topic, 0, Offset::Offset(self.pace_next))
                .map_err(|source| ServiceError::Consumer {
                    topic: kafka.pace_topic.clone(),
                    source,
                })?;
            self.refetched
                .started(&kafka.pace_topic, 0, self.pace_next, now);
        }
        self.pace
            .assign(&pace)
            .map_err(|source| ServiceError::Consumer {
                topic: kafka.pace_topic.clone(),
                source,
            })?;
        for topic in [&kafka.input_topic, &kafka.facts_topic] {
            let partitions: Vec<i32> = starts
                .iter()
                .filter(|(t, ..)| t == topic)
                .map(|(_, p, _)| *p)
                .collect();
            source::resume(&self.consumer, topic, &partitions);
        }
        self.dirty = false;
        info!(
            sources = ?self.sources.keys().collect::<Vec<_>>(),
            shards = ?self.shards.keys().collect::<Vec<_>>(),
            "Restored the stages of the assigned partitions; consuming."
        );
        // A restored shard tells the other shards its books again for the
        // boundaries it has every source's parts for (a message lost in a
        // crash is sent; a repeat is ignored), and evaluates what it can.
        let mut alerts = Vec::new();
        let mut outbox = Vec::new();
        for unit in self.shards.values_mut() {
            unit.shard.progress(&mut alerts);
            outbox.extend(unit.shard.take_outbox());
        }
        self.send_entry(None, outbox, alerts).await?;
        Ok(true)
    }

    /// Checkpoints every stage of this instance (see the module
    /// documentation), then commits the offsets of their partitions.
    async fn checkpoint(&mut self) -> Result<(), ServiceError> {
        let started = Instant::now();
        self.delivery.settle(true).await?;
        let kafka = &self.config.kafka;
        let mut batch = CheckpointBatch::new();
        for (partition, unit) in &mut self.sources {
            let marker = Marker {
                epoch: 0,
                input_topic: kafka.input_topic.clone(),
                offsets: unit.next.map(|n| (*partition, n)).into_iter().collect(),
                pace_offset: Some(self.pace_next),
            };
            let records = unit.source.checkpoint_changes();
            let source = &unit.source;
            let plan = unit
                .changelog
                .plan_changes(records, marker.clone(), |key| source.holds(key));
            batch.add_stage(plan, &source_prefix(*partition), &marker);
        }
        for (partition, unit) in &mut self.shards {
            let marker = Marker {
                epoch: 0,
                input_topic: kafka.facts_topic.clone(),
                offsets: unit.next.map(|n| (*partition, n)).into_iter().collect(),
                pace_offset: None,
            };
            let records = unit.shard.checkpoint_changes();
            let shard = &unit.shard;
            let plan = unit
                .changelog
                .plan_changes(records, marker.clone(), |key| shard.holds(key));
            batch.add_stage(plan, &shard_prefix(*partition), &marker);
        }
        let CheckpointBatch {
            writes,
            markers,
            commit,
        } = batch;
        let records = (writes.len() + markers.len()) as u64;
        self.delivery
            .write_state(writes, self.state_partitions)
            .await?;
        self.delivery
            .write_state(markers, self.state_partitions)
            .await?;
        if commit.count() > 0 {
            if let Err(error) = self.consumer.commit(&commit, CommitMode::Async) {
                debug!(error = %error, "Cannot commit offsets.");
            }
        }
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        self.delivery.checkpointed(records, started);
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        let mut stats = EngineStats::default();
        for unit in self.sources.values() {
            stats.merge(unit.source.stats());
        }
        for unit in self.shards.values() {
            stats.merge(unit.shard.stats());
        }
        stats
    }
}

/// The state topic's records by stage prefix (`source/3/`, `shard/0/`),
/// each with the prefix taken off its key; the key of a live record of no
/// stage (state a single instance wrote) as the error.
fn split_by_unit(records: Vec<StateRecord>) -> Result<HashMap<String, Vec<StateRecord>>, String> {
    let mut by_unit: HashMap<String, Vec<StateRecord>> = HashMap::new();
    for (key, value) in records {
        let mut parts = key.splitn(3, '/');
        if let (Some(kind), Some(partition), Some(rest)) =
            (parts.next(), parts.next(), parts.next())
        {
            if matches!(kind, "source" | "shard") && partition.parse::<i32>().is_ok() {
                let prefix = format!("{kind}/{partition}/");
                by_unit
                    .entry(prefix)
                    .or_default()
                    .push((rest.to_owned(), value));
                continue;
            }
        }
        if value.is_some() {
            return Err(key);
        }
    }
    Ok(by_unit)
}

/// One checkpoint of every stage: the records to write, the stages'
/// markers (written after all records), and the offsets to commit.
struct CheckpointBatch {
    writes: Vec<crate::changelog::Write>,
    markers: Vec<crate::changelog::Write>,
    commit: TopicPartitionList,
}

impl CheckpointBatch {
    fn new() -> CheckpointBatch {
        CheckpointBatch {
            writes: Vec::new(),
            markers: Vec::new(),
            commit: TopicPartitionList::new(),
        }
    }

    /// Adds one stage's planned writes under its key `prefix` (the plan's
    /// last write is its marker), and the next offset its `marker` names.
    fn add_stage(&mut self, mut plan: Vec<crate::changelog::Write>, prefix: &str, marker: &Marker) {
        for write in &mut plan {
            write.key = format!("{prefix}{}", write.key);
        }
        if let Some(marker) = plan.pop() {
            self.markers.push(marker);
        }
        self.writes.extend(plan);
        for (partition, next) in &marker.offsets {
            let _ = self.commit.add_partition_offset(
                &marker.input_topic,
                *partition,
                Offset::Offset(*next),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_records_go_to_their_stages_and_a_single_instances_state_is_named() {
        let live = |key: &str| (key.to_owned(), Some(vec![1]));
        let records = vec![
            live("source/0/account/a#0"),
            live("shard/1/checkpoint"),
            live("source/0/checkpoint"),
            ("account/b#1".to_owned(), None),
        ];
        let by_unit = split_by_unit(records).unwrap();
        let keys = |prefix: &str| -> Vec<&str> {
            by_unit[prefix].iter().map(|(k, _)| k.as_str()).collect()
        };
        assert_eq!(keys("source/0/"), ["account/a#0", "checkpoint"]);
        assert_eq!(keys("shard/1/"), ["checkpoint"]);
        assert_eq!(by_unit.len(), 2);

        let single = vec![live("source/0/checkpoint"), live("checkpoint")];
        assert_eq!(split_by_unit(single).unwrap_err(), "checkpoint");
    }
}
