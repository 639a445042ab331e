//! The changelog protocol: how engine checkpoints are kept in the compacted
//! state topic so that a crash at any moment leaves a consistent state to
//! restore (DESIGN §6–§7). Pure bookkeeping; the Kafka edge
//! ([`crate::kafka::state`]) moves the bytes.
//!
//! A checkpoint has an *epoch* (1, 2, …). Each entity has two *slots* in
//! the topic, `<entity>#0` and `<entity>#1`, on one partition. A checkpoint
//! writes only the entities whose bytes changed, each into the slot that
//! does **not** hold its last complete version; once every write is
//! acknowledged a `checkpoint` marker records the epoch and the input
//! offsets the state corresponds to. On restore, each entity takes the
//! newest slot whose epoch is at most the marker's, so writes of an
//! unfinished checkpoint are ignored and can never have overwritten what is
//! needed. Compaction keeps the topic at two records per entity.
//!
//! Deleted entities get a deletion record in their free slot; at the next
//! checkpoint both slots are nulled (older slot first), and compaction
//! removes them.
//!
//! Record values: `[format][flag][epoch: u64 BE][payload]`, where flag is
//! live, deleted or marker; [`FORMAT`] lets a later feidan read this one's.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use serde::{Deserialize, Serialize};

/// The record layout this build writes and the newest it reads.
pub const FORMAT: u8 = 1;

/// Key of the marker record.
pub const MARKER_KEY: &str = "checkpoint";

const LIVE: u8 = 0;
const DELETED: u8 = 1;
const MARKER: u8 = 2;
const HEADER: usize = 10;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChangelogError {
    #[error("state record `{key}` was written in changelog format {found}; this feidan reads up to {FORMAT}: upgrade it")]
    NewerFormat { key: String, found: u8 },
    #[error("state record `{key}` is malformed: {reason}")]
    Malformed { key: String, reason: String },
}

/// The input positions a checkpoint's state corresponds to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub epoch: u64,
    pub input_topic: String,
    /// Partition → the next offset to consume.
    pub offsets: BTreeMap<i32, i64>,
    /// Scaled out, a source's next offset in the pace topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace_offset: Option<i64>,
}

/// One record to produce to the state topic.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// `<entity>#<slot>`, or the marker key.
    pub key: String,
    /// The state topic partition: the same for both slots of an entity.
    pub partition_hash: u64,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// What the topic holds of one entity, as far as this instance knows.
#[derive(Clone, Copy, Debug)]
struct Slots {
    /// Hash of the payload last written (0: rewrite at the next checkpoint).
    hash: u64,
    /// The slot holding the last written version.
    slot: u8,
    deleted: bool,
}

/// The writer's and restorer's view of the state topic.
#[derive(Debug, Default)]
pub struct Changelog {
    entities: HashMap<String, Slots>,
    /// The last epoch used (written or seen).
    epoch: u64,
    /// Slot keys of an unfinished checkpoint's writes, to null.
    stray: Vec<String>,
}

/// The state a restore found.
#[derive(Debug, Default)]
pub struct Restored {
    pub changelog: Changelog,
    /// The marker of the last complete checkpoint; `None` when there is none.
    pub marker: Option<Marker>,
    /// Each live entity's payload as of that checkpoint.
    pub entities: Vec<(String, Vec<u8>)>,
}

fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x6665_6964, 0x616e_7374, 0x6174_6531, 0x636c_6f67)
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = hasher().build_hasher();
    h.write(bytes);
    h.finish().max(1)
}

fn slot_key(entity: &str, slot: u8) -> String {
    format!("{entity}#{slot}")
}

fn value(flag: u8, epoch: u64, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + payload.len());
    value.push(FORMAT);
    value.push(flag);
    value.extend_from_slice(&epoch.to_be_bytes());
    value.extend_from_slice(payload);
    value
}

/// One slot's record as read: (flag, epoch, payload).
type SlotRecord = (u8, u64, Vec<u8>);

fn parse(key: &str, value: &[u8]) -> Result<SlotRecord, ChangelogError> {
    if value.len() < HEADER {
        return Err(ChangelogError::Malformed {
            key: key.to_owned(),
            reason: format!("{} bytes, shorter than the header", value.len()),
        });
    }
    if value[0] > FORMAT {
        return Err(ChangelogError::NewerFormat {
            key: key.to_owned(),
            found: value[0],
        });
    }
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&value[2..HEADER]);
    Ok((
        value[1],
        u64::from_be_bytes(epoch),
        value[HEADER..].to_vec(),
    ))
}

impl Changelog {
    /// The writes of the next checkpoint of `records` (the engine's whole
    /// state), ending with its marker. Produce them in order, the marker
    /// only once all others are acknowledged; then commit `marker.offsets`.
    pub fn plan(&mut self, records: Vec<(String, Vec<u8>)>, marker: Marker) -> Vec<Write> {
        self.plan_changes(records, marker, |_| false)
    }

