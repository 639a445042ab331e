//! The account stage of one input partition, scaled out (DESIGN §7): the
//! same intake and account stage as the single-process
//! [`Engine`], holding the accounts keyed to this partition.
//! What the engine hands its manager stage in memory, a source sends as
//! [`Exchange`] messages: to the other sources (the company's order pace,
//! the first boundary) and to the shards of the facts partitions (facts,
//! stalled deals, parts of books). See [`super::exchange`] for the barrier
//! that keeps the alerts those of one process.
//!
//! Pure like the engine: messages in, messages and account alerts out. The
//! service carries the messages over Kafka; the tests carry them in memory.

use std::collections::BTreeMap;

use crate::alert::Alert;
use crate::config::Config;
use crate::event::{decode, DecodeError, DecodeLimits, Event, EventBody, Id};
use crate::time::Timestamp;

use serde::{Deserialize, Serialize};

use super::account::{
    AccountGlobals, AccountStage, AccountTrace, Book, ExpectedOrders, ACCOUNT_PREFIX,
};
use super::base_rates::BookCounts;
use super::calibration::TailCounts;
use super::checkpoint::{decode_globals, decode_payload, encode, RestoreError, STATE_FORMAT};
use super::exchange::{
    shard_of, Envelope, Exchange, PartBody, Route, BOOKS_PER_PART, FACTS_PER_PART,
};
use super::fact::Fact;
use super::intake::Intake;
use super::lifecycle::Lifecycle;
use super::pace::{CompanyOrders, StillOrdering};
use super::watermark::WatermarkTracker;
use super::window::DailyBuckets;
use super::{idle_cutoff, ingested, reach, Engine, EngineStats, Ingested, Outcome};

pub struct Source {
    /// The input partition this source reads, which names it.
    partition: i32,
    /// Input partitions in all: the sources a barrier waits for.
    sources: usize,
    /// Facts partitions in all.
    shards: u32,
    config: Config,
    limits: DecodeLimits,
    reach: i64,
    intake: Intake,
    stage: Stage,
    /// Account-churn alerts (the manager kinds live in the shards).
    lifecycle: Lifecycle,
    /// The whole company's orders per day, from every source's shares up
    /// to the last evaluation: business time runs at this pace.
    company_orders: DailyBuckets<u64>,
    /// The whole company's expected orders, one sample per evaluation, from
    /// every source's shares (see `pace`).
    company_expected: DailyBuckets<StillOrdering>,
    /// This source's sample at its last evaluation, shared with the orders
    /// before the next boundary.
    expected: Option<(Timestamp, ExpectedOrders)>,
    /// Expected orders received with the pace shares, as `shares`.
    expected_shares: BTreeMap<Timestamp, BTreeMap<i32, Option<(Timestamp, ExpectedOrders)>>>,
    /// The whole company's gaps ended by orders, from every source's
    /// count at each evaluation (see `calibration`) ...
    company_tails: DailyBuckets<TailCounts>,
    /// ... this source's count at its last evaluation, shared with the
    /// orders before the next boundary ...
    tails: Option<(Timestamp, TailCounts)>,
    /// ... and the counts received with the pace shares, as `shares`.
    tail_shares: BTreeMap<Timestamp, BTreeMap<i32, Option<(Timestamp, TailCounts)>>>,
    /// Orders admitted and not yet shared, by event time (Unix seconds).
    unshared: BTreeMap<i64, u64>,
    /// The last boundary this source has shared its orders for.
    shared_through: Option<Timestamp>,
    /// Pace shares received (this source's own among them) for boundaries
    /// not yet evaluated.
    shares: BTreeMap<Timestamp, BTreeMap<i32, Vec<(i64, u64)>>>,
    /// Each source's proposed first boundary, until one is agreed.
    proposals: BTreeMap<i32, Option<Timestamp>>,
    /// Whether the input partition is idle: the source then follows the
    /// event time of the others.
    idle: bool,
    outbox: Vec<Envelope>,
}

