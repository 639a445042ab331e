//! Rolling event-time statistics as compact daily buckets keyed by UTC day,
//! summed over any day range and pruned as the watermark passes. Never a
//! growing list of events.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::ops::{Add, AddAssign, Range, Sub};

/// A proportion's counts: `hits` of `total` (won of closed deals, leaked
/// of deals leaving the pipeline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub hits: u64,
    pub total: u64,
}

impl Tally {
    pub fn hit() -> Tally {
        Tally { hits: 1, total: 1 }
    }

    pub fn miss() -> Tally {
        Tally { hits: 0, total: 1 }
    }

    pub fn misses(self) -> u64 {
        self.total - self.hits
    }

    /// hits / total, or `None` when the total is zero.
    pub fn rate(self) -> Option<f64> {
        (self.total > 0).then(|| self.hits as f64 / self.total as f64)
    }
}

impl Add for Tally {
    type Output = Tally;
    fn add(self, other: Tally) -> Tally {
        Tally {
            hits: self.hits + other.hits,
            total: self.total + other.total,
        }
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        *self = *self + other;
    }
}

impl Sub for Tally {
    type Output = Tally;
    /// Saturating: a part is never more than its whole here, but a bucket
    /// pruned on one side and not the other must not wrap around.
    fn sub(self, other: Tally) -> Tally {
        let total = self.total.saturating_sub(other.total);
        Tally {
            hits: self.hits.saturating_sub(other.hits).min(total),
            total,
        }
    }
}

/// Daily buckets of `T`, keyed by day number. Each bucket also keeps the
/// running total up to and including it, so a sum over any day range is two
/// binary searches, not a walk over the days. The buckets are a sorted
/// deque: adding to the newest day — the usual case, events arrive in time
/// order — touches the back, pruning pops the front, and a late event
/// updates the running totals of the days after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(
    from = "BucketMap<T>",
    into = "BucketMap<T>",
    bound(
        serialize = "T: Clone + Serialize",
        deserialize = "T: Deserialize<'de>"
    )
)]
pub struct DailyBuckets<T> {
    /// (day, that day's value, running total through that day), by day.
    buckets: VecDeque<(i64, T, T)>,
}

/// How buckets are checkpointed: day → (value, running total). The form
/// predates the deque and is kept so older checkpoints restore.
type BucketMap<T> = BTreeMap<i64, (T, T)>;

impl<T> From<BucketMap<T>> for DailyBuckets<T> {
    fn from(map: BucketMap<T>) -> Self {
        DailyBuckets {
            buckets: map
                .into_iter()
                .map(|(day, (value, total))| (day, value, total))
                .collect(),
        }
    }
}

impl<T> From<DailyBuckets<T>> for BucketMap<T> {
    fn from(buckets: DailyBuckets<T>) -> Self {
        buckets
            .buckets
            .into_iter()
            .map(|(day, value, total)| (day, (value, total)))
            .collect()
    }
}

impl<T> Default for DailyBuckets<T> {
    fn default() -> Self {
        DailyBuckets {
            buckets: VecDeque::new(),
        }
    }
}

impl<T: Copy + Default + AddAssign + Sub<Output = T>> DailyBuckets<T> {
    /// Adds `value` to the bucket of `day`.
    pub fn add(&mut self, day: i64, value: T) {
        // The usual case first: the newest day, or a day after it.
        match self.buckets.back_mut() {
            Some((last, own, total)) if *last == day => {
                *own += value;
                *total += value;
                return;
            }
            Some((last, _, total)) if *last < day => {
                let mut through = *total;
                through += value;
                self.buckets.push_back((day, value, through));
                return;
            }
            _ => {}
        }
        let at = self.count_before(day);
        if self.buckets.get(at).is_none_or(|(d, ..)| *d != day) {
            let before = self.total_before(day);
            self.buckets.insert(at, (day, T::default(), before));
        }
        self.buckets[at].1 += value;
        for (_, _, total) in self.buckets.range_mut(at..) {
            *total += value;
        }
    }

    /// The running total of every bucket before `day`. Before the first
    /// bucket still held, that is its running total less its own value (the
    /// pruned buckets' share).
    fn total_before(&self, day: i64) -> T {
        match self.count_before(day) {
            0 => self
                .buckets
                .front()
                .map_or(T::default(), |(_, value, total)| *total - *value),
            i => self.buckets[i - 1].2,
        }
    }