    /// As [`Changelog::plan`], for `records` that list only what may have
    /// changed: an entity the topic holds that `records` leaves out is
    /// unchanged if `unchanged(entity)`, and deleted if not.
    pub fn plan_changes(
        &mut self,
        records: Vec<(String, Vec<u8>)>,
        mut marker: Marker,
        unchanged: impl Fn(&str) -> bool,
    ) -> Vec<Write> {
        self.epoch += 1;
        let epoch = self.epoch;
        let mut writes = Vec::new();
        for key in self.stray.drain(..) {
            let partition_hash = partition_hash_of_slot_key(&key);
            writes.push(Write {
                key,
                partition_hash,
                value: None,
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(records.len());
        for (entity, payload) in records {
            let hash = hash_of(&payload);
            let slots = self.entities.entry(entity.clone()).or_insert(Slots {
                hash: 0,
                slot: 1,
                deleted: true,
            });
            if slots.hash != hash || slots.deleted {
                slots.slot ^= 1;
                slots.hash = hash;
                slots.deleted = false;
                writes.push(Write {
                    key: slot_key(&entity, slots.slot),
                    partition_hash: hash_of(entity.as_bytes()),
                    value: Some(value(LIVE, epoch, &payload)),
                });
            }
            seen.insert(entity);
        }
        let mut forget = Vec::new();
        for (entity, slots) in &mut self.entities {
            if seen.contains(entity) || (!slots.deleted && unchanged(entity)) {
                continue;
            }
            let partition_hash = hash_of(entity.as_bytes());
            if slots.deleted {
                // The deletion is complete: null the older slot, then the
                // deletion record (one partition, so in that order).
                for slot in [slots.slot ^ 1, slots.slot] {
                    writes.push(Write {
                        key: slot_key(entity, slot),
                        partition_hash,
                        value: None,
                    });
                }
                forget.push(entity.clone());
            } else {
                slots.slot ^= 1;
                slots.deleted = true;
                writes.push(Write {
                    key: slot_key(entity, slots.slot),
                    partition_hash,
                    value: Some(value(DELETED, epoch, &[])),
                });
            }
        }
        for entity in forget {
            self.entities.remove(&entity);
        }
        marker.epoch = epoch;
        let payload = serde_json::to_vec(&marker).expect("a marker serialises");
        writes.push(Write {
            key: MARKER_KEY.to_owned(),
            partition_hash: 0,
            value: Some(value(MARKER, epoch, &payload)),
        });
        writes
    }

    /// Entities this instance knows to be in the topic.
    pub fn entities(&self) -> usize {
        self.entities.len()
    }

    /// Rebuilds the state from every record of the topic, read partition by
    /// partition in offset order (`None` values are tombstones).
    ///
    /// # Errors
    ///
    /// A record of a newer format, or one that is malformed.
    pub fn restore(
        records: impl IntoIterator<Item = (String, Option<Vec<u8>>)>,
    ) -> Result<Restored, ChangelogError> {
        // Latest value per slot key.
        let mut latest: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        for (key, value) in records {
            latest.insert(key, value);
        }
        let mut marker: Option<Marker> = None;
        let mut max_epoch = 0;
        let mut found: HashMap<String, [Option<SlotRecord>; 2]> = HashMap::new();
        for (key, value) in latest {
            let Some(value) = value else { continue };
            let (flag, epoch, payload) = parse(&key, &value)?;
            max_epoch = max_epoch.max(epoch);
            if key == MARKER_KEY {
                let read: Marker =
                    serde_json::from_slice(&payload).map_err(|e| ChangelogError::Malformed {
                        key: key.clone(),
                        reason: e.to_string(),
                    })?;
                marker = Some(Marker { epoch, ..read });
                continue;
            }
            let Some((entity, slot)) = key
                .rsplit_once('#')
                .and_then(|(entity, slot)| Some((entity, slot.parse::<usize>().ok()?)))
                .filter(|(_, slot)| *slot < 2)
            else {
                return Err(ChangelogError::Malformed {
                    key,
                    reason: "not `<entity>#0`, `<entity>#1` or `checkpoint`".into(),
                });
            };
            found.entry(entity.to_owned()).or_default()[slot] = Some((flag, epoch, payload));
        }

        let complete = marker.as_ref().map_or(0, |m| m.epoch);
        let mut changelog = Changelog {
            epoch: max_epoch,
            ..Changelog::default()
        };
        let mut entities = Vec::new();
        for (entity, slots) in found {
            let mut chosen: Option<(u8, u8, u64)> = None; // (slot, flag, epoch)
            for (slot, record) in slots.iter().enumerate() {
                if let Some((flag, epoch, _)) = record {
                    if *epoch > complete {
                        // From a checkpoint that never finished.
                        changelog.stray.push(slot_key(&entity, slot as u8));
                    } else if chosen.is_none_or(|(_, _, e)| *epoch > e) {
                        chosen = Some((slot as u8, *flag, *epoch));
                    }
                }
            }
            let Some((slot, flag, _)) = chosen else {
                continue;
            };
            let [first, second] = slots;
            let payload = [first, second][slot as usize]
                .take()
                .map(|(_, _, payload)| payload)
                .unwrap_or_default();
            let deleted = flag != LIVE;
            // A stray write in the other slot is nulled by the next
            // checkpoint (before anything else), whether or not the entity
            // changes: a checkpoint of changes may not list it.
            changelog.entities.insert(
                entity.clone(),
                Slots {
                    hash: hash_of(&payload),
                    slot,
                    deleted,
                },
            );
            if !deleted {
                entities.push((entity, payload));
            }
        }
        changelog.stray.sort();
        Ok(Restored {
            changelog,
            marker,
            entities,
        })
    }
}

/// The partition hash of a slot key: that of its entity.
fn partition_hash_of_slot_key(key: &str) -> u64 {
    let entity = key.rsplit_once('#').map_or(key, |(entity, _)| entity);
    hash_of(entity.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic: the writes applied in order, latest per key (as compaction
    /// would leave it), returned as restore input.
    #[derive(Default)]
    struct Topic(Vec<(String, Option<Vec<u8>>)>);

    impl Topic {
        fn append(&mut self, writes: &[Write]) {
            self.0
                .extend(writes.iter().map(|w| (w.key.clone(), w.value.clone())));
        }
    }

    fn state(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn marker(offset: i64) -> Marker {
        Marker {
            epoch: 0,
            input_topic: "in".into(),
            offsets: BTreeMap::from([(0, offset)]),
            pace_offset: None,
        }
    }

    fn restored(topic: &Topic) -> (Restored, Vec<(String, String)>) {
        let restored = Changelog::restore(topic.0.clone()).expect("restores");
        let mut entities: Vec<(String, String)> = restored
            .entities
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
            .collect();
        entities.sort();
        (restored, entities)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_changed_entities_are_written_and_the_marker_comes_last() {
        let mut log = Changelog::default();
        let first = log.plan(state(&[("a", "1"), ("b", "1")]), marker(10));
        assert_eq!(first.len(), 3);
        assert_eq!(first.last().unwrap().key, MARKER_KEY);
        let second = log.plan(state(&[("a", "1"), ("b", "2")]), marker(20));
        let keys: Vec<&str> = second.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, vec!["b#1", MARKER_KEY]);
    }

    #[test]
    fn an_unfinished_checkpoint_is_ignored_and_cleaned_up() {
        let mut log = Changelog::default();
        let mut topic = Topic::default();
        topic.append(&log.plan(state(&[("a", "1"), ("b", "1")]), marker(10)));
        topic.append(&log.plan(state(&[("a", "2"), ("b", "2")]), marker(20)));
        // The third checkpoint dies after writing `a` and a new `c`.
        let third = log.plan(state(&[("a", "3"), ("b", "3"), ("c", "3")]), marker(30));
        topic.append(&third[..1]);
        topic.append(&third[2..3]);

        let (mut restored, entities) = restored(&topic);
        assert_eq!(entities, pairs(&[("a", "2"), ("b", "2")]));
        assert_eq!(restored.marker.as_ref().unwrap().offsets[&0], 20);
        assert_eq!(restored.marker.as_ref().unwrap().epoch, 2);

        // The next checkpoint, even with nothing changed, nulls the stray
        // slots of `a` and `c`; then a restore sees the new state.
        let writes = restored
            .changelog
            .plan(state(&[("a", "2"), ("b", "2")]), marker(20));
        let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, vec!["a#0", "c#0", MARKER_KEY]);
        assert!(writes[0].value.is_none() && writes[1].value.is_none());
        topic.append(&writes);
        let (again, entities) = self::restored(&topic);
        assert_eq!(entities, pairs(&[("a", "2"), ("b", "2")]));
        assert!(again.marker.unwrap().epoch > 3);
        assert!(again.changelog.stray.is_empty());
    }

    #[test]
    fn deleted_entities_are_marked_then_nulled() {
        let mut log = Changelog::default();
        let mut topic = Topic::default();
        topic.append(&log.plan(state(&[("a", "1"), ("b", "1")]), marker(1)));
        topic.append(&log.plan(state(&[("a", "1")]), marker(2)));
        let (_, entities) = restored(&topic);
        assert_eq!(entities, pairs(&[("a", "1")]));
        let cleanup = log.plan(state(&[("a", "1")]), marker(3));
        let nulled: Vec<&str> = cleanup
            .iter()
            .filter(|w| w.value.is_none())
            .map(|w| w.key.as_str())
            .collect();
        assert_eq!(nulled, vec!["b#0", "b#1"]);
        assert_eq!(log.entities(), 1);
        topic.append(&cleanup);
        // Back again later: a live entity once more.
        topic.append(&log.plan(state(&[("a", "1"), ("b", "9")]), marker(4)));
        let (_, entities) = restored(&topic);
        assert_eq!(entities, pairs(&[("a", "1"), ("b", "9")]));
    }

    #[test]
    fn a_checkpoint_of_changes_keeps_what_it_leaves_out_only_if_still_held() {
        let mut log = Changelog::default();
        let mut topic = Topic::default();
        topic.append(&log.plan(state(&[("a", "1"), ("b", "1"), ("c", "1")]), marker(1)));
        // `a` changed, `b` is held unchanged, `c` is gone.
        let writes = log.plan_changes(state(&[("a", "2")]), marker(2), |e| e == "b");
        let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, vec!["a#1", "c#1", MARKER_KEY]);
        topic.append(&writes);
        let (mut restored, entities) = restored(&topic);
        assert_eq!(entities, pairs(&[("a", "2"), ("b", "1")]));

        // A crash in the middle of the next one: its stray write is nulled
        // by the one after, though that one lists nothing (which also ends
        // `c`'s deletion).
        let writes = restored
            .changelog
            .plan_changes(state(&[("b", "3")]), marker(3), |_| true);
        topic.append(&writes[..1]);
        let (mut again, entities) = self::restored(&topic);
        assert_eq!(entities, pairs(&[("a", "2"), ("b", "1")]));
        let writes = again
            .changelog
            .plan_changes(Vec::new(), marker(4), |_| true);
        let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, vec!["b#1", "c#0", "c#1", MARKER_KEY]);
        assert!(writes[..3].iter().all(|w| w.value.is_none()));
        topic.append(&writes);
        let (_, entities) = self::restored(&topic);
        assert_eq!(entities, pairs(&[("a", "2"), ("b", "1")]));
    }

    #[test]
    fn a_crash_at_every_write_restores_one_complete_checkpoint() {
        // Three checkpoints; the topic cut after every single write.
        let states = [
            state(&[("a", "1"), ("b", "1"), ("c", "1")]),
            state(&[("a", "2"), ("c", "1"), ("d", "2")]),
            state(&[("a", "3"), ("b", "3"), ("d", "2")]),
        ];
        let mut log = Changelog::default();
        let mut all = Vec::new();
        let mut complete_after = Vec::new();
        for (i, s) in states.iter().enumerate() {
            all.extend(log.plan(s.clone(), marker(i as i64)));
            complete_after.push(all.len());
        }
        for cut in 0..=all.len() {
            let mut topic = Topic::default();
            topic.append(&all[..cut]);
            let (restored, entities) = restored(&topic);
            let done = complete_after.iter().filter(|n| **n <= cut).count();
            let expected: Vec<(String, String)> = match done {
                0 => Vec::new(),
                n => {
                    let mut e: Vec<(String, String)> = states[n - 1]
                        .iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
                        .collect();
                    e.sort();
                    e
                }
            };
            assert_eq!(entities, expected, "cut after {cut} writes");
            assert_eq!(
                restored.marker.map(|m| m.epoch),
                (done > 0).then_some(done as u64)
            );

            // Going on after the restart, and crashing again half-way
            // through the next checkpoint, still restores a complete one.
            let mut log = restored.changelog;
            let next = state(&[("a", "4"), ("c", "4"), ("e", "4")]);
            let writes = log.plan(next.clone(), marker(9));
            topic.append(&writes);
            let (_, entities) = self::restored(&topic);
            let mut want: Vec<(String, String)> = next
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
                .collect();
            want.sort();
            assert_eq!(entities, want, "after restart at {cut}");
            let (mut again, _) = self::restored(&topic);
            let half = again.changelog.plan(state(&[("a", "5")]), marker(10));
            topic.append(&half[..half.len() / 2]);
            let (_, entities) = self::restored(&topic);
            assert_eq!(entities, want, "second crash after restart at {cut}");
        }
    }

    #[test]
    fn records_of_a_newer_format_are_refused_by_name() {
        let mut bad = value(LIVE, 1, b"x");
        bad[0] = FORMAT + 1;
        let error = Changelog::restore(vec![("a#0".to_owned(), Some(bad))]).unwrap_err();
        assert!(error.to_string().contains("`a#0`"), "{error}");
        assert!(matches!(error, ChangelogError::NewerFormat { .. }));
        let error =
            Changelog::restore(vec![("a#7".to_owned(), Some(value(LIVE, 1, b"x")))]).unwrap_err();
        assert!(matches!(error, ChangelogError::Malformed { .. }));
    }
}
