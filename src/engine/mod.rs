//! The engine: decode → account stage → facts → manager stage → alert
//! lifecycle (DESIGN §1). Pure: bytes, partitions and elapsed time come in as
//! arguments, alert transitions come out as values. No I/O, no clock, no
//! globals; `run`, `demo`, `backtest` and the tests all drive this type.

pub mod account;
pub mod checkpoint;
pub mod dedup;
pub mod eviction;
pub mod fact;
pub mod lifecycle;
pub mod manager;
pub mod watermark;
pub mod window;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::alert::Alert;
use crate::config::Config;
use crate::event::{decode, DecodeError, DecodeLimits, Event};
use crate::time::Timestamp;

use account::AccountStage;
use dedup::Dedup;
use lifecycle::{ActiveAlert, Lifecycle};
use manager::{ManagerGauges, ManagerStage};
use watermark::WatermarkTracker;

/// The engine's hash maps: aHash, seeded per process (ids come from the
/// input, so no hash flooding by a crafted id), and several times cheaper
/// than the standard SipHash on short ids, which was a tenth of the time.
/// Nothing depends on iteration order: each evaluation sorts its output.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// What became of one input message (DESIGN §6: every message ends as one).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Applied on time.
    Processed,
    /// An event id already applied; not counted again.
    Duplicate,
    /// Older than the watermark but within `late_horizon`: applied, counted late.
    Late,
    /// Not applied; goes to the dead-letter topic with this reason.
    DeadLetter(DeadLetter),
}

impl Outcome {
    /// The `outcome` label of `feidan_events_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Duplicate => "duplicate",
            Outcome::Late => "late",
            Outcome::DeadLetter(_) => "dead_letter",
        }
    }

    pub const LABELS: [&'static str; 4] = ["processed", "duplicate", "late", "dead_letter"];
}

/// Why a message was dead-lettered.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DeadLetter {
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    #[error(
        "event time {occurred_at} is more than the late horizon behind the watermark {watermark}"
    )]
    TooLate {
        occurred_at: Timestamp,
        watermark: Timestamp,
    },
}

impl DeadLetter {
    /// The `reason` label: a decode error code, or `late`.
    pub fn code(&self) -> &'static str {
        match self {
            DeadLetter::Invalid(e) => e.code(),
            DeadLetter::TooLate { .. } => "late",
        }
    }
}

/// The result of ingesting one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingested {
    pub outcome: Outcome,
    /// The event type, or `"invalid"` when the message did not decode.
    pub event_type: &'static str,
}

/// A point-in-time view of the engine, for metrics and progress.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub watermark: Option<Timestamp>,
    pub accounts: usize,
    pub open_opportunities: usize,
    pub managers: usize,
    pub teams: usize,
    pub remembered_event_ids: usize,
    /// On-time events waiting for the watermark to pass them.
    pub buffered_events: usize,
    /// Events applied before the watermark passed them (buffer full).
    pub forced_events: u64,
    /// Entities forgotten so far, by kind (idle past the TTL or over a cap).
    pub evictions: Vec<(&'static str, u64)>,
    pub pending_or_firing: usize,
    pub active: Vec<ActiveAlert>,
    pub team_win_rates: Vec<(String, f64)>,
    /// (manager, team, statistics at the last evaluation).
    pub managers_detail: Vec<(String, String, ManagerGauges)>,
}

/// The detection engine for one instance.
pub struct Engine {
    config: Config,
    limits: DecodeLimits,
    late_horizon: i64,
    evaluate_every: i64,
    /// How far back any window reaches, seconds: open deals and company
    /// order buckets older than this are dropped at each evaluation.
    reach: i64,
    watermark: WatermarkTracker,
    dedup: Dedup,
    accounts: AccountStage,
    managers: ManagerStage,
    lifecycle: Lifecycle,
    /// The next evaluation boundary the watermark has not yet passed.
    next_evaluation: Option<Timestamp>,
    /// Scratch space for the facts of one event, reused to avoid allocation.
    facts: Vec<fact::Fact>,
    /// On-time events not yet behind the watermark, applied in event-time
    /// order as it passes them.
    pending: BinaryHeap<Reverse<InEventTime>>,
    max_buffered: usize,
    /// Events applied ahead of the watermark because the buffer was full.
    forced: u64,
}