    /// How many buckets hold days before `day`. The days asked for are
    /// mostly at the ends — a window's start after pruning at the front,
    /// recent windows' bounds near the back — so the front is checked first
    /// and the back is searched by galloping: a few neighbouring buckets
    /// read instead of a binary search's scattered ones.
    fn count_before(&self, day: i64) -> usize {
        match self.buckets.front() {
            Some((first, ..)) if *first < day => {}
            _ => return 0,
        }
        // Buckets from `high` on are all on or after `day`; the front is not.
        let (mut high, mut step) = (self.buckets.len(), 1);
        let mut low = loop {
            let probe = high.saturating_sub(step);
            if self.buckets[probe].0 < day {
                break probe + 1;
            }
            high = probe;
            step *= 2;
        };
        while low < high {
            let mid = low + (high - low) / 2;
            if self.buckets[mid].0 < day {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// The sum over the days in `days` (start inclusive, end exclusive).
    pub fn sum(&self, days: Range<i64>) -> T {
        Self::between(&days, |day| self.total_before(day))
    }

    /// The sum over `days` from running totals before a day: nothing over
    /// an empty range.
    fn between(days: &Range<i64>, mut total_before: impl FnMut(i64) -> T) -> T {
        if days.start >= days.end {
            return T::default();
        }
        let end = total_before(days.end);
        end - total_before(days.start)
    }

    /// Drops every bucket before `day`. Running totals stay as they are:
    /// only their differences are ever used.
    pub fn prune_before(&mut self, day: i64) {
        while self.buckets.front().is_some_and(|(d, ..)| *d < day) {
            self.buckets.pop_front();
        }
    }

    /// The sums over `history` and over each of `recent`. Ranges that
    /// share a bound (recent windows ending at the same day, the history
    /// ending where the longest one starts) search for it once.
    pub fn sums<const N: usize>(
        &self,
        history: &Range<i64>,
        recent: &[Range<i64>; N],
    ) -> (T, [T; N]) {
        // Bounds already looked up (at most 8 kept, on the stack).
        let mut known = [(0i64, T::default()); 8];
        let mut count = 0;
        let mut total_before = |day: i64| {
            if let Some((_, total)) = known[..count].iter().find(|(d, _)| *d == day) {
                return *total;
            }
            let total = self.total_before(day);
            if count < known.len() {
                known[count] = (day, total);
                count += 1;
            }
            total
        };
        let mut sum = |days: &Range<i64>| Self::between(days, &mut total_before);
        let history = sum(history);
        (history, std::array::from_fn(|i| sum(&recent[i])))
    }

    /// The value of each day in `days`, in order (default where no bucket):
    /// one walk over the buckets, not a search per day.
    pub fn each_day(&self, days: Range<i64>) -> Vec<T> {
        let mut values = vec![T::default(); (days.end - days.start).max(0) as usize];
        let first = self.buckets.partition_point(|(d, ..)| *d < days.start);
        for (day, value, _) in self.buckets.range(first..) {
            if *day >= days.end {
                break;
            }
            values[(day - days.start) as usize] = *value;
        }
        values
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
                buckets.add(*day, if *won { Tally::hit() } else { Tally::miss() });
            }
            buckets.prune_before(prune);
            let range = start..start + len;
            let naive = events
                .iter()
                .filter(|(day, _)| range.contains(day) && *day >= prune)
                .fold(Tally::default(), |acc, (_, won)| acc + if *won { Tally::hit() } else { Tally::miss() });
            prop_assert_eq!(buckets.sum(range.clone()), naive);
            let (history, [recent]) = buckets.sums(&(0..start), std::array::from_ref(&range));
            prop_assert_eq!(recent, naive);
            prop_assert_eq!(history, buckets.sum(0..start));
            // Windows sharing their end, as the detectors ask for them.
            let end = start + len;
            let nested = [end - len / 3..end, end - 2 * len / 3..end, start..end];
            let (before, sums) = buckets.sums(&(start - 50..start), &nested);
            prop_assert_eq!(before, buckets.sum(start - 50..start));
            for (window, total) in nested.iter().zip(sums) {
                prop_assert_eq!(total, buckets.sum(window.clone()));
            }
            // Day by day, the same as a sum over each day.
            let days = buckets.each_day(range.clone());
            prop_assert_eq!(days.len(), len as usize);
            for (day, value) in range.zip(days) {
                prop_assert_eq!(value, buckets.sum(day..day + 1));
            }
        }
    }

    proptest! {
        /// The search counts what a scan of the buckets counts, for days
        /// before, among, between and after the buckets'.
        #[test]
        fn counts_before_a_day_as_a_scan_does(
            days in proptest::collection::vec(-50i64..500, 0..200),
            prune in -60i64..300,
            asked in proptest::collection::vec(-100i64..600, 1..40),
        ) {
            let mut buckets = DailyBuckets::default();
            for day in &days {
                buckets.add(*day, 1u64);
            }
            buckets.prune_before(prune);
            for day in asked.into_iter().chain([i64::MIN, i64::MAX]) {
                let scanned = buckets.buckets.iter().filter(|(d, ..)| *d < day).count();
                prop_assert_eq!(buckets.count_before(day), scanned);
            }
        }
    }

    /// Checkpoints keep the map form older versions wrote.
    #[test]
    fn checkpoints_in_the_map_form_and_restores_from_it() {
        let mut buckets = DailyBuckets::default();
        buckets.add(12, 5u64);
        buckets.add(10, 2);
        buckets.add(12, 1);
        let json = serde_json::to_string(&buckets).unwrap();
        assert_eq!(json, r#"{"10":[2,2],"12":[6,8]}"#);
        let back: DailyBuckets<u64> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sum(0..20), 8);
        assert_eq!(back.sum(11..13), 6);
    }
}
