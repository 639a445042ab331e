//! Win rate drop (DESIGN §4): a manager's won / closed deals over the recent
//! window against what was to be expected of them.
//!
//! Expected rate:
//! 1. the manager's own history before the window, shrunk toward the team's
//!    historical rate with a weight of `prior_strength` deals (empirical
//!    Bayes: a new hire starts at the team's rate, a veteran at their own);
//! 2. moved by however much the rest of the team moved between its history
//!    and the same window, on the log-odds scale, so a market-wide fall is
//!    not counted against one manager.
//!
//! Test: the beta-binomial lower tail P[X ≤ won], X ~ BetaBinomial(closed,
//! a, b) with a + b the weight of the baseline: the expected rate is itself
//! an estimate, and a thin history must not make a confident accusation.
//! Team figures exclude the manager (leave-one-out), so a diverting manager
//! cannot drag their own yardstick down.

use crate::alert::{Severity, StatTest};
use crate::config::WinRateConfig;
use crate::engine::window::WinLoss;

use super::Finding;

/// The baseline weight cap, in deals: however long a manager's history, a
/// win rate drifts over years, so the baseline is never treated as exact.
const MAX_BASELINE_WEIGHT: f64 = 200.0;

/// The counts one evaluation needs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WinRateInputs {
    /// The manager's deals closed in the recent window.
    pub recent: WinLoss,
    /// The manager's deals closed in the history before the window.
    pub history: WinLoss,
    /// The rest of the team, same window.
    pub team_recent: WinLoss,
    /// The rest of the team, same history.
    pub team_history: WinLoss,
}

/// Assesses one manager; `None` when too few deals closed to judge.
pub fn assess(
    inputs: &WinRateInputs,
    config: &WinRateConfig,
    team: &str,
    window_days: i64,
) -> Option<Finding> {
    let n = inputs.recent.closed();
    if n < config.min_closed {
        return None;
    }
    let k = inputs.recent.won;
    let observed = k as f64 / n as f64;

    // The team's rate counts for at most `prior_strength` deals, and for no
    // more deals than it rests on: a team's first three deals are no yardstick.
    let team_history_rate = smoothed_rate(inputs.team_history);
    let team_weight = config
        .prior_strength
        .min(inputs.team_history.closed() as f64);
    let weight = team_weight + inputs.history.closed() as f64;
    if weight < config.min_closed as f64 {
        // No baseline to speak of yet (a new team of new hires): no judgement.
        return None;
    }
    let baseline = (inputs.history.won as f64 + team_weight * team_history_rate) / weight;

    // The rest of the team's movement, only when both sides have a sample.
    let team_shift = if inputs.team_recent.closed() >= config.min_closed
        && inputs.team_history.closed() >= config.min_closed
    {
        logit(smoothed_rate(inputs.team_recent)) - logit(team_history_rate)
    } else {
        0.0
    };
    let expected = sigmoid(logit(baseline) + team_shift).clamp(1e-6, 1.0 - 1e-6);

    let strength = weight.min(MAX_BASELINE_WEIGHT);
    let (a, b) = (expected * strength, (1.0 - expected) * strength);
    let test = StatTest::BetabinomLower {
        k,
        n,
        a: round6(a),
        b: round6(b),
    };
    let p_value = test.p_value();
    let alerting = p_value < config.alpha && expected - observed >= config.min_drop;
    let holding = p_value < config.resolve_alpha && expected - observed >= config.min_drop / 2.0;
    let severity = if p_value < config.critical_p_value {
        Severity::Critical
    } else {
        Severity::Warning
    };

    let movement = if team_shift == 0.0 {
        String::new()
    } else {
        format!(
            ", adjusted for the rest of {team} moving from {:.0}% to {:.0}%",
            100.0 * team_history_rate,
            100.0 * smoothed_rate(inputs.team_recent)
        )
    };
    let summary = format!(
        "win rate {:.0}% ({k} of {n} closed) over {window_days} days; expected {:.0}% from own history ({} of {} won before) and {team}{movement}",
        100.0 * observed,
        100.0 * expected,
        inputs.history.won,
        inputs.history.closed(),
    );

    Some(Finding {
        alerting,
        holding,
        observed,
        expected,
        test,
        p_value,
        severity,
        summary,
    })
}

