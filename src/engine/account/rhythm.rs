//! An account's order rhythm: the moments of its gaps between orders and
//! of its order values, the gamma shapes its silences are judged by, and
//! the gaps of its latest orders.

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::ChurnConfig;
use crate::detect::account_churn;
use crate::detect::value_fall::{self, ValueFall};
use crate::stats;
use crate::time::DAY;

/// Order times kept per account: enough to count orders over the longest
/// order-volume window for all but the busiest accounts, and the gaps an
/// account-churn alert's silence must outlast.
pub(super) const RECENT_ORDERS: usize = 12;

/// The gaps, in days, between the kept order times (newest first), taken
/// between deliveries: orders less than half a day apart are one. A time
/// 32 bits do not hold (0) ends what is known.
pub(super) fn delivery_gaps(
    recent_orders: &[u32; RECENT_ORDERS],
) -> impl Iterator<Item = f64> + '_ {
    let mut kept = recent_orders
        .iter()
        .map(|t| i64::from(*t))
        .take_while(|t| *t != 0);
    let mut newer = kept.next();
    kept.filter_map(move |older| {
        let gap = newer? - older;
        (gap >= DAY / 2).then(|| {
            newer = Some(older);
            gap as f64 / DAY as f64
        })
    })
}

/// The gap, in days, between the latest kept order and the latest kept one
/// at least half a day before it (orders closer together are one delivery),
/// if both are kept; times 32 bits do not hold are not.
pub(super) fn gap_before(recent_orders: &[u32; RECENT_ORDERS]) -> Option<f64> {
    delivery_gaps(recent_orders).next()
}

/// The gaps between an account's latest orders kept ([`delivery_gaps`], as
/// the rhythm learns them): what its ordering did of late,
/// whether or not the rhythm learnt each gap (see the gap rule in
/// [`AccountStage::apply`]) or still remembers it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct RecentGaps {
    pub(super) count: u32,
    /// Their sum and the sum of their logarithms, days.
    pub(super) sum: f64,
    pub(super) log_sum: f64,
    pub(super) longest: f64,
}

/// Recent gaps needed before their spread bounds an alert's shape.
pub(super) const MIN_RECENT_GAPS: u32 = 5;

impl RecentGaps {
    pub(super) fn of(recent_orders: &[u32; RECENT_ORDERS]) -> RecentGaps {
        let mut gaps = RecentGaps::default();
        for gap in delivery_gaps(recent_orders) {
            gaps.count += 1;
            gaps.sum += gap;
            gaps.log_sum += gap.ln();
            gaps.longest = gaps.longest.max(gap);
        }
        gaps
    }

    /// Their maximum-likelihood gamma shape, believed as a rhythm's is;
    /// `None` with fewer than [`MIN_RECENT_GAPS`].
    pub(super) fn believed_shape(&self, max_shape: f64) -> Option<f64> {
        if self.count < MIN_RECENT_GAPS {
            return None;
        }
        let n = f64::from(self.count);
        account_churn::gamma_shape_from_logs(self.sum / n, self.log_sum / n)
            .map(|shape| believed(shape, n, max_shape))
    }
}

/// An account's ordering: exponentially weighted moments of the gaps between
/// orders (days) and of the order values (logarithms, so a fall to half is
/// the same step for a small customer as for a large one). Moments are
/// worked out in double precision and kept in single (seven digits are
/// more than a rhythm is known to; an account is a few hundred bytes).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(super) struct Rhythm {
    /// Gaps learnt (saturating).
    #[serde(deserialize_with = "saturating_u16")]
    pub(super) gaps: u16,
    /// Orders with a positive value (saturating) ...
    #[serde(default, deserialize_with = "saturating_u16")]
    pub(super) valued: u16,
    pub(super) gap_mean: f32,
    pub(super) gap_var: f32,
    /// The gaps' logarithms' mean, weighted as the moments are (see
    /// [`account_churn::gamma_shape_from_logs`]); NaN while unknown (a
    /// rhythm checkpointed before 2026-11-30).
    #[serde(default = "unknown_log_mean")]
    pub(super) gap_log_mean: f32,
    /// ... and the moments of their log values, all but the last three:
    /// the usual value the latest orders are judged against.
    #[serde(default)]
    pub(super) value_mean: f32,
    #[serde(default)]
    pub(super) value_var: f32,
    /// Log values of the last three such orders, newest first.
    #[serde(default)]
    pub(super) recent_values: [f32; 3],
}