impl Source {
    /// The source of input `partition`, one of `sources`, sending facts to
    /// `shards` facts partitions.
    pub fn new(config: &Config, partition: i32, sources: usize, shards: u32) -> Source {
        let mut intake = Intake::new(config);
        intake.watermark.assign(&[partition]);
        Source {
            partition,
            sources,
            shards,
            config: config.clone(),
            limits: Engine::decode_limits(config),
            reach: reach(config),
            intake,
            stage: Stage::default(),
            lifecycle: Lifecycle::new(config.alerts.for_evaluations, config.alerts.resolve_after),
            company_orders: DailyBuckets::default(),
            company_expected: DailyBuckets::default(),
            expected: None,
            expected_shares: BTreeMap::new(),
            company_tails: DailyBuckets::default(),
            tails: None,
            tail_shares: BTreeMap::new(),
            unshared: BTreeMap::new(),
            shared_through: None,
            shares: BTreeMap::new(),
            proposals: BTreeMap::new(),
            idle: false,
            outbox: Vec::new(),
        }
    }

    /// Decodes and applies one message of this source's partition.
    pub fn ingest(&mut self, payload: &[u8], out: &mut Vec<Alert>) -> Ingested {
        self.ingest_decoded(decode(payload, self.limits), out)
    }

    /// Applies one message already decoded with [`Engine::decode_limits`]
    /// (elsewhere, on another thread): the same as [`Source::ingest`] on
    /// its bytes.
    pub fn ingest_decoded(
        &mut self,
        decoded: Result<Event, DecodeError>,
        out: &mut Vec<Alert>,
    ) -> Ingested {
        ingested(decoded, |event| self.apply(event, out))
    }

    fn apply(&mut self, event: Event, out: &mut Vec<Alert>) -> Outcome {
        let order = matches!(event.body, EventBody::OrderPlaced { .. });
        let at = event.occurred_at;
        let (outcome, _) = self
            .intake
            .admit(event, self.partition, |e| self.stage.apply(e, &self.config));
        // Every order the account stage applies counts once in the
        // company's pace: counted here, as admitted, it can be shared as
        // soon as the watermark passes it, ahead of the evaluations.
        if order && matches!(outcome, Outcome::Processed | Outcome::Late) {
            *self.unshared.entry(at.0).or_default() += 1;
        }
        self.idle = false;
        self.progress(out);
        outcome
    }

    /// Takes in a message from another source. Shard messages are not for
    /// a source, and its own messages coming back are not news: a source
    /// keeps its own share and proposal as it makes them, and one restored
    /// from a checkpoint makes them again from its own state.
    pub fn receive(&mut self, message: &Exchange, out: &mut Vec<Alert>) {
        match message {
            Exchange::Start { source, .. } | Exchange::Pace { source, .. }
                if *source == self.partition => {}
            Exchange::Start { source, first } => {
                if self.intake.next_evaluation.is_none() {
                    self.proposals.insert(*source, *first);
                }
            }
            Exchange::Pace {
                source,
                boundary,
                orders,
                expected,
                tails,
            } => {
                let evaluated = self
                    .intake
                    .next_evaluation
                    .is_some_and(|next| *boundary < next);
                if !evaluated {
                    self.shares
                        .entry(*boundary)
                        .or_default()
                        .entry(*source)
                        .or_insert_with(|| orders.clone());
                    self.expected_shares
                        .entry(*boundary)
                        .or_default()
                        .entry(*source)
                        .or_insert(*expected);
                    self.tail_shares
                        .entry(*boundary)
                        .or_default()
                        .entry(*source)
                        .or_insert(*tails);
                }
            }
            Exchange::Part { .. } | Exchange::End { .. } | Exchange::Standing { .. } => return,
        }
        self.progress(out);
    }

    /// Marks the input partition idle (nothing to read for a while) or
    /// active. While idle, the source's event time follows the others'.
    pub fn set_idle(&mut self, idle: bool, out: &mut Vec<Alert>) {
        self.idle = idle;
        self.intake.watermark.set_idle(self.partition, idle);
        self.progress(out);
    }

    /// Moves event time on by `seconds` while the input is idle (DESIGN §5).
    pub fn advance_idle(&mut self, seconds: i64, out: &mut Vec<Alert>) {
        self.intake.watermark.advance_idle(seconds);
        self.progress(out);
    }

    /// Keeps the judging of these accounts at every evaluation (see
    /// [`AccountStage::trace`]).
    pub fn trace(&mut self, accounts: impl IntoIterator<Item = Id>) {
        self.stage.accounts.trace(accounts);
    }

