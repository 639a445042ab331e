//! Checkpoints of the engine's state (DESIGN §7): the engine as a list of
//! `(key, payload)` records, one per entity — `account/<id>`,
//! `manager/<id>`, `team/<name>`, `alert/<kind>/<subject>` — plus chunks of
//! the event buffer (`buffer/<n>`) and of the dedup memory (`dedup/<n>`),
//! and one `engine` record with everything else (watermark, counters,
//! evaluation boundary). Restoring the records gives an engine that goes on
//! exactly as the checkpointed one would have.
//!
//! Pure: bytes in, bytes out. Where the records are kept, and how a
//! checkpoint is made atomic, is the changelog's business
//! ([`crate::changelog`]).
//!
//! Payloads are MessagePack with named fields, so a later feidan can add a
//! field with a default and still read an older checkpoint; the `engine`
//! record carries [`STATE_FORMAT`] for changes that need more than that.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::event::{decode, DecodeLimits, Event, LossReason, EVENT_TYPES};
use crate::time::Timestamp;

use super::account::{
    AccountGlobals, ACCOUNT_PREFIX, NOTE_ACTIVITY_SINCE_ORDER, NOTE_NOT_RENEWED, NOTE_VALUE_FELL,
};
use super::buffer::order_of;
use super::dedup::DedupChunk;
use super::fact::LeakRoute;
use super::intake::Intake;
use super::manager::ManagerGlobals;
use super::watermark::WatermarkTracker;
use super::Engine;

/// The layout of the engine's records this build writes, and the newest it reads.
/// 2: an account cites its last order, visits and lapsed contract by id, time
/// and amount only (format 1 wrote full evidence references; this build
/// reads both, a format-1 build refuses format 2 by name).
pub const STATE_FORMAT: u32 = 2;

const ENGINE_KEY: &str = "engine";
const BUFFER_PREFIX: &str = "buffer/";
const DEDUP_PREFIX: &str = "dedup/";
/// Buffered events per `buffer/<n>` record.
const BUFFER_CHUNK: usize = 2_000;
/// Remembered event ids per `dedup/<n>` record (about 15 bytes each): well
/// under the 1 MB a Kafka record may hold by default.
const DEDUP_CHUNK: u64 = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("state record `{key}` cannot be read: {source}")]
    Decode {
        key: String,
        source: rmp_serde::decode::Error,
    },
    #[error("state record `{key}` is of no kind this feidan knows")]
    UnknownKey { key: String },
    #[error("the checkpoint was written in state format {found}; this feidan reads up to {STATE_FORMAT}: upgrade it")]
    NewerFormat { found: u32 },
    #[error("the checkpoint has entities but no `{record}` record")]
    MissingGlobals { record: &'static str },
    #[error("buffered event in `{key}` no longer decodes: {reason}")]
    BufferedEvent { key: String, reason: String },
}

/// The engine's state besides its entities.
#[derive(Serialize, Deserialize)]
struct EngineGlobals {
    format: u32,
    watermark: WatermarkTracker,
    next_evaluation: Option<Timestamp>,
    forced: u64,
    dedup_counters: (u64, u64),
    accounts: AccountGlobals,
    managers: ManagerGlobals,
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Every state type serialises: no map has a key MessagePack cannot hold.
    rmp_serde::to_vec_named(value).expect("engine state serialises to MessagePack")
}

/// Decodes the record of a stage's globals, refusing one written in a
/// newer state format than this feidan reads.
pub(crate) fn decode_globals<T: DeserializeOwned>(
    key: &str,
    payload: &[u8],
) -> Result<T, RestoreError> {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let Format { format } = decode_payload(key, payload)?;
    if format > STATE_FORMAT {
        return Err(RestoreError::NewerFormat { found: format });
    }
    decode_payload(key, payload)
}

