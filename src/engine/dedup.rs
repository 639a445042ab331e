//! Bounded memory of event ids already applied, so a redelivered or repeated
//! event is counted once (DESIGN §2). Ids are kept as 64-bit hashes, in
//! arrival order, and forgotten first-in first-out when the capacity is
//! reached or when they fall further behind the watermark than the horizon.
//!
//! Forgetting an id only moves a counter: the id's entry in the table says
//! when it arrived, and one that arrived before the oldest remembered is
//! forgotten. Stale entries are swept out together once there is one for
//! every two remembered ids. Removing each id as it is forgotten cost one
//! more lookup into a table far bigger than the caches, for every event.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use crate::time::Timestamp;

/// Fixed seeds: the same id hashes the same in every process, so the memory
/// can be checkpointed and restored.
const SEEDS: (u64, u64, u64, u64) = (0x6665_6964_616e, 0x9e37_79b9, 0x85eb_ca6b, 0xc2b2_ae35);

#[derive(Clone, Debug)]
pub struct Dedup {
    capacity: usize,
    horizon: i64,
    /// Each id's arrival number; below `forgotten`, the id is forgotten.
    seen: HashMap<u64, u64, ahash::RandomState>,
    order: VecDeque<(u64, Timestamp)>,
    hasher: ahash::RandomState,
    evicted: u64,
    /// Ids forgotten so far: the arrival number of the oldest remembered id,
    /// so a checkpoint can be written in fixed chunks of arrival order.
    forgotten: u64,
}

/// Arrival-ordered ids of one checkpoint chunk, from arrival number `start`.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DedupChunk {
    pub start: u64,
    pub ids: Vec<(u64, Timestamp)>,
}

impl Dedup {
    pub fn new(capacity: usize, horizon_secs: i64) -> Self {
        let hasher = ahash::RandomState::with_seeds(SEEDS.0, SEEDS.1, SEEDS.2, SEEDS.3);
        Dedup {
            capacity,
            horizon: horizon_secs,
            seen: HashMap::with_hasher(hasher.clone()),
            order: VecDeque::new(),
            hasher,
            evicted: 0,
            forgotten: 0,
        }
    }

    /// Records `event_id`; returns `false` when it was already remembered.
    pub fn insert(&mut self, event_id: &str, at: Timestamp) -> bool {
        let mut h = self.hasher.build_hasher();
        h.write(event_id.as_bytes());
        let key = h.finish();
        self.sweep_if_stale();
        let arrival = self.forgotten + self.order.len() as u64;
        match self.seen.entry(key) {
            Entry::Occupied(mut held) => {
                if *held.get() >= self.forgotten {
                    return false;
                }
                held.insert(arrival);
            }
            Entry::Vacant(new) => {
                new.insert(arrival);
            }
        }
        self.order.push_back((key, at));
        while self.order.len() > self.capacity {
            self.pop_oldest();
        }
        true
    }