    /// The traced accounts' judging since the last call.
    pub fn take_traces(&mut self) -> Vec<AccountTrace> {
        self.stage.accounts.take_traces()
    }

    /// The messages to send since the last call.
    pub fn take_outbox(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.outbox)
    }

    pub fn watermark(&self) -> Option<Timestamp> {
        self.intake.watermark.current()
    }

    /// The next boundary this source will evaluate at, once agreed.
    pub fn next_evaluation(&self) -> Option<Timestamp> {
        self.intake.next_evaluation
    }

    /// The whole company's orders on each day of `days`, as this source
    /// has gathered them from every source's shares.
    pub fn company_orders(&self, days: std::ops::Range<i64>) -> Vec<u64> {
        self.company_orders.each_day(days)
    }

    pub fn accounts(&self) -> usize {
        self.stage.accounts.accounts()
    }

    /// What the source holds, for metrics (its share of [`EngineStats`]:
    /// the manager figures are the shards').
    pub fn stats(&self) -> EngineStats {
        let accounts = &self.stage.accounts;
        EngineStats {
            watermark: self.watermark(),
            evaluated: self.intake.evaluated(),
            accounts: accounts.accounts(),
            open_opportunities: accounts.open_opportunities(),
            remembered_event_ids: self.intake.dedup.len(),
            buffered_events: self.intake.pending.len(),
            forced_events: self.intake.forced,
            evictions: vec![
                ("event_ids", self.intake.dedup.evicted()),
                ("accounts", accounts.expired + accounts.evicted),
            ],
            pending_or_firing: self.lifecycle.len(),
            active: self.lifecycle.active().collect(),
            tail_ratios: accounts.calibration().map(|c| c.ratios()),
            ..EngineStats::default()
        }
    }

    /// Runs every evaluation the barrier allows.
    fn progress(&mut self, out: &mut Vec<Alert>) {
        loop {
            if self.intake.next_evaluation.is_none() && !self.agree_on_start() {
                return;
            }
            if self.idle {
                self.follow();
            }
            self.share_ahead();
            let due = self.intake.next_due(|e, upcoming| {
                self.stage.accounts.prefetch(upcoming);
                self.stage.apply(e, &self.config)
            });
            let Some(boundary) = due else { return };
            if self.shares.get(&boundary).map_or(0, BTreeMap::len) < self.sources {
                return;
            }
            self.evaluate_at(boundary, out);
            self.intake.passed(boundary);
        }
    }

    /// Shares the orders before the next boundary once the watermark has
    /// passed it, if this source has not shared for it yet, with the
    /// expected orders of its last evaluation (so a share waits for the
    /// evaluation before its boundary: shares run one boundary ahead of
    /// the barrier, not more).
    fn share_ahead(&mut self) {
        let (Some(next), Some(watermark)) =
            (self.intake.next_evaluation, self.intake.watermark.current())
        else {
            return;
        };
        let step = self.intake.evaluate_every;
        let mut boundary = self.shared_through.map_or(next, |b| b.plus(step).max(next));
        while boundary <= watermark.min(next) {
            let later = self.unshared.split_off(&boundary.0);
            let mut orders: BTreeMap<i64, u64> = BTreeMap::new();
            for (at, count) in std::mem::replace(&mut self.unshared, later) {
                *orders.entry(Timestamp(at).day()).or_default() += count;
            }
            let orders: Vec<(i64, u64)> = orders.into_iter().collect();
            self.shares
                .entry(boundary)
                .or_default()
                .insert(self.partition, orders.clone());
            self.expected_shares
                .entry(boundary)
                .or_default()
                .insert(self.partition, self.expected);
            self.tail_shares
                .entry(boundary)
                .or_default()
                .insert(self.partition, self.tails);
            self.outbox.push(Envelope {
                to: Route::Sources,
                message: Exchange::Pace {
                    source: self.partition,
                    boundary,
                    orders,
                    expected: self.expected,
                    tails: self.tails,
                },
            });
            self.shared_through = Some(boundary);
            boundary = boundary.plus(step);
        }
    }

    /// Proposes this source's first boundary once it knows it, and adopts
    /// the earliest proposed once every source has; whether one is agreed.
    fn agree_on_start(&mut self) -> bool {
        if !self.proposals.contains_key(&self.partition) {
            let first = match self.intake.watermark.current() {
                Some(watermark) => Some(self.intake.first_boundary(watermark)),
                None if self.idle => None,
                None => return false,
            };
            self.proposals.insert(self.partition, first);
            self.outbox.push(Envelope {
                to: Route::Sources,
                message: Exchange::Start {
                    source: self.partition,
                    first,
                },
            });
        }
        if self.proposals.len() < self.sources {
            return false;
        }
        let Some(first) = self.proposals.values().flatten().min().copied() else {
            // Every source is idle: wait for one to read something.
            self.proposals.remove(&self.partition);
            return false;
        };
        self.intake.next_evaluation = Some(first);
        self.proposals.clear();
        true
    }

    /// An idle source takes the event time of the sources that shared for
    /// a boundary it has not reached: as one process's watermark is not
    /// held back by an idle partition.
    fn follow(&mut self) {
        let Some(next) = self.intake.next_evaluation else {
            return;
        };
        let ahead = self
            .shares
            .range(next..)
            .filter(|(_, by_source)| by_source.keys().any(|s| *s != self.partition))
            .map(|(boundary, _)| *boundary)
            .next_back();
        if let Some(boundary) = ahead {
            self.intake.watermark.raise_to(boundary);
        }
    }

    fn evaluate_at(&mut self, at: Timestamp, out: &mut Vec<Alert>) {
        for orders in self
            .shares
            .remove(&at)
            .into_iter()
            .flat_map(BTreeMap::into_values)
        {
            for (day, count) in orders {
                self.company_orders.add(day, count);
            }
        }
        // Every source's count of its evaluation before this one, by that
        // evaluation's day: the days before this one's, as one process
        // counts them.
        for (evaluated, counts) in self
            .tail_shares
            .remove(&at)
            .into_iter()
            .flat_map(BTreeMap::into_values)
            .flatten()
        {
            self.company_tails.add(evaluated.day(), counts);
        }
        // Every source's sample of one evaluation, or none (a source's
        // first, or one from a feidan that did not share them).
        let samples: Vec<Option<(Timestamp, ExpectedOrders)>> = self
            .expected_shares
            .remove(&at)
            .into_iter()
            .flat_map(BTreeMap::into_values)
            .collect();
        if let Some(Some((evaluated, _))) = samples.first() {
            if samples.len() == self.sources
                && samples
                    .iter()
                    .all(|s| s.is_some_and(|(t, _)| t == *evaluated))
            {
                let mut sum = ExpectedOrders::default();
                for (_, expected) in samples.iter().flatten() {
                    sum += *expected;
                }
                self.company_expected
                    .add(evaluated.day(), StillOrdering::sample(sum));
            }
        }
        let first_new = out.len();
        let forget_before = at.plus(-self.reach);
        let company = CompanyOrders {
            placed: &self.company_orders,
            expected: &self.company_expected,
            tails: &self.company_tails,
        };
        let report = self.stage.accounts.evaluate(
            at,
            forget_before,
            Some(company),
            &self.config,
            &mut self.lifecycle,
            out,
        );
        self.expected = Some((at, report.expected_orders));
        self.tails = Some((at, report.tails));
        self.company_orders.prune_before(forget_before.day());
        self.company_expected.prune_before(forget_before.day());
        self.company_tails.prune_before(forget_before.day());
        out[first_new..].sort_by(|a, b| a.alert_id.cmp(&b.alert_id));

        let shards = self.shards.max(1);
        let mut facts: Vec<Vec<Fact>> = vec![Vec::new(); shards as usize];
        for fact in self.stage.facts.drain(..) {
            facts[shard_of(&fact.team, shards) as usize].push(fact);
        }
        let mut stalls: Vec<Vec<Fact>> = vec![Vec::new(); shards as usize];
        for fact in report.facts {
            stalls[shard_of(&fact.team, shards) as usize].push(fact);
        }
        let company = BookCounts::of(report.books.values());
        let mut books: Vec<Vec<(crate::event::Id, Book)>> = vec![Vec::new(); shards as usize];
        for (manager_id, book) in report.books {
            books[shard_of(&book.team, shards) as usize].push((manager_id, book));
        }
        for books in &mut books {
            books.sort_by(|a, b| a.0.cmp(&b.0));
        }
        for (shard, ((facts, stalls), books)) in
            (0..shards).zip(facts.into_iter().zip(stalls).zip(books))
        {
            let mut parts = Vec::new();
            parts.extend(chunks(facts, FACTS_PER_PART).map(PartBody::Facts));
            parts.extend(chunks(stalls, FACTS_PER_PART).map(PartBody::Stalls));
            parts.extend(chunks(books, BOOKS_PER_PART).map(PartBody::Books));
            let count = parts.len() as u32;
            for (seq, body) in (0..).zip(parts) {
                self.outbox.push(Envelope {
                    to: Route::Shard(shard),
                    message: Exchange::Part {
                        source: self.partition,
                        boundary: at,
                        seq,
                        body,
                    },
                });
            }
            self.outbox.push(Envelope {
                to: Route::Shard(shard),
                message: Exchange::End {
                    source: self.partition,
                    boundary: at,
                    parts: count,
                    company,
                },
            });
        }
        self.stage
            .accounts
            .expire_idle(idle_cutoff(at, &self.config));
    }
}

