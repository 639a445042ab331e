//! Rolling event-time statistics as compact daily buckets keyed by UTC day,
//! summed over any day range and pruned as the watermark passes. Never a
//! growing list of events.

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign, Range, Sub};

/// Won and lost deal counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WinLoss {
    pub won: u64,
    pub lost: u64,
}

impl WinLoss {
    pub fn closed(self) -> u64 {
        self.won + self.lost
    }

    /// Won / closed, or `None` when nothing closed.
    pub fn rate(self) -> Option<f64> {
        (self.closed() > 0).then(|| self.won as f64 / self.closed() as f64)
    }
}

impl Add for WinLoss {
    type Output = WinLoss;
    fn add(self, other: WinLoss) -> WinLoss {
        WinLoss {
            won: self.won + other.won,
            lost: self.lost + other.lost,
        }
    }
}

impl AddAssign for WinLoss {
    fn add_assign(&mut self, other: WinLoss) {
        *self = *self + other;
    }
}

impl Sub for WinLoss {
    type Output = WinLoss;
    /// Saturating: a part is never more than its whole here, but a bucket
    /// pruned on one side and not the other must not wrap around.
    fn sub(self, other: WinLoss) -> WinLoss {
        WinLoss {
            won: self.won.saturating_sub(other.won),
            lost: self.lost.saturating_sub(other.lost),
        }
    }
}

/// Daily buckets of `T`, keyed by day number.
#[derive(Clone, Debug)]
pub struct DailyBuckets<T> {
    buckets: BTreeMap<i64, T>,
}

impl<T> Default for DailyBuckets<T> {
    fn default() -> Self {
        DailyBuckets {
            buckets: BTreeMap::new(),
        }
    }
}

impl<T: Copy + Default + AddAssign> DailyBuckets<T> {
    /// Adds `value` to the bucket of `day`.
    pub fn add(&mut self, day: i64, value: T) {
        *self.buckets.entry(day).or_default() += value;
    }

    /// The sum over the days in `days` (start inclusive, end exclusive).
    pub fn sum(&self, days: Range<i64>) -> T {
        let mut total = T::default();
        if days.start < days.end {
            for value in self.buckets.range(days).map(|(_, v)| *v) {
                total += value;
            }
        }
        total
    }

    /// Drops every bucket before `day`.
    pub fn prune_before(&mut self, day: i64) {
        self.buckets = self.buckets.split_off(&day);
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A range sum over the buckets equals the naive sum over the events.
        #[test]
        fn range_sums_equal_the_naive_sum(
            events in proptest::collection::vec((0i64..400, any::<bool>()), 0..300),
            start in 0i64..400,
            len in 0i64..400,
            prune in 0i64..200,
        ) {
            let mut buckets = DailyBuckets::default();
            for (day, won) in &events {
                buckets.add(*day, WinLoss { won: u64::from(*won), lost: u64::from(!*won) });
            }
            buckets.prune_before(prune);
            let range = start..start + len;
            let naive = events
                .iter()
                .filter(|(day, _)| range.contains(day) && *day >= prune)
                .fold(WinLoss::default(), |acc, (_, won)| acc + WinLoss { won: u64::from(*won), lost: u64::from(!*won) });
            prop_assert_eq!(buckets.sum(range), naive);
        }
    }
}