/// An event ordered by event time, then id (ids are unique once deduplicated).
/// Boxed, so that the heap moves a pointer and not the event; its time is
/// held beside it, so that most comparisons do not follow the pointer.
struct InEventTime(Timestamp, Box<Event>);

impl PartialEq for InEventTime {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InEventTime {}

impl PartialOrd for InEventTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InEventTime {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .cmp(&other.0)
            .then_with(|| self.1.event_id.cmp(&other.1.event_id))
    }
}

impl Engine {
    pub fn new(config: &Config) -> Engine {
        let engine = &config.engine;
        Engine {
            config: config.clone(),
            limits: Engine::decode_limits(config),
            late_horizon: engine.late_horizon.as_secs() as i64,
            evaluate_every: config.alerts.evaluate_every.as_secs() as i64,
            reach: {
                let detect = &config.detect;
                (detect.win_rate.history + detect.win_rate.window)
                    .max(detect.leakage.history + detect.leakage.window)
                    .max(detect.churn.business_baseline * 2)
                    .as_secs() as i64
            },
            watermark: WatermarkTracker::new(engine.allowed_lateness.as_secs() as i64),
            dedup: Dedup::new(engine.dedup_capacity, engine.dedup_horizon.as_secs() as i64),
            accounts: AccountStage::default(),
            managers: ManagerStage::with_cap(engine.max_managers),
            lifecycle: Lifecycle::new(config.alerts.for_evaluations, config.alerts.resolve_after),
            next_evaluation: None,
            facts: Vec::new(),
            pending: BinaryHeap::new(),
            max_buffered: engine.max_buffered_events,
            forced: 0,
        }
    }

    /// Decodes and applies one message from input `partition`, appending any
    /// alert transitions it causes to `out`.
    pub fn ingest(&mut self, payload: &[u8], partition: i32, out: &mut Vec<Alert>) -> Ingested {
        self.ingest_decoded(decode(payload, self.limits), partition, out)
    }

    /// The limits `ingest` decodes with, for a caller that decodes elsewhere
    /// (another thread) and hands the result to [`Engine::ingest_decoded`].
    pub fn decode_limits(config: &Config) -> DecodeLimits {
        DecodeLimits {
            max_event_bytes: config.engine.max_event_bytes,
        }
    }

    /// Applies one message already decoded with [`Engine::decode_limits`]:
    /// the same as [`Engine::ingest`] on its bytes.
    pub fn ingest_decoded(
        &mut self,
        decoded: Result<Event, DecodeError>,
        partition: i32,
        out: &mut Vec<Alert>,
    ) -> Ingested {
        match decoded {
            Ok(event) => {
                let event_type = event.body.type_name();
                let outcome = self.apply(event, partition, out);
                Ingested {
                    outcome,
                    event_type,
                }
            }
            Err(error) => Ingested {
                outcome: Outcome::DeadLetter(DeadLetter::Invalid(error)),
                event_type: "invalid",
            },
        }
    }

    /// Applies one decoded event from input `partition`.
    pub fn apply(&mut self, event: Event, partition: i32, out: &mut Vec<Alert>) -> Outcome {
        let watermark = self.watermark.current();
        let late = watermark.is_some_and(|w| event.occurred_at < w);
        if let Some(w) = watermark {
            if event.occurred_at < w.plus(-self.late_horizon) {
                return Outcome::DeadLetter(DeadLetter::TooLate {
                    occurred_at: event.occurred_at,
                    watermark: w,
                });
            }
        }
        if !self.dedup.insert(&event.event_id, event.occurred_at) {
            return Outcome::Duplicate;
        }

        let at = event.occurred_at;
        if late {
            self.apply_now(&event);
        } else {
            self.pending
                .push(Reverse(InEventTime(event.occurred_at, Box::new(event))));
            if self.pending.len() > self.max_buffered {
                if let Some(Reverse(InEventTime(_, oldest))) = self.pending.pop() {
                    self.forced += 1;
                    self.apply_now(&oldest);
                }
            }
        }
        if let Some(watermark) = self.watermark.observe(partition, at) {
            self.evaluate_until(watermark, out);
        }
        if late {
            Outcome::Late
        } else {
            Outcome::Processed
        }
    }

