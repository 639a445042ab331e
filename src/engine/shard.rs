//! The manager stage of one facts partition, scaled out (DESIGN §7): the
//! managers and teams whose team maps to this partition
//! ([`shard_of`](super::exchange::shard_of)), evaluated at each boundary
//! once every source has sent its part and every other shard its books
//! that could stand out (see [`super::exchange`]).
//!
//! It applies the facts in the order one process would have: the events'
//! facts by event time and id, then the stalled deals; it merges the parts
//! of each book, whose sums are exact. So its alerts are those of the
//! single-process [`Engine`](super::Engine) on the same input.

use std::collections::BTreeMap;

use crate::alert::Alert;
use crate::config::Config;
use crate::event::Id;
use crate::time::Timestamp;

use serde::{Deserialize, Serialize};

use super::account::Book;
use super::base_rates::{BaseRates, BookCounts};
use super::checkpoint::{decode_globals, decode_payload, encode, RestoreError, STATE_FORMAT};
use super::exchange::{BookTallies, Envelope, Exchange, PartBody, Route, COUNTS_PER_PART};
use super::fact::Fact;
use super::lifecycle::Lifecycle;
use super::manager::{ManagerGlobals, ManagerStage, ManagerTrace};
use super::{evaluate_managers, EngineStats, Map};

pub struct Shard {
    /// The facts partition this shard reads, which names it.
    shard: u32,
    /// Input partitions in all: the sources each evaluation waits for.
    sources: usize,
    /// Facts partitions in all: the other shards each evaluation waits for.
    shards: u32,
    config: Config,
    managers: ManagerStage,
    /// Alerts about managers (account churn is the sources').
    lifecycle: Lifecycle,
    /// What arrived for boundaries not yet evaluated, by source.
    incoming: BTreeMap<Timestamp, BTreeMap<i32, Incoming>>,
    /// The other shards' books that could stand out, by boundary and shard.
    standing: BTreeMap<Timestamp, BTreeMap<u32, Heard>>,
    /// The last boundary evaluated: messages for it or before are repeats.
    evaluated: Option<Timestamp>,
    /// The last boundary this shard told the others its books for, since it
    /// was made or restored (a restored shard tells them again: they
    /// ignore repeats, and a message lost in a crash is sent).
    announced: Option<Timestamp>,
    outbox: Vec<Envelope>,
}

/// One other shard's books for one boundary, as far as they have arrived.
#[derive(Default, Serialize, Deserialize)]
struct Heard {
    parts: BTreeMap<u32, BookTallies>,
    /// Parts in all.
    of: Option<u32>,
}

impl Heard {
    fn complete(&self) -> bool {
        self.of.is_some_and(|of| self.parts.len() == of as usize)
    }
}

/// One source's message for one boundary, as far as it has arrived.
#[derive(Default, Serialize, Deserialize)]
struct Incoming {
    parts: BTreeMap<u32, PartBody>,
    /// Parts in all, and the source's company-wide counts.
    end: Option<(u32, BookCounts)>,
}

impl Incoming {
    fn complete(&self) -> bool {
        self.end
            .is_some_and(|(parts, _)| self.parts.len() == parts as usize)
    }
}

impl Shard {
    /// The shard of facts partition `shard` of `shards`, hearing from
    /// `sources` sources.
    pub fn new(config: &Config, shard: u32, shards: u32, sources: usize) -> Shard {
        Shard {
            shard,
            sources,
            shards,
            config: config.clone(),
            managers: ManagerStage::with_cap(config.engine.max_managers),
            lifecycle: Lifecycle::new(config.alerts.for_evaluations, config.alerts.resolve_after),
            incoming: BTreeMap::new(),
            standing: BTreeMap::new(),
            evaluated: None,
            announced: None,
            outbox: Vec::new(),
        }
    }