/// The gamma shapes a rhythm is judged by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Shapes {
    /// For an alert about the account: the lesser of the moments' estimate
    /// and the maximum-likelihood one (from the logarithms' mean); judging
    /// an account bounds it by its latest orders' spread as well
    /// ([`RecentGaps`]).
    pub(super) alerting: f64,
    /// For book churn's counts and for learning: the moments' alone. Book
    /// churn weighs a book against the company's share of accounts past
    /// the same bars, every account judged alike, so a bias the moments
    /// share across accounts cancels there; bounding them by the logarithms
    /// as well lowered the company's shares, and honest books whose
    /// customers left together stood out (an honest manager accused on a
    /// held-out world).
    pub(super) compared: f64,
}

/// A count checkpointed as 32 bits before 2026-11-30, held in 16 now:
/// larger counts read as the most 16 bits hold.
pub(super) fn saturating_u16<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    u32::deserialize(deserializer).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
}

pub(super) fn unknown_log_mean() -> f32 {
    f32::NAN
}

/// Weight of the newest gap once an account has many: the rhythm follows
/// slow changes over about this many orders.
pub(super) const RHYTHM_MEMORY: f64 = 30.0;

/// Orders judged for a fall in value: the last one, two and three.
pub(super) const VALUE_JUDGED: usize = 3;

/// Adds `x` to exponentially weighted moments over `n` earlier values
/// (equal weights until `RHYTHM_MEMORY` of them).
pub(super) fn add_moment(n: u32, mean: &mut f32, var: &mut f32, x: f64) {
    if n == 0 {
        *mean = x as f32;
        return;
    }
    let w = (1.0 / f64::from(n + 1)).max(1.0 / RHYTHM_MEMORY);
    let delta = x - f64::from(*mean);
    *mean = (f64::from(*mean) + w * delta) as f32;
    *var = ((1.0 - w) * (f64::from(*var) + w * delta * delta)) as f32;
}

/// A gamma shape estimated from `n` gaps, taken one standard error toward
/// irregular (the estimate is noisy, and an overconfident rhythm accuses),
/// at most half the gaps and at most `max_shape`.
pub(super) fn believed(estimate: f64, n: f64, max_shape: f64) -> f64 {
    (estimate / (1.0 + (2.0 / n).sqrt())).clamp(0.5, max_shape.min(n / 2.0).max(0.5))
}

impl Rhythm {
    /// Mean gap between orders, days.
    pub(super) fn gap_mean(&self) -> f64 {
        f64::from(self.gap_mean)
    }

    pub(super) fn add_order(&mut self, gap_days: Option<f64>, amount: f64) {
        if let Some(gap) = gap_days {
            let n = u32::from(self.gaps);
            // The logarithms' mean takes the moments' weights, so that it
            // stays in step with the mean (ln of the mean is never below
            // it). Unknown (restored), it starts at the mean's logarithm:
            // no spread, which bounds nothing, until gaps come.
            if n == 0 {
                self.gap_log_mean = gap.ln() as f32;
            } else {
                if self.gap_log_mean.is_nan() {
                    self.gap_log_mean = self.gap_mean().ln() as f32;
                }
                let w = (1.0 / f64::from(n + 1)).max(1.0 / RHYTHM_MEMORY);
                let log_mean = f64::from(self.gap_log_mean);
                self.gap_log_mean = (log_mean + w * (gap.ln() - log_mean)) as f32;
            }
            add_moment(n, &mut self.gap_mean, &mut self.gap_var, gap);
            self.gaps = self.gaps.saturating_add(1);
        }
        if amount > 0.0 {
            // The order leaving the recent three joins the usual value.
            if usize::from(self.valued) >= VALUE_JUDGED {
                let base = u32::from(self.valued) - VALUE_JUDGED as u32;
                let oldest = f64::from(self.recent_values[VALUE_JUDGED - 1]);
                add_moment(base, &mut self.value_mean, &mut self.value_var, oldest);
            }
            self.recent_values.rotate_right(1);
            self.recent_values[0] = amount.ln() as f32;
            self.valued = self.valued.saturating_add(1);
        }
    }

