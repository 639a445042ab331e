//! Bounded memory of event ids already applied, so a redelivered or repeated
//! event is counted once (DESIGN §2). Ids are kept as 64-bit hashes, in
//! arrival order, and forgotten first-in first-out when the capacity is
//! reached or when they fall further behind the watermark than the horizon.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};

use crate::time::Timestamp;

/// Fixed seeds: the same id hashes the same in every process, so the memory
/// can be checkpointed and restored.
const SEEDS: (u64, u64, u64, u64) = (0x6665_6964_616e, 0x9e37_79b9, 0x85eb_ca6b, 0xc2b2_ae35);

#[derive(Clone, Debug)]
pub struct Dedup {
    capacity: usize,
    horizon: i64,
    seen: HashSet<u64, ahash::RandomState>,
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
            seen: HashSet::with_hasher(hasher.clone()),
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
        if !self.seen.insert(key) {
            return false;
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
        if let Some((key, _)) = self.order.pop_front() {
            self.seen.remove(&key);
            self.evicted += 1;
            self.forgotten += 1;
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
        for chunk in chunks {
            for (i, (key, at)) in chunk.ids.into_iter().enumerate() {
                if chunk.start + i as u64 >= forgotten && self.seen.insert(key) {
                    self.order.push_back((key, at));
                }
            }
        }
        self.forgotten = forgotten;
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
                prop_assert_eq!(d.seen.len(), d.order.len());
            }
        }
    }
}
