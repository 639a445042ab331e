//! Readiness (`/readyz`, `feidan_ready`) and the consumer lag gauge: every
//! few seconds the lag of the assigned input partitions is read off the
//! async threads; the instance is ready while the cluster is reachable,
//! the lag is at most `metrics.ready_max_lag`, and the loop says it can
//! work (it owns the input, or its assignment is acted on). A rebalance
//! clears the gauge at once, and a read begun before it is dropped: the
//! gauge shows the partitions held now (from the next read on), never
//! those of an earlier assignment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaResult;
use tracing::{debug, warn};

use crate::config::Config;
use crate::kafka::source::{self, InputConsumer, SourceContext};
use crate::metrics::{Health, Metrics};

/// How often the consumer lag and readiness are refreshed.
pub(super) const LAG_EVERY: Duration = Duration::from_secs(5);

type LagTask = tokio::task::JoinHandle<KafkaResult<Vec<(i32, i64)>>>;

pub(super) struct Readiness {
    consumer: Arc<InputConsumer>,
    context: SourceContext,
    metrics: Arc<Metrics>,
    health: Health,
    topic: String,
    ready_max_lag: i64,
    /// The lag read under way, and the rebalance count when it began.
    task: Option<(u64, LagTask)>,
    last_refresh: Instant,
    /// The rebalance count the gauge was last cleared at.
    rebalances: u64,
}

impl Readiness {
    pub fn new(
        config: &Config,
        consumer: Arc<InputConsumer>,
        context: SourceContext,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Readiness {
        Readiness {
            consumer,
            context,
            metrics,
            health,
            topic: config.kafka.input_topic.clone(),
            ready_max_lag: config.metrics.ready_max_lag,
            task: None,
            last_refresh: Instant::now() - LAG_EVERY,
            rebalances: 0,
        }
    }

    /// At each tick: takes the lag read since the last tick, if any, sets
    /// readiness from it (and from `working`), and starts the next read
    /// when one is due.
    pub async fn refresh(&mut self, working: bool) {
        let rebalances = self.context.rebalances();
        if rebalances != self.rebalances {
            self.metrics
                .consumer_rebalances
                .inc_by(rebalances.saturating_sub(self.rebalances));
            self.rebalances = rebalances;
            self.metrics.consumer_lag.reset();
        }
        if let Some((began, task)) = self.task.take_if(|(_, task)| task.is_finished()) {
            let read = task.await;
            // A read begun before the latest rebalance is of partitions
            // that may no longer be this instance's.
            if began == rebalances {
                self.take_lag_read(read, working);
            }
        }
        if self.task.is_none() && self.last_refresh.elapsed() >= LAG_EVERY {
            self.last_refresh = Instant::now();
            let consumer = self.consumer.clone();
            let topic = self.topic.clone();
            self.task = Some((
                rebalances,
                tokio::task::spawn_blocking(move || {
                    source::lag(&consumer, &topic, Duration::from_secs(2))
                }),
            ));
        }
    }

    /// Sets the lag gauge and readiness from a finished lag read.
    fn take_lag_read(
        &mut self,
        read: Result<KafkaResult<Vec<(i32, i64)>>, tokio::task::JoinError>,
        working: bool,
    ) {
        let ready = match read {
            Ok(Ok(lags)) => {
                self.context.set_connected(true);
                self.metrics.consumer_lag.reset();
                for (partition, lag) in &lags {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[&partition.to_string()])
                        .set(*lag);
                }
                let total: i64 = lags.iter().map(|(_, lag)| lag).sum();
                !lags.is_empty() && total <= self.ready_max_lag
            }
            Ok(Err(error)) => {
                debug!(error = %error, "Cannot read the consumer lag.");
                false
            }
            Err(error) => {
                warn!(error = %error, "The lag task failed.");
                false
            }
        };
        let ready = ready && self.context.connected() && working;
        self.set_ready(ready);
    }

    pub fn set_ready(&self, ready: bool) {
        self.health.set_ready(ready);
        self.metrics.ready.set(i64::from(ready));
    }

    /// Not ready, and the lag task finished: it holds the consumer, which
    /// must close while the broker is surely still there to hear it leave
    /// the group.
    pub async fn stop(&mut self) {
        self.set_ready(false);
        if let Some((_, task)) = self.task.take() {
            let _ = task.await;
        }
    }
}
