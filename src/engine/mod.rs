//! The engine: decode → account stage → facts → manager stage → alert
//! lifecycle (DESIGN §1). Pure: bytes, partitions and elapsed time come in as
//! arguments, alert transitions come out as values. No I/O, no clock, no
//! globals; `run`, `demo`, `backtest` and the tests all drive this type.
//! An evaluation judges accounts and managers on every core (rayon's pool),
//! then hands the lifecycle the results in one fixed order: the transitions
//! are the same on any number of threads.

pub mod account;
pub mod base_rates;
mod buffer;
pub mod calibration;
pub mod checkpoint;
pub mod dedup;
pub mod eviction;
pub mod exchange;
pub mod fact;
mod intake;
pub mod lifecycle;
pub mod manager;
pub mod pace;
mod prefetch;
pub mod presence;
pub mod shard;
pub mod source;
pub mod tracer;
pub mod watermark;
pub mod window;

use crate::alert::Alert;
use crate::config::Config;
use crate::event::{decode, DecodeError, DecodeLimits, Event, Id};
use crate::time::Timestamp;

use account::{AccountStage, Book};
use base_rates::BaseRates;
use intake::Intake;
use lifecycle::{ActiveAlert, Lifecycle};
use manager::{ManagerGauges, ManagerStage};
#[cfg(doc)]
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
    /// The last evaluation boundary every stage has evaluated: alerts are
    /// decided up to this event time.
    pub evaluated: Option<Timestamp>,
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
    /// The account-churn tail calibration of the last evaluation (the
    /// same in every source: it is the company's).
    pub tail_ratios: Option<[f64; 4]>,
}

impl EngineStats {
    /// Adds what another part of the engine holds (scaled out, an
    /// instance's sources and shards each hold a part): counts add up, the
    /// watermark is the least.
    pub fn merge(&mut self, part: EngineStats) {
        let least = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.watermark = least(self.watermark, part.watermark);
        self.evaluated = least(self.evaluated, part.evaluated);
        self.accounts += part.accounts;
        self.open_opportunities += part.open_opportunities;
        self.managers += part.managers;
        self.teams += part.teams;
        self.remembered_event_ids += part.remembered_event_ids;
        self.buffered_events += part.buffered_events;
        self.forced_events += part.forced_events;
        for (kind, count) in part.evictions {
            match self.evictions.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, held)) => *held += count,
                None => self.evictions.push((kind, count)),
            }
        }
        self.pending_or_firing += part.pending_or_firing;
        self.active.extend(part.active);
        self.active.sort();
        self.team_win_rates.extend(part.team_win_rates);
        self.managers_detail.extend(part.managers_detail);
        self.tail_ratios = self.tail_ratios.or(part.tail_ratios);
    }
}

/// The detection engine for one instance.
pub struct Engine {
    config: Config,
    limits: DecodeLimits,
    /// How far back any window reaches, seconds: open deals and company
    /// order buckets older than this are dropped at each evaluation.
    reach: i64,
    intake: Intake,
    accounts: AccountStage,
    managers: ManagerStage,
    lifecycle: Lifecycle,
    /// Scratch space for the facts of one event, reused to avoid allocation.
    facts: Vec<fact::Fact>,
}