/// Key of a source's record of everything but its entities and chunks.
const SOURCE_KEY: &str = "source";
/// Facts awaiting the next boundary, per `facts/<n>` record.
const FACTS_PREFIX: &str = "facts/";

/// A source's state besides its accounts, alerts and chunks, as checkpointed.
#[derive(Serialize, Deserialize)]
struct SourceGlobals {
    format: u32,
    partition: i32,
    watermark: WatermarkTracker,
    next_evaluation: Option<Timestamp>,
    forced: u64,
    dedup_counters: (u64, u64),
    accounts: AccountGlobals,
    company_orders: DailyBuckets<u64>,
    shares: BTreeMap<Timestamp, BTreeMap<i32, Vec<(i64, u64)>>>,
    /// These three are absent from checkpoints of before 2026-11-30.
    #[serde(default)]
    company_expected: DailyBuckets<StillOrdering>,
    #[serde(default)]
    expected: Option<(Timestamp, ExpectedOrders)>,
    #[serde(default)]
    expected_shares: BTreeMap<Timestamp, BTreeMap<i32, Option<(Timestamp, ExpectedOrders)>>>,
    /// These three are absent from checkpoints of before 2026-12-01.
    #[serde(default)]
    company_tails: DailyBuckets<TailCounts>,
    #[serde(default)]
    tails: Option<(Timestamp, TailCounts)>,
    #[serde(default)]
    tail_shares: BTreeMap<Timestamp, BTreeMap<i32, Option<(Timestamp, TailCounts)>>>,
    proposals: BTreeMap<i32, Option<Timestamp>>,
    idle: bool,
    unshared: BTreeMap<i64, u64>,
    shared_through: Option<Timestamp>,
}