    /// The messages to send since the last call (to the other shards).
    pub fn take_outbox(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.outbox)
    }

    /// What the shard holds, for metrics (its share of [`EngineStats`]: the
    /// account figures are the sources').
    pub fn stats(&self) -> EngineStats {
        let mut stats = EngineStats {
            evaluated: self.evaluated,
            evictions: vec![("managers", self.managers.expired + self.managers.evicted)],
            pending_or_firing: self.lifecycle.len(),
            active: self.lifecycle.active().collect(),
            ..EngineStats::default()
        };
        self.managers.fill_stats(&mut stats);
        stats
    }

    /// Keeps every verdict about these managers (see
    /// [`ManagerStage::trace`]).
    pub fn trace(&mut self, managers: impl IntoIterator<Item = Id>) {
        self.managers.trace(managers);
    }

    /// The traced managers' verdicts since the last call.
    pub fn take_traces(&mut self) -> Vec<ManagerTrace> {
        self.managers.take_traces()
    }

    /// The last boundary evaluated: every alert of it and before is out.
    pub fn evaluated(&self) -> Option<Timestamp> {
        self.evaluated
    }

    /// Takes in a message from a source or another shard, and evaluates
    /// every boundary complete, in order (messages for sources are
    /// ignored).
    pub fn receive(&mut self, message: Exchange, out: &mut Vec<Alert>) {
        let boundary = match &message {
            Exchange::Part { boundary, .. }
            | Exchange::End { boundary, .. }
            | Exchange::Standing { boundary, .. } => *boundary,
            Exchange::Start { .. } | Exchange::Pace { .. } => return,
        };
        if self.evaluated.is_some_and(|done| boundary <= done) {
            return;
        }
        match message {
            Exchange::Part {
                source, seq, body, ..
            } => {
                let incoming = from(&mut self.incoming, boundary, source);
                incoming.parts.entry(seq).or_insert(body);
            }
            Exchange::End {
                source,
                parts,
                company,
                ..
            } => {
                let incoming = from(&mut self.incoming, boundary, source);
                incoming.end.get_or_insert((parts, company));
            }
            Exchange::Standing {
                shard,
                seq,
                parts,
                counts,
                ..
            } if shard != self.shard => {
                let heard = from(&mut self.standing, boundary, shard);
                heard.parts.entry(seq).or_insert(counts);
                heard.of.get_or_insert(parts);
            }
            Exchange::Standing { .. } | Exchange::Start { .. } | Exchange::Pace { .. } => {}
        }
        self.progress(out);
    }

    /// Goes as far as what has arrived allows, in boundary order: tells the
    /// other shards its books that could stand out once every source's
    /// parts for a boundary are in, and evaluates the boundary once every
    /// other shard's are too. A restored shard calls it to go on.
    pub fn progress(&mut self, out: &mut Vec<Alert>) {
        // Told ahead of the evaluations: every boundary with every source's
        // parts in, so no shard waits on another's evaluation, only on its
        // messages.
        let complete: Vec<Timestamp> = self
            .incoming
            .iter()
            .filter(|(at, _)| self.announced.is_none_or(|done| done < **at))
            .take_while(|(_, by_source)| self.all_in(by_source))
            .map(|(at, _)| *at)
            .collect();
        for at in complete {
            self.announce(at);
        }
        while let Some((&at, by_source)) = self.incoming.first_key_value() {
            if !self.all_in(by_source) {
                break;
            }
            let others = self.shards.saturating_sub(1) as usize;
            let heard = self.standing.get(&at).map_or(0, |by_shard| {
                by_shard.values().filter(|h| h.complete()).count()
            });
            if heard < others {
                break;
            }
            let by_source = self.incoming.remove(&at).unwrap_or_default();
            let heard = self.standing.remove(&at).unwrap_or_default();
            self.evaluate_at(at, by_source, heard, out);
            self.evaluated = Some(at);
        }
    }

    /// Whether every source's parts for a boundary are in.
    fn all_in(&self, by_source: &BTreeMap<i32, Incoming>) -> bool {
        by_source.len() >= self.sources && by_source.values().all(Incoming::complete)
    }

    /// Sends every other shard the whole counts of this shard's books for
    /// boundary `at` that could stand out (every source's parts are in).
    fn announce(&mut self, at: Timestamp) {
        self.announced = Some(at);
        if self.shards <= 1 {
            return;
        }
        let mut counts: BTreeMap<Id, BookCounts> = BTreeMap::new();
        for incoming in self
            .incoming
            .get(&at)
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            for body in incoming.parts.values() {
                if let PartBody::Books(books) = body {
                    for (manager_id, book) in books {
                        counts
                            .entry(manager_id.clone())
                            .or_default()
                            .add(&book.counts);
                    }
                }
            }
        }
        let config = &self.config.detect.book_churn;
        let could: Vec<(Id, BookCounts)> = counts
            .into_iter()
            .filter(|(_, counts)| counts.could_stand_out(config))
            .collect();
        let mut parts: Vec<BookTallies> = super::source::chunks(could, COUNTS_PER_PART)
            .map(BookTallies::of)
            .collect();
        if parts.is_empty() {
            parts.push(BookTallies::default());
        }
        let of = parts.len() as u32;
        for other in (0..self.shards).filter(|other| *other != self.shard) {
            for (seq, counts) in (0..).zip(&parts) {
                self.outbox.push(Envelope {
                    to: Route::Shard(other),
                    message: Exchange::Standing {
                        shard: self.shard,
                        boundary: at,
                        seq,
                        parts: of,
                        counts: counts.clone(),
                    },
                });
            }
        }
    }

    fn evaluate_at(
        &mut self,
        at: Timestamp,
        by_source: BTreeMap<i32, Incoming>,
        heard: BTreeMap<u32, Heard>,
        out: &mut Vec<Alert>,
    ) {
        let mut facts: Vec<Fact> = Vec::new();
        let mut stalls: Vec<Fact> = Vec::new();
        let mut books: Map<Id, Book> = Map::default();
        let mut company = BookCounts::default();
        for incoming in by_source.into_values() {
            if let Some((_, counts)) = incoming.end {
                company.add(&counts);
            }
            for body in incoming.parts.into_values() {
                match body {
                    PartBody::Facts(part) => facts.extend(part),
                    PartBody::Stalls(part) => stalls.extend(part),
                    // Sent by earlier versions; the other shards' books that
                    // could stand out are heard from them now.
                    PartBody::Counts(_) | PartBody::Tallies(_) => {}
                    PartBody::Books(part) => {
                        for (manager_id, book) in part {
                            match books.entry(manager_id) {
                                std::collections::hash_map::Entry::Occupied(mut held) => {
                                    held.get_mut().merge(book)
                                }
                                std::collections::hash_map::Entry::Vacant(slot) => {
                                    slot.insert(book);
                                }
                            }
                        }
                    }
                }
            }
        }
        // One process applies events in event-time order, then id; each
        // event's facts in the order made (the sort is stable).
        facts.sort_by(|a, b| (a.at, &a.evidence.event_id).cmp(&(b.at, &b.evidence.event_id)));
        for fact in facts.into_iter().chain(stalls) {
            self.managers.apply(fact);
        }
        // The books that could stand out, this shard's and the others': a
        // book that could not never leaves the company's counts, so the
        // base rates are those one process reckons from every book.
        let config = &self.config.detect.book_churn;
        let mut counts: Map<Id, BookCounts> = heard
            .into_values()
            .flat_map(|h| h.parts.into_values())
            .flat_map(BookTallies::into_counts)
            .collect();
        counts.extend(
            books
                .iter()
                .filter(|(_, book)| book.counts.could_stand_out(config))
                .map(|(id, book)| (id.clone(), book.counts)),
        );
        let base = BaseRates::reckon(&counts, &company, config);
        let first_new = out.len();
        evaluate_managers(
            &mut self.managers,
            at,
            &books,
            &base,
            &self.config,
            &mut self.lifecycle,
            out,
        );
        out[first_new..].sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
    }
}

