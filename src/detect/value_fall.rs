//! A fall in an account's order value (DESIGN §4, customer churn): a
//! customer who keeps ordering, but a fraction of what it used to, is
//! leaving as surely as one that stops.
//!
//! The mean log value of the account's latest one, two and three orders is
//! tested against the usual value of its orders before them: a one-sided
//! Student t test, since the usual value's spread is itself estimated from
//! those orders, and the least p-value of the three, times three
//! (Bonferroni). Only windows whose orders fell below `max_ratio` of the
//! usual value are tested: a significant but small fall is not a customer
//! leaving. Logarithms make a fall to half the same step for a small
//! customer as for a large one.

use crate::stats::student_t_lower;

/// The strongest fall among the latest orders.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueFall {
    /// Bonferroni over the three windows tried.
    pub p_value: f64,
    /// Geometric mean of the judged orders' values over the usual value.
    pub ratio: f64,
    /// How many of the latest orders were judged together.
    pub orders: usize,
}

/// The smallest spread of log values believed: an account that always
/// ordered the same amount still varies by this much.
const MIN_SPREAD: f64 = 0.01;

/// `recent`: log values of the latest orders, newest first. `usual_orders`,
/// `usual_mean`, `usual_var`: how many orders before them (at least two),
/// and the mean and (population) variance of their log values. `None`
/// when no window fell below `max_ratio`.
pub fn assess(
    recent: &[f64],
    usual_orders: f64,
    usual_mean: f64,
    usual_var: f64,
    max_ratio: f64,
) -> Option<ValueFall> {
    let n = usual_orders;
    let spread = (usual_var.max(0.0) * n / (n - 1.0)).sqrt().max(MIN_SPREAD);
    let windows = recent.len().max(1) as f64;
    let max_difference = max_ratio.ln();
    let mut best: Option<ValueFall> = None;
    let mut sum = 0.0;
    for (i, value) in recent.iter().enumerate() {
        sum += value;
        let k = (i + 1) as f64;
        let difference = sum / k - usual_mean;
        // Cheap first: most accounts' latest orders are near their usual.
        if difference.is_nan() || difference >= max_difference {
            continue;
        }
        let t = difference / (spread * (1.0 / k + 1.0 / n).sqrt());
        let p_value = (student_t_lower(t, n - 1.0) * windows).min(1.0);
        if best.is_none_or(|b| p_value < b.p_value) {
            best = Some(ValueFall {
                p_value,
                ratio: difference.exp(),
                orders: i + 1,
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_t_test_computed_by_hand() {
        // Usual: 10 orders, log values mean 9.04, population variance 0.0346
        // (sample sd 0.196). The latest order: ln 4169 = 8.3354.
        // t = (8.3354 - 9.04) / (0.196 * sqrt(1 + 1/10)) = -3.42745 with 9
        // degrees of freedom; scipy t.cdf(-3.42745, 9) = 0.0037693, times 3.
        let var = 0.196f64.powi(2) * 9.0 / 10.0;
        let fall = assess(&[4169f64.ln(), 9.1, 9.0], 10.0, 9.04, var, 0.7).unwrap();
        assert_eq!(fall.orders, 1);
        assert!((fall.p_value - 3.0 * 0.0037693).abs() < 2e-6, "{fall:?}");
        assert!((fall.ratio - (4169f64.ln() - 9.04).exp()).abs() < 1e-12);
    }

    #[test]
    fn several_small_orders_weigh_more_than_one() {
        let one = assess(&[-0.5, 0.0, 0.0], 12.0, 0.0, 0.04, 0.7).unwrap();
        let three = assess(&[-0.5, -0.5, -0.5], 12.0, 0.0, 0.04, 0.7).unwrap();
        assert_eq!(three.orders, 3);
        assert!(three.p_value < one.p_value / 10.0, "{one:?} {three:?}");
    }

    #[test]
    fn usual_and_larger_orders_are_no_fall() {
        assert_eq!(assess(&[0.3, 0.1, 0.2], 8.0, 0.0, 0.04, 1.0), None);
        assert_eq!(assess(&[5.0, 5.0, 5.0], 6.0, 5.0, 0.0, 1.0), None);
    }

    #[test]
    fn a_small_fall_is_not_tested_however_regular_the_account() {
        // Orders at 90% of a very regular usual value: significant, not sharp.
        let small = [0.9f64.ln(); 3];
        assert_eq!(assess(&small, 20.0, 0.0, 0.0001, 0.7), None);
        let tested = assess(&small, 20.0, 0.0, 0.0001, 0.95).unwrap();
        assert!(tested.p_value < 1e-6, "{tested:?}");
    }

    #[test]
    fn an_account_of_one_fixed_amount_still_needs_a_real_fall() {
        // Spread 0: the floor keeps a rounding difference from being a fall.
        let usual = 100f64.ln();
        let fall = assess(&[99.99f64.ln(), usual, usual], 20.0, usual, 0.0, 1.0).unwrap();
        assert!(fall.p_value > 0.01, "{fall:?}");
        assert!(fall.ratio > 0.999);
    }
}