    /// Marks an input partition idle or active (see [`WatermarkTracker`]).
    pub fn set_partition_idle(&mut self, partition: i32, idle: bool, out: &mut Vec<Alert>) {
        if let Some(watermark) = self.watermark.set_idle(partition, idle) {
            self.evaluate_until(watermark, out);
        }
    }

    /// Declares the input partitions this instance now owns (after a
    /// rebalance); see [`WatermarkTracker::assign`].
    pub fn assign_partitions(&mut self, partitions: &[i32], out: &mut Vec<Alert>) {
        if let Some(watermark) = self.watermark.assign(partitions) {
            self.evaluate_until(watermark, out);
        }
    }

    /// Moves event time on by `seconds` while the whole input is idle, so
    /// silence is judged without new events (DESIGN §5).
    pub fn advance_idle(&mut self, seconds: i64, out: &mut Vec<Alert>) {
        if let Some(watermark) = self.watermark.advance_idle(seconds) {
            self.evaluate_until(watermark, out);
        }
    }

    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark.current()
    }

    pub fn stats(&self) -> EngineStats {
        let mut active: Vec<ActiveAlert> = self.lifecycle.active().collect();
        active.sort();
        EngineStats {
            watermark: self.watermark.current(),
            accounts: self.accounts.accounts(),
            open_opportunities: self.accounts.open_opportunities(),
            managers: self.managers.managers(),
            teams: self.managers.teams(),
            remembered_event_ids: self.dedup.len(),
            buffered_events: self.pending.len(),
            forced_events: self.forced,
            evictions: vec![
                ("event_ids", self.dedup.evicted()),
                ("accounts", self.accounts.expired + self.accounts.evicted),
                ("managers", self.managers.expired + self.managers.evicted),
            ],
            pending_or_firing: self.lifecycle.len(),
            active,
            team_win_rates: self
                .managers
                .team_win_rates()
                .map(|(t, r)| (t.to_owned(), r))
                .collect(),
            managers_detail: self
                .managers
                .manager_gauges()
                .map(|(m, t, g)| (m.to_owned(), t.to_owned(), g.clone()))
                .collect(),
        }
    }

    /// Runs every evaluation whose boundary the watermark has passed.
    /// Applies the buffered events the watermark has passed, in event-time
    /// order, running each evaluation once the events before its boundary
    /// are in: so state and alerts are the same however the input was
    /// partitioned or interleaved.
    fn evaluate_until(&mut self, watermark: Timestamp, out: &mut Vec<Alert>) {
        let step = self.evaluate_every;
        let mut boundary = *self
            .next_evaluation
            .get_or_insert_with(|| Timestamp(watermark.0.div_euclid(step) * step + step));
        loop {
            let until = boundary.min(watermark);
            while let Some(Reverse(InEventTime(occurred_at, _))) = self.pending.peek() {
                if *occurred_at >= until {
                    break;
                }
                if let Some(Reverse(InEventTime(_, event))) = self.pending.pop() {
                    self.apply_now(&event);
                }
            }
            if boundary > watermark {
                break;
            }
            self.evaluate_at(boundary, out);
            boundary = boundary.plus(step);
        }
        self.next_evaluation = Some(boundary);
        // A burst (a partition far ahead, a backlog) must not hold its
        // memory once applied.
        if self.pending.is_empty() && self.pending.capacity() > 4096 {
            self.pending.shrink_to_fit();
        }
    }

    fn apply_now(&mut self, event: &Event) {
        self.accounts.apply(event, &self.config, &mut self.facts);
        for fact in self.facts.drain(..) {
            self.managers.apply(fact);
        }
    }

    fn evaluate_at(&mut self, at: Timestamp, out: &mut Vec<Alert>) {
        let first_new = out.len();
        let report = self.accounts.evaluate(
            at,
            at.plus(-self.reach),
            &self.config,
            &mut self.lifecycle,
            out,
        );
        for fact in report.facts {
            self.managers.apply(fact);
        }
        self.managers.evaluate(
            at,
            &report.books,
            &self.config,
            self.config.alerts.max_evidence,
            &mut self.lifecycle,
            out,
        );
        // Entities are held in hash maps: order one evaluation's transitions
        // so that every replay emits them in the same order.
        out[first_new..].sort_by(|a, b| a.alert_id.cmp(&b.alert_id));

        self.dedup.expire(at);
        let idle_cutoff = at.plus(-(self.config.engine.entity_ttl.as_secs() as i64));
        self.accounts.expire_idle(idle_cutoff);
        self.managers.expire_idle(idle_cutoff, &self.lifecycle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(i: usize) -> Vec<u8> {
        format!(
            r#"{{"event_id":"e{i}","type":"activity_logged","occurred_at":"2025-01-01T10:{:02}:00Z","manager_id":"m","account_id":"a","activity":"call"}}"#,
            i % 60
        )
        .into_bytes()
    }

    #[test]
    fn the_event_buffer_is_bounded_when_a_partition_holds_the_watermark_back() {
        let mut config = Config::defaults();
        config.engine.max_buffered_events = 3;
        let mut engine = Engine::new(&config);
        let mut out = Vec::new();
        // Partition 1 never delivers: the watermark cannot move.
        engine.assign_partitions(&[0, 1], &mut out);
        for i in 0..10 {
            assert_eq!(
                engine.ingest(&activity(i), 0, &mut out).outcome,
                Outcome::Processed
            );
        }
        let stats = engine.stats();
        assert_eq!(stats.watermark, None);
        assert_eq!(stats.buffered_events, 3);
        assert_eq!(stats.forced_events, 7);
        assert_eq!(stats.accounts, 1, "forced events were applied");
    }

    #[test]
    fn a_flood_of_new_accounts_stays_within_the_cap_and_idle_ones_expire() {
        let mut config = Config::defaults();
        config.engine.max_accounts = 100;
        config.engine.entity_ttl = std::time::Duration::from_secs(10 * 86_400);
        let mut engine = Engine::new(&config);
        let mut out = Vec::new();
        let event = |i: usize, day: u32| {
            format!(
                r#"{{"event_id":"e{i}","type":"activity_logged","occurred_at":"2025-01-{day:02}T10:00:00Z","manager_id":"m","account_id":"acc-{i}","activity":"call"}}"#
            )
        };
        for i in 0..1_000 {
            engine.ingest(event(i, 1).as_bytes(), 0, &mut out);
            assert!(engine.stats().accounts <= 100);
        }
        // Push the watermark on: the flood is applied, then idles out.
        engine.ingest(event(5_000, 3).as_bytes(), 0, &mut out);
        let stats = engine.stats();
        assert_eq!(stats.accounts, 100);
        assert_eq!(stats.evictions[1], ("accounts", 900));
        engine.ingest(event(5_001, 20).as_bytes(), 0, &mut out);
        engine.ingest(event(5_002, 21).as_bytes(), 0, &mut out);
        let stats = engine.stats();
        assert!(stats.accounts <= 2, "{} accounts left", stats.accounts);
        assert!(stats.evictions[1].1 >= 998);
    }

    #[test]
    fn the_same_stream_under_the_caps_forgets_the_same_entities_in_every_engine() {
        use crate::simulate::{SimConfig, Simulation};
        let events: Vec<Vec<u8>> = Simulation::new(SimConfig {
            managers: 40,
            accounts_per_manager: 3,
            days: 150,
            seed: 3,
            ..SimConfig::default()
        })
        .flatten()
        .map(|e| e.to_json().to_string().into_bytes())
        .collect();
        let mut config = Config::defaults();
        // Caps above the eviction sample's 16, so that it is a sample.
        config.engine.max_managers = 24;
        config.engine.max_accounts = 60;
        // Each engine's maps get hash seeds of their own.
        let run = || {
            let mut engine = Engine::new(&config);
            let mut out = Vec::new();
            for payload in &events {
                engine.ingest(payload, 0, &mut out);
            }
            let mut held: Vec<String> = engine
                .checkpoint()
                .into_iter()
                .map(|(key, _)| key)
                .collect();
            held.sort();
            (held, out, engine.stats().evictions)
        };
        let (held, alerts, evictions) = run();
        assert!(evictions[1].1 > 0 && evictions[2].1 > 0, "{evictions:?}");
        for _ in 0..3 {
            let again = run();
            assert_eq!(again.0, held);
            assert_eq!(again.1, alerts);
        }
    }
}
