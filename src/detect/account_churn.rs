//! Account churn, on the clock (DESIGN §4): each account's usual gap between
//! orders is learnt from its own history as a gamma distribution (moments of
//! the gaps and of their logarithms, exponentially weighted; an alert's
//! shape the least of the two estimates and the one of the gaps between
//! the account's latest orders, book churn's the moments'); the
//! account is overdue when the time
//! since its last order is improbable under that fit — `gamma_survival`
//! below `alpha` — judged as the watermark passes, not when the next order
//! finally comes.
//!
//! Where the company's customers pause longer than gamma tails allow, the
//! p-value is scaled by how often the customers who came back were that
//! late (`engine::calibration`), and the alert's test is the less regular
//! gamma shape that gives it ([`shape_with_survival`]).
//!
//! Time since the last order is measured in company business time: when the
//! whole company orders at half its usual rate (a holiday), the clock runs at
//! half speed, so a company-wide lull does not make every account overdue.
//!
//! A gamma fit believes a customer more regular than some are: one whose
//! gaps come at random, or now and then with a long pause, can look even
//! over a few dozen orders. So an alert also needs the silence to be longer
//! than every gap among the account's latest orders (the account stage
//! keeps twelve): a customer who was this quiet recently and came back is
//! not called lost for being as quiet again.
//!
//! A manager who keeps visiting an account that has stopped ordering is the
//! strongest single sign of diversion, and a contract that was not renewed
//! says the customer is leaving: either makes the account judged at
//! `signal_alpha`, looser than `alpha`.

use crate::alert::{Severity, StatTest};
use crate::config::ChurnConfig;
use crate::stats;
use crate::time::Timestamp;

use super::{round4, Finding, Summary};

/// The state of one account's ordering, as the account stage sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OrderSilence {
    /// Days since the last order, on the wall of event time.
    pub elapsed_days: f64,
    /// The same in company business time (≤ elapsed when the company is slow).
    pub business_days: f64,
    /// Mean gap between the account's orders, days.
    pub mean_gap: f64,
    /// Gamma shape of the gaps.
    pub shape: f64,
    /// Activities the manager logged on the account since its last order ...
    pub visits_since: u32,
    /// ... and days since the latest of them (may be `None` when fewer than
    /// `min_visits` were logged: they never count as visiting).
    pub last_visit_days: Option<f64>,
    pub contract_lapsed: bool,
    pub last_order: Timestamp,
    /// The longest gap among the account's latest orders kept, days on the
    /// wall of event time (0 when fewer than two are kept).
    pub longest_recent_gap: f64,
    /// How many times as often as the rhythm's own tail says the company's
    /// returning customers were this late (1 where they were no more
    /// often; see `engine::calibration`): the shape is then the less
    /// regular one that gives that.
    pub tail_scale: f64,
}

/// The most gamma shape assumed: more regular than this is not believed.
pub fn gamma_shape(mean: f64, variance: f64, max_shape: f64) -> f64 {
    if variance <= 0.0 {
        return max_shape;
    }
    (mean * mean / variance).clamp(0.5, max_shape)
}

/// The gamma shape of gaps whose mean is `mean` and whose logarithms'
/// mean is `log_mean`, by maximum likelihood: k solves
/// ln k − ψ(k) = s = ln(mean) − log_mean, here by Thom's approximation
/// (3 − s + √((s − 3)² + 24 s)) / (12 s), within 1.5% of the root
/// (Minka, *Estimating a Gamma distribution*, 2002). None when s is not
/// positive (no spread, or moments out of step).
///
/// The moments' shape (mean² / variance) rests on the variance, which a
/// few gaps, or gaps that forget, leave too small for a customer whose
/// orders come at random or with now and then a long pause: such an
/// account looked regular and its silences paged. The logarithms' mean
/// sees every gap's spread, short and long alike, and is the statistic
/// a gamma's shape is best estimated from.
pub fn gamma_shape_from_logs(mean: f64, log_mean: f64) -> Option<f64> {
    let s = mean.ln() - log_mean;
    (s > 0.0 && s.is_finite())
        .then(|| (3.0 - s + ((s - 3.0) * (s - 3.0) + 24.0 * s).sqrt()) / (12.0 * s))
}

/// Whether the manager kept visiting an account that stopped ordering: at
/// least `min_visits` activities since its last order, the latest within
/// `visits_within` (a manager who gave up on a lost customer is not visiting).
pub fn kept_visiting(
    visits_since: u32,
    last_visit_days: Option<f64>,
    config: &ChurnConfig,
) -> bool {
    let within = config.visits_within.as_secs_f64() / 86_400.0;
    visits_since >= config.min_visits && last_visit_days.is_some_and(|d| d <= within)
}