impl Engine {
    pub fn new(config: &Config) -> Engine {
        Engine {
            config: config.clone(),
            limits: Engine::decode_limits(config),
            reach: reach(config),
            intake: Intake::new(config),
            accounts: AccountStage::default(),
            managers: ManagerStage::with_cap(config.engine.max_managers),
            lifecycle: Lifecycle::new(config.alerts.for_evaluations, config.alerts.resolve_after),
            facts: Vec::new(),
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
        ingested(decoded, |event| self.apply(event, partition, out))
    }

    /// Applies one decoded event from input `partition`.
    pub fn apply(&mut self, event: Event, partition: i32, out: &mut Vec<Alert>) -> Outcome {
        let (outcome, moved) = self.intake.admit(event, partition, |e| {
            apply_now(
                e,
                &mut self.accounts,
                &mut self.managers,
                &self.config,
                &mut self.facts,
            )
        });
        if moved {
            self.evaluate_due(out);
        }
        outcome
    }

    /// Marks an input partition idle or active (see [`WatermarkTracker`]).
    pub fn set_partition_idle(&mut self, partition: i32, idle: bool, out: &mut Vec<Alert>) {
        if self.intake.watermark.set_idle(partition, idle).is_some() {
            self.evaluate_due(out);
        }
    }

    /// Declares the input partitions this instance now owns (after a
    /// rebalance); see [`WatermarkTracker::assign`].
    pub fn assign_partitions(&mut self, partitions: &[i32], out: &mut Vec<Alert>) {
        if self.intake.watermark.assign(partitions).is_some() {
            self.evaluate_due(out);
        }
    }

    /// Moves event time on by `seconds` while the whole input is idle, so
    /// silence is judged without new events (DESIGN §5).
    pub fn advance_idle(&mut self, seconds: i64, out: &mut Vec<Alert>) {
        if self.intake.watermark.advance_idle(seconds).is_some() {
            self.evaluate_due(out);
        }
    }

    pub fn watermark(&self) -> Option<Timestamp> {
        self.intake.watermark.current()
    }

    pub fn stats(&self) -> EngineStats {
        let mut active: Vec<ActiveAlert> = self.lifecycle.active().collect();
        active.sort();
        let mut stats = EngineStats {
            watermark: self.watermark(),
            evaluated: self.intake.evaluated(),
            accounts: self.accounts.accounts(),
            open_opportunities: self.accounts.open_opportunities(),
            remembered_event_ids: self.intake.dedup.len(),
            buffered_events: self.intake.pending.len(),
            forced_events: self.intake.forced,
            evictions: vec![
                ("event_ids", self.intake.dedup.evicted()),
                ("accounts", self.accounts.expired + self.accounts.evicted),
                ("managers", self.managers.expired + self.managers.evicted),
            ],
            pending_or_firing: self.lifecycle.len(),
            active,
            tail_ratios: self.accounts.calibration().map(|c| c.ratios()),
            ..EngineStats::default()
        };
        self.managers.fill_stats(&mut stats);
        stats
    }

    /// Runs every evaluation whose boundary the watermark has passed, each
    /// once the events before its boundary are in.
    fn evaluate_due(&mut self, out: &mut Vec<Alert>) {
        loop {
            let due = self.intake.next_due(|e, upcoming| {
                self.accounts.prefetch(upcoming);
                apply_now(
                    e,
                    &mut self.accounts,
                    &mut self.managers,
                    &self.config,
                    &mut self.facts,
                )
            });
            let Some(boundary) = due else { break };
            self.evaluate_at(boundary, out);
            self.intake.passed(boundary);
        }
    }

    fn evaluate_at(&mut self, at: Timestamp, out: &mut Vec<Alert>) {
        let first_new = out.len();
        let report = self.accounts.evaluate(
            at,
            at.plus(-self.reach),
            None,
            &self.config,
            &mut self.lifecycle,
            out,
        );
        for fact in report.facts {
            self.managers.apply(fact);
        }
        let base = BaseRates::of_books(&report.books, &self.config.detect.book_churn);
        evaluate_managers(
            &mut self.managers,
            at,
            &report.books,
            &base,
            &self.config,
            &mut self.lifecycle,
            out,
        );
        // Entities are held in hash maps: order one evaluation's transitions
        // so that every replay emits them in the same order.
        out[first_new..].sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        self.accounts.expire_idle(idle_cutoff(at, &self.config));
    }
}

/// The manager stage's part of an evaluation at `at`, in one process or in
/// a shard: judge every manager, then forget the idle ones.
fn evaluate_managers(
    managers: &mut ManagerStage,
    at: Timestamp,
    books: &Map<Id, Book>,
    base: &BaseRates,
    config: &Config,
    lifecycle: &mut Lifecycle,
    out: &mut Vec<Alert>,
) {
    managers.evaluate(
        at,
        books,
        base,
        config,
        config.alerts.max_evidence,
        lifecycle,
        out,
    );
    managers.expire_idle(idle_cutoff(at, config), lifecycle);
}

/// How many of `len` items one part of a parallel evaluation judges:
/// `parts_per_thread` parts for each thread (more than one lets a thread
/// that finished early take over part of another's share), each of at least
/// `least` items.
pub(crate) fn part_size(len: usize, parts_per_thread: usize, least: usize) -> usize {
    len.div_ceil(rayon::current_num_threads() * parts_per_thread)
        .max(least)
}

/// How far back any window reaches, seconds: open deals and company order
/// buckets older than this are dropped at each evaluation.
fn reach(config: &Config) -> i64 {
    let detect = &config.detect;
    (detect.win_rate.history + detect.win_rate.window)
        .max(detect.leakage.history + detect.leakage.window)
        .max(detect.churn.business_baseline * 2)
        .as_secs() as i64
}

/// Entities seen last before this, at an evaluation at `at`, have been idle
/// past `engine.entity_ttl`.
fn idle_cutoff(at: Timestamp, config: &Config) -> Timestamp {
    at.plus(-(config.engine.entity_ttl.as_secs() as i64))
}

/// What [`Engine::ingest_decoded`] reports for a decoded message, `apply`
/// applying it when it decoded.
fn ingested(decoded: Result<Event, DecodeError>, apply: impl FnOnce(Event) -> Outcome) -> Ingested {
    match decoded {
        Ok(event) => {
            let event_type = event.body.type_name();
            Ingested {
                outcome: apply(event),
                event_type,
            }
        }
        Err(error) => Ingested {
            outcome: Outcome::DeadLetter(DeadLetter::Invalid(error)),
            event_type: "invalid",
        },
    }
}

/// Applies one event to the account stage and its facts to the manager stage.
fn apply_now(
    event: &Event,
    accounts: &mut AccountStage,
    managers: &mut ManagerStage,
    config: &Config,
    facts: &mut Vec<fact::Fact>,
) {
    accounts.apply(event, config, facts);
    for fact in facts.drain(..) {
        managers.apply(fact);
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