impl Source {
    /// The whole state as checkpoint records, in no particular order:
    /// `source`, `account/<id>`, `alert/…`, `dedup/<n>`, `buffer/<n>`,
    /// `facts/<n>`.
    pub fn checkpoint(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.records_besides_accounts();
        self.stage.accounts.checkpoint(&mut out);
        out
    }

    /// The records that may have changed since the last call (see
    /// [`Engine::checkpoint_changes`]): an account left out is unchanged if
    /// [`Source::holds`] it, and gone if not.
    pub fn checkpoint_changes(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.records_besides_accounts();
        self.stage.accounts.checkpoint_changes(&mut out);
        out
    }

    /// Whether the source holds the account of checkpoint key `key`.
    pub fn holds(&self, key: &str) -> bool {
        key.strip_prefix(ACCOUNT_PREFIX)
            .is_some_and(|id| self.stage.accounts.holds(id))
    }

    fn records_besides_accounts(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let globals = SourceGlobals {
            format: STATE_FORMAT,
            partition: self.partition,
            watermark: self.intake.watermark.clone(),
            next_evaluation: self.intake.next_evaluation,
            forced: self.intake.forced,
            dedup_counters: self.intake.dedup.counters(),
            accounts: self.stage.accounts.globals(),
            company_orders: self.company_orders.clone(),
            shares: self.shares.clone(),
            company_expected: self.company_expected.clone(),
            expected: self.expected,
            expected_shares: self.expected_shares.clone(),
            company_tails: self.company_tails.clone(),
            tails: self.tails,
            tail_shares: self.tail_shares.clone(),
            proposals: self.proposals.clone(),
            idle: self.idle,
            unshared: self.unshared.clone(),
            shared_through: self.shared_through,
        };
        out.push((SOURCE_KEY.to_owned(), encode(&globals)));
        self.lifecycle.checkpoint(&mut out);
        self.intake.checkpoint_chunks(&mut out);
        for (n, chunk) in self.stage.facts.chunks(FACTS_PER_PART).enumerate() {
            out.push((format!("{FACTS_PREFIX}{n}"), encode(chunk)));
        }
        out
    }

