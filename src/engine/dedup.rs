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
        }
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