pub(crate) fn decode_payload<T: DeserializeOwned>(
    key: &str,
    payload: &[u8],
) -> Result<T, RestoreError> {
    rmp_serde::from_slice(payload).map_err(|source| RestoreError::Decode {
        key: key.to_owned(),
        source,
    })
}

impl Engine {
    /// The whole state as checkpoint records, in no particular order.
    pub fn checkpoint(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.records_besides_entities();
        self.accounts.checkpoint(&mut out);
        self.managers.checkpoint(&mut out);
        out
    }

    /// The checkpoint records that may have changed since the last call:
    /// every record except the accounts, managers and teams that did not change
    /// (at the first call, every record). A record left out is unchanged if
    /// [`Engine::holds`] its key, and gone if not. A checkpoint costs the
    /// changes, not the whole state.
    pub fn checkpoint_changes(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.records_besides_entities();
        self.accounts.checkpoint_changes(&mut out);
        self.managers.checkpoint_changes(&mut out);
        out
    }

    /// Whether the engine holds the entity of checkpoint key `key` among
    /// those [`Engine::checkpoint_changes`] lists only when they change
    /// (accounts, managers, teams).
    pub fn holds(&self, key: &str) -> bool {
        let account = key.strip_prefix(ACCOUNT_PREFIX);
        account.is_some_and(|id| self.accounts.holds(id)) || self.managers.holds(key)
    }

    /// Every record but the accounts', managers' and teams'.
    fn records_besides_entities(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.lifecycle.len() + 8);
        let globals = EngineGlobals {
            format: STATE_FORMAT,
            watermark: self.intake.watermark.clone(),
            next_evaluation: self.intake.next_evaluation,
            forced: self.intake.forced,
            dedup_counters: self.intake.dedup.counters(),
            accounts: self.accounts.globals(),
            managers: self.managers.globals(),
        };
        out.push((ENGINE_KEY.to_owned(), encode(&globals)));
        self.lifecycle.checkpoint(&mut out);
        self.intake.checkpoint_chunks(&mut out);
        out
    }

    /// An engine with the state of `records` (as [`Engine::checkpoint`] made
    /// them); with no records, a new engine. Configuration comes from
    /// `config`, not from the checkpoint: thresholds may change across a restart.
    ///
    /// # Errors
    ///
    /// A record that does not decode, of an unknown kind, or written in a
    /// newer state format.
    pub fn restore(
        config: &Config,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Engine, RestoreError> {
        let mut engine = Engine::new(config);
        let mut globals: Option<EngineGlobals> = None;
        let mut dedup_chunks = Vec::new();
        let mut entities = 0usize;
        for (key, payload) in records {
            if key == ENGINE_KEY {
                globals = Some(decode_globals(&key, &payload)?);
                continue;
            }
            entities += 1;
            let known = if let Some(id) = key.strip_prefix(ACCOUNT_PREFIX) {
                engine.accounts.restore_account(id, &payload)?;
                true
            } else {
                engine.managers.restore_record(&key, &payload)?
                    || engine.lifecycle.restore_record(&key, &payload)?
                    || engine.intake.restore_chunk(
                        &key,
                        &payload,
                        engine.limits,
                        &mut dedup_chunks,
                    )?
            };
            if !known {
                return Err(RestoreError::UnknownKey { key });
            }
        }
        match globals {
            Some(globals) => {
                let lateness = config.engine.allowed_lateness.as_secs() as i64;
                engine.intake.watermark = globals.watermark.with_lateness(lateness);
                engine.intake.next_evaluation = globals.next_evaluation;
                engine.intake.forced = globals.forced;
                engine
                    .intake
                    .dedup
                    .restore(globals.dedup_counters, dedup_chunks);
                engine.accounts.restore_globals(globals.accounts);
                engine.managers.restore_globals(globals.managers);
            }
            None if entities > 0 => {
                return Err(RestoreError::MissingGlobals { record: ENGINE_KEY })
            }
            None => {}
        }
        Ok(engine)
    }
}