/// What arrived for `boundary` from `sender` (a source or a shard), as far
/// as it has arrived.
fn from<S: Ord, T: Default>(
    by_boundary: &mut BTreeMap<Timestamp, BTreeMap<S, T>>,
    boundary: Timestamp,
    sender: S,
) -> &mut T {
    by_boundary
        .entry(boundary)
        .or_default()
        .entry(sender)
        .or_default()
}

/// Appends a record `<prefix><boundary>/<sender>` for what each sender's
/// message for each boundary holds so far.
fn write_by_boundary<S: std::fmt::Display, T: Serialize>(
    prefix: &str,
    by_boundary: &BTreeMap<Timestamp, BTreeMap<S, T>>,
    out: &mut Vec<(String, Vec<u8>)>,
) {
    for (boundary, by_sender) in by_boundary {
        for (sender, held) in by_sender {
            out.push((format!("{prefix}{}/{sender}", boundary.0), encode(held)));
        }
    }
}

/// A record `<prefix><boundary>/<sender>` and its payload, when `key` has
/// `prefix`.
fn by_boundary<S: std::str::FromStr, T: serde::de::DeserializeOwned>(
    prefix: &str,
    key: &str,
    payload: &[u8],
) -> Result<Option<(Timestamp, S, T)>, RestoreError> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    let unknown = || RestoreError::UnknownKey {
        key: key.to_owned(),
    };
    let (boundary, sender) = rest.split_once('/').ok_or_else(unknown)?;
    let boundary = Timestamp(boundary.parse().map_err(|_| unknown())?);
    let sender = sender.parse().map_err(|_| unknown())?;
    Ok(Some((boundary, sender, decode_payload(key, payload)?)))
}