    /// The gamma shapes the rhythm is judged by, each estimate believed
    /// as [`believed`] says.
    pub(super) fn shapes(&self, max_shape: f64) -> Shapes {
        let n = f64::from(self.gaps).min(RHYTHM_MEMORY);
        let believe = |estimate: f64| believed(estimate, n, max_shape);
        let moments =
            account_churn::gamma_shape(self.gap_mean(), f64::from(self.gap_var), max_shape);
        let likeliest =
            account_churn::gamma_shape_from_logs(self.gap_mean(), f64::from(self.gap_log_mean))
                .map_or(moments, |likeliest| moments.min(likeliest));
        Shapes {
            alerting: believe(likeliest),
            compared: believe(moments),
        }
    }

    /// Whether a gap of `gap_days` is improbable under a learnt rhythm: its
    /// gamma survival below `churn.alpha`, the bar an account-churn alert
    /// fires at, under the shape book churn counts by (what is learnt is
    /// what book churn compares). A gap no longer than the mean never is
    /// below a bar under 0.3 (the survival at the mean is 0.32 at the least
    /// regular shape believed, 0.5, and more at every other), so most
    /// orders cost no survival function.
    pub(super) fn is_improbable(&self, gap_days: f64, churn: &ChurnConfig) -> bool {
        if (gap_days <= self.gap_mean() && churn.alpha < 0.3)
            || !self.learnt(churn.min_gaps, churn.min_history)
        {
            return false;
        }
        let shape = self.shapes(churn.max_shape).compared;
        stats::gamma_survival(gap_days, shape, self.gap_mean() / shape) < churn.alpha
    }

    /// Whether the rhythm is learnt well enough to judge a silence by: at
    /// least `min_gaps` gaps, adding up to at least `min_history` (their
    /// mean times their count; the mean is exact until `RHYTHM_MEMORY`
    /// gaps, and by then the history is long anyway).
    pub(super) fn learnt(&self, min_gaps: u32, min_history: std::time::Duration) -> bool {
        let span_days = self.gap_mean() * f64::from(self.gaps);
        u32::from(self.gaps) >= min_gaps && span_days * DAY as f64 >= min_history.as_secs_f64()
    }

    /// How far the latest orders fell below `max_ratio` of the usual
    /// value, once `min_orders` orders before them make it known.
    pub(super) fn value_fall(&self, min_orders: u32, max_ratio: f64) -> Option<ValueFall> {
        let base = u32::from(self.valued).checked_sub(VALUE_JUDGED as u32)?;
        if base < min_orders.max(2) {
            return None;
        }
        let recent = self.recent_values.map(f64::from);
        value_fall::assess(
            &recent,
            f64::from(base).min(RHYTHM_MEMORY),
            f64::from(self.value_mean),
            f64::from(self.value_var),
            max_ratio,
        )
    }
}

/// The gamma shapes silences are judged by, of a `rhythm` whose latest
/// orders were `recent_orders`, and the gaps between those: an alert's
/// rhythm is no more regular than the latest orders were, long pauses the
/// rhythm did not learn included.
pub(super) fn judged_shapes(
    rhythm: &Rhythm,
    recent_orders: &[u32; RECENT_ORDERS],
    max_shape: f64,
) -> (Shapes, RecentGaps) {
    let recent = RecentGaps::of(recent_orders);
    let mut shapes = rhythm.shapes(max_shape);
    if let Some(recent_shape) = recent.believed_shape(max_shape) {
        shapes.alerting = shapes.alerting.min(recent_shape);
    }
    (shapes, recent)
}
