//! Business time: how fast the company orders against its usual pace, so
//! that a company-wide lull slows the clock an account's silence is
//! measured on (DESIGN §4: a holiday lull must not page).
//!
//! Orders alone cannot tell a lull from a company that is losing customers:
//! either places fewer orders. In a lull the customers still ordering order
//! less often; in a shrinking company (or one whose managers divert many
//! accounts) fewer customers order, each at their usual pace, and the clock
//! must not slow, or the very accounts that left are judged on a clock
//! their own leaving slowed. So the pace is the company's orders per day
//! against its usual rate, divided by the same ratio of the orders the
//! accounts still ordering would place at their own rhythms (each an
//! account with a learnt rhythm that is not churning, at one order per
//! mean gap), as the evaluations sample it, when that ratio fell (more
//! rhythms learnt than before is a growing customer base, not a lull).
//! The expected orders are summed
//! exactly ([`ExpectedOrders`]), so the company's sum is the same however
//! the accounts are split across threads or processes.

use serde::{Deserialize, Serialize};
use std::ops::{AddAssign, Sub};

use crate::time::Timestamp;

use super::account::ExpectedOrders;
use super::calibration::TailCounts;
use super::window::DailyBuckets;

/// Samples of the orders per day the company's accounts still ordering
/// expect, one per evaluation, summed per day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StillOrdering {
    pub expected: ExpectedOrders,
    pub samples: u64,
}

impl StillOrdering {
    /// One evaluation's sample.
    pub fn sample(expected: ExpectedOrders) -> StillOrdering {
        StillOrdering {
            expected,
            samples: 1,
        }
    }

    /// The mean expected orders per day, when sampled and not zero.
    fn per_day(self) -> Option<f64> {
        (self.samples > 0 && self.expected > ExpectedOrders::default())
            .then(|| self.expected.get() / self.samples as f64)
    }
}

impl AddAssign for StillOrdering {
    fn add_assign(&mut self, other: StillOrdering) {
        self.expected += other.expected;
        self.samples += other.samples;
    }
}

impl Sub for StillOrdering {
    type Output = StillOrdering;
    /// Saturating, as [`super::window::Tally`]'s.
    fn sub(self, other: StillOrdering) -> StillOrdering {
        StillOrdering {
            expected: self.expected.without(other.expected),
            samples: self.samples.saturating_sub(other.samples),
        }
    }
}

/// The company's orders placed per day and the samples of its expected
/// orders: a stage's own, or the whole company's gathered from every
/// source's shares when feidan is scaled out.
#[derive(Clone, Copy)]
pub struct CompanyOrders<'a> {
    pub placed: &'a DailyBuckets<u64>,
    pub expected: &'a DailyBuckets<StillOrdering>,
    /// The gaps ended by orders, for the tails' calibration (see
    /// `calibration`).
    pub tails: &'a DailyBuckets<TailCounts>,
}

/// Prefix sums over the days from `first_day`: `prefix[i]` is the sum of
/// days `first_day .. first_day + i`.
struct Prefix<T> {
    first_day: i64,
    prefix: Vec<T>,
}

impl<T: Copy + Default + AddAssign + Sub<Output = T>> Prefix<T> {
    fn of(buckets: &DailyBuckets<T>, days: std::ops::Range<i64>) -> Prefix<T> {
        let mut prefix = Vec::with_capacity((days.end - days.start + 1).max(1) as usize);
        let mut total = T::default();
        prefix.push(total);
        for value in buckets.each_day(days.clone()) {
            total += value;
            prefix.push(total);
        }
        Prefix {
            first_day: days.start,
            prefix,
        }
    }

    fn sum(&self, from: i64, until: i64) -> T {
        let index =
            |day: i64| (day - self.first_day).clamp(0, self.prefix.len() as i64 - 1) as usize;
        self.prefix[index(until)] - self.prefix[index(from)]
    }
}

/// The company's order pace: orders per day over a span against its usual
/// rate, and the same of the orders expected of the accounts still
/// ordering, from prefix sums built once per evaluation.
pub struct CompanyPace {
    first_day: i64,
    orders: Prefix<u64>,
    expected: Prefix<StillOrdering>,
    baseline_days: i64,
}

impl CompanyPace {
    pub fn new(company: CompanyOrders<'_>, at: Timestamp, baseline_days: i64) -> CompanyPace {
        let end = at.day();
        // Two baselines back covers a silence as long as one baseline.
        let first_day = end - 2 * baseline_days.max(1);
        CompanyPace {
            first_day,
            orders: Prefix::of(company.placed, first_day..end),
            expected: Prefix::of(company.expected, first_day..end),
            baseline_days,
        }
    }

