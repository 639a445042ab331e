//! What the service has handed the producer and not yet seen acknowledged:
//! each input message's alerts and dead letter (or a checkpoint's state
//! records, or a scaled-out stage's messages), in order, resent when a
//! delivery fails. A message counts as settled once everything it caused is
//! acknowledged; offsets are committed only for settled messages (DESIGN §6).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::alert::{Alert, Status};
use crate::changelog::Write;
use crate::engine::{Ingested, Outcome};
use crate::kafka::sink::{DeliveryState, Pending, Sinks, SourceRecord};
use crate::metrics::Metrics;

use super::{RunSummary, ServiceError};

/// One input message's effects (or another batch of records), waiting for
/// the broker.
pub(super) struct InFlight {
    /// Input partition and offset; `None` for records no message caused
    /// (alerts of idle time, checkpoints).
    pub position: Option<(i32, i64)>,
    pub pending: Vec<Pending>,
}

pub(super) struct Delivery {
    pub sinks: Sinks,
    metrics: Arc<Metrics>,
    in_flight: VecDeque<InFlight>,
    /// Per input partition, the next offset not yet counted in the metrics
    /// by this process.
    counted: HashMap<i32, i64>,
    pub summary: RunSummary,
}

impl Delivery {
    pub fn new(sinks: Sinks, metrics: Arc<Metrics>) -> Delivery {
        Delivery {
            sinks,
            metrics,
            in_flight: VecDeque::new(),
            counted: HashMap::new(),
            summary: RunSummary::default(),
        }
    }

    /// Entries not yet settled.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn push(&mut self, position: Option<(i32, i64)>, pending: Vec<Pending>) {
        self.in_flight.push_back(InFlight { position, pending });
    }

    /// Accounts for one input message the engine has taken in (DESIGN §6):
    /// its processing time since `started`; its outcome, counted once per
    /// offset by this process (input applied again after the state was
    /// read afresh is not counted twice); its dead letter handed to the
    /// producer. Returns the deliveries begun.
    pub async fn account_for(
        &mut self,
        record: &SourceRecord<'_>,
        ingested: &Ingested,
        started: Instant,
    ) -> Result<Vec<Pending>, ServiceError> {
        self.metrics
            .processing
            .observe(started.elapsed().as_secs_f64());
        let counted = self.counted.entry(record.partition).or_insert(0);
        if record.offset >= *counted {
            *counted = record.offset + 1;
            self.metrics
                .count_message(ingested.event_type, &ingested.outcome);
            self.summary.messages += 1;
        }
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
        Ok(pending)
    }

    /// Whether an input message is to be applied (see [`super::gate`]),
    /// counting those the state already holds and those fetched again.
    pub fn admit_input<X: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &impl rdkafka::consumer::Consumer<X>,
        refetched: &mut super::Refetches,
        record: &SourceRecord<'_>,
        next: Option<i64>,
    ) -> bool {
        match super::gate(consumer, refetched, record, next) {
            super::Gate::Apply => true,
            super::Gate::Replayed => {
                self.metrics.replay_skipped.inc();
                self.summary.replay_skipped += 1;
                false
            }
            super::Gate::Refetched => {
                self.metrics.input_refetches.inc();
                false
            }
        }
    }

    /// Hands `alerts` to the producer, adding their deliveries to `pending`.
    pub async fn queue_alerts(
        &mut self,
        alerts: Vec<Alert>,
        pending: &mut Vec<Pending>,
    ) -> Result<(), ServiceError> {
        for alert in alerts {
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

    /// Sends alerts no input message caused (idle time, messages between
    /// stages) as an entry of their own.
    pub async fn send_alerts(&mut self, alerts: Vec<Alert>) -> Result<(), ServiceError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut pending = Vec::new();
        self.queue_alerts(alerts, &mut pending).await?;
        self.push(None, pending);
        Ok(())
    }

    /// Writes a checkpoint's records to the state topic: all but the last
    /// (its marker) acknowledged first, then the marker. Returns how many.
    pub async fn write_checkpoint(
        &mut self,
        mut writes: Vec<Write>,
        state_partitions: i32,
    ) -> Result<u64, ServiceError> {
        let marker = writes.pop();
        let records = writes.len() as u64 + u64::from(marker.is_some());
        self.write_state(writes, state_partitions).await?;
        self.write_state(marker.into_iter().collect(), state_partitions)
            .await?;
        Ok(records)
    }

    /// Counts a checkpoint of `records` records begun at `started` as complete.
    pub fn checkpointed(&mut self, records: u64, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        self.summary.checkpoints += 1;
        self.metrics.checkpoints.inc();
        self.metrics.checkpoint_records.inc_by(records);
        self.metrics.checkpoint_seconds.observe(seconds);
        self.metrics.checkpoint_timestamp.set(super::unix_now());
        debug!(records, seconds, "Checkpoint complete.");
    }

    /// Sends state records and waits until everything sent is acknowledged.
    pub async fn write_state(
        &mut self,
        writes: Vec<Write>,
        state_partitions: i32,
    ) -> Result<(), ServiceError> {
        let mut pending = Vec::with_capacity(writes.len());
        for write in writes {
            pending.push(self.sinks.send_state(write, state_partitions).await?);
        }
        self.push(None, pending);
        self.settle(true).await
    }

    /// Settles in-flight entries from the oldest: with `block`, waits for all;
    /// without, stops at the first entry still waiting.
    pub async fn settle(&mut self, block: bool) -> Result<(), ServiceError> {
        while self.settle_oldest_entry(block).await? {}
        Ok(())
    }

    /// Waits for the oldest entry (backpressure when the queue is full), then
    /// settles whatever else is already done.
    pub async fn settle_oldest(&mut self) -> Result<(), ServiceError> {
        self.settle_oldest_entry(true).await?;
        self.settle(false).await
    }

    /// Polls (or with `block`, awaits) the records of the oldest entry,
    /// resending failed ones; once all are acknowledged, returns `true`.
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
            if entry.position.is_some() {
                self.summary.settled += 1;
            }
        }
        Ok(true)
    }
}