impl Intake {
    /// Appends the intake's records besides its globals: the dedup memory
    /// (`dedup/<n>`) and the event buffer (`buffer/<n>`), in chunks.
    pub(crate) fn checkpoint_chunks(&self, out: &mut Vec<(String, Vec<u8>)>) {
        for (n, chunk) in self.dedup.chunks(DEDUP_CHUNK) {
            out.push((format!("{DEDUP_PREFIX}{n}"), encode(&chunk)));
        }
        // The buffer in event-time order, so chunks change little between
        // checkpoints while the watermark holds.
        let mut buffered: Vec<&Event> = self.pending.iter().collect();
        buffered.sort_by(|a, b| order_of(a).cmp(&order_of(b)));
        for (n, chunk) in buffered.chunks(BUFFER_CHUNK).enumerate() {
            let events: Vec<String> = chunk.iter().map(|e| e.to_json().to_string()).collect();
            out.push((format!("{BUFFER_PREFIX}{n}"), encode(&events)));
        }
    }

    /// Takes in record `key` if it is one of the intake's chunks (buffered
    /// events at once, dedup chunks into `dedup_chunks` for
    /// [`Dedup::restore`](super::dedup::Dedup::restore)); whether it was.
    pub(crate) fn restore_chunk(
        &mut self,
        key: &str,
        payload: &[u8],
        limits: DecodeLimits,
        dedup_chunks: &mut Vec<DedupChunk>,
    ) -> Result<bool, RestoreError> {
        if key.starts_with(DEDUP_PREFIX) {
            dedup_chunks.push(decode_payload::<DedupChunk>(key, payload)?);
        } else if key.starts_with(BUFFER_PREFIX) {
            let events: Vec<String> = decode_payload(key, payload)?;
            for json in events {
                let event = decode(json.as_bytes(), limits).map_err(|error| {
                    RestoreError::BufferedEvent {
                        key: key.to_owned(),
                        reason: error.to_string(),
                    }
                })?;
                self.pending.push(event);
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// The fixed name `name` stands for, as state keeps it: an event type, a
/// loss reason, a leak route or an account-stage note.
fn known_name<E: serde::de::Error>(name: &str) -> Result<&'static str, E> {
    let notes = [NOTE_ACTIVITY_SINCE_ORDER, NOTE_NOT_RENEWED, NOTE_VALUE_FELL];
    EVENT_TYPES
        .iter()
        .chain(&notes)
        .copied()
        .chain(LeakRoute::ALL.map(LeakRoute::as_str))
        .find(|known| *known == name)
        .or_else(|| LossReason::parse(name).map(LossReason::as_str))
        .ok_or_else(|| E::custom(format!("unknown name `{name}` in state")))
}

/// A `&'static str` that state keeps: one of the fixed names of
/// `known_name`. Named by
/// an alias so serde does not take the field for a borrowed string.
pub type StaticName = &'static str;

/// Serde for a [`StaticName`] field.
pub(crate) mod name {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(name: &&'static str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
        let name = String::deserialize(d)?;
        super::known_name(&name)
    }
}

/// Serde for an `Option<`[`StaticName`]`>` field.
pub(crate) mod optional_name {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(name: &Option<&'static str>, s: S) -> Result<S::Ok, S::Error> {
        name.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| super::known_name(&name))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::simulate::{SimConfig, Simulation};

    fn stream() -> Vec<Vec<u8>> {
        let mut simulation = Simulation::new(SimConfig {
            managers: 12,
            accounts_per_manager: 10,
            days: 240,
            seed: 5,
            ..SimConfig::default()
        });
        let mut events = Vec::new();
        while let Some(day) = simulation.next_day() {
            events.extend(day.iter().map(|e| e.to_json().to_string().into_bytes()));
        }
        events
    }

    fn feed(engine: &mut Engine, events: &[Vec<u8>], out: &mut Vec<Alert>) {
        for (i, payload) in events.iter().enumerate() {
            engine.ingest(payload, (i % 3) as i32, out);
        }
    }

    #[test]
    fn a_restored_engine_goes_on_as_the_uninterrupted_one() {
        let config = Config::defaults();
        let events = stream();
        let mut whole = Engine::new(&config);
        let mut expected = Vec::new();
        feed(&mut whole, &events, &mut expected);
        assert!(!expected.is_empty(), "the stream raises alerts");

        for cut in [events.len() / 5, events.len() / 2, events.len() - 10] {
            let mut first = Engine::new(&config);
            let mut alerts = Vec::new();
            feed(&mut first, &events[..cut], &mut alerts);
            let records = first.checkpoint();
            drop(first);
            let mut second = Engine::restore(&config, records).expect("restores");
            let rest: Vec<Vec<u8>> = events[cut..].to_vec();
            // Partitions continue where they were: offset the index.
            for (i, payload) in rest.iter().enumerate() {
                second.ingest(payload, ((cut + i) % 3) as i32, &mut alerts);
            }
            assert_eq!(alerts, expected, "cut at {cut}");
            let (a, b) = (second.stats(), whole.stats());
            assert_eq!(
                (
                    a.accounts,
                    a.managers,
                    a.remembered_event_ids,
                    a.buffered_events
                ),
                (
                    b.accounts,
                    b.managers,
                    b.remembered_event_ids,
                    b.buffered_events
                )
            );
        }
    }

    /// Checkpoints of changes, kept by the changelog, hold at every point
    /// exactly the records a whole checkpoint would: no change to an account
    /// or manager goes unlisted (silent accounts going overdue, deals
    /// stalling), and no forgotten one stays behind (tight caps and a short
    /// idle time make accounts and managers come and go).
    #[test]
    fn checkpoints_of_changes_keep_what_whole_checkpoints_keep() {
        let events = stream();
        let config = Config::defaults();
        let listed = checkpoint_changes_along(&config, &events, 80);
        assert!(listed.0 < listed.1, "{listed:?}: changes, whole");

        let mut config = Config::defaults();
        config.engine.max_accounts = 90;
        config.engine.max_managers = 9;
        config.engine.entity_ttl = std::time::Duration::from_secs(60 * 86_400);
        checkpoint_changes_along(&config, &events, 20);
    }

    /// Feeds `events` in `cuts` parts, then a day at a time of silence,
    /// checkpointing the changes after each and comparing what the changelog keeps with a whole checkpoint;
    /// returns the records listed and those whole checkpoints would have.
    fn checkpoint_changes_along(
        config: &Config,
        events: &[Vec<u8>],
        cuts: usize,
    ) -> (usize, usize) {
        use crate::changelog::{Changelog, Marker};

        let mut engine = Engine::new(config);
        let mut log = Changelog::default();
        let mut topic: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let mut alerts = Vec::new();
        let (mut listed, mut whole_records) = (0, 0);
        // The stream in parts, then days of silence (no events, no facts:
        // only evaluations change anything).
        let parts = events.chunks(events.len() / cuts + 1).map(Some);
        let silence = std::iter::repeat_n(None, 12);
        for (n, part) in parts.chain(silence).enumerate() {
            match part {
                Some(part) => feed(&mut engine, part, &mut alerts),
                None => engine.advance_idle(86_400, &mut alerts),
            }
            let changes = engine.checkpoint_changes();
            listed += changes.len();
            let marker = Marker {
                offsets: [(0, n as i64)].into(),
                ..Marker::default()
            };
            let writes = log.plan_changes(changes, marker, |key| engine.holds(key));
            topic.extend(writes.into_iter().map(|w| (w.key, w.value)));

            let mut kept = Changelog::restore(topic.clone())
                .expect("restores")
                .entities;
            let mut whole = engine.checkpoint();
            whole_records += whole.len();
            kept.sort();
            whole.sort();
            assert_eq!(kept.len(), whole.len(), "after part {n}");
            for (kept, whole) in kept.iter().zip(&whole) {
                assert_eq!(kept.0, whole.0, "after part {n}");
                assert!(kept.1 == whole.1, "after part {n}: `{}` differs", whole.0);
            }
        }
        let evictions = engine.stats().evictions;
        let capped = config.engine.max_accounts < 1000;
        let forgotten = evictions[1..].iter().all(|(_, n)| *n > 0);
        assert_eq!(capped, forgotten, "{evictions:?}");
        (listed, whole_records)
    }

    /// A checkpoint taken while one partition has delivered nothing (so
    /// every event waits in the buffer) restores into an engine that goes
    /// on exactly as the uninterrupted one.
    #[test]
    fn a_restore_while_a_silent_partition_holds_everything_back_goes_on_the_same() {
        let config = Config::defaults();
        let events = stream();
        let partition_of = |i: usize| (i % 3) as i32;
        let (held, late): (Vec<usize>, Vec<usize>) =
            (0..events.len()).partition(|i| partition_of(*i) != 2 && *i < events.len() / 3);
        let order: Vec<usize> = held.iter().chain(late.iter()).copied().collect();
        let feed_in = |engine: &mut Engine, indices: &[usize], out: &mut Vec<Alert>| {
            for i in indices {
                engine.ingest(&events[*i], partition_of(*i), out);
            }
        };
        let mut whole = Engine::new(&config);
        let mut expected = Vec::new();
        whole.assign_partitions(&[0, 1, 2], &mut expected);
        feed_in(&mut whole, &order, &mut expected);
        assert!(!expected.is_empty());

        let mut first = Engine::new(&config);
        let mut alerts = Vec::new();
        first.assign_partitions(&[0, 1, 2], &mut alerts);
        feed_in(&mut first, &held, &mut alerts);
        assert_eq!(
            first.stats().accounts,
            0,
            "everything waits for partition 2"
        );
        let records = first.checkpoint();
        let mut second = Engine::restore(&config, records).expect("restores");
        second.assign_partitions(&[0, 1, 2], &mut alerts);
        feed_in(&mut second, &late, &mut alerts);
        assert_eq!(alerts, expected);
    }

    #[test]
    fn every_fixed_name_state_keeps_reads_back() {
        type E = serde::de::value::Error;
        let names = EVENT_TYPES
            .into_iter()
            .chain(["price", "competitor", "no_decision", "other"])
            .chain(LeakRoute::ALL.map(LeakRoute::as_str))
            .chain([NOTE_ACTIVITY_SINCE_ORDER, NOTE_NOT_RENEWED, NOTE_VALUE_FELL]);
        for name in names {
            assert_eq!(known_name::<E>(name).ok(), Some(name));
        }
        assert!(known_name::<E>("widget").is_err());
    }

    #[test]
    fn no_records_is_a_new_engine_and_bad_ones_are_named() {
        let config = Config::defaults();
        let engine = Engine::restore(&config, Vec::new()).expect("empty");
        assert_eq!(engine.stats().accounts, 0);

        let error = Engine::restore(&config, vec![("widget/1".to_owned(), vec![1])])
            .err()
            .expect("unknown kind");
        assert!(error.to_string().contains("widget/1"), "{error}");

        let error = Engine::restore(&config, vec![("account/a".to_owned(), vec![0xc1])])
            .err()
            .expect("bad payload");
        assert!(error.to_string().contains("account/a"), "{error}");

        let mut records = Engine::new(&config).checkpoint();
        let mut globals: EngineGlobals = decode_payload("engine", &records[0].1).expect("globals");
        globals.format = STATE_FORMAT + 1;
        records[0].1 = encode(&globals);
        let error = Engine::restore(&config, records).err().expect("newer");
        assert!(matches!(error, RestoreError::NewerFormat { .. }), "{error}");
    }
}