    /// How fast business time ran over `[from, until)` against the usual
    /// pace of the baseline before `from`: at most 1 (a busy spell does not
    /// make silence more damning), and 1 without enough baseline. Where the
    /// evaluations sampled the expected orders both in the span and in the
    /// baseline, the fall in orders the accounts still ordering explain
    /// does not slow it.
    pub fn ratio(&self, from: i64, until: i64) -> f64 {
        let span = (until - from).max(1);
        let baseline_from = from - self.baseline_days;
        if baseline_from < self.first_day {
            return 1.0;
        }
        let usual = self.orders.sum(baseline_from, from) as f64 / self.baseline_days as f64;
        if usual < 1.0 {
            return 1.0;
        }
        let now = self.orders.sum(from, until) as f64 / span as f64;
        let expected = (
            self.expected.sum(from, until).per_day(),
            self.expected.sum(baseline_from, from).per_day(),
        );
        // Only a fall counts: more accounts expected to order than in the
        // baseline mostly means more rhythms learnt (a growing customer
        // base, a new hire's book), whose orders counted before their
        // rhythms did, and must not read as a lull.
        let still_ordering = match expected {
            (Some(now), Some(usual)) => (now / usual).min(1.0),
            _ => 1.0,
        };
        (now / usual / still_ordering).clamp(0.1, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_day(day)` orders and `expected(day)` expected orders sampled
    /// once a day, for days 0..800; the pace as the evaluation of day 800
    /// sees it, on a baseline of a year.
    fn pace(per_day: impl Fn(i64) -> u64, expected: impl Fn(i64) -> f64) -> CompanyPace {
        let (mut orders, mut sampled) = (DailyBuckets::default(), DailyBuckets::default());
        for day in 0..800 {
            orders.add(day, per_day(day));
            sampled.add(
                day,
                StillOrdering::sample(ExpectedOrders::of(expected(day))),
            );
        }
        let company = CompanyOrders {
            placed: &orders,
            expected: &sampled,
            tails: &DailyBuckets::default(),
        };
        CompanyPace::new(company, Timestamp::from_day(800), 365)
    }

    const LULL: std::ops::Range<i64> = 700..721;

    #[test]
    fn business_time_runs_slow_while_the_company_orders_less() {
        // 100 orders a day, 50 during the lull; every account still there.
        let pace = pace(|day| if LULL.contains(&day) { 50 } else { 100 }, |_| 100.0);
        assert!((pace.ratio(700, 721) - 0.5).abs() < 1e-9);
        assert!((pace.ratio(690, 731) - (20.0 * 100.0 + 21.0 * 50.0) / 41.0 / 100.0).abs() < 1e-9);
        assert_eq!(pace.ratio(740, 800), 1.0);
    }

    #[test]
    fn a_company_losing_customers_keeps_its_clock() {
        // From day 600 the company loses a customer in 200 a day: orders and
        // the accounts still ordering fall together.
        let left = |day: i64| 1.0 - (day - 600).max(0) as f64 / 200.0 * 0.5;
        let pace = pace(
            |day| (100.0 * left(day)).round() as u64,
            |day| 100.0 * left(day),
        );
        // On orders alone the clock ran at 0.62 over the last 100 days.
        let on_orders = (700..800).map(left).sum::<f64>() / 100.0;
        assert!((0.60..0.64).contains(&on_orders), "{on_orders}");
        assert!(pace.ratio(700, 800) > 0.99, "{}", pace.ratio(700, 800));
        // A lull in a shrinking company still slows it: only the lull's
        // halving is left.
        let pace = pace_of_lull_while_shrinking(left);
        let expected = (700..721)
            .map(|day| (100.0 * left(day) / 2.0).round() / (100.0 * left(day)))
            .sum::<f64>()
            / 21.0;
        assert!((pace.ratio(700, 721) - expected).abs() < 0.01);
    }

    fn pace_of_lull_while_shrinking(left: impl Fn(i64) -> f64) -> CompanyPace {
        let halved = |day: i64| if LULL.contains(&day) { 0.5 } else { 1.0 };
        pace(
            |day| (100.0 * left(day) * halved(day)).round() as u64,
            |day| 100.0 * left(day),
        )
    }

    #[test]
    fn more_rhythms_learnt_are_not_a_lull() {
        // The orders stay at 100 a day while the rhythms learnt grow (a
        // young deployment learning its customers): the clock keeps time.
        let pace = pace(|_| 100, |day| 50.0 + day as f64 / 8.0);
        assert_eq!(pace.ratio(700, 800), 1.0);
    }

    #[test]
    fn without_samples_of_the_expected_orders_the_pace_is_that_of_the_orders() {
        let mut orders = DailyBuckets::default();
        for day in 0..800 {
            orders.add(day, if LULL.contains(&day) { 50 } else { 100 });
        }
        let company = CompanyOrders {
            placed: &orders,
            expected: &DailyBuckets::default(),
            tails: &DailyBuckets::default(),
        };
        let pace = CompanyPace::new(company, Timestamp::from_day(800), 365);
        assert!((pace.ratio(700, 721) - 0.5).abs() < 1e-9);
    }
}
