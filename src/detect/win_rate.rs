//! Win rate drop (DESIGN §4): a manager's won / closed deals over the recent
//! window against their own history and their team ([`super::rate`]), tested
//! with the beta-binomial lower tail.

use crate::config::WinRateConfig;

use super::rate::{self, Direction, RateInputs, RateParams};
use super::Finding;

impl WinRateConfig {
    pub fn params(&self) -> RateParams {
        RateParams {
            alpha: self.alpha,
            resolve_alpha: self.resolve_alpha,
            min_change: self.min_drop,
            min_sample: self.min_closed,
            prior_strength: self.prior_strength,
            critical_p_value: self.critical_p_value,
        }
    }
}

/// Assesses one manager over the recent `windows` (inputs and length in
/// days; see [`rate::assess_windows`]); `None` when too few deals closed.
/// `recent.hits` are won deals, `recent.total` closed (won + lost) ones.
pub fn assess(
    windows: &[(RateInputs, i64)],
    config: &WinRateConfig,
    team: &str,
) -> Option<Finding> {
    rate::finding(windows, &config.params(), Direction::Drop, team, |w| {
        format!(
            "win rate {:.0}% ({} of {} closed) over {} days; expected {:.0}% from own history ({} of {} won before) and {}{}",
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
    .map(|(finding, _)| finding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::window::Tally;

    fn config() -> WinRateConfig {
        Config::defaults().detect.win_rate
    }

    fn wl(won: u64, lost: u64) -> Tally {
        Tally {
            hits: won,
            total: won + lost,
        }
    }

    #[test]
    fn a_sharp_personal_drop_alerts() {
        let inputs = RateInputs {
            recent: wl(2, 28),
            history: wl(60, 60),
            team_recent: wl(200, 200),
            team_history: wl(800, 800),
        };
        let finding = assess(&[(inputs, 90)], &config(), "team-3").unwrap();
        assert!(finding.alerting, "{finding:?}");
        assert!((finding.observed - 2.0 / 30.0).abs() < 1e-12);
        assert!((finding.expected - 0.5).abs() < 0.01);
        assert!(finding.p_value < 1e-4);
        assert!(
            finding
                .summary
                .text()
                .starts_with("win rate 7% (2 of 30 closed) over 90 days; expected 50%"),
            "{}",
            finding.summary.text()
        );
    }

    #[test]
    fn a_team_wide_fall_does_not_alert() {
        // Everyone in the team fell from 50% to 15%: the market, not the manager.
        let inputs = RateInputs {
            recent: wl(4, 26),
            history: wl(60, 60),
            team_recent: wl(60, 340),
            team_history: wl(800, 800),
        };
        let finding = assess(&[(inputs, 90)], &config(), "team-3").unwrap();
        assert!(!finding.alerting, "{finding:?}");
        assert!(finding.expected < 0.2);
    }

    #[test]
    fn teammates_on_a_lucky_streak_do_not_raise_the_bar() {
        // The rest of the team went from 61% to 75% over 53 deals: a streak
        // that size is luck as often as not, and not evidence against this
        // manager. The expectation stays at the manager's own rate.
        let streak = RateInputs {
            recent: wl(3, 10),
            history: wl(26, 8),
            team_recent: wl(40, 13),
            team_history: wl(119, 75),
        };
        let steady = RateInputs {
            team_recent: wl(61, 39),
            ..streak
        };
        let with_streak = assess(&[(streak, 30)], &config(), "t").unwrap();
        let without = assess(&[(steady, 30)], &config(), "t").unwrap();
        assert!(
            (with_streak.expected - without.expected).abs() < 0.01,
            "{with_streak:?}"
        );
        assert!(!with_streak.summary.text().contains("adjusted"));
    }

    #[test]
    fn no_baseline_no_judgement() {
        // The team's history is three won deals; the manager has none.
        let inputs = RateInputs {
            recent: wl(7, 20),
            history: wl(0, 0),
            team_recent: wl(100, 100),
            team_history: wl(3, 0),
        };
        assert_eq!(assess(&[(inputs, 90)], &config(), "t"), None);
    }

    #[test]
    fn small_samples_are_not_judged() {
        let inputs = RateInputs {
            recent: wl(0, 11),
            history: wl(60, 60),
            ..Default::default()
        };
        assert_eq!(assess(&[(inputs, 90)], &config(), "t"), None);
    }

    #[test]
    fn a_new_hire_is_held_to_the_team_rate_with_less_certainty() {
        let veteran = RateInputs {
            recent: wl(6, 24),
            history: wl(100, 100),
            team_recent: wl(200, 200),
            team_history: wl(800, 800),
        };
        let new_hire = RateInputs {
            history: wl(0, 0),
            ..veteran
        };
        let v = assess(&[(veteran, 90)], &config(), "t").unwrap();
        let n = assess(&[(new_hire, 90)], &config(), "t").unwrap();
        assert!((v.expected - n.expected).abs() < 0.02);
        assert!(n.p_value > v.p_value, "thin history must weaken the test");
    }

    #[test]
    fn the_published_parameters_recompute_the_p_value() {
        let inputs = RateInputs {
            recent: wl(5, 25),
            history: wl(33, 41),
            team_recent: wl(150, 170),
            team_history: wl(500, 530),
        };
        let finding = assess(&[(inputs, 90)], &config(), "t").unwrap();
        assert_eq!(finding.test.p_value(), finding.p_value);
    }
}