/// Won / closed with one pseudo-win and one pseudo-loss, so an empty or
/// perfect record does not give a rate of exactly 0 or 1.
fn smoothed_rate(counts: WinLoss) -> f64 {
    (counts.won as f64 + 1.0) / (counts.closed() as f64 + 2.0)
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Parameters are published rounded; the p-value is computed from the
/// rounded values so that it recomputes exactly.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> WinRateConfig {
        Config::defaults().detect.win_rate
    }

    fn wl(won: u64, lost: u64) -> WinLoss {
        WinLoss { won, lost }
    }

    #[test]
    fn a_sharp_personal_drop_alerts() {
        let inputs = WinRateInputs {
            recent: wl(3, 27),
            history: wl(60, 60),
            team_recent: wl(200, 200),
            team_history: wl(800, 800),
        };
        let finding = assess(&inputs, &config(), "team-3", 90).unwrap();
        assert!(finding.alerting, "{finding:?}");
        assert!((finding.observed - 0.1).abs() < 1e-12);
        assert!((finding.expected - 0.5).abs() < 0.01);
        assert!(finding.p_value < 1e-4);
        assert!(
            finding
                .summary
                .starts_with("win rate 10% (3 of 30 closed) over 90 days; expected 50%"),
            "{}",
            finding.summary
        );
    }

    #[test]
    fn a_team_wide_fall_does_not_alert() {
        // Everyone in the team fell from 50% to 15%: the market, not the manager.
        let inputs = WinRateInputs {
            recent: wl(4, 26),
            history: wl(60, 60),
            team_recent: wl(60, 340),
            team_history: wl(800, 800),
        };
        let finding = assess(&inputs, &config(), "team-3", 90).unwrap();
        assert!(!finding.alerting, "{finding:?}");
        assert!(finding.expected < 0.2);
    }

    #[test]
    fn no_baseline_no_judgement() {
        // The team's history is three won deals; the manager has none.
        let inputs = WinRateInputs {
            recent: wl(7, 20),
            history: wl(0, 0),
            team_recent: wl(100, 100),
            team_history: wl(3, 0),
        };
        assert_eq!(assess(&inputs, &config(), "t", 90), None);
    }

    #[test]
    fn small_samples_are_not_judged() {
        let inputs = WinRateInputs {
            recent: wl(0, 11),
            history: wl(60, 60),
            ..Default::default()
        };
        assert_eq!(assess(&inputs, &config(), "t", 90), None);
    }

    #[test]
    fn a_new_hire_is_held_to_the_team_rate_with_less_certainty() {
        let veteran = WinRateInputs {
            recent: wl(6, 24),
            history: wl(100, 100),
            team_recent: wl(200, 200),
            team_history: wl(800, 800),
        };
        let new_hire = WinRateInputs {
            history: wl(0, 0),
            ..veteran
        };
        let v = assess(&veteran, &config(), "t", 90).unwrap();
        let n = assess(&new_hire, &config(), "t", 90).unwrap();
        assert!((v.expected - n.expected).abs() < 0.02);
        assert!(n.p_value > v.p_value, "thin history must weaken the test");
    }

    #[test]
    fn the_published_parameters_recompute_the_p_value() {
        let inputs = WinRateInputs {
            recent: wl(5, 25),
            history: wl(33, 41),
            team_recent: wl(150, 170),
            team_history: wl(500, 530),
        };
        let finding = assess(&inputs, &config(), "t", 90).unwrap();
        assert_eq!(finding.test.p_value(), finding.p_value);
    }
}
