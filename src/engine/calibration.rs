//! How far an account's rhythm can be trusted in its tail, learnt from the
//! customers who came back (DESIGN §4: an alert must be right).
//!
//! An account-churn alert says a silence is improbable under the gamma fit
//! of the account's gaps (`gamma_survival` below `churn.alpha`). A gamma's
//! tail falls exponentially; where customers' gaps are heavier-tailed (a
//! lognormal rhythm: now and then a pause of six or ten usual gaps), its
//! p-values are far too small out there, and every such pause pages. On a
//! world of lognormal order gaps, 40% of the account alerts were customers
//! who later ordered again.
//!
//! Every gap that ends with an order is a silence that turned out to be
//! no churn. So at each evaluation, every gap ended by the orders since
//! the one before is judged as a silence of that length would have been:
//! its gamma survival, in business time, under the account's rhythm
//! before the order (the latest gaps' spread without the gap itself, which
//! would otherwise excuse itself). The company counts the gaps and how many fell
//! past each of a few levels ([`TAIL_LEVELS`]). Were the rhythms right, a
//! share `level` of them would; the observed share over that is how many
//! times too small the tail's p-values are there. A silence's p-value is
//! scaled by that ratio, interpolated on logarithms between the levels,
//! never below the fit's own and never above 1
//! ([`Calibration::p_value`]): the share of returning customers who were
//! that late.
//!
//! A count of one gap past a level is added to each side (the prior: the
//! rhythms are right until gaps say otherwise), so a young company's few
//! gaps change nothing. Counts are kept by the day of the evaluation that
//! made them, over the days the engine remembers. An evaluation reads the
//! counts of the days before its own: scaled out, every source sends
//! its evaluation's count with its next order pace share (see `pace`), so
//! the next evaluation has every source's, and one process and many
//! agree.

use std::ops::{AddAssign, Sub};

use serde::{Deserialize, Serialize};

use super::window::DailyBuckets;

/// The survival levels gaps are counted past, loosest first.
pub const TAIL_LEVELS: [f64; 4] = [1e-2, 1e-3, 1e-4, 1e-5];

/// Completed gaps of accounts with a learnt rhythm, and how many of them a
/// silence test would have put past each of [`TAIL_LEVELS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailCounts {
    pub gaps: u64,
    pub past: [u64; 4],
}

impl TailCounts {
    /// One gap, whose survival under its rhythm was `survival` (`None`:
    /// no longer than the rhythm's mean, where no bar is ever passed).
    pub fn of_gap(survival: Option<f64>) -> TailCounts {
        let survival = survival.unwrap_or(1.0);
        TailCounts {
            gaps: 1,
            past: TAIL_LEVELS.map(|level| u64::from(survival < level)),
        }
    }
}

impl AddAssign for TailCounts {
    fn add_assign(&mut self, other: TailCounts) {
        self.gaps += other.gaps;
        for (past, other) in self.past.iter_mut().zip(other.past) {
            *past += other;
        }
    }
}

impl Sub for TailCounts {
    type Output = TailCounts;
    /// Saturating, as [`super::window::Tally`]'s.
    fn sub(self, other: TailCounts) -> TailCounts {
        TailCounts {
            gaps: self.gaps.saturating_sub(other.gaps),
            past: std::array::from_fn(|i| self.past[i].saturating_sub(other.past[i])),
        }
    }
}

/// How many times too small the rhythms' tail p-values were, at each of
/// [`TAIL_LEVELS`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    ratios: [f64; 4],
}

impl Calibration {
    /// No scaling: what a company without counted gaps gets.
    pub const NONE: Calibration = Calibration { ratios: [1.0; 4] };

    /// From `counts`, each level's observed share of gaps past it over the
    /// level, with one gap added to each side; never below 1 (a rhythm
    /// that is too cautious out there is left so).
    pub fn of(counts: TailCounts) -> Calibration {
        let gaps = counts.gaps as f64;
        Calibration {
            ratios: std::array::from_fn(|i| {
                ((counts.past[i] as f64 + 1.0) / (gaps * TAIL_LEVELS[i] + 1.0)).max(1.0)
            }),
        }
    }

    /// How many times as often as the rhythms say, at each of
    /// [`TAIL_LEVELS`].
    pub fn ratios(&self) -> [f64; 4] {
        self.ratios
    }

    /// From the gaps of the days before `before_day` in `buckets`.
    pub fn from_days(buckets: &DailyBuckets<TailCounts>, before_day: i64) -> Calibration {
        Calibration::of(buckets.sum(i64::MIN..before_day))
    }