    /// Forgets ids of events older than `watermark - horizon`.
    pub fn expire(&mut self, watermark: Timestamp) {
        let cutoff = watermark.plus(-self.horizon);
        while self.order.front().is_some_and(|(_, at)| *at < cutoff) {
            self.pop_oldest();
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Ids forgotten because the capacity was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn pop_oldest(&mut self) {
        if self.order.pop_front().is_some() {
            self.evicted += 1;
            self.forgotten += 1;
        }
    }

    /// Drops the forgotten ids' entries once there is one for every two
    /// remembered: a pass over the table for every half of the remembered
    /// ids that arrived. With the tombstones a sweep leaves, the table takes
    /// twice the buckets one of the remembered ids alone would (a million:
    /// 2^22 of 16 bytes, 64 MiB, where removing each id kept 2^21 of 8).
    fn sweep_if_stale(&mut self) {
        let live = self.order.len();
        if self.seen.len() >= live + live / 2 + 16 {
            let forgotten = self.forgotten;
            self.seen.retain(|_, arrival| *arrival >= forgotten);
        }
    }

    /// The remembered ids in chunks of `size` by arrival number: chunk `n`
    /// holds arrivals `n·size .. (n+1)·size` still remembered. Only the
    /// newest and oldest chunks change between checkpoints.
    pub fn chunks(&self, size: u64) -> Vec<(u64, DedupChunk)> {
        let mut chunks: Vec<(u64, DedupChunk)> = Vec::new();
        for (i, id) in self.order.iter().enumerate() {
            let arrival = self.forgotten + i as u64;
            let n = arrival / size;
            match chunks.last_mut() {
                Some((last, chunk)) if *last == n => chunk.ids.push(*id),
                _ => chunks.push((
                    n,
                    DedupChunk {
                        start: arrival,
                        ids: vec![*id],
                    },
                )),
            }
        }
        chunks
    }

    /// The counters a checkpoint keeps besides the chunks: (forgotten, evicted).
    pub fn counters(&self) -> (u64, u64) {
        (self.forgotten, self.evicted)
    }

    /// Rebuilds the memory from checkpointed chunks and counters; arrivals
    /// before `forgotten` (forgotten after their chunk was written) are left out.
    pub fn restore(&mut self, counters: (u64, u64), mut chunks: Vec<DedupChunk>) {
        let (forgotten, evicted) = counters;
        chunks.sort_by_key(|c| c.start);
        self.seen.clear();
        self.order.clear();
        self.forgotten = forgotten;
        for chunk in chunks {
            for (i, (key, at)) in chunk.ids.into_iter().enumerate() {
                if chunk.start + (i as u64) < forgotten {
                    continue;
                }
                if let Entry::Vacant(new) = self.seen.entry(key) {
                    new.insert(forgotten + self.order.len() as u64);
                    self.order.push_back((key, at));
                }
            }
        }
        self.evicted = evicted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeats_are_recognised_until_forgotten() {
        let mut d = Dedup::new(2, 100);
        assert!(d.insert("a", Timestamp(0)));
        assert!(!d.insert("a", Timestamp(0)));
        assert!(d.insert("b", Timestamp(50)));
        assert!(d.insert("c", Timestamp(60)));
        assert!(
            d.insert("a", Timestamp(70)),
            "a was pushed out by the capacity"
        );
        d.expire(Timestamp(165));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn forgotten_ids_do_not_grow_the_table() {
        let mut d = Dedup::new(1_000, i64::MAX / 4);
        for i in 0..1_000_000 {
            d.insert(&format!("e{i}"), Timestamp(0));
        }
        assert_eq!(d.len(), 1_000);
        // A table of the thousand ids alone takes 2,048 buckets; the stale
        // ones, and the tombstones sweeping leaves, double it at most once
        // (4,096 buckets, room for 3,584).
        assert!(d.seen.capacity() <= 3_584, "{}", d.seen.capacity());
    }

    #[test]
    fn chunks_restore_the_same_memory() {
        let mut d = Dedup::new(5, 1_000);
        for i in 0..12 {
            d.insert(&format!("e{i}"), Timestamp(i));
        }
        let chunks = d.chunks(4);
        assert_eq!(
            chunks.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let mut restored = Dedup::new(5, 1_000);
        restored.restore(d.counters(), chunks.into_iter().map(|(_, c)| c).collect());
        assert_eq!(restored.order, d.order);
        assert!(!restored.insert("e11", Timestamp(11)));
        assert!(
            restored.insert("e3", Timestamp(11)),
            "forgotten before the checkpoint"
        );
        assert_eq!(restored.counters().1, d.counters().1 + 1);
    }

    proptest! {
        #[test]
        fn capacity_is_never_exceeded(ids in proptest::collection::vec(0u16..500, 0..2000), cap in 1usize..64) {
            let mut d = Dedup::new(cap, i64::MAX / 4);
            for id in ids {
                d.insert(&id.to_string(), Timestamp(0));
                prop_assert!(d.len() <= cap);
                let remembered = d.seen.values().filter(|a| **a >= d.forgotten).count();
                prop_assert_eq!(remembered, d.order.len());
                // Bounded by what is remembered, not by what was inserted.
                prop_assert!(d.seen.capacity() <= 4 * (cap + cap / 2 + 16), "{}", d.seen.capacity());
            }
        }

        /// Against a plain list of ids, forgotten from the front by the
        /// capacity and the horizon: the same answers, through sweeps of
        /// stale entries (a small capacity and many ids make many) and a
        /// restore from chunks partway.
        #[test]
        fn remembers_exactly_what_a_list_would(
            steps in proptest::collection::vec((0u16..3000, 0i64..40, any::<bool>()), 0..6000),
            cap in 1usize..2000,
            restore_at in 0usize..6000,
        ) {
            let horizon = 500;
            let mut d = Dedup::new(cap, horizon);
            let mut list: VecDeque<(u16, Timestamp)> = VecDeque::new();
            let mut now = 0;
            for (n, (id, advance, expire)) in steps.into_iter().enumerate() {
                if n == restore_at {
                    let mut restored = Dedup::new(cap, horizon);
                    restored.restore(d.counters(), d.chunks(64).into_iter().map(|(_, c)| c).collect());
                    d = restored;
                }
                now += advance;
                let at = Timestamp(now);
                let new = !list.iter().any(|(held, _)| *held == id);
                prop_assert_eq!(d.insert(&id.to_string(), at), new, "id {} at step {}", id, n);
                if new {
                    list.push_back((id, at));
                    while list.len() > cap {
                        list.pop_front();
                    }
                }
                if expire {
                    d.expire(at);
                    while list.front().is_some_and(|(_, t)| *t < Timestamp(now - horizon)) {
                        list.pop_front();
                    }
                }
                prop_assert_eq!(d.len(), list.len());
            }
        }
    }
}