/// Key of a shard's record of everything but its entities.
const SHARD_KEY: &str = "shard";
/// What arrived for a boundary from a source: `incoming/<boundary>/<source>`.
const INCOMING_PREFIX: &str = "incoming/";
/// What arrived for a boundary from another shard: `standing/<boundary>/<shard>`.
const STANDING_PREFIX: &str = "standing/";

/// A shard's state besides its managers, teams, alerts and incoming parts.
#[derive(Serialize, Deserialize)]
struct ShardGlobals {
    format: u32,
    shard: u32,
    evaluated: Option<Timestamp>,
    managers: ManagerGlobals,
}

impl Shard {
    /// The whole state as checkpoint records, in no particular order:
    /// `shard`, `manager/<id>`, `team/<name>`, `alert/…`, `incoming/…`,
    /// `standing/…`.
    pub fn checkpoint(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.records_besides_entities();
        self.managers.checkpoint(&mut out);
        out
    }

    /// The records that may have changed since the last call: a manager or
    /// team left out is unchanged if [`Shard::holds`] it, and gone if not.
    pub fn checkpoint_changes(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.records_besides_entities();
        self.managers.checkpoint_changes(&mut out);
        out
    }

    /// Whether the shard holds the manager or team of checkpoint key `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.managers.holds(key)
    }

    fn records_besides_entities(&self) -> Vec<(String, Vec<u8>)> {
        let globals = ShardGlobals {
            format: STATE_FORMAT,
            shard: self.shard,
            evaluated: self.evaluated,
            managers: self.managers.globals(),
        };
        let mut out = vec![(SHARD_KEY.to_owned(), encode(&globals))];
        self.lifecycle.checkpoint(&mut out);
        write_by_boundary(INCOMING_PREFIX, &self.incoming, &mut out);
        write_by_boundary(STANDING_PREFIX, &self.standing, &mut out);
        out
    }

    /// Takes in checkpoint record `key` if it is an `incoming/…` or a
    /// `standing/…` one; whether it was.
    fn restore_incoming(&mut self, key: &str, payload: &[u8]) -> Result<bool, RestoreError> {
        if let Some((boundary, source, incoming)) = by_boundary(INCOMING_PREFIX, key, payload)? {
            *from(&mut self.incoming, boundary, source) = incoming;
            return Ok(true);
        }
        if let Some((boundary, shard, heard)) = by_boundary(STANDING_PREFIX, key, payload)? {
            *from(&mut self.standing, boundary, shard) = heard;
            return Ok(true);
        }
        Ok(false)
    }

    /// The shard of facts partition `shard` of `shards` with the state of
    /// `records` (as [`Shard::checkpoint`] made them); with no records, a
    /// new shard. It tells the other shards its books again once
    /// [`Shard::progress`] is called.
    ///
    /// # Errors
    ///
    /// A record that does not decode, of an unknown kind, of another
    /// shard, or written in a newer state format.
    pub fn restore(
        config: &Config,
        shard: u32,
        shards: u32,
        sources: usize,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Shard, RestoreError> {
        let mut restored = Shard::new(config, shard, shards, sources);
        let mut globals: Option<ShardGlobals> = None;
        let mut entities = 0usize;
        for (key, payload) in records {
            if key == SHARD_KEY {
                globals = Some(decode_globals(&key, &payload)?);
                continue;
            }
            entities += 1;
            let known = restored.managers.restore_record(&key, &payload)?
                || restored.lifecycle.restore_record(&key, &payload)?
                || restored.restore_incoming(&key, &payload)?;
            if !known {
                return Err(RestoreError::UnknownKey { key });
            }
        }
        match globals {
            Some(globals) if globals.shard != shard => {
                return Err(RestoreError::UnknownKey {
                    key: format!("{SHARD_KEY} of facts partition {}", globals.shard),
                })
            }
            Some(globals) => {
                restored.evaluated = globals.evaluated;
                restored.managers.restore_globals(globals.managers);
            }
            None if entities > 0 => return Err(RestoreError::MissingGlobals { record: SHARD_KEY }),
            None => {}
        }
        Ok(restored)
    }
}