/// One silence judged: its test and p-value, and whether it alerts (past
/// its bar, and longer than every recent gap). Cheap beside a
/// [`Finding`], which only the silences the lifecycle must see are worded
/// into ([`SilenceJudgement::finding`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SilenceJudgement {
    pub test: StatTest,
    pub p_value: f64,
    pub alerting: bool,
}

/// Judges one account with a learnt rhythm. The longest recent gap
/// decides only whether it alerts: the p-value is the test's alone.
pub fn judge(silence: &OrderSilence, config: &ChurnConfig) -> SilenceJudgement {
    let test = silence_test(silence);
    let p_value = test.p_value();
    SilenceJudgement {
        test,
        p_value,
        alerting: p_value < bar(silence, config).0
            && silence.elapsed_days > silence.longest_recent_gap,
    }
}

/// The test of a silence: its gamma survival, from parameters rounded as
/// the alert publishes them, so that the p-value recomputes exactly.
pub fn silence_test(silence: &OrderSilence) -> StatTest {
    StatTest::GammaSurvival {
        t: round4(silence.business_days),
        shape: round4(silence.shape),
        scale: round4(silence.mean_gap / silence.shape),
    }
}

/// The p-value below which a silence alerts (see `bar`).
pub fn alerting_bar(silence: &OrderSilence, config: &ChurnConfig) -> f64 {
    bar(silence, config).0
}

/// A gamma shape, at most `shape` (whose survival there is `survival`),
/// whose survival at a silence of `ratio` mean gaps is about `target`,
/// within 5%: the rhythm an alert is judged by once the company's tail
/// calibration (`engine::calibration`) says silences this long are
/// likelier than the fit's own shape makes them.
///
/// First by the Wilson–Hilferty approximation, whose cube root of a gamma
/// variable is nearly normal: with u = 1/(9k) the survival is about that
/// of z = (ratio^(1/3) − 1 + u) / √u, solved for the larger k giving
/// `target`'s z; where no shape gives that much, z falling no lower than
/// 2 √(ratio^(1/3) − 1) at k = 1 / (9 (ratio^(1/3) − 1)), that least
/// regular shape. Then false-position steps on the exact log survival,
/// bracketed by that least regular shape and `shape`: mostly the guess is
/// close enough, and one survival is all it costs. The test an alert
/// publishes is the exact survival under the shape returned, so all this
/// only chooses the shape.
pub fn shape_with_survival(ratio: f64, target: f64, shape: f64, survival: f64) -> f64 {
    let c = ratio.cbrt() - 1.0;
    if !(c > 0.0 && target > survival && target < 0.5) {
        return shape;
    }
    let miss = |k: f64| (stats::gamma_survival(ratio, k, 1.0 / k) / target).ln();
    let least = (1.0 / (9.0 * c)).min(shape);
    // Wilson–Hilferty's guess.
    let z = std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(2.0 * target);
    let discriminant = z * z - 4.0 * c;
    let guess = if discriminant > 0.0 {
        let root_u = (z - discriminant.sqrt()) / 2.0;
        (1.0 / (9.0 * root_u * root_u)).clamp(least, shape)
    } else {
        least
    };
    let mut k = guess;
    let mut k_miss = miss(k);
    if k_miss.abs() < 0.05 || (k == least && k_miss < 0.0) {
        return k;
    }
    // The bracket: `shape` falls short of the target; the least regular
    // shape, if it does too, is as near as any comes.
    let (mut low, mut low_miss, mut high, mut high_miss) = if k_miss > 0.0 {
        (k, k_miss, shape, (survival / target).ln())
    } else {
        let least_miss = miss(least);
        if least_miss <= 0.0 {
            return least;
        }
        (least, least_miss, k, k_miss)
    };
    for _ in 0..8 {
        k = low + low_miss * (high - low) / (low_miss - high_miss);
        k_miss = miss(k);
        if k_miss.abs() < 0.05 {
            break;
        }
        if k_miss > 0.0 {
            (low, low_miss) = (k, k_miss);
        } else {
            (high, high_miss) = (k, k_miss);
        }
    }
    k
}

/// The bar a silence alerts at, and whether the manager kept visiting:
/// `signal_alpha` when they did or the contract lapsed, else `alpha`.
fn bar(silence: &OrderSilence, config: &ChurnConfig) -> (f64, bool) {
    let visited = kept_visiting(silence.visits_since, silence.last_visit_days, config);
    let bar = if visited || silence.contract_lapsed {
        config.signal_alpha
    } else {
        config.alpha
    };
    (bar, visited)
}