    /// A silence's p-value as the share of returning customers that late:
    /// `p_value` times the ratio at its level, interpolated linearly on
    /// the logarithms of level and ratio between levels (the loosest or
    /// tightest ratio beyond them), at least `p_value`, at most 1.
    /// P-values of 0.5 and more are left alone: they pass no bar.
    pub fn p_value(&self, p_value: f64) -> f64 {
        if p_value.is_nan() || p_value >= 0.5 || self.ratios == [1.0; 4] {
            return p_value;
        }
        let ratio = if p_value >= TAIL_LEVELS[0] {
            self.ratios[0]
        } else if p_value <= TAIL_LEVELS[3] {
            self.ratios[3]
        } else {
            let i = TAIL_LEVELS
                .iter()
                .position(|level| p_value > *level)
                .unwrap_or(3)
                .max(1);
            // Between TAIL_LEVELS[i - 1] (looser) and TAIL_LEVELS[i].
            let (upper, lower) = (TAIL_LEVELS[i - 1].ln(), TAIL_LEVELS[i].ln());
            let along = (p_value.ln() - upper) / (lower - upper);
            let (from, to) = (self.ratios[i - 1].ln(), self.ratios[i].ln());
            (from + along * (to - from)).exp()
        };
        (p_value * ratio).clamp(p_value, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(gaps: u64, past: [u64; 4]) -> TailCounts {
        TailCounts { gaps, past }
    }

    #[test]
    fn rhythms_as_right_as_their_levels_are_left_alone() {
        // 100,000 gaps, a share `level` past each level.
        let calibration = Calibration::of(counts(100_000, [1_000, 100, 10, 1]));
        assert_eq!(calibration, Calibration::NONE);
        assert_eq!(calibration.p_value(3e-4), 3e-4);
        // So is a company with no gaps counted yet: the prior alone.
        assert_eq!(Calibration::of(TailCounts::default()), Calibration::NONE);
    }

    #[test]
    fn a_heavy_tail_scales_the_p_value_by_how_often_returning_customers_were_that_late() {
        // 40,000 gaps: 400 expected past 0.01, 1,000 seen; 40 past 0.001,
        // 360 seen; 4 past 1e-4, 150 seen; 0.4 past 1e-5, 80 seen.
        let calibration = Calibration::of(counts(40_000, [1_000, 360, 150, 80]));
        let ratios = [1001.0 / 401.0, 361.0 / 41.0, 151.0 / 5.0, 81.0 / 1.4];
        for (ratio, expected) in calibration.ratios.iter().zip(ratios) {
            assert!((ratio - expected).abs() < 1e-12, "{calibration:?}");
        }
        // At a level, its ratio; between two, on the logarithms.
        assert!((calibration.p_value(1e-3) - 1e-3 * ratios[1]).abs() < 1e-15);
        let between = (ratios[1].ln() + 0.5 * (ratios[2].ln() - ratios[1].ln())).exp();
        let p = 10f64.powf(-3.5);
        assert!((calibration.p_value(p) - p * between).abs() < 1e-12 * p * between);
        // Beyond the levels, the nearest one's ratio; never above 1.
        assert!((calibration.p_value(1e-7) - 1e-7 * ratios[3]).abs() < 1e-18);
        assert_eq!(calibration.p_value(0.3), 0.3 * ratios[0]);
        assert_eq!(calibration.p_value(0.45), 1.0);
        assert_eq!(calibration.p_value(0.7), 0.7);
    }

    #[test]
    fn a_cautious_rhythm_is_not_made_bolder() {
        // Fewer gaps past each level than the rhythms expect.
        let calibration = Calibration::of(counts(1_000_000, [5_000, 300, 20, 1]));
        assert_eq!(calibration, Calibration::NONE);
    }

    #[test]
    fn a_gap_counts_past_every_level_its_survival_is_below() {
        assert_eq!(TailCounts::of_gap(Some(5e-4)), counts(1, [1, 1, 0, 0]));
        assert_eq!(TailCounts::of_gap(None), counts(1, [0; 4]));
        let mut sum = TailCounts::of_gap(Some(1e-6));
        sum += TailCounts::of_gap(Some(0.2));
        assert_eq!(sum, counts(2, [1, 1, 1, 1]));
        assert_eq!(sum - TailCounts::of_gap(Some(1e-6)), counts(1, [0; 4]));
    }

    #[test]
    fn only_the_days_before_the_one_given_count() {
        let mut buckets = DailyBuckets::default();
        buckets.add(10, counts(1_000, [100, 50, 20, 10]));
        buckets.add(12, counts(1_000_000, [0; 4]));
        assert_eq!(
            Calibration::from_days(&buckets, 12),
            Calibration::of(counts(1_000, [100, 50, 20, 10]))
        );
    }
}
