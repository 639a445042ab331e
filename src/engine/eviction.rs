//! Choosing what to forget when a stage is at its cap: the least recently
//! seen of a small sample, in constant time. Stages keep their entities in
//! insertion order (an `IndexMap`), and the sample positions come from a
//! pseudo-random sequence seeded the same in every process, so a replay of
//! the same input forgets the same entities.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Entities looked at per eviction.
const SAMPLE: usize = 16;

/// The pseudo-random sequence of sample positions.
#[derive(Debug)]
pub struct EvictionSampler(SmallRng);

impl Default for EvictionSampler {
    fn default() -> Self {
        EvictionSampler(SmallRng::seed_from_u64(0x6665_6964_616e))
    }
}

impl EvictionSampler {
    /// The position, among `len` entities, of the one of least `rank` in a
    /// sample spread over them all; `None` when there are none. Spread, not
    /// a stretch: the order is insertion order, so a stretch would often
    /// hold only entities of one age, and a fixed one would keep finding
    /// the entities the last evictions moved there.
    pub fn pick<K: Ord>(&mut self, len: usize, rank: impl Fn(usize) -> K) -> Option<usize> {
        if len == 0 {
            return None;
        }
        (0..SAMPLE)
            .map(|_| self.0.gen_range(0..len))
            .min_by_key(|i| rank(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_finds_the_idlest_often_and_is_the_same_in_every_sampler() {
        // Ranks are the positions: the least of 16 of 1000 is usually low.
        let mut sampler = EvictionSampler::default();
        let picks: Vec<usize> = (0..200)
            .map(|_| sampler.pick(1000, |i| i).unwrap())
            .collect();
        let low = picks.iter().filter(|i| **i < 200).count();
        assert!(low > 180, "{low} of 200 picks in the idlest fifth");
        let mut again = EvictionSampler::default();
        let repeat: Vec<usize> = (0..200).map(|_| again.pick(1000, |i| i).unwrap()).collect();
        assert_eq!(picks, repeat);
        assert_eq!(sampler.pick(0, |i| i), None);
    }
}
