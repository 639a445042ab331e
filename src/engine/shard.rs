//! The manager stage of one facts partition, scaled out (DESIGN §7): the
//! managers and teams whose team maps to this partition
//! ([`shard_of`](super::exchange::shard_of)), evaluated at each boundary
//! once every source has sent its part (see [`super::exchange`]).
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
use super::exchange::{Exchange, PartBody};
use super::fact::Fact;
use super::lifecycle::Lifecycle;
use super::manager::{ManagerGlobals, ManagerStage};
use super::{evaluate_managers, EngineStats, Map};

pub struct Shard {
    /// The facts partition this shard reads, which names it.
    shard: u32,
    /// Input partitions in all: the sources each evaluation waits for.
    sources: usize,
    config: Config,
    managers: ManagerStage,
    /// Alerts about managers (account churn is the sources').
    lifecycle: Lifecycle,
    /// What arrived for boundaries not yet evaluated, by source.
    incoming: BTreeMap<Timestamp, BTreeMap<i32, Incoming>>,
    /// The last boundary evaluated: messages for it or before are repeats.
    evaluated: Option<Timestamp>,
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
    /// The shard of facts partition `shard`, hearing from `sources` sources.
    pub fn new(config: &Config, shard: u32, sources: usize) -> Shard {
        Shard {
            shard,
            sources,
            config: config.clone(),
            managers: ManagerStage::with_cap(config.engine.max_managers),
            lifecycle: Lifecycle::new(config.alerts.for_evaluations, config.alerts.resolve_after),
            incoming: BTreeMap::new(),
            evaluated: None,
        }
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

    /// The last boundary evaluated: every alert of it and before is out.
    pub fn evaluated(&self) -> Option<Timestamp> {
        self.evaluated
    }

    /// Takes in a message from a source, and evaluates every boundary
    /// complete from every source, in order (messages for sources are
    /// ignored).
    pub fn receive(&mut self, message: Exchange, out: &mut Vec<Alert>) {
        let (source, boundary) = match &message {
            Exchange::Part {
                source, boundary, ..
            }
            | Exchange::End {
                source, boundary, ..
            } => (*source, *boundary),
            Exchange::Start { .. } | Exchange::Pace { .. } => return,
        };
        if self.evaluated.is_some_and(|done| boundary <= done) {
            return;
        }
        let incoming = self
            .incoming
            .entry(boundary)
            .or_default()
            .entry(source)
            .or_default();
        match message {
            Exchange::Part { seq, body, .. } => {
                incoming.parts.entry(seq).or_insert(body);
            }
            Exchange::End { parts, company, .. } => {
                incoming.end.get_or_insert((parts, company));
            }
            Exchange::Start { .. } | Exchange::Pace { .. } => {}
        }
        while let Some(entry) = self.incoming.first_entry() {
            let ready =
                entry.get().len() >= self.sources && entry.get().values().all(Incoming::complete);
            if !ready {
                break;
            }
            let (at, by_source) = entry.remove_entry();
            self.evaluate_at(at, by_source, out);
            self.evaluated = Some(at);
        }
    }

    fn evaluate_at(
        &mut self,
        at: Timestamp,
        by_source: BTreeMap<i32, Incoming>,
        out: &mut Vec<Alert>,
    ) {
        let mut facts: Vec<Fact> = Vec::new();
        let mut stalls: Vec<Fact> = Vec::new();
        let mut books: Map<Id, Book> = Map::default();
        // The other shards' managers' counts, summed over the sources.
        let mut others: Map<Id, BookCounts> = Map::default();
        let mut company = BookCounts::default();
        for incoming in by_source.into_values() {
            if let Some((_, counts)) = incoming.end {
                company.add(&counts);
            }
            for body in incoming.parts.into_values() {
                match body {
                    PartBody::Facts(part) => facts.extend(part),
                    PartBody::Stalls(part) => stalls.extend(part),
                    PartBody::Counts(part) => add_counts(&mut others, part),
                    PartBody::Tallies(part) => add_counts(&mut others, part.into_counts()),
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
        let mut counts = others;
        counts.extend(books.iter().map(|(id, book)| (id.clone(), book.counts)));
        // Every source sent each of its books to one shard whole and to the
        // others as counts: together they are its company-wide counts.
        debug_assert_eq!(counts.values().sum::<BookCounts>(), company);
        let base = BaseRates::reckon(&counts, &company, &self.config.detect.book_churn);
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

/// Adds each manager's `counts` to what `into` holds for them.
fn add_counts(into: &mut Map<Id, BookCounts>, counts: impl IntoIterator<Item = (Id, BookCounts)>) {
    for (manager_id, counts) in counts {
        into.entry(manager_id).or_default().add(&counts);
    }
}

/// Key of a shard's record of everything but its entities.
const SHARD_KEY: &str = "shard";
/// What arrived for a boundary from a source: `incoming/<boundary>/<source>`.
const INCOMING_PREFIX: &str = "incoming/";

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
    /// `shard`, `manager/<id>`, `team/<name>`, `alert/…`, `incoming/…`.
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
        for (boundary, by_source) in &self.incoming {
            for (source, incoming) in by_source {
                let key = format!("{INCOMING_PREFIX}{}/{source}", boundary.0);
                out.push((key, encode(incoming)));
            }
        }
        out
    }

    /// Takes in checkpoint record `key` if it is an `incoming/…` one;
    /// whether it was.
    fn restore_incoming(&mut self, key: &str, payload: &[u8]) -> Result<bool, RestoreError> {
        let Some((boundary, source)) = key
            .strip_prefix(INCOMING_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(b, s)| Some((Timestamp(b.parse().ok()?), s.parse::<i32>().ok()?)))
        else {
            return Ok(false);
        };
        let incoming: Incoming = decode_payload(key, payload)?;
        self.incoming
            .entry(boundary)
            .or_default()
            .insert(source, incoming);
        Ok(true)
    }

    /// The shard of facts partition `shard` with the state of `records` (as
    /// [`Shard::checkpoint`] made them); with no records, a new shard.
    ///
    /// # Errors
    ///
    /// A record that does not decode, of an unknown kind, of another
    /// shard, or written in a newer state format.
    pub fn restore(
        config: &Config,
        shard: u32,
        sources: usize,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Shard, RestoreError> {
        let mut restored = Shard::new(config, shard, sources);
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