    /// The source of input `partition` with the state of `records` (as
    /// [`Source::checkpoint`] made them); with no records, a new source.
    ///
    /// # Errors
    ///
    /// A record that does not decode, of an unknown kind, of another
    /// partition's source, or written in a newer state format.
    pub fn restore(
        config: &Config,
        partition: i32,
        sources: usize,
        shards: u32,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Source, RestoreError> {
        let mut source = Source::new(config, partition, sources, shards);
        let mut globals: Option<SourceGlobals> = None;
        let mut dedup_chunks = Vec::new();
        let mut facts: BTreeMap<usize, Vec<Fact>> = BTreeMap::new();
        let mut entities = 0usize;
        for (key, payload) in records {
            if key == SOURCE_KEY {
                globals = Some(decode_globals(&key, &payload)?);
                continue;
            }
            entities += 1;
            let known = if let Some(id) = key.strip_prefix(ACCOUNT_PREFIX) {
                source.stage.accounts.restore_account(id, &payload)?;
                true
            } else if let Some(n) = key.strip_prefix(FACTS_PREFIX).and_then(|n| n.parse().ok()) {
                facts.insert(n, decode_payload(&key, &payload)?);
                true
            } else {
                source.lifecycle.restore_record(&key, &payload)?
                    || source.intake.restore_chunk(
                        &key,
                        &payload,
                        source.limits,
                        &mut dedup_chunks,
                    )?
            };
            if !known {
                return Err(RestoreError::UnknownKey { key });
            }
        }
        match globals {
            Some(globals) if globals.partition != partition => {
                return Err(RestoreError::UnknownKey {
                    key: format!("{SOURCE_KEY} of partition {}", globals.partition),
                })
            }
            Some(globals) => {
                let lateness = config.engine.allowed_lateness.as_secs() as i64;
                source.intake.watermark = globals.watermark.with_lateness(lateness);
                source.intake.next_evaluation = globals.next_evaluation;
                source.intake.forced = globals.forced;
                source
                    .intake
                    .dedup
                    .restore(globals.dedup_counters, dedup_chunks);
                source.stage.accounts.restore_globals(globals.accounts);
                source.unshared = globals.unshared;
                source.shared_through = globals.shared_through;
                source.stage.facts = facts.into_values().flatten().collect();
                source.company_orders = globals.company_orders;
                source.shares = globals.shares;
                source.company_expected = globals.company_expected;
                source.expected = globals.expected;
                source.expected_shares = globals.expected_shares;
                source.company_tails = globals.company_tails;
                source.tails = globals.tails;
                source.tail_shares = globals.tail_shares;
                source.proposals = globals.proposals;
                source.idle = globals.idle;
            }
            None if entities > 0 => {
                return Err(RestoreError::MissingGlobals { record: SOURCE_KEY })
            }
            None => {}
        }
        Ok(source)
    }
}

/// `items` in chunks of at most `size`, in order.
pub(super) fn chunks<T>(items: Vec<T>, size: usize) -> impl Iterator<Item = Vec<T>> {
    let mut items = items.into_iter().peekable();
    std::iter::from_fn(move || {
        items.peek()?;
        Some(items.by_ref().take(size).collect())
    })
}

/// The account stage of a source, and what it has yet to send.
#[derive(Default)]
struct Stage {
    accounts: AccountStage,
    /// Facts of the events applied since the last boundary, in the order applied.
    facts: Vec<Fact>,
    /// Scratch space for the facts of one event.
    scratch: Vec<Fact>,
}

impl Stage {
    /// Applies one event to the account stage, keeping its facts for the
    /// next boundary.
    fn apply(&mut self, event: &Event, config: &Config) {
        self.accounts.apply(event, config, &mut self.scratch);
        self.facts.append(&mut self.scratch);
    }
}