/// Assesses one account with a learnt rhythm.
pub fn assess(silence: &OrderSilence, config: &ChurnConfig) -> Finding {
    judge(silence, config).finding(silence, config)
}

impl SilenceJudgement {
    /// The finding of the judged `silence`, worded.
    pub fn finding(self, silence: &OrderSilence, config: &ChurnConfig) -> Finding {
        let SilenceJudgement {
            test,
            p_value,
            alerting,
        } = self;
        let (alpha, visited) = bar(silence, config);
        let silence = *silence;
        let summary = Summary::new(move || {
            let mut signals = Vec::new();
            if visited {
                signals.push(format!(
                    "the manager logged {} activities on it since",
                    silence.visits_since
                ));
            }
            if silence.contract_lapsed {
                signals.push("its contract was not renewed".to_owned());
            }
            let lull = if silence.business_days + 0.5 < silence.elapsed_days {
                format!(
                    " ({:.0} in business time, the company being slower than usual)",
                    silence.business_days
                )
            } else {
                String::new()
            };
            let longest = if silence.longest_recent_gap > 0.0 {
                format!(
                    ", longest recent gap {:.0} days",
                    silence.longest_recent_gap
                )
            } else {
                String::new()
            };
            let tail = if silence.tail_scale >= 1.05 {
                format!(
                    " (judged as the company's customers who came back: {:.1} times as often this late as their rhythms say)",
                    silence.tail_scale
                )
            } else {
                String::new()
            };
            format!(
                "no order for {:.0} days{lull} since {}; usual gap {:.0} days{longest}{tail}{}",
                silence.elapsed_days,
                silence.last_order.date_string(),
                silence.mean_gap,
                if signals.is_empty() {
                    String::new()
                } else {
                    format!("; {}", signals.join(" and "))
                }
            )
        });
        Finding {
            alerting,
            holding: p_value < alpha * 10.0,
            observed: silence.elapsed_days,
            expected: silence.mean_gap,
            test,
            p_value,
            component_p: p_value,
            severity: Severity::for_p_value(p_value, config.critical_p_value),
            summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::stats::gamma_survival;

    #[test]
    fn a_calibrated_tail_is_met_by_a_less_regular_shape() {
        // Silences of 3 to 8 mean gaps under shapes 1 to 8, made 3 to 300
        // times likelier, up to 0.01: the shape found is less regular, its
        // survival there within 10% of the target.
        let mut checked = 0;
        for shape in [1.0, 2.0, 4.0, 8.0] {
            for ratio in [3.0, 5.0, 8.0] {
                let fit = gamma_survival(ratio, shape, 1.0 / shape);
                for factor in [3.0, 30.0, 300.0] {
                    let target = (fit * factor).min(0.01);
                    if target <= fit * 1.5 {
                        continue;
                    }
                    let k = shape_with_survival(ratio, target, shape, fit);
                    assert!(
                        k < shape,
                        "shape {shape} ratio {ratio} target {target}: {k}"
                    );
                    let survival = gamma_survival(ratio, k, 1.0 / k);
                    assert!(
                        (survival / target - 1.0).abs() < 0.1,
                        "shape {shape} ratio {ratio} target {target:e}: k {k} gives {survival:e}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 25, "{checked}");
    }

    #[test]
    fn no_shape_is_changed_without_a_silence_past_the_mean_or_a_target() {
        let at = |ratio: f64, shape: f64| gamma_survival(ratio, shape, 1.0 / shape);
        assert_eq!(shape_with_survival(0.8, 0.45, 4.0, at(0.8, 4.0)), 4.0);
        assert_eq!(shape_with_survival(5.0, 0.7, 4.0, at(5.0, 4.0)), 4.0);
        // A target the shape already meets.
        assert_eq!(shape_with_survival(3.0, 0.5e-2, 1.0, at(3.0, 1.0)), 1.0);
        // A target no shape reaches: the least regular shape there.
        let k = shape_with_survival(1.2, 0.45, 4.0, at(1.2, 4.0));
        assert!(
            (k - 1.0 / (9.0 * (1.2f64.cbrt() - 1.0))).abs() < 1e-12,
            "{k}"
        );
    }

    fn silence(days: f64) -> OrderSilence {
        OrderSilence {
            elapsed_days: days,
            business_days: days,
            mean_gap: 14.0,
            shape: 4.0,
            visits_since: 0,
            last_visit_days: None,
            contract_lapsed: false,
            last_order: Timestamp(0),
            longest_recent_gap: 0.0,
            tail_scale: 1.0,
        }
    }

    #[test]
    fn a_silence_judged_at_the_companys_tail_says_so() {
        let config = Config::defaults().detect.churn;
        let text = |silence: &OrderSilence| assess(silence, &config).summary.text();
        assert!(!text(&silence(70.0)).contains("came back"));
        let calibrated = OrderSilence {
            tail_scale: 9.04,
            ..silence(70.0)
        };
        assert!(
            text(&calibrated).contains("customers who came back: 9.0 times as often this late"),
            "{}",
            text(&calibrated)
        );
    }

    #[test]
    fn overdue_only_when_improbable() {
        let config = Config::defaults().detect.churn;
        assert!(!assess(&silence(20.0), &config).alerting);
        assert!(assess(&silence(70.0), &config).alerting);
    }

    #[test]
    fn visits_without_orders_are_judged_sooner() {
        let config = Config::defaults().detect.churn;
        let days = (10..100)
            .map(f64::from)
            .find(|d| assess(&silence(*d), &config).alerting)
            .unwrap();
        let visited = (10..100)
            .map(f64::from)
            .find(|d| {
                assess(
                    &OrderSilence {
                        visits_since: 3,
                        last_visit_days: Some(2.0),
                        ..silence(*d)
                    },
                    &config,
                )
                .alerting
            })
            .unwrap();
        assert!(visited < days, "{visited} vs {days}");
    }

    #[test]
    fn visits_the_manager_gave_up_weeks_ago_are_no_signal() {
        let config = Config::defaults().detect.churn;
        let within = config.visits_within.as_secs_f64() / 86_400.0;
        assert!(kept_visiting(3, Some(within - 1.0), &config));
        assert!(!kept_visiting(3, Some(within + 1.0), &config));
        assert!(!kept_visiting(config.min_visits - 1, Some(1.0), &config));
        assert!(!kept_visiting(3, None, &config));
        let stale = OrderSilence {
            visits_since: 3,
            last_visit_days: Some(within + 1.0),
            ..silence(50.0)
        };
        assert_eq!(
            assess(&stale, &config).alerting,
            assess(&silence(50.0), &config).alerting
        );
    }

    #[test]
    fn a_silence_must_outlast_the_longest_recent_gap() {
        let config = Config::defaults().detect.churn;
        let past_the_bar = silence(70.0);
        assert!(judge(&past_the_bar, &config).alerting);
        let as_long_as_a_recent_pause = OrderSilence {
            longest_recent_gap: 70.0,
            ..past_the_bar
        };
        let judged = judge(&as_long_as_a_recent_pause, &config);
        // Improbable under the rhythm all the same: book churn still counts it.
        assert_eq!(judged.p_value, judge(&past_the_bar, &config).p_value);
        assert!(judged.p_value < config.alpha);
        assert!(!judged.alerting);
        let longer = OrderSilence {
            longest_recent_gap: 69.5,
            ..past_the_bar
        };
        assert!(judge(&longer, &config).alerting);
        assert!(assess(&longer, &config)
            .summary
            .text()
            .ends_with("usual gap 14 days, longest recent gap 70 days"));
    }

    #[test]
    fn the_published_parameters_recompute_the_p_value() {
        let config = Config::defaults().detect.churn;
        let f = assess(&silence(41.37), &config);
        assert_eq!(f.test.p_value(), f.p_value);
    }

    #[test]
    fn the_shape_from_logs_is_the_maximum_likelihood_one() {
        // Exponential gaps of mean 1: E ln T = −γ (Euler's constant).
        let exponential = gamma_shape_from_logs(1.0, -0.577_215_664_901_532_9).unwrap();
        assert!((exponential - 1.0).abs() < 0.015, "{exponential}");
        // Gamma(4) gaps of mean 10: E ln T = ψ(4) + ln(10 / 4), ψ(4) =
        // 1.256117668431800 (scipy.special.digamma(4)).
        let log_mean = 1.256_117_668_431_8 + (10.0f64 / 4.0).ln();
        let four = gamma_shape_from_logs(10.0, log_mean).unwrap();
        assert!((four - 4.0).abs() < 0.06, "{four}");
        // No spread: nothing to say.
        assert_eq!(gamma_shape_from_logs(10.0, 10.0f64.ln()), None);
        assert_eq!(gamma_shape_from_logs(10.0, 3.0), None);
    }
}
