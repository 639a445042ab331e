//! Pipeline leakage (DESIGN §4): the share of a manager's deals leaving the
//! pipeline by leak routes — withdrawn, lost with `no_decision`, stalled
//! past `stall_after`, or cut by more than `cut_ratio` before closing — of all
//! deals leaving it, against their own history and their team
//! ([`super::rate`]), tested with the beta-binomial upper tail.

use crate::config::LeakageConfig;

use super::rate::{self, Direction, RateInputs, RateParams};
use super::Finding;

impl LeakageConfig {
    pub fn params(&self) -> RateParams {
        RateParams {
            alpha: self.alpha,
            resolve_alpha: self.resolve_alpha,
            min_change: self.min_rise,
            min_sample: self.min_exits,
            prior_strength: self.prior_strength,
            critical_p_value: self.critical_p_value,
        }
    }
}

/// Assesses one manager over the recent `windows` (inputs and length in
/// days; see [`rate::assess_windows`]). `recent.hits` are leaked deals, `recent.total`
/// every deal that left the pipeline.
pub fn assess(
    windows: &[(RateInputs, i64)],
    config: &LeakageConfig,
    team: &str,
) -> Option<Finding> {
    rate::finding(windows, &config.params(), Direction::Rise, team, |w| {
        format!(
            "{:.0}% of deals leaving the pipeline leaked ({} of {}: withdrawn, no decision, stalled or cut) over {} days; expected {:.0}% from own history ({} of {} before) and {}{}",
            100.0 * w.assessment.observed,
            w.inputs.recent.hits,
            w.inputs.recent.total,
            w.window_days,
            100.0 * w.assessment.expected,
            w.inputs.history.hits,
            w.inputs.history.total,
            w.team,
            w.movement,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::StatTest;
    use crate::config::Config;
    use crate::engine::window::Tally;

    #[test]
    fn a_rise_in_leaks_alerts_with_the_upper_tail() {
        let config = Config::defaults().detect.leakage;
        let inputs = RateInputs {
            recent: Tally {
                hits: 18,
                total: 30,
            },
            history: Tally {
                hits: 15,
                total: 100,
            },
            team_recent: Tally {
                hits: 60,
                total: 400,
            },
            team_history: Tally {
                hits: 240,
                total: 1600,
            },
        };
        let finding = assess(&[(inputs, 90)], &config, "t").unwrap();
        assert!(finding.alerting, "{finding:?}");
        assert!(matches!(
            finding.test,
            StatTest::BetabinomUpper { k: 18, n: 30, .. }
        ));
        assert_eq!(finding.test.p_value(), finding.p_value);
    }

    fn tally(hits: u64, total: u64) -> Tally {
        Tally { hits, total }
    }

    /// The manager's recent window and history, and the team's.
    fn inputs(
        recent: Tally,
        history: Tally,
        team_recent: Tally,
        team_history: Tally,
    ) -> RateInputs {
        RateInputs {
            recent,
            history,
            team_recent,
            team_history,
        }
    }

    #[test]
    fn the_team_leaking_more_excuses_but_leaking_less_does_not_accuse() {
        let config = Config::defaults().detect.leakage;
        let manager = inputs(
            tally(12, 30),
            tally(15, 100),
            tally(60, 400),
            tally(240, 1600),
        );
        // No recent team figures: the expectation from history alone.
        let alone = RateInputs {
            team_recent: tally(0, 0),
            ..manager
        };
        let alone = assess(&[(alone, 90)], &config, "t").unwrap();
        // The whole team leaks four times as much: the market, not the manager.
        let market = RateInputs {
            team_recent: tally(240, 400),
            ..manager
        };
        let market = assess(&[(market, 90)], &config, "t").unwrap();
        assert!(market.expected > 0.4 && !market.alerting, "{market:?}");
        // The rest of the team leaks a third as much as before: no reason to
        // expect less of this manager than their own history.
        let lucky = RateInputs {
            team_recent: tally(20, 400),
            ..manager
        };
        let lucky = assess(&[(lucky, 90)], &config, "t").unwrap();
        assert!((lucky.expected - alone.expected).abs() < 1e-12, "{lucky:?}");
    }

    #[test]
    fn a_team_of_one_with_a_spotless_short_history_is_not_expected_never_to_leak() {
        // Alone in the team, no leaks in 12 deals before, then 6 of 15: a
        // uniform prior expects 1 in 14 (scipy: betabinom.sf(5, 15, 1, 13)
        // = 0.0133), not certainty of none (which gave p = 7e-8).
        let config = Config::defaults().detect.leakage;
        let alone = inputs(tally(6, 15), tally(0, 12), tally(0, 0), tally(0, 0));
        let finding = assess(&[(alone, 30)], &config, "t").unwrap();
        assert!((finding.expected - 1.0 / 14.0).abs() < 1e-6, "{finding:?}");
        assert!((finding.p_value - 0.013285024).abs() < 1e-8, "{finding:?}");
        assert!(!finding.alerting && !finding.holding, "{finding:?}");
    }
}
